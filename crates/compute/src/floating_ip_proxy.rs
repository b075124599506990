//! `os-floating-ips`, `os-floating-ip-pools` (microversions 2.1–2.35) and the
//! `addFloatingIp` / `removeFloatingIp` server actions (2.1–2.43): Nova's proxies to the
//! network service's floating IPs, made as the caller.
//!
//! A pool is an external network, named by name or id; a floating IP shows its address,
//! the fixed address and server it translates to, and its pool's name. Associating picks
//! the server's port holding `fixed_address`, or its first port with an IPv4 address.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::internal::{plausible_id, InternalUri};
use stratus_core::{ApiError, ApiVersion, RequestContext};

use crate::error::{ComputeError, Result};
use crate::net_proxy::net;
use crate::servers::store::Instance;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-floating-ips", get(list).post(create))
        .route("/v2.1/os-floating-ips/{id}", get(show).delete(remove))
        .route("/v2.1/os-floating-ip-pools", get(pools))
}

use crate::secgroup_proxy::enforce;

fn check_version(v: ApiVersion, api: &str) -> Result<()> {
    crate::secgroup_proxy::removed_proxy(v, api, "the network service's floating IPs")
}

/// External networks the caller can see (the pools).
async fn external_networks(st: &AppState, ctx: &RequestContext) -> Result<Vec<Value>> {
    let uri = InternalUri::new("/network/v2.0/networks").query("router:external", "true");
    let b = net(st, ctx, Method::GET, uri.as_str(), None, String::new).await?;
    Ok(b["networks"].as_array().cloned().unwrap_or_default())
}

/// A Neutron floating IP in Nova's form; `pools` names the pools, `ports` caches the
/// server of each port (read with the service's authority: the caller's floating IP may
/// point at a port the caller cannot read, as Nova shows the instance id anyway).
async fn nova_fip(
    st: &AppState,
    f: &Value,
    pools: &HashMap<String, String>,
    ports: &mut HashMap<String, Option<String>>,
) -> Result<Value> {
    let instance = match f["port_id"].as_str() {
        Some(p) => match ports.get(p) {
            Some(d) => d.clone(),
            None => {
                let uri = InternalUri::new("/network/v2.0/ports").seg(p).as_str().to_string();
                let admin = RequestContext::internal_admin();
                let device = match net(st, &admin, Method::GET, &uri, None, String::new).await {
                    Ok(b) => b["port"]["device_id"].as_str().filter(|d| !d.is_empty()).map(str::to_string),
                    Err(ComputeError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                };
                ports.insert(p.to_string(), device.clone());
                device
            }
        },
        None => None,
    };
    let pool = f["floating_network_id"].as_str().and_then(|n| pools.get(n)).cloned();
    Ok(json!({
        "id": f["id"],
        "ip": f["floating_ip_address"],
        "fixed_ip": f["fixed_ip_address"],
        "instance_id": instance,
        "pool": pool,
    }))
}

async fn pool_names(st: &AppState, ctx: &RequestContext) -> Result<HashMap<String, String>> {
    Ok(external_networks(st, ctx)
        .await?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?.to_string(), n["name"].as_str().unwrap_or_default().to_string())))
        .collect())
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-floating-ips")?;
    enforce(&st, &ctx, "os_compute_api:os-floating-ips:list")?;
    let uri =
        InternalUri::new("/network/v2.0/floatingips").query("project_id", ctx.project_id.as_deref().unwrap_or(""));
    let b = net(&st, &ctx, Method::GET, uri.as_str(), None, String::new).await?;
    let pools = pool_names(&st, &ctx).await?;
    let mut ports = HashMap::new();
    let mut out = Vec::new();
    for f in b["floatingips"].as_array().into_iter().flatten() {
        out.push(nova_fip(&st, f, &pools, &mut ports).await?);
    }
    Ok(Json(json!({"floating_ips": out})))
}

async fn get_fip(st: &AppState, ctx: &RequestContext, id: &str) -> Result<Value> {
    let not_found = || format!("Floating IP not found for ID {id}");
    if !plausible_id(id) {
        return Err(ComputeError::NotFound(not_found()));
    }
    let uri = InternalUri::new("/network/v2.0/floatingips").seg(id).as_str().to_string();
    Ok(net(st, ctx, Method::GET, &uri, None, not_found).await?["floatingip"].clone())
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-floating-ips")?;
    enforce(&st, &ctx, "os_compute_api:os-floating-ips:show")?;
    let f = get_fip(&st, &ctx, &id).await?;
    let view = nova_fip(&st, &f, &pool_names(&st, &ctx).await?, &mut HashMap::new()).await?;
    Ok(Json(json!({"floating_ip": view})))
}

/// `{"pool": name-or-id}`; the body and the pool may be left out when there is one pool.
#[derive(Deserialize, Default)]
struct CreateBody {
    #[serde(default)]
    pool: Option<String>,
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-floating-ips")?;
    enforce(&st, &ctx, "os_compute_api:os-floating-ips:create")?;
    // Nova takes no body, `null`, `{}` or `{"pool": ...}`.
    let want = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let b: Option<CreateBody> = serde_json::from_slice(&body).map_err(|e| {
            ComputeError::BadRequest(format!("Invalid request body: {e}; give {{\"pool\": \"<name>\"}}"))
        })?;
        b.and_then(|b| b.pool)
    };
    let nets = external_networks(&st, &ctx).await?;
    let pool = match &want {
        Some(p) => nets.iter().find(|n| n["name"] == p.as_str() || n["id"] == p.as_str()),
        None if nets.len() == 1 => nets.first(),
        None => None,
    };
    let pool = pool.ok_or_else(|| match &want {
        Some(p) => ComputeError::NotFound(format!("Floating IP pool not found: no external network named {p}")),
        None => ComputeError::NotFound(
            "Floating IP pool not found: name one with pool (GET /os-floating-ip-pools lists them)".into(),
        ),
    })?;
    let pool_id = pool["id"].as_str().unwrap_or_default().to_string();
    let req = json!({"floatingip": {"floating_network_id": pool_id}});
    let made = net(&st, &ctx, Method::POST, "/network/v2.0/floatingips", Some(req), || {
        format!("Floating IP pool {pool_id} not found.")
    })
    .await
    .map_err(|e| match e {
        // Neutron's "no more addresses" is Nova's 404 for an exhausted pool.
        ComputeError::BadRequest(m) if m.contains("No more IP") => {
            ComputeError::NotFound(format!("No more floating IPs in pool {pool_id}: {m}"))
        }
        e => e,
    })?;
    let pools = pool_names(&st, &ctx).await?;
    let view = nova_fip(&st, &made["floatingip"], &pools, &mut HashMap::new()).await?;
    Ok(Json(json!({"floating_ip": view})))
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_version(v, "os-floating-ips")?;
    enforce(&st, &ctx, "os_compute_api:os-floating-ips:delete")?;
    get_fip(&st, &ctx, &id).await?;
    let uri = InternalUri::new("/network/v2.0/floatingips").seg(&id).as_str().to_string();
    net(&st, &ctx, Method::DELETE, &uri, None, || format!("Floating IP not found for ID {id}")).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn pools(State(st): State<AppState>, ctx: Ctx, v: ApiVersion) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-floating-ip-pools")?;
    enforce(&st, &ctx, "os_compute_api:os-floating-ip-pools:list")?;
    let list: Vec<Value> = external_networks(&st, &ctx).await?.iter().map(|n| json!({"name": n["name"]})).collect();
    Ok(Json(json!({"floating_ip_pools": list})))
}

/// The caller's floating IP with `address` (404 when there is none).
async fn by_address(st: &AppState, ctx: &RequestContext, address: &str) -> Result<Value> {
    let not_found =
        || format!("Floating IP {address} could not be found for project {}", ctx.project_id.as_deref().unwrap_or(""));
    if address.parse::<std::net::IpAddr>().is_err() {
        return Err(ComputeError::BadRequest(format!("Invalid floating IP address {address:?}: give an IP address")));
    }
    let uri = InternalUri::new("/network/v2.0/floatingips").query("floating_ip_address", address);
    let b = net(st, ctx, Method::GET, uri.as_str(), None, not_found).await?;
    b["floatingips"].as_array().and_then(|l| l.first()).cloned().ok_or_else(|| ComputeError::NotFound(not_found()))
}

fn address_arg(args: &Value) -> Result<String> {
    args["address"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ComputeError::BadRequest("address is required: the floating IP address".into()))
}

/// `addFloatingIp` (2.1–2.43): associates the caller's floating IP `address` with a port
/// of the server.
pub async fn add(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    inst: &Instance,
    args: &Value,
) -> Result<(), ApiError> {
    if v.at_least(2, 44) {
        return Err(ComputeError::NotFound(
            "addFloatingIp was removed at microversion 2.44: use the network service's floating IPs".into(),
        )
        .into());
    }
    enforce(st, ctx, "os_compute_api:os-floating-ips:add")?;
    let address = address_arg(args)?;
    let fixed = args["fixed_address"].as_str();
    let fip = by_address(st, ctx, &address).await?;
    let ports = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
    let ips_of = |p: &Value| -> Vec<String> {
        p["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["ip_address"].as_str().map(str::to_string))
            .collect()
    };
    let chosen = match fixed {
        Some(f) => {
            ports.iter().find(|p| ips_of(p).iter().any(|ip| ip == f)).map(|p| (p, f.to_string())).ok_or_else(|| {
                ComputeError::BadRequest(format!("Specified fixed address {f} not assigned to instance {}", inst.uuid))
            })?
        }
        None => ports
            .iter()
            .find_map(|p| ips_of(p).into_iter().find(|ip| !ip.contains(':')).map(|ip| (p, ip)))
            .ok_or_else(|| {
                ComputeError::BadRequest(format!("Instance {} has no fixed IPv4 address to associate with", inst.uuid))
            })?,
    };
    let (port, fixed_ip) = chosen;
    let body = json!({"floatingip": {"port_id": port["id"], "fixed_ip_address": fixed_ip}});
    let uri =
        InternalUri::new("/network/v2.0/floatingips").seg(fip["id"].as_str().unwrap_or_default()).as_str().to_string();
    net(st, ctx, Method::PUT, &uri, Some(body), || format!("Floating IP {address} could not be found")).await?;
    Ok(())
}

/// `removeFloatingIp` (2.1–2.43): 409 when the address is not associated with this server.
pub async fn remove_from(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    inst: &Instance,
    args: &Value,
) -> Result<(), ApiError> {
    if v.at_least(2, 44) {
        return Err(ComputeError::NotFound(
            "removeFloatingIp was removed at microversion 2.44: use the network service's floating IPs".into(),
        )
        .into());
    }
    enforce(st, ctx, "os_compute_api:os-floating-ips:remove")?;
    let address = address_arg(args)?;
    let fip = by_address(st, ctx, &address).await?;
    let ports = st.backends.network.ports_of(&inst.uuid).await.map_err(|e| ComputeError::Unavailable(e.0))?;
    let on_server = fip["port_id"].as_str().is_some_and(|p| ports.iter().any(|x| x["id"] == p));
    if !on_server {
        return Err(ComputeError::Conflict(format!(
            "Floating IP {address} is not associated with instance {}.",
            inst.uuid
        ))
        .into());
    }
    let uri =
        InternalUri::new("/network/v2.0/floatingips").seg(fip["id"].as_str().unwrap_or_default()).as_str().to_string();
    net(st, ctx, Method::PUT, &uri, Some(json!({"floatingip": {"port_id": null}})), || {
        format!("Floating IP {address} could not be found")
    })
    .await?;
    Ok(())
}
