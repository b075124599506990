//! Deferred delete (`reclaim_instance_interval_secs`): `DELETE /servers/{id}` powers the
//! guest off and keeps the server SOFT_DELETED (still counted in quota, its ports and
//! allocation held) until `restore` brings it back, `forceDelete` or a second DELETE
//! deletes it now, or the reclaim loop deletes it once the interval has passed.
//! Also `changePassword` and `os-server-password`, the other guest-secret APIs.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_compute_proto::rpc::GuestOp;
use stratus_core::{ApiError, RequestContext};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use super::store::{self, Instance, Update};
use super::{authorized, check_lock, events};
use crate::error::{ComputeError, Result};
use crate::state::{task, vm, Transition};
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v2.1/servers/{id}/os-server-password", get(password_show).delete(password_clear))
}

/// `restore`: back from SOFT_DELETED, powered on.
pub const RESTORE: Transition =
    Transition { action: "restore", from: &[vm::SOFT_DELETED], task: Some(task::POWERING_ON), to: Some(vm::ACTIVE) };

/// Whether a DELETE of `inst` is deferred.
pub fn deferred(st: &AppState, inst: &Instance) -> bool {
    // A server that never ran has nothing worth keeping (Nova deletes it at once too);
    // a second DELETE of a soft-deleted server deletes it for real.
    st.cfg.reclaim_instance_interval_secs > 0 && inst.launched_at.is_some() && inst.vm_state != vm::SOFT_DELETED
}

/// Soft-deletes `inst`: SOFT_DELETED now, the guest powered off behind it.
pub async fn soft_delete(st: &AppState, ctx: &RequestContext, inst: &Instance, rid: &str) -> Result<()> {
    if let Some(t) = &inst.task_state {
        return Err(ComputeError::InvalidState {
            action: "soft_delete".into(),
            uuid: inst.uuid.clone(),
            attr: "task_state",
            state: t.clone(),
        });
    }
    let (uuid, user, project, rid2) =
        (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone(), rid.to_string());
    let was = inst.vm_state.clone();
    let ok = st
        .platform
        .db
        .transaction(|tx| {
            let (uuid, user, project, rid, was) =
                (uuid.clone(), user.clone(), project.clone(), rid2.clone(), was.clone());
            Box::pin(async move {
                let ok = Update::new()
                    .set("vm_state", vm::SOFT_DELETED)
                    .set("deleted_at", stratus_core::time::now())
                    .expect_task(None)
                    .expect_vm(&[was.as_str()])
                    .apply_tx(tx, &uuid)
                    .await?;
                if ok {
                    events::start_action(tx, &uuid, "softDelete", &rid, &user, &project).await?;
                }
                Ok::<_, ComputeError>(ok)
            })
        })
        .await?;
    if !ok {
        return Err(ComputeError::Conflict(format!("Instance {} changed state concurrently; retry", inst.uuid)));
    }
    let fresh = store::must_load(&st.platform.db, &inst.uuid).await?;
    if fresh.host.is_some() && inst.power_state == 1 {
        st.conductor.dispatch(&fresh, GuestOp::PowerOff { timeout_secs: 60 }, rid, "softDelete").await;
    } else {
        let _ = events::start_event(&st.platform.db, &inst.uuid, rid, "compute_soft_delete_instance", None).await;
        let _ =
            events::finish_event(&st.platform.db, &inst.uuid, rid, "compute_soft_delete_instance", None, true).await;
    }
    Ok(())
}

/// Deletes `inst` now (forceDelete, reclaim): the ordinary delete path.
pub async fn delete_now(st: &AppState, user: &str, inst: &Instance, rid: &str, action: &str) -> Result<bool> {
    let (uuid, user, project, rid2, action) =
        (inst.uuid.clone(), user.to_string(), inst.project_id.clone(), rid.to_string(), action.to_string());
    let ok = st
        .platform
        .db
        .transaction(|tx| {
            let (uuid, user, project, rid, action) =
                (uuid.clone(), user.clone(), project.clone(), rid2.clone(), action.clone());
            Box::pin(async move {
                let ok = Update::new().set("task_state", task::DELETING).expect_task(None).apply_tx(tx, &uuid).await?;
                if ok {
                    events::start_action(tx, &uuid, &action, &rid, &user, &project).await?;
                }
                Ok::<_, ComputeError>(ok)
            })
        })
        .await?;
    if ok {
        st.conductor.clone().spawn_delete(inst.uuid.clone(), rid.to_string());
    }
    Ok(ok)
}

/// `restore` and `forceDelete`.
pub async fn action(
    st: &AppState,
    ctx: &RequestContext,
    id: &str,
    name: &str,
    rid: &str,
) -> Result<Response, ApiError> {
    if name == "restore" {
        let inst = authorized(st, ctx, id, "os_compute_api:os-deferred-delete:restore").await?;
        RESTORE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
        if inst.host.is_some() {
            super::actions::begin(
                st,
                ctx,
                &inst,
                RESTORE,
                GuestOp::PowerOn,
                rid,
                Update::new().set("deleted_at", Option::<String>::None),
            )
            .await?;
        } else {
            Update::new()
                .set("vm_state", vm::ACTIVE)
                .set("deleted_at", Option::<String>::None)
                .expect_task(None)
                .expect_vm(&[vm::SOFT_DELETED])
                .apply(&st.platform.db, &inst.uuid)
                .await?;
            super::interfaces::record(st, ctx, &inst, "restore", rid, None).await;
        }
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let inst = authorized(st, ctx, id, "os_compute_api:os-deferred-delete:force").await?;
    check_lock(st, ctx, &inst)?;
    if inst.vm_state != vm::SOFT_DELETED {
        return Err(ComputeError::InvalidState {
            action: "forceDelete".into(),
            uuid: inst.uuid.clone(),
            attr: "vm_state",
            state: inst.vm_state.clone(),
        }
        .into());
    }
    if !delete_now(st, &ctx.user_id, &inst, rid, "forceDelete").await? {
        return Err(ComputeError::Conflict(format!("Instance {} changed state concurrently; retry", inst.uuid)).into());
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Deletes soft-deleted servers older than the interval, every interval (at most a
/// minute apart); a no-op when deferred delete is off.
pub fn spawn_reclaimer(st: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let secs = st.cfg.reclaim_instance_interval_secs;
    if secs == 0 {
        return None;
    }
    let period = Duration::from_secs(secs.clamp(1, 60));
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            if let Err(e) = reclaim_once(&st).await {
                tracing::warn!(error = %e, "reclaiming soft-deleted servers failed");
            }
        }
    }))
}

/// One pass of the reclaim loop; returns how many deletes it started.
pub async fn reclaim_once(st: &AppState) -> Result<usize> {
    let horizon = crate::scheduler::chrono_horizon(st.cfg.reclaim_instance_interval_secs);
    let rows = Query::new("SELECT uuid FROM compute_instances WHERE deleted = ")
        .bind(false)
        .push_bind(" AND vm_state = ", vm::SOFT_DELETED)
        .push(" AND task_state IS NULL")
        .push_bind(" AND deleted_at < ", horizon)
        .fetch_all(st.platform.db.reader())
        .await?;
    let mut n = 0;
    for r in rows {
        let uuid: String = r.try_get("uuid")?;
        let Some(inst) = store::load(&st.platform.db, &uuid).await? else { continue };
        let rid = format!("req-reclaim-{}", uuid::Uuid::new_v4());
        if delete_now(st, "nova-compute", &inst, &rid, "delete").await? {
            tracing::info!(instance = %uuid, "reclaimed soft-deleted server");
            n += 1;
        }
    }
    Ok(n)
}

/// `changePassword`. No driver of this cloud can set a password inside a running guest
/// (that needs a guest agent); Nova answers this case with 409 (`InstanceAgentNotEnabled`
/// / `SetAdminPasswdNotSupported`) after checking the server's state, and so do we. The
/// password is not stored: a guest that never got it must not be told it has it.
pub async fn change_password(
    st: &AppState,
    ctx: &RequestContext,
    id: &str,
    args: &Value,
) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:os-admin-password").await?;
    check_lock(st, ctx, &inst)?;
    match &args["adminPass"] {
        Value::String(_) => {}
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute changePassword: 'adminPass' is a required string".into(),
            )
            .into())
        }
    }
    let t = Transition { action: "changePassword", from: &[vm::ACTIVE], task: None, to: None };
    t.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    Err(ComputeError::Conflict(format!(
        "Failed to set admin password on {} because the virt driver of its host ({}) cannot set passwords in a \
         running guest (no guest agent)",
        inst.uuid,
        inst.host.clone().unwrap_or_default()
    ))
    .into())
}

/// `GET /servers/{id}/os-server-password`: the encrypted password the guest posted to the
/// metadata service. This cloud's metadata service does not take posts yet, so it is
/// always empty, as Nova's is for a guest that never posted one.
async fn password_show(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    authorized(&st, &ctx, &id, "os_compute_api:os-server-password:show").await?;
    Ok(Json(json!({"password": ""})))
}

/// `DELETE /servers/{id}/os-server-password`.
async fn password_clear(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    authorized(&st, &ctx, &id, "os_compute_api:os-server-password:clear").await?;
    Ok(StatusCode::NO_CONTENT)
}
