//! Image data: upload (`PUT /file`), download (`GET /file`) and glance-direct staging
//! (`PUT /stage`), all streamed; [`ingest`] is also what imports ([`crate::import`])
//! write through.
//!
//! An upload never sits in memory whole. [`ingest`] reads the request body chunk by
//! chunk; each chunk is counted against the size cap and the project's storage quota,
//! shown to the format [`Inspector`], and handed over a small bounded channel to a
//! blocking thread that hashes it (md5 for `checksum`, sha512 for `os_hash_value`) and
//! writes it to the store's partial object. When the body ends the inspection verdict
//! and `qemu-img`'s second opinion decide; only then is the object committed and the
//! image made `active`. Any failure (client gone, quota, disk full, bad format) removes
//! the partial data and puts the image to `killed`. The work runs in its own task, so
//! a client that disconnects cannot cancel the clean-up.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use sha2::Sha512;
use stratus_auth::Ctx;

use crate::error::{ImageError, Result};
use crate::images::db::{self, DataFacts, Image};
use crate::images::enforce;
use crate::inspect::{self, Inspector};
use crate::store::{Store, StoreError};
use crate::{St, State as ImageState};

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new().route("/v2/images/{id}/file", put(upload).get(download)).route("/v2/images/{id}/stage", put(stage))
}

/// Batches in flight between the request and each hashing/writing thread.
const PIPE_DEPTH: usize = 4;
/// Bytes per batch handed to the hashing/writing threads.
const BATCH: usize = 1024 * 1024;

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn store_err(e: StoreError) -> ImageError {
    match e {
        StoreError::Full => ImageError::StorageFull("no space left on the image store".into()),
        StoreError::NotFound => ImageError::Store("image data missing from the store".into()),
        StoreError::Io(e) => ImageError::Store(e.to_string()),
    }
}

/// How many bytes an upload may bring, and what to say when it brings more.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    max: u64,
    message: String,
}

/// The limit for data of `im`: the size cap, or what is left of the owner's quota.
pub(crate) async fn limit_for(st: &ImageState, im: &Image) -> Result<Limit> {
    let cap = st.cfg.image_size_cap;
    let mut limit =
        Limit { max: cap, message: format!("Image exceeds the storage limit: image_size_cap is {cap} bytes") };
    if st.storage_quota > 0 {
        if let Some(owner) = &im.owner {
            let (_, used) = db::usage(&st.platform.db, owner).await?;
            let left = st.storage_quota.saturating_sub(used.max(0) as u64);
            if left < limit.max {
                limit = Limit {
                    max: left,
                    message: format!(
                        "Denying attempt to upload image because it exceeds the quota: the project's storage \
                         quota is {} bytes and {used} are in use",
                        st.storage_quota
                    ),
                };
            }
        }
    }
    Ok(limit)
}

/// What [`ingest`] should check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Inspect the format (upload, import).
    Inspect,
    /// Bytes only (staging: inspected at import).
    None,
}

/// Streams `body` into `store` under the image's id; see the module doc.
pub(crate) async fn ingest<S, E>(
    st: &ImageState,
    store: std::sync::Arc<dyn Store>,
    im: &Image,
    mut body: S,
    limit: Limit,
    check: Check,
) -> Result<DataFacts>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let key = im.id.clone();
    // Two blocking threads, each fed every batch: md5, and sha512 + the store write, so
    // the two hashes run in parallel when a core is free.
    let (tx_md5, mut rx_md5) = tokio::sync::mpsc::channel::<Bytes>(PIPE_DEPTH);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(PIPE_DEPTH);
    let md5_worker = tokio::task::spawn_blocking(move || {
        let mut md5 = Md5::new();
        while let Some(chunk) = rx_md5.blocking_recv() {
            md5.update(&chunk);
        }
        hex(&md5.finalize())
    });
    let wstore = store.clone();
    let wkey = key.clone();
    let worker = tokio::task::spawn_blocking(move || -> std::result::Result<String, StoreError> {
        let mut w = wstore.create(&wkey)?;
        let mut sha = Sha512::new();
        while let Some(chunk) = rx.blocking_recv() {
            sha.update(&chunk);
            w.write(&chunk)?;
        }
        w.finish()?;
        Ok(hex(&sha.finalize()))
    });
    let mut insp = Inspector::new();
    let mut total: u64 = 0;
    // Network chunks are small (8-64 KiB); batching them into BATCH-sized buffers costs a
    // memcpy but saves most thread wake-ups and write syscalls.
    let mut batch = BytesMut::with_capacity(BATCH);
    let streamed: Result<()> = loop {
        let next = body.next().await;
        let done = next.is_none();
        match next {
            Some(Err(e)) => break Err(ImageError::BadRequest(format!("The image data upload was interrupted: {e}"))),
            Some(Ok(chunk)) => {
                total += chunk.len() as u64;
                if total > limit.max {
                    drain(&mut body, DRAIN_MAX).await;
                    break Err(ImageError::TooLarge(limit.message.clone()));
                }
                if check == Check::Inspect {
                    insp.feed(&chunk);
                }
                batch.extend_from_slice(&chunk);
            }
            None => {}
        }
        if batch.len() >= BATCH || (done && !batch.is_empty()) {
            let full = batch.split().freeze();
            batch.reserve(BATCH);
            // A failed send means the writer stopped: its error is reported below.
            if tx_md5.send(full.clone()).await.is_err() || tx.send(full).await.is_err() {
                break Ok(());
            }
        }
        if done {
            break Ok(());
        }
    };
    drop(batch);
    drop(tx_md5);
    drop(tx);
    let written = match (worker.await, md5_worker.await) {
        (Ok(r), Ok(md5)) => r.map(|sha| (md5, sha)).map_err(store_err),
        (Err(e), _) | (_, Err(e)) => Err(ImageError::Store(format!("image writer failed: {e}"))),
    };
    let result = async {
        streamed?;
        let (checksum, sha512) = written?;
        let mut virtual_size = None;
        if check == Check::Inspect {
            let found = insp.finish();
            inspect::verify(im.disk_format.as_deref().unwrap_or("raw"), im.container_format.as_deref(), &found)
                .map_err(ImageError::InvalidImageData)?;
            virtual_size = found.virtual_size;
            let disk_container = matches!(im.container_format.as_deref(), None | Some("bare") | Some("ovf"));
            if st.cfg.qemu_img_check && disk_container {
                if let Some(path) = store.partial_path(&key) {
                    if let Some(info) =
                        inspect::qemu_second_opinion(&path, found.format).await.map_err(ImageError::InvalidImageData)?
                    {
                        virtual_size = virtual_size.or(info.virtual_size);
                    }
                }
            }
        }
        store.commit(&key).await.map_err(store_err)?;
        Ok(DataFacts {
            size: total as i64,
            virtual_size: virtual_size.map(|v| v as i64),
            checksum,
            os_hash_value: sha512,
            store: store.id().to_string(),
        })
    }
    .await;
    if result.is_err() {
        store.abort(&key).await;
    }
    result
}

/// Marks `im` killed after a failed upload; the partial data is already gone.
async fn kill(st: &ImageState, id: &str, from: &[&str], err: &ImageError) {
    let reason = err.to_string();
    tracing::warn!(image = %id, reason = %reason, "image upload failed; image killed");
    if let Err(e) = db::transition(&st.platform.db, id, from, "killed", Some(&reason)).await {
        tracing::error!(image = %id, error = %e, "could not mark the image killed");
    }
}

fn require_octet_stream(headers: &HeaderMap) -> Result<()> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream");
    let mime = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/octet-stream" {
        return Err(ImageError::UnsupportedMediaType(format!(
            "Unsupported Content-Type {ctype:?}: image data is application/octet-stream"
        )));
    }
    Ok(())
}

/// Most bytes read and discarded after a refusal, so that a client still sending gets the
/// 413 instead of a connection reset (HTTP/1.1 clients read the response only once they
/// have sent the body). Beyond this the connection is simply closed.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;

/// Reads and discards up to `max` more bytes of `body`.
async fn drain<S, E>(body: &mut S, max: u64)
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    let mut seen = 0u64;
    while seen <= max {
        match body.next().await {
            Some(Ok(c)) => seen += c.len() as u64,
            _ => break,
        }
    }
}

/// Rejects early when the client declares more bytes than the limit allows.
fn check_declared_length(headers: &HeaderMap, limit: &Limit) -> Result<()> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit.max => Err(ImageError::TooLarge(limit.message.clone())),
        _ => Ok(()),
    }
}

/// `PUT /v2/images/{id}/file`: queued → saving → active (or killed).
async fn upload(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>, req: Request) -> Result<StatusCode> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "upload_image", &ctx, &im)?;
    require_octet_stream(req.headers())?;
    if im.disk_format.is_none() || im.container_format.is_none() {
        return Err(ImageError::BadRequest(
            "Properties disk_format, container_format must be set prior to saving data.".into(),
        ));
    }
    if !db::transition(&st.platform.db, &id, &["queued"], "saving", None).await? {
        let now = db::get_any(&st.platform.db, &id).await?.map(|i| i.status).unwrap_or_else(|| "deleted".into());
        return Err(ImageError::Conflict(format!(
            "Image status transition from {now} to saving is not allowed: data can only be uploaded to a queued image"
        )));
    }
    let limit = limit_for(&st, &im).await?;
    if let Err(e) = check_declared_length(req.headers(), &limit) {
        kill(&st, &id, &["saving"], &e).await;
        drain(&mut req.into_body().into_data_stream(), DRAIN_MAX).await;
        return Err(e);
    }
    let body = req.into_body().into_data_stream();
    // A task of its own: if the client goes away the handler is dropped, the clean-up is not.
    let task_st = st.clone();
    let task = tokio::spawn(async move {
        let st = task_st;
        let store = st.stores.default_store().clone();
        match ingest(&st, store, &im, body, limit, Check::Inspect).await {
            Ok(facts) => finish(&st, &im.id, "saving", facts).await,
            Err(e) => {
                kill(&st, &im.id, &["saving"], &e).await;
                Err(e)
            }
        }
    });
    task.await.map_err(|e| ImageError::Store(format!("upload task failed: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Records the data of a finished upload; if the image was deleted meanwhile, removes it.
pub(crate) async fn finish(st: &ImageState, id: &str, from: &str, facts: DataFacts) -> Result<()> {
    if db::activate(&st.platform.db, id, from, &facts).await? {
        tracing::info!(image = %id, size = facts.size, stores = %facts.store, "image data stored; image active");
        Ok(())
    } else {
        remove_data(st, id).await;
        Err(ImageError::Conflict(format!("Image {id} was deleted or changed state during the upload")))
    }
}

/// Removes the data of image `id` from every store (missing data is not an error).
pub(crate) async fn remove_data(st: &ImageState, id: &str) {
    for s in st.stores.all() {
        if let Err(e) = s.delete(id).await {
            tracing::error!(image = %id, store = %s.id(), error = %e, "image data could not be removed");
        }
    }
}

/// The store to read image `im`'s data from: the first of its stores, in configuration order.
pub(crate) fn read_store<'a>(st: &'a ImageState, im: &Image) -> Result<&'a std::sync::Arc<dyn Store>> {
    let listed = im.store.as_deref().unwrap_or_default();
    st.stores
        .ordered(listed)
        .first()
        .and_then(|id| st.stores.get(id))
        .ok_or_else(|| ImageError::Store(format!("image {} has no data in any configured store ({listed:?})", im.id)))
}

/// A parsed `Range: bytes=...` header.
fn parse_range(h: &str, size: u64) -> Result<(u64, u64)> {
    let unsat = || ImageError::RangeNotSatisfiable(format!("Requested range {h:?} not satisfiable for {size} bytes"));
    let spec = h.trim().strip_prefix("bytes=").ok_or_else(unsat)?;
    if spec.contains(',') {
        return Err(unsat());
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsat)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| unsat())?;
            if n == 0 || size == 0 {
                return Err(unsat());
            }
            (size.saturating_sub(n), size - 1)
        }
        (s, "") => (s.parse().map_err(|_| unsat())?, size.saturating_sub(1)),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| unsat())?, e.parse().map_err(|_| unsat())?);
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if start >= size || end < start {
        return Err(unsat());
    }
    Ok((start, end))
}

/// `GET /v2/images/{id}/file`: streamed from the store, whole (with `Content-MD5`) or a range.
async fn download(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>, headers: HeaderMap) -> Result<Response> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "download_image", &ctx, &im)?;
    if im.status == "deactivated" && !ctx.is_admin() {
        return Err(ImageError::Forbidden(
            "The requested image has been deactivated. Image data download is forbidden.".into(),
        ));
    }
    let size = match (im.status.as_str(), im.size) {
        ("active" | "deactivated", Some(n)) => n.max(0) as u64,
        _ => return Ok(StatusCode::NO_CONTENT.into_response()),
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => Some(parse_range(r, size)?),
        None => None,
    };
    let (offset, len) = match range {
        Some((s, e)) => (s, e - s + 1),
        None => (0, size),
    };
    let stream = read_store(&st, &im)?.read(&im.id, offset, len).await.map_err(store_err)?;
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match range {
        Some((s, e)) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{e}/{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            if let Some(c) = im.checksum.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
                resp.headers_mut().insert("content-md5", c);
            }
        }
    }
    Ok(resp)
}

/// `PUT /v2/images/{id}/stage` (glance-direct, step 1): queued → uploading, data in staging.
async fn stage(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>, req: Request) -> Result<StatusCode> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "import_image", &ctx, &im)?;
    require_octet_stream(req.headers())?;
    if !db::transition(&st.platform.db, &id, &["queued"], "uploading", None).await? {
        return Err(ImageError::Conflict(format!(
            "Image status transition from {} to uploading is not allowed",
            im.status
        )));
    }
    let limit = limit_for(&st, &im).await?;
    if let Err(e) = check_declared_length(req.headers(), &limit) {
        kill(&st, &id, &["uploading"], &e).await;
        drain(&mut req.into_body().into_data_stream(), DRAIN_MAX).await;
        return Err(e);
    }
    let body = req.into_body().into_data_stream();
    let task_st = st.clone();
    let task = tokio::spawn(async move {
        let st = task_st;
        let staging = st.staging.clone();
        match ingest(&st, staging, &im, body, limit, Check::None).await {
            Ok(_) => Ok(()),
            Err(e) => {
                kill(&st, &im.id, &["uploading"], &e).await;
                Err(e)
            }
        }
    });
    task.await.map_err(|e| ImageError::Store(format!("staging task failed: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Start-up recovery: uploads a previous run left `saving`/`importing` are killed and
/// every partial object removed (nothing was serving them: this process just started).
pub(crate) async fn recover(st: &ImageState) -> Result<()> {
    for id in db::stale_uploads(&st.platform.db).await? {
        let e = ImageError::Conflict("the upload was interrupted by a restart of the image service".into());
        kill(st, &id, &["saving", "importing"], &e).await;
    }
    let mut n = 0;
    for s in st.stores.all() {
        n += s.remove_partials().await.map_err(store_err)?;
    }
    let m = st.staging.remove_partials().await.map_err(store_err)?;
    if n + m > 0 {
        tracing::warn!(removed = n + m, "removed partial image data left by an interrupted run");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A store whose disk fills up after `room` bytes.
    struct FullAfter {
        inner: crate::store::FsStore,
        room: u64,
    }

    struct FullWriter {
        inner: Box<dyn crate::store::StoreWriter>,
        left: u64,
    }

    impl crate::store::StoreWriter for FullWriter {
        fn write(&mut self, data: &[u8]) -> std::result::Result<(), StoreError> {
            if data.len() as u64 > self.left {
                return Err(std::io::Error::from_raw_os_error(28).into());
            }
            self.left -= data.len() as u64;
            self.inner.write(data)
        }
        fn finish(&mut self) -> std::result::Result<(), StoreError> {
            self.inner.finish()
        }
    }

    #[async_trait::async_trait]
    impl Store for FullAfter {
        fn id(&self) -> &str {
            "file"
        }
        fn create(&self, key: &str) -> std::result::Result<Box<dyn crate::store::StoreWriter>, StoreError> {
            Ok(Box::new(FullWriter { inner: self.inner.create(key)?, left: self.room }))
        }
        async fn commit(&self, key: &str) -> std::result::Result<(), StoreError> {
            self.inner.commit(key).await
        }
        async fn abort(&self, key: &str) {
            self.inner.abort(key).await
        }
        async fn delete(&self, key: &str) -> std::result::Result<(), StoreError> {
            self.inner.delete(key).await
        }
        async fn read(&self, key: &str, o: u64, l: u64) -> std::result::Result<crate::store::ByteStream, StoreError> {
            self.inner.read(key, o, l).await
        }
        fn partial_path(&self, key: &str) -> Option<PathBuf> {
            self.inner.partial_path(key)
        }
        async fn remove_partials(&self) -> std::result::Result<usize, StoreError> {
            self.inner.remove_partials().await
        }
    }

    #[tokio::test]
    async fn disk_full_mid_upload_is_413_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = stratus_db::Db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
        let platform = stratus_core::Platform {
            db,
            bus: Arc::new(stratus_bus::InProcBus::new()),
            public_url: "http://x".into(),
            data_dir: dir.path().to_path_buf(),
            host: "t".into(),
            internal: Default::default(),
            region: "RegionOne".into(),
        };
        let fs = crate::store::FsStore::new(dir.path().join("images")).unwrap();
        let store: Arc<dyn Store> = Arc::new(FullAfter { inner: fs.clone(), room: 3 << 20 });
        let st = ImageState {
            platform,
            policy: stratus_auth::Policy::load("image", crate::policy::DEFAULTS, None).unwrap(),
            cfg: crate::ImageConfig::default(),
            storage_quota: 0,
            stores: crate::store::Stores::new(vec![store.clone()]),
            staging: Arc::new(fs.clone()),
        };
        let im = Image {
            id: "0b5c2f7e-1111-4222-8333-444455556666".into(),
            disk_format: Some("raw".into()),
            container_format: Some("bare".into()),
            ..Default::default()
        };
        let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1 << 20])));
        let limit = Limit { max: u64::MAX, message: String::new() };
        let err = ingest(&st, store, &im, futures::stream::iter(chunks), limit, Check::Inspect).await.unwrap_err();
        assert!(matches!(err, ImageError::StorageFull(_)), "{err:?}");
        assert_eq!(stratus_core::ApiError::from(err).status.as_u16(), 413);
        assert_eq!(std::fs::read_dir(fs.root()).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count(), 0);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 9));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), (90, 99));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), (50, 99));
        for bad in ["bytes=100-", "bytes=5-2", "items=0-1", "bytes=0-1,3-4", "bytes=-0", "bytes=x-"] {
            assert!(parse_range(bad, 100).is_err(), "{bad}");
        }
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
