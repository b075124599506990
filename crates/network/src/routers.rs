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
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};
use stratus_db::Tx;

use crate::body::{self, Bool, Field, Int, List, Name, Opt, ProjectId, Raw, Tags, Text, Uuid};
use crate::error::{invalid, not_found, NetError, NetResult};
use crate::ip::{parse_ip, Cidr};
use crate::policy::{enforce, enforce_attrs};
use crate::ports::{self, create_port, FixedIp, PortCreate, PortUpdate};
use crate::store::{self, kind, Links};
use crate::{no_qos, owner, quotas, S};

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

/// A router's `external_gateway_info` as a request gives it. `{}` (like `null`) means "no
/// gateway"; otherwise `network_id` is required, as Neutron's `dict_or_nodata` says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GatewayInfo {
    network_id: Opt<Uuid>,
    enable_snat: Opt<Bool>,
    external_fixed_ips: Field<List<FixedIp>>,
    qos_policy_id: Field<Uuid>,
}

impl GatewayInfo {
    /// The gateway a request asks for: `None` for none (`null` or `{}`).
    fn wanted(f: &Field<GatewayInfo>) -> NetResult<Option<&GatewayInfo>> {
        let Some(g) = f.get() else { return Ok(None) };
        if g.network_id.present() {
            no_qos(&g.qos_policy_id)?;
            return Ok(Some(g));
        }
        let empty = !g.enable_snat.present() && !g.external_fixed_ips.present() && !g.qos_policy_id.present();
        if empty {
            Ok(None)
        } else {
            Err(NetError::BadRequest(
                "HTTPBadRequest",
                "Invalid input for external_gateway_info. Reason: Validation of dictionary's keys failed. Expected keys: {'network_id'}.".into(),
            ))
        }
    }
}

/// Builds `external_gateway_info` by creating the gateway port.
async fn set_gateway(st: &S, ctx: &RequestContext, router: &mut Value, g: &GatewayInfo) -> NetResult<()> {
    let net_id = g.network_id.opt().unwrap_or_default();
    let net = crate::networks::find(st, ctx, &net_id).await?;
    if net["router:external"] != json!(true) {
        return Err(bad_router(format!("The network {net_id} is not an external network")));
    }
    let snat = g.enable_snat.or(true);
    let req = PortCreate {
        network_id: Uuid::from(net_id.as_str()).into(),
        device_owner: Text::from("network:router_gateway").into(),
        device_id: Text::from(store::s(router, "id")).into(),
        fixed_ips: match &g.external_fixed_ips {
            Field::Set(ips) => Field::Set(ips.clone()),
            _ => Field::Absent,
        },
        ..Default::default()
    };
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

/// Every attribute of a router: a request naming anything else is refused.
const ROUTER_ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "admin_state_up",
    "status",
    "external_gateway_info",
    "distributed",
    "ha",
    "availability_zone_hints",
    "availability_zones",
    "tenant_id",
    "project_id",
    "routes",
    "tags",
    "flavor_id",
    "enable_ndp_proxy",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/routers`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RouterCreate {
    name: Opt<Name>,
    description: Opt<Name>,
    admin_state_up: Opt<Bool>,
    external_gateway_info: Field<GatewayInfo>,
    distributed: Opt<Bool>,
    ha: Opt<Bool>,
    availability_zone_hints: Field<List<Text<255>>>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
    tags: Field<Tags>,
    flavor_id: Field<Uuid>,
    enable_ndp_proxy: Opt<Bool>,
}

/// `PUT /v2.0/routers/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RouterUpdate {
    name: Opt<Name>,
    description: Opt<Name>,
    admin_state_up: Opt<Bool>,
    external_gateway_info: Field<GatewayInfo>,
    distributed: Opt<Bool>,
    ha: Opt<Bool>,
    routes: Field<Raw>,
    tags: Field<Tags>,
    enable_ndp_proxy: Opt<Bool>,
}

/// Router flavors, DVR, HA and NDP proxy are not offered: asking for them is refused.
fn unsupported(distributed: &Opt<Bool>, ha: &Opt<Bool>, ndp: &Opt<Bool>) -> NetResult<()> {
    for (flag, v) in [("distributed", distributed), ("ha", ha), ("enable_ndp_proxy", ndp)] {
        if v.opt() == Some(true) {
            return Err(invalid(format!("{flag} routers are not supported by this cloud")));
        }
    }
    Ok(())
}

async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let req: RouterCreate = body::parse_create(body::one(req, "router")?, ROUTER_ATTRS)?;
    let project = owner(&ctx, &req.project_id, &req.tenant_id)?;
    let target = json!({"tenant_id": project, "project_id": project});
    enforce(&st.policy, "create_router", &ctx, &target)?;
    for (flag, v) in [("distributed", &req.distributed), ("ha", &req.ha)] {
        if v.opt() == Some(true) {
            enforce(&st.policy, &format!("create_router:{flag}"), &ctx, &target)?;
        }
    }
    unsupported(&req.distributed, &req.ha, &req.enable_ndp_proxy)?;
    if let Some(f) = req.flavor_id.get() {
        return Err(NetError::NotFoundTyped("FlavorNotFound", format!("Flavor {} could not be found.", f.0)));
    }
    let gateway = GatewayInfo::wanted(&req.external_gateway_info)?;
    if gateway.is_some_and(|g| g.external_fixed_ips.get().is_some()) {
        enforce(&st.policy, "create_router:external_gateway_info:external_fixed_ips", &ctx, &target)?;
    }
    let az = &st.cfg.availability_zone;
    let hints: Vec<String> =
        req.availability_zone_hints.get().map(|l| l.0.iter().map(|z| z.0.clone()).collect()).unwrap_or_default();
    if let Some(z) = hints.iter().find(|z| *z != az) {
        return Err(NetError::NotFoundTyped(
            "AvailabilityZoneNotFound",
            format!("AvailabilityZone {z} could not be found."),
        ));
    }
    let mut body = store::new_body(&project);
    body.insert("name".into(), json!(req.name.or_empty()));
    body.insert("description".into(), json!(req.description.or_empty()));
    body.insert("admin_state_up".into(), json!(req.admin_state_up.or(true)));
    body.insert("status".into(), json!("ACTIVE"));
    body.insert("external_gateway_info".into(), Value::Null);
    body.insert("distributed".into(), json!(false));
    body.insert("ha".into(), json!(false));
    body.insert("routes".into(), json!([]));
    body.insert("flavor_id".into(), Value::Null);
    body.insert("availability_zone_hints".into(), json!(hints));
    body.insert("availability_zones".into(), json!([az]));
    body.insert("enable_ndp_proxy".into(), json!(false));
    body.insert("tags".into(), json!(crate::networks::tags(&req.tags)));
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
    if let Some(g) = gateway {
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
    let req: RouterUpdate = body::parse_update(body::one(req, "router")?, ROUTER_ATTRS)?;
    let mut r = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_router", &ctx, &r)?;
    unsupported(&req.distributed, &req.ha, &req.enable_ndp_proxy)?;
    if let Some(v) = req.name.opt() {
        r["name"] = json!(v);
    }
    if let Some(v) = req.description.opt() {
        r["description"] = json!(v);
    }
    if let Some(v) = req.admin_state_up.opt() {
        r["admin_state_up"] = json!(v);
    }
    if let Some(routes) = req.routes.clone().change() {
        r["routes"] = match routes {
            None => json!([]),
            Some(v) => validate_routes(&st, &id, &v).await?,
        };
    }
    if req.tags.present() {
        r["tags"] = json!(crate::networks::tags(&req.tags));
    }
    if req.external_gateway_info.present() {
        let wanted = GatewayInfo::wanted(&req.external_gateway_info)?;
        let cur_net = r["external_gateway_info"]["network_id"].as_str().map(str::to_string);
        let wants_ips = wanted.is_some_and(|g| g.external_fixed_ips.get().is_some());
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
        match wanted {
            None => {
                if cur_net.is_some() {
                    clear_gateway(&st, &mut r).await?;
                }
            }
            Some(g) if cur_net.is_some() && cur_net == g.network_id.opt() && !wants_ips => {
                // Same network: only the SNAT flag may change.
                if let Some(snat) = g.enable_snat.opt() {
                    r["external_gateway_info"]["enable_snat"] = json!(snat);
                }
            }
            Some(g) => {
                if cur_net.is_some() {
                    clear_gateway(&st, &mut r).await?;
                }
                set_gateway(&st, &ctx, &mut r, g).await?;
            }
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

/// The body of `add_router_interface` / `remove_router_interface`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InterfaceRequest {
    subnet_id: Opt<Uuid>,
    port_id: Opt<Uuid>,
}

impl InterfaceRequest {
    fn read(req: Value, adding: bool) -> NetResult<(Option<String>, Option<String>)> {
        let Value::Object(obj) = req else {
            return Err(bad_router("Either subnet_id or port_id must be specified".into()));
        };
        let r: InterfaceRequest = body::parse(obj)?;
        match (r.subnet_id.opt(), r.port_id.opt()) {
            (None, None) => Err(bad_router("Either subnet_id or port_id must be specified".into())),
            (Some(_), Some(_)) if adding => Err(bad_router("Cannot specify both subnet-id and port-id".into())),
            ids => Ok(ids),
        }
    }
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
    let (subnet_id, port_id) = InterfaceRequest::read(req, true)?;
    let r = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "add_router_interface", &ctx, &r)?;
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
            let req = PortCreate {
                network_id: Uuid::from(store::s(&subnet, "network_id")).into(),
                device_owner: Text::from("network:router_interface").into(),
                device_id: Text::from(id.as_str()).into(),
                fixed_ips: Field::Set(List(vec![FixedIp::on(&sid, Some(gw))])),
                ..Default::default()
            };
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
            let upd = PortUpdate {
                device_owner: Text::from("network:router_interface").into(),
                device_id: Text::from(id.as_str()).into(),
                ..Default::default()
            };
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
    let (subnet_id, port_id) = InterfaceRequest::read(req, false)?;
    let r = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "remove_router_interface", &ctx, &r)?;
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
        (None, None) => return Err(bad_router("Either subnet_id or port_id must be specified".into())),
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

/// Every attribute of a floating IP: a request naming anything else is refused.
const FIP_ATTRS: &[&str] = &[
    "id",
    "floating_ip_address",
    "floating_network_id",
    "router_id",
    "port_id",
    "fixed_ip_address",
    "subnet_id",
    "status",
    "description",
    "dns_name",
    "dns_domain",
    "port_details",
    "port_forwardings",
    "qos_policy_id",
    "qos_network_policy_id",
    "tenant_id",
    "project_id",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/floatingips`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FloatingIpCreate {
    floating_network_id: Opt<Uuid>,
    floating_ip_address: Field<Text<64>>,
    subnet_id: Field<Uuid>,
    port_id: Field<Uuid>,
    fixed_ip_address: Field<Text<64>>,
    description: Opt<Name>,
    dns_name: Opt<Text<255>>,
    dns_domain: Opt<Text<255>>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
    qos_policy_id: Field<Uuid>,
    tags: Field<Tags>,
}

/// `PUT /v2.0/floatingips/{id}` (`port_id: null` disassociates).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FloatingIpUpdate {
    port_id: Field<Uuid>,
    fixed_ip_address: Field<Text<64>>,
    description: Opt<Name>,
    qos_policy_id: Field<Uuid>,
    tags: Field<Tags>,
}

async fn create_fip(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let obj = body::one(req, "floatingip")?;
    let raw = Value::Object(obj.clone());
    let req: FloatingIpCreate = body::parse_create(obj, FIP_ATTRS)?;
    let project = owner(&ctx, &req.project_id, &req.tenant_id)?;
    let target = json!({"tenant_id": project, "project_id": project});
    enforce(&st.policy, "create_floatingip", &ctx, &target)?;
    enforce_attrs(&st.policy, "create_floatingip", &["floating_ip_address"], &ctx, &raw, &target)?;
    no_qos(&req.qos_policy_id)?;
    let net_id = req.floating_network_id.opt().ok_or_else(|| {
        NetError::BadRequest(
            "HTTPBadRequest",
            "Failed to parse request. Required attribute 'floating_network_id' not specified".into(),
        )
    })?;
    let net = crate::networks::find(&st, &ctx, &net_id).await?;
    if net["router:external"] != json!(true) {
        return Err(bad_fip(format!("Network {net_id} is not a valid external network")));
    }
    let mut body = store::new_body(&project);
    let fip_id = body["id"].as_str().unwrap_or("").to_string();
    let assoc = match req.port_id.opt() {
        Some(pid) => Some((
            pid.clone(),
            association(&st, &ctx, &fip_id, &project, &net_id, &pid, req.fixed_ip_address.opt()).await?,
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
    let fixed = match (req.subnet_id.opt(), req.floating_ip_address.opt()) {
        (None, None) => Field::Absent,
        (s, a) => Field::Set(List(vec![FixedIp { subnet_id: Opt(s.map(Uuid)), ip_address: Opt(a.map(Text)) }])),
    };
    let preq = PortCreate {
        network_id: Uuid::from(net_id.as_str()).into(),
        device_owner: Text::from("network:floatingip").into(),
        device_id: Text::from(fip_id.as_str()).into(),
        fixed_ips: fixed,
        ..Default::default()
    };
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
    body.insert("description".into(), json!(req.description.or_empty()));
    body.insert("dns_name".into(), json!(req.dns_name.or_empty()));
    body.insert("dns_domain".into(), json!(req.dns_domain.or_empty()));
    body.insert("qos_policy_id".into(), Value::Null);
    body.insert("qos_network_policy_id".into(), Value::Null);
    body.insert("port_forwardings".into(), json!([]));
    body.insert("tags".into(), json!(crate::networks::tags(&req.tags)));
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
    let req: FloatingIpUpdate = body::parse_update(body::one(req, "floatingip")?, FIP_ATTRS)?;
    let mut f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_floatingip", &ctx, &f)?;
    no_qos(&req.qos_policy_id)?;
    if let Some(d) = req.description.opt() {
        f["description"] = json!(d);
    }
    if req.port_id.present() {
        match req.port_id.opt() {
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
                    association(&st, &ctx, &id, &project, &net, &pid, req.fixed_ip_address.opt()).await?;
                f["port_id"] = json!(pid);
                f["fixed_ip_address"] = json!(fixed);
                f["router_id"] = json!(router);
                f["port_details"] = details;
            }
        }
    }
    if req.tags.present() {
        f["tags"] = json!(crate::networks::tags(&req.tags));
    }
    store::touch(&mut f);
    save_fip(&st, &f).await?;
    Ok(Json(json!({"floatingip": f})))
}

/// Deletes a floating IP inside a transaction: its port and port forwardings go with it.
pub(crate) async fn delete_fip_in_tx(tx: &mut Tx, id: &str) -> NetResult<()> {
    for p in store::by_ref(&mut **tx, kind::PORT, id).await? {
        if store::s(&p, "device_owner") == "network:floatingip" {
            ports::delete_in_tx(tx, &p).await?;
        }
    }
    for pf in store::children(&mut **tx, kind::PORT_FORWARDING, id).await? {
        store::delete(&mut **tx, kind::PORT_FORWARDING, store::s(&pf, "id")).await?;
    }
    store::delete(&mut **tx, kind::FLOATINGIP, id).await?;
    Ok(())
}

async fn remove_fip(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_floatingip", &ctx, &f)?;
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move { delete_fip_in_tx(tx, &id).await })
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

/// A port forwarding as `POST` and `PUT` give it (on update, what is absent is kept).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PortForwardingBody {
    protocol: Opt<Text<16>>,
    external_port: Opt<Int>,
    internal_port: Opt<Int>,
    internal_port_id: Opt<Uuid>,
    internal_ip_address: Opt<Text<64>>,
    description: Opt<Name>,
}

async fn validate_pf(
    st: &S,
    ctx: &RequestContext,
    f: &Value,
    req: &PortForwardingBody,
    cur: Option<&Value>,
) -> NetResult<Value> {
    let kept = |k: &str| cur.and_then(|c| c.get(k).cloned()).filter(|v| !v.is_null());
    let kept_str = |k: &str| kept(k).and_then(|v| v.as_str().map(str::to_string));
    let proto = req.protocol.opt().or_else(|| kept_str("protocol")).ok_or_else(|| invalid("protocol is required"))?;
    if proto != "tcp" && proto != "udp" {
        return Err(invalid(format!("'{proto}' is not in ['tcp', 'udp']")));
    }
    let port_num = |k: &str, given: Option<i64>| -> NetResult<i64> {
        let n =
            given.or_else(|| kept(k).and_then(|v| v.as_i64())).ok_or_else(|| invalid(format!("{k} is required")))?;
        if !(1..=65535).contains(&n) {
            return Err(invalid(format!("Invalid value for {k}: {n} is not in 1..65535")));
        }
        Ok(n)
    };
    let (ext, int) =
        (port_num("external_port", req.external_port.opt())?, port_num("internal_port", req.internal_port.opt())?);
    let pid = req
        .internal_port_id
        .opt()
        .or_else(|| kept_str("internal_port_id"))
        .ok_or_else(|| invalid("internal_port_id is required"))?;
    let ip = req
        .internal_ip_address
        .opt()
        .or_else(|| kept_str("internal_ip_address"))
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
    body["description"] = json!(req.description.opt().or_else(|| kept_str("description")).unwrap_or_default());
    Ok(body)
}

async fn create_pf(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let req: PortForwardingBody = body::parse(body::one(req, "port_forwarding")?)?;
    let f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_floatingip", &ctx, &f)?;
    let body = validate_pf(&st, &ctx, &f, &req, None).await?;
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
    let req: PortForwardingBody = body::parse(body::one(req, "port_forwarding")?)?;
    let f = find_fip(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_floatingip", &ctx, &f)?;
    let cur = find_pf(&st, &ctx, &id, &pf).await?;
    let mut body = validate_pf(&st, &ctx, &f, &req, Some(&cur)).await?;
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
