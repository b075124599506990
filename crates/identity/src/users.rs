//! `/v3/users`: users, their passwords, projects and groups.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::{new_id, User};
use crate::revocation::Event;
use crate::state::{body_object, list_links, opt_bool, opt_str, req_name, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/users", get(list).post(create))
        .route("/v3/users/{user_id}", get(show).patch(update).delete(delete))
        .route("/v3/users/{user_id}/password", post(change_password))
        .route("/v3/users/{user_id}/projects", get(user_projects))
        .route("/v3/users/{user_id}/groups", get(user_groups))
}

/// Loads a user or 404.
pub async fn must_user(id: &Identity, user_id: &str) -> Result<User> {
    id.get_user(user_id).await?.ok_or_else(|| IdentityError::not_found("user", user_id))
}

fn target(u: &User) -> Value {
    json!({"target": {"user": {"id": u.id, "domain_id": u.domain_id}}, "user_id": u.id, "domain_id": u.domain_id})
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_users", &ctx, &json!({"domain_id": q.get("domain_id")}))?;
    let mut sql = Query::new(format!("SELECT {} FROM identity_users WHERE 1 = 1", User::COLS));
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    if let Some(d) = q.get("domain_id") {
        sql.push_bind(" AND domain_id = ", d);
    }
    if let Some(e) = q.bool("enabled")? {
        sql.push_bind(" AND enabled = ", e);
    }
    sql.push(" ORDER BY name, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let users: Vec<Value> = rows.iter().map(|r| User::from_row(r).map(|u| u.json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(json!({"users": users, "links": list_links(&id.base, "users")})))
}

async fn show(State(id): State<Arc<Identity>>, ctx: Ctx, Path(user_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let u = id.get_user(&user_id).await?;
    let t = match &u {
        Some(u) => target(u),
        None => json!({"target": {"user": {"id": user_id}}}),
    };
    id.policy.enforce("identity:get_user", &ctx, &t)?;
    let u = u.ok_or_else(|| IdentityError::not_found("user", &user_id))?;
    Ok(Json(json!({"user": u.json(&id.base)})))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body_object(&body, "user")?;
    let name = req_name(b, "name")?;
    let domain_id = opt_str(b, "domain_id")?.or(ctx.domain_id.clone()).unwrap_or_else(|| "default".into());
    id.policy.enforce(
        "identity:create_user",
        &ctx,
        &json!({"target": {"user": {"domain_id": domain_id}}, "domain_id": domain_id}),
    )?;
    if id.get_domain(&domain_id).await?.is_none() {
        return Err(IdentityError::not_found("domain", &domain_id).into());
    }
    if id.find_user(&domain_id, &name).await?.is_some() {
        return Err(IdentityError::Conflict(format!(
            "Conflict occurred attempting to store user - Duplicate entry found with name {name} at domain ID {domain_id}."
        ))
        .into());
    }
    let default_project = opt_str(b, "default_project_id")?;
    if let Some(p) = &default_project {
        if id.get_project(p).await?.is_none() {
            return Err(IdentityError::not_found("project", p).into());
        }
    }
    let hash = match opt_str(b, "password")? {
        Some(pw) => Some(id.hasher.hash(pw).await?),
        None => None,
    };
    let uid = new_id();
    let now = stratus_core::time::now();
    let mut q = Query::new("INSERT INTO identity_users (id, name, domain_id, enabled, default_project_id, description, email, password_hash, password_created_at, created_at) VALUES (");
    q.bind(&uid)
        .push(", ")
        .bind(&name)
        .push(", ")
        .bind(&domain_id)
        .push(", ")
        .bind(opt_bool(b, "enabled")?.unwrap_or(true));
    q.push(", ")
        .bind(default_project)
        .push(", ")
        .bind(opt_str(b, "description")?)
        .push(", ")
        .bind(opt_str(b, "email")?);
    q.push(", ").bind(hash.clone()).push(", ").bind(hash.as_ref().map(|_| now.clone())).push(", ").bind(&now).push(")");
    id.exec(vec![q]).await?;
    let u = must_user(&id, &uid).await?;
    Ok((StatusCode::CREATED, Json(json!({"user": u.json(&id.base)}))))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let u = must_user(&id, &user_id).await?;
    id.policy.enforce("identity:update_user", &ctx, &target(&u))?;
    let b = body_object(&body, "user")?;
    let mut sets: Vec<Query> = Vec::new();
    let mut set = |col: &str, v: stratus_db::Arg| {
        let mut q = Query::new(format!("UPDATE identity_users SET {col} = "));
        q.bind(v).push_bind(" WHERE id = ", &user_id);
        sets.push(q);
    };
    if b.contains_key("name") {
        let name = req_name(b, "name")?;
        if name != u.name && id.find_user(&u.domain_id, &name).await?.is_some() {
            return Err(IdentityError::duplicate("user", &name).into());
        }
        set("name", name.into());
    }
    if let Some(e) = opt_bool(b, "enabled")? {
        set("enabled", e.into());
        if e {
            // Re-enabling clears a lockout, as in Keystone.
            set("failed_auth_count", 0i64.into());
        }
    }
    if b.contains_key("default_project_id") {
        let p = opt_str(b, "default_project_id")?;
        if let Some(pid) = &p {
            if id.get_project(pid).await?.is_none() {
                return Err(IdentityError::not_found("project", pid).into());
            }
        }
        set("default_project_id", p.into());
    }
    if b.contains_key("description") {
        set("description", opt_str(b, "description")?.into());
    }
    if b.contains_key("email") {
        set("email", opt_str(b, "email")?.into());
    }
    let mut new_password = false;
    if let Some(pw) = opt_str(b, "password")? {
        let h = id.hasher.hash(pw).await?;
        set("password_hash", h.into());
        set("password_created_at", stratus_core::time::now().into());
        new_password = true;
    }
    id.exec(sets).await?;
    if new_password || opt_bool(b, "enabled")? == Some(false) {
        id.revoke(Event { user_id: Some(user_id.clone()), ..Default::default() }).await?;
    }
    let u = must_user(&id, &user_id).await?;
    Ok(Json(json!({"user": u.json(&id.base)})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = must_user(&id, &user_id).await?;
    id.policy.enforce("identity:delete_user", &ctx, &target(&u))?;
    let mut a = Query::new("DELETE FROM identity_assignments WHERE actor_type = 'user' AND actor_id = ");
    a.bind(&user_id);
    let mut d = Query::new("DELETE FROM identity_users WHERE id = ");
    d.bind(&user_id);
    id.exec(vec![a, d]).await?;
    id.revoke(Event { user_id: Some(user_id), ..Default::default() }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_password(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce(
        "identity:change_password",
        &ctx,
        &json!({"target": {"user": {"id": user_id}}, "user_id": user_id}),
    )?;
    let b = body_object(&body, "user")?;
    let original = opt_str(b, "original_password")?
        .ok_or_else(|| IdentityError::invalid("'original_password' is a required property"))?;
    let new = opt_str(b, "password")?.ok_or_else(|| IdentityError::invalid("'password' is a required property"))?;
    let u = must_user(&id, &user_id).await?;
    if !id.hasher.verify(original, u.password_hash.clone()).await.map_err(IdentityError::from)? {
        return Err(IdentityError::Unauthorized("The original password is incorrect.".into()).into());
    }
    let h = id.hasher.hash(new).await?;
    let mut q = Query::new("UPDATE identity_users SET password_hash = ");
    q.bind(h).push_bind(", password_created_at = ", stratus_core::time::now()).push_bind(" WHERE id = ", &user_id);
    id.exec(vec![q]).await?;
    id.revoke(Event { user_id: Some(user_id), ..Default::default() }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_projects(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce(
        "identity:list_user_projects",
        &ctx,
        &json!({"user_id": user_id, "target": {"user": {"id": user_id}}}),
    )?;
    must_user(&id, &user_id).await?;
    let projects = crate::projects::projects_of_user(&id, &user_id).await?;
    let list: Vec<Value> = projects.iter().map(|p| p.json(&id.base)).collect();
    Ok(Json(json!({"projects": list, "links": list_links(&id.base, &format!("users/{user_id}/projects"))})))
}

async fn user_groups(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce(
        "identity:list_groups_for_user",
        &ctx,
        &json!({"user_id": user_id, "target": {"user": {"id": user_id}}}),
    )?;
    must_user(&id, &user_id).await?;
    let groups = crate::groups::groups_of_user(&id, &user_id).await?;
    let list: Vec<Value> = groups.iter().map(|g| g.json(&id.base)).collect();
    Ok(Json(json!({"groups": list, "links": list_links(&id.base, &format!("users/{user_id}/groups"))})))
}
