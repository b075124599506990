//! Helpers every Placement resource module uses: policy checks, version gates, UUID and
//! body validation, and the provider JSON shape.

use serde_json::{Map, Value};
use stratus_core::{ApiVersion, RequestContext};

use crate::error::{PlacementError, Result};
use crate::AppState;

/// Enforces `rule` for `ctx`.
pub fn authorize(st: &AppState, ctx: &RequestContext, rule: &str) -> Result<()> {
    st.policy.enforce(rule, ctx, &serde_json::json!({"project_id": ctx.project_id, "user_id": ctx.user_id}))?;
    Ok(())
}

/// A route that does not exist before `major.minor` answers 404, as Placement does.
pub fn route_since(v: ApiVersion, major: u32, minor: u32) -> Result<()> {
    if v.at_least(major, minor) {
        Ok(())
    } else {
        Err(PlacementError::NotFound("The resource could not be found.".into()))
    }
}

/// Canonical lower-case hyphenated form of a UUID, or 400.
pub fn parse_uuid(s: &str, what: &str) -> Result<String> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| PlacementError::BadRequest(format!("Malformed {what}: {s:?} is not a valid UUID")))
}

/// The body as an object, or 400.
pub fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| PlacementError::BadRequest(format!("JSON does not validate: {what} must be an object")))
}

/// Rejects keys outside `allowed` (Placement's schemas forbid additional properties).
pub fn only_keys(obj: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(PlacementError::BadRequest(format!(
                "JSON does not validate: Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
    }
    Ok(())
}

/// A required key.
pub fn required<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| PlacementError::BadRequest(format!("JSON does not validate: '{key}' is a required property")))
}

/// An integer within bounds.
pub fn int_in(v: &Value, key: &str, min: i64, max: i64) -> Result<i64> {
    let n = v.as_i64().filter(|_| !v.is_f64()).ok_or_else(|| {
        PlacementError::BadRequest(format!("JSON does not validate: {v} is not of type 'integer' ({key})"))
    })?;
    if n < min {
        return Err(PlacementError::BadRequest(format!(
            "JSON does not validate: {n} is less than the minimum of {min} ({key})"
        )));
    }
    if n > max {
        return Err(PlacementError::BadRequest(format!(
            "JSON does not validate: {n} is greater than the maximum of {max} ({key})"
        )));
    }
    Ok(n)
}

/// A string.
pub fn string<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| {
        PlacementError::BadRequest(format!("JSON does not validate: {v} is not of type 'string' ({key})"))
    })
}

/// The generation a client sent, required where Placement requires it.
pub fn generation(obj: &Map<String, Value>, key: &str) -> Result<i64> {
    int_in(required(obj, key)?, key, 0, i64::MAX)
}

/// Path of a link under the service (links in bodies are relative, as in Placement).
pub fn href(path: &str) -> String {
    format!("/placement{path}")
}

/// A link object.
pub fn link(rel: &str, path: &str) -> Value {
    serde_json::json!({"rel": rel, "href": href(path)})
}

/// The JSON of a provider at microversion `v`.
pub fn provider_json(
    uuid: &str,
    name: &str,
    generation: i64,
    parent: Option<&str>,
    root: &str,
    v: ApiVersion,
) -> Value {
    let base = format!("/resource_providers/{uuid}");
    let mut links = vec![
        link("self", &base),
        link("inventories", &format!("{base}/inventories")),
        link("usages", &format!("{base}/usages")),
    ];
    if v.at_least(1, 1) {
        links.push(link("aggregates", &format!("{base}/aggregates")));
    }
    if v.at_least(1, 6) {
        links.push(link("traits", &format!("{base}/traits")));
    }
    if v.at_least(1, 11) {
        links.push(link("allocations", &format!("{base}/allocations")));
    }
    let mut o = serde_json::json!({"uuid": uuid, "name": name, "generation": generation, "links": links});
    if v.at_least(1, 14) {
        o["parent_provider_uuid"] = parent.map(Value::from).unwrap_or(Value::Null);
        o["root_provider_uuid"] = Value::from(root);
    }
    o
}

/// Splits a comma-separated query value into trimmed, non-empty parts.
pub fn csv(s: &str) -> Vec<String> {
    s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()
}

/// How to delete one custom name (resource class or trait) that may still be in use.
pub struct CustomName {
    /// `SELECT 1 FROM <table> WHERE <col> = ` — rows that still use the name.
    pub in_use_sql: &'static str,
    /// `DELETE FROM <table> WHERE name = `.
    pub delete_sql: &'static str,
    /// Message for the 409 when the name is in use.
    pub in_use: fn(&str) -> String,
    /// Message for the 404 when there is no such name.
    pub not_found: fn(&str) -> String,
}

/// Deletes a custom resource class or trait in one transaction: 409 while anything uses
/// it, 404 when it does not exist. Both kinds follow the same rule, so it lives once.
pub async fn delete_custom_name(st: &AppState, name: String, how: CustomName) -> Result<()> {
    st.db
        .transaction(move |tx| {
            let name = name.clone();
            Box::pin(async move {
                let mut q = stratus_db::Query::new(how.in_use_sql);
                q.bind(&name).push(" LIMIT 1");
                if q.fetch_optional(&mut **tx).await?.is_some() {
                    return Err(PlacementError::Conflict((how.in_use)(&name)));
                }
                let mut d = stratus_db::Query::new(how.delete_sql);
                d.bind(&name);
                if d.execute(&mut **tx).await? == 0 {
                    return Err(PlacementError::NotFound((how.not_found)(&name)));
                }
                Ok(())
            })
        })
        .await
}
