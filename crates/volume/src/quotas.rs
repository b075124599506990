//! Quotas (`/os-quota-sets`, `/os-quota-class-sets`) and absolute limits (`/limits`).
//!
//! Usage is counted from the resource rows themselves, inside the transaction that
//! creates a resource ([`check`]), so there is no separate usage table to drift: a
//! crash cannot leak a reservation, and two creates racing for the last unit are
//! serialized by the database (one writer on SQLite, SERIALIZABLE on PostgreSQL).
//! A resource counts from the moment its row exists (also while `creating` and in
//! `error`, as in Cinder) until it is deleted; an extension in progress counts its new
//! size (`reserved_size`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{OsJson, QueryPairs};
use stratus_db::{Query, Tx};

use crate::error::{bad, VolError, VolResult};
use crate::policy::enforce;
use crate::sql;
use crate::{both, Vol, S};

/// The resources every project has a limit for, in Cinder's order.
const RESOURCES: &[&str] =
    &["volumes", "snapshots", "gigabytes", "backups", "backup_gigabytes", "groups", "per_volume_gigabytes"];

/// Per-type resources (`volumes_<type name>`...).
const PER_TYPE: &[&str] = &["volumes", "gigabytes", "snapshots"];

fn default_of(vol: &Vol, resource: &str) -> i64 {
    let d = &vol.cfg.quotas;
    match resource {
        "volumes" => d.volumes,
        "snapshots" => d.snapshots,
        "gigabytes" => d.gigabytes,
        "backups" => d.backups,
        "backup_gigabytes" => d.backup_gigabytes,
        "groups" => d.groups,
        "per_volume_gigabytes" => d.per_volume_gigabytes,
        _ => -1,
    }
}

/// Names of the volume types (for per-type resources).
async fn type_names<'e, E>(ex: E) -> VolResult<Vec<(String, String)>>
where
    E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
{
    let rows = Query::new("SELECT id, name FROM volume_types WHERE deleted = 0 ORDER BY name").fetch_all(ex).await?;
    Ok(rows.iter().map(|r| (sql::s(r, "id"), sql::s(r, "name"))).collect())
}

/// Every resource name, per-type ones included.
async fn all_resources(vol: &Vol) -> VolResult<Vec<String>> {
    let mut out: Vec<String> = RESOURCES.iter().map(|s| s.to_string()).collect();
    for (_, name) in type_names(vol.db.reader()).await? {
        for r in PER_TYPE {
            out.push(format!("{r}_{name}"));
        }
    }
    Ok(out)
}

/// The class defaults (`default` quota class over the configuration).
async fn class_limits<'e, E>(vol: &Vol, ex: E, class: &str) -> VolResult<BTreeMap<String, i64>>
where
    E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
{
    let mut q = Query::new("SELECT resource, hard_limit FROM volume_quota_classes WHERE class_name = ");
    q.bind(class);
    let mut out: BTreeMap<String, i64> = RESOURCES.iter().map(|r| (r.to_string(), default_of(vol, r))).collect();
    for r in q.fetch_all(ex).await? {
        out.insert(sql::s(&r, "resource"), sql::i(&r, "hard_limit"));
    }
    Ok(out)
}

/// The limit of `resource` for `project_id` (project override, else class default,
/// else configuration; per-type resources default to unlimited).
async fn limit(vol: &Vol, tx: &mut Tx, project_id: &str, resource: &str) -> VolResult<i64> {
    let mut q = Query::new("SELECT hard_limit FROM volume_quotas WHERE project_id = ");
    q.bind(project_id).push(" AND resource = ").bind(resource);
    if let Some(r) = q.fetch_optional(&mut **tx).await? {
        return Ok(sql::i(&r, "hard_limit"));
    }
    let mut q = Query::new("SELECT hard_limit FROM volume_quota_classes WHERE class_name = 'default' AND resource = ");
    q.bind(resource);
    if let Some(r) = q.fetch_optional(&mut **tx).await? {
        return Ok(sql::i(&r, "hard_limit"));
    }
    Ok(default_of(vol, resource))
}

async fn scalar<'e, E>(ex: E, q: Query) -> VolResult<i64>
where
    E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
{
    Ok(q.fetch_optional(ex).await?.map(|r| sql::i(&r, "n")).unwrap_or(0))
}

/// What `project_id` uses of `resource` now (`type_id` for the per-type ones).
async fn usage_of(tx: &mut Tx, project_id: &str, resource: &str, type_id: Option<&str>) -> VolResult<i64> {
    let vol_filter = |q: &mut Query| {
        q.push(" WHERE project_id = ").bind(project_id.to_string()).push(" AND deleted = 0 AND use_quota = 1");
        if let Some(t) = type_id {
            q.push(" AND volume_type_id = ").bind(t.to_string());
        }
    };
    let snap_filter = |q: &mut Query| {
        q.push(" WHERE s.project_id = ").bind(project_id.to_string()).push(" AND s.deleted = 0 AND s.use_quota = 1");
        if let Some(t) = type_id {
            q.push(" AND v.volume_type_id = ").bind(t.to_string());
        }
    };
    let snaps = "FROM volume_snapshots s JOIN volume_volumes v ON v.id = s.volume_id";
    Ok(match resource {
        "volumes" => {
            let mut q = Query::new("SELECT COUNT(*) AS n FROM volume_volumes");
            vol_filter(&mut q);
            scalar(&mut **tx, q).await?
        }
        "gigabytes" => {
            let mut q =
                Query::new("SELECT CAST(COALESCE(SUM(size + reserved_size), 0) AS BIGINT) AS n FROM volume_volumes");
            vol_filter(&mut q);
            let v = scalar(&mut **tx, q).await?;
            let mut q = Query::new(format!("SELECT CAST(COALESCE(SUM(s.volume_size), 0) AS BIGINT) AS n {snaps}"));
            snap_filter(&mut q);
            v + scalar(&mut **tx, q).await?
        }
        "snapshots" => {
            let mut q = Query::new(format!("SELECT COUNT(*) AS n {snaps}"));
            snap_filter(&mut q);
            scalar(&mut **tx, q).await?
        }
        "backups" | "backup_gigabytes" => {
            let what = if resource == "backups" { "COUNT(*)" } else { "CAST(COALESCE(SUM(size), 0) AS BIGINT)" };
            let mut q = Query::new(format!("SELECT {what} AS n FROM volume_backups WHERE project_id = "));
            q.bind(project_id).push(" AND deleted = 0");
            scalar(&mut **tx, q).await?
        }
        _ => 0,
    })
}

/// A change in use a create (or extend) asks for.
#[derive(Debug, Clone, Default)]
pub struct Deltas {
    /// Volumes added.
    pub volumes: i64,
    /// GiB added (volumes and snapshots).
    pub gigabytes: i64,
    /// Snapshots added.
    pub snapshots: i64,
    /// Backups added.
    pub backups: i64,
    /// Backup GiB added.
    pub backup_gigabytes: i64,
    /// The volume type the volumes/snapshots are of (id, name).
    pub volume_type: Option<(String, String)>,
    /// Size of the largest single volume asked for.
    pub per_volume: Option<i64>,
}

/// Refuses (413) when `deltas` would take `project_id` over a limit. Run inside the
/// transaction that writes the new rows.
pub async fn check(vol: &Vol, tx: &mut Tx, project_id: &str, d: &Deltas) -> VolResult<()> {
    if let Some(size) = d.per_volume {
        let max = limit(vol, tx, project_id, "per_volume_gigabytes").await?;
        if max >= 0 && size > max {
            return Err(VolError::OverQuota(format!(
                "Requested volume size {size}G is larger than maximum allowed limit {max}G."
            )));
        }
    }
    let mut checks: Vec<(String, i64, Option<String>)> = Vec::new();
    for (res, n) in [
        ("volumes", d.volumes),
        ("gigabytes", d.gigabytes),
        ("snapshots", d.snapshots),
        ("backups", d.backups),
        ("backup_gigabytes", d.backup_gigabytes),
    ] {
        if n > 0 {
            checks.push((res.to_string(), n, None));
            if let Some((tid, tname)) = &d.volume_type {
                if PER_TYPE.contains(&res) {
                    checks.push((format!("{res}_{tname}"), n, Some(tid.clone())));
                }
            }
        }
    }
    for (res, n, type_id) in checks {
        let max = limit(vol, tx, project_id, &res).await?;
        if max < 0 {
            continue;
        }
        let base = res.split('_').next().unwrap_or(&res);
        let base = if res.starts_with("backup_gigabytes") { "backup_gigabytes" } else { base };
        let used = usage_of(tx, project_id, base, type_id.as_deref()).await?;
        if used + n > max {
            let msg = if base.ends_with("gigabytes") {
                format!(
                    "Requested volume or snapshot exceeds allowed {res} quota. Requested {n}G, quota is {max}G and {used}G has been consumed."
                )
            } else {
                format!("Maximum number of {base} allowed ({max}) exceeded for quota '{res}'.")
            };
            return Err(VolError::OverQuota(msg));
        }
    }
    Ok(())
}

/// Like [`check`] for the per-type resources only (a volume changing type is already
/// counted in the totals).
pub async fn check_type_only(vol: &Vol, tx: &mut Tx, project_id: &str, d: &Deltas) -> VolResult<()> {
    let Some((tid, tname)) = &d.volume_type else { return Ok(()) };
    for (res, n) in [("volumes", d.volumes), ("gigabytes", d.gigabytes)] {
        let name = format!("{res}_{tname}");
        let max = limit(vol, tx, project_id, &name).await?;
        if max < 0 || n == 0 {
            continue;
        }
        let used = usage_of(tx, project_id, res, Some(tid)).await?;
        if used + n > max {
            return Err(VolError::OverQuota(format!(
                "Requested volume or snapshot exceeds allowed {name} quota. Requested {n}, quota is {max} and {used} has been consumed."
            )));
        }
    }
    Ok(())
}

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/os-quota-sets/{id}", get(show).put(update).delete(reset));
    r = both(r, "/os-quota-sets/{id}/defaults", get(defaults));
    r = both(r, "/os-quota-class-sets/{id}", get(class_show).put(class_update));
    r = both(r, "/limits", get(limits));
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

/// Every limit of `project_id`, per-type ones included.
async fn limits_of(vol: &Vol, tx: &mut Tx, project_id: &str) -> VolResult<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for r in all_resources(vol).await? {
        let l = limit(vol, tx, project_id, &r).await?;
        out.insert(r, l);
    }
    Ok(out)
}

async fn usage_all(vol: &Vol, tx: &mut Tx, project_id: &str) -> VolResult<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for r in RESOURCES {
        out.insert(r.to_string(), usage_of(tx, project_id, r, None).await?);
    }
    for (id, name) in type_names(&mut **tx).await? {
        for r in PER_TYPE {
            out.insert(format!("{r}_{name}"), usage_of(tx, project_id, r, Some(&id)).await?);
        }
    }
    let _ = vol;
    Ok(out)
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>, q: QueryPairs) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:quotas:show", &ctx, Some(&p.id))?;
    let usage = q.bool("usage").map_err(VolError::Api)?.unwrap_or(false);
    let mut tx = vol.db.begin().await?;
    let limits = limits_of(&vol, &mut tx, &p.id).await?;
    let mut set = Map::new();
    set.insert("id".into(), json!(p.id));
    if usage {
        let used = usage_all(&vol, &mut tx, &p.id).await?;
        for (k, l) in limits {
            let in_use = used.get(&k).copied().unwrap_or(0);
            set.insert(k, json!({"limit": l, "in_use": in_use, "reserved": 0, "allocated": 0}));
        }
    } else {
        for (k, l) in limits {
            set.insert(k, json!(l));
        }
    }
    tx.rollback().await?;
    Ok(Json(json!({"quota_set": set})))
}

async fn defaults(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:quotas:show", &ctx, Some(&p.id))?;
    let mut set = Map::new();
    set.insert("id".into(), json!(p.id));
    let classes = class_limits(&vol, vol.db.reader(), "default").await?;
    for r in all_resources(&vol).await? {
        set.insert(r.clone(), json!(classes.get(&r).copied().unwrap_or(-1)));
    }
    Ok(Json(json!({"quota_set": set})))
}

/// The `quota_set`/`quota_class_set` body as resource → limit, checked.
fn parse_limits(vol_resources: &[String], m: &Map<String, Value>) -> VolResult<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        if k == "tenant_id" || k == "id" || k == "class_name" {
            continue;
        }
        if !vol_resources.contains(k) {
            return Err(bad(format!("Bad key(s) in quota set: {k}")));
        }
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| bad(format!("Quota value {v} for {k} must be an integer.")))?;
        if n < -1 {
            return Err(bad(format!("Quota value {n} for {k} must be greater than or equal to -1.")));
        }
        if n > i32::MAX as i64 {
            return Err(bad(format!("Quota value {n} for {k} must be less than or equal to {}.", i32::MAX)));
        }
        out.insert(k.clone(), n);
    }
    Ok(out)
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:quotas:update", &ctx, Some(&p.id))?;
    let m = crate::body::obj(&b, "quota_set")?;
    let resources = all_resources(&vol).await?;
    let want = parse_limits(&resources, m)?;
    let project = p.id.clone();
    let out = vol
        .db
        .transaction(|tx| {
            let (want, project) = (want.clone(), project.clone());
            let vol = vol.clone();
            Box::pin(async move {
                let types = type_names(&mut **tx).await?;
                for (k, n) in &want {
                    if *n >= 0 && k != "per_volume_gigabytes" {
                        let (base, type_id) = match PER_TYPE
                            .iter()
                            .find_map(|r| k.strip_prefix(&format!("{r}_")).map(|t| (*r, t)))
                            .and_then(|(r, t)| types.iter().find(|(_, name)| name == t).map(|(id, _)| (r, Some(id.clone()))))
                        {
                            Some((r, t)) => (r.to_string(), t),
                            None => (k.clone(), None),
                        };
                        let used = usage_of(tx, &project, &base, type_id.as_deref()).await?;
                        if *n < used {
                            return Err(bad(format!(
                                "Quota limit {n} for {k} must be equal or greater than existing resources ({used} in use)."
                            )));
                        }
                    }
                    let mut q = Query::new("DELETE FROM volume_quotas WHERE project_id = ");
                    q.bind(&project).push(" AND resource = ").bind(k);
                    q.execute(&mut **tx).await?;
                    let mut q = Query::new("INSERT INTO volume_quotas (project_id, resource, hard_limit) VALUES (");
                    q.bind(&project).push(", ").bind(k).push(", ").bind(*n).push(")");
                    q.execute(&mut **tx).await?;
                }
                limits_of(&vol, tx, &project).await
            })
        })
        .await?;
    let set: Map<String, Value> = out.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(Json(json!({"quota_set": set})))
}

/// `DELETE /os-quota-sets/{project}`: back to the defaults; 200 with no body, as Cinder.
async fn reset(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<StatusCode> {
    enforce(&vol.policy, "volume_extension:quotas:delete", &ctx, Some(&p.id))?;
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("DELETE FROM volume_quotas WHERE project_id = ");
    q.bind(&p.id);
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::OK)
}

async fn class_show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:quota_classes", &ctx, None)?;
    let classes = class_limits(&vol, vol.db.reader(), &p.id).await?;
    let mut set = Map::new();
    set.insert("id".into(), json!(p.id));
    for r in all_resources(&vol).await? {
        set.insert(r.clone(), json!(classes.get(&r).copied().unwrap_or(-1)));
    }
    Ok(Json(json!({"quota_class_set": set})))
}

async fn class_update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:quota_classes:update", &ctx, None)?;
    let m = crate::body::obj(&b, "quota_class_set")?;
    let resources = all_resources(&vol).await?;
    let want = parse_limits(&resources, m)?;
    let mut tx = vol.db.begin().await?;
    for (k, n) in &want {
        let mut q = Query::new("DELETE FROM volume_quota_classes WHERE class_name = ");
        q.bind(&p.id).push(" AND resource = ").bind(k);
        q.execute(&mut *tx).await?;
        let mut q = Query::new("INSERT INTO volume_quota_classes (class_name, resource, hard_limit) VALUES (");
        q.bind(&p.id).push(", ").bind(k).push(", ").bind(*n).push(")");
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let classes = class_limits(&vol, vol.db.reader(), &p.id).await?;
    let mut set = Map::new();
    for r in resources {
        set.insert(r.clone(), json!(classes.get(&r).copied().unwrap_or(-1)));
    }
    Ok(Json(json!({"quota_class_set": set})))
}

async fn limits(State(vol): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> VolResult<Json<Value>> {
    // 3.39: admins may ask for another project's limits.
    let project = match q.get("project_id") {
        Some(p) if ctx.is_admin() => p.to_string(),
        _ => ctx.project_id.clone().unwrap_or_default(),
    };
    enforce(&vol.policy, "limits_extension:used_limits", &ctx, Some(&project))?;
    let mut tx = vol.db.begin().await?;
    let l = limits_of(&vol, &mut tx, &project).await?;
    let u = usage_all(&vol, &mut tx, &project).await?;
    tx.rollback().await?;
    let g = |m: &BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
    Ok(Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": g(&l, "volumes"),
        "maxTotalSnapshots": g(&l, "snapshots"),
        "maxTotalVolumeGigabytes": g(&l, "gigabytes"),
        "maxTotalBackups": g(&l, "backups"),
        "maxTotalBackupGigabytes": g(&l, "backup_gigabytes"),
        "totalVolumesUsed": g(&u, "volumes"),
        "totalSnapshotsUsed": g(&u, "snapshots"),
        "totalGigabytesUsed": g(&u, "gigabytes"),
        "totalBackupsUsed": g(&u, "backups"),
        "totalBackupGigabytesUsed": g(&u, "backup_gigabytes"),
    }}})))
}
