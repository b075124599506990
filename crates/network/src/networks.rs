//! Networks: CRUD, sharing, external networks and the provider extension (segment
//! allocation of VXLAN VNIs and VLAN ids from configured ranges, flat and local networks).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};
use stratus_db::sqlx::{self, Row};
use stratus_db::{Query, Tx};

use crate::body::{self, Bool, Field, Int, List, Name, Opt, ProjectId, Tags, Text, Uuid};
use crate::error::{invalid, not_found, NetError, NetResult};
use crate::policy::{enforce, enforce_attrs};
use crate::store::{self, kind, Links};
use crate::{no_qos, owner, quotas, NetworkConfig, S};

/// Network routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/networks", get(list).post(create))
        .route("/v2.0/networks/{id}", get(show).put(update).delete(remove))
}

const PROVIDER: &[&str] = &["provider:network_type", "provider:physical_network", "provider:segmentation_id"];

/// Every attribute of a network: a request naming anything else is refused.
const ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "subnets",
    "admin_state_up",
    "status",
    "tenant_id",
    "project_id",
    "shared",
    "router:external",
    "is_default",
    "mtu",
    "port_security_enabled",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "availability_zone_hints",
    "availability_zones",
    "dns_domain",
    "qos_policy_id",
    "ipv4_address_scope",
    "ipv6_address_scope",
    "l2_adjacency",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/networks`: one network, or one item of a bulk request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NetworkCreate {
    name: Opt<Name>,
    description: Opt<Name>,
    admin_state_up: Opt<Bool>,
    shared: Opt<Bool>,
    #[serde(rename = "router:external")]
    external: Opt<Bool>,
    is_default: Opt<Bool>,
    mtu: Opt<Int>,
    port_security_enabled: Opt<Bool>,
    #[serde(rename = "provider:network_type")]
    network_type: Field<Text<255>>,
    #[serde(rename = "provider:physical_network")]
    physical_network: Field<Text<64>>,
    #[serde(rename = "provider:segmentation_id")]
    segmentation_id: Field<Int>,
    availability_zone_hints: Field<List<Text<255>>>,
    dns_domain: Field<Text<255>>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
    qos_policy_id: Field<Uuid>,
    tags: Field<Tags>,
}

/// `PUT /v2.0/networks/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NetworkUpdate {
    name: Opt<Name>,
    description: Opt<Name>,
    admin_state_up: Opt<Bool>,
    shared: Opt<Bool>,
    #[serde(rename = "router:external")]
    external: Opt<Bool>,
    is_default: Opt<Bool>,
    mtu: Opt<Int>,
    port_security_enabled: Opt<Bool>,
    #[serde(rename = "provider:network_type")]
    network_type: Field<Text<255>>,
    #[serde(rename = "provider:physical_network")]
    physical_network: Field<Text<64>>,
    #[serde(rename = "provider:segmentation_id")]
    segmentation_id: Field<Int>,
    dns_domain: Field<Text<255>>,
    qos_policy_id: Field<Uuid>,
    tags: Field<Tags>,
}

/// Parsed segment ranges from the configuration.
pub struct Ranges {
    /// VNI ranges.
    pub vni: Vec<(i64, i64)>,
    /// VLAN physical networks and their tenant ranges.
    pub vlan: Vec<(String, Option<(i64, i64)>)>,
}

fn range(s: &str, lo: i64, hi: i64) -> Result<(i64, i64), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("range {s:?} is not min:max"))?;
    let (a, b): (i64, i64) = (
        a.trim().parse().map_err(|_| format!("bad range {s:?}"))?,
        b.trim().parse().map_err(|_| format!("bad range {s:?}"))?,
    );
    if a < lo || b > hi || a > b {
        return Err(format!("range {s:?} outside {lo}..{hi} or reversed"));
    }
    Ok((a, b))
}

/// Validates and parses `vni_ranges` and `network_vlan_ranges`.
pub fn parse_ranges(cfg: &NetworkConfig) -> Result<Ranges, String> {
    let vni = cfg.vni_ranges.iter().map(|r| range(r, 1, (1 << 24) - 1)).collect::<Result<_, _>>()?;
    let mut vlan = Vec::new();
    for r in &cfg.network_vlan_ranges {
        match r.split_once(':') {
            None => vlan.push((r.clone(), None)),
            Some((p, rest)) => vlan.push((p.to_string(), Some(range(rest, 1, 4094)?))),
        }
    }
    Ok(Ranges { vni, vlan })
}

/// A network's segment as the provider extension shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// flat, vlan, vxlan, local.
    pub network_type: String,
    /// Physical network (flat, vlan).
    pub physical_network: Option<String>,
    /// VLAN id or VNI.
    pub segmentation_id: Option<i64>,
}

async fn claim(tx: &mut Tx, ty: &str, physnet: &str, id: i64, network_id: &str) -> NetResult<bool> {
    let mut q = Query::new(
        "INSERT INTO network_segment_allocations (network_type, physical_network, segmentation_id, network_id) VALUES (",
    );
    q.bind(ty)
        .push(", ")
        .bind(physnet)
        .push(", ")
        .bind(id)
        .push(", ")
        .bind(network_id)
        .push(") ON CONFLICT DO NOTHING");
    Ok(q.execute(&mut **tx).await? == 1)
}

/// Lowest free id of `ty`/`physnet` in `[lo, hi]`, found from the allocations themselves
/// (the first id after an allocated one whose successor is free), not by probing ids.
async fn lowest_free(tx: &mut Tx, ty: &str, physnet: &str, lo: i64, hi: i64) -> NetResult<Option<i64>> {
    let mut q = Query::new("SELECT COUNT(*) AS n FROM network_segment_allocations WHERE network_type = ");
    q.bind(ty).push(" AND physical_network = ").bind(physnet).push(" AND segmentation_id = ").bind(lo);
    let taken = q.fetch_optional(&mut **tx).await?.and_then(|r| r.try_get::<i64, _>("n").ok()).unwrap_or(0);
    if taken == 0 {
        return Ok(Some(lo));
    }
    let mut q =
        Query::new("SELECT MIN(a.segmentation_id) AS m FROM network_segment_allocations a WHERE a.network_type = ");
    q.bind(ty).push(" AND a.physical_network = ").bind(physnet);
    q.push(" AND a.segmentation_id >= ").bind(lo).push(" AND a.segmentation_id < ").bind(hi);
    q.push(" AND NOT EXISTS (SELECT 1 FROM network_segment_allocations b WHERE b.network_type = a.network_type");
    q.push(" AND b.physical_network = a.physical_network AND b.segmentation_id = a.segmentation_id + 1)");
    let m = q.fetch_optional(&mut **tx).await?.and_then(|r| r.try_get::<Option<i64>, _>("m").ok().flatten());
    Ok(m.map(|m| m + 1))
}

async fn allocate_from(
    tx: &mut Tx,
    ty: &str,
    physnet: &str,
    ranges: &[(i64, i64)],
    network_id: &str,
) -> NetResult<Option<i64>> {
    for &(lo, hi) in ranges {
        for _ in 0..100 {
            match lowest_free(tx, ty, physnet, lo, hi).await? {
                None => break,
                Some(id) => {
                    if claim(tx, ty, physnet, id, network_id).await? {
                        return Ok(Some(id));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// Resolves and claims the segment of a new network.
async fn allocate_segment(tx: &mut Tx, cfg: &NetworkConfig, req: &Segment, network_id: &str) -> NetResult<Segment> {
    let ranges = parse_ranges(cfg).map_err(invalid)?;
    let ty = req.network_type.as_str();
    match ty {
        "local" => {
            if req.physical_network.is_some() || req.segmentation_id.is_some() {
                return Err(invalid(
                    "provider:physical_network and provider:segmentation_id are not allowed for local provider network",
                ));
            }
            Ok(req.clone())
        }
        "flat" => {
            let p = req
                .physical_network
                .clone()
                .ok_or_else(|| invalid("provider:physical_network required for flat provider network"))?;
            if req.segmentation_id.is_some() {
                return Err(invalid("provider:segmentation_id prohibited for flat provider network"));
            }
            if !cfg.flat_networks.iter().any(|f| f == "*" || *f == p) {
                return Err(invalid(format!("physical_network '{p}' unknown for flat provider network")));
            }
            if !claim(tx, "flat", &p, 0, network_id).await? {
                return Err(NetError::Conflict(
                    "FlatNetworkInUse",
                    format!("Unable to create the flat network. Physical network {p} is in use."),
                ));
            }
            Ok(req.clone())
        }
        "vlan" => {
            if let Some(id) = req.segmentation_id {
                let p = req
                    .physical_network
                    .clone()
                    .ok_or_else(|| invalid("provider:physical_network required for VLAN provider network"))?;
                if !(1..=4094).contains(&id) {
                    return Err(invalid(format!(
                        "provider:segmentation_id out of range ({id} is not between 1 and 4094)"
                    )));
                }
                if !ranges.vlan.iter().any(|(n, _)| *n == p) {
                    return Err(invalid(format!("physical_network '{p}' unknown for VLAN provider network")));
                }
                if !claim(tx, "vlan", &p, id, network_id).await? {
                    return Err(NetError::Conflict(
                        "VlanIdInUse",
                        format!("Unable to create the network. The VLAN {id} on physical network {p} is in use."),
                    ));
                }
                return Ok(req.clone());
            }
            for (p, r) in &ranges.vlan {
                if req.physical_network.as_ref().is_some_and(|want| want != p) {
                    continue;
                }
                if let Some(r) = r {
                    if let Some(id) = allocate_from(tx, "vlan", p, &[*r], network_id).await? {
                        return Ok(Segment {
                            network_type: "vlan".into(),
                            physical_network: Some(p.clone()),
                            segmentation_id: Some(id),
                        });
                    }
                }
            }
            Err(NetError::NoNetworkAvailable)
        }
        "vxlan" => {
            if req.physical_network.is_some() {
                return Err(invalid("provider:physical_network specified for vxlan network"));
            }
            if let Some(id) = req.segmentation_id {
                if !(1..(1 << 24)).contains(&id) {
                    return Err(invalid(format!(
                        "provider:segmentation_id out of range ({id} is not between 1 and 16777215)"
                    )));
                }
                if !claim(tx, "vxlan", "", id, network_id).await? {
                    return Err(NetError::Conflict(
                        "TunnelIdInUse",
                        format!("Unable to create the network. The tunnel ID {id} is in use."),
                    ));
                }
                return Ok(req.clone());
            }
            match allocate_from(tx, "vxlan", "", &ranges.vni, network_id).await? {
                Some(id) => {
                    Ok(Segment { network_type: "vxlan".into(), physical_network: None, segmentation_id: Some(id) })
                }
                None => Err(NetError::NoNetworkAvailable),
            }
        }
        other => Err(invalid(format!("network_type value '{other}' not supported"))),
    }
}

/// Adds computed attributes (`subnets`) and hides the provider attributes from callers
/// policy does not show them to (`get_network:provider:*`, admin-only by default).
pub(crate) fn present(st: &S, ctx: &RequestContext, mut body: Value, subnets: &HashMap<String, Vec<String>>) -> Value {
    let id = store::s(&body, "id").to_string();
    body["subnets"] = json!(subnets.get(&id).cloned().unwrap_or_default());
    let hidden: Vec<&str> =
        PROVIDER.iter().copied().filter(|p| !st.policy.check(&format!("get_network:{p}"), ctx, &body)).collect();
    if let Some(m) = body.as_object_mut() {
        for p in hidden {
            m.remove(p);
        }
    }
    body
}

/// network id → its subnet ids.
pub(crate) async fn subnet_map(st: &S) -> NetResult<HashMap<String, Vec<String>>> {
    let rows = sqlx::query("SELECT id, parent_id FROM network_resources WHERE kind = 'subnet' ORDER BY created_at, id")
        .fetch_all(st.db.reader())
        .await
        .map_err(stratus_db::DbError::from)?;
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        let (id, net): (String, Option<String>) =
            (r.try_get("id").unwrap_or_default(), r.try_get("parent_id").unwrap_or(None));
        m.entry(net.unwrap_or_default()).or_default().push(id);
    }
    Ok(m)
}

/// A network the caller can see, or 404.
pub(crate) async fn find(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::NETWORK, Some(id)).await?.pop().ok_or_else(|| not_found("Network", id))
}

async fn list(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let subnets = subnet_map(&st).await?;
    let items = store::visible(st.db.reader(), &ctx, kind::NETWORK, None).await?;
    let items = items.into_iter().map(|b| present(&st, &ctx, b, &subnets)).collect();
    Ok(Json(crate::listing::respond("networks", items, &q, &format!("{}/v2.0/networks", st.base))?))
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    let body = find(&st, &ctx, &id).await?;
    let subnets = subnet_map(&st).await?;
    Ok(Json(json!({"network": crate::listing::select_fields(present(&st, &ctx, body, &subnets), &q)})))
}

fn validate_azs(hints: &Field<List<Text<255>>>, az: &str) -> NetResult<Vec<Value>> {
    let hints = hints.get().map(|l| l.0.clone()).unwrap_or_default();
    for z in &hints {
        if z.0 != az {
            return Err(NetError::NotFoundTyped(
                "AvailabilityZoneNotFound",
                format!("AvailabilityZone {} could not be found.", z.0),
            ));
        }
    }
    Ok(hints.into_iter().map(|z| json!(z.0)).collect())
}

/// The tags a request gives (none when absent or null).
pub(crate) fn tags(t: &Field<Tags>) -> Vec<String> {
    t.get().map(|t| t.0.clone()).unwrap_or_default()
}

/// The largest MTU a network of type `ty` may have.
fn max_mtu(cfg: &NetworkConfig, ty: &str) -> i64 {
    if ty == "vxlan" {
        cfg.global_physnet_mtu - 50
    } else {
        cfg.global_physnet_mtu
    }
}

/// A validated network request: the body to store and the segment to allocate.
#[derive(Debug, Clone)]
struct NewNetwork {
    body: Value,
    segment: Segment,
    mtu: Option<i64>,
    shared: bool,
}

/// Checks one network of a create request (policy included) before anything is written.
fn prepare(st: &S, ctx: &RequestContext, obj: Map<String, Value>) -> NetResult<NewNetwork> {
    let raw = Value::Object(obj.clone());
    let req: NetworkCreate = body::parse_create(obj, ATTRS)?;
    let project = owner(ctx, &req.project_id, &req.tenant_id)?;
    let target = json!({"tenant_id": project, "project_id": project});
    enforce(&st.policy, "create_network", ctx, &target)?;
    enforce_attrs(&st.policy, "create_network", &["shared", "router:external", "is_default"], ctx, &raw, &target)?;
    enforce_attrs(&st.policy, "create_network", PROVIDER, ctx, &raw, &target)?;
    no_qos(&req.qos_policy_id)?;
    let given_type = req.network_type.opt();
    let segment = Segment {
        network_type: given_type
            .clone()
            .unwrap_or_else(|| st.cfg.tenant_network_types.first().cloned().unwrap_or_else(|| "vxlan".into())),
        physical_network: req.physical_network.opt(),
        segmentation_id: req.segmentation_id.opt(),
    };
    if given_type.is_none() && (segment.physical_network.is_some() || segment.segmentation_id.is_some()) {
        return Err(invalid("provider:network_type required"));
    }
    let shared = req.shared.or(false);
    let external = req.external.or(false);
    let mtu = req.mtu.opt();
    if let Some(m) = mtu {
        let max = max_mtu(&st.cfg, &segment.network_type);
        if m < 68 || m > max {
            return Err(invalid(format!("Requested MTU is too big, maximum is {max}")));
        }
    }
    let mut body = store::new_body(&project);
    body.insert("name".into(), json!(req.name.or_empty()));
    body.insert("description".into(), json!(req.description.or_empty()));
    body.insert("admin_state_up".into(), json!(req.admin_state_up.or(true)));
    body.insert("status".into(), json!("ACTIVE"));
    body.insert("shared".into(), json!(shared));
    body.insert("router:external".into(), json!(external));
    body.insert("is_default".into(), json!(req.is_default.or(false)));
    body.insert("port_security_enabled".into(), json!(req.port_security_enabled.or(true)));
    body.insert(
        "availability_zone_hints".into(),
        json!(validate_azs(&req.availability_zone_hints, &st.cfg.availability_zone)?),
    );
    body.insert("availability_zones".into(), json!([st.cfg.availability_zone]));
    body.insert("dns_domain".into(), json!(req.dns_domain.opt().unwrap_or_default()));
    body.insert("ipv4_address_scope".into(), Value::Null);
    body.insert("ipv6_address_scope".into(), Value::Null);
    body.insert("l2_adjacency".into(), json!(true));
    body.insert("qos_policy_id".into(), Value::Null);
    body.insert("tags".into(), json!(tags(&req.tags)));
    Ok(NewNetwork { body: Value::Object(body), segment, mtu, shared: shared || external })
}

/// Writes a prepared network inside `tx`: quota, segment, row.
async fn insert(tx: &mut Tx, cfg: &NetworkConfig, n: &NewNetwork) -> NetResult<Value> {
    let mut body = n.body.clone();
    let id = store::s(&body, "id").to_string();
    quotas::check(tx, cfg, store::s(&body, "project_id"), "network", 1).await?;
    let seg = allocate_segment(tx, cfg, &n.segment, &id).await?;
    body["mtu"] = json!(n.mtu.unwrap_or(max_mtu(cfg, &seg.network_type)));
    body["provider:network_type"] = json!(seg.network_type);
    body["provider:physical_network"] = json!(seg.physical_network);
    body["provider:segmentation_id"] = json!(seg.segmentation_id);
    // External networks are visible to every project, like shared ones.
    store::insert(&mut **tx, kind::NETWORK, &body, &Links { shared: n.shared, ..Default::default() }).await?;
    Ok(body)
}

/// `POST /v2.0/networks`, one or in bulk (`{"networks": [...]}`): all are created in one
/// transaction, so either every network exists afterwards or none does.
async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let (items, bulk) = body::envelope(req, "network", Some("networks"))?;
    let prepared =
        std::sync::Arc::new(items.into_iter().map(|o| prepare(&st, &ctx, o)).collect::<NetResult<Vec<_>>>()?);
    let cfg = st.cfg.clone();
    let created = st
        .db
        .transaction(|tx| {
            let (prepared, cfg) = (prepared.clone(), cfg.clone());
            Box::pin(async move {
                let mut out = Vec::with_capacity(prepared.len());
                for n in prepared.iter() {
                    out.push(insert(tx, &cfg, n).await?);
                }
                Ok::<_, NetError>(out)
            })
        })
        .await?;
    let mut shown: Vec<Value> = created.into_iter().map(|b| present(&st, &ctx, b, &HashMap::new())).collect();
    let out = if bulk { json!({"networks": shown}) } else { json!({"network": shown.pop()}) };
    Ok((StatusCode::CREATED, Json(out)))
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let obj = body::one(req, "network")?;
    let raw = Value::Object(obj.clone());
    let req: NetworkUpdate = body::parse_update(obj, ATTRS)?;
    let cur = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_network", &ctx, &cur)?;
    enforce_attrs(&st.policy, "update_network", &["shared", "router:external"], &ctx, &raw, &cur)?;
    enforce_attrs(&st.policy, "update_network", PROVIDER, &ctx, &raw, &cur)?;
    for p in PROVIDER {
        if let Some(v) = raw.get(*p) {
            if cur.get(*p) != Some(v) {
                return Err(invalid("Plugin does not support updating provider attributes"));
            }
        }
    }
    no_qos(&req.qos_policy_id)?;
    if let Some(m) = req.mtu.opt() {
        let max = max_mtu(&st.cfg, store::s(&cur, "provider:network_type"));
        if m < 68 || m > max {
            return Err(invalid(format!("Requested MTU is too big, maximum is {max}")));
        }
    }
    let req = std::sync::Arc::new(req);
    let updated = st
        .db
        .transaction(|tx| {
            let (req, id) = (req.clone(), id.clone());
            Box::pin(async move {
                let mut body =
                    store::get(&mut **tx, kind::NETWORK, &id).await?.ok_or_else(|| not_found("Network", &id))?;
                if let Some(v) = req.name.opt() {
                    body["name"] = json!(v);
                }
                if let Some(v) = req.description.opt() {
                    body["description"] = json!(v);
                }
                for (k, v) in [
                    ("admin_state_up", req.admin_state_up.opt()),
                    ("shared", req.shared.opt()),
                    ("router:external", req.external.opt()),
                    ("is_default", req.is_default.opt()),
                    ("port_security_enabled", req.port_security_enabled.opt()),
                ] {
                    if let Some(v) = v {
                        body[k] = json!(v);
                    }
                }
                if let Some(m) = req.mtu.opt() {
                    body["mtu"] = json!(m);
                }
                if let Some(d) = req.dns_domain.clone().change() {
                    body["dns_domain"] = json!(d.map(|d| d.0).unwrap_or_default());
                }
                if req.tags.present() {
                    body["tags"] = json!(tags(&req.tags));
                }
                store::touch(&mut body);
                // External networks are visible to every project, like shared ones.
                let external = body["router:external"].as_bool().unwrap_or(false);
                let shared = body["shared"].as_bool().unwrap_or(false) || external;
                store::update(&mut **tx, kind::NETWORK, &body, &Links { shared, ..Default::default() }).await?;
                // Subnets say whether they are on an external network (`subnet-external-network`).
                for mut s in store::children(&mut **tx, kind::SUBNET, &id).await? {
                    if s["router:external"] != json!(external) {
                        s["router:external"] = json!(external);
                        store::update_body(&mut **tx, kind::SUBNET, &s).await?;
                    }
                }
                Ok::<_, NetError>(body)
            })
        })
        .await?;
    let subnets = subnet_map(&st).await?;
    Ok(Json(json!({"network": present(&st, &ctx, updated, &subnets)})))
}

/// `DELETE /v2.0/networks/{id}`. As in Neutron, the network's DHCP ports go with it, and
/// so do the floating IPs of an external network that no port uses (an associated one
/// keeps the network in use); any other port refuses the deletion.
async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let cur = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_network", &ctx, &cur)?;
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                let mut ports = store::children(&mut **tx, kind::PORT, &id).await?;
                let fips = store::children(&mut **tx, kind::FLOATINGIP, &id).await?;
                let idle_fips: Vec<&Value> = fips.iter().filter(|f| f["port_id"].is_null()).collect();
                let fip_port = |p: &Value| {
                    store::s(p, "device_owner") == "network:floatingip"
                        && idle_fips.iter().any(|f| store::s(f, "id") == store::s(p, "device_id"))
                };
                if ports.iter().any(|p| store::s(p, "device_owner") != "network:dhcp" && !fip_port(p)) {
                    return Err(NetError::Conflict(
                        "NetworkInUse",
                        format!("Unable to complete operation on network {id}. There are one or more ports still in use on the network."),
                    ));
                }
                for f in &idle_fips {
                    crate::routers::delete_fip_in_tx(tx, store::s(f, "id")).await?;
                }
                ports.retain(|p| store::s(p, "device_owner") == "network:dhcp");
                for p in &ports {
                    crate::ports::delete_in_tx(tx, p).await?;
                }
                for s in store::children(&mut **tx, kind::SUBNET, &id).await? {
                    crate::ipam::drop_subnet(tx, store::s(&s, "id")).await?;
                    store::delete(&mut **tx, kind::SUBNET, store::s(&s, "id")).await?;
                }
                for r in store::children(&mut **tx, kind::RBAC_POLICY, &id).await? {
                    store::delete(&mut **tx, kind::RBAC_POLICY, store::s(&r, "id")).await?;
                }
                let mut q = Query::new("DELETE FROM network_segment_allocations WHERE network_id = ");
                q.bind(&id);
                q.execute(&mut **tx).await?;
                crate::dhcp_hosting::forget(tx, &id).await?;
                store::delete(&mut **tx, kind::NETWORK, &id).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
