//! A stack's children under `/stacks/{name}/{id}/`: resources, events (of the stack
//! and of one resource), outputs, and the template, environment and files it was
//! created with.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stratus_auth::RequestContext;
use stratus_core::query::encode;
use stratus_core::QueryPairs;

use super::{authorize, stack_url};
use crate::engine;
use crate::error::{bad, not_found, HeatResult};
use crate::store::{self, EventFilter, EventRow, ResourceRow, StackRow};
use crate::template::graph;
use crate::S;

fn ts(t: &str) -> Value {
    Value::String(stratus_core::time::seconds_z(t))
}

/// Serves `rest` (what follows `/stacks/{name}/{id}/`) for stack `s`.
pub async fn serve(
    st: &S,
    ctx: &RequestContext,
    project: &str,
    s: &StackRow,
    rest: &[&str],
    q: &QueryPairs,
) -> HeatResult<Response> {
    match rest {
        ["resources"] => {
            authorize(st, ctx, project, "resource:index")?;
            let rows = store::resources(&st.db, &s.id).await?;
            let required_by = required_by(st, s);
            let list: Vec<Value> = rows.iter().map(|r| resource(st, s, r, &required_by, false)).collect();
            Ok(Json(json!({"resources": list})).into_response())
        }
        ["resources", name] => {
            authorize(st, ctx, project, "resource:show")?;
            let r = find_resource(st, s, name).await?;
            Ok(Json(json!({"resource": resource(st, s, &r, &required_by(st, s), true)})).into_response())
        }
        ["resources", name, "events"] => {
            authorize(st, ctx, project, "events:index")?;
            find_resource(st, s, name).await?;
            events(st, s, Some(name), q).await
        }
        ["resources", name, "events", id] => {
            authorize(st, ctx, project, "events:show")?;
            let f = EventFilter { resource_name: Some(name.to_string()), ..Default::default() };
            let e = store::events(&st.db, &s.id, &f)
                .await?
                .into_iter()
                .find(|e| e.id == *id)
                .ok_or_else(|| not_found("Event", id))?;
            let mut v = event(st, s, &e);
            v["resource_type"] = json!(e.resource_type);
            v["resource_properties"] = json!({});
            Ok(Json(json!({"event": v})).into_response())
        }
        ["events"] => {
            authorize(st, ctx, project, "events:index")?;
            events(st, s, None, q).await
        }
        ["outputs"] => {
            authorize(st, ctx, project, "stacks:list_outputs")?;
            let list: Vec<Value> = engine::outputs(st, s)
                .await
                .into_iter()
                .map(|(k, d, _)| json!({"output_key": k, "description": d}))
                .collect();
            Ok(Json(json!({"outputs": list})).into_response())
        }
        ["outputs", key] => {
            authorize(st, ctx, project, "stacks:show_output")?;
            let o = output_values(st, s)
                .await
                .into_iter()
                .find(|o| o["output_key"] == *key)
                .ok_or_else(|| not_found("Output", key))?;
            Ok(Json(json!({"output": o})).into_response())
        }
        ["template"] => {
            authorize(st, ctx, project, "stacks:template")?;
            Ok(Json(s.template.clone()).into_response())
        }
        ["environment"] => {
            authorize(st, ctx, project, "stacks:environment")?;
            let mut env = s.environment.clone();
            for k in ["parameters", "parameter_defaults", "resource_registry"] {
                if env.get(k).is_none() {
                    env[k] = json!({});
                }
            }
            Ok(Json(env).into_response())
        }
        ["files"] => {
            authorize(st, ctx, project, "stacks:files")?;
            Ok(Json(s.files.clone()).into_response())
        }
        _ => Err(not_found("Resource", &rest.join("/"))),
    }
}

/// The outputs with their values as Heat shows them (`output_error` when a value
/// cannot be computed).
pub async fn output_values(st: &S, s: &StackRow) -> Vec<Value> {
    engine::outputs(st, s)
        .await
        .into_iter()
        .map(|(k, d, v)| match v {
            Ok(v) => json!({"output_key": k, "description": d, "output_value": v}),
            Err(e) => json!({"output_key": k, "description": d, "output_value": null, "output_error": e}),
        })
        .collect()
}

async fn find_resource(st: &S, s: &StackRow, name: &str) -> HeatResult<ResourceRow> {
    store::resources(&st.db, &s.id)
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| crate::error::HeatError::NotFound { kind: "Resource", name: name.to_string() })
}

fn required_by(st: &S, s: &StackRow) -> graph::Deps {
    engine::prepare(st, s).map(|(_, c)| graph::dependents(&c.deps)).unwrap_or_default()
}

fn resource_url(st: &S, s: &StackRow, name: &str) -> String {
    format!("{}/resources/{}", stack_url(st, &s.project_id, &s.name, &s.id), encode(name))
}

pub(crate) fn resource(st: &S, s: &StackRow, r: &ResourceRow, required_by: &graph::Deps, full: bool) -> Value {
    let mut v = json!({
        "resource_name": r.name,
        "logical_resource_id": r.name,
        "physical_resource_id": r.physical_id.clone().unwrap_or_default(),
        "resource_type": r.type_name,
        "resource_status": crate::api::stacks::joined(&r.action, &r.status),
        "resource_status_reason": r.status_reason,
        "creation_time": ts(&r.created_at),
        "updated_time": ts(r.updated_at.as_deref().unwrap_or(&r.created_at)),
        "required_by": required_by.get(&r.name).map(|d| d.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        "links": [
            {"href": resource_url(st, s, &r.name), "rel": "self"},
            {"href": stack_url(st, &s.project_id, &s.name, &s.id), "rel": "stack"},
        ],
    });
    if full {
        let mut attrs = serde_json::Map::new();
        if let Some(ty) = st.registry.get(&r.type_name) {
            for a in ty.attrs() {
                attrs.insert((*a).to_string(), r.attributes.get(*a).cloned().unwrap_or(Value::Null));
            }
        }
        v["attributes"] = Value::Object(attrs);
        v["description"] = json!("");
        v["metadata"] = json!({});
    }
    v
}

fn event(st: &S, s: &StackRow, e: &EventRow) -> Value {
    let res = resource_url(st, s, &e.resource_name);
    json!({
        "id": e.id,
        "event_time": ts(&e.created_at),
        "resource_name": e.resource_name,
        "logical_resource_id": e.resource_name,
        "physical_resource_id": e.physical_id,
        "resource_status": crate::api::stacks::joined(&e.action, &e.status),
        "resource_status_reason": e.status_reason,
        "links": [
            {"href": format!("{res}/events/{}", e.id), "rel": "self"},
            {"href": res, "rel": "resource"},
            {"href": stack_url(st, &s.project_id, &s.name, &s.id), "rel": "stack"},
        ],
    })
}

fn split_status(s: &str) -> (Option<String>, Option<String>) {
    for status in ["IN_PROGRESS", "COMPLETE", "FAILED"] {
        if s == status {
            return (None, Some(status.into()));
        }
        if let Some(a) = s.strip_suffix(&format!("_{status}")) {
            return (Some(a.into()), Some(status.into()));
        }
    }
    (None, Some(s.to_string()))
}

async fn events(st: &S, s: &StackRow, resource: Option<&str>, q: &QueryPairs) -> HeatResult<Response> {
    let mut f = EventFilter { resource_name: resource.map(str::to_string), ..Default::default() };
    if let Some(r) = q.get("resource_name") {
        f.resource_name = Some(r.to_string());
    }
    f.marker = q.get("marker").map(str::to_string);
    f.limit = q.int("limit")?;
    if f.limit.is_some_and(|l| l < 0) {
        return Err(bad("limit must be >= 0"));
    }
    f.descending = match q.get("sort_dir") {
        None => false,
        Some(d) if d.eq_ignore_ascii_case("asc") => false,
        Some(d) if d.eq_ignore_ascii_case("desc") => true,
        Some(d) => return Err(bad(format!("Invalid sort direction \"{d}\": use asc or desc"))),
    };
    f.actions = q.all("resource_action").into_iter().map(str::to_string).collect();
    for s in q.all("resource_status") {
        let (a, st) = split_status(s);
        if let Some(a) = a {
            f.actions.push(a);
        }
        if let Some(st) = st {
            f.statuses.push(st);
        }
    }
    f.types = q.all("resource_type").into_iter().map(str::to_string).collect();
    let rows = store::events(&st.db, &s.id, &f).await?;
    Ok(Json(json!({"events": rows.iter().map(|e| event(st, s, e)).collect::<Vec<_>>()})).into_response())
}
