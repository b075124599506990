//! `/resource_providers/{uuid}/inventories[/{resource_class}]`: a provider's capacity per
//! resource class. Every change checks and bumps the provider generation and refuses to
//! remove or shrink inventory below what allocations already use.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, OsJson};
use stratus_db::{Query, Tx};

use crate::common::{authorize, generation, href, int_in, object, only_keys, required, string};
use crate::error::{PlacementError, Result};
use crate::index::Inv;
use crate::store;
use crate::AppState;

/// Largest value of an integer inventory field (Placement's schema limit).
const MAX_INT: i64 = 2_147_483_647;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/resource_providers/{uuid}/inventories", get(list).put(replace_all).post(create_one).delete(delete_all))
        .route("/resource_providers/{uuid}/inventories/{rc}", get(show).put(update_one).delete(delete_one))
}

/// An inventory record's JSON.
pub fn inv_json(i: &Inv) -> Value {
    json!({
        "total": i.total, "reserved": i.reserved, "min_unit": i.min_unit, "max_unit": i.max_unit,
        "step_size": i.step_size, "allocation_ratio": i.allocation_ratio,
    })
}

fn invs_json(m: &BTreeMap<String, Inv>) -> Value {
    Value::Object(m.iter().map(|(k, i)| (k.clone(), inv_json(i))).collect())
}

/// Parses one inventory record (without generation or class keys).
pub fn parse_inv(obj: &Map<String, Value>, v: ApiVersion) -> Result<Inv> {
    let total = int_in(required(obj, "total")?, "total", 1, MAX_INT)?;
    let get = |k: &str, min: i64, default: i64| -> Result<i64> {
        match obj.get(k) {
            Some(x) => int_in(x, k, min, MAX_INT),
            None => Ok(default),
        }
    };
    let reserved = get("reserved", 0, 0)?;
    let min_unit = get("min_unit", 1, 1)?;
    let max_unit = get("max_unit", 1, MAX_INT)?;
    let step_size = get("step_size", 1, 1)?;
    let allocation_ratio = match obj.get("allocation_ratio") {
        Some(x) => {
            let r = x.as_f64().ok_or_else(|| {
                PlacementError::BadRequest(format!(
                    "JSON does not validate: {x} is not of type 'number' (allocation_ratio)"
                ))
            })?;
            if r <= 0.0 || r > 3.40282e38 {
                return Err(PlacementError::BadRequest(format!(
                    "JSON does not validate: allocation_ratio {r} must be greater than 0"
                )));
            }
            r
        }
        None => 1.0,
    };
    let bad_reserved = if v.at_least(1, 26) { reserved > total } else { reserved >= total && reserved > 0 };
    if bad_reserved {
        return Err(PlacementError::BadRequest(format!(
            "Unable to update inventory: reserved value {reserved} is greater than {} total {total}",
            if v.at_least(1, 26) { "" } else { "or equal to" }
        )));
    }
    if min_unit > max_unit {
        return Err(PlacementError::BadRequest(format!(
            "Unable to update inventory: min_unit {min_unit} is greater than max_unit {max_unit}"
        )));
    }
    Ok(Inv { total, reserved, min_unit, max_unit, step_size, allocation_ratio })
}

const INV_KEYS: &[&str] = &["total", "reserved", "min_unit", "max_unit", "step_size", "allocation_ratio"];

enum Edit {
    ReplaceAll(BTreeMap<String, Inv>),
    Create(String, Inv),
    Upsert(String, Inv),
    Delete(String),
    DeleteAll,
}

/// Applies `edit` to a provider's inventories inside `tx`; with `check_use`, refuses to
/// drop or shrink inventory below current usage. Returns the new generation, the new
/// inventories and the usages read.
async fn edit_in_tx(
    tx: &mut Tx,
    uuid: &str,
    expected: Option<i64>,
    edit: &Edit,
    check_use: bool,
) -> Result<(i64, BTreeMap<String, Inv>, BTreeMap<String, i64>)> {
    let rp = store::provider_or_404(&mut **tx, uuid).await?;
    if let Some(g) = expected {
        if g != rp.generation {
            return Err(PlacementError::ConcurrentUpdate(format!(
                "resource provider generation conflict: the resource provider {uuid} was updated by another request; \
                 please update the generation and try again."
            )));
        }
    }
    // Lock the provider (and detect a racing writer) before reading what it holds.
    let gen = store::bump_generation(tx, uuid, rp.generation).await?;
    let ids = [uuid.to_string()];
    let cur = store::inventories(&mut **tx, Some(&ids)).await?.remove(uuid).unwrap_or_default();
    let uses = store::usages(&mut **tx, Some(&ids)).await?.remove(uuid).unwrap_or_default();
    let mut new = cur.clone();
    match edit {
        Edit::ReplaceAll(m) => new = m.clone(),
        Edit::Create(rc, inv) => {
            if cur.contains_key(rc) {
                return Err(PlacementError::Conflict(format!(
                    "Update conflict: Inventory for '{rc}' on resource provider '{uuid}' already exists."
                )));
            }
            new.insert(rc.clone(), *inv);
        }
        Edit::Upsert(rc, inv) => {
            new.insert(rc.clone(), *inv);
        }
        Edit::Delete(rc) => {
            if new.remove(rc).is_none() {
                return Err(PlacementError::NotFound(format!("No inventory of class {rc} found for delete")));
            }
        }
        Edit::DeleteAll => new.clear(),
    }
    if check_use {
        check_in_use(uuid, &new, &uses)?;
    }
    for (rc, inv) in &cur {
        if new.get(rc) != Some(inv) {
            let mut d = Query::new("DELETE FROM placement_inventories WHERE provider_uuid = ");
            d.bind(uuid).push(" AND resource_class = ").bind(rc);
            d.execute(&mut **tx).await?;
        }
    }
    for (rc, inv) in &new {
        if cur.get(rc) == Some(inv) {
            continue;
        }
        if !store::class_exists(&mut **tx, rc).await? {
            return Err(PlacementError::BadRequest(format!(
                "Unknown resource class in inventory for resource provider {uuid}: {rc}"
            )));
        }
        let mut q = Query::new(
            "INSERT INTO placement_inventories (provider_uuid, resource_class, total, reserved, min_unit, max_unit, step_size, allocation_ratio) VALUES (",
        );
        q.bind(uuid).push(", ").bind(rc).push(", ").bind(inv.total).push(", ").bind(inv.reserved);
        q.push(", ").bind(inv.min_unit).push(", ").bind(inv.max_unit).push(", ").bind(inv.step_size);
        q.push(", ").bind(inv.allocation_ratio).push(")");
        q.execute(&mut **tx).await?;
    }
    Ok((gen, new, uses))
}

/// 409 `placement.inventory.inuse` when `uses` do not fit in `invs`.
pub(crate) fn check_in_use(uuid: &str, invs: &BTreeMap<String, Inv>, uses: &BTreeMap<String, i64>) -> Result<()> {
    for (rc, used) in uses {
        if *used == 0 {
            continue;
        }
        match invs.get(rc) {
            None => {
                return Err(PlacementError::InventoryInUse(format!(
                    "Inventory for '{rc}' on resource provider '{uuid}' in use."
                )))
            }
            Some(inv) if inv.capacity() < *used => {
                return Err(PlacementError::InventoryInUse(format!(
                    "Unable to update inventory for resource provider {uuid}: usage {used} of {rc} \
                     would exceed the new capacity {}.",
                    inv.capacity()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Replaces a provider's inventories inside a larger transaction (the reshaper), leaving
/// the in-use check to the caller once allocations have moved too.
pub(crate) async fn replace_in_tx(tx: &mut Tx, uuid: &str, expected: i64, invs: BTreeMap<String, Inv>) -> Result<i64> {
    Ok(edit_in_tx(tx, uuid, Some(expected), &Edit::ReplaceAll(invs), false).await?.0)
}

/// Applies `edit` to a provider's inventories in one transaction, returning the new
/// generation and inventories.
async fn write(st: &AppState, uuid: &str, expected: Option<i64>, edit: Edit) -> Result<(i64, BTreeMap<String, Inv>)> {
    let uuid_s = uuid.to_string();
    let edit = Arc::new(edit);
    let (gen, invs, uses) = st
        .db
        .transaction(move |tx| {
            let (uuid, edit) = (uuid_s.clone(), edit.clone());
            Box::pin(async move { edit_in_tx(tx, &uuid, expected, &edit, true).await })
        })
        .await?;
    st.index.write().apply_resources(uuid, gen, invs.clone(), uses);
    Ok((gen, invs))
}

/// `GET /resource_providers/{uuid}/inventories`.
async fn list(State(st): State<Arc<AppState>>, ctx: Ctx, Path(uuid): Path<String>) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:inventories:list")?;
    let rp = store::provider_or_404(st.db.reader(), &uuid).await?;
    let invs =
        store::inventories(st.db.reader(), Some(std::slice::from_ref(&uuid))).await?.remove(&uuid).unwrap_or_default();
    Ok(Json(json!({"inventories": invs_json(&invs), "resource_provider_generation": rp.generation})))
}

/// `PUT /resource_providers/{uuid}/inventories`.
async fn replace_all(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:inventories:update")?;
    let obj = object(&body, "body")?;
    only_keys(obj, &["inventories", "resource_provider_generation"])?;
    let gen = generation(obj, "resource_provider_generation")?;
    let invs_v = object(required(obj, "inventories")?, "inventories")?;
    let mut invs = BTreeMap::new();
    for (rc, i) in invs_v {
        let io = object(i, "inventory")?;
        only_keys(io, INV_KEYS)?;
        invs.insert(rc.clone(), parse_inv(io, v)?);
    }
    let (gen, invs) = write(&st, &uuid, Some(gen), Edit::ReplaceAll(invs)).await?;
    Ok(Json(json!({"inventories": invs_json(&invs), "resource_provider_generation": gen})))
}

/// `POST /resource_providers/{uuid}/inventories`.
async fn create_one(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    authorize(&st, &ctx, "placement:resource_providers:inventories:create")?;
    let obj = object(&body, "body")?;
    let mut keys = INV_KEYS.to_vec();
    keys.extend(["resource_class", "resource_provider_generation"]);
    only_keys(obj, &keys)?;
    let gen = generation(obj, "resource_provider_generation")?;
    let rc = string(required(obj, "resource_class")?, "resource_class")?.to_string();
    let inv = parse_inv(obj, v)?;
    let (gen, _) = write(&st, &uuid, Some(gen), Edit::Create(rc.clone(), inv)).await?;
    let mut body = inv_json(&inv);
    body["resource_provider_generation"] = json!(gen);
    let loc = href(&format!("/resource_providers/{uuid}/inventories/{rc}"));
    Ok((StatusCode::CREATED, [(header::LOCATION, loc)], Json(body)).into_response())
}

/// `DELETE /resource_providers/{uuid}/inventories` (1.5).
async fn delete_all(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
) -> Result<Response> {
    if !v.at_least(1, 5) {
        return Ok(StatusCode::METHOD_NOT_ALLOWED.into_response());
    }
    authorize(&st, &ctx, "placement:resource_providers:inventories:delete")?;
    write(&st, &uuid, None, Edit::DeleteAll).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /resource_providers/{uuid}/inventories/{rc}`.
async fn show(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    Path((uuid, rc)): Path<(String, String)>,
) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:inventories:show")?;
    let rp = store::provider_or_404(st.db.reader(), &uuid).await?;
    let invs =
        store::inventories(st.db.reader(), Some(std::slice::from_ref(&uuid))).await?.remove(&uuid).unwrap_or_default();
    let inv =
        invs.get(&rc).ok_or_else(|| PlacementError::NotFound(format!("No inventory of class {rc} for {uuid}")))?;
    let mut body = inv_json(inv);
    body["resource_provider_generation"] = json!(rp.generation);
    Ok(Json(body))
}

/// `PUT /resource_providers/{uuid}/inventories/{rc}`.
async fn update_one(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path((uuid, rc)): Path<(String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:inventories:update")?;
    let obj = object(&body, "body")?;
    let mut keys = INV_KEYS.to_vec();
    keys.push("resource_provider_generation");
    only_keys(obj, &keys)?;
    let gen = generation(obj, "resource_provider_generation")?;
    let inv = parse_inv(obj, v)?;
    let (gen, _) = write(&st, &uuid, Some(gen), Edit::Upsert(rc, inv)).await?;
    let mut body = inv_json(&inv);
    body["resource_provider_generation"] = json!(gen);
    Ok(Json(body))
}

/// `DELETE /resource_providers/{uuid}/inventories/{rc}`.
async fn delete_one(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    Path((uuid, rc)): Path<(String, String)>,
) -> Result<StatusCode> {
    authorize(&st, &ctx, "placement:resource_providers:inventories:delete")?;
    write(&st, &uuid, None, Edit::Delete(rc)).await?;
    Ok(StatusCode::NO_CONTENT)
}
