//! Quotas and limits: `os-quota-sets` (show, detail, defaults, update, delete),
//! `os-quota-class-sets`, and `GET /limits`. Usage is counted from live rows, never
//! from a counter that could drift.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::{Db, Query};

use crate::error::{ComputeError, Result};
use crate::AppState;

/// Nova's default quotas.
pub const DEFAULT_QUOTAS: &[(&str, i64)] = &[
    ("instances", 10),
    ("cores", 20),
    ("ram", 51200),
    ("key_pairs", 100),
    ("metadata_items", 128),
    ("server_groups", 10),
    ("server_group_members", 10),
    ("injected_files", 5),
    ("injected_file_content_bytes", 10240),
    ("injected_file_path_bytes", 255),
    ("floating_ips", 10),
    ("fixed_ips", -1),
    ("security_groups", 10),
    ("security_group_rules", 20),
];

/// Resources that disappeared from the API at 2.57 (personality files).
const FILE_QUOTAS: &[&str] = &["injected_files", "injected_file_content_bytes", "injected_file_path_bytes"];

/// Network quotas of the nova-network era: quota sets show (and take) them below 2.36, quota
/// class sets below 2.50. They are kept and reported as Nova does, but enforced by the
/// network service, not here.
const NETWORK_QUOTAS: &[&str] = &["floating_ips", "fixed_ips", "security_groups", "security_group_rules"];

/// Server group quotas, which quota class sets show only from 2.50 (Nova's bug 1701211).
const SERVER_GROUP_QUOTAS: &[&str] = &["server_groups", "server_group_members"];

/// The default (class `default`) limit of `resource`.
pub async fn default_limit(db: &Db, resource: &str) -> Result<i64> {
    let r = Query::new("SELECT hard_limit FROM compute_quota_classes WHERE class_name = ")
        .bind("default")
        .push_bind(" AND resource = ", resource)
        .fetch_optional(db.reader())
        .await?;
    if let Some(r) = r {
        return Ok(r.try_get("hard_limit")?);
    }
    Ok(DEFAULT_QUOTAS.iter().find(|(k, _)| *k == resource).map(|(_, v)| *v).unwrap_or(-1))
}

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/limits", get(limits))
        .route("/v2.1/os-quota-sets/{project}", get(show).put(update).delete(reset))
        .route("/v2.1/os-quota-sets/{project}/detail", get(detail))
        .route("/v2.1/os-quota-sets/{project}/defaults", get(defaults))
        .route("/v2.1/os-quota-class-sets/{class}", get(class_show).put(class_update))
}

/// Whether quota set responses (and updates) at `v` carry resource `k`.
fn visible(v: ApiVersion, k: &str) -> bool {
    let file_gone = v.at_least(2, 57) && FILE_QUOTAS.contains(&k);
    let network_gone = v.at_least(2, 36) && NETWORK_QUOTAS.contains(&k);
    !file_gone && !network_gone
}

/// Whether quota class set responses (and updates) at `v` carry resource `k`.
fn class_visible(v: ApiVersion, k: &str) -> bool {
    let file_ok = !(v.at_least(2, 57) && FILE_QUOTAS.contains(&k));
    if v.at_least(2, 50) {
        file_ok && !NETWORK_QUOTAS.contains(&k)
    } else {
        file_ok && !SERVER_GROUP_QUOTAS.contains(&k)
    }
}

async fn limits_of(st: &AppState, project: &str) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for (k, _) in DEFAULT_QUOTAS {
        out.push((k.to_string(), crate::servers::quota_limit(st, project, k).await?));
    }
    Ok(out)
}

async fn usage(st: &AppState, project: &str, user: &str) -> Result<(i64, i64, i64, i64)> {
    let mut tx = st.platform.db.begin().await?;
    let (n, c, r) = crate::servers::used_counts(&mut tx, project).await?;
    tx.rollback().await?;
    let k: i64 = Query::new("SELECT COUNT(*) AS n FROM compute_keypairs WHERE user_id = ")
        .bind(user)
        .fetch_optional(st.platform.db.reader())
        .await?
        .map(|r| r.try_get("n"))
        .transpose()?
        .unwrap_or(0);
    Ok((n, c, r, k))
}

async fn limits(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let project = match q.get("tenant_id") {
        Some(t) if ctx.is_admin() => t.to_string(),
        _ => ctx.project_id.clone().unwrap_or_default(),
    };
    st.policy.enforce("os_compute_api:limits", &ctx, &json!({"project_id": project}))?;
    let l: std::collections::HashMap<String, i64> = limits_of(&st, &project).await?.into_iter().collect();
    let (n, c, r, _) = usage(&st, &project, &ctx.user_id).await?;
    let mut abs = json!({
        "maxServerMeta": l["metadata_items"],
        "maxImageMeta": 128,
        "maxTotalKeypairs": l["key_pairs"],
        "maxServerGroups": l["server_groups"],
        "maxServerGroupMembers": l["server_group_members"],
        "maxTotalCores": l["cores"],
        "maxTotalInstances": l["instances"],
        "maxTotalRAMSize": l["ram"],
        "totalCoresUsed": c,
        "totalInstancesUsed": n,
        "totalRAMUsed": r,
        "totalServerGroupsUsed": crate::server_groups::count(&st.platform.db, &project).await?,
    });
    if !v.at_least(2, 57) {
        abs["maxPersonality"] = json!(l["injected_files"]);
        abs["maxPersonalitySize"] = json!(l["injected_file_content_bytes"]);
    }
    if !v.at_least(2, 36) {
        abs["maxSecurityGroups"] = json!(l["security_groups"]);
        abs["maxSecurityGroupRules"] = json!(l["security_group_rules"]);
        abs["maxTotalFloatingIps"] = json!(l["floating_ips"]);
        abs["totalSecurityGroupsUsed"] = json!(0);
        abs["totalFloatingIpsUsed"] = json!(0);
    }
    Ok(Json(json!({"limits": {"rate": [], "absolute": abs}})))
}

async fn quota_set(st: &AppState, v: ApiVersion, project: &str, detail: bool, user: &str) -> Result<Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(project));
    let (n, c, r, k) = if detail { usage(st, project, user).await? } else { (0, 0, 0, 0) };
    for (key, limit) in limits_of(st, project).await? {
        if !visible(v, &key) {
            continue;
        }
        let val = if detail {
            let in_use = match key.as_str() {
                "instances" => n,
                "cores" => c,
                "ram" => r,
                "key_pairs" => k,
                "server_groups" => crate::server_groups::count(&st.platform.db, project).await?,
                _ => 0,
            };
            json!({"limit": limit, "in_use": in_use, "reserved": 0})
        } else {
            json!(limit)
        };
        m.insert(key, val);
    }
    Ok(Value::Object(m))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-quota-sets:show", &ctx, &json!({"project_id": project}))?;
    Ok(Json(json!({"quota_set": quota_set(&st, v, &project, false, &ctx.user_id).await?})))
}

async fn detail(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-quota-sets:show", &ctx, &json!({"project_id": project}))?;
    Ok(Json(json!({"quota_set": quota_set(&st, v, &project, true, &ctx.user_id).await?})))
}

async fn defaults(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-quota-sets:defaults", &ctx, &json!({"project_id": project}))?;
    let mut m = Map::new();
    m.insert("id".into(), json!(project));
    for (k, _) in DEFAULT_QUOTAS {
        if visible(v, k) {
            m.insert(k.to_string(), json!(default_limit(&st.platform.db, k).await?));
        }
    }
    Ok(Json(json!({"quota_set": m})))
}

/// The limits of an update body under `key`, each resource checked with `allowed` (the
/// resources the negotiated microversion has).
fn parse_limits(body: &Value, key: &str, allowed: impl Fn(&str) -> bool) -> Result<Vec<(String, i64)>> {
    let obj = body[key].as_object().ok_or_else(|| ComputeError::BadRequest(format!("'{key}' is required")))?;
    let mut out = Vec::new();
    for (k, v) in obj {
        if k == "force" || k == "id" {
            continue;
        }
        if !DEFAULT_QUOTAS.iter().any(|(d, _)| d == k) || !allowed(k) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .filter(|n| *n >= -1)
        .ok_or_else(|| ComputeError::BadRequest(format!("Quota limit {v} for {k} must be an integer >= -1")))?;
        out.push((k.clone(), n));
    }
    Ok(out)
}

async fn write(
    db: &Db,
    table: &'static str,
    owner_col: &'static str,
    owner: &str,
    vals: Vec<(String, i64)>,
) -> Result<()> {
    let owner = owner.to_string();
    db.transaction(|tx| {
        let (owner, vals) = (owner.clone(), vals.clone());
        Box::pin(async move {
            for (k, n) in vals {
                Query::new(format!("DELETE FROM {table} WHERE {owner_col} = "))
                    .bind(&owner)
                    .push_bind(" AND resource = ", &k)
                    .execute(&mut **tx)
                    .await?;
                let mut q = Query::new(format!("INSERT INTO {table} ({owner_col}, resource, hard_limit) VALUES ("));
                q.bind(&owner).push(", ").bind(&k).push(", ").bind(n).push(")");
                q.execute(&mut **tx).await?;
            }
            Ok::<_, stratus_db::DbError>(())
        })
    })
    .await?;
    Ok(())
}

async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(project): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-quota-sets:update", &ctx, &json!({"project_id": project}))?;
    let vals = parse_limits(&b, "quota_set", |k| visible(v, k))?;
    write(&st.platform.db, "compute_quotas", "project_id", &project, vals).await?;
    let mut qs = quota_set(&st, v, &project, false, &ctx.user_id).await?;
    if let Some(m) = qs.as_object_mut() {
        m.remove("id");
    }
    Ok(Json(json!({"quota_set": qs})))
}

async fn reset(State(st): State<AppState>, ctx: Ctx, Path(project): Path<String>) -> Result<StatusCode, ApiError> {
    st.policy.enforce("os_compute_api:os-quota-sets:delete", &ctx, &json!({"project_id": project}))?;
    let mut q = Query::new("DELETE FROM compute_quotas WHERE project_id = ");
    q.bind(&project);
    st.platform
        .db
        .transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn class_show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(class): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-quota-sets:defaults", &ctx, &json!({}))?;
    let mut m = Map::new();
    m.insert("id".into(), json!(class));
    for (k, _) in DEFAULT_QUOTAS {
        if class_visible(v, k) {
            m.insert(k.to_string(), json!(default_limit(&st.platform.db, k).await?));
        }
    }
    Ok(Json(json!({"quota_class_set": m})))
}

async fn class_update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(class): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-quota-sets:update", &ctx, &json!({}))?;
    // Only the `default` class is consulted, as in Nova.
    let vals = parse_limits(&b, "quota_class_set", |k| class_visible(v, k))?;
    write(&st.platform.db, "compute_quota_classes", "class_name", &class, vals).await?;
    let Json(mut body) = class_show(State(st), ctx, v, Path(class)).await?;
    if let Some(m) = body["quota_class_set"].as_object_mut() {
        m.remove("id");
    }
    Ok(Json(body))
}
