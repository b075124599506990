//! `os-hosts` (deprecated in Nova, served up to microversion 2.42, 404 from 2.43): hosts
//! by service and zone, a compute host's resources (total, in use, and per project),
//! enabling or disabling a host's compute service. Maintenance mode and host power
//! actions are not something this cloud's hypervisor driver does: they answer 501, as
//! Nova's libvirt driver does, after the host is found.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{ComputeError, Result};
use crate::hosts::{nodes, services, Node};
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-hosts", get(list))
        .route("/v2.1/os-hosts/{host}", get(show).put(update))
        .route("/v2.1/os-hosts/{host}/reboot", get(reboot))
        .route("/v2.1/os-hosts/{host}/shutdown", get(shutdown))
        .route("/v2.1/os-hosts/{host}/startup", get(startup))
}

/// os-hosts ends at 2.42.
fn check_version(v: ApiVersion) -> Result<()> {
    if v.at_least(2, 43) {
        return Err(ComputeError::NotFound(
            "os-hosts was removed at microversion 2.43: use os-hypervisors and os-services".into(),
        ));
    }
    Ok(())
}

/// A service's topic, as os-hosts names it (`nova-compute` → `compute`).
fn topic(binary: &str) -> &str {
    binary.strip_prefix("nova-").unwrap_or(binary)
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    check_version(v)?;
    st.policy.enforce("os_compute_api:os-hosts:list", &ctx, &json!({}))?;
    // A blank zone filters nothing, as in Nova.
    let zone = q.get("zone").filter(|z| !z.is_empty());
    let hosts: Vec<Value> = services(&st)
        .await?
        .iter()
        .filter(|s| zone.is_none_or(|z| z == s.zone))
        .map(|s| json!({"host_name": s.host, "service": topic(&s.binary), "zone": s.zone}))
        .collect();
    Ok(Json(json!({"hosts": hosts})))
}

/// The compute node of `host`, or 404.
async fn compute_node(st: &AppState, host: &str) -> Result<Node> {
    nodes(st)
        .await?
        .into_iter()
        .find(|n| n.host == host)
        .ok_or_else(|| ComputeError::NotFound(format!("Compute host {host} could not be found.")))
}

fn resource(host: &str, project: &str, cpu: i64, memory_mb: i64, disk_gb: i64) -> Value {
    json!({"resource": {"host": host, "project": project, "cpu": cpu, "memory_mb": memory_mb, "disk_gb": disk_gb}})
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(host): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_version(v)?;
    st.policy.enforce("os_compute_api:os-hosts:show", &ctx, &json!({}))?;
    let n = compute_node(&st, &host).await?;
    let used = st.backends.placement.provider_usages(&n.id).await.unwrap_or_default();
    let rows = Query::new("SELECT project_id, flavor_json FROM compute_instances WHERE deleted = ")
        .bind(false)
        .push_bind(" AND host = ", &host)
        .fetch_all(st.platform.db.reader())
        .await
        .map_err(ComputeError::from)?;
    // Per project: cpu, memory, disk of the flavors of its servers on the host.
    let mut per: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for r in rows {
        let project: String = r.try_get("project_id").map_err(ComputeError::from)?;
        let flavor: String = r.try_get("flavor_json").map_err(ComputeError::from)?;
        let f: Value = serde_json::from_str(&flavor).unwrap_or_default();
        let e = per.entry(project).or_default();
        e.0 += f["vcpus"].as_i64().unwrap_or(0);
        e.1 += f["ram"].as_i64().unwrap_or(0);
        e.2 += f["disk"].as_i64().unwrap_or(0) + f["ephemeral"].as_i64().unwrap_or(0);
    }
    let max = per.values().fold((0, 0, 0), |a, p| (a.0 + p.0, a.1 + p.1, a.2 + p.2));
    let mut out = vec![
        resource(&host, "(total)", n.vcpus, n.memory_mb, n.local_gb),
        resource(
            &host,
            "(used_now)",
            used.get("VCPU").copied().unwrap_or(0),
            used.get("MEMORY_MB").copied().unwrap_or(0),
            used.get("DISK_GB").copied().unwrap_or(0),
        ),
        resource(&host, "(used_max)", max.0, max.1, max.2),
    ];
    out.extend(per.iter().map(|(p, u)| resource(&host, p, u.0, u.1, u.2)));
    Ok(Json(json!({"host": out})))
}

/// `enable`/`disable` in any of the cases Nova's schema lists.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
enum Switch {
    #[serde(rename = "enable", alias = "Enable", alias = "ENABLE")]
    Enable,
    #[serde(rename = "disable", alias = "Disable", alias = "DISABLE")]
    Disable,
}

/// `PUT /os-hosts/{host}`: at least one of the two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateHost {
    #[serde(default)]
    status: Option<Switch>,
    #[serde(default)]
    maintenance_mode: Option<Switch>,
}

async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(host): Path<String>,
    OsJson(b): OsJson<UpdateHost>,
) -> Result<Json<Value>, ApiError> {
    check_version(v)?;
    st.policy.enforce("os_compute_api:os-hosts:update", &ctx, &json!({}))?;
    if b.status.is_none() && b.maintenance_mode.is_none() {
        return Err(ComputeError::BadRequest("Give status or maintenance_mode (enable or disable)".into()).into());
    }
    compute_node(&st, &host).await?;
    if b.maintenance_mode.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "The hypervisor driver does not implement host maintenance mode: disable the host's compute service \
             (status: disable) and move its servers instead",
        ));
    }
    let disabled = b.status == Some(Switch::Disable);
    let mut q = Query::new("UPDATE compute_services SET disabled = ");
    q.bind(disabled)
        .push_bind(", disabled_reason = ", None::<String>)
        .push_bind(", updated_at = ", stratus_core::time::now())
        .push_bind(" WHERE host = ", &host)
        .push_bind(" AND binary_name = ", "nova-compute");
    st.platform
        .db
        .transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await
        .map_err(ComputeError::from)?;
    crate::scheduler::services_changed();
    Ok(Json(json!({"host": host, "status": if disabled { "disabled" } else { "enabled" }})))
}

/// Host power actions: the host is looked up (404, 403 by policy), then 501.
async fn power(st: &AppState, ctx: &Ctx, v: ApiVersion, host: &str, action: &str) -> Result<Json<Value>, ApiError> {
    check_version(v)?;
    st.policy.enforce(&format!("os_compute_api:os-hosts:{action}"), ctx, &json!({}))?;
    compute_node(st, host).await?;
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "The hypervisor driver does not implement host power management ({action}): use the machine's own controls"
        ),
    ))
}

async fn reboot(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(h): Path<String>,
) -> Result<Json<Value>, ApiError> {
    power(&st, &ctx, v, &h, "reboot").await
}

async fn shutdown(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(h): Path<String>,
) -> Result<Json<Value>, ApiError> {
    power(&st, &ctx, v, &h, "shutdown").await
}

async fn startup(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(h): Path<String>,
) -> Result<Json<Value>, ApiError> {
    power(&st, &ctx, v, &h, "start").await
}
