//! Bulk operations (Swift's `bulk` middleware): `POST ?bulk-delete` with a body of
//! newline-separated `/container/object` or `/container` paths (URL-encoded), deleting
//! each and reporting counts and per-path errors in the format Swift uses (plain text,
//! or JSON by `Accept`), and `PUT ?extract-archive=tar|tar.gz|tar.bz2`, which turns each
//! file of an archive into an object without holding the archive or a file in memory.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

use crate::db;
use crate::error::{Result, SwiftError};
use crate::names;
use crate::proxy::{respond, Call};
use crate::Svc;

/// Most paths in one bulk delete (Swift's default).
pub const MAX_DELETES_PER_REQUEST: usize = 10_000;
/// Most failures before a bulk delete gives up (Swift's default).
pub const MAX_FAILED_DELETES: usize = 1_000;
/// Largest bulk-delete body.
const MAX_BODY: usize = MAX_DELETES_PER_REQUEST * (names::MAX_CONTAINER_NAME + names::MAX_OBJECT_NAME * 3 + 2);

/// Swift's bulk-delete style report: `Number Deleted`, `Number Not Found`, `Errors`...
pub fn report(call: &Call, deleted: usize, not_found: usize, errors: &[(String, String)]) -> Response {
    let status = if errors.is_empty() { "200 OK" } else { "400 Bad Request" };
    let accept = call.header("accept").unwrap_or("").to_ascii_lowercase();
    if accept.contains("json") {
        let v = serde_json::json!({
            "Number Deleted": deleted,
            "Number Not Found": not_found,
            "Response Body": "",
            "Response Status": status,
            "Errors": errors.iter().map(|(p, e)| vec![p.clone(), e.clone()]).collect::<Vec<_>>(),
        });
        respond(StatusCode::OK, "application/json; charset=utf-8", v.to_string())
    } else {
        let mut s = format!(
            "Number Deleted: {deleted}\nNumber Not Found: {not_found}\nResponse Body: \nResponse Status: {status}\nErrors:\n"
        );
        for (p, e) in errors {
            s.push_str(&format!("{p}, {e}\n"));
        }
        respond(StatusCode::OK, "text/plain; charset=utf-8", s)
    }
}

/// `POST /v1/<account>?bulk-delete`.
pub async fn delete(svc: &Svc, call: &Call, body: Body) -> Result<Response> {
    if !call.grant.owns() {
        return Err(crate::access::deny(call.ctx.as_ref()));
    }
    let raw = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| SwiftError::TooLarge(format!("Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request")))?;
    let text = String::from_utf8_lossy(&raw);
    let paths: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if paths.len() > MAX_DELETES_PER_REQUEST {
        return Err(SwiftError::TooLarge(format!("Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request")));
    }
    let (mut deleted, mut not_found) = (0, 0);
    let mut errors = Vec::new();
    // Objects first, so that containers emptied by this request can go too.
    let mut items: Vec<(String, Option<String>, String)> = Vec::new();
    for p in paths {
        let decoded = names::percent_decode(p).unwrap_or_else(|| p.to_string());
        let trimmed = decoded.trim_start_matches('/');
        match trimmed.split_once('/') {
            Some((c, o)) if !o.is_empty() => items.push((c.to_string(), Some(o.to_string()), p.to_string())),
            _ => items.push((trimmed.trim_end_matches('/').to_string(), None, p.to_string())),
        }
    }
    items.sort_by_key(|(_, o, _)| o.is_none());
    for (c, o, raw_path) in items {
        if errors.len() >= MAX_FAILED_DELETES {
            break;
        }
        let r = match &o {
            Some(o) => db::delete_object(&svc.platform.db, &call.t.account, &c, o).await.map(|row| {
                svc.release_blobs(row.blob.into_iter().collect());
            }),
            None => db::delete_container(&svc.platform.db, &call.t.account, &c).await.map(|b| svc.release_blobs(b)),
        };
        match r {
            Ok(()) => deleted += 1,
            Err(SwiftError::NotFound) => not_found += 1,
            Err(SwiftError::Conflict) => errors.push((raw_path, "409 Conflict".to_string())),
            Err(e) => errors
                .push((raw_path, format!("{} {}", e.status().as_u16(), e.status().canonical_reason().unwrap_or("")))),
        }
    }
    Ok(report(call, deleted, not_found, &errors))
}

/// Most containers one archive may create (Swift's default).
pub const MAX_CONTAINERS_PER_EXTRACTION: usize = 10_000;
/// Most failed files before an extraction gives up (Swift's default).
pub const MAX_FAILED_EXTRACTIONS: usize = 1_000;
/// Bytes per chunk handed from the archive reader to the upload.
const CHUNK: usize = 1024 * 1024;

/// One regular file of the archive: its path and a channel of its bytes.
type FileMsg = (String, tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for sizes of 8 GiB and more.
        return Some(field[1..].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
    }
    let s: String = field.iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    String::from_utf8_lossy(&field[..field.iter().position(|b| *b == 0).unwrap_or(field.len())]).into_owned()
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn skip(r: &mut impl Read, mut n: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while n > 0 {
        let k = read_full(r, &mut buf[..n.min(64 * 1024) as usize])?;
        if k == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "archive ends inside a member"));
        }
        n -= k as u64;
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (512 - size % 512) % 512
}

/// Reads a tar stream (ustar, GNU long names, pax `path`) and hands each regular file
/// to `tx` as it goes; runs on a blocking thread.
fn read_tar(mut r: impl Read, tx: tokio::sync::mpsc::Sender<FileMsg>) -> std::io::Result<()> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut next_name: Option<String> = None;
    let mut h = [0u8; 512];
    loop {
        let n = read_full(&mut r, &mut h)?;
        if n == 0 || h.iter().all(|b| *b == 0) {
            return Ok(());
        }
        if n < 512 {
            return Err(bad("truncated tar header"));
        }
        let size = octal(&h[124..136]).ok_or_else(|| bad("invalid size in a tar header"))?;
        let kind = h[156];
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        match kind {
            b'L' | b'x' => {
                if size > 1 << 20 {
                    return Err(bad("oversized tar extension header"));
                }
                let mut data = vec![0u8; size as usize];
                if read_full(&mut r, &mut data)? < data.len() {
                    return Err(bad("truncated tar extension header"));
                }
                skip(&mut r, padding(size))?;
                if kind == b'L' {
                    next_name = Some(cstr(&data));
                } else {
                    for rec in String::from_utf8_lossy(&data).lines() {
                        if let Some((_, kv)) = rec.split_once(' ') {
                            if let Some(p) = kv.strip_prefix("path=") {
                                next_name = Some(p.to_string());
                            }
                        }
                    }
                }
            }
            b'0' | 0 | b'7' => {
                let name = next_name.take().unwrap_or(name);
                let (ftx, frx) = tokio::sync::mpsc::channel(2);
                if tx.blocking_send((name, frx)).is_err() {
                    return Ok(());
                }
                let mut left = size;
                while left > 0 {
                    let mut buf = vec![0u8; left.min(CHUNK as u64) as usize];
                    let k = read_full(&mut r, &mut buf)?;
                    if k == 0 {
                        let _ = ftx.blocking_send(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "archive ends inside a member",
                        )));
                        return Err(bad("archive ends inside a member"));
                    }
                    buf.truncate(k);
                    left -= k as u64;
                    // A closed receiver means that file failed; keep reading the archive.
                    let _ = ftx.blocking_send(Ok(Bytes::from(buf)));
                }
                drop(ftx);
                skip(&mut r, padding(size))?;
            }
            _ => {
                next_name = None;
                skip(&mut r, size + padding(size))?;
            }
        }
    }
}

/// Swift's extract-archive report (HTTP 200; the outcome is in the body).
fn extract_report(call: &Call, created: usize, errors: &[(String, String)]) -> Response {
    let status = if errors.is_empty() { "201 Created" } else { "400 Bad Request" };
    let accept = call.header("accept").unwrap_or("").to_ascii_lowercase();
    if accept.contains("json") {
        let v = serde_json::json!({
            "Number Files Created": created,
            "Response Body": "",
            "Response Status": status,
            "Errors": errors.iter().map(|(p, e)| vec![p.clone(), e.clone()]).collect::<Vec<_>>(),
        });
        respond(StatusCode::OK, "application/json; charset=utf-8", v.to_string())
    } else {
        let mut s = format!("Number Files Created: {created}\nResponse Body: \nResponse Status: {status}\nErrors:\n");
        for (p, e) in errors {
            s.push_str(&format!("{p}, {e}\n"));
        }
        respond(StatusCode::OK, "text/plain; charset=utf-8", s)
    }
}

/// `PUT /v1/<account>[/<container>[/<prefix>]]?extract-archive=tar|tar.gz|tar.bz2`:
/// each file of the archive becomes an object (at the account level the first path
/// component names the container, created when missing). The archive streams through a
/// decompressor and tar reader on a blocking thread; each file streams into its blob.
pub async fn extract(svc: &Arc<Svc>, call: &Call, body: Body) -> Result<Response> {
    if !call.grant.owns() {
        return Err(crate::access::deny(call.ctx.as_ref()));
    }
    let format = call.query.get("extract-archive").cloned().unwrap_or_default();
    if !matches!(format.as_str(), "tar" | "tar.gz" | "tgz" | "tar.bz2" | "tbz2") {
        return Err(SwiftError::BadRequest(format!(
            "Unsupported archive format {format:?}: use tar, tar.gz or tar.bz2"
        )));
    }
    let reader = tokio_util::io::StreamReader::new(body.into_data_stream().map(|r| r.map_err(std::io::Error::other)));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<FileMsg>(1);
    let reader_task = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        match format.as_str() {
            "tar" => read_tar(bridge, tx),
            "tar.gz" | "tgz" => read_tar(flate2::read::MultiGzDecoder::new(bridge), tx),
            _ => read_tar(bzip2::read::MultiBzDecoder::new(bridge), tx),
        }
    });
    let (base_container, base_prefix) = (call.t.container.clone(), call.t.object.clone().unwrap_or_default());
    let mut created = 0;
    let mut containers_made = 0;
    let mut errors: Vec<(String, String)> = Vec::new();
    while let Some((path, mut data)) = rx.recv().await {
        let clean = path.trim_start_matches("./").trim_start_matches('/').to_string();
        let (container, object) = match &base_container {
            Some(c) => (
                c.clone(),
                format!(
                    "{base_prefix}{}{clean}",
                    if base_prefix.is_empty() || base_prefix.ends_with('/') { "" } else { "/" }
                ),
            ),
            None => match clean.split_once('/') {
                Some((c, o)) => (c.to_string(), o.to_string()),
                None => (clean.clone(), String::new()),
            },
        };
        let r = async {
            let t = crate::names::Target {
                account: call.t.account.clone(),
                container: Some(container.clone()),
                object: Some(object.clone()).filter(|o| !o.is_empty()),
            };
            crate::names::check(&t)?;
            if container.is_empty() || object.is_empty() {
                return Err(SwiftError::BadRequest("Invalid path: no container/object".into()));
            }
            let c = match db::container(&svc.platform.db, &call.t.account, &container).await? {
                Some(c) => c,
                None => {
                    containers_made += 1;
                    if containers_made > MAX_CONTAINERS_PER_EXTRACTION {
                        return Err(SwiftError::BadRequest("Too many containers in one archive".into()));
                    }
                    db::put_container(&svc.platform.db, &call.t.account, &container, crate::POLICY_NAME, vec![])
                        .await?;
                    db::container(&svc.platform.db, &call.t.account, &container).await?.ok_or(SwiftError::NotFound)?
                }
            };
            let stream = futures::stream::poll_fn(move |cx| data.poll_recv(cx));
            let limit =
                crate::ingest::Limit { max: svc.cfg.max_file_size, message: "Your request is too large.".into() };
            let stored = crate::ingest::ingest(svc.backend.clone(), stream, limit, None).await?;
            let o = crate::db::Object {
                account: call.t.account.clone(),
                container: container.clone(),
                name: object.clone(),
                size: stored.size as i64,
                etag: stored.etag,
                content_type: crate::object::guess_type(&object).to_string(),
                modified_at: db::now_stamp(),
                blob: Some(stored.key.clone()),
                blob_size: stored.size as i64,
                ..Default::default()
            };
            if let Err(e) = crate::object::write_row(svc, &c, &o, false).await {
                svc.release_blobs(vec![stored.key]);
                return Err(e);
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => created += 1,
            Err(e) => {
                let st = e.status();
                errors.push((
                    crate::names::quote(&clean),
                    format!("{} {}", st.as_u16(), st.canonical_reason().unwrap_or("")),
                ));
                if errors.len() >= MAX_FAILED_EXTRACTIONS {
                    break;
                }
            }
        }
    }
    drop(rx);
    match reader_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => errors.push(("archive".into(), format!("400 Bad Request: {e}"))),
        Err(e) => return Err(SwiftError::Internal(format!("archive reader failed: {e}"))),
    }
    Ok(extract_report(call, created, &errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let sz = format!("{size:011o}\0");
        h[124..136].copy_from_slice(sz.as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h
    }

    #[test]
    fn reads_tar_members() {
        let mut tar = header("c/dir/", 0, b'5');
        tar.extend(header("c/a.txt", 5, b'0'));
        tar.extend(b"hello");
        tar.extend(vec![0u8; 507]);
        let long = "c/".to_string() + &"x".repeat(150);
        tar.extend(header("././@LongLink", long.len() + 1, b'L'));
        let mut ln = long.clone().into_bytes();
        ln.push(0);
        ln.resize(512, 0);
        tar.extend(ln);
        tar.extend(header("c/xxx", 2, b'0'));
        tar.extend(b"hi");
        tar.extend(vec![0u8; 510]);
        tar.extend(vec![0u8; 1024]);
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let reader = std::thread::spawn(move || read_tar(std::io::Cursor::new(tar), tx));
        let mut got = Vec::new();
        while let Some((name, mut data)) = rx.blocking_recv() {
            let mut body = Vec::new();
            while let Some(Ok(b)) = data.blocking_recv() {
                body.extend_from_slice(&b);
            }
            got.push((name, body));
        }
        reader.join().unwrap().unwrap();
        assert_eq!(got, vec![("c/a.txt".to_string(), b"hello".to_vec()), (long, b"hi".to_vec())]);
        assert_eq!(octal(b"00000000012\0"), Some(10));
    }
}
