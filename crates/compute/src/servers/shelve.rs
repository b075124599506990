//! `shelve`, `shelveOffload`, `unshelve`.
//!
//! Shelving snapshots the guest's disk into an image and stops it (SHELVED); offloading
//! removes the guest from its host and gives the host's placement allocation back
//! (SHELVED_OFFLOADED: no host, no claim), immediately when `shelved_offload_time` is
//! 0, after that many seconds when positive, never when -1. Unshelving an offloaded
//! server schedules it again like a build (claim under the instance uuid) and spawns it
//! from the shelved image. Every step is recorded on the row before the next one runs,
//! and [`Conductor::recover_shelve`] re-sends the step a crash interrupted (the driver
//! steps are idempotent).
//!
//! The shelved snapshot image is deleted, as Nova does, once the server is back
//! (unshelved, offloaded or not) and when a shelved server is deleted. Its id stays on
//! the row (`shelved_image_id`) until the image service confirmed the delete, so the
//! row itself is the to-do list: [`Conductor::sweep_shelved_images`] runs at start-up
//! and every ten minutes and finishes any cleanup a crash or an unreachable image
//! service left open.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use stratus_compute_proto::rpc::{GuestOp, GuestOpKind};
use stratus_compute_proto::virt::PowerState;
use stratus_core::{ApiError, ApiVersion, RequestContext};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use super::store::{self, Instance, Update};
use super::{authorized, check_lock, events};
use crate::conductor::Conductor;
use crate::error::{ComputeError, Result};
use crate::state::{self, task, vm, Transition};
use crate::AppState;

/// Sets the task and records the action in one transaction (false: lost a race).
async fn start(
    st: &AppState,
    ctx: &RequestContext,
    inst: &Instance,
    t: Transition,
    rid: &str,
    extra: Update,
) -> Result<()> {
    t.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    let mut u = extra;
    if let Some(tk) = t.task {
        u = u.set("task_state", tk);
    }
    let u = u.expect_task(None).expect_vm(t.from);
    let (uuid, user, project, rid2) =
        (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone(), rid.to_string());
    let ok = st
        .platform
        .db
        .transaction(|tx| {
            let (u, uuid, user, project, rid) = (u.clone(), uuid.clone(), user.clone(), project.clone(), rid2.clone());
            Box::pin(async move {
                if !u.apply_tx(tx, &uuid).await? {
                    return Ok(false);
                }
                events::start_action(tx, &uuid, t.action, &rid, &user, &project).await?;
                Ok::<_, ComputeError>(true)
            })
        })
        .await?;
    if !ok {
        let now = store::must_load(&st.platform.db, &inst.uuid).await?;
        t.check(&now.uuid, &now.vm_state, now.task_state.as_deref())?;
        return Err(ComputeError::Conflict(format!("Instance {} changed state concurrently; retry", inst.uuid)));
    }
    Ok(())
}

/// `shelve`.
pub async fn shelve(st: &AppState, ctx: &RequestContext, id: &str, rid: &str) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:os-shelve:shelve").await?;
    check_lock(st, ctx, &inst)?;
    state::SHELVE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    let host =
        inst.host.clone().ok_or_else(|| ComputeError::Conflict(format!("Instance {id} is not on a compute host")))?;
    // A previous unshelve's snapshot not deleted yet: its id is about to be overwritten.
    st.conductor.delete_shelved_image(&inst.uuid).await?;
    let props = json!({
        "image_type": "snapshot",
        "instance_uuid": inst.uuid,
        "base_image_ref": inst.image_ref,
        "owner_user_name": ctx.user_name,
    });
    let image_id = st
        .backends
        .images
        .create_snapshot(ctx, &format!("{}-shelved", inst.name), &props)
        .await
        .map_err(super::interfaces::refused)?;
    start(st, ctx, &inst, state::SHELVE, rid, Update::new().set("shelved_image_id", image_id.clone())).await?;
    let inst = store::must_load(&st.platform.db, id).await?;
    st.conductor.send_step(&inst, &host, GuestOp::Shelve { image_id }, rid).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `shelveOffload` (admin).
pub async fn shelve_offload(st: &AppState, ctx: &RequestContext, id: &str, rid: &str) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:os-shelve:shelve_offload").await?;
    check_lock(st, ctx, &inst)?;
    start(st, ctx, &inst, state::SHELVE_OFFLOAD, rid, Update::new()).await?;
    let inst = store::must_load(&st.platform.db, id).await?;
    st.conductor.offload(&inst, rid).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `unshelve` (`availability_zone` from 2.77, `host` from 2.91 for admins).
pub async fn unshelve(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    id: &str,
    args: &Value,
    rid: &str,
) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:os-shelve:unshelve").await?;
    check_lock(st, ctx, &inst)?;
    let mut extra = Update::new();
    if let Some(o) = args.as_object() {
        if !v.at_least(2, 77) {
            return Err(ComputeError::BadRequest("unshelve takes a body from microversion 2.77".into()).into());
        }
        for k in o.keys() {
            if k != "availability_zone" && !(k == "host" && v.at_least(2, 91)) {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute unshelve. Additional properties are not allowed ('{k}' was unexpected)"
                ))
                .into());
            }
        }
        if (o.contains_key("availability_zone") || o.contains_key("host")) && inst.vm_state != vm::SHELVED_OFFLOADED {
            return Err(ComputeError::Conflict(format!(
                "The server {id} is not shelved offloaded; its availability zone and host cannot change"
            ))
            .into());
        }
        match &o.get("availability_zone") {
            Some(Value::String(z)) => {
                if !crate::hosts::zone_exists(st, z).await? {
                    return Err(ComputeError::BadRequest(format!(
                        "The requested availability zone is not available: {z}"
                    ))
                    .into());
                }
                extra = extra.set("requested_az", z.clone());
            }
            // 2.91: null unpins the server from its zone.
            Some(Value::Null) if v.at_least(2, 91) => extra = extra.set("requested_az", Option::<String>::None),
            Some(other) => return Err(ComputeError::BadRequest(format!("Invalid availability_zone {other}")).into()),
            None => {}
        }
        if let Some(h) = o.get("host") {
            st.policy.enforce("os_compute_api:os-shelve:unshelve_to_host", ctx, &inst.target())?;
            let h = h.as_str().ok_or_else(|| ComputeError::BadRequest("host must be a string".into()))?;
            let known = Query::new("SELECT 1 FROM compute_nodes WHERE host = ")
                .bind(h)
                .fetch_optional(st.platform.db.reader())
                .await
                .map_err(ComputeError::from)?;
            if known.is_none() {
                return Err(ComputeError::BadRequest(format!("Compute host {h} could not be found.")).into());
            }
            let mut hints = inst.scheduler_hints.clone();
            if !hints.is_object() {
                hints = json!({});
            }
            hints["force_host"] = json!(h);
            extra = extra.set("scheduler_hints_json", hints.to_string());
        }
    } else if !args.is_null() {
        return Err(ComputeError::BadRequest("unshelve takes null or an object".into()).into());
    }
    start(st, ctx, &inst, state::UNSHELVE, rid, extra).await?;
    let c = st.conductor.clone();
    let (uuid, rid) = (inst.uuid.clone(), rid.to_string());
    tokio::spawn(async move {
        if let Err(e) = c.unshelve(&uuid, &rid).await {
            tracing::error!(instance = %uuid, error = %e, "unshelve failed");
        }
    });
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The snapshot a shelved server's disk went to.
async fn shelved_image(db: &stratus_db::Db, uuid: &str) -> Result<Option<String>> {
    let r = Query::new("SELECT shelved_image_id FROM compute_instances WHERE uuid = ")
        .bind(uuid)
        .fetch_optional(db.reader())
        .await?;
    Ok(r.and_then(|r| r.try_get::<Option<String>, _>("shelved_image_id").ok().flatten()))
}

impl Conductor {
    /// Offloads a shelved server: the host drops the guest (or, when it is down, the
    /// guest is forgotten here and its reconciliation destroys it later).
    pub(crate) async fn offload(&self, inst: &Instance, rid: &str) {
        let host = inst.host.clone().unwrap_or_default();
        let up = self.host_up(&host).await.unwrap_or(false);
        if up {
            self.send_step(inst, &host, GuestOp::ShelveOffload, rid).await;
        } else if let Err(e) = self.finish_offload(&inst.uuid, rid, PowerState::NoState).await {
            tracing::error!(instance = %inst.uuid, error = %e, "offload failed");
        }
    }

    async fn finish_offload(&self, uuid: &str, rid: &str, _power: PowerState) -> Result<()> {
        let db = &self.platform.db;
        self.release_claim(uuid).await?;
        let ok = Update::new()
            .set("vm_state", vm::SHELVED_OFFLOADED)
            .set("task_state", Option::<String>::None)
            .set("power_state", PowerState::NoState.code())
            .set("host", Option::<String>::None)
            .set("node", Option::<String>::None)
            .expect_task(Some(task::SHELVING_OFFLOADING))
            .apply(db, uuid)
            .await?;
        if ok {
            if let Some(inst) = store::load(db, uuid).await? {
                self.rebind_ports(&inst, "").await;
            }
            events::finish_event(db, uuid, rid, "compute_shelve_offload_instance", None, true).await?;
        }
        Ok(())
    }

    /// Unshelve: power on where it is, or (offloaded) schedule, claim and spawn.
    pub(crate) async fn unshelve(&self, uuid: &str, rid: &str) -> Result<()> {
        let db = &self.platform.db;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        if inst.task_state.as_deref() != Some(task::UNSHELVING) {
            return Ok(());
        }
        if let Some(h) = inst.host.clone() {
            self.send_step(&inst, &h, GuestOp::Unshelve, rid).await;
            return Ok(());
        }
        // A claim a crash left behind (host never recorded) is dropped first.
        self.release_claim(uuid).await?;
        let mut want = inst.clone();
        want.retry_hosts = vec![];
        match self.scheduler.select_and_claim(&want).await {
            Ok((host, node)) => {
                let az = self.host_az(&host).await?;
                let ok = Update::new()
                    .set("host", host.clone())
                    .set("node", node)
                    .set("availability_zone", az)
                    .expect_task(Some(task::UNSHELVING))
                    .expect_host(None)
                    .apply(db, uuid)
                    .await?;
                if !ok {
                    self.undo_claim(uuid, "unshelve of a server changed meanwhile").await;
                    return Ok(());
                }
                events::finish_event(db, uuid, rid, "conductor_unshelve_instance", None, false).await?;
                let mut inst = store::must_load(db, uuid).await?;
                // The guest comes back from the shelved snapshot.
                if let Some(img) = shelved_image(db, uuid).await? {
                    if let Some(im) = inst.image.as_mut() {
                        im.id = img;
                    }
                }
                self.rebind_ports(&inst, &host).await;
                self.send_step(&inst, &host, GuestOp::Unshelve, rid).await;
                Ok(())
            }
            Err(nvh) => {
                tracing::warn!(instance = %uuid, details = %nvh.details, "{nvh}");
                Update::new()
                    .set("task_state", Option::<String>::None)
                    .expect_task(Some(task::UNSHELVING))
                    .apply(db, uuid)
                    .await?;
                events::finish_event(
                    db,
                    uuid,
                    rid,
                    "conductor_unshelve_instance",
                    Some(&format!("{nvh} {}", nvh.details)),
                    true,
                )
                .await
            }
        }
    }

    /// Results of shelve steps.
    pub(crate) async fn shelve_result(
        self: Arc<Self>,
        host: &str,
        uuid: &str,
        rid: &str,
        op: GuestOpKind,
        error: Option<&str>,
        power: PowerState,
    ) -> Result<()> {
        let db = &self.platform.db;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        let ev = crate::conductor::event_name(op);
        if let Some(err) = error {
            if inst.task_state.as_deref() == Some(task::DELETING) {
                return Ok(());
            }
            self.set_error(uuid, store::fault(500, &format!("Failed to {op} the server"), err)).await?;
            return events::finish_event(db, uuid, rid, ev, Some(err), true).await;
        }
        match op {
            GuestOpKind::Shelve => {
                let ok = Update::new()
                    .set("vm_state", vm::SHELVED)
                    .set("task_state", Option::<String>::None)
                    .set("power_state", power.code())
                    .set("shelved_at", stratus_core::time::now())
                    .expect_task(Some(task::SHELVING))
                    .apply(db, uuid)
                    .await?;
                if !ok {
                    return Ok(());
                }
                if self.cfg.shelved_offload_time == 0 {
                    // Offloaded at once, under the same action.
                    events::finish_event(db, uuid, rid, ev, None, false).await?;
                    let ok = Update::new()
                        .set("task_state", task::SHELVING_OFFLOADING)
                        .expect_task(None)
                        .expect_vm(&[vm::SHELVED])
                        .apply(db, uuid)
                        .await?;
                    if ok {
                        let inst = store::must_load(db, uuid).await?;
                        self.offload(&inst, rid).await;
                    }
                    return Ok(());
                }
                events::finish_event(db, uuid, rid, ev, None, true).await
            }
            GuestOpKind::ShelveOffload => {
                if inst.host.as_deref() != Some(host) {
                    return Ok(());
                }
                self.finish_offload(uuid, rid, power).await
            }
            _ => {
                // shelved_image_id stays until the snapshot is really gone (see the module doc).
                let ok = Update::new()
                    .set("vm_state", vm::ACTIVE)
                    .set("task_state", Option::<String>::None)
                    .set("power_state", power.code())
                    .set("shelved_at", Option::<String>::None)
                    .expect_task(Some(task::UNSHELVING))
                    .apply(db, uuid)
                    .await?;
                if ok {
                    events::finish_event(db, uuid, rid, ev, None, true).await?;
                    if let Err(e) = self.delete_shelved_image(uuid).await {
                        tracing::warn!(instance = %uuid, error = %e, "shelved snapshot not deleted yet");
                    }
                }
                Ok(())
            }
        }
    }

    /// Re-sends the shelve step a crash interrupted.
    pub(crate) async fn recover_shelve(self: &Arc<Self>, inst: &Instance, rid: &str) -> Result<()> {
        match inst.task_state.as_deref() {
            Some(task::SHELVING) => {
                let host = inst.host.clone().unwrap_or_default();
                let image_id = shelved_image(&self.platform.db, &inst.uuid).await?.unwrap_or_default();
                self.send_step(inst, &host, GuestOp::Shelve { image_id }, rid).await;
                Ok(())
            }
            Some(task::SHELVING_OFFLOADING) => {
                self.offload(inst, rid).await;
                Ok(())
            }
            _ => self.unshelve(&inst.uuid, rid).await,
        }
    }

    /// Deletes the shelved snapshot of `uuid` once the server no longer needs it: it is
    /// back from shelving (no task, not shelved) or deleted. An ERROR server keeps it (it
    /// may hold the only copy of the disk). Idempotent: the id is cleared only after the
    /// image service confirmed the delete (or said the image is gone).
    pub(crate) async fn delete_shelved_image(&self, uuid: &str) -> Result<()> {
        let db = &self.platform.db;
        let Some(r) =
            Query::new("SELECT shelved_image_id, vm_state, task_state, deleted FROM compute_instances WHERE uuid = ")
                .bind(uuid)
                .fetch_optional(db.reader())
                .await?
        else {
            return Ok(());
        };
        let image: Option<String> = r.try_get("shelved_image_id")?;
        let vm_state: String = r.try_get("vm_state")?;
        let task: Option<String> = r.try_get("task_state")?;
        let deleted = stratus_db::flag(&r, "deleted");
        let Some(image) = image else { return Ok(()) };
        let done_with_it = deleted
            || (task.is_none() && ![vm::SHELVED, vm::SHELVED_OFFLOADED, vm::ERROR].contains(&vm_state.as_str()));
        if !done_with_it {
            return Ok(());
        }
        self.backends.images.delete(&image).await.map_err(|e| ComputeError::Unavailable(e.0))?;
        tracing::info!(instance = %uuid, image = %image, "shelved snapshot image deleted");
        let q = Query::new("UPDATE compute_instances SET shelved_image_id = NULL WHERE uuid = ")
            .bind(uuid)
            .push_bind(" AND shelved_image_id = ", image)
            .clone();
        db.transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await?;
        Ok(())
    }

    /// Sweeps at start-up (once the image service answers) and then every ten minutes,
    /// every ten seconds while a delete keeps failing.
    pub(crate) fn spawn_shelved_image_sweeper(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            loop {
                let pause = match self.sweep_shelved_images().await {
                    Ok(0) => 600,
                    Ok(_) => 10,
                    Err(e) => {
                        tracing::warn!(error = %e, "shelved snapshot sweep failed");
                        10
                    }
                };
                tokio::time::sleep(Duration::from_secs(pause)).await;
            }
        })
    }

    /// Finishes every shelved-snapshot cleanup a crash (or an image service that could
    /// not be reached) left open; returns how many are still open.
    pub(crate) async fn sweep_shelved_images(&self) -> Result<usize> {
        let rows = Query::new("SELECT uuid FROM compute_instances WHERE shelved_image_id IS NOT NULL")
            .push(" AND task_state IS NULL AND (deleted = ")
            .bind(true)
            .push(" OR NOT (")
            .push_in("vm_state", vec![vm::SHELVED, vm::SHELVED_OFFLOADED, vm::ERROR])
            .push("))")
            .fetch_all(self.platform.db.reader())
            .await?;
        let mut open = 0;
        for r in rows {
            let uuid: String = r.try_get("uuid")?;
            if let Err(e) = self.delete_shelved_image(&uuid).await {
                tracing::warn!(instance = %uuid, error = %e, "shelved snapshot not deleted yet");
                open += 1;
            }
        }
        Ok(open)
    }

    /// Offloads servers shelved longer than `shelved_offload_time` seconds (Nova's
    /// `_poll_shelved_instances`).
    pub(crate) fn spawn_offloader(self: Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let secs = self.cfg.shelved_offload_time;
        if secs <= 0 {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs((secs as u64).clamp(1, 60)));
            loop {
                tick.tick().await;
                if let Err(e) = self.offload_due(secs).await {
                    tracing::warn!(error = %e, "shelved offload pass failed");
                }
            }
        }))
    }

    async fn offload_due(&self, secs: i64) -> Result<()> {
        let horizon = crate::scheduler::chrono_horizon(secs as u64);
        let rows = Query::new("SELECT uuid FROM compute_instances WHERE deleted = ")
            .bind(false)
            .push_bind(" AND vm_state = ", vm::SHELVED)
            .push(" AND task_state IS NULL")
            .push_bind(" AND shelved_at <= ", horizon)
            .fetch_all(self.platform.db.reader())
            .await?;
        for r in rows {
            let uuid: String = r.try_get("uuid")?;
            let ok = Update::new()
                .set("task_state", task::SHELVING_OFFLOADING)
                .expect_task(None)
                .expect_vm(&[vm::SHELVED])
                .apply(&self.platform.db, &uuid)
                .await?;
            if ok {
                let inst = store::must_load(&self.platform.db, &uuid).await?;
                self.offload(&inst, &format!("req-offload-{}", uuid::Uuid::new_v4())).await;
            }
        }
        Ok(())
    }
}
