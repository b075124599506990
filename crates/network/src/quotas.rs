//! Quotas: per-project limits (`/quotas/{project}`, `/quotas/{project}/details`),
//! enforced inside the creating transaction, so concurrent creates cannot overshoot:
//! SQLite has a single writer, and on PostgreSQL `stratus_db` runs write transactions
//! SERIALIZABLE, so of two racing count-then-insert transactions one aborts and is
//! retried (the concurrency tests pass on both). The check also upserts the (project,
//! resource) row of `network_quota_locks` before counting, which keeps the guarantee
//! (the racers queue on that row) should write transactions ever run READ COMMITTED.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::OsJson;
use stratus_db::sqlx::Row;
use stratus_db::{Query, Tx};

use crate::body::{self, Bool, Int, Opt};
use crate::error::{invalid, NetError, NetResult};
use crate::policy::enforce;
use crate::store;
use crate::{NetworkConfig, S};

/// `PUT /v2.0/quotas/{project}`: new limits (`-1` = unlimited); `force` and
/// `check_limit` are accepted and have no effect here (limits below usage are allowed).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct QuotaUpdate {
    network: Opt<Int>,
    subnet: Opt<Int>,
    subnetpool: Opt<Int>,
    port: Opt<Int>,
    router: Opt<Int>,
    floatingip: Opt<Int>,
    security_group: Opt<Int>,
    security_group_rule: Opt<Int>,
    rbac_policy: Opt<Int>,
    force: Opt<Bool>,
    check_limit: Opt<Bool>,
}

/// Quota routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/quotas", get(list))
        .route("/v2.0/quotas/{project}", get(show).put(update).delete(reset))
        .route("/v2.0/quotas/{project}/details", get(details))
        .route("/v2.0/quotas/{project}/default", get(defaults))
}

/// Quota resource names and the kinds they count.
pub const RESOURCES: &[(&str, &str)] = &[
    ("network", store::kind::NETWORK),
    ("subnet", store::kind::SUBNET),
    ("subnetpool", store::kind::SUBNETPOOL),
    ("port", store::kind::PORT),
    ("router", store::kind::ROUTER),
    ("floatingip", store::kind::FLOATINGIP),
    ("security_group", store::kind::SECURITY_GROUP),
    ("security_group_rule", store::kind::SECURITY_GROUP_RULE),
    ("rbac_policy", store::kind::RBAC_POLICY),
];

fn default_limit(cfg: &NetworkConfig, resource: &str) -> i64 {
    let q = &cfg.quotas;
    match resource {
        "network" => q.network,
        "subnet" => q.subnet,
        "subnetpool" => q.subnetpool,
        "port" => q.port,
        "router" => q.router,
        "floatingip" => q.floatingip,
        "security_group" => q.security_group,
        "security_group_rule" => q.security_group_rule,
        "rbac_policy" => q.rbac_policy,
        _ => -1,
    }
}

async fn limits<'e, E>(ex: E, cfg: &NetworkConfig, project: &str) -> NetResult<Map<String, Value>>
where
    E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
{
    let mut q = Query::new("SELECT resource, hard_limit FROM network_quotas WHERE project_id = ");
    q.bind(project);
    let rows = q.fetch_all(ex).await?;
    let mut m = Map::new();
    for (r, _) in RESOURCES {
        m.insert(r.to_string(), json!(default_limit(cfg, r)));
    }
    for row in rows {
        let (r, l): (String, i64) =
            (row.try_get("resource").unwrap_or_default(), row.try_get("hard_limit").unwrap_or(-1));
        m.insert(r, json!(l));
    }
    Ok(m)
}

/// Refuses with `OverQuota` when `project` already holds its limit of `resource`.
pub async fn check(tx: &mut Tx, cfg: &NetworkConfig, project: &str, resource: &str, adding: i64) -> NetResult<()> {
    if project.is_empty() {
        return Ok(());
    }
    let mut q = Query::new("SELECT hard_limit FROM network_quotas WHERE project_id = ");
    q.bind(project).push(" AND resource = ").bind(resource);
    let limit = match q.fetch_optional(&mut **tx).await? {
        Some(r) => r.try_get::<i64, _>("hard_limit").unwrap_or(-1),
        None => default_limit(cfg, resource),
    };
    if limit < 0 {
        return Ok(());
    }
    let mut lock = Query::new("INSERT INTO network_quota_locks (project_id, resource, serial) VALUES (");
    lock.bind(project).push(", ").bind(resource).push(", 1) ON CONFLICT (project_id, resource) DO UPDATE SET ");
    lock.push("serial = network_quota_locks.serial + 1");
    lock.execute(&mut **tx).await?;
    let kind = RESOURCES.iter().find(|(r, _)| *r == resource).map(|(_, k)| *k).unwrap_or(resource);
    let used = store::count(&mut **tx, kind, project).await?;
    if used + adding > limit {
        return Err(NetError::OverQuota(resource.to_string()));
    }
    Ok(())
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(project): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_quota", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    Ok(Json(json!({"quota": limits(st.db.reader(), &st.cfg, &project).await?})))
}

async fn defaults(State(st): State<S>, Ctx(ctx): Ctx, Path(project): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_quota", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    let m: Map<String, Value> =
        RESOURCES.iter().map(|(r, _)| (r.to_string(), json!(default_limit(&st.cfg, r)))).collect();
    Ok(Json(json!({"quota": m})))
}

async fn details(State(st): State<S>, Ctx(ctx): Ctx, Path(project): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_quota", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    let lim = limits(st.db.reader(), &st.cfg, &project).await?;
    let mut m = Map::new();
    for (r, k) in RESOURCES {
        let used = store::count(st.db.reader(), k, &project).await?;
        m.insert(
            r.to_string(),
            json!({"used": used, "limit": lim.get(*r).cloned().unwrap_or(json!(-1)), "reserved": 0}),
        );
    }
    Ok(Json(json!({"quota": m})))
}

async fn list(State(st): State<S>, Ctx(ctx): Ctx) -> NetResult<Json<Value>> {
    enforce(&st.policy, "update_quota", &ctx, &json!({}))?;
    let rows = stratus_db::sqlx::query("SELECT DISTINCT project_id FROM network_quotas ORDER BY project_id")
        .fetch_all(st.db.reader())
        .await
        .map_err(stratus_db::DbError::from)?;
    let mut out = Vec::new();
    for r in rows {
        let p: String = r.try_get("project_id").unwrap_or_default();
        let mut m = limits(st.db.reader(), &st.cfg, &p).await?;
        m.insert("project_id".into(), json!(p));
        m.insert("tenant_id".into(), json!(p));
        out.push(Value::Object(m));
    }
    Ok(Json(json!({"quotas": out})))
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(project): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    enforce(&st.policy, "update_quota", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    let req: QuotaUpdate = body::parse(body::one(req, "quota")?)?;
    let _ = (req.force.opt(), req.check_limit.opt());
    let mut sets = Vec::new();
    for (k, v) in [
        ("network", req.network.opt()),
        ("subnet", req.subnet.opt()),
        ("subnetpool", req.subnetpool.opt()),
        ("port", req.port.opt()),
        ("router", req.router.opt()),
        ("floatingip", req.floatingip.opt()),
        ("security_group", req.security_group.opt()),
        ("security_group_rule", req.security_group_rule.opt()),
        ("rbac_policy", req.rbac_policy.opt()),
    ] {
        let Some(n) = v else { continue };
        if n < -1 {
            return Err(invalid(format!("'{n}' is not a valid quota value for {k}; use an integer >= -1")));
        }
        sets.push((k.to_string(), n));
    }
    st.db
        .transaction(|tx| {
            let (sets, project) = (sets.clone(), project.clone());
            Box::pin(async move {
                for (r, n) in &sets {
                    let mut q = Query::new("INSERT INTO network_quotas (project_id, resource, hard_limit) VALUES (");
                    q.bind(&project).push(", ").bind(r).push(", ").bind(*n);
                    q.push(") ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = ").bind(*n);
                    q.execute(&mut **tx).await?;
                }
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(Json(json!({"quota": limits(st.db.reader(), &st.cfg, &project).await?})))
}

async fn reset(State(st): State<S>, Ctx(ctx): Ctx, Path(project): Path<String>) -> NetResult<StatusCode> {
    enforce(&st.policy, "delete_quota", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    st.db
        .transaction(|tx| {
            let project = project.clone();
            Box::pin(async move {
                let mut q = Query::new("DELETE FROM network_quotas WHERE project_id = ");
                q.bind(&project);
                q.execute(&mut **tx).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
