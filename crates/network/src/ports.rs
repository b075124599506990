//! Ports: MAC allocation, fixed IPs through IPAM, bindings, security groups, address
//! pairs, DNS assignment. Compute creates/binds/deletes ports through this API
//! (`device_owner=compute:<az>`, `device_id=<server>`, `binding:host_id=<host>`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};
use stratus_db::{Query, Tx};

use crate::error::{invalid, not_found, NetError, NetResult};
use crate::ip::{canonical_mac, eui64, fmt_ip, parse_ip, random_mac, Cidr};
use crate::ipam;
use crate::policy::{enforce, enforce_attrs};
use crate::store::{self, kind, Links};
use crate::subnets::info;
use crate::{check_attrs, opt_bool, opt_str, owner_project, quotas, req_obj, NetworkConfig, S};

/// Port routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/ports", get(list).post(create))
        .route("/v2.0/ports/{id}", get(show).put(update).delete(remove))
}

const ATTRS: &[&str] = &[
    "name",
    "description",
    "network_id",
    "admin_state_up",
    "mac_address",
    "fixed_ips",
    "device_id",
    "device_owner",
    "binding:host_id",
    "binding:profile",
    "binding:vnic_type",
    "allowed_address_pairs",
    "port_security_enabled",
    "security_groups",
    "dns_name",
    "dns_domain",
    "tenant_id",
    "project_id",
    "tags",
    "extra_dhcp_opts",
    "qos_policy_id",
    "propagate_uplink_status",
];

const VNIC_TYPES: &[&str] = &[
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "remote-managed",
];

const ADMIN_ONLY_READ: &[&str] = &["binding:host_id", "binding:profile", "binding:vif_type", "binding:vif_details"];

/// Row links of a port: its network and its device.
pub(crate) fn links(p: &Value) -> Links {
    Links {
        parent: Some(store::s(p, "network_id").to_string()),
        reference: Some(store::s(p, "device_id").to_string()).filter(|d| !d.is_empty()),
        shared: false,
    }
}

/// Hides binding details from callers policy does not show them to (`get_port:binding:*`,
/// admin-only by default, as in Neutron).
pub(crate) fn present(st: &S, ctx: &RequestContext, mut p: Value) -> Value {
    let hidden: Vec<&str> =
        ADMIN_ONLY_READ.iter().copied().filter(|k| !st.policy.check(&format!("get_port:{k}"), ctx, &p)).collect();
    if let Some(m) = p.as_object_mut() {
        for k in hidden {
            m.remove(k);
        }
    }
    p
}

/// A port the caller can see, or 404.
pub(crate) async fn find(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::PORT, Some(id)).await?.pop().ok_or_else(|| not_found("Port", id))
}

/// Binds a port to `host`, as the DHCP/L3 scheduling does; `down` marks it DOWN until
/// that host's agent has wired it (a move away from a dead agent).
pub(crate) async fn bind_to_host(st: &S, id: &str, host: &str, down: bool) -> NetResult<()> {
    let (id, host) = (id.to_string(), host.to_string());
    st.db
        .transaction(|tx| {
            let (id, host) = (id.clone(), host.clone());
            Box::pin(async move {
                if let Some(mut p) = store::get(&mut **tx, kind::PORT, &id).await? {
                    p["binding:host_id"] = json!(host);
                    if down {
                        p["status"] = json!("DOWN");
                    }
                    set_binding(&mut p);
                    store::touch(&mut p);
                    store::update(&mut **tx, kind::PORT, &p, &links(&p)).await?;
                }
                Ok::<_, NetError>(())
            })
        })
        .await
}

/// The router ports among `ports` (interfaces and gateways), grouped by router id.
pub(crate) fn by_router(ports: &[Value]) -> std::collections::BTreeMap<&str, Vec<&Value>> {
    let mut out: std::collections::BTreeMap<&str, Vec<&Value>> = std::collections::BTreeMap::new();
    for p in ports.iter().filter(|p| {
        matches!(store::s(p, "device_owner"), "network:router_interface" | "network:router_gateway")
            && !store::s(p, "device_id").is_empty()
    }) {
        out.entry(store::s(p, "device_id")).or_default().push(p);
    }
    out
}

/// Derives `binding:vif_type`/`vif_details` from `binding:host_id`.
pub(crate) fn set_binding(p: &mut Value) {
    let host = store::s(p, "binding:host_id").to_string();
    if host.is_empty() {
        p["binding:vif_type"] = json!("unbound");
        p["binding:vif_details"] = json!({});
    } else {
        p["binding:vif_type"] = json!("bridge");
        p["binding:vif_details"] = json!({"port_filter": true, "connectivity": "l2"});
    }
}

fn dns_assignment(p: &mut Value, dns_domain: &str) {
    let name = store::s(p, "dns_name").to_string();
    let ips = p["fixed_ips"].as_array().cloned().unwrap_or_default();
    let a: Vec<Value> = ips
        .iter()
        .map(|i| {
            let ip = i["ip_address"].as_str().unwrap_or("");
            let host = if name.is_empty() { format!("host-{}", ip.replace(['.', ':'], "-")) } else { name.clone() };
            json!({"hostname": host, "ip_address": ip, "fqdn": format!("{host}.{dns_domain}")})
        })
        .collect();
    p["dns_assignment"] = json!(a);
}

fn validate_dns_name(s: &str) -> NetResult<()> {
    let ok = s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("'{s}' not a valid PQDN or FQDN")))
    }
}

/// Neutron's `is_auto_address_subnet`: either mode says the address comes from the MAC.
pub(crate) fn is_auto_address(subnet: &Value) -> bool {
    let auto = |k: &str| matches!(subnet[k].as_str(), Some("slaac") | Some("dhcpv6-stateless"));
    auto("ipv6_address_mode") || auto("ipv6_ra_mode")
}

fn is_router_owner(owner: &str) -> bool {
    owner.starts_with("network:router_interface") || owner == "network:ha_router_replicated_interface"
}

/// A requested fixed IP entry, validated against the network's subnets.
#[derive(Debug, Clone)]
struct IpRequest {
    subnet: Value,
    ip: Option<u128>,
}

/// `router_port`: router interfaces may take an explicit address (the gateway) on a
/// SLAAC/DHCPv6-stateless subnet, as in Neutron (`ROUTER_INTERFACE_OWNERS` are exempt).
fn resolve_requests(network_id: &str, subnets: &[Value], v: &Value, router_port: bool) -> NetResult<Vec<IpRequest>> {
    let arr = v.as_array().ok_or_else(|| invalid(format!("Invalid data format for fixed IP: '{v}'")))?;
    let mut out = Vec::new();
    for e in arr {
        let sid = e.get("subnet_id").and_then(Value::as_str);
        let ip = match e.get("ip_address") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(parse_ip(s).ok_or_else(|| invalid(format!("'{s}' is not a valid IP address")))?)
            }
            Some(x) => return Err(invalid(format!("'{x}' is not a valid IP address"))),
        };
        let subnet = match (sid, ip) {
            (Some(sid), _) => subnets.iter().find(|s| store::s(s, "id") == sid).cloned().ok_or_else(|| {
                invalid(format!(
                    "Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}"
                ))
            })?,
            (None, Some((v, a))) => subnets
                .iter()
                .find(|s| Cidr::parse(store::s(s, "cidr"), false).is_ok_and(|c| c.contains(v, a)))
                .cloned()
                .ok_or_else(|| {
                    NetError::BadRequest(
                        "InvalidIpForNetwork",
                        format!(
                            "IP address {} is not a valid IP for any of the subnets on the specified network.",
                            fmt_ip(v, a)
                        ),
                    )
                })?,
            (None, None) => return Err(invalid("Exceeded maximum amount of fixed ips per port or no subnet/ip given")),
        };
        if let Some((v, a)) = ip {
            let c = Cidr::parse(store::s(&subnet, "cidr"), false).map_err(invalid)?;
            if !c.contains(v, a) || c.is_reserved(a) {
                return Err(NetError::BadRequest(
                    "InvalidIpForSubnet",
                    format!("IP address {} is not a valid IP for the specified subnet.", fmt_ip(v, a)),
                ));
            }
            if is_auto_address(&subnet) && !router_port {
                return Err(invalid(format!(
                    "IPv6 address {} cannot be directly assigned to a port on subnet {} as the subnet is configured for automatic addresses",
                    fmt_ip(v, a),
                    store::s(&subnet, "id")
                )));
            }
        }
        out.push(IpRequest { subnet, ip: ip.map(|x| x.1) });
    }
    Ok(out)
}

/// Allocates the port's addresses; `requested` `None` means Neutron's default (one IPv4
/// address, one stateful IPv6 address, plus SLAAC addresses).
async fn allocate_ips(
    tx: &mut Tx,
    port_id: &str,
    network_id: &str,
    mac: &str,
    device_owner: &str,
    subnets: &[Value],
    requested: Option<Vec<IpRequest>>,
) -> NetResult<Vec<Value>> {
    let mut out = Vec::new();
    let router_port = device_owner.starts_with("network:router_interface")
        || device_owner == "network:ha_router_replicated_interface";
    match requested {
        Some(reqs) => {
            for r in reqs {
                let si = info(&r.subnet)?;
                let gw = r.subnet["gateway_ip"].as_str().and_then(parse_ip).map(|g| g.1);
                let ip = match r.ip {
                    Some(ip) => {
                        if Some(ip) == gw && !router_port {
                            return Err(NetError::IpAllocated {
                                ip: fmt_ip(si.cidr.version, ip),
                                subnet_id: si.id.clone(),
                            });
                        }
                        ipam::allocate_specific(tx, &si, ip, port_id).await?;
                        ip
                    }
                    None if is_auto_address(&r.subnet) => {
                        let ip = eui64(&si.cidr, mac).ok_or_else(|| invalid("bad MAC for EUI-64"))?;
                        ipam::allocate_specific(tx, &si, ip, port_id).await?;
                        ip
                    }
                    None => ipam::allocate_any(tx, &si, port_id)
                        .await?
                        .ok_or_else(|| NetError::IpExhausted(network_id.to_string()))?,
                };
                out.push(json!({"subnet_id": si.id, "ip_address": fmt_ip(si.cidr.version, ip)}));
            }
        }
        None => {
            let mut done_v4 = false;
            let mut done_v6 = false;
            let mut tried_any = false;
            for s in subnets {
                let si = info(s)?;
                if si.cidr.version == 6 && is_auto_address(s) {
                    if router_port {
                        continue;
                    }
                    let ip = eui64(&si.cidr, mac).ok_or_else(|| invalid("bad MAC for EUI-64"))?;
                    ipam::allocate_specific(tx, &si, ip, port_id).await?;
                    out.push(json!({"subnet_id": si.id, "ip_address": fmt_ip(6, ip)}));
                    continue;
                }
                if (si.cidr.version == 4 && done_v4) || (si.cidr.version == 6 && done_v6) {
                    continue;
                }
                tried_any = true;
                if let Some(ip) = ipam::allocate_any(tx, &si, port_id).await? {
                    out.push(json!({"subnet_id": si.id, "ip_address": fmt_ip(si.cidr.version, ip)}));
                    if si.cidr.version == 4 {
                        done_v4 = true;
                    } else {
                        done_v6 = true;
                    }
                }
            }
            if tried_any && !done_v4 && !done_v6 {
                return Err(NetError::IpExhausted(network_id.to_string()));
            }
        }
    }
    Ok(out)
}

async fn release_ips(tx: &mut Tx, ips: &[Value]) -> NetResult<()> {
    for i in ips {
        let (Some(sid), Some((_, ip))) = (i["subnet_id"].as_str(), i["ip_address"].as_str().and_then(parse_ip)) else {
            continue;
        };
        if let Some(s) = store::get(&mut **tx, kind::SUBNET, sid).await? {
            ipam::release(tx, &info(&s)?, ip).await?;
        }
    }
    Ok(())
}

async fn claim_mac(tx: &mut Tx, network_id: &str, mac: &str, port_id: &str) -> NetResult<bool> {
    let mut q = Query::new("INSERT INTO network_mac_addresses (network_id, mac_address, port_id) VALUES (");
    q.bind(network_id).push(", ").bind(mac).push(", ").bind(port_id).push(") ON CONFLICT DO NOTHING");
    Ok(q.execute(&mut **tx).await? == 1)
}

async fn release_mac(tx: &mut Tx, network_id: &str, mac: &str) -> NetResult<()> {
    let mut q = Query::new("DELETE FROM network_mac_addresses WHERE network_id = ");
    q.bind(network_id).push(" AND mac_address = ").bind(mac);
    q.execute(&mut **tx).await?;
    Ok(())
}

fn validate_pairs(v: &Value, mac: &str) -> NetResult<Value> {
    let arr = v.as_array().ok_or_else(|| invalid(format!("Allowed address pairs must be a list: '{v}'")))?;
    let mut out: Vec<Value> = Vec::new();
    for p in arr {
        let ip = p
            .get("ip_address")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("AllowedAddressPair must contain ip_address"))?;
        let ip = if ip.contains('/') {
            Cidr::parse(ip, false).map_err(invalid)?;
            ip.to_string()
        } else {
            crate::subnets::canonical_ip(ip)?
        };
        let m = match p.get("mac_address").and_then(Value::as_str) {
            Some(m) => canonical_mac(m).ok_or_else(|| invalid(format!("'{m}' is not a valid MAC address")))?,
            None => mac.to_string(),
        };
        let e = json!({"ip_address": ip, "mac_address": m});
        if out.contains(&e) {
            return Err(NetError::BadRequest(
                "DuplicateAddressPairInRequest",
                format!("Request contains duplicate address pair: mac_address {m} ip_address {ip}."),
            ));
        }
        out.push(e);
    }
    Ok(Value::Array(out))
}

async fn resolve_groups(
    tx: &mut Tx,
    ctx: &RequestContext,
    cfg: &NetworkConfig,
    project: &str,
    v: Option<&Value>,
) -> NetResult<Vec<String>> {
    match v {
        None => Ok(vec![crate::secgroups::ensure_default(tx, cfg, project).await?]),
        Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for g in a {
                let id = g.as_str().ok_or_else(|| invalid(format!("'{g}' is not a valid security group id")))?;
                let sg = store::get(&mut **tx, kind::SECURITY_GROUP, id).await?;
                match sg {
                    Some(sg)
                        if ctx.is_admin() || store::s(&sg, "project_id") == project || sg["shared"] == json!(true) => {}
                    _ => return Err(not_found("Security group", id)),
                }
                if !out.contains(&id.to_string()) {
                    out.push(id.to_string());
                }
            }
            Ok(out)
        }
        Some(x) => Err(invalid(format!("'{x}' is not a list"))),
    }
}

/// Creates a port from a request object, as the API and other modules (routers,
/// floating IPs) do.
pub(crate) async fn create_port(
    st: &S,
    ctx: &RequestContext,
    obj: Map<String, Value>,
    project: String,
) -> NetResult<Value> {
    let network_id = opt_str(&obj, "network_id")?.ok_or_else(|| invalid("network_id is required"))?;
    let network = crate::networks::find(st, ctx, &network_id).await?;
    let device_owner = opt_str(&obj, "device_owner")?.unwrap_or_default();
    let target = json!({"tenant_id": project, "project_id": project, "network:tenant_id": store::s(&network, "project_id"), "device_owner": device_owner});
    let ov = Value::Object(obj.clone());
    enforce_attrs(
        &st.policy,
        "create_port",
        &["mac_address", "binding:host_id", "binding:profile"],
        ctx,
        &ov,
        &target,
    )?;
    if obj.get("fixed_ips").and_then(Value::as_array).is_some_and(|a| a.iter().any(|i| i.get("ip_address").is_some())) {
        enforce(&st.policy, "create_port:fixed_ips:ip_address", ctx, &target)?;
    }
    if device_owner.starts_with("network:")
        && !(ctx.is_admin() || ctx.project_id.as_deref() == Some(store::s(&network, "project_id")))
    {
        enforce(&st.policy, "create_port:device_owner", ctx, &target)
            .or(Err(NetError::Forbidden("(rule:create_port:device_owner) is disallowed by policy".into())))?;
    }
    let mac_req = match opt_str(&obj, "mac_address")? {
        Some(m) => Some(canonical_mac(&m).ok_or_else(|| invalid(format!("'{m}' is not a valid MAC address")))?),
        None => None,
    };
    let vnic = opt_str(&obj, "binding:vnic_type")?.unwrap_or_else(|| "normal".into());
    if !VNIC_TYPES.contains(&vnic.as_str()) {
        return Err(invalid(format!("'{vnic}' is not in {VNIC_TYPES:?}")));
    }
    let port_security =
        opt_bool(&obj, "port_security_enabled")?.unwrap_or(network["port_security_enabled"].as_bool().unwrap_or(true));
    let dns_name = opt_str(&obj, "dns_name")?.unwrap_or_default();
    if !dns_name.is_empty() {
        validate_dns_name(&dns_name)?;
    }
    let mut body = store::new_body(&project);
    let id = store::s(&Value::Object(body.clone()), "id").to_string();
    body.insert("name".into(), json!(opt_str(&obj, "name")?.unwrap_or_default()));
    body.insert("description".into(), json!(opt_str(&obj, "description")?.unwrap_or_default()));
    body.insert("network_id".into(), json!(network_id));
    body.insert("admin_state_up".into(), json!(opt_bool(&obj, "admin_state_up")?.unwrap_or(true)));
    body.insert("status".into(), json!("DOWN"));
    body.insert("device_id".into(), json!(opt_str(&obj, "device_id")?.unwrap_or_default()));
    body.insert("device_owner".into(), json!(device_owner));
    body.insert("binding:host_id".into(), json!(opt_str(&obj, "binding:host_id")?.unwrap_or_default()));
    body.insert(
        "binding:profile".into(),
        obj.get("binding:profile").cloned().filter(|v| v.is_object()).unwrap_or(json!({})),
    );
    body.insert("binding:vnic_type".into(), json!(vnic));
    body.insert("port_security_enabled".into(), json!(port_security));
    body.insert("dns_name".into(), json!(dns_name));
    body.insert("dns_domain".into(), json!(opt_str(&obj, "dns_domain")?.unwrap_or_default()));
    body.insert("extra_dhcp_opts".into(), crate::dhcp_opts::validate(obj.get("extra_dhcp_opts"))?);
    body.insert("qos_policy_id".into(), Value::Null);
    body.insert("qos_network_policy_id".into(), Value::Null);
    body.insert("propagate_uplink_status".into(), json!(opt_bool(&obj, "propagate_uplink_status")?.unwrap_or(false)));
    body.insert("ip_allocation".into(), json!("immediate"));
    body.insert("resource_request".into(), Value::Null);
    body.insert("tags".into(), json!(crate::networks::tags_of(&obj)?));
    let mut body = Value::Object(body);
    set_binding(&mut body);
    let pairs_req = obj.get("allowed_address_pairs").cloned().filter(|v| !v.is_null());
    if pairs_req.as_ref().is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())) && !port_security {
        return Err(NetError::Conflict(
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.".into(),
        ));
    }
    let sg_req =
        if device_owner.starts_with("network:") || !port_security {
            match obj.get("security_groups") {
                Some(Value::Array(a)) if !a.is_empty() && !port_security => return Err(NetError::BadRequest(
                    "PortSecurityAndIPRequiredForSecurityGroups",
                    "Port security must be enabled and port must have an IP address in order to use security groups."
                        .into(),
                )),
                Some(v) => Some(v.clone()),
                None => Some(Value::Null),
            }
        } else {
            obj.get("security_groups").cloned()
        };
    let fixed_req = obj.get("fixed_ips").cloned();
    let (st2, ctx2) = (st.clone(), ctx.clone());
    let _turn = st.ip_locks.lock(&st.db, &network_id).await;
    let created = st
        .db
        .transaction(|tx| {
            let (mut body, st, ctx, project, network_id, id) = (body.clone(), st2.clone(), ctx2.clone(), project.clone(), network_id.clone(), id.clone());
            let (mac_req, pairs_req, sg_req, fixed_req, device_owner) = (mac_req.clone(), pairs_req.clone(), sg_req.clone(), fixed_req.clone(), device_owner.clone());
            Box::pin(async move {
                quotas::check(tx, &st.cfg, &project, "port", 1).await?;
                let mac = match mac_req {
                    Some(m) => {
                        if !claim_mac(tx, &network_id, &m, &id).await? {
                            return Err(NetError::Conflict(
                                "MacAddressInUse",
                                format!("Unable to complete operation for network {network_id}. The mac address {m} is in use."),
                            ));
                        }
                        m
                    }
                    None => {
                        let mut got = None;
                        for _ in 0..32 {
                            let m = random_mac();
                            if claim_mac(tx, &network_id, &m, &id).await? {
                                got = Some(m);
                                break;
                            }
                        }
                        got.ok_or_else(|| NetError::Conflict("MacAddressGenerationFailure", format!("Unable to generate unique mac on network {network_id}.")))?
                    }
                };
                body["mac_address"] = json!(mac);
                let subnets = store::children(&mut **tx, kind::SUBNET, &network_id).await?;
                let requested = match &fixed_req {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(resolve_requests(&network_id, &subnets, v, is_router_owner(&device_owner))?),
                };
                let ips = allocate_ips(tx, &id, &network_id, &mac, &device_owner, &subnets, requested).await?;
                body["fixed_ips"] = json!(ips);
                body["allowed_address_pairs"] = match &pairs_req {
                    Some(v) => validate_pairs(v, &mac)?,
                    None => json!([]),
                };
                body["security_groups"] = json!(resolve_groups(tx, &ctx, &st.cfg, &project, sg_req.as_ref()).await?);
                dns_assignment(&mut body, &st.cfg.dns_domain);
                store::insert(&mut **tx, kind::PORT, &body, &links(&body)).await?;
                Ok::<_, NetError>(body)
            })
        })
        .await?;
    Ok(created)
}

async fn list(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let items = match q.get("device_id").filter(|_| q.all("device_id").len() == 1) {
        // Compute lists a server's ports by device id: use the index.
        Some(dev) => {
            let rows = store::by_ref(st.db.reader(), kind::PORT, dev).await?;
            let own = ctx.project_id.clone().unwrap_or_default();
            rows.into_iter().filter(|p| ctx.is_admin() || store::s(p, "project_id") == own).collect()
        }
        None => store::visible(st.db.reader(), &ctx, kind::PORT, None).await?,
    };
    let items = items.into_iter().map(|p| present(&st, &ctx, p)).collect();
    Ok(Json(crate::listing::respond("ports", items, &q, &format!("{}/v2.0/ports", st.base))?))
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    let p = find(&st, &ctx, &id).await?;
    Ok(Json(json!({"port": crate::listing::select_fields(present(&st, &ctx, p), &q)})))
}

async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let obj = req_obj(&req, "port")?;
    check_attrs(&obj, ATTRS)?;
    let project = owner_project(&ctx, &obj)?;
    enforce(&st.policy, "create_port", &ctx, &json!({"tenant_id": project, "project_id": project}))?;
    let p = create_port(&st, &ctx, obj, project).await?;
    Ok((StatusCode::CREATED, Json(json!({"port": present(&st, &ctx, p)}))))
}

/// Applies an update request to a port (API and router/floating IP internals).
pub(crate) async fn update_port(st: &S, ctx: &RequestContext, id: &str, obj: Map<String, Value>) -> NetResult<Value> {
    let cur = find(st, ctx, id).await?;
    let network = store::get(st.db.reader(), kind::NETWORK, store::s(&cur, "network_id")).await?.unwrap_or(Value::Null);
    let mut target = cur.clone();
    target["network:tenant_id"] = json!(store::s(&network, "project_id"));
    enforce(&st.policy, "update_port", ctx, &target)?;
    let ov = Value::Object(obj.clone());
    enforce_attrs(
        &st.policy,
        "update_port",
        &["binding:host_id", "binding:profile", "mac_address"],
        ctx,
        &ov,
        &target,
    )?;
    if obj.get("fixed_ips").and_then(Value::as_array).is_some_and(|a| a.iter().any(|i| i.get("ip_address").is_some())) {
        enforce(&st.policy, "update_port:fixed_ips:ip_address", ctx, &target)?;
    }
    for ro in ["network_id", "tenant_id", "project_id"] {
        if obj.get(ro).is_some_and(|v| v.as_str() != Some(store::s(&cur, ro))) {
            return Err(invalid(format!("Cannot update read-only attribute {ro}")));
        }
    }
    if let Some(v) = opt_str(&obj, "binding:vnic_type")? {
        if !VNIC_TYPES.contains(&v.as_str()) {
            return Err(invalid(format!("'{v}' is not in {VNIC_TYPES:?}")));
        }
    }
    if let Some(d) = opt_str(&obj, "dns_name")? {
        if !d.is_empty() {
            validate_dns_name(&d)?;
        }
    }
    let (st2, ctx2) = (st.clone(), ctx.clone());
    st.db
        .transaction(|tx| {
            let (obj, id, st, ctx) = (obj.clone(), id.to_string(), st2.clone(), ctx2.clone());
            Box::pin(async move {
                let mut p = store::get(&mut **tx, kind::PORT, &id).await?.ok_or_else(|| not_found("Port", &id))?;
                let old_host = store::s(&p, "binding:host_id").to_string();
                let network_id = store::s(&p, "network_id").to_string();
                let old_mac = store::s(&p, "mac_address").to_string();
                crate::apply_simple(
                    &mut p,
                    &obj,
                    &["name", "description", "admin_state_up", "device_id", "device_owner", "binding:host_id", "binding:vnic_type", "dns_name", "dns_domain", "port_security_enabled", "propagate_uplink_status"],
                )?;
                if let Some(pr) = obj.get("binding:profile") {
                    p["binding:profile"] = if pr.is_object() { pr.clone() } else { json!({}) };
                }
                if let Some(o) = obj.get("extra_dhcp_opts") {
                    p["extra_dhcp_opts"] = crate::dhcp_opts::merge(&p["extra_dhcp_opts"], o)?;
                }
                if let Some(m) = opt_str(&obj, "mac_address")? {
                    let m = canonical_mac(&m).ok_or_else(|| invalid(format!("'{m}' is not a valid MAC address")))?;
                    if m != old_mac {
                        if !store::s(&p, "binding:host_id").is_empty() && store::s(&p, "binding:vif_type") != "unbound" {
                            return Err(NetError::Conflict("PortBound", format!("Unable to complete operation on port {id}, port is already bound, port type: bridge, old_mac {old_mac}, new_mac {m}.")));
                        }
                        if !claim_mac(tx, &network_id, &m, &id).await? {
                            return Err(NetError::Conflict("MacAddressInUse", format!("Unable to complete operation for network {network_id}. The mac address {m} is in use.")));
                        }
                        release_mac(tx, &network_id, &old_mac).await?;
                        p["mac_address"] = json!(m);
                    }
                }
                if let Some(v) = obj.get("fixed_ips") {
                    let subnets = store::children(&mut **tx, kind::SUBNET, &network_id).await?;
                    let old = p["fixed_ips"].as_array().cloned().unwrap_or_default();
                    let router_port = is_router_owner(store::s(&p, "device_owner"));
                    let reqs = if v.is_null() { vec![] } else { resolve_requests(&network_id, &subnets, v, router_port)? };
                    // Keep addresses the request repeats; release the rest; allocate the new ones.
                    let mut keep = Vec::new();
                    let mut new_reqs = Vec::new();
                    for r in reqs {
                        let sid = store::s(&r.subnet, "id").to_string();
                        let hit = old.iter().find(|o| {
                            o["subnet_id"] == json!(sid)
                                && r.ip.is_none_or(|ip| o["ip_address"].as_str().and_then(parse_ip).map(|x| x.1) == Some(ip))
                                && !keep.contains(*o)
                        });
                        match hit {
                            Some(o) if r.ip.is_some() => keep.push(o.clone()),
                            _ => new_reqs.push(r),
                        }
                    }
                    let drop: Vec<Value> = old.iter().filter(|o| !keep.contains(o)).cloned().collect();
                    release_ips(tx, &drop).await?;
                    let mac = store::s(&p, "mac_address").to_string();
                    let owner = store::s(&p, "device_owner").to_string();
                    let mut ips = keep;
                    ips.extend(allocate_ips(tx, &id, &network_id, &mac, &owner, &subnets, Some(new_reqs)).await?);
                    p["fixed_ips"] = json!(ips);
                }
                let port_security = p["port_security_enabled"].as_bool().unwrap_or(true);
                if let Some(v) = obj.get("allowed_address_pairs") {
                    let mac = store::s(&p, "mac_address").to_string();
                    p["allowed_address_pairs"] = if v.is_null() { json!([]) } else { validate_pairs(v, &mac)? };
                }
                if obj.contains_key("security_groups") {
                    let project = store::s(&p, "project_id").to_string();
                    let groups = resolve_groups(tx, &ctx, &st.cfg, &project, Some(obj.get("security_groups").unwrap_or(&Value::Null))).await?;
                    p["security_groups"] = json!(groups);
                }
                if !port_security {
                    if p["security_groups"].as_array().is_some_and(|a| !a.is_empty()) {
                        return Err(NetError::Conflict(
                            "PortSecurityPortHasSecurityGroup",
                            "Port has security group associated. Cannot disable port security or ip address until security group is removed".into(),
                        ));
                    }
                    if p["allowed_address_pairs"].as_array().is_some_and(|a| !a.is_empty()) {
                        return Err(NetError::Conflict(
                            "AddressPairAndPortSecurityRequired",
                            "Port Security must be enabled in order to have allowed address pairs on a port.".into(),
                        ));
                    }
                }
                if obj.contains_key("tags") {
                    p["tags"] = json!(crate::networks::tags_of(&obj)?);
                }
                if obj.contains_key("binding:host_id") {
                    set_binding(&mut p);
                    // Rebound or unbound: DOWN until the new host's agent wires it (Neutron).
                    if store::s(&p, "binding:host_id") != old_host {
                        p["status"] = json!("DOWN");
                    }
                }
                dns_assignment(&mut p, &st.cfg.dns_domain);
                store::touch(&mut p);
                store::update(&mut **tx, kind::PORT, &p, &links(&p)).await?;
                Ok::<_, NetError>(p)
            })
        })
        .await
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj = req_obj(&req, "port")?;
    check_attrs(&obj, ATTRS)?;
    let p = update_port(&st, &ctx, &id, obj).await?;
    Ok(Json(json!({"port": present(&st, &ctx, p)})))
}

/// Deletes a port inside a transaction: addresses and MAC released, floating IPs
/// disassociated.
pub(crate) async fn delete_in_tx(tx: &mut Tx, p: &Value) -> NetResult<()> {
    let id = store::s(p, "id").to_string();
    release_ips(tx, p["fixed_ips"].as_array().map(Vec::as_slice).unwrap_or(&[])).await?;
    release_mac(tx, store::s(p, "network_id"), store::s(p, "mac_address")).await?;
    for mut fip in store::by_ref(&mut **tx, kind::FLOATINGIP, &id).await? {
        crate::routers::clear_association(&mut fip);
        store::touch(&mut fip);
        store::update(&mut **tx, kind::FLOATINGIP, &fip, &crate::routers::fip_links(&fip)).await?;
    }
    store::delete(&mut **tx, kind::PORT, &id).await?;
    Ok(())
}

async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let cur = find(&st, &ctx, &id).await?;
    let network = store::get(st.db.reader(), kind::NETWORK, store::s(&cur, "network_id")).await?.unwrap_or(Value::Null);
    let mut target = cur.clone();
    target["network:tenant_id"] = json!(store::s(&network, "project_id"));
    enforce(&st.policy, "delete_port", &ctx, &target)?;
    let owner = store::s(&cur, "device_owner");
    if matches!(owner, "network:router_interface" | "network:router_gateway" | "network:floatingip")
        && !store::s(&cur, "device_id").is_empty()
    {
        return Err(NetError::Conflict(
            "ServicePortInUse",
            format!("Port {id} cannot be deleted directly via the port API: has device owner {owner}."),
        ));
    }
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                let p = store::get(&mut **tx, kind::PORT, &id).await?.ok_or_else(|| not_found("Port", &id))?;
                delete_in_tx(tx, &p).await
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a port's status (the network agent reports ACTIVE once wired).
pub(crate) async fn set_status(st: &S, id: &str, status: &str) -> NetResult<Value> {
    if !matches!(status, "ACTIVE" | "DOWN" | "BUILD" | "ERROR") {
        return Err(invalid(format!("'{status}' is not a port status")));
    }
    st.db
        .transaction(|tx| {
            let (id, status) = (id.to_string(), status.to_string());
            Box::pin(async move {
                let mut p = store::get(&mut **tx, kind::PORT, &id).await?.ok_or_else(|| not_found("Port", &id))?;
                p["status"] = json!(status);
                store::touch(&mut p);
                store::update(&mut **tx, kind::PORT, &p, &links(&p)).await?;
                Ok::<_, NetError>(p)
            })
        })
        .await
}
