//! The service catalog: `/v3/services`, `/v3/endpoints`, `/v3/regions`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::{new_id, Endpoint, Region, Service};
use crate::state::{body_object, list_links, opt_bool, opt_str, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/services", get(list_services).post(create_service))
        .route("/v3/services/{service_id}", get(show_service).patch(update_service).delete(delete_service))
        .route("/v3/endpoints", get(list_endpoints).post(create_endpoint))
        .route("/v3/endpoints/{endpoint_id}", get(show_endpoint).patch(update_endpoint).delete(delete_endpoint))
        .route("/v3/regions", get(list_regions).post(create_region))
        .route("/v3/regions/{region_id}", get(show_region).patch(update_region).delete(delete_region).put(put_region))
}

async fn get_service(id: &Identity, sid: &str) -> Result<Service> {
    let sql = format!("SELECT {} FROM identity_services WHERE id = $1", Service::COLS);
    let row = stratus_db::sqlx::query(&sql).bind(sid).fetch_optional(id.platform.db.reader()).await?;
    row.as_ref().map(Service::from_row).transpose()?.ok_or_else(|| IdentityError::not_found("service", sid))
}

async fn get_endpoint(id: &Identity, eid: &str) -> Result<Endpoint> {
    let sql = format!("SELECT {} FROM identity_endpoints WHERE id = $1", Endpoint::COLS);
    let row = stratus_db::sqlx::query(&sql).bind(eid).fetch_optional(id.platform.db.reader()).await?;
    row.as_ref().map(Endpoint::from_row).transpose()?.ok_or_else(|| IdentityError::not_found("endpoint", eid))
}

async fn get_region(id: &Identity, rid: &str) -> Result<Option<Region>> {
    let sql = format!("SELECT {} FROM identity_regions WHERE id = $1", Region::COLS);
    let row = stratus_db::sqlx::query(&sql).bind(rid).fetch_optional(id.platform.db.reader()).await?;
    row.as_ref().map(Region::from_row).transpose()
}

// --- services -----------------------------------------------------------------------

async fn list_services(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_services", &ctx, &json!({}))?;
    let mut sql = Query::new(format!("SELECT {} FROM identity_services WHERE 1 = 1", Service::COLS));
    if let Some(t) = q.get("type") {
        sql.push_bind(" AND type = ", t);
    }
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    sql.push(" ORDER BY type, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> =
        rows.iter().map(|r| Service::from_row(r).map(|s| s.json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(json!({"services": list, "links": list_links(&id.base, "services")})))
}

async fn show_service(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(sid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_service", &ctx, &json!({}))?;
    Ok(Json(json!({"service": get_service(&id, &sid).await?.json(&id.base)})))
}

async fn create_service(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_service", &ctx, &json!({}))?;
    let b = body_object(&body, "service")?;
    let ty = opt_str(b, "type")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| IdentityError::invalid("'type' is a required property"))?;
    let sid = new_id();
    let mut q = Query::new("INSERT INTO identity_services (id, type, name, description, enabled, created_at) VALUES (");
    q.bind(&sid).push(", ").bind(&ty).push(", ").bind(opt_str(b, "name")?.unwrap_or_default()).push(", ");
    q.bind(opt_str(b, "description")?.unwrap_or_default()).push(", ").bind(opt_bool(b, "enabled")?.unwrap_or(true));
    q.push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    Ok((StatusCode::CREATED, Json(json!({"service": get_service(&id, &sid).await?.json(&id.base)}))))
}

async fn update_service(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(sid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_service", &ctx, &json!({}))?;
    get_service(&id, &sid).await?;
    let b = body_object(&body, "service")?;
    let mut qs = Vec::new();
    for (field, col) in [("type", "type"), ("name", "name"), ("description", "description")] {
        if b.contains_key(field) {
            let mut q = Query::new(format!("UPDATE identity_services SET {col} = "));
            q.bind(opt_str(b, field)?.unwrap_or_default()).push_bind(" WHERE id = ", &sid);
            qs.push(q);
        }
    }
    if let Some(e) = opt_bool(b, "enabled")? {
        let mut q = Query::new("UPDATE identity_services SET enabled = ");
        q.bind(e).push_bind(" WHERE id = ", &sid);
        qs.push(q);
    }
    id.exec(qs).await?;
    Ok(Json(json!({"service": get_service(&id, &sid).await?.json(&id.base)})))
}

async fn delete_service(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(sid): Path<String>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_service", &ctx, &json!({}))?;
    get_service(&id, &sid).await?;
    let mut pe = Query::new(
        "DELETE FROM identity_project_endpoints WHERE endpoint_id IN (SELECT id FROM identity_endpoints WHERE service_id = ",
    );
    pe.bind(&sid).push(")");
    let mut e = Query::new("DELETE FROM identity_endpoints WHERE service_id = ");
    e.bind(&sid);
    let mut s = Query::new("DELETE FROM identity_services WHERE id = ");
    s.bind(&sid);
    id.exec(vec![pe, e, s]).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- endpoints ----------------------------------------------------------------------

fn check_interface(i: &str) -> Result<()> {
    if ["public", "internal", "admin"].contains(&i) {
        Ok(())
    } else {
        Err(IdentityError::invalid(format!(
            "Invalid input for field 'interface': {i:?} is not one of public, internal, admin"
        )))
    }
}

async fn list_endpoints(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_endpoints", &ctx, &json!({}))?;
    let mut sql = Query::new(format!("SELECT {} FROM identity_endpoints WHERE 1 = 1", Endpoint::COLS));
    if let Some(s) = q.get("service_id") {
        sql.push_bind(" AND service_id = ", s);
    }
    if let Some(i) = q.get("interface") {
        sql.push_bind(" AND interface = ", i);
    }
    if let Some(r) = q.get("region_id").or(q.get("region")) {
        sql.push_bind(" AND region_id = ", r);
    }
    sql.push(" ORDER BY service_id, interface, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> =
        rows.iter().map(|r| Endpoint::from_row(r).map(|e| e.json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(json!({"endpoints": list, "links": list_links(&id.base, "endpoints")})))
}

async fn show_endpoint(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(eid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_endpoint", &ctx, &json!({}))?;
    Ok(Json(json!({"endpoint": get_endpoint(&id, &eid).await?.json(&id.base)})))
}

async fn create_endpoint(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_endpoint", &ctx, &json!({}))?;
    let b = body_object(&body, "endpoint")?;
    let sid = opt_str(b, "service_id")?.ok_or_else(|| IdentityError::invalid("'service_id' is a required property"))?;
    let iface = opt_str(b, "interface")?.ok_or_else(|| IdentityError::invalid("'interface' is a required property"))?;
    check_interface(&iface)?;
    let url = opt_str(b, "url")?
        .filter(|u| !u.is_empty())
        .ok_or_else(|| IdentityError::invalid("'url' is a required property"))?;
    get_service(&id, &sid).await.map_err(|_| IdentityError::invalid(format!("Service {sid} not found")))?;
    let region = opt_str(b, "region_id")?.or(opt_str(b, "region")?);
    if let Some(r) = &region {
        ensure_region(&id, r).await?;
    }
    let eid = new_id();
    let mut q = Query::new(
        "INSERT INTO identity_endpoints (id, service_id, interface, region_id, url, enabled, created_at) VALUES (",
    );
    q.bind(&eid).push(", ").bind(&sid).push(", ").bind(&iface).push(", ").bind(region).push(", ").bind(&url);
    q.push(", ").bind(opt_bool(b, "enabled")?.unwrap_or(true)).push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    Ok((StatusCode::CREATED, Json(json!({"endpoint": get_endpoint(&id, &eid).await?.json(&id.base)}))))
}

async fn update_endpoint(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(eid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_endpoint", &ctx, &json!({}))?;
    get_endpoint(&id, &eid).await?;
    let b = body_object(&body, "endpoint")?;
    let mut qs = Vec::new();
    let mut set = |col: &str, v: stratus_db::Arg| {
        let mut q = Query::new(format!("UPDATE identity_endpoints SET {col} = "));
        q.bind(v).push_bind(" WHERE id = ", &eid);
        qs.push(q);
    };
    if let Some(i) = opt_str(b, "interface")? {
        check_interface(&i)?;
        set("interface", i.into());
    }
    if let Some(u) = opt_str(b, "url")? {
        set("url", u.into());
    }
    if let Some(s) = opt_str(b, "service_id")? {
        get_service(&id, &s).await?;
        set("service_id", s.into());
    }
    if let Some(r) = opt_str(b, "region_id")?.or(opt_str(b, "region")?) {
        ensure_region(&id, &r).await?;
        set("region_id", r.into());
    }
    if let Some(e) = opt_bool(b, "enabled")? {
        set("enabled", e.into());
    }
    id.exec(qs).await?;
    Ok(Json(json!({"endpoint": get_endpoint(&id, &eid).await?.json(&id.base)})))
}

async fn delete_endpoint(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(eid): Path<String>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_endpoint", &ctx, &json!({}))?;
    get_endpoint(&id, &eid).await?;
    let mut pe = Query::new("DELETE FROM identity_project_endpoints WHERE endpoint_id = ");
    pe.bind(&eid);
    let mut q = Query::new("DELETE FROM identity_endpoints WHERE id = ");
    q.bind(&eid);
    id.exec(vec![pe, q]).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- regions ------------------------------------------------------------------------

async fn list_regions(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_regions", &ctx, &json!({}))?;
    let mut sql = Query::new(format!("SELECT {} FROM identity_regions WHERE 1 = 1", Region::COLS));
    if let Some(p) = q.get("parent_region_id") {
        sql.push_bind(" AND parent_region_id = ", p);
    }
    sql.push(" ORDER BY id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| Region::from_row(r).map(|x| x.json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(json!({"regions": list, "links": list_links(&id.base, "regions")})))
}

async fn show_region(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(rid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_region", &ctx, &json!({}))?;
    let r = get_region(&id, &rid).await?.ok_or_else(|| IdentityError::not_found("region", &rid))?;
    Ok(Json(json!({"region": r.json(&id.base)})))
}

/// An endpoint may name a region that does not exist yet: Keystone creates it.
async fn ensure_region(id: &Identity, rid: &str) -> Result<()> {
    if rid.is_empty() || rid.len() > 255 {
        return Err(IdentityError::invalid("Invalid input for field 'region_id': must be 1 to 255 characters"));
    }
    if get_region(id, rid).await?.is_none() {
        let mut q = Query::new("INSERT INTO identity_regions (id, description, created_at) VALUES (");
        q.bind(rid).push(", '', ").bind(stratus_core::time::now()).push(") ON CONFLICT DO NOTHING");
        id.exec(vec![q]).await?;
    }
    Ok(())
}

/// Refuses region attributes of the wrong type (a region has only an id, a description
/// and a parent; `parent_id` is what clients mean by `parent_region_id`).
fn check_region_body(b: &serde_json::Map<String, Value>) -> Result<()> {
    for (k, v) in b {
        let ok = match k.as_str() {
            "id" | "description" => v.is_string(),
            "parent_region_id" | "parent_id" => v.is_string() || v.is_null(),
            _ => true,
        };
        if !ok {
            return Err(IdentityError::invalid(format!("Invalid input for field '{k}': {v} is not a string")));
        }
    }
    Ok(())
}

async fn insert_region(id: &Identity, rid: String, body: &Value) -> Result<Region> {
    let b = body_object(body, "region")?;
    check_region_body(b)?;
    if get_region(id, &rid).await?.is_some() {
        return Err(IdentityError::Conflict(format!(
            "Conflict occurred attempting to store region - Duplicate ID, {rid}."
        )));
    }
    let parent = opt_str(b, "parent_region_id")?;
    if let Some(p) = &parent {
        if get_region(id, p).await?.is_none() {
            return Err(IdentityError::not_found("region", p));
        }
    }
    let mut q = Query::new("INSERT INTO identity_regions (id, description, parent_region_id, created_at) VALUES (");
    q.bind(&rid).push(", ").bind(opt_str(b, "description")?.unwrap_or_default()).push(", ").bind(parent);
    q.push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    get_region(id, &rid).await?.ok_or_else(|| IdentityError::not_found("region", rid))
}

async fn create_region(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_region", &ctx, &json!({}))?;
    let rid =
        body.get("region").and_then(|r| r.get("id")).and_then(Value::as_str).map(str::to_string).unwrap_or_else(new_id);
    let r = insert_region(&id, rid, &body).await?;
    Ok((StatusCode::CREATED, Json(json!({"region": r.json(&id.base)}))))
}

async fn put_region(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(rid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_region", &ctx, &json!({}))?;
    let r = insert_region(&id, rid, &body).await?;
    Ok((StatusCode::CREATED, Json(json!({"region": r.json(&id.base)}))))
}

async fn update_region(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(rid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_region", &ctx, &json!({}))?;
    get_region(&id, &rid).await?.ok_or_else(|| IdentityError::not_found("region", &rid))?;
    let b = body_object(&body, "region")?;
    check_region_body(b)?;
    let mut qs = Vec::new();
    if b.contains_key("description") {
        let mut q = Query::new("UPDATE identity_regions SET description = ");
        q.bind(opt_str(b, "description")?.unwrap_or_default()).push_bind(" WHERE id = ", &rid);
        qs.push(q);
    }
    if b.contains_key("parent_region_id") {
        let mut q = Query::new("UPDATE identity_regions SET parent_region_id = ");
        q.bind(opt_str(b, "parent_region_id")?).push_bind(" WHERE id = ", &rid);
        qs.push(q);
    }
    id.exec(qs).await?;
    let r = get_region(&id, &rid).await?.ok_or_else(|| IdentityError::not_found("region", &rid))?;
    Ok(Json(json!({"region": r.json(&id.base)})))
}

async fn delete_region(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(rid): Path<String>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_region", &ctx, &json!({}))?;
    get_region(&id, &rid).await?.ok_or_else(|| IdentityError::not_found("region", &rid))?;
    let mut c = Query::new("SELECT id FROM identity_endpoints WHERE region_id = ");
    c.bind(&rid).push(" LIMIT 1");
    if c.fetch_optional(id.platform.db.reader()).await.map_err(IdentityError::from)?.is_some() {
        return Err(IdentityError::Forbidden(format!("Region {rid} still has endpoints")).into());
    }
    let mut q = Query::new("DELETE FROM identity_regions WHERE id = ");
    q.bind(&rid);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}
