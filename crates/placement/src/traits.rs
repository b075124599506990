//! `/traits` (1.6) and `/resource_providers/{uuid}/traits`: standard and `CUSTOM_*`
//! traits, and which providers have them.

use std::collections::BTreeSet;
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

use crate::catalog::{is_standard_trait, is_valid_custom, STANDARD_TRAITS};
use crate::common::{authorize, csv, generation, object, only_keys, required, route_since, string};
use crate::error::{PlacementError, Result};
use crate::store;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/traits", get(list))
        .route("/traits/{name}", get(show).put(create).delete(delete))
        .route("/resource_providers/{uuid}/traits", get(provider_list).put(provider_set).delete(provider_clear))
}

/// `GET /traits?name=startswith:X|in:A,B&associated=true|false`.
async fn list(State(st): State<Arc<AppState>>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>> {
    route_since(v, 1, 6)?;
    authorize(&st, &ctx, "placement:traits:list")?;
    for (k, _) in &q.0 {
        if k != "name" && k != "associated" {
            return Err(PlacementError::BadRequest(format!(
                "Invalid query string parameters: Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
    }
    let rows = Query::new("SELECT name FROM placement_custom_traits").fetch_all(st.db.reader()).await?;
    let mut all: BTreeSet<String> = STANDARD_TRAITS.iter().map(|s| s.to_string()).collect();
    all.extend(rows.iter().map(|r| r.get::<String, _>(0)));
    if let Some(n) = q.get("name") {
        if let Some(prefix) = n.strip_prefix("startswith:") {
            all.retain(|t| t.starts_with(prefix));
        } else if let Some(list) = n.strip_prefix("in:") {
            let want: BTreeSet<String> = csv(list).into_iter().collect();
            all.retain(|t| want.contains(t));
        } else {
            return Err(PlacementError::BadRequest(format!(
                "Badly formatted name parameter. Expected name query string parameter in form: \
                 ?name=[in|startswith]:[name1,name2|prefix]. Got: \"{n}\""
            )));
        }
    }
    if let Some(assoc) = q.bool("associated")? {
        let rows = Query::new("SELECT DISTINCT trait FROM placement_provider_traits").fetch_all(st.db.reader()).await?;
        let used: BTreeSet<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        all.retain(|t| used.contains(t) == assoc);
    }
    Ok(Json(json!({"traits": all})))
}

/// `GET /traits/{name}`: 204 when it exists.
async fn show(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    route_since(v, 1, 6)?;
    authorize(&st, &ctx, "placement:traits:show")?;
    if store::unknown_traits(st.db.reader(), std::slice::from_ref(&name)).await?.is_empty() {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(PlacementError::NotFound(format!("No such trait(s): {name}")))
    }
}

/// `PUT /traits/{name}`: creates a custom trait (201) or confirms it (204).
async fn create(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(name): Path<String>,
) -> Result<Response> {
    route_since(v, 1, 6)?;
    authorize(&st, &ctx, "placement:traits:update")?;
    if is_standard_trait(&name) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if !is_valid_custom(&name) {
        return Err(PlacementError::BadRequest(format!(
            "The trait is invalid. A valid trait must be no longer than 255 characters, start with the prefix \
             \"CUSTOM_\" and use following characters: \"A\"-\"Z\", \"0\"-\"9\" and \"_\". Got: {name}"
        )));
    }
    let mut q = Query::new("INSERT INTO placement_custom_traits (name, created_at) VALUES (");
    q.bind(&name).push(", ").bind(stratus_core::time::now()).push(") ON CONFLICT DO NOTHING");
    if q.execute(st.db.reader()).await? == 1 {
        Ok((StatusCode::CREATED, [(header::LOCATION, st.location(&format!("/traits/{name}")))]).into_response())
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// `DELETE /traits/{name}`.
async fn delete(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    route_since(v, 1, 6)?;
    authorize(&st, &ctx, "placement:traits:delete")?;
    if is_standard_trait(&name) {
        return Err(PlacementError::BadRequest(format!("Cannot delete standard trait {name}.")));
    }
    crate::common::delete_custom_name(
        &st,
        name,
        crate::common::CustomName {
            in_use_sql: "SELECT 1 FROM placement_provider_traits WHERE trait = ",
            delete_sql: "DELETE FROM placement_custom_traits WHERE name = ",
            in_use: |n| format!("The trait {n} is in use by a resource provider."),
            not_found: |n| format!("No such trait(s): {n}"),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn provider_traits(st: &AppState, uuid: &str) -> Result<Vec<String>> {
    let mut q = Query::new("SELECT trait FROM placement_provider_traits WHERE provider_uuid = ");
    q.bind(uuid).push(" ORDER BY trait");
    Ok(q.fetch_all(st.db.reader()).await?.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// `GET /resource_providers/{uuid}/traits`.
async fn provider_list(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
) -> Result<Json<Value>> {
    route_since(v, 1, 6)?;
    authorize(&st, &ctx, "placement:resource_providers:traits:list")?;
    let rp = store::provider_or_404(st.db.reader(), &uuid).await?;
    let traits = provider_traits(&st, &uuid).await?;
    Ok(Json(json!({"traits": traits, "resource_provider_generation": rp.generation})))
}

/// Replaces a provider's traits, checking and bumping its generation.
async fn set_traits(st: &AppState, uuid: &str, expected: Option<i64>, traits: Vec<String>) -> Result<i64> {
    let (u2, t2) = (uuid.to_string(), traits);
    let gen = st
        .db
        .transaction(move |tx| {
            let (uuid, traits) = (u2.clone(), t2.clone());
            Box::pin(async move {
                let rp = store::provider_or_404(&mut **tx, &uuid).await?;
                let expected = expected.unwrap_or(rp.generation);
                let mut d = Query::new("DELETE FROM placement_provider_traits WHERE provider_uuid = ");
                d.bind(&uuid);
                d.execute(&mut **tx).await?;
                for t in &traits {
                    let mut q = Query::new("INSERT INTO placement_provider_traits (provider_uuid, trait) VALUES (");
                    q.bind(&uuid).push(", ").bind(t).push(")");
                    q.execute(&mut **tx).await?;
                }
                store::bump_generation(tx, &uuid, expected).await
            })
        })
        .await?;
    store::refresh(st, &[uuid.to_string()], false).await?;
    Ok(gen)
}

/// `PUT /resource_providers/{uuid}/traits`.
async fn provider_set(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    route_since(v, 1, 6)?;
    authorize(&st, &ctx, "placement:resource_providers:traits:update")?;
    let obj = object(&body, "body")?;
    only_keys(obj, &["traits", "resource_provider_generation"])?;
    let gen = generation(obj, "resource_provider_generation")?;
    let arr = required(obj, "traits")?
        .as_array()
        .ok_or_else(|| PlacementError::BadRequest("JSON does not validate: 'traits' must be an array".into()))?;
    let mut traits = BTreeSet::new();
    for t in arr {
        traits.insert(string(t, "traits")?.to_string());
    }
    let traits: Vec<String> = traits.into_iter().collect();
    let unknown = store::unknown_traits(st.db.reader(), &traits).await?;
    if !unknown.is_empty() {
        return Err(PlacementError::BadRequest(format!("No such trait(s): {}", unknown.join(", "))));
    }
    let gen = set_traits(&st, &uuid, Some(gen), traits.clone()).await?;
    Ok(Json(json!({"traits": traits, "resource_provider_generation": gen})))
}

/// `DELETE /resource_providers/{uuid}/traits`.
async fn provider_clear(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    Path(uuid): Path<String>,
) -> Result<StatusCode> {
    route_since(v, 1, 6)?;
    authorize(&st, &ctx, "placement:resource_providers:traits:delete")?;
    set_traits(&st, &uuid, None, Vec::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}
