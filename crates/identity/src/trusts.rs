//! `/v3/OS-TRUST/trusts`: delegation. A trustor lets a trustee act on one project with
//! a subset of the trustor's roles there (as the trustor when `impersonation`), until
//! `expires_at` or for `remaining_uses` tokens. Trusts cannot be updated; deleting one
//! voids the tokens made with it (a trust token is checked against its trust whenever
//! its view is loaded).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::fernet::Scope;
use crate::model::{new_id, Role};
use crate::state::{list_links, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/OS-TRUST/trusts", get(list).post(create))
        .route("/v3/OS-TRUST/trusts/{trust_id}", get(show).delete(delete))
        .route("/v3/OS-TRUST/trusts/{trust_id}/roles", get(list_roles))
        .route("/v3/OS-TRUST/trusts/{trust_id}/roles/{role_id}", get(show_role))
}

const COLS: &str = "id, trustor_user_id, trustee_user_id, project_id, impersonation, expires_at, remaining_uses, \
    allow_redelegation, redelegation_count, redelegated_trust_id";

/// A live trust.
#[derive(Debug, Clone)]
pub struct Trust {
    pub id: String,
    pub trustor_user_id: String,
    pub trustee_user_id: String,
    pub project_id: Option<String>,
    pub impersonation: bool,
    pub expires_at: Option<String>,
    pub remaining_uses: Option<i64>,
    pub allow_redelegation: bool,
    pub redelegation_count: i64,
    pub redelegated_trust_id: Option<String>,
    /// Delegated role ids.
    pub role_ids: Vec<String>,
}

impl Trust {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Trust {
            id: r.try_get("id")?,
            trustor_user_id: r.try_get("trustor_user_id")?,
            trustee_user_id: r.try_get("trustee_user_id")?,
            project_id: r.try_get("project_id")?,
            impersonation: stratus_db::flag(r, "impersonation"),
            expires_at: r.try_get("expires_at")?,
            remaining_uses: r.try_get("remaining_uses")?,
            allow_redelegation: stratus_db::flag(r, "allow_redelegation"),
            redelegation_count: r.try_get("redelegation_count")?,
            redelegated_trust_id: r.try_get("redelegated_trust_id")?,
            role_ids: Vec::new(),
        })
    }

    /// Expired or used up.
    pub fn spent(&self) -> bool {
        let expired =
            self.expires_at.as_deref().and_then(stratus_core::time::parse).is_some_and(|t| t <= chrono::Utc::now());
        expired || self.remaining_uses.is_some_and(|n| n <= 0)
    }

    async fn json(&self, id: &Identity, with_roles: bool) -> Result<Value> {
        let mut v = json!({
            "id": self.id, "trustor_user_id": self.trustor_user_id, "trustee_user_id": self.trustee_user_id,
            "project_id": self.project_id, "impersonation": self.impersonation,
            "expires_at": self.expires_at.as_deref().map(stratus_core::time::micros_z),
            "remaining_uses": self.remaining_uses, "allow_redelegation": self.allow_redelegation,
            "redelegation_count": self.redelegation_count, "redelegated_trust_id": self.redelegated_trust_id,
            "links": {"self": format!("{}/v3/OS-TRUST/trusts/{}", id.base, self.id)}
        });
        if with_roles {
            v["roles"] = Value::Array(self.roles(id).await?.iter().map(|r| r.json(&id.base)).collect());
            v["roles_links"] = json!({"self": format!("{}/v3/OS-TRUST/trusts/{}/roles", id.base, self.id), "previous": null, "next": null});
        }
        Ok(v)
    }

    /// The delegated roles that still exist.
    pub async fn roles(&self, id: &Identity) -> Result<Vec<Role>> {
        let mut out = Vec::new();
        for r in &self.role_ids {
            if let Some(role) = id.get_role(r).await? {
                out.push(role);
            }
        }
        Ok(out)
    }
}

/// A trust that is neither deleted, expired nor used up.
pub async fn get_trust(id: &Identity, trust_id: &str) -> Result<Option<Trust>> {
    Ok(get_live_trust(id, trust_id).await?.filter(|t| !t.spent()))
}

/// A trust that is neither deleted nor expired (its tokens stay valid after its last
/// use is spent, as in Keystone: `remaining_uses` limits issuing only).
pub async fn get_live_trust(id: &Identity, trust_id: &str) -> Result<Option<Trust>> {
    let sql = format!("SELECT {COLS} FROM identity_trusts WHERE id = $1 AND deleted_at IS NULL");
    let Some(row) = stratus_db::sqlx::query(&sql).bind(trust_id).fetch_optional(id.platform.db.reader()).await? else {
        return Ok(None);
    };
    let mut t = Trust::from_row(&row)?;
    let expired = t.expires_at.as_deref().and_then(stratus_core::time::parse).is_some_and(|e| e <= chrono::Utc::now());
    if expired {
        return Ok(None);
    }
    let rows = stratus_db::sqlx::query("SELECT role_id FROM identity_trust_roles WHERE trust_id = $1 ORDER BY role_id")
        .bind(trust_id)
        .fetch_all(id.platform.db.reader())
        .await?;
    t.role_ids = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?;
    Ok(Some(t))
}

/// Counts one use of a trust with limited uses; refuses when none is left.
pub async fn consume(id: &Identity, t: &Trust) -> Result<()> {
    if t.remaining_uses.is_none() {
        return Ok(());
    }
    let mut q =
        Query::new("UPDATE identity_trusts SET remaining_uses = remaining_uses - 1 WHERE remaining_uses > 0 AND id = ");
    q.bind(&t.id);
    if id.exec(vec![q]).await? == 0 {
        return Err(IdentityError::Unauthorized(format!("Trust {} has no uses left.", t.id)));
    }
    Ok(())
}

fn target(t: &Trust) -> Value {
    json!({"target": {"trust": {"trustor_user_id": t.trustor_user_id, "trustee_user_id": t.trustee_user_id}}})
}

/// A trust the caller may see (trustor, trustee or admin), else 404/403. A trust whose
/// uses are spent is still shown and can still be deleted (its tokens live on until then).
async fn visible(id: &Identity, ctx: &Ctx, action: &str, trust_id: &str) -> Result<Trust, ApiError> {
    let t = get_live_trust(id, trust_id).await?.ok_or_else(|| IdentityError::not_found("trust", trust_id))?;
    id.policy.enforce(action, ctx, &target(&t))?;
    Ok(t)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTrust {
    trustor_user_id: String,
    trustee_user_id: String,
    impersonation: bool,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    roles: Vec<RoleRef>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    remaining_uses: Option<i64>,
    #[serde(default)]
    allow_redelegation: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    trust: NewTrust,
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let CreateBody { trust: b } =
        serde_json::from_value(body).map_err(|e| IdentityError::invalid(format!("Invalid trust: {e}")))?;
    id.policy.enforce("identity:create_trust", &ctx, &json!({"trust": {"trustor_user_id": b.trustor_user_id}}))?;
    if ctx.user_id != b.trustor_user_id {
        return Err(IdentityError::Forbidden("Only the trustor may create a trust.".into()).into());
    }
    if ctx.application_credential_id.is_some() {
        return Err(IdentityError::Forbidden("An application credential cannot create trusts.".into()).into());
    }
    crate::users::must_user(&id, &b.trustee_user_id).await?;
    if b.remaining_uses.is_some_and(|n| n <= 0) {
        return Err(IdentityError::invalid(
            "Invalid input for field 'remaining_uses': must be a positive integer or null",
        )
        .into());
    }
    let expires_at = match &b.expires_at {
        Some(s) => {
            let t = stratus_core::time::parse(s).ok_or_else(|| {
                IdentityError::invalid(format!("Invalid input for field 'expires_at': {s:?} is not a date-time"))
            })?;
            if t <= chrono::Utc::now() {
                return Err(IdentityError::invalid("Invalid input for field 'expires_at': it is in the past").into());
            }
            Some(stratus_core::time::to_storage(t))
        }
        None => None,
    };
    // The roles delegated must be roles the trustor has on the project.
    let mut role_ids = Vec::new();
    if let Some(p) = &b.project_id {
        let project = crate::projects::must_project(&id, p).await?;
        if b.roles.is_empty() {
            return Err(IdentityError::invalid("A trust on a project must delegate at least one role.").into());
        }
        let held = id.effective_roles(&b.trustor_user_id, &Scope::Project(p.clone()), Some(&project)).await?;
        for r in &b.roles {
            let found = match (&r.id, &r.name) {
                (Some(rid), _) => held.iter().find(|(i, _)| i == rid),
                (None, Some(n)) => held.iter().find(|(_, nn)| nn == n),
                (None, None) => return Err(IdentityError::invalid("A role needs an id or a name").into()),
            };
            let _ = &r.domain_id;
            match found {
                Some((i, _)) if !role_ids.contains(i) => role_ids.push(i.clone()),
                Some(_) => {}
                None => {
                    return Err(IdentityError::Forbidden(format!(
                        "The trustor does not have role {} on project {p}.",
                        r.id.as_deref().or(r.name.as_deref()).unwrap_or_default()
                    ))
                    .into())
                }
            }
        }
    } else if !b.roles.is_empty() {
        return Err(IdentityError::invalid("Roles can only be delegated on a project.").into());
    }
    let tid = new_id();
    let mut qs = Vec::new();
    let mut q = Query::new(
        "INSERT INTO identity_trusts (id, trustor_user_id, trustee_user_id, project_id, impersonation, expires_at, \
         remaining_uses, allow_redelegation, created_at) VALUES (",
    );
    q.bind(&tid).push(", ").bind(&b.trustor_user_id).push(", ").bind(&b.trustee_user_id).push(", ");
    q.bind(b.project_id.clone()).push(", ").bind(b.impersonation).push(", ").bind(expires_at).push(", ");
    q.bind(b.remaining_uses).push(", ").bind(b.allow_redelegation.unwrap_or(false)).push(", ");
    q.bind(stratus_core::time::now()).push(")");
    qs.push(q);
    for r in &role_ids {
        let mut q = Query::new("INSERT INTO identity_trust_roles (trust_id, role_id) VALUES (");
        q.bind(&tid).push(", ").bind(r).push(")");
        qs.push(q);
    }
    id.exec(qs).await?;
    let t = get_live_trust(&id, &tid).await?.ok_or_else(|| IdentityError::not_found("trust", &tid))?;
    Ok((StatusCode::CREATED, Json(json!({"trust": t.json(&id, true).await?}))))
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let trustor = q.get("trustor_user_id");
    let trustee = q.get("trustee_user_id");
    // Without a filter only an admin lists; with one, the user it names (or an admin).
    let allowed = id.policy.check("identity:list_trusts", &ctx, &json!({}))
        || trustor.is_some_and(|u| u == ctx.user_id)
        || trustee.is_some_and(|u| u == ctx.user_id);
    if !allowed {
        return Err(IdentityError::Forbidden("You are not authorized to list these trusts.".into()).into());
    }
    let mut sql = Query::new(format!("SELECT {COLS} FROM identity_trusts WHERE deleted_at IS NULL"));
    if let Some(u) = trustor {
        sql.push_bind(" AND trustor_user_id = ", u);
    }
    if let Some(u) = trustee {
        sql.push_bind(" AND trustee_user_id = ", u);
    }
    sql.push(" ORDER BY created_at, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let mut out = Vec::new();
    for r in &rows {
        let t = Trust::from_row(r)?;
        let expired =
            t.expires_at.as_deref().and_then(stratus_core::time::parse).is_some_and(|e| e <= chrono::Utc::now());
        if !expired {
            out.push(t.json(&id, false).await?);
        }
    }
    Ok(Json(json!({"trusts": out, "links": list_links(&id.base, "OS-TRUST/trusts")})))
}

async fn show(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(trust_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = visible(&id, &ctx, "identity:get_trust", &trust_id).await?;
    Ok(Json(json!({"trust": t.json(&id, true).await?})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(trust_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let t = visible(&id, &ctx, "identity:delete_trust", &trust_id).await?;
    let mut q = Query::new("UPDATE identity_trusts SET deleted_at = ");
    q.bind(stratus_core::time::now()).push_bind(" WHERE id = ", &t.id);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_roles(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(trust_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = visible(&id, &ctx, "identity:list_roles_for_trust", &trust_id).await?;
    let roles: Vec<Value> = t.roles(&id).await?.iter().map(|r| r.json(&id.base)).collect();
    Ok(Json(json!({"roles": roles, "links": list_links(&id.base, &format!("OS-TRUST/trusts/{trust_id}/roles"))})))
}

async fn show_role(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((trust_id, role_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = visible(&id, &ctx, "identity:get_role_for_trust", &trust_id).await?;
    let role = t
        .roles(&id)
        .await?
        .into_iter()
        .find(|r| r.id == role_id)
        .ok_or_else(|| IdentityError::not_found("role", &role_id))?;
    Ok(Json(json!({"role": role.json(&id.base)})))
}
