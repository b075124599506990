//! `os-networks` and `os-tenant-networks` reads (microversions 2.1–2.35): Nova's proxies
//! to the network service's networks, as the caller sees them. Their nova-network
//! writes are gone (410, see [`crate::removed`]).
//!
//! `os-networks` shows Nova's nova-network era fields (`label` is the name; addresses
//! come from the network's first IPv4 and IPv6 subnets, the rest is null; admins get
//! the administrative fields too); `os-tenant-networks` shows `id`, `label`, `cidr`.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::internal::{plausible_id, InternalUri};
use stratus_core::{ApiError, ApiVersion, RequestContext};

use crate::error::{ComputeError, Result};
use crate::net_proxy::net;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-networks", get(list))
        .route("/v2.1/os-networks/{id}", get(show))
        .route("/v2.1/os-tenant-networks", get(tenant_list))
        .route("/v2.1/os-tenant-networks/{id}", get(tenant_show))
}

fn check_version(v: ApiVersion, api: &str) -> Result<()> {
    if v.at_least(2, 36) {
        return Err(ComputeError::NotFound(format!(
            "{api} is a proxy API removed at microversion 2.36: use the network service's networks, \
             or a compute microversion of at most 2.35"
        )));
    }
    Ok(())
}

/// Nova's administrative nova-network fields (null or, where the network service knows
/// them, its values).
const ADMIN_FIELDS: &[&str] = &[
    "created_at",
    "updated_at",
    "deleted_at",
    "deleted",
    "injected",
    "bridge",
    "vlan",
    "vpn_public_address",
    "vpn_public_port",
    "vpn_private_address",
    "dhcp_start",
    "project_id",
    "host",
    "bridge_interface",
    "multi_host",
    "priority",
    "rxtx_base",
    "mtu",
    "dhcp_server",
    "enable_dhcp",
    "share_address",
];

async fn networks(st: &AppState, ctx: &RequestContext) -> Result<Vec<Value>> {
    let b = net(st, ctx, Method::GET, "/network/v2.0/networks", None, String::new).await?;
    Ok(b["networks"].as_array().cloned().unwrap_or_default())
}

async fn network(st: &AppState, ctx: &RequestContext, id: &str) -> Result<Value> {
    let not_found = || format!("Network {id} could not be found.");
    if !plausible_id(id) {
        return Err(ComputeError::NotFound(not_found()));
    }
    let uri = InternalUri::new("/network/v2.0/networks").seg(id).as_str().to_string();
    Ok(net(st, ctx, Method::GET, &uri, None, not_found).await?["network"].clone())
}

/// The network's first IPv4 and IPv6 subnets.
async fn subnets(st: &AppState, ctx: &RequestContext, id: &str) -> Result<(Option<Value>, Option<Value>)> {
    let uri = InternalUri::new("/network/v2.0/subnets").query("network_id", id);
    let b = net(st, ctx, Method::GET, uri.as_str(), None, String::new).await?;
    let list = b["subnets"].as_array().cloned().unwrap_or_default();
    let v4 = list.iter().find(|s| s["ip_version"] == 4).cloned();
    let v6 = list.iter().find(|s| s["ip_version"] == 6).cloned();
    Ok((v4, v6))
}

/// `a.b.c.d/len` → the dotted netmask.
fn netmask(cidr: &str) -> Option<String> {
    let len: u32 = cidr.split_once('/')?.1.parse().ok()?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32)) };
    Some(std::net::Ipv4Addr::from(mask).to_string())
}

async fn nova_network(st: &AppState, ctx: &RequestContext, n: &Value) -> Result<Value> {
    let id = n["id"].as_str().unwrap_or_default();
    let (v4, v6) = subnets(st, ctx, id).await?;
    let cidr = v4.as_ref().and_then(|s| s["cidr"].as_str()).map(str::to_string);
    let dns = v4.as_ref().and_then(|s| s["dns_nameservers"].as_array().cloned()).unwrap_or_default();
    let mut o = json!({
        "id": id,
        "label": n["name"],
        "cidr": cidr,
        "netmask": cidr.as_deref().and_then(netmask),
        "gateway": v4.as_ref().map(|s| s["gateway_ip"].clone()),
        "broadcast": Value::Null,
        "dns1": dns.first(),
        "dns2": dns.get(1),
        "cidr_v6": v6.as_ref().map(|s| s["cidr"].clone()),
        "gateway_v6": v6.as_ref().map(|s| s["gateway_ip"].clone()),
        "netmask_v6": v6.as_ref().and_then(|s| s["cidr"].as_str()?.split_once('/').map(|(_, l)| json!(l))),
    });
    if ctx.is_admin() {
        for k in ADMIN_FIELDS {
            o[*k] = Value::Null;
        }
        o["created_at"] = n["created_at"].clone();
        o["updated_at"] = n["updated_at"].clone();
        o["deleted"] = json!(false);
        o["project_id"] = n["project_id"].clone();
        o["mtu"] = n["mtu"].clone();
        o["enable_dhcp"] = v4.as_ref().map(|s| s["enable_dhcp"].clone()).unwrap_or(Value::Null);
    }
    Ok(o)
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-networks")?;
    st.policy.enforce("os_compute_api:os-networks:list", &ctx, &json!({"project_id": ctx.project_id}))?;
    let mut out = Vec::new();
    for n in networks(&st, &ctx).await? {
        out.push(nova_network(&st, &ctx, &n).await?);
    }
    Ok(Json(json!({"networks": out})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-networks")?;
    st.policy.enforce("os_compute_api:os-networks:view", &ctx, &json!({"project_id": ctx.project_id}))?;
    let n = network(&st, &ctx, &id).await?;
    Ok(Json(json!({"network": nova_network(&st, &ctx, &n).await?})))
}

async fn tenant_network(st: &AppState, ctx: &RequestContext, n: &Value) -> Result<Value> {
    let (v4, _) = subnets(st, ctx, n["id"].as_str().unwrap_or_default()).await?;
    Ok(json!({"id": n["id"], "label": n["name"], "cidr": v4.map(|s| s["cidr"].clone()).unwrap_or(Value::Null)}))
}

async fn tenant_list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-tenant-networks")?;
    st.policy.enforce("os_compute_api:os-tenant-networks:list", &ctx, &json!({"project_id": ctx.project_id}))?;
    let mut out = Vec::new();
    for n in networks(&st, &ctx).await? {
        out.push(tenant_network(&st, &ctx, &n).await?);
    }
    Ok(Json(json!({"networks": out})))
}

async fn tenant_show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_version(v, "os-tenant-networks")?;
    st.policy.enforce("os_compute_api:os-tenant-networks:show", &ctx, &json!({"project_id": ctx.project_id}))?;
    let n = network(&st, &ctx, &id).await?;
    Ok(Json(json!({"network": tenant_network(&st, &ctx, &n).await?})))
}
