//! The stack engine: creates a stack's resources in dependency order (in parallel
//! where independent), deletes them in reverse order, and rolls a failed creation back
//! unless the stack asked not to.
//!
//! Durability: every resource's state is written before and after each call to
//! another service ([`store::set_resource_state`]), and what a call made is recorded as
//! soon as it exists ([`crate::resources::Cx::started`]). After a restart
//! ([`recover`]) a creation that was running is failed (and rolled back unless
//! `disable_rollback`), and a deletion or rollback is resumed: deleting is idempotent,
//! so everything recorded is deleted and nothing recorded is left behind.
//!
//! Updates ([`crate::update`]) reuse these pieces: a replaced resource's old self is a
//! backup row until the update deletes it, so deleting a stack deletes backups first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::task::JoinSet;

use crate::resources::{Cx, Kind};
use crate::store::{self, ResourceRow, ResourceUpdate, StackRow};
use crate::template::functions::{self, Lookup};
use crate::template::{graph, Checked, Pseudo, Template};
use crate::S;

/// Actions and statuses as Heat names them.
pub mod state {
    /// Create.
    pub const CREATE: &str = "CREATE";
    /// Delete.
    pub const DELETE: &str = "DELETE";
    /// Rollback of a failed create or update.
    pub const ROLLBACK: &str = "ROLLBACK";
    /// Update.
    pub const UPDATE: &str = "UPDATE";
    /// A resource not made yet.
    pub const INIT: &str = "INIT";
    /// A health check (`CHECK FAILED`: marked unhealthy, replaced by the next update).
    pub const CHECK: &str = "CHECK";
    /// Running.
    pub const IN_PROGRESS: &str = "IN_PROGRESS";
    /// Done.
    pub const COMPLETE: &str = "COMPLETE";
    /// Failed.
    pub const FAILED: &str = "FAILED";
}
use state::*;

/// A stack's template parsed and checked again from what was stored.
pub fn prepare(st: &S, stack: &StackRow) -> Result<(Template, Checked), String> {
    let tpl = Template::parse(&stack.template).map_err(|e| e.to_string())?;
    let empty = Map::new();
    let params = stack.parameters.as_object().unwrap_or(&empty);
    let files = stack.files.as_object().unwrap_or(&empty);
    let pseudo =
        Pseudo { stack_name: stack.name.clone(), stack_id: stack.id.clone(), project_id: stack.project_id.clone() };
    let checked = tpl.check(params, files, &st.registry, &pseudo).map_err(|e| e.to_string())?;
    Ok((tpl, checked))
}

/// What functions see while a stack is created or its outputs are shown: parameters,
/// files, conditions and the resources created so far.
pub struct Snapshot<'a> {
    /// Checked template facts.
    pub checked: &'a Checked,
    /// Files.
    pub files: &'a Map<String, Value>,
    /// `name → (reference, attributes)` of created resources.
    pub done: &'a BTreeMap<String, (Value, Value)>,
}

impl Lookup for Snapshot<'_> {
    fn param(&self, name: &str) -> Option<Value> {
        self.checked.params.get(name).cloned()
    }
    fn resource_ref(&self, name: &str) -> Value {
        self.done.get(name).map(|d| d.0.clone()).unwrap_or(Value::Null)
    }
    fn attr(&self, name: &str, attr: &str) -> Value {
        match self.done.get(name) {
            Some((_, attrs)) if attr == "show" => attrs.clone(),
            Some((_, attrs)) => attrs
                .get(attr)
                .cloned()
                .or_else(|| crate::resources::group::member_attr(attrs, attr))
                .unwrap_or(Value::Null),
            None => Value::Null,
        }
    }
    fn file(&self, name: &str) -> Option<String> {
        self.files.get(name).map(functions::text)
    }
    fn condition(&self, name: &str) -> Option<bool> {
        self.checked.conditions.get(name).copied()
    }
}

/// A created resource's reference and attributes, from its row.
pub fn done_entry(r: &ResourceRow) -> (Value, Value) {
    let reference = r.ref_id.clone().or_else(|| r.physical_id.clone()).map(Value::String).unwrap_or(Value::Null);
    (reference, r.attributes.clone())
}

pub(crate) fn cx(st: &S, stack: &StackRow, name: &str) -> Cx {
    Cx {
        internal: st.platform.internal.clone(),
        ctx: stack.context.clone(),
        db: st.db.clone(),
        stack_id: stack.id.clone(),
        stack_name: stack.name.clone(),
        resource_name: name.to_string(),
        orch: st.clone(),
    }
}

/// Evaluates a resource's properties and converts them to the types its schema says;
/// properties that evaluate to null are left out (unset), as in Heat.
pub(crate) fn properties(
    st: &S,
    tpl: &Template,
    name: &str,
    snap: &Snapshot<'_>,
) -> Result<Map<String, Value>, String> {
    let def = &tpl.resources[name];
    let ty = st
        .registry
        .get(&def.type_name)
        .ok_or_else(|| format!("The Resource Type ({}) could not be found.", def.type_name))?;
    let mut out = Map::new();
    for (k, v) in &def.properties {
        let path = format!("resources.{name}.properties.{k}");
        let v = functions::resolve(v, snap).map_err(|e| format!("Property error: {path}: {e}"))?;
        if v.is_null() {
            continue;
        }
        let kind = ty.props().and_then(|p| p.iter().find(|p| p.name == k).map(|p| p.kind)).unwrap_or(Kind::Any);
        let v = kind.coerce(&v).map_err(|e| format!("Property error: {path}: {e}"))?;
        out.insert(k.clone(), v);
    }
    if let Some(schema) = ty.props() {
        for p in schema.iter().filter(|p| p.required) {
            if !out.contains_key(p.name) {
                return Err(format!("Property error: resources.{name}.properties: Property {} not assigned", p.name));
            }
        }
    }
    Ok(out)
}

pub(crate) async fn set_res(
    st: &S,
    stack: &StackRow,
    r: &ResourceRow,
    action: &str,
    status: &str,
    reason: &str,
    upd: ResourceUpdate,
) {
    if let Err(e) = store::set_resource_state(&st.db, &stack.id, r, action, status, reason, upd).await {
        tracing::error!(stack = %stack.id, resource = %r.name, error = %e, "recording a resource state failed");
    }
}

pub(crate) async fn set_stack(st: &S, stack: &StackRow, action: &str, status: &str, reason: &str, deleted: bool) {
    if let Err(e) = store::set_stack_state(&st.db, stack, action, status, reason, deleted).await {
        tracing::error!(stack = %stack.id, error = %e, "recording a stack state failed");
    }
}

/// Creates one resource (its row says `INIT`), recording `reason` with its start.
pub(crate) async fn create_one(
    st: S,
    stack: StackRow,
    r: ResourceRow,
    props: Map<String, Value>,
    reason: String,
) -> (String, Result<(Value, Value), String>) {
    set_res(&st, &stack, &r, CREATE, IN_PROGRESS, &reason, ResourceUpdate::default()).await;
    let Some(ty) = st.registry.get(&r.type_name).cloned() else {
        let why = format!("The Resource Type ({}) could not be found.", r.type_name);
        set_res(&st, &stack, &r, CREATE, FAILED, &why, ResourceUpdate::default()).await;
        return (r.name, Err(why));
    };
    let fault = st.faults.lock().iter().find(|f| f.0 == r.name).cloned();
    if let Some(f) = fault {
        set_res(&st, &stack, &r, CREATE, FAILED, &f.1, ResourceUpdate::default()).await;
        return (r.name, Err(f.1));
    }
    let c = cx(&st, &stack, &r.name);
    match ty.create(&c, &props).await {
        Ok(created) => {
            let upd = ResourceUpdate {
                attributes: Some(created.attributes.clone()),
                physical_id: Some(created.physical_id.clone()),
                ref_id: created.ref_id.clone(),
                properties: Some(Value::Object(props)),
            };
            set_res(&st, &stack, &r, CREATE, COMPLETE, "state changed", upd).await;
            let reference = created.ref_id.unwrap_or(created.physical_id);
            (r.name, Ok((Value::String(reference), created.attributes)))
        }
        Err(e) => {
            set_res(&st, &stack, &r, CREATE, FAILED, &e, ResourceUpdate::default()).await;
            (r.name, Err(e))
        }
    }
}

/// Creates every enabled resource, each once its dependencies are complete, as many at
/// once as are ready. On the first failure nothing new starts; what runs finishes.
async fn create_all(st: &S, stack: &StackRow, tpl: &Template, checked: &Checked) -> Result<(), String> {
    let rows: BTreeMap<String, ResourceRow> = store::resources(&st.db, &stack.id)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let empty = Map::new();
    let files = stack.files.as_object().unwrap_or(&empty);
    let mut done: BTreeMap<String, (Value, Value)> = BTreeMap::new();
    let mut pending: BTreeSet<String> = checked.enabled.iter().filter(|r| rows.contains_key(*r)).cloned().collect();
    let mut running = JoinSet::new();
    let mut failure: Option<String> = None;
    loop {
        if failure.is_none() {
            let ready: Vec<String> =
                pending.iter().filter(|r| checked.deps[*r].iter().all(|d| done.contains_key(d))).cloned().collect();
            for name in ready {
                pending.remove(&name);
                let snap = Snapshot { checked, files, done: &done };
                match properties(st, tpl, &name, &snap) {
                    Ok(props) => {
                        let r = rows[&name].clone();
                        running.spawn(create_one(st.clone(), stack.clone(), r, props, "state changed".into()));
                    }
                    Err(e) => {
                        let r = &rows[&name];
                        set_res(st, stack, r, CREATE, FAILED, &e, ResourceUpdate::default()).await;
                        failure = Some(format!("Resource CREATE failed: {e}"));
                        break;
                    }
                }
            }
        }
        match running.join_next().await {
            None => break,
            Some(Ok((name, Ok(entry)))) => {
                done.insert(name, entry);
            }
            Some(Ok((_, Err(e)))) => {
                failure.get_or_insert(format!("Resource CREATE failed: {e}"));
            }
            Some(Err(e)) => {
                failure.get_or_insert(format!("Resource CREATE failed: the engine task failed: {e}"));
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None if !pending.is_empty() => Err("Resource CREATE failed: unresolved dependencies".into()),
        None => Ok(()),
    }
}

/// Marks resources left `IN_PROGRESS` by an interrupted action as failed with `why`.
pub(crate) async fn fail_in_progress(st: &S, stack: &StackRow, why: &str) {
    if let Ok(rows) = store::resources(&st.db, &stack.id).await {
        for r in rows.iter().filter(|r| r.status == IN_PROGRESS) {
            set_res(st, stack, r, &r.action.clone(), FAILED, why, ResourceUpdate::default()).await;
        }
    }
}

pub(crate) async fn delete_one(st: S, stack: StackRow, r: ResourceRow, retain: bool) -> (String, Result<(), String>) {
    set_res(&st, &stack, &r, DELETE, IN_PROGRESS, "state changed", ResourceUpdate::default()).await;
    let result = match (&r.physical_id, retain) {
        (None, _) => Ok(()),
        (Some(_), true) => Ok(()),
        (Some(pid), false) => match st.registry.get(&r.type_name).cloned() {
            None => Err(format!("The Resource Type ({}) could not be found.", r.type_name)),
            Some(ty) => ty.delete(&cx(&st, &stack, &r.name), pid, &r.attributes).await,
        },
    };
    match &result {
        Ok(()) => {
            let why =
                if retain && r.physical_id.is_some() { "retained (deletion_policy: Retain)" } else { "state changed" };
            set_res(&st, &stack, &r, DELETE, COMPLETE, why, ResourceUpdate::default()).await;
        }
        Err(e) => set_res(&st, &stack, &r, DELETE, FAILED, e, ResourceUpdate::default()).await,
    }
    (r.name, result)
}

/// Deletes every resource not yet deleted, each once nothing that depends on it is
/// left, as many at once as are ready.
async fn delete_all(st: &S, stack: &StackRow) -> Result<(), String> {
    let rows = store::resources(&st.db, &stack.id).await.map_err(|e| e.to_string())?;
    let prepared = prepare(st, stack).ok();
    let deps = prepared.as_ref().map(|(_, c)| c.deps.clone()).unwrap_or_default();
    let retain: BTreeSet<String> = prepared
        .as_ref()
        .map(|(t, _)| {
            t.resources
                .iter()
                .filter(|(_, d)| d.deletion_policy == crate::template::DeletionPolicy::Retain)
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    let dependents = graph::dependents(&deps);
    let rows: BTreeMap<String, ResourceRow> = rows.into_iter().map(|r| (r.name.clone(), r)).collect();
    let mut gone: BTreeSet<String> =
        rows.values().filter(|r| r.action == DELETE && r.status == COMPLETE).map(|r| r.name.clone()).collect();
    let mut pending: BTreeSet<String> = rows.keys().filter(|n| !gone.contains(*n)).cloned().collect();
    let mut running = JoinSet::new();
    let mut failure: Option<String> = None;
    loop {
        if failure.is_none() {
            let ready: Vec<String> = pending
                .iter()
                .filter(|r| {
                    dependents.get(*r).is_none_or(|d| d.iter().all(|x| gone.contains(x) || !rows.contains_key(x)))
                })
                .cloned()
                .collect();
            for name in ready {
                pending.remove(&name);
                let keep = retain.contains(&name);
                running.spawn(delete_one(st.clone(), stack.clone(), rows[&name].clone(), keep));
            }
        }
        match running.join_next().await {
            None => break,
            Some(Ok((name, Ok(())))) => {
                gone.insert(name);
            }
            Some(Ok((_, Err(e)))) => {
                failure.get_or_insert(format!("Resource DELETE failed: {e}"));
            }
            Some(Err(e)) => {
                failure.get_or_insert(format!("Resource DELETE failed: the engine task failed: {e}"));
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None if !pending.is_empty() => Err("Resource DELETE failed: dependencies could not be resolved".into()),
        None => Ok(()),
    }
}

/// Deletes the backups an interrupted update left (old selves of replaced resources:
/// nothing in the stack depends on them any more), then every resource.
async fn delete_everything(st: &S, stack: &StackRow) -> Result<(), String> {
    crate::update::delete_backups(st, stack).await?;
    delete_all(st, stack).await
}

/// Runs a stack's creation to its end (the stack row is already `CREATE IN_PROGRESS`).
pub async fn run_create(st: S, stack_id: String) {
    let Ok(Some(stack)) = store::stack(&st.db, &stack_id).await else { return };
    let result = match prepare(&st, &stack) {
        Err(e) => Err(e),
        Ok((tpl, checked)) => {
            let work = create_all(&st, &stack, &tpl, &checked);
            match stack.timeout_mins.filter(|m| *m > 0) {
                Some(m) => match tokio::time::timeout(Duration::from_secs(m as u64 * 60), work).await {
                    Ok(r) => r,
                    Err(_) => {
                        fail_in_progress(&st, &stack, "CREATE aborted (Task create from stack timed out)").await;
                        Err("Create timed out".to_string())
                    }
                },
                None => work.await,
            }
        }
    };
    match result {
        Ok(()) => set_stack(&st, &stack, CREATE, COMPLETE, "Stack CREATE completed successfully", false).await,
        Err(why) => {
            set_stack(&st, &stack, CREATE, FAILED, &why, false).await;
            if !stack.disable_rollback {
                rollback(&st, &stack).await;
            }
        }
    }
}

async fn rollback(st: &S, stack: &StackRow) {
    set_stack(st, stack, ROLLBACK, IN_PROGRESS, "Stack ROLLBACK started", false).await;
    match delete_everything(st, stack).await {
        Ok(()) => set_stack(st, stack, ROLLBACK, COMPLETE, "Stack ROLLBACK completed successfully", false).await,
        Err(e) => set_stack(st, stack, ROLLBACK, FAILED, &e, false).await,
    }
}

/// Runs a stack's deletion to its end (the stack row is already `DELETE IN_PROGRESS`).
pub async fn run_delete(st: S, stack_id: String) {
    let Ok(Some(stack)) = store::stack(&st.db, &stack_id).await else { return };
    match delete_everything(&st, &stack).await {
        Ok(()) => set_stack(&st, &stack, DELETE, COMPLETE, "Stack DELETE completed successfully", true).await,
        Err(e) => set_stack(&st, &stack, DELETE, FAILED, &e, false).await,
    }
}

/// Starts `work` for `stack_id` in the background, remembered so that a deletion can
/// stop a creation that is still running.
pub fn spawn(st: &S, stack_id: &str, work: impl std::future::Future<Output = ()> + Send + 'static) {
    let handle = tokio::spawn(work);
    let mut running = st.running.lock();
    running.retain(|_, h| !h.is_finished());
    running.insert(stack_id.to_string(), handle);
}

/// Stops the action running on `stack_id` (a creation being cancelled by a deletion)
/// and waits until it has stopped.
pub async fn cancel(st: &S, stack_id: &str) {
    let handle = st.running.lock().remove(stack_id);
    if let Some(h) = handle {
        h.abort();
        let _ = h.await;
    }
}

/// Starts the deletion of a stack, stopping a creation still running on it first.
pub async fn start_delete(st: &S, stack: &StackRow) -> crate::error::HeatResult<()> {
    if stack.status == IN_PROGRESS && (stack.action == CREATE || stack.action == UPDATE) {
        cancel(st, &stack.id).await;
        fail_in_progress(st, stack, &format!("{} aborted (the stack is being deleted)", stack.action)).await;
    }
    store::set_stack_state(&st.db, stack, DELETE, IN_PROGRESS, "Stack DELETE started", false).await?;
    spawn(st, &stack.id, run_delete(st.clone(), stack.id.clone()));
    Ok(())
}

/// Waits (up to a minute) until in-process calls reach the other services: at start-up
/// this service is started before the cloud's router is installed.
async fn cloud_ready(st: &S) {
    if !st.wait_for_cloud {
        return;
    }
    let admin = stratus_core::RequestContext::internal_admin();
    for _ in 0..600 {
        if st.platform.internal.call(&admin, axum::http::Method::GET, "/orchestration/", None, &[]).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the cloud's APIs did not answer within a minute; resuming stack actions anyway");
}

/// After a restart: fails (and rolls back) creations and updates that were running,
/// resumes deletions and rollbacks.
pub async fn recover(st: &S) -> crate::error::HeatResult<()> {
    for stack in store::stacks_in_progress(&st.db).await? {
        tracing::info!(stack = %stack.id, action = %stack.action, "resuming an interrupted stack action");
        match stack.action.as_str() {
            CREATE => {
                let st2 = st.clone();
                spawn(st, &stack.id.clone(), async move {
                    cloud_ready(&st2).await;
                    let why = "Engine restarted while the stack was being created";
                    fail_in_progress(&st2, &stack, why).await;
                    set_stack(&st2, &stack, CREATE, FAILED, &format!("Resource CREATE failed: {why}"), false).await;
                    if !stack.disable_rollback {
                        rollback(&st2, &stack).await;
                    }
                });
            }
            UPDATE => {
                let st2 = st.clone();
                spawn(st, &stack.id.clone(), async move {
                    cloud_ready(&st2).await;
                    crate::update::recover_update(&st2, &stack).await
                });
            }
            ROLLBACK if stack.previous.is_some() => {
                let st2 = st.clone();
                spawn(st, &stack.id.clone(), async move {
                    cloud_ready(&st2).await;
                    crate::update::resume_update_rollback(&st2, &stack).await
                });
            }
            ROLLBACK => {
                let st2 = st.clone();
                spawn(st, &stack.id.clone(), async move {
                    cloud_ready(&st2).await;
                    rollback(&st2, &stack).await
                });
            }
            _ => {
                let st2 = st.clone();
                spawn(st, &stack.id.clone(), async move {
                    cloud_ready(&st2).await;
                    run_delete(st2.clone(), stack.id.clone()).await
                });
            }
        }
    }
    Ok(())
}

/// A stack's outputs: `(key, description, value or error)`, for the resources as they
/// are now.
pub async fn outputs(st: &S, stack: &StackRow) -> Vec<(String, String, Result<Value, String>)> {
    let Ok((tpl, checked)) = prepare(st, stack) else { return vec![] };
    let rows = store::resources(&st.db, &stack.id).await.unwrap_or_default();
    let done: BTreeMap<String, (Value, Value)> = rows
        .iter()
        .filter(|r| {
            matches!((r.action.as_str(), r.status.as_str()), (CREATE | UPDATE | CHECK, COMPLETE) | (CHECK, FAILED))
        })
        .map(|r| (r.name.clone(), done_entry(r)))
        .collect();
    let empty = Map::new();
    let files = stack.files.as_object().unwrap_or(&empty);
    let snap = Snapshot { checked: &checked, files, done: &done };
    let mut out = Vec::new();
    for (k, o) in &tpl.outputs {
        if let Some(c) = &o.condition {
            let on = functions::resolve(&serde_json::json!({"if": [c, true, false]}), &snap);
            if on != Ok(Value::Bool(true)) {
                continue;
            }
        }
        out.push((k.clone(), o.description.clone(), functions::resolve(&o.value, &snap)));
    }
    out
}
