//! `/v3/users`: users (with the attributes Keystone keeps beside the known ones and
//! their options), their passwords (security compliance in [`crate::compliance`]),
//! projects and groups.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::Query;

use crate::compliance::{self, Setter};
use crate::error::{IdentityError, Result};
use crate::model::{new_id, User};
use crate::revocation::Event;
use crate::state::{body_object, list_links, opt_bool, opt_str, req_name, Identity};
use crate::throttle::Attempt;

/// Attributes of a user that have columns; any other attribute is kept in `extra`.
const KNOWN: &[&str] = &[
    "id",
    "name",
    "domain_id",
    "enabled",
    "default_project_id",
    "description",
    "email",
    "password",
    "options",
    "links",
];

/// The user options Keystone knows (anything else is refused).
const OPTIONS: &[&str] = &[
    "ignore_change_password_upon_first_use",
    "ignore_password_expiry",
    "ignore_lockout_failure_attempts",
    "lock_password",
    "ignore_user_inactivity",
    "multi_factor_auth_enabled",
    "multi_factor_auth_rules",
];

/// Routes that need a token.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/users", get(list).post(create))
        .route("/v3/users/{user_id}", get(show).patch(update).delete(delete))
        .route("/v3/users/{user_id}/projects", get(user_projects))
        .route("/v3/users/{user_id}/groups", get(user_groups))
}

/// `POST /v3/users/{id}/password`: the original password is the credential, so no token
/// is needed (a user whose password expired has none), as in Keystone.
pub fn public_routes() -> Router<Arc<Identity>> {
    Router::new().route("/v3/users/{user_id}/password", post(change_password))
}

/// The `extra` attributes of a request body: everything that is not a known attribute.
fn extra_of(b: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    b.iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Validated user options, merged over `current` (a null value removes an option).
fn merge_options(
    current: &serde_json::Map<String, Value>,
    given: Option<&Value>,
) -> Result<serde_json::Map<String, Value>> {
    let mut out = current.clone();
    let Some(given) = given else { return Ok(out) };
    let obj = given
        .as_object()
        .ok_or_else(|| IdentityError::invalid("Invalid input for field 'options': expected an object"))?;
    for (k, v) in obj {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(IdentityError::invalid(format!(
                "Invalid input for field 'options': Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        match (k.as_str(), v) {
            (_, Value::Null) => {
                out.remove(k);
            }
            ("multi_factor_auth_rules", Value::Array(rules))
                if rules.iter().all(|r| r.as_array().is_some_and(|m| m.iter().all(Value::is_string))) =>
            {
                out.insert(k.clone(), v.clone());
            }
            ("multi_factor_auth_rules", _) => return Err(IdentityError::invalid(
                "Invalid input for field 'options.multi_factor_auth_rules': expected a list of lists of method names",
            )),
            (_, Value::Bool(_)) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {
                return Err(IdentityError::invalid(format!(
                    "Invalid input for field 'options.{k}': expected a boolean"
                )))
            }
        }
    }
    Ok(out)
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
    let options = merge_options(&serde_json::Map::new(), b.get("options"))?;
    let password = opt_str(b, "password")?;
    if let Some(pw) = &password {
        compliance::check_pattern(&id, pw)?;
    }
    let hash = match password {
        Some(pw) => Some(id.hasher.hash(pw).await?),
        None => None,
    };
    let expires = hash.as_ref().and_then(|_| compliance::expiry(&id, &options, Setter::Admin));
    let uid = new_id();
    let now = stratus_core::time::now();
    let mut q = Query::new("INSERT INTO identity_users (id, name, domain_id, enabled, default_project_id, description, email, password_hash, password_created_at, password_expires_at, extra, options, created_at) VALUES (");
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
    q.push(", ").bind(hash.clone()).push(", ").bind(hash.as_ref().map(|_| now.clone())).push(", ").bind(expires);
    q.push(", ").bind(Value::Object(extra_of(b)).to_string()).push(", ").bind(Value::Object(options).to_string());
    q.push(", ").bind(&now).push(")");
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
    if b.get("id").is_some_and(|x| x.as_str() != Some(u.id.as_str())) {
        return Err(IdentityError::invalid("Cannot change the ID of a user.").into());
    }
    if b.get("domain_id").is_some_and(|x| x.as_str() != Some(u.domain_id.as_str())) {
        return Err(IdentityError::invalid("Update of `domain_id` is not allowed.").into());
    }
    let options = merge_options(&u.options, b.get("options"))?;
    let mut extra = u.extra.clone();
    for (k, v) in extra_of(b) {
        if v.is_null() {
            extra.remove(&k);
        } else {
            extra.insert(k, v);
        }
    }
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
    set("extra", Value::Object(extra).to_string().into());
    set("options", Value::Object(options.clone()).to_string().into());
    let mut new_password = false;
    if let Some(pw) = opt_str(b, "password")? {
        // An admin reset: the pattern applies, the history does not (Keystone).
        compliance::check_pattern(&id, &pw)?;
        let h = id.hasher.hash(pw).await?;
        let expires = compliance::expiry(&id, &options, Setter::Admin);
        sets.extend(compliance::set_password(&id, &user_id, u.password_hash.as_deref(), h, expires));
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
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Path(user_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<StatusCode, ApiError> {
    let b = body_object(&body, "user")?;
    if let Some(k) = b.keys().find(|k| !["password", "original_password"].contains(&k.as_str())) {
        return Err(IdentityError::invalid(format!(
            "Invalid input for field 'user': Additional properties are not allowed ('{k}' was unexpected)"
        ))
        .into());
    }
    let original = opt_str(b, "original_password")?
        .ok_or_else(|| IdentityError::invalid("'original_password' is a required property"))?;
    let new = opt_str(b, "password")?.ok_or_else(|| IdentityError::invalid("'password' is a required property"))?;
    if new.is_empty() {
        return Err(IdentityError::invalid("Invalid input for field 'password': must not be empty").into());
    }
    // The original password is a credential: throttled like a login, one 401 for an
    // unknown user and a wrong password alike.
    let source = peer.map(|axum::Extension(axum::extract::ConnectInfo(addr))| addr.ip());
    let attempt = Attempt { source, account: &user_id };
    if let Some(retry_after_secs) = id.throttle.check(attempt) {
        return Err(IdentityError::TooManyAttempts { retry_after_secs }.into());
    }
    let u = id.get_user(&user_id).await?;
    let hash = u.as_ref().and_then(|u| u.password_hash.clone());
    if !id.hasher.verify(original, hash).await.map_err(IdentityError::from)? || u.as_ref().is_none_or(|u| !u.enabled) {
        id.throttle.failed(attempt);
        return Err(IdentityError::Unauthorized("The original password is incorrect.".into()).into());
    }
    let Some(u) = u else { return Err(IdentityError::auth_failed().into()) };
    compliance::check_pattern(&id, &new)?;
    compliance::check_self_service(&id, &u, &new).await?;
    let h = id.hasher.hash(new).await?;
    let expires = compliance::expiry(&id, &u.options, Setter::SelfService);
    id.exec(compliance::set_password(&id, &user_id, u.password_hash.as_deref(), h, expires)).await?;
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
