//! Volume operations as step tables: create, delete, extend, revert, upload to image.
//!
//! | table | steps (performer) | on failure |
//! |---|---|---|
//! | `create_volume` | schedule (controller) → create_on_backend (agent, undo: delete) → restore_backup (agent) → finish | `error`, no location (reconciliation removes any data), user message |
//! | `delete_volume` | delete_snapshots (agent; cascade) → delete_on_backend (agent) → finish | `error_deleting` |
//! | `extend_volume` | extend_on_backend (agent) → finish | back to its status if the backend refused, else `error_extending`; user message |
//! | `revert_volume` | revert_on_backend (agent) → finish | back to `available` if refused, else `error` |
//! | `upload_volume` | upload (agent) → finish | image deleted, volume back to its status, user message |

use serde_json::{json, Value};
use stratus_core::RequestContext;
use stratus_db::Arg;
use stratus_volume_contract::steps::{Performer, Step, StepTable};
use stratus_volume_contract::{AgentRequest, ImageRef, VolumeCreated, VolumeSource};

use super::{clear_task, drive, spawn, OpCtx, OpError, Resource};
use crate::error::VolError;
use crate::manager::scheduler::{self, Needs};
use crate::messages::{self, Action, Detail};
use crate::volumes::store::{self, Volume};
use crate::S;

type VStep = Step<OpCtx, OpError>;

async fn volume(c: &OpCtx) -> Result<Volume, OpError> {
    store::get(&c.vol, &c.id).await?.ok_or_else(|| OpError::Failed(format!("volume {} is gone", c.id)))
}

fn backend_of(v: &Volume) -> Result<String, OpError> {
    v.backend().ok_or_else(|| OpError::Failed(format!("volume {} has no backend", v.id)))
}

async fn set(c: &OpCtx, cols: &[(&str, Arg)]) -> Result<(), OpError> {
    let mut tx = c.vol.db.begin().await?;
    store::set(&mut tx, &c.id, cols).await?;
    tx.commit().await.map_err(stratus_db::DbError::from)?;
    Ok(())
}

/// The data source of a new volume, from the operation's arguments.
async fn source(c: &OpCtx) -> Result<VolumeSource, OpError> {
    let src = c.args.lock().get("source").cloned().unwrap_or(Value::Null);
    let kind = src.get("type").and_then(Value::as_str).unwrap_or("blank");
    let id = |k: &str| src.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(match kind {
        "image" => VolumeSource::Image {
            image: ImageRef {
                id: id("image_id"),
                disk_format: id("disk_format"),
                size: src.get("size").and_then(Value::as_u64),
                direct_url: src.get("direct_url").and_then(Value::as_str).map(str::to_string),
            },
        },
        "snapshot" => {
            let s = crate::snapshots::store::get(&c.vol, &id("snapshot_id"))
                .await?
                .ok_or_else(|| OpError::Failed(format!("snapshot {} is gone", id("snapshot_id"))))?;
            VolumeSource::Snapshot { snapshot: s.as_ref() }
        }
        "volume" => {
            let v = store::get(&c.vol, &id("volume_id"))
                .await?
                .ok_or_else(|| OpError::Failed(format!("source volume {} is gone", id("volume_id"))))?;
            VolumeSource::Volume { volume: v.as_ref() }
        }
        _ => VolumeSource::Blank,
    })
}

/// Creating a volume.
pub static CREATE: StepTable<OpCtx, OpError> = StepTable {
    name: "create_volume",
    steps: &[
        VStep {
            name: "schedule",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    if v.host.is_some() {
                        return Ok(());
                    }
                    let a = c.args.lock().clone();
                    let s = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
                    let needs = Needs {
                        size_gb: v.size,
                        availability_zone: Some(v.availability_zone.clone()),
                        backend_name: s("backend_name"),
                        capabilities: a
                            .get("capabilities")
                            .and_then(Value::as_object)
                            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                            .unwrap_or_default(),
                        same_backend: s("same_backend"),
                        multiattach: v.multiattach,
                    };
                    let mut tx = c.vol.db.begin().await?;
                    match scheduler::pick(&c.vol, &mut tx, &needs).await? {
                        Ok(host) => {
                            store::set(&mut tx, &c.id, &[("host", Arg::from(host.clone()))]).await?;
                            tx.commit().await.map_err(stratus_db::DbError::from)?;
                            tracing::info!(volume = %c.id, %host, "volume scheduled");
                            Ok(())
                        }
                        Err(why) => Err(OpError::NoValidBackend(why)),
                    }
                })
            },
            undo: None,
        },
        VStep {
            name: "create_on_backend",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    let backend = backend_of(&v)?;
                    let req = AgentRequest::CreateVolume { volume: v.as_ref(), source: source(c).await? };
                    let r: VolumeCreated = c.call(&backend, &req, true).await?;
                    set(c, &[("provider_location", Arg::from(r.location))]).await
                })
            },
            undo: Some(|c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    if let Some(backend) = v.backend() {
                        c.call::<Value>(&backend, &AgentRequest::DeleteVolume { volume: v.as_ref() }, false).await?;
                    }
                    set(c, &[("provider_location", Arg::Null)]).await
                })
            }),
        },
        VStep {
            name: "restore_backup",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let Some(backup_id) = c
                        .args
                        .lock()
                        .get("source")
                        .and_then(|s| s.get("backup_id"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                    else {
                        return Ok(());
                    };
                    let v = volume(c).await?;
                    let spec = crate::backups::store::spec(&c.vol, &backup_id).await?;
                    let req = AgentRequest::RestoreBackup { backup: spec, volume: v.as_ref() };
                    c.call::<Value>(&backend_of(&v)?, &req, true).await?;
                    Ok(())
                })
            },
            undo: None,
        },
        VStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let mut tx = c.vol.db.begin().await?;
                    let now = stratus_core::time::now();
                    store::transition(
                        &mut tx,
                        &c.id,
                        &["creating"],
                        "available",
                        &[("task", Arg::Null), ("task_args", Arg::Null), ("launched_at", Arg::from(now))],
                    )
                    .await?;
                    let backup = c
                        .args
                        .lock()
                        .get("source")
                        .and_then(|s| s.get("backup_id"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    if let Some(b) = backup {
                        // A volume restored from a backup gets its source's flags and metadata.
                        if let Some(full) = crate::backups::store::get(&c.vol, &b).await? {
                            crate::manager::backup_ops::apply_source_info(&mut tx, &full, &c.id).await?;
                        }
                        crate::backups::store::set_status(&mut tx, &b, "available").await?;
                    }
                    tx.commit().await.map_err(stratus_db::DbError::from)?;
                    tracing::info!(volume = %c.id, "volume created");
                    Ok(())
                })
            },
            undo: None,
        },
    ],
};

/// Starts creating volume `id` (its row is `creating`), with `args` (`source`,
/// `backend_name`, `same_backend`).
pub fn start_create(vol: &S, id: &str, args: Value) {
    let ctx = OpCtx::new(vol, Resource::Volume, id, args);
    spawn(vol, drive(&CREATE, ctx, None, settle_create));
}

/// Resumes an interrupted create at `step`.
pub fn resume_create(vol: &S, v: &Volume, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Volume, &v.id, v.args());
    spawn(vol, drive(&CREATE, ctx, Some(step.to_string()), settle_create));
}

async fn settle_create(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    let vol = &c.vol;
    let source_kind =
        c.args.lock().get("source").and_then(|s| s.get("type")).and_then(Value::as_str).unwrap_or("blank").to_string();
    let backup =
        c.args.lock().get("source").and_then(|s| s.get("backup_id")).and_then(Value::as_str).map(str::to_string);
    let result = async {
        let mut tx = vol.db.begin().await?;
        store::set(
            &mut tx,
            &c.id,
            &[
                ("status", Arg::from("error")),
                ("task", Arg::Null),
                ("task_args", Arg::Null),
                ("provider_location", Arg::Null),
            ],
        )
        .await?;
        if let Some(b) = &backup {
            crate::backups::store::set_status(&mut tx, b, "available").await?;
        }
        tx.commit().await.map_err(stratus_db::DbError::from)?;
        Ok::<(), OpError>(())
    }
    .await;
    if let Err(e2) = result {
        tracing::error!(volume = %c.id, error = %e2, "could not record a failed create; recovery will");
        return;
    }
    let project = store::get(vol, &c.id).await.ok().flatten().map(|v| v.project_id).unwrap_or_default();
    let (action, detail) = match (&e, step.as_str(), source_kind.as_str()) {
        (OpError::NoValidBackend(_), _, _) => (Action::ScheduleAllocateVolume, Detail::NoBackendAvailable),
        (_, _, "image") => (Action::CopyImageToVolume, Detail::DriverFailedCreate),
        (_, "restore_backup", _) => (Action::BackupRestore, Detail::BackupRestoreError),
        _ => (Action::CreateVolumeFromBackend, Detail::DriverFailedCreate),
    };
    tracing::warn!(volume = %c.id, step, error = %e, "volume creation failed");
    messages::record(vol, &project, "VOLUME", &c.id, action, detail, &e.to_string()).await;
}

/// Deleting a volume (and, with `cascade`, its snapshots).
pub static DELETE: StepTable<OpCtx, OpError> = StepTable {
    name: "delete_volume",
    steps: &[
        VStep {
            name: "delete_snapshots",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    for s in crate::snapshots::store::of_volume(&c.vol, &v.id).await? {
                        if let Some(backend) = v.backend() {
                            let req = AgentRequest::DeleteSnapshot { snapshot: s.as_ref(), volume: v.as_ref() };
                            c.call::<Value>(&backend, &req, false).await?;
                        }
                        crate::snapshots::store::mark_deleted(&c.vol, &s.id).await?;
                    }
                    Ok(())
                })
            },
            undo: None,
        },
        VStep {
            name: "delete_on_backend",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    if let Some(backend) = v.backend() {
                        c.call::<Value>(&backend, &AgentRequest::DeleteVolume { volume: v.as_ref() }, false).await?;
                    }
                    Ok(())
                })
            },
            undo: None,
        },
        VStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let now = stratus_core::time::now();
                    let mut tx = c.vol.db.begin().await?;
                    store::set(
                        &mut tx,
                        &c.id,
                        &[
                            ("status", Arg::from("deleted")),
                            ("deleted", Arg::from(true)),
                            ("deleted_at", Arg::from(now.clone())),
                            ("terminated_at", Arg::from(now.clone())),
                            ("task", Arg::Null),
                            ("task_args", Arg::Null),
                            ("provider_location", Arg::Null),
                        ],
                    )
                    .await?;
                    let mut q = stratus_db::Query::new("UPDATE volume_transfers SET deleted = 1, deleted_at = ");
                    q.bind(now).push(" WHERE deleted = 0 AND volume_id = ").bind(&c.id);
                    q.execute(&mut *tx).await?;
                    tx.commit().await.map_err(stratus_db::DbError::from)?;
                    tracing::info!(volume = %c.id, "volume deleted");
                    Ok(())
                })
            },
            undo: None,
        },
    ],
};

/// Starts deleting volume `id` (its row is `deleting`).
pub fn start_delete(vol: &S, id: &str) {
    let ctx = OpCtx::new(vol, Resource::Volume, id, json!({}));
    spawn(vol, drive(&DELETE, ctx, None, settle_delete));
}

/// Resumes an interrupted delete.
pub fn resume_delete(vol: &S, v: &Volume, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Volume, &v.id, v.args());
    spawn(vol, drive(&DELETE, ctx, Some(step.to_string()), settle_delete));
}

async fn settle_delete(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(volume = %c.id, step, error = %e, "volume deletion failed");
    let _ = set(&c, &[("status", Arg::from("error_deleting")), ("task", Arg::Null), ("task_args", Arg::Null)]).await;
}

/// Growing a volume.
pub static EXTEND: StepTable<OpCtx, OpError> = StepTable {
    name: "extend_volume",
    steps: &[
        VStep {
            name: "extend_on_backend",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    let new = c.arg_i("new_size").unwrap_or(v.size).max(0) as u64;
                    let req = AgentRequest::ExtendVolume { volume: v.as_ref(), new_size_gb: new };
                    let r: VolumeCreated = c.call(&backend_of(&v)?, &req, false).await?;
                    set(c, &[("provider_location", Arg::from(r.location))]).await
                })
            },
            undo: None,
        },
        VStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    let new = c.arg_i("new_size").unwrap_or(v.size);
                    let back = v.previous_status.clone().unwrap_or_else(|| "available".into());
                    let mut tx = c.vol.db.begin().await?;
                    store::transition(
                        &mut tx,
                        &c.id,
                        &["extending"],
                        &back,
                        &[
                            ("size", Arg::from(new)),
                            ("reserved_size", Arg::from(0i64)),
                            ("task", Arg::Null),
                            ("task_args", Arg::Null),
                        ],
                    )
                    .await?;
                    tx.commit().await.map_err(stratus_db::DbError::from)?;
                    tracing::info!(volume = %c.id, new, "volume extended");
                    Ok(())
                })
            },
            undo: None,
        },
    ],
};

/// Starts growing volume `id` to `new_size` (its row is `extending`).
pub fn start_extend(vol: &S, id: &str, new_size: i64) {
    let ctx = OpCtx::new(vol, Resource::Volume, id, json!({"new_size": new_size}));
    spawn(vol, drive(&EXTEND, ctx, None, settle_extend));
}

/// Resumes an interrupted extension.
pub fn resume_extend(vol: &S, v: &Volume, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Volume, &v.id, v.args());
    spawn(vol, drive(&EXTEND, ctx, Some(step.to_string()), settle_extend));
}

async fn settle_extend(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(volume = %c.id, step, error = %e, "volume extension failed");
    let Ok(v) = volume(&c).await else { return };
    // A clean refusal changed nothing: the volume is usable as it was.
    let status = if e.refused() {
        v.previous_status.clone().unwrap_or_else(|| "available".into())
    } else {
        "error_extending".into()
    };
    let _ = set(
        &c,
        &[
            ("status", Arg::from(status)),
            ("reserved_size", Arg::from(0i64)),
            ("task", Arg::Null),
            ("task_args", Arg::Null),
        ],
    )
    .await;
    messages::record(
        &c.vol,
        &v.project_id,
        "VOLUME",
        &c.id,
        Action::ExtendVolume,
        Detail::DriverFailedExtend,
        &e.to_string(),
    )
    .await;
}

/// Reverting a volume to its latest snapshot (3.40).
pub static REVERT: StepTable<OpCtx, OpError> = StepTable {
    name: "revert_volume",
    steps: &[
        VStep {
            name: "revert_on_backend",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    let sid = c.arg("snapshot_id").unwrap_or_default();
                    let s = crate::snapshots::store::get(&c.vol, &sid)
                        .await?
                        .ok_or_else(|| OpError::Failed(format!("snapshot {sid} is gone")))?;
                    let req = AgentRequest::RevertToSnapshot { volume: v.as_ref(), snapshot: s.as_ref() };
                    let r: VolumeCreated = c.call(&backend_of(&v)?, &req, true).await?;
                    set(c, &[("provider_location", Arg::from(r.location))]).await
                })
            },
            undo: None,
        },
        VStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let sid = c.arg("snapshot_id").unwrap_or_default();
                    let mut tx = c.vol.db.begin().await?;
                    store::transition(
                        &mut tx,
                        &c.id,
                        &["reverting"],
                        "available",
                        &[("task", Arg::Null), ("task_args", Arg::Null)],
                    )
                    .await?;
                    crate::snapshots::store::set_status(&mut tx, &sid, "available").await?;
                    tx.commit().await.map_err(stratus_db::DbError::from)?;
                    Ok(())
                })
            },
            undo: None,
        },
    ],
};

/// Starts reverting volume `id` to snapshot `snapshot_id`.
pub fn start_revert(vol: &S, id: &str, snapshot_id: &str) {
    let ctx = OpCtx::new(vol, Resource::Volume, id, json!({"snapshot_id": snapshot_id}));
    spawn(vol, drive(&REVERT, ctx, None, settle_revert));
}

/// Resumes an interrupted revert.
pub fn resume_revert(vol: &S, v: &Volume, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Volume, &v.id, v.args());
    spawn(vol, drive(&REVERT, ctx, Some(step.to_string()), settle_revert));
}

async fn settle_revert(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(volume = %c.id, step, error = %e, "revert failed");
    let status = if e.refused() { "available" } else { "error" };
    let _ = set(&c, &[("status", Arg::from(status)), ("task", Arg::Null), ("task_args", Arg::Null)]).await;
    if let Some(sid) = c.arg("snapshot_id") {
        if let Ok(mut tx) = c.vol.db.begin().await {
            let _ = crate::snapshots::store::set_status(&mut tx, &sid, "available").await;
            let _ = tx.commit().await;
        }
    }
}

/// Writing a volume into a new image (`os-volume_upload_image`).
pub static UPLOAD: StepTable<OpCtx, OpError> = StepTable {
    name: "upload_volume",
    steps: &[
        VStep {
            name: "upload",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    let image = ImageRef {
                        id: c.arg("image_id").unwrap_or_default(),
                        disk_format: c.arg("disk_format").unwrap_or_else(|| "raw".into()),
                        size: None,
                        direct_url: None,
                    };
                    c.call::<Value>(&backend_of(&v)?, &AgentRequest::UploadToImage { volume: v.as_ref(), image }, true)
                        .await?;
                    Ok(())
                })
            },
            undo: None,
        },
        VStep {
            name: "finish",
            performer: Performer::Controller,
            run: |c| {
                Box::pin(async move {
                    let v = volume(c).await?;
                    let back = v.previous_status.clone().unwrap_or_else(|| "available".into());
                    let mut tx = c.vol.db.begin().await?;
                    store::transition(
                        &mut tx,
                        &c.id,
                        &["uploading"],
                        &back,
                        &[("task", Arg::Null), ("task_args", Arg::Null)],
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

/// Starts writing volume `id` into image `image_id` (its row is `uploading`).
pub fn start_upload(vol: &S, id: &str, image_id: &str, disk_format: &str) {
    let ctx = OpCtx::new(vol, Resource::Volume, id, json!({"image_id": image_id, "disk_format": disk_format}));
    spawn(vol, drive(&UPLOAD, ctx, None, settle_upload));
}

/// Resumes an interrupted upload.
pub fn resume_upload(vol: &S, v: &Volume, step: &str) {
    let ctx = OpCtx::resumed(vol, Resource::Volume, &v.id, v.args());
    spawn(vol, drive(&UPLOAD, ctx, Some(step.to_string()), settle_upload));
}

async fn settle_upload(c: OpCtx, r: Result<(), (String, OpError)>) {
    let Err((step, e)) = r else { return };
    tracing::warn!(volume = %c.id, step, error = %e, "upload to image failed");
    if let Some(image) = c.arg("image_id") {
        let path = format!("/image/v2/images/{image}");
        let ctx = RequestContext::internal_admin();
        if let Err(e) = c.vol.platform.internal.call(&ctx, http::Method::DELETE, &path, None, &[]).await {
            tracing::warn!(image, error = %e, "could not delete the image of a failed upload");
        }
    }
    let Ok(v) = volume(&c).await else { return };
    let back = v.previous_status.clone().unwrap_or_else(|| "available".into());
    let _ = set(&c, &[("status", Arg::from(back)), ("task", Arg::Null), ("task_args", Arg::Null)]).await;
    messages::record(
        &c.vol,
        &v.project_id,
        "VOLUME",
        &c.id,
        Action::CopyVolumeToImage,
        Detail::FailedToUpload,
        &e.to_string(),
    )
    .await;
}

/// Clears a task that ended (used by recovery for rows it settles without a table).
pub async fn clear(vol: &S, id: &str) -> Result<(), VolError> {
    clear_task(vol, Resource::Volume, id).await.map_err(|e| VolError::Unavailable(e.to_string()))
}
