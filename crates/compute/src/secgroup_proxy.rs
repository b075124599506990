//! `os-security-groups` and `os-security-group-rules`: Nova's proxies to the network
//! service, served at microversions 2.1–2.35 and gone (404) from 2.36, as in Nova.
//!
//! Each request is checked the way Nova checks it (names and descriptions 1–255
//! characters, ids that are uuids, TCP/UDP/ICMP rules with integer ports in range), then
//! made to the network API *as the caller*, so ownership, quotas and duplicate rules stay
//! the network service's business; its answers are translated back to Nova's shapes:
//! only ingress rules, `from_port`/`to_port` 1–65535 for a TCP/UDP rule without ports and
//! -1 for ICMP, a rule's `group` naming its remote group, `ip_range.cidr` 0.0.0.0/0 when
//! a rule names no prefix. Network refusals map as Nova maps them: a conflict (a
//! duplicate rule, the `default` group, a group in use) is a 400, a quota a 403.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::internal::InternalUri;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs, RequestContext};

use crate::error::{ComputeError, Result};
use crate::net_proxy::net;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-security-groups", get(list).post(create).delete(remove_without_id))
        .route("/v2.1/os-security-groups/{id}", get(show).put(update).delete(remove))
        .route("/v2.1/os-security-group-rules", post(rule_create))
        .route("/v2.1/os-security-group-rules/{id}", delete(rule_remove))
}

/// The proxies end at 2.35: later microversions answer 404, as Nova does.
fn proxy_version(v: ApiVersion, api: &str) -> Result<()> {
    removed_proxy(v, api, "the network service's API")
}

/// The 404 of a network proxy API (`api`) at 2.36 or later, naming what to use instead.
pub(crate) fn removed_proxy(v: ApiVersion, api: &str, instead: &str) -> Result<()> {
    if v.at_least(2, 36) {
        return Err(ComputeError::NotFound(format!(
            "{api} is a proxy API removed at microversion 2.36: use {instead}, \
             or a compute microversion of at most 2.35"
        )));
    }
    Ok(())
}

/// Policy check of a proxy API, with the caller's project as the target.
pub(crate) fn enforce(st: &AppState, ctx: &RequestContext, rule: &str) -> Result<(), ApiError> {
    st.policy.enforce(rule, ctx, &json!({"project_id": ctx.project_id}))?;
    Ok(())
}

/// Nova's `validate_id`: security group and rule ids are uuids.
fn valid_id(id: &str) -> Result<()> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ComputeError::BadRequest(format!("Security group id should be uuid: {id:?} is not one")));
    }
    Ok(())
}

/// Nova's `validate_property`: a string of 1–255 characters once trimmed.
fn valid_property(v: Option<&Value>, what: &str) -> Result<String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| ComputeError::BadRequest(format!("Security group {what} is required and must be a string")))?;
    let n = s.trim().chars().count();
    if !(1..=255).contains(&n) {
        return Err(ComputeError::BadRequest(format!(
            "Security group {what} must be 1 to 255 characters (not counting surrounding spaces); it has {n}"
        )));
    }
    Ok(s.to_string())
}

fn group_uri(id: &str) -> String {
    InternalUri::new("/network/v2.0/security-groups").seg(id).as_str().to_string()
}

async fn get_group(st: &AppState, ctx: &RequestContext, id: &str) -> Result<Value> {
    let b = net(st, ctx, Method::GET, &group_uri(id), None, || format!("Security group {id} not found.")).await?;
    Ok(b["security_group"].clone())
}

/// Remote groups of rules, by id: `Some(group)` when the caller can see it.
pub(crate) type GroupCache = HashMap<String, Option<Value>>;

async fn remote_group(st: &AppState, ctx: &RequestContext, id: &str, cache: &mut GroupCache) -> Result<Option<Value>> {
    if let Some(g) = cache.get(id) {
        return Ok(g.clone());
    }
    let g = match get_group(st, ctx, id).await {
        Ok(g) => Some(g),
        Err(ComputeError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    cache.insert(id.to_string(), g.clone());
    Ok(g)
}

/// A Neutron rule in Nova's form, or `None` when its remote group cannot be seen (Nova
/// leaves such a rule out).
async fn nova_rule(st: &AppState, ctx: &RequestContext, r: &Value, cache: &mut GroupCache) -> Result<Option<Value>> {
    let protocol = r["protocol"].as_str();
    let (from, to) = match (protocol, &r["port_range_min"], &r["port_range_max"]) {
        (Some(p), Value::Null, Value::Null) if p.eq_ignore_ascii_case("tcp") || p.eq_ignore_ascii_case("udp") => {
            (json!(1), json!(65535))
        }
        (Some(_), Value::Null, Value::Null) => (json!(-1), json!(-1)),
        (_, min, max) => (min.clone(), max.clone()),
    };
    let (group, ip_range) = match r["remote_group_id"].as_str() {
        Some(gid) => match remote_group(st, ctx, gid, cache).await? {
            Some(g) => (json!({"name": g["name"], "tenant_id": g["project_id"]}), json!({})),
            None => return Ok(None),
        },
        None => (json!({}), json!({"cidr": r["remote_ip_prefix"].as_str().unwrap_or("0.0.0.0/0")})),
    };
    Ok(Some(json!({
        "id": r["id"],
        "parent_group_id": r["security_group_id"],
        "ip_protocol": protocol,
        "from_port": from,
        "to_port": to,
        "group": group,
        "ip_range": ip_range,
    })))
}

/// A Neutron group in Nova's form (ingress rules only, as Nova shows them).
pub(crate) async fn nova_group(
    st: &AppState,
    ctx: &RequestContext,
    g: &Value,
    cache: &mut GroupCache,
) -> Result<Value> {
    let mut rules = Vec::new();
    for r in g["security_group_rules"].as_array().into_iter().flatten().filter(|r| r["direction"] == "ingress") {
        if let Some(r) = nova_rule(st, ctx, r, cache).await? {
            rules.push(r);
        }
    }
    Ok(json!({
        "id": g["id"],
        "name": g["name"],
        "description": g["description"],
        "tenant_id": g["project_id"],
        "rules": rules,
    }))
}

/// A fresh cache holding `groups` already fetched.
fn cache_of<'a>(groups: impl IntoIterator<Item = &'a Value>) -> GroupCache {
    groups.into_iter().filter_map(|g| Some((g["id"].as_str()?.to_string(), Some(g.clone())))).collect()
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    proxy_version(v, "os-security-groups")?;
    enforce(&st, &ctx, "os_compute_api:os-security-groups:get")?;
    let all = ctx.is_admin() && q.get("all_tenants").is_some_and(|a| stratus_core::query::parse_bool(a) != Some(false));
    let mut uri = InternalUri::new("/network/v2.0/security-groups");
    if !all {
        uri = uri.query("project_id", ctx.project_id.as_deref().unwrap_or_default());
    }
    let b = net(&st, &ctx, Method::GET, uri.as_str(), None, String::new).await?;
    let groups = b["security_groups"].as_array().cloned().unwrap_or_default();
    let number = |k: &str| -> Result<Option<usize>> {
        q.get(k)
            .map(|n| {
                n.parse::<usize>()
                    .map_err(|_| ComputeError::BadRequest(format!("{k} must be an integer >= 0, not {n:?}")))
            })
            .transpose()
    };
    let (offset, limit) = (number("offset")?.unwrap_or(0), number("limit")?);
    let mut cache = cache_of(&groups);
    let mut out = Vec::new();
    for g in groups.iter().skip(offset).take(limit.unwrap_or(usize::MAX)) {
        out.push(nova_group(&st, &ctx, g, &mut cache).await?);
    }
    Ok(Json(json!({"security_groups": out})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    proxy_version(v, "os-security-groups")?;
    enforce(&st, &ctx, "os_compute_api:os-security-groups:show")?;
    valid_id(&id)?;
    let g = get_group(&st, &ctx, &id).await?;
    let view = nova_group(&st, &ctx, &g, &mut cache_of([&g])).await?;
    Ok(Json(json!({"security_group": view})))
}

/// `{"security_group": {"name": ..., "description": ...}}` (both required, as Nova).
#[derive(Deserialize)]
struct GroupBody {
    security_group: GroupFields,
}

/// Kept as JSON values so a wrong kind gets Nova's message rather than serde's.
#[derive(Deserialize)]
struct GroupFields {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    description: Option<Value>,
}

impl GroupFields {
    fn network_body(&self) -> Result<Value> {
        let name = valid_property(self.name.as_ref(), "name")?;
        let description = valid_property(self.description.as_ref(), "description")?;
        Ok(json!({"security_group": {"name": name, "description": description}}))
    }
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(b): OsJson<GroupBody>,
) -> Result<Json<Value>, ApiError> {
    proxy_version(v, "os-security-groups")?;
    enforce(&st, &ctx, "os_compute_api:os-security-groups:create")?;
    let body = b.security_group.network_body()?;
    let made = net(&st, &ctx, Method::POST, "/network/v2.0/security-groups", Some(body), || {
        "Security group not found.".into()
    })
    .await?;
    let g = &made["security_group"];
    let view = nova_group(&st, &ctx, g, &mut cache_of([g])).await?;
    Ok(Json(json!({"security_group": view})))
}

async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<GroupBody>,
) -> Result<Json<Value>, ApiError> {
    proxy_version(v, "os-security-groups")?;
    enforce(&st, &ctx, "os_compute_api:os-security-groups:update")?;
    valid_id(&id)?;
    let body = b.security_group.network_body()?;
    get_group(&st, &ctx, &id).await?;
    let done =
        net(&st, &ctx, Method::PUT, &group_uri(&id), Some(body), || format!("Security group {id} not found.")).await?;
    let g = &done["security_group"];
    let view = nova_group(&st, &ctx, g, &mut cache_of([g])).await?;
    Ok(Json(json!({"security_group": view})))
}

/// `DELETE /os-security-groups/` (no id): Nova answers 404.
async fn remove_without_id() -> ApiError {
    ComputeError::NotFound("Give the id of the security group to delete: DELETE /os-security-groups/{id}".into()).into()
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    proxy_version(v, "os-security-groups")?;
    enforce(&st, &ctx, "os_compute_api:os-security-groups:delete")?;
    valid_id(&id)?;
    net(&st, &ctx, Method::DELETE, &group_uri(&id), None, || format!("Security group {id} not found.")).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `{"security_group_rule": {...}}`: ports and protocol kept as JSON values, checked as
/// Nova checks them.
#[derive(Deserialize)]
struct RuleBody {
    security_group_rule: RuleFields,
}

#[derive(Deserialize)]
struct RuleFields {
    #[serde(default)]
    parent_group_id: Option<Value>,
    #[serde(default)]
    ip_protocol: Option<Value>,
    #[serde(default)]
    from_port: Option<Value>,
    #[serde(default)]
    to_port: Option<Value>,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    group_id: Option<Value>,
}

/// An id given as a string or a number, as Nova's bodies take them.
fn id_text(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// A port given as an integer or an integer string.
fn port(v: &Option<Value>) -> Option<Option<i64>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_i64().map(Some),
        Some(Value::String(s)) => s.trim().parse().ok().map(Some),
        _ => None,
    }
}

/// `address/prefix` with the prefix in range for the address family.
fn parse_cidr(c: &str) -> Option<(std::net::IpAddr, u8)> {
    let (a, l) = c.split_once('/')?;
    let addr: std::net::IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    (len <= if addr.is_ipv4() { 32 } else { 128 }).then_some((addr, len))
}

/// The ingress rule Nova would build, as the network API's body for group `parent`.
fn rule_body(r: &RuleFields, parent: &str) -> Result<Value> {
    let group_id = id_text(&r.group_id);
    let cidr = match (&group_id, r.cidr.as_deref().map(str::trim)) {
        (Some(_), _) => None,
        (None, None | Some("")) => Some("0.0.0.0/0".to_string()),
        (None, Some(c)) => {
            let (addr, len) = parse_cidr(c).ok_or_else(|| {
                ComputeError::BadRequest(format!("Invalid cidr {c}: use an address/prefix such as 10.0.0.0/24"))
            })?;
            if len == 0 && !addr.is_unspecified() {
                return Err(ComputeError::BadRequest(format!("Bad prefix for network in cidr {c}")));
            }
            Some(c.to_string())
        }
    };
    if let Some(g) = &group_id {
        valid_id(g)?;
    }
    let protocol = match &r.ip_protocol {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let (from, to) = match (port(&r.from_port), port(&r.to_port)) {
        (Some(f), Some(t)) => (f, t),
        _ => {
            let icmp = protocol.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("icmp"));
            return Err(ComputeError::BadRequest(
                if icmp {
                    "Type and Code must be integers for ICMP protocol type"
                } else {
                    "To and From ports must be integers"
                }
                .into(),
            ));
        }
    };
    let mut body = json!({
        "security_group_id": parent,
        "direction": "ingress",
        "ethertype": if cidr.as_deref().is_some_and(|c| c.contains(':')) { "IPv6" } else { "IPv4" },
        "remote_ip_prefix": cidr,
        "remote_group_id": group_id,
    });
    match (protocol, from, to) {
        (Some(p), Some(from), Some(to)) => {
            let upper = p.to_ascii_uppercase();
            if !["TCP", "UDP", "ICMP"].contains(&upper.as_str()) {
                return Err(ComputeError::BadRequest(format!("Invalid IP protocol {p}: use tcp, udp or icmp")));
            }
            if upper != "ICMP" && from > to {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid port range {from}:{to}. Former value cannot be greater than the later"
                )));
            }
            if upper != "ICMP" && (from < 1 || to > 65535) {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid port range {from}:{to}. Valid {upper} ports should be between 1-65535"
                )));
            }
            if upper == "ICMP" && !((-1..=255).contains(&from) && (-1..=255).contains(&to)) {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid port range {from}:{to}. For ICMP, the type:code must be valid (-1 to 255)"
                )));
            }
            body["protocol"] = json!(p.to_ascii_lowercase());
            body["port_range_min"] = if from == -1 { Value::Null } else { json!(from) };
            body["port_range_max"] = if to == -1 { Value::Null } else { json!(to) };
        }
        // A rule by address needs protocol and ports; one by group may allow everything.
        _ if body["remote_ip_prefix"].is_string() => {
            return Err(ComputeError::BadRequest(
                "Not enough parameters to build a valid rule: give ip_protocol, from_port and to_port".into(),
            ))
        }
        _ => {}
    }
    Ok(json!({"security_group_rule": body}))
}

async fn rule_create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(b): OsJson<RuleBody>,
) -> Result<Json<Value>, ApiError> {
    proxy_version(v, "os-security-group-rules")?;
    enforce(&st, &ctx, "os_compute_api:os-security-groups:rule:create")?;
    let r = b.security_group_rule;
    let parent = id_text(&r.parent_group_id).ok_or_else(|| {
        ComputeError::BadRequest("parent_group_id is required: the id of the group to add the rule to".into())
    })?;
    valid_id(&parent)?;
    let group = get_group(&st, &ctx, &parent).await?;
    let body = rule_body(&r, &parent)?;
    let mut cache = cache_of([&group]);
    if let Some(gid) = body["security_group_rule"]["remote_group_id"].as_str() {
        if remote_group(&st, &ctx, gid, &mut cache).await?.is_none() {
            return Err(ComputeError::NotFound(format!("Security group {gid} not found.")).into());
        }
    }
    let made = net(&st, &ctx, Method::POST, "/network/v2.0/security-group-rules", Some(body), || {
        format!("Security group {parent} not found.")
    })
    .await?;
    let rule = nova_rule(&st, &ctx, &made["security_group_rule"], &mut cache)
        .await?
        .ok_or_else(|| ComputeError::NotFound("The rule's remote security group is gone.".into()))?;
    Ok(Json(json!({"security_group_rule": rule})))
}

async fn rule_remove(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    proxy_version(v, "os-security-group-rules")?;
    enforce(&st, &ctx, "os_compute_api:os-security-groups:rule:delete")?;
    valid_id(&id)?;
    let uri = InternalUri::new("/network/v2.0/security-group-rules").seg(&id).as_str().to_string();
    net(&st, &ctx, Method::DELETE, &uri, None, || format!("Security group rule {id} not found.")).await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> RuleFields {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rules_are_checked_as_nova_checks_them() {
        let p = "0c8f5a4c-2d1e-4b52-9a55-5b7a1f0f7c11";
        let ok = rule_body(&fields(json!({"ip_protocol": "TCP", "from_port": "22", "to_port": 22})), p).unwrap();
        let r = &ok["security_group_rule"];
        assert_eq!((r["protocol"].as_str(), r["remote_ip_prefix"].as_str()), (Some("tcp"), Some("0.0.0.0/0")));
        let icmp = rule_body(&fields(json!({"ip_protocol": "icmp", "from_port": -1, "to_port": -1})), p).unwrap();
        assert!(icmp["security_group_rule"]["port_range_min"].is_null());
        for bad in [
            json!({"ip_protocol": "tcp", "from_port": 22, "to_port": 21}),
            json!({"ip_protocol": "tcp", "from_port": 65536, "to_port": 65537}),
            json!({"ip_protocol": "tcp", "from_port": 22, "to_port": 70000}),
            json!({"ip_protocol": "xyz", "from_port": 22, "to_port": 22}),
            json!({"ip_protocol": "icmp", "from_port": 256, "to_port": 0}),
            json!({"ip_protocol": "tcp", "from_port": "ssh", "to_port": 22}),
            json!({"ip_protocol": "tcp"}),
            json!({"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "10.0.0.0/40"}),
            json!({"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "10.0.0.0/0"}),
            json!({"group_id": "not-a-uuid"}),
        ] {
            assert!(matches!(rule_body(&fields(bad.clone()), p), Err(ComputeError::BadRequest(_))), "{bad}");
        }
        // A rule by group may leave protocol and ports out (all traffic from the group).
        let g = rule_body(&fields(json!({"group_id": p})), p).unwrap();
        assert!(g["security_group_rule"]["remote_ip_prefix"].is_null());
    }
}
