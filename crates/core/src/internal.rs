//! Service-to-service calls inside one process, through the same public API contract.
//!
//! Compute talks to placement, image and network the way Nova does: through their REST
//! APIs. In one process there is no reason to pay for a socket, so the request is
//! dispatched straight into the composed router. The caller's identity travels as a
//! [`RequestContext`] in the request's extensions, which only server-side code can set, so
//! the auth layer trusts it without a token.

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
    /// optional JSON `body` and extra headers (microversions).
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
        let mut req = b.body(body).map_err(|e| ApiError::internal(format!("bad internal request: {e}")))?;
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
