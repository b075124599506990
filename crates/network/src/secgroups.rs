//! Security groups and rules, with the per-project `default` group created on first use.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::{Query, Tx};

use crate::body::{self, Bool, Field, Int, Name, Opt, ProjectId, Raw, Tags, Text, Uuid};
use crate::error::{invalid, not_found, NetError, NetResult};
use crate::ip::Cidr;
use crate::policy::enforce;
use crate::store::{self, kind, Links};
use crate::{owner, quotas, NetworkConfig, S};

/// Every attribute of a security group: a request naming anything else is refused.
const SG_ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "stateful",
    "shared",
    "security_group_rules",
    "tenant_id",
    "project_id",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/security-groups`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GroupCreate {
    name: Opt<Name>,
    description: Opt<Name>,
    stateful: Opt<Bool>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
    tags: Field<Tags>,
}

/// `PUT /v2.0/security-groups/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GroupUpdate {
    name: Opt<Name>,
    description: Opt<Name>,
    stateful: Opt<Bool>,
    tags: Field<Tags>,
}

/// Every attribute of a security group rule.
const RULE_ATTRS: &[&str] = &[
    "id",
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "normalized_cidr",
    "remote_group_id",
    "remote_address_group_id",
    "description",
    "belongs_to_default_sg",
    "tenant_id",
    "project_id",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/security-group-rules` (rules cannot be updated).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuleCreate {
    security_group_id: Opt<Uuid>,
    direction: Opt<Text<16>>,
    ethertype: Opt<Text<16>>,
    protocol: Field<Raw>,
    port_range_min: Field<Int>,
    port_range_max: Field<Int>,
    remote_ip_prefix: Field<Text<64>>,
    /// Not checked as a UUID: Neutron looks any string up and answers 404 for one that
    /// names no group (Tempest's negative test sends `bad_group_id` and expects 404).
    remote_group_id: Field<Text<255>>,
    remote_address_group_id: Field<Uuid>,
    description: Opt<Name>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
    tags: Field<Tags>,
}

/// Neutron's name check on groups: `default` (any case) belongs to the per-project group
/// created automatically, so no group may be created with or renamed to it.
fn not_default(name: &Opt<Name>) -> NetResult<()> {
    if name.opt().is_some_and(|n| n.eq_ignore_ascii_case("default")) {
        return Err(NetError::Conflict(
            "SecurityGroupDefaultAlreadyExists",
            "Default security group already exists.".into(),
        ));
    }
    Ok(())
}

/// Security group routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/security-groups", get(list).post(create))
        .route("/v2.0/security-groups/{id}", get(show).put(update).delete(remove))
        .route("/v2.0/security-group-rules", get(list_rules).post(create_rule))
        .route("/v2.0/security-group-rules/{id}", get(show_rule).delete(remove_rule))
}

/// IANA protocol names Neutron accepts, with their numbers.
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("icmp", 1),
    ("icmpv6", 58),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

fn rule_body(project: &str, sg: &str, direction: &str, ethertype: &str, remote_group: Option<&str>) -> Value {
    let mut b = store::new_body(project);
    b.remove("tags");
    b.insert("tags".into(), json!([]));
    b.insert("security_group_id".into(), json!(sg));
    b.insert("direction".into(), json!(direction));
    b.insert("ethertype".into(), json!(ethertype));
    b.insert("protocol".into(), Value::Null);
    b.insert("port_range_min".into(), Value::Null);
    b.insert("port_range_max".into(), Value::Null);
    b.insert("remote_ip_prefix".into(), Value::Null);
    b.insert("normalized_cidr".into(), Value::Null);
    b.insert("remote_group_id".into(), json!(remote_group));
    b.insert("remote_address_group_id".into(), Value::Null);
    b.insert("description".into(), json!(""));
    b.insert("belongs_to_default_sg".into(), json!(false));
    Value::Object(b)
}

fn sg_body(project: &str, name: &str, description: &str, stateful: bool) -> Value {
    let mut b = store::new_body(project);
    b.insert("name".into(), json!(name));
    b.insert("description".into(), json!(description));
    b.insert("stateful".into(), json!(stateful));
    b.insert("shared".into(), json!(false));
    Value::Object(b)
}

async fn insert_group(tx: &mut Tx, sg: &Value, rules: &[Value]) -> NetResult<()> {
    store::insert(&mut **tx, kind::SECURITY_GROUP, sg, &Links::default()).await?;
    for r in rules {
        store::insert(
            &mut **tx,
            kind::SECURITY_GROUP_RULE,
            r,
            &Links { parent: Some(store::s(sg, "id").into()), ..Default::default() },
        )
        .await?;
    }
    Ok(())
}

/// The id of `project`'s `default` group, creating it (with OpenStack's default rules:
/// egress anywhere over IPv4/IPv6, ingress from members of the group) on first use.
/// Concurrent first uses create exactly one: the marker row's key decides.
pub(crate) async fn ensure_default(tx: &mut Tx, _cfg: &NetworkConfig, project: &str) -> NetResult<String> {
    let mut q = Query::new("SELECT security_group_id FROM network_default_security_groups WHERE project_id = ");
    q.bind(project);
    if let Some(r) = q.fetch_optional(&mut **tx).await? {
        return Ok(r.try_get::<String, _>("security_group_id").unwrap_or_default());
    }
    let sg = sg_body(project, "default", "Default security group", true);
    let id = store::s(&sg, "id").to_string();
    let mut ins = Query::new("INSERT INTO network_default_security_groups (project_id, security_group_id) VALUES (");
    ins.bind(project).push(", ").bind(&id).push(") ON CONFLICT DO NOTHING");
    if ins.execute(&mut **tx).await? == 0 {
        let mut q = Query::new("SELECT security_group_id FROM network_default_security_groups WHERE project_id = ");
        q.bind(project);
        let r = q.fetch_optional(&mut **tx).await?;
        return Ok(r.and_then(|r| r.try_get::<String, _>("security_group_id").ok()).unwrap_or_default());
    }
    let mut rules = Vec::new();
    for eth in ["IPv4", "IPv6"] {
        rules.push(rule_body(project, &id, "egress", eth, None));
        rules.push(rule_body(project, &id, "ingress", eth, Some(&id)));
    }
    for r in rules.iter_mut() {
        r["belongs_to_default_sg"] = json!(true);
    }
    insert_group(tx, &sg, &rules).await?;
    Ok(id)
}

async fn ensure_default_now(st: &S, project: &str) -> NetResult<()> {
    if project.is_empty() {
        return Ok(());
    }
    let mut q = Query::new("SELECT security_group_id FROM network_default_security_groups WHERE project_id = ");
    q.bind(project);
    if q.fetch_optional(st.db.reader()).await?.is_some() {
        return Ok(());
    }
    let cfg = st.cfg.clone();
    st.db
        .transaction(|tx| {
            let (cfg, project) = (cfg.clone(), project.to_string());
            Box::pin(async move { ensure_default(tx, &cfg, &project).await.map(|_| ()) })
        })
        .await
}

async fn with_rules(st: &S, sg: Value) -> NetResult<Value> {
    let mut sg = sg;
    let rules = store::children(st.db.reader(), kind::SECURITY_GROUP_RULE, store::s(&sg, "id")).await?;
    sg["security_group_rules"] = json!(rules);
    Ok(sg)
}

async fn find(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::SECURITY_GROUP, Some(id))
        .await?
        .pop()
        .ok_or_else(|| not_found("Security group", id))
}

async fn list(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    ensure_default_now(&st, ctx.project_id.as_deref().unwrap_or("")).await?;
    let groups = store::visible(st.db.reader(), &ctx, kind::SECURITY_GROUP, None).await?;
    let rules = store::visible(st.db.reader(), &ctx, kind::SECURITY_GROUP_RULE, None).await?;
    let items = groups
        .into_iter()
        .map(|mut g| {
            let id = store::s(&g, "id").to_string();
            g["security_group_rules"] =
                json!(rules.iter().filter(|r| store::s(r, "security_group_id") == id).collect::<Vec<_>>());
            g
        })
        .collect();
    Ok(Json(crate::listing::respond("security_groups", items, &q, &format!("{}/v2.0/security-groups", st.base))?))
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    let sg = with_rules(&st, find(&st, &ctx, &id).await?).await?;
    Ok(Json(json!({"security_group": crate::listing::select_fields(sg, &q)})))
}

async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let req: GroupCreate = body::parse_create(body::one(req, "security_group")?, SG_ATTRS)?;
    not_default(&req.name)?;
    let project = owner(&ctx, &req.project_id, &req.tenant_id)?;
    enforce(&st.policy, "create_security_group", &ctx, &json!({"tenant_id": project, "project_id": project}))?;
    let mut sg = sg_body(&project, &req.name.or_empty(), &req.description.or_empty(), req.stateful.or(true));
    sg["tags"] = json!(crate::networks::tags(&req.tags));
    let id = store::s(&sg, "id").to_string();
    let rules: Vec<Value> = ["IPv4", "IPv6"].iter().map(|e| rule_body(&project, &id, "egress", e, None)).collect();
    let cfg = st.cfg.clone();
    st.db
        .transaction(|tx| {
            let (sg, rules, cfg, project) = (sg.clone(), rules.clone(), cfg.clone(), project.clone());
            Box::pin(async move {
                ensure_default(tx, &cfg, &project).await?;
                quotas::check(tx, &cfg, &project, "security_group", 1).await?;
                insert_group(tx, &sg, &rules).await
            })
        })
        .await?;
    let mut out = sg;
    out["security_group_rules"] = json!(rules);
    Ok((StatusCode::CREATED, Json(json!({"security_group": out}))))
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let req: GroupUpdate = body::parse_update(body::one(req, "security_group")?, SG_ATTRS)?;
    not_default(&req.name)?;
    let mut sg = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_security_group", &ctx, &sg)?;
    if store::s(&sg, "name") == "default" && req.name.present() {
        return Err(NetError::Conflict(
            "SecurityGroupCannotUpdateDefault",
            "Updating default security group not allowed.".into(),
        ));
    }
    if let Some(stateful) = req.stateful.opt().filter(|s| sg["stateful"] != json!(s)) {
        // Neutron: the connection tracking of ports already using the group cannot change.
        let in_use = store::all(st.db.reader(), kind::PORT).await?.iter().any(|p| {
            p["security_groups"].as_array().is_some_and(|a| a.iter().any(|g| g.as_str() == Some(id.as_str())))
        });
        if in_use {
            return Err(NetError::Conflict("SecurityGroupInUse", format!("Security Group {id} in use.")));
        }
        sg["stateful"] = json!(stateful);
    }
    if let Some(v) = req.name.opt() {
        sg["name"] = json!(v);
    }
    if let Some(v) = req.description.opt() {
        sg["description"] = json!(v);
    }
    if req.tags.present() {
        sg["tags"] = json!(crate::networks::tags(&req.tags));
    }
    store::touch(&mut sg);
    let b = sg.clone();
    st.db
        .transaction(|tx| {
            let b = b.clone();
            Box::pin(async move {
                store::update(&mut **tx, kind::SECURITY_GROUP, &b, &Links::default()).await.map_err(NetError::from)
            })
        })
        .await?;
    Ok(Json(json!({"security_group": with_rules(&st, sg).await?})))
}

async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let sg = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_security_group", &ctx, &sg)?;
    if store::s(&sg, "name") == "default" && !ctx.is_admin() {
        return Err(NetError::Conflict(
            "SecurityGroupCannotRemoveDefault",
            "Removing default security group not allowed.".into(),
        ));
    }
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                let in_use = store::all(&mut **tx, kind::PORT).await?.iter().any(|p| {
                    p["security_groups"].as_array().is_some_and(|a| a.iter().any(|g| g.as_str() == Some(id.as_str())))
                });
                if in_use {
                    return Err(NetError::Conflict("SecurityGroupInUse", format!("Security Group {id} in use.")));
                }
                for r in store::children(&mut **tx, kind::SECURITY_GROUP_RULE, &id).await? {
                    store::delete(&mut **tx, kind::SECURITY_GROUP_RULE, store::s(&r, "id")).await?;
                }
                // Rules of other groups that name this one as their remote group go with it,
                // as Neutron's foreign key cascades them (a rule must not point at nothing).
                for r in store::all(&mut **tx, kind::SECURITY_GROUP_RULE).await? {
                    if r["remote_group_id"].as_str() == Some(id.as_str()) {
                        store::delete(&mut **tx, kind::SECURITY_GROUP_RULE, store::s(&r, "id")).await?;
                    }
                }
                let mut q = Query::new("DELETE FROM network_default_security_groups WHERE security_group_id = ");
                q.bind(&id);
                q.execute(&mut **tx).await?;
                store::delete(&mut **tx, kind::SECURITY_GROUP, &id).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- rules -----------------------------------------------------------------------

/// Normalises a protocol to Neutron's stored form (names stay names, numbers stay
/// numbers; `any`/null is "all").
fn protocol(v: Option<String>) -> NetResult<Option<String>> {
    match v {
        None => Ok(None),
        Some(p) if p.is_empty() || p.eq_ignore_ascii_case("any") => Ok(None),
        Some(p) => {
            let l = p.to_ascii_lowercase();
            if PROTOCOLS.iter().any(|(n, _)| *n == l) || l.parse::<u16>().is_ok_and(|n| n <= 255) {
                Ok(Some(l))
            } else {
                Err(NetError::BadRequest(
                    "SecurityGroupRuleInvalidProtocol",
                    format!(
                        "Security group rule protocol {p} not supported. Only protocol values {:?} and integer representations [0 to 255] are supported.",
                        PROTOCOLS.iter().map(|(n, _)| *n).collect::<Vec<_>>()
                    ),
                ))
            }
        }
    }
}

fn proto_number(p: &Option<String>) -> Option<u8> {
    p.as_ref().and_then(|p| PROTOCOLS.iter().find(|(n, _)| n == p).map(|(_, n)| *n).or_else(|| p.parse().ok()))
}

/// The attributes that make two rules the same rule.
fn rule_key(r: &Value) -> Value {
    let proto = proto_number(&r["protocol"].as_str().map(str::to_string));
    let prefix = r["remote_ip_prefix"].as_str().and_then(|p| Cidr::parse(p, false).ok()).map(|c| c.to_string());
    let any_prefix = prefix.as_deref().is_some_and(|p| p == "0.0.0.0/0" || p == "::/0");
    json!([
        r["direction"],
        r["ethertype"],
        proto,
        r["port_range_min"],
        r["port_range_max"],
        if any_prefix { None } else { prefix },
        r["remote_group_id"],
        r["remote_address_group_id"]
    ])
}

async fn create_rule(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let req: RuleCreate = body::parse_create(body::one(req, "security_group_rule")?, RULE_ATTRS)?;
    let rule = build_rule(&st, &ctx, &req).await?;
    let cfg = st.cfg.clone();
    let b = rule.clone();
    st.db
        .transaction(|tx| {
            let (b, cfg) = (b.clone(), cfg.clone());
            Box::pin(async move {
                let sg = store::s(&b, "security_group_id").to_string();
                let key = rule_key(&b);
                for r in store::children(&mut **tx, kind::SECURITY_GROUP_RULE, &sg).await? {
                    if rule_key(&r) == key {
                        return Err(NetError::Conflict(
                            "SecurityGroupRuleExists",
                            format!("Security group rule already exists. Rule id is {}.", store::s(&r, "id")),
                        ));
                    }
                }
                quotas::check(tx, &cfg, store::s(&b, "project_id"), "security_group_rule", 1).await?;
                store::insert(
                    &mut **tx,
                    kind::SECURITY_GROUP_RULE,
                    &b,
                    &Links { parent: Some(sg), ..Default::default() },
                )
                .await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"security_group_rule": rule}))))
}

/// Neutron's "Failed to parse request. Required attribute 'x' not specified".
fn required(attr: &str) -> NetError {
    NetError::BadRequest(
        "HTTPBadRequest",
        format!("Failed to parse request. Required attribute '{attr}' not specified"),
    )
}

/// A protocol as a request gives it: a name, a number, or a number as a string.
fn protocol_text(p: &Field<Raw>) -> NetResult<Option<String>> {
    match p.get() {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(v) => Err(NetError::BadRequest(
            "SecurityGroupRuleInvalidProtocol",
            format!("Security group rule protocol {} not supported.", body::show(v)),
        )),
    }
}

async fn build_rule(st: &S, ctx: &RequestContext, req: &RuleCreate) -> NetResult<Value> {
    let sg_id = req.security_group_id.opt().ok_or_else(|| required("security_group_id"))?;
    let sg = find(st, ctx, &sg_id).await?;
    enforce(&st.policy, "create_security_group_rule", ctx, &sg)?;
    let project = store::s(&sg, "project_id").to_string();
    let _ = owner(ctx, &req.project_id, &req.tenant_id)?;
    let direction = req.direction.opt().ok_or_else(|| required("direction"))?;
    if direction != "ingress" && direction != "egress" {
        return Err(invalid(format!("'{direction}' is not in ['ingress', 'egress']")));
    }
    let ethertype = req.ethertype.opt().unwrap_or_else(|| "IPv4".into());
    let ethertype = match ethertype.to_ascii_lowercase().as_str() {
        "ipv4" => "IPv4",
        "ipv6" => "IPv6",
        _ => return Err(invalid(format!("'{ethertype}' is not in ['IPv4', 'IPv6']"))),
    };
    let proto = protocol(protocol_text(&req.protocol)?)?;
    let (min, max) = (req.port_range_min.opt(), req.port_range_max.opt());
    let num = proto_number(&proto);
    match num {
        Some(6) | Some(17) | Some(132) | Some(33) | Some(136) => {
            if min.is_some() != max.is_some() && min.is_none() {
                return Err(NetError::BadRequest(
                    "SecurityGroupInvalidPortRange",
                    "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                ));
            }
            for p in [min, max].into_iter().flatten() {
                if !(1..=65535).contains(&p) {
                    return Err(NetError::BadRequest(
                        "SecurityGroupInvalidPortValue",
                        format!("Invalid value for port {p}"),
                    ));
                }
            }
            if let (Some(a), Some(b)) = (min, max) {
                if a > b {
                    return Err(NetError::BadRequest(
                        "SecurityGroupInvalidPortRange",
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                    ));
                }
            }
        }
        Some(1) | Some(58) => {
            for (n, v) in [("type", min), ("code", max)] {
                if v.is_some_and(|v| !(0..=255).contains(&v)) {
                    return Err(NetError::BadRequest(
                        "SecurityGroupInvalidIcmpValue",
                        format!("Invalid value for ICMP {n} (port-range-min): {}", v.unwrap_or(0)),
                    ));
                }
            }
            if max.is_some() && min.is_none() {
                return Err(NetError::BadRequest(
                    "SecurityGroupMissingIcmpType",
                    format!(
                        "ICMP code (port-range-max) {} is provided but ICMP type (port-range-min) is missing.",
                        max.unwrap_or(0)
                    ),
                ));
            }
        }
        _ => {
            if min.is_some() || max.is_some() {
                return Err(NetError::BadRequest(
                    "SecurityGroupInvalidProtocolForPortRange",
                    "Ports can only be specified for the TCP, UDP, SCTP, DCCP, UDPLite and ICMP protocols".into(),
                ));
            }
        }
    }
    if num == Some(58) && ethertype == "IPv4" {
        return Err(NetError::BadRequest(
            "SecurityGroupEthertypeConflictWithProtocol",
            format!("Ethertype IPv4 is not supported by protocol {}.", proto.clone().unwrap_or_default()),
        ));
    }
    let prefix = req.remote_ip_prefix.opt();
    let remote_group = req.remote_group_id.opt();
    let remote_ag = req.remote_address_group_id.opt();
    if [prefix.is_some(), remote_group.is_some(), remote_ag.is_some()].iter().filter(|b| **b).count() > 1 {
        return Err(NetError::BadRequest(
            "SecurityGroupRemoteGroupAndRemoteIpPrefix",
            "Only remote_ip_prefix or remote_group_id may be provided.".into(),
        ));
    }
    let mut normalized = None;
    if let Some(p) = &prefix {
        let c = Cidr::parse(p, false).map_err(invalid)?;
        if (c.version == 4) != (ethertype == "IPv4") {
            return Err(NetError::BadRequest(
                "SecurityGroupRuleParameterConflict",
                format!("Conflicting value ethertype {ethertype} for CIDR {p}"),
            ));
        }
        normalized = Some(c.to_string());
    }
    if let Some(g) = &remote_group {
        find(st, ctx, g).await?;
    }
    if let Some(ag) = &remote_ag {
        crate::address_groups::find(st, ctx, ag).await?;
    }
    let mut r = rule_body(&project, &sg_id, &direction, ethertype, remote_group.as_deref());
    r["protocol"] = json!(proto);
    r["port_range_min"] = json!(min);
    r["port_range_max"] =
        json!(max.or(if matches!(num, Some(6) | Some(17) | Some(132) | Some(33) | Some(136)) { min } else { None }));
    r["remote_ip_prefix"] = json!(prefix);
    r["remote_address_group_id"] = json!(remote_ag);
    r["normalized_cidr"] = json!(normalized);
    r["description"] = json!(req.description.or_empty());
    r["tags"] = json!(crate::networks::tags(&req.tags));
    r["belongs_to_default_sg"] = json!(store::s(&sg, "name") == "default");
    Ok(r)
}

async fn list_rules(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    ensure_default_now(&st, ctx.project_id.as_deref().unwrap_or("")).await?;
    let items = store::visible(st.db.reader(), &ctx, kind::SECURITY_GROUP_RULE, None).await?;
    Ok(Json(crate::listing::respond(
        "security_group_rules",
        items,
        &q,
        &format!("{}/v2.0/security-group-rules", st.base),
    )?))
}

async fn find_rule(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::SECURITY_GROUP_RULE, Some(id))
        .await?
        .pop()
        .ok_or_else(|| not_found("Security group rule", id))
}

async fn show_rule(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    q: QueryPairs,
) -> NetResult<Json<Value>> {
    Ok(Json(json!({"security_group_rule": crate::listing::select_fields(find_rule(&st, &ctx, &id).await?, &q)})))
}

async fn remove_rule(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let r = find_rule(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_security_group_rule", &ctx, &r)?;
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                store::delete(&mut **tx, kind::SECURITY_GROUP_RULE, &id).await.map(|_| ()).map_err(NetError::from)
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
