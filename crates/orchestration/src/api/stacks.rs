//! Stacks: create (validate, record, start the engine), list, lookup (302 to the
//! canonical URL), show and delete; and the dispatcher for every `/stacks/...` path.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{OsJson, QueryPairs};

use super::{authorize, children, stack_url};
use crate::engine::{self, state};
use crate::error::{bad, not_found, HeatError, HeatResult};
use crate::store::{self, StackRow};
use crate::template::{self, Pseudo, Template};
use crate::S;

/// Children of a stack that `/stacks/{name_or_id}/<child>` redirects for.
const CHILDREN: &[&str] =
    &["resources", "events", "template", "outputs", "environment", "files", "actions", "snapshots"];

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// What a create (or validate) request carries.
pub struct Request {
    /// The template, parsed.
    pub template: Value,
    /// Files sent with it.
    pub files: Map<String, Value>,
    /// The environment.
    pub environment: Value,
    /// Parameter values: environment `parameter_defaults` (for declared parameters),
    /// then environment `parameters`, then the request's.
    pub parameters: Map<String, Value>,
}

fn map_of(v: Option<&Value>, what: &str) -> HeatResult<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
        Some(Value::String(s)) => match serde_yaml::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(Value::Null) => Ok(Map::new()),
            _ => Err(bad(format!("The {what} is not a map (or a YAML/JSON text of one)"))),
        },
        Some(_) => Err(bad(format!("The {what} must be a map"))),
    }
}

/// Reads template, files, environment and parameters from a request body.
pub fn read_request(body: &Map<String, Value>) -> HeatResult<Request> {
    if body.get("template").is_none() && body.contains_key("template_url") {
        return Err(bad(
            "template_url is not supported: send the template itself (the client does so for local files)",
        ));
    }
    let template = template::load(body.get("template").unwrap_or(&Value::Null))?;
    let files = map_of(body.get("files"), "files")?;
    let environment = Value::Object(map_of(body.get("environment"), "environment")?);
    for k in environment.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        match k.as_str() {
            "parameters"
            | "parameter_defaults"
            | "event_sinks"
            | "encrypted_param_names"
            | "parameter_merge_strategies" => {}
            "resource_registry" => {
                if environment["resource_registry"].as_object().is_some_and(|m| !m.is_empty()) {
                    return Err(crate::error::invalid(
                        "Environment resource_registry mappings are not supported yet: use the types in the template",
                    ));
                }
            }
            other => return Err(crate::error::invalid(format!("environment has wrong section \"{other}\""))),
        }
    }
    let declared: Vec<String> =
        template["parameters"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let mut parameters = Map::new();
    if let Some(Value::Object(d)) = environment.get("parameter_defaults") {
        for (k, v) in d {
            if declared.contains(k) {
                parameters.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Object(p)) = environment.get("parameters") {
        parameters.extend(p.clone());
    }
    parameters.extend(map_of(body.get("parameters"), "parameters")?);
    Ok(Request { template, files, environment, parameters })
}

/// `POST /v1/{project}/stacks`.
pub async fn create(
    State(st): State<S>,
    ctx: Ctx,
    Path(project): Path<String>,
    OsJson(body): OsJson<Value>,
) -> HeatResult<Response> {
    authorize(&st, &ctx, &project, "stacks:create")?;
    let body = body.as_object().ok_or_else(|| bad("The request body must be a JSON object"))?;
    let name = match body.get("stack_name") {
        Some(Value::String(n)) => n.clone(),
        _ => return Err(bad("No stack name specified")),
    };
    if !valid_name(&name) {
        return Err(bad(format!(
            "Invalid stack name {name} must contain only alphanumeric or \"_-.\" characters, must start with alpha and must be 255 characters or less."
        )));
    }
    let req = read_request(body)?;
    let tpl = Template::parse(&req.template)?;
    if tpl.resources.len() > st.cfg.max_resources_per_stack {
        return Err(crate::error::invalid(format!(
            "Maximum resources per stack exceeded ({} > {}).",
            tpl.resources.len(),
            st.cfg.max_resources_per_stack
        )));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let pseudo = Pseudo { stack_name: name.clone(), stack_id: id.clone(), project_id: project.clone() };
    let checked = tpl.check(&req.parameters, &req.files, &st.registry, &pseudo)?;
    if store::list_stacks(&st.db, Some(&project)).await?.len() >= st.cfg.max_stacks_per_tenant {
        return Err(HeatError::Api(
            stratus_core::ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "You have reached the maximum stacks per tenant, {}. Please delete some stacks.",
                    st.cfg.max_stacks_per_tenant
                ),
            )
            .with_code("RequestLimitExceeded"),
        ));
    }
    let disable_rollback = match body.get("disable_rollback") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            stratus_core::query::parse_bool(s).ok_or_else(|| bad("disable_rollback must be a boolean"))?
        }
        Some(_) => return Err(bad("disable_rollback must be a boolean")),
    };
    let timeout_mins = match body.get("timeout_mins") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|m| m > 0) => n.as_i64(),
        Some(Value::String(s)) if s.parse::<i64>().is_ok_and(|m| m > 0) => s.parse().ok(),
        Some(_) => return Err(bad("timeout_mins must be a positive integer")),
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => Some(a.iter().map(crate::template::functions::text).collect::<Vec<_>>().join(",")),
        Some(_) => return Err(bad("tags must be a comma-separated string or a list")),
    };
    let row = StackRow {
        id: id.clone(),
        name: name.clone(),
        project_id: project.clone(),
        user_id: ctx.user_id.clone(),
        action: state::CREATE.into(),
        status: state::IN_PROGRESS.into(),
        status_reason: "Stack CREATE started".into(),
        description: tpl.description.clone(),
        template: req.template,
        files: Value::Object(req.files),
        environment: req.environment,
        parameters: Value::Object(req.parameters),
        disable_rollback,
        timeout_mins,
        tags,
        context: ctx.0.clone(),
        created_at: stratus_core::time::now(),
        updated_at: None,
        deleted_at: None,
        previous: None,
        parent_id: None,
    };
    let resources: Vec<(String, String)> =
        checked.enabled.iter().map(|r| (r.clone(), tpl.resources[r].type_name.clone())).collect();
    store::insert_stack(&st.db, &row, &resources).await?;
    engine::spawn(&st, &id, engine::run_create(st.clone(), id.clone()));
    let url = stack_url(&st, &project, &name, &id);
    let body = json!({"stack": {"id": id, "links": [{"href": url, "rel": "self"}]}});
    Ok((StatusCode::CREATED, [(header::LOCATION, url)], Json(body)).into_response())
}

/// `{ACTION}_{STATUS}`.
pub fn joined(action: &str, status: &str) -> String {
    format!("{action}_{status}")
}

fn ts(t: &Option<String>) -> Value {
    t.as_deref().map(|s| Value::String(stratus_core::time::seconds_z(s))).unwrap_or(Value::Null)
}

/// A stack as listed.
fn summary(st: &S, s: &StackRow) -> Value {
    json!({
        "id": s.id,
        "stack_name": s.name,
        "description": s.description,
        "creation_time": ts(&Some(s.created_at.clone())),
        "updated_time": ts(&s.updated_at),
        "deletion_time": ts(&s.deleted_at),
        "stack_status": joined(&s.action, &s.status),
        "stack_status_reason": s.status_reason,
        "stack_owner": s.context.user_name,
        "stack_user_project_id": s.project_id,
        "parent": null,
        "tags": s.tags.as_ref().map(|t| t.split(',').map(str::to_string).collect::<Vec<_>>()),
        "links": [{"href": stack_url(st, &s.project_id, &s.name, &s.id), "rel": "self"}],
        "project": s.project_id,
    })
}

/// `GET /v1/{project}/stacks`: filters `name`, `status`, `action`; `sort_keys`,
/// `sort_dir`; `limit`, `marker`.
pub async fn list(
    State(st): State<S>,
    ctx: Ctx,
    Path(project): Path<String>,
    q: QueryPairs,
) -> HeatResult<Json<Value>> {
    authorize(&st, &ctx, &project, "stacks:index")?;
    let mut rows = store::list_stacks(&st.db, Some(&project)).await?;
    let names = q.all("name");
    let statuses = q.all("status");
    let actions = q.all("action");
    rows.retain(|s| {
        (names.is_empty() || names.contains(&s.name.as_str()))
            && (statuses.is_empty() || statuses.iter().any(|x| *x == s.status || *x == joined(&s.action, &s.status)))
            && (actions.is_empty() || actions.contains(&s.action.as_str()))
    });
    let key = q.get("sort_keys").unwrap_or("created_at");
    let asc = q.get("sort_dir").map(|d| d.eq_ignore_ascii_case("asc")).unwrap_or(false);
    let sort_value = |s: &StackRow| -> String {
        match key {
            "stack_name" | "name" => s.name.clone(),
            "stack_status" | "status" => joined(&s.action, &s.status),
            "updated_at" | "updated_time" => s.updated_at.clone().unwrap_or_default(),
            "created_at" | "creation_time" => s.created_at.clone(),
            _ => s.created_at.clone(),
        }
    };
    if !["stack_name", "name", "stack_status", "status", "updated_at", "updated_time", "created_at", "creation_time"]
        .contains(&key)
    {
        return Err(bad(format!("Invalid sort key \"{key}\": use stack_name, stack_status, created_at or updated_at")));
    }
    rows.sort_by(|a, b| {
        let o = sort_value(a).cmp(&sort_value(b)).then(a.id.cmp(&b.id));
        if asc {
            o
        } else {
            o.reverse()
        }
    });
    if let Some(m) = q.get("marker") {
        let at = rows.iter().position(|s| s.id == m).ok_or_else(|| not_found("Stack", m))?;
        rows.drain(..=at);
    }
    if let Some(l) = q.int("limit")? {
        if l < 0 {
            return Err(bad("limit must be >= 0"));
        }
        rows.truncate(l as usize);
    }
    Ok(Json(json!({"stacks": rows.iter().map(|s| summary(&st, s)).collect::<Vec<_>>()})))
}

/// Finds a stack by name or id (ids also find deleted stacks, as in Heat).
pub async fn lookup(st: &S, project: &str, name_or_id: &str) -> HeatResult<StackRow> {
    if uuid::Uuid::parse_str(name_or_id).is_ok() {
        if let Some(s) = store::stack_by_id(&st.db, project, name_or_id).await? {
            return Ok(s);
        }
    }
    store::stack_by_name(&st.db, project, name_or_id).await?.ok_or_else(|| not_found("Stack", name_or_id))
}

/// The stack named by `/stacks/{name}/{id}`.
pub async fn identified(st: &S, project: &str, name: &str, id: &str) -> HeatResult<StackRow> {
    match store::stack_by_id(&st.db, project, id).await? {
        Some(s) if s.name == name => Ok(s),
        _ => Err(not_found("Stack", name)),
    }
}

/// A stack in full (`GET /stacks/{name}/{id}`).
async fn show(st: &S, s: &StackRow, resolve_outputs: bool) -> Value {
    let mut v = summary(st, s);
    let tpl = Template::parse(&s.template).ok();
    let mut params = Map::new();
    if let Some(t) = &tpl {
        let given = s.parameters.as_object().cloned().unwrap_or_default();
        for (k, def) in &t.parameters {
            let raw = given.get(k).cloned().or(def.default.clone()).unwrap_or(Value::Null);
            let typed = def.coerce(k, &raw).unwrap_or(raw);
            params.insert(k.clone(), def.shown(&typed));
        }
    }
    params.insert("OS::stack_id".into(), json!(s.id));
    params.insert("OS::stack_name".into(), json!(s.name));
    params.insert("OS::project_id".into(), json!(s.project_id));
    v["parameters"] = Value::Object(params);
    v["disable_rollback"] = json!(s.disable_rollback);
    v["timeout_mins"] = json!(s.timeout_mins);
    v["capabilities"] = json!([]);
    v["notification_topics"] = json!([]);
    v["template_description"] = json!(s.description);
    if resolve_outputs {
        v["outputs"] = Value::Array(children::output_values(st, s).await);
    }
    v
}

/// Every `/v1/{project}/stacks/...` path.
pub async fn dispatch(
    State(st): State<S>,
    ctx: Ctx,
    Path((project, rest)): Path<(String, String)>,
    method: Method,
    q: QueryPairs,
    uri: axum::http::Uri,
    body: Bytes,
) -> HeatResult<Response> {
    let json_body = || -> HeatResult<Value> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&body).map_err(|e| bad(format!("The request body is not valid JSON: {e}")))
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let read = method == Method::GET || method == Method::HEAD;
    let not_yet = |what: &str| Err(HeatError::NotImplemented(format!("{what} is not supported by Stratus yet")));
    match segs.as_slice() {
        [] => Err(not_found("Stack", "")),
        [name] => {
            if method == Method::DELETE {
                authorize(&st, &ctx, &project, "stacks:delete")?;
                let s = lookup(&st, &project, name).await?;
                return delete(&st, &s).await;
            }
            if method == Method::PUT || method == Method::PATCH {
                authorize(
                    &st,
                    &ctx,
                    &project,
                    if method == Method::PATCH { "stacks:update_patch" } else { "stacks:update" },
                )?;
                let s = lookup(&st, &project, name).await?;
                return super::update::update(&st, &s, &method, &json_body()?).await;
            }
            if !read {
                return Err(HeatError::Api(stratus_core::ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("The method {method} is not allowed for this resource."),
                )));
            }
            authorize(&st, &ctx, &project, "stacks:lookup")?;
            let s = lookup(&st, &project, name).await?;
            Ok(redirect(&st, &project, &s, "", uri.query()))
        }
        [name, child, tail @ ..] if CHILDREN.contains(child) => {
            authorize(&st, &ctx, &project, "stacks:lookup")?;
            let s = lookup(&st, &project, name).await?;
            let mut path = format!("/{child}");
            for t in tail {
                path.push('/');
                path.push_str(&stratus_core::query::encode(t));
            }
            Ok(redirect(&st, &project, &s, &path, uri.query()))
        }
        [name, id] => match method {
            Method::GET | Method::HEAD => {
                authorize(&st, &ctx, &project, "stacks:show")?;
                let s = identified(&st, &project, name, id).await?;
                let resolve = q.bool("resolve_outputs")?.unwrap_or(true);
                Ok(Json(json!({"stack": show(&st, &s, resolve).await})).into_response())
            }
            Method::DELETE => {
                authorize(&st, &ctx, &project, "stacks:delete")?;
                let s = identified(&st, &project, name, id).await?;
                delete(&st, &s).await
            }
            Method::PUT | Method::PATCH => {
                authorize(
                    &st,
                    &ctx,
                    &project,
                    if method == Method::PATCH { "stacks:update_patch" } else { "stacks:update" },
                )?;
                let s = identified(&st, &project, name, id).await?;
                super::update::update(&st, &s, &method, &json_body()?).await
            }
            _ => Err(HeatError::Api(stratus_core::ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("The method {method} is not allowed for this resource."),
            ))),
        },
        [name, id, "preview"] if method == Method::PUT || method == Method::PATCH => {
            let action = if method == Method::PATCH { "stacks:preview_update_patch" } else { "stacks:preview_update" };
            authorize(&st, &ctx, &project, action)?;
            let s = identified(&st, &project, name, id).await?;
            super::update::preview(&st, &s, &method, &json_body()?).await
        }
        [name, id, "resources", res, "signal"] if method == Method::POST => {
            authorize(&st, &ctx, &project, "resource:signal")?;
            let s = identified(&st, &project, name, id).await?;
            super::signal::resource_signal(&st, &s, res, &json_body()?).await
        }
        [name, id, "resources", res] if method == Method::PATCH => {
            authorize(&st, &ctx, &project, "resource:mark_unhealthy")?;
            let s = identified(&st, &project, name, id).await?;
            super::signal::mark_unhealthy(&st, &s, res, &json_body()?).await
        }
        [name, id, rest @ ..] => {
            if !read {
                return not_yet(&format!("{method} on /stacks/{{name}}/{{id}}/{}", rest.join("/")));
            }
            let s = identified(&st, &project, name, id).await?;
            children::serve(&st, &ctx, &project, &s, rest, &q).await
        }
    }
}

fn redirect(st: &S, project: &str, s: &StackRow, path: &str, query: Option<&str>) -> Response {
    let mut loc = format!("{}{path}", stack_url(st, project, &s.name, &s.id));
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    (StatusCode::FOUND, [(header::LOCATION, loc)]).into_response()
}

async fn delete(st: &S, s: &StackRow) -> HeatResult<Response> {
    if s.deleted_at.is_some() {
        return Err(not_found("Stack", &s.name));
    }
    if s.status == state::IN_PROGRESS && s.action != state::CREATE && s.action != state::UPDATE {
        return Err(HeatError::InProgress { name: s.name.clone(), action: s.action.clone() });
    }
    engine::start_delete(st, s).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
