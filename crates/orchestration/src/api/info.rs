//! What the service offers: template validation, resource types (and their schema),
//! template versions and functions, build info.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{OsJson, QueryPairs};

use super::authorize;
use crate::error::{bad, not_found, HeatResult};
use crate::template::functions::FUNCTIONS;
use crate::template::{params::Constraint, Pseudo, Template, VERSIONS};
use crate::S;

/// `POST /v1/{project}/validate`: the template's parameters as Heat describes them,
/// or 400 naming what is wrong.
pub async fn validate(
    State(st): State<S>,
    ctx: Ctx,
    Path(project): Path<String>,
    OsJson(body): OsJson<Value>,
) -> HeatResult<Json<Value>> {
    authorize(&st, &ctx, &project, "stacks:validate_template")?;
    let body = body.as_object().ok_or_else(|| bad("The request body must be a JSON object"))?;
    let req = super::stacks::read_request(body)?;
    let tpl = Template::parse(&req.template)?;
    // Validation does not need values: parameters without one get their type's empty
    // value so the rest of the template is still checked.
    let mut given = req.parameters.clone();
    for (k, def) in &tpl.parameters {
        if !given.contains_key(k) && def.default.is_none() {
            let placeholder = match def.ty {
                crate::template::params::ParamType::Json => json!({}),
                crate::template::params::ParamType::Boolean => json!(false),
                crate::template::params::ParamType::Number => json!(0),
                _ => json!(""),
            };
            let mut relaxed = def.clone();
            relaxed.constraints.clear();
            if relaxed.coerce(k, &placeholder).is_ok() {
                given.insert(k.clone(), placeholder);
            }
        }
    }
    let mut tpl_relaxed = tpl.clone();
    for (k, def) in tpl_relaxed.parameters.iter_mut() {
        if !req.parameters.contains_key(k) && def.default.is_none() {
            def.constraints.clear();
        }
    }
    let pseudo = Pseudo { stack_name: "validate".into(), stack_id: "None".into(), project_id: project.clone() };
    tpl_relaxed.check(&given, &req.files, &st.registry, &pseudo)?;
    let mut params = Map::new();
    for (k, def) in &tpl.parameters {
        let mut p = json!({
            "Type": def.ty.api_name(),
            "Description": def.description,
            "Label": def.label.clone().unwrap_or_else(|| k.clone()),
            "NoEcho": if def.hidden { "true" } else { "false" },
        });
        if let Some(d) = &def.default {
            p["Default"] = d.clone();
        }
        if let Some(v) = req.parameters.get(k) {
            p["Value"] = v.clone();
        }
        for c in &def.constraints {
            match c {
                Constraint::AllowedValues(v, _) => p["AllowedValues"] = json!(v),
                Constraint::AllowedPattern(_, pat, _) => p["AllowedPattern"] = json!(pat),
                Constraint::Length(min, max, _) => {
                    if let Some(m) = min {
                        p["MinLength"] = json!(m);
                    }
                    if let Some(m) = max {
                        p["MaxLength"] = json!(m);
                    }
                }
                Constraint::Range(min, max, _) => {
                    if let Some(m) = min {
                        p["MinValue"] = json!(m);
                    }
                    if let Some(m) = max {
                        p["MaxValue"] = json!(m);
                    }
                }
                Constraint::Custom(_) => {}
            }
        }
        params.insert(k.clone(), p);
    }
    let mut out = json!({"Description": tpl.description, "Parameters": params});
    if tpl.parameter_groups.as_array().is_some_and(|a| !a.is_empty()) {
        out["ParameterGroups"] = tpl.parameter_groups.clone();
    }
    Ok(Json(out))
}

/// `GET /v1/{project}/resource_types` (`with_description`, `name` filter).
pub async fn resource_types(
    State(st): State<S>,
    ctx: Ctx,
    Path(project): Path<String>,
    q: QueryPairs,
) -> HeatResult<Json<Value>> {
    authorize(&st, &ctx, &project, "stacks:list_resource_types")?;
    let with_description = q.bool("with_description")?.unwrap_or(false);
    let name = q.get("name");
    let types: Vec<Value> = st
        .registry
        .all()
        .filter(|t| name.is_none_or(|n| t.name().contains(n)))
        .map(|t| {
            if with_description {
                json!({"resource_type": t.name(), "description": t.description()})
            } else {
                json!(t.name())
            }
        })
        .collect();
    Ok(Json(json!({"resource_types": types})))
}

/// `GET /v1/{project}/resource_types/{type}`: the type's properties and attributes.
pub async fn resource_type(
    State(st): State<S>,
    ctx: Ctx,
    Path((project, type_name)): Path<(String, String)>,
) -> HeatResult<Json<Value>> {
    authorize(&st, &ctx, &project, "stacks:resource_schema")?;
    let t = st.registry.get(&type_name).ok_or_else(|| not_found("Resource Type", &type_name))?;
    let mut props = Map::new();
    for p in t.props().unwrap_or_default() {
        props.insert(
            p.name.to_string(),
            json!({"type": p.kind.api_name(), "required": p.required, "description": p.description, "update_allowed": false, "immutable": false}),
        );
    }
    let mut attrs = Map::new();
    for a in t.attrs().iter().chain(std::iter::once(&"show")) {
        attrs.insert((*a).to_string(), json!({"description": ""}));
    }
    Ok(Json(json!({
        "resource_type": t.name(),
        "description": t.description(),
        "properties": props,
        "attributes": attrs,
        "support_status": {"status": "SUPPORTED", "version": null, "message": null, "previous_status": null},
    })))
}

/// `GET /v1/{project}/template_versions`.
pub async fn template_versions(State(st): State<S>, ctx: Ctx, Path(project): Path<String>) -> HeatResult<Json<Value>> {
    authorize(&st, &ctx, &project, "stacks:list_template_versions")?;
    let list: Vec<Value> = VERSIONS
        .iter()
        .map(|(d, n)| {
            json!({
                "version": format!("heat_template_version.{d}"),
                "type": "hot",
                "aliases": n.map(|n| vec![format!("heat_template_version.{n}")]).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({"template_versions": list})))
}

/// `GET /v1/{project}/template_versions/{version}/functions`.
pub async fn template_functions(
    State(st): State<S>,
    ctx: Ctx,
    Path((project, version)): Path<(String, String)>,
) -> HeatResult<Json<Value>> {
    authorize(&st, &ctx, &project, "stacks:list_template_functions")?;
    let v = version.strip_prefix("heat_template_version.").unwrap_or(&version);
    if !VERSIONS.iter().any(|(d, n)| *d == v || *n == Some(v)) {
        return Err(not_found("Template version", &version));
    }
    let list: Vec<Value> = FUNCTIONS.iter().map(|f| json!({"functions": f, "description": ""})).collect();
    Ok(Json(json!({"template_functions": list})))
}

/// `GET /v1/{project}/build_info`.
pub async fn build_info(State(st): State<S>, ctx: Ctx, Path(project): Path<String>) -> HeatResult<Json<Value>> {
    authorize(&st, &ctx, &project, "build_info:build_info")?;
    let rev = format!("stratus-{}", env!("CARGO_PKG_VERSION"));
    Ok(Json(json!({"api": {"revision": rev}, "engine": {"revision": rev}})))
}
