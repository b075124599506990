//! Object bodies as lists of blob pieces, so a plain object, a static large object and a
//! dynamic large object are read the same way: `Range` (one range, several ranges as
//! `multipart/byteranges`, suffix and open ranges) slices the piece list, and the
//! response streams the pieces one after another from the backend.
//!
//! Also here: conditional requests (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`), evaluated in Swift's order.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{Backend, ByteStream};
use crate::error::{Result, SwiftError};
use crate::proxy::{respond, set};

/// A run of bytes of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Blob key.
    pub key: String,
    /// First byte in the blob.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// An object's bytes.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The pieces, in order.
    pub pieces: Vec<Piece>,
}

impl Source {
    /// Total length.
    pub fn size(&self) -> u64 {
        self.pieces.iter().map(|p| p.len).sum()
    }

    /// The pieces covering `[start, start + len)`.
    pub fn slice(&self, start: u64, len: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let end = start + len;
        let mut pos = 0u64;
        for p in &self.pieces {
            let (ps, pe) = (pos, pos + p.len);
            pos = pe;
            if pe <= start || ps >= end {
                continue;
            }
            let s = start.max(ps);
            let e = end.min(pe);
            out.push(Piece { key: p.key.clone(), offset: p.offset + (s - ps), len: e - s });
        }
        out
    }
}

/// Streams `pieces` one after another.
pub fn stream(backend: Arc<dyn Backend>, pieces: Vec<Piece>) -> ByteStream {
    futures::stream::iter(pieces)
        .filter(|p| futures::future::ready(p.len > 0))
        .then(move |p| {
            let b = backend.clone();
            async move { b.read(&p.key, p.offset, p.len).await.map_err(std::io::Error::other) }
        })
        .try_flatten()
        .boxed()
}

/// Parses `Range: bytes=...` against `size`: `Ok(None)` when the header is absent or
/// malformed (Swift then serves the whole object), `Err(416)` when no range is satisfiable.
pub fn parse_ranges(h: Option<&str>, size: u64) -> Result<Option<Vec<(u64, u64)>>> {
    let Some(h) = h else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    let mut out = Vec::new();
    let mut any = false;
    for part in spec.split(',') {
        let part = part.trim();
        let Some((a, b)) = part.split_once('-') else { return Ok(None) };
        let (a, b) = (a.trim(), b.trim());
        any = true;
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ok(None),
            (true, false) => {
                let Ok(n) = b.parse::<u64>() else { return Ok(None) };
                if n == 0 || size == 0 {
                    continue;
                }
                out.push((size.saturating_sub(n), size - 1));
            }
            (false, _) => {
                let Ok(s) = a.parse::<u64>() else { return Ok(None) };
                let e = if b.is_empty() {
                    u64::MAX
                } else {
                    match b.parse::<u64>() {
                        Ok(e) if e >= s => e,
                        _ => return Ok(None),
                    }
                };
                if s >= size {
                    continue;
                }
                out.push((s, e.min(size - 1)));
            }
        }
    }
    if !any {
        return Ok(None);
    }
    if out.is_empty() {
        return Err(SwiftError::RangeNotSatisfiable);
    }
    Ok(Some(out))
}

/// Builds the GET response body for `src`: whole (200), one range (206 with
/// `Content-Range`) or several (206 `multipart/byteranges`). The caller adds the
/// object's headers.
pub fn respond_ranges(
    backend: Arc<dyn Backend>,
    src: &Source,
    content_type: &str,
    range: Option<&str>,
    head: bool,
) -> Result<Response> {
    let size = src.size();
    let ranges = parse_ranges(range, size)?;
    let body =
        |pieces: Vec<Piece>| if head { Body::empty() } else { Body::from_stream(stream(backend.clone(), pieces)) };
    match ranges {
        None => {
            let mut r = respond(StatusCode::OK, content_type, body(src.pieces.clone()));
            set(&mut r, "content-length", size.to_string());
            Ok(r)
        }
        Some(rs) if rs.len() == 1 => {
            let (s, e) = rs[0];
            let mut r = respond(StatusCode::PARTIAL_CONTENT, content_type, body(src.slice(s, e - s + 1)));
            set(&mut r, "content-length", (e - s + 1).to_string());
            set(&mut r, "content-range", format!("bytes {s}-{e}/{size}"));
            Ok(r)
        }
        Some(rs) => {
            let boundary = format!("{:032x}", rand::random::<u128>());
            let mut parts: Vec<ByteStream> = Vec::new();
            let mut total = 0u64;
            for (s, e) in &rs {
                let head_txt = format!(
                    "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {s}-{e}/{size}\r\n\r\n"
                );
                total += head_txt.len() as u64 + (e - s + 1) + 2;
                parts.push(futures::stream::once(futures::future::ready(Ok(Bytes::from(head_txt)))).boxed());
                parts.push(stream(backend.clone(), src.slice(*s, e - s + 1)));
                parts.push(futures::stream::once(futures::future::ready(Ok(Bytes::from_static(b"\r\n")))).boxed());
            }
            let tail = format!("--{boundary}--");
            total += tail.len() as u64;
            parts.push(futures::stream::once(futures::future::ready(Ok(Bytes::from(tail)))).boxed());
            let b = if head { Body::empty() } else { Body::from_stream(futures::stream::iter(parts).flatten()) };
            let mut r = respond(StatusCode::PARTIAL_CONTENT, &format!("multipart/byteranges;boundary={boundary}"), b);
            set(&mut r, "content-length", total.to_string());
            Ok(r)
        }
    }
}

fn etag_list_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(|e| e.trim().trim_matches('"')).any(|e| e == "*" || e == etag)
}

fn parse_http_date(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(s.trim()).ok().map(|d| d.timestamp())
}

/// Outcome of the conditional headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Condition {
    /// Serve the object.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the conditional headers of a GET/HEAD against an object with `etag` and
/// `last_modified` (seconds, already rounded up as `Last-Modified` shows it).
pub fn evaluate(headers: &axum::http::HeaderMap, etag: &str, last_modified: i64) -> Condition {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(m) = get("if-match") {
        if !etag_list_matches(m, etag) {
            return Condition::Failed;
        }
    }
    if let Some(m) = get("if-none-match") {
        if etag_list_matches(m, etag) {
            return Condition::NotModified;
        }
    }
    if let Some(t) = get("if-unmodified-since").and_then(parse_http_date) {
        if last_modified > t {
            return Condition::Failed;
        }
    }
    if get("if-none-match").is_none() {
        if let Some(t) = get("if-modified-since").and_then(parse_http_date) {
            if last_modified <= t {
                return Condition::NotModified;
            }
        }
    }
    Condition::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_slices() {
        assert_eq!(parse_ranges(Some("bytes=0-9"), 100).unwrap(), Some(vec![(0, 9)]));
        assert_eq!(parse_ranges(Some("bytes=-10"), 100).unwrap(), Some(vec![(90, 99)]));
        assert_eq!(parse_ranges(Some("bytes=90-"), 100).unwrap(), Some(vec![(90, 99)]));
        assert_eq!(parse_ranges(Some("bytes=1-2,5-6"), 100).unwrap(), Some(vec![(1, 2), (5, 6)]));
        assert_eq!(parse_ranges(Some("bytes=5-2"), 100).unwrap(), None, "malformed: whole object");
        assert!(matches!(parse_ranges(Some("bytes=100-"), 100), Err(SwiftError::RangeNotSatisfiable)));
        let src = Source {
            pieces: vec![Piece { key: "a".into(), offset: 0, len: 10 }, Piece { key: "b".into(), offset: 5, len: 10 }],
        };
        assert_eq!(src.size(), 20);
        assert_eq!(
            src.slice(8, 4),
            vec![Piece { key: "a".into(), offset: 8, len: 2 }, Piece { key: "b".into(), offset: 5, len: 2 }]
        );
    }

    #[test]
    fn conditions() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("if-none-match", "\"abc\"".parse().unwrap());
        assert_eq!(evaluate(&h, "abc", 10), Condition::NotModified);
        let mut h = axum::http::HeaderMap::new();
        h.insert("if-match", "xyz".parse().unwrap());
        assert_eq!(evaluate(&h, "abc", 10), Condition::Failed);
        let mut h = axum::http::HeaderMap::new();
        h.insert("if-modified-since", "Thu, 01 Jan 1970 00:00:20 GMT".parse().unwrap());
        assert_eq!(evaluate(&h, "abc", 10), Condition::NotModified);
        assert_eq!(evaluate(&h, "abc", 30), Condition::Proceed);
    }
}
