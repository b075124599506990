//! Reading Cinder request bodies: the one place that turns loosely typed JSON into
//! checked values, with Cinder's messages for what is wrong.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{bad, VolResult};

/// The object under `key` (`{"volume": {...}}`).
pub fn obj<'a>(body: &'a Value, key: &str) -> VolResult<&'a Map<String, Value>> {
    match body.get(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(bad(format!("Invalid input: '{key}' must be an object"))),
        None => Err(bad(format!("Missing required element '{key}' in request body."))),
    }
}

/// An optional string (null = absent).
pub fn opt_str(m: &Map<String, Value>, key: &str) -> VolResult<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => {
            Err(bad(format!("Invalid input for field/attribute {key}. Value: {v}. {v} is not of type 'string'")))
        }
    }
}

/// An optional name or description of at most 255 characters.
pub fn opt_text(m: &Map<String, Value>, key: &str, max: usize) -> VolResult<Option<String>> {
    let v = opt_str(m, key)?;
    if let Some(s) = &v {
        if s.chars().count() > max {
            return Err(bad(format!("Invalid input for field/attribute {key}: longer than {max} characters")));
        }
    }
    Ok(v)
}

/// An optional integer; digits in a string are accepted, as Cinder's schemas do.
pub fn opt_int(m: &Map<String, Value>, key: &str) -> VolResult<Option<i64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(Value::String(s)) if !s.trim().is_empty() && s.trim().chars().all(|c| c.is_ascii_digit()) => {
            s.trim().parse().map(Some).map_err(|_| bad(format!("Invalid input for field/attribute {key}: {s}")))
        }
        Some(v) => Err(bad(format!("Invalid input for field/attribute {key}. Value: {v}. It must be an integer"))),
    }
}

/// An optional boolean; `"true"`/`"false"` and friends are accepted.
pub fn opt_bool(m: &Map<String, Value>, key: &str) -> VolResult<Option<bool>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => stratus_core::query::parse_bool(s)
            .map(Some)
            .ok_or_else(|| bad(format!("Invalid value '{s}' for {key}: it must be a boolean"))),
        Some(v) => Err(bad(format!("Invalid value {v} for {key}: it must be a boolean"))),
    }
}

/// A boolean value on its own (action bodies: `{"os-set_bootable": {"bootable": "true"}}`).
pub fn bool_value(v: Option<&Value>, key: &str) -> VolResult<bool> {
    let mut m = Map::new();
    if let Some(v) = v {
        m.insert(key.to_string(), v.clone());
    }
    opt_bool(&m, key)?.ok_or_else(|| bad(format!("Missing required element '{key}'")))
}

/// A positive size in GiB.
pub fn size(m: &Map<String, Value>, key: &str) -> VolResult<Option<i64>> {
    match opt_int(m, key)? {
        Some(n) if n < 1 => {
            Err(bad(format!("Invalid input for field/attribute {key}: {n} is less than the minimum of 1")))
        }
        Some(n) if n > i32::MAX as i64 => {
            Err(bad(format!("Invalid input for field/attribute {key}: {n} is too large")))
        }
        other => Ok(other),
    }
}

/// A metadata map: keys of 1–255 characters, string values of at most 255.
pub fn metadata(v: Option<&Value>, what: &str) -> VolResult<Option<BTreeMap<String, String>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                if k.is_empty() || k.chars().count() > 255 {
                    return Err(bad(format!("Invalid {what} key {k:?}: keys are 1 to 255 characters")));
                }
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => return Err(bad(format!("Invalid {what} value for {k:?}: null is not a string"))),
                    other => return Err(bad(format!("Invalid {what} value for {k:?}: {other} is not a string"))),
                };
                if v.chars().count() > 255 {
                    return Err(bad(format!("Invalid {what} value for {k:?}: longer than 255 characters")));
                }
                out.insert(k.clone(), v);
            }
            Ok(Some(out))
        }
        Some(other) => Err(bad(format!("Invalid {what}: {other} is not an object of strings"))),
    }
}

/// True when `s` is a UUID (with or without dashes).
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// A new resource id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A stored timestamp as Cinder renders it (`2026-01-02T03:04:05.000000`).
pub fn ts(stored: &Option<String>) -> Value {
    match stored {
        Some(s) => Value::String(stratus_core::time::micros_naive(s)),
        None => Value::Null,
    }
}

/// A metadata map as JSON.
pub fn map_json(m: &BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// 400 for field `key` with the reason.
pub fn bad_value(key: &str, why: &str) -> crate::error::VolError {
    crate::error::bad(format!("Invalid input for field/attribute {key}: {why}"))
}

/// Cinder's `links` of a resource: `self` (versioned) and `bookmark` (unversioned).
pub fn links(base: &str, project_id: &str, collection: &str, id: &str) -> Value {
    serde_json::json!([
        {"rel": "self", "href": format!("{base}/v3/{project_id}/{collection}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/{project_id}/{collection}/{id}")},
    ])
}
