//! `POST /volumes/{id}/action`: one action per request, named by the body's key.
//!
//! Admin actions (`os-reset_status`, `os-force_delete`, `os-force_detach`), state
//! changes the owner makes (`os-extend`, `revert`, `os-retype`,
//! `os-volume_upload_image`, `os-set_bootable`, `os-update_readonly_flag`), and the
//! legacy attach actions Tempest drives without Nova (`os-reserve`, `os-attach`,
//! `os-detach`, `os-begin_detaching`, `os-initialize_connection`...).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{ApiVersion, OsJson};
use stratus_db::Arg;
use stratus_volume_contract::Connector;

use super::store::{self, Volume};
use super::IdPath;
use crate::attachments;
use crate::body;
use crate::error::{bad, invalid_volume, not_found, VolError, VolResult};
use crate::manager;
use crate::policy::enforce;
use crate::quotas::{self, Deltas};
use crate::sql::IMAGE_META;
use crate::S;

/// Statuses `os-reset_status` may set.
const STATUSES: &[&str] = &[
    "creating",
    "available",
    "reserved",
    "attaching",
    "detaching",
    "in-use",
    "maintenance",
    "deleting",
    "awaiting-transfer",
    "error",
    "error_deleting",
    "backing-up",
    "restoring-backup",
    "error_backing-up",
    "error_restoring",
    "error_extending",
    "downloading",
    "uploading",
    "retyping",
    "extending",
];

/// The action handler.
pub async fn action(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Response> {
    let m = b.as_object().filter(|m| m.len() == 1).ok_or_else(|| bad("An action body names exactly one action"))?;
    let (name, arg) = m.iter().next().ok_or_else(|| bad("An action body names exactly one action"))?;
    let arg = if arg.is_null() { Value::Object(Map::new()) } else { arg.clone() };
    let v = store::visible(&vol, &ctx, &p.id).await?;
    let accepted = || StatusCode::ACCEPTED.into_response();
    match name.as_str() {
        "os-extend" => extend(&vol, &ctx, ver, &v, &arg).await.map(|_| accepted()),
        "os-reset_status" => reset_status(&vol, &ctx, &v, &arg).await.map(|_| accepted()),
        "os-force_delete" => {
            enforce(&vol.policy, "volume:force_delete", &ctx, Some(&v.project_id))?;
            super::start_delete(&vol, &v, true, true).await.map(|_| accepted())
        }
        "os-set_bootable" => {
            enforce(&vol.policy, "volume_extension:volume_actions:set_bootable", &ctx, Some(&v.project_id))?;
            let bootable = body::bool_value(arg.get("bootable"), "bootable")?;
            let mut tx = vol.db.begin().await?;
            store::set(&mut tx, &v.id, &[("bootable", Arg::from(bootable))]).await?;
            tx.commit().await?;
            Ok(StatusCode::OK.into_response())
        }
        "os-update_readonly_flag" => {
            enforce(&vol.policy, "volume:update_readonly_flag", &ctx, Some(&v.project_id))?;
            let ro = body::bool_value(arg.get("readonly"), "readonly")?;
            if !["available", "in-use"].contains(&v.status.as_str()) {
                return Err(invalid_volume(format!("Volume status must be available or in-use, but is {}", v.status)));
            }
            let mut tx = vol.db.begin().await?;
            store::set(&mut tx, &v.id, &[("readonly", Arg::from(ro))]).await?;
            tx.commit().await?;
            Ok(accepted())
        }
        "os-volume_upload_image" => {
            upload(&vol, &ctx, ver, &v, &arg).await.map(|j| (StatusCode::ACCEPTED, j).into_response())
        }
        "os-retype" => retype(&vol, &ctx, &v, &arg).await.map(|_| accepted()),
        "revert" => revert(&vol, &ctx, ver, &v, &arg).await.map(|_| accepted()),
        "os-reserve" => legacy(&vol, &ctx, &v, "reserve", &["available"], "attaching").await.map(|_| accepted()),
        "os-unreserve" => unreserve(&vol, &ctx, &v).await.map(|_| accepted()),
        "os-begin_detaching" => {
            legacy(&vol, &ctx, &v, "begin_detaching", &["in-use"], "detaching").await.map(|_| accepted())
        }
        "os-roll_detaching" => {
            legacy(&vol, &ctx, &v, "roll_detaching", &["detaching"], "in-use").await.map(|_| accepted())
        }
        "os-attach" => attach(&vol, &ctx, &v, &arg).await.map(|_| accepted()),
        "os-detach" => detach(&vol, &ctx, &v, &arg, false).await.map(|_| accepted()),
        "os-force_detach" => detach(&vol, &ctx, &v, &arg, true).await.map(|_| accepted()),
        "os-initialize_connection" => initialize(&vol, &ctx, &v, &arg).await.map(|j| j.into_response()),
        "os-terminate_connection" => terminate(&vol, &ctx, &v, &arg).await.map(|_| accepted()),
        // Cinder answers an unset with 200 and no body (Tempest's schema checks it).
        "os-unset_image_metadata" => {
            image_metadata(&vol, &ctx, &v, name, &arg).await.map(|_| StatusCode::OK.into_response())
        }
        "os-set_image_metadata" | "os-show_image_metadata" => {
            image_metadata(&vol, &ctx, &v, name, &arg).await.map(|j| j.into_response())
        }
        "os-migrate_volume" | "os-migrate_volume_completion" | "os-reimage" | "os-unmanage" => {
            Err(bad(format!("The action {name} is not supported by this cloud (see docs/conformance.md)")))
        }
        other => Err(bad(format!("There is no such action: {other}"))),
    }
}

/// The volume's image metadata (`volume_image_metadata`): set, unset, show.
async fn image_metadata(
    vol: &S,
    ctx: &RequestContext,
    v: &Volume,
    action: &str,
    arg: &Value,
) -> VolResult<Json<Value>> {
    let rule = match action {
        "os-set_image_metadata" => "volume_extension:volume_image_metadata:set",
        "os-unset_image_metadata" => "volume_extension:volume_image_metadata:remove",
        _ => "volume_extension:volume_image_metadata:show",
    };
    enforce(&vol.policy, rule, ctx, Some(&v.project_id))?;
    let mut tx = vol.db.begin().await?;
    match action {
        "os-set_image_metadata" => {
            let md = body::metadata(arg.get("metadata"), "metadata")?
                .ok_or_else(|| bad("Malformed request body: 'metadata' is required"))?;
            IMAGE_META.merge(&mut tx, &v.id, &md).await?;
        }
        "os-unset_image_metadata" => {
            let key = arg
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("Malformed request body: 'key' is required"))?;
            if !IMAGE_META.remove(&mut tx, &v.id, key).await? {
                return Err(VolError::NotFound(format!(
                    "Glance metadata for volume {} with key {key} could not be found.",
                    v.id
                )));
            }
        }
        _ => {}
    }
    tx.commit().await?;
    let md = IMAGE_META.load(vol.db.reader(), &v.id).await?;
    Ok(Json(json!({"metadata": body::map_json(&md)})))
}

async fn extend(vol: &S, ctx: &RequestContext, ver: ApiVersion, v: &Volume, arg: &Value) -> VolResult<()> {
    let new = body::size(arg.as_object().unwrap_or(&Map::new()), "new_size")?
        .ok_or_else(|| bad("Missing required element 'new_size' in request body."))?;
    let in_use = v.status == "in-use";
    enforce(
        &vol.policy,
        if in_use { "volume:extend_attached_volume" } else { "volume:extend" },
        ctx,
        Some(&v.project_id),
    )?;
    if in_use && !ver.at_least(3, 42) {
        return Err(invalid_volume(format!(
            "Volume {} is in-use: extending attached volumes needs microversion 3.42",
            v.id
        )));
    }
    if in_use {
        return Err(invalid_volume(format!(
            "Volume {} is attached: extending attached volumes needs the compute side of this cloud, which is not there yet; detach it first",
            v.id
        )));
    }
    if new <= v.size {
        return Err(invalid_volume(format!(
            "New size for extend must be greater than current size. (current: {}, extended: {new}).",
            v.size
        )));
    }
    let delta = new - v.size;
    let (vid, project, type_id) = (v.id.clone(), v.project_id.clone(), v.volume_type_id.clone());
    let type_name = crate::types::find(vol, &type_id, false).await?.map(|t| t.name).unwrap_or_default();
    vol.db
        .transaction(|tx| {
            let (vol2, vid, project, type_id, type_name) =
                (vol.clone(), vid.clone(), project.clone(), type_id.clone(), type_name.clone());
            Box::pin(async move {
                let d = Deltas {
                    gigabytes: delta,
                    volume_type: Some((type_id, type_name)),
                    per_volume: Some(new),
                    ..Default::default()
                };
                quotas::check(&vol2, tx, &project, &d).await?;
                let cur = store::get_tx(tx, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
                store::transition(
                    tx,
                    &vid,
                    &["available"],
                    "extending",
                    &[
                        ("previous_status", Arg::from(cur.status)),
                        ("reserved_size", Arg::from(delta)),
                        ("task", Arg::from("extend_volume/extend_on_backend")),
                        ("task_args", Arg::from(json!({"new_size": new}).to_string())),
                    ],
                )
                .await
                .map(drop)
            })
        })
        .await?;
    manager::volume_ops::start_extend(vol, &v.id, new);
    Ok(())
}

async fn reset_status(vol: &S, ctx: &RequestContext, v: &Volume, arg: &Value) -> VolResult<()> {
    enforce(&vol.policy, "volume_extension:volume_admin_actions:reset_status", ctx, Some(&v.project_id))?;
    let m = arg.as_object().cloned().unwrap_or_default();
    let status = body::opt_str(&m, "status")?;
    let attach = body::opt_str(&m, "attach_status")?;
    let migration = body::opt_str(&m, "migration_status")?;
    if status.is_none() && attach.is_none() && migration.is_none() {
        return Err(bad("Must specify 'status', 'attach_status' or 'migration_status' for update."));
    }
    if let Some(s) = &status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(bad(format!("Must specify a valid status: {s} is not one")));
        }
    }
    if let Some(a) = &attach {
        if !["attached", "detached"].contains(&a.as_str()) {
            return Err(bad(format!("Must specify a valid attach status: {a} is not attached or detached")));
        }
    }
    let mut cols: Vec<(&str, Arg)> = Vec::new();
    if let Some(s) = status {
        cols.push(("status", Arg::from(s)));
    }
    if let Some(a) = attach {
        cols.push(("attach_status", Arg::from(a)));
    }
    if let Some(mig) = migration {
        cols.push(("migration_status", Arg::from(if mig == "none" { None } else { Some(mig) })));
    }
    let mut tx = vol.db.begin().await?;
    store::set(&mut tx, &v.id, &cols).await?;
    tx.commit().await?;
    tracing::info!(volume = %v.id, by = %ctx.user_id, "volume status reset by an admin");
    Ok(())
}

async fn upload(vol: &S, ctx: &RequestContext, ver: ApiVersion, v: &Volume, arg: &Value) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:volume_actions:upload_image", ctx, Some(&v.project_id))?;
    let m = arg.as_object().cloned().unwrap_or_default();
    let name = body::opt_text(&m, "image_name", 255)?.ok_or_else(|| bad("No image_name was specified in request."))?;
    let force = body::opt_bool(&m, "force")?.unwrap_or(false);
    let disk_format = body::opt_str(&m, "disk_format")?.unwrap_or_else(|| "raw".into());
    if !["raw", "qcow2"].contains(&disk_format.as_str()) {
        return Err(bad(format!("Invalid disk_format {disk_format:?}: volumes upload as raw or qcow2")));
    }
    let container_format = body::opt_str(&m, "container_format")?.unwrap_or_else(|| "bare".into());
    let visibility = if ver.at_least(3, 1) { body::opt_str(&m, "visibility")? } else { None };
    let protected = if ver.at_least(3, 1) { body::opt_bool(&m, "protected")? } else { None };
    let visibility = visibility.unwrap_or_else(|| "private".into());
    if visibility == "public" {
        enforce(&vol.policy, "volume_extension:volume_actions:upload_public", ctx, Some(&v.project_id))?;
    }
    let allowed: &[&str] = if force { &["available", "in-use"] } else { &["available"] };
    if !allowed.contains(&v.status.as_str()) {
        return Err(invalid_volume(format!(
            "Volume {} status must be {}, but current status is: {}.",
            v.id,
            allowed.join(" or "),
            v.status
        )));
    }
    if v.attach_status == "attached" {
        return Err(invalid_volume(format!(
            "Volume {} is attached: upload it once detached (reading an attached volume needs its compute host)",
            v.id
        )));
    }
    // The image carries the volume's image properties (so a volume made from an image
    // and uploaded again keeps them), as Cinder does.
    let mut props = IMAGE_META.load(vol.db.reader(), &v.id).await?;
    for k in ["image_id", "image_name", "checksum", "size", "disk_format", "container_format", "min_disk", "min_ram"] {
        props.remove(k);
    }
    let mut req = json!({
        "name": name,
        "disk_format": disk_format,
        "container_format": container_format,
        "visibility": visibility,
        "protected": protected.unwrap_or(false),
        "min_disk": v.size,
    });
    for (k, val) in &props {
        req[k] = json!(val);
    }
    let r = vol
        .platform
        .internal
        .call(ctx, http::Method::POST, "/image/v2/images", Some(&req), &[])
        .await
        .map_err(VolError::Api)?;
    if r.status.as_u16() != 201 {
        let why = r.body.get("message").and_then(Value::as_str).unwrap_or("").to_string();
        return Err(VolError::BadRequest(format!("The image service refused the new image ({}): {why}", r.status)));
    }
    let image_id = r.body["id"].as_str().unwrap_or_default().to_string();
    let (vid, iid, fmt) = (v.id.clone(), image_id.clone(), disk_format.clone());
    let moved = vol
        .db
        .transaction(|tx| {
            let (vid, iid, fmt) = (vid.clone(), iid.clone(), fmt.clone());
            Box::pin(async move {
                let cur = store::get_tx(tx, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
                store::transition(
                    tx,
                    &vid,
                    &["available", "in-use"],
                    "uploading",
                    &[
                        ("previous_status", Arg::from(cur.status)),
                        ("task", Arg::from("upload_volume/upload")),
                        ("task_args", Arg::from(json!({"image_id": iid, "disk_format": fmt}).to_string())),
                    ],
                )
                .await
                .map(drop)
            })
        })
        .await;
    if let Err(e) = moved {
        let _ = vol
            .platform
            .internal
            .call(
                &RequestContext::internal_admin(),
                http::Method::DELETE,
                &format!("/image/v2/images/{image_id}"),
                None,
                &[],
            )
            .await;
        return Err(e);
    }
    manager::volume_ops::start_upload(vol, &v.id, &image_id, &disk_format);
    let v2 = store::get(vol, &v.id).await?.ok_or_else(|| not_found("Volume", &v.id))?;
    let vtype = crate::types::find(vol, &v2.volume_type_id, false).await?;
    Ok(Json(json!({"os-volume_upload_image": {
        "id": v2.id,
        "updated_at": body::ts(&v2.updated_at),
        "status": v2.status,
        "display_description": v2.description,
        "size": v2.size,
        "volume_type": vtype.map(|t| json!({"id": t.id, "name": t.name, "is_public": t.is_public, "description": t.description,
            "extra_specs": body::map_json(&t.extra_specs), "qos_specs_id": t.qos_specs_id, "deleted": false})),
        "image_id": image_id,
        "container_format": container_format,
        "disk_format": disk_format,
        "image_name": name,
        "visibility": visibility,
        "protected": protected.unwrap_or(false),
    }})))
}

async fn retype(vol: &S, ctx: &RequestContext, v: &Volume, arg: &Value) -> VolResult<()> {
    enforce(&vol.policy, "volume:retype", ctx, Some(&v.project_id))?;
    let m = arg.as_object().cloned().unwrap_or_default();
    let named = body::opt_str(&m, "new_type")?.ok_or_else(|| bad("New volume type must be specified."))?;
    let policy = body::opt_str(&m, "migration_policy")?.unwrap_or_else(|| "never".into());
    if !["never", "on-demand"].contains(&policy.as_str()) {
        return Err(bad(format!("Invalid migration_policy {policy:?}: use never or on-demand")));
    }
    if !["available", "in-use"].contains(&v.status.as_str()) {
        return Err(invalid_volume(format!(
            "Volume status must be available or in-use to retype, but is {}",
            v.status
        )));
    }
    let new = crate::types::resolve(vol, ctx, &v.project_id, Some(&named)).await?;
    if new.id == v.volume_type_id {
        return Err(invalid_volume("Retype requested a volume type that is the volume's type already"));
    }
    // The volume stays where it is: it must already be on a backend the new type accepts.
    let backend = v.backend().unwrap_or_default();
    let report = crate::manager::scheduler::candidates(vol, vol.db.reader())
        .await?
        .into_iter()
        .find(|c| c.backend == backend)
        .map(|c| c.report);
    if let (Some(want), Some(r)) = (new.backend_name(), &report) {
        if r.volume_backend_name != want {
            return Err(invalid_volume(format!(
                "Retype to {} needs the volume on backend {want}, it is on {}: moving volumes between backends (migration_policy on-demand) is not supported by this cloud",
                new.name, r.volume_backend_name
            )));
        }
    }
    if new.multiattach() != v.multiattach && v.attach_status == "attached" {
        return Err(invalid_volume("Changing multiattach needs the volume detached"));
    }
    let (vid, project, size) = (v.id.clone(), v.project_id.clone(), v.size);
    vol.db
        .transaction(|tx| {
            let (vol2, vid, project, new) = (vol.clone(), vid.clone(), project.clone(), new.clone());
            Box::pin(async move {
                // The volume moves into the new type's per-type quota.
                let check = Deltas {
                    volumes: 1,
                    gigabytes: size,
                    volume_type: Some((new.id.clone(), new.name.clone())),
                    ..Default::default()
                };
                crate::quotas::check_type_only(&vol2, tx, &project, &check).await?;
                store::set(
                    tx,
                    &vid,
                    &[("volume_type_id", Arg::from(new.id.clone())), ("multiattach", Arg::from(new.multiattach()))],
                )
                .await
            })
        })
        .await
}

async fn revert(vol: &S, ctx: &RequestContext, ver: ApiVersion, v: &Volume, arg: &Value) -> VolResult<()> {
    crate::types::need(ver, 3, 40)?;
    enforce(&vol.policy, "volume:revert_to_snapshot", ctx, Some(&v.project_id))?;
    let sid =
        arg.get("snapshot_id").and_then(Value::as_str).ok_or_else(|| bad("Missing required element 'snapshot_id'"))?;
    let snaps = crate::snapshots::store::of_volume(vol, &v.id).await?;
    let s = snaps.iter().find(|s| s.id == sid).ok_or_else(|| not_found("Snapshot", sid))?;
    let latest = snaps.iter().max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    if latest.map(|l| l.id.as_str()) != Some(sid) {
        return Err(VolError::InvalidState {
            kind: "snapshot",
            message: format!("Volume {} can only be reverted to its latest snapshot, and {sid} is not", v.id),
        });
    }
    if s.status != "available" {
        return Err(VolError::InvalidState {
            kind: "snapshot",
            message: format!("Snapshot {sid} status must be available"),
        });
    }
    if s.volume_size > v.size {
        return Err(invalid_volume("The snapshot is larger than the volume"));
    }
    let (vid, sid) = (v.id.clone(), sid.to_string());
    vol.db
        .transaction(|tx| {
            let (vid, sid) = (vid.clone(), sid.clone());
            Box::pin(async move {
                store::transition(
                    tx,
                    &vid,
                    &["available"],
                    "reverting",
                    &[
                        ("task", Arg::from("revert_volume/revert_on_backend")),
                        ("task_args", Arg::from(json!({"snapshot_id": sid}).to_string())),
                    ],
                )
                .await?;
                crate::snapshots::store::set_status(tx, &sid, "restoring").await
            })
        })
        .await?;
    manager::volume_ops::start_revert(vol, &v.id, s.id.as_str());
    Ok(())
}

async fn legacy(vol: &S, ctx: &RequestContext, v: &Volume, action: &str, from: &[&str], to: &str) -> VolResult<()> {
    enforce(&vol.policy, &format!("volume_extension:volume_actions:{action}"), ctx, Some(&v.project_id))?;
    let mut from: Vec<&str> = from.to_vec();
    if action == "reserve" && v.multiattach {
        from.push("in-use");
    }
    let mut tx = vol.db.begin().await?;
    store::transition(&mut tx, &v.id, &from, to, &[]).await?;
    tx.commit().await?;
    Ok(())
}

async fn unreserve(vol: &S, ctx: &RequestContext, v: &Volume) -> VolResult<()> {
    enforce(&vol.policy, "volume_extension:volume_actions:unreserve", ctx, Some(&v.project_id))?;
    if v.status != "attaching" {
        return Ok(());
    }
    let mut tx = vol.db.begin().await?;
    attachments::settle_volume(&mut tx, &v.id).await?;
    tx.commit().await?;
    Ok(())
}

async fn attach(vol: &S, ctx: &RequestContext, v: &Volume, arg: &Value) -> VolResult<()> {
    enforce(&vol.policy, "volume_extension:volume_actions:attach", ctx, Some(&v.project_id))?;
    let m = arg.as_object().cloned().unwrap_or_default();
    let instance = body::opt_str(&m, "instance_uuid")?;
    let host = body::opt_str(&m, "host_name")?;
    if instance.is_none() && host.is_none() {
        return Err(bad("Invalid request to attach volume to an invalid target: give instance_uuid or host_name"));
    }
    if let Some(i) = &instance {
        if !body::is_uuid(i) {
            return Err(bad(format!("Invalid request to attach volume to an invalid target: {i} is not a UUID")));
        }
    }
    let mountpoint = body::opt_str(&m, "mountpoint")?;
    let mode = body::opt_str(&m, "mode")?.unwrap_or_else(|| "rw".into());
    if !["rw", "ro"].contains(&mode.as_str()) {
        return Err(bad(
            "Invalid request to attach volume with an invalid mode. Attaching mode should be 'rw' or 'ro'",
        ));
    }
    if v.readonly == Some(true) && mode == "rw" {
        return Err(invalid_volume(format!("Volume {} is read-only; attach it with mode ro", v.id)));
    }
    let from: &[&str] = if v.multiattach {
        &["available", "attaching", "reserved", "in-use"]
    } else {
        &["available", "attaching", "reserved"]
    };
    let vid = v.id.clone();
    let id = body::new_id();
    vol.db
        .transaction(|tx| {
            let (vid, id, instance, host, mountpoint, mode) =
                (vid.clone(), id.clone(), instance.clone(), host.clone(), mountpoint.clone(), mode.clone());
            Box::pin(async move {
                let v =
                    store::transition(tx, &vid, from, "in-use", &[("attach_status", Arg::from("attached"))]).await?;
                let row = attachments::NewAttachment {
                    id: &id,
                    instance: instance.as_deref(),
                    status: "attached",
                    mode: &mode,
                    mountpoint: mountpoint.as_deref(),
                    host: host.as_deref(),
                };
                attachments::insert(tx, &v, row).await
            })
        })
        .await
}

async fn detach(vol: &S, ctx: &RequestContext, v: &Volume, arg: &Value, force: bool) -> VolResult<()> {
    let rule = if force {
        "volume_extension:volume_admin_actions:force_detach"
    } else {
        "volume_extension:volume_actions:detach"
    };
    enforce(&vol.policy, rule, ctx, Some(&v.project_id))?;
    let all = attachments::of_volume(vol.db.reader(), &v.id).await?;
    let wanted = arg.get("attachment_id").and_then(Value::as_str);
    let chosen: Vec<attachments::Attachment> = match wanted {
        Some(a) => all.into_iter().filter(|x| x.id == a).collect(),
        None if all.len() <= 1 || force => all,
        None => {
            return Err(invalid_volume(format!(
                "Volume {} has several attachments: name the attachment_id to detach",
                v.id
            )))
        }
    };
    if let Some(a) = wanted {
        if chosen.is_empty() {
            return Err(VolError::NotFound(format!("VolumeAttachment {a} could not be found.")));
        }
    }
    // Cinder's manager treats a detach of an unattached available volume as done (Tempest's
    // cleanups detach again after a force-detach).
    if !force && wanted.is_none() && chosen.is_empty() && v.status == "available" {
        return Ok(());
    }
    if !force && !["in-use", "detaching", "attaching"].contains(&v.status.as_str()) {
        return Err(invalid_volume(format!(
            "Volume {} status must be in-use or detaching to detach, but is {}",
            v.id, v.status
        )));
    }
    for a in &chosen {
        attachments::remove(vol, v, a).await?;
    }
    if chosen.is_empty() {
        let mut tx = vol.db.begin().await?;
        attachments::settle_volume(&mut tx, &v.id).await?;
        tx.commit().await?;
    }
    if force {
        // An admin's force detach also leaves a volume reset to `error` usable again.
        let mut tx = vol.db.begin().await?;
        let left = attachments::of_volume(&mut *tx, &v.id).await?;
        if left.is_empty() {
            store::set(&mut tx, &v.id, &[("status", Arg::from("available")), ("attach_status", Arg::from("detached"))])
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// A stable id for the connection a legacy `os-initialize_connection` makes from `host`.
fn legacy_attachment(v: &Volume, host: &str) -> String {
    let h = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{}:{host}", v.id).as_bytes());
    format!("legacy-{h}")
}

async fn initialize(vol: &S, ctx: &RequestContext, v: &Volume, arg: &Value) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:volume_actions:initialize_connection", ctx, Some(&v.project_id))?;
    let connector: Connector = match arg.get("connector") {
        Some(c) if c.is_object() => {
            serde_json::from_value(c.clone()).map_err(|e| bad(format!("Invalid connector: {e}")))?
        }
        _ => return Err(bad("Must specify 'connector'")),
    };
    let mode = if v.readonly == Some(true) { "ro" } else { "rw" };
    let info = attachments::connect(vol, v, &legacy_attachment(v, &connector.host), &connector, mode).await?;
    Ok(Json(json!({"connection_info": info})))
}

async fn terminate(vol: &S, ctx: &RequestContext, v: &Volume, arg: &Value) -> VolResult<()> {
    enforce(&vol.policy, "volume_extension:volume_actions:terminate_connection", ctx, Some(&v.project_id))?;
    let host = arg.get("connector").and_then(|c| c.get("host")).and_then(Value::as_str).unwrap_or_default();
    let legacy = attachments::Attachment {
        id: legacy_attachment(v, host),
        volume_id: v.id.clone(),
        connection_info: Some(String::new()),
        ..Default::default()
    };
    attachments::disconnect(vol, v, &legacy).await;
    Ok(())
}
