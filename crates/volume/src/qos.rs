//! QoS specs (`/qos-specs`): named sets of limits associated with volume types.
//!
//! Front-end specs (`consumer` `front-end` or `both`: `total_iops_sec`,
//! `read_bytes_sec`...) travel in every attachment's connection info as `qos_specs`,
//! and the hypervisor enforces them with QEMU throttle groups; back-end specs would be
//! for the storage, which has none to honour here.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};
use stratus_db::Query;

use crate::body;
use crate::error::{bad, not_found, VolError, VolResult};
use crate::policy::enforce;
use crate::sql::{self, QOS_VALUES};
use crate::{both, Vol, S};

/// Who applies a QoS spec.
const CONSUMERS: &[&str] = &["front-end", "back-end", "both"];

/// A QoS spec.
#[derive(Debug, Clone)]
pub struct QosSpec {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `front-end`, `back-end` or `both`.
    pub consumer: String,
    /// The limits.
    pub specs: BTreeMap<String, String>,
}

/// The spec `id`.
pub async fn find(vol: &Vol, id: &str) -> VolResult<Option<QosSpec>> {
    let mut q = Query::new("SELECT * FROM volume_qos_specs WHERE id = ");
    q.bind(id);
    let Some(r) = q.fetch_optional(vol.db.reader()).await? else { return Ok(None) };
    Ok(Some(QosSpec {
        id: sql::s(&r, "id"),
        name: sql::s(&r, "name"),
        consumer: sql::s(&r, "consumer"),
        specs: QOS_VALUES.load(vol.db.reader(), id).await?,
    }))
}

/// The front-end limits of volume type `type_id`, for connection info (None: none).
pub async fn front_end_of_type(vol: &Vol, type_id: &str) -> VolResult<Option<BTreeMap<String, String>>> {
    let mut q = Query::new("SELECT qos_specs_id FROM volume_types WHERE id = ");
    q.bind(type_id);
    let Some(spec_id) = q.fetch_optional(vol.db.reader()).await?.and_then(|r| sql::os(&r, "qos_specs_id")) else {
        return Ok(None);
    };
    Ok(find(vol, &spec_id).await?.filter(|s| s.consumer != "back-end").map(|s| s.specs))
}

fn view(vol: &Vol, ctx: &RequestContext, s: &QosSpec) -> Value {
    let project = ctx.project_id.clone().unwrap_or_default();
    json!({
        "qos_specs": {"id": s.id, "name": s.name, "consumer": s.consumer, "specs": body::map_json(&s.specs)},
        "links": body::links(&vol.base, &project, "qos-specs", &s.id),
    })
}

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/qos-specs", get(list).post(create));
    r = both(r, "/qos-specs/{id}", get(show).put(update).delete(delete));
    r = both(r, "/qos-specs/{id}/delete_keys", put(delete_keys));
    r = both(r, "/qos-specs/{id}/associations", get(associations));
    r = both(r, "/qos-specs/{id}/associate", get(associate));
    r = both(r, "/qos-specs/{id}/disassociate", get(disassociate));
    r = both(r, "/qos-specs/{id}/disassociate_all", get(disassociate_all));
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

async fn get_spec(vol: &Vol, ctx: &RequestContext, id: &str, action: &str) -> VolResult<QosSpec> {
    enforce(&vol.policy, &format!("volume_extension:qos_specs_manage:{action}"), ctx, None)?;
    find(vol, id).await?.ok_or_else(|| VolError::NotFound(format!("QoS spec {id} could not be found.")))
}

async fn list(State(vol): State<S>, Ctx(ctx): Ctx) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:qos_specs_manage:get_all", &ctx, None)?;
    let rows = Query::new("SELECT * FROM volume_qos_specs ORDER BY created_at, id").fetch_all(vol.db.reader()).await?;
    let ids: Vec<String> = rows.iter().map(|r| sql::s(r, "id")).collect();
    let mut values = QOS_VALUES.load_many(vol.db.reader(), &ids).await?;
    let all: Vec<Value> = rows
        .iter()
        .map(|r| {
            let id = sql::s(r, "id");
            let specs = values.remove(&id).unwrap_or_default();
            json!({"id": id, "name": sql::s(r, "name"), "consumer": sql::s(r, "consumer"), "specs": body::map_json(&specs)})
        })
        .collect();
    Ok(Json(json!({"qos_specs": all})))
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let s = get_spec(&vol, &ctx, &p.id, "get").await?;
    Ok(Json(view(&vol, &ctx, &s)))
}

async fn create(State(vol): State<S>, Ctx(ctx): Ctx, OsJson(b): OsJson<Value>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:qos_specs_manage:create", &ctx, None)?;
    let m = body::obj(&b, "qos_specs")?;
    let name = body::opt_text(m, "name", 255)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("Please specify a name for QoS specs."))?;
    let consumer = body::opt_str(m, "consumer")?.unwrap_or_else(|| "back-end".into());
    if !CONSUMERS.contains(&consumer.as_str()) {
        return Err(bad(format!("Invalid consumer {consumer:?}: use front-end, back-end or both")));
    }
    let mut rest = m.clone();
    rest.remove("name");
    rest.remove("consumer");
    let specs = body::metadata(Some(&Value::Object(rest)), "qos_specs")?.unwrap_or_default();
    let id = body::new_id();
    vol.db
        .transaction(|tx| {
            let (id, name, consumer, specs) = (id.clone(), name.clone(), consumer.clone(), specs.clone());
            Box::pin(async move {
                let mut q = Query::new("INSERT INTO volume_qos_specs (id, name, consumer, created_at) VALUES (");
                q.bind(&id).push(", ").bind(&name).push(", ").bind(&consumer).push(", ");
                q.bind(stratus_core::time::now()).push(")");
                q.execute(&mut **tx).await.map_err(|e| {
                    if e.is_unique_violation() {
                        VolError::Conflict(format!("QoS Specs {name} already exists."))
                    } else {
                        e.into()
                    }
                })?;
                QOS_VALUES.merge(tx, &id, &specs).await
            })
        })
        .await?;
    let s = find(&vol, &id).await?.ok_or_else(|| not_found("QoS spec", &id))?;
    Ok(Json(view(&vol, &ctx, &s)))
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let s = get_spec(&vol, &ctx, &p.id, "update").await?;
    let m = body::obj(&b, "qos_specs")?;
    let mut specs = body::metadata(Some(&Value::Object(m.clone())), "qos_specs")?.unwrap_or_default();
    let mut tx = vol.db.begin().await?;
    if let Some(c) = specs.remove("consumer") {
        if !CONSUMERS.contains(&c.as_str()) {
            return Err(bad(format!("Invalid consumer {c:?}: use front-end, back-end or both")));
        }
        let mut q = Query::new("UPDATE volume_qos_specs SET consumer = ");
        q.bind(&c).push(" WHERE id = ").bind(&s.id);
        q.execute(&mut *tx).await?;
    }
    QOS_VALUES.merge(&mut tx, &s.id, &specs).await?;
    tx.commit().await?;
    Ok(Json(json!({"qos_specs": b["qos_specs"].clone()})))
}

async fn associated_types(vol: &Vol, id: &str) -> VolResult<Vec<(String, String)>> {
    let mut q = Query::new("SELECT id, name FROM volume_types WHERE deleted = 0 AND qos_specs_id = ");
    q.bind(id).push(" ORDER BY name");
    Ok(q.fetch_all(vol.db.reader()).await?.iter().map(|r| (sql::s(r, "id"), sql::s(r, "name"))).collect())
}

async fn delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>, q: QueryPairs) -> VolResult<StatusCode> {
    let s = get_spec(&vol, &ctx, &p.id, "delete").await?;
    let force = q.bool("force").map_err(VolError::Api)?.unwrap_or(false);
    if !force && !associated_types(&vol, &s.id).await?.is_empty() {
        return Err(bad(format!("QoS Specs {} is still associated with entities.", s.id)));
    }
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("UPDATE volume_types SET qos_specs_id = NULL WHERE qos_specs_id = ");
    q.bind(&s.id);
    q.execute(&mut *tx).await?;
    QOS_VALUES.clear(&mut tx, &s.id).await?;
    let mut q = Query::new("DELETE FROM volume_qos_specs WHERE id = ");
    q.bind(&s.id);
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

async fn delete_keys(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<StatusCode> {
    let s = get_spec(&vol, &ctx, &p.id, "delete").await?;
    let keys: Vec<String> = match b.get("keys") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => return Err(bad("Missing required element 'keys' (a list of keys) in request body.")),
    };
    let mut tx = vol.db.begin().await?;
    for k in &keys {
        if !QOS_VALUES.remove(&mut tx, &s.id, k).await? {
            return Err(VolError::NotFound(format!("QoS spec {} has no key {k}.", s.id)));
        }
    }
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

async fn associations(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let s = get_spec(&vol, &ctx, &p.id, "get").await?;
    let all: Vec<Value> = associated_types(&vol, &s.id)
        .await?
        .into_iter()
        .map(|(id, name)| json!({"association_type": "volume_type", "id": id, "name": name}))
        .collect();
    Ok(Json(json!({"qos_associations": all})))
}

fn type_param(q: &QueryPairs) -> VolResult<String> {
    q.get("vol_type_id")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad("Please specify a volume type id (vol_type_id) to associate or disassociate."))
}

async fn associate(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>, q: QueryPairs) -> VolResult<StatusCode> {
    let s = get_spec(&vol, &ctx, &p.id, "update").await?;
    let type_id = type_param(&q)?;
    let t = crate::types::find(&vol, &type_id, false).await?.ok_or_else(|| not_found("Volume type", &type_id))?;
    if let Some(other) = t.qos_specs_id.as_deref().filter(|o| *o != s.id) {
        return Err(bad(format!("Type {} is already associated with another qos specs: {other}", t.id)));
    }
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("UPDATE volume_types SET qos_specs_id = ");
    q.bind(&s.id).push(" WHERE id = ").bind(&t.id);
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

async fn disassociate(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    q: QueryPairs,
) -> VolResult<StatusCode> {
    let s = get_spec(&vol, &ctx, &p.id, "update").await?;
    let type_id = type_param(&q)?;
    let t = crate::types::find(&vol, &type_id, false).await?.ok_or_else(|| not_found("Volume type", &type_id))?;
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("UPDATE volume_types SET qos_specs_id = NULL WHERE id = ");
    q.bind(&t.id).push(" AND qos_specs_id = ").bind(&s.id);
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

async fn disassociate_all(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<StatusCode> {
    let s = get_spec(&vol, &ctx, &p.id, "update").await?;
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("UPDATE volume_types SET qos_specs_id = NULL WHERE qos_specs_id = ");
    q.bind(&s.id);
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}
