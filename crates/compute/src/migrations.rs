//! Migration records and their APIs: `os-migrations` (every move, admin) and
//! `/servers/{id}/migrations` (in-progress live migrations: list, show, force complete,
//! abort).
//!
//! A migration row is created by the API in the same transaction that sets the server's
//! task_state, and its `uuid` is the placement consumer that holds the source host's
//! allocation while the move runs (as Nova does), so "who holds what" is always
//! answerable from placement and the row together. Its `status` moves forward only
//! through conditional updates; terminal statuses are never left.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::time::micros_naive;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::{Arg, Db, Query, Tx};

use stratus_compute_proto::error::{AgentError, VirtError};
use stratus_compute_proto::rpc::{agent_topic, to_message, AgentRequest, CallError, MigrationAction};
use stratus_compute_proto::virt::{IncomingPorts, MigrationTarget};

use crate::error::{ComputeError, Result};
use crate::flavors::Flavor;
use crate::AppState;

/// Migration types, as the API names them.
pub mod kind {
    /// Cold migration.
    pub const MIGRATION: &str = "migration";
    /// Resize.
    pub const RESIZE: &str = "resize";
    /// Live migration.
    pub const LIVE: &str = "live-migration";
    /// Evacuation.
    pub const EVACUATION: &str = "evacuation";
}

/// Where a migration is, as the API shows it (Nova's names). Each move type walks its own
/// path: live `queued → preparing → running → completed`, cold migration/resize
/// `pre-migrating → migrating → post-migrating → finished → confirming → confirmed` (or
/// `reverting → reverted`), evacuation `accepted → pre-migrating → done`; any of them can
/// end in `error` (`failed` for an evacuation, `cancelled` for an aborted live migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MigrationStatus {
    /// Live migration accepted, not started.
    #[default]
    Queued,
    /// Live migration: the destination prepares.
    Preparing,
    /// Live migration: the source copies the guest.
    Running,
    /// Evacuation accepted.
    Accepted,
    /// Cold migration/resize accepted (evacuation: the destination is claimed).
    PreMigrating,
    /// Cold migration/resize: the source hands its disks over.
    Migrating,
    /// Cold migration/resize: the destination builds the guest.
    PostMigrating,
    /// Resize done, waiting for a confirm or a revert.
    Finished,
    /// Confirm under way.
    Confirming,
    /// Resize confirmed (terminal).
    Confirmed,
    /// Revert under way.
    Reverting,
    /// Resize reverted (terminal).
    Reverted,
    /// Live migration done (terminal).
    Completed,
    /// Evacuation done (terminal).
    Done,
    /// The move failed and was rolled back or ended (terminal).
    Error,
    /// The evacuation failed (terminal).
    Failed,
    /// Aborted on request (terminal).
    Cancelled,
}

impl MigrationStatus {
    /// Every status.
    pub const ALL: [MigrationStatus; 17] = [
        Self::Queued,
        Self::Preparing,
        Self::Running,
        Self::Accepted,
        Self::PreMigrating,
        Self::Migrating,
        Self::PostMigrating,
        Self::Finished,
        Self::Confirming,
        Self::Confirmed,
        Self::Reverting,
        Self::Reverted,
        Self::Completed,
        Self::Done,
        Self::Error,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Statuses after which a migration never changes again.
    pub const TERMINAL: [MigrationStatus; 7] =
        [Self::Confirmed, Self::Reverted, Self::Completed, Self::Done, Self::Error, Self::Failed, Self::Cancelled];

    /// A live migration that has not ended (what `/servers/{id}/migrations` lists).
    pub const IN_PROGRESS_LIVE: [MigrationStatus; 3] = [Self::Queued, Self::Preparing, Self::Running];

    /// The name stored in the row and shown by the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Preparing => "preparing",
            Self::Running => "running",
            Self::Accepted => "accepted",
            Self::PreMigrating => "pre-migrating",
            Self::Migrating => "migrating",
            Self::PostMigrating => "post-migrating",
            Self::Finished => "finished",
            Self::Confirming => "confirming",
            Self::Confirmed => "confirmed",
            Self::Reverting => "reverting",
            Self::Reverted => "reverted",
            Self::Completed => "completed",
            Self::Done => "done",
            Self::Error => "error",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status named `s` (None: not a status this service writes).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// True once nothing will change any more.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// Where a move of type `kind` starts.
    pub fn initial(kind: &str) -> Self {
        match kind {
            kind::LIVE => Self::Queued,
            kind::EVACUATION => Self::Accepted,
            _ => Self::PreMigrating,
        }
    }

    /// Names of `set`, for an SQL `IN (...)`.
    pub fn names(set: &[MigrationStatus]) -> Vec<&'static str> {
        set.iter().map(|s| s.as_str()).collect()
    }
}

impl std::fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<MigrationStatus> for Arg {
    fn from(s: MigrationStatus) -> Arg {
        s.as_str().into()
    }
}

/// Names of the terminal statuses, for SQL.
pub fn terminal_names() -> Vec<&'static str> {
    MigrationStatus::names(&MigrationStatus::TERMINAL)
}

/// One migration.
#[derive(Debug, Clone, Default)]
pub struct Migration {
    pub id: i64,
    pub uuid: String,
    pub instance_uuid: String,
    pub migration_type: String,
    pub status: MigrationStatus,
    pub source_compute: Option<String>,
    pub source_node: Option<String>,
    pub dest_compute: Option<String>,
    pub dest_node: Option<String>,
    pub dest_host: Option<String>,
    pub old_flavor: Option<Flavor>,
    pub new_flavor: Option<Flavor>,
    /// vm_state before the move (where a revert or failure returns to).
    pub old_vm_state: Option<String>,
    /// Host the caller asked for.
    pub requested_host: Option<String>,
    pub block_migration: bool,
    /// Where the destination of a live migration listens (its `pre_live_migration` answer).
    pub dest_ports: Option<IncomingPorts>,
    pub request_id: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Migration {
    fn from_row(r: &AnyRow) -> Result<Self> {
        let fl = |c: &str| -> Result<Option<Flavor>> {
            let s: Option<String> = r.try_get(c)?;
            Ok(s.and_then(|s| serde_json::from_str::<Value>(&s).ok()).map(|v| Flavor::from_json(&v)))
        };
        Ok(Migration {
            id: r.try_get("id")?,
            uuid: r.try_get("uuid")?,
            instance_uuid: r.try_get("instance_uuid")?,
            migration_type: r.try_get("migration_type")?,
            status: {
                let s: String = r.try_get("status")?;
                // A status this service never writes is a corrupt row, reported as such.
                MigrationStatus::parse(&s).ok_or_else(|| {
                    stratus_db::sqlx::Error::Decode(format!("migration row with an unknown status {s:?}").into())
                })?
            },
            source_compute: r.try_get("source_compute")?,
            source_node: r.try_get("source_node")?,
            dest_compute: r.try_get("dest_compute")?,
            dest_node: r.try_get("dest_node")?,
            dest_host: r.try_get("dest_host")?,
            old_flavor: fl("old_flavor_json")?,
            new_flavor: fl("new_flavor_json")?,
            old_vm_state: r.try_get("old_vm_state")?,
            requested_host: r.try_get("requested_host")?,
            block_migration: stratus_db::flag(r, "block_migration"),
            dest_ports: ports_of(r)?,
            request_id: r.try_get("request_id")?,
            project_id: r.try_get("project_id")?,
            user_id: r.try_get("user_id")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    /// True once nothing will change any more.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// The destination as the source's step needs it.
    pub fn target(&self) -> MigrationTarget {
        MigrationTarget {
            host: self.dest_compute.clone().unwrap_or_default(),
            host_ip: self.dest_host.clone().unwrap_or_default(),
            block_migration: self.block_migration,
            listen: self.dest_ports,
        }
    }
}

fn ports_of(r: &AnyRow) -> Result<Option<IncomingPorts>> {
    let port: Option<i64> = r.try_get("dest_port")?;
    let nbd: Option<i64> = r.try_get("dest_nbd_port")?;
    Ok(match (port.and_then(|p| u16::try_from(p).ok()), nbd.and_then(|p| u16::try_from(p).ok())) {
        (Some(port), Some(nbd_port)) => Some(IncomingPorts { port, nbd_port }),
        _ => None,
    })
}

/// Records where the destination `host` of the live migration of `instance` that is
/// being prepared listens. False when no such migration is being prepared any more.
pub async fn record_dest_ports(db: &Db, instance: &str, host: &str, p: IncomingPorts) -> Result<bool> {
    let mut q = Query::new("UPDATE compute_migrations SET dest_port = ");
    q.bind(i64::from(p.port))
        .push_bind(", dest_nbd_port = ", i64::from(p.nbd_port))
        .push_bind(", updated_at = ", stratus_core::time::now())
        .push_bind(" WHERE instance_uuid = ", instance)
        .push_bind(" AND migration_type = ", kind::LIVE)
        .push_bind(" AND dest_compute = ", host)
        .push_bind(" AND status = ", MigrationStatus::Preparing);
    let n = db
        .transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await?;
    Ok(n > 0)
}

/// Inserts `m` (its integer `id` is assigned here, inside the caller's transaction).
pub async fn insert(tx: &mut Tx, m: &Migration) -> Result<i64> {
    let id = crate::sequences::next_id(tx, "compute_migrations").await?;
    let mut q = Query::new(
        "INSERT INTO compute_migrations (id, uuid, instance_uuid, migration_type, status, source_compute, source_node, \
         dest_compute, dest_node, dest_host, old_flavor_id, new_flavor_id, old_flavor_json, new_flavor_json, old_vm_state, \
         requested_host, block_migration, request_id, project_id, user_id, created_at, updated_at) VALUES (",
    );
    let now = stratus_core::time::now();
    let vals: Vec<Arg> = vec![
        id.into(),
        m.uuid.clone().into(),
        m.instance_uuid.clone().into(),
        m.migration_type.clone().into(),
        m.status.into(),
        m.source_compute.clone().into(),
        m.source_node.clone().into(),
        m.dest_compute.clone().into(),
        m.dest_node.clone().into(),
        m.dest_host.clone().into(),
        m.old_flavor.as_ref().map(|f| f.id.clone()).into(),
        m.new_flavor.as_ref().map(|f| f.id.clone()).into(),
        m.old_flavor.as_ref().map(|f| f.to_json().to_string()).into(),
        m.new_flavor.as_ref().map(|f| f.to_json().to_string()).into(),
        m.old_vm_state.clone().into(),
        m.requested_host.clone().into(),
        m.block_migration.into(),
        m.request_id.clone().into(),
        m.project_id.clone().into(),
        m.user_id.clone().into(),
        now.clone().into(),
        now.into(),
    ];
    for (n, v) in vals.into_iter().enumerate() {
        if n > 0 {
            q.push(", ");
        }
        q.bind(v);
    }
    q.push(")");
    q.execute(&mut **tx).await?;
    Ok(id)
}

/// The newest migration of a server that has not ended (None when it has none).
pub async fn active_for(db: &Db, instance: &str) -> Result<Option<Migration>> {
    let mut q = Query::new("SELECT * FROM compute_migrations WHERE instance_uuid = ");
    q.bind(instance).push(" AND NOT ").push_in("status", terminal_names()).push(" ORDER BY id DESC");
    let r = q.fetch_optional(db.reader()).await?;
    r.map(|r| Migration::from_row(&r)).transpose()
}

/// The newest migration of a server, whatever its status.
pub async fn latest_for(db: &Db, instance: &str) -> Result<Option<Migration>> {
    let r = Query::new("SELECT * FROM compute_migrations WHERE instance_uuid = ")
        .bind(instance)
        .push(" ORDER BY id DESC")
        .fetch_optional(db.reader())
        .await?;
    r.map(|r| Migration::from_row(&r)).transpose()
}

/// One migration by uuid.
pub async fn by_uuid(db: &Db, uuid: &str) -> Result<Option<Migration>> {
    let r = Query::new("SELECT * FROM compute_migrations WHERE uuid = ").bind(uuid).fetch_optional(db.reader()).await?;
    r.map(|r| Migration::from_row(&r)).transpose()
}

/// A conditional update of a migration row: applies `sets` (plus `status`) only while
/// the status is one of `from`. True when it applied.
pub async fn advance(
    db: &Db,
    uuid: &str,
    from: &[MigrationStatus],
    to: MigrationStatus,
    sets: &[(&'static str, Arg)],
) -> Result<bool> {
    let mut q = Query::new("UPDATE compute_migrations SET status = ");
    q.bind(to).push_bind(", updated_at = ", stratus_core::time::now());
    for (c, v) in sets {
        q.push(", ").push(c).push(" = ").bind(v.clone());
    }
    q.push_bind(" WHERE uuid = ", uuid).push(" AND ").push_in("status", MigrationStatus::names(from));
    let n = db
        .transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await?;
    Ok(n == 1)
}

/// Ends a migration in `to` whatever non-terminal status it had.
pub async fn finish(db: &Db, uuid: &str, to: MigrationStatus) -> Result<()> {
    let mut q = Query::new("UPDATE compute_migrations SET status = ");
    q.bind(to).push_bind(", updated_at = ", stratus_core::time::now());
    q.push_bind(" WHERE uuid = ", uuid).push(" AND NOT ").push_in("status", terminal_names());
    db.transaction(|tx| {
        let q = q.clone();
        Box::pin(async move { q.execute(&mut **tx).await })
    })
    .await?;
    Ok(())
}

// --- API ------------------------------------------------------------------------------

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-migrations", get(os_migrations))
        .route("/v2.1/servers/{id}/migrations", get(server_list))
        .route("/v2.1/servers/{id}/migrations/{mid}", get(server_show).delete(server_abort))
        .route("/v2.1/servers/{id}/migrations/{mid}/action", post(server_action))
}

fn view(m: &Migration, v: ApiVersion, base: &str) -> Value {
    let mut o = json!({
        "id": m.id,
        "instance_uuid": m.instance_uuid,
        "source_compute": m.source_compute,
        "source_node": m.source_node,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_node,
        "dest_host": m.dest_host,
        "old_instance_type_id": m.old_flavor.as_ref().map(|f| f.id.clone()),
        "new_instance_type_id": m.new_flavor.as_ref().map(|f| f.id.clone()),
        "status": m.status.as_str(),
        "created_at": micros_naive(&m.created_at),
        "updated_at": micros_naive(&m.updated_at),
    });
    if v.at_least(2, 23) {
        o["migration_type"] = json!(m.migration_type);
        if m.migration_type == kind::LIVE && MigrationStatus::IN_PROGRESS_LIVE.contains(&m.status) {
            let href = format!("{base}/v2.1/servers/{}/migrations/{}", m.instance_uuid, m.id);
            let bm = format!("{base}/servers/{}/migrations/{}", m.instance_uuid, m.id);
            o["links"] = json!([{"rel": "self", "href": href}, {"rel": "bookmark", "href": bm}]);
        }
    }
    if v.at_least(2, 59) {
        o["uuid"] = json!(m.uuid);
    }
    if v.at_least(2, 80) {
        o["user_id"] = json!(m.user_id);
        o["project_id"] = json!(m.project_id);
    }
    o
}

fn server_view(m: &Migration, v: ApiVersion) -> Value {
    let mut o = json!({
        "id": m.id,
        "server_uuid": m.instance_uuid,
        "source_compute": m.source_compute,
        "source_node": m.source_node,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_node,
        "dest_host": m.dest_host,
        "status": m.status.as_str(),
        "memory_total_bytes": 0, "memory_processed_bytes": 0, "memory_remaining_bytes": 0,
        "disk_total_bytes": 0, "disk_processed_bytes": 0, "disk_remaining_bytes": 0,
        "created_at": micros_naive(&m.created_at),
        "updated_at": micros_naive(&m.updated_at),
    });
    if v.at_least(2, 59) {
        o["uuid"] = json!(m.uuid);
    }
    if v.at_least(2, 80) {
        o["user_id"] = json!(m.user_id);
        o["project_id"] = json!(m.project_id);
    }
    o
}

/// `GET /os-migrations` with Nova's filters, newest first; marker/limit from 2.59.
async fn os_migrations(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-migrations:index", &ctx, &json!({}))?;
    let mut sql = Query::new("SELECT * FROM compute_migrations WHERE 1 = 1");
    if let Some(h) = q.get("host") {
        sql.push_bind(" AND (source_compute = ", h).push_bind(" OR dest_compute = ", h).push(")");
    }
    for (param, col) in [("status", "status"), ("instance_uuid", "instance_uuid"), ("source_compute", "source_compute")]
    {
        if let Some(x) = q.get(param) {
            sql.push(" AND ").push(col).push_bind(" = ", x);
        }
    }
    if v.at_least(2, 23) {
        if let Some(t) = q.get("migration_type") {
            sql.push_bind(" AND migration_type = ", t);
        }
    }
    if v.at_least(2, 59) {
        if let Some(cs) = q.get("changes-since") {
            let t = stratus_core::time::parse(cs)
                .map(stratus_core::time::to_storage)
                .ok_or_else(|| ComputeError::BadRequest(format!("Invalid changes-since value {cs:?}")))?;
            sql.push_bind(" AND updated_at >= ", t);
        }
    }
    if v.at_least(2, 66) {
        if let Some(cb) = q.get("changes-before") {
            let t = stratus_core::time::parse(cb)
                .map(stratus_core::time::to_storage)
                .ok_or_else(|| ComputeError::BadRequest(format!("Invalid changes-before value {cb:?}")))?;
            sql.push_bind(" AND updated_at <= ", t);
        }
    }
    if v.at_least(2, 80) {
        for p in ["user_id", "project_id"] {
            if let Some(x) = q.get(p) {
                sql.push(" AND ").push(p).push_bind(" = ", x);
            }
        }
    }
    let mut limit = None;
    if v.at_least(2, 59) {
        if let Some(m) = q.get("marker") {
            let mid = by_uuid(&st.platform.db, m)
                .await?
                .ok_or_else(|| ComputeError::BadRequest(format!("Marker {m} could not be found.")))?
                .id;
            sql.push_bind(" AND id < ", mid);
        }
        limit = q.int("limit")?;
        if limit.is_some_and(|l| l < 0) {
            return Err(ComputeError::BadRequest("limit must be >= 0".into()).into());
        }
    }
    sql.push(" ORDER BY id DESC");
    let rows = sql.fetch_all(st.platform.db.reader()).await.map_err(ComputeError::from)?;
    let base = st.platform.service_url("/compute");
    let mut out = Vec::new();
    for r in &rows {
        out.push(Migration::from_row(r)?);
    }
    let more = limit.is_some_and(|l| out.len() as i64 > l);
    if let Some(l) = limit {
        out.truncate(l as usize);
    }
    let list: Vec<Value> = out.iter().map(|m| view(m, v, &base)).collect();
    let mut body = json!({"migrations": list});
    if let (true, Some(last)) = (more, out.last()) {
        body["migrations_links"] = json!([{"rel": "next", "href": stratus_core::pagination::next_href(&base, "/v2.1/os-migrations", &q, &last.uuid)}]);
    }
    Ok(Json(body))
}

/// A migration of server `id` by its integer id (the API's) or its uuid (which
/// openstackclient sends when given one).
async fn server_migration(st: &AppState, id: &str, mid: &str) -> Result<Migration> {
    let mut q = Query::new("SELECT * FROM compute_migrations WHERE ");
    match mid.parse::<i64>() {
        Ok(n) => q.push_bind("id = ", n),
        Err(_) => q.push_bind("uuid = ", mid),
    };
    let r = q.push_bind(" AND instance_uuid = ", id).fetch_optional(st.platform.db.reader()).await?;
    let m = r
        .map(|r| Migration::from_row(&r))
        .transpose()?
        .ok_or_else(|| ComputeError::NotFound(format!("Migration {mid} for instance {id} could not be found.")))?;
    Ok(m)
}

/// `GET /servers/{id}/migrations`: the server's in-progress live migrations.
async fn server_list(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(v, 2, 23)?;
    crate::servers::authorized(&st, &ctx, &id, "os_compute_api:servers:migrations:index").await?;
    let mut q = Query::new("SELECT * FROM compute_migrations WHERE instance_uuid = ");
    q.bind(&id)
        .push_bind(" AND migration_type = ", kind::LIVE)
        .push(" AND ")
        .push_in("status", MigrationStatus::names(&MigrationStatus::IN_PROGRESS_LIVE))
        .push(" ORDER BY id DESC");
    let rows = q.fetch_all(st.platform.db.reader()).await.map_err(ComputeError::from)?;
    let mut list = Vec::new();
    for r in &rows {
        list.push(server_view(&Migration::from_row(r)?, v));
    }
    Ok(Json(json!({"migrations": list})))
}

/// `GET /servers/{id}/migrations/{mid}` (in-progress live migrations only, as Nova).
async fn server_show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, mid)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require(v, 2, 23)?;
    crate::servers::authorized(&st, &ctx, &id, "os_compute_api:servers:migrations:show").await?;
    let m = server_migration(&st, &id, &mid).await?;
    if m.migration_type != kind::LIVE || !MigrationStatus::IN_PROGRESS_LIVE.contains(&m.status) {
        return Err(
            ComputeError::NotFound(format!("In-progress live migration {mid} is not found for server {id}.")).into()
        );
    }
    Ok(Json(json!({"migration": server_view(&m, v)})))
}

fn require(v: ApiVersion, major: u32, minor: u32) -> Result<(), ApiError> {
    if v.at_least(major, minor) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("This API needs microversion {major}.{minor} or later")))
    }
}

/// `POST /servers/{id}/migrations/{mid}/action` with `force_complete` (2.22+): only a
/// running live migration can be forced; drivers without a memory-copy phase (fake)
/// complete it anyway.
async fn server_action(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, mid)): Path<(String, String)>,
    OsJson(b): OsJson<Value>,
) -> Result<StatusCode, ApiError> {
    require(v, 2, 22)?;
    if b.get("force_complete").is_none() {
        return Err(ComputeError::BadRequest("The only migration action is force_complete".into()).into());
    }
    let inst = crate::servers::authorized(&st, &ctx, &id, "os_compute_api:servers:migrations:force_complete").await?;
    crate::servers::check_lock(&st, &ctx, &inst)?;
    let m = server_migration(&st, &id, &mid).await?;
    if m.migration_type != kind::LIVE || m.status != MigrationStatus::Running {
        return Err(ComputeError::BadRequest(format!(
            "Migration {mid} state of instance {id} is {}. Cannot force_complete while the migration is in this state.",
            m.status
        ))
        .into());
    }
    // Drivers without a memory-copy phase (fake) complete it anyway.
    match control_live_migration(&st, &m, MigrationAction::ForceComplete).await {
        Ok(()) | Err(Control::Unsupported) => {}
        Err(Control::Failed(e)) => tracing::warn!(migration = %m.uuid, error = %e, "force complete not applied"),
    }
    Ok(StatusCode::ACCEPTED)
}

/// Why a running live migration could not be steered.
enum Control {
    /// The source's driver copies memory in one step that cannot be steered.
    Unsupported,
    /// The source host did not take the request (unreachable, or the migration ended).
    Failed(String),
}

/// Sends `action` to the source host of the running live migration `m`.
async fn control_live_migration(
    st: &AppState,
    m: &Migration,
    action: MigrationAction,
) -> std::result::Result<(), Control> {
    let source = m.source_compute.clone().unwrap_or_default();
    let msg = to_message(&AgentRequest::LiveMigrationControl { uuid: m.instance_uuid.clone(), action });
    match st
        .platform
        .bus
        .call(&agent_topic(&source), msg, std::time::Duration::from_secs(10))
        .await
        .map_err(CallError::from)
    {
        Ok(_) => Ok(()),
        Err(CallError::Agent(AgentError::Failed { source: VirtError::Unsupported { .. } })) => {
            Err(Control::Unsupported)
        }
        Err(e) => Err(Control::Failed(e.to_string())),
    }
}

/// `DELETE /servers/{id}/migrations/{mid}` (2.24+): aborts a live migration. From 2.65
/// a queued or preparing one can be aborted too. The move stops at its next step and
/// gives the destination's claim back.
async fn server_abort(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, mid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require(v, 2, 24)?;
    let inst = crate::servers::authorized(&st, &ctx, &id, "os_compute_api:servers:migrations:delete").await?;
    crate::servers::check_lock(&st, &ctx, &inst)?;
    let m = server_migration(&st, &id, &mid).await?;
    if m.migration_type != kind::LIVE {
        return Err(ComputeError::BadRequest(format!("Migration {mid} is not a live migration")).into());
    }
    let abortable: &[MigrationStatus] =
        if v.at_least(2, 65) { &[MigrationStatus::Queued, MigrationStatus::Preparing] } else { &[] };
    if m.status == MigrationStatus::Running {
        // The source host cancels the copy; its migration step then fails as
        // cancelled and the move is rolled back (the guest stays where it was).
        return match control_live_migration(&st, &m, MigrationAction::Abort).await {
            Ok(()) => Ok(StatusCode::ACCEPTED),
            Err(Control::Unsupported) => Err(ComputeError::BadRequest(format!(
                "Migration {mid} of instance {id} is running and this cloud's drivers cannot interrupt it"
            ))
            .into()),
            Err(Control::Failed(e)) => {
                Err(ComputeError::BadRequest(format!("Migration {mid} of instance {id} could not be aborted: {e}"))
                    .into())
            }
        };
    }
    if !abortable.contains(&m.status)
        || !advance(&st.platform.db, &m.uuid, abortable, MigrationStatus::Cancelled, &[]).await?
    {
        return Err(ComputeError::BadRequest(format!(
            "Migration {mid} state of instance {id} is {}. Cannot abort live migration in this state.",
            m.status
        ))
        .into());
    }
    // The guest never left its source: the move is undone now; a preparation step
    // still running on the destination finds the server no longer migrating.
    st.conductor.clone().spawn_abort(m.instance_uuid.clone(), m.uuid.clone());
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn statuses_keep_their_api_names_and_terminal_ones_are_the_seven_ends() {
        for s in MigrationStatus::ALL {
            assert_eq!(MigrationStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MigrationStatus::parse("pre-migrating"), Some(MigrationStatus::PreMigrating));
        assert_eq!(MigrationStatus::parse("migrating"), Some(MigrationStatus::Migrating));
        assert_eq!(MigrationStatus::parse("Running"), None);
        assert_eq!(
            terminal_names(),
            vec!["confirmed", "reverted", "completed", "done", "error", "failed", "cancelled"]
        );
        let live: Vec<_> = MigrationStatus::ALL.into_iter().filter(|s| !s.is_terminal()).collect();
        assert_eq!(live.len(), 10);
        assert_eq!(MigrationStatus::initial(kind::LIVE), MigrationStatus::Queued);
        assert_eq!(MigrationStatus::initial(kind::EVACUATION), MigrationStatus::Accepted);
        assert_eq!(MigrationStatus::initial(kind::RESIZE), MigrationStatus::PreMigrating);
        assert_eq!(MigrationStatus::initial(kind::MIGRATION), MigrationStatus::PreMigrating);
    }
}
