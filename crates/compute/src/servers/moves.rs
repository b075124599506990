//! Moving servers between hosts: `resize` (+ `confirmResize`/`revertResize`), cold
//! `migrate`, `os-migrateLive` and `evacuate`.
//!
//! Every move is a saga recorded on two rows, the instance (task_state) and its
//! migration record (status, destination), and it moves placement allocations as Nova
//! does: first the source allocation goes to the migration uuid as consumer (one atomic
//! `POST /allocations`), then the scheduler claims the destination for the instance. So
//! at every step exactly one consumer holds each host's share, and undoing a move is the
//! same atomic call backwards (the migration's source allocation replaces whatever the
//! instance claimed on the destination). A confirmed (or completed) move releases the
//! migration consumer; a reverted or failed one gives the allocation back to the
//! instance.
//!
//! Steps run on the hosts as agent operations whose results come back to the conductor
//! ([`Conductor::move_result`]); each step's effect is recorded before the next one is
//! sent, so after a crash [`Conductor::recover_move`] re-sends the step the rows say is
//! in flight (driver steps are idempotent) or, before a destination was recorded, rolls
//! the move back.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stratus_compute_proto::error::AgentError;
use stratus_compute_proto::rpc::{agent_topic, to_message, AgentRequest, GuestOp, GuestOpKind};
use stratus_compute_proto::virt::{MigrationTarget, PowerState};
use stratus_core::{ApiError, ApiVersion, RequestContext};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use super::store::{self, fault, Instance, Update};
use super::{authorized, check_lock, events};
use crate::conductor::{event_name as event, Conductor};
use crate::error::{ComputeError, Result};
use crate::flavors::{self, Flavor};
use crate::migrations::{self, kind, Migration, MigrationStatus};
use crate::state::{self, task, vm, Transition};
use crate::AppState;

/// Agent operations whose results this module (and [`super::shelve`]) handles.
pub fn handles(op: GuestOpKind) -> bool {
    use GuestOpKind as K;
    matches!(
        op,
        K::MigrateDiskAndPowerOff
            | K::FinishMigration
            | K::ConfirmMigration
            | K::RevertMigrationDest
            | K::FinishRevertMigration
            | K::PreLiveMigration
            | K::LiveMigration
            | K::PostLiveMigration
            | K::EvacuateRebuild
            | K::Shelve
            | K::ShelveOffload
            | K::Unshelve
    )
}

/// task_states whose crash recovery this module owns.
pub fn recovers(t: &str) -> bool {
    matches!(
        t,
        task::RESIZE_PREP
            | task::RESIZE_MIGRATING
            | task::RESIZE_FINISH
            | task::RESIZE_REVERTING
            | task::MIGRATING
            | task::REBUILDING
            | task::SHELVING
            | task::SHELVING_OFFLOADING
            | task::UNSHELVING
    )
}

/// The conductor event of the scheduling step of each migration type.
fn conductor_event(m: &Migration) -> &'static str {
    match m.migration_type.as_str() {
        kind::LIVE => "conductor_live_migrate_instance",
        kind::EVACUATION => "conductor_rebuild_server",
        _ => "conductor_migrate_server",
    }
}

fn with_flavor(inst: &Instance, f: &Flavor) -> Instance {
    let mut i = inst.clone();
    i.flavor = f.clone();
    i
}

fn flavor_update(u: Update, f: &Flavor) -> Update {
    u.set("flavor_id", f.id.clone())
        .set("flavor_json", f.to_json().to_string())
        .set("vcpus", f.vcpus)
        .set("memory_mb", f.ram)
}

// --- API --------------------------------------------------------------------------------

/// What a move request asks for.
struct MoveRequest {
    t: Transition,
    kind: &'static str,
    new_flavor: Option<Flavor>,
    host: Option<String>,
    block_migration: bool,
    /// What a resize adds to the project's usage, checked inside the transaction that
    /// records the move.
    quota: Option<ResizeQuota>,
}

/// Records the move: migration row, task_state and instance action in one transaction;
/// then the conductor takes over.
async fn begin_move(
    st: &AppState,
    ctx: &RequestContext,
    inst: &Instance,
    req: MoveRequest,
    rid: &str,
    extra: Update,
) -> Result<Migration> {
    req.t.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    let Some(source) = inst.host.clone() else {
        return Err(ComputeError::Conflict(format!("Instance {} is not on a compute host", inst.uuid)));
    };
    if let Some(m) = migrations::active_for(&st.platform.db, &inst.uuid).await? {
        return Err(ComputeError::Conflict(format!(
            "Instance {} has a {} in progress (migration {}, status {})",
            inst.uuid, m.migration_type, m.id, m.status
        )));
    }
    let m = Migration {
        uuid: uuid::Uuid::new_v4().to_string(),
        instance_uuid: inst.uuid.clone(),
        migration_type: req.kind.into(),
        status: MigrationStatus::initial(req.kind),
        source_compute: Some(source),
        source_node: inst.node.clone(),
        old_flavor: Some(inst.flavor.clone()),
        new_flavor: Some(req.new_flavor.clone().unwrap_or_else(|| inst.flavor.clone())),
        old_vm_state: Some(inst.vm_state.clone()),
        requested_host: req.host.clone(),
        block_migration: req.block_migration,
        request_id: Some(rid.to_string()),
        project_id: inst.project_id.clone(),
        user_id: ctx.user_id.clone(),
        ..Default::default()
    };
    let mut u = extra;
    if let Some(t) = req.t.task {
        u = u.set("task_state", t);
    }
    let u = u.expect_task(None).expect_vm(req.t.from);
    let (m2, uuid, rid2, user, project, action, quota) = (
        m.clone(),
        inst.uuid.clone(),
        rid.to_string(),
        ctx.user_id.clone(),
        inst.project_id.clone(),
        req.t.action,
        req.quota.clone(),
    );
    let ok = st
        .platform
        .db
        .transaction(|tx| {
            let (m, u, uuid, rid, user, project, quota) =
                (m2.clone(), u.clone(), uuid.clone(), rid2.clone(), user.clone(), project.clone(), quota.clone());
            Box::pin(async move {
                if let Some(q) = &quota {
                    check_resize_quota_tx(tx, &project, q).await?;
                }
                if !u.apply_tx(tx, &uuid).await? {
                    return Ok(false);
                }
                migrations::insert(tx, &m).await?;
                events::start_action(tx, &uuid, action, &rid, &user, &project).await?;
                Ok::<_, ComputeError>(true)
            })
        })
        .await?;
    if !ok {
        let now = store::must_load(&st.platform.db, &inst.uuid).await?;
        req.t.check(&now.uuid, &now.vm_state, now.task_state.as_deref())?;
        return Err(ComputeError::Conflict(format!("Instance {} changed state concurrently; retry", inst.uuid)));
    }
    st.conductor.clone().spawn_move(inst.uuid.clone(), rid.to_string());
    Ok(m)
}

/// A host named in a request must be a compute host we know.
async fn check_host(st: &AppState, host: &str, source: Option<&str>) -> Result<()> {
    let r = Query::new("SELECT 1 FROM compute_nodes WHERE host = ")
        .bind(host)
        .fetch_optional(st.platform.db.reader())
        .await?;
    if r.is_none() {
        return Err(ComputeError::BadRequest(format!("Compute host {host} could not be found.")));
    }
    if source == Some(host) {
        return Err(ComputeError::BadRequest(format!("The target host {host} is the one the instance is on already.")));
    }
    Ok(())
}

/// Cores and RAM a resize adds, and the project's limits for them.
#[derive(Debug, Clone)]
struct ResizeQuota {
    /// (resource, amount added, limit), only for resources that grow under a limit.
    adds: Vec<(&'static str, i64, i64)>,
}

/// What a resize to `new` adds, if anything is limited. The limits are read here; the
/// usage is counted in [`check_resize_quota_tx`], inside the transaction that records
/// the resize, so two concurrent resizes cannot both take the last cores.
async fn resize_quota(st: &AppState, inst: &Instance, new: &Flavor) -> Result<Option<ResizeQuota>> {
    let mut adds = Vec::new();
    for (res, delta) in [("cores", new.vcpus - inst.flavor.vcpus), ("ram", new.ram - inst.flavor.ram)] {
        if delta <= 0 {
            continue;
        }
        let limit = super::quota_limit(st, &inst.project_id, res).await?;
        if limit >= 0 {
            adds.push((res, delta, limit));
        }
    }
    Ok((!adds.is_empty()).then_some(ResizeQuota { adds }))
}

/// The project's cores and RAM as a resize must count them: every live server's current
/// flavor, plus what each move in flight adds before its row shows the new flavor (a
/// resize switches the row's flavor when it reaches the destination).
async fn project_cores_ram_tx(tx: &mut stratus_db::Tx, project: &str) -> Result<(i64, i64)> {
    let row = Query::new(
        "SELECT CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS c, CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS r \
         FROM compute_instances WHERE deleted = ",
    )
    .bind(false)
    .push_bind(" AND project_id = ", project)
    .fetch_optional(&mut **tx)
    .await?;
    let (mut c, mut r): (i64, i64) = match row {
        Some(row) => (row.try_get("c")?, row.try_get("r")?),
        None => (0, 0),
    };
    let mut q = Query::new(
        "SELECT m.old_flavor_json, m.new_flavor_json FROM compute_migrations m \
         JOIN compute_instances i ON i.uuid = m.instance_uuid WHERE i.deleted = ",
    );
    q.bind(false)
        .push_bind(" AND i.project_id = ", project)
        .push(" AND (i.flavor_id IS NULL OR m.new_flavor_id IS NULL OR i.flavor_id <> m.new_flavor_id) AND NOT ")
        .push_in("m.status", migrations::terminal_names());
    for row in q.fetch_all(&mut **tx).await? {
        let flavor = |col: &str| -> Result<Flavor> {
            let s: Option<String> = row.try_get(col)?;
            Ok(Flavor::from_json(&s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null)))
        };
        let (old, new) = (flavor("old_flavor_json")?, flavor("new_flavor_json")?);
        c += (new.vcpus - old.vcpus).max(0);
        r += (new.ram - old.ram).max(0);
    }
    Ok((c, r))
}

/// Refuses the resize (403, nothing written) when what it adds no longer fits.
async fn check_resize_quota_tx(tx: &mut stratus_db::Tx, project: &str, q: &ResizeQuota) -> Result<()> {
    let (c, r) = project_cores_ram_tx(tx, project).await?;
    for (res, delta, limit) in &q.adds {
        let used = if *res == "cores" { c } else { r };
        if used + delta > *limit {
            return Err(ComputeError::QuotaExceeded {
                resource: (*res).into(),
                requested: *delta,
                used,
                allowed: *limit,
            });
        }
    }
    Ok(())
}

fn accepted() -> Result<Response, ApiError> {
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `resize`.
pub async fn resize(
    st: &AppState,
    ctx: &RequestContext,
    id: &str,
    args: &Value,
    rid: &str,
) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:servers:resize").await?;
    check_lock(st, ctx, &inst)?;
    let flavor_ref = match &args["flavorRef"] {
        Value::String(f) => f.rsplit('/').next().unwrap_or(f).to_string(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute resize: 'flavorRef' is a required property".into(),
            )
            .into())
        }
    };
    let new = match flavors::get_flavor(&st.platform.db, ctx, &flavor_ref).await {
        Ok(f) if !f.disabled => f,
        Ok(_) | Err(ComputeError::NotFound(_)) => {
            return Err(ComputeError::BadRequest(format!("Flavor {flavor_ref} could not be found.")).into())
        }
        Err(e) => return Err(e.into()),
    };
    state::RESIZE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    if new.id == inst.flavor.id {
        return Err(ComputeError::BadRequest("When resizing, instances must change flavor!".into()).into());
    }
    if new.disk < inst.flavor.disk {
        return Err(ComputeError::BadRequest("Resizing to a smaller disk flavor is not allowed.".into()).into());
    }
    if let Some(image) = &inst.image {
        super::check_flavor_fits_image(&new, image)?;
    }
    let quota = resize_quota(st, &inst, &new).await?;
    let req = MoveRequest {
        t: state::RESIZE,
        kind: kind::RESIZE,
        new_flavor: Some(new),
        host: None,
        block_migration: false,
        quota,
    };
    begin_move(st, ctx, &inst, req, rid, Update::new()).await?;
    accepted()
}

/// `migrate` (cold; `host` from 2.56).
pub async fn migrate(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    id: &str,
    args: &Value,
    rid: &str,
) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:os-migrate-server:migrate").await?;
    let host = match &args["host"] {
        Value::Null => None,
        Value::String(h) if v.at_least(2, 56) => Some(h.clone()),
        Value::String(_) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute migrate: 'host' needs microversion 2.56".into(),
            )
            .into())
        }
        other => return Err(ComputeError::BadRequest(format!("Invalid host {other}")).into()),
    };
    if let Some(h) = &host {
        st.policy.enforce("os_compute_api:os-migrate-server:migrate:host", ctx, &inst.target())?;
        state::MIGRATE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
        check_host(st, h, inst.host.as_deref()).await?;
    }
    let req = MoveRequest {
        t: state::MIGRATE,
        kind: kind::MIGRATION,
        new_flavor: None,
        host,
        block_migration: false,
        quota: None,
    };
    begin_move(st, ctx, &inst, req, rid, Update::new()).await?;
    accepted()
}

/// `os-migrateLive` (`block_migration` "auto" from 2.25; `host` goes through the
/// scheduler, restricted to that host).
pub async fn live_migrate(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    id: &str,
    args: &Value,
    rid: &str,
) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:os-migrate-server:migrate_live").await?;
    if !args.is_object() || args.get("host").is_none() {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute os-migrateLive: 'host' is a required property".into(),
        )
        .into());
    }
    let host = match &args["host"] {
        Value::Null => None,
        Value::String(h) => Some(h.clone()),
        other => return Err(ComputeError::BadRequest(format!("Invalid host {other}")).into()),
    };
    let block = match &args["block_migration"] {
        Value::Bool(b) => *b,
        Value::String(s) if s == "auto" && v.at_least(2, 25) => true,
        Value::String(s) if !v.at_least(2, 25) => stratus_core::query::parse_bool(s).unwrap_or(false),
        Value::Null if !v.at_least(2, 25) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute os-migrateLive: 'block_migration' is a required property".into(),
            )
            .into())
        }
        Value::Null => true,
        other => return Err(ComputeError::BadRequest(format!("Invalid block_migration {other}")).into()),
    };
    if args.get("force").is_some() && (!v.at_least(2, 30) || v.at_least(2, 68)) {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute os-migrateLive: 'force' is not allowed at this microversion".into(),
        )
        .into());
    }
    state::LIVE_MIGRATE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    if let Some(h) = &host {
        check_host(st, h, inst.host.as_deref()).await?;
    }
    let req = MoveRequest {
        t: state::LIVE_MIGRATE,
        kind: kind::LIVE,
        new_flavor: None,
        host,
        block_migration: block,
        quota: None,
    };
    begin_move(st, ctx, &inst, req, rid, Update::new()).await?;
    accepted()
}

/// `evacuate`: only from a host whose compute service is down; the server is rebuilt
/// elsewhere from its image. From 2.95 a stopped server stays stopped.
pub async fn evacuate(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    id: &str,
    args: &Value,
    rid: &str,
) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:os-evacuate").await?;
    let host = args["host"].as_str().map(str::to_string);
    if args.get("onSharedStorage").is_some() && v.at_least(2, 14) {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute evacuate: 'onSharedStorage' was removed in 2.14".into(),
        )
        .into());
    }
    state::EVACUATE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    let source = inst
        .host
        .clone()
        .ok_or_else(|| ComputeError::Conflict(format!("Instance {} is not on a compute host", inst.uuid)))?;
    if st.conductor.host_up(&source).await? {
        return Err(ComputeError::BadRequest(format!("Compute service of {source} is still in use.")).into());
    }
    if let Some(h) = &host {
        check_host(st, h, Some(&source)).await?;
    }
    let pass = args["adminPass"].as_str().map(str::to_string).unwrap_or_else(super::generate_password);
    // The vm_state the server should end in: from 2.95 evacuated servers arrive
    // stopped; before, they come back as they were (an ERROR one comes back running).
    let end = if v.at_least(2, 95) || inst.vm_state == vm::STOPPED { vm::STOPPED } else { vm::ACTIVE };
    let extra = Update::new().set("admin_pass", pass.clone()).set("vm_state", end);
    let req = MoveRequest {
        t: state::EVACUATE,
        kind: kind::EVACUATION,
        new_flavor: None,
        host,
        block_migration: false,
        quota: None,
    };
    begin_move(st, ctx, &inst, req, rid, extra).await?;
    if v.at_least(2, 14) {
        Ok(StatusCode::OK.into_response())
    } else {
        Ok((StatusCode::OK, Json(json!({"adminPass": pass}))).into_response())
    }
}

/// `confirmResize`: the source copy goes, and with it the migration's allocation.
pub async fn confirm_resize(st: &AppState, ctx: &RequestContext, id: &str, rid: &str) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:servers:confirm_resize").await?;
    check_lock(st, ctx, &inst)?;
    state::CONFIRM_RESIZE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    let m = migrations::active_for(&st.platform.db, &inst.uuid)
        .await?
        .filter(|m| m.status == MigrationStatus::Finished)
        .ok_or_else(|| ComputeError::BadRequest(format!("Instance {id} has not been resized.")))?;
    if !migrations::advance(&st.platform.db, &m.uuid, &[MigrationStatus::Finished], MigrationStatus::Confirming, &[])
        .await?
    {
        return Err(ComputeError::Conflict(format!("Migration {} is not waiting for a confirmation", m.id)).into());
    }
    record_action(st, ctx, &inst, "confirmResize", rid).await?;
    let c = st.conductor.clone();
    let (uuid, rid) = (inst.uuid.clone(), rid.to_string());
    tokio::spawn(async move {
        if let Err(e) = c.confirm(&uuid, &rid).await {
            tracing::error!(instance = %uuid, error = %e, "confirming a resize failed");
        }
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `revertResize`: back to the source host and the old flavor.
pub async fn revert_resize(st: &AppState, ctx: &RequestContext, id: &str, rid: &str) -> Result<Response, ApiError> {
    let inst = authorized(st, ctx, id, "os_compute_api:servers:revert_resize").await?;
    check_lock(st, ctx, &inst)?;
    state::REVERT_RESIZE.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    let m = migrations::active_for(&st.platform.db, &inst.uuid)
        .await?
        .filter(|m| m.status == MigrationStatus::Finished)
        .ok_or_else(|| ComputeError::BadRequest(format!("Instance {id} has not been resized.")))?;
    let u = Update::new().set("task_state", task::RESIZE_REVERTING).expect_task(None).expect_vm(&[vm::RESIZED]);
    let (uuid, user, project, rid2, mu) =
        (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone(), rid.to_string(), m.uuid.clone());
    let ok = st
        .platform
        .db
        .transaction(|tx| {
            let (u, uuid, user, project, rid, mu) =
                (u.clone(), uuid.clone(), user.clone(), project.clone(), rid2.clone(), mu.clone());
            Box::pin(async move {
                if !u.apply_tx(tx, &uuid).await? {
                    return Ok(false);
                }
                let n = Query::new("UPDATE compute_migrations SET status = ")
                    .bind(MigrationStatus::Reverting)
                    .push_bind(", updated_at = ", stratus_core::time::now())
                    .push_bind(" WHERE uuid = ", &mu)
                    .push_bind(" AND status = ", MigrationStatus::Finished)
                    .execute(&mut **tx)
                    .await?;
                if n != 1 {
                    return Err(ComputeError::Conflict("The migration is not waiting for a confirmation".into()));
                }
                events::start_action(tx, &uuid, "revertResize", &rid, &user, &project).await?;
                Ok::<_, ComputeError>(true)
            })
        })
        .await?;
    if !ok {
        return Err(ComputeError::Conflict(format!("Instance {id} changed state concurrently; retry")).into());
    }
    let dest = inst.host.clone().unwrap_or_default();
    st.conductor.send_step(&inst, &dest, GuestOp::RevertMigrationDest, rid).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn record_action(st: &AppState, ctx: &RequestContext, inst: &Instance, action: &str, rid: &str) -> Result<()> {
    let (uuid, user, project, rid2, action2) =
        (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone(), rid.to_string(), action.to_string());
    st.platform
        .db
        .transaction(|tx| {
            let (uuid, user, project, rid, action) =
                (uuid.clone(), user.clone(), project.clone(), rid2.clone(), action2.clone());
            Box::pin(async move { events::start_action(tx, &uuid, &action, &rid, &user, &project).await })
        })
        .await
}

// --- conductor side ------------------------------------------------------------------------

impl Conductor {
    /// Runs the first steps of the move recorded for `uuid` in the background.
    pub(crate) fn spawn_move(self: Arc<Self>, uuid: String, rid: String) {
        tokio::spawn(async move {
            if let Err(e) = self.start_move(&uuid, &rid).await {
                tracing::error!(instance = %uuid, error = %e, "move failed");
                if let Ok(Some(m)) = migrations::latest_for(&self.platform.db, &uuid).await {
                    let _ = self
                        .rollback_move(&uuid, &m, &rid, conductor_event(&m), &e.to_string(), MigrationStatus::Error)
                        .await;
                }
            }
        });
    }

    /// Releases the allocation of a deleted server's unfinished migration and ends it
    /// (`error`, as Nova leaves such records).
    pub(crate) async fn end_moves_of_deleted(&self, uuid: &str) -> Result<()> {
        if let Some(m) = migrations::active_for(&self.platform.db, uuid).await? {
            self.release_claim(&m.uuid).await?;
            migrations::finish(&self.platform.db, &m.uuid, MigrationStatus::Error).await?;
        }
        Ok(())
    }

    /// Undoes a live migration aborted before it ran (status already `cancelled`).
    pub(crate) fn spawn_abort(self: Arc<Self>, uuid: String, migration: String) {
        tokio::spawn(async move {
            let r = async {
                let Some(m) = migrations::by_uuid(&self.platform.db, &migration).await? else { return Ok(()) };
                let rid = m.request_id.clone().unwrap_or_default();
                self.rollback_move(
                    &uuid,
                    &m,
                    &rid,
                    conductor_event(&m),
                    "aborted by request",
                    MigrationStatus::Cancelled,
                )
                .await
            };
            if let Err(e) = r.await {
                tracing::error!(instance = %uuid, error = %e, "could not undo an aborted live migration");
            }
        });
    }

    /// Sends one step to `host`; an unreachable host is that step's failure.
    pub(crate) async fn send_step(&self, inst: &Instance, host: &str, op: GuestOp, rid: &str) {
        let kind = op.kind();
        let _ = events::start_event(&self.platform.db, &inst.uuid, rid, event(kind), Some(host)).await;
        let msg = AgentRequest::RunOp { request_id: rid.to_string(), spec: inst.guest_spec(), op };
        // An agent that is restarting comes back within seconds; only one that stays
        // unreachable fails the step.
        if let Err(e) = self.cast_retrying(host, &msg, crate::conductor::STEP_SEND_TRIES).await {
            tracing::warn!(instance = %inst.uuid, host, op = kind.name(), error = %e, "host unreachable");
            let why = format!("Compute host {host} is unreachable: {e}");
            if let Err(e) = self.step_unreachable(&inst.uuid, kind, rid, &why).await {
                tracing::error!(instance = %inst.uuid, error = %e, "could not record an unreachable host");
            }
        }
    }

    /// A step could not even be sent: before the guest left its source the move is
    /// rolled back, after that the server goes to ERROR.
    async fn step_unreachable(&self, uuid: &str, op: GuestOpKind, rid: &str, why: &str) -> Result<()> {
        let db = &self.platform.db;
        if matches!(op, GuestOpKind::Shelve | GuestOpKind::ShelveOffload | GuestOpKind::Unshelve) {
            return self.fail(uuid, rid, event(op), 500, why, why).await;
        }
        let Some(m) = migrations::latest_for(db, uuid).await? else { return Ok(()) };
        match op {
            GuestOpKind::MigrateDiskAndPowerOff
            | GuestOpKind::PreLiveMigration
            | GuestOpKind::LiveMigration
            | GuestOpKind::EvacuateRebuild => {
                self.rollback_move(uuid, &m, rid, event(op), why, MigrationStatus::Error).await
            }
            _ => self.fail_move(uuid, &m, rid, op, why, MigrationStatus::Error).await,
        }
    }

    /// Ports follow the guest: they are bound to the host it now runs on. A failure is
    /// logged, not fatal (the guest runs; the port's binding can be fixed by an admin).
    pub(crate) async fn rebind_ports(&self, inst: &Instance, host: &str) {
        if inst.ports.is_empty() {
            return;
        }
        if let Err(e) = self.backends.network.bind_host(&inst.ports, host).await {
            tracing::warn!(instance = %inst.uuid, host, error = %e, "could not re-bind ports");
        }
    }

    async fn host_ip(&self, host: &str) -> Result<String> {
        let r = Query::new("SELECT host_ip FROM compute_nodes WHERE host = ")
            .bind(host)
            .fetch_optional(self.platform.db.reader())
            .await?;
        Ok(r.map(|r| r.try_get::<String, _>("host_ip")).transpose()?.unwrap_or_default())
    }

    /// Source allocation → migration consumer, then choose and claim a destination,
    /// record it, and send the first host step.
    async fn start_move(&self, uuid: &str, rid: &str) -> Result<()> {
        let db = &self.platform.db;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        let Some(m) = migrations::latest_for(db, uuid).await? else { return Ok(()) };
        if m.is_terminal() || m.dest_compute.is_some() {
            return Ok(());
        }
        let p = &self.backends.placement;
        p.move_allocations(&inst.uuid, &m.uuid, &inst.project_id, &inst.user_id, "MIGRATION")
            .await
            .map_err(|e| ComputeError::Unavailable(e.to_string()))?;
        let source = m.source_compute.clone().unwrap_or_default();
        let mut want = with_flavor(&inst, m.new_flavor.as_ref().unwrap_or(&inst.flavor));
        want.retry_hosts = vec![source.clone()];
        if let Some(h) = &m.requested_host {
            want.scheduler_hints["force_host"] = json!(h);
        }
        let cev = conductor_event(&m);
        let (host, node) = match self.scheduler.select_and_claim(&want).await {
            Ok(x) => x,
            Err(nvh) => {
                tracing::warn!(instance = %uuid, details = %nvh.details, "{nvh}");
                let why = format!("{nvh} {}", nvh.details);
                self.rollback_move(uuid, &m, rid, cev, &why, MigrationStatus::Error).await?;
                // Resize, cold and live migration leave a server that is still fine on
                // its source as it was (Nova's conductor does the same). An evacuated
                // server's host is down, so Nova puts it in ERROR, with the fault.
                if m.migration_type == kind::EVACUATION {
                    self.set_error(uuid, fault(500, &nvh.to_string(), &nvh.details)).await?;
                }
                return Ok(());
            }
        };
        let az = self.host_az(&host).await?;
        let ip = self.host_ip(&host).await?;
        // Aborted (live migration) while we were choosing: give the claim back.
        let (inst_u, status_from, status_to): (Update, &[MigrationStatus], MigrationStatus) =
            match m.migration_type.as_str() {
                kind::LIVE => (
                    Update::new().expect_task(Some(task::MIGRATING)),
                    &[MigrationStatus::Queued],
                    MigrationStatus::Preparing,
                ),
                kind::EVACUATION => (
                    Update::new()
                        .set("host", host.clone())
                        .set("node", node.clone())
                        .set("availability_zone", az)
                        .expect_task(Some(task::REBUILDING)),
                    &[MigrationStatus::Accepted],
                    MigrationStatus::PreMigrating,
                ),
                _ => (
                    Update::new().set("task_state", task::RESIZE_MIGRATING).expect_task(Some(task::RESIZE_PREP)),
                    &[MigrationStatus::PreMigrating],
                    MigrationStatus::Migrating,
                ),
            };
        let (mu, u2, h2, n2, ip2, from2) = (
            m.uuid.clone(),
            uuid.to_string(),
            host.clone(),
            node.clone(),
            ip.clone(),
            MigrationStatus::names(status_from),
        );
        let recorded = db
            .transaction(|tx| {
                let (inst_u, mu, u, h, n, ip, from) =
                    (inst_u.clone(), mu.clone(), u2.clone(), h2.clone(), n2.clone(), ip2.clone(), from2.clone());
                Box::pin(async move {
                    let mut q = Query::new("UPDATE compute_migrations SET status = ");
                    q.bind(status_to)
                        .push_bind(", dest_compute = ", &h)
                        .push_bind(", dest_node = ", &n)
                        .push_bind(", dest_host = ", &ip)
                        .push_bind(", updated_at = ", stratus_core::time::now())
                        .push_bind(" WHERE uuid = ", &mu)
                        .push(" AND ")
                        .push_in("status", from);
                    if q.execute(&mut **tx).await? != 1 {
                        return Ok(false);
                    }
                    if !inst_u.apply_tx(tx, &u).await? {
                        return Err(ComputeError::Conflict("the server changed during the move".into()));
                    }
                    Ok::<_, ComputeError>(true)
                })
            })
            .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                // Cancelled meanwhile.
                return self.rollback_move(uuid, &m, rid, cev, "aborted", MigrationStatus::Cancelled).await;
            }
            Err(e) => return self.rollback_move(uuid, &m, rid, cev, &e.to_string(), MigrationStatus::Error).await,
        }
        events::finish_event(db, uuid, rid, cev, None, false).await?;
        let inst = store::must_load(db, uuid).await?;
        let target =
            MigrationTarget { host: host.clone(), host_ip: ip, block_migration: m.block_migration, listen: None };
        match m.migration_type.as_str() {
            kind::LIVE => {
                let source = m.source_compute.clone().unwrap_or_default();
                self.send_step(&inst, &host, GuestOp::PreLiveMigration { source }, rid).await
            }
            kind::EVACUATION => {
                self.rebind_ports(&inst, &host).await;
                let power_on = inst.vm_state != vm::STOPPED;
                self.send_step(&inst, &host, GuestOp::EvacuateRebuild { power_on }, rid).await
            }
            _ => self.send_step(&inst, &source, GuestOp::MigrateDiskAndPowerOff { target }, rid).await,
        }
        Ok(())
    }

    /// Undoes a move that has not reached its destination: the migration's source
    /// allocation replaces whatever the instance claimed, the server goes back to its
    /// source host with no task, the migration ends in `status`.
    async fn rollback_move(
        &self,
        uuid: &str,
        m: &Migration,
        rid: &str,
        ev: &str,
        why: &str,
        status: MigrationStatus,
    ) -> Result<()> {
        let db = &self.platform.db;
        let p = &self.backends.placement;
        p.move_allocations(&m.uuid, uuid, &m.project_id, &m.user_id, "INSTANCE")
            .await
            .map_err(|e| ComputeError::Unavailable(e.to_string()))?;
        migrations::finish(db, &m.uuid, status).await?;
        let mut u = Update::new().set("task_state", Option::<String>::None);
        if let Some(src) = &m.source_compute {
            u = u.set("host", src.clone()).set("node", m.source_node.clone());
            if let Ok(az) = self.host_az(src).await {
                u = u.set("availability_zone", az);
            }
        }
        if m.migration_type == kind::EVACUATION {
            if let Some(old) = &m.old_vm_state {
                u = u.set("vm_state", old.clone());
            }
        }
        if let Some(f) = &m.old_flavor {
            u = flavor_update(u, f);
        }
        u.apply(db, uuid).await?;
        tracing::warn!(instance = %uuid, migration = %m.uuid, why, "move rolled back");
        if m.migration_type == kind::LIVE {
            self.clean_live_destination(uuid, m).await;
        }
        events::finish_event(db, uuid, rid, ev, Some(why), true).await
    }

    /// A live migration that did not happen may have left a waiting guest on the
    /// destination: that host removes it now (Nova's `rollback_live_migration_at_destination`).
    /// Best effort: an unreachable destination's reconciliation removes it later.
    async fn clean_live_destination(&self, uuid: &str, m: &Migration) {
        let Some(dest) = m.dest_compute.clone().filter(|d| Some(d) != m.source_compute.as_ref()) else { return };
        let Ok(Some(inst)) = store::load(&self.platform.db, uuid).await else { return };
        if inst.host.as_deref() == Some(dest.as_str()) {
            return;
        }
        let rid = m.request_id.clone().unwrap_or_default();
        let msg = AgentRequest::RunOp { request_id: rid, spec: inst.guest_spec(), op: GuestOp::RevertMigrationDest };
        if let Err(e) = self.platform.bus.cast(&agent_topic(&dest), to_message(&msg)).await {
            tracing::warn!(instance = %uuid, host = %dest, error = %e, "could not clean the live migration's destination");
        }
    }

    /// A step failed after the guest left its source: ERROR with a fault; the server
    /// keeps the destination's claim, the migration's source allocation is released
    /// (the source copy is cleaned up by that host's reconciliation).
    async fn fail_move(
        &self,
        uuid: &str,
        m: &Migration,
        rid: &str,
        op: GuestOpKind,
        err: &str,
        status: MigrationStatus,
    ) -> Result<()> {
        let db = &self.platform.db;
        self.release_claim(&m.uuid).await?;
        migrations::finish(db, &m.uuid, status).await?;
        self.set_error(uuid, fault(500, &format!("The {} failed", m.migration_type), err)).await?;
        events::finish_event(db, uuid, rid, event(op), Some(err), true).await
    }

    /// The outcome of a move or shelve step on a host.
    pub(crate) async fn move_result(
        self: Arc<Self>,
        host: &str,
        uuid: &str,
        rid: &str,
        op: GuestOpKind,
        error: Option<&AgentError>,
        power: PowerState,
    ) -> Result<()> {
        let cancelled = matches!(error, Some(AgentError::Cancelled));
        let error_text = error.map(|e| e.to_string());
        let error = error_text.as_deref();
        if matches!(op, GuestOpKind::Shelve | GuestOpKind::ShelveOffload | GuestOpKind::Unshelve) {
            return self.shelve_result(host, uuid, rid, op, error, power).await;
        }
        let db = &self.platform.db;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        if inst.task_state.as_deref() == Some(task::DELETING) {
            return Ok(());
        }
        let Some(m) = migrations::latest_for(db, uuid).await? else { return Ok(()) };
        let ev = event(op);
        let old_active = m.old_vm_state.as_deref() != Some(vm::STOPPED);
        let dest = m.dest_compute.clone().unwrap_or_default();
        let source = m.source_compute.clone().unwrap_or_default();
        match op {
            GuestOpKind::MigrateDiskAndPowerOff => {
                if inst.task_state.as_deref() != Some(task::RESIZE_MIGRATING) {
                    return Ok(());
                }
                if let Some(err) = error {
                    return self.rollback_move(uuid, &m, rid, ev, err, MigrationStatus::Error).await;
                }
                let new = m.new_flavor.clone().unwrap_or_else(|| inst.flavor.clone());
                let az = self.host_az(&dest).await?;
                let u = flavor_update(Update::new(), &new)
                    .set("host", dest.clone())
                    .set("node", m.dest_node.clone())
                    .set("availability_zone", az)
                    .set("power_state", power.code())
                    .set("task_state", task::RESIZE_FINISH)
                    .expect_task(Some(task::RESIZE_MIGRATING));
                if !u.apply(db, uuid).await? {
                    return Ok(());
                }
                migrations::advance(db, &m.uuid, &[MigrationStatus::Migrating], MigrationStatus::PostMigrating, &[])
                    .await?;
                events::finish_event(db, uuid, rid, ev, None, false).await?;
                let inst = store::must_load(db, uuid).await?;
                self.rebind_ports(&inst, &dest).await;
                self.send_step(&inst, &dest, GuestOp::FinishMigration { power_on: old_active }, rid).await;
                Ok(())
            }
            GuestOpKind::FinishMigration => {
                if inst.task_state.as_deref() != Some(task::RESIZE_FINISH) {
                    return Ok(());
                }
                if let Some(err) = error {
                    return self.fail_move(uuid, &m, rid, op, err, MigrationStatus::Error).await;
                }
                let u = Update::new()
                    .set("vm_state", vm::RESIZED)
                    .set("task_state", Option::<String>::None)
                    .set("power_state", power.code())
                    .expect_task(Some(task::RESIZE_FINISH));
                self.end_move(uuid, u, &m.uuid, MigrationStatus::Finished, rid, ev).await.map(|_| ())
            }
            GuestOpKind::ConfirmMigration => {
                if let Some(err) = error {
                    tracing::warn!(instance = %uuid, error = err, "the source host could not drop its copy; its reconciliation will");
                }
                self.finish_confirm(uuid, &m, rid).await
            }
            GuestOpKind::RevertMigrationDest => {
                if inst.task_state.as_deref() != Some(task::RESIZE_REVERTING)
                    || inst.host.as_deref() != Some(dest.as_str())
                {
                    return Ok(());
                }
                if let Some(err) = error {
                    return self.fail_move(uuid, &m, rid, op, err, MigrationStatus::Error).await;
                }
                // The source allocation goes back to the instance, replacing the
                // destination's, in one placement call.
                self.backends
                    .placement
                    .move_allocations(&m.uuid, uuid, &m.project_id, &m.user_id, "INSTANCE")
                    .await
                    .map_err(|e| ComputeError::Unavailable(e.to_string()))?;
                let old = m.old_flavor.clone().unwrap_or_else(|| inst.flavor.clone());
                let az = self.host_az(&source).await?;
                flavor_update(Update::new(), &old)
                    .set("host", source.clone())
                    .set("node", m.source_node.clone())
                    .set("availability_zone", az)
                    .expect_task(Some(task::RESIZE_REVERTING))
                    .apply(db, uuid)
                    .await?;
                events::finish_event(db, uuid, rid, ev, None, false).await?;
                let inst = store::must_load(db, uuid).await?;
                self.rebind_ports(&inst, &source).await;
                self.send_step(&inst, &source, GuestOp::FinishRevertMigration { power_on: old_active }, rid).await;
                Ok(())
            }
            GuestOpKind::FinishRevertMigration => {
                if inst.task_state.as_deref() != Some(task::RESIZE_REVERTING) {
                    return Ok(());
                }
                if let Some(err) = error {
                    migrations::finish(db, &m.uuid, MigrationStatus::Error).await?;
                    self.set_error(uuid, fault(500, "Reverting the resize failed", err)).await?;
                    return events::finish_event(db, uuid, rid, ev, Some(err), true).await;
                }
                let u = Update::new()
                    .set("vm_state", if old_active { vm::ACTIVE } else { vm::STOPPED })
                    .set("task_state", Option::<String>::None)
                    .set("power_state", power.code())
                    .expect_task(Some(task::RESIZE_REVERTING));
                self.end_move(uuid, u, &m.uuid, MigrationStatus::Reverted, rid, ev).await.map(|_| ())
            }
            GuestOpKind::PreLiveMigration => {
                if inst.task_state.as_deref() != Some(task::MIGRATING) {
                    return Ok(());
                }
                if m.status == MigrationStatus::Cancelled {
                    return self
                        .rollback_move(uuid, &m, rid, ev, "aborted by request", MigrationStatus::Cancelled)
                        .await;
                }
                if let Some(err) = error {
                    return self.rollback_move(uuid, &m, rid, ev, err, MigrationStatus::Error).await;
                }
                if !migrations::advance(db, &m.uuid, &[MigrationStatus::Preparing], MigrationStatus::Running, &[])
                    .await?
                {
                    return self
                        .rollback_move(uuid, &m, rid, ev, "aborted by request", MigrationStatus::Cancelled)
                        .await;
                }
                events::finish_event(db, uuid, rid, ev, None, false).await?;
                // The destination's answer (its ports) was recorded with its result.
                let target = m.target();
                self.send_step(&inst, &source, GuestOp::LiveMigration { target }, rid).await;
                Ok(())
            }
            GuestOpKind::LiveMigration => {
                if inst.task_state.as_deref() != Some(task::MIGRATING) || inst.host.as_deref() != Some(source.as_str())
                {
                    return Ok(());
                }
                if let Some(err) = error {
                    let status = if cancelled { MigrationStatus::Cancelled } else { MigrationStatus::Error };
                    return self.rollback_move(uuid, &m, rid, ev, err, status).await;
                }
                let az = self.host_az(&dest).await?;
                let ok = Update::new()
                    .set("host", dest.clone())
                    .set("node", m.dest_node.clone())
                    .set("availability_zone", az)
                    .expect_task(Some(task::MIGRATING))
                    .apply(db, uuid)
                    .await?;
                if ok {
                    events::finish_event(db, uuid, rid, ev, None, false).await?;
                    let inst = store::must_load(db, uuid).await?;
                    self.rebind_ports(&inst, &dest).await;
                    self.send_step(&inst, &dest, GuestOp::PostLiveMigration, rid).await;
                }
                Ok(())
            }
            GuestOpKind::PostLiveMigration => {
                if inst.task_state.as_deref() != Some(task::MIGRATING) {
                    return Ok(());
                }
                if let Some(err) = error {
                    return self.fail_move(uuid, &m, rid, op, err, MigrationStatus::Error).await;
                }
                self.release_claim(&m.uuid).await?;
                let u = Update::new()
                    .set("task_state", Option::<String>::None)
                    .set("power_state", power.code())
                    .expect_task(Some(task::MIGRATING));
                self.end_move(uuid, u, &m.uuid, MigrationStatus::Completed, rid, ev).await.map(|_| ())
            }
            GuestOpKind::EvacuateRebuild => {
                if inst.task_state.as_deref() != Some(task::REBUILDING) {
                    return Ok(());
                }
                if let Some(err) = error {
                    return self.fail_move(uuid, &m, rid, op, err, MigrationStatus::Failed).await;
                }
                self.release_claim(&m.uuid).await?;
                let to = if power == PowerState::Running { vm::ACTIVE } else { vm::STOPPED };
                let u = Update::new()
                    .set("vm_state", to)
                    .set("task_state", Option::<String>::None)
                    .set("power_state", power.code())
                    .set("fault_json", Option::<String>::None)
                    .expect_task(Some(task::REBUILDING));
                self.end_move(uuid, u, &m.uuid, MigrationStatus::Done, rid, ev).await.map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// The last step of a move: the server's state, the migration's final status and
    /// the finished event, in one transaction (so nobody sees one without the other).
    async fn end_move(
        &self,
        uuid: &str,
        u: Update,
        mig: &str,
        to: MigrationStatus,
        rid: &str,
        ev: &str,
    ) -> Result<bool> {
        let (u2, uuid2, mig2, to2, rid2, ev2) =
            (u, uuid.to_string(), mig.to_string(), to.to_string(), rid.to_string(), ev.to_string());
        self.platform
            .db
            .transaction(|tx| {
                let (u, uuid, mig, to, rid, ev) =
                    (u2.clone(), uuid2.clone(), mig2.clone(), to2.clone(), rid2.clone(), ev2.clone());
                Box::pin(async move {
                    if !u.apply_tx(tx, &uuid).await? {
                        return Ok(false);
                    }
                    let mut q = Query::new("UPDATE compute_migrations SET status = ");
                    q.bind(&to).push_bind(", updated_at = ", stratus_core::time::now());
                    q.push_bind(" WHERE uuid = ", &mig)
                        .push(" AND NOT ")
                        .push_in("status", migrations::terminal_names());
                    q.execute(&mut **tx).await?;
                    events::finish_event_tx(tx, &uuid, &rid, &ev, None, true).await?;
                    Ok::<_, ComputeError>(true)
                })
            })
            .await
    }

    /// Sends the source host the confirmation (or, when it is unreachable, finishes
    /// without it: its reconciliation drops the copy when it returns).
    pub(crate) async fn confirm(&self, uuid: &str, rid: &str) -> Result<()> {
        let db = &self.platform.db;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        let Some(m) = migrations::latest_for(db, uuid).await? else { return Ok(()) };
        let source = m.source_compute.clone().unwrap_or_default();
        events::start_event(db, uuid, rid, event(GuestOpKind::ConfirmMigration), Some(&source)).await?;
        let msg =
            AgentRequest::RunOp { request_id: rid.to_string(), spec: inst.guest_spec(), op: GuestOp::ConfirmMigration };
        if !self.host_up(&source).await?
            || self.platform.bus.cast(&agent_topic(&source), to_message(&msg)).await.is_err()
        {
            // Its reconciliation drops the source copy when it returns.
            return self.finish_confirm(uuid, &m, rid).await;
        }
        Ok(())
    }

    async fn finish_confirm(&self, uuid: &str, m: &Migration, rid: &str) -> Result<()> {
        let db = &self.platform.db;
        if m.status != MigrationStatus::Confirming {
            return Ok(());
        }
        self.release_claim(&m.uuid).await?;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        let to = if PowerState::from_code(inst.power_state) == PowerState::Running { vm::ACTIVE } else { vm::STOPPED };
        let u = Update::new().set("vm_state", to).expect_vm(&[vm::RESIZED]).expect_task(None);
        if !self
            .end_move(uuid, u, &m.uuid, MigrationStatus::Confirmed, rid, event(GuestOpKind::ConfirmMigration))
            .await?
        {
            migrations::finish(db, &m.uuid, MigrationStatus::Confirmed).await?;
        }
        Ok(())
    }

    /// Confirmations a crash interrupted (status `confirming`) are finished.
    pub(crate) fn recover_confirmations(self: Arc<Self>) {
        tokio::spawn(async move {
            let rows = Query::new("SELECT instance_uuid, request_id FROM compute_migrations WHERE status = ")
                .bind(MigrationStatus::Confirming)
                .fetch_all(self.platform.db.reader())
                .await;
            for r in rows.unwrap_or_default() {
                let uuid: String = r.try_get("instance_uuid").unwrap_or_default();
                let rid =
                    self.open_action(&uuid).await.unwrap_or_else(|| format!("req-recover-{}", uuid::Uuid::new_v4()));
                if let Ok(Some(m)) = migrations::latest_for(&self.platform.db, &uuid).await {
                    if let Err(e) = self.finish_confirm(&uuid, &m, &rid).await {
                        tracing::error!(instance = %uuid, error = %e, "could not finish an interrupted confirmation");
                    }
                }
            }
        });
    }

    async fn open_action(&self, uuid: &str) -> Option<String> {
        let r = Query::new("SELECT request_id FROM compute_instance_actions WHERE instance_uuid = ")
            .bind(uuid)
            .push(" AND finish_time IS NULL ORDER BY start_time DESC")
            .fetch_optional(self.platform.db.reader())
            .await
            .ok()??;
        r.try_get("request_id").ok()
    }

    /// Resumes (or rolls back) a move or shelve a crash interrupted, from what the rows say.
    pub(crate) async fn recover_move(self: &Arc<Self>, uuid: &str, host: Option<&str>, rid: &str) -> Result<()> {
        let db = &self.platform.db;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        let t = inst.task_state.clone().unwrap_or_default();
        if matches!(t.as_str(), task::SHELVING | task::SHELVING_OFFLOADING | task::UNSHELVING) {
            return self.recover_shelve(&inst, rid).await;
        }
        let m = migrations::active_for(db, uuid).await?;
        let Some(m) = m else {
            // A rebuild (not an evacuation), or a move whose record already ended.
            return self.settle(uuid, host, rid).await;
        };
        if m.migration_type == kind::EVACUATION && t != task::REBUILDING {
            return self.settle(uuid, host, rid).await;
        }
        let why = "interrupted by a restart";
        let dest = m.dest_compute.clone();
        let source = m.source_compute.clone().unwrap_or_default();
        let old_active = m.old_vm_state.as_deref() != Some(vm::STOPPED);
        let Some(dest) = dest else {
            return self.rollback_move(uuid, &m, rid, conductor_event(&m), why, MigrationStatus::Error).await;
        };
        let target = m.target();
        let on_dest = inst.host.as_deref() == Some(dest.as_str());
        match t.as_str() {
            task::RESIZE_MIGRATING => {
                self.send_step(&inst, &source, GuestOp::MigrateDiskAndPowerOff { target }, rid).await
            }
            task::RESIZE_FINISH => {
                self.send_step(&inst, &dest, GuestOp::FinishMigration { power_on: old_active }, rid).await
            }
            task::RESIZE_REVERTING if on_dest => self.send_step(&inst, &dest, GuestOp::RevertMigrationDest, rid).await,
            task::RESIZE_REVERTING => {
                self.send_step(&inst, &source, GuestOp::FinishRevertMigration { power_on: old_active }, rid).await
            }
            task::MIGRATING if m.status == MigrationStatus::Running && on_dest => {
                self.send_step(&inst, &dest, GuestOp::PostLiveMigration, rid).await
            }
            task::MIGRATING if m.status == MigrationStatus::Running => {
                self.send_step(&inst, &source, GuestOp::LiveMigration { target }, rid).await
            }
            task::REBUILDING if on_dest => {
                let power_on = inst.vm_state != vm::STOPPED;
                self.send_step(&inst, &dest, GuestOp::EvacuateRebuild { power_on }, rid).await
            }
            // Chosen but not started (live migration preparing, or anything else):
            // the guest never left its source.
            _ => return self.rollback_move(uuid, &m, rid, conductor_event(&m), why, MigrationStatus::Error).await,
        }
        Ok(())
    }
}
