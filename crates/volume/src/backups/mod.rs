//! Backups: `/backups` (list, detail, create, show, update, delete), restore
//! (`/backups/{id}/restore`, into an existing volume or a new one) and admin actions.
//!
//! A backup is written by the agent of the volume's backend into that agent's backup
//! store (see `stratus-volume-agent`'s `backup` module): full, or an increment of the
//! volume's latest backup that stores only the chunks that changed.

pub mod store;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::pagination::{PageSpec, SortDir};
use stratus_core::{ApiVersion, OsJson, QueryPairs};
use stratus_db::{Arg, Query};

use self::store::Backup;
use crate::body::{self, ts};
use crate::error::{bad, invalid_volume, not_found, VolError, VolResult};
use crate::policy::{allowed, enforce};
use crate::quotas::{self, Deltas};
use crate::sql::{self, Listing, BACKUP_META, IMAGE_META};
use crate::volumes::store as volumes;
use crate::{both, manager, Vol, S};

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/backups", get(list).post(create));
    r = both(r, "/backups/detail", get(list_detail));
    r = both(r, "/backups/{id}", get(show).put(update).delete(delete));
    r = both(r, "/backups/{id}/restore", post(restore));
    r = both(r, "/backups/{id}/action", post(action));
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

fn view(vol: &Vol, ctx: &RequestContext, ver: ApiVersion, b: &Backup, meta: &Value, dependents: i64) -> Value {
    let mut v = json!({
        "id": b.id,
        "status": b.status,
        "size": b.size,
        "object_count": b.object_count,
        "availability_zone": b.availability_zone,
        "container": b.container,
        "created_at": ts(&b.created_at),
        "updated_at": ts(&b.updated_at),
        "name": b.name,
        "description": b.description,
        "fail_reason": b.fail_reason,
        "volume_id": b.volume_id,
        "links": body::links(&vol.base, &b.project_id, "backups", &b.id),
        "is_incremental": b.is_incremental,
        "has_dependent_backups": dependents > 0,
        "snapshot_id": b.snapshot_id,
        "data_timestamp": ts(&b.data_timestamp),
    });
    if ver.at_least(3, 18) && allowed(&vol.policy, "backup:backup_project_attribute", ctx, Some(&b.project_id)) {
        v["os-backup-project-attr:project_id"] = json!(b.project_id);
    }
    if ver.at_least(3, 43) {
        v["metadata"] = meta.clone();
    }
    if ver.at_least(3, 56) {
        v["user_id"] = json!(b.user_id);
    }
    v
}

fn summary(vol: &Vol, ver: ApiVersion, b: &Backup, meta: &Value) -> Value {
    let mut v = json!({"id": b.id, "name": b.name, "links": body::links(&vol.base, &b.project_id, "backups", &b.id)});
    if ver.at_least(3, 43) {
        v["metadata"] = meta.clone();
    }
    v
}

const PAGES: PageSpec = PageSpec {
    sort_keys: &[
        ("id", "id"),
        ("name", "name"),
        ("status", "status"),
        ("size", "size"),
        ("volume_id", "volume_id"),
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
        ("container", "container"),
    ],
    default_sort: &[("created_at", SortDir::Desc)],
    default_limit: 1000,
    max_limit: 1000,
};

async fn listing(
    vol: S,
    ctx: RequestContext,
    ver: ApiVersion,
    uri: Uri,
    q: QueryPairs,
    detail: bool,
) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "backup:get_all", &ctx, None)?;
    let listing = Listing::parse(&PAGES, &q)?;
    let mut sq = Query::new("SELECT * FROM volume_backups WHERE deleted = 0");
    crate::volumes::scope(&ctx, &q, "project_id", &mut sq)?;
    for (k, col) in [("name", "name"), ("status", "status"), ("volume_id", "volume_id")] {
        if let Some(v) = q.get(k) {
            sq.push(&format!(" AND {col} = ")).bind(v.to_string());
        }
    }
    listing.finish(&mut sq, vol.db.reader(), "volume_backups", "id", "backup").await?;
    let rows: Vec<Backup> = sq.fetch_all(vol.db.reader()).await?.iter().map(Backup::from_row).collect();
    let (rows, links) = listing.links(rows, |b| b.id.clone(), &vol.base, uri.path(), &q);
    let ids: Vec<String> = rows.iter().map(|b| b.id.clone()).collect();
    let mut metas = BACKUP_META.load_many(vol.db.reader(), &ids).await?;
    let mut items = Vec::new();
    for b in &rows {
        let meta = body::map_json(&metas.remove(&b.id).unwrap_or_default());
        items.push(if detail {
            view(&vol, &ctx, ver, b, &meta, store::dependents(&vol, &b.id).await?)
        } else {
            summary(&vol, ver, b, &meta)
        });
    }
    let mut out = json!({"backups": items});
    if let Some(l) = links {
        out["backups_links"] = l;
    }
    if ver.at_least(3, 45) && q.bool("with_count").map_err(VolError::Api)?.unwrap_or(false) {
        let mut cq = Query::new("SELECT COUNT(*) AS n FROM volume_backups WHERE deleted = 0");
        crate::volumes::scope(&ctx, &q, "project_id", &mut cq)?;
        out["count"] = json!(cq.fetch_optional(vol.db.reader()).await?.map(|r| sql::i(&r, "n")).unwrap_or(0));
    }
    Ok(Json(out))
}

async fn list(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, uri: Uri, q: QueryPairs) -> VolResult<Json<Value>> {
    listing(vol, ctx, ver, uri, q, false).await
}

async fn list_detail(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    uri: Uri,
    q: QueryPairs,
) -> VolResult<Json<Value>> {
    listing(vol, ctx, ver, uri, q, true).await
}

async fn visible(vol: &Vol, ctx: &RequestContext, id: &str) -> VolResult<Backup> {
    match store::get(vol, id).await? {
        Some(b) if ctx.is_admin() || ctx.project_id.as_deref() == Some(b.project_id.as_str()) => Ok(b),
        _ => Err(not_found("Backup", id)),
    }
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let b = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "backup:get", &ctx, Some(&b.project_id))?;
    let meta = body::map_json(&BACKUP_META.load(vol.db.reader(), &b.id).await?);
    let deps = store::dependents(&vol, &b.id).await?;
    Ok(Json(json!({"backup": view(&vol, &ctx, ver, &b, &meta, deps)})))
}

/// True when the backend holding volume `v` also keeps backups.
async fn backend_keeps_backups(vol: &Vol, v: &volumes::Volume) -> VolResult<bool> {
    let Some(backend) = v.backend() else { return Ok(false) };
    let c = manager::scheduler::candidates(vol, vol.db.reader()).await?;
    Ok(c.iter().any(|c| c.backend == backend && c.report.backup && c.usable.is_ok()))
}

async fn create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    OsJson(b): OsJson<Value>,
) -> VolResult<(StatusCode, Json<Value>)> {
    enforce(&vol.policy, "backup:create", &ctx, None)?;
    let m = body::obj(&b, "backup")?;
    let vid =
        body::opt_str(m, "volume_id")?.ok_or_else(|| bad("Incorrect request body format: volume_id is required"))?;
    let v = volumes::visible(&vol, &ctx, &vid).await?;
    let name = body::opt_text(m, "name", 255)?;
    let description = body::opt_text(m, "description", 255)?;
    let container =
        body::opt_text(m, "container", 255)?.filter(|c| !c.is_empty()).unwrap_or_else(|| "volumebackups".into());
    if container.contains('/') || container == "." || container == ".." {
        return Err(bad(format!("Invalid container name {container:?}")));
    }
    let incremental = body::opt_bool(m, "incremental")?.unwrap_or(false);
    let force = body::opt_bool(m, "force")?.unwrap_or(false);
    let snapshot_id = body::opt_str(m, "snapshot_id")?;
    let metadata = if ver.at_least(3, 43) {
        body::metadata(m.get("metadata"), "metadata")?.unwrap_or_default()
    } else {
        Default::default()
    };
    if let Some(az) = body::opt_str(m, "availability_zone")? {
        if az != v.availability_zone {
            return Err(bad(format!(
                "Backups of volume {} are kept in its zone {}, not {az}",
                v.id, v.availability_zone
            )));
        }
    }
    let allowed: &[&str] = if force { &["available", "in-use"] } else { &["available"] };
    if snapshot_id.is_none() && !allowed.contains(&v.status.as_str()) {
        return Err(invalid_volume(format!(
            "Volume to be backed up must be available{}, but the current status is \"{}\".",
            if force { " or in-use" } else { "" },
            v.status
        )));
    }
    if snapshot_id.is_none() && v.attach_status == "attached" {
        return Err(invalid_volume(format!(
            "Volume {} is attached: backing up an attached volume needs a snapshot by its compute host, which this cloud does not take yet; detach it or back up one of its snapshots",
            v.id
        )));
    }
    if let Some(sid) = &snapshot_id {
        let s = crate::snapshots::store::get(&vol, sid).await?.ok_or_else(|| not_found("Snapshot", sid))?;
        if s.volume_id != v.id {
            return Err(bad(format!("Snapshot {sid} is not a snapshot of volume {}", v.id)));
        }
        if s.status != "available" {
            return Err(VolError::InvalidState {
                kind: "snapshot",
                message: format!("Snapshot {sid} status must be available"),
            });
        }
    }
    if !backend_keeps_backups(&vol, &v).await? {
        return Err(VolError::Unavailable(format!(
            "Service cinder-backup could not be found: no backup service runs with the backend of volume {}",
            v.id
        )));
    }
    let parent = if incremental {
        let mut q =
            Query::new("SELECT id FROM volume_backups WHERE deleted = 0 AND status = 'available' AND volume_id = ");
        q.bind(&v.id).push(" ORDER BY data_timestamp DESC, created_at DESC LIMIT 1");
        let p = q.fetch_optional(vol.db.reader()).await?.map(|r| sql::s(&r, "id"));
        Some(p.ok_or_else(|| VolError::InvalidState {
            kind: "backup",
            message: "No backups available to do an incremental backup.".into(),
        })?)
    } else {
        None
    };
    let source_info = json!({
        "bootable": v.bootable,
        "image_metadata": body::map_json(&IMAGE_META.load(vol.db.reader(), &v.id).await?),
        "metadata": body::map_json(&crate::sql::VOLUME_META.load(vol.db.reader(), &v.id).await?),
    });
    let id = body::new_id();
    let now = stratus_core::time::now();
    let project = v.project_id.clone();
    vol.db
        .transaction(|tx| {
            let (vol2, id, project, now, vid) = (vol.clone(), id.clone(), project.clone(), now.clone(), v.id.clone());
            let (name, description, container, parent, snapshot_id, metadata, info, user, size, az) = (
                name.clone(),
                description.clone(),
                container.clone(),
                parent.clone(),
                snapshot_id.clone(),
                metadata.clone(),
                source_info.to_string(),
                ctx.user_id.clone(),
                v.size,
                v.availability_zone.clone(),
            );
            Box::pin(async move {
                let d = Deltas { backups: 1, backup_gigabytes: size, ..Default::default() };
                quotas::check(&vol2, tx, &project, &d).await?;
                if let Some(s) = &snapshot_id {
                    let mut q = Query::new("UPDATE volume_snapshots SET status = 'backing-up' WHERE status = 'available' AND id = ");
                    q.bind(s);
                    if q.execute(&mut **tx).await? == 0 {
                        return Err(VolError::InvalidState { kind: "snapshot", message: format!("Snapshot {s} is busy") });
                    }
                } else {
                    let cur = volumes::get_tx(tx, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
                    volumes::transition(
                        tx,
                        &vid,
                        &["available", "in-use"],
                        "backing-up",
                        &[("previous_status", Arg::from(cur.status))],
                    )
                    .await?;
                }
                let mut q = Query::new(
                    "INSERT INTO volume_backups (id, volume_id, snapshot_id, project_id, user_id, name, description, size, status, availability_zone, container, is_incremental, parent_id, data_timestamp, source_info, task, task_args, created_at, updated_at) VALUES (",
                );
                q.bind(&id).push(", ").bind(&vid).push(", ").bind(snapshot_id).push(", ").bind(&project).push(", ").bind(user);
                q.push(", ").bind(name).push(", ").bind(description).push(", ").bind(size).push(", 'creating', ").bind(az);
                q.push(", ").bind(container).push(", ").bind(parent.is_some()).push(", ").bind(parent).push(", ").bind(&now);
                q.push(", ").bind(info).push(", 'create_backup/backup_on_agent', '{}', ").bind(&now).push(", ").bind(&now).push(")");
                q.execute(&mut **tx).await?;
                BACKUP_META.merge(tx, &id, &metadata).await
            })
        })
        .await?;
    manager::backup_ops::start_create(&vol, &id);
    let b = store::get(&vol, &id).await?.ok_or_else(|| not_found("Backup", &id))?;
    let meta = body::map_json(&metadata);
    Ok((StatusCode::ACCEPTED, Json(json!({"backup": summary(&vol, ver, &b, &meta)}))))
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    Path(p): Path<IdPath>,
    OsJson(body_v): OsJson<Value>,
) -> VolResult<Json<Value>> {
    crate::types::need(ver, 3, 9)?;
    let b = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "backup:update", &ctx, Some(&b.project_id))?;
    let m = body::obj(&body_v, "backup")?;
    let mut cols: Vec<(&str, Arg)> = Vec::new();
    if m.contains_key("name") {
        cols.push(("name", Arg::from(body::opt_text(m, "name", 255)?)));
    }
    if m.contains_key("description") {
        cols.push(("description", Arg::from(body::opt_text(m, "description", 255)?)));
    }
    let metadata = if ver.at_least(3, 43) { body::metadata(m.get("metadata"), "metadata")? } else { None };
    let mut tx = vol.db.begin().await?;
    store::set(&mut tx, &b.id, &cols).await?;
    if let Some(md) = &metadata {
        BACKUP_META.replace(&mut tx, &b.id, md).await?;
    }
    tx.commit().await?;
    let b = store::get(&vol, &b.id).await?.ok_or_else(|| not_found("Backup", &p.id))?;
    let meta = body::map_json(&BACKUP_META.load(vol.db.reader(), &b.id).await?);
    Ok(Json(json!({"backup": summary(&vol, ver, &b, &meta)})))
}

async fn delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<StatusCode> {
    let b = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "backup:delete", &ctx, Some(&b.project_id))?;
    start_delete(&vol, &b, false).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn start_delete(vol: &S, b: &Backup, force: bool) -> VolResult<()> {
    if !force && !["available", "error"].contains(&b.status.as_str()) {
        return Err(VolError::InvalidState {
            kind: "backup",
            message: format!("Backup status must be available or error, but {} is {}", b.id, b.status),
        });
    }
    if store::dependents(vol, &b.id).await? > 0 {
        return Err(VolError::InvalidState {
            kind: "backup",
            message: "Incremental backups exist for this backup.".into(),
        });
    }
    let mut tx = vol.db.begin().await?;
    store::set(
        &mut tx,
        &b.id,
        &[
            ("status", Arg::from("deleting")),
            ("task", Arg::from("delete_backup/delete_on_agent")),
            ("task_args", Arg::from("{}")),
        ],
    )
    .await?;
    tx.commit().await?;
    manager::backup_ops::start_delete(vol, &b.id);
    Ok(())
}

async fn restore(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(body_v): OsJson<Value>,
) -> VolResult<(StatusCode, Json<Value>)> {
    let b = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "backup:restore", &ctx, Some(&b.project_id))?;
    let m = body::obj(&body_v, "restore")?;
    if b.status != "available" {
        return Err(VolError::InvalidState {
            kind: "backup",
            message: format!("Backup status must be available, but {} is {}", b.id, b.status),
        });
    }
    let target = body::opt_str(m, "volume_id")?;
    let name = body::opt_text(m, "name", 255)?;
    let (vid, vname) = match target {
        Some(t) => {
            let v = volumes::visible(&vol, &ctx, &t).await?;
            if v.size < b.size {
                return Err(invalid_volume(format!(
                    "volume size {}GB is too small to restore backup of size {}GB.",
                    v.size, b.size
                )));
            }
            if v.attach_status != "detached" {
                return Err(invalid_volume(format!("Volume {} is attached: detach it before restoring into it", v.id)));
            }
            let (vid, bid) = (v.id.clone(), b.id.clone());
            vol.db
                .transaction(|tx| {
                    let (vid, bid) = (vid.clone(), bid.clone());
                    Box::pin(async move {
                        volumes::transition(tx, &vid, &["available"], "restoring-backup", &[]).await?;
                        store::set(
                            tx,
                            &bid,
                            &[
                                ("status", Arg::from("restoring")),
                                ("restore_volume_id", Arg::from(vid.clone())),
                                ("task", Arg::from("restore_backup/restore_on_agent")),
                                ("task_args", Arg::from(json!({"volume_id": vid}).to_string())),
                            ],
                        )
                        .await
                    })
                })
                .await?;
            manager::backup_ops::start_restore(&vol, &b.id, &v.id);
            (v.id, v.name)
        }
        None => {
            let name = name.unwrap_or_else(|| format!("restore_backup_{}", b.id));
            let v = restore_to_new(&vol, &ctx, &b, &name).await?;
            (v, Some(name))
        }
    };
    Ok((StatusCode::ACCEPTED, Json(json!({"restore": {"backup_id": b.id, "volume_id": vid, "volume_name": vname}}))))
}

/// A new volume of the backup's size, made by `create_volume` with the backup as source.
async fn restore_to_new(vol: &S, ctx: &RequestContext, b: &Backup, name: &str) -> VolResult<String> {
    let project = ctx.project_id.clone().unwrap_or_else(|| b.project_id.clone());
    let vtype = crate::types::default_for(vol, &project).await?;
    let az = b.availability_zone.clone().unwrap_or_else(|| vol.cfg.default_availability_zone.clone());
    let id = body::new_id();
    let mut args = json!({"source": {"type": "blank", "backup_id": b.id}});
    if let Some(bn) = vtype.backend_name() {
        args["backend_name"] = json!(bn);
    }
    let caps = vtype.capabilities();
    if !caps.is_empty() {
        args["capabilities"] = Value::Object(caps);
    }
    let now = stratus_core::time::now();
    vol.db
        .transaction(|tx| {
            let (vol2, id, project, args, now, az) = (vol.clone(), id.clone(), project.clone(), args.clone(), now.clone(), az.clone());
            let (name, user, size, bid, tid, tname) =
                (name.to_string(), ctx.user_id.clone(), b.size, b.id.clone(), vtype.id.clone(), vtype.name.clone());
            Box::pin(async move {
                let d = Deltas {
                    volumes: 1,
                    gigabytes: size,
                    volume_type: Some((tid.clone(), tname)),
                    per_volume: Some(size),
                    ..Default::default()
                };
                quotas::check(&vol2, tx, &project, &d).await?;
                let mut q = Query::new(
                    "INSERT INTO volume_volumes (id, project_id, user_id, name, size, status, availability_zone, volume_type_id, backup_id, task, task_args, created_at, updated_at) VALUES (",
                );
                q.bind(&id).push(", ").bind(&project).push(", ").bind(user).push(", ").bind(name).push(", ").bind(size);
                q.push(", 'creating', ").bind(az).push(", ").bind(tid).push(", ").bind(&bid).push(", 'create_volume/schedule', ");
                q.bind(args.to_string()).push(", ").bind(&now).push(", ").bind(&now).push(")");
                q.execute(&mut **tx).await?;
                store::set_status(tx, &bid, "restoring").await
            })
        })
        .await?;
    manager::volume_ops::start_create(vol, &id, args);
    Ok(id)
}

async fn action(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(body_v): OsJson<Value>,
) -> VolResult<StatusCode> {
    let m =
        body_v.as_object().filter(|m| m.len() == 1).ok_or_else(|| bad("An action body names exactly one action"))?;
    let (name, arg) = m.iter().next().ok_or_else(|| bad("An action body names exactly one action"))?;
    let b = visible(&vol, &ctx, &p.id).await?;
    let arg = arg.as_object().cloned().unwrap_or_else(Map::new);
    match name.as_str() {
        "os-reset_status" => {
            enforce(&vol.policy, "volume_extension:backup_admin_actions:reset_status", &ctx, Some(&b.project_id))?;
            let st = body::opt_str(&arg, "status")?.ok_or_else(|| bad("Must specify 'status'"))?;
            if !["available", "error"].contains(&st.as_str()) {
                return Err(bad(format!("Backup status can be reset to available or error, not {st}")));
            }
            let mut tx = vol.db.begin().await?;
            store::set(&mut tx, &b.id, &[("status", Arg::from(st)), ("task", Arg::Null), ("task_args", Arg::Null)])
                .await?;
            tx.commit().await?;
        }
        "os-force_delete" => {
            enforce(&vol.policy, "volume_extension:backup_admin_actions:force_delete", &ctx, Some(&b.project_id))?;
            start_delete(&vol, &b, true).await?;
        }
        other => return Err(bad(format!("There is no such action: {other}"))),
    }
    Ok(StatusCode::ACCEPTED)
}
