//! `/v3/credentials` (blobs a user keeps with identity: EC2 key pairs, certificates,
//! TOTP secrets) and the EC2 view of them, `/v3/users/{id}/credentials/OS-EC2`.
//!
//! An EC2 credential is a credential of type `ec2` whose blob holds `access` and
//! `secret`; its id is the SHA-256 of the access key, as in Keystone, so both APIs see
//! the same rows. Blobs are kept as the client sent them (not encrypted at rest; see
//! docs/conformance.md). A user sees and manages their own credentials; an admin all.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::state::{list_links, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/credentials", get(list).post(create))
        .route("/v3/credentials/{credential_id}", get(show).patch(update).delete(delete))
        .route("/v3/users/{user_id}/credentials/OS-EC2", get(ec2_list).post(ec2_create))
        .route("/v3/users/{user_id}/credentials/OS-EC2/{access}", get(ec2_show).delete(ec2_delete))
}

const COLS: &str = "id, user_id, project_id, type, blob";

/// A stored credential.
struct Credential {
    id: String,
    user_id: String,
    project_id: Option<String>,
    kind: String,
    blob: String,
}

impl Credential {
    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Credential {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            project_id: r.try_get("project_id")?,
            kind: r.try_get("type")?,
            blob: r.try_get("blob")?,
        })
    }

    fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id, "user_id": self.user_id, "project_id": self.project_id, "type": self.kind,
            "blob": self.blob, "links": {"self": format!("{base}/v3/credentials/{}", self.id)}
        })
    }

    /// The EC2 view (`access`, `secret`, `tenant_id`...).
    fn ec2_json(&self, base: &str) -> Value {
        let blob: Value = serde_json::from_str(&self.blob).unwrap_or(Value::Null);
        let access = blob.get("access").cloned().unwrap_or(Value::Null);
        json!({
            "user_id": self.user_id, "tenant_id": self.project_id, "access": access,
            "secret": blob.get("secret").cloned().unwrap_or(Value::Null),
            "trust_id": blob.get("trust_id").cloned().unwrap_or(Value::Null),
            "links": {"self": format!("{base}/v3/users/{}/credentials/OS-EC2/{}", self.user_id, access.as_str().unwrap_or_default())}
        })
    }
}

fn target(user_id: &str) -> Value {
    json!({"target": {"credential": {"user_id": user_id}, "user": {"id": user_id}}, "user_id": user_id})
}

/// Keystone's id of an EC2 credential: hex SHA-256 of its access key.
fn ec2_id(access: &str) -> String {
    sha2::Sha256::digest(access.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

async fn get_credential(id: &Identity, cred_id: &str) -> Result<Option<Credential>> {
    let sql = format!("SELECT {COLS} FROM identity_credentials WHERE id = $1");
    let row = stratus_db::sqlx::query(&sql).bind(cred_id).fetch_optional(id.platform.db.reader()).await?;
    row.as_ref().map(Credential::from_row).transpose()
}

/// A credential the caller may act on, or 404 (also when it is another user's, so ids
/// of others' credentials are not confirmed).
async fn must_credential(id: &Identity, ctx: &Ctx, action: &str, cred_id: &str) -> Result<Credential, ApiError> {
    let c = get_credential(id, cred_id).await?;
    match c {
        Some(c) if id.policy.check(action, ctx, &target(&c.user_id)) => Ok(c),
        Some(c) => {
            id.policy.enforce(action, ctx, &target(&c.user_id))?;
            Ok(c)
        }
        None => Err(IdentityError::not_found("credential", cred_id).into()),
    }
}

/// The body of `POST /v3/credentials`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    user_id: String,
    #[serde(rename = "type")]
    kind: String,
    blob: String,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    credential: NewCredential,
}

/// The access key of an EC2 blob, or a 400.
fn ec2_access(blob: &str) -> Result<String> {
    let v: Value = serde_json::from_str(blob)
        .map_err(|_| IdentityError::invalid("Invalid blob in credential: an ec2 credential's blob must be JSON"))?;
    v.get("access")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .ok_or_else(|| IdentityError::invalid("Invalid blob in credential: an ec2 credential needs an 'access' key"))
}

async fn insert(id: &Identity, c: &Credential, access: Option<&str>) -> Result<()> {
    let mut q = Query::new(
        "INSERT INTO identity_credentials (id, user_id, project_id, type, blob, access_key, created_at) VALUES (",
    );
    q.bind(&c.id).push(", ").bind(&c.user_id).push(", ").bind(c.project_id.clone()).push(", ").bind(&c.kind);
    q.push(", ").bind(&c.blob).push(", ").bind(access.map(str::to_string)).push(", ");
    q.bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await.map_err(|e| match e {
        IdentityError::Db(d) if d.is_unique_violation() => IdentityError::Conflict(format!(
            "Conflict occurred attempting to store credential - Duplicate ID, {}.",
            c.id
        )),
        e => e,
    })?;
    Ok(())
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let CreateBody { credential: b } =
        serde_json::from_value(body).map_err(|e| IdentityError::invalid(format!("Invalid credential: {e}")))?;
    id.policy.enforce("identity:create_credential", &ctx, &target(&b.user_id))?;
    if b.kind.is_empty() || b.kind.len() > 255 {
        return Err(IdentityError::invalid("Invalid input for field 'type': must be 1 to 255 characters").into());
    }
    crate::users::must_user(&id, &b.user_id).await?;
    let (cred_id, access) = if b.kind == "ec2" {
        let Some(p) = &b.project_id else {
            return Err(IdentityError::invalid("A credential of type ec2 needs a project_id.").into());
        };
        crate::projects::must_project(&id, p).await?;
        let access = ec2_access(&b.blob)?;
        (ec2_id(&access), Some(access))
    } else {
        (b.id.clone().unwrap_or_else(crate::model::new_id), None)
    };
    let c = Credential { id: cred_id, user_id: b.user_id, project_id: b.project_id, kind: b.kind, blob: b.blob };
    insert(&id, &c, access.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(json!({"credential": c.json(&id.base)}))))
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_credentials", &ctx, &json!({}))?;
    let mut sql = Query::new(format!("SELECT {COLS} FROM identity_credentials WHERE 1 = 1"));
    if let Some(u) = q.get("user_id") {
        sql.push_bind(" AND user_id = ", u);
    }
    if let Some(t) = q.get("type") {
        sql.push_bind(" AND type = ", t);
    }
    sql.push(" ORDER BY created_at, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let mut out = Vec::new();
    for r in &rows {
        let c = Credential::from_row(r)?;
        // Users see their own credentials; readers of the system all.
        if id.policy.check("identity:get_credential", &ctx, &target(&c.user_id)) {
            out.push(c.json(&id.base));
        }
    }
    Ok(Json(json!({"credentials": out, "links": list_links(&id.base, "credentials")})))
}

async fn show(State(id): State<Arc<Identity>>, ctx: Ctx, Path(cred_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let c = must_credential(&id, &ctx, "identity:get_credential", &cred_id).await?;
    Ok(Json(json!({"credential": c.json(&id.base)})))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(cred_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let c = must_credential(&id, &ctx, "identity:update_credential", &cred_id).await?;
    let b = crate::state::body_object(&body, "credential")?;
    // Only the blob changes in place: a credential is not retyped, rescoped or given away.
    for (field, current) in [
        ("type", Some(c.kind.as_str())),
        ("user_id", Some(c.user_id.as_str())),
        ("project_id", c.project_id.as_deref()),
        ("id", Some(c.id.as_str())),
    ] {
        if let Some(v) = b.get(field) {
            if v.as_str() != current {
                return Err(IdentityError::invalid(format!("Update of `{field}` is not allowed.")).into());
            }
        }
    }
    if let Some(k) = b.keys().find(|k| !["type", "user_id", "project_id", "id", "blob"].contains(&k.as_str())) {
        return Err(IdentityError::invalid(format!(
            "Invalid input for field 'credential': Additional properties are not allowed ('{k}' was unexpected)"
        ))
        .into());
    }
    if let Some(blob) = b.get("blob") {
        let blob =
            blob.as_str().ok_or_else(|| IdentityError::invalid("Invalid input for field 'blob': expected a string"))?;
        let mut q = Query::new("UPDATE identity_credentials SET blob = ");
        q.bind(blob);
        if c.kind == "ec2" {
            q.push_bind(", access_key = ", ec2_access(blob)?);
        }
        q.push_bind(" WHERE id = ", &cred_id);
        id.exec(vec![q]).await.map_err(|e| match e {
            IdentityError::Db(d) if d.is_unique_violation() => {
                IdentityError::Conflict("Another credential already has this access key.".into())
            }
            e => e,
        })?;
    }
    let c = get_credential(&id, &cred_id).await?.ok_or_else(|| IdentityError::not_found("credential", &cred_id))?;
    Ok(Json(json!({"credential": c.json(&id.base)})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(cred_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    must_credential(&id, &ctx, "identity:delete_credential", &cred_id).await?;
    let mut q = Query::new("DELETE FROM identity_credentials WHERE id = ");
    q.bind(&cred_id);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- OS-EC2 -----------------------------------------------------------------------------

fn ec2_target(user_id: &str) -> Value {
    json!({"target": {"credential": {"user_id": user_id}, "user": {"id": user_id}}, "user_id": user_id})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ec2Create {
    tenant_id: String,
}

async fn ec2_create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:ec2_create_credential", &ctx, &ec2_target(&user_id))?;
    let b: Ec2Create =
        serde_json::from_value(body).map_err(|e| IdentityError::invalid(format!("Invalid EC2 credential: {e}")))?;
    crate::users::must_user(&id, &user_id).await?;
    crate::projects::must_project(&id, &b.tenant_id).await?;
    // The user must have a role on the project the key pair is for.
    let roles = id
        .effective_roles(
            &user_id,
            &crate::fernet::Scope::Project(b.tenant_id.clone()),
            id.get_project(&b.tenant_id).await?.as_ref(),
        )
        .await?;
    if roles.is_empty() {
        return Err(IdentityError::Forbidden(format!("User {user_id} has no role on project {}.", b.tenant_id)).into());
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let access: String = raw[..16].iter().map(|x| format!("{x:02x}")).collect();
    let secret: String = raw[16..].iter().map(|x| format!("{x:02x}")).collect();
    let blob = json!({"access": access, "secret": secret, "trust_id": null}).to_string();
    let c = Credential { id: ec2_id(&access), user_id, project_id: Some(b.tenant_id), kind: "ec2".into(), blob };
    insert(&id, &c, Some(&access)).await?;
    Ok((StatusCode::CREATED, Json(json!({"credential": c.ec2_json(&id.base)}))))
}

async fn ec2_list(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:ec2_list_credentials", &ctx, &ec2_target(&user_id))?;
    crate::users::must_user(&id, &user_id).await?;
    let mut sql = Query::new(format!("SELECT {COLS} FROM identity_credentials WHERE type = 'ec2' AND user_id = "));
    sql.bind(&user_id).push(" ORDER BY created_at, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> =
        rows.iter().map(|r| Credential::from_row(r).map(|c| c.ec2_json(&id.base))).collect::<Result<_>>()?;
    Ok(Json(
        json!({"credentials": list, "links": list_links(&id.base, &format!("users/{user_id}/credentials/OS-EC2"))}),
    ))
}

async fn ec2_get(id: &Identity, user_id: &str, access: &str) -> Result<Credential> {
    match get_credential(id, &ec2_id(access)).await? {
        Some(c) if c.user_id == user_id && c.kind == "ec2" => Ok(c),
        _ => Err(IdentityError::not_found("credential", access)),
    }
}

async fn ec2_show(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((user_id, access)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:ec2_get_credential", &ctx, &ec2_target(&user_id))?;
    let c = ec2_get(&id, &user_id, &access).await?;
    Ok(Json(json!({"credential": c.ec2_json(&id.base)})))
}

async fn ec2_delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((user_id, access)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:ec2_delete_credential", &ctx, &ec2_target(&user_id))?;
    let c = ec2_get(&id, &user_id, &access).await?;
    let mut q = Query::new("DELETE FROM identity_credentials WHERE id = ");
    q.bind(&c.id);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}
