//! Operators' views of the storage: services (`/os-services`: `cinder-scheduler` on
//! the controller, `cinder-volume` per `host@backend`, `cinder-backup` per host, up or
//! down from their heartbeats), availability zones, the scheduler's pools
//! (`/scheduler-stats/get_pools`), backend capabilities and hosts.

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, OsJson, QueryPairs};
use stratus_db::Query;
use stratus_volume_contract::BackendReport;

use crate::body::{self, ts};
use crate::error::{bad, VolError, VolResult};
use crate::manager::scheduler;
use crate::policy::enforce;
use crate::sql;
use crate::{both, Vol, S};

/// Records the controller's `cinder-scheduler` service (its heartbeat is the
/// controller being up: refreshed at start and every minute).
pub async fn register_controller(vol: &S) -> anyhow::Result<()> {
    let host = vol.platform.host.clone();
    let zone = vol.cfg.default_availability_zone.clone();
    crate::backends::upsert(vol, &host, "cinder-scheduler", &zone, "up", None).await?;
    let v = vol.clone();
    let h = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Err(e) = crate::backends::upsert(&v, &host, "cinder-scheduler", &zone, "up", None).await {
                tracing::warn!(error = %e, "scheduler heartbeat not recorded");
            }
        }
    });
    vol.tasks.lock().push(h);
    Ok(())
}

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/os-services", get(list));
    r = both(r, "/os-services/{action}", put(update));
    r = both(r, "/os-availability-zone", get(zones));
    r = both(r, "/scheduler-stats/get_pools", get(pools));
    r = both(r, "/capabilities/{id}", get(capabilities));
    r = both(r, "/os-hosts", get(hosts));
    r = both(r, "/os-hosts/{id}", get(host_show));
    r
}

fn is_up(vol: &Vol, updated: &str) -> bool {
    stratus_core::time::parse(updated)
        .map(|t| (chrono::Utc::now() - t).num_seconds() <= vol.cfg.service_down_time_secs as i64)
        .unwrap_or(false)
}

async fn list(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, q: QueryPairs) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:services:index", &ctx, None)?;
    let mut sq = Query::new("SELECT * FROM volume_services WHERE 1 = 1");
    // As Cinder, `host=vm` also matches the backends of that host (`vm@file`).
    if let Some(h) = q.get("host") {
        sq.push(" AND (host = ").bind(h.to_string()).push(" OR host LIKE ").bind(format!("{h}@%")).push(")");
    }
    if let Some(b) = q.get("binary") {
        sq.push(" AND service_binary = ").bind(b.to_string());
    }
    sq.push(" ORDER BY id");
    let rows = sq.fetch_all(vol.db.reader()).await?;
    let services: Vec<Value> = rows
        .iter()
        .map(|r| {
            let binary = sql::s(r, "service_binary");
            let mut s = json!({
                "binary": binary,
                "host": sql::s(r, "host"),
                "zone": sql::s(r, "availability_zone"),
                "status": if sql::b(r, "disabled") { "disabled" } else { "enabled" },
                "state": if is_up(&vol, &sql::s(r, "updated_at")) { "up" } else { "down" },
                "updated_at": ts(&sql::os(r, "updated_at")),
                "disabled_reason": sql::os(r, "disabled_reason"),
            });
            if binary == "cinder-volume" {
                s["replication_status"] = json!("disabled");
                s["active_backend_id"] = Value::Null;
                s["frozen"] = json!(sql::b(r, "frozen"));
                if ver.at_least(3, 49) {
                    s["backend_state"] = json!(sql::os(r, "backend_state").unwrap_or_else(|| "up".into()));
                }
            }
            if ver.at_least(3, 7) {
                s["cluster"] = Value::Null;
            }
            s
        })
        .collect();
    Ok(Json(json!({"services": services})))
}

#[derive(Deserialize)]
struct ActionPath {
    action: String,
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<ActionPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:services:update", &ctx, None)?;
    let m = b.as_object().cloned().unwrap_or_default();
    let host = body::opt_str(&m, "host")?.ok_or_else(|| bad("Missing required element 'host' in request body."))?;
    let binary =
        body::opt_str(&m, "binary")?.or(body::opt_str(&m, "service")?).unwrap_or_else(|| "cinder-volume".into());
    let (disabled, reason) = match p.action.as_str() {
        "enable" => (false, None),
        "disable" => (true, None),
        "disable-log-reason" => {
            let r = body::opt_text(&m, "disabled_reason", 255)?
                .filter(|r| !r.trim().is_empty())
                .ok_or_else(|| bad("Disabled reason contains invalid characters or is too long"))?;
            (true, Some(r))
        }
        "freeze" | "thaw" => {
            let frozen = p.action == "freeze";
            let mut tx = vol.db.begin().await?;
            let mut q = Query::new("UPDATE volume_services SET frozen = ");
            q.bind(frozen).push(" WHERE service_binary = 'cinder-volume' AND host = ").bind(&host);
            if q.execute(&mut *tx).await? == 0 {
                // Cinder answers 400 here (Tempest's freeze/thaw negative tests).
                return Err(bad(format!("Host {host} could not be found.")));
            }
            tx.commit().await?;
            return Ok(Json(json!({})));
        }
        other => return Err(VolError::NotFound(format!("Unknown action {other}"))),
    };
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("UPDATE volume_services SET disabled = ");
    q.bind(disabled).push(", disabled_reason = ").bind(reason.clone());
    q.push(" WHERE host = ").bind(&host).push(" AND service_binary = ").bind(&binary);
    if q.execute(&mut *tx).await? == 0 {
        return Err(VolError::NotFound(format!("Service {binary} on host {host} could not be found.")));
    }
    tx.commit().await?;
    let mut out = json!({
        "host": host,
        "service": binary,
        "binary": binary,
        "disabled": disabled,
        "status": if disabled { "disabled" } else { "enabled" },
    });
    if p.action != "disable" {
        out["disabled_reason"] = json!(reason);
    }
    Ok(Json(out))
}

async fn zones(State(vol): State<S>, Ctx(ctx): Ctx) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:availability_zone_list", &ctx, None)?;
    let all = scheduler::candidates(&vol, vol.db.reader()).await?;
    let mut seen: Vec<(String, bool)> = Vec::new();
    for c in &all {
        let z = c.report.availability_zone.clone();
        match seen.iter_mut().find(|(n, _)| *n == z) {
            Some(e) => e.1 |= c.usable.is_ok(),
            None => seen.push((z, c.usable.is_ok())),
        }
    }
    if seen.is_empty() {
        seen.push((vol.cfg.default_availability_zone.clone(), true));
    }
    let info: Vec<Value> =
        seen.into_iter().map(|(z, up)| json!({"zoneName": z, "zoneState": {"available": up}})).collect();
    Ok(Json(json!({"availabilityZoneInfo": info})))
}

/// A pool's capabilities as Cinder's scheduler reports them.
fn pool_caps(r: &BackendReport, pool: &stratus_volume_contract::PoolReport, updated: &str, provisioned: i64) -> Value {
    json!({
        "pool_name": pool.name,
        "total_capacity_gb": pool.total_capacity_gb,
        "free_capacity_gb": pool.free_capacity_gb,
        "allocated_capacity_gb": provisioned,
        "provisioned_capacity_gb": provisioned,
        "max_over_subscription_ratio": pool.max_over_subscription_ratio.to_string(),
        "reserved_percentage": pool.reserved_percentage,
        "thin_provisioning_support": pool.thin_provisioning_support,
        "thick_provisioning_support": pool.thick_provisioning_support,
        "multiattach": pool.multiattach,
        "online_extend_support": pool.online_extend_support,
        "revert_to_snapshot_support": pool.revert_to_snapshot_support,
        "QoS_support": pool.qos_support,
        "volume_backend_name": r.volume_backend_name,
        "storage_protocol": r.storage_protocol,
        "vendor_name": r.vendor_name,
        "driver_version": r.driver_version,
        "backend_state": r.backend_state,
        "updated": ts(&Some(updated.to_string())),
        "timestamp": ts(&Some(updated.to_string())),
    })
}

async fn pools(State(vol): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "scheduler_extension:scheduler_stats:get_pools", &ctx, None)?;
    let detail = q.bool("detail").map_err(VolError::Api)?.unwrap_or(false);
    let rows = Query::new(
        "SELECT host, report, updated_at FROM volume_services WHERE service_binary = 'cinder-volume' ORDER BY host",
    )
    .fetch_all(vol.db.reader())
    .await?;
    let mut out = Vec::new();
    let mut tx = vol.db.begin().await?;
    for r in &rows {
        let report: BackendReport =
            sql::os(r, "report").and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        for pool in &report.pools {
            let name = format!("{}#{}", sql::s(r, "host"), pool.name);
            if let Some(bn) = q.get("volume_backend_name") {
                if report.volume_backend_name != bn {
                    continue;
                }
            }
            if let Some(pn) = q.get("name") {
                if name != pn {
                    continue;
                }
            }
            if detail {
                let provisioned = scheduler::provisioned(&mut tx, &name).await?;
                out.push(json!({"name": name, "capabilities": pool_caps(&report, pool, &sql::s(r, "updated_at"), provisioned)}));
            } else {
                out.push(json!({"name": name}));
            }
        }
    }
    tx.rollback().await?;
    Ok(Json(json!({"pools": out})))
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

async fn capabilities(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:capabilities", &ctx, None)?;
    let mut q = Query::new("SELECT report FROM volume_services WHERE service_binary = 'cinder-volume' AND host = ");
    q.bind(&p.id);
    let r = q
        .fetch_optional(vol.db.reader())
        .await?
        .ok_or_else(|| VolError::NotFound(format!("Service {} could not be found.", p.id)))?;
    let report: BackendReport = sql::os(&r, "report").and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    let pool = report.pools.first().cloned().unwrap_or_default();
    Ok(Json(json!({
        "namespace": format!("OS::Storage::Capabilities::{}", p.id),
        "vendor_name": report.vendor_name,
        "volume_backend_name": report.volume_backend_name,
        "pool_name": pool.name,
        "driver_version": report.driver_version,
        "storage_protocol": report.storage_protocol,
        "display_name": Value::Null,
        "description": Value::Null,
        "visibility": Value::Null,
        "replication_targets": [],
        "properties": {
            "thin_provisioning": {"title": "Thin Provisioning", "description": "Sets thin provisioning.", "type": "boolean"},
            "compression": {"title": "Compression", "description": "Enables compression.", "type": "boolean"},
            "qos": {"title": "QoS", "description": "Enables QoS.", "type": "boolean"},
        },
    })))
}

async fn host_rows(vol: &Vol) -> VolResult<Vec<Value>> {
    let rows = Query::new("SELECT * FROM volume_services ORDER BY id").fetch_all(vol.db.reader()).await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "service-status": if sql::b(r, "disabled") { "disabled" } else { "available" },
                "service": sql::s(r, "service_binary"),
                "zone": sql::s(r, "availability_zone"),
                "service-state": if sql::b(r, "disabled") { "disabled" } else { "enabled" },
                "host_name": sql::s(r, "host"),
                "last-update": ts(&sql::os(r, "updated_at")),
            })
        })
        .collect())
}

async fn hosts(State(vol): State<S>, Ctx(ctx): Ctx) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:hosts", &ctx, None)?;
    Ok(Json(json!({"hosts": host_rows(&vol).await?})))
}

async fn host_show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:hosts", &ctx, None)?;
    // Volumes and snapshots per project on this host (Cinder's resources view).
    let mut q = Query::new(
        "SELECT project_id, COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS s FROM volume_volumes WHERE deleted = 0 AND host >= ",
    );
    q.bind(format!("{}@", p.id)).push(" AND host < ").bind(format!("{}A", p.id)).push(" GROUP BY project_id");
    let rows = q.fetch_all(vol.db.reader()).await?;
    if rows.is_empty()
        && !host_rows(&vol).await?.iter().any(|h| h["host_name"].as_str().is_some_and(|n| n.starts_with(&p.id)))
    {
        return Err(VolError::NotFound(format!("Host {} could not be found.", p.id)));
    }
    let (n, s): (i64, i64) = rows.iter().fold((0, 0), |(a, b), r| (a + sql::i(r, "n"), b + sql::i(r, "s")));
    let mut res = vec![json!({"resource": {"volume_count": n.to_string(), "total_volume_gb": s.to_string(),
        "total_snapshot_gb": "0", "project": "(total)", "host": p.id, "snapshot_count": "0"}})];
    for r in &rows {
        res.push(json!({"resource": {"volume_count": sql::i(r, "n").to_string(), "total_volume_gb": sql::i(r, "s").to_string(),
            "total_snapshot_gb": "0", "project": sql::s(r, "project_id"), "host": p.id, "snapshot_count": "0"}}));
    }
    Ok(Json(json!({"host": res})))
}
