//! Wait condition signals: `POST /v1/waitcondition/{stack_id}/{handle_id}`, what a
//! handle's `curl_cli` calls. It needs no Keystone token: the `X-Auth-Token` header
//! carries the handle's own secret token (a guest has no cloud credentials). The body
//! is Heat's: `{"status": "SUCCESS"|"FAILURE", "reason", "data", "id"}`, all optional
//! (an empty body is a success).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{bad, not_found, HeatError, HeatResult};
use crate::resources::wait::HANDLE;
use crate::{store, S};

/// The signal route (outside the token check).
pub fn routes() -> Router<S> {
    Router::new().route("/v1/waitcondition/{stack_id}/{handle_id}", post(signal))
}

async fn signal(
    State(st): State<S>,
    Path((stack_id, handle_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> HeatResult<(StatusCode, Json<Value>)> {
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let row = store::resource_by_physical(&st.db, &stack_id, &handle_id)
        .await?
        .filter(|r| r.type_name == HANDLE)
        .ok_or_else(|| not_found("Resource", &handle_id))?;
    let expected = row.attributes["token"].as_str().unwrap_or_default();
    if token.is_empty() || expected.is_empty() || token != expected {
        return Err(HeatError::Forbidden("The token does not match this wait condition handle.".into()));
    }
    let mut sig: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("The signal is not valid JSON: {e}")))?
    };
    if !sig.is_object() {
        return Err(bad("The signal must be a JSON object: {\"status\": \"SUCCESS\"}"));
    }
    let status = sig["status"].as_str().unwrap_or("SUCCESS").to_string();
    if status != "SUCCESS" && status != "FAILURE" {
        return Err(bad(format!("Unknown status \"{status}\": use SUCCESS or FAILURE")));
    }
    sig["status"] = json!(status);
    let reason = format!("Signal: status:{status} reason:{}", sig["reason"].as_str().unwrap_or(""));
    store::record_signal(&st.db, &stack_id, &row.name, sig, &reason).await?;
    Ok((StatusCode::OK, Json(json!({}))))
}
