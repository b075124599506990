//! User and system metadata carried in headers: which request headers become stored
//! metadata, how `X-Remove-*` and empty values delete it, and Swift's limits on it.
//!
//! Metadata is stored per account, container and object as one JSON map from the
//! lower-case header name (`x-container-meta-color`, `x-container-read`,
//! `content-disposition`) to its value, and returned as the same headers.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use crate::error::{Result, SwiftError};

/// Swift's `MAX_META_NAME_LENGTH`.
pub const MAX_META_NAME_LENGTH: usize = 128;
/// Swift's `MAX_META_VALUE_LENGTH`.
pub const MAX_META_VALUE_LENGTH: usize = 256;
/// Swift's `MAX_META_COUNT`.
pub const MAX_META_COUNT: usize = 90;
/// Swift's `MAX_META_OVERALL_SIZE`.
pub const MAX_META_OVERALL_SIZE: usize = 4096;

/// Stored metadata: lower-case header name → value.
pub type Meta = BTreeMap<String, String>;

/// Container headers that are not `X-Container-Meta-*` but are stored the same way.
pub const CONTAINER_SYSTEM: &[&str] = &[
    "x-container-read",
    "x-container-write",
    "x-versions-location",
    "x-history-location",
    "x-container-sync-to",
    "x-container-sync-key",
];

/// Object headers stored beside `X-Object-Meta-*`.
pub const OBJECT_SYSTEM: &[&str] = &["content-disposition", "content-encoding", "x-object-manifest"];

/// Which resource's headers to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `X-Account-Meta-*`.
    Account,
    /// `X-Container-Meta-*` and the container system headers.
    Container,
    /// `X-Object-Meta-*` and the object system headers.
    Object,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Account => "x-account-meta-",
            Kind::Container => "x-container-meta-",
            Kind::Object => "x-object-meta-",
        }
    }
    fn remove_prefix(self) -> &'static str {
        match self {
            Kind::Account => "x-remove-account-meta-",
            Kind::Container => "x-remove-container-meta-",
            Kind::Object => "x-remove-object-meta-",
        }
    }
    fn system(self) -> &'static [&'static str] {
        match self {
            Kind::Account => &[],
            Kind::Container => CONTAINER_SYSTEM,
            Kind::Object => OBJECT_SYSTEM,
        }
    }
}

/// Metadata changes a request asks for: `Some(v)` sets, `None` removes.
pub fn updates(headers: &HeaderMap, kind: Kind) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        let v = std::str::from_utf8(value.as_bytes())
            .map_err(|_| SwiftError::BadRequest("Invalid UTF8 or contains NULL".into()))?
            .trim()
            .to_string();
        if let Some(suffix) = n.strip_prefix(kind.prefix()) {
            if suffix.is_empty() {
                return Err(SwiftError::BadRequest("Metadata name cannot be empty".into()));
            }
            if suffix.len() > MAX_META_NAME_LENGTH {
                return Err(SwiftError::BadRequest(format!(
                    "Metadata name too long: {}; max {MAX_META_NAME_LENGTH}",
                    name.as_str()
                )));
            }
            if v.len() > MAX_META_VALUE_LENGTH {
                return Err(SwiftError::BadRequest(format!("Metadata value longer than {MAX_META_VALUE_LENGTH}: {n}")));
            }
            // An empty value deletes account and container metadata; objects keep it
            // as an empty value (Swift).
            out.push((n.to_string(), if v.is_empty() && kind != Kind::Object { None } else { Some(v) }));
        } else if let Some(suffix) = n.strip_prefix(kind.remove_prefix()) {
            out.push((format!("{}{suffix}", kind.prefix()), None));
        } else if kind.system().contains(&n) {
            out.push((n.to_string(), if v.is_empty() { None } else { Some(v) }));
        } else if let Some(sys) = n.strip_prefix("x-remove-") {
            if kind.system().contains(&format!("x-{sys}").as_str()) {
                out.push((format!("x-{sys}"), None));
            }
        }
    }
    Ok(out)
}

/// Applies `changes` to `meta`.
pub fn apply(meta: &mut Meta, changes: Vec<(String, Option<String>)>) {
    for (k, v) in changes {
        match v {
            Some(v) => {
                meta.insert(k, v);
            }
            None => {
                meta.remove(&k);
            }
        }
    }
}

/// Swift's overall limits on user metadata (`X-*-Meta-*`), checked on the result.
pub fn check_limits(meta: &Meta, kind: Kind) -> Result<()> {
    let user: Vec<(&String, &String)> = meta.iter().filter(|(k, _)| k.starts_with(kind.prefix())).collect();
    if user.len() > MAX_META_COUNT {
        return Err(SwiftError::BadRequest(format!("Too many metadata items; max {MAX_META_COUNT}")));
    }
    let size: usize = user.iter().map(|(k, v)| k.len() - kind.prefix().len() + v.len()).sum();
    if size > MAX_META_OVERALL_SIZE {
        return Err(SwiftError::BadRequest(format!("Total metadata too large; max {MAX_META_OVERALL_SIZE}")));
    }
    Ok(())
}

/// Parses stored JSON metadata (an empty map when unreadable).
pub fn from_json(s: &str) -> Meta {
    serde_json::from_str(s).unwrap_or_default()
}

/// Serializes metadata for storage.
pub fn to_json(m: &Meta) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn updates_and_limits() {
        let mut h = HeaderMap::new();
        h.insert("x-container-meta-color", HeaderValue::from_static("blue"));
        h.insert("x-remove-container-meta-size", HeaderValue::from_static("x"));
        h.insert("x-container-read", HeaderValue::from_static(".r:*"));
        h.insert("x-remove-versions-location", HeaderValue::from_static("1"));
        h.insert("x-object-meta-ignored", HeaderValue::from_static("1"));
        let mut u = updates(&h, Kind::Container).unwrap();
        u.sort();
        assert_eq!(
            u,
            vec![
                ("x-container-meta-color".into(), Some("blue".into())),
                ("x-container-meta-size".into(), None),
                ("x-container-read".into(), Some(".r:*".into())),
                ("x-versions-location".into(), None),
            ]
        );
        let mut long = HeaderMap::new();
        long.insert("x-object-meta-k", HeaderValue::from_str(&"v".repeat(257)).unwrap());
        assert!(updates(&long, Kind::Object).is_err());
        let mut m = Meta::new();
        for i in 0..91 {
            m.insert(format!("x-account-meta-k{i}"), "v".into());
        }
        assert!(check_limits(&m, Kind::Account).is_err());
    }
}
