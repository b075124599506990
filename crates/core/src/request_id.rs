//! `x-openstack-request-id` for every request, carried into logs.
//!
//! Each request gets `req-<uuid>`; it is stored in the request's extensions (so faults
//! and handlers can quote it), entered as a tracing span (so every log line of the request
//! carries it, with the user and project filled in by the auth layer), and returned in
//! the response headers.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The request id of the current request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh `req-<uuid>`.
    pub fn generate() -> Self {
        RequestId(format!("req-{}", uuid::Uuid::new_v4()))
    }
}

/// Header every OpenStack service returns.
pub const HEADER: &str = "x-openstack-request-id";

/// Middleware assigning the request id and the request span.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = RequestId::generate();
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        method = %req.method(),
        path = %req.uri().path(),
        user = tracing::field::Empty,
        project = tracing::field::Empty,
    );
    req.extensions_mut().insert(id.clone());
    let started = std::time::Instant::now();
    async move {
        let mut resp = next.run(req).await;
        if let Ok(v) = HeaderValue::from_str(&id.0) {
            resp.headers_mut().insert(HEADER, v);
        }
        tracing::debug!(
            status = resp.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "request done"
        );
        resp
    }
    .instrument(span)
    .await
}
