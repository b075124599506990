//! `/allocations/{consumer}`, `POST /allocations` (1.13) and
//! `/resource_providers/{uuid}/allocations`: claims of capacity by consumers.
//!
//! A claim is one transaction: it replaces the consumers' allocations, reads each
//! affected provider's generation, bumps it with `WHERE generation = <read>`, then reads
//! inventories and usages and checks every amount against
//! `(total - reserved) * allocation_ratio` and the unit constraints. On PostgreSQL two
//! concurrent claims on one provider both read generation g; the second `UPDATE` waits
//! for the first to commit and then matches no row, so it fails with 409
//! `placement.concurrent_update` instead of over-committing. On SQLite the single writer
//! serializes claims outright, and the same checks hold.
//!
//! Claims that create a consumer (the scheduler's `PUT` with `consumer_generation: null`)
//! are group-committed by [`batch`]: the ones that arrive while a batch is being written
//! go together into the next transaction, each still checked and answered on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, OsJson};
use stratus_db::sqlx::Row;
use stratus_db::{Query, Tx};

use crate::common::{authorize, int_in, object, only_keys, parse_uuid, required, route_since, string};
use crate::error::{PlacementError, Result};
use crate::index::Inv;
use crate::store;
use crate::AppState;

mod batch;
pub(crate) use batch::Batcher;

/// Project recorded for consumers written before 1.8 without one (Placement's
/// `incomplete_consumer_project_id`).
const INCOMPLETE_CONSUMER: &str = "00000000-0000-0000-0000-000000000000";

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/allocations", post(post_many))
        .route("/allocations/{consumer}", get(show).put(put_one).delete(delete_one))
        .route("/resource_providers/{uuid}/allocations", get(provider_allocations))
}

/// The desired allocations of one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerWrite {
    /// Consumer UUID.
    pub consumer: String,
    /// (provider, class, amount).
    pub allocations: Vec<(String, String, i64)>,
    /// Owner project.
    pub project_id: String,
    /// Owner user.
    pub user_id: String,
    /// `Some(expected)` from 1.28 (`None` inside = new consumer); `None` before 1.28.
    pub consumer_generation: Option<Option<i64>>,
    /// Consumer type (1.38), kept when not given.
    pub consumer_type: Option<String>,
}

fn parse_resources(v: &Value, rp: &str) -> Result<Vec<(String, i64)>> {
    let obj = object(v, "resources")?;
    if obj.is_empty() {
        return Err(PlacementError::BadRequest(format!(
            "JSON does not validate: resources for provider {rp} must have at least one entry"
        )));
    }
    let mut out = Vec::new();
    for (rc, n) in obj {
        out.push((rc.clone(), int_in(n, rc, 1, i64::from(i32::MAX))?));
    }
    Ok(out)
}

/// Parses the allocations part in its per-version shape.
fn parse_allocations(v: &Value, ver: ApiVersion) -> Result<Vec<(String, String, i64)>> {
    let mut out = Vec::new();
    if ver.at_least(1, 12) {
        let obj = object(v, "allocations")?;
        if obj.is_empty() && !ver.at_least(1, 28) {
            return Err(PlacementError::BadRequest(
                "JSON does not validate: {} does not have enough properties".into(),
            ));
        }
        for (rp, a) in obj {
            let rp = parse_uuid(rp, "resource provider uuid")?;
            let ao = object(a, "allocation")?;
            only_keys(ao, &["resources", "generation"])?;
            for (rc, n) in parse_resources(required(ao, "resources")?, &rp)? {
                out.push((rp.clone(), rc, n));
            }
        }
    } else {
        let arr = v
            .as_array()
            .ok_or_else(|| PlacementError::BadRequest("JSON does not validate: allocations must be an array".into()))?;
        if arr.is_empty() {
            return Err(PlacementError::BadRequest("JSON does not validate: [] is too short".into()));
        }
        for a in arr {
            let ao = object(a, "allocation")?;
            only_keys(ao, &["resource_provider", "resources"])?;
            let rpo = object(required(ao, "resource_provider")?, "resource_provider")?;
            only_keys(rpo, &["uuid"])?;
            let rp = parse_uuid(string(required(rpo, "uuid")?, "uuid")?, "resource provider uuid")?;
            for (rc, n) in parse_resources(required(ao, "resources")?, &rp)? {
                out.push((rp.clone(), rc, n));
            }
        }
    }
    Ok(out)
}

/// Parses one consumer's body (PUT body, or one entry of a POST body).
pub(crate) fn parse_consumer(consumer: &str, v: &Value, ver: ApiVersion) -> Result<ConsumerWrite> {
    let obj = object(v, "body")?;
    let mut keys = vec!["allocations", "project_id", "user_id"];
    if ver.at_least(1, 28) {
        keys.push("consumer_generation");
    }
    if ver.at_least(1, 38) {
        keys.push("consumer_type");
    }
    only_keys(obj, &keys)?;
    let allocations = parse_allocations(required(obj, "allocations")?, ver)?;
    let ids = |k: &str| -> Result<Option<String>> {
        match obj.get(k) {
            None => Ok(None),
            Some(x) => {
                let s = string(x, k)?;
                if s.is_empty() || s.len() > 255 {
                    return Err(PlacementError::BadRequest(format!("JSON does not validate: bad {k}")));
                }
                Ok(Some(s.to_string()))
            }
        }
    };
    let (project_id, user_id) = if ver.at_least(1, 8) {
        required(obj, "project_id")?;
        required(obj, "user_id")?;
        (ids("project_id")?.unwrap_or_default(), ids("user_id")?.unwrap_or_default())
    } else {
        (
            ids("project_id")?.unwrap_or_else(|| INCOMPLETE_CONSUMER.into()),
            ids("user_id")?.unwrap_or_else(|| INCOMPLETE_CONSUMER.into()),
        )
    };
    let consumer_generation = if ver.at_least(1, 28) {
        match required(obj, "consumer_generation")? {
            Value::Null => Some(None),
            g => Some(Some(int_in(g, "consumer_generation", 0, i64::MAX)?)),
        }
    } else {
        None
    };
    let consumer_type = if ver.at_least(1, 38) {
        let t = string(required(obj, "consumer_type")?, "consumer_type")?;
        if t.is_empty()
            || t.len() > 255
            || !t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(PlacementError::BadRequest(format!(
                "JSON does not validate: {t:?} does not match '^[A-Z0-9_]+$' (consumer_type)"
            )));
        }
        Some(t.to_string())
    } else {
        None
    };
    Ok(ConsumerWrite {
        consumer: consumer.to_string(),
        allocations,
        project_id,
        user_id,
        consumer_generation,
        consumer_type,
    })
}

/// What a claim changed on one provider, for the read model.
pub(crate) struct ProviderPatch {
    pub(crate) uuid: String,
    pub(crate) generation: i64,
    pub(crate) inventories: BTreeMap<String, Inv>,
    pub(crate) usages: BTreeMap<String, i64>,
}

fn capacity_error(rc: &str, rp: &str) -> PlacementError {
    PlacementError::Conflict(format!(
        "Unable to allocate inventory: Unable to create allocation for '{rc}' on resource provider '{rp}'. \
         The requested amount would exceed the capacity."
    ))
}

/// The claim transaction body (see the module doc).
pub(crate) async fn claim_in_tx(tx: &mut Tx, writes: &[ConsumerWrite]) -> Result<Vec<ProviderPatch>> {
    let now = stratus_core::time::now();
    let mut affected: BTreeSet<String> = BTreeSet::new();
    // Consumer generations, then the old allocations go.
    let mut consumers: Vec<Option<i64>> = Vec::with_capacity(writes.len());
    for w in writes {
        // A client creating a consumer (generation null) needs no read: if the consumer
        // exists after all, inserting it fails on its key and answers the same 409.
        let cur: Option<i64> = if w.consumer_generation == Some(None) {
            None
        } else {
            let mut q = Query::new("SELECT generation FROM placement_consumers WHERE uuid = ");
            q.bind(&w.consumer);
            q.fetch_optional(&mut **tx).await?.map(|r| r.get(0))
        };
        if let Some(expected) = w.consumer_generation {
            if expected != cur {
                let show = |g: Option<i64>| g.map(|g| g.to_string()).unwrap_or_else(|| "None".into());
                return Err(PlacementError::ConcurrentUpdate(format!(
                    "consumer generation conflict - expected {} but got {}",
                    show(expected),
                    show(cur)
                )));
            }
        }
        consumers.push(cur);
        // A consumer row exists exactly while it has allocations: a new one has none to drop.
        if cur.is_none() {
            continue;
        }
        let mut q = Query::new("SELECT DISTINCT provider_uuid FROM placement_allocations WHERE consumer_uuid = ");
        q.bind(&w.consumer);
        for r in q.fetch_all(&mut **tx).await? {
            affected.insert(r.get(0));
        }
        let mut d = Query::new("DELETE FROM placement_allocations WHERE consumer_uuid = ");
        d.bind(&w.consumer);
        d.execute(&mut **tx).await?;
    }
    let wanted: BTreeSet<&String> = writes.iter().flat_map(|w| w.allocations.iter().map(|a| &a.0)).collect();
    affected.extend(wanted.iter().map(|s| (*s).clone()));
    let ids: Vec<String> = affected.iter().cloned().collect();
    // Generations first, then inventories and usages: a usage read can only be newer
    // than the generation it is checked against.
    let mut gens: BTreeMap<String, i64> = BTreeMap::new();
    if !ids.is_empty() {
        let mut q = Query::new("SELECT uuid, generation FROM placement_resource_providers WHERE ");
        q.push_in("uuid", ids.iter().map(String::as_str));
        for r in q.fetch_all(&mut **tx).await? {
            gens.insert(r.get(0), r.get(1));
        }
    }
    for rp in &wanted {
        if !gens.contains_key(*rp) {
            return Err(PlacementError::BadRequest(format!(
                "Allocation for resource provider '{rp}' that does not exist."
            )));
        }
    }
    // Lock every affected provider by bumping its generation, in one global order so
    // concurrent claims cannot deadlock. Providers receiving allocations must still be
    // at the generation read above (optimistic check, 409 on a lost race); providers
    // only losing allocations are bumped unconditionally, since a release can never
    // over-commit. Inventories and usages are read after the locks, so on PostgreSQL
    // no other claim on these providers can commit in between.
    let mut new_gens: BTreeMap<String, i64> = BTreeMap::new();
    for (rp, g) in &gens {
        let ng = if wanted.contains(rp) {
            store::bump_generation(tx, rp, *g).await?
        } else {
            let mut u = Query::new("UPDATE placement_resource_providers SET generation = generation + 1 WHERE uuid = ");
            u.bind(rp);
            u.execute(&mut **tx).await?;
            let mut q = Query::new("SELECT generation FROM placement_resource_providers WHERE uuid = ");
            q.bind(rp);
            q.fetch_optional(&mut **tx).await?.map(|r| r.get::<i64, _>(0)).unwrap_or(*g + 1)
        };
        new_gens.insert(rp.clone(), ng);
    }
    let (mut invs, mut uses) =
        if ids.is_empty() { Default::default() } else { store::inventories_with_usage(&mut **tx, &ids).await? };
    for w in writes {
        for (rp, rc, amt) in &w.allocations {
            let inv = invs.get(rp).and_then(|m| m.get(rc));
            let Some(inv) = inv else {
                if !store::class_exists(&mut **tx, rc).await? {
                    return Err(PlacementError::BadRequest(format!(
                        "Unable to allocate inventory: No such resource class {rc}."
                    )));
                }
                return Err(PlacementError::Conflict(format!(
                    "Unable to allocate inventory: Inventory for '{rc}' on resource provider '{rp}' invalid."
                )));
            };
            if !inv.unit_ok(*amt) {
                return Err(PlacementError::Conflict(format!(
                    "Unable to allocate inventory: Unable to create allocation for '{rc}' on resource provider '{rp}'. \
                     The requested amount {amt} violates min_unit {}, max_unit {} or step_size {}.",
                    inv.min_unit, inv.max_unit, inv.step_size
                )));
            }
            let used = uses.entry(rp.clone()).or_default().entry(rc.clone()).or_insert(0);
            if *used + amt > inv.capacity() {
                return Err(capacity_error(rc, rp));
            }
            *used += amt;
        }
    }
    for (w, cur) in writes.iter().zip(&consumers) {
        match (cur, w.allocations.is_empty()) {
            (Some(_), true) => {
                let mut d = Query::new("DELETE FROM placement_consumers WHERE uuid = ");
                d.bind(&w.consumer);
                d.execute(&mut **tx).await?;
            }
            (None, true) => {}
            (Some(g), false) => {
                let mut u = Query::new("UPDATE placement_consumers SET generation = generation + 1, project_id = ");
                u.bind(&w.project_id).push(", user_id = ").bind(&w.user_id).push(", updated_at = ").bind(&now);
                if let Some(t) = &w.consumer_type {
                    u.push_bind(", consumer_type = ", t);
                }
                u.push_bind(" WHERE uuid = ", &w.consumer).push_bind(" AND generation = ", *g);
                if u.execute(&mut **tx).await? != 1 {
                    return Err(PlacementError::ConcurrentUpdate(format!(
                        "consumer generation conflict: consumer {} was updated by another request",
                        w.consumer
                    )));
                }
            }
            (None, false) => {
                let mut q = Query::new(
                    "INSERT INTO placement_consumers (uuid, project_id, user_id, consumer_type, generation, created_at, updated_at) VALUES (",
                );
                q.bind(&w.consumer).push(", ").bind(&w.project_id).push(", ").bind(&w.user_id).push(", ");
                q.bind(w.consumer_type.clone()).push(", 0, ").bind(&now).push(", ").bind(&now).push(")");
                q.execute(&mut **tx).await.map_err(|e| {
                    if e.is_unique_violation() {
                        PlacementError::ConcurrentUpdate(format!(
                            "consumer generation conflict: consumer {} was created by another request",
                            w.consumer
                        ))
                    } else {
                        PlacementError::Db(e)
                    }
                })?;
            }
        }
    }
    for w in writes {
        if !w.allocations.is_empty() {
            let mut q = Query::new(
                "INSERT INTO placement_allocations (consumer_uuid, provider_uuid, resource_class, used, created_at) VALUES ",
            );
            // Merge duplicates of (provider, class) in one body.
            let mut merged: BTreeMap<(&str, &str), i64> = BTreeMap::new();
            for (rp, rc, amt) in &w.allocations {
                *merged.entry((rp, rc)).or_insert(0) += amt;
            }
            for (i, ((rp, rc), amt)) in merged.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(").bind(&w.consumer).push(", ").bind(*rp).push(", ").bind(*rc).push(", ").bind(*amt);
                q.push(", ").bind(&now).push(")");
            }
            q.execute(&mut **tx).await.map_err(|e| {
                if e.is_unique_violation() {
                    PlacementError::ConcurrentUpdate(format!(
                        "consumer generation conflict: consumer {} already has allocations",
                        w.consumer
                    ))
                } else {
                    PlacementError::Db(e)
                }
            })?;
        }
    }
    let mut patches = Vec::with_capacity(new_gens.len());
    for (rp, generation) in new_gens {
        patches.push(ProviderPatch {
            inventories: invs.remove(&rp).unwrap_or_default(),
            usages: uses.remove(&rp).unwrap_or_default(),
            uuid: rp,
            generation,
        });
    }
    Ok(patches)
}

/// Replaces the allocations of `writes` atomically and updates the read model.
pub async fn claim(st: &AppState, writes: Vec<ConsumerWrite>) -> Result<()> {
    let writes = Arc::new(writes);
    let patches = st
        .db
        .transaction(move |tx| {
            let writes = writes.clone();
            Box::pin(async move { claim_in_tx(tx, &writes).await })
        })
        .await?;
    let mut idx = st.index.write();
    for p in patches {
        idx.apply_resources(&p.uuid, p.generation, p.inventories, p.usages);
    }
    Ok(())
}

/// Claims for a consumer `w` creates: group-committed with the others when it can be.
pub(crate) async fn claim_new_consumer(st: &Arc<AppState>, w: ConsumerWrite) -> Result<()> {
    if batch::batchable(&w) {
        batch::submit(st, w).await
    } else {
        claim(st, vec![w]).await
    }
}

/// `PUT /allocations/{consumer}`.
async fn put_one(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(consumer): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<StatusCode> {
    authorize(&st, &ctx, "placement:allocations:update")?;
    let consumer = parse_uuid(&consumer, "consumer uuid")?;
    let w = parse_consumer(&consumer, &body, v)?;
    claim_new_consumer(&st, w).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /allocations` (1.13): several consumers in one transaction.
async fn post_many(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(body): OsJson<Value>,
) -> Result<StatusCode> {
    route_since(v, 1, 13)?;
    authorize(&st, &ctx, "placement:allocations:manage")?;
    let obj = object(&body, "body")?;
    if obj.is_empty() {
        return Err(PlacementError::BadRequest("JSON does not validate: {} does not have enough properties".into()));
    }
    let mut writes = Vec::with_capacity(obj.len());
    for (c, cv) in obj {
        let c = parse_uuid(c, "consumer uuid")?;
        writes.push(parse_consumer(&c, cv, v)?);
    }
    claim(&st, writes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Allocations of one consumer: provider → (generation, class → amount), plus the consumer row.
async fn consumer_allocations(
    st: &AppState,
    consumer: &str,
) -> Result<(BTreeMap<String, (i64, BTreeMap<String, i64>)>, Option<(String, String, Option<String>, i64)>)> {
    let mut q = Query::new(
        "SELECT a.provider_uuid, a.resource_class, a.used, p.generation FROM placement_allocations a \
         JOIN placement_resource_providers p ON p.uuid = a.provider_uuid WHERE a.consumer_uuid = ",
    );
    q.bind(consumer);
    let mut out: BTreeMap<String, (i64, BTreeMap<String, i64>)> = BTreeMap::new();
    for r in q.fetch_all(st.db.reader()).await? {
        let e = out.entry(r.get(0)).or_insert_with(|| (r.get(3), BTreeMap::new()));
        e.1.insert(r.get(1), r.get(2));
    }
    let mut c =
        Query::new("SELECT project_id, user_id, consumer_type, generation FROM placement_consumers WHERE uuid = ");
    c.bind(consumer);
    let row = c.fetch_optional(st.db.reader()).await?.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)));
    Ok((out, row))
}

/// `GET /allocations/{consumer}`.
async fn show(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(consumer): Path<String>,
) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:allocations:list")?;
    let (allocs, row) = consumer_allocations(&st, &consumer).await?;
    let mut m = Map::new();
    for (rp, (g, res)) in allocs {
        m.insert(rp, json!({"generation": g, "resources": res}));
    }
    let mut body = json!({"allocations": m});
    if let (true, Some((project, user, ty, gen))) = (v.at_least(1, 12), row) {
        if !body["allocations"].as_object().is_some_and(Map::is_empty) {
            body["project_id"] = json!(project);
            body["user_id"] = json!(user);
            if v.at_least(1, 28) {
                body["consumer_generation"] = json!(gen);
            }
            if v.at_least(1, 38) {
                body["consumer_type"] = json!(ty.unwrap_or_else(|| "unknown".into()));
            }
        }
    }
    Ok(Json(body))
}

/// `DELETE /allocations/{consumer}`.
async fn delete_one(State(st): State<Arc<AppState>>, ctx: Ctx, Path(consumer): Path<String>) -> Result<StatusCode> {
    authorize(&st, &ctx, "placement:allocations:delete")?;
    let (allocs, _) = consumer_allocations(&st, &consumer).await?;
    if allocs.is_empty() {
        return Err(PlacementError::NotFound(format!("No allocations for consumer '{consumer}'")));
    }
    let w = ConsumerWrite {
        consumer: consumer.clone(),
        allocations: Vec::new(),
        project_id: String::new(),
        user_id: String::new(),
        consumer_generation: None,
        consumer_type: None,
    };
    claim(&st, vec![w]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /resource_providers/{uuid}/allocations`.
async fn provider_allocations(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    Path(uuid): Path<String>,
) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:allocations:list")?;
    let rp = store::provider_or_404(st.db.reader(), &uuid).await?;
    let mut q =
        Query::new("SELECT consumer_uuid, resource_class, used FROM placement_allocations WHERE provider_uuid = ");
    q.bind(&uuid);
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in q.fetch_all(st.db.reader()).await? {
        out.entry(r.get(0)).or_default().insert(r.get(1), r.get(2));
    }
    let m: Map<String, Value> = out.into_iter().map(|(c, res)| (c, json!({"resources": res}))).collect();
    Ok(Json(json!({"allocations": m, "resource_provider_generation": rp.generation})))
}
