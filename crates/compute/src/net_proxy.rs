//! One network API call on behalf of the caller, for the compute proxy APIs
//! (`os-security-groups`, `os-floating-ips`, ...): the body of a success, or the network
//! service's refusal mapped to the status Nova gives it (a conflict such as a duplicate
//! rule or an address in use is a 400, a quota a 403).

use axum::http::{Method, StatusCode};
use serde_json::Value;
use stratus_core::RequestContext;

use crate::error::{ComputeError, Result};
use crate::AppState;

/// A network API call as the caller; the body of a 2xx answer, else the refusal mapped
/// to Nova's statuses (`not_found` is the message of a 404).
pub(crate) async fn net(
    st: &AppState,
    ctx: &RequestContext,
    method: Method,
    uri: &str,
    body: Option<Value>,
    not_found: impl FnOnce() -> String,
) -> Result<Value> {
    let (status, answer) = st
        .backends
        .network
        .request(ctx, method, uri, body.as_ref())
        .await
        .map_err(|e| ComputeError::Unavailable(e.0))?;
    if status.is_success() {
        return Ok(answer);
    }
    let msg = answer["NeutronError"]["message"].as_str().unwrap_or_default().to_string();
    let kind = answer["NeutronError"]["type"].as_str().unwrap_or_default();
    Err(match status {
        StatusCode::NOT_FOUND => ComputeError::NotFound(not_found()),
        StatusCode::CONFLICT if kind.contains("OverQuota") || msg.contains("uota") => ComputeError::Forbidden(msg),
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT => ComputeError::BadRequest(msg),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ComputeError::Forbidden(msg),
        s => ComputeError::Unavailable(format!("the network service answered {s}: {msg}")),
    })
}
