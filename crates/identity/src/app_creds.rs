//! `/v3/users/{user_id}/application_credentials`: delegated, project-bound credentials
//! whose secret is shown once (only its hash is stored), with their access rules
//! (`/v3/users/{user_id}/access_rules`: the service, method and path a credential may
//! call; a rule is shared by the credentials that name it and outlives them until its
//! owner deletes it).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::new_id;
use crate::revocation::Event;
use crate::state::{body_object, list_links, opt_bool, opt_str, req_name, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/users/{user_id}/application_credentials", get(list).post(create))
        .route("/v3/users/{user_id}/application_credentials/{app_cred_id}", get(show).delete(delete))
        .route("/v3/users/{user_id}/access_rules", get(list_rules))
        .route("/v3/users/{user_id}/access_rules/{access_rule_id}", get(show_rule).delete(delete_rule))
}

/// Python's `isoformat()` of a naive UTC time, which is how Keystone renders an
/// application credential's `expires_at` (no zone suffix, fraction only when non-zero).
fn iso_naive(stored: &str) -> String {
    match stratus_core::time::parse(stored) {
        Some(t) if t.timestamp_subsec_micros() == 0 => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        None => stored.to_string(),
    }
}

fn rule_json(r: &AnyRow) -> Result<Value> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?, "service": r.try_get::<String, _>("service")?,
        "path": r.try_get::<String, _>("path")?, "method": r.try_get::<String, _>("method")?
    }))
}

/// The access rules of an application credential.
async fn rules_of(id: &Identity, ac_id: &str) -> Result<Vec<Value>> {
    let rows = stratus_db::sqlx::query(
        "SELECT r.id, r.service, r.path, r.method FROM identity_access_rules r          JOIN identity_app_cred_access_rules a ON a.access_rule_id = r.id WHERE a.app_cred_id = $1 ORDER BY r.id",
    )
    .bind(ac_id)
    .fetch_all(id.platform.db.reader())
    .await?;
    rows.iter().map(rule_json).collect()
}

const METHODS: &[&str] = &["HEAD", "GET", "POST", "PUT", "PATCH", "DELETE"];

/// Resolves the `access_rules` of a new credential: references to the user's existing
/// rules by id, or new (service, path, method) triples, reusing an identical rule.
/// Returns the rule ids and the statements creating new rules.
async fn resolve_rules(id: &Identity, user_id: &str, given: Option<&Value>) -> Result<(Vec<String>, Vec<Query>)> {
    let list = match given {
        None | Some(Value::Null) => return Ok((Vec::new(), Vec::new())),
        Some(Value::Array(l)) => l,
        Some(_) => return Err(IdentityError::invalid("Invalid input for field 'access_rules': expected a list")),
    };
    let (mut ids, mut qs) = (Vec::new(), Vec::new());
    for r in list {
        let o = r
            .as_object()
            .ok_or_else(|| IdentityError::invalid("Invalid input for field 'access_rules': each rule is an object"))?;
        if let Some(k) = o.keys().find(|k| !["id", "service", "path", "method"].contains(&k.as_str())) {
            return Err(IdentityError::invalid(format!(
                "Invalid input for field 'access_rules': Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        if let Some(rid) = o.get("id").and_then(Value::as_str) {
            let row = stratus_db::sqlx::query("SELECT id FROM identity_access_rules WHERE id = $1 AND user_id = $2")
                .bind(rid)
                .bind(user_id)
                .fetch_optional(id.platform.db.reader())
                .await?;
            if row.is_none() {
                return Err(IdentityError::not_found("access rule", rid));
            }
            ids.push(rid.to_string());
            continue;
        }
        let field = |k: &str| -> Result<String> {
            o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 225).map(str::to_string).ok_or_else(
                || {
                    IdentityError::invalid(format!(
                        "Invalid input for field 'access_rules': '{k}' is a required string"
                    ))
                },
            )
        };
        let (service, path, method) = (field("service")?, field("path")?, field("method")?);
        if !METHODS.contains(&method.as_str()) {
            return Err(IdentityError::invalid(format!(
                "Invalid input for field 'access_rules': method {method:?} is not one of {}",
                METHODS.join(", ")
            )));
        }
        if !path.starts_with('/') {
            return Err(IdentityError::invalid("Invalid input for field 'access_rules': a path starts with '/'"));
        }
        let existing = stratus_db::sqlx::query(
            "SELECT id FROM identity_access_rules WHERE user_id = $1 AND service = $2 AND path = $3 AND method = $4",
        )
        .bind(user_id)
        .bind(&service)
        .bind(&path)
        .bind(&method)
        .fetch_optional(id.platform.db.reader())
        .await?;
        match existing {
            Some(row) => ids.push(row.try_get(0)?),
            None => {
                let rid = new_id();
                let mut q = Query::new(
                    "INSERT INTO identity_access_rules (id, user_id, service, path, method, created_at) VALUES (",
                );
                q.bind(&rid).push(", ").bind(user_id).push(", ").bind(service).push(", ").bind(path).push(", ");
                q.bind(method).push(", ").bind(stratus_core::time::now()).push(")");
                qs.push(q);
                ids.push(rid);
            }
        }
    }
    ids.dedup();
    Ok((ids, qs))
}

const COLS: &str = "id, user_id, name, description, project_id, expires_at, unrestricted, roles";

async fn to_json(id: &Identity, r: &AnyRow) -> Result<Value> {
    let ac_id: String = r.try_get("id")?;
    let user_id: String = r.try_get("user_id")?;
    let role_ids: Vec<String> = serde_json::from_str(&r.try_get::<String, _>("roles")?).unwrap_or_default();
    let mut roles = Vec::new();
    for rid in role_ids {
        if let Some(role) = id.get_role(&rid).await? {
            roles.push(json!({"id": role.id, "name": role.name, "domain_id": role.domain_id}));
        }
    }
    let expires: Option<String> = r.try_get("expires_at")?;
    let description: String = r.try_get("description")?;
    Ok(json!({
        "id": ac_id, "name": r.try_get::<String, _>("name")?,
        "description": if description.is_empty() { Value::Null } else { json!(description) },
        "project_id": r.try_get::<String, _>("project_id")?, "user_id": user_id,
        "expires_at": expires.as_deref().map(iso_naive),
        "unrestricted": stratus_db::flag(r, "unrestricted"), "roles": roles, "access_rules": rules_of(id, &ac_id).await?,
        "links": {"self": format!("{}/v3/users/{user_id}/application_credentials/{ac_id}", id.base)}
    }))
}

fn target(user_id: &str) -> Value {
    json!({"user_id": user_id, "target": {"user": {"id": user_id}}})
}

async fn fetch(id: &Identity, user_id: &str, ac_id: &str) -> Result<AnyRow> {
    let sql = format!("SELECT {COLS} FROM identity_app_creds WHERE id = $1 AND user_id = $2");
    stratus_db::sqlx::query(&sql)
        .bind(ac_id)
        .bind(user_id)
        .fetch_optional(id.platform.db.reader())
        .await?
        .ok_or_else(|| IdentityError::not_found("application credential", ac_id))
}

async fn list(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_application_credentials", &ctx, &target(&user_id))?;
    let mut sql = Query::new(format!("SELECT {COLS} FROM identity_app_creds WHERE user_id = "));
    sql.bind(&user_id);
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    sql.push(" ORDER BY name, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(to_json(&id, r).await?);
    }
    Ok(Json(
        json!({"application_credentials": out, "links": list_links(&id.base, &format!("users/{user_id}/application_credentials"))}),
    ))
}

async fn show(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((user_id, ac_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_application_credential", &ctx, &target(&user_id))?;
    let r = fetch(&id, &user_id, &ac_id).await?;
    Ok(Json(json!({"application_credential": to_json(&id, &r).await?})))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_application_credential", &ctx, &target(&user_id))?;
    if let Some(ac) = &ctx.application_credential_id {
        let r = stratus_db::sqlx::query("SELECT unrestricted FROM identity_app_creds WHERE id = $1")
            .bind(ac)
            .fetch_optional(id.platform.db.reader())
            .await
            .map_err(IdentityError::from)?;
        let unrestricted = match r {
            Some(r) => stratus_db::flag(&r, "unrestricted"),
            None => false,
        };
        if !unrestricted {
            return Err(IdentityError::Forbidden(
                "A restricted application credential cannot create application credentials.".into(),
            )
            .into());
        }
    }
    let project_id = ctx
        .project_id
        .clone()
        .ok_or_else(|| IdentityError::Forbidden("Application credentials need a project-scoped token.".into()))?;
    let b = body_object(&body, "application_credential")?;
    let name = req_name(b, "name")?;
    let mut c = Query::new("SELECT id FROM identity_app_creds WHERE user_id = ");
    c.bind(&user_id).push_bind(" AND name = ", &name);
    if c.fetch_optional(id.platform.db.reader()).await.map_err(IdentityError::from)?.is_some() {
        return Err(IdentityError::Conflict(format!(
            "Conflict occurred attempting to store application_credential - Duplicate entry found with name {name}."
        ))
        .into());
    }
    // Roles: a subset of the caller's roles on the project (default: all of them).
    let token_roles: Vec<(String, String)> = ctx.role_ids.iter().cloned().zip(ctx.roles.iter().cloned()).collect();
    let roles: Vec<String> = match b.get("roles") {
        // Clients send an empty list for "not given".
        None | Some(Value::Null) => token_roles.iter().map(|(i, _)| i.clone()).collect(),
        Some(Value::Array(list)) if list.is_empty() => token_roles.iter().map(|(i, _)| i.clone()).collect(),
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for r in list {
                let found = if let Some(rid) = r.get("id").and_then(Value::as_str) {
                    token_roles.iter().find(|(i, _)| i == rid)
                } else if let Some(n) = r.get("name").and_then(Value::as_str) {
                    token_roles.iter().find(|(_, nn)| nn == n)
                } else {
                    return Err(IdentityError::invalid("A role needs an id or a name").into());
                };
                match found {
                    Some((i, _)) => out.push(i.clone()),
                    None => {
                        return Err(IdentityError::Forbidden(format!(
                            "Role {r} is not one the user has on the project"
                        ))
                        .into())
                    }
                }
            }
            out
        }
        Some(_) => return Err(IdentityError::invalid("Invalid input for field 'roles': expected a list").into()),
    };
    let expires_at = match opt_str(b, "expires_at")? {
        Some(s) => {
            let t = stratus_core::time::parse(&s)
                .ok_or_else(|| IdentityError::invalid(format!("Invalid expires_at {s:?}")))?;
            if t <= chrono::Utc::now() {
                return Err(IdentityError::invalid("expires_at is in the past").into());
            }
            Some(stratus_core::time::to_storage(t))
        }
        None => None,
    };
    let secret = match opt_str(b, "secret")? {
        Some(s) if !s.is_empty() => s,
        _ => {
            let mut raw = [0u8; 64];
            rand::thread_rng().fill_bytes(&mut raw);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        }
    };
    let (rule_ids, mut rule_writes) = resolve_rules(&id, &user_id, b.get("access_rules")).await?;
    let hash = id.hasher.hash(secret.clone()).await?;
    let ac_id = new_id();
    let mut q = Query::new("INSERT INTO identity_app_creds (id, user_id, name, description, secret_hash, project_id, expires_at, unrestricted, roles, created_at) VALUES (");
    q.bind(&ac_id)
        .push(", ")
        .bind(&user_id)
        .push(", ")
        .bind(&name)
        .push(", ")
        .bind(opt_str(b, "description")?.unwrap_or_default());
    q.push(", ")
        .bind(hash)
        .push(", ")
        .bind(&project_id)
        .push(", ")
        .bind(expires_at)
        .push(", ")
        .bind(opt_bool(b, "unrestricted")?.unwrap_or(false));
    q.push(", ")
        .bind(serde_json::to_string(&roles).unwrap_or_else(|_| "[]".into()))
        .push(", ")
        .bind(stratus_core::time::now())
        .push(")");
    rule_writes.insert(0, q);
    for rid in &rule_ids {
        let mut l = Query::new("INSERT INTO identity_app_cred_access_rules (app_cred_id, access_rule_id) VALUES (");
        l.bind(&ac_id).push(", ").bind(rid).push(")");
        rule_writes.push(l);
    }
    id.exec(rule_writes).await?;
    let r = fetch(&id, &user_id, &ac_id).await?;
    let mut v = to_json(&id, &r).await?;
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(json!({"application_credential": v}))))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((user_id, ac_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_application_credential", &ctx, &target(&user_id))?;
    fetch(&id, &user_id, &ac_id).await?;
    let mut l = Query::new("DELETE FROM identity_app_cred_access_rules WHERE app_cred_id = ");
    l.bind(&ac_id);
    let mut q = Query::new("DELETE FROM identity_app_creds WHERE id = ");
    q.bind(&ac_id);
    id.exec(vec![l, q]).await?;
    id.revoke(Event { app_cred_id: Some(ac_id), ..Default::default() }).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- access rules -----------------------------------------------------------------------

async fn list_rules(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_access_rules", &ctx, &target(&user_id))?;
    let mut sql = Query::new("SELECT id, service, path, method FROM identity_access_rules WHERE user_id = ");
    sql.bind(&user_id);
    for k in ["service", "path", "method"] {
        if let Some(v) = q.get(k) {
            sql.push(&format!(" AND {k} = ")).bind(v);
        }
    }
    sql.push(" ORDER BY created_at, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(rule_json).collect::<Result<_>>()?;
    Ok(Json(json!({"access_rules": list, "links": list_links(&id.base, &format!("users/{user_id}/access_rules"))})))
}

async fn fetch_rule(id: &Identity, user_id: &str, rule_id: &str) -> Result<AnyRow> {
    stratus_db::sqlx::query(
        "SELECT id, service, path, method FROM identity_access_rules WHERE id = $1 AND user_id = $2",
    )
    .bind(rule_id)
    .bind(user_id)
    .fetch_optional(id.platform.db.reader())
    .await?
    .ok_or_else(|| IdentityError::not_found("access rule", rule_id))
}

async fn show_rule(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((user_id, rule_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_access_rule", &ctx, &target(&user_id))?;
    let r = fetch_rule(&id, &user_id, &rule_id).await?;
    Ok(Json(json!({"access_rule": rule_json(&r)?})))
}

async fn delete_rule(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((user_id, rule_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_access_rule", &ctx, &target(&user_id))?;
    fetch_rule(&id, &user_id, &rule_id).await?;
    let used =
        stratus_db::sqlx::query("SELECT 1 FROM identity_app_cred_access_rules WHERE access_rule_id = $1 LIMIT 1")
            .bind(&rule_id)
            .fetch_optional(id.platform.db.reader())
            .await
            .map_err(IdentityError::from)?;
    if used.is_some() {
        return Err(IdentityError::Forbidden(format!(
            "Cannot delete access rule {rule_id}: an application credential still uses it."
        ))
        .into());
    }
    let mut q = Query::new("DELETE FROM identity_access_rules WHERE id = ");
    q.bind(&rule_id);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}
