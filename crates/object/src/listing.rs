//! Listing parameters and formats: `prefix`, `delimiter`, `path`, `marker`,
//! `end_marker`, `limit`, `reverse`, and JSON, XML or plain text as `format=` or
//! `Accept` asks. An empty plain-text listing is `204 No Content`, as in Swift.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode};

use crate::db::{Container, Entry, ListParams, ObjKind, Object};
use crate::error::{Result, SwiftError};

/// Output format of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain`, one name per line.
    Plain,
    /// `application/json`.
    Json,
    /// `application/xml`.
    Xml,
}

impl Format {
    /// The format a request asks for (`format=` wins over `Accept`).
    pub fn of(query: &BTreeMap<String, String>, headers: &HeaderMap) -> Result<Format> {
        if let Some(f) = query.get("format") {
            return Ok(match f.to_ascii_lowercase().as_str() {
                "json" => Format::Json,
                "xml" => Format::Xml,
                _ => Format::Plain,
            });
        }
        let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        Ok(if accept.contains("application/json") {
            Format::Json
        } else if accept.contains("application/xml") || accept.contains("text/xml") {
            Format::Xml
        } else if accept.is_empty() || accept.contains("text/plain") || accept.contains("*/*") {
            Format::Plain
        } else {
            return Err(SwiftError::BadRequest("Invalid Accept header".into()));
        })
    }

    /// `Content-Type` of the listing.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Plain => "text/plain; charset=utf-8",
            Format::Json => "application/json; charset=utf-8",
            Format::Xml => "application/xml; charset=utf-8",
        }
    }
}

/// Reads the listing query parameters; `max` is the listing limit.
pub fn params(query: &BTreeMap<String, String>, max: usize) -> Result<ListParams> {
    let get = |k: &str| query.get(k).cloned().unwrap_or_default();
    let limit = match query.get("limit") {
        Some(l) => {
            let n: usize =
                l.parse().map_err(|_| SwiftError::PreconditionMsg("Value of limit must be an integer".to_string()))?;
            if n > max {
                return Err(SwiftError::PreconditionMsg(format!("Maximum limit is {max}")));
            }
            n
        }
        None => max,
    };
    let mut p = ListParams {
        prefix: get("prefix"),
        delimiter: query.get("delimiter").cloned().filter(|d| !d.is_empty()),
        marker: get("marker"),
        end_marker: get("end_marker"),
        limit,
        reverse: matches!(get("reverse").to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on" | "t" | "y"),
        path_mode: false,
    };
    if let Some(d) = &p.delimiter {
        if d.chars().count() != 1 {
            return Err(SwiftError::PreconditionMsg("Bad delimiter".into()));
        }
    }
    if let Some(path) = query.get("path") {
        let path = path.trim_end_matches('/');
        p.prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        p.delimiter = Some("/".into());
        p.path_mode = true;
    }
    Ok(p)
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A rendered listing: status and body.
pub fn render_containers(account: &str, entries: &[Entry<Container>], f: Format) -> (StatusCode, String) {
    match f {
        Format::Plain => plain(entries.iter().map(|e| match e {
            Entry::Item(c) => c.name.clone(),
            Entry::Subdir(s) => s.clone(),
        })),
        Format::Json => {
            let v: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| match e {
                    Entry::Item(c) => serde_json::json!({
                        "name": c.name, "count": c.object_count, "bytes": c.bytes_used, "last_modified": c.modified_at
                    }),
                    Entry::Subdir(s) => serde_json::json!({"subdir": s}),
                })
                .collect();
            (StatusCode::OK, serde_json::Value::Array(v).to_string())
        }
        Format::Xml => {
            let mut s =
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<account name=\"{}\">", xml_escape(account));
            for e in entries {
                match e {
                    Entry::Item(c) => s.push_str(&format!(
                        "<container><name>{}</name><count>{}</count><bytes>{}</bytes><last_modified>{}</last_modified></container>",
                        xml_escape(&c.name),
                        c.object_count,
                        c.bytes_used,
                        c.modified_at
                    )),
                    Entry::Subdir(d) => {
                        s.push_str(&format!("<subdir name=\"{0}\"><name>{0}</name></subdir>", xml_escape(d)))
                    }
                }
            }
            s.push_str("</account>");
            (StatusCode::OK, s)
        }
    }
}

/// The JSON entry of an object in a container listing.
pub fn object_json(o: &Object) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": o.name, "hash": o.etag, "bytes": o.size, "content_type": o.content_type, "last_modified": o.modified_at
    });
    if o.kind == ObjKind::Symlink {
        if let Some(t) = o.meta.get("x-symlink-target") {
            v["symlink_path"] = serde_json::json!(format!("/v1/{}/{}", o.account, t));
        }
    }
    if o.kind == ObjKind::Slo {
        v["slo_etag"] = serde_json::json!(format!("\"{}\"", o.etag));
    }
    v
}

/// A rendered container listing.
pub fn render_objects(container: &str, entries: &[Entry<Object>], f: Format) -> (StatusCode, String) {
    match f {
        Format::Plain => plain(entries.iter().map(|e| match e {
            Entry::Item(o) => o.name.clone(),
            Entry::Subdir(s) => s.clone(),
        })),
        Format::Json => {
            let v: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| match e {
                    Entry::Item(o) => object_json(o),
                    Entry::Subdir(s) => serde_json::json!({"subdir": s}),
                })
                .collect();
            (StatusCode::OK, serde_json::Value::Array(v).to_string())
        }
        Format::Xml => {
            let mut s =
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<container name=\"{}\">", xml_escape(container));
            for e in entries {
                match e {
                    Entry::Item(o) => s.push_str(&format!(
                        "<object><name>{}</name><hash>{}</hash><bytes>{}</bytes><content_type>{}</content_type><last_modified>{}</last_modified></object>",
                        xml_escape(&o.name),
                        o.etag,
                        o.size,
                        xml_escape(&o.content_type),
                        o.modified_at
                    )),
                    Entry::Subdir(d) => {
                        s.push_str(&format!("<subdir name=\"{0}\"><name>{0}</name></subdir>", xml_escape(d)))
                    }
                }
            }
            s.push_str("</container>");
            (StatusCode::OK, s)
        }
    }
}

fn plain(names: impl Iterator<Item = String>) -> (StatusCode, String) {
    let mut s = String::new();
    for n in names {
        s.push_str(&n);
        s.push('\n');
    }
    if s.is_empty() {
        (StatusCode::NO_CONTENT, s)
    } else {
        (StatusCode::OK, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_formats() {
        let mut q = BTreeMap::new();
        q.insert("path".to_string(), "photos".to_string());
        q.insert("limit".to_string(), "5".to_string());
        let p = params(&q, 10000).unwrap();
        assert_eq!((p.prefix.as_str(), p.delimiter.as_deref(), p.limit, p.path_mode), ("photos/", Some("/"), 5, true));
        q.insert("limit".to_string(), "10001".to_string());
        assert!(params(&q, 10000).is_err());
        let mut h = HeaderMap::new();
        h.insert("accept", "application/json".parse().unwrap());
        assert_eq!(Format::of(&BTreeMap::new(), &h).unwrap(), Format::Json);
        let (status, body) = render_objects("c", &[], Format::Plain);
        assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
        let (_, xml) = render_objects("c<", &[Entry::Subdir("a/".into())], Format::Xml);
        assert!(xml.contains("<container name=\"c&lt;\"><subdir name=\"a/\"><name>a/</name></subdir></container>"));
    }
}
