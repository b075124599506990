//! Server tags (`/servers/{id}/tags`, microversion 2.26): list, replace all, delete all,
//! check one, add one, delete one. At most 50 tags per server, each 1–60 characters
//! without `/` or `,` (the list filters split on commas).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion, OsJson};
use stratus_db::Query;

use super::store::{self, Instance};
use super::{authorized, check_lock};
use crate::error::{ComputeError, Result};
use crate::AppState;

/// Most tags a server may carry.
pub const MAX_TAGS: usize = 50;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers/{id}/tags", get(list).put(replace).delete(clear))
        .route("/v2.1/servers/{id}/tags/{tag}", get(check).put(add).delete(remove))
}

fn need_version(v: ApiVersion) -> Result<()> {
    if v.at_least(2, 26) {
        Ok(())
    } else {
        Err(ComputeError::NotFound("The server tags API requires microversion 2.26 or later".into()))
    }
}

/// Validates one tag.
pub fn validate(t: &str) -> Result<()> {
    if t.is_empty() || t.chars().count() > 60 || t.contains('/') || t.contains(',') {
        return Err(ComputeError::BadRequest(format!(
            "Invalid tag {t:?}: tags are 1-60 characters and contain neither '/' nor ','"
        )));
    }
    Ok(())
}

async fn load(
    st: &AppState,
    ctx: &stratus_core::RequestContext,
    id: &str,
    rule: &str,
    write: bool,
) -> Result<Instance, ApiError> {
    let inst = authorized(st, ctx, id, rule).await?;
    if write {
        check_lock(st, ctx, &inst)?;
    }
    Ok(inst)
}

/// Replaces the tags of `uuid` with `tags` (None: only add `add`, or remove `remove`).
async fn write(
    st: &AppState,
    uuid: &str,
    replace: Option<Vec<String>>,
    add: Option<String>,
    remove: Option<String>,
) -> Result<bool> {
    let u = uuid.to_string();
    st.platform
        .db
        .transaction(|tx| {
            let (u, replace, add, remove) = (u.clone(), replace.clone(), add.clone(), remove.clone());
            Box::pin(async move {
                let mut existed = false;
                if let Some(tags) = &replace {
                    Query::new("DELETE FROM compute_instance_tags WHERE instance_uuid = ")
                        .bind(&u)
                        .execute(&mut **tx)
                        .await?;
                    for t in tags {
                        let mut q = Query::new("INSERT INTO compute_instance_tags (instance_uuid, tag) VALUES (");
                        q.bind(&u).push(", ").bind(t).push(") ON CONFLICT DO NOTHING");
                        q.execute(&mut **tx).await?;
                    }
                }
                if let Some(t) = &add {
                    let mut q = Query::new("INSERT INTO compute_instance_tags (instance_uuid, tag) VALUES (");
                    q.bind(&u).push(", ").bind(t).push(") ON CONFLICT DO NOTHING");
                    existed = q.execute(&mut **tx).await? == 0;
                    let n: i64 = Query::new("SELECT COUNT(*) AS n FROM compute_instance_tags WHERE instance_uuid = ")
                        .bind(&u)
                        .fetch_optional(&mut **tx)
                        .await?
                        .map(|r| stratus_db::sqlx::Row::try_get(&r, "n"))
                        .transpose()?
                        .unwrap_or(0);
                    if n as usize > MAX_TAGS {
                        return Err(ComputeError::BadRequest(format!(
                            "The number of tags exceeded the per-server limit {MAX_TAGS}"
                        )));
                    }
                }
                if let Some(t) = &remove {
                    let n = Query::new("DELETE FROM compute_instance_tags WHERE instance_uuid = ")
                        .bind(&u)
                        .push_bind(" AND tag = ", t)
                        .execute(&mut **tx)
                        .await?;
                    if n == 0 {
                        return Err(ComputeError::NotFound(format!("Tag {t} could not be found.")));
                    }
                }
                // Tag changes are server changes (changes-since sees them).
                store::Update::new().apply_tx(tx, &u).await?;
                Ok(existed)
            })
        })
        .await
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    need_version(v)?;
    let i = load(&st, &ctx, &id, "os_compute_api:os-server-tags:index", false).await?;
    Ok(Json(json!({"tags": i.tags})))
}

async fn replace(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    need_version(v)?;
    let i = load(&st, &ctx, &id, "os_compute_api:os-server-tags:update_all", true).await?;
    let tags = body["tags"]
        .as_array()
        .ok_or_else(|| ComputeError::BadRequest("Invalid input: 'tags' is a required list".into()))?;
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.as_str().ok_or_else(|| ComputeError::BadRequest(format!("Invalid tag {t}: not a string")))?;
        validate(t)?;
        if !out.iter().any(|x| x == t) {
            out.push(t.to_string());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(
            ComputeError::BadRequest(format!("The number of tags exceeded the per-server limit {MAX_TAGS}")).into()
        );
    }
    write(&st, &i.uuid, Some(out), None, None).await?;
    let i = store::must_load(&st.platform.db, &i.uuid).await?;
    Ok(Json(json!({"tags": i.tags})))
}

async fn clear(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    need_version(v)?;
    let i = load(&st, &ctx, &id, "os_compute_api:os-server-tags:delete_all", true).await?;
    write(&st, &i.uuid, Some(vec![]), None, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    need_version(v)?;
    let i = load(&st, &ctx, &id, "os_compute_api:os-server-tags:show", false).await?;
    if i.tags.contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ComputeError::NotFound(format!("Tag {tag} could not be found.")).into())
    }
}

async fn add(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, tag)): Path<(String, String)>,
) -> Result<(StatusCode, [(axum::http::HeaderName, String); 1]), ApiError> {
    need_version(v)?;
    validate(&tag)?;
    let i = load(&st, &ctx, &id, "os_compute_api:os-server-tags:update", true).await?;
    let existed = write(&st, &i.uuid, None, Some(tag.clone()), None).await?;
    let loc = format!("{}/v2.1/servers/{}/tags/{tag}", st.platform.service_url("/compute"), i.uuid);
    Ok((if existed { StatusCode::NO_CONTENT } else { StatusCode::CREATED }, [(axum::http::header::LOCATION, loc)]))
}

async fn remove(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    need_version(v)?;
    let i = load(&st, &ctx, &id, "os_compute_api:os-server-tags:delete", true).await?;
    write(&st, &i.uuid, None, None, Some(tag)).await?;
    Ok(StatusCode::NO_CONTENT)
}
