//! Nested stacks: a stack row with its parent's id (hidden from listings, not recovered
//! on its own) made, updated and deleted from inside a parent's resource by the same
//! engine, so it is as durable as any stack: the resource records the nested stack's id
//! before the stack exists, and an action a restart interrupted is failed first
//! ([`settle`]) so that the parent's next action (a rollback, a delete) can proceed.
//! `OS::Heat::ResourceGroup` ([`super::group`]) and `OS::Heat::Stack` (here: a template
//! given inline, its parameters, its outputs as the `outputs` attribute) use it.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{opt, req, Change, Created, Cx, Kind, Prop, Registry, ResourceType};
use crate::engine::{self, state::*};
use crate::store::{self, Definition, StackRow, UpdateOptions};
use crate::template::{Pseudo, Template};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(NestedStack));
}

/// A nested stack that an interrupted action left `IN_PROGRESS`: what was running there
/// failed.
async fn settle(cx: &Cx, nested: &StackRow) -> Result<StackRow, String> {
    if nested.status == IN_PROGRESS {
        let why = format!("{} interrupted (its parent stack's action stopped)", nested.action);
        engine::fail_in_progress(&cx.orch, nested, &why).await;
        store::set_stack_state(&cx.db, nested, &nested.action, FAILED, &why, false).await.map_err(|e| e.to_string())?;
    }
    store::stack(&cx.db, &nested.id).await.map_err(|e| e.to_string())?.ok_or_else(|| "the nested stack is gone".into())
}

/// The nested stack once its action ended in `want`, or why not.
async fn finished(cx: &Cx, id: &str, want: &str) -> Result<StackRow, String> {
    let nested = store::stack(&cx.db, id).await.map_err(|e| e.to_string())?.ok_or("the nested stack is gone")?;
    if format!("{}_{}", nested.action, nested.status) != want {
        return Err(format!("resources.{}: {}", cx.resource_name, nested.status_reason));
    }
    Ok(nested)
}

/// Validates `def` (errors name `what`, the property it came from), records the new
/// stack's id on the resource, creates the stack and runs its creation to the end.
pub(super) async fn create(cx: &Cx, def: Definition, what: &str) -> Result<StackRow, String> {
    let parent = store::stack(&cx.db, &cx.stack_id).await.map_err(|e| e.to_string())?.ok_or("no parent stack")?;
    let id = uuid::Uuid::new_v4().to_string();
    let name = cx.physical_name();
    let pseudo = Pseudo { stack_name: name.clone(), stack_id: id.clone(), project_id: parent.project_id.clone() };
    let bad = |e: &dyn std::fmt::Display| format!("resources.{}.properties.{what}: {e}", cx.resource_name);
    let tpl = Template::parse(&def.template).map_err(|e| bad(&e))?;
    let empty = Map::new();
    let params = def.parameters.as_object().unwrap_or(&empty);
    let files = def.files.as_object().unwrap_or(&empty);
    let checked = tpl.check(params, files, &cx.orch.registry, &pseudo).map_err(|e| bad(&e))?;
    // Recorded before it exists: a crash from here on leaves it found by the resource.
    cx.started(&id).await?;
    let row = StackRow {
        id: id.clone(),
        name,
        action: CREATE.into(),
        status: IN_PROGRESS.into(),
        status_reason: "Stack CREATE started".into(),
        description: tpl.description.clone(),
        template: def.template,
        files: def.files,
        environment: def.environment,
        parameters: def.parameters,
        disable_rollback: true,
        timeout_mins: None,
        tags: None,
        created_at: stratus_core::time::now(),
        updated_at: None,
        deleted_at: None,
        previous: None,
        parent_id: Some(parent.id.clone()),
        ..parent
    };
    let resources: Vec<(String, String)> =
        checked.enabled.iter().map(|r| (r.clone(), tpl.resources[r].type_name.clone())).collect();
    store::insert_stack(&cx.db, &row, &resources).await.map_err(|e| e.to_string())?;
    engine::run_create(cx.orch.clone(), id.clone()).await;
    finished(cx, &id, "CREATE_COMPLETE").await
}

/// Updates nested stack `id` to `def` and runs the update to the end.
pub(super) async fn update(cx: &Cx, id: &str, def: Definition) -> Result<StackRow, String> {
    let nested = store::stack(&cx.db, id).await.map_err(|e| e.to_string())?.ok_or("the nested stack is gone")?;
    let nested = settle(cx, &nested).await?;
    let opts = UpdateOptions { disable_rollback: true, timeout_mins: None, tags: None };
    store::begin_update(&cx.db, &nested, &def, &opts)
        .await
        .map_err(|e| format!("resources.{}: {e}", cx.resource_name))?;
    crate::update::run_update(cx.orch.clone(), id.to_string()).await;
    finished(cx, id, "UPDATE_COMPLETE").await
}

/// Deletes nested stack `id` (gone already is success).
pub(super) async fn delete(cx: &Cx, id: &str) -> Result<(), String> {
    let Some(nested) = store::stack(&cx.db, id).await.map_err(|e| e.to_string())? else { return Ok(()) };
    if nested.deleted_at.is_some() {
        return Ok(());
    }
    let nested = settle(cx, &nested).await?;
    store::set_stack_state(&cx.db, &nested, DELETE, IN_PROGRESS, "Stack DELETE started", false)
        .await
        .map_err(|e| e.to_string())?;
    engine::run_delete(cx.orch.clone(), id.to_string()).await;
    finished(cx, id, "DELETE_COMPLETE").await.map(|_| ())
}

struct NestedStack;

/// The nested stack's definition from `OS::Heat::Stack` properties.
fn definition(cx: &Cx, props: &Map<String, Value>) -> Result<Definition, String> {
    let template = crate::template::load(props.get("template").unwrap_or(&Value::Null))
        .map_err(|e| format!("Property error: resources.{}.properties.template: {e}", cx.resource_name))?;
    let parameters = props.get("parameters").cloned().unwrap_or(json!({}));
    Ok(Definition { template, files: json!({}), environment: json!({}), parameters })
}

async fn created(cx: &Cx, nested: &StackRow) -> Created {
    let outputs: Map<String, Value> =
        engine::outputs(&cx.orch, nested).await.into_iter().map(|(k, _, v)| (k, v.unwrap_or(Value::Null))).collect();
    Created {
        physical_id: nested.id.clone(),
        ref_id: None,
        attributes: json!({"outputs": outputs, "stack_name": nested.name}),
    }
}

#[async_trait]
impl ResourceType for NestedStack {
    fn name(&self) -> &'static str {
        "OS::Heat::Stack"
    }
    fn description(&self) -> &'static str {
        "A nested stack from a template given inline, with its parameters."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("template", Kind::Any, "The nested template (a map, or its YAML/JSON text)."),
            opt("parameters", Kind::Map, "The nested stack's parameter values."),
            opt("timeout", Kind::Int, "Accepted (the parent's timeout applies)."),
            opt("context", Kind::Map, "Accepted (the nested stack runs as the parent's owner)."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["outputs", "stack_name"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let nested = create(cx, definition(cx, props)?, "template").await?;
        Ok(created(cx, &nested).await)
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        delete(cx, id).await
    }
    fn updatable(&self) -> &'static [&'static str] {
        &["template", "parameters", "timeout", "context"]
    }
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        let nested = update(cx, change.physical_id, definition(cx, change.new)?).await?;
        Ok(created(cx, &nested).await)
    }
}
