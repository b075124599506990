//! Snapshots: `/snapshots` (list, detail, create, show, update, delete), their
//! metadata and actions (`os-reset_status`, `os-force_delete`,
//! `os-update_snapshot_status`).
//!
//! Taking a snapshot runs `create_snapshot` (see [`crate::manager::snapshot_ops`]):
//! the row is `creating` until the volume's backend froze the volume's content.

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

use self::store::Snapshot;
use crate::body::{self, ts};
use crate::error::{bad, invalid_volume, not_found, VolError, VolResult};
use crate::policy::{allowed, enforce};
use crate::quotas::{self, Deltas};
use crate::sql::{self, Listing, SNAPSHOT_META};
use crate::volumes::store as volumes;
use crate::{both, manager, Vol, S};

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/snapshots", get(list).post(create));
    r = both(r, "/snapshots/detail", get(list_detail));
    r = both(r, "/snapshots/{id}", get(show).put(update).delete(delete));
    r = both(r, "/snapshots/{id}/action", post(action));
    r = both(r, "/snapshots/{id}/metadata", get(meta_list).post(meta_create).put(meta_replace));
    r = both(r, "/snapshots/{id}/metadata/{key}", get(meta_show).put(meta_update).delete(meta_delete));
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

#[derive(Deserialize)]
struct KeyPath {
    id: String,
    key: String,
}

fn view(vol: &Vol, ctx: &RequestContext, ver: ApiVersion, s: &Snapshot, meta: &Value, extended: bool) -> Value {
    let mut v = json!({
        "id": s.id,
        "created_at": ts(&s.created_at),
        "updated_at": ts(&s.updated_at),
        "name": s.name,
        "description": s.description,
        "volume_id": s.volume_id,
        "status": s.status,
        "size": s.volume_size,
        "metadata": meta,
    });
    if ver.at_least(3, 14) {
        v["group_snapshot_id"] = json!(s.group_snapshot_id);
    }
    if ver.at_least(3, 41) {
        v["user_id"] = json!(s.user_id);
    }
    if ver.at_least(3, 65) {
        v["consumes_quota"] = json!(s.use_quota);
    }
    if extended && allowed(&vol.policy, "volume_extension:extended_snapshot_attributes", ctx, Some(&s.project_id)) {
        v["os-extended-snapshot-attributes:progress"] = json!(s.progress.clone().unwrap_or_else(|| "0%".into()));
        v["os-extended-snapshot-attributes:project_id"] = json!(s.project_id);
    }
    v
}

const PAGES: PageSpec = PageSpec {
    sort_keys: &[
        ("id", "id"),
        ("name", "name"),
        ("display_name", "name"),
        ("status", "status"),
        ("size", "volume_size"),
        ("volume_id", "volume_id"),
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
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
    enforce(&vol.policy, "volume:get_all_snapshots", &ctx, None)?;
    let listing = Listing::parse(&PAGES, &q)?;
    let mut sq = Query::new("SELECT * FROM volume_snapshots WHERE deleted = 0");
    crate::volumes::scope(&ctx, &q, "project_id", &mut sq)?;
    for (k, v) in &q.0 {
        match k.as_str() {
            "name" | "display_name" => {
                sq.push(" AND name = ").bind(v.clone());
            }
            "status" => {
                sq.push(" AND status = ").bind(v.clone());
            }
            "volume_id" => {
                sq.push(" AND volume_id = ").bind(v.clone());
            }
            "user_id" if ver.at_least(3, 41) => {
                sq.push(" AND user_id = ").bind(v.clone());
            }
            "metadata" if ver.at_least(3, 22) => {
                let want = crate::volumes::dict_filter(v, "metadata")?;
                sql::push_meta_filter(&mut sq, SNAPSHOT_META, "id", &want);
            }
            _ => {}
        }
    }
    listing.finish(&mut sq, vol.db.reader(), "volume_snapshots", "id", "snapshot").await?;
    let rows: Vec<Snapshot> = sq.fetch_all(vol.db.reader()).await?.iter().map(Snapshot::from_row).collect();
    let (rows, links) = listing.links(rows, |s| s.id.clone(), &vol.base, uri.path(), &q);
    let ids: Vec<String> = rows.iter().map(|s| s.id.clone()).collect();
    let mut metas = SNAPSHOT_META.load_many(vol.db.reader(), &ids).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|s| view(&vol, &ctx, ver, s, &body::map_json(&metas.remove(&s.id).unwrap_or_default()), detail))
        .collect();
    let mut out = json!({"snapshots": items});
    if let Some(l) = links {
        out["snapshots_links"] = l;
    }
    if ver.at_least(3, 45) && q.bool("with_count").map_err(VolError::Api)?.unwrap_or(false) {
        let mut cq = Query::new("SELECT COUNT(*) AS n FROM volume_snapshots WHERE deleted = 0");
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

async fn visible(vol: &Vol, ctx: &RequestContext, id: &str) -> VolResult<Snapshot> {
    match store::get(vol, id).await? {
        Some(s) if ctx.is_admin() || ctx.project_id.as_deref() == Some(s.project_id.as_str()) => Ok(s),
        _ => Err(not_found("Snapshot", id)),
    }
}

async fn render(vol: &Vol, ctx: &RequestContext, ver: ApiVersion, id: &str, extended: bool) -> VolResult<Value> {
    let s = store::get(vol, id).await?.ok_or_else(|| not_found("Snapshot", id))?;
    let meta = body::map_json(&SNAPSHOT_META.load(vol.db.reader(), id).await?);
    Ok(view(vol, ctx, ver, &s, &meta, extended))
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let s = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:get_snapshot", &ctx, Some(&s.project_id))?;
    Ok(Json(json!({"snapshot": render(&vol, &ctx, ver, &s.id, true).await?})))
}

async fn create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    OsJson(b): OsJson<Value>,
) -> VolResult<(StatusCode, Json<Value>)> {
    let m = body::obj(&b, "snapshot")?;
    // An explicit `"volume_id": null` names no volume: 404, as Cinder (Tempest checks it);
    // a missing key is a malformed body.
    if m.get("volume_id").is_some_and(Value::is_null) {
        return Err(VolError::NotFound("Volume None could not be found.".into()));
    }
    let vid =
        body::opt_str(m, "volume_id")?.ok_or_else(|| bad("Missing required element 'volume_id' in request body."))?;
    let v = volumes::visible(&vol, &ctx, &vid).await?;
    enforce(&vol.policy, "volume:create_snapshot", &ctx, Some(&v.project_id))?;
    let name = body::opt_text(m, "name", 255)?.or(body::opt_text(m, "display_name", 255)?);
    let description = body::opt_text(m, "description", 255)?.or(body::opt_text(m, "display_description", 255)?);
    let force = body::opt_bool(m, "force")?.unwrap_or(false);
    let metadata = body::metadata(m.get("metadata"), "metadata")?.unwrap_or_default();
    let in_use_ok = force || ver.at_least(3, 66);
    let allowed: &[&str] = if in_use_ok { &["available", "in-use"] } else { &["available"] };
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
            "Volume {} is attached: snapshots of attached volumes need the compute host's help, which this cloud does not give yet; detach it first",
            v.id
        )));
    }
    let project = v.project_id.clone();
    let vtype = crate::types::find(&vol, &v.volume_type_id, false).await?;
    let deltas =
        Deltas { snapshots: 1, gigabytes: v.size, volume_type: vtype.map(|t| (t.id, t.name)), ..Default::default() };
    let id = body::new_id();
    let now = stratus_core::time::now();
    vol.db
        .transaction(|tx| {
            let (vol2, id, project, deltas, now, vid) = (vol.clone(), id.clone(), project.clone(), deltas.clone(), now.clone(), v.id.clone());
            let (name, description, metadata, user, size) = (name.clone(), description.clone(), metadata.clone(), ctx.user_id.clone(), v.size);
            Box::pin(async move {
                quotas::check(&vol2, tx, &project, &deltas).await?;
                // The volume must still be usable now (it may have changed since it was read).
                let cur = volumes::get_tx(tx, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
                if !["available", "in-use"].contains(&cur.status.as_str()) {
                    return Err(invalid_volume(format!("Volume {vid} is {} now", cur.status)));
                }
                let mut q = Query::new(
                    "INSERT INTO volume_snapshots (id, volume_id, project_id, user_id, name, description, volume_size, status, progress, task, task_args, created_at, updated_at) VALUES (",
                );
                q.bind(&id).push(", ").bind(&vid).push(", ").bind(&project).push(", ").bind(user).push(", ").bind(name);
                q.push(", ").bind(description).push(", ").bind(size).push(", 'creating', '0%', 'create_snapshot/create_on_backend', '{}', ");
                q.bind(&now).push(", ").bind(&now).push(")");
                q.execute(&mut **tx).await?;
                SNAPSHOT_META.merge(tx, &id, &metadata).await
            })
        })
        .await?;
    manager::snapshot_ops::start_create(&vol, &id);
    Ok((StatusCode::ACCEPTED, Json(json!({"snapshot": render(&vol, &ctx, ver, &id, false).await?}))))
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let s = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:update_snapshot", &ctx, Some(&s.project_id))?;
    let m = body::obj(&b, "snapshot")?;
    if m.is_empty() {
        return Err(bad("Invalid input: a snapshot update names at least one of name, description"));
    }
    let mut cols: Vec<(&str, Arg)> = Vec::new();
    if m.contains_key("name") || m.contains_key("display_name") {
        cols.push(("name", Arg::from(body::opt_text(m, "name", 255)?.or(body::opt_text(m, "display_name", 255)?))));
    }
    if m.contains_key("description") || m.contains_key("display_description") {
        cols.push((
            "description",
            Arg::from(body::opt_text(m, "description", 255)?.or(body::opt_text(m, "display_description", 255)?)),
        ));
    }
    let mut tx = vol.db.begin().await?;
    store::set(&mut tx, &s.id, &cols).await?;
    tx.commit().await?;
    Ok(Json(json!({"snapshot": render(&vol, &ctx, ver, &s.id, false).await?})))
}

async fn delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<StatusCode> {
    let s = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:delete_snapshot", &ctx, Some(&s.project_id))?;
    start_delete(&vol, &s, false).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn start_delete(vol: &S, s: &Snapshot, force: bool) -> VolResult<()> {
    let sid = s.id.clone();
    vol.db
        .transaction(|tx| {
            let sid = sid.clone();
            Box::pin(async move {
                let mut q = Query::new("UPDATE volume_snapshots SET status = 'deleting', task = 'delete_snapshot/delete_on_backend', task_args = '{}', updated_at = ");
                q.bind(stratus_core::time::now()).push(" WHERE deleted = 0 AND id = ").bind(&sid);
                if !force {
                    q.push(" AND ").push_in("status", ["available", "error", "error_deleting"].map(String::from));
                }
                if q.execute(&mut **tx).await? == 0 {
                    let mut r = Query::new("SELECT status FROM volume_snapshots WHERE id = ");
                    r.bind(&sid);
                    let st = r.fetch_optional(&mut **tx).await?.map(|r| sql::s(&r, "status")).unwrap_or_default();
                    return Err(VolError::InvalidState {
                        kind: "snapshot",
                        message: format!("Snapshot status must be available or error and must not be part of a group, but {sid} is {st}"),
                    });
                }
                // A snapshot volumes are being made from stays until they exist.
                let mut q = Query::new("SELECT COUNT(*) AS n FROM volume_volumes WHERE deleted = 0 AND status = 'creating' AND snapshot_id = ");
                q.bind(&sid);
                if q.fetch_optional(&mut **tx).await?.map(|r| sql::i(&r, "n")).unwrap_or(0) > 0 {
                    return Err(VolError::InvalidState {
                        kind: "snapshot",
                        message: format!("Snapshot {sid} is busy: a volume is being created from it"),
                    });
                }
                Ok(())
            })
        })
        .await?;
    manager::snapshot_ops::start_delete(vol, &s.id);
    Ok(())
}

async fn action(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<StatusCode> {
    let m = b.as_object().filter(|m| m.len() == 1).ok_or_else(|| bad("An action body names exactly one action"))?;
    let (name, arg) = m.iter().next().ok_or_else(|| bad("An action body names exactly one action"))?;
    let s = visible(&vol, &ctx, &p.id).await?;
    let arg = arg.as_object().cloned().unwrap_or_else(Map::new);
    match name.as_str() {
        "os-reset_status" => {
            enforce(&vol.policy, "volume_extension:snapshot_admin_actions:reset_status", &ctx, Some(&s.project_id))?;
            let st = body::opt_str(&arg, "status")?.ok_or_else(|| bad("Must specify 'status'"))?;
            if ![
                "creating",
                "available",
                "deleting",
                "error",
                "error_deleting",
                "backing-up",
                "restoring",
                "unmanaging",
            ]
            .contains(&st.as_str())
            {
                return Err(bad(format!("Must specify a valid status: {st} is not one")));
            }
            let mut tx = vol.db.begin().await?;
            store::set_status(&mut tx, &s.id, &st).await?;
            tx.commit().await?;
        }
        "os-force_delete" => {
            enforce(&vol.policy, "volume_extension:snapshot_admin_actions:force_delete", &ctx, Some(&s.project_id))?;
            start_delete(&vol, &s, true).await?;
        }
        "os-update_snapshot_status" => {
            enforce(
                &vol.policy,
                "snapshot_extension:snapshot_actions:update_snapshot_status",
                &ctx,
                Some(&s.project_id),
            )?;
            let st = body::opt_str(&arg, "status")?.ok_or_else(|| bad("Must specify 'status'"))?;
            let progress = body::opt_str(&arg, "progress")?;
            let allowed = match s.status.as_str() {
                "creating" => &["available", "error"][..],
                "deleting" => &["error_deleting"][..],
                _ => &[][..],
            };
            if !allowed.contains(&st.as_str()) {
                return Err(VolError::InvalidState {
                    kind: "snapshot",
                    message: format!(
                        "Provided snapshot status {st} not allowed for snapshot with status {}.",
                        s.status
                    ),
                });
            }
            let mut tx = vol.db.begin().await?;
            let mut cols = vec![("status", Arg::from(st))];
            if let Some(pr) = progress {
                cols.push(("progress", Arg::from(pr)));
            }
            store::set(&mut tx, &s.id, &cols).await?;
            tx.commit().await?;
        }
        other => return Err(bad(format!("There is no such action: {other}"))),
    }
    Ok(StatusCode::ACCEPTED)
}

async fn meta_snapshot(vol: &Vol, ctx: &RequestContext, id: &str, action: &str) -> VolResult<Snapshot> {
    let s = visible(vol, ctx, id).await?;
    enforce(&vol.policy, action, ctx, Some(&s.project_id))?;
    Ok(s)
}

async fn meta_list(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let s = meta_snapshot(&vol, &ctx, &p.id, "volume:get_snapshot_metadata").await?;
    Ok(Json(json!({"metadata": body::map_json(&SNAPSHOT_META.load(vol.db.reader(), &s.id).await?)})))
}

async fn meta_write(vol: &Vol, id: &str, b: &Value, key: &str, replace: bool) -> VolResult<Value> {
    let md = body::metadata(b.get(key), key)?
        .ok_or_else(|| bad(format!("Missing required element '{key}' in request body.")))?;
    let mut tx = vol.db.begin().await?;
    if replace {
        SNAPSHOT_META.replace(&mut tx, id, &md).await?;
    } else {
        SNAPSHOT_META.merge(&mut tx, id, &md).await?;
    }
    tx.commit().await?;
    Ok(body::map_json(&SNAPSHOT_META.load(vol.db.reader(), id).await?))
}

async fn meta_create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let s = meta_snapshot(&vol, &ctx, &p.id, "volume:update_snapshot_metadata").await?;
    Ok(Json(json!({"metadata": meta_write(&vol, &s.id, &b, "metadata", false).await?})))
}

async fn meta_replace(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let s = meta_snapshot(&vol, &ctx, &p.id, "volume:update_snapshot_metadata").await?;
    Ok(Json(json!({"metadata": meta_write(&vol, &s.id, &b, "metadata", true).await?})))
}

async fn meta_show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<KeyPath>) -> VolResult<Json<Value>> {
    let s = meta_snapshot(&vol, &ctx, &p.id, "volume:get_snapshot_metadata").await?;
    let md = SNAPSHOT_META.load(vol.db.reader(), &s.id).await?;
    let v = md
        .get(&p.key)
        .ok_or_else(|| VolError::NotFound(format!("Snapshot {} has no metadata with key {}.", s.id, p.key)))?;
    Ok(Json(json!({"meta": {p.key.clone(): v}})))
}

async fn meta_update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<KeyPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let s = meta_snapshot(&vol, &ctx, &p.id, "volume:update_snapshot_metadata").await?;
    let md = body::metadata(b.get("meta"), "meta")?
        .ok_or_else(|| bad("Missing required element 'meta' in request body."))?;
    if md.len() != 1 || !md.contains_key(&p.key) {
        return Err(bad("Request body and URI mismatch"));
    }
    meta_write(&vol, &s.id, &json!({"meta": b["meta"]}), "meta", false).await?;
    Ok(Json(json!({"meta": body::map_json(&md)})))
}

async fn meta_delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<KeyPath>) -> VolResult<StatusCode> {
    let s = meta_snapshot(&vol, &ctx, &p.id, "volume:delete_snapshot_metadata").await?;
    let mut tx = vol.db.begin().await?;
    if !SNAPSHOT_META.remove(&mut tx, &s.id, &p.key).await? {
        return Err(VolError::NotFound(format!("Snapshot {} has no metadata with key {}.", s.id, p.key)));
    }
    tx.commit().await?;
    Ok(StatusCode::OK)
}
