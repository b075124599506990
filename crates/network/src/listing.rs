//! Neutron's list semantics, applied uniformly to every collection: attribute filters
//! (repeat a key to OR values), tag filters (`tags`, `tags-any`, `not-tags`,
//! `not-tags-any`), `sort_key`/`sort_dir`, `limit`/`marker` with `<collection>_links`,
//! and `fields=` selection.
//!
//! The candidate rows come from the store already narrowed to what the caller may see,
//! so these rules never widen visibility.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};
use stratus_core::query::{encode, parse_bool, QueryPairs};

use crate::error::{invalid, NetResult};

const RESERVED: &[&str] = &[
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
];

fn tag_values(q: &QueryPairs, key: &str) -> Vec<String> {
    q.all(key).iter().flat_map(|v| v.split(',')).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

fn value_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => parse_bool(want) == Some(*b),
        Value::Number(n) => n.to_string() == want,
        Value::Null => want.is_empty() || want.eq_ignore_ascii_case("none") || want.eq_ignore_ascii_case("null"),
        Value::Array(items) => items.iter().any(|i| value_matches(i, want)),
        Value::Object(_) => false,
    }
}

/// `fixed_ips=ip_address=1.2.3.4` / `fixed_ips=subnet_id=...` / `ip_address_substr=`.
fn fixed_ip_matches(v: &Value, want: &str) -> bool {
    let Some((k, val)) = want.split_once('=') else { return false };
    v.as_array().is_some_and(|ips| {
        ips.iter().any(|ip| match k {
            "ip_address_substr" => ip.get("ip_address").and_then(Value::as_str).is_some_and(|a| a.contains(val)),
            _ => ip.get(k).and_then(Value::as_str) == Some(val),
        })
    })
}

/// True when `item` passes every attribute and tag filter of `q`.
pub fn matches(item: &Value, q: &QueryPairs) -> bool {
    let mut keys: Vec<&str> = q.0.iter().map(|(k, _)| k.as_str()).filter(|k| !RESERVED.contains(k)).collect();
    keys.dedup();
    for key in keys {
        // Attributes a resource does not have are not filters on it (clients send
        // filters such as `tenant_id` that only some resources carry).
        let Some(v) = item.get(key) else { continue };
        let wants = q.all(key);
        let ok = if key == "fixed_ips" {
            wants.iter().all(|w| fixed_ip_matches(v, w))
        } else {
            wants.iter().any(|w| value_matches(v, w))
        };
        if !ok {
            return false;
        }
    }
    let tags: Vec<String> = item
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let all = tag_values(q, "tags");
    if !all.iter().all(|t| tags.contains(t)) {
        return false;
    }
    let any = tag_values(q, "tags-any");
    if !any.is_empty() && !any.iter().any(|t| tags.contains(t)) {
        return false;
    }
    let not_all = tag_values(q, "not-tags");
    if !not_all.is_empty() && not_all.iter().all(|t| tags.contains(t)) {
        return false;
    }
    let not_any = tag_values(q, "not-tags-any");
    if not_any.iter().any(|t| tags.contains(t)) {
        return false;
    }
    true
}

fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            _ => 4,
        }
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Keeps only the requested `fields` (every field when none are named).
pub fn select_fields(item: Value, q: &QueryPairs) -> Value {
    let fields: Vec<&str> = q.all("fields").into_iter().flat_map(|f| f.split(',')).filter(|f| !f.is_empty()).collect();
    if fields.is_empty() {
        return item;
    }
    match item {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(k, _)| fields.contains(&k.as_str())).collect()),
        other => other,
    }
}

/// Builds the list response `{"<collection>": [...], "<collection>_links": [...]}`.
///
/// `known_keys`: attributes that may be sorted on (Neutron refuses other sort keys).
pub fn respond(collection: &str, items: Vec<Value>, q: &QueryPairs, url: &str) -> NetResult<Value> {
    let mut items: Vec<Value> = items.into_iter().filter(|i| matches(i, q)).collect();
    let keys = q.all("sort_key");
    let dirs = q.all("sort_dir");
    if !keys.is_empty() {
        let mut spec = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let dir = dirs.get(i).or(dirs.last()).copied().unwrap_or("asc");
            let desc = match dir.to_ascii_lowercase().as_str() {
                "asc" => false,
                "desc" => true,
                other => return Err(invalid(format!("Invalid sort direction {other:?}"))),
            };
            if let Some(first) = items.first() {
                if first.get(*k).is_none() {
                    return Err(crate::error::NetError::BadRequest(
                        "HTTPBadRequest",
                        format!("{k} is an invalid attribute for sort_key"),
                    ));
                }
            }
            spec.push((k.to_string(), desc));
        }
        let last_desc = spec.last().map(|s| s.1).unwrap_or(false);
        items.sort_by(|a, b| {
            for (k, desc) in &spec {
                let o = cmp_values(a.get(k), b.get(k));
                let o = if *desc { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            let o = cmp_values(a.get("id"), b.get("id"));
            if last_desc {
                o.reverse()
            } else {
                o
            }
        });
    }
    let mut links = Vec::new();
    if let Some(marker) = q.get("marker") {
        if let Some(pos) = items.iter().position(|i| i.get("id").and_then(Value::as_str) == Some(marker)) {
            items.drain(..=pos);
        } else {
            items.clear();
        }
        links.push(json!({"rel": "previous", "href": link(url, q, marker, true)}));
    }
    if let Some(limit) = q.get("limit") {
        let limit: usize = limit.parse().map_err(|_| {
            invalid(format!("Bad limit request: Limit must be an integer 0 or greater and not '{limit}'"))
        })?;
        if limit > 0 && items.len() > limit {
            items.truncate(limit);
            if let Some(last) = items.last().and_then(|i| i.get("id")).and_then(Value::as_str) {
                links.push(json!({"rel": "next", "href": link(url, q, last, false)}));
            }
        }
    }
    let items: Vec<Value> = items.into_iter().map(|i| select_fields(i, q)).collect();
    let mut out = Map::new();
    out.insert(collection.to_string(), Value::Array(items));
    if !links.is_empty() {
        out.insert(format!("{collection}_links"), Value::Array(links));
    }
    Ok(Value::Object(out))
}

fn link(url: &str, q: &QueryPairs, marker: &str, reverse: bool) -> String {
    let mut parts: Vec<String> =
        q.0.iter()
            .filter(|(k, _)| k != "marker" && k != "page_reverse")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
    parts.push(format!("marker={}", encode(marker)));
    if reverse {
        parts.push("page_reverse=True".into());
    }
    format!("{url}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_core::query::parse_pairs;

    fn q(s: &str) -> QueryPairs {
        QueryPairs(parse_pairs(s).unwrap())
    }

    #[test]
    fn filters_sorts_pages_and_selects() {
        let items = vec![
            json!({"id": "a", "name": "x", "shared": true, "tags": ["red"], "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.3"}]}),
            json!({"id": "b", "name": "y", "shared": false, "tags": ["red", "blue"], "fixed_ips": []}),
            json!({"id": "c", "name": "y", "shared": false, "tags": [], "fixed_ips": []}),
        ];
        let r = respond("things", items.clone(), &q("shared=False&name=y&tags=red"), "u").unwrap();
        assert_eq!(r["things"].as_array().unwrap().len(), 1);
        let r = respond("things", items.clone(), &q("fixed_ips=ip_address%3D10.0.0.3"), "u").unwrap();
        assert_eq!(r["things"][0]["id"], "a");
        let r = respond("things", items.clone(), &q("not-tags-any=blue&sort_key=name&sort_dir=desc"), "u").unwrap();
        let ids: Vec<_> = r["things"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec!["c", "a"]);
        let r = respond("things", items.clone(), &q("limit=2&fields=id"), "u").unwrap();
        assert_eq!(r["things"], json!([{"id": "a"}, {"id": "b"}]));
        assert!(r["things_links"][0]["href"].as_str().unwrap().contains("marker=b"));
        let r = respond("things", items.clone(), &q("limit=2&marker=b"), "u").unwrap();
        assert_eq!(r["things"].as_array().unwrap().len(), 1);
        assert!(respond("things", items, &q("sort_key=nope"), "u").is_err());
    }
}
