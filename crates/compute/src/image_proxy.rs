//! `images` and image `metadata`: Nova's proxies to the image service. The images API is
//! served at microversions 2.1–2.35 and image metadata at 2.1–2.38 (404 after, as Nova).
//!
//! Requests go to the image API *as the caller* (visibility and ownership are the image
//! service's rules); images come back in Nova's shape: `status` ACTIVE/SAVING/DELETED/
//! ERROR with a `progress`, `minRam`/`minDisk`, the image's own properties as `metadata`,
//! the `server` a snapshot was taken from. Nova's list filters (`name`, `status`,
//! `changes-since`, `server`, `type`, `minRam`, `minDisk`) and `limit`/`marker` paging
//! are applied here over the caller's visible images.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::internal::InternalUri;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs, RequestContext};

use crate::error::{ComputeError, Result};
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/images", get(list))
        .route("/v2.1/images/detail", get(list_detail))
        .route("/v2.1/images/{id}", get(show).delete(remove))
        .route("/v2.1/images/{id}/metadata", get(meta_list).post(meta_merge).put(meta_replace))
        .route("/v2.1/images/{id}/metadata/{key}", get(meta_show).put(meta_put).delete(meta_delete))
}

/// Glance's own attributes: everything else on an image is a property (Nova's metadata).
const CORE: &[&str] = &[
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "checksum",
    "owner",
    "size",
    "virtual_size",
    "container_format",
    "disk_format",
    "created_at",
    "updated_at",
    "tags",
    "direct_url",
    "min_ram",
    "min_disk",
    "file",
    "schema",
    "self",
    "locations",
    "os_hash_algo",
    "os_hash_value",
    "os_hidden",
    "stores",
];

/// Nova's image metadata quota (`maxImageMeta`).
const MAX_IMAGE_META: usize = 128;

const PATCH_TYPE: (&str, &str) = ("content-type", "application/openstack-images-v2.1-json-patch");

fn check_images_version(v: ApiVersion) -> Result<()> {
    if v.at_least(2, 36) {
        return Err(ComputeError::NotFound(
            "The images proxy API was removed at microversion 2.36: use the image service's API, \
             or a compute microversion of at most 2.35"
                .into(),
        ));
    }
    Ok(())
}

fn check_metadata_version(v: ApiVersion) -> Result<()> {
    if v.at_least(2, 39) {
        return Err(ComputeError::NotFound(
            "The image metadata proxy API was removed at microversion 2.39: use the image service's API, \
             or a compute microversion of at most 2.38"
                .into(),
        ));
    }
    Ok(())
}

/// An image API call as the caller: the body of a 2xx answer, else the refusal mapped to
/// Nova's statuses.
async fn glance(
    st: &AppState,
    ctx: &RequestContext,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
    what: &str,
) -> Result<Value> {
    let (status, answer) = st
        .backends
        .images
        .request(ctx, method, uri, body.as_ref(), headers)
        .await
        .map_err(|e| ComputeError::Unavailable(e.0))?;
    if status.is_success() {
        return Ok(answer);
    }
    let msg = answer["message"].as_str().map(str::to_string).unwrap_or_else(|| answer.to_string());
    Err(match status {
        StatusCode::NOT_FOUND => ComputeError::NotFound(format!("Image {what} could not be found.")),
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::PAYLOAD_TOO_LARGE => ComputeError::BadRequest(msg),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ComputeError::Forbidden(msg),
        s => ComputeError::Unavailable(format!("the image service answered {s}: {msg}")),
    })
}

fn image_uri(id: &str) -> String {
    InternalUri::new("/image/v2/images").seg(id).as_str().to_string()
}

async fn get_image(st: &AppState, ctx: &RequestContext, id: &str) -> Result<Value> {
    glance(st, ctx, Method::GET, &image_uri(id), None, &[], id).await
}

/// The image's properties (Nova's metadata).
fn metadata(im: &Value) -> Map<String, Value> {
    im.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !CORE.contains(&k.as_str()) && !k.starts_with("os_glance"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn links(base: &str, st: &AppState, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/v2.1/images/{id}")},
        {"rel": "bookmark", "href": format!("{base}/images/{id}")},
        {"rel": "alternate", "type": "application/vnd.openstack.image",
         "href": format!("{}/images/{id}", st.platform.service_url("/image"))},
    ])
}

/// Nova's image view: the short form for lists, the full one otherwise.
fn view(st: &AppState, im: &Value, detail: bool) -> Value {
    let base = st.platform.service_url("/compute");
    let id = im["id"].as_str().unwrap_or_default();
    if !detail {
        return json!({"id": id, "name": im["name"], "links": links(&base, st, id)});
    }
    let glance_status = im["status"].as_str().unwrap_or_default();
    let status = match glance_status {
        "active" => "ACTIVE",
        "queued" | "saving" | "uploading" | "importing" => "SAVING",
        "deleted" | "pending_delete" => "DELETED",
        "killed" => "ERROR",
        _ => "UNKNOWN",
    };
    let progress = match glance_status {
        "queued" => 25,
        "saving" | "uploading" | "importing" => 50,
        "active" => 100,
        _ => 0,
    };
    let meta = metadata(im);
    let mut o = json!({
        "id": id,
        "name": im["name"],
        "status": status,
        "progress": progress,
        "minRam": im["min_ram"].as_i64().unwrap_or(0),
        "minDisk": im["min_disk"].as_i64().unwrap_or(0),
        "created": im["created_at"],
        "updated": im["updated_at"],
        "OS-EXT-IMG-SIZE:size": im["size"],
        "links": links(&base, st, id),
    });
    if let Some(server) = meta.get("instance_uuid").and_then(Value::as_str) {
        o["server"] = json!({"id": server, "links": [
            {"rel": "self", "href": format!("{base}/v2.1/servers/{server}")},
            {"rel": "bookmark", "href": format!("{base}/servers/{server}")},
        ]});
    }
    if let Some(auto) = meta.get("auto_disk_config") {
        let on = auto.as_bool().unwrap_or_else(|| auto.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true")));
        o["OS-DCF:diskConfig"] = json!(if on { "AUTO" } else { "MANUAL" });
    }
    o["metadata"] = Value::Object(meta);
    o
}

/// Every image the caller can see (the image service pages them).
async fn all_images(st: &AppState, ctx: &RequestContext) -> Result<Vec<Value>> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let mut uri = InternalUri::new("/image/v2/images").query("limit", "1000");
        if let Some(last) = out.last().and_then(|i| i["id"].as_str()) {
            uri = uri.query("marker", last);
        }
        let page = glance(st, ctx, Method::GET, uri.as_str(), None, &[], "list").await?;
        let images = page["images"].as_array().cloned().unwrap_or_default();
        let more = page.get("next").is_some() && !images.is_empty();
        out.extend(images);
        if !more {
            return Ok(out);
        }
    }
}

/// Nova's list filters and paging over `images`.
fn filter_page(images: Vec<Value>, q: &QueryPairs) -> Result<Vec<Value>> {
    let int = |k: &str| -> Result<Option<i64>> {
        q.get(k)
            .map(|n| {
                n.parse::<i64>().map_err(|_| ComputeError::BadRequest(format!("{k} must be an integer, not {n:?}")))
            })
            .transpose()
    };
    let (min_ram, min_disk) = (int("minRam")?, int("minDisk")?);
    let since = match q.get("changes-since") {
        Some(s) => Some(stratus_core::time::parse(s).ok_or_else(|| {
            ComputeError::BadRequest(format!("Invalid changes-since value {s:?}: use an ISO 8601 time"))
        })?),
        None => None,
    };
    // `server` may be the server's id or its URL.
    let server = q.get("server").map(|s| s.rsplit('/').next().unwrap_or(s).to_string());
    let status = q.get("status").map(str::to_ascii_lowercase);
    let keep = |im: &Value| {
        q.get("name").is_none_or(|n| im["name"] == n)
            && status.as_deref().is_none_or(|s| im["status"] == s)
            && server.as_deref().is_none_or(|s| im["instance_uuid"] == s)
            && q.get("type").is_none_or(|t| im["image_type"] == t)
            && min_ram.is_none_or(|m| im["min_ram"].as_i64().unwrap_or(0) >= m)
            && min_disk.is_none_or(|m| im["min_disk"].as_i64().unwrap_or(0) >= m)
            && since
                .is_none_or(|t| im["updated_at"].as_str().and_then(stratus_core::time::parse).is_some_and(|u| u >= t))
    };
    let mut list: Vec<Value> = images.into_iter().filter(keep).collect();
    if let Some(m) = q.get("marker") {
        let at = list
            .iter()
            .position(|i| i["id"] == m)
            .ok_or_else(|| ComputeError::BadRequest(format!("marker [{m}] not found")))?;
        list.drain(..=at);
    }
    if let Some(l) = q.get("limit") {
        let l: usize =
            l.parse().map_err(|_| ComputeError::BadRequest(format!("limit must be an integer >= 0, not {l:?}")))?;
        list.truncate(l);
    }
    Ok(list)
}

async fn list_impl(st: &AppState, ctx: &Ctx, v: ApiVersion, q: &QueryPairs, detail: bool) -> Result<Value> {
    check_images_version(v)?;
    let images = filter_page(all_images(st, ctx).await?, q)?;
    Ok(json!({"images": images.iter().map(|i| view(st, i, detail)).collect::<Vec<_>>()}))
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    Ok(Json(list_impl(&st, &ctx, v, &q, false).await?))
}

async fn list_detail(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(list_impl(&st, &ctx, v, &q, true).await?))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_images_version(v)?;
    let im = get_image(&st, &ctx, &id).await?;
    Ok(Json(json!({"image": view(&st, &im, true)})))
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_images_version(v)?;
    glance(&st, &ctx, Method::DELETE, &image_uri(&id), None, &[], &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Nova's metadata items: keys of 1–255 characters, string values of at most 255.
fn check_items(m: &Map<String, Value>) -> Result<()> {
    for (k, v) in m {
        if k.is_empty() || k.chars().count() > 255 {
            return Err(ComputeError::BadRequest(format!("Invalid metadata key {k:?}: keys are 1 to 255 characters")));
        }
        match v.as_str() {
            Some(s) if s.chars().count() <= 255 => {}
            _ => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid metadata value for {k}: values are strings of at most 255 characters"
                )))
            }
        }
    }
    Ok(())
}

fn check_quota(n: usize) -> Result<()> {
    if n > MAX_IMAGE_META {
        return Err(ComputeError::Forbidden(format!(
            "Quota exceeded for metadata_items: an image takes at most {MAX_IMAGE_META} metadata items, this would make {n}"
        )));
    }
    Ok(())
}

/// Applies `set` and `unset` to the image's properties with one JSON patch; the new
/// image.
async fn patch(
    st: &AppState,
    ctx: &RequestContext,
    id: &str,
    current: &Map<String, Value>,
    set: &Map<String, Value>,
    unset: &[String],
) -> Result<Value> {
    let mut ops: Vec<Value> = set
        .iter()
        .map(|(k, v)| {
            let path = format!("/{}", k.replace('~', "~0").replace('/', "~1"));
            let op = if current.contains_key(k) { "replace" } else { "add" };
            json!({"op": op, "path": path, "value": v})
        })
        .collect();
    ops.extend(
        unset.iter().map(|k| json!({"op": "remove", "path": format!("/{}", k.replace('~', "~0").replace('/', "~1"))})),
    );
    if ops.is_empty() {
        return get_image(st, ctx, id).await;
    }
    glance(st, ctx, Method::PATCH, &image_uri(id), Some(Value::Array(ops)), &[PATCH_TYPE], id).await
}

async fn meta_list(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_metadata_version(v)?;
    let im = get_image(&st, &ctx, &id).await?;
    Ok(Json(json!({"metadata": metadata(&im)})))
}

/// `{"metadata": {...}}`.
#[derive(Deserialize)]
struct MetadataBody {
    metadata: Map<String, Value>,
}

/// `{"meta": {key: value}}`.
#[derive(Deserialize)]
struct MetaBody {
    meta: Map<String, Value>,
}

async fn meta_merge(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<MetadataBody>,
) -> Result<Json<Value>, ApiError> {
    check_metadata_version(v)?;
    check_items(&b.metadata)?;
    let current = metadata(&get_image(&st, &ctx, &id).await?);
    check_quota(current.len() + b.metadata.keys().filter(|k| !current.contains_key(*k)).count())?;
    let im = patch(&st, &ctx, &id, &current, &b.metadata, &[]).await?;
    Ok(Json(json!({"metadata": metadata(&im)})))
}

async fn meta_replace(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<MetadataBody>,
) -> Result<Json<Value>, ApiError> {
    check_metadata_version(v)?;
    check_items(&b.metadata)?;
    check_quota(b.metadata.len())?;
    let current = metadata(&get_image(&st, &ctx, &id).await?);
    let unset: Vec<String> = current.keys().filter(|k| !b.metadata.contains_key(*k)).cloned().collect();
    let im = patch(&st, &ctx, &id, &current, &b.metadata, &unset).await?;
    Ok(Json(json!({"metadata": metadata(&im)})))
}

async fn meta_show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_metadata_version(v)?;
    let m = metadata(&get_image(&st, &ctx, &id).await?);
    let val = m.get(&key).ok_or_else(|| ComputeError::NotFound(format!("Image {id} has no metadata item {key}.")))?;
    Ok(Json(json!({"meta": {key: val}})))
}

async fn meta_put(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, key)): Path<(String, String)>,
    OsJson(b): OsJson<MetaBody>,
) -> Result<Json<Value>, ApiError> {
    check_metadata_version(v)?;
    if b.meta.len() != 1 {
        return Err(ComputeError::BadRequest("Request body contains too many items: give exactly one".into()).into());
    }
    if !b.meta.contains_key(&key) {
        return Err(ComputeError::BadRequest(format!("Request body and URI mismatch: the body must set {key}")).into());
    }
    check_items(&b.meta)?;
    let current = metadata(&get_image(&st, &ctx, &id).await?);
    check_quota(current.len() + usize::from(!current.contains_key(&key)))?;
    patch(&st, &ctx, &id, &current, &b.meta, &[]).await?;
    Ok(Json(json!({"meta": b.meta})))
}

async fn meta_delete(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_metadata_version(v)?;
    let current = metadata(&get_image(&st, &ctx, &id).await?);
    if !current.contains_key(&key) {
        return Err(ComputeError::NotFound(format!("Image {id} has no metadata item {key}.")).into());
    }
    patch(&st, &ctx, &id, &current, &Map::new(), &[key]).await?;
    Ok(StatusCode::NO_CONTENT)
}
