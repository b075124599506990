//! `/resource_providers/{uuid}/aggregates` (1.1; generations from 1.19).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, OsJson};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::common::{authorize, generation, object, only_keys, parse_uuid, required, route_since, string};
use crate::error::{PlacementError, Result};
use crate::store;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/resource_providers/{uuid}/aggregates", get(list).put(set))
}

fn doc(aggs: Vec<String>, gen: i64, v: ApiVersion) -> Value {
    if v.at_least(1, 19) {
        json!({"aggregates": aggs, "resource_provider_generation": gen})
    } else {
        json!({"aggregates": aggs})
    }
}

/// `GET /resource_providers/{uuid}/aggregates`.
async fn list(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
) -> Result<Json<Value>> {
    route_since(v, 1, 1)?;
    authorize(&st, &ctx, "placement:resource_providers:aggregates:list")?;
    let rp = store::provider_or_404(st.db.reader(), &uuid).await?;
    let mut q = Query::new("SELECT aggregate_uuid FROM placement_provider_aggregates WHERE provider_uuid = ");
    q.bind(&uuid).push(" ORDER BY aggregate_uuid");
    let aggs = q.fetch_all(st.db.reader()).await?.iter().map(|r| r.get::<String, _>(0)).collect();
    Ok(Json(doc(aggs, rp.generation, v)))
}

/// `PUT /resource_providers/{uuid}/aggregates`: a bare list before 1.19, an object with
/// the provider generation from 1.19.
async fn set(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    route_since(v, 1, 1)?;
    authorize(&st, &ctx, "placement:resource_providers:aggregates:update")?;
    let (list, expected) = if v.at_least(1, 19) {
        let obj = object(&body, "body")?;
        only_keys(obj, &["aggregates", "resource_provider_generation"])?;
        (required(obj, "aggregates")?.clone(), Some(generation(obj, "resource_provider_generation")?))
    } else {
        (body.clone(), None)
    };
    let arr = list
        .as_array()
        .ok_or_else(|| PlacementError::BadRequest("JSON does not validate: aggregates must be an array".into()))?;
    let mut aggs = BTreeSet::new();
    for a in arr {
        let s = parse_uuid(string(a, "aggregates")?, "aggregate uuid")?;
        if !aggs.insert(s) {
            return Err(PlacementError::BadRequest(
                "JSON does not validate: aggregates has non-unique elements".into(),
            ));
        }
    }
    let aggs: Vec<String> = aggs.into_iter().collect();
    let (u2, a2) = (uuid.clone(), aggs.clone());
    let gen = st
        .db
        .transaction(move |tx| {
            let (uuid, aggs) = (u2.clone(), a2.clone());
            Box::pin(async move {
                let rp = store::provider_or_404(&mut **tx, &uuid).await?;
                let expected = expected.unwrap_or(rp.generation);
                let mut d = Query::new("DELETE FROM placement_provider_aggregates WHERE provider_uuid = ");
                d.bind(&uuid);
                d.execute(&mut **tx).await?;
                for a in &aggs {
                    let mut q = Query::new(
                        "INSERT INTO placement_provider_aggregates (provider_uuid, aggregate_uuid) VALUES (",
                    );
                    q.bind(&uuid).push(", ").bind(a).push(")");
                    q.execute(&mut **tx).await?;
                }
                store::bump_generation(tx, &uuid, expected).await
            })
        })
        .await?;
    store::refresh(&st, std::slice::from_ref(&uuid), false).await?;
    Ok(Json(doc(aggs, gen, v)))
}
