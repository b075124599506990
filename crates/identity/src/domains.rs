//! `/v3/domains`.

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
use crate::model::{new_id, Domain};
use crate::projects::NAME_MAX;
use crate::revocation::Event;
use crate::state::{body_object, list_links, opt_bool, opt_str, req_name_max, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/domains", get(list).post(create))
        .route("/v3/domains/{domain_id}", get(show).patch(update).delete(delete))
}

/// Loads a domain or 404.
pub async fn must_domain(id: &Identity, domain_id: &str) -> Result<Domain> {
    id.get_domain(domain_id).await?.ok_or_else(|| IdentityError::not_found("domain", domain_id))
}

fn target(domain_id: &str) -> Value {
    json!({"target": {"domain": {"id": domain_id}}, "domain_id": domain_id})
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_domains", &ctx, &json!({}))?;
    let mut sql = Query::new(format!("SELECT {} FROM identity_domains WHERE 1 = 1", Domain::COLS));
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    if let Some(e) = q.bool("enabled")? {
        sql.push_bind(" AND enabled = ", e);
    }
    sql.push(" ORDER BY name, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| Domain::from_row(r).map(|d| d.json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(json!({"domains": list, "links": list_links(&id.base, "domains")})))
}

async fn show(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(domain_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_domain", &ctx, &target(&domain_id))?;
    let d = must_domain(&id, &domain_id).await?;
    Ok(Json(json!({"domain": d.json(&id.base)})))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_domain", &ctx, &json!({}))?;
    let b = body_object(&body, "domain")?;
    let name = req_name_max(b, "name", NAME_MAX)?;
    if id.find_domain(&name).await?.is_some() {
        return Err(IdentityError::duplicate("domain", &name).into());
    }
    let did = opt_str(b, "explicit_domain_id")?.unwrap_or_else(new_id);
    let mut q = Query::new("INSERT INTO identity_domains (id, name, description, enabled, created_at) VALUES (");
    q.bind(&did).push(", ").bind(&name).push(", ").bind(opt_str(b, "description")?.unwrap_or_default());
    q.push(", ").bind(opt_bool(b, "enabled")?.unwrap_or(true)).push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    let d = must_domain(&id, &did).await?;
    Ok((StatusCode::CREATED, Json(json!({"domain": d.json(&id.base)}))))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(domain_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_domain", &ctx, &target(&domain_id))?;
    let d = must_domain(&id, &domain_id).await?;
    let b = body_object(&body, "domain")?;
    let mut qs = Vec::new();
    if b.contains_key("name") {
        let name = req_name_max(b, "name", NAME_MAX)?;
        if name != d.name && id.find_domain(&name).await?.is_some() {
            return Err(IdentityError::duplicate("domain", &name).into());
        }
        let mut q = Query::new("UPDATE identity_domains SET name = ");
        q.bind(name).push_bind(" WHERE id = ", &domain_id);
        qs.push(q);
    }
    if b.contains_key("description") {
        let mut q = Query::new("UPDATE identity_domains SET description = ");
        q.bind(opt_str(b, "description")?.unwrap_or_default()).push_bind(" WHERE id = ", &domain_id);
        qs.push(q);
    }
    let enabled = opt_bool(b, "enabled")?;
    if let Some(e) = enabled {
        if !e && domain_id == crate::bootstrap::DEFAULT_DOMAIN {
            return Err(IdentityError::invalid("The default domain cannot be disabled").into());
        }
        let mut q = Query::new("UPDATE identity_domains SET enabled = ");
        q.bind(e).push_bind(" WHERE id = ", &domain_id);
        qs.push(q);
    }
    id.exec(qs).await?;
    if enabled == Some(false) && d.enabled {
        id.revoke(Event { domain_id: Some(domain_id.clone()), ..Default::default() }).await?;
    }
    let d = must_domain(&id, &domain_id).await?;
    Ok(Json(json!({"domain": d.json(&id.base)})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(domain_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_domain(&id, &ctx, &domain_id).await
}

/// Deletes a disabled domain and everything in it (also `DELETE /v3/projects/{id}` of a
/// project acting as a domain).
pub async fn delete_domain(id: &Identity, ctx: &Ctx, domain_id: &str) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_domain", ctx, &target(domain_id))?;
    let d = must_domain(id, domain_id).await?;
    if d.enabled {
        return Err(IdentityError::Forbidden(
            "Cannot delete a domain that is enabled, please disable it first.".into(),
        )
        .into());
    }
    // Everything in the domain goes with it, as in Keystone.
    let mut qs = Vec::new();
    for (sql_a, sql_b) in [
        ("DELETE FROM identity_assignments WHERE target_type = 'project' AND target_id IN (SELECT id FROM identity_projects WHERE domain_id = ", ")"),
        ("DELETE FROM identity_assignments WHERE actor_type = 'user' AND actor_id IN (SELECT id FROM identity_users WHERE domain_id = ", ")"),
        ("DELETE FROM identity_assignments WHERE actor_type = 'group' AND actor_id IN (SELECT id FROM identity_groups WHERE domain_id = ", ")"),
        ("DELETE FROM identity_assignments WHERE role_id IN (SELECT id FROM identity_roles WHERE domain_id = ", ")"),
        ("DELETE FROM identity_implied_roles WHERE prior_role_id IN (SELECT id FROM identity_roles WHERE domain_id = ", ")"),
        ("DELETE FROM identity_implied_roles WHERE implied_role_id IN (SELECT id FROM identity_roles WHERE domain_id = ", ")"),
        ("DELETE FROM identity_assignments WHERE target_type = 'domain' AND target_id = ", ""),
        ("DELETE FROM identity_domain_configs WHERE domain_id = ", ""),
        ("DELETE FROM identity_projects WHERE domain_id = ", ""),
        ("DELETE FROM identity_users WHERE domain_id = ", ""),
        ("DELETE FROM identity_groups WHERE domain_id = ", ""),
        ("DELETE FROM identity_roles WHERE domain_id = ", ""),
        ("DELETE FROM identity_domains WHERE id = ", ""),
    ] {
        let mut q = Query::new(sql_a);
        q.bind(domain_id).push(sql_b);
        qs.push(q);
    }
    id.exec(qs).await?;
    Ok(StatusCode::NO_CONTENT)
}
