//! Ports: MAC allocation, fixed IPs through IPAM, bindings, security groups, address
//! pairs, DNS assignment. Compute creates/binds/deletes ports through this API
//! (`device_owner=compute:<az>`, `device_id=<server>`, `binding:host_id=<host>`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};
use stratus_db::{Query, Tx};

use crate::body::{self, Bool, Dict, Field, List, Name, Opt, ProjectId, Raw, Tags, Text, Uuid};
use crate::error::{invalid, not_found, NetError, NetResult};
use crate::ip::{canonical_mac, eui64, fmt_ip, parse_ip, random_mac, Cidr};
use crate::ipam;
use crate::policy::{enforce, enforce_attrs};
use crate::store::{self, kind, Links};
use crate::subnets::info;
use crate::{no_qos, owner, quotas, NetworkConfig, S};

/// Port routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/ports", get(list).post(create))
        .route("/v2.0/ports/{id}", get(show).put(update).delete(remove))
}

/// Every attribute of a port: a request naming anything else is refused.
const ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "network_id",
    "admin_state_up",
    "mac_address",
    "fixed_ips",
    "device_id",
    "device_owner",
    "tenant_id",
    "project_id",
    "status",
    "binding:host_id",
    "binding:profile",
    "binding:vnic_type",
    "binding:vif_type",
    "binding:vif_details",
    "allowed_address_pairs",
    "port_security_enabled",
    "security_groups",
    "dns_name",
    "dns_domain",
    "dns_assignment",
    "extra_dhcp_opts",
    "qos_policy_id",
    "qos_network_policy_id",
    "propagate_uplink_status",
    "ip_allocation",
    "resource_request",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// One requested fixed IP: a subnet, an address, or both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FixedIp {
    /// The subnet to take the address from.
    pub subnet_id: Opt<Uuid>,
    /// The address itself.
    pub ip_address: Opt<Text<64>>,
}

impl FixedIp {
    /// An address on `subnet_id` (the gateway address of a router interface, say).
    pub fn on(subnet_id: &str, ip_address: Option<&str>) -> Self {
        FixedIp { subnet_id: Uuid::from(subnet_id).into(), ip_address: Opt(ip_address.map(Text::from)) }
    }
}

/// `POST /v2.0/ports` (one port or one item of a bulk request), and what routers,
/// floating IPs and DHCP scheduling ask for internally.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PortCreate {
    pub name: Opt<Name>,
    pub description: Opt<Name>,
    pub network_id: Opt<Uuid>,
    pub admin_state_up: Opt<Bool>,
    pub mac_address: Opt<Text<64>>,
    pub fixed_ips: Field<List<FixedIp>>,
    pub device_id: Opt<Text<255>>,
    pub device_owner: Opt<Text<255>>,
    #[serde(rename = "binding:host_id")]
    pub host_id: Opt<Text<255>>,
    #[serde(rename = "binding:profile")]
    pub profile: Field<Dict>,
    #[serde(rename = "binding:vnic_type")]
    pub vnic_type: Opt<Text<64>>,
    pub allowed_address_pairs: Field<Raw>,
    pub port_security_enabled: Opt<Bool>,
    pub security_groups: Field<List<Uuid>>,
    pub dns_name: Opt<Text<255>>,
    pub dns_domain: Opt<Text<255>>,
    pub tenant_id: Opt<ProjectId>,
    pub project_id: Opt<ProjectId>,
    pub tags: Field<Tags>,
    pub extra_dhcp_opts: Field<Raw>,
    pub qos_policy_id: Field<Uuid>,
    pub propagate_uplink_status: Opt<Bool>,
}

/// `PUT /v2.0/ports/{id}`, and internal updates (router interfaces, DHCP scheduling).
/// `network_id` and the project may be repeated, unchanged (compute sends them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PortUpdate {
    pub name: Opt<Name>,
    pub description: Opt<Name>,
    pub network_id: Opt<Uuid>,
    pub tenant_id: Opt<ProjectId>,
    pub project_id: Opt<ProjectId>,
    pub admin_state_up: Opt<Bool>,
    pub mac_address: Opt<Text<64>>,
    pub fixed_ips: Field<List<FixedIp>>,
    pub device_id: Opt<Text<255>>,
    pub device_owner: Opt<Text<255>>,
    #[serde(rename = "binding:host_id")]
    pub host_id: Opt<Text<255>>,
    #[serde(rename = "binding:profile")]
    pub profile: Field<Dict>,
    #[serde(rename = "binding:vnic_type")]
    pub vnic_type: Opt<Text<64>>,
    pub allowed_address_pairs: Field<Raw>,
    pub port_security_enabled: Opt<Bool>,
    pub security_groups: Field<List<Uuid>>,
    pub dns_name: Opt<Text<255>>,
    pub dns_domain: Opt<Text<255>>,
    pub tags: Field<Tags>,
    pub extra_dhcp_opts: Field<Raw>,
    pub qos_policy_id: Field<Uuid>,
    pub propagate_uplink_status: Opt<Bool>,
}

/// The attributes present in a request whose use policy restricts, as a document
/// `enforce_attrs` can read.
fn restricted(mac: bool, host: bool, profile: bool) -> Value {
    let on = |b: bool| if b { json!(true) } else { Value::Null };
    json!({"mac_address": on(mac), "binding:host_id": on(host), "binding:profile": on(profile)})
}

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

pub(crate) fn is_router_owner(owner: &str) -> bool {
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
fn resolve_requests(
    network_id: &str,
    subnets: &[Value],
    reqs: &[FixedIp],
    router_port: bool,
) -> NetResult<Vec<IpRequest>> {
    let mut out = Vec::new();
    for e in reqs {
        let sid = e.subnet_id.opt();
        let sid = sid.as_deref();
        let ip = match e.ip_address.opt() {
            None => None,
            Some(s) => Some(parse_ip(&s).ok_or_else(|| invalid(format!("'{s}' is not a valid IP address")))?),
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

/// The security groups a port asks for: `None` = the project's default group.
async fn resolve_groups(
    tx: &mut Tx,
    ctx: &RequestContext,
    cfg: &NetworkConfig,
    project: &str,
    wanted: Option<&[String]>,
) -> NetResult<Vec<String>> {
    let Some(wanted) = wanted else {
        return Ok(vec![crate::secgroups::ensure_default(tx, cfg, project).await?]);
    };
    let mut out: Vec<String> = Vec::new();
    for id in wanted {
        let sg = store::get(&mut **tx, kind::SECURITY_GROUP, id).await?;
        match sg {
            Some(sg) if ctx.is_admin() || store::s(&sg, "project_id") == project || sg["shared"] == json!(true) => {}
            _ => return Err(not_found("Security group", id)),
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// The security group ids a request names: absent → `None` (the default group), null →
/// none.
fn wanted_groups(f: &Field<List<Uuid>>) -> Option<Vec<String>> {
    match f {
        Field::Absent => None,
        Field::Null => Some(vec![]),
        Field::Set(l) => Some(l.0.iter().map(|u| u.0.clone()).collect()),
    }
}

/// A port request checked (policy included) and ready to be written.
#[derive(Debug, Clone)]
pub(crate) struct NewPort {
    body: Value,
    ctx: RequestContext,
    network_id: String,
    device_owner: String,
    mac: Option<String>,
    pairs: Option<Value>,
    groups: Option<Vec<String>>,
    fixed: Option<Vec<FixedIp>>,
}

/// Validates a port request against its network and policy; writes nothing.
pub(crate) async fn prepare_port(st: &S, ctx: &RequestContext, req: PortCreate, project: String) -> NetResult<NewPort> {
    let network_id = req.network_id.opt().ok_or_else(|| {
        NetError::BadRequest(
            "HTTPBadRequest",
            "Failed to parse request. Required attribute 'network_id' not specified".into(),
        )
    })?;
    let network = crate::networks::find(st, ctx, &network_id).await?;
    let device_owner = req.device_owner.or_empty();
    let target = json!({"tenant_id": project, "project_id": project, "network:tenant_id": store::s(&network, "project_id"), "device_owner": device_owner});
    let ov = restricted(req.mac_address.present(), req.host_id.present(), req.profile.present());
    enforce_attrs(
        &st.policy,
        "create_port",
        &["mac_address", "binding:host_id", "binding:profile"],
        ctx,
        &ov,
        &target,
    )?;
    if req.fixed_ips.get().is_some_and(|l| l.0.iter().any(|i| i.ip_address.present())) {
        enforce(&st.policy, "create_port:fixed_ips:ip_address", ctx, &target)?;
    }
    if device_owner.starts_with("network:")
        && !(ctx.is_admin() || ctx.project_id.as_deref() == Some(store::s(&network, "project_id")))
    {
        enforce(&st.policy, "create_port:device_owner", ctx, &target)
            .or(Err(NetError::Forbidden("(rule:create_port:device_owner) is disallowed by policy".into())))?;
    }
    no_qos(&req.qos_policy_id)?;
    let mac = match req.mac_address.opt() {
        Some(m) => Some(canonical_mac(&m).ok_or_else(|| invalid(format!("'{m}' is not a valid MAC address")))?),
        None => None,
    };
    let vnic = req.vnic_type.opt().unwrap_or_else(|| "normal".into());
    if !VNIC_TYPES.contains(&vnic.as_str()) {
        return Err(invalid(format!("'{vnic}' is not in {VNIC_TYPES:?}")));
    }
    let port_security = req.port_security_enabled.or(network["port_security_enabled"].as_bool().unwrap_or(true));
    let dns_name = req.dns_name.or_empty();
    if !dns_name.is_empty() {
        validate_dns_name(&dns_name)?;
    }
    let mut body = store::new_body(&project);
    body.insert("name".into(), json!(req.name.or_empty()));
    body.insert("description".into(), json!(req.description.or_empty()));
    body.insert("network_id".into(), json!(network_id));
    body.insert("admin_state_up".into(), json!(req.admin_state_up.or(true)));
    body.insert("status".into(), json!("DOWN"));
    body.insert("device_id".into(), json!(req.device_id.or_empty()));
    body.insert("device_owner".into(), json!(device_owner));
    body.insert("binding:host_id".into(), json!(req.host_id.or_empty()));
    body.insert("binding:profile".into(), json!(req.profile.get().map(|d| d.0.clone()).unwrap_or_default()));
    body.insert("binding:vnic_type".into(), json!(vnic));
    body.insert("port_security_enabled".into(), json!(port_security));
    body.insert("dns_name".into(), json!(dns_name));
    body.insert("dns_domain".into(), json!(req.dns_domain.or_empty()));
    body.insert("extra_dhcp_opts".into(), crate::dhcp_opts::validate(req.extra_dhcp_opts.get())?);
    body.insert("qos_policy_id".into(), Value::Null);
    body.insert("qos_network_policy_id".into(), Value::Null);
    body.insert("propagate_uplink_status".into(), json!(req.propagate_uplink_status.or(false)));
    body.insert("ip_allocation".into(), json!("immediate"));
    body.insert("resource_request".into(), Value::Null);
    body.insert("tags".into(), json!(crate::networks::tags(&req.tags)));
    let mut body = Value::Object(body);
    set_binding(&mut body);
    let pairs = req.allowed_address_pairs.get().cloned();
    if pairs.as_ref().is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())) && !port_security {
        return Err(NetError::Conflict(
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.".into(),
        ));
    }
    let requested = wanted_groups(&req.security_groups);
    let groups =
        if device_owner.starts_with("network:") || !port_security {
            match requested {
                Some(g) if !g.is_empty() && !port_security => return Err(NetError::BadRequest(
                    "PortSecurityAndIPRequiredForSecurityGroups",
                    "Port security must be enabled and port must have an IP address in order to use security groups."
                        .into(),
                )),
                Some(g) => Some(g),
                None => Some(vec![]),
            }
        } else {
            requested
        };
    Ok(NewPort {
        body,
        ctx: ctx.clone(),
        network_id,
        device_owner,
        mac,
        pairs,
        groups,
        fixed: req.fixed_ips.get().map(|l| l.0.clone()),
    })
}

/// Writes a prepared port inside `tx`: quota, MAC, addresses, groups, row.
async fn insert_port(tx: &mut Tx, st: &S, n: &NewPort) -> NetResult<Value> {
    let mut body = n.body.clone();
    let (id, project) = (store::s(&body, "id").to_string(), store::s(&body, "project_id").to_string());
    let network_id = &n.network_id;
    quotas::check(tx, &st.cfg, &project, "port", 1).await?;
    let mac = match &n.mac {
        Some(m) => {
            if !claim_mac(tx, network_id, m, &id).await? {
                return Err(NetError::Conflict(
                    "MacAddressInUse",
                    format!("Unable to complete operation for network {network_id}. The mac address {m} is in use."),
                ));
            }
            m.clone()
        }
        None => {
            let mut got = None;
            for _ in 0..32 {
                let m = random_mac();
                if claim_mac(tx, network_id, &m, &id).await? {
                    got = Some(m);
                    break;
                }
            }
            got.ok_or_else(|| {
                NetError::Conflict(
                    "MacAddressGenerationFailure",
                    format!("Unable to generate unique mac on network {network_id}."),
                )
            })?
        }
    };
    body["mac_address"] = json!(mac);
    let subnets = store::children(&mut **tx, kind::SUBNET, network_id).await?;
    let requested = match &n.fixed {
        None => None,
        Some(f) => Some(resolve_requests(network_id, &subnets, f, is_router_owner(&n.device_owner))?),
    };
    let ips = allocate_ips(tx, &id, network_id, &mac, &n.device_owner, &subnets, requested).await?;
    body["fixed_ips"] = json!(ips);
    body["allowed_address_pairs"] = match &n.pairs {
        Some(v) => validate_pairs(v, &mac)?,
        None => json!([]),
    };
    body["security_groups"] = json!(resolve_groups(tx, &n.ctx, &st.cfg, &project, n.groups.as_deref()).await?);
    dns_assignment(&mut body, &st.cfg.dns_domain);
    store::insert(&mut **tx, kind::PORT, &body, &links(&body)).await?;
    Ok(body)
}

/// Creates ports all-or-none: one transaction for all of them, taking (on PostgreSQL)
/// each network's allocation turn in a fixed order so two bulk requests cannot deadlock.
pub(crate) async fn create_ports(st: &S, ports: Vec<NewPort>) -> NetResult<Vec<Value>> {
    let mut nets: Vec<&str> = ports.iter().map(|p| p.network_id.as_str()).collect();
    nets.sort_unstable();
    nets.dedup();
    let mut turns = Vec::with_capacity(nets.len());
    for n in nets {
        turns.push(st.ip_locks.lock(&st.db, n).await);
    }
    let ports = std::sync::Arc::new(ports);
    st.db
        .transaction(|tx| {
            let (ports, st) = (ports.clone(), st.clone());
            Box::pin(async move {
                let mut out = Vec::with_capacity(ports.len());
                for p in ports.iter() {
                    out.push(insert_port(tx, &st, p).await?);
                }
                Ok::<_, NetError>(out)
            })
        })
        .await
}

/// Creates one port, as the API and other modules (routers, floating IPs, DHCP
/// scheduling) do.
pub(crate) async fn create_port(st: &S, ctx: &RequestContext, req: PortCreate, project: String) -> NetResult<Value> {
    let p = prepare_port(st, ctx, req, project).await?;
    create_ports(st, vec![p]).await?.pop().ok_or_else(|| invalid("no port created"))
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

/// `POST /v2.0/ports`, one or in bulk (`{"ports": [...]}`, all or none).
async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let (items, bulk) = body::envelope(req, "port", Some("ports"))?;
    let mut prepared = Vec::with_capacity(items.len());
    for obj in items {
        let req: PortCreate = body::parse_create(obj, ATTRS)?;
        let project = owner(&ctx, &req.project_id, &req.tenant_id)?;
        enforce(&st.policy, "create_port", &ctx, &json!({"tenant_id": project, "project_id": project}))?;
        prepared.push(prepare_port(&st, &ctx, req, project).await?);
    }
    let mut shown: Vec<Value> = create_ports(&st, prepared).await?.into_iter().map(|p| present(&st, &ctx, p)).collect();
    let out = if bulk { json!({"ports": shown}) } else { json!({"port": shown.pop()}) };
    Ok((StatusCode::CREATED, Json(out)))
}

/// Applies an update request to a port (API and router/DHCP internals).
pub(crate) async fn update_port(st: &S, ctx: &RequestContext, id: &str, req: PortUpdate) -> NetResult<Value> {
    let cur = find(st, ctx, id).await?;
    let network = store::get(st.db.reader(), kind::NETWORK, store::s(&cur, "network_id")).await?.unwrap_or(Value::Null);
    let mut target = cur.clone();
    target["network:tenant_id"] = json!(store::s(&network, "project_id"));
    enforce(&st.policy, "update_port", ctx, &target)?;
    let ov = restricted(req.mac_address.present(), req.host_id.present(), req.profile.present());
    enforce_attrs(
        &st.policy,
        "update_port",
        &["binding:host_id", "binding:profile", "mac_address"],
        ctx,
        &ov,
        &target,
    )?;
    if req.fixed_ips.get().is_some_and(|l| l.0.iter().any(|i| i.ip_address.present())) {
        enforce(&st.policy, "update_port:fixed_ips:ip_address", ctx, &target)?;
    }
    for (ro, v) in
        [("network_id", req.network_id.opt()), ("tenant_id", req.tenant_id.opt()), ("project_id", req.project_id.opt())]
    {
        if v.is_some_and(|v| v != store::s(&cur, ro)) {
            return Err(NetError::BadRequest("HTTPBadRequest", format!("Cannot update read-only attribute {ro}")));
        }
    }
    if let Some(v) = req.vnic_type.opt() {
        if !VNIC_TYPES.contains(&v.as_str()) {
            return Err(invalid(format!("'{v}' is not in {VNIC_TYPES:?}")));
        }
    }
    if let Some(d) = req.dns_name.opt() {
        if !d.is_empty() {
            validate_dns_name(&d)?;
        }
    }
    no_qos(&req.qos_policy_id)?;
    let mac_req = match req.mac_address.opt() {
        Some(m) => Some(canonical_mac(&m).ok_or_else(|| invalid(format!("'{m}' is not a valid MAC address")))?),
        None => None,
    };
    let req = std::sync::Arc::new(req);
    let (st2, ctx2) = (st.clone(), ctx.clone());
    st.db
        .transaction(|tx| {
            let (req, mac_req, id, st, ctx) = (req.clone(), mac_req.clone(), id.to_string(), st2.clone(), ctx2.clone());
            Box::pin(async move {
                let mut p = store::get(&mut **tx, kind::PORT, &id).await?.ok_or_else(|| not_found("Port", &id))?;
                let old_host = store::s(&p, "binding:host_id").to_string();
                let network_id = store::s(&p, "network_id").to_string();
                let old_mac = store::s(&p, "mac_address").to_string();
                for (k, v) in [
                    ("name", req.name.opt()),
                    ("description", req.description.opt()),
                    ("device_id", req.device_id.opt()),
                    ("device_owner", req.device_owner.opt()),
                    ("binding:host_id", req.host_id.opt()),
                    ("binding:vnic_type", req.vnic_type.opt()),
                    ("dns_name", req.dns_name.opt()),
                    ("dns_domain", req.dns_domain.opt()),
                ] {
                    if let Some(v) = v {
                        p[k] = json!(v);
                    }
                }
                for (k, v) in [
                    ("admin_state_up", req.admin_state_up.opt()),
                    ("port_security_enabled", req.port_security_enabled.opt()),
                    ("propagate_uplink_status", req.propagate_uplink_status.opt()),
                ] {
                    if let Some(v) = v {
                        p[k] = json!(v);
                    }
                }
                if req.profile.present() {
                    p["binding:profile"] = json!(req.profile.get().map(|d| d.0.clone()).unwrap_or_default());
                }
                if let Some(o) = req.extra_dhcp_opts.clone().change() {
                    p["extra_dhcp_opts"] = crate::dhcp_opts::merge(&p["extra_dhcp_opts"], &o.unwrap_or(Value::Null))?;
                }
                if let Some(m) = mac_req {
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
                if let Some(wanted) = req.fixed_ips.clone().change() {
                    let subnets = store::children(&mut **tx, kind::SUBNET, &network_id).await?;
                    let old = p["fixed_ips"].as_array().cloned().unwrap_or_default();
                    let router_port = is_router_owner(store::s(&p, "device_owner"));
                    let wanted = wanted.map(|l| l.0).unwrap_or_default();
                    let reqs = resolve_requests(&network_id, &subnets, &wanted, router_port)?;
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
                if let Some(v) = req.allowed_address_pairs.clone().change() {
                    let mac = store::s(&p, "mac_address").to_string();
                    p["allowed_address_pairs"] = match v {
                        None => json!([]),
                        Some(v) => validate_pairs(&v, &mac)?,
                    };
                }
                if req.security_groups.present() {
                    let project = store::s(&p, "project_id").to_string();
                    let wanted = wanted_groups(&req.security_groups).unwrap_or_default();
                    let groups = resolve_groups(tx, &ctx, &st.cfg, &project, Some(&wanted)).await?;
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
                if req.tags.present() {
                    p["tags"] = json!(crate::networks::tags(&req.tags));
                }
                if req.host_id.present() {
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
    let req: PortUpdate = body::parse_update(body::one(req, "port")?, ATTRS)?;
    let p = update_port(&st, &ctx, &id, req).await?;
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
