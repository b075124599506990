//! Validation of metadefs request bodies, by the rules the `/v2/schemas/metadefs/*`
//! documents publish: known keys only (400 for others), read-only keys refused (403),
//! each value of its type, names 1 to 80 characters.

use serde_json::{Map, Value};

use crate::error::{ImageError, Result};

/// Keys the server sets; a client sending them gets 403, as Glance.
pub const READ_ONLY: &[&str] = &["self", "schema", "created_at", "updated_at"];

/// JSON types a property definition may declare.
pub const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string", "null"];

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::BadRequest(msg.into())
}

/// The body as an object, with read-only keys refused and unknown keys rejected.
pub fn object<'a>(body: &'a Value, what: &str, allowed: &[&str]) -> Result<&'a Map<String, Value>> {
    let obj = body.as_object().ok_or_else(|| bad(format!("The {what} must be a JSON object")))?;
    if let Some(k) = obj.keys().find(|k| READ_ONLY.contains(&k.as_str())) {
        return Err(ImageError::Forbidden(format!("Attribute '{k}' is read-only.")));
    }
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str()) && !READ_ONLY.contains(&k.as_str())) {
        return Err(bad(format!("Additional properties are not allowed ('{k}' was unexpected) in the {what}")));
    }
    Ok(obj)
}

/// A name: a string of 1 to `max` characters without control characters.
pub fn name(v: Option<&Value>, field: &str, max: usize) -> Result<String> {
    let s = v.and_then(Value::as_str).ok_or_else(|| bad(format!("'{field}' is a required property (a string)")))?;
    check_text(s, field, max)?;
    if s.is_empty() {
        return Err(bad(format!("'{field}' must not be empty")));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(format!("'{field}' must not contain control characters")));
    }
    Ok(s.to_string())
}

fn check_text(s: &str, field: &str, max: usize) -> Result<()> {
    if s.chars().count() > max {
        return Err(bad(format!("'{field}' is too long (at most {max} characters)")));
    }
    Ok(())
}

/// An optional string of at most `max` characters (`null` allowed as absent).
pub fn opt_text(obj: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_text(s, field, max)?;
            Ok(Some(s.clone()))
        }
        Some(v) => Err(bad(format!("{v} is not of type 'string' for '{field}'"))),
    }
}

/// An optional boolean.
pub fn opt_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(format!("{v} is not of type 'boolean' for '{field}'"))),
    }
}

fn string_list(v: &Value, field: &str, unique: bool) -> Result<()> {
    let arr = v.as_array().ok_or_else(|| bad(format!("{v} is not of type 'array' for '{field}'")))?;
    for (i, s) in arr.iter().enumerate() {
        if !s.is_string() {
            return Err(bad(format!("{s} is not of type 'string' in '{field}'")));
        }
        if unique && arr[..i].contains(s) {
            return Err(bad(format!("{s} is not unique in '{field}'")));
        }
    }
    Ok(())
}

fn non_negative(v: &Value, field: &str) -> Result<()> {
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(()),
        _ => Err(bad(format!("{v} is not a non-negative integer for '{field}'"))),
    }
}

/// A property definition (`properties` of a namespace or an object, or a property on
/// its own when `with_name`): `title` and `type` required, every other keyword of its
/// JSON type. Returns the definition as stored (without `name`).
pub fn property(v: &Value, with_name: bool) -> Result<(Option<String>, Map<String, Value>)> {
    const KEYS: &[&str] = &[
        "name",
        "title",
        "description",
        "operators",
        "type",
        "required",
        "minimum",
        "maximum",
        "maxLength",
        "minLength",
        "pattern",
        "enum",
        "readonly",
        "default",
        "items",
        "maxItems",
        "minItems",
        "uniqueItems",
        "additionalItems",
    ];
    let obj = object(v, "property definition", KEYS)?;
    let name = if with_name { Some(name(obj.get("name"), "name", 80)?) } else { None };
    if !with_name {
        if let Some(n) = obj.get("name") {
            name_value(n)?;
        }
    }
    match obj.get("title") {
        Some(Value::String(_)) => {}
        Some(v) => return Err(bad(format!("{v} is not of type 'string' for 'title'"))),
        None => return Err(bad("'title' is a required property")),
    }
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if TYPES.contains(&t) => {}
        Some(t) => return Err(bad(format!("'{t}' is not one of {TYPES:?} for 'type'"))),
        None => return Err(bad("'type' is a required property (a string)")),
    }
    for (k, val) in obj {
        match k.as_str() {
            "description" | "pattern" if !val.is_string() => {
                return Err(bad(format!("{val} is not of type 'string' for '{k}'")));
            }
            "pattern" => {
                // Kept as given (clients apply it); only its size is bounded.
                let p = val.as_str().unwrap_or_default();
                if p.chars().count() > 1024 {
                    return Err(bad("'pattern' is too long (at most 1024 characters)"));
                }
            }
            "operators" => string_list(val, k, false)?,
            "required" => string_list(val, k, true)?,
            "enum" if !val.is_array() => return Err(bad(format!("{val} is not of type 'array' for 'enum'"))),
            "minimum" | "maximum" if !val.is_number() => {
                return Err(bad(format!("{val} is not of type 'number' for '{k}'")));
            }
            "maxLength" | "minLength" | "maxItems" | "minItems" => non_negative(val, k)?,
            "readonly" | "uniqueItems" | "additionalItems" if !val.is_boolean() => {
                return Err(bad(format!("{val} is not of type 'boolean' for '{k}'")));
            }
            "items" => items(val)?,
            _ => {}
        }
    }
    let mut def = obj.clone();
    def.remove("name");
    Ok((name, def))
}

fn name_value(v: &Value) -> Result<()> {
    match v.as_str() {
        Some(s) if s.chars().count() <= 80 => Ok(()),
        _ => Err(bad("'name' must be a string of at most 80 characters")),
    }
}

fn items(v: &Value) -> Result<()> {
    let obj = v.as_object().ok_or_else(|| bad(format!("{v} is not of type 'object' for 'items'")))?;
    for (k, val) in obj {
        match k.as_str() {
            "type" => match val.as_str() {
                Some(t) if TYPES.contains(&t) => {}
                _ => return Err(bad(format!("{val} is not one of {TYPES:?} for 'items.type'"))),
            },
            "enum" if !val.is_array() => return Err(bad(format!("{val} is not of type 'array' for 'items.enum'"))),
            "enum" => {}
            other => {
                return Err(bad(format!("Additional properties are not allowed ('{other}' was unexpected) in 'items'")))
            }
        }
    }
    Ok(())
}

/// A map of property definitions (`properties` of a namespace or an object).
pub fn properties(v: &Value) -> Result<Map<String, Value>> {
    let obj = v.as_object().ok_or_else(|| bad(format!("{v} is not of type 'object' for 'properties'")))?;
    let mut out = Map::new();
    for (k, def) in obj {
        name(Some(&Value::String(k.clone())), "property name", 80)?;
        let (_, def) = property(def, false)?;
        out.insert(k.clone(), Value::Object(def));
    }
    Ok(out)
}

/// A validated object definition.
pub struct ObjectDef {
    pub name: String,
    pub description: Option<String>,
    /// Names of the properties an instance of the object must have.
    pub required: Vec<String>,
    /// Property definitions by name.
    pub properties: Map<String, Value>,
}

/// An object definition: `name` required, `description`, `required`, `properties`.
pub fn object_def(v: &Value) -> Result<ObjectDef> {
    let obj = object(v, "object", &["name", "description", "required", "properties"])?;
    let name = name(obj.get("name"), "name", 80)?;
    let description = opt_text(obj, "description", 65535)?;
    let required = match obj.get("required") {
        None | Some(Value::Null) => vec![],
        Some(r) => {
            string_list(r, "required", true)?;
            r.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
        }
    };
    let props = match obj.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(p) => properties(p)?,
    };
    Ok(ObjectDef { name, description, required, properties: props })
}

/// A tag: `{"name": ...}`.
pub fn tag(v: &Value) -> Result<String> {
    let obj = object(v, "tag", &["name"])?;
    name(obj.get("name"), "name", 80)
}

/// A resource type association: (name, prefix, properties_target).
pub fn association(v: &Value) -> Result<(String, Option<String>, Option<String>)> {
    let obj = object(v, "resource type association", &["name", "prefix", "properties_target"])?;
    Ok((name(obj.get("name"), "name", 80)?, opt_text(obj, "prefix", 80)?, opt_text(obj, "properties_target", 80)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(r: Result<impl Sized>) -> u16 {
        match r {
            Ok(_) => 0,
            Err(e) => stratus_core::ApiError::from(e).status.as_u16(),
        }
    }

    #[test]
    fn property_definitions() {
        let ok = json!({"name": "hypervisor", "title": "Hypervisor", "type": "string", "enum": ["kvm", "qemu"]});
        let (name, def) = property(&ok, true).unwrap();
        assert_eq!(name.as_deref(), Some("hypervisor"));
        assert!(!def.contains_key("name"));
        assert_eq!(status(property(&json!({"name": "x", "type": "string"}), true)), 400, "title required");
        assert_eq!(status(property(&json!({"name": "x", "title": "t", "type": "text"}), true)), 400);
        assert_eq!(status(property(&json!({"name": "x", "title": "t", "type": "string", "bogus": 1}), true)), 400);
        assert_eq!(status(property(&json!({"name": "x", "title": "t", "type": "string", "self": "/x"}), true)), 403);
        assert_eq!(
            status(property(&json!({"name": "x", "title": "t", "type": "integer", "minLength": -1}), true)),
            400
        );
        assert_eq!(status(property(&json!({"name": "a".repeat(81), "title": "t", "type": "string"}), true)), 400);
        assert_eq!(status(property(&json!({"name": "a\u{0}", "title": "t", "type": "string"}), true)), 400);
        assert_eq!(status(properties(&json!({"p": {"title": "P", "type": "boolean"}}))), 0);
        assert_eq!(status(object_def(&json!({"name": "o", "required": ["a", "a"]}))), 400);
        assert_eq!(status(tag(&json!({"name": ""}))), 400);
        assert_eq!(status(association(&json!({"name": "OS::Glance::Image", "prefix": "hw_"}))), 0);
    }
}
