//! Static large objects (Swift's `slo` middleware): `PUT ?multipart-manifest=put` with a
//! JSON list of segments, each checked (exists, ETag and size as declared, only the last
//! may be small) before the manifest is stored; `GET` streams the segments (ranges across
//! them); `?multipart-manifest=get` returns the stored manifest; `DELETE
//! ?multipart-manifest=delete` removes the segments and the manifest.
//!
//! The manifest is kept as a small blob of its own (JSON, at most `max_manifest_size`),
//! and the row carries the totals clients see: size = sum of the segments, ETag = MD5 of
//! the segments' ETags (quoted in headers, as Swift).

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::body::{Piece, Source};
use crate::db::{self, Container, ObjKind, Object};
use crate::error::{Result, SwiftError};
use crate::ingest;
use crate::meta::Meta;
use crate::names;
use crate::proxy::{respond, set, Call};
use crate::Svc;

/// Most segments in one manifest (Swift's default).
pub const MAX_MANIFEST_SEGMENTS: usize = 1000;
/// Largest manifest body in bytes (Swift's default).
pub const MAX_MANIFEST_SIZE: usize = 8 * 1024 * 1024;
/// Smallest segment but the last (Swift's default).
pub const MIN_SEGMENT_SIZE: i64 = 1;
/// Deepest nesting of manifests in manifests.
const MAX_DEPTH: usize = 10;

/// A segment as the client sends it.
#[derive(Debug, Deserialize)]
struct InSegment {
    path: Option<String>,
    etag: Option<String>,
    size_bytes: Option<i64>,
    range: Option<String>,
}

/// A segment as stored (Swift's stored manifest keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    /// `/container/object`.
    pub name: String,
    /// The segment's ETag when the manifest was written.
    pub hash: String,
    /// Its size then.
    pub bytes: i64,
    /// Its content type.
    pub content_type: String,
    /// Its last modification.
    pub last_modified: String,
    /// True when the segment is itself an SLO.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sub_slo: bool,
    /// `start-end` of the segment used, if not all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

fn parse_seg_range(r: &str, size: i64) -> Option<(i64, i64)> {
    let (a, b) = r.split_once('-')?;
    let (s, e) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: i64 = n.parse().ok()?;
            (size - n, size - 1)
        }
        (s, "") => (s.parse().ok()?, size - 1),
        (s, e) => (s.parse().ok()?, e.parse::<i64>().ok()?.min(size - 1)),
    };
    (s >= 0 && s <= e && e < size).then_some((s, e))
}

/// `PUT ?multipart-manifest=put`.
pub async fn put(
    svc: &Arc<Svc>,
    call: &Call,
    c: &Container,
    body: Body,
    meta: Meta,
    delete_at: Option<i64>,
) -> Result<Response> {
    let raw = axum::body::to_bytes(body, MAX_MANIFEST_SIZE)
        .await
        .map_err(|_| SwiftError::TooLarge(format!("Manifest File > {MAX_MANIFEST_SIZE} bytes")))?;
    let segs: Vec<InSegment> =
        serde_json::from_slice(&raw).map_err(|_| SwiftError::BadRequest("Manifest must be valid JSON.\n".into()))?;
    if segs.is_empty() {
        return Err(SwiftError::BadRequest("Manifest must have at least one segment.\n".into()));
    }
    if segs.len() > MAX_MANIFEST_SEGMENTS {
        return Err(SwiftError::TooLarge(format!("Number of segments must be <= {MAX_MANIFEST_SEGMENTS}")));
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut total = 0i64;
    let mut etags = String::new();
    let n = segs.len();
    for (i, s) in segs.into_iter().enumerate() {
        let Some(path) = s.path else {
            errors.push(format!("Index {i}: segments must have a \"path\" (inline data is not supported)"));
            continue;
        };
        let Some((sc, so)) = names::split_container_object(&path) else {
            errors.push(format!("Index {i}: invalid path {path:?}"));
            continue;
        };
        let seg = match db::object(&svc.platform.db, &call.t.account, &sc, &so).await? {
            Some(o) => o,
            None => {
                errors.push(format!("/{sc}/{so}, 404 Not Found"));
                continue;
            }
        };
        if let Some(e) = s.etag.as_deref().filter(|e| !e.is_empty()) {
            if e.trim_matches('"') != seg.etag {
                errors.push(format!("/{sc}/{so}, Etag Mismatch"));
                continue;
            }
        }
        if let Some(sz) = s.size_bytes {
            if sz != seg.size {
                errors.push(format!("/{sc}/{so}, Size Mismatch"));
                continue;
            }
        }
        let (len, range) = match &s.range {
            Some(r) => match parse_seg_range(r, seg.size) {
                Some((a, b)) => (b - a + 1, Some(format!("{a}-{b}"))),
                None => {
                    errors.push(format!("Index {i}: invalid range"));
                    continue;
                }
            },
            None => (seg.size, None),
        };
        if len < MIN_SEGMENT_SIZE && i + 1 < n {
            errors.push(format!("/{sc}/{so}, Too Small; each segment must be at least {MIN_SEGMENT_SIZE} byte."));
            continue;
        }
        total += len;
        match &range {
            Some(r) => etags.push_str(&format!("{}:{r};", seg.etag)),
            None => etags.push_str(&seg.etag),
        }
        out.push(Segment {
            name: format!("/{sc}/{so}"),
            hash: seg.etag.clone(),
            bytes: seg.size,
            content_type: seg.content_type.clone(),
            last_modified: seg.modified_at.clone(),
            sub_slo: seg.kind == ObjKind::Slo,
            range,
        });
    }
    if !errors.is_empty() {
        return Err(SwiftError::BadRequest(format!("Errors:\n{}", errors.join("\n"))));
    }
    if total > svc.cfg.max_file_size as i64 * MAX_MANIFEST_SEGMENTS as i64 {
        return Err(SwiftError::TooLarge("Your request is too large.".into()));
    }
    let slo_etag = ingest::md5_hex(etags.as_bytes());
    if let Some(want) = call.header("etag") {
        if want.trim_matches('"') != slo_etag {
            return Err(SwiftError::Unprocessable);
        }
    }
    let json = serde_json::to_vec(&out).map_err(|e| SwiftError::Internal(e.to_string()))?;
    let manifest_etag = ingest::md5_hex(&json);
    let stored = ingest::store_bytes(svc.backend.clone(), Bytes::from(json)).await?;
    let mut meta = meta;
    meta.insert("x-manifest-etag".into(), manifest_etag);
    let o = Object {
        account: call.t.account.clone(),
        container: call.container().to_string(),
        name: call.object().to_string(),
        size: total,
        etag: slo_etag.clone(),
        content_type: call
            .header("content-type")
            .filter(|c| !c.is_empty())
            .unwrap_or("application/octet-stream")
            .into(),
        modified_at: db::now_stamp(),
        meta,
        kind: ObjKind::Slo,
        blob: Some(stored.key.clone()),
        blob_size: stored.size as i64,
        delete_at,
    };
    if let Err(e) = crate::object::write_row(svc, c, &o, false).await {
        svc.release_blobs(vec![stored.key]);
        return Err(e);
    }
    let mut r = crate::proxy::empty(StatusCode::CREATED);
    set(&mut r, "etag", format!("\"{slo_etag}\""));
    set(&mut r, "last-modified", db::http_date(&o.modified_at));
    Ok(r)
}

/// The stored manifest of an SLO row.
pub async fn manifest(svc: &Svc, o: &Object) -> Result<Vec<Segment>> {
    let key = o.blob.as_deref().ok_or_else(|| SwiftError::Internal("SLO without a manifest".into()))?;
    let raw =
        ingest::read_small(svc.backend.as_ref(), key, o.blob_size.max(0) as u64, MAX_MANIFEST_SIZE as u64).await?;
    serde_json::from_slice(&raw).map_err(|e| SwiftError::Internal(format!("stored SLO manifest unreadable: {e}")))
}

/// The pieces of an SLO: each segment's current bytes, checked against the manifest.
pub fn source<'a>(svc: &'a Svc, o: &'a Object, depth: usize) -> futures::future::BoxFuture<'a, Result<Source>> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(SwiftError::ConflictMsg("Max recursion depth exceeded on a static large object".into()));
        }
        let mut src = Source::default();
        for seg in manifest(svc, o).await? {
            let (sc, so) = names::split_container_object(&seg.name).ok_or(SwiftError::Conflict)?;
            let row = db::object(&svc.platform.db, &o.account, &sc, &so).await?.ok_or(SwiftError::Conflict)?;
            if row.etag != seg.hash {
                return Err(SwiftError::ConflictMsg(format!("Object Etag did not match for segment {}", seg.name)));
            }
            let inner = match row.kind {
                ObjKind::Slo => source(svc, &row, depth + 1).await?,
                _ => Source {
                    pieces: row
                        .blob
                        .iter()
                        .map(|k| Piece { key: k.clone(), offset: 0, len: row.size.max(0) as u64 })
                        .collect(),
                },
            };
            match seg.range.as_deref().and_then(|r| parse_seg_range(r, row.size)) {
                Some((a, b)) => src.pieces.extend(inner.slice(a as u64, (b - a + 1) as u64)),
                None => src.pieces.extend(inner.pieces),
            }
        }
        Ok(src)
    })
}

/// `GET ?multipart-manifest=get`: the manifest as stored (or `&format=raw`: as PUT).
pub async fn get_manifest(svc: &Svc, call: &Call, o: &Object) -> Result<Response> {
    let segs = manifest(svc, o).await?;
    let body = if call.query.get("format").is_some_and(|f| f == "raw") {
        let v: Vec<serde_json::Value> = segs
            .iter()
            .map(|s| {
                let mut v = serde_json::json!({"path": s.name, "etag": s.hash, "size_bytes": s.bytes});
                if let Some(r) = &s.range {
                    v["range"] = serde_json::json!(r);
                }
                v
            })
            .collect();
        serde_json::Value::Array(v).to_string()
    } else {
        serde_json::to_string(&segs).unwrap_or_else(|_| "[]".into())
    };
    let mut r = respond(StatusCode::OK, "application/json; charset=utf-8", body.clone());
    set(&mut r, "content-length", body.len().to_string());
    set(&mut r, "etag", ingest::md5_hex(body.as_bytes()));
    set(&mut r, "x-static-large-object", "True");
    set(&mut r, "last-modified", db::http_date(&o.modified_at));
    set(&mut r, "x-timestamp", db::x_timestamp(&o.modified_at));
    Ok(r)
}

/// `DELETE ?multipart-manifest=delete`: segments, then the manifest; a bulk-delete style
/// report (JSON when asked for).
pub async fn delete(svc: &Svc, call: &Call) -> Result<Response> {
    let o = db::object(&svc.platform.db, &call.t.account, call.container(), call.object())
        .await?
        .ok_or(SwiftError::NotFound)?;
    let mut deleted = 0;
    let mut not_found = 0;
    if o.kind == ObjKind::Slo {
        for seg in manifest(svc, &o).await? {
            let Some((sc, so)) = names::split_container_object(&seg.name) else { continue };
            match db::delete_object(&svc.platform.db, &call.t.account, &sc, &so).await {
                Ok(row) => {
                    deleted += 1;
                    svc.release_blobs(row.blob.into_iter().collect());
                }
                Err(SwiftError::NotFound) => not_found += 1,
                Err(e) => return Err(e),
            }
        }
    }
    let row = db::delete_object(&svc.platform.db, &call.t.account, call.container(), call.object()).await?;
    deleted += 1;
    svc.release_blobs(row.blob.into_iter().collect());
    Ok(crate::bulk::report(call, deleted, not_found, &[]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn segment_ranges() {
        assert_eq!(super::parse_seg_range("0-9", 100), Some((0, 9)));
        assert_eq!(super::parse_seg_range("-10", 100), Some((90, 99)));
        assert_eq!(super::parse_seg_range("50-", 100), Some((50, 99)));
        assert_eq!(super::parse_seg_range("200-300", 100), None);
    }
}
