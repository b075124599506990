//! Calls to the cloud's APIs as the logged-in person.
//!
//! The dashboard holds no privileges of its own: every call carries the context that
//! identity's validator gave for the session's token, and is dispatched into the same
//! composed router the HTTP listener serves (no socket in one process). The API's policy,
//! scoping and faults are therefore exactly what the `openstack` CLI would meet.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::Value;
use stratus_core::internal::{InternalClient, InternalUri};
use stratus_core::RequestContext;

use crate::error::{DashError, Result};

/// The compute microversion the dashboard speaks: 2.47 embeds the flavor in a server
/// (no flavor lookups per row) and has remote consoles (2.6) and `networks: none` (2.37).
pub const COMPUTE_VERSION: &str = "compute 2.47";

/// A client for one request, acting as the session's user.
pub struct Api {
    internal: InternalClient,
    ctx: RequestContext,
}

impl Api {
    /// A client acting as `ctx` (a context identity validated from the session's token).
    pub fn new(internal: InternalClient, ctx: RequestContext) -> Self {
        Api { internal, ctx }
    }

    /// The caller's context.
    pub fn ctx(&self) -> &RequestContext {
        &self.ctx
    }

    /// `GET path`, the JSON body on success.
    pub async fn get(&self, path: InternalUri) -> Result<Value> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: InternalUri, body: &Value) -> Result<Value> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: InternalUri, body: &Value) -> Result<Value> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: InternalUri) -> Result<Value> {
        self.send(Method::DELETE, path, None).await
    }

    /// Any call; a non-2xx answer becomes [`DashError::Api`] with the fault's message.
    pub async fn send(&self, method: Method, path: InternalUri, body: Option<&Value>) -> Result<Value> {
        let uri = path.check().map_err(|e| DashError::BadInput(e.message.clone()))?;
        let headers: &[(&str, &str)] =
            if uri.starts_with("/compute/") { &[("OpenStack-API-Version", COMPUTE_VERSION)] } else { &[] };
        let resp = self
            .internal
            .call(&self.ctx, method, uri, body, headers)
            .await
            .map_err(|e| DashError::Api { status: e.status, message: e.message.clone() })?;
        if resp.status.is_success() {
            Ok(resp.body)
        } else {
            Err(DashError::Api { status: resp.status, message: fault_message(resp.status, &resp.body) })
        }
    }

    /// Streams `body` (of `len` bytes when known) as the request body of `PUT path` with
    /// the given content type: image data goes to the image API without being buffered here.
    pub async fn put_stream(&self, path: InternalUri, content_type: &str, len: Option<u64>, body: Body) -> Result<()> {
        let uri = path.check().map_err(|e| DashError::BadInput(e.message.clone()))?;
        let mut b = Request::builder().method(Method::PUT).uri(uri).header(header::CONTENT_TYPE, content_type);
        if let Some(n) = len {
            b = b.header(header::CONTENT_LENGTH, n);
        }
        let req = b.body(body).map_err(|e| DashError::BadInput(format!("Invalid upload request: {e}")))?;
        let resp = self
            .internal
            .call_streaming(&self.ctx, req)
            .await
            .map_err(|e| DashError::Api { status: e.status, message: e.message.clone() })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 1024 * 1024).await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(DashError::Api { status, message: fault_message(status, &v) })
    }
}

/// The message of an OpenStack fault body, whichever family's format it is in: Nova's
/// `{"itemNotFound": {"message"}}`, Keystone's `{"error": {"message"}}`, Neutron's
/// `{"NeutronError": {"message"}}`, or a bare `{"message"}`.
pub fn fault_message(status: StatusCode, body: &Value) -> String {
    if let Some(m) = body.get("message").and_then(Value::as_str) {
        return m.to_string();
    }
    if let Some(obj) = body.as_object() {
        for inner in obj.values() {
            if let Some(m) = inner.get("message").and_then(Value::as_str) {
                return m.to_string();
            }
        }
    }
    format!("The API answered {status} without a message.")
}

/// A string field of a JSON object (`""` when absent or not a string).
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The array at `key` (empty when absent).
pub fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fault_messages_of_every_family_are_found() {
        let st = StatusCode::NOT_FOUND;
        assert_eq!(fault_message(st, &json!({"itemNotFound": {"code": 404, "message": "nova"}})), "nova");
        assert_eq!(fault_message(st, &json!({"error": {"code": 404, "message": "keystone"}})), "keystone");
        assert_eq!(fault_message(st, &json!({"NeutronError": {"type": "x", "message": "neutron"}})), "neutron");
        assert_eq!(fault_message(st, &json!({"message": "bare"})), "bare");
        assert!(fault_message(st, &Value::Null).contains("404"));
    }
}
