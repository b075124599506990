//! Stack updates (`PUT`/`PATCH /stacks/{name}/{id}`), their preview and their rollback.
//!
//! An update gives the stack a new definition (template, parameters, files,
//! environment) and then converges the resources to it, as Heat's legacy engine does:
//! in the new template's dependency order (in parallel where independent), each
//! resource's properties are evaluated with what is there now and compared with the
//! properties it was made with ([`plan`]):
//! - the same: kept, untouched;
//! - only properties its type can change in place differ: updated in place
//!   (`UPDATE IN_PROGRESS` → `UPDATE COMPLETE`);
//! - anything else (another type, a property that cannot change, a resource that
//!   failed): replaced: the old one becomes a *backup* row and a new one is created
//!   under its name (so what depends on it sees the new reference and is updated in
//!   turn); new resources are created.
//!
//! Then ([`cleanup`]) the backups and the resources the new template no longer has are
//! deleted, dependents first. A failure stops the update (`UPDATE FAILED`); unless
//! `disable_rollback`, the stack then takes its previous definition back and converges
//! to it the same way (`ROLLBACK IN_PROGRESS` → `ROLLBACK COMPLETE`), restoring a
//! backup where the old resource is still there rather than making it again.
//!
//! Crash safety follows from the same records as creation: each state is written before
//! and after each call, a replacement moves the old resource to the backups in the same
//! transaction that makes room for the new one, and converging is idempotent (what
//! already matches is kept). After a restart an update that was running is failed and
//! rolled back (or left `UPDATE_FAILED` with `disable_rollback`: updating again or
//! deleting converges from there); a rollback that was running is resumed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::task::JoinSet;

use crate::engine::state::*;
use crate::engine::{self, Snapshot};
use crate::resources::{changed_properties, Change, ResourceType};
use crate::store::{self, ResourceRow, ResourceUpdate, StackRow};
use crate::template::{graph, Checked, DeletionPolicy, Template};
use crate::S;

/// What converging does to one resource.
#[derive(Debug, Clone)]
pub enum Plan {
    /// It matches: nothing to do.
    Keep,
    /// Its backup (the resource as it was before a failed update) matches: put it back.
    Restore(Box<ResourceRow>),
    /// Change these properties in place.
    Update(Vec<String>),
    /// Make a new one and delete the old one afterwards; why.
    Replace(String),
    /// Make it (it does not exist yet).
    Create,
}

impl Plan {
    /// The name Heat's update preview files it under.
    pub fn bucket(&self) -> &'static str {
        match self {
            Plan::Keep | Plan::Restore(_) => "unchanged",
            Plan::Update(_) => "updated",
            Plan::Replace(_) => "replaced",
            Plan::Create => "added",
        }
    }
}

/// Made and usable as it is (a resource marked unhealthy, `CHECK FAILED`, is not).
fn settled(r: &ResourceRow) -> bool {
    r.status == COMPLETE && (r.action == CREATE || r.action == UPDATE || r.action == CHECK) && r.physical_id.is_some()
}

fn as_map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Decides what converging does to a resource of type `ty` (named `type_name` in the
/// target template) whose properties evaluate to `props`. `row` is its current row,
/// `backups` its backups, `same_definition` whether its definition in the template is
/// unchanged (used for rows recorded before properties were kept).
pub fn plan(
    ty: &dyn ResourceType,
    type_name: &str,
    row: Option<&ResourceRow>,
    backups: &[&ResourceRow],
    props: &Map<String, Value>,
    same_definition: bool,
) -> Plan {
    let wanted = Value::Object(props.clone());
    if let Some(r) = row.filter(|r| settled(r) && r.type_name == type_name) {
        if r.properties == wanted || (r.properties.is_null() && same_definition) {
            return Plan::Keep;
        }
    }
    if let Some(b) = backups.iter().find(|b| settled(b) && b.type_name == type_name && b.properties == wanted) {
        return Plan::Restore(Box::new((*b).clone()));
    }
    let Some(r) = row.filter(|r| r.physical_id.is_some()) else { return Plan::Create };
    if r.type_name != type_name {
        return Plan::Replace(format!("the type changed from {} to {type_name}", r.type_name));
    }
    let updatable = settled(r) || (r.action == UPDATE && r.status == FAILED);
    if !updatable || r.properties.is_null() {
        return Plan::Replace(format!("it is {}_{}", r.action, r.status));
    }
    let changed = changed_properties(&as_map(&r.properties), props);
    let fixed: Vec<&String> = changed.iter().filter(|k| !ty.update_allowed(k)).collect();
    if fixed.is_empty() {
        Plan::Update(changed)
    } else {
        let names: Vec<&str> = fixed.iter().map(|k| k.as_str()).collect();
        Plan::Replace(format!("{} cannot be changed in place", names.join(", ")))
    }
}

fn same_definition(stack: &StackRow, name: &str) -> bool {
    stack.previous.as_ref().is_some_and(|p| p.template["resources"][name] == stack.template["resources"][name])
}

async fn update_one(
    st: S,
    stack: StackRow,
    r: ResourceRow,
    props: Map<String, Value>,
    changed: Vec<String>,
) -> (String, Result<(Value, Value), String>) {
    let why = format!("updating {}", changed.join(", "));
    engine::set_res(&st, &stack, &r, UPDATE, IN_PROGRESS, &why, ResourceUpdate::default()).await;
    let fault = st.faults.lock().iter().find(|f| f.0 == r.name).cloned();
    let result = match (fault, st.registry.get(&r.type_name).cloned()) {
        (Some(f), _) => Err(f.1),
        (None, None) => Err(format!("The Resource Type ({}) could not be found.", r.type_name)),
        (None, Some(ty)) => {
            let old = as_map(&r.properties);
            let change = Change {
                physical_id: r.physical_id.as_deref().unwrap_or_default(),
                attributes: &r.attributes,
                old: &old,
                new: &props,
                changed,
            };
            ty.update(&engine::cx(&st, &stack, &r.name), &change).await
        }
    };
    match result {
        Ok(c) => {
            let upd = ResourceUpdate {
                attributes: Some(c.attributes.clone()),
                physical_id: Some(c.physical_id.clone()),
                ref_id: c.ref_id.clone(),
                properties: Some(Value::Object(props)),
            };
            engine::set_res(&st, &stack, &r, UPDATE, COMPLETE, "state changed", upd).await;
            (r.name, Ok((Value::String(c.ref_id.unwrap_or(c.physical_id)), c.attributes)))
        }
        Err(e) => {
            engine::set_res(&st, &stack, &r, UPDATE, FAILED, &e, ResourceUpdate::default()).await;
            (r.name, Err(e))
        }
    }
}

async fn replace_one(
    st: S,
    stack: StackRow,
    name: String,
    type_name: String,
    props: Map<String, Value>,
    why: String,
) -> (String, Result<(Value, Value), String>) {
    if let Err(e) = store::replace_with_new(&st.db, &stack.id, &name, &type_name).await {
        return (name, Err(format!("recording the replacement failed: {e}")));
    }
    let row = match store::resources(&st.db, &stack.id).await.map(|rs| rs.into_iter().find(|r| r.name == name)) {
        Ok(Some(r)) => r,
        _ => return (name, Err("the replacement's row could not be read".into())),
    };
    engine::create_one(st, stack, row, props, format!("replacing the previous resource: {why}")).await
}

/// A stack's resource rows by name, and its backups.
async fn rows_and_backups(st: &S, stack_id: &str) -> Result<(BTreeMap<String, ResourceRow>, Vec<ResourceRow>), String> {
    let rows = store::resources(&st.db, stack_id).await.map_err(|e| e.to_string())?;
    let backups = store::backups(&st.db, stack_id).await.map_err(|e| e.to_string())?;
    Ok((rows.into_iter().map(|r| (r.name.clone(), r)).collect(), backups))
}

/// Converges the stack's resources to its current definition (`tpl`, `checked`):
/// keeps, updates, replaces or creates each, in dependency order; on the first failure
/// nothing new starts and what runs finishes.
async fn converge(st: &S, stack: &StackRow, tpl: &Template, checked: &Checked) -> Result<(), String> {
    let action = if stack.action == ROLLBACK { ROLLBACK } else { UPDATE };
    for name in &checked.enabled {
        store::add_resource(&st.db, &stack.id, name, &tpl.resources[name].type_name)
            .await
            .map_err(|e| e.to_string())?;
    }
    let (rows, backups) = rows_and_backups(st, &stack.id).await?;
    let empty = Map::new();
    let files = stack.files.as_object().unwrap_or(&empty);
    let mut done: BTreeMap<String, (Value, Value)> = BTreeMap::new();
    let mut pending: BTreeSet<String> = checked.enabled.clone();
    let mut running = JoinSet::new();
    let mut failure: Option<String> = None;
    let fail = |e: &str| format!("Resource {action} failed: {e}");
    loop {
        while failure.is_none() {
            let ready: Vec<String> =
                pending.iter().filter(|r| checked.deps[*r].iter().all(|d| done.contains_key(d))).cloned().collect();
            if ready.is_empty() {
                break;
            }
            for name in ready {
                pending.remove(&name);
                let snap = Snapshot { checked, files, done: &done };
                let props = match engine::properties(st, tpl, &name, &snap) {
                    Ok(p) => p,
                    Err(e) => {
                        let r = &rows[&name];
                        engine::set_res(st, stack, r, UPDATE, FAILED, &e, ResourceUpdate::default()).await;
                        failure = Some(fail(&e));
                        break;
                    }
                };
                let type_name = tpl.resources[&name].type_name.clone();
                let ty = st.registry.get(&type_name).cloned().expect("checked by validation");
                let row = rows.get(&name);
                let mine: Vec<&ResourceRow> = backups.iter().filter(|b| b.name == name).collect();
                match plan(ty.as_ref(), &type_name, row, &mine, &props, same_definition(stack, &name)) {
                    Plan::Keep => {
                        done.insert(name, engine::done_entry(row.expect("kept rows exist")));
                    }
                    Plan::Restore(b) => {
                        if let Err(e) = store::restore_backup(&st.db, &stack.id, &b).await {
                            failure = Some(fail(&format!("restoring {name} failed: {e}")));
                            break;
                        }
                        let restored = ResourceRow { backup: false, ..(*b).clone() };
                        let why = "restored the resource as it was before the update";
                        engine::set_res(st, stack, &restored, UPDATE, COMPLETE, why, ResourceUpdate::default()).await;
                        done.insert(name, engine::done_entry(&b));
                    }
                    Plan::Update(changed) => {
                        let r = row.expect("updated rows exist").clone();
                        running.spawn(update_one(st.clone(), stack.clone(), r, props, changed));
                    }
                    Plan::Replace(why) => {
                        running.spawn(replace_one(st.clone(), stack.clone(), name, type_name, props, why));
                    }
                    Plan::Create => {
                        let r = row.expect("rows were added for every resource").clone();
                        running.spawn(engine::create_one(st.clone(), stack.clone(), r, props, "state changed".into()));
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
                failure.get_or_insert(fail(&e));
            }
            Some(Err(e)) => {
                failure.get_or_insert(fail(&format!("the engine task failed: {e}")));
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None if !pending.is_empty() => Err(fail("unresolved dependencies")),
        None => Ok(()),
    }
}

/// Dependencies between resource names in the stack's current and previous templates
/// (what is deleted after an update was made under either).
fn known_deps(st: &S, stack: &StackRow) -> graph::Deps {
    let mut deps = engine::prepare(st, stack).map(|(_, c)| c.deps).unwrap_or_default();
    if let Some(prev) = &stack.previous {
        let old = StackRow {
            template: prev.template.clone(),
            files: prev.files.clone(),
            parameters: prev.parameters.clone(),
            environment: prev.environment.clone(),
            ..stack.clone()
        };
        if let Ok((_, c)) = engine::prepare(st, &old) {
            for (k, v) in c.deps {
                deps.entry(k).or_default().extend(v);
            }
        }
    }
    deps
}

fn retained(stack: &StackRow, name: &str) -> bool {
    let policy = |t: &Value| {
        Template::parse(t).ok().and_then(|t| t.resources.get(name).map(|d| d.deletion_policy == DeletionPolicy::Retain))
    };
    policy(&stack.template).or_else(|| stack.previous.as_ref().and_then(|p| policy(&p.template))).unwrap_or(false)
}

/// Deletes `items` (rows of one stack), each once no other item that depends on it
/// (per `deps`) is left, and forgets each once deleted.
async fn delete_rows(st: &S, stack: &StackRow, items: Vec<ResourceRow>, deps: &graph::Deps) -> Result<(), String> {
    let mut pending: Vec<ResourceRow> = items;
    let mut running = JoinSet::new();
    let mut failure: Option<String> = None;
    loop {
        if failure.is_none() {
            let names: BTreeSet<String> = pending.iter().map(|r| r.name.clone()).collect();
            let blocked = |r: &ResourceRow| {
                names.iter().any(|other| other != &r.name && deps.get(other).is_some_and(|d| d.contains(&r.name)))
            };
            let mut ready: Vec<ResourceRow> = pending.iter().filter(|r| !blocked(r)).cloned().collect();
            if ready.is_empty() && running.is_empty() {
                // Templates that depend on each other the other way round: no order
                // satisfies both, so go ahead.
                ready = pending.clone();
            }
            pending.retain(|r| !ready.iter().any(|x| x.id == r.id && x.backup == r.backup));
            for r in ready {
                let keep = retained(stack, &r.name);
                let (st2, stack2) = (st.clone(), stack.clone());
                running.spawn(async move {
                    let (_, result) = engine::delete_one(st2.clone(), stack2.clone(), r.clone(), keep).await;
                    if result.is_ok() {
                        store::forget_resource(&st2.db, &stack2.id, &r).await.map_err(|e| e.to_string())?;
                    }
                    result
                });
            }
        }
        match running.join_next().await {
            None => break,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                failure.get_or_insert(format!("Resource DELETE failed: {e}"));
            }
            Some(Err(e)) => {
                failure.get_or_insert(format!("Resource DELETE failed: the engine task failed: {e}"));
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Deletes what the stack's current definition no longer has: backups of replaced
/// resources and resources the template dropped (or switched off by a condition).
async fn cleanup(st: &S, stack: &StackRow, checked: &Checked) -> Result<(), String> {
    let mut items = store::backups(&st.db, &stack.id).await.map_err(|e| e.to_string())?;
    let rows = store::resources(&st.db, &stack.id).await.map_err(|e| e.to_string())?;
    items.extend(rows.into_iter().filter(|r| !checked.enabled.contains(&r.name)));
    delete_rows(st, stack, items, &known_deps(st, stack)).await
}

/// Deletes a stack's backups (before the stack itself is deleted).
pub async fn delete_backups(st: &S, stack: &StackRow) -> Result<(), String> {
    let items = store::backups(&st.db, &stack.id).await.map_err(|e| e.to_string())?;
    if items.is_empty() {
        return Ok(());
    }
    delete_rows(st, stack, items, &known_deps(st, stack)).await
}

/// Converges to the stack's current definition and cleans up, within its timeout.
async fn converge_and_clean(st: &S, stack: &StackRow) -> Result<(), String> {
    let (tpl, checked) = engine::prepare(st, stack)?;
    let work = async {
        converge(st, stack, &tpl, &checked).await?;
        cleanup(st, stack, &checked).await
    };
    match stack.timeout_mins.filter(|m| *m > 0) {
        Some(m) => match tokio::time::timeout(Duration::from_secs(m as u64 * 60), work).await {
            Ok(r) => r,
            Err(_) => {
                let why = format!("{} aborted (Task {} from stack timed out)", stack.action, stack.action);
                engine::fail_in_progress(st, stack, &why).await;
                Err(format!("{} timed out", stack.action))
            }
        },
        None => work.await,
    }
}

/// Runs a stack's update to its end (the stack row is already `UPDATE IN_PROGRESS`
/// with its new definition).
pub async fn run_update(st: S, stack_id: String) {
    let Ok(Some(stack)) = store::stack(&st.db, &stack_id).await else { return };
    match converge_and_clean(&st, &stack).await {
        Ok(()) => engine::set_stack(&st, &stack, UPDATE, COMPLETE, "Stack UPDATE completed successfully", false).await,
        Err(why) => failed(&st, &stack, &why).await,
    }
}

async fn failed(st: &S, stack: &StackRow, why: &str) {
    engine::set_stack(st, stack, UPDATE, FAILED, why, false).await;
    if !stack.disable_rollback {
        rollback(st, stack).await;
    }
}

/// Rolls a failed update back: the previous definition is restored and converged to.
async fn rollback(st: &S, stack: &StackRow) {
    let Some(prev) = stack.previous.clone() else { return };
    if let Err(e) = store::begin_update_rollback(&st.db, stack, &prev).await {
        tracing::error!(stack = %stack.id, error = %e, "starting an update's rollback failed");
        return;
    }
    let Ok(Some(stack)) = store::stack(&st.db, &stack.id).await else { return };
    resume_update_rollback(st, &stack).await;
}

/// Converges a stack in `ROLLBACK IN_PROGRESS` of an update (its definition is the
/// previous one already) and records the outcome.
pub async fn resume_update_rollback(st: &S, stack: &StackRow) {
    match converge_and_clean(st, stack).await {
        Ok(()) => {
            engine::set_stack(st, stack, ROLLBACK, COMPLETE, "Stack ROLLBACK completed successfully", false).await
        }
        Err(e) => engine::set_stack(st, stack, ROLLBACK, FAILED, &e, false).await,
    }
}

/// After a restart, for a stack that was being updated: what was running failed; the
/// update fails and rolls back unless `disable_rollback`.
pub async fn recover_update(st: &S, stack: &StackRow) {
    let why = "Engine restarted while the stack was being updated";
    engine::fail_in_progress(st, stack, why).await;
    failed(st, stack, &format!("Resource UPDATE failed: {why}")).await;
}

/// What an update of `stack` to `new` (a stack row carrying the new definition, not
/// stored) would do to each resource: `(resource row or None, plan)` for the new
/// template's resources, and the rows it would delete.
pub async fn preview(
    st: &S,
    stack: &StackRow,
    new: &StackRow,
) -> Result<(Vec<(String, String, Option<ResourceRow>, Plan)>, Vec<ResourceRow>), String> {
    let (tpl, checked) = engine::prepare(st, new)?;
    let (rows, backups) = rows_and_backups(st, &stack.id).await?;
    let done: BTreeMap<String, (Value, Value)> =
        rows.values().filter(|r| settled(r)).map(|r| (r.name.clone(), engine::done_entry(r))).collect();
    let empty = Map::new();
    let files = new.files.as_object().unwrap_or(&empty);
    let snap = Snapshot { checked: &checked, files, done: &done };
    let probe = StackRow { previous: Some(stack.definition()), ..new.clone() };
    let mut out = Vec::new();
    for name in &checked.order {
        let type_name = tpl.resources[name].type_name.clone();
        let ty = st.registry.get(&type_name).cloned().expect("checked by validation");
        let props = engine::properties(st, &tpl, name, &snap)?;
        let mine: Vec<&ResourceRow> = backups.iter().filter(|b| &b.name == name).collect();
        let row = rows.get(name);
        let p = plan(ty.as_ref(), &type_name, row, &mine, &props, same_definition(&probe, name));
        out.push((name.clone(), type_name, row.cloned(), p));
    }
    let deleted = rows.into_values().filter(|r| !checked.enabled.contains(&r.name)).collect();
    Ok((out, deleted))
}
