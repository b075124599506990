//! The Swift proxy: one entry point for `/v1/...`, in the order of Swift's proxy
//! pipeline — request id, path and name checks, authentication (token, or a temporary
//! URL signature, or a form signature), then the account, container or object handler.
//!
//! Every response carries `X-Trans-Id` and `X-Openstack-Request-Id` (Swift's
//! `tx<21 hex>-<10 hex time>` form, which Tempest checks), a `Content-Type` and a
//! `Content-Length` or chunked encoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use stratus_core::internal::InternalCaller;
use stratus_core::{AuthFailure, RequestContext};

use crate::access::{self, Grant};
use crate::error::{Result, SwiftError};
use crate::names::{self, Level, Target};
use crate::Svc;

/// One request, parsed.
pub struct Call {
    /// What the path names.
    pub t: Target,
    /// HTTP method.
    pub method: Method,
    /// Request headers.
    pub headers: HeaderMap,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// The authenticated caller, if any.
    pub ctx: Option<RequestContext>,
    /// The caller's rights in the account before ACLs.
    pub grant: Grant,
    /// Admitted by a valid temporary URL (object GET/HEAD/PUT only).
    pub tempurl: bool,
}

impl Call {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }
    /// True for a query flag given without or with any value.
    pub fn flag(&self, name: &str) -> bool {
        self.query.contains_key(name)
    }
    /// The container name (handlers below the account level only).
    pub fn container(&self) -> &str {
        self.t.container.as_deref().unwrap_or("")
    }
    /// The object name (object handlers only).
    pub fn object(&self) -> &str {
        self.t.object.as_deref().unwrap_or("")
    }
    /// A boolean header (`true`, `yes`, `1`, `on`, `t`, `y`).
    pub fn header_true(&self, name: &str) -> bool {
        self.header(name)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on" | "t" | "y"))
    }
}

/// Swift's transaction id: `tx` + 21 hex digits + `-` + the time as 10 hex digits.
pub fn trans_id() -> String {
    let r: u128 = rand::random();
    format!("tx{:021x}-{:010x}", r & ((1u128 << 84) - 1), chrono::Utc::now().timestamp())
}

/// Parses a query string (percent- and `+`-decoded).
pub fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| names::percent_decode(&s.replace('+', " ")).unwrap_or_else(|| s.to_string());
        out.insert(dec(k), dec(v));
    }
    out
}

/// A response builder with Swift's common headers.
pub fn respond(status: StatusCode, ctype: &str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A bodiless response (`201`, `202`, `204`) as Swift sends it.
pub fn empty(status: StatusCode) -> Response {
    let body = match status {
        StatusCode::ACCEPTED => "<html><h1>Accepted</h1><p>The request is accepted for processing.</p></html>",
        _ => "",
    };
    let mut r = respond(status, "text/html; charset=UTF-8", body);
    if status == StatusCode::NO_CONTENT {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    r
}

/// Adds a header when the value is valid.
pub fn set(r: &mut Response, name: &str, value: impl AsRef<str>) {
    if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(value.as_ref())) {
        r.headers_mut().insert(n, v);
    }
}

/// The axum handler for every `/v1/...` request.
pub async fn handle(State(svc): State<Arc<Svc>>, req: Request) -> Response {
    let trans = trans_id();
    let mut resp = match serve(&svc, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    finish(&mut resp, &trans);
    resp
}

/// Adds the transaction id headers and a content type where missing.
pub fn finish(resp: &mut Response, trans: &str) {
    if let Ok(v) = HeaderValue::from_str(trans) {
        resp.headers_mut().insert("x-trans-id", v.clone());
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    if !resp.headers().contains_key(header::CONTENT_TYPE) {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
}

async fn identify(svc: &Svc, parts: &axum::http::request::Parts) -> Option<RequestContext> {
    if let Some(InternalCaller(ctx)) = parts.extensions.get::<InternalCaller>() {
        return Some(ctx.clone());
    }
    let token = parts
        .headers
        .get("x-auth-token")
        .or_else(|| parts.headers.get("x-storage-token"))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())?;
    match svc.auth.validator.validate(token).await {
        Ok(ctx) => Some(ctx),
        Err(AuthFailure::Invalid(why)) => {
            // As keystoneauth with delay_auth_decision: an invalid token is anonymous, so
            // public containers stay readable; everything else then answers 401.
            tracing::info!(reason = %why, "object request with an invalid token");
            None
        }
        Err(AuthFailure::Unavailable(why)) => {
            tracing::warn!(reason = %why, "identity unavailable; treating the request as anonymous");
            None
        }
    }
}

async fn serve(svc: &Arc<Svc>, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let rest = path
        .split_once("/v1/")
        .map(|(_, r)| r.to_string())
        .or_else(|| path.split_once("/v1.0/").map(|(_, r)| r.to_string()))
        .ok_or(SwiftError::NotFound)?;
    let t = names::parse(&rest)?;
    if !t.account.starts_with(&svc.roles.reseller_prefix) {
        return Err(SwiftError::NotFound);
    }
    let query = parse_query(parts.uri.query());
    let ctx = identify(svc, &parts).await;
    let grant = access::grant(&svc.roles, ctx.as_ref(), &t.account);
    let method = parts.method.clone();
    let headers = parts.headers.clone();
    let mut call = Call { t, method, headers, query, ctx, grant, tempurl: false };
    if call.query.contains_key("temp_url_sig") && call.t.level() != Level::Account {
        crate::tempurl::admit(svc, &mut call).await?;
    }
    match call.t.level() {
        Level::Account => crate::account::handle(svc, &call, body).await,
        Level::Container => crate::container::handle(svc, &call, body).await,
        Level::Object => crate::object::handle(svc, &call, body).await,
    }
}
