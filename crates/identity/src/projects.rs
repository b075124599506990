//! `/v3/projects`: projects (with `parent_id` hierarchy, `enabled`, tags, and the
//! attributes Keystone keeps beside the known ones), including projects acting as
//! domains (`is_domain: true`): those are the domains themselves, shown in project form.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::{new_id, Domain, Project};
use crate::revocation::Event;
use crate::state::{body_object, list_links, opt_bool, opt_str, req_name_max, Identity};

/// Keystone's limit on project (and domain) names.
pub const NAME_MAX: usize = 64;

/// Attributes of a project that have columns; any other attribute is kept in `extra`.
const KNOWN: &[&str] =
    &["id", "name", "domain_id", "parent_id", "description", "enabled", "is_domain", "tags", "options", "links"];

fn extra_of(b: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    b.iter().filter(|(k, _)| !KNOWN.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A domain in project form (a project acting as a domain).
fn domain_as_project(d: &Domain) -> Project {
    Project {
        id: d.id.clone(),
        name: d.name.clone(),
        domain_id: d.id.clone(),
        parent_id: None,
        description: d.description.clone(),
        enabled: d.enabled,
        is_domain: true,
        tags: Vec::new(),
        extra: serde_json::Map::new(),
    }
}

/// A project by id, or a domain in project form.
async fn project_or_domain(id: &Identity, project_id: &str) -> Result<Option<Project>> {
    if let Some(p) = id.get_project(project_id).await? {
        return Ok(Some(p));
    }
    Ok(id.get_domain(project_id).await?.map(|d| domain_as_project(&d)))
}

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/projects", get(list).post(create))
        .route("/v3/projects/{project_id}", get(show).patch(update).delete(delete))
        .route("/v3/projects/{project_id}/tags", get(list_tags).put(replace_tags).delete(clear_tags))
        .route("/v3/projects/{project_id}/tags/{tag}", get(check_tag).put(add_tag).delete(remove_tag))
}

/// Loads a project or 404.
pub async fn must_project(id: &Identity, project_id: &str) -> Result<Project> {
    id.get_project(project_id).await?.ok_or_else(|| IdentityError::not_found("project", project_id))
}

fn target(p: &Project) -> Value {
    json!({"target": {"project": {"id": p.id, "domain_id": p.domain_id}}, "project_id": p.id, "domain_id": p.domain_id})
}

/// Projects a user has a role on (directly or through a group).
pub async fn projects_of_user(id: &Identity, user_id: &str) -> Result<Vec<Project>> {
    let groups = id.user_group_ids(user_id).await?;
    let mut q = Query::new("SELECT DISTINCT target_id FROM identity_assignments WHERE target_type = 'project' AND ((actor_type = 'user' AND actor_id = ");
    q.bind(user_id).push(")");
    if !groups.is_empty() {
        q.push(" OR (actor_type = 'group' AND ").push_in("actor_id", groups.iter()).push(")");
    }
    q.push(")");
    let rows = q.fetch_all(id.platform.db.reader()).await?;
    let mut out = Vec::new();
    for r in rows {
        if let Some(p) = id.get_project(&r.try_get::<String, _>("target_id")?).await? {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn validate_tags(tags: &Value) -> Result<Vec<String>> {
    let arr =
        tags.as_array().ok_or_else(|| IdentityError::invalid("Invalid input for field 'tags': expected a list"))?;
    if arr.len() > 80 {
        return Err(IdentityError::invalid("A project may have at most 80 tags"));
    }
    let mut out = Vec::new();
    for t in arr {
        let s = t.as_str().ok_or_else(|| IdentityError::invalid("Tags must be strings"))?;
        check_tag_text(s)?;
        if !out.iter().any(|x: &String| x == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

fn check_tag_text(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 255 || s.contains('/') || s.contains(',') {
        return Err(IdentityError::invalid(format!("Invalid tag {s:?}: 1 to 255 characters, no '/' or ','")));
    }
    Ok(())
}

fn tag_queries(project_id: &str, tags: &[String]) -> Vec<Query> {
    let mut qs = Vec::new();
    let mut d = Query::new("DELETE FROM identity_project_tags WHERE project_id = ");
    d.bind(project_id);
    qs.push(d);
    for t in tags {
        let mut q = Query::new("INSERT INTO identity_project_tags (project_id, tag) VALUES (");
        q.bind(project_id).push(", ").bind(t).push(") ON CONFLICT DO NOTHING");
        qs.push(q);
    }
    qs
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_projects", &ctx, &json!({"domain_id": q.get("domain_id")}))?;
    if q.bool("is_domain")? == Some(true) {
        let mut sql = Query::new(format!("SELECT {} FROM identity_domains WHERE 1 = 1", Domain::COLS));
        if let Some(n) = q.get("name") {
            sql.push_bind(" AND name = ", n);
        }
        if let Some(e) = q.bool("enabled")? {
            sql.push_bind(" AND enabled = ", e);
        }
        sql.push(" ORDER BY name, id");
        let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
        let list: Vec<Value> = rows
            .iter()
            .map(|r| Domain::from_row(r).map(|d| domain_as_project(&d).json(&id.base)))
            .collect::<Result<_>>()?;
        return Ok(Json(json!({"projects": list, "links": list_links(&id.base, "projects")})));
    }
    let mut sql = Query::new(format!("SELECT {} FROM identity_projects p WHERE 1 = 1", Project::COLS));
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    if let Some(d) = q.get("domain_id") {
        sql.push_bind(" AND domain_id = ", d);
    }
    if let Some(e) = q.bool("enabled")? {
        sql.push_bind(" AND enabled = ", e);
    }
    if let Some(e) = q.bool("is_domain")? {
        sql.push_bind(" AND is_domain = ", e);
    }
    if let Some(p) = q.get("parent_id") {
        sql.push_bind(" AND parent_id = ", p);
    }
    for (param, any, negate) in
        [("tags", false, false), ("tags-any", true, false), ("not-tags", false, true), ("not-tags-any", true, true)]
    {
        if let Some(v) = q.get(param) {
            let tags: Vec<&str> = v.split(',').filter(|t| !t.is_empty()).collect();
            if tags.is_empty() {
                continue;
            }
            let clause_start = if negate { " AND NOT (" } else { " AND (" };
            sql.push(clause_start);
            if any {
                sql.push("EXISTS (SELECT 1 FROM identity_project_tags t WHERE t.project_id = p.id AND ");
                sql.push_in("t.tag", tags.iter().copied());
                sql.push(")");
            } else {
                for (i, t) in tags.iter().enumerate() {
                    if i > 0 {
                        sql.push(" AND ");
                    }
                    sql.push_bind(
                        "EXISTS (SELECT 1 FROM identity_project_tags t WHERE t.project_id = p.id AND t.tag = ",
                        *t,
                    );
                    sql.push(")");
                }
            }
            sql.push(")");
        }
    }
    sql.push(" ORDER BY name, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let mut list = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut p = Project::from_row(r)?;
        p.tags = id.project_tags(&p.id).await?;
        list.push(p.json(&id.base));
    }
    Ok(Json(json!({"projects": list, "links": list_links(&id.base, "projects")})))
}

async fn show(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(project_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = project_or_domain(&id, &project_id).await?;
    let t = match &p {
        Some(p) => target(p),
        None => json!({"target": {"project": {"id": project_id}}, "project_id": project_id}),
    };
    id.policy.enforce("identity:get_project", &ctx, &t)?;
    let p = p.ok_or_else(|| IdentityError::not_found("project", &project_id))?;
    Ok(Json(json!({"project": p.json(&id.base)})))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body_object(&body, "project")?;
    let name = req_name_max(b, "name", NAME_MAX)?;
    let is_domain = opt_bool(b, "is_domain")?.unwrap_or(false);
    if is_domain {
        return create_domain_project(&id, &ctx, b, name).await;
    }
    let mut parent_id = opt_str(b, "parent_id")?;
    let parent = match &parent_id {
        Some(pid) => match id.get_project(pid).await? {
            Some(p) => Some(p),
            // A parent that is a domain (a project acting as one) makes a top-level project.
            None if id.get_domain(pid).await?.is_some() => None,
            None => return Err(IdentityError::not_found("project", pid).into()),
        },
        None => None,
    };
    let domain_id = match (opt_str(b, "domain_id")?, &parent, &parent_id) {
        (Some(d), Some(p), _) if d != p.domain_id => {
            return Err(IdentityError::invalid("A project must be in its parent's domain").into())
        }
        (Some(d), None, Some(pd)) if d != *pd => {
            return Err(IdentityError::invalid("A project must be in its parent's domain").into())
        }
        (Some(d), _, _) => d,
        (None, Some(p), _) => p.domain_id.clone(),
        (None, None, Some(pd)) => pd.clone(),
        (None, None, None) => ctx.domain_id.clone().unwrap_or_else(|| "default".into()),
    };
    if parent.is_none() {
        parent_id = None;
    }
    id.policy.enforce(
        "identity:create_project",
        &ctx,
        &json!({"target": {"project": {"domain_id": domain_id}}, "domain_id": domain_id}),
    )?;
    if id.get_domain(&domain_id).await?.is_none() {
        return Err(IdentityError::not_found("domain", &domain_id).into());
    }
    if id.find_project(&domain_id, &name).await?.is_some() {
        return Err(IdentityError::Conflict(format!(
            "Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : {name}"
        ))
        .into());
    }
    let tags = match b.get("tags") {
        Some(t) => validate_tags(t)?,
        None => Vec::new(),
    };
    let pid = new_id();
    let mut q = Query::new("INSERT INTO identity_projects (id, name, domain_id, parent_id, description, enabled, is_domain, extra, created_at) VALUES (");
    q.bind(&pid).push(", ").bind(&name).push(", ").bind(&domain_id).push(", ").bind(parent_id);
    q.push(", ")
        .bind(opt_str(b, "description")?.unwrap_or_default())
        .push(", ")
        .bind(opt_bool(b, "enabled")?.unwrap_or(true));
    q.push(", 0, ").bind(Value::Object(extra_of(b)).to_string()).push(", ").bind(stratus_core::time::now()).push(")");
    let mut qs = vec![q];
    qs.extend(tag_queries(&pid, &tags).into_iter().skip(1));
    id.exec(qs).await?;
    let p = must_project(&id, &pid).await?;
    Ok((StatusCode::CREATED, Json(json!({"project": p.json(&id.base)}))))
}

/// `POST /v3/projects` with `is_domain: true`: a domain, answered in project form.
async fn create_domain_project(
    id: &Identity,
    ctx: &Ctx,
    b: &serde_json::Map<String, Value>,
    name: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_domain", ctx, &json!({}))?;
    if b.get("parent_id").is_some_and(|p| !p.is_null()) {
        return Err(IdentityError::invalid("A project acting as a domain cannot have a parent.").into());
    }
    if b.get("domain_id").is_some_and(|p| !p.is_null()) {
        return Err(IdentityError::invalid("A project acting as a domain cannot be in a domain.").into());
    }
    if id.find_domain(&name).await?.is_some() {
        return Err(IdentityError::duplicate("domain", &name).into());
    }
    let did = new_id();
    let mut q = Query::new("INSERT INTO identity_domains (id, name, description, enabled, created_at) VALUES (");
    q.bind(&did).push(", ").bind(&name).push(", ").bind(opt_str(b, "description")?.unwrap_or_default());
    q.push(", ").bind(opt_bool(b, "enabled")?.unwrap_or(true)).push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    let d = crate::domains::must_domain(id, &did).await?;
    Ok((StatusCode::CREATED, Json(json!({"project": domain_as_project(&d).json(&id.base)}))))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(project_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let Some(p) = project_or_domain(&id, &project_id).await? else {
        return Err(IdentityError::not_found("project", &project_id).into());
    };
    id.policy.enforce("identity:update_project", &ctx, &target(&p))?;
    let b = body_object(&body, "project")?;
    // What Keystone refuses to change (400), and a parent of the wrong type.
    if b.get("id").is_some_and(|x| x.as_str() != Some(p.id.as_str())) {
        return Err(IdentityError::invalid("Cannot change the ID of a project.").into());
    }
    if b.get("domain_id").is_some_and(|x| x.as_str() != Some(p.domain_id.as_str()) && !(p.is_domain && x.is_null())) {
        return Err(IdentityError::invalid("Update of `domain_id` is not allowed.").into());
    }
    if b.get("is_domain").is_some_and(|x| x.as_bool() != Some(p.is_domain)) {
        return Err(IdentityError::invalid("Update of `is_domain` is not allowed.").into());
    }
    let parent = b.get("parent_id");
    if parent.is_some_and(|x| !x.is_null() && !x.is_string()) {
        return Err(IdentityError::invalid("Invalid input for field 'parent_id': expected a string or null").into());
    }
    if parent.and_then(Value::as_str).is_some_and(|x| Some(x) != p.parent_id.as_deref() && x != p.domain_id) {
        return Err(IdentityError::Forbidden("Update of `parent_id` is not allowed.".into()).into());
    }
    if p.is_domain {
        return update_domain_project(&id, &p, b).await;
    }
    let mut extra = p.extra.clone();
    for (k, v) in extra_of(b) {
        if v.is_null() {
            extra.remove(&k);
        } else {
            extra.insert(k, v);
        }
    }
    let mut qs = Vec::new();
    let mut set = |col: &str, v: stratus_db::Arg| {
        let mut q = Query::new(format!("UPDATE identity_projects SET {col} = "));
        q.bind(v).push_bind(" WHERE id = ", &project_id);
        qs.push(q);
    };
    if b.contains_key("name") {
        let name = req_name_max(b, "name", NAME_MAX)?;
        if name != p.name && id.find_project(&p.domain_id, &name).await?.is_some() {
            return Err(IdentityError::duplicate("project", &name).into());
        }
        set("name", name.into());
    }
    if b.contains_key("description") {
        set("description", opt_str(b, "description")?.unwrap_or_default().into());
    }
    let enabled = opt_bool(b, "enabled")?;
    if let Some(e) = enabled {
        set("enabled", e.into());
    }
    set("extra", Value::Object(extra).to_string().into());
    if let Some(t) = b.get("tags") {
        qs.extend(tag_queries(&project_id, &validate_tags(t)?));
    }
    id.exec(qs).await?;
    if enabled == Some(false) && p.enabled {
        id.revoke(Event { project_id: Some(project_id.clone()), ..Default::default() }).await?;
    }
    let p = must_project(&id, &project_id).await?;
    Ok(Json(json!({"project": p.json(&id.base)})))
}

/// `PATCH /v3/projects/{id}` of a project acting as a domain: the domain's name,
/// description and enabled flag.
async fn update_domain_project(
    id: &Identity,
    p: &Project,
    b: &serde_json::Map<String, Value>,
) -> Result<Json<Value>, ApiError> {
    let mut qs = Vec::new();
    if b.contains_key("name") {
        let name = req_name_max(b, "name", NAME_MAX)?;
        if name != p.name && id.find_domain(&name).await?.is_some() {
            return Err(IdentityError::duplicate("domain", &name).into());
        }
        let mut q = Query::new("UPDATE identity_domains SET name = ");
        q.bind(name).push_bind(" WHERE id = ", &p.id);
        qs.push(q);
    }
    if b.contains_key("description") {
        let mut q = Query::new("UPDATE identity_domains SET description = ");
        q.bind(opt_str(b, "description")?.unwrap_or_default()).push_bind(" WHERE id = ", &p.id);
        qs.push(q);
    }
    let enabled = opt_bool(b, "enabled")?;
    if let Some(e) = enabled {
        if !e && p.id == crate::bootstrap::DEFAULT_DOMAIN {
            return Err(IdentityError::invalid("The default domain cannot be disabled").into());
        }
        let mut q = Query::new("UPDATE identity_domains SET enabled = ");
        q.bind(e).push_bind(" WHERE id = ", &p.id);
        qs.push(q);
    }
    id.exec(qs).await?;
    if enabled == Some(false) && p.enabled {
        id.revoke(Event { domain_id: Some(p.id.clone()), ..Default::default() }).await?;
    }
    let d = crate::domains::must_domain(id, &p.id).await?;
    Ok(Json(json!({"project": domain_as_project(&d).json(&id.base)})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(project_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id.get_project(&project_id).await?.is_none() && id.get_domain(&project_id).await?.is_some() {
        // A project acting as a domain is the domain.
        return crate::domains::delete_domain(&id, &ctx, &project_id).await;
    }
    let p = must_project(&id, &project_id).await?;
    id.policy.enforce("identity:delete_project", &ctx, &target(&p))?;
    let mut c = Query::new("SELECT id FROM identity_projects WHERE parent_id = ");
    c.bind(&project_id).push(" LIMIT 1");
    if c.fetch_optional(id.platform.db.reader()).await.map_err(IdentityError::from)?.is_some() {
        return Err(IdentityError::Forbidden(format!("Cannot delete project {project_id}: it has children")).into());
    }
    let mut a = Query::new("DELETE FROM identity_assignments WHERE target_type = 'project' AND target_id = ");
    a.bind(&project_id);
    let mut d = Query::new("DELETE FROM identity_projects WHERE id = ");
    d.bind(&project_id);
    id.exec(vec![a, d]).await?;
    id.revoke(Event { project_id: Some(project_id), ..Default::default() }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tags(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(project_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = must_project(&id, &project_id).await?;
    id.policy.enforce("identity:list_project_tags", &ctx, &target(&p))?;
    Ok(Json(json!({"tags": p.tags})))
}

async fn replace_tags(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(project_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let p = must_project(&id, &project_id).await?;
    id.policy.enforce("identity:update_project_tags", &ctx, &target(&p))?;
    let tags = validate_tags(body.get("tags").unwrap_or(&Value::Null))?;
    id.exec(tag_queries(&project_id, &tags)).await?;
    Ok(Json(json!({"tags": id.project_tags(&project_id).await?})))
}

async fn clear_tags(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(project_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = must_project(&id, &project_id).await?;
    id.policy.enforce("identity:update_project_tags", &ctx, &target(&p))?;
    id.exec(tag_queries(&project_id, &[])).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_tag(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((project_id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = must_project(&id, &project_id).await?;
    id.policy.enforce("identity:list_project_tags", &ctx, &target(&p))?;
    if p.tags.contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(IdentityError::not_found("tag", tag).into())
    }
}

async fn add_tag(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((project_id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = must_project(&id, &project_id).await?;
    id.policy.enforce("identity:update_project_tags", &ctx, &target(&p))?;
    check_tag_text(&tag)?;
    let mut q = Query::new("INSERT INTO identity_project_tags (project_id, tag) VALUES (");
    q.bind(&project_id).push(", ").bind(&tag).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok(StatusCode::CREATED)
}

async fn remove_tag(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((project_id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = must_project(&id, &project_id).await?;
    id.policy.enforce("identity:update_project_tags", &ctx, &target(&p))?;
    if !p.tags.contains(&tag) {
        return Err(IdentityError::not_found("tag", tag).into());
    }
    let mut q = Query::new("DELETE FROM identity_project_tags WHERE project_id = ");
    q.bind(&project_id).push_bind(" AND tag = ", &tag);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}
