//! Where servers meet networks: `os-interface` (list/show/attach/detach ports on a
//! server), and the floating addresses shown in a server's `addresses`.
//!
//! The network service owns ports; the server row keeps the ports it is bound to
//! (`ports_json`, what every agent operation receives in its `GuestSpec`). Attach and
//! detach change both, network first: a port is created and bound before the row lists
//! it, and removed from the row before it is released, so a crash in between leaves at
//! worst a port the server does not list (visible in Neutron with the server's
//! `device_id`), never a row pointing at a port that is gone. The guest sees the change
//! at its next (re)start; no driver hot-plugs yet.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_compute_proto::spec::PortSpec;
use stratus_core::{ApiError, ApiVersion, OsJson, RequestContext, RequestId};

use super::store::{self, Instance};
use super::{authorized, check_lock, events, request_id};
use crate::clients::{NetRefusal, RequestedNetwork};
use crate::error::{ComputeError, Result};
use crate::state::{task, vm};
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers/{id}/os-interface", get(list).post(attach))
        .route("/v2.1/servers/{id}/os-interface/{port}", get(show).delete(detach))
}

/// A network refusal as a Nova fault: the user's mistakes stay 4xx.
pub fn refused(e: NetRefusal) -> ApiError {
    let status = if e.status.is_client_error() { e.status } else { StatusCode::SERVICE_UNAVAILABLE };
    ApiError::new(status, e.message)
}

/// Adds floating IPs to the `addresses` of server bodies (`bodies[i]` shows `insts[i]`),
/// as Nova's network info cache has them: `OS-EXT-IPS:type` `floating` next to the
/// fixed address they translate to.
pub async fn decorate(st: &AppState, insts: &[Instance], bodies: &mut [Value]) {
    let ports: Vec<String> = insts.iter().flat_map(|i| i.ports.iter().map(|p| p.id.clone())).collect();
    if ports.is_empty() {
        return;
    }
    let fips = match st.backends.network.floating_ips(&ports).await {
        Ok(f) => f,
        Err(e) => {
            // A server view without floating addresses beats no server view.
            tracing::warn!(error = %e, "floating IPs unavailable for server addresses");
            return;
        }
    };
    if fips.is_empty() {
        return;
    }
    for (i, body) in insts.iter().zip(bodies.iter_mut()) {
        for p in &i.ports {
            let name = if p.network_name.is_empty() { p.network_id.clone() } else { p.network_name.clone() };
            for f in fips.iter().filter(|f| f.port_id == p.id) {
                if let Some(list) = body["addresses"].get_mut(&name).and_then(Value::as_array_mut) {
                    let version = if f.floating_ip.contains(':') { 6 } else { 4 };
                    list.push(json!({
                        "version": version, "addr": f.floating_ip, "OS-EXT-IPS:type": "floating",
                        "OS-EXT-IPS-MAC:mac_addr": p.mac_address,
                    }));
                }
            }
        }
    }
}

fn attachment(p: &Value, v: ApiVersion) -> Value {
    let mut a = json!({
        "port_id": p["id"],
        "net_id": p["network_id"],
        "mac_addr": p["mac_address"],
        "port_state": p["status"],
        "fixed_ips": p["fixed_ips"].as_array().cloned().unwrap_or_default().iter()
            .map(|f| json!({"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]}))
            .collect::<Vec<_>>(),
    });
    if v.at_least(2, 70) {
        a["tag"] = Value::Null;
    }
    a
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-attach-interfaces:list").await?;
    let ports = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
    Ok(Json(json!({"interfaceAttachments": ports.iter().map(|p| attachment(p, v)).collect::<Vec<_>>()})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, port)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-attach-interfaces:show").await?;
    let ports = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
    let p = ports
        .iter()
        .find(|p| p["id"].as_str() == Some(port.as_str()))
        .ok_or_else(|| ComputeError::NotFound(format!("Port {port} is not attached")))?;
    Ok(Json(json!({"interfaceAttachment": attachment(p, v)})))
}

/// States interface attach/detach may run in (Nova: active, paused, stopped; no task).
const INTERFACE_STATES: &[&str] = &[vm::ACTIVE, vm::PAUSED, vm::STOPPED];

/// Refuses a device attach or detach unless the server has no task, is in one of
/// `states` and is on a host (interfaces and volumes share this check).
pub(crate) fn check_device_state(inst: &Instance, action: &str, states: &[&str]) -> Result<()> {
    if let Some(t) = &inst.task_state {
        return Err(ComputeError::InvalidState {
            action: action.into(),
            uuid: inst.uuid.clone(),
            attr: "task_state",
            state: t.clone(),
        });
    }
    if !states.contains(&inst.vm_state.as_str()) {
        return Err(ComputeError::InvalidState {
            action: action.into(),
            uuid: inst.uuid.clone(),
            attr: "vm_state",
            state: inst.vm_state.clone(),
        });
    }
    if inst.host.is_none() {
        return Err(ComputeError::Conflict(format!("Instance {} is not on a compute host", inst.uuid)));
    }
    Ok(())
}

/// Rewrites the server's port list with `f` (re-read inside the transaction so two
/// concurrent attaches both land); false when the server is gone or being deleted.
pub async fn edit_ports(
    st: &AppState,
    uuid: &str,
    f: impl Fn(&mut Vec<PortSpec>) + Send + Sync + Clone + 'static,
) -> Result<bool> {
    let u = uuid.to_string();
    st.platform
        .db
        .transaction(|tx| {
            let (u, f) = (u.clone(), f.clone());
            Box::pin(async move {
                use stratus_db::sqlx::Row;
                let row = stratus_db::Query::new("SELECT ports_json, task_state FROM compute_instances WHERE uuid = ")
                    .bind(&u)
                    .push_bind(" AND deleted = ", false)
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(row) = row else { return Ok(false) };
                let task: Option<String> = row.try_get("task_state")?;
                if task.as_deref() == Some(task::DELETING) {
                    return Ok(false);
                }
                let cur: Option<String> = row.try_get("ports_json")?;
                let mut ports: Vec<PortSpec> = cur.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default();
                f(&mut ports);
                store::Update::new().set("ports_json", json!(ports).to_string()).apply_tx(tx, &u).await
            })
        })
        .await
}

/// Records an action that completed inside the API call, with its one event.
pub async fn record(
    st: &AppState,
    ctx: &RequestContext,
    inst: &Instance,
    action: &str,
    rid: &str,
    error: Option<&str>,
) {
    let (uuid, user, project, rid2, action2) =
        (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone(), rid.to_string(), action.to_string());
    let r = st
        .platform
        .db
        .transaction(|tx| {
            let (uuid, user, project, rid, action) =
                (uuid.clone(), user.clone(), project.clone(), rid2.clone(), action2.clone());
            Box::pin(async move { events::start_action(tx, &uuid, &action, &rid, &user, &project).await })
        })
        .await;
    if r.is_ok() {
        let ev = format!("api_{action}");
        let _ = events::start_event(&st.platform.db, &inst.uuid, rid, &ev, inst.host.as_deref()).await;
        let _ = events::finish_event(&st.platform.db, &inst.uuid, rid, &ev, error, true).await;
    }
}

async fn attach(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    rid: Option<Extension<RequestId>>,
    Path(id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-attach-interfaces:create").await?;
    check_lock(&st, &ctx, &inst)?;
    let a = body.get("interfaceAttachment").and_then(Value::as_object).cloned().unwrap_or_else(Map::new);
    let s = |k: &str| -> Result<Option<String>> {
        match a.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(x)) if !x.is_empty() => Ok(Some(x.clone())),
            Some(x) => Err(ComputeError::BadRequest(format!("Invalid input for field/attribute {k}. Value: {x}"))),
        }
    };
    let (net_id, port_id) = (s("net_id")?, s("port_id")?);
    if net_id.is_some() && port_id.is_some() {
        return Err(ComputeError::BadRequest("Must not input both network_id and port_id".into()).into());
    }
    let fixed_ip = match a.get("fixed_ips") {
        None | Some(Value::Null) => None,
        Some(Value::Array(l)) if l.len() == 1 => Some(
            l[0]["ip_address"]
                .as_str()
                .ok_or_else(|| ComputeError::BadRequest("fixed_ips entries need an ip_address".into()))?
                .to_string(),
        ),
        Some(_) => return Err(ComputeError::BadRequest("fixed_ips must list exactly one ip_address".into()).into()),
    };
    if fixed_ip.is_some() && net_id.is_none() {
        return Err(ComputeError::BadRequest("A fixed IP needs a net_id".into()).into());
    }
    let req = match (net_id, port_id) {
        (None, None) => {
            // Nova picks the project's only network; several (or none) is the caller's to
            // resolve.
            let nets: Vec<String> = inst.ports.iter().map(|p| p.network_id.clone()).collect();
            match nets.first() {
                Some(n) if nets.iter().all(|x| x == n) => {
                    RequestedNetwork { uuid: Some(n.clone()), ..Default::default() }
                }
                _ => {
                    return Err(ComputeError::BadRequest(
                        "Multiple possible networks found, use a Network ID to be more specific.".into(),
                    )
                    .into())
                }
            }
        }
        (n, p) => RequestedNetwork { uuid: n, port: p, fixed_ip, tag: s("tag")? },
    };
    check_device_state(&inst, "attach_interface", INTERFACE_STATES)?;
    let rid = request_id(&rid);
    let host = inst.host.clone().unwrap_or_default();
    let port = match st.backends.network.attach(&ctx, &inst.uuid, &host, &req, &inst.security_groups).await {
        Ok(p) => p,
        Err(e) => {
            record(&st, &ctx, &inst, "attach_interface", &rid, Some(&e.message)).await;
            return Err(refused(e));
        }
    };
    let p2 = port.clone();
    let ok = edit_ports(&st, &inst.uuid, move |ports| {
        if !ports.iter().any(|p| p.id == p2.id) {
            ports.push(p2.clone());
        }
    })
    .await?;
    if !ok {
        // The server went away meanwhile: give the port back.
        let _ = st.backends.network.deallocate(&inst.uuid, std::slice::from_ref(&port)).await;
        return Err(ComputeError::NotFound(format!("Instance {id} could not be found.")).into());
    }
    record(&st, &ctx, &inst, "attach_interface", &rid, None).await;
    let ports = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
    let p = ports.iter().find(|p| p["id"].as_str() == Some(port.id.as_str())).cloned().unwrap_or_else(|| {
        json!({"id": port.id, "network_id": port.network_id, "mac_address": port.mac_address, "status": "DOWN",
               "fixed_ips": port.fixed_ips.iter().map(|ip| json!({"ip_address": ip})).collect::<Vec<_>>()})
    });
    Ok(Json(json!({"interfaceAttachment": attachment(&p, v)})))
}

async fn detach(
    State(st): State<AppState>,
    ctx: Ctx,
    rid: Option<Extension<RequestId>>,
    Path((id, port)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-attach-interfaces:delete").await?;
    check_lock(&st, &ctx, &inst)?;
    check_device_state(&inst, "detach_interface", INTERFACE_STATES)?;
    let spec = match inst.ports.iter().find(|p| p.id == port) {
        Some(p) => p.clone(),
        None => {
            // A port bound to the server behind compute's back is still the server's.
            let theirs = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
            if !theirs.iter().any(|p| p["id"].as_str() == Some(port.as_str())) {
                return Err(ComputeError::NotFound(format!("Port {port} is not attached")).into());
            }
            PortSpec { id: port.clone(), preserve_on_delete: true, ..Default::default() }
        }
    };
    let rid = request_id(&rid);
    let p2 = port.clone();
    edit_ports(&st, &inst.uuid, move |ports| ports.retain(|p| p.id != p2)).await?;
    if let Err(e) = st.backends.network.deallocate(&inst.uuid, std::slice::from_ref(&spec)).await {
        record(&st, &ctx, &inst, "detach_interface", &rid, Some(&e.0)).await;
        return Err(ComputeError::Unavailable(e.0).into());
    }
    record(&st, &ctx, &inst, "detach_interface", &rid, None).await;
    Ok(StatusCode::ACCEPTED)
}

/// `networks: "auto"` (2.37) is refused at the API, as Nova does, when the project can
/// see several networks (the caller must pick one). With none, the network service
/// allocates the project's topology when the server is built.
pub async fn check_auto(st: &AppState, ctx: &RequestContext) -> Result<()> {
    match st.backends.network.auto_candidates(ctx).await {
        Ok(n) if n > 1 => Err(ComputeError::Conflict(
            "Multiple possible networks found, use a Network ID to be more specific.".into(),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(ComputeError::Unavailable(e.0)),
    }
}
