//! Image attributes: which may be written, their validation, and Glance's JSON-patch
//! (`application/openstack-images-v2.1-json-patch`, also the 2.0 form) applied to them.
//!
//! Core attributes are typed columns; everything else is a custom property whose value
//! must be a string, as Glance's schema says (`additionalProperties: {type: string}`).

use serde_json::Value;

use super::db::Image;
use crate::error::{ImageError, Result};

/// Attributes the server computes; writing them is 403.
pub const READONLY: &[&str] = &[
    "created_at",
    "updated_at",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "direct_url",
    "self",
    "file",
    "schema",
    "id",
    "stores",
];

/// Attributes Glance reserves; writing them is 403.
pub const RESERVED: &[&str] = &["location", "deleted", "deleted_at"];

/// Core attributes a client may write.
pub const WRITABLE: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "min_disk",
    "min_ram",
    "disk_format",
    "container_format",
    "tags",
    "owner",
];

/// Accepted `disk_format` values.
pub const DISK_FORMATS: &[&str] = &["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"];
/// Accepted `container_format` values.
pub const CONTAINER_FORMATS: &[&str] = &["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"];
/// Accepted `visibility` values.
pub const VISIBILITIES: &[&str] = &["public", "community", "shared", "private"];

/// The JSON-patch media types Glance accepts.
pub const PATCH_MEDIA_TYPES: &[&str] =
    &["application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch"];

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::BadRequest(msg.into())
}

/// A string no database can hold: NUL (PostgreSQL's text refuses it; SQLite would keep it
/// and hand clients a value they cannot match in a filter).
fn refuse_nul(key: &str, s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(bad(format!("Invalid value for '{key}': the NUL character is not allowed")));
    }
    Ok(())
}

fn string_or_null(key: &str, v: &Value, max: usize) -> Result<Option<String>> {
    if let Value::String(s) = v {
        refuse_nul(key, s)?;
    }
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
        Value::String(_) => Err(bad(format!("Invalid value for '{key}': longer than {max} characters"))),
        other => Err(bad(format!("Invalid value for '{key}': {other} is not of type 'string'"))),
    }
}

fn enum_or_null(key: &str, v: &Value, allowed: &[&str]) -> Result<Option<String>> {
    match string_or_null(key, v, 255)? {
        None => Ok(None),
        Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        Some(s) => Err(bad(format!("Invalid value '{s}' for '{key}': must be one of {}", allowed.join(", ")))),
    }
}

fn non_negative(key: &str, v: &Value) -> Result<i64> {
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(bad(format!("Invalid value for '{key}': {v} is not a non-negative integer"))),
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| bad(format!("Invalid value for '{key}': {v} is not of type 'boolean'")))
}

/// Prefix of the properties the image service keeps for itself (import locks and
/// progress); clients may read them, never write them.
pub const RESERVED_PREFIX: &str = "os_glance";

/// Checks that `key` may be written at all (403 for read-only and reserved attributes).
pub fn check_writable(key: &str) -> Result<()> {
    if READONLY.contains(&key) {
        return Err(ImageError::Forbidden(format!("Attribute '{key}' is read-only.")));
    }
    if RESERVED.contains(&key) || key == "locations" || key.starts_with(RESERVED_PREFIX) {
        return Err(ImageError::Forbidden(format!("Attribute '{key}' is reserved.")));
    }
    Ok(())
}

/// Checks the number of custom properties against `quota` (Glance's
/// `image_property_quota`, 413 when exceeded; negative = unlimited).
pub fn check_property_quota(im: &Image, quota: i64) -> Result<()> {
    if quota >= 0 && im.properties.len() as i64 > quota {
        return Err(ImageError::TooLarge(format!(
            "Maximum number of image properties ({quota}) exceeded: the image would have {}",
            im.properties.len()
        )));
    }
    Ok(())
}

/// Validated tag list (unique, each at most 255 characters).
pub fn tags(v: &Value) -> Result<Vec<String>> {
    let arr = v.as_array().ok_or_else(|| bad(format!("Invalid value for 'tags': {v} is not of type 'array'")))?;
    let mut out: Vec<String> = Vec::with_capacity(arr.len());
    for t in arr {
        let s = string_or_null("tags", t, 255)?.ok_or_else(|| bad("Invalid value for 'tags': null tag"))?;
        if out.contains(&s) {
            return Err(bad(format!("Invalid value for 'tags': '{s}' is not unique")));
        }
        out.push(s);
    }
    out.sort();
    Ok(out)
}

/// Sets writable attribute `key` (core or custom) to `v`. `caller_project` and
/// `is_admin` decide whether `owner` may change.
pub fn set(im: &mut Image, key: &str, v: &Value, is_admin: bool) -> Result<()> {
    check_writable(key)?;
    match key {
        "name" => im.name = string_or_null(key, v, 255)?,
        "visibility" => {
            im.visibility = enum_or_null(key, v, VISIBILITIES)?
                .ok_or_else(|| bad("Invalid value for 'visibility': null is not allowed"))?
        }
        "protected" => im.protected = boolean(key, v)?,
        "os_hidden" => im.os_hidden = boolean(key, v)?,
        "min_disk" => im.min_disk = non_negative(key, v)?,
        "min_ram" => im.min_ram = non_negative(key, v)?,
        "disk_format" => im.disk_format = enum_or_null(key, v, DISK_FORMATS)?,
        "container_format" => im.container_format = enum_or_null(key, v, CONTAINER_FORMATS)?,
        "tags" => im.tags = tags(v)?,
        "owner" => {
            let owner = string_or_null(key, v, 255)?;
            if owner != im.owner && !is_admin {
                return Err(ImageError::Forbidden("Owner can't be updated by non admin.".into()));
            }
            im.owner = owner;
        }
        custom => {
            if custom.is_empty() || custom.chars().count() > 255 {
                return Err(bad(format!("Invalid property name {custom:?}: 1 to 255 characters")));
            }
            // A name is a JSON-pointer segment in every later PATCH and a query key in
            // list filters: no `/` (it would address nothing) and no control characters.
            if custom.contains('/') || custom.chars().any(char::is_control) {
                return Err(bad(format!(
                    "Invalid property name {custom:?}: '/' and control characters are not allowed"
                )));
            }
            match v {
                Value::String(s) => {
                    refuse_nul(custom, s)?;
                    im.properties.insert(custom.to_string(), s.clone());
                }
                other => {
                    return Err(bad(format!("Invalid value for property '{custom}': {other} is not of type 'string'")))
                }
            }
        }
    }
    Ok(())
}

/// One patch operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    /// add, replace or remove.
    pub op: String,
    /// Decoded attribute name (single-level pointer).
    pub path: String,
    /// Value for add/replace.
    pub value: Option<Value>,
}

/// Decodes a JSON pointer to a single attribute name.
fn decode_pointer(p: &str) -> Result<String> {
    let rest = p.strip_prefix('/').ok_or_else(|| bad(format!("Pointer `{p}` does not start with \"/\".")))?;
    if rest.is_empty() {
        return Err(bad(format!("Pointer `{p}` does not name an attribute.")));
    }
    if rest.contains('/') {
        return Err(bad(format!("Pointer `{p}` contains nested paths; nested paths are not allowed.")));
    }
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => {
                    return Err(bad(format!("Pointer `{p}` contains \"~\" not part of a recognized escape sequence.")))
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Parses a patch document (a JSON list of operations).
pub fn parse_ops(body: &Value) -> Result<Vec<PatchOp>> {
    let arr = body.as_array().ok_or_else(|| bad("Request body must be a JSON array of operation objects."))?;
    let mut ops = Vec::with_capacity(arr.len());
    for raw in arr {
        let obj = raw.as_object().ok_or_else(|| bad("Operations must be JSON objects."))?;
        // 2.1: {"op": "replace", "path": "/name", "value": ...}; 2.0: {"replace": "/name", "value": ...}.
        let (op, path) = match obj.get("op") {
            Some(Value::String(op)) => {
                let path = obj
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Operation objects must contain a string member named \"path\"."))?;
                (op.clone(), path.to_string())
            }
            Some(_) => return Err(bad("Operation \"op\" must be a string.")),
            None => {
                let found = ["add", "replace", "remove"].iter().find(|k| obj.contains_key(**k));
                let op = found.ok_or_else(|| bad("Operation objects must contain a member named \"op\"."))?;
                let path = obj[*op].as_str().ok_or_else(|| bad("Operation path must be a string."))?;
                (op.to_string(), path.to_string())
            }
        };
        if !matches!(op.as_str(), "add" | "replace" | "remove") {
            return Err(bad(format!("Invalid operation: `{op}`: only add, replace and remove are supported.")));
        }
        let value = obj.get("value").cloned();
        if op != "remove" && value.is_none() {
            return Err(bad("Operation objects must contain exactly one member named \"value\"."));
        }
        ops.push(PatchOp { op, path: decode_pointer(&path)?, value });
    }
    Ok(ops)
}

/// Applies `ops` to `im` in order (all or nothing: the caller saves only on `Ok`).
pub fn apply(im: &mut Image, ops: &[PatchOp], is_admin: bool) -> Result<()> {
    for o in ops {
        let key = o.path.as_str();
        check_writable(key)?;
        let is_core = WRITABLE.contains(&key);
        match o.op.as_str() {
            "remove" => {
                if is_core {
                    return Err(ImageError::Forbidden(format!(
                        "Attribute '{key}' is a core attribute and cannot be removed."
                    )));
                }
                if im.properties.remove(key).is_none() {
                    return Err(ImageError::Conflict(format!("Property {key} does not exist.")));
                }
            }
            "replace" if !is_core && !im.properties.contains_key(key) => {
                return Err(ImageError::Conflict(format!("Property {key} does not exist.")));
            }
            _ => set(im, key, o.value.as_ref().unwrap_or(&Value::Null), is_admin)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn img() -> Image {
        Image { id: "x".into(), status: "queued".into(), visibility: "shared".into(), ..Default::default() }
    }

    #[test]
    fn patch_core_and_custom() {
        let mut im = img();
        let ops = parse_ops(&json!([
            {"op": "replace", "path": "/name", "value": "cirros"},
            {"op": "add", "path": "/hw_disk_bus", "value": "scsi"},
            {"op": "add", "path": "/a~0b", "value": "tilde"},
            {"op": "replace", "path": "/tags", "value": ["b", "a"]},
            {"replace": "/min_ram", "value": 512},
        ]))
        .unwrap();
        apply(&mut im, &ops, false).unwrap();
        assert_eq!(im.name.as_deref(), Some("cirros"));
        assert_eq!(im.properties["hw_disk_bus"], "scsi");
        assert_eq!(im.properties["a~b"], "tilde");
        assert_eq!(im.tags, vec!["a", "b"]);
        assert_eq!(im.min_ram, 512);
        apply(&mut im, &parse_ops(&json!([{"op": "remove", "path": "/hw_disk_bus"}])).unwrap(), false).unwrap();
        assert!(!im.properties.contains_key("hw_disk_bus"));
    }

    #[test]
    fn patch_refusals() {
        let mut im = img();
        let status = |ops: Value| {
            let mut im = img();
            match parse_ops(&ops).and_then(|o| apply(&mut im, &o, false)) {
                Ok(()) => 0,
                Err(e) => stratus_core::ApiError::from(e).status.as_u16(),
            }
        };
        assert_eq!(status(json!([{"op": "replace", "path": "/status", "value": "active"}])), 403);
        assert_eq!(status(json!([{"op": "replace", "path": "/id", "value": "x"}])), 403);
        assert_eq!(status(json!([{"op": "add", "path": "/deleted", "value": "x"}])), 403);
        assert_eq!(status(json!([{"op": "add", "path": "/locations", "value": []}])), 403);
        assert_eq!(status(json!([{"op": "remove", "path": "/name"}])), 403);
        assert_eq!(status(json!([{"op": "remove", "path": "/nope"}])), 409);
        assert_eq!(status(json!([{"op": "replace", "path": "/nope", "value": "v"}])), 409);
        assert_eq!(status(json!([{"op": "add", "path": "name", "value": "v"}])), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/a/b", "value": "v"}])), 400);
        assert_eq!(status(json!([{"op": "move", "path": "/name", "from": "/x"}])), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/name"}])), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/disk_format", "value": "exe"}])), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/min_disk", "value": -1}])), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/custom", "value": 5}])), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/owner", "value": "someone"}])), 403);
        assert_eq!(status(json!({"op": "add"})), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/os_glance_foo", "value": "bar"}])), 403);
        assert_eq!(status(json!([{"op": "add", "path": "/a~1b", "value": "slash"}])), 400);
        assert_eq!(status(json!([{"op": "add", "path": "/a\u{0}b", "value": "nul"}])), 400);
        // Nothing is applied when an operation fails.
        let ops = parse_ops(&json!([{"op": "replace", "path": "/name", "value": "n"}, {"op": "remove", "path": "/x"}]));
        assert!(apply(&mut im, &ops.unwrap(), false).is_err());
    }
}
