//! L3: routers (external gateway with SNAT flag and external fixed IPs, interfaces by
//! subnet or port, extra routes) and floating IPs (allocation from external networks,
//! association only where a router connects the port's subnet to that network, port
//! forwardings).
//!
//! A router operation that creates ports spans transactions (the port is made through
//! the port layer); each step that fails undoes the ones before it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};

use crate::error::{invalid, not_found, NetError, NetResult};
use crate::ip::{parse_ip, Cidr};
use crate::policy::{enforce, enforce_attrs};
use crate::ports::{self, create_port};
use crate::store::{self, kind, Links};
use crate::{check_attrs, opt_bool, opt_int, opt_str, owner_project, quotas, req_obj, S};

/// Router and floating IP routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/routers", get(list).post(create))
        .route("/v2.0/routers/{id}", get(show).put(update).delete(remove))
        .route("/v2.0/routers/{id}/add_router_interface", put(add_interface))
        .route("/v2.0/routers/{id}/remove_router_interface", put(remove_interface))
        .route("/v2.0/floatingips", get(list_fips).post(create_fip))
        .route("/v2.0/floatingips/{id}", get(show_fip).put(update_fip).delete(remove_fip))
        .route("/v2.0/floatingips/{id}/port_forwardings", get(list_pf).post(create_pf))
        .route("/v2.0/floatingips/{id}/port_forwardings/{pf}", get(show_pf).put(update_pf).delete(remove_pf))
}

fn bad_router(msg: String) -> NetError {
    NetError::BadRequest("BadRequest", format!("Bad router request: {msg}."))
}

fn bad_fip(msg: String) -> NetError {
    NetError::BadRequest("BadRequest", format!("Bad floatingip request: {msg}."))
}

fn router_links(r: &Value) -> Links {
    let ext = r["external_gateway_info"]["network_id"].as_str().map(str::to_string);
    Links { reference: ext, ..Default::default() }
}

/// Links of a floating IP row: its external network and its port.
pub(crate) fn fip_links(f: &Value) -> Links {
    Links {
        parent: Some(store::s(f, "floating_network_id").to_string()),
        reference: f["port_id"].as_str().map(str::to_string),
        shared: false,
    }
}

/// Removes a floating IP's association (port deleted or disassociated).
pub(crate) fn clear_association(f: &mut Value) {
    f["port_id"] = Value::Null;
    f["fixed_ip_address"] = Value::Null;
    f["router_id"] = Value::Null;
    f["port_details"] = Value::Null;
    f["status"] = json!("DOWN");
}

async fn find(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::ROUTER, Some(id)).await?.pop().ok_or_else(|| not_found("Router", id))
}

async fn save_router(st: &S, r: &Value) -> NetResult<()> {
    let r = r.clone();
    st.db
        .transaction(|tx| {
            let r = r.clone();
            Box::pin(async move {
                store::update(&mut **tx, kind::ROUTER, &r, &router_links(&r)).await.map_err(NetError::from)
            })
        })
        .await
}

async fn delete_port(st: &S, port_id: &str) -> NetResult<()> {
    st.db
        .transaction(|tx| {
            let id = port_id.to_string();
            Box::pin(async move {
                if let Some(p) = store::get(&mut **tx, kind::PORT, &id).await? {
                    ports::delete_in_tx(tx, &p).await?;
                }
                Ok::<_, NetError>(())
            })
        })
        .await
}

/// Router interface ports.
async fn interfaces(st: &S, router_id: &str) -> NetResult<Vec<Value>> {
    Ok(store::by_ref(st.db.reader(), kind::PORT, router_id)
        .await?
        .into_iter()
        .filter(|p| store::s(p, "device_owner") == "network:router_interface")
        .collect())
}

/// Builds `external_gateway_info` by creating the gateway port.
async fn set_gateway(st: &S, ctx: &RequestContext, router: &mut Value, info: &Value) -> NetResult<()> {
    let obj = info.as_object().cloned().unwrap_or_default();
    check_attrs(&obj, &["network_id", "enable_snat", "external_fixed_ips", "qos_policy_id"])?;
    let net_id = opt_str(&obj, "network_id")?.ok_or_else(|| invalid("external_gateway_info requires network_id"))?;
    let net = crate::networks::find(st, ctx, &net_id).await?;
    if net["router:external"] != json!(true) {
        return Err(bad_router(format!("The network {net_id} is not an external network")));
    }
    let snat = opt_bool(&obj, "enable_snat")?.unwrap_or(true);
    let mut req = Map::new();
    req.insert("network_id".into(), json!(net_id));
    req.insert("device_owner".into(), json!("network:router_gateway"));
    req.insert("device_id".into(), json!(store::s(router, "id")));
    if let Some(ips) = obj.get("external_fixed_ips").filter(|v| !v.is_null()) {
        req.insert("fixed_ips".into(), ips.clone());
    }
    let admin = RequestContext::internal_admin();
    let port = create_port(st, &admin, req, String::new()).await?;
    router["external_gateway_info"] = json!({
        "network_id": net_id,
        "enable_snat": snat,
        "external_fixed_ips": port["fixed_ips"],
    });
    Ok(())
}

async fn clear_gateway(st: &S, router: &mut Value) -> NetResult<()> {
    let rid = store::s(router, "id").to_string();
    let fips = store::all(st.db.reader(), kind::FLOATINGIP).await?;
    if fips.iter().any(|f| f["router_id"].as_str() == Some(rid.as_str())) {
        let net = router["external_gateway_info"]["network_id"].as_str().unwrap_or("").to_string();
        return Err(NetError::Conflict(
            "RouterExternalGatewayInUseByFloatingIp",
            format!("Gateway {net} of router {rid} is used by one or more floating IPs. Disassociate them first."),
        ));
    }
    for p in store::by_ref(st.db.reader(), kind::PORT, &rid).await? {
        if store::s(&p, "device_owner") == "network:router_gateway" {
            delete_port(st, store::s(&p, "id")).await?;
        }
    }
    router["external_gateway_info"] = Value::Null;
    Ok(())
}

async fn validate_routes(st: &S, router_id: &str, v: &Value) -> NetResult<Value> {
    let arr = v.as_array().ok_or_else(|| invalid(format!("Invalid format for routes: {v}")))?;
    let mut cidrs = Vec::new();
    for p in interfaces(st, router_id).await? {
        for ip in p["fixed_ips"].as_array().into_iter().flatten() {
            if let Some(s) = store::get(st.db.reader(), kind::SUBNET, ip["subnet_id"].as_str().unwrap_or("")).await? {
                if let Ok(c) = Cidr::parse(store::s(&s, "cidr"), false) {
                    cidrs.push(c);
                }
            }
        }
    }
    let mut out = Vec::new();
    for r in arr {
        let dest = r.get("destination").and_then(Value::as_str).map(|d| Cidr::parse(d, false));
        let hop = r.get("nexthop").and_then(Value::as_str).and_then(parse_ip);
        let (Some(Ok(d)), Some((hv, h))) = (dest, hop) else {
            return Err(NetError::BadRequest("InvalidRoutes", format!("Invalid format for routes: {r}")));
        };
        if !cidrs.iter().any(|c| c.contains(hv, h)) {
            return Err(NetError::BadRequest(
                "InvalidRoutes",
                format!("Invalid format for routes: {r}, the nexthop is not connected with router"),
            ));
        }
        out.push(json!({"destination": d.to_string(), "nexthop": crate::ip::fmt_ip(hv, h)}));
    }
    Ok(Value::Array(out))
}

async fn list(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let items = store::visible(st.db.reader(), &ctx, kind::ROUTER, None).await?;
    Ok(Json(crate::listing::respond("routers", items, &q, &format!("{}/v2.0/routers", st.base))?))
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    Ok(Json(json!({"router": crate::listing::select_fields(find(&st, &ctx, &id).await?, &q)})))
}

const ROUTER_ATTRS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "external_gateway_info",
    "distributed",
    "ha",
    "availability_zone_hints",
    "tenant_id",
    "project_id",
    "routes",
    "tags",
    "flavor_id",
    "enable_ndp_proxy",
];

async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let obj = req_obj(&req, "router")?;
    check_attrs(&obj, ROUTER_ATTRS)?;
    let project = owner_project(&ctx, &obj)?;
    let target = json!({"tenant_id": project, "project_id": project});
    enforce(&st.policy, "create_router", &ctx, &target)?;
    for flag in ["distributed", "ha"] {
        if opt_bool(&obj, flag)? == Some(true) {
            enforce(&st.policy, &format!("create_router:{flag}"), &ctx, &target)?;
            return Err(invalid(format!("{flag} routers are not supported by this cloud")));
        }
    }
    if obj.get("external_gateway_info").and_then(|g| g.get("external_fixed_ips")).is_some_and(|v| !v.is_null()) {
        enforce(&st.policy, "create_router:external_gateway_info:external_fixed_ips", &ctx, &target)?;
    }
    let mut body = store::new_body(&project);
    body.insert("name".into(), json!(opt_str(&obj, "name")?.unwrap_or_default()));
    body.insert("description".into(), json!(opt_str(&obj, "description")?.unwrap_or_default()));
    body.insert("admin_state_up".into(), json!(opt_bool(&obj, "admin_state_up")?.unwrap_or(true)));
    body.insert("status".into(), json!("ACTIVE"));
    body.insert("external_gateway_info".into(), Value::Null);
    body.insert("distributed".into(), json!(false));
    body.insert("ha".into(), json!(false));
    body.insert("routes".into(), json!([]));
    body.insert("flavor_id".into(), Value::Null);
    body.insert(
        "availability_zone_hints".into(),
        obj.get("availability_zone_hints").cloned().filter(|v| v.is_array()).unwrap_or(json!([])),
    );
    body.insert("availability_zones".into(), json!([st.cfg.availability_zone]));
    body.insert("enable_ndp_proxy".into(), json!(false));
    body.insert("tags".into(), json!(crate::networks::tags_of(&obj)?));
    let mut body = Value::Object(body);
    let (b, cfg) = (body.clone(), st.cfg.clone());
    st.db
        .transaction(|tx| {
            let (b, cfg, project) = (b.clone(), cfg.clone(), project.clone());
            Box::pin(async move {
                quotas::check(tx, &cfg, &project, "router", 1).await?;
                store::insert(&mut **tx, kind::ROUTER, &b, &Links::default()).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    if let Some(g) = obj.get("external_gateway_info").filter(|g| !g.is_null()) {
        if let Err(e) = set_gateway(&st, &ctx, &mut body, g).await {
            let id = store::s(&body, "id").to_string();
            let _ = st
                .db
                .transaction(|tx| {
                    let id = id.clone();
                    Box::pin(async move { store::delete(&mut **tx, kind::ROUTER, &id).await.map_err(NetError::from) })
                })
                .await;
            return Err(e);
        }
        save_router(&st, &body).await?;
    }
    Ok((StatusCode::CREATED, Json(json!({"router": body}))))
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj = req_obj(&req, "router")?;
    check_attrs(&obj, ROUTER_ATTRS)?;
    let mut r = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_router", &ctx, &r)?;
    for flag in ["distributed", "ha"] {
        if opt_bool(&obj, flag)? == Some(true) {
            return Err(invalid(format!("{flag} routers are not supported by this cloud")));
        }
    }
    crate::apply_simple(&mut r, &obj, &["name", "description", "admin_state_up"])?;
    if let Some(routes) = obj.get("routes") {
        r["routes"] = if routes.is_null() { json!([]) } else { validate_routes(&st, &id, routes).await? };
    }
    if obj.contains_key("tags") {
        r["tags"] = json!(crate::networks::tags_of(&obj)?);
    }
    if let Some(g) = obj.get("external_gateway_info") {
        let cur_net = r["external_gateway_info"]["network_id"].as_str().map(str::to_string);
        let new_net = g.get("network_id").and_then(Value::as_str).map(str::to_string);
        let wants_ips = g.get("external_fixed_ips").is_some_and(|v| !v.is_null());
        if wants_ips {
            enforce_attrs(
                &st.policy,
                "update_router",
                &["external_gateway_info:external_fixed_ips"],
                &ctx,
                &json!({"external_gateway_info:external_fixed_ips": true}),
                &r,
            )?;
        }
        if g.is_null() || g.as_object().is_some_and(|m| m.is_empty()) {
            if cur_net.is_some() {
                clear_gateway(&st, &mut r).await?;
            }
        } else if cur_net.is_some() && cur_net == new_net && !wants_ips {
            // Same network: only the SNAT flag may change.
            if let Some(s) = g.get("enable_snat") {
                r["external_gateway_info"]["enable_snat"] = json!(s.as_bool().unwrap_or(true));
            }
        } else {
            if cur_net.is_some() {
                clear_gateway(&st, &mut r).await?;
            }
            set_gateway(&st, &ctx, &mut r, g).await?;
        }
    }
    store::touch(&mut r);
    save_router(&st, &r).await?;
    Ok(Json(json!({"router": r})))
}

async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let mut r = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_router", &ctx, &r)?;
    if !interfaces(&st, &id).await?.is_empty() {
        return Err(NetError::Conflict("RouterInUse", format!("Router {id} still has ports")));
    }
    if !r["external_gateway_info"].is_null() {
        clear_gateway(&st, &mut r).await?;
    }
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move { store::delete(&mut **tx, kind::ROUTER, &id).await.map_err(NetError::from) })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn interface_info(r: &Value, port: &Value, subnet_id: &str) -> Value {
    let subnet_ids: Vec<Value> =
        port["fixed_ips"].as_array().into_iter().flatten().map(|i| i["subnet_id"].clone()).collect();
    json!({
        "id": r["id"],
        "tenant_id": r["project_id"],
        "project_id": r["project_id"],
        "port_id": port["id"],
        "network_id": port["network_id"],
        "subnet_id": subnet_id,
        "subnet_ids": subnet_ids,
    })
}

async fn add_interface(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj =
        req.as_object().cloned().ok_or_else(|| bad_router("Either subnet_id or port_id must be specified".into()))?;
    let r = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "add_router_interface", &ctx, &r)?;
    let (subnet_id, port_id) = (opt_str(&obj, "subnet_id")?, opt_str(&obj, "port_id")?);
    let existing = interfaces(&st, &id).await?;
    let mut existing_cidrs = Vec::new();
    for p in &existing {
        for ip in p["fixed_ips"].as_array().into_iter().flatten() {
            let sid = ip["subnet_id"].as_str().unwrap_or("");
            if let Some(s) = store::get(st.db.reader(), kind::SUBNET, sid).await? {
                existing_cidrs.push((sid.to_string(), store::s(&s, "cidr").to_string()));
            }
        }
    }
    let check_overlap = |sid: &str, cidr: &str| -> NetResult<()> {
        let c = Cidr::parse(cidr, false).map_err(invalid)?;
        for (osid, ocidr) in &existing_cidrs {
            if osid == sid {
                return Err(bad_router(format!("Router already has a port on subnet {sid}")));
            }
            if Cidr::parse(ocidr, false).is_ok_and(|o| o.overlaps(&c)) {
                return Err(bad_router(format!(
                    "Cidr {cidr} of subnet {sid} overlaps with cidr {ocidr} of subnet {osid}"
                )));
            }
        }
        Ok(())
    };
    let project = store::s(&r, "project_id").to_string();
    match (subnet_id, port_id) {
        (Some(sid), None) => {
            let subnet = crate::subnets::find(&st, &ctx, &sid).await?;
            let gw = subnet["gateway_ip"]
                .as_str()
                .ok_or_else(|| bad_router("Subnet for router interface must have a gateway IP".into()))?;
            check_overlap(&sid, store::s(&subnet, "cidr"))?;
            let mut req = Map::new();
            req.insert("network_id".into(), subnet["network_id"].clone());
            req.insert("device_owner".into(), json!("network:router_interface"));
            req.insert("device_id".into(), json!(id));
            req.insert("fixed_ips".into(), json!([{"subnet_id": sid, "ip_address": gw}]));
            let port = create_port(&st, &RequestContext::internal_admin(), req, project).await?;
            Ok(Json(interface_info(&r, &port, &sid)))
        }
        (None, Some(pid)) => {
            let port = ports::find(&st, &ctx, &pid).await?;
            if !store::s(&port, "device_id").is_empty() {
                return Err(NetError::Conflict(
                    "PortInUse",
                    format!(
                        "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                        store::s(&port, "network_id"),
                        store::s(&port, "device_id")
                    ),
                ));
            }
            let ips = port["fixed_ips"].as_array().cloned().unwrap_or_default();
            let first = ips.first().ok_or_else(|| {
                bad_router(format!("Router port must have at least one fixed IP; port {pid} has none"))
            })?;
            for ip in &ips {
                let sid = ip["subnet_id"].as_str().unwrap_or("");
                if let Some(s) = store::get(st.db.reader(), kind::SUBNET, sid).await? {
                    check_overlap(sid, store::s(&s, "cidr"))?;
                }
            }
            let sid = first["subnet_id"].as_str().unwrap_or("").to_string();
            let mut upd = Map::new();
            upd.insert("device_owner".into(), json!("network:router_interface"));
            upd.insert("device_id".into(), json!(id));
            let port = ports::update_port(&st, &RequestContext::internal_admin(), &pid, upd).await?;
            Ok(Json(interface_info(&r, &port, &sid)))
        }
        _ => Err(bad_router("Either subnet_id or port_id must be specified".into())),
    }
}

async fn remove_interface(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj =
        req.as_object().cloned().ok_or_else(|| bad_router("Either subnet_id or port_id must be specified".into()))?;
    let r = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "remove_router_interface", &ctx, &r)?;
    let (subnet_id, port_id) = (opt_str(&obj, "subnet_id")?, opt_str(&obj, "port_id")?);
    let ifaces = interfaces(&st, &id).await?;
    let on_subnet = |p: &Value, sid: &str| {
        p["fixed_ips"].as_array().is_some_and(|a| a.iter().any(|i| i["subnet_id"].as_str() == Some(sid)))
    };
    let port = match (&subnet_id, &port_id) {
        (_, Some(pid)) => {
            let p = ifaces.iter().find(|p| store::s(p, "id") == pid).cloned().ok_or_else(|| {
                NetError::NotFoundTyped(
                    "RouterInterfaceNotFound",
                    format!("Router {id} does not have an interface with id {pid}"),
                )
            })?;
            if let Some(sid) = &subnet_id {
                if !on_subnet(&p, sid) {
                    return Err(NetError::Conflict(
                        "SubnetMismatchForPort",
                        format!("Subnet {sid} does not match with the port {pid}"),
                    ));
                }
            }
            p
        }
        (Some(sid), None) => ifaces.iter().find(|p| on_subnet(p, sid)).cloned().ok_or_else(|| {
            NetError::NotFoundTyped(
                "RouterInterfaceNotFoundForSubnet",
                format!("Router {id} has no interface on subnet {sid}"),
            )
        })?,
        _ => return Err(bad_router("Either subnet_id or port_id must be specified".into())),
    };
    let sids: Vec<String> = port["fixed_ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["subnet_id"].as_str().map(str::to_string))
        .collect();
    let fips = store::all(st.db.reader(), kind::FLOATINGIP).await?;
    for f in fips.iter().filter(|f| f["router_id"].as_str() == Some(id.as_str())) {
        let fixed = f["fixed_ip_address"].as_str().and_then(parse_ip);
        for sid in &sids {
            if let (Some(s), Some((v, a))) = (store::get(st.db.reader(), kind::SUBNET, sid).await?, fixed) {
                if Cidr::parse(store::s(&s, "cidr"), false).is_ok_and(|c| c.contains(v, a)) {
                    return Err(NetError::Conflict(
                        "RouterInterfaceInUseByFloatingIP",
                        format!("Router interface for subnet {sid} on router {id} cannot be deleted, as it is required by one or more floating IPs."),
                    ));
                }
            }
        }
    }
    delete_port(&st, store::s(&port, "id")).await?;
    let sid = subnet_id.unwrap_or_else(|| sids.first().cloned().unwrap_or_default());
    Ok(Json(interface_info(&r, &port, &sid)))
}

// --- floating IPs ------------------------------------------------------------------

async fn find_fip(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::FLOATINGIP, Some(id))
        .await?
        .pop()
        .ok_or_else(|| not_found("Floating IP", id))
}

/// Checks a floating IP may be associated with `port_id` and returns the association:
/// (fixed IP, router id, port details).
async fn association(
    st: &S,
    ctx: &RequestContext,
    fip_id: &str,
    fip_project: &str,
    ext_net: &str,
    port_id: &str,
    fixed: Option<String>,
) -> NetResult<(String, String, Value)> {
    let port = ports::find(st, ctx, port_id).await?;
    if !ctx.is_admin() && store::s(&port, "project_id") != fip_project {
        return Err(not_found("Port", port_id));
    }
    let ips = port["fixed_ips"].as_array().cloned().unwrap_or_default();
    let chosen = match &fixed {
        Some(f) => {
            let f = crate::subnets::canonical_ip(f)?;
            ips.iter()
                .find(|i| i["ip_address"].as_str() == Some(f.as_str()))
                .cloned()
                .ok_or_else(|| bad_fip(format!("Port {port_id} does not have fixed ip {f}")))?
        }
        None => ips
            .iter()
            .find(|i| i["ip_address"].as_str().and_then(parse_ip).is_some_and(|(v, _)| v == 4))
            .cloned()
            .ok_or_else(|| {
                bad_fip(format!("Port {port_id} does not have any IPv4 address to associate a floating IP with"))
            })?,
    };
    let fixed_ip = chosen["ip_address"].as_str().unwrap_or("").to_string();
    let subnet_id = chosen["subnet_id"].as_str().unwrap_or("").to_string();
    let routers = store::by_ref(st.db.reader(), kind::ROUTER, ext_net).await?;
    let mut router_id = None;
    for r in routers {
        let rid = store::s(&r, "id").to_string();
        if interfaces(st, &rid)
            .await?
            .iter()
            .any(|p| p["fixed_ips"].as_array().is_some_and(|a| a.iter().any(|i| i["subnet_id"] == json!(subnet_id))))
        {
            router_id = Some(rid);
            break;
        }
    }
    let router_id = router_id.ok_or_else(|| {
        NetError::NotFoundTyped(
            "ExternalGatewayForFloatingIPNotFound",
            format!("External network {ext_net} is not reachable from subnet {subnet_id}.  Therefore, cannot associate Port {port_id} with a Floating IP."),
        )
    })?;
    for other in store::by_ref(st.db.reader(), kind::FLOATINGIP, port_id).await? {
        if store::s(&other, "id") != fip_id && other["fixed_ip_address"].as_str() == Some(fixed_ip.as_str()) {
            return Err(NetError::Conflict(
                "FloatingIPPortAlreadyAssociated",
                format!(
                    "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {fixed_ip}, as that fixed IP already has a floating IP on external network {ext_net}.",
                    store::s(&other, "floating_ip_address"),
                    store::s(&other, "id")
                ),
            ));
        }
    }
    let details = json!({
        "name": port["name"], "network_id": port["network_id"], "mac_address": port["mac_address"],
        "admin_state_up": port["admin_state_up"], "status": port["status"], "device_id": port["device_id"],
        "device_owner": port["device_owner"],
    });
    Ok((fixed_ip, router_id, details))
}

async fn list_fips(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let items = store::visible(st.db.reader(), &ctx, kind::FLOATINGIP, None).await?;
    Ok(Json(crate::listing::respond("floatingips", items, &q, &format!("{}/v2.0/floatingips", st.base))?))
}

async fn show_fip(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    Ok(Json(json!({"floatingip": crate::listing::select_fields(find_fip(&st, &ctx, &id).await?, &q)})))
}

const FIP_ATTRS: &[&str] = &[
    "floating_network_id",
    "floating_ip_address",
    "subnet_id",
    "port_id",
    "fixed_ip_address",
    "description",
    "dns_name",
    "dns_domain",
    "tenant_id",
    "project_id",
    "qos_policy_id",
    "tags",
];

async fn create_fip(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let obj = req_obj(&req, "floatingip")?;
    check_attrs(&obj, FIP_ATTRS)?;
    let project = owner_project(&ctx, &obj)?;
    let target = json!({"tenant_id": project, "project_id": project});
    enforce(&st.policy, "create_floatingip", &ctx, &target)?;
    enforce_attrs(
        &st.policy,
        "create_floatingip",
        &["floating_ip_address"],
        &ctx,
        &Value::Object(obj.clone()),
        &target,
    )?;
    let net_id = opt_str(&obj, "floating_network_id")?.ok_or_else(|| invalid("floating_network_id is required"))?;
    let net = crate::networks::find(&st, &ctx, &net_id).await?;
    if net["router:external"] != json!(true) {
        return Err(bad_fip(format!("Network {net_id} is not a valid external network")));
    }
    let mut body = store::new_body(&project);
    let fip_id = body["id"].as_str().unwrap_or("").to_string();
    let assoc = match opt_str(&obj, "port_id")? {
        Some(pid) => Some((
            pid.clone(),
            association(&st, &ctx, &fip_id, &project, &net_id, &pid, opt_str(&obj, "fixed_ip_address")?).await?,
        )),
        None => None,
    };
    // Quota first so a refused request leaves no port behind.
    let cfg = st.cfg.clone();
    st.db
        .transaction(|tx| {
            let (cfg, project) = (cfg.clone(), project.clone());
            Box::pin(async move { quotas::check(tx, &cfg, &project, "floatingip", 1).await })
        })
        .await?;
    let mut preq = Map::new();
    preq.insert("network_id".into(), json!(net_id));
    preq.insert("device_owner".into(), json!("network:floatingip"));
    preq.insert("device_id".into(), json!(fip_id));
    let mut fixed = Map::new();
    if let Some(s) = opt_str(&obj, "subnet_id")? {
        fixed.insert("subnet_id".into(), json!(s));
    }
    if let Some(a) = opt_str(&obj, "floating_ip_address")? {
        fixed.insert("ip_address".into(), json!(a));
    }
    if !fixed.is_empty() {
        preq.insert("fixed_ips".into(), json!([fixed]));
    }
    let port = create_port(&st, &RequestContext::internal_admin(), preq, String::new()).await?;
    let addr = port["fixed_ips"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["ip_address"].as_str().and_then(parse_ip).is_some_and(|(v, _)| v == 4))
        .or_else(|| port["fixed_ips"].get(0))
        .and_then(|i| i["ip_address"].as_str())
        .map(str::to_string);
    let Some(addr) = addr else {
        delete_port(&st, store::s(&port, "id")).await?;
        return Err(NetError::IpExhausted(net_id));
    };
    body.insert("floating_network_id".into(), json!(net_id));
    body.insert("floating_ip_address".into(), json!(addr));
    body.insert("description".into(), json!(opt_str(&obj, "description")?.unwrap_or_default()));
    body.insert("dns_name".into(), json!(opt_str(&obj, "dns_name")?.unwrap_or_default()));
    body.insert("dns_domain".into(), json!(opt_str(&obj, "dns_domain")?.unwrap_or_default()));
    body.insert("qos_policy_id".into(), Value::Null);
    body.insert("qos_network_policy_id".into(), Value::Null);
    body.insert("port_forwardings".into(), json!([]));
    body.insert("tags".into(), json!(crate::networks::tags_of(&obj)?));
    let mut body = Value::Object(body);
    clear_association(&mut body);
    if let Some((pid, (fixed, router, details))) = assoc {
        body["port_id"] = json!(pid);
        body["fixed_ip_address"] = json!(fixed);
        body["router_id"] = json!(router);
        body["port_details"] = details;
    }
    let b = body.clone();
    let r = st
        .db
        .transaction(|tx| {
            let b = b.clone();
            Box::pin(async move {
                store::insert(&mut **tx, kind::FLOATINGIP, &b, &fip_links(&b)).await.map_err(NetError::from)
            })
        })
        .await;
    if let Err(e) = r {
        delete_port(&st, store::s(&port, "id")).await?;
        return Err(e);
    }
    Ok((StatusCode::CREATED, Json(json!({"floatingip": body}))))
}

async fn save_fip(st: &S, f: &Value) -> NetResult<()> {
    let f = f.clone();
    st.db
        .transaction(|tx| {
            let f = f.clone();
            Box::pin(async move {
                store::update(&mut **tx, kind::FLOATINGIP, &f, &fip_links(&f)).await.map_err(NetError::from)
            })
        })
        .await
}

async fn update_fip(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj = req_obj(&req, "floatingip")?;
    check_attrs(&obj, &["port_id", "fixed_ip_address", "description", "qos_policy_id", "tags"])?;
    let mut f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_floatingip", &ctx, &f)?;
    crate::apply_simple(&mut f, &obj, &["description"])?;
    if obj.contains_key("port_id") {
        match opt_str(&obj, "port_id")? {
            None => clear_association(&mut f),
            Some(pid) => {
                if f["port_forwardings"].as_array().is_some_and(|a| !a.is_empty()) {
                    return Err(NetError::Conflict(
                        "FipInUseByPortForwarding",
                        format!("Floating IP {id} has port forwardings and cannot be associated with a port."),
                    ));
                }
                let project = store::s(&f, "project_id").to_string();
                let net = store::s(&f, "floating_network_id").to_string();
                let (fixed, router, details) =
                    association(&st, &ctx, &id, &project, &net, &pid, opt_str(&obj, "fixed_ip_address")?).await?;
                f["port_id"] = json!(pid);
                f["fixed_ip_address"] = json!(fixed);
                f["router_id"] = json!(router);
                f["port_details"] = details;
            }
        }
    }
    if obj.contains_key("tags") {
        f["tags"] = json!(crate::networks::tags_of(&obj)?);
    }
    store::touch(&mut f);
    save_fip(&st, &f).await?;
    Ok(Json(json!({"floatingip": f})))
}

async fn remove_fip(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_floatingip", &ctx, &f)?;
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                for p in store::by_ref(&mut **tx, kind::PORT, &id).await? {
                    if store::s(&p, "device_owner") == "network:floatingip" {
                        ports::delete_in_tx(tx, &p).await?;
                    }
                }
                for pf in store::children(&mut **tx, kind::PORT_FORWARDING, &id).await? {
                    store::delete(&mut **tx, kind::PORT_FORWARDING, store::s(&pf, "id")).await?;
                }
                store::delete(&mut **tx, kind::FLOATINGIP, &id).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- port forwardings ----------------------------------------------------------------

async fn refresh_pf_summary(st: &S, fip_id: &str) -> NetResult<()> {
    let pfs = store::children(st.db.reader(), kind::PORT_FORWARDING, fip_id).await?;
    if let Some(mut f) = store::get(st.db.reader(), kind::FLOATINGIP, fip_id).await? {
        f["port_forwardings"] = json!(pfs
            .iter()
            .map(|p| json!({"id": p["id"], "protocol": p["protocol"], "internal_ip_address": p["internal_ip_address"], "internal_port": p["internal_port"], "external_port": p["external_port"]}))
            .collect::<Vec<_>>());
        store::touch(&mut f);
        save_fip(st, &f).await?;
    }
    Ok(())
}

fn pf_public(mut p: Value) -> Value {
    if let Some(m) = p.as_object_mut() {
        for k in ["project_id", "tenant_id", "created_at", "updated_at", "revision_number", "tags", "floatingip_id"] {
            m.remove(k);
        }
    }
    p
}

async fn list_pf(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    find_fip(&st, &ctx, &id).await?;
    let items = store::children(st.db.reader(), kind::PORT_FORWARDING, &id).await?.into_iter().map(pf_public).collect();
    Ok(Json(crate::listing::respond(
        "port_forwardings",
        items,
        &q,
        &format!("{}/v2.0/floatingips/{id}/port_forwardings", st.base),
    )?))
}

async fn find_pf(st: &S, ctx: &RequestContext, fip: &str, pf: &str) -> NetResult<Value> {
    find_fip(st, ctx, fip).await?;
    store::get(st.db.reader(), kind::PORT_FORWARDING, pf)
        .await?
        .filter(|p| store::s(p, "floatingip_id") == fip)
        .ok_or_else(|| not_found("Port forwarding", pf))
}

async fn show_pf(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path((id, pf)): Path<(String, String)>,
    q: QueryPairs,
) -> NetResult<Json<Value>> {
    Ok(Json(
        json!({"port_forwarding": crate::listing::select_fields(pf_public(find_pf(&st, &ctx, &id, &pf).await?), &q)}),
    ))
}

async fn validate_pf(
    st: &S,
    ctx: &RequestContext,
    f: &Value,
    obj: &Map<String, Value>,
    cur: Option<&Value>,
) -> NetResult<Value> {
    let get = |k: &str| obj.get(k).cloned().or_else(|| cur.and_then(|c| c.get(k).cloned())).filter(|v| !v.is_null());
    let proto =
        get("protocol").and_then(|v| v.as_str().map(str::to_string)).ok_or_else(|| invalid("protocol is required"))?;
    if proto != "tcp" && proto != "udp" {
        return Err(invalid(format!("'{proto}' is not in ['tcp', 'udp']")));
    }
    let port_num = |k: &str| -> NetResult<i64> {
        let mut m = Map::new();
        m.insert(k.into(), get(k).unwrap_or(Value::Null));
        let n = opt_int(&m, k)?.ok_or_else(|| invalid(format!("{k} is required")))?;
        if !(1..=65535).contains(&n) {
            return Err(invalid(format!("Invalid value for {k}: {n} is not in 1..65535")));
        }
        Ok(n)
    };
    let (ext, int) = (port_num("external_port")?, port_num("internal_port")?);
    let pid = get("internal_port_id")
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| invalid("internal_port_id is required"))?;
    let ip = get("internal_ip_address")
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| invalid("internal_ip_address is required"))?;
    let net = store::s(f, "floating_network_id").to_string();
    association(st, ctx, "", store::s(f, "project_id"), &net, &pid, Some(ip.clone())).await?;
    if !f["port_id"].is_null() {
        return Err(NetError::Conflict(
            "FipInUseByPortForwarding",
            "A floating IP associated with a port cannot have port forwardings.".into(),
        ));
    }
    let fid = store::s(f, "id");
    for other in store::children(st.db.reader(), kind::PORT_FORWARDING, fid).await? {
        if cur.is_some_and(|c| c["id"] == other["id"]) {
            continue;
        }
        if other["protocol"] == json!(proto) && other["external_port"] == json!(ext) {
            return Err(NetError::BadRequest("BadRequest", format!("Bad port_forwarding request: A duplicate port forwarding entry with same attributes already exists, conflicting values are {{'floatingip_id': '{fid}', 'external_port': {ext}, 'protocol': '{proto}'}}.")));
        }
    }
    let mut body = match cur {
        Some(c) => c.clone(),
        None => Value::Object(store::new_body(store::s(f, "project_id"))),
    };
    body["floatingip_id"] = json!(fid);
    body["protocol"] = json!(proto);
    body["external_port"] = json!(ext);
    body["internal_port"] = json!(int);
    body["internal_port_id"] = json!(pid);
    body["internal_ip_address"] = json!(ip);
    body["external_port_range"] = json!(format!("{ext}:{ext}"));
    body["internal_port_range"] = json!(format!("{int}:{int}"));
    body["description"] = get("description").unwrap_or(json!(""));
    Ok(body)
}

async fn create_pf(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let obj = req_obj(&req, "port_forwarding")?;
    check_attrs(
        &obj,
        &["protocol", "external_port", "internal_port", "internal_port_id", "internal_ip_address", "description"],
    )?;
    let f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_floatingip", &ctx, &f)?;
    let body = validate_pf(&st, &ctx, &f, &obj, None).await?;
    let b = body.clone();
    st.db
        .transaction(|tx| {
            let b = b.clone();
            Box::pin(async move {
                let links = Links {
                    parent: Some(store::s(&b, "floatingip_id").into()),
                    reference: Some(store::s(&b, "internal_port_id").into()),
                    shared: false,
                };
                store::insert(&mut **tx, kind::PORT_FORWARDING, &b, &links).await.map_err(NetError::from)
            })
        })
        .await?;
    refresh_pf_summary(&st, &id).await?;
    Ok((StatusCode::CREATED, Json(json!({"port_forwarding": pf_public(body)}))))
}

async fn update_pf(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path((id, pf)): Path<(String, String)>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj = req_obj(&req, "port_forwarding")?;
    check_attrs(
        &obj,
        &["protocol", "external_port", "internal_port", "internal_port_id", "internal_ip_address", "description"],
    )?;
    let f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_floatingip", &ctx, &f)?;
    let cur = find_pf(&st, &ctx, &id, &pf).await?;
    let mut body = validate_pf(&st, &ctx, &f, &obj, Some(&cur)).await?;
    store::touch(&mut body);
    let b = body.clone();
    st.db
        .transaction(|tx| {
            let b = b.clone();
            Box::pin(async move {
                let links = Links {
                    parent: Some(store::s(&b, "floatingip_id").into()),
                    reference: Some(store::s(&b, "internal_port_id").into()),
                    shared: false,
                };
                store::update(&mut **tx, kind::PORT_FORWARDING, &b, &links).await.map_err(NetError::from)
            })
        })
        .await?;
    refresh_pf_summary(&st, &id).await?;
    Ok(Json(json!({"port_forwarding": pf_public(body)})))
}

async fn remove_pf(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path((id, pf)): Path<(String, String)>,
) -> NetResult<StatusCode> {
    let f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_floatingip", &ctx, &f)?;
    find_pf(&st, &ctx, &id, &pf).await?;
    st.db
        .transaction(|tx| {
            let pf = pf.clone();
            Box::pin(async move { store::delete(&mut **tx, kind::PORT_FORWARDING, &pf).await.map_err(NetError::from) })
        })
        .await?;
    refresh_pf_summary(&st, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
