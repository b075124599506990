//! Object requests: `GET`/`HEAD` (ranges, conditionals, large objects, symlinks), `PUT`
//! (streamed; `X-Copy-From`, SLO manifests, symlinks, `If-None-Match: *`, expiry,
//! quotas, versioning), `POST` (metadata), `DELETE` and `COPY`.
//!
//! A PUT streams the body into a new blob first ([`crate::ingest`]) and only then writes
//! the row that makes the object visible, in one transaction with the container's
//! counters; the blob a replaced row pointed at is released afterwards (deleted once no
//! row references it). Versioning moves the replaced row into the archive container
//! instead of dropping it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::access::{self, AclGrant};
use crate::body::{self, Condition, Piece, Source};
use crate::db::{self, Container, ObjKind, Object, OnReplace};
use crate::error::{Result, SwiftError};
use crate::ingest::{self, Limit};
use crate::meta::{self, Kind, Meta};
use crate::names;
use crate::proxy::{empty, respond, set, Call};
use crate::Svc;

/// Most symlinks followed in a row (Swift's `symloop_max`).
pub const SYMLOOP_MAX: usize = 2;

/// Dispatches an object request.
pub async fn handle(svc: &Arc<Svc>, call: &Call, body: Body) -> Result<Response> {
    let c = db::container(&svc.platform.db, &call.t.account, call.container()).await?;
    let acl =
        c.as_ref().map(|c| access::acl_grant(&c.meta, call.ctx.as_ref(), call.header("referer"))).unwrap_or_default();
    let read_ok = call.grant.reads() || acl.read || (call.tempurl && matches!(call.method, Method::GET | Method::HEAD));
    let write_ok = call.grant.owns() || acl.write || (call.tempurl && call.method == Method::PUT);
    let allowed = match call.method.as_str() {
        "GET" | "HEAD" => read_ok,
        "PUT" | "POST" | "DELETE" | "COPY" => write_ok,
        _ => return Err(SwiftError::MethodNotAllowed),
    };
    if !allowed {
        if call.method == Method::GET && !call.grant.reads() {
            if let Some(c) = &c {
                if let Some(r) = crate::staticweb::serve_object(svc, call, c).await? {
                    return Ok(r);
                }
            }
        }
        return Err(access::deny(call.ctx.as_ref()));
    }
    let c = c.ok_or(SwiftError::NotFound)?;
    match call.method.as_str() {
        "GET" | "HEAD" => get(svc, call, &c).await,
        "PUT" => put(svc, call, &c, body).await,
        "POST" => post(svc, call).await,
        "DELETE" => delete(svc, call, &c).await,
        "COPY" => {
            let dest = call.header("destination").and_then(names::split_container_object).ok_or_else(|| {
                SwiftError::PreconditionMsg(
                    "Destination header must be of the form <container name>/<object name>".into(),
                )
            })?;
            copy(svc, call, (call.container().to_string(), call.object().to_string()), dest).await
        }
        _ => Err(SwiftError::MethodNotAllowed),
    }
}

/// Follows symlinks from `o` (at most [`SYMLOOP_MAX`]); returns the final row.
async fn resolve(svc: &Svc, mut o: Object) -> Result<Object> {
    for _ in 0..=SYMLOOP_MAX {
        if o.kind != ObjKind::Symlink {
            return Ok(o);
        }
        let target = o.meta.get("x-symlink-target").cloned().unwrap_or_default();
        let account = o.meta.get("x-symlink-target-account").cloned().unwrap_or(o.account.clone());
        let (tc, to) = names::split_container_object(&target).ok_or(SwiftError::NotFound)?;
        o = db::object(&svc.platform.db, &account, &tc, &to).await?.ok_or(SwiftError::NotFound)?;
    }
    Err(SwiftError::ConflictMsg(format!("Too many levels of symbolic links, maximum allowed is {SYMLOOP_MAX}")))
}

/// The bytes of a row: plain, SLO or DLO.
pub async fn source_of(svc: &Svc, o: &Object) -> Result<(Source, String)> {
    match o.kind {
        ObjKind::Plain => Ok((
            Source {
                pieces: o.blob.iter().map(|k| Piece { key: k.clone(), offset: 0, len: o.size.max(0) as u64 }).collect(),
            },
            o.etag.clone(),
        )),
        ObjKind::Slo => Ok((crate::slo::source(svc, o, 0).await?, format!("\"{}\"", o.etag))),
        ObjKind::Dlo => crate::dlo::source(svc, o).await,
        ObjKind::Symlink => Ok((Source::default(), o.etag.clone())),
    }
}

/// The metadata headers every object response carries.
fn object_headers(r: &mut Response, o: &Object, etag: &str) {
    set(r, "etag", etag);
    set(r, "last-modified", db::http_date(&o.modified_at));
    set(r, "x-timestamp", db::x_timestamp(&o.modified_at));
    set(r, "accept-ranges", "bytes");
    for (k, v) in &o.meta {
        if k == "x-symlink-target-account" {
            continue;
        }
        set(r, k, v);
    }
    if let Some(d) = o.delete_at {
        set(r, "x-delete-at", d.to_string());
    }
    if o.kind == ObjKind::Slo {
        set(r, "x-static-large-object", "True");
    }
}

fn last_modified_secs(o: &Object) -> i64 {
    chrono::DateTime::parse_from_rfc2822(&db::http_date(&o.modified_at)).map(|d| d.timestamp()).unwrap_or(0)
}

async fn get(svc: &Arc<Svc>, call: &Call, _c: &Container) -> Result<Response> {
    let head = call.method == Method::HEAD;
    let row = db::object(&svc.platform.db, &call.t.account, call.container(), call.object())
        .await?
        .ok_or(SwiftError::NotFound)?;
    let symlink_get = call.query.get("symlink").is_some_and(|v| v == "get");
    let link = (row.kind == ObjKind::Symlink).then(|| row.clone());
    let o = if symlink_get { row } else { resolve(svc, row).await? };
    if o.kind == ObjKind::Slo && call.query.get("multipart-manifest").is_some_and(|v| v == "get") {
        return crate::slo::get_manifest(svc, call, &o).await;
    }
    let (src, etag) = source_of(svc, &o).await?;
    match body::evaluate(&call.headers, etag.trim_matches('"'), last_modified_secs(&o)) {
        Condition::Proceed => {}
        Condition::NotModified => {
            let mut r = respond(StatusCode::NOT_MODIFIED, &o.content_type, Body::empty());
            object_headers(&mut r, &o, &etag);
            return Ok(r);
        }
        Condition::Failed => {
            let mut r = SwiftError::PreconditionFailed.into_response_with_etag(&etag);
            set(&mut r, "last-modified", db::http_date(&o.modified_at));
            return Ok(r);
        }
    }
    let mut r = body::respond_ranges(svc.backend.clone(), &src, &o.content_type, call.header("range"), head)?;
    object_headers(&mut r, &o, &etag);
    if call.tempurl {
        // tempurl's `inline` and `filename=` choose how a browser shows the download.
        let filename = call.query.get("filename").map(|f| f.replace('"', ""));
        if call.flag("inline") {
            match filename {
                Some(f) => set(&mut r, "content-disposition", format!("inline; filename=\"{f}\"")),
                None => set(&mut r, "content-disposition", "inline"),
            }
        } else if let Some(f) = filename {
            set(&mut r, "content-disposition", format!("attachment; filename=\"{f}\""));
        } else if call.query.contains_key("temp_url_sig") && !o.meta.contains_key("content-disposition") {
            let base = o.name.rsplit('/').next().unwrap_or(&o.name).replace('"', "");
            set(&mut r, "content-disposition", format!("attachment; filename=\"{base}\""));
        }
    }
    if o.kind == ObjKind::Slo {
        if let Some(m) = o.meta.get("x-manifest-etag") {
            set(&mut r, "x-manifest-etag", m);
        }
    }
    if let Some(l) = link {
        if symlink_get {
            set(&mut r, "x-symlink-target", l.meta.get("x-symlink-target").map(String::as_str).unwrap_or(""));
        } else {
            set(
                &mut r,
                "content-location",
                format!("/v1/{}/{}/{}", o.account, names::quote(&o.container), names::quote(&o.name)),
            );
        }
    }
    Ok(r)
}

impl SwiftError {
    fn into_response_with_etag(self, etag: &str) -> Response {
        let mut r = axum::response::IntoResponse::into_response(self);
        set(&mut r, "etag", etag);
        r
    }
}

/// `X-Delete-At` / `X-Delete-After` of a request: `Ok(None)` when absent.
fn expiry(call: &Call) -> Result<Option<i64>> {
    let now = db::now_secs();
    if let Some(v) = call.header("x-delete-after") {
        let n: i64 = v.parse().map_err(|_| SwiftError::BadRequest("Non-integer X-Delete-After".into()))?;
        if n < 0 {
            return Err(SwiftError::BadRequest("X-Delete-After in past".into()));
        }
        return Ok(Some(now + n));
    }
    if let Some(v) = call.header("x-delete-at") {
        let n: i64 = v
            .split('.')
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|_| SwiftError::BadRequest("Non-integer X-Delete-At".into()))?;
        if n <= now {
            return Err(SwiftError::BadRequest("X-Delete-At in past".into()));
        }
        return Ok(Some(n));
    }
    Ok(None)
}

/// A content type for a new object: the request's, or guessed from the name.
fn content_type(call: &Call, name: &str) -> String {
    if let Some(ct) = call.header("content-type").filter(|c| !c.is_empty()) {
        if !call.header_true("x-detect-content-type") {
            return ct.to_string();
        }
    }
    guess_type(name).to_string()
}

/// Swift guesses a missing content type from the name (Python's `mimetypes`).
pub fn guess_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "zip" => "application/zip",
        "iso" => "application/x-iso9660-image",
        _ => "application/octet-stream",
    }
}

/// New-object metadata from the request headers (removals ignored).
fn request_meta(call: &Call) -> Result<Meta> {
    let mut m = Meta::new();
    // On PUT an empty `X-Object-Meta-*` is kept as an empty value (Swift), not a removal.
    let sets = meta::updates(&call.headers, Kind::Object)?
        .into_iter()
        .filter(|(k, v)| v.is_some() || call.headers.contains_key(k.as_str()))
        .map(|(k, v)| (k, Some(v.unwrap_or_default())))
        .collect();
    meta::apply(&mut m, sets);
    meta::check_limits(&m, Kind::Object)?;
    Ok(m)
}

/// The upload limit for `c`: `max_file_size`, container quotas, account quota.
async fn upload_limit(svc: &Svc, call: &Call, c: &Container) -> Result<Limit> {
    let quota_msg = "Upload exceeds quota.".to_string();
    let mut limit = Limit { max: svc.cfg.max_file_size, message: "Your request is too large.".into() };
    let declared = call.header("content-length").and_then(|v| v.parse::<u64>().ok());
    if let Some(q) = c.meta.get("x-container-meta-quota-count").and_then(|v| v.parse::<i64>().ok()) {
        if c.object_count + 1 > q {
            return Err(SwiftError::TooLarge(quota_msg));
        }
    }
    if let Some(q) = c.meta.get("x-container-meta-quota-bytes").and_then(|v| v.parse::<i64>().ok()) {
        let left = (q - c.bytes_used).max(0) as u64;
        if left < limit.max {
            limit = Limit { max: left, message: quota_msg.clone() };
        }
    }
    let acct = db::account(&svc.platform.db, &call.t.account).await?;
    if let Some(q) = acct.meta.get("x-account-quota-count").and_then(|v| v.parse::<i64>().ok()) {
        if acct.objects + 1 > q {
            return Err(SwiftError::TooLarge(quota_msg));
        }
    }
    let bytes_quota = acct.meta.get("x-account-meta-quota-bytes").or_else(|| acct.meta.get("x-account-quota-bytes"));
    if let Some(q) = bytes_quota.and_then(|v| v.parse::<i64>().ok()) {
        let left = (q - acct.bytes).max(0) as u64;
        if left < limit.max {
            limit = Limit { max: left, message: quota_msg };
        }
    }
    if let Some(n) = declared {
        if n > limit.max {
            return Err(SwiftError::TooLarge(limit.message));
        }
    }
    Ok(limit)
}

/// Where a replaced live row of `c` goes: dropped, or archived by versioning.
pub fn archive_policy(svc: &Svc, c: &Container) -> impl Fn(&Object) -> OnReplace + Send + Sync + Clone + 'static {
    let loc = c.meta.get("x-versions-location").or_else(|| c.meta.get("x-history-location")).cloned();
    let _ = svc;
    move |old: &Object| match &loc {
        Some(l) => OnReplace::MoveTo {
            container: names::percent_decode(l).unwrap_or_else(|| l.clone()),
            name: version_name(&old.name, &old.modified_at),
        },
        None => OnReplace::Drop,
    }
}

/// Swift's archive name: `<3 hex digits of the name's length><name>/<timestamp>`.
pub fn version_name(name: &str, modified_at: &str) -> String {
    format!("{:03x}{name}/{}", name.len(), db::x_timestamp(modified_at))
}

/// Writes `o`, archiving or releasing what it replaces. A versions location that does
/// not exist (yet) means no archiving, as in Swift.
pub async fn write_row(svc: &Svc, c: &Container, o: &Object, if_none_match: bool) -> Result<()> {
    let mut policy_c = c.clone();
    for key in ["x-versions-location", "x-history-location"] {
        if let Some(loc) = c.meta.get(key) {
            let name = names::percent_decode(loc).unwrap_or_else(|| loc.clone());
            if db::container(&svc.platform.db, &c.account, &name).await?.is_none() {
                policy_c.meta.remove(key);
            }
        }
    }
    let replaced = db::put_object(&svc.platform.db, o, if_none_match, archive_policy(svc, &policy_c)).await?;
    if let Some(old) = replaced.old {
        svc.release_blobs(old.blob.into_iter().collect());
    }
    Ok(())
}

fn created(o: &Object, etag: &str) -> Response {
    let mut r = empty(StatusCode::CREATED);
    set(&mut r, "etag", etag);
    set(&mut r, "last-modified", db::http_date(&o.modified_at));
    set(&mut r, "content-length", "0");
    r
}

async fn put(svc: &Arc<Svc>, call: &Call, c: &Container, body: Body) -> Result<Response> {
    if let Some(src) = call.header("x-copy-from") {
        let src = names::split_container_object(src).ok_or_else(|| {
            SwiftError::PreconditionMsg("X-Copy-From header must be of the form <container name>/<object name>".into())
        })?;
        return copy(svc, call, src, (call.container().to_string(), call.object().to_string())).await;
    }
    let chunked = call.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let declared = call.header("content-length");
    if declared.is_none() && !chunked {
        return Err(SwiftError::LengthRequired);
    }
    if let Some(d) = declared {
        if d.parse::<u64>().is_err() {
            return Err(SwiftError::BadRequest("Invalid Content-Length".into()));
        }
    }
    let if_none_match = match call.header("if-none-match") {
        None => false,
        Some("*") => true,
        Some(_) => return Err(SwiftError::BadRequest("If-None-Match only supports *".into())),
    };
    if if_none_match && db::object(&svc.platform.db, &call.t.account, call.container(), call.object()).await?.is_some()
    {
        return Err(SwiftError::PreconditionFailed);
    }
    let delete_at = expiry(call)?;
    let mut m = request_meta(call)?;
    if call.query.get("multipart-manifest").is_some_and(|v| v == "put") {
        return crate::slo::put(svc, call, c, body, m, delete_at).await;
    }
    if let Some(target) = call.header("x-symlink-target") {
        return symlink_put(svc, call, c, target, m, delete_at).await;
    }
    let limit = upload_limit(svc, call, c).await?;
    let expected = call.header("etag").map(str::to_string);
    let backend = svc.backend.clone();
    let stream = body.into_data_stream();
    // Its own task: a client that hangs up drops this handler, not the clean-up.
    let stored = tokio::spawn(ingest::ingest(backend, stream, limit, expected))
        .await
        .map_err(|e| SwiftError::Internal(format!("upload task failed: {e}")))??;
    let kind = if m.contains_key("x-object-manifest") { ObjKind::Dlo } else { ObjKind::Plain };
    m.retain(|k, _| k != "x-symlink-target");
    let o = Object {
        account: call.t.account.clone(),
        container: call.container().to_string(),
        name: call.object().to_string(),
        size: stored.size as i64,
        etag: stored.etag.clone(),
        content_type: content_type(call, call.object()),
        modified_at: db::now_stamp(),
        meta: m,
        kind,
        blob: Some(stored.key.clone()),
        blob_size: stored.size as i64,
        delete_at,
    };
    if let Err(e) = write_row(svc, c, &o, if_none_match).await {
        svc.release_blobs(vec![stored.key]);
        return Err(e);
    }
    Ok(created(&o, &stored.etag))
}

async fn symlink_put(
    svc: &Svc,
    call: &Call,
    c: &Container,
    target: &str,
    mut m: Meta,
    delete_at: Option<i64>,
) -> Result<Response> {
    if call.header("content-length").is_some_and(|v| v != "0") {
        return Err(SwiftError::BadRequest("Symlink requests require a zero byte body".into()));
    }
    let (tc, to) = names::split_container_object(target).ok_or_else(|| {
        SwiftError::PreconditionMsg("X-Symlink-Target header must be of the form <container name>/<object name>".into())
    })?;
    m.insert("x-symlink-target".into(), format!("{}/{}", names::quote(&tc), names::quote(&to)));
    if let Some(a) = call.header("x-symlink-target-account") {
        m.insert("x-symlink-target-account".into(), a.to_string());
    }
    let etag = ingest::md5_hex(b"");
    let o = Object {
        account: call.t.account.clone(),
        container: call.container().to_string(),
        name: call.object().to_string(),
        size: 0,
        etag: etag.clone(),
        content_type: call.header("content-type").unwrap_or("application/symlink").to_string(),
        modified_at: db::now_stamp(),
        meta: m,
        kind: ObjKind::Symlink,
        blob: None,
        blob_size: 0,
        delete_at,
    };
    write_row(svc, c, &o, false).await?;
    let mut r = created(&o, &etag);
    set(&mut r, "x-symlink-target", format!("{tc}/{to}"));
    Ok(r)
}

async fn post(svc: &Svc, call: &Call) -> Result<Response> {
    let mut o = db::object(&svc.platform.db, &call.t.account, call.container(), call.object())
        .await?
        .ok_or(SwiftError::NotFound)?;
    if call.header("x-symlink-target").is_some() {
        return Err(SwiftError::BadRequest("A PUT request is required to set a symlink target".into()));
    }
    let delete_at = if call.header_true("x-remove-delete-at") { None } else { expiry(call)? };
    // POST replaces the user metadata (Swift's fast-POST), keeping system headers.
    o.meta.retain(|k, _| {
        !k.starts_with("x-object-meta-") && !meta::OBJECT_SYSTEM.contains(&k.as_str()) || k == "x-object-manifest"
    });
    meta::apply(&mut o.meta, meta::updates(&call.headers, Kind::Object)?);
    meta::check_limits(&o.meta, Kind::Object)?;
    if let Some(ct) = call.header("content-type").filter(|c| !c.is_empty()) {
        o.content_type = ct.to_string();
    }
    o.delete_at = delete_at;
    // Setting or removing `X-Object-Manifest` turns a plain object into a DLO and back.
    if matches!(o.kind, ObjKind::Plain | ObjKind::Dlo) {
        o.kind = if o.meta.contains_key("x-object-manifest") { ObjKind::Dlo } else { ObjKind::Plain };
    }
    db::update_object_meta(&svc.platform.db, &o).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn delete(svc: &Svc, call: &Call, c: &Container) -> Result<Response> {
    if call.query.get("multipart-manifest").is_some_and(|v| v == "delete") {
        return crate::slo::delete(svc, call).await;
    }
    let (a, cn, on) = (&call.t.account, call.container(), call.object());
    if let Some(hist) = c.meta.get("x-history-location") {
        let hist = names::percent_decode(hist).unwrap_or_default();
        if db::container(&svc.platform.db, a, &hist).await?.is_some() {
            let cur = db::object(&svc.platform.db, a, cn, on).await?.ok_or(SwiftError::NotFound)?;
            db::move_object(&svc.platform.db, &cur, &hist, &version_name(on, &cur.modified_at)).await?;
            // The delete marker Swift's history mode leaves behind.
            let marker = Object {
                account: a.clone(),
                container: hist.clone(),
                name: version_name(on, &db::now_stamp()),
                etag: ingest::md5_hex(b""),
                content_type: "application/x-deleted;swift_versions_deleted=1".into(),
                modified_at: db::now_stamp(),
                ..Default::default()
            };
            db::put_object(&svc.platform.db, &marker, false, |_| OnReplace::Drop).await?;
            return Ok(empty(StatusCode::NO_CONTENT));
        }
    }
    let gone = db::delete_object(&svc.platform.db, a, cn, on).await?;
    if let Some(vers) = c.meta.get("x-versions-location") {
        let vers = names::percent_decode(vers).unwrap_or_default();
        let prefix = format!("{:03x}{on}/", on.len());
        let p = db::ListParams { prefix, limit: 1, reverse: true, ..Default::default() };
        if let Some(db::Entry::Item(prev)) = db::list_objects(&svc.platform.db, a, &vers, &p).await?.into_iter().next()
        {
            db::move_object(&svc.platform.db, &prev, cn, on).await?;
        }
    }
    svc.release_blobs(gone.blob.into_iter().collect());
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Copies `src` to `dest` (both `(container, object)` in the caller's account, or from
/// `X-Copy-From-Account` / to `Destination-Account`).
async fn copy(svc: &Arc<Svc>, call: &Call, src: (String, String), dest: (String, String)) -> Result<Response> {
    let src_account = call.header("x-copy-from-account").unwrap_or(&call.t.account).to_string();
    let dest_account = call.header("destination-account").unwrap_or(&call.t.account).to_string();
    let roles = &svc.roles;
    let src_c = db::container(&svc.platform.db, &src_account, &src.0).await?;
    let src_grant = access::grant(roles, call.ctx.as_ref(), &src_account);
    let src_acl: AclGrant = src_c
        .as_ref()
        .map(|c| access::acl_grant(&c.meta, call.ctx.as_ref(), call.header("referer")))
        .unwrap_or_default();
    if !src_grant.reads() && !src_acl.read {
        return Err(access::deny(call.ctx.as_ref()));
    }
    let dest_c = db::container(&svc.platform.db, &dest_account, &dest.0).await?;
    let dest_grant = access::grant(roles, call.ctx.as_ref(), &dest_account);
    let dest_acl: AclGrant =
        dest_c.as_ref().map(|c| access::acl_grant(&c.meta, call.ctx.as_ref(), None)).unwrap_or_default();
    if !dest_grant.owns() && !dest_acl.write {
        return Err(access::deny(call.ctx.as_ref()));
    }
    let dest_c = dest_c.ok_or(SwiftError::NotFound)?;
    let row = db::object(&svc.platform.db, &src_account, &src.0, &src.1).await?.ok_or(SwiftError::NotFound)?;
    let symlink_get = call.query.get("symlink").is_some_and(|v| v == "get");
    let manifest_get = call.query.get("multipart-manifest").is_some_and(|v| v == "get");
    let s = if symlink_get { row } else { resolve(svc, row).await? };
    let mut m = if call.header_true("x-fresh-metadata") {
        Meta::new()
    } else {
        s.meta.iter().filter(|(k, _)| !k.starts_with("x-symlink")).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    meta::apply(&mut m, meta::updates(&call.headers, Kind::Object)?);
    meta::check_limits(&m, Kind::Object)?;
    let content_type =
        call.header("content-type").filter(|c| !c.is_empty()).map(str::to_string).unwrap_or(s.content_type.clone());
    let delete_at = expiry(call)?;
    let mut o = Object {
        account: dest_account.clone(),
        container: dest.0.clone(),
        name: dest.1.clone(),
        content_type,
        modified_at: db::now_stamp(),
        delete_at,
        ..s.clone()
    };
    o.meta = m;
    let share = matches!(s.kind, ObjKind::Plain | ObjKind::Symlink) || (s.kind == ObjKind::Slo && manifest_get);
    let mut new_blob = None;
    if !share {
        // A large object is copied as its content: one new plain object.
        let (src_bytes, _) = source_of(svc, &s).await?;
        let stream = body::stream(svc.backend.clone(), src_bytes.pieces.clone());
        let limit = Limit { max: svc.cfg.max_file_size, message: "Your request is too large.".into() };
        let stored = tokio::spawn(ingest::ingest(svc.backend.clone(), stream, limit, None))
            .await
            .map_err(|e| SwiftError::Internal(format!("copy task failed: {e}")))??;
        o.kind = ObjKind::Plain;
        o.size = stored.size as i64;
        o.etag = stored.etag;
        o.blob = Some(stored.key.clone());
        o.blob_size = stored.size as i64;
        o.meta.remove("x-object-manifest");
        o.meta.remove("x-manifest-etag");
        new_blob = Some(stored.key);
    }
    if let Err(e) = write_row(svc, &dest_c, &o, false).await {
        svc.release_blobs(new_blob.into_iter().collect());
        return Err(e);
    }
    let etag = if o.kind == ObjKind::Slo { format!("\"{}\"", o.etag) } else { o.etag.clone() };
    let mut r = created(&o, &etag);
    for (k, v) in &o.meta {
        if k.starts_with("x-object-meta-") || meta::OBJECT_SYSTEM.contains(&k.as_str()) {
            set(&mut r, k, v);
        }
    }
    set(&mut r, "x-copied-from", format!("{}/{}", names::quote(&src.0), names::quote(&src.1)));
    set(&mut r, "x-copied-from-last-modified", db::http_date(&s.modified_at));
    if src_account != call.t.account {
        set(&mut r, "x-copied-from-account", &src_account);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_names() {
        assert_eq!(super::version_name("obj", "1970-01-01T00:00:01.000000"), "003obj/1.00000");
        assert_eq!(super::guess_type("a/b.TXT"), "text/plain");
        assert_eq!(super::guess_type("noext"), "application/octet-stream");
    }
}
