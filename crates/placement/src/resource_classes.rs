//! `/resource_classes` (1.2): the standard classes and `CUSTOM_*` ones.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, OsJson};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::catalog::{is_standard_class, is_valid_custom, STANDARD_RESOURCE_CLASSES};
use crate::common::{authorize, link, object, only_keys, required, route_since, string};
use crate::error::{PlacementError, Result};
use crate::store;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/resource_classes", get(list).post(create))
        .route("/resource_classes/{name}", get(show).put(update).delete(delete))
}

fn rc_json(name: &str) -> Value {
    json!({"name": name, "links": [link("self", &format!("/resource_classes/{name}"))]})
}

fn invalid_name(name: &str) -> PlacementError {
    PlacementError::BadRequest(format!("JSON does not validate: {name:?} does not match '^CUSTOM\\_[A-Z0-9_]+$'"))
}

/// `GET /resource_classes`.
async fn list(State(st): State<Arc<AppState>>, ctx: Ctx, v: ApiVersion) -> Result<Json<Value>> {
    route_since(v, 1, 2)?;
    authorize(&st, &ctx, "placement:resource_classes:list")?;
    let rows = Query::new("SELECT name FROM placement_custom_resource_classes ORDER BY name")
        .fetch_all(st.db.reader())
        .await?;
    let mut out: Vec<Value> = STANDARD_RESOURCE_CLASSES.iter().map(|n| rc_json(n)).collect();
    out.extend(rows.iter().map(|r| rc_json(&r.get::<String, _>(0))));
    Ok(Json(json!({"resource_classes": out})))
}

async fn insert(st: &AppState, name: &str) -> Result<bool> {
    let mut q = Query::new("INSERT INTO placement_custom_resource_classes (name, created_at) VALUES (");
    q.bind(name).push(", ").bind(stratus_core::time::now()).push(") ON CONFLICT DO NOTHING");
    Ok(q.execute(st.db.reader()).await? == 1)
}

/// `POST /resource_classes`.
async fn create(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    route_since(v, 1, 2)?;
    authorize(&st, &ctx, "placement:resource_classes:create")?;
    let obj = object(&body, "body")?;
    only_keys(obj, &["name"])?;
    let name = string(required(obj, "name")?, "name")?;
    if !is_valid_custom(name) {
        return Err(invalid_name(name));
    }
    if !insert(&st, name).await? {
        return Err(PlacementError::Conflict(format!("Conflicting resource class already exists: {name}")));
    }
    Ok((StatusCode::CREATED, [(header::LOCATION, st.location(&format!("/resource_classes/{name}")))]).into_response())
}

/// `GET /resource_classes/{name}`.
async fn show(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    route_since(v, 1, 2)?;
    authorize(&st, &ctx, "placement:resource_classes:show")?;
    if !store::class_exists(st.db.reader(), &name).await? {
        return Err(PlacementError::NotFound(format!("No such resource class {name}.")));
    }
    Ok(Json(rc_json(&name)))
}

/// `PUT /resource_classes/{name}`: before 1.7 renames a custom class; from 1.7 creates it
/// idempotently (201 created, 204 already there).
async fn update(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    route_since(v, 1, 2)?;
    authorize(&st, &ctx, "placement:resource_classes:update")?;
    if v.at_least(1, 7) {
        if is_standard_class(&name) {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        if !is_valid_custom(&name) {
            return Err(invalid_name(&name));
        }
        return Ok(if insert(&st, &name).await? {
            (StatusCode::CREATED, [(header::LOCATION, st.location(&format!("/resource_classes/{name}")))])
                .into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        });
    }
    let body: Value = stratus_core::json::parse_json(&body)?;
    let obj = object(&body, "body")?;
    only_keys(obj, &["name"])?;
    let new = string(required(obj, "name")?, "name")?.to_string();
    if is_standard_class(&name) {
        return Err(PlacementError::BadRequest(format!("Cannot update standard resource class {name}")));
    }
    if !is_valid_custom(&new) {
        return Err(invalid_name(&new));
    }
    if !store::class_exists(st.db.reader(), &name).await? {
        return Err(PlacementError::NotFound(format!("No such resource class {name}.")));
    }
    if store::class_exists(st.db.reader(), &new).await? {
        return Err(PlacementError::Conflict(format!("Resource class already exists: {new}")));
    }
    let (old, n2) = (name.clone(), new.clone());
    st.db
        .transaction(move |tx| {
            let (old, new) = (old.clone(), n2.clone());
            Box::pin(async move {
                let mut q = Query::new("SELECT 1 FROM placement_inventories WHERE resource_class = ");
                q.bind(&old).push(" LIMIT 1");
                if q.fetch_optional(&mut **tx).await?.is_some() {
                    return Err(PlacementError::Conflict(format!(
                        "Unable to update resource class {old}: it is in use by inventories"
                    )));
                }
                let mut u = Query::new("UPDATE placement_custom_resource_classes SET name = ");
                u.bind(&new).push(" WHERE name = ").bind(&old);
                u.execute(&mut **tx).await?;
                Ok::<_, PlacementError>(())
            })
        })
        .await?;
    Ok(Json(rc_json(&new)).into_response())
}

/// `DELETE /resource_classes/{name}`.
async fn delete(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    route_since(v, 1, 2)?;
    authorize(&st, &ctx, "placement:resource_classes:delete")?;
    if is_standard_class(&name) {
        return Err(PlacementError::BadRequest(format!("Cannot delete standard resource class {name}")));
    }
    crate::common::delete_custom_name(
        &st,
        name,
        crate::common::CustomName {
            in_use_sql: "SELECT 1 FROM placement_inventories WHERE resource_class = ",
            delete_sql: "DELETE FROM placement_custom_resource_classes WHERE name = ",
            in_use: |n| format!("Unable to delete resource class {n}. Delete all inventories of this class first."),
            not_found: |n| format!("No such resource class {n}."),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
