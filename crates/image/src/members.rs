//! Image members: sharing a `shared` image with other projects, who accept or reject it.
//!
//! The owner adds and removes members; only the member itself changes its status. A
//! member sees the image (show, download) whatever its status, and in default lists
//! once it has accepted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::Row;
use stratus_auth::Ctx;
use stratus_core::{time, OsJson, RequestContext};
use stratus_db::{sqlx, Query};

use crate::error::{ImageError, Result};
use crate::images::db::{self, Image};
use crate::images::target;
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/images/{id}/members", post(add).get(list))
        .route("/v2/images/{id}/members/{member}", get(show).put(update).delete(remove))
}

/// Member statuses.
pub const STATUSES: &[&str] = &["pending", "accepted", "rejected"];

#[derive(Debug, Clone)]
struct Member {
    image_id: String,
    member_id: String,
    status: String,
    created_at: String,
    updated_at: String,
}

fn view(m: &Member) -> Value {
    json!({
        "image_id": m.image_id,
        "member_id": m.member_id,
        "status": m.status,
        "created_at": time::seconds_z(&m.created_at),
        "updated_at": time::seconds_z(&m.updated_at),
        "schema": "/v2/schemas/member",
    })
}

async fn load(st: &St, image_id: &str, member: Option<&str>) -> Result<Vec<Member>> {
    let mut q =
        Query::new("SELECT image_id, member_id, status, created_at, updated_at FROM image_members WHERE image_id = ");
    q.bind(image_id);
    if let Some(m) = member {
        q.push_bind(" AND member_id = ", m);
    }
    q.push(" ORDER BY created_at, member_id");
    let rows = q.fetch_all(st.platform.db.reader()).await?;
    rows.iter()
        .map(|r| {
            Ok(Member {
                image_id: r.try_get(0)?,
                member_id: r.try_get(1)?,
                status: r.try_get(2)?,
                created_at: r.try_get(3)?,
                updated_at: r.try_get(4)?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| stratus_db::DbError::from(e).into())
}

fn member_target(im: &Image, member: &str) -> Value {
    let mut t = target(im);
    t["member_id"] = json!(member);
    t
}

fn require_shared(im: &Image) -> Result<()> {
    if im.visibility != "shared" {
        return Err(ImageError::Forbidden(format!(
            "Only shared images have members (image {} is {}).",
            im.id, im.visibility
        )));
    }
    Ok(())
}

fn is_owner(ctx: &RequestContext, im: &Image) -> bool {
    ctx.project_id.is_some() && ctx.project_id == im.owner
}

/// `POST /v2/images/{id}/members` `{"member": "<project>"}`.
async fn add(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    let member = body
        .get("member")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty() && m.len() <= 255)
        .ok_or_else(|| ImageError::BadRequest("Request body must be {\"member\": \"<project id>\"}".into()))?
        .to_string();
    st.policy.enforce("add_member", &ctx, &member_target(&im, &member))?;
    if !is_owner(&ctx, &im) && !ctx.is_admin() {
        return Err(ImageError::Forbidden("Only the image owner can add members".into()));
    }
    require_shared(&im)?;
    let existing = load(&st, &id, None).await?;
    if existing.iter().any(|m| m.member_id == member) {
        return Err(ImageError::Conflict(format!("Member {member} already associated with image {id}.")));
    }
    if existing.len() as i64 >= st.cfg.image_member_quota {
        return Err(ImageError::TooLarge(format!(
            "Maximum number of image members ({}) exceeded",
            st.cfg.image_member_quota
        )));
    }
    let now = time::now();
    let m =
        Member { image_id: id, member_id: member, status: "pending".into(), created_at: now.clone(), updated_at: now };
    let row = m.clone();
    st.platform
        .db
        .transaction(move |tx| {
            let row = row.clone();
            Box::pin(async move {
                let mut q = Query::new(
                    "INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) VALUES (",
                );
                q.bind(row.image_id.clone()).push(", ").bind(row.member_id.clone()).push(", ");
                q.bind(row.status.clone()).push(", ").bind(row.created_at.clone()).push(", ");
                q.bind(row.updated_at.clone()).push(")");
                q.execute(&mut **tx).await.map_err(|e| {
                    if e.is_unique_violation() {
                        ImageError::Conflict(format!(
                            "Member {} already associated with image {}.",
                            row.member_id, row.image_id
                        ))
                    } else {
                        e.into()
                    }
                })?;
                Ok::<_, ImageError>(())
            })
        })
        .await?;
    Ok(Json(view(&m)))
}

/// `GET /v2/images/{id}/members`: all members for the owner, the caller's own
/// membership for a member.
async fn list(State(st): State<St>, Ctx(ctx): Ctx, Path(id): Path<String>) -> Result<Json<Value>> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    let me = ctx.project_id.clone().unwrap_or_default();
    st.policy.enforce("get_members", &ctx, &member_target(&im, &me))?;
    require_shared(&im)?;
    let mut members = load(&st, &id, None).await?;
    if !is_owner(&ctx, &im) && !ctx.is_admin() {
        members.retain(|m| m.member_id == me);
    }
    Ok(Json(json!({"members": members.iter().map(view).collect::<Vec<_>>(), "schema": "/v2/schemas/members"})))
}

async fn find(st: &St, ctx: &RequestContext, im: &Image, member: &str) -> Result<Member> {
    let me = ctx.project_id.clone().unwrap_or_default();
    let not_found = || ImageError::NotFound(format!("Member {member} not found for image {}", im.id));
    if !is_owner(ctx, im) && !ctx.is_admin() && me != member {
        return Err(not_found());
    }
    load(st, &im.id, Some(member)).await?.pop().ok_or_else(not_found)
}

/// `GET /v2/images/{id}/members/{member}`.
async fn show(State(st): State<St>, Ctx(ctx): Ctx, Path((id, member)): Path<(String, String)>) -> Result<Json<Value>> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    st.policy.enforce("get_member", &ctx, &member_target(&im, &member))?;
    Ok(Json(view(&find(&st, &ctx, &im, &member).await?)))
}

/// `PUT /v2/images/{id}/members/{member}` `{"status": "accepted"}`: the member only.
async fn update(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((id, member)): Path<(String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| STATUSES.contains(s))
        .ok_or_else(|| {
            ImageError::BadRequest("Request body must be {\"status\": \"pending\"|\"accepted\"|\"rejected\"}".into())
        })?
        .to_string();
    let mut m = find(&st, &ctx, &im, &member).await?;
    st.policy.enforce("modify_member", &ctx, &member_target(&im, &member))?;
    if ctx.project_id.as_deref() != Some(member.as_str()) && !ctx.is_admin() {
        return Err(ImageError::Forbidden("Only the member can change its status on a shared image".into()));
    }
    m.status = status;
    m.updated_at = time::now();
    let row = m.clone();
    st.platform
        .db
        .transaction(move |tx| {
            let row = row.clone();
            Box::pin(async move {
                let mut q = Query::new("UPDATE image_members SET status = ");
                q.bind(row.status.clone())
                    .push_bind(", updated_at = ", row.updated_at.clone())
                    .push_bind(" WHERE image_id = ", row.image_id.clone())
                    .push_bind(" AND member_id = ", row.member_id.clone());
                q.execute(&mut **tx).await?;
                Ok::<_, ImageError>(())
            })
        })
        .await?;
    Ok(Json(view(&m)))
}

/// `DELETE /v2/images/{id}/members/{member}`: the owner unshares.
async fn remove(State(st): State<St>, Ctx(ctx): Ctx, Path((id, member)): Path<(String, String)>) -> Result<StatusCode> {
    let im = db::get_visible(&st.platform.db, &ctx, &id).await?;
    let m = find(&st, &ctx, &im, &member).await?;
    st.policy.enforce("delete_member", &ctx, &member_target(&im, &member))?;
    if !is_owner(&ctx, &im) && !ctx.is_admin() {
        return Err(ImageError::Forbidden("Only the image owner can remove members".into()));
    }
    let (image_id, member_id) = (m.image_id.clone(), m.member_id.clone());
    st.platform
        .db
        .transaction(move |tx| {
            let (image_id, member_id) = (image_id.clone(), member_id.clone());
            Box::pin(async move {
                let mut q = Query::new("DELETE FROM image_members WHERE image_id = ");
                q.bind(image_id).push_bind(" AND member_id = ", member_id);
                q.execute(&mut **tx).await?;
                Ok::<_, ImageError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
