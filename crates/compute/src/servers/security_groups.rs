//! Security groups of a server: the `addSecurityGroup` / `removeSecurityGroup` actions
//! (applied to every port of the server, as Nova's Neutron driver does) and
//! `GET /servers/{id}/os-security-groups`.
//!
//! The network service is the truth (groups live on ports); the server row keeps the
//! names for the server view and for ports it creates later (interface attach).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, RequestContext};

use super::interfaces::{record, refused};
use super::store::{self, Instance};
use super::{authorized, check_lock};
use crate::error::ComputeError;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v2.1/servers/{id}/os-security-groups", get(list))
}

async fn list(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-security-groups:list").await?;
    let ports = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
    let mut ids: Vec<String> = Vec::new();
    for p in &ports {
        for g in p["security_groups"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !ids.iter().any(|x| x == g) {
                ids.push(g.to_string());
            }
        }
    }
    let mut out = Vec::new();
    let mut cache = Default::default();
    for g in ids {
        if let Some(sg) = st.backends.network.security_group(&g).await.map_err(|e| ComputeError::Unavailable(e.0))? {
            out.push(crate::secgroup_proxy::nova_group(&st, &ctx, &sg, &mut cache).await?);
        }
    }
    Ok(Json(json!({"security_groups": out})))
}

/// `addSecurityGroup` (`add` true) / `removeSecurityGroup`.
pub async fn change(
    st: &AppState,
    ctx: &RequestContext,
    id: &str,
    args: &Value,
    rid: &str,
    add: bool,
) -> Result<Response, ApiError> {
    let (rule, action) = if add {
        ("os_compute_api:os-security-groups:add", "addSecurityGroup")
    } else {
        ("os_compute_api:os-security-groups:remove", "removeSecurityGroup")
    };
    let inst = authorized(st, ctx, id, rule).await?;
    check_lock(st, ctx, &inst)?;
    let name = args["name"].as_str().map(str::trim).filter(|n| !n.is_empty()).ok_or_else(|| {
        ComputeError::BadRequest(format!("Invalid input for field/attribute {action}: 'name' is required"))
    })?;
    let project_ctx = RequestContext {
        user_id: ctx.user_id.clone(),
        project_id: Some(inst.project_id.clone()),
        roles: vec!["member".into(), "reader".into()],
        ..Default::default()
    };
    let sg = st.backends.network.find_security_group(&project_ctx, name).await.map_err(refused)?.ok_or_else(|| {
        ComputeError::NotFound(format!("Security group {name} not found for project {}.", inst.project_id))
    })?;
    let sg_id = sg["id"].as_str().unwrap_or_default().to_string();
    let sg_name = sg["name"].as_str().unwrap_or(name).to_string();
    let ports = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
    if ports.is_empty() {
        return Err(ComputeError::NotFound(format!(
            "instance_id {} could not be found as device id on any ports",
            inst.uuid
        ))
        .into());
    }
    let groups_of = |p: &Value| -> Vec<String> {
        p["security_groups"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
    };
    if add {
        if ports.iter().any(|p| p["port_security_enabled"] == json!(false)) {
            return Err(ComputeError::BadRequest(
                "Unable to add the security group to a port of the server: port security is disabled on it".into(),
            )
            .into());
        }
        if ports.iter().all(|p| groups_of(p).contains(&sg_id)) {
            return Err(ComputeError::BadRequest(format!(
                "Security group {sg_name} is already associated with the instance {}",
                inst.uuid
            ))
            .into());
        }
    } else if !ports.iter().any(|p| groups_of(p).contains(&sg_id)) {
        return Err(ComputeError::BadRequest(format!(
            "Security group {sg_name} not associated with the instance {}",
            inst.uuid
        ))
        .into());
    }
    for p in &ports {
        let mut gs = groups_of(p);
        let before = gs.len();
        if add {
            if !gs.contains(&sg_id) {
                gs.push(sg_id.clone());
            }
        } else {
            gs.retain(|g| *g != sg_id);
        }
        if gs.len() != before {
            let port_id = p["id"].as_str().unwrap_or_default();
            if let Err(e) = st.backends.network.set_port_security_groups(port_id, &gs).await {
                record(st, ctx, &inst, action, rid, Some(&e.message)).await;
                return Err(refused(e));
            }
        }
    }
    remember(st, &inst, &sg_name, add).await?;
    record(st, ctx, &inst, action, rid, None).await;
    Ok(axum::http::StatusCode::ACCEPTED.into_response())
}

/// Keeps the group names on the server row in step with its ports.
async fn remember(st: &AppState, inst: &Instance, name: &str, add: bool) -> Result<(), ComputeError> {
    let mut names = inst.security_groups.clone();
    if add {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    } else {
        names.retain(|n| n != name);
    }
    store::Update::new()
        .set("security_groups_json", json!(names).to_string())
        .apply(&st.platform.db, &inst.uuid)
        .await?;
    Ok(())
}
