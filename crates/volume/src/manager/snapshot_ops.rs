//! Snapshot operations as step tables.
//!
//! | table | steps (performer) | on failure |
//! |---|---|---|
//! | `create_snapshot` | create_on_backend (agent, undo: delete on backend) → finish | snapshot `error`, user message |
//! | `delete_snapshot` | delete_on_backend (agent) → finish | snapshot `error_deleting`, user message |

use serde_json::{json, Value};
use stratus_db::Arg;
use stratus_volume_contract::steps::{Performer, Step, StepTable};
use stratus_volume_contract::{AgentRequest, SnapshotCreated};

use super::{drive, spawn, OpCtx, OpError, Resource};
use crate::messages::{self, Action, Detail};
use crate::snapshots::store::{self, Snapshot};
use crate::volumes::store::{self as volumes, Volume};
use crate::S;

type SStep = Step<OpCtx, OpError>;

async fn snapshot(c: &OpCtx) -> Result<Snapshot, OpError> {
    store::get(&c.vol, &c.id).await?.ok_or_else(|| OpError::Failed(format!("snapshot {} is gone", c.id)))
}

async fn volume_of(c: &OpCtx, s: &Snapshot) -> Result<(Volume, String), OpError> {
    let v = volumes::get(&c.vol, &s.volume_id)
        .await?
        .ok_or_else(|| OpError::Failed(format!("volume {} of snapshot {} is gone", s.volume_id, s.id)))?;
    let b = v.backend().ok_or_else(|| OpError::Failed(format!("volume {} has no backend", v.id)))?;
    Ok((v, b))
}

async fn set(c: &OpCtx, cols: &[(&str, Arg)]) -> Result<(), OpError> {
    let mut tx = c.vol.db.begin().await?;
    store::set(&mut tx, &c.id, cols).await?;
    tx.commit().await.map_err(stratus_db::DbError::from)?;
    Ok(())
}

/// Taking a snapshot.
pub static CREATE: StepTable<OpCtx, OpError> = StepTable {
    name: "create_snapshot",
    steps: &[
        SStep {
            name: "create_on_backend",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let s = snapshot(c).await?;
                    let (v, backend) = volume_of(c, &s).await?;
                    let req = AgentRequest::CreateSnapshot { snapshot: s.as_ref(), volume: v.as_ref() };
                    let r: SnapshotCreated = c.call(&backend, &req, false).await?;
                    let mut tx = c.vol.db.begin().await?;
                    store::set(&mut tx, &c.id, &[("provider_location", Arg::from(r.location))]).await?;
                    volumes::set(&mut tx, &v.id, &[("provider_location", Arg::from(r.volume_location))]).await?;
                    tx.commit().await.map_err(stratus_db::DbError::from)?;
                    Ok(())
                })
            },
            undo: Some(|c| {
                Box::pin(async move {
                    let s = snapshot(c).await?;
                    let (v, backend) = volume_of(c, &s).await?;
                    let req = AgentRequest::DeleteSnapshot { snapshot: s.as_ref(), volume: v.as_ref() };
                    c.call::<Value>(&backend, &req, false).await?;
                    set(c, &[("provider_location", Arg::Null)]).await
                })
            }),
        },
        SStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    set(
                        c,
                        &[
                            ("status", Arg::from("available")),
                            ("progress", Arg::from("100%")),
                            ("task", Arg::Null),
                            ("task_args", Arg::Null),
                        ],
                    )
                    .await
                })
            },
            undo: None,
        },
    ],
};

/// Starts taking snapshot `id` (its row is `creating`).
pub fn start_create(vol: &S, id: &str) {
    spawn(vol, drive(&CREATE, OpCtx::new(vol, Resource::Snapshot, id, json!({})), None, settle_create));
}

/// Resumes an interrupted snapshot.
pub fn resume_create(vol: &S, s: &Snapshot, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Snapshot, &s.id, s.args());
    spawn(vol, drive(&CREATE, ctx, Some(step.to_string()), settle_create));
}

async fn settle_create(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(snapshot = %c.id, step, error = %e, "snapshot failed");
    let _ = set(
        &c,
        &[
            ("status", Arg::from("error")),
            ("provider_location", Arg::Null),
            ("task", Arg::Null),
            ("task_args", Arg::Null),
        ],
    )
    .await;
    let project = snapshot(&c).await.map(|s| s.project_id).unwrap_or_default();
    messages::record(
        &c.vol,
        &project,
        "SNAPSHOT",
        &c.id,
        Action::SnapshotCreate,
        Detail::SnapshotCreateError,
        &e.to_string(),
    )
    .await;
}

/// Deleting a snapshot.
pub static DELETE: StepTable<OpCtx, OpError> = StepTable {
    name: "delete_snapshot",
    steps: &[
        SStep {
            name: "delete_on_backend",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let s = snapshot(c).await?;
                    let v = volumes::get(&c.vol, &s.volume_id).await?;
                    if let Some(v) = v {
                        if let Some(backend) = v.backend() {
                            let req = AgentRequest::DeleteSnapshot { snapshot: s.as_ref(), volume: v.as_ref() };
                            c.call::<Value>(&backend, &req, false).await?;
                        }
                    }
                    Ok(())
                })
            },
            undo: None,
        },
        SStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| Box::pin(async move { store::mark_deleted(&c.vol, &c.id).await.map_err(OpError::from) }),
            undo: None,
        },
    ],
};

/// Starts deleting snapshot `id` (its row is `deleting`).
pub fn start_delete(vol: &S, id: &str) {
    spawn(vol, drive(&DELETE, OpCtx::new(vol, Resource::Snapshot, id, json!({})), None, settle_delete));
}

/// Resumes an interrupted snapshot deletion.
pub fn resume_delete(vol: &S, s: &Snapshot, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Snapshot, &s.id, s.args());
    spawn(vol, drive(&DELETE, ctx, Some(step.to_string()), settle_delete));
}

async fn settle_delete(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(snapshot = %c.id, step, error = %e, "snapshot deletion failed");
    let _ = set(&c, &[("status", Arg::from("error_deleting")), ("task", Arg::Null), ("task_args", Arg::Null)]).await;
    let project = snapshot(&c).await.map(|s| s.project_id).unwrap_or_default();
    messages::record(
        &c.vol,
        &project,
        "SNAPSHOT",
        &c.id,
        Action::SnapshotDelete,
        Detail::SnapshotDeleteError,
        &e.to_string(),
    )
    .await;
}
