//! User messages (`/messages`, 3.3): why an asynchronous operation failed, in words the
//! volume's owner can act on ("no backend has 50 GiB free in zone nova" rather than a
//! status `error` and nothing else).
//!
//! Each message names Cinder's action and detail codes (`event_id`
//! `VOLUME_VOLUME_001_003`), and `user_message` adds Stratus's own explanation to
//! Cinder's fixed text.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::pagination::{PageSpec, SortDir};
use stratus_core::{ApiVersion, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::Query;

use crate::body;
use crate::error::{VolError, VolResult};
use crate::policy::enforce;
use crate::sql::{self, Listing};
use crate::types::need;
use crate::{both, Vol, S};

/// What was being done (Cinder's `message_field.Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// 001
    ScheduleAllocateVolume,
    /// 003
    CopyVolumeToImage,
    /// 005
    CopyImageToVolume,
    /// 007
    ExtendVolume,
    /// 008
    CreateVolumeFromBackend,
    /// 009
    SnapshotCreate,
    /// 010
    SnapshotDelete,
    /// 013
    BackupCreate,
    /// 014
    BackupDelete,
    /// 015
    BackupRestore,
}

impl Action {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            Action::ScheduleAllocateVolume => ("001", "schedule allocate volume"),
            Action::CopyVolumeToImage => ("003", "copy volume to image"),
            Action::CopyImageToVolume => ("005", "copy image to volume"),
            Action::ExtendVolume => ("007", "extend volume"),
            Action::CreateVolumeFromBackend => ("008", "create volume from backend storage"),
            Action::SnapshotCreate => ("009", "create snapshot"),
            Action::SnapshotDelete => ("010", "delete snapshot"),
            Action::BackupCreate => ("013", "create backup"),
            Action::BackupDelete => ("014", "delete backup"),
            Action::BackupRestore => ("015", "restore backup"),
        }
    }
}

/// Why (Cinder's `message_field.Detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// 003
    NoBackendAvailable,
    /// 004
    FailedToUpload,
    /// 010
    DriverFailedExtend,
    /// 012
    DriverFailedCreate,
    /// 013
    SnapshotCreateError,
    /// 016
    SnapshotDeleteError,
    /// 020
    BackupCreateDriverError,
    /// 025
    BackupDeleteDriverError,
    /// 026
    BackupRestoreError,
}

impl Detail {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            Detail::NoBackendAvailable => ("003", "Could not find any available weighted backend."),
            Detail::FailedToUpload => ("004", "Failed to upload volume to image at image service."),
            Detail::DriverFailedExtend => ("010", "Volume Driver failed to extend volume."),
            Detail::DriverFailedCreate => ("012", "Driver failed to create the volume."),
            Detail::SnapshotCreateError => ("013", "Snapshot failed to create."),
            Detail::SnapshotDeleteError => ("016", "Snapshot failed to delete."),
            Detail::BackupCreateDriverError => ("020", "Backup driver failed to create backup."),
            Detail::BackupDeleteDriverError => ("025", "Backup driver failed to delete backup."),
            Detail::BackupRestoreError => ("026", "Backup driver failed to restore backup."),
        }
    }
}

/// Records an error message for the owner of `resource_uuid` (best effort: a message
/// that cannot be written is logged, never fails the operation's cleanup).
#[allow(clippy::too_many_arguments)]
pub async fn record(
    vol: &Vol,
    project_id: &str,
    resource_type: &str,
    resource_uuid: &str,
    action: Action,
    detail: Detail,
    why: &str,
) {
    let (a, a_text) = action.code();
    let (d, d_text) = detail.code();
    let user_message = if why.is_empty() { format!("{a_text}:{d_text}") } else { format!("{a_text}:{d_text} {why}") };
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::days(vol.cfg.message_ttl_days as i64);
    let mut q = Query::new(
        "INSERT INTO volume_messages (id, project_id, request_id, resource_type, resource_uuid, event_id, message_level, user_message, created_at, expires_at) VALUES (",
    );
    q.bind(body::new_id()).push(", ").bind(project_id).push(", ").bind(format!("req-{}", body::new_id()));
    q.push(", ").bind(resource_type).push(", ").bind(resource_uuid).push(", ");
    q.bind(format!("VOLUME_{resource_type}_{a}_{d}")).push(", 'ERROR', ").bind(&user_message).push(", ");
    q.bind(stratus_core::time::to_storage(now)).push(", ").bind(stratus_core::time::to_storage(expires)).push(")");
    let r = async {
        let mut tx = vol.db.begin().await?;
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok::<(), stratus_db::DbError>(())
    }
    .await;
    match r {
        Ok(()) => tracing::info!(project_id, resource_uuid, %user_message, "user message recorded"),
        Err(e) => tracing::warn!(error = %e, %user_message, "could not record a user message"),
    }
}

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/messages", get(list));
    r = both(r, "/messages/{id}", get(show).delete(delete));
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

fn view(vol: &Vol, r: &AnyRow) -> Value {
    let project = sql::s(r, "project_id");
    let id = sql::s(r, "id");
    json!({
        "id": id,
        "event_id": sql::s(r, "event_id"),
        "user_message": sql::s(r, "user_message"),
        "message_level": sql::s(r, "message_level"),
        "resource_type": sql::os(r, "resource_type"),
        "resource_uuid": sql::os(r, "resource_uuid"),
        "created_at": body::ts(&sql::os(r, "created_at")),
        "guaranteed_until": body::ts(&sql::os(r, "expires_at")),
        "request_id": sql::os(r, "request_id"),
        "links": body::links(&vol.base, &project, "messages", &id),
    })
}

const PAGES: PageSpec = PageSpec {
    sort_keys: &[
        ("id", "id"),
        ("created_at", "created_at"),
        ("event_id", "event_id"),
        ("resource_type", "resource_type"),
        ("resource_uuid", "resource_uuid"),
        ("message_level", "message_level"),
    ],
    default_sort: &[("created_at", SortDir::Desc)],
    default_limit: 1000,
    max_limit: 1000,
};

async fn list(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    v: ApiVersion,
    uri: axum::http::Uri,
    q: QueryPairs,
) -> VolResult<Json<Value>> {
    need(v, 3, 3)?;
    enforce(&vol.policy, "message:get_all", &ctx, None)?;
    let listing = Listing::parse(&PAGES, &q)?;
    let mut sq = Query::new("SELECT * FROM volume_messages WHERE expires_at > ");
    sq.bind(stratus_core::time::now());
    if !ctx.is_admin() {
        sq.push_bind(" AND project_id = ", ctx.project_id.clone().unwrap_or_default());
    }
    for f in ["event_id", "resource_type", "resource_uuid", "message_level", "request_id"] {
        if let Some(val) = q.get(f) {
            sq.push(&format!(" AND {f} = ")).bind(val.to_string());
        }
    }
    listing.finish(&mut sq, vol.db.reader(), "volume_messages", "id", "message").await?;
    let rows = sq.fetch_all(vol.db.reader()).await?;
    let (rows, links) = listing.links(rows, |r| sql::s(r, "id"), &vol.base, uri.path(), &q);
    let mut out = json!({"messages": rows.iter().map(|r| view(&vol, r)).collect::<Vec<_>>()});
    if let Some(l) = links {
        out["messages_links"] = l;
    }
    Ok(Json(out))
}

async fn fetch(vol: &Vol, ctx: &stratus_auth::RequestContext, id: &str, action: &str) -> VolResult<AnyRow> {
    let mut q = Query::new("SELECT * FROM volume_messages WHERE id = ");
    q.bind(id);
    let r = q
        .fetch_optional(vol.db.reader())
        .await?
        .filter(|r| ctx.is_admin() || ctx.project_id.as_deref() == Some(sql::s(r, "project_id").as_str()))
        .ok_or_else(|| VolError::NotFound(format!("Message {id} could not be found.")))?;
    enforce(&vol.policy, action, ctx, Some(&sql::s(&r, "project_id")))?;
    Ok(r)
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, v: ApiVersion, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    need(v, 3, 3)?;
    let r = fetch(&vol, &ctx, &p.id, "message:get").await?;
    Ok(Json(json!({"message": view(&vol, &r)})))
}

async fn delete(State(vol): State<S>, Ctx(ctx): Ctx, v: ApiVersion, Path(p): Path<IdPath>) -> VolResult<StatusCode> {
    need(v, 3, 3)?;
    fetch(&vol, &ctx, &p.id, "message:delete").await?;
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("DELETE FROM volume_messages WHERE id = ");
    q.bind(&p.id);
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
