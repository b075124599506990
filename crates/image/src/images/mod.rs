//! Images: create, list (filters, sorting, pagination), show, JSON-patch update,
//! delete, tags and the deactivate/reactivate actions.

pub mod db;
pub mod patch;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sqlx::Row;
use stratus_auth::Ctx;
use stratus_core::pagination::{next_href, split_page, PageSpec, SortDir};
use stratus_core::query::encode;
use stratus_core::{time, OsJson, QueryPairs, RequestContext};
use stratus_db::{sqlx, Arg, Query};

use self::db::Image;
use crate::error::{ImageError, Result};
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/images", get(list).post(create))
        .route("/v2/images/{id}", get(show).patch(update).delete(delete))
        // An empty id names no image (Glance: 404), whatever the method.
        .route("/v2/images/", axum::routing::any(empty_id))
        .route("/v2/images/{id}/actions/deactivate", post(deactivate))
        .route("/v2/images/{id}/actions/reactivate", post(reactivate))
        .route("/v2/images/{id}/tags/{tag}", put(add_tag).delete(delete_tag))
}

/// The policy target of an image: its owner as `project_id`, as Glance's ImageTarget.
pub fn target(im: &Image) -> Value {
    json!({
        "project_id": im.owner.clone().unwrap_or_default(),
        "owner": im.owner.clone().unwrap_or_default(),
        "visibility": im.visibility,
        "id": im.id,
    })
}

/// Enforces `rule` on `im` for `ctx`.
pub fn enforce(st: &St, rule: &str, ctx: &RequestContext, im: &Image) -> Result<()> {
    Ok(st.policy.enforce(rule, ctx, &target(im))?)
}

/// The image as Glance shows it: core attributes (nulls included), custom properties
/// at the top level, and the links.
pub fn view(im: &Image) -> Value {
    let mut m = Map::new();
    for (k, v) in &im.properties {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    let core = json!({
        "id": im.id,
        "name": im.name,
        "status": im.status,
        "visibility": im.visibility,
        "owner": im.owner,
        "disk_format": im.disk_format,
        "container_format": im.container_format,
        "size": im.size,
        "virtual_size": im.virtual_size,
        "checksum": im.checksum,
        "os_hash_algo": im.os_hash_algo,
        "os_hash_value": im.os_hash_value,
        "min_disk": im.min_disk,
        "min_ram": im.min_ram,
        "protected": im.protected,
        "os_hidden": im.os_hidden,
        "tags": im.tags,
        "created_at": time::seconds_z(&im.created_at),
        "updated_at": time::seconds_z(&im.updated_at),
        "self": format!("/v2/images/{}", im.id),
        "file": format!("/v2/images/{}/file", im.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(c) = core {
        m.extend(c);
    }
    if let Some(s) = im.store.as_deref().filter(|s| !s.is_empty()) {
        if matches!(im.status.as_str(), "active" | "deactivated") {
            m.insert("stores".into(), Value::String(s.to_string()));
        }
    }
    Value::Object(m)
}

/// `/v2/images/` with no id.
async fn empty_id() -> ImageError {
    ImageError::NotFound("No image found with an empty ID".into())
}

fn check_visibility_policy(st: &St, ctx: &RequestContext, im: &Image) -> Result<()> {
    match im.visibility.as_str() {
        "public" => enforce(st, "publicize_image", ctx, im),
        "community" => enforce(st, "communitize_image", ctx, im),
        _ => Ok(()),
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// Validates and stores a new queued image with the attributes in `obj`, created by
/// `ctx` (the image API's create, and legacy import tasks).
pub async fn new_image(st: &St, ctx: &RequestContext, obj: &Map<String, Value>) -> Result<Image> {
    let now = time::now();
    let mut im = Image {
        id: uuid::Uuid::new_v4().to_string(),
        status: "queued".into(),
        visibility: "shared".into(),
        owner: ctx.project_id.clone(),
        created_at: now.clone(),
        updated_at: now,
        ..Default::default()
    };
    for (k, v) in obj {
        if k == "id" {
            match v.as_str() {
                Some(id) if is_uuid(id) => im.id = id.to_ascii_lowercase(),
                _ => return Err(ImageError::BadRequest(format!("Invalid value for 'id': {v} is not a UUID"))),
            }
            continue;
        }
        patch::set(&mut im, k, v, ctx.is_admin())?;
    }
    enforce(st, "add_image", ctx, &im)?;
    check_visibility_policy(st, ctx, &im)?;
    patch::check_property_quota(&im, st.cfg.image_property_quota)?;
    if im.tags.len() as i64 > st.cfg.image_tag_quota {
        return Err(ImageError::TooLarge(format!("Maximum number of tags ({}) exceeded", st.cfg.image_tag_quota)));
    }
    if st.cfg.image_count_quota >= 0 {
        if let Some(owner) = &im.owner {
            let (count, _) = db::usage(&st.platform.db, owner).await?;
            if count >= st.cfg.image_count_quota {
                return Err(ImageError::TooLarge(format!(
                    "Maximum number of images ({}) exceeded for project {owner}",
                    st.cfg.image_count_quota
                )));
            }
        }
    }
    let row = im.clone();
    st.platform
        .db
        .transaction(move |tx| {
            let row = row.clone();
            Box::pin(async move { db::insert(tx, &row).await })
        })
        .await?;
    Ok(im)
}

/// `POST /v2/images`.
async fn create(State(st): State<St>, Ctx(ctx): Ctx, OsJson(body): OsJson<Value>) -> Result<Response> {
    let obj = body.as_object().ok_or_else(|| ImageError::BadRequest("Request body must be a JSON object.".into()))?;
    let im = new_image(&st, &ctx, obj).await?;
    tracing::info!(image = %im.id, "image created");
    let mut resp = (StatusCode::CREATED, Json(view(&im))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/v2/images/{}", st.platform.service_url("/image"), im.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    // Glance advertises the import methods on create; the SDK reads them before importing.
    if let Ok(v) = HeaderValue::from_str(&crate::info::import_methods(&st).join(",")) {
        resp.headers_mut().insert("openstack-image-import-methods", v);
    }
    Ok(resp)
}

/// `GET /v2/images/{id}`.
async fn show(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<Json<Value>> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "get_image", &ctx, &im)?;
    Ok(Json(view(&im)))
}

/// `PATCH /v2/images/{id}` with a JSON-patch document.
async fn update(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>, req: Request) -> Result<Json<Value>> {
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mime = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !patch::PATCH_MEDIA_TYPES.contains(&mime.as_str()) {
        return Err(ImageError::UnsupportedMediaType(format!(
            "Unsupported Content-Type {ctype:?}: image updates take {}",
            patch::PATCH_MEDIA_TYPES[0]
        )));
    }
    let body = stratus_core::json::read_body(req, &()).await?;
    let doc: Value = stratus_core::json::parse_json(&body)?;
    let ops = patch::parse_ops(&doc)?;
    let old = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "modify_image", &ctx, &old)?;
    let mut im = old.clone();
    patch::apply(&mut im, &ops, ctx.is_admin())?;
    if im.visibility != old.visibility {
        check_visibility_policy(&st, &ctx, &im)?;
    }
    for (field, a, b) in [
        ("disk_format", &old.disk_format, &im.disk_format),
        ("container_format", &old.container_format, &im.container_format),
    ] {
        if a != b && old.status != "queued" {
            return Err(ImageError::Forbidden(format!("Attribute {field} can be only replaced for a queued image.")));
        }
    }
    if im.tags.len() as i64 > st.cfg.image_tag_quota {
        return Err(ImageError::TooLarge(format!("Maximum number of tags ({}) exceeded", st.cfg.image_tag_quota)));
    }
    if im.properties.len() > old.properties.len() {
        patch::check_property_quota(&im, st.cfg.image_property_quota)?;
    }
    if im != old {
        im.updated_at = time::now();
        db::update_metadata(&st.platform.db, &im, &old.updated_at).await?;
    }
    Ok(Json(view(&im)))
}

/// `DELETE /v2/images/{id}`: the rows, then the data (an upload in flight notices the
/// row is gone and removes what it wrote).
async fn delete(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<StatusCode> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "delete_image", &ctx, &im)?;
    if im.protected {
        return Err(ImageError::Forbidden(format!("Image {id} is protected and cannot be deleted.")));
    }
    db::delete(&st.platform.db, &im.id).await?;
    crate::data::remove_data(&st, &im.id).await;
    let _ = st.staging.delete(&im.id).await;
    tracing::info!(image = %im.id, "image deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../actions/deactivate` (admin): data download is refused until reactivated.
async fn deactivate(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<StatusCode> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "deactivate", &ctx, &im)?;
    match im.status.as_str() {
        "deactivated" => Ok(StatusCode::NO_CONTENT),
        "active" if db::transition(&st.platform.db, &id, &["active"], "deactivated", None).await? => {
            Ok(StatusCode::NO_CONTENT)
        }
        s => Err(ImageError::Forbidden(format!("Not allowed to deactivate image in status '{s}'"))),
    }
}

/// `POST .../actions/reactivate` (admin).
async fn reactivate(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<StatusCode> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "reactivate", &ctx, &im)?;
    match im.status.as_str() {
        "active" => Ok(StatusCode::NO_CONTENT),
        "deactivated" if db::transition(&st.platform.db, &id, &["deactivated"], "active", None).await? => {
            Ok(StatusCode::NO_CONTENT)
        }
        s => Err(ImageError::Forbidden(format!("Not allowed to reactivate image in status '{s}'"))),
    }
}

/// `PUT /v2/images/{id}/tags/{tag}`.
async fn add_tag(State(st): State<St>, Ctx(ctx): Ctx, Path((id, tag)): Path<(String, String)>) -> Result<StatusCode> {
    let old = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "modify_image", &ctx, &old)?;
    if tag.is_empty() || tag.chars().count() > 255 {
        return Err(ImageError::BadRequest("Tags are 1 to 255 characters".into()));
    }
    let mut im = old.clone();
    if !im.tags.contains(&tag) {
        im.tags.push(tag);
        im.tags.sort();
        if im.tags.len() as i64 > st.cfg.image_tag_quota {
            return Err(ImageError::TooLarge(format!("Maximum number of tags ({}) exceeded", st.cfg.image_tag_quota)));
        }
        im.updated_at = time::now();
        db::update_metadata(&st.platform.db, &im, &old.updated_at).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v2/images/{id}/tags/{tag}`.
async fn delete_tag(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode> {
    let old = db::get_visible(&st.platform.db, &ctx, &id).await?;
    enforce(&st, "modify_image", &ctx, &old)?;
    let mut im = old.clone();
    let before = im.tags.len();
    im.tags.retain(|t| *t != tag);
    if im.tags.len() == before {
        return Err(ImageError::NotFound(format!("Tag {tag} not found on image {id}")));
    }
    im.updated_at = time::now();
    db::update_metadata(&st.platform.db, &im, &old.updated_at).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- list --------------------------------------------------------------------------

/// API sort keys → SQL expressions (NULLs folded so keyset comparisons stay total).
const SORT_KEYS: &[(&str, &str)] = &[
    ("name", "COALESCE(i.name, '')"),
    ("status", "i.status"),
    ("container_format", "COALESCE(i.container_format, '')"),
    ("disk_format", "COALESCE(i.disk_format, '')"),
    ("size", "COALESCE(i.size, -1)"),
    ("virtual_size", "COALESCE(i.virtual_size, -1)"),
    ("id", "i.id"),
    ("created_at", "i.created_at"),
    ("updated_at", "i.updated_at"),
    ("min_disk", "i.min_disk"),
    ("min_ram", "i.min_ram"),
    ("owner", "COALESCE(i.owner, '')"),
    ("visibility", "i.visibility"),
];
const INT_SORT_EXPRS: &[&str] = &["COALESCE(i.size, -1)", "COALESCE(i.virtual_size, -1)", "i.min_disk", "i.min_ram"];

/// Query parameters that are not custom-property filters.
const NON_PROPERTY_PARAMS: &[&str] = &[
    "limit",
    "marker",
    "sort",
    "sort_key",
    "sort_dir",
    "visibility",
    "member_status",
    "os_hidden",
    "size_min",
    "size_max",
    "tag",
    "name",
    "status",
    "container_format",
    "disk_format",
    "owner",
    "id",
    "protected",
    "created_at",
    "updated_at",
    "checksum",
    "os_hash_value",
];

/// `name=in:"a","b"` or `name=in:a,b`, or a plain value.
fn in_values(v: &str) -> Vec<String> {
    match v.strip_prefix("in:") {
        Some(list) => list.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect(),
        None => vec![v.to_string()],
    }
}

fn push_time_filter(q: &mut Query, col: &str, raw: &str) -> Result<()> {
    let (op, ts) = match raw.split_once(':') {
        Some((op, rest)) if ["gt", "gte", "eq", "neq", "lt", "lte"].contains(&op) => (op, rest),
        _ => ("eq", raw),
    };
    let t =
        time::parse(ts).ok_or_else(|| ImageError::BadRequest(format!("Invalid timestamp {ts:?} in filter {col}")))?;
    let sql_op = match op {
        "gt" => " > ",
        "gte" => " >= ",
        "lt" => " < ",
        "lte" => " <= ",
        "neq" => " <> ",
        _ => " = ",
    };
    // Stored times have microseconds; clients give seconds. Compare at the precision given.
    q.push(" AND ").push(col).push(sql_op).bind(time::to_storage(t));
    Ok(())
}

/// `GET /v2/images`.
async fn list(State(st): State<St>, Ctx(ctx): Ctx, q: QueryPairs) -> Result<Json<Value>> {
    let project = ctx.project_id.clone().unwrap_or_default();
    st.policy.enforce("get_images", &ctx, &json!({"project_id": project, "owner": project}))?;
    if q.has("sort") && (q.has("sort_key") || q.has("sort_dir")) {
        return Err(ImageError::BadRequest("The 'sort' parameter cannot be combined with sort_key or sort_dir".into()));
    }
    let mut pq = q.clone();
    if pq.has("sort_key") && !pq.has("sort_dir") {
        pq.0.push(("sort_dir".into(), "desc".into()));
    }
    if pq.has("sort_dir") && !pq.has("sort_key") {
        pq.0.push(("sort_key".into(), "created_at".into()));
    }
    let spec = PageSpec {
        sort_keys: SORT_KEYS,
        default_sort: &[("created_at", SortDir::Desc)],
        default_limit: st.cfg.limit_param_default,
        max_limit: st.cfg.api_limit_max,
    };
    let page = spec.parse(&pq)?;
    let mut sql = Query::new(format!("SELECT {} FROM image_images i WHERE 1 = 1", db::COLUMNS));

    // Who sees what.
    let member_status = q.get("member_status").unwrap_or("accepted");
    if !["pending", "accepted", "rejected", "all"].contains(&member_status) {
        return Err(ImageError::BadRequest(format!("Invalid member_status value: {member_status}")));
    }
    let admin = ctx.is_admin();
    let push_member = |sql: &mut Query| {
        sql.push("EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = i.id AND m.member_id = ");
        sql.bind(project.clone());
        if member_status != "all" {
            sql.push_bind(" AND m.status = ", member_status.to_string());
        }
        sql.push(")");
    };
    match q.get("visibility") {
        None | Some("all") => {
            if !admin {
                let community = if q.get("visibility") == Some("all") { " OR i.visibility = 'community'" } else { "" };
                sql.push(" AND (i.owner = ").bind(project.clone());
                sql.push(" OR i.visibility = 'public'").push(community).push(" OR (i.visibility = 'shared' AND ");
                push_member(&mut sql);
                sql.push("))");
            }
        }
        Some("public") => {
            sql.push(" AND i.visibility = 'public'");
        }
        Some("community") => {
            sql.push(" AND i.visibility = 'community'");
        }
        Some("private") => {
            sql.push(" AND i.visibility = 'private'");
            if !admin {
                sql.push_bind(" AND i.owner = ", project.clone());
            }
        }
        Some("shared") => {
            sql.push(" AND i.visibility = 'shared'");
            if !admin {
                sql.push(" AND (i.owner = ").bind(project.clone()).push(" OR ");
                push_member(&mut sql);
                sql.push(")");
            } else if q.has("member_status") {
                sql.push(" AND ");
                push_member(&mut sql);
            }
        }
        Some(other) => return Err(ImageError::BadRequest(format!("Invalid visibility value: {other}"))),
    }
    match q.bool("os_hidden")? {
        Some(true) => sql.push(" AND i.os_hidden = ").bind(true),
        _ => sql.push(" AND i.os_hidden = ").bind(false),
    };
    for (param, col) in [
        ("name", "i.name"),
        ("status", "i.status"),
        ("container_format", "i.container_format"),
        ("disk_format", "i.disk_format"),
        ("owner", "i.owner"),
        ("id", "i.id"),
        ("checksum", "i.checksum"),
        ("os_hash_value", "i.os_hash_value"),
    ] {
        if let Some(v) = q.get(param) {
            sql.push(" AND ").push_in(col, in_values(v));
        }
    }
    if let Some(n) = q.int("size_min")? {
        sql.push_bind(" AND i.size >= ", n);
    }
    if let Some(n) = q.int("size_max")? {
        sql.push_bind(" AND i.size <= ", n);
    }
    if let Some(b) = q.bool("protected")? {
        sql.push_bind(" AND i.protected = ", b);
    }
    for t in q.all("tag") {
        sql.push_bind(" AND EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = i.id AND t.tag = ", t.to_string());
        sql.push(")");
    }
    if let Some(v) = q.get("created_at") {
        push_time_filter(&mut sql, "i.created_at", v)?;
    }
    if let Some(v) = q.get("updated_at") {
        push_time_filter(&mut sql, "i.updated_at", v)?;
    }
    for (k, v) in &q.0 {
        if NON_PROPERTY_PARAMS.contains(&k.as_str()) {
            continue;
        }
        sql.push_bind(" AND EXISTS (SELECT 1 FROM image_properties p WHERE p.image_id = i.id AND p.name = ", k.clone());
        sql.push_bind(" AND p.value = ", v.clone()).push(")");
    }

    if let Some(marker) = &page.marker {
        let exprs: Vec<&str> = page.sort.iter().map(|k| k.column).collect();
        let mut mq = Query::new(format!("SELECT {}, i.id FROM image_images i WHERE i.id = ", exprs.join(", ")));
        mq.bind(marker.clone());
        db::push_can_see(&mut mq, &ctx);
        let row = mq
            .fetch_optional(st.platform.db.reader())
            .await?
            .ok_or_else(|| ImageError::BadRequest(format!("Invalid marker. Image {marker} could not be found.")))?;
        let mut values = Vec::with_capacity(exprs.len() + 1);
        for (i, e) in exprs.iter().enumerate() {
            let v: Arg = if INT_SORT_EXPRS.contains(e) {
                row.try_get::<i64, _>(i).map_err(stratus_db::DbError::from)?.into()
            } else {
                row.try_get::<String, _>(i).map_err(stratus_db::DbError::from)?.into()
            };
            values.push(v);
        }
        values.push(row.try_get::<String, _>(exprs.len()).map_err(stratus_db::DbError::from)?.into());
        page.push_after_marker(&mut sql, "i.id", &values);
    }
    page.push_order_by(&mut sql, "i.id");
    page.push_limit_plus_one(&mut sql);
    let rows = sql.fetch_all(st.platform.db.reader()).await?;
    let (rows, more) = split_page(rows, page.limit);
    let images = db::load_rows(&st.platform.db, &rows).await?;

    let mut body = json!({
        "images": images.iter().map(view).collect::<Vec<_>>(),
        "schema": "/v2/schemas/images",
    });
    let first_q: Vec<String> =
        q.0.iter().filter(|(k, _)| k != "marker").map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    body["first"] =
        json!(if first_q.is_empty() { "/v2/images".to_string() } else { format!("/v2/images?{}", first_q.join("&")) });
    if more {
        if let Some(last) = images.last() {
            body["next"] = json!(next_href("", "/v2/images", &q, &last.id));
        }
    }
    Ok(Json(body))
}
