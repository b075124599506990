//! `os-instance_usage_audit_log`: the state of the periodic instance usage audit for the
//! last completed month (Nova's default audit period), overall and before a time.
//!
//! This cloud does not run the usage audit task (Nova's `instance_usage_audit` is off by
//! default too): no host has a log for any period, so every compute host is listed as
//! not run, with no instances and no errors. Usage itself is served by
//! `os-simple-tenant-usage`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::ApiError;

use crate::error::{ComputeError, Result};
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-instance_usage_audit_log", get(index))
        .route("/v2.1/os-instance_usage_audit_log/{before}", get(show))
}

/// The last completed month before `before`: (first day of the previous month, first
/// day of the month of `before`), both at midnight.
fn last_completed_month(before: NaiveDateTime) -> (NaiveDateTime, NaiveDateTime) {
    let first = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
    let end = first(before.year(), before.month()).unwrap_or(before);
    let (py, pm) = if before.month() == 1 { (before.year() - 1, 12) } else { (before.year(), before.month() - 1) };
    (first(py, pm).unwrap_or(end), end)
}

/// Nova's accepted forms: `YYYY-MM-DD HH:MM:SS` with optional fractional seconds.
fn parse_before(s: &str) -> Result<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|_| ComputeError::BadRequest(format!("Invalid timestamp for date {s}: use YYYY-MM-DD HH:MM:SS")))
}

async fn report(st: &AppState, before: NaiveDateTime) -> Result<Value> {
    let (begin, end) = last_completed_month(before);
    let hosts: Vec<String> =
        crate::hosts::services(st).await?.into_iter().filter(|s| s.binary == "nova-compute").map(|s| s.host).collect();
    let n = hosts.len();
    let fmt = "%Y-%m-%d %H:%M:%S";
    Ok(json!({
        "hosts_not_run": hosts,
        "log": {},
        "num_hosts": n,
        "num_hosts_done": 0,
        "num_hosts_not_run": n,
        "num_hosts_running": 0,
        "overall_status": if n == 0 { "ALL hosts done. 0 errors.".to_string() } else { format!("0 of {n} hosts done. 0 errors.") },
        "period_beginning": begin.format(fmt).to_string(),
        "period_ending": end.format(fmt).to_string(),
        "total_errors": 0,
        "total_instances": 0,
    }))
}

async fn index(State(st): State<AppState>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-instance-usage-audit-log:list", &ctx, &json!({}))?;
    let now: DateTime<Utc> = Utc::now();
    Ok(Json(json!({"instance_usage_audit_logs": report(&st, now.naive_utc()).await?})))
}

async fn show(State(st): State<AppState>, ctx: Ctx, Path(before): Path<String>) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-instance-usage-audit-log:show", &ctx, &json!({}))?;
    let before = parse_before(&before)?;
    Ok(Json(json!({"instance_usage_audit_log": report(&st, before).await?})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_the_last_completed_month() {
        let at = |s: &str| parse_before(s).unwrap();
        assert_eq!(
            last_completed_month(at("2026-12-07 06:33:35")),
            (at("2026-11-01 00:00:00"), at("2026-12-01 00:00:00"))
        );
        assert_eq!(
            last_completed_month(at("2027-01-01 00:00:00.5")),
            (at("2026-12-01 00:00:00"), at("2027-01-01 00:00:00"))
        );
        assert!(parse_before("invalid_time").is_err());
    }
}
