//! Hosts as operators see them: `os-services` (list, enable/disable with a reason,
//! forced down, delete), `os-hypervisors` (list, detail, show, uptime, statistics, with
//! usage from placement) and `os-availability-zone`.
//!
//! A compute service is `up` when its agent's last heartbeat is younger than
//! `service_down_time_secs`. The scheduler and conductor live in this process, so they
//! are listed as up whenever this API answers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::time::micros_naive;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{ComputeError, Result};
use crate::scheduler::chrono_horizon;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-services", get(services_list))
        .route("/v2.1/os-services/{id}", put(service_update).delete(service_delete))
        .route("/v2.1/os-hypervisors", get(hv_list))
        .route("/v2.1/os-hypervisors/detail", get(hv_detail))
        .route("/v2.1/os-hypervisors/statistics", get(hv_stats))
        .route("/v2.1/os-hypervisors/{id}", get(hv_show))
        .route("/v2.1/os-hypervisors/{id}/uptime", get(hv_uptime))
        .route("/v2.1/os-hypervisors/{id}/search", get(hv_search))
        .route("/v2.1/os-hypervisors/{id}/servers", get(hv_servers))
        .route("/v2.1/os-availability-zone", get(az_list))
        .route("/v2.1/os-availability-zone/detail", get(az_detail))
}

pub(crate) struct Service {
    id: String,
    /// The integer id of microversions below 2.53.
    num: i64,
    pub(crate) host: String,
    pub(crate) binary: String,
    pub(crate) zone: String,
    pub(crate) disabled: bool,
    reason: Option<String>,
    forced_down: bool,
    up: bool,
    updated_at: String,
}

pub(crate) async fn services(st: &AppState) -> Result<Vec<Service>> {
    let rows = Query::new("SELECT * FROM compute_services ORDER BY host, binary_name")
        .fetch_all(st.platform.db.reader())
        .await?;
    let horizon = chrono_horizon(st.cfg.service_down_time_secs);
    let mut out = vec![];
    for (n, bin) in ["nova-conductor", "nova-scheduler"].iter().enumerate() {
        out.push(Service {
            id: format!("00000000-0000-4000-8000-00000000000{}", n + 1),
            num: n as i64 + 1,
            host: st.platform.host.clone(),
            binary: bin.to_string(),
            zone: "internal".into(),
            disabled: false,
            reason: None,
            forced_down: false,
            up: true,
            updated_at: stratus_core::time::now(),
        });
    }
    for r in rows {
        out.push(service_from(&r, &horizon, &st.cfg.default_availability_zone)?);
    }
    Ok(out)
}

fn service_from(r: &AnyRow, horizon: &str, default_az: &str) -> Result<Service> {
    let last: Option<String> = r.try_get("last_seen_up")?;
    let forced: bool = stratus_db::flag(r, "forced_down");
    let az: Option<String> = r.try_get("availability_zone")?;
    Ok(Service {
        id: r.try_get("id")?,
        num: r.try_get::<Option<i64>, _>("num")?.unwrap_or_default(),
        host: r.try_get("host")?,
        binary: r.try_get("binary_name")?,
        zone: az.unwrap_or_else(|| default_az.to_string()),
        disabled: stratus_db::flag(r, "disabled"),
        reason: r.try_get("disabled_reason")?,
        forced_down: forced,
        up: !forced && last.as_deref().is_some_and(|l| l >= horizon),
        updated_at: last.unwrap_or(r.try_get("updated_at")?),
    })
}

/// The id a service is shown by: its integer below 2.53, its uuid from 2.53.
fn service_id(s: &Service, v: ApiVersion) -> Value {
    if v.at_least(2, 53) {
        json!(s.id)
    } else {
        json!(s.num)
    }
}

fn service_view(s: &Service, v: ApiVersion) -> Value {
    let mut o = json!({
        "id": service_id(s, v),
        "binary": s.binary,
        "host": s.host,
        "zone": s.zone,
        "status": if s.disabled { "disabled" } else { "enabled" },
        "state": if s.up { "up" } else { "down" },
        "updated_at": micros_naive(&s.updated_at),
        "disabled_reason": s.reason,
    });
    if v.at_least(2, 11) {
        o["forced_down"] = json!(s.forced_down);
    }
    o
}

async fn services_list(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-services:list", &ctx, &json!({}))?;
    let list: Vec<Value> = services(&st)
        .await?
        .iter()
        .filter(|s| q.get("host").is_none_or(|h| h == s.host) && q.get("binary").is_none_or(|b| b == s.binary))
        .map(|s| service_view(s, v))
        .collect();
    Ok(Json(json!({"services": list})))
}

/// Writes a service change (and tells the scheduler, whose host cache holds services).
async fn exec(st: &AppState, q: Query) -> Result<u64> {
    let n = st
        .platform
        .db
        .transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await?;
    crate::scheduler::services_changed();
    Ok(n)
}

async fn service_update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-services:update", &ctx, &json!({}))?;
    match &b["disabled_reason"] {
        Value::Null => {}
        Value::String(r) if !r.trim().is_empty() && r.chars().count() <= 255 => {}
        other => {
            return Err(ComputeError::BadRequest(format!(
                "Invalid disabled_reason {other}: a string of 1 to 255 characters"
            ))
            .into())
        }
    }
    // Before 2.53 the id is an action (`disable`, `enable`, `force-down`, ...) and the
    // body names host and binary.
    let (row_id, status, reason, forced) = if !v.at_least(2, 53) {
        let host = b["host"].as_str().ok_or_else(|| ComputeError::BadRequest("host is required".into()))?;
        let binary = b["binary"].as_str().unwrap_or("nova-compute");
        let r = Query::new("SELECT id FROM compute_services WHERE host = ")
            .bind(host)
            .push_bind(" AND binary_name = ", binary)
            .fetch_optional(st.platform.db.reader())
            .await
            .map_err(ComputeError::from)?;
        let rid: String = r
            .ok_or_else(|| ComputeError::NotFound(format!("Service {binary} on host {host} could not be found.")))?
            .try_get("id")
            .map_err(ComputeError::from)?;
        match id.as_str() {
            "enable" => (rid, Some("enabled"), None, None),
            "disable" => (rid, Some("disabled"), None, None),
            "disable-log-reason" => (rid, Some("disabled"), b["disabled_reason"].as_str().map(str::to_string), None),
            "force-down" => (rid, None, None, b["forced_down"].as_bool()),
            other => return Err(ComputeError::NotFound(format!("Unknown service action {other}")).into()),
        }
    } else {
        let status = match b["status"].as_str() {
            None => None,
            Some("enabled") => Some("enabled"),
            Some("disabled") => Some("disabled"),
            Some(x) => {
                return Err(ComputeError::BadRequest(format!("Invalid status {x:?}: use enabled or disabled")).into())
            }
        };
        let reason = b["disabled_reason"].as_str().map(str::to_string);
        if reason.is_some() && status != Some("disabled") {
            return Err(ComputeError::BadRequest("disabled_reason is only allowed with status disabled".into()).into());
        }
        (id.clone(), status, reason, b["forced_down"].as_bool())
    };
    let mut q = Query::new("UPDATE compute_services SET updated_at = ");
    q.bind(stratus_core::time::now());
    if let Some(s) = status {
        q.push_bind(", disabled = ", s == "disabled")
            .push_bind(", disabled_reason = ", if s == "disabled" { reason.clone() } else { None });
    }
    if let Some(f) = forced {
        q.push_bind(", forced_down = ", f);
    }
    q.push_bind(" WHERE id = ", &row_id);
    if exec(&st, q).await? == 0 {
        return Err(ComputeError::NotFound(format!("Service {id} could not be found.")).into());
    }
    let s = services(&st)
        .await?
        .into_iter()
        .find(|s| s.id == row_id)
        .ok_or_else(|| ComputeError::NotFound(format!("Service {id} could not be found.")))?;
    if !v.at_least(2, 53) {
        let mut o = json!({"host": s.host, "binary": s.binary, "status": if s.disabled {"disabled"} else {"enabled"}});
        if let Some(r) = &s.reason {
            o["disabled_reason"] = json!(r);
        }
        if forced.is_some() {
            o["forced_down"] = json!(s.forced_down);
        }
        return Ok(Json(json!({"service": o})));
    }
    Ok(Json(json!({"service": service_view(&s, v)})))
}

async fn service_delete(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.policy.enforce("os_compute_api:os-services:delete", &ctx, &json!({}))?;
    // Below 2.53 the path names the service by its integer id, from 2.53 by its uuid.
    let q = if v.at_least(2, 53) {
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(ComputeError::BadRequest(format!("Invalid uuid {id}")).into());
        }
        Query::new("SELECT id, host FROM compute_services WHERE id = ").bind(&id).clone()
    } else {
        let num: i64 = id
            .parse()
            .map_err(|_| ComputeError::BadRequest(format!("Invalid service id {id}: an integer is required")))?;
        Query::new("SELECT id, host FROM compute_services WHERE num = ").bind(num).clone()
    };
    let r = q.fetch_optional(st.platform.db.reader()).await.map_err(ComputeError::from)?;
    let r = r.ok_or_else(|| ComputeError::NotFound(format!("Service {id} could not be found.")))?;
    let host: String = r.try_get("host").map_err(ComputeError::from)?;
    let id: String = r.try_get("id").map_err(ComputeError::from)?;
    let busy = Query::new("SELECT 1 FROM compute_instances WHERE deleted = ")
        .bind(false)
        .push_bind(" AND host = ", &host)
        .fetch_optional(st.platform.db.reader())
        .await
        .map_err(ComputeError::from)?;
    if busy.is_some() {
        return Err(ComputeError::Conflict(format!("Unable to delete compute service that is hosting instances on {host}. Migrate or delete the instances first.")).into());
    }
    let mut q = Query::new("DELETE FROM compute_nodes WHERE service_id = ");
    q.bind(&id);
    exec(&st, q).await?;
    let mut q = Query::new("DELETE FROM compute_services WHERE id = ");
    q.bind(&id);
    exec(&st, q).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) struct Node {
    pub(crate) id: String,
    /// The integer id of microversions below 2.53.
    num: i64,
    pub(crate) host: String,
    hostname: String,
    hv_type: String,
    hv_version: i64,
    host_ip: String,
    pub(crate) vcpus: i64,
    pub(crate) memory_mb: i64,
    pub(crate) local_gb: i64,
    cpu_info: String,
    service: Service,
}

pub(crate) async fn nodes(st: &AppState) -> Result<Vec<Node>> {
    let rows = Query::new(
        "SELECT n.id AS node_id, n.num AS node_num, n.host AS node_host, n.hypervisor_hostname, n.hypervisor_type, n.hypervisor_version, n.host_ip, \
         n.vcpus, n.memory_mb, n.local_gb, n.cpu_info, s.* FROM compute_nodes n JOIN compute_services s ON s.id = n.service_id ORDER BY n.hypervisor_hostname",
    )
    .fetch_all(st.platform.db.reader())
    .await?;
    let horizon = chrono_horizon(st.cfg.service_down_time_secs);
    let mut out = vec![];
    for r in rows {
        out.push(Node {
            id: r.try_get("node_id")?,
            num: r.try_get::<Option<i64>, _>("node_num")?.unwrap_or_default(),
            host: r.try_get("node_host")?,
            hostname: r.try_get("hypervisor_hostname")?,
            hv_type: r.try_get("hypervisor_type")?,
            hv_version: r.try_get("hypervisor_version")?,
            host_ip: r.try_get("host_ip")?,
            vcpus: r.try_get("vcpus")?,
            memory_mb: r.try_get("memory_mb")?,
            local_gb: r.try_get("local_gb")?,
            cpu_info: r.try_get("cpu_info")?,
            service: service_from(&r, &horizon, &st.cfg.default_availability_zone)?,
        });
    }
    Ok(out)
}

/// The id a hypervisor is shown by: its integer below 2.53, its uuid from 2.53.
fn node_id(n: &Node, v: ApiVersion) -> Value {
    if v.at_least(2, 53) {
        json!(n.id)
    } else {
        json!(n.num)
    }
}

/// Whether `id` in a path names `n` at `v`.
fn names_node(n: &Node, v: ApiVersion, id: &str) -> bool {
    if v.at_least(2, 53) {
        n.id == id
    } else {
        id.parse::<i64>().is_ok_and(|i| i == n.num)
    }
}

async fn running_vms(st: &AppState, host: &str) -> Result<i64> {
    Ok(Query::new("SELECT COUNT(*) AS n FROM compute_instances WHERE deleted = ")
        .bind(false)
        .push_bind(" AND host = ", host)
        .fetch_optional(st.platform.db.reader())
        .await?
        .map(|r| r.try_get("n"))
        .transpose()?
        .unwrap_or(0))
}

async fn node_view(st: &AppState, n: &Node, v: ApiVersion, detail: bool) -> Result<Value> {
    let mut o = json!({
        "id": node_id(n, v),
        "hypervisor_hostname": n.hostname,
        "state": if n.service.up { "up" } else { "down" },
        "status": if n.service.disabled { "disabled" } else { "enabled" },
    });
    if !detail {
        return Ok(o);
    }
    o["host_ip"] = json!(n.host_ip);
    o["hypervisor_type"] = json!(n.hv_type);
    o["hypervisor_version"] = json!(n.hv_version);
    o["service"] = json!({"host": n.host, "id": service_id(&n.service, v), "disabled_reason": n.service.reason});
    if !v.at_least(2, 88) {
        let used = st.backends.placement.provider_usages(&n.id).await.unwrap_or_default();
        let (vu, mu, du) = (
            used.get("VCPU").copied().unwrap_or(0),
            used.get("MEMORY_MB").copied().unwrap_or(0),
            used.get("DISK_GB").copied().unwrap_or(0),
        );
        o["vcpus"] = json!(n.vcpus);
        o["memory_mb"] = json!(n.memory_mb);
        o["local_gb"] = json!(n.local_gb);
        o["vcpus_used"] = json!(vu);
        o["memory_mb_used"] = json!(mu);
        o["local_gb_used"] = json!(du);
        o["free_ram_mb"] = json!(n.memory_mb - mu);
        o["free_disk_gb"] = json!(n.local_gb - du);
        o["current_workload"] = json!(0);
        o["running_vms"] = json!(running_vms(st, &n.host).await?);
        o["disk_available_least"] = json!(n.local_gb - du);
        // A JSON document in a string before 2.28, the object itself from 2.28.
        let cpu = json!({"model": n.cpu_info});
        o["cpu_info"] = if v.at_least(2, 28) { cpu } else { json!(cpu.to_string()) };
    } else {
        o["uptime"] = json!(uptime());
    }
    Ok(o)
}

fn uptime() -> String {
    let s = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs = s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) as u64;
    format!(" up {} days, {:02}:{:02}", secs / 86400, (secs % 86400) / 3600, (secs % 3600) / 60)
}

async fn hv_list_impl(
    st: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    q: &QueryPairs,
    detail: bool,
) -> Result<Value, ApiError> {
    st.policy.enforce(
        if detail { "os_compute_api:os-hypervisors:list-detail" } else { "os_compute_api:os-hypervisors:list" },
        ctx,
        &json!({}),
    )?;
    let with_servers = match q.get("with_servers") {
        None => false,
        Some(w) if v.at_least(2, 53) => stratus_core::query::parse_bool(w)
            .ok_or_else(|| ComputeError::BadRequest(format!("Invalid with_servers value {w:?}: use true or false")))?,
        Some(_) => false,
    };
    let mut out = vec![];
    for n in nodes(st).await? {
        if let Some(p) = q.get("hypervisor_hostname_pattern") {
            if !n.hostname.contains(p) {
                continue;
            }
        }
        let mut o = node_view(st, &n, v, detail).await?;
        if with_servers {
            add_servers(st, &mut o, &n, v, true).await?;
        }
        out.push(o);
    }
    Ok(json!({"hypervisors": out}))
}

/// Adds the servers on `n` as `servers: [{uuid, name}]`: left out when there are none,
/// except from 2.75 when they were asked for (then an empty list), as Nova does.
async fn add_servers(st: &AppState, o: &mut Value, n: &Node, v: ApiVersion, asked: bool) -> Result<()> {
    let rows = Query::new("SELECT uuid, name FROM compute_instances WHERE deleted = ")
        .bind(false)
        .push_bind(" AND host = ", &n.host)
        .push(" ORDER BY created_at")
        .fetch_all(st.platform.db.reader())
        .await?;
    let mut servers = Vec::new();
    for r in rows {
        servers.push(json!({"uuid": r.try_get::<String, _>("uuid")?, "name": r.try_get::<String, _>("name")?}));
    }
    if !servers.is_empty() || (asked && v.at_least(2, 75)) {
        o["servers"] = json!(servers);
    }
    Ok(())
}

/// The hypervisors whose hostname contains `pattern` (404 when none), for the search and
/// servers APIs of microversions below 2.53.
async fn matching(st: &AppState, ctx: &Ctx, v: ApiVersion, pattern: &str, rule: &str) -> Result<Vec<Node>, ApiError> {
    if v.at_least(2, 53) {
        return Err(ComputeError::NotFound(
            "This API was removed at microversion 2.53: use GET /os-hypervisors?hypervisor_hostname_pattern=...".into(),
        )
        .into());
    }
    st.policy.enforce(rule, ctx, &json!({}))?;
    let found: Vec<Node> = nodes(st).await?.into_iter().filter(|n| n.hostname.contains(pattern)).collect();
    if found.is_empty() {
        return Err(ComputeError::NotFound(format!("No hypervisor matching '{pattern}' could be found.")).into());
    }
    Ok(found)
}

async fn hv_search(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(pattern): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut out = vec![];
    for n in matching(&st, &ctx, v, &pattern, "os_compute_api:os-hypervisors:search").await? {
        out.push(node_view(&st, &n, v, false).await?);
    }
    Ok(Json(json!({"hypervisors": out})))
}

async fn hv_servers(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(pattern): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut out = vec![];
    for n in matching(&st, &ctx, v, &pattern, "os_compute_api:os-hypervisors:servers").await? {
        let mut o = node_view(&st, &n, v, false).await?;
        add_servers(&st, &mut o, &n, v, false).await?;
        out.push(o);
    }
    Ok(Json(json!({"hypervisors": out})))
}

async fn hv_list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    Ok(Json(hv_list_impl(&st, &ctx, v, &q, false).await?))
}

async fn hv_detail(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(hv_list_impl(&st, &ctx, v, &q, true).await?))
}

async fn hv_show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-hypervisors:show", &ctx, &json!({}))?;
    let n = nodes(&st)
        .await?
        .into_iter()
        .find(|n| names_node(n, v, &id) || n.hostname == id)
        .ok_or_else(|| ComputeError::NotFound(format!("Hypervisor with ID {id} could not be found.")))?;
    let mut o = node_view(&st, &n, v, true).await?;
    if v.at_least(2, 53) {
        if let Some(w) = q.get("with_servers") {
            let asked = stratus_core::query::parse_bool(w).ok_or_else(|| {
                ComputeError::BadRequest(format!("Invalid with_servers value {w:?}: use true or false"))
            })?;
            if asked {
                add_servers(&st, &mut o, &n, v, true).await?;
            }
        }
    }
    Ok(Json(json!({"hypervisor": o})))
}

async fn hv_uptime(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-hypervisors:uptime", &ctx, &json!({}))?;
    let n = nodes(&st)
        .await?
        .into_iter()
        .find(|n| names_node(n, v, &id))
        .ok_or_else(|| ComputeError::NotFound(format!("Hypervisor with ID {id} could not be found.")))?;
    let mut o = node_view(&st, &n, v, false).await?;
    o["uptime"] = json!(uptime());
    Ok(Json(json!({"hypervisor": o})))
}

async fn hv_stats(State(st): State<AppState>, ctx: Ctx, v: ApiVersion) -> Result<Json<Value>, ApiError> {
    if v.at_least(2, 88) {
        return Err(ComputeError::NotFound(
            "The hypervisor statistics API was removed in microversion 2.88; use placement".into(),
        )
        .into());
    }
    st.policy.enforce("os_compute_api:os-hypervisors:statistics", &ctx, &json!({}))?;
    let mut tot = json!({"count": 0, "vcpus": 0, "memory_mb": 0, "local_gb": 0, "vcpus_used": 0, "memory_mb_used": 0, "local_gb_used": 0, "free_ram_mb": 0, "free_disk_gb": 0, "current_workload": 0, "running_vms": 0, "disk_available_least": 0});
    for n in nodes(&st).await? {
        let nv = node_view(&st, &n, v, true).await?;
        tot["count"] = json!(tot["count"].as_i64().unwrap_or(0) + 1);
        for k in [
            "vcpus",
            "memory_mb",
            "local_gb",
            "vcpus_used",
            "memory_mb_used",
            "local_gb_used",
            "free_ram_mb",
            "free_disk_gb",
            "running_vms",
            "disk_available_least",
        ] {
            tot[k] = json!(tot[k].as_i64().unwrap_or(0) + nv[k].as_i64().unwrap_or(0));
        }
    }
    Ok(Json(json!({"hypervisor_statistics": tot})))
}

/// True when some enabled compute host is in zone `z`.
pub async fn zone_exists(st: &AppState, z: &str) -> Result<bool> {
    Ok(services(st).await?.iter().any(|s| s.binary == "nova-compute" && s.zone == z && !s.disabled))
}

async fn az_list(State(st): State<AppState>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-availability-zone:list", &ctx, &json!({}))?;
    let mut zones: std::collections::BTreeMap<String, bool> = Default::default();
    for s in services(&st).await?.iter().filter(|s| s.binary == "nova-compute" && !s.disabled) {
        *zones.entry(s.zone.clone()).or_default() |= s.up;
    }
    let list: Vec<Value> = zones
        .into_iter()
        .map(|(z, up)| json!({"zoneName": z, "zoneState": {"available": up}, "hosts": null}))
        .collect();
    Ok(Json(json!({"availabilityZoneInfo": list})))
}

async fn az_detail(State(st): State<AppState>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-availability-zone:detail", &ctx, &json!({}))?;
    let mut zones: std::collections::BTreeMap<String, (bool, serde_json::Map<String, Value>)> = Default::default();
    for s in services(&st).await? {
        let e = zones.entry(s.zone.clone()).or_insert((false, Default::default()));
        e.0 |= s.up && !s.disabled;
        let host = e.1.entry(s.host.clone()).or_insert(json!({}));
        host[&s.binary] = json!({"available": s.up, "active": !s.disabled, "updated_at": micros_naive(&s.updated_at)});
    }
    let list: Vec<Value> = zones
        .into_iter()
        .map(|(z, (up, hosts))| json!({"zoneName": z, "zoneState": {"available": up}, "hosts": hosts}))
        .collect();
    Ok(Json(json!({"availabilityZoneInfo": list})))
}
