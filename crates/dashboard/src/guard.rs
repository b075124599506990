//! Request guards every dashboard route sits behind: CSRF, security headers, panics.
//!
//! CSRF is enforced in one place rather than per handler, so no form can forget it:
//! every request other than `GET`/`HEAD` must carry the session's token, either as the
//! `csrf_token` field of a urlencoded form or in the `X-CSRF-Token` header (the image
//! upload, whose body is the file). Before login there is no session, so the login form
//! is checked against a token in its own short-lived cookie (double submit).

use std::any::Any;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::DashError;
use crate::session::{cookie, tokens_match, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::Dash;

/// Longest urlencoded form the guard reads to find the token (every form is small).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The policy of every page: scripts, styles and images from the dashboard only, no
/// inline code, not framed, forms posted only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Middleware: refuses a state-changing request without the expected CSRF token.
pub async fn csrf(State(d): State<Arc<Dash>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let cookies = req.headers().get(header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let expected = if req.uri().path().ends_with("/auth/login") {
        cookie(&cookies, LOGIN_CSRF_COOKIE).map(str::to_string)
    } else {
        cookie(&cookies, SESSION_COOKIE).and_then(|id| d.sessions.get(id)).map(|s| s.csrf)
    };
    let Some(expected) = expected else {
        return DashError::Csrf.into_response();
    };
    if let Some(h) = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return if tokens_match(h, &expected) { next.run(req).await } else { DashError::Csrf.into_response() };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return DashError::Csrf.into_response();
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return DashError::Api { status: StatusCode::PAYLOAD_TOO_LARGE, message: "The form is too large.".into() }
                .into_response()
        }
    };
    let given = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == "csrf_token"))
        .map(|(_, v)| v);
    match given {
        Some(t) if tokens_match(t, &expected) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        _ => DashError::Csrf.into_response(),
    }
}

/// Adds the security headers to every response; pages are not cached (they show one
/// user's resources), assets set their own caching.
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A panic in a handler becomes a 500 page; the server keeps serving.
pub fn panic_page(err: Box<dyn Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %what, "dashboard handler panicked");
    DashError::Api {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "The dashboard failed to render this page; the details are in the server's log.".into(),
    }
    .into_response()
}
