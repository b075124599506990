//! `os-simple-tenant-usage` (`openstack usage list/show`): per project, the hours each
//! server existed in a period and the vCPU-, RAM- and disk-hours that makes.
//!
//! A server counts from its launch (its creation if it never launched) to its
//! termination (now if it still exists), clipped to the period; deleted rows stay in
//! `compute_instances`, so past servers are counted too.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion, QueryPairs};
use stratus_db::Query;

use crate::error::{ComputeError, Result};
use crate::flavors::Flavor;
use crate::servers::store::Instance;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-simple-tenant-usage", get(list))
        .route("/v2.1/os-simple-tenant-usage/{tenant}", get(show))
}

fn period(q: &QueryPairs) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let now = Utc::now();
    let at = |k: &str| -> Result<Option<DateTime<Utc>>> {
        q.get(k)
            .map(|s| {
                stratus_core::time::parse(s).ok_or_else(|| {
                    ComputeError::BadRequest(format!("Invalid {k} time {s:?}: use %Y-%m-%dT%H:%M:%S[.%f]"))
                })
            })
            .transpose()
    };
    let end = at("end")?.unwrap_or(now);
    let start = at("start")?.unwrap_or(end);
    if start > end {
        return Err(ComputeError::BadRequest(
            "Invalid start time. The start time cannot occur after the end time.".into(),
        ));
    }
    Ok((start, end))
}

fn naive(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// One server's usage in the period, or None when it did not exist in it.
fn server_usage(i: &Instance, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Option<Value> {
    let began = stratus_core::time::parse(i.launched_at.as_deref().unwrap_or(&i.created_at))?;
    let ended = i.terminated_at.as_deref().and_then(stratus_core::time::parse);
    let from = began.max(start);
    let to = ended.unwrap_or(now).min(end);
    if to < from || began > end {
        return None;
    }
    let hours = (to - from).num_milliseconds() as f64 / 3_600_000.0;
    let f: &Flavor = &i.flavor;
    let state = if i.deleted { "terminated".to_string() } else { i.vm_state.clone() };
    Some(json!({
        "instance_id": i.uuid,
        "name": i.name,
        "tenant_id": i.project_id,
        "flavor": f.name,
        "hours": hours,
        "memory_mb": f.ram,
        "local_gb": f.disk + f.ephemeral,
        "vcpus": f.vcpus,
        "started_at": naive(began),
        "ended_at": ended.map(naive),
        "state": state,
        "uptime": (ended.unwrap_or(now) - began).num_seconds().max(0),
    }))
}

async fn usages(st: &AppState, project: Option<&str>, q: &QueryPairs) -> Result<Vec<Value>> {
    let (start, end) = period(q)?;
    let now = Utc::now();
    let mut sql = Query::new("SELECT * FROM compute_instances WHERE created_at <= ");
    sql.bind(stratus_core::time::to_storage(end));
    sql.push(" AND (terminated_at IS NULL OR terminated_at >= ").bind(stratus_core::time::to_storage(start)).push(")");
    if let Some(p) = project {
        sql.push_bind(" AND project_id = ", p);
    }
    sql.push(" ORDER BY project_id, created_at, uuid");
    let rows = sql.fetch_all(st.platform.db.reader()).await?;
    let mut per: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in &rows {
        let i = Instance::from_row(r)?;
        if let Some(u) = server_usage(&i, start, end, now) {
            per.entry(i.project_id.clone()).or_default().push(u);
        }
    }
    let mut out = Vec::new();
    for (tenant, servers) in per {
        let sum = |k: &str| -> f64 {
            servers.iter().map(|s| s["hours"].as_f64().unwrap_or(0.0) * s[k].as_f64().unwrap_or(1.0)).sum()
        };
        let hours: f64 = servers.iter().map(|s| s["hours"].as_f64().unwrap_or(0.0)).sum();
        out.push(json!({
            "tenant_id": tenant,
            "start": naive(start),
            "stop": naive(end),
            "total_hours": hours,
            "total_vcpus_usage": sum("vcpus"),
            "total_memory_mb_usage": sum("memory_mb"),
            "total_local_gb_usage": sum("local_gb"),
            "server_usages": servers,
        }));
    }
    Ok(out)
}

fn detailed(q: &QueryPairs) -> bool {
    q.get("detailed").is_some_and(|d| d == "1" || d.eq_ignore_ascii_case("true"))
}

async fn list(State(st): State<AppState>, ctx: Ctx, _v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-simple-tenant-usage:list", &ctx, &json!({}))?;
    let mut u = usages(&st, None, &q).await?;
    if !detailed(&q) {
        for t in &mut u {
            if let Some(m) = t.as_object_mut() {
                m.remove("server_usages");
            }
        }
    }
    Ok(Json(json!({"tenant_usages": u})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    _v: ApiVersion,
    Path(tenant): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-simple-tenant-usage:show", &ctx, &json!({"project_id": tenant}))?;
    let u = usages(&st, Some(&tenant), &q).await?;
    Ok(Json(json!({"tenant_usage": u.into_iter().next().unwrap_or(json!({}))})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_clipped_to_the_period() {
        let mut i = Instance {
            auto_disk_config: false,
            uuid: "u".into(),
            name: "n".into(),
            description: None,
            hostname: "n".into(),
            project_id: "p".into(),
            user_id: "x".into(),
            flavor: Flavor::from_json(&json!({"id": "1", "name": "f", "vcpus": 2, "ram": 512, "disk": 1})),
            image_ref: String::new(),
            image: None,
            key_name: None,
            key_data: None,
            user_data: None,
            availability_zone: None,
            requested_az: None,
            host: None,
            node: None,
            vm_state: "active".into(),
            task_state: None,
            power_state: 1,
            locked: false,
            locked_by: None,
            locked_reason: None,
            config_drive: false,
            access_ipv4: None,
            access_ipv6: None,
            progress: 0,
            reservation_id: String::new(),
            launch_index: 0,
            security_groups: vec![],
            requested_networks: Value::Null,
            ports: vec![],
            scheduler_hints: Value::Null,
            retry_hosts: vec![],
            fault: None,
            admin_pass: None,
            launched_at: Some("2026-01-01T10:00:00.000000Z".into()),
            terminated_at: Some("2026-01-01T14:00:00.000000Z".into()),
            created_at: "2026-01-01T09:59:00.000000Z".into(),
            updated_at: String::new(),
            deleted: true,
            metadata: Default::default(),
            tags: vec![],
            bdms: vec![],
        };
        let p = |s: &str| stratus_core::time::parse(s).unwrap();
        let now = p("2026-02-01T00:00:00Z");
        let u = server_usage(&i, p("2026-01-01T12:00:00Z"), p("2026-01-02T00:00:00Z"), now).unwrap();
        assert_eq!(u["hours"], 2.0);
        assert_eq!(u["state"], "terminated");
        assert!(server_usage(&i, p("2026-01-01T15:00:00Z"), p("2026-01-02T00:00:00Z"), now).is_none());
        i.terminated_at = None;
        let u = server_usage(&i, p("2026-01-01T12:00:00Z"), p("2026-01-01T13:30:00Z"), now).unwrap();
        assert_eq!(u["hours"], 1.5);
    }
}
