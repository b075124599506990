//! OS-EP-FILTER: endpoint groups (a filter on `service_id`, `region_id`, `interface`) and
//! the endpoints and endpoint groups associated with projects. A project with any
//! association sees only those endpoints in its token catalog; a project with none sees
//! the whole catalog, as in Keystone.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::{new_id, Endpoint};
use crate::state::{body_object, list_links, opt_str, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/OS-EP-FILTER/endpoint_groups", get(list_groups).post(create_group))
        .route(
            "/v3/OS-EP-FILTER/endpoint_groups/{group_id}",
            get(show_group).head(check_group).patch(update_group).delete(delete_group),
        )
        .route("/v3/OS-EP-FILTER/endpoint_groups/{group_id}/projects", get(group_projects))
        .route("/v3/OS-EP-FILTER/endpoint_groups/{group_id}/endpoints", get(group_endpoints))
        .route(
            "/v3/OS-EP-FILTER/endpoint_groups/{group_id}/projects/{project_id}",
            get(show_group_project).put(add_group_project).delete(remove_group_project),
        )
        .route("/v3/OS-EP-FILTER/projects/{project_id}/endpoint_groups", get(project_groups))
        .route("/v3/OS-EP-FILTER/projects/{project_id}/endpoints", get(project_endpoints))
        .route(
            "/v3/OS-EP-FILTER/projects/{project_id}/endpoints/{endpoint_id}",
            get(check_project_endpoint).put(add_project_endpoint).delete(remove_project_endpoint),
        )
        .route("/v3/OS-EP-FILTER/endpoints/{endpoint_id}/projects", get(endpoint_projects))
}

const FILTER_KEYS: &[&str] = &["service_id", "region_id", "interface"];

fn group_json(id: &Identity, r: &AnyRow) -> Result<Value> {
    let gid: String = r.try_get("id")?;
    let filters: Value = serde_json::from_str(&r.try_get::<String, _>("filters")?).unwrap_or(json!({}));
    Ok(json!({
        "id": gid, "name": r.try_get::<String, _>("name")?,
        "description": r.try_get::<Option<String>, _>("description")?, "filters": filters,
        "links": {"self": format!("{}/v3/OS-EP-FILTER/endpoint_groups/{gid}", id.base)}
    }))
}

async fn fetch_group(id: &Identity, gid: &str) -> Result<AnyRow> {
    stratus_db::sqlx::query("SELECT id, name, description, filters FROM identity_endpoint_groups WHERE id = $1")
        .bind(gid)
        .fetch_optional(id.platform.db.reader())
        .await?
        .ok_or_else(|| IdentityError::not_found("endpoint group", gid))
}

fn parse_filters(v: &Value) -> Result<Map<String, Value>> {
    let f =
        v.as_object().ok_or_else(|| IdentityError::invalid("Invalid input for field 'filters': expected an object"))?;
    if f.is_empty() {
        return Err(IdentityError::invalid("Invalid input for field 'filters': it must not be empty"));
    }
    for (k, x) in f {
        if !FILTER_KEYS.contains(&k.as_str()) {
            return Err(IdentityError::invalid(format!(
                "Invalid input for field 'filters': '{k}' is not one of service_id, region_id, interface"
            )));
        }
        if !x.is_string() {
            return Err(IdentityError::invalid(format!("Invalid input for field 'filters.{k}': expected a string")));
        }
    }
    Ok(f.clone())
}

/// Endpoint ids an endpoint group's filters select.
async fn group_endpoint_ids(id: &Identity, filters: &Value) -> Result<Vec<String>> {
    let mut q = Query::new("SELECT id FROM identity_endpoints WHERE 1 = 1");
    for k in FILTER_KEYS {
        if let Some(v) = filters.get(*k).and_then(Value::as_str) {
            q.push(&format!(" AND {k} = ")).bind(v);
        }
    }
    let rows = q.fetch_all(id.platform.db.reader()).await?;
    rows.iter().map(|r| r.try_get::<String, _>(0).map_err(Into::into)).collect()
}

/// The endpoints a project is restricted to, or `None` when it has no association.
pub async fn project_endpoint_filter(id: &Identity, project_id: &str) -> Result<Option<HashSet<String>>> {
    let direct = stratus_db::sqlx::query("SELECT endpoint_id FROM identity_project_endpoints WHERE project_id = $1")
        .bind(project_id)
        .fetch_all(id.platform.db.reader())
        .await?;
    let groups = stratus_db::sqlx::query(
        "SELECT g.filters FROM identity_endpoint_groups g JOIN identity_project_endpoint_groups pg \
         ON pg.endpoint_group_id = g.id WHERE pg.project_id = $1",
    )
    .bind(project_id)
    .fetch_all(id.platform.db.reader())
    .await?;
    if direct.is_empty() && groups.is_empty() {
        return Ok(None);
    }
    let mut out: HashSet<String> = direct.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?;
    for g in groups {
        let filters: Value = serde_json::from_str(&g.try_get::<String, _>(0)?).unwrap_or(json!({}));
        out.extend(group_endpoint_ids(id, &filters).await?);
    }
    Ok(Some(out))
}

fn admin(id: &Identity, ctx: &Ctx, action: &str) -> Result<(), ApiError> {
    id.policy.enforce(action, ctx, &json!({}))?;
    Ok(())
}

async fn list_groups(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:list_endpoint_groups")?;
    let mut sql = Query::new("SELECT id, name, description, filters FROM identity_endpoint_groups WHERE 1 = 1");
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    sql.push(" ORDER BY created_at, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| group_json(&id, r)).collect::<Result<_>>()?;
    Ok(Json(json!({"endpoint_groups": list, "links": list_links(&id.base, "OS-EP-FILTER/endpoint_groups")})))
}

async fn create_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&id, &ctx, "identity:create_endpoint_group")?;
    let b = body_object(&body, "endpoint_group")?;
    if let Some(k) = b.keys().find(|k| !["name", "description", "filters"].contains(&k.as_str())) {
        return Err(IdentityError::invalid(format!(
            "Invalid input for field 'endpoint_group': Additional properties are not allowed ('{k}' was unexpected)"
        ))
        .into());
    }
    let name = crate::state::req_name(b, "name")?;
    let filters =
        parse_filters(b.get("filters").ok_or_else(|| IdentityError::invalid("'filters' is a required property"))?)?;
    let gid = new_id();
    let mut q =
        Query::new("INSERT INTO identity_endpoint_groups (id, name, description, filters, created_at) VALUES (");
    q.bind(&gid).push(", ").bind(name).push(", ").bind(opt_str(b, "description")?).push(", ");
    q.bind(Value::Object(filters).to_string()).push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    Ok((StatusCode::CREATED, Json(json!({"endpoint_group": group_json(&id, &fetch_group(&id, &gid).await?)?}))))
}

async fn show_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(gid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:get_endpoint_group")?;
    Ok(Json(json!({"endpoint_group": group_json(&id, &fetch_group(&id, &gid).await?)?})))
}

async fn check_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(gid): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&id, &ctx, "identity:get_endpoint_group")?;
    fetch_group(&id, &gid).await?;
    Ok(StatusCode::OK)
}

async fn update_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(gid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:update_endpoint_group")?;
    fetch_group(&id, &gid).await?;
    let b = body_object(&body, "endpoint_group")?;
    let mut qs = Vec::new();
    for (k, v) in b {
        let mut q = match k.as_str() {
            "name" => {
                let mut q = Query::new("UPDATE identity_endpoint_groups SET name = ");
                q.bind(crate::state::req_name(b, "name")?);
                q
            }
            "description" => {
                let mut q = Query::new("UPDATE identity_endpoint_groups SET description = ");
                q.bind(opt_str(b, "description")?);
                q
            }
            "filters" => {
                let mut q = Query::new("UPDATE identity_endpoint_groups SET filters = ");
                q.bind(Value::Object(parse_filters(v)?).to_string());
                q
            }
            _ => {
                return Err(IdentityError::invalid(format!(
                    "Invalid input for field 'endpoint_group': Additional properties are not allowed ('{k}' was unexpected)"
                ))
                .into())
            }
        };
        q.push_bind(" WHERE id = ", &gid);
        qs.push(q);
    }
    id.exec(qs).await?;
    Ok(Json(json!({"endpoint_group": group_json(&id, &fetch_group(&id, &gid).await?)?})))
}

async fn delete_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(gid): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&id, &ctx, "identity:delete_endpoint_group")?;
    fetch_group(&id, &gid).await?;
    let mut a = Query::new("DELETE FROM identity_project_endpoint_groups WHERE endpoint_group_id = ");
    a.bind(&gid);
    let mut d = Query::new("DELETE FROM identity_endpoint_groups WHERE id = ");
    d.bind(&gid);
    id.exec(vec![a, d]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn projects_json(id: &Identity, ids: Vec<String>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for p in ids {
        if let Some(p) = id.get_project(&p).await? {
            out.push(p.json(&id.base));
        }
    }
    Ok(out)
}

async fn endpoints_json(id: &Identity, ids: impl IntoIterator<Item = String>) -> Result<Vec<Value>> {
    let ids: Vec<String> = ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = Query::new(format!("SELECT {} FROM identity_endpoints WHERE ", Endpoint::COLS));
    q.push_in("id", ids.iter()).push(" ORDER BY id");
    let rows = q.fetch_all(id.platform.db.reader()).await?;
    rows.iter().map(|r| Endpoint::from_row(r).map(|e| e.json(&id.base))).collect()
}

async fn group_projects(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(gid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:list_projects_associated_with_endpoint_group")?;
    fetch_group(&id, &gid).await?;
    let rows = stratus_db::sqlx::query(
        "SELECT project_id FROM identity_project_endpoint_groups WHERE endpoint_group_id = $1 ORDER BY project_id",
    )
    .bind(&gid)
    .fetch_all(id.platform.db.reader())
    .await
    .map_err(IdentityError::from)?;
    let ids = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(IdentityError::from)?;
    let list = projects_json(&id, ids).await?;
    Ok(Json(
        json!({"projects": list, "links": list_links(&id.base, &format!("OS-EP-FILTER/endpoint_groups/{gid}/projects"))}),
    ))
}

async fn group_endpoints(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(gid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:list_endpoints_associated_with_endpoint_group")?;
    let g = fetch_group(&id, &gid).await?;
    let filters: Value =
        serde_json::from_str(&g.try_get::<String, _>("filters").map_err(IdentityError::from)?).unwrap_or(json!({}));
    let list = endpoints_json(&id, group_endpoint_ids(&id, &filters).await?).await?;
    Ok(Json(
        json!({"endpoints": list, "links": list_links(&id.base, &format!("OS-EP-FILTER/endpoint_groups/{gid}/endpoints"))}),
    ))
}

async fn group_project_exists(id: &Identity, gid: &str, pid: &str) -> Result<bool> {
    let row = stratus_db::sqlx::query(
        "SELECT 1 FROM identity_project_endpoint_groups WHERE endpoint_group_id = $1 AND project_id = $2",
    )
    .bind(gid)
    .bind(pid)
    .fetch_optional(id.platform.db.reader())
    .await?;
    Ok(row.is_some())
}

async fn show_group_project(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((gid, pid)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:get_endpoint_group_in_project")?;
    fetch_group(&id, &gid).await?;
    let p = crate::projects::must_project(&id, &pid).await?;
    if !group_project_exists(&id, &gid, &pid).await? {
        return Err(IdentityError::not_found("endpoint group project association", format!("{gid} {pid}")).into());
    }
    Ok(Json(json!({"project": p.json(&id.base)})))
}

async fn add_group_project(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((gid, pid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin(&id, &ctx, "identity:add_endpoint_group_to_project")?;
    fetch_group(&id, &gid).await?;
    crate::projects::must_project(&id, &pid).await?;
    let mut q = Query::new("INSERT INTO identity_project_endpoint_groups (project_id, endpoint_group_id) VALUES (");
    q.bind(&pid).push(", ").bind(&gid).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_group_project(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((gid, pid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin(&id, &ctx, "identity:remove_endpoint_group_from_project")?;
    let mut q = Query::new("DELETE FROM identity_project_endpoint_groups WHERE endpoint_group_id = ");
    q.bind(&gid).push_bind(" AND project_id = ", &pid);
    if id.exec(vec![q]).await? == 0 {
        return Err(IdentityError::not_found("endpoint group project association", format!("{gid} {pid}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn project_groups(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(pid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:list_endpoint_groups_for_project")?;
    crate::projects::must_project(&id, &pid).await?;
    let rows = stratus_db::sqlx::query(
        "SELECT g.id, g.name, g.description, g.filters FROM identity_endpoint_groups g \
         JOIN identity_project_endpoint_groups pg ON pg.endpoint_group_id = g.id WHERE pg.project_id = $1 ORDER BY g.id",
    )
    .bind(&pid)
    .fetch_all(id.platform.db.reader())
    .await
    .map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| group_json(&id, r)).collect::<Result<_>>()?;
    Ok(Json(
        json!({"endpoint_groups": list, "links": list_links(&id.base, &format!("OS-EP-FILTER/projects/{pid}/endpoint_groups"))}),
    ))
}

async fn project_endpoints(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(pid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:list_endpoints_for_project")?;
    crate::projects::must_project(&id, &pid).await?;
    let ids = project_endpoint_filter(&id, &pid).await?.unwrap_or_default();
    let list = endpoints_json(&id, ids).await?;
    Ok(Json(
        json!({"endpoints": list, "links": list_links(&id.base, &format!("OS-EP-FILTER/projects/{pid}/endpoints"))}),
    ))
}

async fn project_endpoint_exists(id: &Identity, pid: &str, eid: &str) -> Result<bool> {
    let row =
        stratus_db::sqlx::query("SELECT 1 FROM identity_project_endpoints WHERE project_id = $1 AND endpoint_id = $2")
            .bind(pid)
            .bind(eid)
            .fetch_optional(id.platform.db.reader())
            .await?;
    Ok(row.is_some())
}

async fn must_endpoint(id: &Identity, eid: &str) -> Result<()> {
    let row = stratus_db::sqlx::query("SELECT id FROM identity_endpoints WHERE id = $1")
        .bind(eid)
        .fetch_optional(id.platform.db.reader())
        .await?;
    row.map(|_| ()).ok_or_else(|| IdentityError::not_found("endpoint", eid))
}

async fn check_project_endpoint(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((pid, eid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin(&id, &ctx, "identity:check_endpoint_in_project")?;
    crate::projects::must_project(&id, &pid).await?;
    must_endpoint(&id, &eid).await?;
    if !project_endpoint_exists(&id, &pid, &eid).await? {
        return Err(IdentityError::not_found("project endpoint association", format!("{pid} {eid}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn add_project_endpoint(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((pid, eid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin(&id, &ctx, "identity:add_endpoint_to_project")?;
    crate::projects::must_project(&id, &pid).await?;
    must_endpoint(&id, &eid).await?;
    let mut q = Query::new("INSERT INTO identity_project_endpoints (project_id, endpoint_id) VALUES (");
    q.bind(&pid).push(", ").bind(&eid).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_project_endpoint(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((pid, eid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin(&id, &ctx, "identity:remove_endpoint_from_project")?;
    let mut q = Query::new("DELETE FROM identity_project_endpoints WHERE project_id = ");
    q.bind(&pid).push_bind(" AND endpoint_id = ", &eid);
    if id.exec(vec![q]).await? == 0 {
        return Err(IdentityError::not_found("project endpoint association", format!("{pid} {eid}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn endpoint_projects(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(eid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&id, &ctx, "identity:list_projects_for_endpoint")?;
    must_endpoint(&id, &eid).await?;
    let rows = stratus_db::sqlx::query(
        "SELECT project_id FROM identity_project_endpoints WHERE endpoint_id = $1 ORDER BY project_id",
    )
    .bind(&eid)
    .fetch_all(id.platform.db.reader())
    .await
    .map_err(IdentityError::from)?;
    let ids = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(IdentityError::from)?;
    let list = projects_json(&id, ids).await?;
    Ok(Json(
        json!({"projects": list, "links": list_links(&id.base, &format!("OS-EP-FILTER/endpoints/{eid}/projects"))}),
    ))
}
