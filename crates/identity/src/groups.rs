//! `/v3/groups` and group membership.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::{new_id, Group, User};
use crate::revocation::Event;
use crate::state::{body_object, list_links, opt_str, req_name, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/groups", get(list).post(create))
        .route("/v3/groups/{group_id}", get(show).patch(update).delete(delete))
        .route("/v3/groups/{group_id}/users", get(list_members))
        .route("/v3/groups/{group_id}/users/{user_id}", put(add_member).get(check_member).delete(remove_member))
}

/// A group by id.
pub async fn get_group(id: &Identity, group_id: &str) -> Result<Option<Group>> {
    let sql = format!("SELECT {} FROM identity_groups WHERE id = $1", Group::COLS);
    let row = stratus_db::sqlx::query(&sql).bind(group_id).fetch_optional(id.platform.db.reader()).await?;
    row.as_ref().map(Group::from_row).transpose()
}

/// A group or 404.
pub async fn must_group(id: &Identity, group_id: &str) -> Result<Group> {
    get_group(id, group_id).await?.ok_or_else(|| IdentityError::not_found("group", group_id))
}

/// User ids in a group.
pub async fn member_ids(id: &Identity, group_id: &str) -> Result<Vec<String>> {
    let rows = stratus_db::sqlx::query("SELECT user_id FROM identity_group_members WHERE group_id = $1")
        .bind(group_id)
        .fetch_all(id.platform.db.reader())
        .await?;
    rows.iter().map(|r| r.try_get::<String, _>(0).map_err(Into::into)).collect()
}

/// Groups a user is in.
pub async fn groups_of_user(id: &Identity, user_id: &str) -> Result<Vec<Group>> {
    let mut out = Vec::new();
    for g in id.user_group_ids(user_id).await? {
        if let Some(g) = get_group(id, &g).await? {
            out.push(g);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_groups", &ctx, &json!({}))?;
    let mut sql = Query::new(format!("SELECT {} FROM identity_groups WHERE 1 = 1", Group::COLS));
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    if let Some(d) = q.get("domain_id") {
        sql.push_bind(" AND domain_id = ", d);
    }
    sql.push(" ORDER BY name, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| Group::from_row(r).map(|g| g.json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(json!({"groups": list, "links": list_links(&id.base, "groups")})))
}

async fn show(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(group_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_group", &ctx, &json!({}))?;
    Ok(Json(json!({"group": must_group(&id, &group_id).await?.json(&id.base)})))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_group", &ctx, &json!({}))?;
    let b = body_object(&body, "group")?;
    let name = req_name(b, "name")?;
    if b.get("domain_id").is_some_and(Value::is_null) {
        return Err(IdentityError::invalid("Invalid input for field 'domain_id': None is not of type 'string'").into());
    }
    let domain_id = opt_str(b, "domain_id")?.unwrap_or_else(|| "default".into());
    if id.get_domain(&domain_id).await?.is_none() {
        return Err(IdentityError::not_found("domain", &domain_id).into());
    }
    let mut c = Query::new("SELECT id FROM identity_groups WHERE domain_id = ");
    c.bind(&domain_id).push_bind(" AND name = ", &name);
    if c.fetch_optional(id.platform.db.reader()).await.map_err(IdentityError::from)?.is_some() {
        return Err(IdentityError::duplicate("group", &name).into());
    }
    let gid = new_id();
    let mut q = Query::new("INSERT INTO identity_groups (id, name, domain_id, description, created_at) VALUES (");
    q.bind(&gid).push(", ").bind(&name).push(", ").bind(&domain_id).push(", ");
    q.bind(opt_str(b, "description")?.unwrap_or_default()).push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    Ok((StatusCode::CREATED, Json(json!({"group": must_group(&id, &gid).await?.json(&id.base)}))))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(group_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_group", &ctx, &json!({}))?;
    let g = must_group(&id, &group_id).await?;
    let b = body_object(&body, "group")?;
    if b.get("id").is_some_and(|x| x.as_str() != Some(g.id.as_str())) {
        return Err(IdentityError::invalid("Cannot change the ID of a group.").into());
    }
    if b.get("domain_id").is_some_and(|x| x.as_str() != Some(g.domain_id.as_str())) {
        return Err(IdentityError::invalid("Update of `domain_id` is not allowed.").into());
    }
    let mut qs = Vec::new();
    if b.contains_key("name") {
        let mut q = Query::new("UPDATE identity_groups SET name = ");
        q.bind(req_name(b, "name")?).push_bind(" WHERE id = ", &group_id);
        qs.push(q);
    }
    if b.contains_key("description") {
        let mut q = Query::new("UPDATE identity_groups SET description = ");
        q.bind(opt_str(b, "description")?.unwrap_or_default()).push_bind(" WHERE id = ", &group_id);
        qs.push(q);
    }
    id.exec(qs).await?;
    Ok(Json(json!({"group": must_group(&id, &group_id).await?.json(&id.base)})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(group_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_group", &ctx, &json!({}))?;
    must_group(&id, &group_id).await?;
    let members = member_ids(&id, &group_id).await?;
    let mut a = Query::new("DELETE FROM identity_assignments WHERE actor_type = 'group' AND actor_id = ");
    a.bind(&group_id);
    let mut d = Query::new("DELETE FROM identity_groups WHERE id = ");
    d.bind(&group_id);
    id.exec(vec![a, d]).await?;
    for u in members {
        id.revoke(Event { user_id: Some(u), ..Default::default() }).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list_members(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(group_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_users_in_group", &ctx, &json!({}))?;
    must_group(&id, &group_id).await?;
    let mut users = Vec::new();
    for u in member_ids(&id, &group_id).await? {
        if let Some(u) = id.get_user(&u).await? {
            users.push(u);
        }
    }
    users.sort_by(|a: &User, b: &User| a.name.cmp(&b.name));
    let list: Vec<Value> = users.iter().map(|u| u.json(&id.base)).collect();
    Ok(Json(json!({"users": list, "links": list_links(&id.base, &format!("groups/{group_id}/users"))})))
}

async fn add_member(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:add_user_to_group", &ctx, &json!({}))?;
    must_group(&id, &group_id).await?;
    id.get_user(&user_id).await?.ok_or_else(|| IdentityError::not_found("user", &user_id))?;
    let mut q = Query::new("INSERT INTO identity_group_members (group_id, user_id) VALUES (");
    q.bind(&group_id).push(", ").bind(&user_id).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_member(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:check_user_in_group", &ctx, &json!({}))?;
    must_group(&id, &group_id).await?;
    id.get_user(&user_id).await?.ok_or_else(|| IdentityError::not_found("user", &user_id))?;
    if member_ids(&id, &group_id).await?.contains(&user_id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(IdentityError::NotFound { kind: "membership", id: format!("user {user_id} in group {group_id}") }.into())
    }
}

async fn remove_member(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:remove_user_from_group", &ctx, &json!({}))?;
    must_group(&id, &group_id).await?;
    let mut q = Query::new("DELETE FROM identity_group_members WHERE group_id = ");
    q.bind(&group_id).push_bind(" AND user_id = ", &user_id);
    if id.exec(vec![q]).await? == 0 {
        return Err(
            IdentityError::NotFound { kind: "membership", id: format!("user {user_id} in group {group_id}") }.into()
        );
    }
    id.revoke(Event { user_id: Some(user_id), ..Default::default() }).await?;
    Ok(StatusCode::NO_CONTENT)
}
