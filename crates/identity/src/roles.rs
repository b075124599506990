//! `/v3/roles` (global and domain-specific, with options), implied roles, grants
//! (user/group × project/domain/system, and OS-INHERIT grants inherited by the projects
//! of a domain or of a project's subtree) and `/v3/role_assignments`.
//!
//! Domain-specific roles only ever act through the global roles they imply: they are
//! left out of effective assignments and tokens, as in Keystone.

use std::collections::{BTreeMap, HashMap};
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
use crate::model::{new_id, Role};
use crate::revocation::Event;
use crate::state::{body_object, list_links, opt_str, req_name, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/roles", get(list).post(create))
        .route("/v3/roles/{role_id}", get(show).patch(update).delete(delete))
        .route("/v3/roles/{role_id}/implies", get(list_implies))
        .route(
            "/v3/roles/{role_id}/implies/{implied_id}",
            put(create_implies).get(get_implies).head(check_implies).delete(delete_implies),
        )
        .route("/v3/role_inferences", get(list_inferences))
        .route("/v3/role_assignments", get(list_assignments))
        .route("/v3/projects/{project_id}/users/{user_id}/roles", get(list_pu))
        .route("/v3/projects/{project_id}/users/{user_id}/roles/{role_id}", put(put_pu).get(check_pu).delete(del_pu))
        .route("/v3/projects/{project_id}/groups/{group_id}/roles", get(list_pg))
        .route("/v3/projects/{project_id}/groups/{group_id}/roles/{role_id}", put(put_pg).get(check_pg).delete(del_pg))
        .route("/v3/domains/{domain_id}/users/{user_id}/roles", get(list_du))
        .route("/v3/domains/{domain_id}/users/{user_id}/roles/{role_id}", put(put_du).get(check_du).delete(del_du))
        .route("/v3/domains/{domain_id}/groups/{group_id}/roles", get(list_dg))
        .route("/v3/domains/{domain_id}/groups/{group_id}/roles/{role_id}", put(put_dg).get(check_dg).delete(del_dg))
        .route("/v3/system/users/{user_id}/roles", get(list_su))
        .route("/v3/system/users/{user_id}/roles/{role_id}", put(put_su).get(check_su).delete(del_su))
        .route("/v3/system/groups/{group_id}/roles", get(list_sg))
        .route("/v3/system/groups/{group_id}/roles/{role_id}", put(put_sg).get(check_sg).delete(del_sg))
        .route("/v3/OS-INHERIT/domains/{domain_id}/users/{user_id}/roles/inherited_to_projects", get(list_idu))
        .route(
            "/v3/OS-INHERIT/domains/{domain_id}/users/{user_id}/roles/{role_id}/inherited_to_projects",
            put(put_idu).get(check_idu).delete(del_idu),
        )
        .route("/v3/OS-INHERIT/domains/{domain_id}/groups/{group_id}/roles/inherited_to_projects", get(list_idg))
        .route(
            "/v3/OS-INHERIT/domains/{domain_id}/groups/{group_id}/roles/{role_id}/inherited_to_projects",
            put(put_idg).get(check_idg).delete(del_idg),
        )
        .route("/v3/OS-INHERIT/projects/{project_id}/users/{user_id}/roles/inherited_to_projects", get(list_ipu))
        .route(
            "/v3/OS-INHERIT/projects/{project_id}/users/{user_id}/roles/{role_id}/inherited_to_projects",
            put(put_ipu).get(check_ipu).delete(del_ipu),
        )
        .route("/v3/OS-INHERIT/projects/{project_id}/groups/{group_id}/roles/inherited_to_projects", get(list_ipg))
        .route(
            "/v3/OS-INHERIT/projects/{project_id}/groups/{group_id}/roles/{role_id}/inherited_to_projects",
            put(put_ipg).get(check_ipg).delete(del_ipg),
        )
}

/// Role options Keystone knows: only `immutable`.
fn role_options(
    current: &serde_json::Map<String, Value>,
    given: Option<&Value>,
) -> Result<serde_json::Map<String, Value>> {
    let mut out = current.clone();
    let Some(given) = given else { return Ok(out) };
    let obj = given
        .as_object()
        .ok_or_else(|| IdentityError::invalid("Invalid input for field 'options': expected an object"))?;
    for (k, v) in obj {
        if k != "immutable" {
            return Err(IdentityError::invalid(format!(
                "Invalid input for field 'options': Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Bool(_) => {
                out.insert(k.clone(), v.clone());
            }
            _ => return Err(IdentityError::invalid("Invalid input for field 'options.immutable': expected a boolean")),
        }
    }
    Ok(out)
}

fn immutable(r: &Role) -> bool {
    r.options.get("immutable").and_then(Value::as_bool).unwrap_or(false)
}

/// Loads a role or 404.
pub async fn must_role(id: &Identity, role_id: &str) -> Result<Role> {
    id.get_role(role_id).await?.ok_or_else(|| IdentityError::not_found("role", role_id))
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_roles", &ctx, &json!({}))?;
    let mut sql = Query::new(format!("SELECT {} FROM identity_roles WHERE 1 = 1", Role::COLS));
    if let Some(n) = q.get("name") {
        sql.push_bind(" AND name = ", n);
    }
    sql.push_bind(" AND domain_id = ", q.get("domain_id").unwrap_or(""));
    sql.push(" ORDER BY name, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| Role::from_row(r).map(|x| x.json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(json!({"roles": list, "links": list_links(&id.base, "roles")})))
}

async fn show(State(id): State<Arc<Identity>>, ctx: Ctx, Path(role_id): Path<String>) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_role", &ctx, &json!({}))?;
    Ok(Json(json!({"role": must_role(&id, &role_id).await?.json(&id.base)})))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_role", &ctx, &json!({}))?;
    let b = body_object(&body, "role")?;
    let name = req_name(b, "name")?;
    let domain_id = opt_str(b, "domain_id")?.unwrap_or_default();
    if !domain_id.is_empty() && id.get_domain(&domain_id).await?.is_none() {
        return Err(IdentityError::not_found("domain", &domain_id).into());
    }
    let mut c = Query::new("SELECT id FROM identity_roles WHERE domain_id = ");
    c.bind(&domain_id).push_bind(" AND name = ", &name);
    if c.fetch_optional(id.platform.db.reader()).await.map_err(IdentityError::from)?.is_some() {
        return Err(IdentityError::duplicate("role", &name).into());
    }
    let rid = new_id();
    let options = role_options(&serde_json::Map::new(), b.get("options"))?;
    let mut q =
        Query::new("INSERT INTO identity_roles (id, name, domain_id, description, options, created_at) VALUES (");
    q.bind(&rid).push(", ").bind(&name).push(", ").bind(&domain_id).push(", ");
    q.bind(opt_str(b, "description")?.unwrap_or_default()).push(", ").bind(Value::Object(options).to_string());
    q.push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    Ok((StatusCode::CREATED, Json(json!({"role": must_role(&id, &rid).await?.json(&id.base)}))))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(role_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_role", &ctx, &json!({}))?;
    let r = must_role(&id, &role_id).await?;
    let b = body_object(&body, "role")?;
    if b.get("domain_id").is_some_and(|x| x.as_str() != r.domain_id.as_deref()) {
        return Err(IdentityError::invalid("Update of `domain_id` is not allowed.").into());
    }
    let options = role_options(&r.options, b.get("options"))?;
    // An immutable role may only be made mutable again (Keystone's rule).
    if immutable(&r) && !(b.keys().all(|k| k == "options") && options.get("immutable") != Some(&json!(true))) {
        return Err(IdentityError::Forbidden(format!("Role {} is immutable and cannot be updated.", r.id)).into());
    }
    let mut qs = Vec::new();
    if b.contains_key("options") {
        let mut q = Query::new("UPDATE identity_roles SET options = ");
        q.bind(Value::Object(options).to_string()).push_bind(" WHERE id = ", &r.id);
        qs.push(q);
    }
    if b.contains_key("name") {
        let name = req_name(b, "name")?;
        let mut q = Query::new("UPDATE identity_roles SET name = ");
        q.bind(name).push_bind(" WHERE id = ", &r.id);
        qs.push(q);
    }
    if b.contains_key("description") {
        let mut q = Query::new("UPDATE identity_roles SET description = ");
        q.bind(opt_str(b, "description")?.unwrap_or_default()).push_bind(" WHERE id = ", &r.id);
        qs.push(q);
    }
    id.exec(qs).await.map_err(|e| match e {
        IdentityError::Db(d) if d.is_unique_violation() => IdentityError::duplicate("role", "given"),
        e => e,
    })?;
    Ok(Json(json!({"role": must_role(&id, &role_id).await?.json(&id.base)})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(role_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_role", &ctx, &json!({}))?;
    let r = must_role(&id, &role_id).await?;
    if immutable(&r) {
        return Err(IdentityError::Forbidden(format!("Role {} is immutable and cannot be deleted.", r.id)).into());
    }
    let mut qs = Vec::new();
    for sql in [
        "DELETE FROM identity_assignments WHERE role_id = ",
        "DELETE FROM identity_implied_roles WHERE prior_role_id = ",
        "DELETE FROM identity_implied_roles WHERE implied_role_id = ",
        "DELETE FROM identity_roles WHERE id = ",
    ] {
        let mut q = Query::new(sql);
        q.bind(&role_id);
        qs.push(q);
    }
    id.exec(qs).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- implied roles ----------------------------------------------------------------------

async fn rules(id: &Identity) -> Result<Vec<(String, String)>> {
    let rows = stratus_db::sqlx::query(
        "SELECT prior_role_id, implied_role_id FROM identity_implied_roles ORDER BY prior_role_id, implied_role_id",
    )
    .fetch_all(id.platform.db.reader())
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

async fn list_implies(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(role_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_implied_roles", &ctx, &json!({}))?;
    let prior = must_role(&id, &role_id).await?;
    let mut implies = Vec::new();
    for (p, i) in rules(&id).await? {
        if p == role_id {
            if let Some(r) = id.get_role(&i).await? {
                implies.push(r.brief(&id.base));
            }
        }
    }
    Ok(Json(json!({"role_inference": {"prior_role": prior.brief(&id.base), "implies": implies},
        "links": {"self": format!("{}/v3/roles/{role_id}/implies", id.base)}})))
}

fn inference_json(id: &Identity, prior: &Role, implied: &Role) -> Value {
    json!({"role_inference": {"prior_role": prior.brief(&id.base), "implies": implied.brief(&id.base)},
        "links": {"self": format!("{}/v3/roles/{}/implies/{}", id.base, prior.id, implied.id)}})
}

async fn create_implies(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((role_id, implied_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_implied_role", &ctx, &json!({}))?;
    let prior = must_role(&id, &role_id).await?;
    let implied = must_role(&id, &implied_id).await?;
    // A global role may not imply a domain-specific one (it would leak the domain's role
    // into every token), and `admin` is never implied ([assignment] prohibited_implied_role).
    if prior.domain_id.is_none() && implied.domain_id.is_some() {
        return Err(IdentityError::Forbidden(format!(
            "{implied_id} cannot be an implied role: a global role may not imply a domain-specific role."
        ))
        .into());
    }
    if implied.domain_id.is_none() && implied.name == "admin" {
        return Err(
            IdentityError::Forbidden(format!("{implied_id} cannot be an implied role: admin is prohibited.")).into()
        );
    }
    // Refuse cycles: the implied role must not (transitively) imply the prior one.
    let expanded = id.expand_roles(vec![implied_id.clone()]).await?;
    if role_id == implied_id || expanded.iter().any(|(rid, _)| *rid == role_id) {
        return Err(IdentityError::invalid("Implied roles must not form a cycle").into());
    }
    let mut q = Query::new("INSERT INTO identity_implied_roles (prior_role_id, implied_role_id) VALUES (");
    q.bind(&role_id).push(", ").bind(&implied_id).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok((StatusCode::CREATED, Json(inference_json(&id, &prior, &implied))))
}

async fn get_implies(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((role_id, implied_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_implied_role", &ctx, &json!({}))?;
    let prior = must_role(&id, &role_id).await?;
    let implied = must_role(&id, &implied_id).await?;
    if !rules(&id).await?.contains(&(role_id.clone(), implied_id.clone())) {
        return Err(IdentityError::not_found("implied role", format!("{role_id} implies {implied_id}")).into());
    }
    Ok(Json(inference_json(&id, &prior, &implied)))
}

async fn check_implies(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((role_id, implied_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:check_implied_role", &ctx, &json!({}))?;
    must_role(&id, &role_id).await?;
    must_role(&id, &implied_id).await?;
    if !rules(&id).await?.contains(&(role_id.clone(), implied_id.clone())) {
        return Err(IdentityError::not_found("implied role", format!("{role_id} implies {implied_id}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_implies(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((role_id, implied_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_implied_role", &ctx, &json!({}))?;
    let mut q = Query::new("DELETE FROM identity_implied_roles WHERE prior_role_id = ");
    q.bind(&role_id).push_bind(" AND implied_role_id = ", &implied_id);
    if id.exec(vec![q]).await? == 0 {
        return Err(IdentityError::not_found("implied role", format!("{role_id} implies {implied_id}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list_inferences(State(id): State<Arc<Identity>>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_role_inference_rules", &ctx, &json!({}))?;
    let mut by_prior: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (p, i) in rules(&id).await? {
        by_prior.entry(p).or_default().push(i);
    }
    let mut out = Vec::new();
    for (p, is) in by_prior {
        let Some(prior) = id.get_role(&p).await? else { continue };
        let mut implies = Vec::new();
        for i in is {
            if let Some(r) = id.get_role(&i).await? {
                implies.push(r.brief(&id.base));
            }
        }
        out.push(json!({"prior_role": prior.brief(&id.base), "implies": implies}));
    }
    Ok(Json(json!({"role_inferences": out, "links": list_links(&id.base, "role_inferences")})))
}

// --- grants -------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Actor {
    User,
    Group,
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Project,
    Domain,
    System,
}

impl Actor {
    fn sql(self) -> &'static str {
        match self {
            Actor::User => "user",
            Actor::Group => "group",
        }
    }
}
impl Target {
    fn sql(self) -> &'static str {
        match self {
            Target::Project => "project",
            Target::Domain => "domain",
            Target::System => "system",
        }
    }
}

/// One grant's actor and target; `inherited`: an OS-INHERIT grant.
#[derive(Clone, Copy)]
struct Grant<'a> {
    actor: Actor,
    actor_id: &'a str,
    target: Target,
    target_id: &'a str,
    inherited: bool,
}

async fn check_refs(id: &Identity, actor: Actor, actor_id: &str, target: Target, target_id: &str) -> Result<()> {
    match actor {
        Actor::User => {
            id.get_user(actor_id).await?.ok_or_else(|| IdentityError::not_found("user", actor_id))?;
        }
        Actor::Group => {
            crate::groups::must_group(id, actor_id).await?;
        }
    }
    match target {
        Target::Project => {
            id.get_project(target_id).await?.ok_or_else(|| IdentityError::not_found("project", target_id))?;
        }
        Target::Domain => {
            id.get_domain(target_id).await?.ok_or_else(|| IdentityError::not_found("domain", target_id))?;
        }
        Target::System => {}
    }
    Ok(())
}

fn grant_target(target: Target, target_id: &str) -> Value {
    match target {
        Target::Project => json!({"target": {"project": {"id": target_id}}, "project_id": target_id}),
        Target::Domain => json!({"target": {"domain": {"id": target_id}}, "domain_id": target_id}),
        Target::System => json!({"target": {"system": "all"}}),
    }
}

fn action(target: Target, verb: &str) -> &'static str {
    match (target, verb) {
        (Target::System, "put") => "identity:create_system_grant_for_user",
        (Target::System, "check") => "identity:check_system_grant_for_user",
        (Target::System, "delete") => "identity:revoke_system_grant_for_user",
        (Target::System, _) => "identity:list_system_grants_for_user",
        (_, "put") => "identity:create_grant",
        (_, "check") => "identity:check_grant",
        (_, "delete") => "identity:revoke_grant",
        _ => "identity:list_grants",
    }
}

async fn put_grant(id: &Identity, ctx: &Ctx, g: Grant<'_>, role_id: &str) -> Result<StatusCode, ApiError> {
    let Grant { actor, actor_id, target, target_id, inherited } = g;
    id.policy.enforce(action(target, "put"), ctx, &grant_target(target, target_id))?;
    check_refs(id, actor, actor_id, target, target_id).await?;
    must_role(id, role_id).await?;
    let mut q = Query::new(
        "INSERT INTO identity_assignments (actor_type, actor_id, target_type, target_id, role_id, inherited) VALUES (",
    );
    q.bind(actor.sql()).push(", ").bind(actor_id).push(", ").bind(target.sql()).push(", ").bind(target_id);
    q.push(", ").bind(role_id).push(", ").bind(i64::from(inherited)).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_grant(id: &Identity, ctx: &Ctx, g: Grant<'_>, role_id: &str) -> Result<StatusCode, ApiError> {
    let Grant { actor, actor_id, target, target_id, inherited } = g;
    id.policy.enforce(action(target, "check"), ctx, &grant_target(target, target_id))?;
    check_refs(id, actor, actor_id, target, target_id).await?;
    must_role(id, role_id).await?;
    let mut q = Query::new("SELECT role_id FROM identity_assignments WHERE actor_type = ");
    q.bind(actor.sql()).push_bind(" AND actor_id = ", actor_id).push_bind(" AND target_type = ", target.sql());
    q.push_bind(" AND target_id = ", target_id).push_bind(" AND role_id = ", role_id);
    q.push_bind(" AND inherited = ", i64::from(inherited));
    if q.fetch_optional(id.platform.db.reader()).await.map_err(IdentityError::from)?.is_none() {
        return Err(IdentityError::NotFound {
            kind: "role assignment",
            id: format!("role {role_id} for {} {actor_id} on {} {target_id}", actor.sql(), target.sql()),
        }
        .into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_grant(id: &Identity, ctx: &Ctx, g: Grant<'_>, role_id: &str) -> Result<StatusCode, ApiError> {
    let Grant { actor, actor_id, target, target_id, inherited } = g;
    id.policy.enforce(action(target, "delete"), ctx, &grant_target(target, target_id))?;
    let mut q = Query::new("DELETE FROM identity_assignments WHERE actor_type = ");
    q.bind(actor.sql()).push_bind(" AND actor_id = ", actor_id).push_bind(" AND target_type = ", target.sql());
    q.push_bind(" AND target_id = ", target_id).push_bind(" AND role_id = ", role_id);
    q.push_bind(" AND inherited = ", i64::from(inherited));
    if id.exec(vec![q]).await? == 0 {
        return Err(IdentityError::NotFound {
            kind: "role assignment",
            id: format!("role {role_id} for {} {actor_id} on {} {target_id}", actor.sql(), target.sql()),
        }
        .into());
    }
    // Tokens of the affected users in that scope are void (Keystone's behaviour).
    let users = match actor {
        Actor::User => vec![actor_id.to_string()],
        Actor::Group => crate::groups::member_ids(id, actor_id).await?,
    };
    for u in users {
        let mut e = Event { user_id: Some(u), ..Default::default() };
        // An inherited grant reached other projects: all of the user's tokens go.
        match target {
            _ if inherited => {}
            Target::Project => e.project_id = Some(target_id.to_string()),
            Target::Domain => e.domain_id = Some(target_id.to_string()),
            Target::System => {}
        }
        id.revoke(e).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(id: &Identity, ctx: &Ctx, g: Grant<'_>) -> Result<Json<Value>, ApiError> {
    let Grant { actor, actor_id, target, target_id, inherited } = g;
    id.policy.enforce(action(target, "list"), ctx, &grant_target(target, target_id))?;
    check_refs(id, actor, actor_id, target, target_id).await?;
    let mut q = Query::new("SELECT DISTINCT role_id FROM identity_assignments WHERE actor_type = ");
    q.bind(actor.sql()).push_bind(" AND actor_id = ", actor_id).push_bind(" AND target_type = ", target.sql());
    q.push_bind(" AND target_id = ", target_id).push_bind(" AND inherited = ", i64::from(inherited));
    let rows = q.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let mut roles = Vec::new();
    for r in rows {
        if let Some(role) = id.get_role(&r.try_get::<String, _>(0).map_err(IdentityError::from)?).await? {
            roles.push(role.json(&id.base));
        }
    }
    Ok(Json(json!({"roles": roles, "links": {"self": null, "previous": null, "next": null}})))
}

macro_rules! grant_handlers {
    ($list:ident, $put:ident, $check:ident, $del:ident, $actor:expr, $target:expr, $inherited:expr) => {
        async fn $list(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path((t, a)): Path<(String, String)>,
        ) -> Result<Json<Value>, ApiError> {
            list_grants(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: $target, target_id: &t, inherited: $inherited },
            )
            .await
        }
        async fn $put(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path((t, a, r)): Path<(String, String, String)>,
        ) -> Result<StatusCode, ApiError> {
            put_grant(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: $target, target_id: &t, inherited: $inherited },
                &r,
            )
            .await
        }
        async fn $check(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path((t, a, r)): Path<(String, String, String)>,
        ) -> Result<StatusCode, ApiError> {
            check_grant(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: $target, target_id: &t, inherited: $inherited },
                &r,
            )
            .await
        }
        async fn $del(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path((t, a, r)): Path<(String, String, String)>,
        ) -> Result<StatusCode, ApiError> {
            delete_grant(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: $target, target_id: &t, inherited: $inherited },
                &r,
            )
            .await
        }
    };
}

grant_handlers!(list_pu, put_pu, check_pu, del_pu, Actor::User, Target::Project, false);
grant_handlers!(list_pg, put_pg, check_pg, del_pg, Actor::Group, Target::Project, false);
grant_handlers!(list_du, put_du, check_du, del_du, Actor::User, Target::Domain, false);
grant_handlers!(list_dg, put_dg, check_dg, del_dg, Actor::Group, Target::Domain, false);
// OS-INHERIT: grants the projects of a domain, or of a project's subtree, inherit.
grant_handlers!(list_idu, put_idu, check_idu, del_idu, Actor::User, Target::Domain, true);
grant_handlers!(list_idg, put_idg, check_idg, del_idg, Actor::Group, Target::Domain, true);
grant_handlers!(list_ipu, put_ipu, check_ipu, del_ipu, Actor::User, Target::Project, true);
grant_handlers!(list_ipg, put_ipg, check_ipg, del_ipg, Actor::Group, Target::Project, true);

macro_rules! system_handlers {
    ($list:ident, $put:ident, $check:ident, $del:ident, $actor:expr) => {
        async fn $list(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path(a): Path<String>,
        ) -> Result<Json<Value>, ApiError> {
            list_grants(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: Target::System, target_id: "all", inherited: false },
            )
            .await
        }
        async fn $put(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path((a, r)): Path<(String, String)>,
        ) -> Result<StatusCode, ApiError> {
            put_grant(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: Target::System, target_id: "all", inherited: false },
                &r,
            )
            .await
        }
        async fn $check(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path((a, r)): Path<(String, String)>,
        ) -> Result<StatusCode, ApiError> {
            check_grant(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: Target::System, target_id: "all", inherited: false },
                &r,
            )
            .await
        }
        async fn $del(
            State(id): State<Arc<Identity>>,
            ctx: Ctx,
            Path((a, r)): Path<(String, String)>,
        ) -> Result<StatusCode, ApiError> {
            delete_grant(
                &id,
                &ctx,
                Grant { actor: $actor, actor_id: &a, target: Target::System, target_id: "all", inherited: false },
                &r,
            )
            .await
        }
    };
}

system_handlers!(list_su, put_su, check_su, del_su, Actor::User);
system_handlers!(list_sg, put_sg, check_sg, del_sg, Actor::Group);

// --- /v3/role_assignments ---------------------------------------------------------------

#[derive(Debug, Clone)]
struct Assignment {
    actor_type: String,
    actor_id: String,
    target_type: String,
    target_id: String,
    role_id: String,
    /// An OS-INHERIT grant (listed as such, not effective).
    inherited: bool,
    /// Group the assignment came through (effective listing).
    via_group: Option<String>,
    /// Role that implied this one (effective listing).
    prior_role: Option<String>,
    /// The inherited grant an effective project assignment comes from: (type, id).
    inherited_from: Option<(String, String)>,
}

/// Ids of the projects below `root` (children, grandchildren...).
async fn subtree(id: &Identity, root: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut frontier = vec![root.to_string()];
    while !frontier.is_empty() && out.len() < 100_000 {
        let mut q = Query::new("SELECT id FROM identity_projects WHERE ");
        q.push_in("parent_id", frontier.iter());
        let rows = q.fetch_all(id.platform.db.reader()).await?;
        frontier = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?;
        frontier.retain(|p| !out.contains(p) && p != root);
        out.extend(frontier.iter().cloned());
    }
    Ok(out)
}

/// Ids of the projects of a domain.
async fn domain_projects(id: &Identity, domain_id: &str) -> Result<Vec<String>> {
    let mut q = Query::new("SELECT id FROM identity_projects WHERE is_domain = 0 AND domain_id = ");
    q.bind(domain_id);
    let rows = q.fetch_all(id.platform.db.reader()).await?;
    rows.iter().map(|r| r.try_get::<String, _>(0).map_err(Into::into)).collect()
}

async fn list_assignments(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_role_assignments", &ctx, &json!({}))?;
    let effective = q.has("effective");
    let names = q.has("include_names");
    let user_f = q.get("user.id");
    let group_f = q.get("group.id");
    let role_f = q.get("role.id");
    let project_f = q.get("scope.project.id");
    let domain_f = q.get("scope.domain.id");
    let system_f = q.get("scope.system");
    let inherited_f = q.get("scope.OS-INHERIT:inherited_to");
    if inherited_f.is_some_and(|v| v != "projects") {
        return Err(IdentityError::invalid("scope.OS-INHERIT:inherited_to only takes 'projects'").into());
    }
    if effective && group_f.is_some() {
        return Err(IdentityError::invalid("effective cannot be combined with group.id").into());
    }
    let mut sql = Query::new(
        "SELECT actor_type, actor_id, target_type, target_id, role_id, inherited FROM identity_assignments WHERE 1 = 1",
    );
    match (project_f, effective) {
        (Some(p), true) => {
            // What applies to the project: its own grants and the inherited grants of its
            // domain and ancestors.
            let pr = id.get_project(p).await?;
            sql.push_bind(" AND ((target_type = 'project' AND inherited = 0 AND target_id = ", p).push(")");
            if let Some(pr) = &pr {
                sql.push_bind(" OR (target_type = 'domain' AND inherited = 1 AND target_id = ", &pr.domain_id)
                    .push(")");
                let anc = id.ancestor_ids(pr).await?;
                if !anc.is_empty() {
                    sql.push(" OR (target_type = 'project' AND inherited = 1 AND ").push_in("target_id", anc.iter());
                    sql.push(")");
                }
            }
            sql.push(")");
        }
        (Some(p), false) => {
            sql.push_bind(" AND target_type = 'project' AND target_id = ", p);
        }
        _ => {}
    }
    if let Some(d) = domain_f {
        sql.push_bind(" AND target_type = 'domain' AND target_id = ", d);
        if effective {
            sql.push(" AND inherited = 0");
        }
    }
    if system_f.is_some() {
        sql.push(" AND target_type = 'system'");
    }
    if inherited_f.is_some() {
        sql.push(" AND inherited = 1");
    }
    if !effective {
        if let Some(r) = role_f {
            sql.push_bind(" AND role_id = ", r);
        }
    }
    match (user_f, group_f) {
        (Some(u), _) if effective => {
            let user_groups = id.user_group_ids(u).await?;
            sql.push_bind(" AND ((actor_type = 'user' AND actor_id = ", u).push(")");
            if !user_groups.is_empty() {
                sql.push(" OR (actor_type = 'group' AND ").push_in("actor_id", user_groups.iter()).push(")");
            }
            sql.push(")");
        }
        (Some(u), _) => {
            sql.push_bind(" AND actor_type = 'user' AND actor_id = ", u);
        }
        (None, Some(g)) => {
            sql.push_bind(" AND actor_type = 'group' AND actor_id = ", g);
        }
        _ => {}
    }
    sql.push(" ORDER BY target_type, target_id, actor_type, actor_id, role_id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let mut list: Vec<Assignment> = Vec::new();
    for r in &rows {
        list.push(Assignment {
            actor_type: r.try_get(0).map_err(IdentityError::from)?,
            actor_id: r.try_get(1).map_err(IdentityError::from)?,
            target_type: r.try_get(2).map_err(IdentityError::from)?,
            target_id: r.try_get(3).map_err(IdentityError::from)?,
            role_id: r.try_get(4).map_err(IdentityError::from)?,
            inherited: stratus_db::flag(r, "inherited"),
            via_group: None,
            prior_role: None,
            inherited_from: None,
        });
    }
    if effective {
        // Inherited grants become assignments on the projects that inherit them.
        let mut on_projects = Vec::new();
        for a in list {
            if !a.inherited {
                on_projects.push(a);
                continue;
            }
            let targets = match (project_f, a.target_type.as_str()) {
                (Some(p), _) => vec![p.to_string()],
                (None, "domain") => domain_projects(&id, &a.target_id).await?,
                (None, _) => subtree(&id, &a.target_id).await?,
            };
            for t in targets {
                on_projects.push(Assignment {
                    target_type: "project".into(),
                    target_id: t,
                    inherited: false,
                    inherited_from: Some((a.target_type.clone(), a.target_id.clone())),
                    ..a.clone()
                });
            }
        }
        // Groups become their members; implied roles are added.
        let mut expanded = Vec::new();
        for a in on_projects {
            if a.actor_type == "group" {
                let members = crate::groups::member_ids(&id, &a.actor_id).await?;
                for m in members {
                    if user_f.is_some_and(|u| u != m) {
                        continue;
                    }
                    expanded.push(Assignment {
                        actor_type: "user".into(),
                        actor_id: m,
                        via_group: Some(a.actor_id.clone()),
                        ..a.clone()
                    });
                }
            } else {
                expanded.push(a);
            }
        }
        let rules = rules(&id).await?;
        let mut implied: HashMap<String, Vec<String>> = HashMap::new();
        for (p, i) in rules {
            implied.entry(p).or_default().push(i);
        }
        let mut with_implied = Vec::new();
        for a in expanded {
            let mut stack = vec![(a.role_id.clone(), None::<String>)];
            let mut seen = Vec::new();
            while let Some((rid, prior)) = stack.pop() {
                if seen.contains(&rid) {
                    continue;
                }
                seen.push(rid.clone());
                if let Some(next) = implied.get(&rid) {
                    for n in next {
                        stack.push((n.clone(), Some(rid.clone())));
                    }
                }
                with_implied.push(Assignment { role_id: rid, prior_role: prior, ..a.clone() });
            }
        }
        if let Some(r) = role_f {
            with_implied.retain(|a| a.role_id == r);
        }
        // Domain-specific roles only act through the global roles they imply.
        let mut global: HashMap<String, bool> = HashMap::new();
        let mut kept = Vec::with_capacity(with_implied.len());
        for a in with_implied {
            if !global.contains_key(&a.role_id) {
                let g = id.get_role(&a.role_id).await?.is_some_and(|r| r.domain_id.is_none());
                global.insert(a.role_id.clone(), g);
            }
            if global[&a.role_id] {
                kept.push(a);
            }
        }
        // Same user, scope and role through two paths is one effective assignment.
        let mut seen = std::collections::HashSet::new();
        kept.retain(|a| {
            seen.insert((a.actor_id.clone(), a.target_type.clone(), a.target_id.clone(), a.role_id.clone()))
        });
        list = kept;
    }
    let mut out = Vec::with_capacity(list.len());
    let mut role_cache: HashMap<String, Option<Role>> = HashMap::new();
    for a in &list {
        out.push(assignment_json(&id, a, names, &mut role_cache).await?);
    }
    Ok(Json(json!({"role_assignments": out, "links": list_links(&id.base, "role_assignments")})))
}

async fn assignment_json(
    id: &Identity,
    a: &Assignment,
    names: bool,
    roles: &mut HashMap<String, Option<Role>>,
) -> Result<Value> {
    let base = &id.base;
    let mut role = json!({"id": a.role_id});
    if names {
        if !roles.contains_key(&a.role_id) {
            roles.insert(a.role_id.clone(), id.get_role(&a.role_id).await?);
        }
        if let Some(Some(r)) = roles.get(&a.role_id) {
            role["name"] = json!(r.name);
            if let Some(d) = &r.domain_id {
                role["domain"] = json!({"id": d});
            }
        }
    }
    let scope = match a.target_type.as_str() {
        "project" => {
            let mut p = json!({"id": a.target_id});
            if names {
                if let Some(pr) = id.get_project(&a.target_id).await? {
                    p["name"] = json!(pr.name);
                    let dn = id.get_domain(&pr.domain_id).await?.map(|d| d.name).unwrap_or_default();
                    p["domain"] = json!({"id": pr.domain_id, "name": dn});
                }
            }
            json!({"project": p})
        }
        "domain" => {
            let mut d = json!({"id": a.target_id});
            if names {
                if let Some(dd) = id.get_domain(&a.target_id).await? {
                    d["name"] = json!(dd.name);
                }
            }
            json!({"domain": d})
        }
        _ => json!({"system": {"all": true}}),
    };
    let mut actor = json!({"id": a.actor_id});
    if names {
        if a.actor_type == "user" {
            if let Some(u) = id.get_user(&a.actor_id).await? {
                let dn = id.get_domain(&u.domain_id).await?.map(|d| d.name).unwrap_or_default();
                actor["name"] = json!(u.name);
                actor["domain"] = json!({"id": u.domain_id, "name": dn});
            }
        } else if let Some(g) = crate::groups::get_group(id, &a.actor_id).await? {
            let dn = id.get_domain(&g.domain_id).await?.map(|d| d.name).unwrap_or_default();
            actor["name"] = json!(g.name);
            actor["domain"] = json!({"id": g.domain_id, "name": dn});
        }
    }
    let (actor_kind, actor_path) = if a.actor_type == "user" { ("user", "users") } else { ("group", "groups") };
    let link_actor = a.via_group.as_ref().map(|g| ("groups", g.as_str())).unwrap_or((actor_path, a.actor_id.as_str()));
    let (source_type, source_id) = match &a.inherited_from {
        Some((t, i)) => (t.as_str(), i.as_str()),
        None => (a.target_type.as_str(), a.target_id.as_str()),
    };
    let target_path = match source_type {
        "project" => format!("projects/{source_id}"),
        "domain" => format!("domains/{source_id}"),
        _ => "system".to_string(),
    };
    let role_in_link = a.prior_role.as_deref().unwrap_or(&a.role_id);
    let assignment = if a.inherited || a.inherited_from.is_some() {
        format!(
            "{base}/v3/OS-INHERIT/{target_path}/{}/{}/roles/{role_in_link}/inherited_to_projects",
            link_actor.0, link_actor.1
        )
    } else {
        format!("{base}/v3/{target_path}/{}/{}/roles/{role_in_link}", link_actor.0, link_actor.1)
    };
    let mut links = json!({"assignment": assignment});
    if let Some(g) = &a.via_group {
        links["membership"] = json!(format!("{base}/v3/groups/{g}/users/{}", a.actor_id));
    }
    if let Some(p) = &a.prior_role {
        links["prior_role"] = json!(format!("{base}/v3/roles/{p}"));
    }
    let mut scope = scope;
    if a.inherited {
        scope["OS-INHERIT:inherited_to"] = json!("projects");
    }
    let mut v = json!({"role": role, "scope": scope, "links": links});
    v[actor_kind] = actor;
    Ok(v)
}
