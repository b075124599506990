//! `os-server-external-events`: events other services send about servers
//! (`network-changed`, `network-vif-plugged`, ...), as Nova takes them from Neutron and
//! Cinder. Callers are the service users (`role:service`) and admins.
//!
//! Each event is answered per server: 200 when the server exists and is on a host, 422
//! when it has no host yet, 404 when there is no such server; the request answers 200
//! when every event was taken, 207 when some were, 404 when none. The network service
//! here plugs ports itself and the compute agents learn port state from it, so a
//! taken event needs no further work: it is logged for the operator.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson};

use crate::error::ComputeError;
use crate::servers::store;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v2.1/os-server-external-events", post(create))
}

/// The event names Nova accepts.
const NAMES: &[&str] = &[
    "network-changed",
    "network-vif-plugged",
    "network-vif-unplugged",
    "network-vif-deleted",
    "volume-extended",
    "power-update",
    "accelerator-request-bound",
    "volume-reimaged",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    events: Vec<Event>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    name: String,
    server_uuid: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    OsJson(b): OsJson<Body>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    st.policy.enforce("os_compute_api:os-server-external-events:create", &ctx, &json!({}))?;
    if b.events.is_empty() {
        return Err(ComputeError::BadRequest("events must hold at least one event".into()).into());
    }
    let mut out = Vec::new();
    let mut taken = 0;
    for e in b.events {
        if !NAMES.contains(&e.name.as_str()) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid event name {:?}: use one of {}",
                e.name,
                NAMES.join(", ")
            ))
            .into());
        }
        let status = e.status.unwrap_or_else(|| "completed".into());
        if !["failed", "completed", "in-progress"].contains(&status.as_str()) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid event status {status:?}: use failed, completed or in-progress"
            ))
            .into());
        }
        if e.tag.as_ref().is_some_and(|t| t.chars().count() > 255) {
            return Err(ComputeError::BadRequest("An event tag is at most 255 characters".into()).into());
        }
        let inst = if uuid::Uuid::parse_str(&e.server_uuid).is_ok() {
            store::load(&st.platform.db, &e.server_uuid).await?
        } else {
            None
        };
        let (code, status) = match inst {
            None => (404, "failed".to_string()),
            Some(i) if i.host.is_none() => (422, "failed".to_string()),
            Some(i) => {
                tracing::info!(server = %i.uuid, event = %e.name, status = %status, tag = ?e.tag, "external event");
                taken += 1;
                (200, status)
            }
        };
        let mut ev = json!({"name": e.name, "server_uuid": e.server_uuid, "status": status, "code": code});
        if let Some(t) = e.tag {
            ev["tag"] = json!(t);
        }
        out.push(ev);
    }
    let overall = if taken == out.len() {
        StatusCode::OK
    } else if taken == 0 {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((overall, Json(json!({"events": out}))))
}
