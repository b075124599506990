//! `os-volume_attachments`: the volumes of a server (list, show, attach, detach), in
//! Nova's shapes for every microversion (2.70 `tag`, 2.79 `delete_on_termination`, 2.89
//! `attachment_id`/`bdm_uuid` instead of `id`).
//!
//! Handlers validate and authorize, then hand over to [`ops`] (the step tables); the
//! mappings live in [`store`].

pub mod boot;
pub mod ops;
pub mod snapshot;
pub mod store;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs, RequestId};
use stratus_volume_contract::steps::Faults;

use super::interfaces::{record, refused};
use super::{authorized, check_lock, request_id};
use crate::error::{ComputeError, Result};
use crate::servers::store::Instance;
use crate::state::vm;
use crate::AppState;
use ops::VolumeOp;
use store::{status, Bdm};

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers/{id}/os-volume_attachments", get(list).post(attach))
        .route("/v2.1/servers/{id}/os-volume_attachments/{volume}", get(show).put(update).delete(detach))
}

/// One attachment as Nova shows it at microversion `v`.
fn view(b: &Bdm, v: ApiVersion) -> Value {
    let mut a = json!({"serverId": b.instance_uuid, "volumeId": b.volume_id});
    if v.at_least(2, 89) {
        a["attachment_id"] = json!(b.attachment_id);
        a["bdm_uuid"] = json!(b.uuid);
    } else {
        a["id"] = json!(b.volume_id);
    }
    if let Some(d) = &b.device_name {
        a["device"] = json!(d);
    }
    if v.at_least(2, 70) {
        a["tag"] = json!(b.tag);
    }
    if v.at_least(2, 79) {
        a["delete_on_termination"] = json!(b.delete_on_termination);
    }
    a
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-volumes-attachments:index").await?;
    let limit = q.int("limit")?.map(|l| l.max(0) as usize).unwrap_or(usize::MAX);
    let offset = q.int("offset")?.map(|o| o.max(0) as usize).unwrap_or(0);
    let all = store::of_instance(&st.platform.db, &inst.uuid).await?;
    let shown: Vec<Value> = all.iter().skip(offset).take(limit).map(|b| view(b, v)).collect();
    Ok(Json(json!({"volumeAttachments": shown})))
}

async fn must_find(st: &AppState, inst: &Instance, volume: &str) -> Result<Bdm> {
    store::find(&st.platform.db, &inst.uuid, volume)
        .await?
        .ok_or_else(|| ComputeError::NotFound(format!("volume_id not found: {volume}")))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, volume)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-volumes-attachments:show").await?;
    let b = must_find(&st, &inst, &volume).await?;
    Ok(Json(json!({"volumeAttachment": view(&b, v)})))
}

/// The body of an attach (`volumeAttachment`); which keys a microversion allows is
/// checked after parsing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachRequest {
    #[serde(rename = "volumeId")]
    volume_id: Value,
    #[serde(default)]
    device: Option<Value>,
    #[serde(default)]
    tag: Option<Value>,
    #[serde(default)]
    delete_on_termination: Option<Value>,
}

fn invalid(field: &str, value: &Value, why: &str) -> ComputeError {
    ComputeError::BadRequest(format!("Invalid input for field/attribute {field}. Value: {value}. {why}"))
}

/// Nova's boolean parameter: true/false or their string forms.
fn parse_bool(field: &str, v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "on" | "y" | "yes" => Ok(true),
            "false" | "0" | "f" | "off" | "n" | "no" => Ok(false),
            _ => Err(invalid(field, v, "is not a valid boolean")),
        },
        _ => Err(invalid(field, v, "is not a valid boolean")),
    }
}

/// What an attach asks for, validated for microversion `v`.
#[derive(Debug, Clone)]
struct Attach {
    volume_id: String,
    tag: Option<String>,
    delete_on_termination: bool,
}

fn parse_attach(body: &Value, v: ApiVersion) -> Result<Attach> {
    let inner = match body.get("volumeAttachment") {
        Some(o @ Value::Object(_)) => o.clone(),
        Some(other) => return Err(invalid("volumeAttachment", other, "is not of type 'object'")),
        None => return Err(ComputeError::BadRequest("'volumeAttachment' is a required property".into())),
    };
    if let Some(extra) = body.as_object().and_then(|o| o.keys().find(|k| *k != "volumeAttachment")) {
        return Err(ComputeError::BadRequest(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let r: AttachRequest = serde_json::from_value(inner)
        .map_err(|e| ComputeError::BadRequest(format!("Invalid input for volumeAttachment: {e}")))?;
    let volume_id = match &r.volume_id {
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => s.clone(),
        other => return Err(invalid("volumeId", other, "is not a 'uuid'")),
    };
    match &r.device {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) if d.starts_with("/dev/") && d.len() > 5 => {}
        Some(other) => {
            return Err(invalid("device", other, "does not match '(^/dev/x{0,1}[a-z]{0,1}d{0,1})([a-z]+)[0-9]*$'"))
        }
    }
    let tag = match &r.tag {
        None => None,
        Some(_) if !v.at_least(2, 49) => {
            return Err(ComputeError::BadRequest("Additional properties are not allowed ('tag' was unexpected)".into()))
        }
        Some(Value::String(t)) if !t.is_empty() && t.chars().count() <= 60 && !t.contains([',', '/']) => {
            Some(t.clone())
        }
        Some(other) => return Err(invalid("tag", other, "must be 1 to 60 characters without ',' or '/'")),
    };
    let delete_on_termination = match &r.delete_on_termination {
        None => false,
        Some(_) if !v.at_least(2, 79) => {
            return Err(ComputeError::BadRequest(
                "Additional properties are not allowed ('delete_on_termination' was unexpected)".into(),
            ))
        }
        Some(d) => parse_bool("delete_on_termination", d)?,
    };
    Ok(Attach { volume_id, tag, delete_on_termination })
}

/// States a volume may be attached or detached in (Nova's, without the shelved ones:
/// an offloaded server has no host to connect the volume to).
const VOLUME_STATES: &[&str] = &[vm::ACTIVE, vm::PAUSED, vm::STOPPED, vm::SUSPENDED];

/// Disks the flavor gives a server before any volume (`vda` root, then ephemeral, swap).
fn local_disks(inst: &Instance) -> usize {
    1 + usize::from(inst.flavor.ephemeral > 0) + usize::from(inst.flavor.swap > 0)
}

async fn attach(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    rid: Option<Extension<RequestId>>,
    Path(id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-volumes-attachments:create").await?;
    let req = parse_attach(&body, v)?;
    check_lock(&st, &ctx, &inst)?;
    super::interfaces::check_device_state(&inst, "attach_volume", VOLUME_STATES)?;
    let vol = st
        .backends
        .volumes
        .get(&ctx, &req.volume_id)
        .await
        .map_err(refused)?
        .ok_or_else(|| ComputeError::NotFound(format!("Volume {} could not be found.", req.volume_id)))?;
    let existing = store::of_instance(&st.platform.db, &inst.uuid).await?;
    if existing.iter().any(|b| b.volume_id == vol.id) || vol.servers.contains(&inst.uuid) {
        return Err(ComputeError::BadRequest(format!(
            "Invalid volume: volume {} already attached to server {}",
            vol.id, inst.uuid
        ))
        .into());
    }
    let rid = request_id(&rid);
    let bdm = Bdm {
        uuid: uuid::Uuid::new_v4().to_string(),
        instance_uuid: inst.uuid.clone(),
        volume_id: vol.id.clone(),
        attachment_id: None,
        source_type: "volume".into(),
        boot_index: None,
        device_name: Some(store::next_device(&existing, local_disks(&inst))),
        tag: req.tag.clone(),
        delete_on_termination: req.delete_on_termination,
        status: status::ATTACHING.into(),
        connection_info: None,
        created_at: stratus_core::time::now(),
    };
    let op = VolumeOp::new(st.clone(), ctx.0.clone(), inst.clone(), bdm, rid.clone());
    if let Err(e) = ops::reserve_and_record(&op, &Faults::default()).await {
        record(&st, &ctx, &inst, "attach_volume", &rid, Some(&e.message)).await;
        return Err(refused(e));
    }
    record(&st, &ctx, &inst, "attach_volume", &rid, None).await;
    let b = op.bdm();
    tokio::spawn(async move {
        ops::connect_and_plug(&op, &Faults::default()).await;
    });
    let mut a =
        json!({"id": b.volume_id, "serverId": b.instance_uuid, "volumeId": b.volume_id, "device": b.device_name});
    if v.at_least(2, 70) {
        a["tag"] = json!(b.tag);
    }
    if v.at_least(2, 79) {
        a["delete_on_termination"] = json!(b.delete_on_termination);
    }
    Ok(Json(json!({"volumeAttachment": a})))
}

/// `PUT`: swapping a volume for another is not supported; at 2.85+ the same volume's
/// `delete_on_termination` may be changed.
async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, volume)): Path<(String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<StatusCode, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-volumes-attachments:update").await?;
    check_lock(&st, &ctx, &inst)?;
    let b = must_find(&st, &inst, &volume).await?;
    let new = body["volumeAttachment"]["volumeId"].as_str().unwrap_or_default();
    if new != b.volume_id {
        st.policy.enforce("os_compute_api:os-volumes-attachments:swap", &ctx, &inst.target())?;
        return Err(ComputeError::Conflict(
            "Swapping a server's volume for another is not supported by this cloud".into(),
        )
        .into());
    }
    if !v.at_least(2, 85) {
        return Err(ComputeError::BadRequest("Updating an attachment needs microversion 2.85".into()).into());
    }
    if let Some(d) = body["volumeAttachment"].get("delete_on_termination") {
        let d = parse_bool("delete_on_termination", d)?;
        store::set(&st.platform.db, &b.uuid, &[("delete_on_termination", d.into())]).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

async fn detach(
    State(st): State<AppState>,
    ctx: Ctx,
    rid: Option<Extension<RequestId>>,
    Path((id, volume)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-volumes-attachments:delete").await?;
    check_lock(&st, &ctx, &inst)?;
    super::interfaces::check_device_state(&inst, "detach_volume", VOLUME_STATES)?;
    let b = must_find(&st, &inst, &volume).await?;
    if b.is_root() {
        return Err(ComputeError::Forbidden("Cannot detach a root device volume".into()).into());
    }
    if b.status != status::ATTACHED {
        return Err(ComputeError::BadRequest(format!(
            "Invalid volume: Volume {} is {} on server {}",
            b.volume_id, b.status, inst.uuid
        ))
        .into());
    }
    let rid = request_id(&rid);
    let op = VolumeOp::new(st.clone(), ctx.0.clone(), inst.clone(), b, rid.clone());
    if let Err(e) = ops::begin(&op, &Faults::default()).await {
        record(&st, &ctx, &inst, "detach_volume", &rid, Some(&e.message)).await;
        return Err(refused(e));
    }
    record(&st, &ctx, &inst, "detach_volume", &rid, None).await;
    tokio::spawn(async move {
        ops::finish_detach(&op, &Faults::default()).await;
    });
    Ok(StatusCode::ACCEPTED)
}
