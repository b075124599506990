//! The page shell: head, navigation (Horizon's panel names), project switcher, messages.
//!
//! Admin-only panels appear in the navigation only for callers with the admin role;
//! their pages still ask the API, whose policy has the last word.

use maud::{html, Markup, DOCTYPE};

use crate::login::Sess;
use crate::Dash;

/// The panels of the navigation: (section, id, title, path, admin only).
const PANELS: &[(&str, &str, &str, &str, bool)] = &[
    ("Project", "overview", "Overview", "/project/overview", false),
    ("Project", "instances", "Instances", "/project/instances", false),
    ("Project", "images", "Images", "/project/images", false),
    ("Project", "volumes", "Volumes", "/project/volumes", false),
    ("Project", "networks", "Networks", "/project/networks", false),
    ("Project", "routers", "Routers", "/project/routers", false),
    ("Project", "floating_ips", "Floating IPs", "/project/floating_ips", false),
    ("Identity", "projects", "Projects", "/identity/projects", true),
    ("Identity", "users", "Users", "/identity/users", true),
];

fn head(d: &Dash, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " - Stratus" }
            link rel="stylesheet" href=(d.url(&format!("/static/{}", crate::assets::css_name())));
            script src=(d.url(&format!("/static/{}", crate::assets::js_name()))) defer {}
        }
    }
}

/// A page without navigation (the login form).
pub fn bare(d: &Dash, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" { (head(d, title)) body { (content) } }
    }
}

/// The session's CSRF field, in every form.
pub fn csrf(sess: &Sess) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(sess.session.csrf); }
}

/// A page of a panel: `active` is the panel's id in [`PANELS`].
pub fn page(d: &Dash, sess: &Sess, active: &str, title: &str, content: Markup) -> Markup {
    let flash = d.sessions.take_flash(&sess.id);
    let admin = sess.ctx.is_admin();
    let current = sess.ctx.project_id.as_deref().unwrap_or("");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(d, title))
            body {
                header.top {
                    a.brand href=(d.url("/project/overview")) { "Stratus" }
                    form.switcher method="post" action=(d.url("/auth/switch")) {
                        (csrf(sess))
                        label { "Project "
                            select name="project_id" data-autosubmit {
                                @for p in &sess.session.projects {
                                    option value=(p.id) selected[p.id == current] { (p.name) }
                                }
                            }
                        }
                        noscript { button type="submit" { "Switch" } }
                    }
                    span.user { (sess.ctx.user_name) " (" (sess.ctx.user_domain_name) ")" }
                    form.logout method="post" action=(d.url("/auth/logout")) {
                        (csrf(sess))
                        button type="submit" { "Log out" }
                    }
                }
                nav.side {
                    @for section in ["Project", "Identity"] {
                        @let items: Vec<_> = PANELS.iter().filter(|p| p.0 == section && (admin || !p.4)).collect();
                        @if !items.is_empty() {
                            h2 { (section) }
                            ul {
                                @for p in items {
                                    li { a href=(d.url(p.3)) class=[(p.1 == active).then_some("active")] { (p.2) } }
                                }
                            }
                        }
                    }
                }
                main.content {
                    h1 { (title) }
                    @if let Some(f) = flash {
                        p.flash.error[f.error] role="status" { (f.text) }
                    }
                    (content)
                }
            }
        }
    }
}

/// A delete/action button in a one-button form carrying the CSRF token.
pub fn action_button(sess: &Sess, action: &str, field: Option<(&str, &str)>, label: &str, confirm: bool) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm.then_some(label)] {
            (csrf(sess))
            @if let Some((k, v)) = field { input type="hidden" name=(k) value=(v); }
            button type="submit" { (label) }
        }
    }
}

/// A quantity in MiB, made readable.
pub fn mib(n: i64) -> String {
    if n >= 1024 && n % 1024 == 0 {
        format!("{} GiB", n / 1024)
    } else {
        format!("{n} MiB")
    }
}

/// A size in bytes, made readable.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
