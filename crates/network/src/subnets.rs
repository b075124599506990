//! Subnets (IPv4 and IPv6: CIDR, gateway, allocation pools, DNS, host routes, DHCP,
//! SLAAC/DHCPv6 modes) and subnet pools (prefix allocation, default pools).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};
use stratus_db::Tx;

use crate::body::{self, Bool, Field, Int, List, Name, Opt, ProjectId, Raw, Tags, Text, Uuid};
use crate::error::{invalid, not_found, NetError, NetResult};
use crate::ip::{canonical, fmt_ip, parse_ip, range_text, Cidr};
use crate::ipam::{self, SubnetInfo};
use crate::policy::{enforce, enforce_attrs};
use crate::store::{self, kind, Links};
use crate::{owner, quotas, S};

/// Subnet and subnet pool routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/subnets", get(list).post(create))
        .route("/v2.0/subnets/{id}", get(show).put(update).delete(remove))
        .route("/v2.0/subnetpools", get(list_pools).post(create_pool))
        .route("/v2.0/subnetpools/{id}", get(show_pool).put(update_pool).delete(remove_pool))
}

/// Every attribute of a subnet: a request naming anything else is refused.
const ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "network_id",
    "ip_version",
    "cidr",
    "prefixlen",
    "subnetpool_id",
    "use_default_subnet_pool",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "tenant_id",
    "project_id",
    "service_types",
    "segment_id",
    "tags",
    "dns_publish_fixed_ip",
    "router:external",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/subnets`: one subnet, or one item of a bulk request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct SubnetCreate {
    name: Opt<Name>,
    description: Opt<Name>,
    network_id: Opt<Uuid>,
    ip_version: Opt<Int>,
    cidr: Field<Text<64>>,
    prefixlen: Opt<Int>,
    subnetpool_id: Field<Uuid>,
    use_default_subnet_pool: Opt<Bool>,
    gateway_ip: Field<Text<64>>,
    allocation_pools: Field<Raw>,
    dns_nameservers: Field<Raw>,
    host_routes: Field<Raw>,
    enable_dhcp: Opt<Bool>,
    ipv6_ra_mode: Field<Text<32>>,
    ipv6_address_mode: Field<Text<32>>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
    service_types: Field<List<Text<255>>>,
    segment_id: Field<Uuid>,
    tags: Field<Tags>,
    dns_publish_fixed_ip: Opt<Bool>,
}

/// `PUT /v2.0/subnets/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct SubnetUpdate {
    name: Opt<Name>,
    description: Opt<Name>,
    gateway_ip: Field<Text<64>>,
    allocation_pools: Field<Raw>,
    dns_nameservers: Field<Raw>,
    host_routes: Field<Raw>,
    enable_dhcp: Opt<Bool>,
    service_types: Field<List<Text<255>>>,
    segment_id: Field<Uuid>,
    tags: Field<Tags>,
    dns_publish_fixed_ip: Opt<Bool>,
}

/// Segments are not offered (no `segment` extension): a segment id names none.
fn no_segment(f: &Field<Uuid>) -> NetResult<()> {
    match f.get() {
        Some(u) => Err(NetError::NotFoundTyped("SegmentNotFound", format!("Segment {} could not be found.", u.0))),
        None => Ok(()),
    }
}

fn service_types(f: &Field<List<Text<255>>>) -> Value {
    json!(f.get().map(|l| l.0.iter().map(|t| t.0.clone()).collect::<Vec<_>>()).unwrap_or_default())
}

const IPV6_MODES: &[&str] = &["slaac", "dhcpv6-stateful", "dhcpv6-stateless"];

/// The allocator's view of a stored subnet.
pub(crate) fn info(body: &Value) -> NetResult<SubnetInfo> {
    let cidr = Cidr::parse(store::s(body, "cidr"), false).map_err(invalid)?;
    let pools = body
        .get("allocation_pools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| Some((parse_ip(p.get("start")?.as_str()?)?.1, parse_ip(p.get("end")?.as_str()?)?.1)))
        .collect();
    Ok(SubnetInfo { id: store::s(body, "id").into(), network_id: store::s(body, "network_id").into(), cidr, pools })
}

/// A subnet the caller can see, or 404.
pub(crate) async fn find(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::SUBNET, Some(id)).await?.pop().ok_or_else(|| not_found("Subnet", id))
}

fn validate_pools(cidr: &Cidr, gateway: Option<u128>, v: &Value) -> NetResult<Vec<(u128, u128)>> {
    let arr = v.as_array().ok_or_else(|| invalid(format!("Invalid data format for IP pool: '{v}'")))?;
    let mut pools = Vec::new();
    for p in arr {
        let start = p.get("start").and_then(Value::as_str).and_then(parse_ip);
        let end = p.get("end").and_then(Value::as_str).and_then(parse_ip);
        let (Some((v1, a)), Some((v2, b))) = (start, end) else {
            return Err(invalid(format!("Invalid data format for IP pool: '{p}'")));
        };
        let text = format!("{}-{}", p["start"].as_str().unwrap_or(""), p["end"].as_str().unwrap_or(""));
        if v1 != cidr.version || v2 != cidr.version || a > b {
            return Err(NetError::BadRequest(
                "InvalidAllocationPool",
                format!("The allocation pool {text} is not valid."),
            ));
        }
        if !cidr.contains(v1, a) || !cidr.contains(v2, b) || cidr.is_reserved(a) || cidr.is_reserved(b) {
            return Err(NetError::BadRequest(
                "OutOfBoundsAllocationPool",
                format!("The allocation pool {text} spans beyond the subnet cidr {cidr}."),
            ));
        }
        pools.push((a, b));
    }
    let mut sorted = pools.clone();
    sorted.sort();
    for w in sorted.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(NetError::BadRequest(
                "OverlappingAllocationPools",
                format!(
                    "Found overlapping allocation pools: {} {} for subnet {cidr}.",
                    range_text(cidr.version, w[0].0, w[0].1),
                    range_text(cidr.version, w[1].0, w[1].1)
                ),
            ));
        }
    }
    if let Some(g) = gateway {
        if let Some((a, b)) = pools.iter().find(|(a, b)| g >= *a && g <= *b) {
            return Err(NetError::Conflict(
                "GatewayConflictWithAllocationPools",
                format!(
                    "Gateway ip {} conflicts with allocation pool {}",
                    fmt_ip(cidr.version, g),
                    range_text(cidr.version, *a, *b)
                ),
            ));
        }
    }
    Ok(pools)
}

fn validate_dns(v: &Value, version: u8) -> NetResult<Value> {
    let arr = v.as_array().ok_or_else(|| invalid(format!("'{v}' is not a list")))?;
    let mut out: Vec<String> = Vec::new();
    for d in arr {
        let c = d.as_str().and_then(parse_ip).filter(|(ver, _)| *ver == version || version == 0);
        let Some((ver, ip)) = c else { return Err(invalid(format!("'{d}' is not a valid nameserver"))) };
        let s = fmt_ip(ver, ip);
        if out.contains(&s) {
            return Err(invalid(format!("Duplicate nameserver '{s}'")));
        }
        out.push(s);
    }
    Ok(json!(out))
}

fn validate_routes(v: &Value, version: u8) -> NetResult<Value> {
    let arr = v.as_array().ok_or_else(|| invalid(format!("'{v}' is not a list")))?;
    let mut out = Vec::new();
    for r in arr {
        let dest = r.get("destination").and_then(Value::as_str).map(|d| Cidr::parse(d, false));
        let hop = r.get("nexthop").and_then(Value::as_str).and_then(parse_ip);
        match (dest, hop) {
            (Some(Ok(d)), Some((hv, h))) if d.version == version && hv == version => {
                let e = json!({"destination": d.to_string(), "nexthop": fmt_ip(hv, h)});
                if out.contains(&e) {
                    return Err(invalid(format!("Duplicate hostroute '{r}'")));
                }
                out.push(e);
            }
            _ => return Err(invalid(format!("Invalid data format for hostroute: '{r}'"))),
        }
    }
    Ok(Value::Array(out))
}

fn pools_json(version: u8, pools: &[(u128, u128)]) -> Value {
    Value::Array(pools.iter().map(|(a, b)| json!({"start": fmt_ip(version, *a), "end": fmt_ip(version, *b)})).collect())
}

fn parse_gateway(given: &Field<Text<64>>, cidr: &Cidr) -> NetResult<Option<Option<u128>>> {
    match given {
        Field::Absent => Ok(None),
        Field::Null => Ok(Some(None)),
        Field::Set(Text(g)) => {
            let (v, ip) = parse_ip(g).ok_or_else(|| invalid(format!("'{g}' is not a valid IP address")))?;
            if v != cidr.version || cidr.is_reserved(ip) {
                return Err(NetError::BadRequest(
                    "InvalidInput",
                    format!("Invalid input for operation: Gateway is not valid on subnet {g}."),
                ));
            }
            Ok(Some(Some(ip)))
        }
    }
}

/// Carves the first free block of `/prefixlen` out of `pool`'s prefixes.
fn carve(pool: &Value, used: &[Cidr], prefixlen: u8) -> Option<Cidr> {
    for p in pool.get("prefixes").and_then(Value::as_array).into_iter().flatten() {
        let Ok(prefix) = Cidr::parse(p.as_str().unwrap_or(""), false) else { continue };
        if prefixlen < prefix.prefix || prefixlen > prefix.bits() {
            continue;
        }
        let size = Cidr { version: prefix.version, net: 0, prefix: prefixlen }.size();
        let mut start = prefix.first();
        loop {
            let cand = Cidr { version: prefix.version, net: start, prefix: prefixlen };
            if cand.last() > prefix.last() || cand.last() < start {
                break;
            }
            match used.iter().find(|u| u.overlaps(&cand)) {
                None => return Some(cand),
                Some(u) => {
                    let next = u.last().checked_add(1)?;
                    start = next.div_ceil(size).checked_mul(size)?;
                }
            }
        }
    }
    None
}

/// Subnets carry `router:external` (the `subnet-external-network` extension), written with
/// them and kept in step with their network; rows older than that get it from the network.
async fn with_external(st: &S, mut items: Vec<Value>) -> NetResult<Vec<Value>> {
    let mut known: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for s in items.iter_mut().filter(|s| s.get("router:external").is_none()) {
        let net = store::s(s, "network_id").to_string();
        let ext = match known.get(&net) {
            Some(e) => *e,
            None => {
                let n = store::get(st.db.reader(), kind::NETWORK, &net).await?;
                let e = n.is_some_and(|n| n["router:external"] == json!(true));
                known.insert(net, e);
                e
            }
        };
        s["router:external"] = json!(ext);
    }
    Ok(items)
}

async fn list(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let items = with_external(&st, store::visible(st.db.reader(), &ctx, kind::SUBNET, None).await?).await?;
    Ok(Json(crate::listing::respond("subnets", items, &q, &format!("{}/v2.0/subnets", st.base))?))
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    let body = with_external(&st, vec![find(&st, &ctx, &id).await?]).await?.pop().unwrap_or_default();
    Ok(Json(json!({"subnet": crate::listing::select_fields(body, &q)})))
}

/// A subnet request checked (policy included) before anything is written.
#[derive(Debug, Clone)]
struct NewSubnet {
    req: SubnetCreate,
    network_id: String,
    project: String,
    pool: Option<Value>,
    ip_version: Option<i64>,
    ipv6_ra: Option<String>,
    ipv6_addr: Option<String>,
    external: bool,
}

async fn prepare(st: &S, ctx: &RequestContext, obj: serde_json::Map<String, Value>) -> NetResult<NewSubnet> {
    let req: SubnetCreate = body::parse_create(obj, ATTRS)?;
    let network_id = req.network_id.opt().ok_or_else(|| {
        NetError::BadRequest(
            "HTTPBadRequest",
            "Failed to parse request. Required attribute 'network_id' not specified".into(),
        )
    })?;
    let network = crate::networks::find(st, ctx, &network_id).await?;
    let project = owner(ctx, &req.project_id, &req.tenant_id)?;
    let target =
        json!({"tenant_id": project, "project_id": project, "network:tenant_id": store::s(&network, "project_id")});
    enforce(&st.policy, "create_subnet", ctx, &target)?;
    no_segment(&req.segment_id)?;
    let mut ip_version = req.ip_version.opt();
    if let Some(v) = ip_version {
        if v != 4 && v != 6 {
            return Err(NetError::BadRequest(
                "HTTPBadRequest",
                format!("Invalid input for ip_version. Reason: {v} is not in [4, 6]."),
            ));
        }
    }
    // Subnet pool: explicit or the default of the version.
    let mut pool: Option<Value> = None;
    if let Some(pid) = req.subnetpool_id.opt() {
        pool = Some(
            store::visible(st.db.reader(), ctx, kind::SUBNETPOOL, Some(&pid))
                .await?
                .pop()
                .ok_or_else(|| not_found("Subnet pool", &pid))?,
        );
    } else if req.use_default_subnet_pool.or(false) {
        let v = ip_version.unwrap_or(4);
        let pools = store::all(st.db.reader(), kind::SUBNETPOOL).await?;
        pool = Some(
            pools.into_iter().find(|p| p["is_default"] == json!(true) && p["ip_version"] == json!(v)).ok_or_else(
                || {
                    NetError::BadRequest(
                        "BadRequest",
                        format!("Bad subnets request: No default subnetpool found for IPv{v}."),
                    )
                },
            )?,
        );
    }
    if let Some(p) = &pool {
        ip_version = ip_version.or_else(|| p["ip_version"].as_i64());
        if ip_version != p["ip_version"].as_i64() {
            return Err(invalid("Requested ip_version does not match the subnet pool's"));
        }
    }
    if req.cidr.get().is_none() && pool.is_none() {
        return Err(NetError::BadRequest(
            "BadRequest",
            "Bad subnets request: a cidr must be specified in the absence of a subnet pool".into(),
        ));
    }
    let ipv6_ra = req.ipv6_ra_mode.opt();
    let ipv6_addr = req.ipv6_address_mode.opt();
    for (k, m) in [("ipv6_ra_mode", &ipv6_ra), ("ipv6_address_mode", &ipv6_addr)] {
        if let Some(m) = m {
            if !IPV6_MODES.contains(&m.as_str()) {
                return Err(invalid(format!("'{m}' is not in {IPV6_MODES:?}")));
            }
            if ip_version == Some(4) {
                return Err(invalid(format!("{k} is not valid when ip_version is 4")));
            }
        }
    }
    if let (Some(a), Some(b)) = (&ipv6_ra, &ipv6_addr) {
        if a != b {
            return Err(invalid(format!("ipv6_ra_mode set to '{a}' with ipv6_address_mode set to '{b}' is not valid. If both attributes are set, they must be the same value")));
        }
    }
    if (ipv6_ra.is_some() || ipv6_addr.is_some()) && req.enable_dhcp.opt() == Some(false) {
        return Err(invalid("ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False"));
    }
    let external = network["router:external"] == json!(true);
    Ok(NewSubnet { req, network_id, project, pool, ip_version, ipv6_ra, ipv6_addr, external })
}

/// Writes a prepared subnet inside `tx`: quota, CIDR (given or carved from the pool),
/// overlap with the network's other subnets, addresses, row, and the SLAAC addresses of
/// the ports already on the network.
async fn insert(tx: &mut Tx, st: &S, n: &NewSubnet) -> NetResult<Value> {
    let (req, network_id, project) = (&n.req, &n.network_id, &n.project);
    quotas::check(tx, &st.cfg, project, "subnet", 1).await?;
    let siblings = store::children(&mut **tx, kind::SUBNET, network_id).await?;
    let cidr = match (req.cidr.opt(), &n.pool) {
        (Some(c), _) => Cidr::parse(&c, true).map_err(invalid)?,
        (None, Some(p)) => {
            let pid = store::s(p, "id");
            let used: Vec<Cidr> = store::all(&mut **tx, kind::SUBNET)
                .await?
                .iter()
                .filter(|s| store::s(s, "subnetpool_id") == pid)
                .filter_map(|s| Cidr::parse(store::s(s, "cidr"), false).ok())
                .collect();
            let plen = req.prefixlen.opt().or_else(|| p["default_prefixlen"].as_i64()).unwrap_or(24);
            let (min, max) = (p["min_prefixlen"].as_i64().unwrap_or(0), p["max_prefixlen"].as_i64().unwrap_or(128));
            if plen < min || plen > max {
                return Err(invalid(format!(
                    "Illegal prefix bounds: prefixlen={plen}, min_prefixlen={min}, max_prefixlen={max}"
                )));
            }
            carve(p, &used, plen as u8).ok_or_else(|| {
                NetError::Conflict(
                    "SubnetAllocationError",
                    format!("Failed to allocate subnet: Insufficient prefix space to allocate subnet size /{plen}."),
                )
            })?
        }
        (None, None) => return Err(invalid("cidr required")),
    };
    if n.ip_version.is_some_and(|v| v != cidr.version as i64) {
        return Err(invalid(format!("Cidr {cidr} does not match the ip_version")));
    }
    if cidr.version == 4 && cidr.prefix > 32
        || cidr.version == 6 && cidr.prefix > 128
        || cidr.size() < 2 && cidr.version == 4
    {
        return Err(invalid(format!("Invalid CIDR {cidr}")));
    }
    let auto = |m: &Option<String>| matches!(m.as_deref(), Some("slaac") | Some("dhcpv6-stateless"));
    if cidr.version == 6 && (auto(&n.ipv6_addr) || auto(&n.ipv6_ra)) && cidr.prefix != 64 {
        return Err(invalid(format!(
            "Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
        )));
    }
    for s in &siblings {
        if let Ok(o) = Cidr::parse(store::s(s, "cidr"), false) {
            if o.overlaps(&cidr) {
                return Err(invalid(format!(
                    "Requested subnet with cidr: {cidr} for network: {network_id} overlaps with another subnet"
                )));
            }
        }
    }
    let gateway = match parse_gateway(&req.gateway_ip, &cidr)? {
        Some(g) => g,
        None => cidr.default_gateway(),
    };
    let pools = match req.allocation_pools.get() {
        Some(v) => validate_pools(&cidr, gateway, v)?,
        None => cidr.default_pools(gateway),
    };
    let mut body = store::new_body(project);
    body.insert("name".into(), json!(req.name.or_empty()));
    body.insert("description".into(), json!(req.description.or_empty()));
    body.insert("network_id".into(), json!(network_id));
    body.insert("ip_version".into(), json!(cidr.version));
    body.insert("cidr".into(), json!(cidr.to_string()));
    body.insert("gateway_ip".into(), json!(gateway.map(|g| fmt_ip(cidr.version, g))));
    body.insert("allocation_pools".into(), pools_json(cidr.version, &pools));
    body.insert(
        "dns_nameservers".into(),
        match req.dns_nameservers.get() {
            Some(v) => validate_dns(v, cidr.version)?,
            None => json!([]),
        },
    );
    body.insert(
        "host_routes".into(),
        match req.host_routes.get() {
            Some(v) => validate_routes(v, cidr.version)?,
            None => json!([]),
        },
    );
    body.insert("enable_dhcp".into(), json!(req.enable_dhcp.or(true)));
    body.insert("ipv6_ra_mode".into(), json!(n.ipv6_ra));
    body.insert("ipv6_address_mode".into(), json!(n.ipv6_addr));
    body.insert("subnetpool_id".into(), json!(n.pool.as_ref().map(|p| store::s(p, "id").to_string())));
    body.insert("segment_id".into(), Value::Null);
    body.insert("service_types".into(), service_types(&req.service_types));
    body.insert("dns_publish_fixed_ip".into(), json!(req.dns_publish_fixed_ip.or(false)));
    body.insert("tags".into(), json!(crate::networks::tags(&req.tags)));
    body.insert("router:external".into(), json!(n.external));
    let body = Value::Object(body);
    store::insert(&mut **tx, kind::SUBNET, &body, &Links { parent: Some(network_id.clone()), ..Default::default() })
        .await?;
    ipam::init_subnet(tx, store::s(&body, "id"), &pools).await?;
    if cidr.version == 6 && crate::ports::is_auto_address(&body) {
        auto_address_ports(tx, &body, network_id).await?;
    }
    Ok(body)
}

/// `POST /v2.0/subnets`, one or in bulk (`{"subnets": [...]}`, all or none).
async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let (items, bulk) = body::envelope(req, "subnet", Some("subnets"))?;
    let mut prepared = Vec::with_capacity(items.len());
    for obj in items {
        prepared.push(prepare(&st, &ctx, obj).await?);
    }
    let prepared = std::sync::Arc::new(prepared);
    let mut created = st
        .db
        .transaction(|tx| {
            let (prepared, st) = (prepared.clone(), st.clone());
            Box::pin(async move {
                let mut out = Vec::with_capacity(prepared.len());
                for n in prepared.iter() {
                    out.push(insert(tx, &st, n).await?);
                }
                Ok::<_, NetError>(out)
            })
        })
        .await?;
    let out = if bulk { json!({"subnets": created}) } else { json!({"subnet": created.pop()}) };
    Ok((StatusCode::CREATED, Json(out)))
}

/// Neutron's `_add_auto_addrs_on_network_ports`: a new SLAAC/DHCPv6-stateless subnet gives
/// every port already on the network (router interfaces excepted: they take the gateway)
/// its EUI-64 address, as the guests will configure it from the router's advertisements.
async fn auto_address_ports(tx: &mut stratus_db::Tx, subnet: &Value, network_id: &str) -> NetResult<()> {
    let si = info(subnet)?;
    for mut p in store::children(&mut **tx, kind::PORT, network_id).await? {
        let owner = store::s(&p, "device_owner");
        if owner.starts_with("network:router_interface") || owner == "network:ha_router_replicated_interface" {
            continue;
        }
        let Some(ip) = crate::ip::eui64(&si.cidr, store::s(&p, "mac_address")) else { continue };
        let port_id = store::s(&p, "id").to_string();
        ipam::allocate_specific(tx, &si, ip, &port_id).await?;
        let mut ips = p["fixed_ips"].as_array().cloned().unwrap_or_default();
        ips.push(json!({"subnet_id": si.id, "ip_address": fmt_ip(6, ip)}));
        p["fixed_ips"] = Value::Array(ips);
        store::touch(&mut p);
        store::update(&mut **tx, kind::PORT, &p, &crate::ports::links(&p)).await?;
    }
    Ok(())
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let req: SubnetUpdate = body::parse_update(body::one(req, "subnet")?, ATTRS)?;
    let cur = find(&st, &ctx, &id).await?;
    let network = store::get(st.db.reader(), kind::NETWORK, store::s(&cur, "network_id")).await?.unwrap_or(Value::Null);
    let mut target = cur.clone();
    target["network:tenant_id"] = json!(store::s(&network, "project_id"));
    enforce(&st.policy, "update_subnet", &ctx, &target)?;
    no_segment(&req.segment_id)?;
    let req = std::sync::Arc::new(req);
    let updated = st
        .db
        .transaction(|tx| {
            let (req, id) = (req.clone(), id.clone());
            Box::pin(async move {
                let mut body =
                    store::get(&mut **tx, kind::SUBNET, &id).await?.ok_or_else(|| not_found("Subnet", &id))?;
                let cidr = Cidr::parse(store::s(&body, "cidr"), false).map_err(invalid)?;
                let v6_modes = !body["ipv6_ra_mode"].is_null() || !body["ipv6_address_mode"].is_null();
                if v6_modes && req.enable_dhcp.opt() == Some(false) {
                    return Err(invalid("Cannot disable enable_dhcp with ipv6 attributes set"));
                }
                if let Some(v) = req.name.opt() {
                    body["name"] = json!(v);
                }
                if let Some(v) = req.description.opt() {
                    body["description"] = json!(v);
                }
                if let Some(v) = req.enable_dhcp.opt() {
                    body["enable_dhcp"] = json!(v);
                }
                if let Some(v) = req.dns_publish_fixed_ip.opt() {
                    body["dns_publish_fixed_ip"] = json!(v);
                }
                let mut gateway = body["gateway_ip"].as_str().and_then(parse_ip).map(|g| g.1);
                if let Some(g) = parse_gateway(&req.gateway_ip, &cidr)? {
                    gateway = g;
                    body["gateway_ip"] = json!(g.map(|g| fmt_ip(cidr.version, g)));
                }
                let mut pools = info(&body)?.pools;
                if let Some(v) = req.allocation_pools.get() {
                    pools = validate_pools(&cidr, gateway, v)?;
                    body["allocation_pools"] = pools_json(cidr.version, &pools);
                } else if let Some(g) = gateway {
                    if let Some((a, b)) = pools.iter().find(|(a, b)| g >= *a && g <= *b) {
                        return Err(NetError::Conflict(
                            "GatewayConflictWithAllocationPools",
                            format!(
                                "Gateway ip {} conflicts with allocation pool {}",
                                fmt_ip(cidr.version, g),
                                range_text(cidr.version, *a, *b)
                            ),
                        ));
                    }
                }
                if let Some(v) = req.dns_nameservers.clone().change() {
                    body["dns_nameservers"] = match v {
                        None => json!([]),
                        Some(v) => validate_dns(&v, cidr.version)?,
                    };
                }
                if let Some(v) = req.host_routes.clone().change() {
                    body["host_routes"] = match v {
                        None => json!([]),
                        Some(v) => validate_routes(&v, cidr.version)?,
                    };
                }
                if req.tags.present() {
                    body["tags"] = json!(crate::networks::tags(&req.tags));
                }
                if req.service_types.present() {
                    body["service_types"] = service_types(&req.service_types);
                }
                store::touch(&mut body);
                let net = store::s(&body, "network_id").to_string();
                store::update(&mut **tx, kind::SUBNET, &body, &Links { parent: Some(net), ..Default::default() })
                    .await?;
                if req.allocation_pools.get().is_some() {
                    ipam::rebuild_free(tx, &info(&body)?).await?;
                }
                Ok::<_, NetError>(body)
            })
        })
        .await?;
    let updated = with_external(&st, vec![updated]).await?.pop().unwrap_or_default();
    Ok(Json(json!({"subnet": updated})))
}

/// `DELETE /v2.0/subnets/{id}`. As in Neutron: the DHCP port's address on it goes; so do
/// the addresses ports got automatically from a SLAAC or DHCPv6-stateless subnet (the
/// ports stay, on their other addresses); any other allocation (a router interface among
/// them) keeps the subnet in use.
async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let cur = find(&st, &ctx, &id).await?;
    let network = store::get(st.db.reader(), kind::NETWORK, store::s(&cur, "network_id")).await?.unwrap_or(Value::Null);
    let mut target = cur.clone();
    target["network:tenant_id"] = json!(store::s(&network, "project_id"));
    enforce(&st.policy, "delete_subnet", &ctx, &target)?;
    let auto = crate::ports::is_auto_address(&cur);
    st.db
        .transaction(|tx| {
            let (id, cur) = (id.clone(), cur.clone());
            Box::pin(async move {
                let ports = store::children(&mut **tx, kind::PORT, store::s(&cur, "network_id")).await?;
                for p in ports {
                    let on_subnet = p["fixed_ips"].as_array().is_some_and(|ips| ips.iter().any(|i| i["subnet_id"] == json!(id)));
                    if !on_subnet {
                        continue;
                    }
                    let owner = store::s(&p, "device_owner");
                    let removable = owner == "network:dhcp" || (auto && !crate::ports::is_router_owner(owner));
                    if !removable {
                        return Err(NetError::Conflict(
                            "SubnetInUse",
                            format!("Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."),
                        ));
                    }
                    let mut p = p.clone();
                    let kept: Vec<Value> = p["fixed_ips"].as_array().cloned().unwrap_or_default().into_iter().filter(|i| i["subnet_id"] != json!(id)).collect();
                    p["fixed_ips"] = json!(kept);
                    store::touch(&mut p);
                    store::update(&mut **tx, kind::PORT, &p, &crate::ports::links(&p)).await?;
                }
                ipam::drop_subnet(tx, &id).await?;
                store::delete(&mut **tx, kind::SUBNET, &id).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- subnet pools ----------------------------------------------------------------

/// Every attribute of a subnet pool: a request naming anything else is refused.
const POOL_ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "prefixes",
    "ip_version",
    "default_prefixlen",
    "min_prefixlen",
    "max_prefixlen",
    "shared",
    "is_default",
    "address_scope_id",
    "default_quota",
    "tenant_id",
    "project_id",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/subnetpools`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PoolCreate {
    name: Opt<Name>,
    description: Opt<Name>,
    prefixes: Opt<Raw>,
    default_prefixlen: Opt<Int>,
    min_prefixlen: Opt<Int>,
    max_prefixlen: Opt<Int>,
    shared: Opt<Bool>,
    is_default: Opt<Bool>,
    address_scope_id: Field<Uuid>,
    default_quota: Field<Int>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
    tags: Field<Tags>,
}

/// `PUT /v2.0/subnetpools/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PoolUpdate {
    name: Opt<Name>,
    description: Opt<Name>,
    prefixes: Opt<Raw>,
    default_prefixlen: Opt<Int>,
    min_prefixlen: Opt<Int>,
    max_prefixlen: Opt<Int>,
    is_default: Opt<Bool>,
    address_scope_id: Field<Uuid>,
    default_quota: Field<Int>,
    tags: Field<Tags>,
}

/// Address scopes are not offered (no `address-scope` extension): an id names none.
fn no_scope(f: &Field<Uuid>) -> NetResult<()> {
    match f.get() {
        Some(u) => {
            Err(NetError::NotFoundTyped("AddressScopeNotFound", format!("Address scope {} could not be found.", u.0)))
        }
        None => Ok(()),
    }
}

async fn list_pools(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let items = store::visible(st.db.reader(), &ctx, kind::SUBNETPOOL, None).await?;
    Ok(Json(crate::listing::respond("subnetpools", items, &q, &format!("{}/v2.0/subnetpools", st.base))?))
}

async fn find_pool(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::SUBNETPOOL, Some(id))
        .await?
        .pop()
        .ok_or_else(|| not_found("Subnet pool", id))
}

async fn show_pool(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    q: QueryPairs,
) -> NetResult<Json<Value>> {
    Ok(Json(json!({"subnetpool": crate::listing::select_fields(find_pool(&st, &ctx, &id).await?, &q)})))
}

fn pool_prefixes(v: &Value) -> NetResult<(u8, Vec<String>)> {
    let arr = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| invalid("prefixes must be a non-empty list"))?;
    let mut version = 0;
    let mut out = Vec::new();
    for p in arr {
        let c = Cidr::parse(p.as_str().unwrap_or(""), false).map_err(invalid)?;
        if version != 0 && version != c.version {
            return Err(invalid("Subnet pool prefixes must all be of the same IP version"));
        }
        version = c.version;
        out.push(c.to_string());
    }
    Ok((version, out))
}

async fn create_pool(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let obj = body::one(req, "subnetpool")?;
    let raw = Value::Object(obj.clone());
    let req: PoolCreate = body::parse_create(obj, POOL_ATTRS)?;
    let project = owner(&ctx, &req.project_id, &req.tenant_id)?;
    let target = json!({"tenant_id": project, "project_id": project});
    enforce(&st.policy, "create_subnetpool", &ctx, &target)?;
    enforce_attrs(&st.policy, "create_subnetpool", &["shared", "is_default"], &ctx, &raw, &target)?;
    no_scope(&req.address_scope_id)?;
    let (version, prefixes) = pool_prefixes(req.prefixes.0.as_ref().unwrap_or(&Value::Null))?;
    let bits = if version == 4 { 32 } else { 128 };
    let min_in = prefixes.iter().filter_map(|p| Cidr::parse(p, false).ok()).map(|c| c.prefix as i64).min().unwrap_or(8);
    let min = req.min_prefixlen.opt().unwrap_or(min_in);
    let max = req.max_prefixlen.opt().unwrap_or(bits);
    let default = req.default_prefixlen.opt().unwrap_or(min);
    if !(min <= default && default <= max && max <= bits && min >= 0) {
        return Err(invalid(format!(
            "Illegal prefix bounds: default_prefixlen={default}, min_prefixlen={min}, max_prefixlen={max}"
        )));
    }
    let shared = req.shared.or(false);
    let mut body = store::new_body(&project);
    body.insert("name".into(), json!(req.name.or_empty()));
    body.insert("description".into(), json!(req.description.or_empty()));
    body.insert("prefixes".into(), json!(prefixes));
    body.insert("ip_version".into(), json!(version));
    body.insert("min_prefixlen".into(), json!(min));
    body.insert("max_prefixlen".into(), json!(max));
    body.insert("default_prefixlen".into(), json!(default));
    body.insert("shared".into(), json!(shared));
    body.insert("is_default".into(), json!(req.is_default.or(false)));
    body.insert("address_scope_id".into(), Value::Null);
    body.insert("default_quota".into(), json!(req.default_quota.opt()));
    body.insert("tags".into(), json!(crate::networks::tags(&req.tags)));
    let body = Value::Object(body);
    let cfg = st.cfg.clone();
    st.db
        .transaction(|tx| {
            let (body, cfg, project) = (body.clone(), cfg.clone(), project.clone());
            Box::pin(async move {
                quotas::check(tx, &cfg, &project, "subnetpool", 1).await?;
                store::insert(&mut **tx, kind::SUBNETPOOL, &body, &Links { shared, ..Default::default() }).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"subnetpool": body}))))
}

async fn update_pool(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj = body::one(req, "subnetpool")?;
    let raw = Value::Object(obj.clone());
    let req: PoolUpdate = body::parse_update(obj, POOL_ATTRS)?;
    let cur = find_pool(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_subnetpool", &ctx, &cur)?;
    enforce_attrs(&st.policy, "update_subnetpool", &["is_default"], &ctx, &raw, &cur)?;
    no_scope(&req.address_scope_id)?;
    let mut body = cur.clone();
    if let Some(v) = req.name.opt() {
        body["name"] = json!(v);
    }
    if let Some(v) = req.description.opt() {
        body["description"] = json!(v);
    }
    for (k, v) in [
        ("default_prefixlen", req.default_prefixlen.opt()),
        ("min_prefixlen", req.min_prefixlen.opt()),
        ("max_prefixlen", req.max_prefixlen.opt()),
    ] {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    let (min, max, default) = (
        body["min_prefixlen"].as_i64().unwrap_or(0),
        body["max_prefixlen"].as_i64().unwrap_or(0),
        body["default_prefixlen"].as_i64().unwrap_or(0),
    );
    if !(min <= default && default <= max && min >= 0) {
        return Err(invalid(format!(
            "Illegal prefix bounds: default_prefixlen={default}, min_prefixlen={min}, max_prefixlen={max}"
        )));
    }
    if let Some(v) = req.is_default.opt() {
        body["is_default"] = json!(v);
    }
    if let Some(q) = req.default_quota.clone().change() {
        body["default_quota"] = json!(q.map(|q| q.0));
    }
    if let Some(p) = &req.prefixes.0 {
        let (v, mut prefixes) = pool_prefixes(p)?;
        if v as i64 != body["ip_version"].as_i64().unwrap_or(0) {
            return Err(invalid("Subnet pool prefixes must all be of the same IP version"));
        }
        prefixes.sort();
        body["prefixes"] = json!(prefixes);
    }
    if req.tags.present() {
        body["tags"] = json!(crate::networks::tags(&req.tags));
    }
    store::touch(&mut body);
    let shared = body["shared"].as_bool().unwrap_or(false);
    let b2 = body.clone();
    st.db
        .transaction(|tx| {
            let b = b2.clone();
            Box::pin(async move {
                store::update(&mut **tx, kind::SUBNETPOOL, &b, &Links { shared, ..Default::default() }).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(Json(json!({"subnetpool": body})))
}

async fn remove_pool(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let cur = find_pool(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_subnetpool", &ctx, &cur)?;
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                let used =
                    store::all(&mut **tx, kind::SUBNET).await?.iter().any(|s| store::s(s, "subnetpool_id") == id);
                if used {
                    return Err(NetError::Conflict(
                        "SubnetPoolInUse",
                        format!("Unable to complete operation on subnet pool {id}. Subnets are allocated from it."),
                    ));
                }
                store::delete(&mut **tx, kind::SUBNETPOOL, &id).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Canonical form of an address in a request, or 400.
pub(crate) fn canonical_ip(s: &str) -> NetResult<String> {
    canonical(s).ok_or_else(|| invalid(format!("'{s}' is not a valid IP address")))
}
