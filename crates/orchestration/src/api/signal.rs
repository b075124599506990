//! Signals and health marks on a stack's resources.
//!
//! - `POST /v1/waitcondition/{stack_id}/{handle_id}`: what a wait condition handle's
//!   `curl_cli` calls. It needs no Keystone token: the `X-Auth-Token` header carries the
//!   handle's own secret token (a guest has no cloud credentials).
//! - `POST /stacks/{name}/{id}/resources/{handle}/signal` (`openstack stack resource
//!   signal`): the same signal from a user of the project, with a Keystone token.
//! - `PATCH /stacks/{name}/{id}/resources/{name}` with `mark_unhealthy` (`openstack
//!   stack resource mark unhealthy`): `CHECK_FAILED`, so the next update replaces it.
//!
//! A signal's body is Heat's: `{"status": "SUCCESS"|"FAILURE", "reason", "data", "id"}`,
//! all optional (an empty body is a success).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::engine::state;
use crate::error::{bad, not_found, HeatError, HeatResult};
use crate::resources::wait::HANDLE;
use crate::store::{self, StackRow};
use crate::S;

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
    let sig: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| bad(format!("The signal is not valid JSON: {e}")))?
    };
    record(&st, &stack_id, &row.name, sig).await?;
    Ok((StatusCode::OK, Json(json!({}))))
}

/// `POST .../resources/{name}/signal` by a user of the project.
pub async fn resource_signal(st: &S, s: &StackRow, name: &str, body: &Value) -> HeatResult<Response> {
    let row = store::resources(&st.db, &s.id)
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| not_found("Resource", name))?;
    if row.type_name != HANDLE {
        return Err(bad(format!("Resource {name} ({}) does not accept signals", row.type_name)));
    }
    if row.physical_id.is_none() {
        return Err(bad(format!("Signal resource during {} is not supported.", row.action)));
    }
    record(st, &s.id, name, body.clone()).await?;
    Ok(StatusCode::OK.into_response())
}

/// `PATCH .../resources/{name}` `{"mark_unhealthy": bool, "resource_status_reason"}`.
pub async fn mark_unhealthy(st: &S, s: &StackRow, name: &str, body: &Value) -> HeatResult<Response> {
    let unhealthy = match body.get("mark_unhealthy") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) => {
            stratus_core::query::parse_bool(t).ok_or_else(|| bad("mark_unhealthy must be a boolean"))?
        }
        _ => return Err(bad("mark_unhealthy (a boolean) is required")),
    };
    if s.status == state::IN_PROGRESS {
        return Err(HeatError::InProgress { name: s.name.clone(), action: s.action.clone() });
    }
    let row = store::resources(&st.db, &s.id)
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| not_found("Resource", name))?;
    let reason = body["resource_status_reason"].as_str().unwrap_or("").to_string();
    match (unhealthy, row.action.as_str(), row.status.as_str()) {
        (true, _, _) => {
            let why = if reason.is_empty() { "Marked unhealthy".to_string() } else { reason };
            store::set_resource_state(&st.db, &s.id, &row, state::CHECK, state::FAILED, &why, Default::default())
                .await?;
        }
        (false, state::CHECK, state::FAILED) => {
            let why = if reason.is_empty() { "Marked healthy".to_string() } else { reason };
            store::set_resource_state(&st.db, &s.id, &row, state::CHECK, state::COMPLETE, &why, Default::default())
                .await?;
        }
        (false, _, _) => {}
    }
    Ok(StatusCode::OK.into_response())
}

/// Checks a signal's body and stores it on handle `name` of stack `stack_id`.
async fn record(st: &S, stack_id: &str, name: &str, mut sig: Value) -> HeatResult<()> {
    if !sig.is_object() {
        return Err(bad("The signal must be a JSON object: {\"status\": \"SUCCESS\"}"));
    }
    let status = sig["status"].as_str().unwrap_or("SUCCESS").to_string();
    if status != "SUCCESS" && status != "FAILURE" {
        return Err(bad(format!("Unknown status \"{status}\": use SUCCESS or FAILURE")));
    }
    sig["status"] = json!(status);
    let reason = format!("Signal: status:{status} reason:{}", sig["reason"].as_str().unwrap_or(""));
    store::record_signal(&st.db, stack_id, name, sig, &reason).await
}
