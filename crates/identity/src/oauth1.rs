//! `/v3/OS-OAUTH1/consumers`: the consumers (client applications) of Keystone's OAuth 1.0a
//! delegation. A consumer's secret is shown once, at creation; only its hash is kept.
//! The request-token and access-token flow itself is not served (docs/conformance.md).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::model::new_id;
use crate::state::{list_links, Identity};

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/OS-OAUTH1/consumers", get(list).post(create))
        .route("/v3/OS-OAUTH1/consumers/{consumer_id}", get(show).patch(update).delete(delete))
}

fn to_json(id: &Identity, r: &AnyRow) -> Result<Value> {
    let cid: String = r.try_get("id")?;
    let mut v = json!({
        "id": cid, "description": r.try_get::<Option<String>, _>("description")?,
        "links": {"self": format!("{}/v3/OS-OAUTH1/consumers/{cid}", id.base)}
    });
    if let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(&r.try_get::<String, _>("extra")?) {
        for (k, x) in extra {
            v.as_object_mut().map(|o| o.entry(k).or_insert(x));
        }
    }
    Ok(v)
}

async fn fetch(id: &Identity, cid: &str) -> Result<AnyRow> {
    stratus_db::sqlx::query("SELECT id, description, extra FROM identity_oauth_consumers WHERE id = $1")
        .bind(cid)
        .fetch_optional(id.platform.db.reader())
        .await?
        .ok_or_else(|| IdentityError::not_found("consumer", cid))
}

/// What a consumer body sets: `description` (`Some(None)`: cleared) and extra attributes.
type ConsumerChange = (Option<Option<String>>, serde_json::Map<String, Value>);

/// The consumer object of a body: `description` (string or null) and extra attributes.
fn consumer_body(body: &Value) -> Result<ConsumerChange> {
    let b = crate::state::body_object(body, "consumer")?;
    let mut extra = serde_json::Map::new();
    let mut description = None;
    for (k, v) in b {
        match (k.as_str(), v) {
            ("description", Value::Null) => description = Some(None),
            ("description", Value::String(s)) => description = Some(Some(s.clone())),
            ("description", _) => {
                return Err(IdentityError::invalid("Invalid input for field 'description': expected a string or null"))
            }
            ("secret", _) => return Err(IdentityError::invalid("A consumer's secret cannot be set or changed.")),
            ("id" | "links", _) => {}
            _ => {
                extra.insert(k.clone(), v.clone());
            }
        }
    }
    Ok((description, extra))
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    id.policy.enforce("identity:create_consumer", &ctx, &json!({}))?;
    let (description, extra) = consumer_body(&body)?;
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = id.hasher.hash(secret.clone()).await?;
    let cid = new_id();
    let mut q =
        Query::new("INSERT INTO identity_oauth_consumers (id, description, secret_hash, extra, created_at) VALUES (");
    q.bind(&cid).push(", ").bind(description.flatten()).push(", ").bind(hash).push(", ");
    q.bind(Value::Object(extra).to_string()).push(", ").bind(stratus_core::time::now()).push(")");
    id.exec(vec![q]).await?;
    let mut v = to_json(&id, &fetch(&id, &cid).await?)?;
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(json!({"consumer": v}))))
}

async fn list(State(id): State<Arc<Identity>>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:list_consumers", &ctx, &json!({}))?;
    let rows =
        stratus_db::sqlx::query("SELECT id, description, extra FROM identity_oauth_consumers ORDER BY created_at, id")
            .fetch_all(id.platform.db.reader())
            .await
            .map_err(IdentityError::from)?;
    let list: Vec<Value> = rows.iter().map(|r| to_json(&id, r)).collect::<Result<_>>()?;
    Ok(Json(json!({"consumers": list, "links": list_links(&id.base, "OS-OAUTH1/consumers")})))
}

async fn show(State(id): State<Arc<Identity>>, ctx: Ctx, Path(cid): Path<String>) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_consumer", &ctx, &json!({}))?;
    Ok(Json(json!({"consumer": to_json(&id, &fetch(&id, &cid).await?)?})))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(cid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:update_consumer", &ctx, &json!({}))?;
    let row = fetch(&id, &cid).await?;
    let (description, extra) = consumer_body(&body)?;
    let mut current: serde_json::Map<String, Value> =
        serde_json::from_str(&row.try_get::<String, _>("extra").map_err(IdentityError::from)?).unwrap_or_default();
    current.extend(extra);
    let mut q = Query::new("UPDATE identity_oauth_consumers SET extra = ");
    q.bind(Value::Object(current).to_string());
    if let Some(d) = description {
        q.push_bind(", description = ", d);
    }
    q.push_bind(" WHERE id = ", &cid);
    id.exec(vec![q]).await?;
    Ok(Json(json!({"consumer": to_json(&id, &fetch(&id, &cid).await?)?})))
}

async fn delete(State(id): State<Arc<Identity>>, ctx: Ctx, Path(cid): Path<String>) -> Result<StatusCode, ApiError> {
    id.policy.enforce("identity:delete_consumer", &ctx, &json!({}))?;
    fetch(&id, &cid).await?;
    let mut q = Query::new("DELETE FROM identity_oauth_consumers WHERE id = ");
    q.bind(&cid);
    id.exec(vec![q]).await?;
    Ok(StatusCode::NO_CONTENT)
}
