//! `/resource_providers` and `/resource_providers/{uuid}`: create, list (filtered from
//! the read model), show, update (rename, re-parent), delete.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::allocation_candidates::{parse_member_of, parse_required, parse_resources, validate_traits};
use crate::common::{authorize, object, only_keys, parse_uuid, provider_json, required, string};
use crate::error::{PlacementError, Result};
use crate::index::{AggFilter, TraitFilter};
use crate::store::{self, ProviderRow};
use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/resource_providers", get(list).post(create))
        .route("/resource_providers/{uuid}", get(show).put(update).delete(delete))
}

fn row_json(r: &ProviderRow, v: ApiVersion) -> Value {
    provider_json(&r.uuid, &r.name, r.generation, r.parent.as_deref(), &r.root, v)
}

/// `GET /resource_providers`.
async fn list(State(st): State<Arc<AppState>>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:list")?;
    let mut allowed = vec!["name", "uuid"];
    if v.at_least(1, 3) {
        allowed.push("member_of");
    }
    if v.at_least(1, 4) {
        allowed.push("resources");
    }
    if v.at_least(1, 14) {
        allowed.push("in_tree");
    }
    if v.at_least(1, 18) {
        allowed.push("required");
    }
    for (k, _) in &q.0 {
        if !allowed.contains(&k.as_str()) {
            return Err(PlacementError::BadRequest(format!(
                "Invalid query string parameters: Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
    }
    let uuid = q.get("uuid").map(|u| parse_uuid(u, "uuid")).transpose()?;
    let in_tree = q.get("in_tree").map(|u| parse_uuid(u, "in_tree")).transpose()?;
    let resources = match q.get("resources") {
        Some(r) => parse_resources(r, "resources")?,
        None => Vec::new(),
    };
    for (rc, _) in &resources {
        if !store::class_exists(st.db.reader(), rc).await? {
            return Err(PlacementError::BadRequest(format!(
                "Invalid resource class in resources parameter: No such resource class {rc}."
            )));
        }
    }
    let aggs: AggFilter = parse_member_of(&q.all("member_of"), v)?;
    let traits: TraitFilter = parse_required(&q.all("required"), v, "required")?;
    validate_traits(&st, &traits).await?;
    let idx = st.index.read();
    let tree_root = match &in_tree {
        Some(t) => match idx.get(t) {
            Some(p) => Some(p.root.clone()),
            None => return Ok(Json(json!({"resource_providers": []}))),
        },
        None => None,
    };
    let empty = Default::default();
    let mut out = Vec::new();
    for (_root, members) in idx.trees() {
        for m in members {
            let Some(p) = idx.get(m) else { continue };
            if uuid.as_ref().is_some_and(|u| *u != p.uuid) || q.get("name").is_some_and(|n| n != p.name) {
                continue;
            }
            if tree_root.as_ref().is_some_and(|r| *r != p.root) {
                continue;
            }
            if !resources.iter().all(|(rc, amt)| p.fits(rc, *amt)) {
                continue;
            }
            if !traits.matches(&p.traits) {
                continue;
            }
            if !aggs.is_empty() {
                let root_aggs =
                    if p.root == p.uuid { &empty } else { idx.get(&p.root).map(|r| &r.aggregates).unwrap_or(&empty) };
                if !aggs.matches(&p.aggregates, root_aggs) {
                    continue;
                }
            }
            out.push((p.name.clone(), provider_json(&p.uuid, &p.name, p.generation, p.parent.as_deref(), &p.root, v)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Json(json!({"resource_providers": out.into_iter().map(|x| x.1).collect::<Vec<_>>()})))
}

fn validate_name(v: &Value) -> Result<String> {
    let name = string(v, "name")?;
    if name.is_empty() || name.chars().count() > 200 {
        return Err(PlacementError::BadRequest(
            "JSON does not validate: 'name' must be between 1 and 200 characters".into(),
        ));
    }
    Ok(name.to_string())
}

fn parent_field(obj: &serde_json::Map<String, Value>) -> Result<Option<Option<String>>> {
    match obj.get("parent_provider_uuid") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => Ok(Some(Some(parse_uuid(string(v, "parent_provider_uuid")?, "parent_provider_uuid")?))),
    }
}

fn conflict_from(e: stratus_db::DbError, uuid: &str, name: &str) -> PlacementError {
    if e.is_unique_violation() {
        let msg = e.to_string();
        if msg.contains("name") {
            PlacementError::DuplicateName(format!("Conflicting resource provider name: {name} already exists."))
        } else {
            PlacementError::DuplicateName(format!("Conflicting resource provider uuid: {uuid} already exists."))
        }
    } else {
        PlacementError::Db(e)
    }
}

/// `POST /resource_providers`.
async fn create(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    authorize(&st, &ctx, "placement:resource_providers:create")?;
    let obj = object(&body, "body")?;
    let mut allowed = vec!["name", "uuid"];
    if v.at_least(1, 14) {
        allowed.push("parent_provider_uuid");
    }
    only_keys(obj, &allowed)?;
    let name = validate_name(required(obj, "name")?)?;
    let uuid = match obj.get("uuid") {
        Some(u) => parse_uuid(string(u, "uuid")?, "uuid")?,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let parent = parent_field(obj)?.flatten();
    let (u2, n2, p2) = (uuid.clone(), name.clone(), parent.clone());
    let row = st
        .db
        .transaction(move |tx| {
            let (uuid, name, parent) = (u2.clone(), n2.clone(), p2.clone());
            Box::pin(async move {
                let root = match &parent {
                    Some(p) => match store::provider(&mut **tx, p).await? {
                        Some(pr) => pr.root,
                        None => {
                            return Err(PlacementError::BadRequest(format!(
                                "parent provider UUID {p} does not exist."
                            )))
                        }
                    },
                    None => uuid.clone(),
                };
                let now = stratus_core::time::now();
                let mut q = Query::new(
                    "INSERT INTO placement_resource_providers (uuid, name, generation, parent_uuid, root_uuid, created_at, updated_at) VALUES (",
                );
                q.bind(&uuid).push(", ").bind(&name).push(", 0, ").bind(parent.clone()).push(", ").bind(&root);
                q.push(", ").bind(&now).push(", ").bind(&now).push(")");
                q.execute(&mut **tx).await.map_err(|e| conflict_from(e, &uuid, &name))?;
                Ok(ProviderRow { uuid, name, generation: 0, parent, root })
            })
        })
        .await?;
    store::refresh(&st, std::slice::from_ref(&row.uuid), true).await?;
    let location = crate::common::href(&format!("/resource_providers/{}", row.uuid));
    if v.at_least(1, 20) {
        Ok((StatusCode::OK, [(header::LOCATION, location)], Json(row_json(&row, v))).into_response())
    } else {
        Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
    }
}

/// `GET /resource_providers/{uuid}`.
async fn show(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:show")?;
    let row = store::provider_or_404(st.db.reader(), &uuid).await?;
    Ok(Json(row_json(&row, v)))
}

/// `PUT /resource_providers/{uuid}`.
async fn update(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    authorize(&st, &ctx, "placement:resource_providers:update")?;
    let obj = object(&body, "body")?;
    let mut allowed = vec!["name"];
    if v.at_least(1, 14) {
        allowed.push("parent_provider_uuid");
    }
    only_keys(obj, &allowed)?;
    let name = validate_name(required(obj, "name")?)?;
    let new_parent = parent_field(obj)?;
    let reparent_ok = v.at_least(1, 37);
    let (u2, n2) = (uuid.clone(), name.clone());
    let (row, touched) = st
        .db
        .transaction(move |tx| {
            let (uuid, name, new_parent) = (u2.clone(), n2.clone(), new_parent.clone());
            Box::pin(async move {
                let cur = store::provider_or_404(&mut **tx, &uuid).await?;
                let mut parent = cur.parent.clone();
                let mut root = cur.root.clone();
                let mut touched = vec![uuid.clone()];
                if let Some(np) = new_parent {
                    if np != cur.parent {
                        if cur.parent.is_some() && !reparent_ok {
                            return Err(PlacementError::BadRequest(
                                "re-parenting a provider is not currently allowed.".into(),
                            ));
                        }
                        // The subtree under this provider moves with it.
                        let mut q =
                            Query::new("SELECT uuid, parent_uuid FROM placement_resource_providers WHERE root_uuid = ");
                        q.bind(&cur.root);
                        let rows = q.fetch_all(&mut **tx).await?;
                        let edges: Vec<(String, Option<String>)> =
                            rows.iter().map(|r| (r.get::<String, _>(0), r.get::<Option<String>, _>(1))).collect();
                        let mut subtree = vec![uuid.clone()];
                        let mut i = 0;
                        while i < subtree.len() {
                            let p = subtree[i].clone();
                            subtree.extend(
                                edges.iter().filter(|(_, par)| par.as_deref() == Some(&p)).map(|(c, _)| c.clone()),
                            );
                            i += 1;
                        }
                        root = match &np {
                            Some(p) => {
                                if subtree.contains(p) {
                                    return Err(PlacementError::BadRequest(
                                        "creating loop in the provider tree is not allowed.".into(),
                                    ));
                                }
                                match store::provider(&mut **tx, p).await? {
                                    Some(pr) => pr.root,
                                    None => {
                                        return Err(PlacementError::BadRequest(format!(
                                            "parent provider UUID {p} does not exist."
                                        )))
                                    }
                                }
                            }
                            None => uuid.clone(),
                        };
                        let mut u = Query::new("UPDATE placement_resource_providers SET root_uuid = ");
                        u.bind(&root).push(" WHERE ").push_in("uuid", subtree.iter().map(String::as_str));
                        u.execute(&mut **tx).await?;
                        parent = np;
                        touched = subtree;
                    }
                }
                let mut q = Query::new("UPDATE placement_resource_providers SET name = ");
                q.bind(&name).push(", parent_uuid = ").bind(parent.clone()).push(", updated_at = ");
                q.bind(stratus_core::time::now()).push(" WHERE uuid = ").bind(&uuid);
                q.execute(&mut **tx).await.map_err(|e| conflict_from(e, &uuid, &name))?;
                Ok((ProviderRow { uuid, name, generation: cur.generation, parent, root }, touched))
            })
        })
        .await?;
    store::refresh(&st, &touched, false).await?;
    Ok(Json(row_json(&row, v)))
}

/// `DELETE /resource_providers/{uuid}`.
async fn delete(State(st): State<Arc<AppState>>, ctx: Ctx, Path(uuid): Path<String>) -> Result<StatusCode> {
    authorize(&st, &ctx, "placement:resource_providers:delete")?;
    let u2 = uuid.clone();
    st.db
        .transaction(move |tx| {
            let uuid = u2.clone();
            Box::pin(async move {
                store::provider_or_404(&mut **tx, &uuid).await?;
                let mut q = Query::new("SELECT 1 FROM placement_allocations WHERE provider_uuid = ");
                q.bind(&uuid).push(" LIMIT 1");
                if q.fetch_optional(&mut **tx).await?.is_some() {
                    return Err(PlacementError::ProviderInUse(format!(
                        "Unable to delete resource provider {uuid}: Resource provider has allocations."
                    )));
                }
                let mut q = Query::new("SELECT 1 FROM placement_resource_providers WHERE parent_uuid = ");
                q.bind(&uuid).push(" LIMIT 1");
                if q.fetch_optional(&mut **tx).await?.is_some() {
                    return Err(PlacementError::CannotDeleteParent(format!(
                        "Unable to delete parent resource provider {uuid}: It has child resource providers."
                    )));
                }
                for table in ["placement_inventories", "placement_provider_traits", "placement_provider_aggregates"] {
                    let mut d = Query::new(format!("DELETE FROM {table} WHERE provider_uuid = "));
                    d.bind(&uuid);
                    d.execute(&mut **tx).await?;
                }
                let mut d = Query::new("DELETE FROM placement_resource_providers WHERE uuid = ");
                d.bind(&uuid);
                d.execute(&mut **tx).await?;
                Ok(())
            })
        })
        .await?;
    st.index.write().remove(&uuid);
    Ok(StatusCode::NO_CONTENT)
}
