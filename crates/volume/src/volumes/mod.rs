//! Volumes: `/volumes` (list, detail, summary, create, show, update, delete), their
//! metadata (`/volumes/{id}/metadata`) and actions (`/volumes/{id}/action`, in
//! [`actions`]).
//!
//! A create validates everything it can (sources visible and usable, sizes, type,
//! zone, quota) and writes the row `creating` with the first step of
//! `create_volume` in the same transaction; the operation runs in the background
//! (see [`crate::manager`]) and the client polls the status, as with Cinder.

pub mod actions;
pub mod store;
pub mod view;

use std::collections::BTreeMap;

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

use self::store::Volume;
use self::view::Extras;
use crate::body::{self, bad_value};
use crate::error::{bad, invalid_volume, not_found, VolError, VolResult};
use crate::policy::enforce;
use crate::quotas::{self, Deltas};
use crate::sql::{self, Listing, IMAGE_META, VOLUME_META};
use crate::{both, manager, Vol, S};

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/volumes", get(list).post(create));
    r = both(r, "/volumes/detail", get(list_detail));
    r = both(r, "/volumes/summary", get(summary));
    r = both(r, "/volumes/{id}", get(show).put(update).delete(delete));
    r = both(r, "/volumes/{id}/action", post(actions::action));
    r = both(r, "/volumes/{id}/metadata", get(meta_list).post(meta_create).put(meta_replace));
    r = both(r, "/volumes/{id}/metadata/{key}", get(meta_show).put(meta_update).delete(meta_delete));
    r
}

#[derive(Deserialize)]
pub(crate) struct IdPath {
    pub id: String,
}

#[derive(Deserialize)]
struct KeyPath {
    id: String,
    key: String,
}

const PAGES: PageSpec = PageSpec {
    sort_keys: &[
        ("id", "id"),
        ("name", "name"),
        ("display_name", "name"),
        ("status", "status"),
        ("size", "size"),
        ("availability_zone", "availability_zone"),
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
        ("bootable", "bootable"),
        ("user_id", "user_id"),
        ("project_id", "project_id"),
        ("volume_type_id", "volume_type_id"),
    ],
    default_sort: &[("created_at", SortDir::Desc)],
    default_limit: 1000,
    max_limit: 1000,
};

/// `{'k': 'v'}` (as the CLI sends it) or JSON, as a map.
pub(crate) fn dict_filter(s: &str, what: &str) -> VolResult<BTreeMap<String, String>> {
    let v: Value = serde_json::from_str(s)
        .or_else(|_| serde_json::from_str(&s.replace('\'', "\"")))
        .map_err(|_| bad(format!("Invalid {what} filter {s:?}: expected a dictionary")))?;
    body::metadata(Some(&v), what).map(Option::unwrap_or_default)
}

/// Appends the `created_at`/`updated_at` comparison filters of 3.60 (`gt:2020-...`).
fn time_filter(q: &mut Query, col: &str, value: &str) -> VolResult<()> {
    for part in value.split(',') {
        let (op, t) = part
            .split_once(':')
            .filter(|(o, _)| ["gt", "gte", "lt", "lte", "eq", "neq"].contains(o))
            .unwrap_or(("eq", part));
        let t = stratus_core::time::parse(t).ok_or_else(|| bad(format!("Invalid {col} filter value {t:?}")))?;
        let sqlop = match op {
            "gt" => ">",
            "gte" => ">=",
            "lt" => "<",
            "lte" => "<=",
            "neq" => "<>",
            _ => "=",
        };
        q.push(&format!(" AND {col} {sqlop} ")).bind(stratus_core::time::to_storage(t));
    }
    Ok(())
}

/// The project filter of a listing: the caller's project, or (admins with
/// `all_tenants`) every project or the one named.
pub(crate) fn scope(ctx: &RequestContext, q: &QueryPairs, col: &str, sq: &mut Query) -> VolResult<()> {
    let all = q.bool("all_tenants").map_err(VolError::Api)?.unwrap_or(false) || q.get("all_tenants") == Some("");
    if ctx.is_admin() && all {
        if let Some(p) = q.get("project_id").or(q.get("tenant_id")) {
            sq.push(&format!(" AND {col} = ")).bind(p.to_string());
        }
    } else {
        sq.push(&format!(" AND {col} = ")).bind(ctx.project_id.clone().unwrap_or_default());
    }
    Ok(())
}

async fn query(
    vol: &Vol,
    ctx: &RequestContext,
    ver: ApiVersion,
    q: &QueryPairs,
    listing: &Listing,
) -> VolResult<Vec<Volume>> {
    let mut sq = Query::new("SELECT * FROM volume_volumes WHERE deleted = 0");
    scope(ctx, q, "project_id", &mut sq)?;
    for (k, v) in &q.0 {
        match k.as_str() {
            "name" | "display_name" => {
                sq.push(" AND name = ").bind(v.clone());
            }
            "name~" | "display_name~" if ver.at_least(3, 34) => {
                sq.push(" AND name LIKE ").bind(format!("%{}%", v.replace('%', "")));
            }
            "status" => {
                sq.push(" AND status = ").bind(v.clone());
            }
            "availability_zone" => {
                sq.push(" AND availability_zone = ").bind(v.clone());
            }
            "bootable" => {
                let b =
                    stratus_core::query::parse_bool(v).ok_or_else(|| bad(format!("Invalid bootable filter {v:?}")))?;
                sq.push_bind(" AND bootable = ", b);
            }
            "size" => {
                let n: i64 = v.parse().map_err(|_| bad(format!("Invalid size filter {v:?}")))?;
                sq.push_bind(" AND size = ", n);
            }
            "group_id" => {
                sq.push(" AND group_id = ").bind(v.clone());
            }
            "migration_status" if ctx.is_admin() => {
                sq.push(" AND migration_status = ").bind(v.clone());
            }
            "host" if ctx.is_admin() => {
                sq.push(" AND host = ").bind(v.clone());
            }
            "volume_type" | "volume_type_id" => {
                let t = crate::types::find(vol, v, true).await?;
                sq.push(" AND volume_type_id = ").bind(t.map(|t| t.id).unwrap_or_else(|| v.clone()));
            }
            "metadata" => {
                let want = dict_filter(v, "metadata")?;
                sql::push_meta_filter(&mut sq, VOLUME_META, "id", &want);
            }
            "glance_metadata" | "image_metadata" => {
                let want = dict_filter(v, "glance_metadata")?;
                sql::push_meta_filter(&mut sq, IMAGE_META, "id", &want);
            }
            "created_at" | "updated_at" if ver.at_least(3, 60) => time_filter(&mut sq, k, v)?,
            _ => {}
        }
    }
    listing.finish(&mut sq, vol.db.reader(), "volume_volumes", "id", "volume").await?;
    Ok(sq.fetch_all(vol.db.reader()).await?.iter().map(Volume::from_row).collect())
}

async fn count(vol: &Vol, ctx: &RequestContext, q: &QueryPairs) -> VolResult<i64> {
    let mut sq = Query::new("SELECT COUNT(*) AS n FROM volume_volumes WHERE deleted = 0");
    scope(ctx, q, "project_id", &mut sq)?;
    Ok(sq.fetch_optional(vol.db.reader()).await?.map(|r| sql::i(&r, "n")).unwrap_or(0))
}

async fn listing(
    vol: S,
    ctx: RequestContext,
    ver: ApiVersion,
    uri: Uri,
    q: QueryPairs,
    detail: bool,
) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume:get_all", &ctx, None)?;
    let listing = Listing::parse(&PAGES, &q)?;
    let rows = query(&vol, &ctx, ver, &q, &listing).await?;
    let (rows, links) = listing.links(rows, |v| v.id.clone(), &vol.base, uri.path(), &q);
    let items: Vec<Value> = if detail {
        let x = Extras::load(&vol, &ctx, &rows).await?;
        rows.iter().map(|v| view::detail(&vol, &ctx, ver, v, &x, true)).collect()
    } else {
        rows.iter().map(|v| view::summary(&vol, v)).collect()
    };
    let mut out = json!({"volumes": items});
    if let Some(l) = links {
        out["volumes_links"] = l;
    }
    if ver.at_least(3, 45) && q.bool("with_count").map_err(VolError::Api)?.unwrap_or(false) {
        out["count"] = json!(count(&vol, &ctx, &q).await?);
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

async fn summary(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, q: QueryPairs) -> VolResult<Json<Value>> {
    crate::types::need(ver, 3, 12)?;
    enforce(&vol.policy, "volume:get_all", &ctx, None)?;
    let mut sq = Query::new(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS s FROM volume_volumes WHERE deleted = 0",
    );
    scope(&ctx, &q, "project_id", &mut sq)?;
    let r = sq.fetch_optional(vol.db.reader()).await?;
    let (n, s) = r.map(|r| (sql::i(&r, "n"), sql::i(&r, "s"))).unwrap_or((0, 0));
    let mut out = json!({"volume-summary": {"total_count": n, "total_size": s}});
    if ver.at_least(3, 36) {
        let mut mq = Query::new(
            "SELECT DISTINCT m.key, m.value FROM volume_metadata m JOIN volume_volumes v ON v.id = m.volume_id WHERE v.deleted = 0",
        );
        scope(&ctx, &q, "v.project_id", &mut mq)?;
        let mut meta: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in mq.fetch_all(vol.db.reader()).await? {
            meta.entry(sql::s(&r, "key")).or_default().push(sql::s(&r, "value"));
        }
        out["volume-summary"]["metadata"] = json!(meta);
    }
    Ok(Json(out))
}

/// The detailed view of one volume (re-read).
pub(crate) async fn render(
    vol: &Vol,
    ctx: &RequestContext,
    ver: ApiVersion,
    id: &str,
    extended: bool,
) -> VolResult<Value> {
    let v = store::get(vol, id).await?.ok_or_else(|| not_found("Volume", id))?;
    let x = Extras::load(vol, ctx, std::slice::from_ref(&v)).await?;
    Ok(view::detail(vol, ctx, ver, &v, &x, extended))
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let v = store::visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:get", &ctx, Some(&v.project_id))?;
    Ok(Json(json!({"volume": render(&vol, &ctx, ver, &v.id, true).await?})))
}

/// Keys a create body may have from 3.53 on (Cinder's schema).
const CREATE_KEYS: &[&str] = &[
    "name",
    "description",
    "display_name",
    "display_description",
    "size",
    "availability_zone",
    "source_volid",
    "snapshot_id",
    "backup_id",
    "imageRef",
    "image_id",
    "volume_type",
    "metadata",
    "multiattach",
    "consistencygroup_id",
    "group_id",
];

/// What a new volume is made from, checked.
struct Source {
    /// `task_args.source` of `create_volume`.
    args: Value,
    /// Size it implies (GiB), at least.
    min_size: i64,
    /// Size used when none is given.
    default_size: Option<i64>,
    /// The volume must go to this backend (`host@backend`).
    same_backend: Option<String>,
    /// Its availability zone, when it has one.
    zone: Option<String>,
    /// Its type, when the request names none.
    type_id: Option<String>,
    /// Bootable.
    bootable: bool,
    /// Image metadata to carry.
    image_meta: BTreeMap<String, String>,
    /// Columns recording the source.
    cols: Vec<(&'static str, Arg)>,
}

fn gib_ceil(bytes: u64) -> i64 {
    bytes.div_ceil(stratus_volume_contract::GIB) as i64
}

/// Image properties Cinder keeps as volume image metadata.
fn image_metadata(img: &Value) -> BTreeMap<String, String> {
    let skip = [
        "id",
        "name",
        "status",
        "visibility",
        "protected",
        "owner",
        "tags",
        "created_at",
        "updated_at",
        "file",
        "schema",
        "self",
        "direct_url",
        "locations",
        "os_hidden",
        "virtual_size",
        "os_hash_algo",
        "os_hash_value",
        "stores",
    ];
    let mut out = BTreeMap::new();
    if let Some(m) = img.as_object() {
        for (k, v) in m {
            if skip.contains(&k.as_str()) || v.is_null() {
                continue;
            }
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            out.insert(k.clone(), s);
        }
    }
    out.insert("image_id".into(), img["id"].as_str().unwrap_or_default().to_string());
    if let Some(n) = img["name"].as_str() {
        out.insert("image_name".into(), n.to_string());
    }
    out
}

/// Reads image `id` as the caller (so only images the caller may see are used).
pub(crate) async fn image_record(vol: &Vol, ctx: &RequestContext, id: &str) -> VolResult<Value> {
    let r = vol
        .platform
        .internal
        .call(ctx, http::Method::GET, &format!("/image/v2/images/{id}"), None, &[])
        .await
        .map_err(VolError::Api)?;
    match r.status.as_u16() {
        200 => Ok(r.body),
        404 => Err(not_found("Image", id)),
        s => Err(VolError::Unavailable(format!("the image service answered {s} for image {id}"))),
    }
}

async fn source_of(vol: &Vol, ctx: &RequestContext, m: &Map<String, Value>, ver: ApiVersion) -> VolResult<Source> {
    let snapshot_id = body::opt_str(m, "snapshot_id")?;
    let source_volid = body::opt_str(m, "source_volid")?;
    let backup_id = if ver.at_least(3, 47) { body::opt_str(m, "backup_id")? } else { None };
    let image_id = body::opt_str(m, "imageRef")?.or(body::opt_str(m, "image_id")?);
    let named = [snapshot_id.is_some(), source_volid.is_some(), backup_id.is_some(), image_id.is_some()];
    if named.iter().filter(|x| **x).count() > 1 {
        return Err(bad(
            "Invalid input received: only one of snapshot_id, source_volid, backup_id and imageRef may be given",
        ));
    }
    let mut src = Source {
        args: json!({"type": "blank"}),
        min_size: 1,
        default_size: None,
        same_backend: None,
        zone: None,
        type_id: None,
        bootable: false,
        image_meta: BTreeMap::new(),
        cols: Vec::new(),
    };
    if let Some(sid) = snapshot_id {
        let s = crate::snapshots::store::get(vol, &sid)
            .await?
            .filter(|s| ctx.is_admin() || ctx.project_id.as_deref() == Some(s.project_id.as_str()))
            .ok_or_else(|| not_found("Snapshot", &sid))?;
        if s.status != "available" {
            return Err(VolError::InvalidState {
                kind: "snapshot",
                message: format!("Originating snapshot status must be one of 'available' values, not {}", s.status),
            });
        }
        let v = store::get(vol, &s.volume_id).await?.ok_or_else(|| not_found("Volume", &s.volume_id))?;
        src.args = json!({"type": "snapshot", "snapshot_id": s.id});
        src.min_size = s.volume_size;
        src.default_size = Some(s.volume_size);
        src.same_backend = v.backend();
        src.zone = Some(v.availability_zone.clone());
        src.type_id = Some(v.volume_type_id.clone());
        src.bootable = v.bootable;
        src.image_meta = IMAGE_META.load(vol.db.reader(), &v.id).await?;
        src.cols.push(("snapshot_id", Arg::from(s.id)));
    } else if let Some(vid) = source_volid {
        let v = store::get(vol, &vid)
            .await?
            .filter(|v| ctx.is_admin() || ctx.project_id.as_deref() == Some(v.project_id.as_str()))
            .ok_or_else(|| not_found("Volume", &vid))?;
        if !["available", "in-use"].contains(&v.status.as_str()) {
            return Err(invalid_volume(format!(
                "Unable to clone volumes that are in {} state: the source must be available or in-use",
                v.status
            )));
        }
        if v.attach_status == "attached" {
            return Err(invalid_volume(format!(
                "Volume {vid} is attached: clone it once it is detached (clones of attached volumes need a snapshot by the compute host)"
            )));
        }
        src.args = json!({"type": "volume", "volume_id": v.id});
        src.min_size = v.size;
        src.default_size = Some(v.size);
        src.same_backend = v.backend();
        src.zone = Some(v.availability_zone.clone());
        src.type_id = Some(v.volume_type_id.clone());
        src.bootable = v.bootable;
        src.image_meta = IMAGE_META.load(vol.db.reader(), &v.id).await?;
        src.cols.push(("source_volid", Arg::from(v.id)));
    } else if let Some(bid) = backup_id {
        let b = crate::backups::store::get(vol, &bid)
            .await?
            .filter(|b| ctx.is_admin() || ctx.project_id.as_deref() == Some(b.project_id.as_str()))
            .ok_or_else(|| not_found("Backup", &bid))?;
        if b.status != "available" {
            return Err(VolError::InvalidState {
                kind: "backup",
                message: format!("Backup status must be available, but is {}", b.status),
            });
        }
        src.args = json!({"type": "blank", "backup_id": b.id});
        src.min_size = b.size;
        src.default_size = Some(b.size);
        src.cols.push(("backup_id", Arg::from(b.id)));
    } else if let Some(iid) = image_id {
        enforce(&vol.policy, "volume:create_from_image", ctx, None)?;
        let img = image_record(vol, ctx, &iid).await?;
        if img["status"] != "active" {
            return Err(bad(format!(
                "Image {iid} is not active (status {}).",
                img["status"].as_str().unwrap_or("unknown")
            )));
        }
        let fmt = img["disk_format"].as_str().unwrap_or_default().to_string();
        if !["raw", "qcow2"].contains(&fmt.as_str()) {
            return Err(bad(format!(
                "Image {iid} has disk format {fmt:?}; volumes can be made from raw and qcow2 images"
            )));
        }
        let bytes = img["virtual_size"].as_u64().or(img["size"].as_u64()).unwrap_or(0);
        let min_disk = img["min_disk"].as_i64().unwrap_or(0);
        let need = gib_ceil(bytes).max(min_disk).max(1);
        src.args = json!({"type": "image", "image_id": iid, "disk_format": fmt, "size": img["size"], "direct_url": img["direct_url"]});
        src.min_size = need;
        src.default_size = Some(need);
        src.bootable = true;
        src.image_meta = image_metadata(&img);
        src.cols.push(("image_id", Arg::from(iid)));
    }
    Ok(src)
}

/// Every availability zone a volume service is in (and the configured default).
pub(crate) async fn zones(vol: &Vol) -> VolResult<Vec<String>> {
    let rows =
        Query::new("SELECT DISTINCT availability_zone FROM volume_services WHERE service_binary = 'cinder-volume'")
            .fetch_all(vol.db.reader())
            .await?;
    let mut z: Vec<String> = rows.iter().map(|r| sql::s(r, "availability_zone")).collect();
    if !z.contains(&vol.cfg.default_availability_zone) {
        z.push(vol.cfg.default_availability_zone.clone());
    }
    Ok(z)
}

async fn create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    OsJson(b): OsJson<Value>,
) -> VolResult<(StatusCode, Json<Value>)> {
    enforce(&vol.policy, "volume:create", &ctx, None)?;
    let m = body::obj(&b, "volume")?;
    if ver.at_least(3, 53) {
        if let Some(k) = m.keys().find(|k| !CREATE_KEYS.contains(&k.as_str())) {
            return Err(bad(format!("Invalid input for field/attribute volume. Additional properties are not allowed ('{k}' was unexpected)")));
        }
    }
    let project =
        ctx.project_id.clone().ok_or_else(|| VolError::Forbidden("A project-scoped token is required".into()))?;
    let name = body::opt_text(m, "name", 255)?.or(body::opt_text(m, "display_name", 255)?);
    let description = body::opt_text(m, "description", 255)?.or(body::opt_text(m, "display_description", 255)?);
    let metadata = body::metadata(m.get("metadata"), "metadata")?.unwrap_or_default();
    let src = source_of(&vol, &ctx, m, ver).await?;
    let size = match body::size(m, "size")? {
        Some(s) => s,
        None => src.default_size.ok_or_else(|| bad_value("size", "size is required when the volume has no source"))?,
    };
    if size < src.min_size {
        return Err(bad(format!(
            "Invalid input received: Volume size '{size}'GB cannot be smaller than the source's size '{}'GB. It must be >= its size.",
            src.min_size
        )));
    }
    let named_type = body::opt_str(m, "volume_type")?;
    let vtype = match (&named_type, &src.type_id) {
        (None, Some(t)) => crate::types::find(&vol, t, false).await?.ok_or_else(|| not_found("Volume type", t))?,
        _ => crate::types::resolve(&vol, &ctx, &project, named_type.as_deref()).await?,
    };
    let requested_az = body::opt_str(m, "availability_zone")?;
    if let (Some(az), Some(src_az)) = (&requested_az, &src.zone) {
        if az != src_az {
            return Err(bad(format!(
                "Invalid input received: availability zone {az} differs from the source's zone {src_az}"
            )));
        }
    }
    let az = requested_az.or(src.zone.clone()).unwrap_or_else(|| vol.cfg.default_availability_zone.clone());
    if !zones(&vol).await?.contains(&az) {
        return Err(bad(format!("Invalid input received: Availability zone '{az}' is invalid.")));
    }
    if let Some(allowed) = vtype.zones() {
        if !allowed.contains(&az) {
            return Err(bad(format!(
                "Invalid input received: the volume type {} only allows availability zones {}",
                vtype.name,
                allowed.join(", ")
            )));
        }
    }
    let multiattach = vtype.multiattach() || body::opt_bool(m, "multiattach")?.unwrap_or(false);
    if multiattach {
        enforce(&vol.policy, "volume:multiattach", &ctx, None)?;
    }
    let id = body::new_id();
    let mut args = json!({"source": src.args});
    if let Some(bn) = vtype.backend_name() {
        args["backend_name"] = json!(bn);
    }
    let caps = vtype.capabilities();
    if !caps.is_empty() {
        args["capabilities"] = Value::Object(caps);
    }
    if let Some(sb) = &src.same_backend {
        args["same_backend"] = json!(sb);
    }
    let deltas = Deltas {
        volumes: 1,
        gigabytes: size,
        volume_type: Some((vtype.id.clone(), vtype.name.clone())),
        per_volume: Some(size),
        ..Default::default()
    };
    let now = stratus_core::time::now();
    vol.db
        .transaction(|tx| {
            let (vol2, id, project, args, deltas, now) = (vol.clone(), id.clone(), project.clone(), args.clone(), deltas.clone(), now.clone());
            let (name, description, az, type_id, user) =
                (name.clone(), description.clone(), az.clone(), vtype.id.clone(), ctx.user_id.clone());
            let (metadata, image_meta, cols, bootable) = (metadata.clone(), src.image_meta.clone(), src.cols.clone(), src.bootable);
            Box::pin(async move {
                quotas::check(&vol2, tx, &project, &deltas).await?;
                let mut q = Query::new(
                    "INSERT INTO volume_volumes (id, project_id, user_id, name, description, size, status, availability_zone, volume_type_id, bootable, multiattach, task, task_args, created_at, updated_at",
                );
                for (c, _) in &cols {
                    q.push(", ").push(c);
                }
                q.push(") VALUES (").bind(&id).push(", ").bind(&project).push(", ").bind(&user).push(", ").bind(name);
                q.push(", ").bind(description).push(", ").bind(size).push(", 'creating', ").bind(&az).push(", ");
                q.bind(&type_id).push(", ").bind(bootable).push(", ").bind(multiattach).push(", 'create_volume/schedule', ");
                q.bind(args.to_string()).push(", ").bind(&now).push(", ").bind(&now);
                for (_, v) in &cols {
                    q.push(", ").bind(v.clone());
                }
                q.push(")");
                q.execute(&mut **tx).await?;
                VOLUME_META.merge(tx, &id, &metadata).await?;
                IMAGE_META.merge(tx, &id, &image_meta).await?;
                if let Some(b) = args["source"]["backup_id"].as_str() {
                    crate::backups::store::set_status(tx, b, "restoring").await?;
                }
                Ok::<(), VolError>(())
            })
        })
        .await?;
    manager::volume_ops::start_create(&vol, &id, args);
    Ok((StatusCode::ACCEPTED, Json(json!({"volume": render(&vol, &ctx, ver, &id, false).await?}))))
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let v = store::visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:update", &ctx, Some(&v.project_id))?;
    let m = body::obj(&b, "volume")?;
    let allowed = ["name", "description", "display_name", "display_description", "metadata"];
    if ver.at_least(3, 53) {
        if m.is_empty() {
            return Err(bad(
                "Invalid input for field/attribute volume: it must name at least one of name, description, metadata",
            ));
        }
        if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(format!("Invalid input for field/attribute volume. Additional properties are not allowed ('{k}' was unexpected)")));
        }
    }
    let name = body::opt_text(m, "name", 255)?.or(body::opt_text(m, "display_name", 255)?);
    let description = body::opt_text(m, "description", 255)?.or(body::opt_text(m, "display_description", 255)?);
    let metadata = body::metadata(m.get("metadata"), "metadata")?;
    let mut tx = vol.db.begin().await?;
    let mut cols: Vec<(&str, Arg)> = Vec::new();
    if m.contains_key("name") || m.contains_key("display_name") {
        cols.push(("name", Arg::from(name)));
    }
    if m.contains_key("description") || m.contains_key("display_description") {
        cols.push(("description", Arg::from(description)));
    }
    store::set(&mut tx, &v.id, &cols).await?;
    if let Some(md) = &metadata {
        VOLUME_META.replace(&mut tx, &v.id, md).await?;
    }
    tx.commit().await?;
    Ok(Json(json!({"volume": render(&vol, &ctx, ver, &v.id, false).await?})))
}

/// Statuses a volume may be deleted from without `force`.
const DELETABLE: &[&str] = &["available", "error", "error_restoring", "error_extending", "error_managing"];

async fn delete(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    Path(p): Path<IdPath>,
    q: QueryPairs,
) -> VolResult<StatusCode> {
    let v = store::visible(&vol, &ctx, &p.id).await?;
    let cascade = q.bool("cascade").map_err(VolError::Api)?.unwrap_or(false);
    let force = ver.at_least(3, 23) && q.bool("force").map_err(VolError::Api)?.unwrap_or(false);
    enforce(&vol.policy, if force { "volume:force_delete" } else { "volume:delete" }, &ctx, Some(&v.project_id))?;
    start_delete(&vol, &v, cascade, force).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Checks that volume `v` may be deleted and starts deleting it (also `os-force_delete`).
pub(crate) async fn start_delete(vol: &S, v: &Volume, cascade: bool, force: bool) -> VolResult<()> {
    let vid = v.id.clone();
    vol.db
        .transaction(|tx| {
            let vid = vid.clone();
            Box::pin(async move {
                let v = store::get_tx(tx, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
                let refuse = |why: &str| {
                    invalid_volume(format!(
                        "Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer. ({why})"
                    ))
                };
                if !force {
                    if !DELETABLE.contains(&v.status.as_str()) {
                        return Err(refuse(&format!("volume {vid} is {}", v.status)));
                    }
                    if v.attach_status != "detached" {
                        return Err(refuse(&format!("volume {vid} is attached")));
                    }
                } else if v.status == "deleting" && v.task.is_some() {
                    return Err(refuse(&format!("volume {vid} is already being deleted")));
                }
                let mut sq = Query::new("SELECT id, status FROM volume_snapshots WHERE deleted = 0 AND volume_id = ");
                sq.bind(&vid);
                let snaps = sq.fetch_all(&mut **tx).await?;
                if !snaps.is_empty() && !cascade {
                    return Err(refuse(&format!("volume {vid} has {} snapshot(s); delete them or use cascade", snaps.len())));
                }
                for s in &snaps {
                    let st = sql::s(s, "status");
                    if !["available", "error", "error_deleting"].contains(&st.as_str()) {
                        return Err(refuse(&format!("snapshot {} is {st}", sql::s(s, "id"))));
                    }
                }
                let mut uq = Query::new("UPDATE volume_snapshots SET status = 'deleting' WHERE deleted = 0 AND volume_id = ");
                uq.bind(&vid);
                uq.execute(&mut **tx).await?;
                store::set(
                    tx,
                    &vid,
                    &[
                        ("status", Arg::from("deleting")),
                        ("task", Arg::from("delete_volume/delete_snapshots")),
                        ("task_args", Arg::from("{}")),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await?;
    let _ = v;
    manager::volume_ops::start_delete(vol, &vid);
    Ok(())
}

async fn meta_volume(vol: &Vol, ctx: &RequestContext, id: &str, action: &str) -> VolResult<Volume> {
    let v = store::visible(vol, ctx, id).await?;
    enforce(&vol.policy, action, ctx, Some(&v.project_id))?;
    Ok(v)
}

async fn meta_list(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let v = meta_volume(&vol, &ctx, &p.id, "volume:get_volume_metadata").await?;
    Ok(Json(json!({"metadata": body::map_json(&VOLUME_META.load(vol.db.reader(), &v.id).await?)})))
}

async fn meta_write(
    vol: &Vol,
    id: &str,
    md: &BTreeMap<String, String>,
    replace: bool,
) -> VolResult<BTreeMap<String, String>> {
    let mut tx = vol.db.begin().await?;
    if replace {
        VOLUME_META.replace(&mut tx, id, md).await?;
    } else {
        VOLUME_META.merge(&mut tx, id, md).await?;
    }
    store::set(&mut tx, id, &[]).await?;
    tx.commit().await?;
    VOLUME_META.load(vol.db.reader(), id).await
}

async fn meta_create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let v = meta_volume(&vol, &ctx, &p.id, "volume:create_volume_metadata").await?;
    let md = body::metadata(b.get("metadata"), "metadata")?
        .ok_or_else(|| bad("Missing required element 'metadata' in request body."))?;
    let all = meta_write(&vol, &v.id, &md, false).await?;
    Ok(Json(json!({"metadata": body::map_json(&all)})))
}

async fn meta_replace(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let v = meta_volume(&vol, &ctx, &p.id, "volume:update_volume_metadata").await?;
    let md = body::metadata(b.get("metadata"), "metadata")?
        .ok_or_else(|| bad("Missing required element 'metadata' in request body."))?;
    let all = meta_write(&vol, &v.id, &md, true).await?;
    Ok(Json(json!({"metadata": body::map_json(&all)})))
}

async fn meta_show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<KeyPath>) -> VolResult<Json<Value>> {
    let v = meta_volume(&vol, &ctx, &p.id, "volume:get_volume_metadata").await?;
    let md = VOLUME_META.load(vol.db.reader(), &v.id).await?;
    let val = md
        .get(&p.key)
        .ok_or_else(|| VolError::NotFound(format!("Volume {} has no metadata with key {}.", v.id, p.key)))?;
    Ok(Json(json!({"meta": {p.key.clone(): val}})))
}

async fn meta_update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<KeyPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let v = meta_volume(&vol, &ctx, &p.id, "volume:update_volume_metadata").await?;
    let md = body::metadata(b.get("meta"), "meta")?
        .ok_or_else(|| bad("Missing required element 'meta' in request body."))?;
    if md.len() != 1 || !md.contains_key(&p.key) {
        return Err(bad("Request body and URI mismatch"));
    }
    meta_write(&vol, &v.id, &md, false).await?;
    Ok(Json(json!({"meta": body::map_json(&md)})))
}

async fn meta_delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<KeyPath>) -> VolResult<StatusCode> {
    let v = meta_volume(&vol, &ctx, &p.id, "volume:delete_volume_metadata").await?;
    let mut tx = vol.db.begin().await?;
    if !VOLUME_META.remove(&mut tx, &v.id, &p.key).await? {
        return Err(VolError::NotFound(format!("Volume {} has no metadata with key {}.", v.id, p.key)));
    }
    tx.commit().await?;
    Ok(StatusCode::OK)
}
