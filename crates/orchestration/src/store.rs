//! The orchestration tables: stacks, their resources and their events. Every state
//! change of a stack or a resource is one transaction that also appends its event, so
//! the event list is exactly the history of states (what `stack create --wait` follows).

use serde_json::Value;
use stratus_core::RequestContext;
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::{Db, Query, Tx};

use crate::error::{HeatError, HeatResult};

/// A stack row.
#[derive(Debug, Clone)]
pub struct StackRow {
    /// Id.
    pub id: String,
    /// Name (unique per project among stacks not deleted).
    pub name: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// `CREATE`, `DELETE`, `ROLLBACK`.
    pub action: String,
    /// `IN_PROGRESS`, `COMPLETE`, `FAILED`.
    pub status: String,
    /// Why.
    pub status_reason: String,
    /// The template's description.
    pub description: String,
    /// The template (JSON).
    pub template: Value,
    /// Files sent with it.
    pub files: Value,
    /// The environment sent with it.
    pub environment: Value,
    /// Parameter values as given (environment merged).
    pub parameters: Value,
    /// `disable_rollback`.
    pub disable_rollback: bool,
    /// `timeout_mins`.
    pub timeout_mins: Option<i64>,
    /// Tags (comma-separated).
    pub tags: Option<String>,
    /// The owner's context, which the engine acts as (also after a restart).
    pub context: RequestContext,
    /// Creation time.
    pub created_at: String,
    /// Last update.
    pub updated_at: Option<String>,
    /// Deletion time (deleted stacks stay readable by id).
    pub deleted_at: Option<String>,
    /// The definition the last update started from (what its rollback returns to).
    pub previous: Option<Definition>,
    /// The parent stack of a nested stack.
    pub parent_id: Option<String>,
}

/// What a stack is made from: the template and what it is evaluated with.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The template (JSON).
    pub template: Value,
    /// Files sent with it.
    pub files: Value,
    /// The environment.
    pub environment: Value,
    /// Parameter values as given.
    pub parameters: Value,
}

impl StackRow {
    /// The definition the stack has now.
    pub fn definition(&self) -> Definition {
        Definition {
            template: self.template.clone(),
            files: self.files.clone(),
            environment: self.environment.clone(),
            parameters: self.parameters.clone(),
        }
    }
}

/// A resource row.
#[derive(Debug, Clone)]
pub struct ResourceRow {
    /// Stack id.
    pub stack_id: String,
    /// Logical name (in the template).
    pub name: String,
    /// Its own id.
    pub id: String,
    /// `OS::...` type.
    pub type_name: String,
    /// `INIT`, `CREATE`, `DELETE`.
    pub action: String,
    /// `IN_PROGRESS`, `COMPLETE`, `FAILED`.
    pub status: String,
    /// Why.
    pub status_reason: String,
    /// What was made (network id...).
    pub physical_id: Option<String>,
    /// What `get_resource` answers, when not the physical id.
    pub ref_id: Option<String>,
    /// Attributes.
    pub attributes: Value,
    /// The evaluated properties it was made or last updated with (null when unknown:
    /// rows from before updates existed).
    pub properties: Value,
    /// Whether this is the old self of a resource being replaced (kept in
    /// `heat_resource_backups` until the update deletes it or a rollback restores it).
    pub backup: bool,
    /// Creation time.
    pub created_at: String,
    /// Last update.
    pub updated_at: Option<String>,
}

/// An event row.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Id.
    pub id: String,
    /// Stack id.
    pub stack_id: String,
    /// Order within the stack.
    pub seq: i64,
    /// The resource's name (the stack's name for stack events).
    pub resource_name: String,
    /// The physical id at the time (the stack id for stack events).
    pub physical_id: String,
    /// Resource type (`OS::Heat::Stack` for stack events).
    pub resource_type: String,
    /// Action.
    pub action: String,
    /// Status.
    pub status: String,
    /// Why.
    pub status_reason: String,
    /// When.
    pub created_at: String,
}

fn s(r: &AnyRow, c: &str) -> String {
    r.try_get::<Option<String>, _>(c).ok().flatten().unwrap_or_default()
}
fn os(r: &AnyRow, c: &str) -> Option<String> {
    r.try_get::<Option<String>, _>(c).ok().flatten()
}
fn json(r: &AnyRow, c: &str) -> Value {
    os(r, c).and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
}

fn stack_row(r: &AnyRow) -> StackRow {
    StackRow {
        id: s(r, "id"),
        name: s(r, "name"),
        project_id: s(r, "project_id"),
        user_id: s(r, "user_id"),
        action: s(r, "action"),
        status: s(r, "status"),
        status_reason: s(r, "status_reason"),
        description: s(r, "description"),
        template: json(r, "template"),
        files: json(r, "files"),
        environment: json(r, "environment"),
        parameters: json(r, "parameters"),
        disable_rollback: stratus_db::flag(r, "disable_rollback"),
        timeout_mins: r.try_get::<Option<i64>, _>("timeout_mins").ok().flatten(),
        tags: os(r, "tags"),
        context: os(r, "context").and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
        created_at: s(r, "created_at"),
        updated_at: os(r, "updated_at"),
        deleted_at: os(r, "deleted_at"),
        previous: os(r, "prev_template").map(|_| Definition {
            template: json(r, "prev_template"),
            files: json(r, "prev_files"),
            environment: json(r, "prev_environment"),
            parameters: json(r, "prev_parameters"),
        }),
        parent_id: os(r, "parent_id"),
    }
}

fn resource_row(r: &AnyRow) -> ResourceRow {
    resource_row_of(r, false)
}

fn backup_row(r: &AnyRow) -> ResourceRow {
    resource_row_of(r, true)
}

fn resource_row_of(r: &AnyRow, backup: bool) -> ResourceRow {
    ResourceRow {
        stack_id: s(r, "stack_id"),
        name: s(r, "name"),
        id: s(r, "id"),
        type_name: s(r, "type"),
        action: s(r, "action"),
        status: s(r, "status"),
        status_reason: s(r, "status_reason"),
        physical_id: os(r, "physical_id"),
        ref_id: os(r, "ref_id"),
        attributes: json(r, "attributes"),
        properties: json(r, "properties"),
        backup,
        created_at: s(r, "created_at"),
        updated_at: os(r, "updated_at"),
    }
}

fn event_row(r: &AnyRow) -> EventRow {
    EventRow {
        id: s(r, "id"),
        stack_id: s(r, "stack_id"),
        seq: r.try_get::<Option<i64>, _>("seq").ok().flatten().unwrap_or_default(),
        resource_name: s(r, "resource_name"),
        physical_id: s(r, "physical_id"),
        resource_type: s(r, "resource_type"),
        action: s(r, "action"),
        status: s(r, "status"),
        status_reason: s(r, "status_reason"),
        created_at: s(r, "created_at"),
    }
}

/// The type stack events carry.
pub const STACK_TYPE: &str = "OS::Heat::Stack";

/// One event to append.
struct NewEvent<'a> {
    stack_id: &'a str,
    resource_name: &'a str,
    physical_id: &'a str,
    resource_type: &'a str,
    action: &'a str,
    status: &'a str,
    reason: &'a str,
}

async fn append_event(tx: &mut Tx, e: &NewEvent<'_>) -> Result<(), HeatError> {
    let mut q = Query::new("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS n FROM heat_events WHERE stack_id = ");
    q.bind(e.stack_id);
    let n: i64 = q.fetch_optional(&mut **tx).await?.and_then(|r| r.try_get::<i64, _>("n").ok()).unwrap_or(0);
    let mut q = Query::new(
        "INSERT INTO heat_events (id, stack_id, seq, resource_name, physical_id, resource_type, action, status, status_reason, created_at) VALUES (",
    );
    q.bind(uuid::Uuid::new_v4().to_string())
        .push(", ")
        .bind(e.stack_id)
        .push(", ")
        .bind(n + 1)
        .push(", ")
        .bind(e.resource_name)
        .push(", ")
        .bind(e.physical_id)
        .push(", ")
        .bind(e.resource_type)
        .push(", ")
        .bind(e.action)
        .push(", ")
        .bind(e.status)
        .push(", ")
        .bind(e.reason)
        .push(", ")
        .bind(stratus_core::time::now())
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Inserts a new stack in `CREATE IN_PROGRESS` with its resources in `INIT COMPLETE`;
/// 409 when the project has a live stack of that name.
pub async fn insert_stack(db: &Db, st: &StackRow, resources: &[(String, String)]) -> HeatResult<()> {
    let st = st.clone();
    let resources = resources.to_vec();
    db.transaction(|tx| {
        let st = st.clone();
        let resources = resources.clone();
        Box::pin(async move {
            let mut q = Query::new("SELECT id FROM heat_stacks WHERE deleted_at IS NULL AND project_id = ");
            q.bind(&st.project_id).push(" AND name = ").bind(&st.name);
            if q.fetch_optional(&mut **tx).await?.is_some() {
                return Err(HeatError::StackExists(st.name.clone()));
            }
            let mut q = Query::new(
                "INSERT INTO heat_stacks (id, name, project_id, user_id, action, status, status_reason, description, template, files, environment, parameters, disable_rollback, timeout_mins, tags, context, created_at, parent_id) VALUES (",
            );
            q.bind(&st.id)
                .push(", ")
                .bind(&st.name)
                .push(", ")
                .bind(&st.project_id)
                .push(", ")
                .bind(&st.user_id)
                .push(", ")
                .bind(&st.action)
                .push(", ")
                .bind(&st.status)
                .push(", ")
                .bind(&st.status_reason)
                .push(", ")
                .bind(&st.description)
                .push(", ")
                .bind(st.template.to_string())
                .push(", ")
                .bind(st.files.to_string())
                .push(", ")
                .bind(st.environment.to_string())
                .push(", ")
                .bind(st.parameters.to_string())
                .push(", ")
                .bind(st.disable_rollback)
                .push(", ")
                .bind(st.timeout_mins)
                .push(", ")
                .bind(st.tags.clone())
                .push(", ")
                .bind(serde_json::to_string(&st.context).unwrap_or_default())
                .push(", ")
                .bind(&st.created_at)
                .push(", ")
                .bind(st.parent_id.clone())
                .push(")");
            q.execute(&mut **tx).await?;
            for (name, ty) in &resources {
                let mut q = Query::new(
                    "INSERT INTO heat_resources (stack_id, name, id, type, action, status, status_reason, created_at) VALUES (",
                );
                q.bind(&st.id)
                    .push(", ")
                    .bind(name)
                    .push(", ")
                    .bind(uuid::Uuid::new_v4().to_string())
                    .push(", ")
                    .bind(ty)
                    .push(", 'INIT', 'COMPLETE', '', ")
                    .bind(&st.created_at)
                    .push(")");
                q.execute(&mut **tx).await?;
            }
            append_event(
                tx,
                &NewEvent {
                    stack_id: &st.id,
                    resource_name: &st.name,
                    physical_id: &st.id,
                    resource_type: STACK_TYPE,
                    action: &st.action,
                    status: &st.status,
                    reason: &st.status_reason,
                },
            )
            .await
        })
    })
    .await
}

/// A stack of `project` by id (deleted ones included, as Heat shows them by id).
pub async fn stack_by_id(db: &Db, project: &str, id: &str) -> HeatResult<Option<StackRow>> {
    let mut q = Query::new("SELECT * FROM heat_stacks WHERE project_id = ");
    q.bind(project).push(" AND id = ").bind(id);
    Ok(q.fetch_optional(db.reader()).await?.map(|r| stack_row(&r)))
}

/// A live stack of `project` by name.
pub async fn stack_by_name(db: &Db, project: &str, name: &str) -> HeatResult<Option<StackRow>> {
    let mut q = Query::new("SELECT * FROM heat_stacks WHERE deleted_at IS NULL AND project_id = ");
    q.bind(project).push(" AND name = ").bind(name);
    Ok(q.fetch_optional(db.reader()).await?.map(|r| stack_row(&r)))
}

/// A stack by id alone (the engine's own reads).
pub async fn stack(db: &Db, id: &str) -> HeatResult<Option<StackRow>> {
    let mut q = Query::new("SELECT * FROM heat_stacks WHERE id = ");
    q.bind(id);
    Ok(q.fetch_optional(db.reader()).await?.map(|r| stack_row(&r)))
}

/// Live stacks of `project` (every project's with `None`), newest first.
pub async fn list_stacks(db: &Db, project: Option<&str>) -> HeatResult<Vec<StackRow>> {
    let mut q = Query::new("SELECT * FROM heat_stacks WHERE deleted_at IS NULL AND parent_id IS NULL");
    if let Some(p) = project {
        q.push(" AND project_id = ").bind(p);
    }
    q.push(" ORDER BY created_at DESC, id");
    Ok(q.fetch_all(db.reader()).await?.iter().map(stack_row).collect())
}

/// Top-level stacks some action was running on (after a restart: to resume or fail
/// them; nested stacks are driven by their parent's action).
pub async fn stacks_in_progress(db: &Db) -> HeatResult<Vec<StackRow>> {
    let q =
        Query::new("SELECT * FROM heat_stacks WHERE status = 'IN_PROGRESS' AND parent_id IS NULL ORDER BY created_at");
    Ok(q.fetch_all(db.reader()).await?.iter().map(stack_row).collect())
}

/// Sets a stack's state and appends its event; `deleted` marks it deleted.
pub async fn set_stack_state(
    db: &Db,
    st: &StackRow,
    action: &str,
    status: &str,
    reason: &str,
    deleted: bool,
) -> HeatResult<()> {
    let (id, name) = (st.id.clone(), st.name.clone());
    let (action, status, reason) = (action.to_string(), status.to_string(), reason.to_string());
    db.transaction(|tx| {
        let (id, name, action, status, reason) =
            (id.clone(), name.clone(), action.clone(), status.clone(), reason.clone());
        Box::pin(async move {
            let now = stratus_core::time::now();
            let mut q = Query::new("UPDATE heat_stacks SET action = ");
            q.bind(&action).push(", status = ").bind(&status).push(", status_reason = ").bind(&reason);
            q.push(", updated_at = ").bind(&now);
            if deleted {
                q.push(", deleted_at = ").bind(&now);
            }
            q.push(" WHERE id = ").bind(&id);
            q.execute(&mut **tx).await?;
            append_event(
                tx,
                &NewEvent {
                    stack_id: &id,
                    resource_name: &name,
                    physical_id: &id,
                    resource_type: STACK_TYPE,
                    action: &action,
                    status: &status,
                    reason: &reason,
                },
            )
            .await
        })
    })
    .await
}

/// What changes with a resource's state.
#[derive(Debug, Clone, Default)]
pub struct ResourceUpdate {
    /// New attributes (kept when `None`).
    pub attributes: Option<Value>,
    /// New physical id (kept when `None`).
    pub physical_id: Option<String>,
    /// New reference id (kept when `None`).
    pub ref_id: Option<String>,
    /// New evaluated properties (kept when `None`).
    pub properties: Option<Value>,
}

/// Sets a resource's state (and what else changed) and appends its event.
pub async fn set_resource_state(
    db: &Db,
    stack_id: &str,
    res: &ResourceRow,
    action: &str,
    status: &str,
    reason: &str,
    upd: ResourceUpdate,
) -> HeatResult<()> {
    let (stack_id, name, ty) = (stack_id.to_string(), res.name.clone(), res.type_name.clone());
    let (action, status, reason) = (action.to_string(), status.to_string(), reason.to_string());
    let (backup, row_id) = (res.backup, res.id.clone());
    db.transaction(|tx| {
        let (stack_id, name, ty, action, status, reason, upd) =
            (stack_id.clone(), name.clone(), ty.clone(), action.clone(), status.clone(), reason.clone(), upd.clone());
        let row_id = row_id.clone();
        Box::pin(async move {
            let mut q = Query::new(if backup { "UPDATE heat_resource_backups" } else { "UPDATE heat_resources" });
            q.push(" SET action = ")
                .bind(&action)
                .push(", status = ")
                .bind(&status)
                .push(", status_reason = ")
                .bind(&reason);
            q.push(", updated_at = ").bind(stratus_core::time::now());
            if let Some(a) = &upd.attributes {
                q.push(", attributes = ").bind(a.to_string());
            }
            if let Some(p) = &upd.physical_id {
                q.push(", physical_id = ").bind(p);
            }
            if let Some(r) = &upd.ref_id {
                q.push(", ref_id = ").bind(r);
            }
            if let Some(p) = &upd.properties {
                q.push(", properties = ").bind(p.to_string());
            }
            q.push(" WHERE stack_id = ").bind(&stack_id);
            if backup {
                q.push(" AND id = ").bind(&row_id);
            } else {
                q.push(" AND name = ").bind(&name);
            }
            q.execute(&mut **tx).await?;
            let mut q = Query::new(if backup {
                "SELECT physical_id FROM heat_resource_backups WHERE stack_id = "
            } else {
                "SELECT physical_id FROM heat_resources WHERE stack_id = "
            });
            q.bind(&stack_id);
            if backup {
                q.push(" AND id = ").bind(&row_id);
            } else {
                q.push(" AND name = ").bind(&name);
            }
            let pid = q.fetch_optional(&mut **tx).await?.map(|r| s(&r, "physical_id")).unwrap_or_default();
            append_event(
                tx,
                &NewEvent {
                    stack_id: &stack_id,
                    resource_name: &name,
                    physical_id: &pid,
                    resource_type: &ty,
                    action: &action,
                    status: &status,
                    reason: &reason,
                },
            )
            .await
        })
    })
    .await
}

/// Records what a resource made as soon as it exists (no event: the state is unchanged).
pub async fn set_physical_id(db: &Db, stack_id: &str, name: &str, physical_id: &str) -> HeatResult<()> {
    let (stack_id, name, physical_id) = (stack_id.to_string(), name.to_string(), physical_id.to_string());
    db.transaction(|tx| {
        let mut q = Query::new("UPDATE heat_resources SET physical_id = ");
        q.bind(&physical_id).push(" WHERE stack_id = ").bind(&stack_id).push(" AND name = ").bind(&name);
        Box::pin(async move {
            q.execute(&mut **tx).await?;
            Ok::<(), HeatError>(())
        })
    })
    .await
}

/// A stack's resources, by name.
pub async fn resources(db: &Db, stack_id: &str) -> HeatResult<Vec<ResourceRow>> {
    let mut q = Query::new("SELECT * FROM heat_resources WHERE stack_id = ");
    q.bind(stack_id).push(" ORDER BY name");
    Ok(q.fetch_all(db.reader()).await?.iter().map(resource_row).collect())
}

/// Filters of an event listing.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this resource's events.
    pub resource_name: Option<String>,
    /// Only events after (or before, descending) this one.
    pub marker: Option<String>,
    /// At most this many.
    pub limit: Option<i64>,
    /// Newest first.
    pub descending: bool,
    /// Only these actions (`CREATE`...).
    pub actions: Vec<String>,
    /// Only these statuses (`COMPLETE`...).
    pub statuses: Vec<String>,
    /// Only these resource types.
    pub types: Vec<String>,
}

/// A stack's events, in order.
pub async fn events(db: &Db, stack_id: &str, f: &EventFilter) -> HeatResult<Vec<EventRow>> {
    let mut q = Query::new("SELECT * FROM heat_events WHERE stack_id = ");
    q.bind(stack_id);
    if let Some(r) = &f.resource_name {
        q.push(" AND resource_name = ").bind(r);
    }
    if !f.actions.is_empty() {
        q.push(" AND ").push_in("action", f.actions.iter().cloned());
    }
    if !f.statuses.is_empty() {
        q.push(" AND ").push_in("status", f.statuses.iter().cloned());
    }
    if !f.types.is_empty() {
        q.push(" AND ").push_in("resource_type", f.types.iter().cloned());
    }
    if let Some(m) = &f.marker {
        let mut mq = Query::new("SELECT seq FROM heat_events WHERE stack_id = ");
        mq.bind(stack_id).push(" AND id = ").bind(m);
        let seq = mq
            .fetch_optional(db.reader())
            .await?
            .and_then(|r| r.try_get::<i64, _>("seq").ok())
            .ok_or_else(|| crate::error::not_found("Event", m))?;
        q.push(if f.descending { " AND seq < " } else { " AND seq > " }).bind(seq);
    }
    q.push(if f.descending { " ORDER BY seq DESC" } else { " ORDER BY seq" });
    if let Some(l) = f.limit {
        q.push(" LIMIT ").bind(l);
    }
    Ok(q.fetch_all(db.reader()).await?.iter().map(event_row).collect())
}

/// A stack's backup resources (old selves of resources being replaced).
pub async fn backups(db: &Db, stack_id: &str) -> HeatResult<Vec<ResourceRow>> {
    let mut q = Query::new("SELECT * FROM heat_resource_backups WHERE stack_id = ");
    q.bind(stack_id).push(" ORDER BY name, created_at");
    Ok(q.fetch_all(db.reader()).await?.iter().map(backup_row).collect())
}

/// What an update changes on the stack besides its definition.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// `disable_rollback` from now on.
    pub disable_rollback: bool,
    /// `timeout_mins` from now on.
    pub timeout_mins: Option<i64>,
    /// Tags from now on.
    pub tags: Option<String>,
}

/// Adds `, template = ..., files = ..., environment = ..., parameters = ...,
/// description = ...` to an `UPDATE heat_stacks SET` statement.
fn set_definition(q: &mut Query, d: &Definition) {
    q.push(", template = ")
        .bind(d.template.to_string())
        .push(", files = ")
        .bind(d.files.to_string())
        .push(", environment = ")
        .bind(d.environment.to_string())
        .push(", parameters = ")
        .bind(d.parameters.to_string())
        .push(", description = ")
        .bind(d.template["description"].as_str().unwrap_or_default().to_string());
}

/// Starts an update: the stack takes `new` as its definition, keeps the one it had as
/// `previous` (what a rollback returns to), and goes to `UPDATE IN_PROGRESS`; 409 when
/// another action runs on it.
pub async fn begin_update(db: &Db, st: &StackRow, new: &Definition, opts: &UpdateOptions) -> HeatResult<()> {
    let (st, new, opts) = (st.clone(), new.clone(), opts.clone());
    db.transaction(|tx| {
        let (st, new, opts) = (st.clone(), new.clone(), opts.clone());
        Box::pin(async move {
            let mut q = Query::new("SELECT action, status FROM heat_stacks WHERE deleted_at IS NULL AND id = ");
            q.bind(&st.id);
            let Some(row) = q.fetch_optional(&mut **tx).await? else {
                return Err(crate::error::not_found("Stack", &st.name));
            };
            if s(&row, "status") == "IN_PROGRESS" {
                return Err(HeatError::InProgress { name: st.name.clone(), action: s(&row, "action") });
            }
            let reason = "Stack UPDATE started";
            let mut q =
                Query::new("UPDATE heat_stacks SET action = 'UPDATE', status = 'IN_PROGRESS', status_reason = ");
            q.bind(reason)
                .push(", prev_template = ")
                .bind(st.template.to_string())
                .push(", prev_files = ")
                .bind(st.files.to_string())
                .push(", prev_environment = ")
                .bind(st.environment.to_string())
                .push(", prev_parameters = ")
                .bind(st.parameters.to_string())
                .push(", disable_rollback = ")
                .bind(opts.disable_rollback)
                .push(", timeout_mins = ")
                .bind(opts.timeout_mins)
                .push(", tags = ")
                .bind(opts.tags.clone())
                .push(", updated_at = ")
                .bind(stratus_core::time::now());
            set_definition(&mut q, &new);
            q.push(" WHERE id = ").bind(&st.id);
            q.execute(&mut **tx).await?;
            append_event(
                tx,
                &NewEvent {
                    stack_id: &st.id,
                    resource_name: &st.name,
                    physical_id: &st.id,
                    resource_type: STACK_TYPE,
                    action: "UPDATE",
                    status: "IN_PROGRESS",
                    reason,
                },
            )
            .await
        })
    })
    .await
}

/// Starts the rollback of a failed update: the stack takes its previous definition
/// back and goes to `ROLLBACK IN_PROGRESS` (one transaction, so that a restart resumes
/// the rollback towards the right template).
pub async fn begin_update_rollback(db: &Db, st: &StackRow, prev: &Definition) -> HeatResult<()> {
    let (id, name, prev) = (st.id.clone(), st.name.clone(), prev.clone());
    db.transaction(|tx| {
        let (id, name, prev) = (id.clone(), name.clone(), prev.clone());
        Box::pin(async move {
            let reason = "Stack ROLLBACK started";
            let mut q =
                Query::new("UPDATE heat_stacks SET action = 'ROLLBACK', status = 'IN_PROGRESS', status_reason = ");
            q.bind(reason).push(", updated_at = ").bind(stratus_core::time::now());
            set_definition(&mut q, &prev);
            q.push(" WHERE id = ").bind(&id);
            q.execute(&mut **tx).await?;
            append_event(
                tx,
                &NewEvent {
                    stack_id: &id,
                    resource_name: &name,
                    physical_id: &id,
                    resource_type: STACK_TYPE,
                    action: "ROLLBACK",
                    status: "IN_PROGRESS",
                    reason,
                },
            )
            .await
        })
    })
    .await
}

/// Adds a resource an update brings, in `INIT COMPLETE` (nothing when it has a row).
pub async fn add_resource(db: &Db, stack_id: &str, name: &str, type_name: &str) -> HeatResult<()> {
    let (stack_id, name, ty) = (stack_id.to_string(), name.to_string(), type_name.to_string());
    db.transaction(|tx| {
        let (stack_id, name, ty) = (stack_id.clone(), name.clone(), ty.clone());
        Box::pin(async move {
            let mut q = Query::new("SELECT id FROM heat_resources WHERE stack_id = ");
            q.bind(&stack_id).push(" AND name = ").bind(&name);
            if q.fetch_optional(&mut **tx).await?.is_some() {
                return Ok(());
            }
            insert_init(tx, &stack_id, &name, &ty).await
        })
    })
    .await
}

async fn insert_init(tx: &mut Tx, stack_id: &str, name: &str, ty: &str) -> HeatResult<()> {
    let mut q = Query::new(
        "INSERT INTO heat_resources (stack_id, name, id, type, action, status, status_reason, created_at) VALUES (",
    );
    q.bind(stack_id)
        .push(", ")
        .bind(name)
        .push(", ")
        .bind(uuid::Uuid::new_v4().to_string())
        .push(", ")
        .bind(ty)
        .push(", 'INIT', 'COMPLETE', '', ")
        .bind(stratus_core::time::now())
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Copies main row `name` into the backups (when it made something) and deletes it.
async fn main_to_backup(tx: &mut Tx, stack_id: &str, name: &str) -> HeatResult<()> {
    let cols = "stack_id, name, id, type, action, status, status_reason, physical_id, ref_id, attributes, properties, created_at, updated_at";
    let mut q = Query::new(format!(
        "INSERT INTO heat_resource_backups ({cols}) SELECT {cols} FROM heat_resources WHERE physical_id IS NOT NULL AND stack_id = "
    ));
    q.bind(stack_id).push(" AND name = ").bind(name);
    q.execute(&mut **tx).await?;
    let mut q = Query::new("DELETE FROM heat_resources WHERE stack_id = ");
    q.bind(stack_id).push(" AND name = ").bind(name);
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Makes room for a resource's replacement: what it made becomes a backup (deleted
/// once the update is done, or restored by its rollback) and a fresh row of type
/// `type_name` takes its name, in `INIT COMPLETE`. One transaction: the old thing is
/// tracked as either the row or the backup at every moment.
pub async fn replace_with_new(db: &Db, stack_id: &str, name: &str, type_name: &str) -> HeatResult<()> {
    let (stack_id, name, ty) = (stack_id.to_string(), name.to_string(), type_name.to_string());
    db.transaction(|tx| {
        let (stack_id, name, ty) = (stack_id.clone(), name.clone(), ty.clone());
        Box::pin(async move {
            main_to_backup(tx, &stack_id, &name).await?;
            insert_init(tx, &stack_id, &name, &ty).await
        })
    })
    .await
}

/// Puts backup `b` back in place of its resource's current row (which becomes a
/// backup in turn when it made something): a rollback returning to the old resource.
pub async fn restore_backup(db: &Db, stack_id: &str, b: &ResourceRow) -> HeatResult<()> {
    let (stack_id, b) = (stack_id.to_string(), b.clone());
    db.transaction(|tx| {
        let (stack_id, b) = (stack_id.clone(), b.clone());
        Box::pin(async move {
            main_to_backup(tx, &stack_id, &b.name).await?;
            let cols = "stack_id, name, id, type, action, status, status_reason, physical_id, ref_id, attributes, properties, created_at, updated_at";
            let mut q = Query::new(format!(
                "INSERT INTO heat_resources ({cols}) SELECT {cols} FROM heat_resource_backups WHERE stack_id = "
            ));
            q.bind(&stack_id).push(" AND id = ").bind(&b.id);
            q.execute(&mut **tx).await?;
            let mut q = Query::new("DELETE FROM heat_resource_backups WHERE stack_id = ");
            q.bind(&stack_id).push(" AND id = ").bind(&b.id);
            q.execute(&mut **tx).await?;
            Ok(())
        })
    })
    .await
}

/// Forgets a resource row (a resource an update removed, or a backup, once deleted;
/// its events stay).
pub async fn forget_resource(db: &Db, stack_id: &str, r: &ResourceRow) -> HeatResult<()> {
    let (stack_id, r) = (stack_id.to_string(), r.clone());
    db.transaction(|tx| {
        let mut q = Query::new(if r.backup {
            "DELETE FROM heat_resource_backups WHERE stack_id = "
        } else {
            "DELETE FROM heat_resources WHERE stack_id = "
        });
        q.bind(&stack_id);
        if r.backup {
            q.push(" AND id = ").bind(&r.id);
        } else {
            q.push(" AND name = ").bind(&r.name);
        }
        Box::pin(async move {
            q.execute(&mut **tx).await?;
            Ok::<(), HeatError>(())
        })
    })
    .await
}

/// The resource of stack `stack_id` whose physical id is `physical_id`.
pub async fn resource_by_physical(db: &Db, stack_id: &str, physical_id: &str) -> HeatResult<Option<ResourceRow>> {
    let mut q = Query::new("SELECT * FROM heat_resources WHERE stack_id = ");
    q.bind(stack_id).push(" AND physical_id = ").bind(physical_id);
    Ok(q.fetch_optional(db.reader()).await?.map(|r| resource_row(&r)))
}

/// Appends `signal` to the `signals` attribute of resource `name` (a wait condition
/// handle) and records a `SIGNAL COMPLETE` event; the resource's state is unchanged.
pub async fn record_signal(db: &Db, stack_id: &str, name: &str, signal: Value, reason: &str) -> HeatResult<()> {
    let (stack_id, name, reason) = (stack_id.to_string(), name.to_string(), reason.to_string());
    db.transaction(|tx| {
        let (stack_id, name, reason, signal) = (stack_id.clone(), name.clone(), reason.clone(), signal.clone());
        Box::pin(async move {
            let mut q = Query::new("SELECT * FROM heat_resources WHERE stack_id = ");
            q.bind(&stack_id).push(" AND name = ").bind(&name);
            let row = q.fetch_optional(&mut **tx).await?.map(|r| resource_row(&r));
            let Some(row) = row else { return Err(crate::error::not_found("Resource", &name)) };
            let mut attrs = row.attributes.clone();
            if !attrs["signals"].is_array() {
                attrs["signals"] = Value::Array(vec![]);
            }
            if let Some(a) = attrs["signals"].as_array_mut() {
                a.push(signal);
            }
            let mut q = Query::new("UPDATE heat_resources SET attributes = ");
            q.bind(attrs.to_string()).push(" WHERE stack_id = ").bind(&stack_id).push(" AND name = ").bind(&name);
            q.execute(&mut **tx).await?;
            append_event(
                tx,
                &NewEvent {
                    stack_id: &stack_id,
                    resource_name: &name,
                    physical_id: row.physical_id.as_deref().unwrap_or_default(),
                    resource_type: &row.type_name,
                    action: "SIGNAL",
                    status: "COMPLETE",
                    reason: &reason,
                },
            )
            .await
        })
    })
    .await
}
