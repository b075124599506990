//! Backup operations as step tables.
//!
//! | table | steps (performer) | on failure |
//! |---|---|---|
//! | `create_backup` | backup_on_agent (agent, undo: delete what was written) → finish | backup `error` with `fail_reason`, the volume (or snapshot) back to its status, user message |
//! | `restore_backup` | restore_on_agent (agent) → finish | backup `available`, volume `error_restoring`, user message |
//! | `delete_backup` | delete_on_agent (agent) → finish | backup `error`, user message |
//!
//! The agent that writes a backup is the one of the volume's backend (it reads the
//! volume); the backup remembers it (`host`) so that its deletion goes to an agent that
//! can reach the same store. A restore goes to the target volume's backend.

use serde_json::{json, Value};
use stratus_db::Arg;
use stratus_volume_contract::steps::{Performer, Step, StepTable};
use stratus_volume_contract::{AgentRequest, BackupCreated};

use super::{drive, spawn, OpCtx, OpError, Resource};
use crate::backups::store::{self, Backup};
use crate::messages::{self, Action, Detail};
use crate::volumes::store::{self as volumes, Volume};
use crate::S;

type BStep = Step<OpCtx, OpError>;

async fn backup(c: &OpCtx) -> Result<Backup, OpError> {
    store::get(&c.vol, &c.id).await?.ok_or_else(|| OpError::Failed(format!("backup {} is gone", c.id)))
}

async fn volume(c: &OpCtx, id: &str) -> Result<(Volume, String), OpError> {
    let v = volumes::get(&c.vol, id).await?.ok_or_else(|| OpError::Failed(format!("volume {id} is gone")))?;
    let b = v.backend().ok_or_else(|| OpError::Failed(format!("volume {id} has no backend")))?;
    Ok((v, b))
}

async fn set(c: &OpCtx, cols: &[(&str, Arg)]) -> Result<(), OpError> {
    let mut tx = c.vol.db.begin().await?;
    store::set(&mut tx, &c.id, cols).await?;
    tx.commit().await.map_err(stratus_db::DbError::from)?;
    Ok(())
}

/// Puts the backed-up volume (or snapshot) back to the status it had.
async fn release_source(c: &OpCtx, b: &Backup) -> Result<(), OpError> {
    let mut tx = c.vol.db.begin().await?;
    if let Some(v) = volumes::get_tx(&mut tx, &b.volume_id).await? {
        if v.status == "backing-up" {
            let back = v.previous_status.clone().unwrap_or_else(|| "available".into());
            volumes::set(&mut tx, &v.id, &[("status", Arg::from(back)), ("previous_status", Arg::Null)]).await?;
        }
    }
    if let Some(s) = &b.snapshot_id {
        let mut q = stratus_db::Query::new(
            "UPDATE volume_snapshots SET status = 'available' WHERE status = 'backing-up' AND id = ",
        );
        q.bind(s);
        q.execute(&mut *tx).await?;
    }
    tx.commit().await.map_err(stratus_db::DbError::from)?;
    Ok(())
}

/// Writing a backup.
pub static CREATE: StepTable<OpCtx, OpError> = StepTable {
    name: "create_backup",
    steps: &[
        BStep {
            name: "backup_on_agent",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let b = backup(c).await?;
                    let (v, backend) = volume(c, &b.volume_id).await?;
                    let snapshot = match &b.snapshot_id {
                        Some(s) => crate::snapshots::store::get(&c.vol, s).await?.map(|s| s.as_ref()),
                        None => None,
                    };
                    let spec = store::spec(&c.vol, &b.id).await?;
                    let req = AgentRequest::CreateBackup { backup: spec, volume: v.as_ref(), snapshot };
                    let r: BackupCreated = c.call(&backend, &req, true).await?;
                    set(
                        c,
                        &[
                            ("object_count", Arg::from(r.object_count as i64)),
                            ("service", Arg::from(r.service)),
                            ("host", Arg::from(backend)),
                        ],
                    )
                    .await
                })
            },
            undo: Some(|c| {
                Box::pin(async move {
                    let b = backup(c).await?;
                    let (_, backend) = volume(c, &b.volume_id).await?;
                    let spec = store::spec(&c.vol, &b.id).await?;
                    c.call::<Value>(&backend, &AgentRequest::DeleteBackup { backup: spec }, false).await?;
                    Ok(())
                })
            }),
        },
        BStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let b = backup(c).await?;
                    release_source(c, &b).await?;
                    set(c, &[("status", Arg::from("available")), ("task", Arg::Null), ("task_args", Arg::Null)]).await
                })
            },
            undo: None,
        },
    ],
};

/// Starts writing backup `id` (its row is `creating`, its volume `backing-up`).
pub fn start_create(vol: &S, id: &str) {
    spawn(vol, drive(&CREATE, OpCtx::new(vol, Resource::Backup, id, json!({})), None, settle_create));
}

/// Resumes an interrupted backup.
pub fn resume_create(vol: &S, b: &Backup, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Backup, &b.id, b.args());
    spawn(vol, drive(&CREATE, ctx, Some(step.to_string()), settle_create));
}

async fn settle_create(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(backup = %c.id, step, error = %e, "backup failed");
    let Ok(b) = backup(&c).await else { return };
    let _ = release_source(&c, &b).await;
    let _ = set(
        &c,
        &[
            ("status", Arg::from("error")),
            ("fail_reason", Arg::from(e.to_string())),
            ("task", Arg::Null),
            ("task_args", Arg::Null),
        ],
    )
    .await;
    messages::record(
        &c.vol,
        &b.project_id,
        "VOLUME_BACKUP",
        &c.id,
        Action::BackupCreate,
        Detail::BackupCreateDriverError,
        &e.to_string(),
    )
    .await;
}

/// Restoring a backup into an existing volume.
pub static RESTORE: StepTable<OpCtx, OpError> = StepTable {
    name: "restore_backup",
    steps: &[
        BStep {
            name: "restore_on_agent",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let target = c.arg("volume_id").unwrap_or_default();
                    let (v, backend) = volume(c, &target).await?;
                    let spec = store::spec(&c.vol, &c.id).await?;
                    c.call::<Value>(&backend, &AgentRequest::RestoreBackup { backup: spec, volume: v.as_ref() }, true)
                        .await?;
                    Ok(())
                })
            },
            undo: None,
        },
        BStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let target = c.arg("volume_id").unwrap_or_default();
                    let b = backup(c).await?;
                    let mut tx = c.vol.db.begin().await?;
                    volumes::transition(&mut tx, &target, &["restoring-backup"], "available", &[]).await?;
                    apply_source_info(&mut tx, &b, &target).await?;
                    store::set(
                        &mut tx,
                        &c.id,
                        &[("status", Arg::from("available")), ("task", Arg::Null), ("task_args", Arg::Null)],
                    )
                    .await?;
                    tx.commit().await.map_err(stratus_db::DbError::from)?;
                    Ok(())
                })
            },
            undo: None,
        },
    ],
};

/// A restored volume gets the bootable flag, the metadata and the image metadata its
/// source had (Cinder keeps the volume's metadata in the backup and restores it).
pub async fn apply_source_info(tx: &mut stratus_db::Tx, b: &Backup, volume_id: &str) -> Result<(), OpError> {
    let Some(info) = b.source_info.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()) else {
        return Ok(());
    };
    if let Some(boot) = info.get("bootable").and_then(Value::as_bool) {
        volumes::set(tx, volume_id, &[("bootable", Arg::from(boot))]).await?;
    }
    if let Some(meta) = info.get("image_metadata") {
        let meta = crate::body::metadata(Some(meta), "image metadata")?.unwrap_or_default();
        crate::sql::IMAGE_META.replace(tx, volume_id, &meta).await?;
    }
    if let Some(meta) = info.get("metadata") {
        let meta = crate::body::metadata(Some(meta), "metadata")?.unwrap_or_default();
        crate::sql::VOLUME_META.merge(tx, volume_id, &meta).await?;
    }
    Ok(())
}

/// Starts restoring backup `id` into `volume_id` (backup `restoring`, volume `restoring-backup`).
pub fn start_restore(vol: &S, id: &str, volume_id: &str) {
    let ctx = OpCtx::new(vol, Resource::Backup, id, json!({"volume_id": volume_id}));
    spawn(vol, drive(&RESTORE, ctx, None, settle_restore));
}

/// Resumes an interrupted restore.
pub fn resume_restore(vol: &S, b: &Backup, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Backup, &b.id, b.args());
    spawn(vol, drive(&RESTORE, ctx, Some(step.to_string()), settle_restore));
}

async fn settle_restore(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(backup = %c.id, step, error = %e, "restore failed");
    let target = c.arg("volume_id").unwrap_or_default();
    if let Ok(mut tx) = c.vol.db.begin().await {
        let _ = volumes::set(&mut tx, &target, &[("status", Arg::from("error_restoring"))]).await;
        let _ = store::set(
            &mut tx,
            &c.id,
            &[("status", Arg::from("available")), ("task", Arg::Null), ("task_args", Arg::Null)],
        )
        .await;
        let _ = tx.commit().await;
    }
    let project = backup(&c).await.map(|b| b.project_id).unwrap_or_default();
    messages::record(
        &c.vol,
        &project,
        "VOLUME_BACKUP",
        &c.id,
        Action::BackupRestore,
        Detail::BackupRestoreError,
        &e.to_string(),
    )
    .await;
}

/// Removing a backup from its store.
pub static DELETE: StepTable<OpCtx, OpError> = StepTable {
    name: "delete_backup",
    steps: &[
        BStep {
            name: "delete_on_agent",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let b = backup(c).await?;
                    let Some(host) = b.host.clone() else { return Ok(()) };
                    let spec = store::spec(&c.vol, &b.id).await?;
                    c.call::<Value>(&host, &AgentRequest::DeleteBackup { backup: spec }, false).await?;
                    Ok(())
                })
            },
            undo: None,
        },
        BStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let now = stratus_core::time::now();
                    set(
                        c,
                        &[
                            ("status", Arg::from("deleted")),
                            ("deleted", Arg::from(true)),
                            ("deleted_at", Arg::from(now)),
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

/// Starts deleting backup `id` (its row is `deleting`).
pub fn start_delete(vol: &S, id: &str) {
    spawn(vol, drive(&DELETE, OpCtx::new(vol, Resource::Backup, id, json!({})), None, settle_delete));
}

/// Resumes an interrupted backup deletion.
pub fn resume_delete(vol: &S, b: &Backup, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Backup, &b.id, b.args());
    spawn(vol, drive(&DELETE, ctx, Some(step.to_string()), settle_delete));
}

async fn settle_delete(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(backup = %c.id, step, error = %e, "backup deletion failed");
    let _ = set(
        &c,
        &[
            ("status", Arg::from("error")),
            ("fail_reason", Arg::from(e.to_string())),
            ("task", Arg::Null),
            ("task_args", Arg::Null),
        ],
    )
    .await;
    let project = backup(&c).await.map(|b| b.project_id).unwrap_or_default();
    messages::record(
        &c.vol,
        &project,
        "VOLUME_BACKUP",
        &c.id,
        Action::BackupDelete,
        Detail::BackupDeleteDriverError,
        &e.to_string(),
    )
    .await;
}
