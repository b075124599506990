//! Image import (`POST /v2/images/{id}/import`, 202) and what it shares with the legacy
//! `import` task: glance-direct (from staging), web-download (from an allow-listed
//! URL), glance-download (from the image service of a region in the catalog) and
//! copy-image (an active image's data into more stores); plus removing an image's data
//! from one store (`DELETE /v2/stores/{store}/{image}`).
//!
//! Every import is a task ([`crate::tasks`]) and holds the image's import lock (the
//! `os_glance_import_task` property) while it runs, so two imports of one image never
//! interleave. Its progress is visible on the image as Glance shows it:
//! `os_glance_importing_to_stores` lists the stores still to do, `os_glance_failed_import`
//! those that failed. The data goes through the staging area, then into each target
//! store in turn through [`crate::data::ingest`], which inspects it on the way into the
//! first store (copies of inspected data are not inspected again). A failed import
//! removes what it wrote and puts the image back to `queued` (copy-image leaves the
//! image as it was), undoing the metadata glance-download had copied.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{Method, Request, StatusCode};
use axum::routing::{delete, post};
use axum::Router;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::internal::InternalUri;
use stratus_core::{OsJson, RequestContext, RequestId};

use crate::data::{ingest, limit_for, read_store, store_err, Check};
use crate::error::{ImageError, Result};
use crate::images::db::{self, DataFacts, Image};
use crate::images::enforce;
use crate::tasks::{self, Task};
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/images/{id}/import", post(import))
        .route("/v2/stores/{store}/{id}", delete(delete_from_store))
}

const IMPORTING: &str = "os_glance_importing_to_stores";
const FAILED: &str = "os_glance_failed_import";

/// Where the data of an import comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// The staging area (`PUT /stage`).
    GlanceDirect,
    /// An allow-listed URL.
    WebDownload { uri: String },
    /// Another image service's image.
    GlanceDownload { region: String, image_id: String, interface: String },
    /// The image's own data, into more stores.
    CopyImage,
}

/// A validated import request.
#[derive(Debug, Clone)]
struct ImportRequest {
    source: Source,
    /// Target stores, in the order they are written.
    stores: Vec<String>,
    all_stores_must_succeed: bool,
}

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::BadRequest(msg.into())
}

/// Whether `uri` may be fetched by web-download: http(s) and under an allow-listed prefix.
fn uri_allowed(st: &St, uri: &str) -> bool {
    (uri.starts_with("http://") || uri.starts_with("https://"))
        && st.cfg.web_download_allowed_urls.iter().any(|p| uri.starts_with(p.as_str()))
}

fn method_of(st: &St, body: &Value) -> Result<Source> {
    let method = body.get("method").ok_or_else(|| bad("Import request requires a 'method' field."))?;
    let name = method
        .get("name")
        .ok_or_else(|| bad("Import request requires a 'name' field."))?
        .as_str()
        .ok_or_else(|| bad("The import method 'name' must be a string."))?;
    if !crate::info::import_methods(st).iter().any(|m| m == name) {
        return Err(bad(format!("Unknown import method name '{name}'.")));
    }
    let text = |k: &str| method.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(match name {
        "glance-direct" => Source::GlanceDirect,
        "copy-image" => Source::CopyImage,
        "web-download" => {
            let uri = text("uri").ok_or_else(|| bad("The web-download method needs a 'uri' string."))?;
            if !uri_allowed(st, &uri) {
                return Err(bad(format!("URI for web-download does not pass filtering: {uri}")));
            }
            Source::WebDownload { uri }
        }
        _ => {
            let region = text("glance_region")
                .ok_or_else(|| bad("'glance_region' needs to be set for glance-download import method"))?;
            let image_id = text("glance_image_id")
                .ok_or_else(|| bad("'glance_image_id' needs to be set for glance-download import method"))?;
            if uuid::Uuid::parse_str(&image_id).is_err() {
                return Err(bad(format!("Remote image id does not look like a UUID: {image_id}")));
            }
            let interface = text("glance_service_interface").unwrap_or_else(|| "public".into());
            Source::GlanceDownload { region, image_id, interface }
        }
    })
}

fn flag(body: &Value, key: &str, default: bool) -> Result<bool> {
    match body.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("'{key}' must be boolean value only"))),
    }
}

/// The target stores: `all_stores`, or `stores`, or the default store.
fn stores_of(st: &St, body: &Value, all: bool) -> Result<Vec<String>> {
    if all {
        if body.get("stores").is_some() {
            return Err(bad("All_stores parameter can't be used with x-image-meta-store header or stores parameter"));
        }
        return Ok(st.stores.ids());
    }
    let Some(list) = body.get("stores") else {
        return Ok(vec![st.stores.default_store().id().to_string()]);
    };
    let list = list.as_array().ok_or_else(|| bad("'stores' must be a list of store ids"))?;
    let mut out: Vec<String> = Vec::new();
    for s in list {
        let id = s.as_str().ok_or_else(|| bad("'stores' must be a list of store ids"))?;
        if st.stores.get(id).is_none() {
            return Err(ImageError::Conflict(format!("Store for identifier {id} not found")));
        }
        if !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    }
    if out.is_empty() {
        return Err(bad("'stores' must name at least one store"));
    }
    Ok(out)
}

fn request_id(rid: Option<Extension<RequestId>>) -> String {
    rid.map(|Extension(r)| r.0).unwrap_or_else(|| RequestId::generate().0)
}

/// `POST /v2/images/{id}/import`.
async fn import(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    rid: Option<Extension<RequestId>>,
    Path(id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<StatusCode> {
    if !body.is_object() {
        return Err(bad("The import request must be a JSON object."));
    }
    let source = method_of(&st, &body)?;
    let all_stores_must_succeed = flag(&body, "all_stores_must_succeed", true)?;
    let all_stores = flag(&body, "all_stores", false)?;
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    let status = im.status.as_str();
    let conflict = |m: &str| Err(ImageError::Conflict(m.to_string()));
    match &source {
        Source::CopyImage if status != "active" => {
            return conflict("Only images with status active can be targeted for copying")
        }
        Source::CopyImage => {}
        _ if status == "active" => return conflict("Image with status active cannot be target for import"),
        Source::WebDownload { .. } | Source::GlanceDownload { .. } if status != "queued" => {
            return conflict("Image needs to be in 'queued' state to use this import method")
        }
        Source::GlanceDirect if status != "uploading" => {
            return conflict("Image needs to be staged before 'glance-direct' method can be used")
        }
        _ => {}
    }
    if im.container_format.is_none() && source != Source::CopyImage {
        // glance-download takes the formats from the source image.
        if !matches!(source, Source::GlanceDownload { .. }) {
            return conflict("'container_format' needs to be set before import");
        }
    }
    if im.disk_format.is_none() && !matches!(source, Source::GlanceDownload { .. } | Source::CopyImage) {
        return conflict("'disk_format' needs to be set before import");
    }
    // Copying data is the operator's business; anything else is the owner's.
    if source == Source::CopyImage {
        enforce(&st, "copy_image", &ctx, &im)?;
    } else {
        enforce(&st, "modify_image", &ctx, &im)?;
        enforce(&st, "import_image", &ctx, &im)?;
    }
    let mut stores = stores_of(&st, &body, all_stores)?;
    if source == Source::CopyImage {
        let have = st.stores.ordered(im.store.as_deref().unwrap_or_default());
        if all_stores {
            stores.retain(|s| !have.contains(s));
            if stores.is_empty() {
                // Already everywhere: nothing to do, as Glance.
                return Ok(StatusCode::ACCEPTED);
            }
        } else if let Some(s) = stores.iter().find(|s| have.contains(s)) {
            return Err(bad(format!("Image is already present at store '{s}'")));
        }
    }
    let req = ImportRequest { source, stores, all_stores_must_succeed };
    let task = Task::new(
        "api_image_import",
        &ctx,
        Some(&im.id),
        &request_id(rid),
        json!({
            "image_id": im.id,
            "import_req": body,
            "backend": req.stores,
        }),
    );
    tasks::insert(&st.platform.db, &task).await?;
    if !db::take_import_lock(&st.platform.db, &im.id, &task.id).await? {
        let msg = format!("New operation on image '{id}' is not permitted as prior operation is still in progress");
        tasks::set_status(&st.platform.db, &task.id, "failure", &msg, None).await?;
        return Err(ImageError::Conflict(msg));
    }
    if req.source != Source::CopyImage {
        let from: &[&str] = if req.source == Source::GlanceDirect { &["uploading"] } else { &["queued"] };
        if !db::transition(&st.platform.db, &im.id, from, "importing", None).await? {
            db::release_import_lock(&st.platform.db, &im.id, &task.id).await?;
            let msg = format!("Image {id} changed status during the request; retry");
            tasks::set_status(&st.platform.db, &task.id, "failure", &msg, None).await?;
            return Err(ImageError::Conflict(msg));
        }
    }
    let failed_before = im.properties.get(FAILED).cloned().unwrap_or_default();
    let failed: Vec<&str> =
        failed_before.split(',').filter(|s| !s.is_empty() && !req.stores.iter().any(|t| t == s)).collect();
    db::set_properties(
        &st.platform.db,
        &im.id,
        &[(IMPORTING, Some(req.stores.join(","))), (FAILED, Some(failed.join(",")))],
    )
    .await?;
    tracing::info!(image = %im.id, task = %task.id, source = ?req.source, stores = ?req.stores, "image import started");
    tokio::spawn(run(st.clone(), ctx, task.id, im, req));
    Ok(StatusCode::ACCEPTED)
}

/// What glance-download changed on the image before fetching data, to undo on failure.
#[derive(Debug, Default)]
struct MetadataUndo {
    formats: Option<(Option<String>, Option<String>)>,
    properties: Vec<(String, Option<String>)>,
}

/// Runs an import to its end and records the outcome on the task and the image.
async fn run(st: St, ctx: RequestContext, task_id: String, im: Image, req: ImportRequest) {
    let db = &st.platform.db;
    if let Err(e) = tasks::set_status(db, &task_id, "processing", "", None).await {
        tracing::error!(task = %task_id, error = %e, "could not mark the import task processing");
    }
    let mut undo = MetadataUndo::default();
    let result = execute(&st, &ctx, &im, &req, &mut undo).await;
    if req.source != Source::CopyImage {
        let _ = st.staging.delete(&im.id).await;
    }
    let outcome = match result {
        Ok(()) => tasks::set_status(db, &task_id, "success", "", Some(json!({"image_id": im.id}))).await,
        Err(e) => {
            tracing::warn!(image = %im.id, task = %task_id, error = %e, "image import failed");
            if req.source != Source::CopyImage {
                revert(&st, &im, undo).await;
            }
            tasks::set_status(db, &task_id, "failure", &e.to_string(), None).await
        }
    };
    if let Err(e) = outcome {
        tracing::error!(task = %task_id, error = %e, "could not record the outcome of the import task");
    }
    if let Err(e) = db::release_import_lock(db, &im.id, &task_id).await {
        tracing::error!(image = %im.id, error = %e, "could not release the import lock");
    }
}

/// Puts a failed import's image back to `queued` with its metadata as before.
async fn revert(st: &St, im: &Image, undo: MetadataUndo) {
    let db = &st.platform.db;
    if let Some((disk, container)) = undo.formats {
        let _ = db::set_formats(db, &im.id, disk.as_deref(), container.as_deref()).await;
    }
    if !undo.properties.is_empty() {
        let props: Vec<(&str, Option<String>)> = undo.properties.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let _ = db::set_properties(db, &im.id, &props).await;
    }
    if let Err(e) = db::transition(db, &im.id, &["importing"], "queued", None).await {
        tracing::error!(image = %im.id, error = %e, "could not put the image back to queued");
    }
}

/// Moves store `store` from the importing list to done (or to the failed list).
async fn progress(st: &St, id: &str, store: &str, ok: bool) -> Result<()> {
    let Some(now) = db::get_any(&st.platform.db, id).await? else {
        return Err(ImageError::Conflict(format!("Image {id} was deleted during the import")));
    };
    let importing: Vec<&str> = now
        .properties
        .get(IMPORTING)
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty() && *s != store)
        .collect();
    let mut props = vec![(IMPORTING, Some(importing.join(",")))];
    if !ok {
        let mut failed: Vec<&str> =
            now.properties.get(FAILED).map(String::as_str).unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
        if !failed.contains(&store) {
            failed.push(store);
        }
        props.push((FAILED, Some(failed.join(","))));
    }
    db::set_properties(&st.platform.db, id, &props).await
}

type DataStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Does the work of an import: fills staging (downloads), then writes every target store.
async fn execute(
    st: &St,
    ctx: &RequestContext,
    im: &Image,
    req: &ImportRequest,
    undo: &mut MetadataUndo,
) -> Result<()> {
    let mut im = im.clone();
    // 1. The data into staging (downloads), or found where it is.
    match &req.source {
        Source::WebDownload { uri } => {
            let body = fetch_url(uri, None).await?;
            fill_staging(st, &im, body).await?;
        }
        Source::GlanceDownload { region, image_id, interface } => {
            let remote = RemoteImage::find(st, region, interface).await?;
            let meta = remote.metadata(st, ctx, image_id).await?;
            apply_remote_metadata(st, &mut im, &meta, undo).await?;
            let expected = meta["size"].as_u64();
            let body = remote.data(st, ctx, image_id).await?;
            let written = fill_staging(st, &im, body).await?;
            if expected.is_some_and(|n| n != written) {
                return Err(ImageError::BadRequest(format!(
                    "downloaded data size {written} is different from expected {}",
                    expected.unwrap_or_default()
                )));
            }
        }
        Source::GlanceDirect | Source::CopyImage => {}
    }
    // 2. Into each target store.
    let source_store = match req.source {
        Source::CopyImage => read_store(st, &im)?.clone(),
        _ => st.staging.clone(),
    };
    let mut written: Vec<String> = Vec::new();
    let mut facts: Option<DataFacts> = None;
    for store_id in &req.stores {
        let store =
            st.stores.get(store_id).ok_or_else(|| ImageError::Conflict(format!("Store {store_id} not found")))?;
        let data = source_store.read(&im.id, 0, u64::MAX).await.map_err(store_err)?;
        let limit = limit_for(st, &im).await?;
        // Inspected once, on the way in; copies of inspected data are the same bytes.
        let check = if facts.is_none() && req.source != Source::CopyImage { Check::Inspect } else { Check::None };
        match ingest(st, store.clone(), &im, data, limit, check).await {
            Ok(f) => {
                written.push(store_id.clone());
                facts.get_or_insert(f);
                progress(st, &im.id, store_id, true).await?;
            }
            // Data that is not what it claims is refused everywhere.
            Err(e @ ImageError::InvalidImageData(_)) => {
                let _ = progress(st, &im.id, store_id, false).await;
                remove_from(st, &im.id, &written).await;
                return Err(e);
            }
            Err(e) => {
                let _ = progress(st, &im.id, store_id, false).await;
                if req.all_stores_must_succeed {
                    remove_from(st, &im.id, &written).await;
                    return Err(e);
                }
                tracing::warn!(image = %im.id, store = %store_id, error = %e, "import into one store failed; continuing");
            }
        }
    }
    // 3. The image records where its data is.
    if req.source == Source::CopyImage {
        let now = db::get_any(&st.platform.db, &im.id).await?.ok_or_else(|| crate::error::image_not_found(&im.id))?;
        let mut all = st.stores.ordered(now.store.as_deref().unwrap_or_default());
        all.extend(written.iter().cloned());
        db::set_stores(&st.platform.db, &im.id, &sorted_list(all.into_iter())).await?;
        return Ok(());
    }
    let Some(mut facts) = facts else {
        return Err(ImageError::Conflict("None of the uploads finished!".into()));
    };
    facts.store = sorted_list(written.iter().cloned());
    if !db::activate(&st.platform.db, &im.id, "importing", &facts).await? {
        remove_from(st, &im.id, &written).await;
        return Err(ImageError::Conflict(format!("Image {} was deleted or changed state during the import", im.id)));
    }
    tracing::info!(image = %im.id, stores = %facts.store, size = facts.size, "image imported; image active");
    Ok(())
}

/// An image's `stores` as shown: sorted by id, no duplicates (what clients compare
/// against, e.g. Tempest's wait for an import into several stores).
fn sorted_list(ids: impl Iterator<Item = String>) -> String {
    let set: std::collections::BTreeSet<String> = ids.collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

async fn remove_from(st: &St, id: &str, stores: &[String]) {
    for s in stores {
        if let Some(store) = st.stores.get(s) {
            let _ = store.delete(id).await;
        }
    }
}

/// Streams `body` into the staging area; returns the bytes written.
async fn fill_staging(st: &St, im: &Image, body: DataStream) -> Result<u64> {
    let limit = limit_for(st, im).await?;
    let facts = ingest(st, st.staging.clone(), im, body, limit, Check::None).await?;
    Ok(facts.size.max(0) as u64)
}

/// GETs `uri` (no redirects: an allow-listed URL must not lead elsewhere), optionally
/// with a token, as a stream.
async fn fetch_url(uri: &str, token: Option<&str>) -> Result<DataStream> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| bad(format!("cannot fetch {uri}: {e}")))?;
    let mut req = client.get(uri);
    if let Some(t) = token {
        req = req.header("X-Auth-Token", t);
    }
    let resp =
        req.send().await.and_then(|r| r.error_for_status()).map_err(|e| bad(format!("Fetching {uri} failed: {e}")))?;
    Ok(resp.bytes_stream().map(|r| r.map_err(std::io::Error::other)).boxed())
}

/// The image service glance-download reads from: this cloud's own (called in-process,
/// as the importing user) or another one (over HTTP with the user's token).
enum RemoteImage {
    Local,
    Remote(String),
}

impl RemoteImage {
    /// Finds the `image` endpoint of `region` with `interface` in the catalog.
    async fn find(st: &St, region: &str, interface: &str) -> Result<RemoteImage> {
        let admin = RequestContext::internal_admin();
        let internal = &st.platform.internal;
        let services = InternalUri::new("/identity/v3/services").query("type", "image");
        let r = internal.call(&admin, Method::GET, services.check()?, None, &[]).await?;
        let ids: Vec<String> = r.body["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
        let endpoints =
            InternalUri::new("/identity/v3/endpoints").query("interface", interface).query("region_id", region);
        let r = internal.call(&admin, Method::GET, endpoints.check()?, None, &[]).await?;
        let url = r.body["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["service_id"].as_str().is_some_and(|s| ids.iter().any(|i| i == s)))
            .and_then(|e| e["url"].as_str())
            .map(|u| u.trim_end_matches('/').to_string())
            .ok_or_else(|| {
                ImageError::NotFound(format!(
                    "No image service endpoint in region {region:?} for interface {interface:?}"
                ))
            })?;
        if url == st.platform.service_url("/image").trim_end_matches('/') {
            Ok(RemoteImage::Local)
        } else {
            Ok(RemoteImage::Remote(url))
        }
    }

    async fn metadata(&self, st: &St, ctx: &RequestContext, image_id: &str) -> Result<Value> {
        let meta = match self {
            RemoteImage::Local => {
                let uri = InternalUri::new("/image/v2/images").seg(image_id);
                let r = st.platform.internal.call(ctx, Method::GET, uri.check()?, None, &[]).await?;
                if !r.status.is_success() {
                    return Err(ImageError::NotFound(format!(
                        "Source image {image_id}: the image service answered {}",
                        r.status
                    )));
                }
                r.body
            }
            RemoteImage::Remote(base) => {
                let mut body = fetch_url(&format!("{base}/v2/images/{image_id}"), Some(&ctx.token)).await?;
                let mut bytes = Vec::new();
                while let Some(chunk) = body.next().await {
                    bytes.extend_from_slice(&chunk.map_err(|e| bad(format!("reading the source image: {e}")))?);
                    if bytes.len() > 1 << 20 {
                        return Err(bad("The source image's metadata is larger than 1 MiB"));
                    }
                }
                serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("The source image's metadata is not JSON: {e}")))?
            }
        };
        if meta["status"] != "active" {
            return Err(ImageError::Conflict(format!(
                "Source image status should be active instead of {}",
                meta["status"].as_str().unwrap_or("unknown")
            )));
        }
        Ok(meta)
    }

    async fn data(&self, st: &St, ctx: &RequestContext, image_id: &str) -> Result<DataStream> {
        match self {
            RemoteImage::Local => {
                let uri = InternalUri::new("/image/v2/images").seg(image_id).seg("file");
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(uri.check()?)
                    .body(Body::empty())
                    .map_err(|e| bad(format!("bad request for the source image: {e}")))?;
                let resp = st.platform.internal.call_streaming(ctx, req).await?;
                if !resp.status().is_success() {
                    return Err(ImageError::NotFound(format!(
                        "Source image {image_id} data: the image service answered {}",
                        resp.status()
                    )));
                }
                Ok(resp.into_body().into_data_stream().map(|r| r.map_err(std::io::Error::other)).boxed())
            }
            RemoteImage::Remote(base) => {
                fetch_url(&format!("{base}/v2/images/{image_id}/file"), Some(&ctx.token)).await
            }
        }
    }
}

/// Takes the formats and the configured properties of the source image (glance-download).
async fn apply_remote_metadata(st: &St, im: &mut Image, meta: &Value, undo: &mut MetadataUndo) -> Result<()> {
    let disk = meta["disk_format"].as_str().map(str::to_string);
    let container = meta["container_format"].as_str().map(str::to_string);
    for (v, allowed, what) in [
        (&disk, crate::images::patch::DISK_FORMATS, "disk_format"),
        (&container, crate::images::patch::CONTAINER_FORMATS, "container_format"),
    ] {
        if v.as_deref().is_some_and(|f| !allowed.contains(&f)) {
            return Err(bad(format!("The source image's {what} {v:?} is not accepted here")));
        }
    }
    undo.formats = Some((im.disk_format.clone(), im.container_format.clone()));
    db::set_formats(&st.platform.db, &im.id, disk.as_deref(), container.as_deref()).await?;
    im.disk_format = disk;
    im.container_format = container;
    let mut props: Vec<(String, Option<String>)> = Vec::new();
    if let Some(obj) = meta.as_object() {
        for (k, v) in obj {
            let wanted = st.cfg.glance_download_properties.iter().any(|p| k.starts_with(p.as_str()));
            if let (true, Some(s)) = (wanted, v.as_str()) {
                if !k.starts_with(crate::images::patch::RESERVED_PREFIX) {
                    props.push((k.clone(), Some(s.to_string())));
                }
            }
        }
    }
    if !props.is_empty() {
        undo.properties = props.iter().map(|(k, _)| (k.clone(), im.properties.get(k).cloned())).collect();
        let set: Vec<(&str, Option<String>)> = props.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        db::set_properties(&st.platform.db, &im.id, &set).await?;
    }
    Ok(())
}

/// A legacy `import` task's request: create an image, fetch its data from a URL.
#[derive(Debug, Clone)]
pub struct LegacyImport {
    uri: String,
    properties: Map<String, Value>,
}

impl LegacyImport {
    /// Validates a task's `input` (`import_from`, `import_from_format`, `image_properties`).
    pub fn parse(st: &St, input: &Value) -> Result<LegacyImport> {
        let obj = input.as_object().ok_or_else(|| bad("Task input must be an object"))?;
        for key in ["import_from", "import_from_format", "image_properties"] {
            if !obj.contains_key(key) {
                return Err(bad(format!("Input does not contain '{key}' field")));
            }
        }
        let uri = obj["import_from"].as_str().ok_or_else(|| bad("'import_from' must be a URI"))?.to_string();
        if !uri_allowed(st, &uri) {
            return Err(bad(format!("URI for import does not pass filtering: {uri}")));
        }
        let properties =
            obj["image_properties"].as_object().cloned().ok_or_else(|| bad("'image_properties' must be an object"))?;
        Ok(LegacyImport { uri, properties })
    }
}

/// Runs a legacy import task in the background: the image is created as the caller,
/// then filled like web-download; on failure the image is removed again.
pub fn spawn_legacy(st: St, ctx: RequestContext, task_id: String, req: LegacyImport) {
    tokio::spawn(async move {
        let db = &st.platform.db;
        let _ = tasks::set_status(db, &task_id, "processing", "", None).await;
        let mut created: Option<String> = None;
        let result = async {
            let im = crate::images::new_image(&st, &ctx, &req.properties).await?;
            created = Some(im.id.clone());
            if !db::transition(db, &im.id, &["queued"], "importing", None).await? {
                return Err(ImageError::Conflict(format!("Image {} changed state", im.id)));
            }
            let body = fetch_url(&req.uri, None).await?;
            let limit = limit_for(&st, &im).await?;
            let facts = ingest(&st, st.stores.default_store().clone(), &im, body, limit, Check::Inspect).await?;
            if !db::activate(db, &im.id, "importing", &facts).await? {
                crate::data::remove_data(&st, &im.id).await;
                return Err(ImageError::Conflict(format!("Image {} was deleted during the import", im.id)));
            }
            Ok(im.id)
        }
        .await;
        let recorded = match result {
            Ok(id) => tasks::set_status(db, &task_id, "success", "", Some(json!({"image_id": id}))).await,
            Err(e) => {
                if let Some(id) = created {
                    let _ = db::delete(db, &id).await;
                    crate::data::remove_data(&st, &id).await;
                }
                tasks::set_status(db, &task_id, "failure", &e.to_string(), None).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(task = %task_id, error = %e, "could not record the outcome of the import task");
        }
    });
}

/// Start-up recovery: imports a previous run left in flight failed with it; their
/// tasks say so and their locks are released.
pub(crate) async fn recover(st: &St) -> Result<()> {
    let rows = stratus_db::Query::new("SELECT id, image_id FROM image_tasks WHERE status IN ('pending', 'processing')")
        .fetch_all(st.platform.db.reader())
        .await?;
    for r in rows {
        use stratus_db::sqlx::Row;
        let id: String = r.try_get(0).map_err(stratus_db::DbError::from)?;
        let image: Option<String> = r.try_get(1).map_err(stratus_db::DbError::from)?;
        tasks::set_status(&st.platform.db, &id, "failure", "The image service restarted during the task", None).await?;
        if let Some(image) = image {
            db::release_import_lock(&st.platform.db, &image, &id).await?;
            db::set_properties(&st.platform.db, &image, &[(IMPORTING, Some(String::new()))]).await?;
        }
    }
    Ok(())
}

/// `DELETE /v2/stores/{store}/{id}` (admin): removes an active image's data from one
/// store; never from the last one (delete the image instead).
async fn delete_from_store(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((store, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let Some(target) = st.stores.get(&store).cloned() else {
        return Err(ImageError::Conflict(format!("The selected store {store} is not available on this node.")));
    };
    let im = db::get_visible(&st.platform.db, &ctx, &id)
        .await
        .map_err(|_| ImageError::NotFound(format!("Failed to find image {id}")))?;
    enforce(&st, "get_image_location", &ctx, &im)?;
    enforce(&st, "delete_image_location", &ctx, &im)?;
    if im.status != "active" {
        return Err(ImageError::Conflict(
            "It's not allowed to remove image data from store if image status is not 'active'".into(),
        ));
    }
    let have = st.stores.ordered(im.store.as_deref().unwrap_or_default());
    if !have.contains(&store) {
        return Err(ImageError::NotFound(format!("Image {id} is not stored in store {store}.")));
    }
    if have.len() == 1 {
        return Err(ImageError::Forbidden(
            "Cannot delete image data from the only store containing it. Consider deleting the image instead.".into(),
        ));
    }
    db::set_stores(&st.platform.db, &id, &sorted_list(have.into_iter().filter(|s| *s != store))).await?;
    target.delete(&id).await.map_err(store_err)?;
    tracing::info!(image = %id, store = %store, "image data removed from one store");
    Ok(StatusCode::NO_CONTENT)
}
