//! Tasks: the record of every image import (`api_image_import`, one per
//! `POST /v2/images/{id}/import`, listed by `GET /v2/images/{id}/tasks`) and the legacy
//! task API (`/v2/tasks`, admin only, `import` tasks that create an image from a URL).
//!
//! A task moves `pending` → `processing` → `success` (with `result.image_id`) or
//! `failure` (with a `message` saying why). The work itself is done by [`crate::import`];
//! this module owns the rows and the API.

use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::Row;
use stratus_auth::Ctx;
use stratus_core::pagination::{next_href, split_page, PageSpec, SortDir};
use stratus_core::{time, OsJson, QueryPairs, RequestContext, RequestId};
use stratus_db::{sqlx, Db, Query};

use crate::error::{ImageError, Result};
use crate::images::db as images_db;
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/tasks", get(list).post(create))
        .route("/v2/tasks/{id}", get(show).delete(delete))
        .route("/v2/images/{id}/tasks", get(of_image))
}

/// Task types.
pub const TYPES: &[&str] = &["import", "api_image_import"];
/// Task statuses.
pub const STATUSES: &[&str] = &["pending", "processing", "success", "failure"];

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// UUID.
    pub id: String,
    /// `import` (legacy task API) or `api_image_import` (image import).
    pub kind: String,
    /// pending, processing, success, failure.
    pub status: String,
    /// Project that created it.
    pub owner: String,
    /// Image it works on.
    pub image_id: Option<String>,
    /// Request that created it.
    pub request_id: Option<String>,
    /// User that created it.
    pub user_id: Option<String>,
    /// What was asked.
    pub input: Value,
    /// `{"image_id": ...}` on success.
    pub result: Option<Value>,
    /// Why it failed, or its progress.
    pub message: String,
    /// When a finished task may be removed (storage format).
    pub expires_at: Option<String>,
    /// Storage format.
    pub created_at: String,
    /// Storage format.
    pub updated_at: String,
}

impl Task {
    /// A new `pending` task created by `ctx` in request `request_id`.
    pub fn new(kind: &str, ctx: &RequestContext, image_id: Option<&str>, request_id: &str, input: Value) -> Task {
        let now = time::now();
        Task {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            status: "pending".into(),
            owner: ctx.project_id.clone().unwrap_or_default(),
            image_id: image_id.map(str::to_string),
            request_id: Some(request_id.to_string()),
            user_id: Some(ctx.user_id.clone()),
            input,
            result: None,
            message: String::new(),
            expires_at: None,
            created_at: now.clone(),
            updated_at: now,
        }
    }
}

/// Finished tasks are kept this long (Glance's `task_time_to_live`, 48 hours).
const TIME_TO_LIVE_HOURS: u64 = 48;

const COLUMNS: &str =
    "id, type, status, owner, image_id, request_id, user_id, input, result, message, expires_at, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Task, sqlx::Error> {
    let input: String = r.try_get(7)?;
    let result: Option<String> = r.try_get(8)?;
    Ok(Task {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        status: r.try_get(2)?,
        owner: r.try_get(3)?,
        image_id: r.try_get(4)?,
        request_id: r.try_get(5)?,
        user_id: r.try_get(6)?,
        input: serde_json::from_str(&input).unwrap_or(Value::Null),
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
        message: r.try_get(9)?,
        expires_at: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
    })
}

fn rows(rows: &[sqlx::any::AnyRow]) -> Result<Vec<Task>> {
    rows.iter().map(|r| from_row(r).map_err(|e| stratus_db::DbError::from(e).into())).collect()
}

/// Stores a new task.
pub async fn insert(db: &Db, t: &Task) -> Result<()> {
    let mut q = Query::new(format!("INSERT INTO image_tasks ({COLUMNS}) VALUES ("));
    q.bind(t.id.clone())
        .push_bind(", ", t.kind.clone())
        .push_bind(", ", t.status.clone())
        .push_bind(", ", t.owner.clone())
        .push_bind(", ", t.image_id.clone())
        .push_bind(", ", t.request_id.clone())
        .push_bind(", ", t.user_id.clone())
        .push_bind(", ", t.input.to_string())
        .push_bind(", ", t.result.as_ref().map(Value::to_string))
        .push_bind(", ", t.message.clone())
        .push_bind(", ", t.expires_at.clone())
        .push_bind(", ", t.created_at.clone())
        .push_bind(", ", t.updated_at.clone())
        .push(")");
    images_db::write(db, vec![q]).await?;
    Ok(())
}

/// Moves task `id` to `status` with `message`; a finished task gets its `result` and an
/// expiry.
pub async fn set_status(db: &Db, id: &str, status: &str, message: &str, result: Option<Value>) -> Result<()> {
    let now = time::now();
    let expires = matches!(status, "success" | "failure").then(|| {
        let at = time::parse(&now).map(|t| t + std::time::Duration::from_secs(TIME_TO_LIVE_HOURS * 3600));
        at.map(time::to_storage).unwrap_or_else(|| now.clone())
    });
    let mut q = Query::new("UPDATE image_tasks SET status = ");
    q.bind(status.to_string())
        .push_bind(", message = ", message.to_string())
        .push_bind(", result = ", result.map(|r| r.to_string()))
        .push_bind(", expires_at = ", expires)
        .push_bind(", updated_at = ", now)
        .push_bind(" WHERE id = ", id.to_string());
    images_db::write(db, vec![q]).await?;
    Ok(())
}

/// Loads task `id`.
pub async fn load(db: &Db, id: &str) -> Result<Option<Task>> {
    let r =
        Query::new(format!("SELECT {COLUMNS} FROM image_tasks WHERE id = ")).bind(id).fetch_all(db.reader()).await?;
    Ok(rows(&r)?.pop())
}

/// The tasks of image `image_id`, oldest first.
pub async fn of_image_rows(db: &Db, image_id: &str) -> Result<Vec<Task>> {
    let r = Query::new(format!("SELECT {COLUMNS} FROM image_tasks WHERE image_id = "))
        .bind(image_id)
        .push(" ORDER BY created_at, id")
        .fetch_all(db.reader())
        .await?;
    rows(&r)
}

/// Removes the tasks whose expiry has passed (done when tasks are listed, as Glance).
async fn sweep_expired(db: &Db) -> Result<()> {
    let mut q = Query::new("DELETE FROM image_tasks WHERE expires_at IS NOT NULL AND expires_at < ");
    q.bind(time::now());
    images_db::write(db, vec![q]).await?;
    Ok(())
}

/// The full view of a task (show, create, image tasks).
pub fn view(t: &Task) -> Value {
    let mut v = json!({
        "id": t.id,
        "type": t.kind,
        "status": t.status,
        "owner": t.owner,
        "input": t.input,
        "result": t.result,
        "message": t.message,
        "created_at": time::seconds_z(&t.created_at),
        "updated_at": time::seconds_z(&t.updated_at),
        "self": format!("/v2/tasks/{}", t.id),
        "schema": "/v2/schemas/task",
    });
    for (k, val) in [("image_id", &t.image_id), ("request_id", &t.request_id), ("user_id", &t.user_id)] {
        if let Some(s) = val {
            v[k] = json!(s);
        }
    }
    if let Some(e) = &t.expires_at {
        v["expires_at"] = json!(time::seconds_z(e));
    }
    v
}

/// The list view: no input, result or message.
fn stub(t: &Task) -> Value {
    let mut v = json!({
        "id": t.id,
        "type": t.kind,
        "status": t.status,
        "owner": t.owner,
        "created_at": time::seconds_z(&t.created_at),
        "updated_at": time::seconds_z(&t.updated_at),
        "self": format!("/v2/tasks/{}", t.id),
        "schema": "/v2/schemas/task",
    });
    if let Some(e) = &t.expires_at {
        v["expires_at"] = json!(time::seconds_z(e));
    }
    v
}

fn access(st: &St, ctx: &RequestContext) -> Result<()> {
    let project = ctx.project_id.clone().unwrap_or_default();
    Ok(st.policy.enforce("tasks_api_access", ctx, &json!({"project_id": project}))?)
}

/// `GET /v2/images/{id}/tasks`: whoever may see the image sees its import tasks.
async fn of_image(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<Json<Value>> {
    let im = images_db::get_visible(&st.platform.db, &ctx, &id).await?;
    crate::images::enforce(&st, "get_image", &ctx, &im)
        .map_err(|_| ImageError::NotFound(format!("No image found with ID {id}")))?;
    let tasks = of_image_rows(&st.platform.db, &im.id).await?;
    Ok(Json(json!({"tasks": tasks.iter().map(view).collect::<Vec<_>>()})))
}

/// `GET /v2/tasks/{id}` (admin).
async fn show(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<Json<Value>> {
    access(&st, &ctx)?;
    let t = load(&st.platform.db, &id).await?.ok_or_else(|| ImageError::NotFound(format!("Task {id} not found")))?;
    st.policy.enforce("get_task", &ctx, &json!({"project_id": t.owner}))?;
    Ok(Json(view(&t)))
}

/// `DELETE /v2/tasks/{id}`: Glance does not allow it either.
async fn delete(State(st): State<St>, Ctx(ctx): Ctx, Path(_id): Path<String>) -> Result<StatusCode> {
    access(&st, &ctx)?;
    Err(ImageError::Api(stratus_core::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "This operation is currently not permitted on Glance Tasks. Tasks are removed after they expire.",
    )))
}

const SORT_KEYS: &[(&str, &str)] =
    &[("created_at", "created_at"), ("updated_at", "updated_at"), ("id", "id"), ("type", "type"), ("status", "status")];

/// `GET /v2/tasks` (admin): filters `type` and `status`, keyset pagination.
async fn list(State(st): State<St>, Ctx(ctx): Ctx, q: QueryPairs) -> Result<Json<Value>> {
    access(&st, &ctx)?;
    st.policy.enforce("get_tasks", &ctx, &json!({"project_id": ctx.project_id.clone().unwrap_or_default()}))?;
    sweep_expired(&st.platform.db).await?;
    let spec = PageSpec {
        sort_keys: SORT_KEYS,
        default_sort: &[("created_at", SortDir::Desc)],
        default_limit: st.cfg.limit_param_default,
        max_limit: st.cfg.api_limit_max,
    };
    let page = spec.parse(&q)?;
    let mut sql = Query::new(format!("SELECT {COLUMNS} FROM image_tasks WHERE 1 = 1"));
    if let Some(s) = q.get("status") {
        if !STATUSES.contains(&s) {
            return Err(ImageError::BadRequest(format!("Invalid status value: {s}")));
        }
        sql.push_bind(" AND status = ", s.to_string());
    }
    if let Some(t) = q.get("type") {
        if !TYPES.contains(&t) {
            return Err(ImageError::BadRequest(format!("Invalid type value: {t}")));
        }
        sql.push_bind(" AND type = ", t.to_string());
    }
    if let Some(marker) = &page.marker {
        let exprs: Vec<&str> = page.sort.iter().map(|k| k.column).collect();
        let mut mq = Query::new(format!("SELECT {}, id FROM image_tasks WHERE id = ", exprs.join(", ")));
        mq.bind(marker.clone());
        let row = mq
            .fetch_optional(st.platform.db.reader())
            .await?
            .ok_or_else(|| ImageError::BadRequest(format!("Invalid marker. Task {marker} could not be found.")))?;
        let mut values: Vec<stratus_db::Arg> = Vec::new();
        for i in 0..=exprs.len() {
            values.push(row.try_get::<String, _>(i).map_err(stratus_db::DbError::from)?.into());
        }
        page.push_after_marker(&mut sql, "id", &values);
    }
    page.push_order_by(&mut sql, "id");
    page.push_limit_plus_one(&mut sql);
    let found = sql.fetch_all(st.platform.db.reader()).await?;
    let (found, more) = split_page(found, page.limit);
    let tasks = rows(&found)?;
    let mut body = json!({
        "tasks": tasks.iter().map(stub).collect::<Vec<_>>(),
        "first": "/v2/tasks",
        "schema": "/v2/schemas/tasks",
    });
    if more {
        if let Some(last) = tasks.last() {
            body["next"] = json!(next_href("", "/v2/tasks", &q, &last.id));
        }
    }
    Ok(Json(body))
}

/// `POST /v2/tasks` (admin): a legacy `import` task, which creates an image with
/// `input.image_properties` and fetches its data from `input.import_from` (only from
/// the web-download allow-list).
async fn create(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    rid: Option<Extension<RequestId>>,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    access(&st, &ctx)?;
    st.policy.enforce("add_task", &ctx, &json!({"project_id": ctx.project_id.clone().unwrap_or_default()}))?;
    let obj = body.as_object().ok_or_else(|| ImageError::BadRequest("Body expected in request.".into()))?;
    for key in ["type", "input"] {
        if !obj.contains_key(key) {
            return Err(ImageError::BadRequest(format!("Task '{key}' is required")));
        }
    }
    if let Some(k) = obj.keys().find(|k| !["type", "input"].contains(&k.as_str())) {
        return Err(ImageError::Forbidden(format!("Attribute '{k}' is read-only.")));
    }
    let kind = obj["type"].as_str().unwrap_or_default();
    if kind != "import" {
        return Err(ImageError::BadRequest(format!(
            "Invalid type value: {}: only 'import' tasks can be created",
            obj["type"]
        )));
    }
    let input = obj["input"].clone();
    let request = crate::import::LegacyImport::parse(&st, &input)?;
    let request_id = rid.map(|Extension(r)| r.0).unwrap_or_else(|| RequestId::generate().0);
    let task = Task::new(kind, &ctx, None, &request_id, input);
    insert(&st.platform.db, &task).await?;
    crate::import::spawn_legacy(st.clone(), ctx.clone(), task.id.clone(), request);
    let mut resp = (StatusCode::CREATED, Json(view(&task))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/tasks/{}", task.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}
