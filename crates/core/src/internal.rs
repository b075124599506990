//! Service-to-service calls inside one process, through the same public API contract.
//!
//! Compute talks to placement, image and network the way Nova does: through their REST
//! APIs. In one process there is no reason to pay for a socket, so the request is
//! dispatched straight into the composed router. The caller's identity travels as a
//! [`RequestContext`] in the request's extensions, which only server-side code can set, so
//! the auth layer trusts it without a token.
//!
//! Callers pass user input (an `imageRef`, a port id, a security group name) into these
//! URIs, so every path is built with [`InternalUri`]: each value is percent-encoded as
//! one path segment or query value, and a value too long to name anything is refused
//! before the call ([`InternalUri::check`]) with a 400 the caller can pass on. An id
//! with a space, `<`, `/` or a control character then simply names nothing (404 from
//! the service called), as it would over HTTP, instead of failing to build the request.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::context::RequestContext;
use crate::fault::ApiError;
use crate::query::encode;

/// Longest value [`InternalUri`] accepts in a segment or query value: longer than any
/// id or name an OpenStack API stores (255), short enough for every URI to stay far
/// below `http::Uri`'s limit (64 KiB) even fully percent-encoded.
pub const MAX_VALUE_LEN: usize = 1024;

/// A path (and query) for [`InternalClient::call`], built from literal parts written by
/// the caller and values that are percent-encoded. `Display` gives the URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalUri {
    uri: String,
    has_query: bool,
    /// The first value that was too long, kept so that [`InternalUri::check`] reports it.
    too_long: Option<String>,
}

impl InternalUri {
    /// Starts at `base`, a literal path written in the code (`/network/v2.0/ports`).
    pub fn new(base: &str) -> Self {
        debug_assert!(base.starts_with('/') && !base.contains('?'), "a literal path");
        InternalUri { uri: base.to_string(), has_query: false, too_long: None }
    }

    fn note(&mut self, what: &str, value: &str) {
        if value.len() > MAX_VALUE_LEN && self.too_long.is_none() {
            self.too_long = Some(what.to_string());
        }
    }

    /// Appends `/` and `value` as one percent-encoded path segment.
    pub fn seg(mut self, value: &str) -> Self {
        debug_assert!(!self.has_query, "segments come before the query");
        self.note("a path value", value);
        self.uri.push('/');
        self.uri.push_str(&encode(value));
        self
    }

    /// Appends `key=value` to the query, both percent-encoded.
    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.note(key, value);
        self.uri.push(if self.has_query { '&' } else { '?' });
        self.has_query = true;
        self.uri.push_str(&encode(key));
        self.uri.push('=');
        self.uri.push_str(&encode(value));
        self
    }

    /// The URI, or a 400 naming the value that was too long to name anything.
    pub fn check(&self) -> Result<&str, ApiError> {
        match &self.too_long {
            Some(what) => Err(ApiError::bad_request(format!(
                "Invalid input: {what} is longer than {MAX_VALUE_LEN} characters and cannot name anything"
            ))),
            None => Ok(&self.uri),
        }
    }

    /// The URI as built (values encoded, length not checked).
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl std::fmt::Display for InternalUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri)
    }
}

/// True when `id` could be an id or name in an OpenStack API: 1 to 255 characters, none
/// of them a control character. Callers answer "not found" for anything else without
/// calling the service.
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= 255 && !id.chars().any(char::is_control)
}

/// Marks a request as made in-process by trusted code, carrying the caller's context.
#[derive(Clone, Debug)]
pub struct InternalCaller(pub RequestContext);

/// A handle on the composed router, set once the cloud is assembled.
#[derive(Clone, Default)]
pub struct InternalClient {
    router: Arc<OnceLock<Router>>,
    /// Typed in-process APIs services offer beside their REST API, by type.
    typed: Arc<std::sync::RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

/// A response of an internal call.
#[derive(Debug, Clone)]
pub struct InternalResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed JSON body (`Null` when empty or not JSON).
    pub body: Value,
}

impl InternalClient {
    /// Installs the router; later calls are dispatched into it.
    pub fn install(&self, router: Router) {
        let _ = self.router.set(router);
    }

    /// Offers a typed in-process API (a service's hot paths without JSON), found by
    /// callers in this process with [`InternalClient::typed`]; replaces an earlier one
    /// of the same type. Callers keep the REST API as the contract and fall back to it.
    pub fn provide<T: Any + Send + Sync>(&self, api: Arc<T>) {
        if let Ok(mut m) = self.typed.write() {
            m.insert(TypeId::of::<T>(), api);
        }
    }

    /// The typed API of type `T`, when a service in this process offers one.
    pub fn typed<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let m = self.typed.read().ok()?;
        m.get(&TypeId::of::<T>()).cloned().and_then(|a| a.downcast::<T>().ok())
    }

    /// Dispatches `req` as `ctx` and returns the response with its body still streaming:
    /// for image data (`GET /image/v2/images/{id}/file`, snapshot uploads with a
    /// streaming request body), which [`InternalClient::call`] would buffer.
    pub async fn call_streaming(
        &self,
        ctx: &RequestContext,
        mut req: Request<Body>,
    ) -> Result<axum::response::Response, ApiError> {
        let router = self.router.get().ok_or_else(|| ApiError::unavailable("the cloud is still starting"))?.clone();
        req.extensions_mut().insert(InternalCaller(ctx.clone()));
        router.oneshot(req).await.map_err(|e| ApiError::internal(format!("internal call failed: {e}")))
    }

    /// Calls `method path` (e.g. `GET /placement/resource_providers`) as `ctx`, with
    /// optional JSON `body` and extra headers (microversions). Build `path` with
    /// [`InternalUri`] whenever it carries a value from a request.
    pub async fn call(
        &self,
        ctx: &RequestContext,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<InternalResponse, ApiError> {
        let router = self.router.get().ok_or_else(|| ApiError::unavailable("the cloud is still starting"))?.clone();
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Body::empty(),
        };
        // Paths come from [`InternalUri`]; one that still does not parse is the caller's
        // input, not a fault of the service called.
        let mut req = b.body(body).map_err(|e| ApiError::bad_request(format!("Invalid input in the request: {e}")))?;
        req.extensions_mut().insert(InternalCaller(ctx.clone()));
        let resp = router.oneshot(req).await.map_err(|e| ApiError::internal(format!("internal call failed: {e}")))?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .map_err(|e| ApiError::internal(format!("internal call body: {e}")))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(InternalResponse { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_encoded_and_long_ones_refused() {
        let u = InternalUri::new("/network/v2.0/security-groups")
            .query("name", "web <1>\u{1}&x=y")
            .query("project_id", "p");
        assert_eq!(u.check().unwrap(), "/network/v2.0/security-groups?name=web%20%3C1%3E%01%26x%3Dy&project_id=p");
        let u = InternalUri::new("/image/v2/images").seg("a b/../c");
        assert_eq!(u.as_str(), "/image/v2/images/a%20b%2F..%2Fc");
        assert!(u.as_str().parse::<axum::http::Uri>().is_ok());
        let long = "x".repeat(100 * 1024);
        let e = InternalUri::new("/image/v2/images").seg(&long).check().unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(plausible_id("0b5c2f7e-1111-4222-8333-444455556666") && plausible_id("web servers"));
        assert!(!plausible_id("") && !plausible_id("a\u{0}b") && !plausible_id(&"x".repeat(256)));
    }
}
