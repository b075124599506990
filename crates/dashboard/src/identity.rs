//! Identity > Projects and Users: admin panels. The navigation shows them to admins
//! only; the identity API's policy decides what each caller may actually list.

use std::sync::Arc;

use axum::extract::State;
use maud::{html, Markup};
use serde_json::Value;
use stratus_core::internal::InternalUri;

use crate::api::{list, s};
use crate::error::Result;
use crate::layout;
use crate::login::Sess;
use crate::Dash;

fn yes_no(v: &Value, key: &str) -> &'static str {
    if v.get(key).and_then(Value::as_bool).unwrap_or(false) {
        "Yes"
    } else {
        "No"
    }
}

/// `GET /identity/projects`.
pub async fn projects(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let v = sess.api(&d).get(InternalUri::new("/identity/v3/projects")).await?;
    let body = html! {
        table {
            thead { tr { th { "Name" } th { "Description" } th { "Project ID" } th { "Domain" } th { "Enabled" } } }
            tbody {
                @for p in list(&v, "projects") {
                    tr { td { (s(p, "name")) } td { (s(p, "description")) } td { code { (s(p, "id")) } }
                         td { (s(p, "domain_id")) } td { (yes_no(p, "enabled")) } }
                }
            }
        }
    };
    Ok(layout::page(&d, &sess, "projects", "Projects", body))
}

/// `GET /identity/users`.
pub async fn users(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let v = sess.api(&d).get(InternalUri::new("/identity/v3/users")).await?;
    let body = html! {
        table {
            thead { tr { th { "User name" } th { "Email" } th { "User ID" } th { "Domain" } th { "Enabled" } } }
            tbody {
                @for u in list(&v, "users") {
                    tr { td { (s(u, "name")) } td { (s(u, "email")) } td { code { (s(u, "id")) } }
                         td { (s(u, "domain_id")) } td { (yes_no(u, "enabled")) } }
                }
            }
        }
    };
    Ok(layout::page(&d, &sess, "users", "Users", body))
}
