//! Dynamic large objects (Swift's `dlo` middleware): an object whose
//! `X-Object-Manifest: <container>/<prefix>` names its segments, read at GET time as the
//! concatenation of the objects listed under that prefix, in name order. The ETag is the
//! quoted MD5 of the segments' ETags, computed on each read.

use crate::body::{Piece, Source};
use crate::db::{self, Entry, ListParams, ObjKind, Object};
use crate::error::{Result, SwiftError};
use crate::ingest;
use crate::names;
use crate::Svc;

/// Most segments a DLO may have (Swift's `max_get_time`-bounded listing; here a count).
pub const MAX_SEGMENTS: usize = 10_000;

/// The pieces and ETag of a DLO.
pub async fn source(svc: &Svc, o: &Object) -> Result<(Source, String)> {
    let manifest = o.meta.get("x-object-manifest").cloned().unwrap_or_default();
    let decoded = names::percent_decode(&manifest).unwrap_or(manifest);
    let (container, prefix) = decoded
        .trim_start_matches('/')
        .split_once('/')
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .unwrap_or((decoded.clone(), String::new()));
    let mut src = Source::default();
    let mut etags = String::new();
    let mut marker = String::new();
    let mut seen = 0;
    loop {
        let p = ListParams { prefix: prefix.clone(), marker: marker.clone(), limit: 1000, ..Default::default() };
        let page = db::list_objects(&svc.platform.db, &o.account, &container, &p).await?;
        let n = page.len();
        for e in page {
            let Entry::Item(seg) = e else { continue };
            marker = seg.name.clone();
            seen += 1;
            if seen > MAX_SEGMENTS {
                return Err(SwiftError::ConflictMsg(format!("DLO has more than {MAX_SEGMENTS} segments")));
            }
            if seg.kind != ObjKind::Plain {
                continue;
            }
            etags.push_str(&seg.etag);
            if let Some(k) = &seg.blob {
                src.pieces.push(Piece { key: k.clone(), offset: 0, len: seg.size.max(0) as u64 });
            }
        }
        if n < 1000 {
            break;
        }
    }
    Ok((src, format!("\"{}\"", ingest::md5_hex(etags.as_bytes()))))
}
