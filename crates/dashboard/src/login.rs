//! Logging in, switching project, logging out; and [`Sess`], the logged-in caller.
//!
//! Login is Keystone's password method (user, password, the user's domain), as Horizon
//! does it: the token is then rescoped to the user's default project or the first
//! project they have a role on (`GET /v3/auth/projects`). Switching project rescopes the
//! session's token with the `token` method. Logging out revokes the token.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_core::internal::InternalUri;
use stratus_core::{AuthFailure, RequestContext};

use crate::api::{fault_message, list, s, Api};
use crate::error::{DashError, Result};
use crate::layout;
use crate::session::{cookie, random_token, Flash, ProjectRef, Session, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::Dash;

/// The logged-in caller of a page: the session and the context identity validated from
/// its token just now.
pub struct Sess {
    /// Session id (the cookie's value).
    pub id: String,
    /// The session as stored.
    pub session: Session,
    /// The caller, as the APIs will see them.
    pub ctx: RequestContext,
}

impl Sess {
    /// An API client acting as this user.
    pub fn api(&self, d: &Dash) -> Api {
        Api::new(d.platform.internal.clone(), self.ctx.clone())
    }

    /// Leaves a message for the next page.
    pub fn flash(&self, d: &Dash, error: bool, text: impl Into<String>) {
        let text = text.into();
        d.sessions.update(&self.id, |s| s.flash = Some(Flash { error, text }));
    }
}

impl FromRequestParts<Arc<Dash>> for Sess {
    type Rejection = DashError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Dash>) -> Result<Self> {
        let login = || DashError::LoginRequired { login_url: d.url("/auth/login") };
        let cookies = parts.headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let id = cookie(cookies, SESSION_COOKIE).ok_or_else(login)?.to_string();
        let session = d.sessions.get(&id).ok_or_else(login)?;
        match d.auth.validator.validate(&session.token).await {
            Ok(ctx) => Ok(Sess { id, session, ctx }),
            Err(AuthFailure::Invalid(why)) => {
                // The session ends with its token (expired, revoked, user disabled).
                tracing::info!(reason = %why, "dashboard session ended with its token");
                d.sessions.remove(&id);
                Err(login())
            }
            Err(AuthFailure::Unavailable(why)) => Err(DashError::Api {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("The identity service is unavailable: {why}"),
            }),
        }
    }
}

impl OptionalFromRequestParts<Arc<Dash>> for Sess {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Dash>) -> Result<Option<Self>, Infallible> {
        Ok(<Sess as FromRequestParts<Arc<Dash>>>::from_request_parts(parts, d).await.ok())
    }
}

/// A `Set-Cookie` value with the dashboard's attributes; `max_age` 0 deletes it.
fn set_cookie(d: &Dash, name: &str, value: &str, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path={}; HttpOnly; SameSite=Strict", d.prefix);
    if d.secure {
        c.push_str("; Secure");
    }
    if let Some(n) = max_age {
        c.push_str(&format!("; Max-Age={n}"));
    }
    c
}

fn login_page(d: &Dash, csrf: &str, domain: &str, username: &str, error: Option<&str>) -> Markup {
    layout::bare(
        d,
        "Log in",
        html! {
            main.login {
                h1 { "Stratus" }
                @if let Some(e) = error { p.flash.error role="alert" { (e) } }
                form method="post" action=(d.url("/auth/login")) {
                    input type="hidden" name="csrf_token" value=(csrf);
                    label { "Domain" input name="domain" value=(domain) required autocomplete="off"; }
                    label { "User name" input name="username" value=(username) required autofocus autocomplete="username"; }
                    label { "Password" input type="password" name="password" required autocomplete="current-password"; }
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// Renders the login form with a fresh login CSRF cookie.
fn login_response(d: &Dash, status: StatusCode, domain: &str, username: &str, error: Option<&str>) -> Response {
    let csrf = random_token();
    let body = login_page(d, &csrf, domain, username, error);
    (status, [(header::SET_COOKIE, set_cookie(d, LOGIN_CSRF_COOKIE, &csrf, Some(3600)))], body).into_response()
}

/// `GET /auth/login`.
pub async fn form(State(d): State<Arc<Dash>>, sess: Option<Sess>) -> Response {
    if sess.is_some() {
        return Redirect::to(&d.url("/project/overview")).into_response();
    }
    login_response(&d, StatusCode::OK, "Default", "", None)
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The browser's address, passed on to identity so that its per-source throttling of
/// failed logins applies to the dashboard's form as it does to the API.
type Peer = Option<std::net::SocketAddr>;

/// Issues a token through identity's public API (`POST /v3/auth/tokens`); the body's
/// `token` and the `X-Subject-Token`.
async fn issue_token(d: &Dash, peer: Peer, auth: Value) -> Result<(String, Value)> {
    let body = serde_json::to_vec(&json!({ "auth": auth })).unwrap_or_default();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/identity/v3/auth/tokens")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|e| DashError::BadInput(e.to_string()))?;
    let mut req = req;
    if let Some(addr) = peer {
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    // No caller yet: the request carries an empty context, as an anonymous HTTP client would.
    let resp = d
        .platform
        .internal
        .call_streaming(&RequestContext::default(), req)
        .await
        .map_err(|e| DashError::Api { status: e.status, message: e.message.clone() })?;
    let status = resp.status();
    let token = resp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = axum::body::to_bytes(resp.into_body(), 4 * 1024 * 1024).await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    match token {
        Some(t) if status.is_success() => Ok((t, v.get("token").cloned().unwrap_or(Value::Null))),
        _ => Err(DashError::Api { status, message: fault_message(status, &v) }),
    }
}

/// Rescopes `token` to `project_id` with the `token` method.
async fn rescope(d: &Dash, token: &str, project_id: &str) -> Result<String> {
    let auth = json!({
        "identity": {"methods": ["token"], "token": {"id": token}},
        "scope": {"project": {"id": project_id}},
    });
    Ok(issue_token(d, None, auth).await?.0)
}

/// Validates `token` into the caller's context.
async fn validate(d: &Dash, token: &str) -> Result<RequestContext> {
    d.auth.validator.validate(token).await.map_err(|e| DashError::Api {
        status: StatusCode::UNAUTHORIZED,
        message: format!("The new token was not accepted: {e}"),
    })
}

/// `POST /auth/login`.
pub async fn submit(
    State(d): State<Arc<Dash>>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Form(f): Form<LoginForm>,
) -> Response {
    let peer = peer.map(|axum::Extension(ConnectInfo(addr))| addr);
    let domain = f.domain.trim();
    let username = f.username.trim();
    if domain.is_empty() || username.is_empty() || f.password.is_empty() {
        let msg = "Enter the domain, user name and password.";
        return login_response(&d, StatusCode::BAD_REQUEST, domain, username, Some(msg));
    }
    match login(&d, peer, domain, username, &f.password).await {
        Ok(session) => {
            let id = d.sessions.insert(session);
            let mut resp = Redirect::to(&d.url("/project/overview")).into_response();
            let h = resp.headers_mut();
            if let Ok(v) = set_cookie(&d, SESSION_COOKIE, &id, None).parse() {
                h.append(header::SET_COOKIE, v);
            }
            if let Ok(v) = set_cookie(&d, LOGIN_CSRF_COOKIE, "", Some(0)).parse() {
                h.append(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => {
            let status = match e.status() {
                s if s.is_server_error() => s,
                StatusCode::TOO_MANY_REQUESTS => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_response(&d, status, domain, username, Some(&e.to_string()))
        }
    }
}

async fn login(d: &Dash, peer: Peer, domain: &str, username: &str, password: &str) -> Result<Session> {
    // Horizon's form names the domain; operators also type its id (`default`).
    let by_name = json!({"identity": {"methods": ["password"], "password": {"user": {
        "name": username, "domain": {"name": domain}, "password": password}}}});
    let (mut token, body) = match issue_token(d, peer, by_name).await {
        Ok(t) => t,
        Err(DashError::Api { status: StatusCode::UNAUTHORIZED, .. }) if domain.eq_ignore_ascii_case("default") => {
            let by_id = json!({"identity": {"methods": ["password"], "password": {"user": {
                "name": username, "domain": {"id": "default"}, "password": password}}}});
            issue_token(d, peer, by_id).await?
        }
        Err(e) => return Err(e),
    };
    let ctx = validate(d, &token).await?;
    let api = Api::new(d.platform.internal.clone(), ctx.clone());
    let projects = api.get(InternalUri::new("/identity/v3/auth/projects")).await?;
    let mut projects: Vec<ProjectRef> = list(&projects, "projects")
        .iter()
        .filter(|p| p.get("enabled").and_then(Value::as_bool).unwrap_or(true))
        .map(|p| ProjectRef { id: s(p, "id").into(), name: s(p, "name").into() })
        .collect();
    projects.sort_by(|a, b| a.name.cmp(&b.name));
    let scoped = body.get("project").and_then(|p| p.get("id")).and_then(Value::as_str).is_some();
    if !scoped {
        let first = projects.first().ok_or_else(|| DashError::Api {
            status: StatusCode::UNAUTHORIZED,
            message: "You are not authorized for any projects.".into(),
        })?;
        token = rescope(d, &token, &first.id).await?;
    }
    Ok(Session::new(token, projects))
}

/// `POST /auth/logout`: revokes the token and ends the session.
pub async fn logout(State(d): State<Arc<Dash>>, sess: Option<Sess>) -> Response {
    if let Some(sess) = sess {
        let req = Request::builder()
            .method(Method::DELETE)
            .uri("/identity/v3/auth/tokens")
            .header("x-subject-token", sess.session.token.as_str())
            .body(Body::empty());
        if let Ok(req) = req {
            if let Err(e) = d.platform.internal.call_streaming(&sess.ctx, req).await {
                tracing::warn!(error = %e.message, "revoking the token at logout failed");
            }
        }
        d.sessions.remove(&sess.id);
    }
    let mut resp = Redirect::to(&d.url("/auth/login")).into_response();
    if let Ok(v) = set_cookie(&d, SESSION_COOKIE, "", Some(0)).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The project switcher's form.
#[derive(Debug, Deserialize)]
pub struct SwitchForm {
    #[serde(default)]
    project_id: String,
}

/// `POST /auth/switch`: rescopes the session to another of the user's projects.
pub async fn switch(State(d): State<Arc<Dash>>, sess: Sess, Form(f): Form<SwitchForm>) -> Result<Redirect> {
    let Some(p) = sess.session.projects.iter().find(|p| p.id == f.project_id) else {
        return Err(DashError::BadInput("You have no role on that project.".into()));
    };
    let token = rescope(&d, &sess.session.token, &p.id).await?;
    d.sessions.update(&sess.id, |s| s.token = token);
    sess.flash(&d, false, format!("Switched to project {}.", p.name));
    Ok(Redirect::to(&d.url("/project/overview")))
}
