//! `/resource_providers/{uuid}/usages` and `/usages` (1.9): what is consumed, per
//! provider or per project/user (compute counts quotas from here).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::common::{authorize, route_since};
use crate::error::{PlacementError, Result};
use crate::store;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/resource_providers/{uuid}/usages", get(provider_usages)).route("/usages", get(totals))
}

/// `GET /resource_providers/{uuid}/usages`: every class with inventory, used or not.
async fn provider_usages(State(st): State<Arc<AppState>>, ctx: Ctx, Path(uuid): Path<String>) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:usages")?;
    let rp = store::provider_or_404(st.db.reader(), &uuid).await?;
    let ids = std::slice::from_ref(&uuid);
    let invs = store::inventories(st.db.reader(), Some(ids)).await?.remove(&uuid).unwrap_or_default();
    let uses = store::usages(st.db.reader(), Some(ids)).await?.remove(&uuid).unwrap_or_default();
    let mut out = BTreeMap::new();
    for rc in invs.keys().chain(uses.keys()) {
        out.insert(rc.clone(), uses.get(rc).copied().unwrap_or(0));
    }
    Ok(Json(json!({"usages": out, "resource_provider_generation": rp.generation})))
}

/// `GET /usages?project_id=&user_id=[&consumer_type=]`.
async fn totals(State(st): State<Arc<AppState>>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>> {
    route_since(v, 1, 9)?;
    authorize(&st, &ctx, "placement:usages")?;
    let mut allowed = vec!["project_id", "user_id"];
    if v.at_least(1, 38) {
        allowed.push("consumer_type");
    }
    for (k, _) in &q.0 {
        if !allowed.contains(&k.as_str()) {
            return Err(PlacementError::BadRequest(format!(
                "Invalid query string parameters: Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
    }
    let project = q.get("project_id").ok_or_else(|| {
        PlacementError::BadRequest("Invalid query string parameters: 'project_id' is a required property".into())
    })?;
    let mut sql = Query::new(
        "SELECT c.consumer_type, a.resource_class, CAST(SUM(a.used) AS BIGINT), COUNT(DISTINCT c.uuid) \
         FROM placement_allocations a JOIN placement_consumers c ON c.uuid = a.consumer_uuid WHERE c.project_id = ",
    );
    sql.bind(project);
    if let Some(u) = q.get("user_id") {
        sql.push_bind(" AND c.user_id = ", u);
    }
    sql.push(" GROUP BY c.consumer_type, a.resource_class");
    let rows = sql.fetch_all(st.db.reader()).await?;
    if !v.at_least(1, 38) {
        let mut out: BTreeMap<String, i64> = BTreeMap::new();
        for r in &rows {
            *out.entry(r.get(1)).or_insert(0) += r.get::<i64, _>(2);
        }
        return Ok(Json(json!({"usages": out})));
    }
    // 1.38: grouped by consumer type, with consumer counts and an `all` total.
    let mut counts = Query::new(
        "SELECT c.consumer_type, COUNT(DISTINCT c.uuid) FROM placement_consumers c WHERE EXISTS \
         (SELECT 1 FROM placement_allocations a WHERE a.consumer_uuid = c.uuid) AND c.project_id = ",
    );
    counts.bind(project);
    if let Some(u) = q.get("user_id") {
        counts.push_bind(" AND c.user_id = ", u);
    }
    counts.push(" GROUP BY c.consumer_type");
    let count_rows = counts.fetch_all(st.db.reader()).await?;
    let want = q.get("consumer_type");
    let mut groups: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut all = Map::new();
    let mut all_count = 0i64;
    for r in &count_rows {
        let ty: String = r.get::<Option<String>, _>(0).unwrap_or_else(|| "unknown".into());
        let n: i64 = r.get(1);
        all_count += n;
        groups.entry(ty).or_default().insert("consumer_count".into(), json!(n));
    }
    for r in &rows {
        let ty: String = r.get::<Option<String>, _>(0).unwrap_or_else(|| "unknown".into());
        let rc: String = r.get(1);
        let used: i64 = r.get(2);
        let g = groups.entry(ty).or_default();
        let cur = g.get(&rc).and_then(Value::as_i64).unwrap_or(0);
        g.insert(rc.clone(), json!(cur + used));
        let cur = all.get(&rc).and_then(Value::as_i64).unwrap_or(0);
        all.insert(rc, json!(cur + used));
    }
    let mut out = Map::new();
    match want {
        Some("all") | None => {
            all.insert("consumer_count".into(), json!(all_count));
            if want.is_none() {
                for (k, g) in groups {
                    out.insert(k, Value::Object(g));
                }
            }
            out.insert("all".into(), Value::Object(all));
        }
        Some(t) => {
            if let Some(g) = groups.remove(t) {
                out.insert(t.to_string(), Value::Object(g));
            }
        }
    }
    Ok(Json(json!({"usages": out})))
}
