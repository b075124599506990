//! `/v3/policies`: policy blobs stored for other services to fetch (Keystone's
//! deprecated policy store; the blob is opaque text, Stratus does not interpret it).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::new_id;
use crate::state::{body_object, list_links, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/policies", get(list).post(create))
        .route("/v3/policies/{policy_id}", get(show).patch(update).delete(delete))
}

fn to_json(id: &Identity, r: &AnyRow) -> Result<Value> {
    let pid: String = r.try_get("id")?;
    let mut v = json!({
        "id": pid, "type": r.try_get::<String, _>("type")?, "blob": r.try_get::<String, _>("blob")?,
        "links": {"self": format!("{}/v3/policies/{pid}", id.base)}
    });
    if let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(&r.try_get::<String, _>("extra")?) {
        for (k, x) in extra {
            v.as_object_mut().map(|o| o.entry(k).or_insert(x));
        }
    }
    Ok(v)
}

async fn fetch(id: &Identity, pid: &str) -> Result<AnyRow> {
    stratus_db::sqlx::query("SELECT id, type, blob, extra FROM identity_policies WHERE id = $1")
        .bind(pid)
        .fetch_optional(id.platform.db.reader())
        .await?
        .ok_or_else(|| IdentityError::not_found("policy", pid))
}

/// (type, blob, extra attributes) a policy body sets.
type PolicyChange = (Option<String>, Option<String>, serde_json::Map<String, Value>);

/// (type, blob, extra) of a policy body; `required`: type and blob must be there.
fn policy_body(body: &Value, required: bool) -> Result<PolicyChange> {
    let b = body_object(body, "policy")?;
    let mut extra = serde_json::Map::new();
    let (mut kind, mut blob) = (None, None);
    for (k, v) in b {
        match k.as_str() {
            "type" | "blob" => {
                let s = v.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                    IdentityError::invalid(format!("Invalid input for field '{k}': expected a non-empty string"))
                })?;
                if k == "type" {
                    kind = Some(s.to_string());
                } else {
                    blob = Some(s.to_string());
                }
            }
            "id" | "links" => {}
            _ => {
                extra.insert(k.clone(), v.clone());
            }
        }
    }
    if required && kind.is_none() {
        return Err(IdentityError::invalid("'type' is a required property"));
    }
    if required && blob.is_none() {
        return Err(IdentityError::invalid("'blob' is a required property"));
    }
    Ok((kind, blob, extra))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_policy", &ctx, &json!({}))?;
    let (kind, blob, extra) = policy_body(&body, true)?;
    let pid = new_id();
    let mut q = Query::new("INSERT INTO identity_policies (id, type, blob, extra, created_at) VALUES (");
    q.bind(&pid).push(", ").bind(kind).push(", ").bind(blob).push(", ").bind(Value::Object(extra).to_string());
    q.push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    Ok((StatusCode::CREATED, Json(json!({"policy": to_json(&id, &fetch(&id, &pid).await?)?}))))
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_policies", &ctx, &json!({}))?;
    let mut sql = Query::new("SELECT id, type, blob, extra FROM identity_policies WHERE 1 = 1");
    if let Some(t) = q.get("type") {
        sql.push_bind(" AND type = ", t);
    }
    sql.push(" ORDER BY created_at, id");
    let rows = sql.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| to_json(&id, r)).collect::<Result<_>>()?;
    Ok(Json(json!({"policies": list, "links": list_links(&id.base, "policies")})))
}

async fn show(State(id): State<Arc<Identity>>, ctx: Ctx, Path(pid): Path<String>) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_policy", &ctx, &json!({}))?;
    Ok(Json(json!({"policy": to_json(&id, &fetch(&id, &pid).await?)?})))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(pid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_policy", &ctx, &json!({}))?;
    let row = fetch(&id, &pid).await?;
    let (kind, blob, extra) = policy_body(&body, false)?;
    let mut current: serde_json::Map<String, Value> =
        serde_json::from_str(&row.try_get::<String, _>("extra").map_err(IdentityError::from)?).unwrap_or_default();
    current.extend(extra);
    let mut q = Query::new("UPDATE identity_policies SET extra = ");
    q.bind(Value::Object(current).to_string());
    if let Some(k) = kind {
        q.push_bind(", type = ", k);
    }
    if let Some(b) = blob {
        q.push_bind(", blob = ", b);
    }
    q.push_bind(" WHERE id = ", &pid);
    id.exec(vec![q]).await?;
    Ok(Json(json!({"policy": to_json(&id, &fetch(&id, &pid).await?)?})))
}

async fn delete(State(id): State<Arc<Identity>>, ctx: Ctx, Path(pid): Path<String>) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_policy", &ctx, &json!({}))?;
    fetch(&id, &pid).await?;
    let mut q = Query::new("DELETE FROM identity_policies WHERE id = ");
    q.bind(&pid);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}
