//! `GET /allocation_candidates` (1.10): which providers (or sets of providers in a
//! tree, with sharing providers) can satisfy a request, answered from the read model.
//! Also the parsers of the query syntax it shares with `GET /resource_providers`
//! (`resources=VCPU:1,MEMORY_MB:512`, `required=A,!B,in:C,D`, `member_of=in:X,Y`, `!X`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, QueryPairs};

use crate::common::{authorize, csv, parse_uuid, route_since};
use crate::error::{PlacementError, Result};
use crate::index::{AggFilter, CandidateQuery, Group, TraitFilter};
use crate::store;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/allocation_candidates", get(list))
}

fn bad(msg: String) -> PlacementError {
    PlacementError::QueryBadValue(msg)
}

/// Parses `VCPU:1,MEMORY_MB:512`.
pub fn parse_resources(s: &str, param: &str) -> Result<Vec<(String, i64)>> {
    let mut out: Vec<(String, i64)> = Vec::new();
    for part in s.split(',') {
        let (rc, amt) = part.trim().split_once(':').ok_or_else(|| {
            PlacementError::BadRequest(format!(
                "Badly formed resources parameter. Expected resources query string parameter in form: \
                 ?{param}=VCPU:2,MEMORY_MB:1024. Got: {s}."
            ))
        })?;
        let amt: i64 = amt.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
            PlacementError::BadRequest(format!("Requested resource {rc} expected positive integer amount. Got: {amt}."))
        })?;
        if out.iter().any(|(r, _)| r == rc) {
            return Err(PlacementError::BadRequest(format!(
                "Badly formed resources parameter: resource class {rc} is repeated in {s}."
            )));
        }
        out.push((rc.trim().to_string(), amt));
    }
    Ok(out)
}

/// Parses the values of `required` (or `requiredN`, `root_required`).
pub fn parse_required(values: &[&str], v: ApiVersion, param: &str) -> Result<TraitFilter> {
    let mut f = TraitFilter::default();
    for val in values {
        if let Some(list) = val.strip_prefix("in:") {
            if !v.at_least(1, 39) {
                return Err(bad(format!(
                    "Invalid query string parameters: the in: syntax of {param} needs microversion 1.39. Got: {val}"
                )));
            }
            let any = csv(list);
            if any.is_empty() || any.iter().any(|t| t.starts_with('!')) {
                return Err(bad(format!("Invalid query string parameters: Expected '{param}' parameter value of the form: in:T1,T2. Got: {val}")));
            }
            f.required.push(any);
            continue;
        }
        let parts = csv(val);
        if parts.is_empty() {
            return Err(bad(format!(
                "Invalid query string parameters: Expected '{param}' parameter value of the form: HW_CPU_X86_VMX,CUSTOM_MAGIC. Got: {val}"
            )));
        }
        for t in parts {
            if let Some(fb) = t.strip_prefix('!') {
                if !v.at_least(1, 22) {
                    return Err(bad(format!(
                        "Invalid query string parameters: Expected '{param}' parameter value of the form: HW_CPU_X86_VMX,CUSTOM_MAGIC. Got: {val}"
                    )));
                }
                f.forbidden.push(fb.to_string());
            } else {
                f.required.push(vec![t]);
            }
        }
    }
    Ok(f)
}

/// Parses the values of `member_of` (or `member_ofN`).
pub fn parse_member_of(values: &[&str], v: ApiVersion) -> Result<AggFilter> {
    let mut f = AggFilter::default();
    let values: Vec<&str> = if v.at_least(1, 24) { values.to_vec() } else { values.iter().take(1).copied().collect() };
    for val in values {
        let (neg, rest) = match val.strip_prefix('!') {
            Some(r) if v.at_least(1, 32) => (true, r),
            Some(_) => return Err(bad(format!("Forbidden member_of needs microversion 1.32. Got: {val}"))),
            None => (false, val),
        };
        let (is_in, list) = match rest.strip_prefix("in:") {
            Some(l) => (true, l),
            None => (false, rest),
        };
        let uuids: Vec<String> = csv(list)
            .iter()
            .map(|u| {
                parse_uuid(u, "member_of")
                    .map_err(|_| bad(format!("Expected 'member_of' parameter to contain valid UUID(s). Got: {val}")))
            })
            .collect::<Result<_>>()?;
        if uuids.is_empty() || (!is_in && uuids.len() > 1) {
            return Err(bad(format!("Expected 'member_of' parameter to contain valid UUID(s). Got: {val}")));
        }
        if neg {
            f.forbidden.extend(uuids);
        } else {
            f.any_of.push(uuids);
        }
    }
    Ok(f)
}

/// 400 for traits that do not exist.
pub async fn validate_traits(st: &AppState, f: &TraitFilter) -> Result<()> {
    let mut all: Vec<String> = f.required.iter().flatten().cloned().collect();
    all.extend(f.forbidden.iter().cloned());
    if all.is_empty() {
        return Ok(());
    }
    let unknown = store::unknown_traits(st.db.reader(), &all).await?;
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(PlacementError::BadRequest(format!("No such trait(s): {}", unknown.join(", "))))
    }
}

/// Splits a parameter name into its base and suffix (`resources1` → (`resources`, `1`)).
fn split_param(k: &str) -> Option<(&'static str, &str)> {
    for base in ["resources", "required", "member_of", "in_tree"] {
        if let Some(s) = k.strip_prefix(base) {
            return Some((base, s));
        }
    }
    None
}

/// Builds the query from the parameters, enforcing which exist at version `v`.
async fn parse_query(st: &AppState, q: &QueryPairs, v: ApiVersion) -> Result<CandidateQuery> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    groups.insert(String::new(), Group::default());
    let mut seen_resources = BTreeSet::new();
    let mut required_vals: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut member_vals: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut out = CandidateQuery::default();
    let mut group_policy = None;
    for (k, val) in &q.0 {
        let unknown = || {
            PlacementError::BadRequest(format!(
                "Invalid query string parameters: Additional properties are not allowed ('{k}' was unexpected)"
            ))
        };
        match k.as_str() {
            "limit" if v.at_least(1, 16) => {
                let n: usize = val.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    PlacementError::BadRequest(format!(
                        "Invalid query string parameters: '{val}' does not match '^[1-9][0-9]*$'"
                    ))
                })?;
                out.limit = Some(n);
                continue;
            }
            "group_policy" if v.at_least(1, 25) => {
                match val.as_str() {
                    "isolate" => group_policy = Some(true),
                    "none" => group_policy = Some(false),
                    _ => {
                        return Err(PlacementError::BadRequest(format!(
                            "Invalid query string parameters: '{val}' is not one of ['none', 'isolate']"
                        )))
                    }
                }
                continue;
            }
            "root_required" if v.at_least(1, 35) => {
                let f = parse_required(&[val.as_str()], v, "root_required")?;
                out.root_required.required.extend(f.required);
                out.root_required.forbidden.extend(f.forbidden);
                continue;
            }
            "same_subtree" if v.at_least(1, 36) => {
                out.same_subtree.push(csv(val));
                continue;
            }
            _ => {}
        }
        let Some((base, suffix)) = split_param(k) else { return Err(unknown()) };
        if !suffix.is_empty() {
            let ok = if v.at_least(1, 33) {
                suffix.len() <= 64 && suffix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            } else {
                v.at_least(1, 25) && suffix.bytes().all(|b| b.is_ascii_digit()) && !suffix.starts_with('0')
            };
            if !ok {
                return Err(unknown());
            }
        }
        let min = match base {
            "resources" => (1, 10),
            "required" => (1, 17),
            "member_of" => (1, 21),
            _ => (1, 31),
        };
        if !v.at_least(min.0, min.1) {
            return Err(unknown());
        }
        let g = groups
            .entry(suffix.to_string())
            .or_insert_with(|| Group { suffix: suffix.to_string(), ..Default::default() });
        match base {
            "resources" => {
                if !seen_resources.insert(suffix.to_string()) {
                    return Err(PlacementError::QueryDuplicate(format!("Query parameter {k} may appear only once.")));
                }
                g.resources = parse_resources(val, k)?;
            }
            "required" => required_vals.entry(suffix.to_string()).or_default().push(val),
            "member_of" => member_vals.entry(suffix.to_string()).or_default().push(val),
            _ => {
                let u = parse_uuid(val, k)
                    .map_err(|_| bad(format!("Expected '{k}' parameter to be a format of uuid. Got: {val}")))?;
                g.in_tree = Some(u);
            }
        }
    }
    for (s, vals) in required_vals {
        let f = parse_required(&vals, v, &format!("required{s}"))?;
        validate_traits(st, &f).await?;
        if let Some(g) = groups.get_mut(&s) {
            g.traits = f;
        }
    }
    for (s, vals) in member_vals {
        let f = parse_member_of(&vals, v)?;
        if let Some(g) = groups.get_mut(&s) {
            g.aggs = f;
        }
    }
    validate_traits(st, &out.root_required).await?;
    if groups.values().all(|g| g.resources.is_empty()) {
        return Err(PlacementError::BadRequest("At least one of resources or resources[$S] must be specified.".into()));
    }
    for g in groups.values() {
        if !g.suffix.is_empty() && g.resources.is_empty() && !v.at_least(1, 36) {
            return Err(PlacementError::BadRequest(format!(
                "All request groups must specify resources. Group {} has none.",
                g.suffix
            )));
        }
        for (rc, _) in &g.resources {
            if !store::class_exists(st.db.reader(), rc).await? {
                return Err(PlacementError::BadRequest(format!(
                    "Invalid resource class in resources parameter: No such resource class {rc}."
                )));
            }
        }
    }
    let numbered_with_resources = groups.values().filter(|g| !g.suffix.is_empty() && !g.resources.is_empty()).count();
    if numbered_with_resources > 1 && group_policy.is_none() {
        return Err(PlacementError::QueryMissing(
            "The \"group_policy\" parameter is required when specifying more than one \"resources{N}\" parameter."
                .into(),
        ));
    }
    out.isolate = group_policy.unwrap_or(false);
    for list in &out.same_subtree {
        for s in list {
            if !groups.contains_key(s) || s.is_empty() {
                return Err(PlacementError::BadRequest(format!(
                    "Real suffixes should be specified in same_subtree: {s:?} is not a request group suffix."
                )));
            }
        }
    }
    // Unsuffixed group first.
    let unsuffixed = groups.remove("").unwrap_or_default();
    out.groups.push(unsuffixed);
    out.groups.extend(groups.into_values());
    Ok(out)
}

/// Response shapes, serialized straight from the read model (no intermediate JSON tree:
/// a 10,000-candidate answer would otherwise spend most of its time in the allocator).
mod wire {
    use std::collections::BTreeMap;

    use serde::Serialize;

    #[derive(Serialize)]
    pub struct Resources<'a> {
        pub resources: &'a BTreeMap<String, i64>,
    }

    #[derive(Serialize)]
    pub struct ListEntry<'a> {
        pub resource_provider: Uuid<'a>,
        pub resources: &'a BTreeMap<String, i64>,
    }

    #[derive(Serialize)]
    pub struct Uuid<'a> {
        pub uuid: &'a str,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum Allocations<'a> {
        /// 1.12+: keyed by provider.
        Dict(BTreeMap<&'a str, Resources<'a>>),
        /// 1.10-1.11: a list.
        List(Vec<ListEntry<'a>>),
    }

    #[derive(Serialize)]
    pub struct Request<'a> {
        pub allocations: Allocations<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub mappings: Option<&'a BTreeMap<String, Vec<String>>>,
    }

    #[derive(Serialize)]
    pub struct Usage {
        pub capacity: i64,
        pub used: i64,
    }

    #[derive(Serialize)]
    pub struct Summary<'a> {
        pub resources: BTreeMap<&'a str, Usage>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub traits: Option<&'a std::collections::BTreeSet<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub parent_provider_uuid: Option<Option<&'a str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub root_provider_uuid: Option<&'a str>,
    }

    #[derive(Serialize)]
    pub struct Body<'a> {
        pub allocation_requests: Vec<Request<'a>>,
        pub provider_summaries: BTreeMap<&'a str, Summary<'a>>,
    }
}

/// `GET /allocation_candidates`.
async fn list(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    route_since(v, 1, 10)?;
    authorize(&st, &ctx, "placement:allocation_candidates:list")?;
    let query = parse_query(&st, &q, v).await?;
    let requested: BTreeSet<&str> =
        query.groups.iter().flat_map(|g| g.resources.iter().map(|(rc, _)| rc.as_str())).collect();
    let idx = st.index.read();
    let cands = idx.candidates(&query);
    let mut summary_provs: BTreeSet<&str> = BTreeSet::new();
    let mut reqs = Vec::with_capacity(cands.len());
    for c in &cands {
        for p in c.allocations.keys() {
            summary_provs.insert(p);
            if v.at_least(1, 29) {
                if let Some(members) = idx.get(p).and_then(|x| idx.tree(&x.root)) {
                    summary_provs.extend(members.iter().map(String::as_str));
                }
            }
        }
        for ps in c.mappings.values() {
            summary_provs.extend(ps.iter().map(String::as_str));
        }
        let allocations = if v.at_least(1, 12) {
            wire::Allocations::Dict(
                c.allocations.iter().map(|(p, res)| (p.as_str(), wire::Resources { resources: res })).collect(),
            )
        } else {
            wire::Allocations::List(
                c.allocations
                    .iter()
                    .map(|(p, res)| wire::ListEntry { resource_provider: wire::Uuid { uuid: p }, resources: res })
                    .collect(),
            )
        };
        reqs.push(wire::Request { allocations, mappings: v.at_least(1, 34).then_some(&c.mappings) });
    }
    let mut summaries = BTreeMap::new();
    for p in summary_provs {
        let Some(prov) = idx.get(p) else { continue };
        let resources = prov
            .inventories
            .iter()
            .filter(|(rc, _)| v.at_least(1, 27) || requested.contains(rc.as_str()))
            .map(|(rc, inv)| (rc.as_str(), wire::Usage { capacity: inv.capacity(), used: prov.used(rc) }))
            .collect();
        let nested = v.at_least(1, 29);
        summaries.insert(
            prov.uuid.as_str(),
            wire::Summary {
                resources,
                traits: v.at_least(1, 17).then_some(&prov.traits),
                parent_provider_uuid: nested.then_some(prov.parent.as_deref()),
                root_provider_uuid: nested.then_some(prov.root.as_str()),
            },
        );
    }
    let body = serde_json::to_vec(&wire::Body { allocation_requests: reqs, provider_summaries: summaries })
        .map_err(|e| PlacementError::BadRequest(format!("cannot serialize candidates: {e}")))?;
    drop(idx);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}
