//! Stack updates: `PUT` (a new template; parameters not given return to their
//! defaults), `PATCH` (heatclient's `--existing`: the stack's template, files,
//! environment and parameters, with what the request gives merged over them and
//! `clear_parameters` removed) and their `preview` (`stack update --dry-run`).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::children;
use super::stacks::read_request;
use crate::engine::{self, state};
use crate::error::{bad, invalid, HeatError, HeatResult};
use crate::store::{self, Definition, ResourceRow, StackRow, UpdateOptions};
use crate::template::{Pseudo, Template};
use crate::S;

/// The stack's next definition and options, validated.
struct Next {
    def: Definition,
    opts: UpdateOptions,
}

fn merged(base: &Value, over: Option<&Value>) -> Value {
    let mut m = base.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(o)) = over {
        for (k, v) in o {
            match (m.get_mut(k), v) {
                (Some(Value::Object(old)), Value::Object(new)) => {
                    old.extend(new.clone());
                }
                _ => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Value::Object(m)
}

fn next(st: &S, s: &StackRow, existing: bool, body: &Map<String, Value>) -> HeatResult<Next> {
    let mut body = body.clone();
    if existing {
        if body.get("template").is_none_or(Value::is_null) && !body.contains_key("template_url") {
            body.insert("template".into(), s.template.clone());
        }
        body.insert("files".into(), merged(&s.files, body.get("files")));
        let env = match body.get("environment") {
            Some(Value::String(t)) => serde_yaml::from_str::<Value>(t).ok(),
            other => other.cloned(),
        };
        body.insert("environment".into(), merged(&s.environment, env.as_ref()));
    } else if body.get("template").is_none_or(Value::is_null) && !body.contains_key("template_url") {
        return Err(bad("No template specified: send a template, or PATCH to keep the stack's own"));
    }
    let req = read_request(&body)?;
    let tpl = Template::parse(&req.template)?;
    // PATCH keeps the stack's parameter values that the template (still) declares;
    // what the request names must be declared (checked below).
    let mut parameters = if existing { s.parameters.as_object().cloned().unwrap_or_default() } else { Map::new() };
    parameters.retain(|k, _| tpl.parameters.contains_key(k));
    parameters.extend(req.parameters);
    match body.get("clear_parameters") {
        None | Some(Value::Null) => {}
        Some(Value::Array(names)) => {
            for n in names {
                let n = n.as_str().ok_or_else(|| bad("clear_parameters must be a list of parameter names"))?;
                parameters.remove(n);
            }
        }
        Some(_) => return Err(bad("clear_parameters must be a list of parameter names")),
    }
    if tpl.resources.len() > st.cfg.max_resources_per_stack {
        return Err(invalid(format!(
            "Maximum resources per stack exceeded ({} > {}).",
            tpl.resources.len(),
            st.cfg.max_resources_per_stack
        )));
    }
    let pseudo = Pseudo { stack_name: s.name.clone(), stack_id: s.id.clone(), project_id: s.project_id.clone() };
    tpl.check(&parameters, &req.files, &st.registry, &pseudo)?;
    let disable_rollback = match body.get("disable_rollback") {
        None | Some(Value::Null) => s.disable_rollback,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) => {
            stratus_core::query::parse_bool(t).ok_or_else(|| bad("disable_rollback must be a boolean"))?
        }
        Some(_) => return Err(bad("disable_rollback must be a boolean")),
    };
    let timeout_mins = match body.get("timeout_mins") {
        None | Some(Value::Null) => s.timeout_mins,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|m| m > 0) => n.as_i64(),
        Some(Value::String(t)) if t.parse::<i64>().is_ok_and(|m| m > 0) => t.parse().ok(),
        Some(_) => return Err(bad("timeout_mins must be a positive integer")),
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => s.tags.clone(),
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(a)) => Some(a.iter().map(crate::template::functions::text).collect::<Vec<_>>().join(",")),
        Some(_) => return Err(bad("tags must be a comma-separated string or a list")),
    };
    Ok(Next {
        def: Definition {
            template: req.template,
            files: Value::Object(req.files),
            environment: req.environment,
            parameters: Value::Object(parameters),
        },
        opts: UpdateOptions { disable_rollback, timeout_mins, tags },
    })
}

fn usable(s: &StackRow) -> HeatResult<()> {
    if s.deleted_at.is_some() || (s.action == state::DELETE && s.status == state::COMPLETE) {
        return Err(crate::error::not_found("Stack", &s.name));
    }
    if s.status == state::IN_PROGRESS {
        return Err(HeatError::InProgress { name: s.name.clone(), action: s.action.clone() });
    }
    Ok(())
}

fn body_map(body: &Value) -> HeatResult<&Map<String, Value>> {
    body.as_object().ok_or_else(|| bad("The request body must be a JSON object"))
}

/// `PUT`/`PATCH /stacks/{name}[/{id}]`: validates the new definition, records it and
/// starts the update (202).
pub async fn update(st: &S, s: &StackRow, method: &Method, body: &Value) -> HeatResult<Response> {
    usable(s)?;
    let n = next(st, s, *method == Method::PATCH, body_map(body)?)?;
    store::begin_update(&st.db, s, &n.def, &n.opts).await?;
    engine::spawn(st, &s.id, crate::update::run_update(st.clone(), s.id.clone()));
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `PUT`/`PATCH /stacks/{name}/{id}/preview`: what the update would do, by resource,
/// under Heat's `resource_changes` keys.
pub async fn preview(st: &S, s: &StackRow, method: &Method, body: &Value) -> HeatResult<Response> {
    usable(s)?;
    let n = next(st, s, *method == Method::PATCH, body_map(body)?)?;
    let probe = StackRow {
        template: n.def.template.clone(),
        files: n.def.files.clone(),
        environment: n.def.environment.clone(),
        parameters: n.def.parameters.clone(),
        ..s.clone()
    };
    let (plans, deleted) = crate::update::preview(st, s, &probe).await.map_err(invalid)?;
    let required_by =
        crate::template::graph::dependents(&engine::prepare(st, &probe).map(|(_, c)| c.deps).unwrap_or_default());
    let mut changes: Map<String, Value> = ["added", "deleted", "replaced", "unchanged", "updated"]
        .iter()
        .map(|k| ((*k).to_string(), json!([])))
        .collect();
    let push = |changes: &mut Map<String, Value>, key: &str, v: Value| {
        if let Some(Value::Array(a)) = changes.get_mut(key) {
            a.push(v);
        }
    };
    for (name, type_name, row, plan) in plans {
        let row = row.unwrap_or_else(|| ResourceRow {
            stack_id: s.id.clone(),
            name: name.clone(),
            id: String::new(),
            type_name: type_name.clone(),
            action: state::INIT.into(),
            status: state::COMPLETE.into(),
            status_reason: String::new(),
            physical_id: None,
            ref_id: None,
            attributes: Value::Null,
            properties: Value::Null,
            backup: false,
            created_at: stratus_core::time::now(),
            updated_at: None,
        });
        let mut v = children::resource(st, &probe, &row, &required_by, false);
        v["resource_type"] = json!(type_name);
        push(&mut changes, plan.bucket(), v);
    }
    for row in deleted {
        let v = children::resource(st, s, &row, &Default::default(), false);
        push(&mut changes, "deleted", v);
    }
    Ok(Json(json!({"resource_changes": changes})).into_response())
}
