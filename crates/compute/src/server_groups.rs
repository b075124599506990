//! Server groups (`os-server-groups`): affinity, anti-affinity, soft-affinity and
//! soft-anti-affinity, with `rules.max_server_per_host` for anti-affinity (2.64+), the
//! `policies` list shape before 2.64, members added at boot through the `group`
//! scheduler hint, and the `server_groups` / `server_group_members` quotas.
//!
//! For scheduling, a group gives a hard filter (ServerGroupAffinityFilter /
//! ServerGroupAntiAffinityFilter) or a soft weigher that ranks hosts by how many members
//! they already hold. Members are counted from live servers only, so a deleted server
//! leaves its group without bookkeeping.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs, RequestContext};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::{Db, Query};

use crate::error::{ComputeError, Result};
use crate::placement::PlacementApi;
use crate::scheduler::{Filter, HostState};
use crate::servers::store::Instance;
use crate::AppState;

const POLICIES: &[&str] = &["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"];

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-server-groups", get(list).post(create))
        .route("/v2.1/os-server-groups/{id}", get(show).delete(delete))
}

#[derive(Debug, Clone)]
struct Group {
    uuid: String,
    name: String,
    project_id: String,
    user_id: String,
    policy: String,
    rules: Value,
    members: Vec<String>,
}

impl Group {
    fn from_row(r: &AnyRow) -> Result<Self> {
        let rules: String = r.try_get("rules_json")?;
        Ok(Group {
            uuid: r.try_get("uuid")?,
            name: r.try_get("name")?,
            project_id: r.try_get("project_id")?,
            user_id: r.try_get("user_id")?,
            policy: r.try_get("policy")?,
            rules: serde_json::from_str(&rules).unwrap_or(json!({})),
            members: vec![],
        })
    }

    fn view(&self, v: ApiVersion) -> Value {
        let mut o = json!({"id": self.uuid, "name": self.name, "members": self.members});
        if v.at_least(2, 64) {
            o["policy"] = json!(self.policy);
            o["rules"] = self.rules.clone();
        } else {
            o["policies"] = json!([self.policy]);
            o["metadata"] = json!({});
        }
        if v.at_least(2, 13) {
            o["project_id"] = json!(self.project_id);
            o["user_id"] = json!(self.user_id);
        }
        o
    }

    fn target(&self) -> Value {
        json!({"project_id": self.project_id, "user_id": self.user_id})
    }

    fn max_per_host(&self) -> i64 {
        self.rules["max_server_per_host"].as_i64().unwrap_or(1).max(1)
    }
}

/// Live members (servers not deleted) of `groups`, filled in.
async fn fill_members(db: &Db, groups: &mut [Group]) -> Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let mut q = Query::new(
        "SELECT m.group_uuid, m.instance_uuid FROM compute_server_group_members m \
         JOIN compute_instances i ON i.uuid = m.instance_uuid WHERE i.deleted = ",
    );
    q.bind(false).push(" AND ").push_in("m.group_uuid", groups.iter().map(|g| g.uuid.clone()).collect::<Vec<_>>());
    q.push(" ORDER BY m.instance_uuid");
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in q.fetch_all(db.reader()).await? {
        m.entry(r.try_get("group_uuid")?).or_default().push(r.try_get("instance_uuid")?);
    }
    for g in groups {
        g.members = m.remove(&g.uuid).unwrap_or_default();
    }
    Ok(())
}

async fn load(db: &Db, id: &str) -> Result<Option<Group>> {
    let r =
        Query::new("SELECT * FROM compute_server_groups WHERE uuid = ").bind(id).fetch_optional(db.reader()).await?;
    let Some(r) = r else { return Ok(None) };
    let mut g = vec![Group::from_row(&r)?];
    fill_members(db, &mut g).await?;
    Ok(g.pop())
}

/// A group `ctx` may see under `rule` (404 otherwise, as Nova).
async fn visible(st: &AppState, ctx: &RequestContext, id: &str, rule: &str) -> Result<Group, ApiError> {
    let nf = || ComputeError::NotFound(format!("Instance group {id} could not be found."));
    let g = load(&st.platform.db, id).await?.ok_or_else(nf)?;
    if !st.policy.check(rule, ctx, &g.target()) {
        return Err(nf().into());
    }
    Ok(g)
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let project = ctx.project_id.clone().unwrap_or_default();
    st.policy.enforce("os_compute_api:os-server-groups:index", &ctx, &json!({"project_id": project}))?;
    let all = q.get("all_projects").is_some_and(|v| stratus_core::query::parse_bool(v).unwrap_or(true))
        && st.policy.check("os_compute_api:os-server-groups:index:all_projects", &ctx, &json!({}));
    let mut sql = Query::new("SELECT * FROM compute_server_groups");
    if !all {
        sql.push_bind(" WHERE project_id = ", &project);
    }
    sql.push(" ORDER BY created_at, uuid");
    let mut groups = Vec::new();
    for r in sql.fetch_all(st.platform.db.reader()).await.map_err(ComputeError::from)? {
        groups.push(Group::from_row(&r)?);
    }
    let offset = q.int("offset")?.unwrap_or(0).max(0) as usize;
    let limit = q.int("limit")?.map(|l| l.max(0) as usize).unwrap_or(usize::MAX);
    let mut groups: Vec<Group> = groups.into_iter().skip(offset).take(limit).collect();
    fill_members(&st.platform.db, &mut groups).await?;
    Ok(Json(json!({"server_groups": groups.iter().map(|g| g.view(v)).collect::<Vec<_>>()})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let g = visible(&st, &ctx, &id, "os_compute_api:os-server-groups:show").await?;
    Ok(Json(json!({"server_group": g.view(v)})))
}

async fn delete(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let g = visible(&st, &ctx, &id, "os_compute_api:os-server-groups:delete").await?;
    let mut q = Query::new("DELETE FROM compute_server_groups WHERE uuid = ");
    q.bind(&g.uuid);
    st.platform
        .db
        .transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await
        .map_err(ComputeError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let project = ctx
        .project_id
        .clone()
        .ok_or_else(|| ComputeError::Forbidden("A project-scoped token is required to create server groups".into()))?;
    st.policy.enforce(
        "os_compute_api:os-server-groups:create",
        &ctx,
        &json!({"project_id": project, "user_id": ctx.user_id}),
    )?;
    let g = b.get("server_group").and_then(Value::as_object).ok_or_else(|| {
        ComputeError::BadRequest(
            "Invalid input for field/attribute server_group: 'server_group' is a required property".into(),
        )
    })?;
    let name = g.get("name").and_then(Value::as_str).map(str::trim).filter(|n| !n.is_empty() && n.len() <= 255);
    let name = name.ok_or_else(|| {
        ComputeError::BadRequest("Invalid input for field/attribute name: must be 1-255 characters".into())
    })?;
    let allowed: &[&str] = if v.at_least(2, 15) { POLICIES } else { &POLICIES[..2] };
    let (policy, rules) = if v.at_least(2, 64) {
        if g.contains_key("policies") {
            return Err(
                ComputeError::BadRequest("'policies' was replaced by 'policy' in microversion 2.64".into()).into()
            );
        }
        let p = g.get("policy").and_then(Value::as_str).unwrap_or("");
        let rules = g.get("rules").cloned().unwrap_or(json!({}));
        let Some(r) = rules.as_object() else {
            return Err(ComputeError::BadRequest("rules must be an object".into()).into());
        };
        for (k, val) in r {
            if k != "max_server_per_host" {
                return Err(ComputeError::BadRequest(format!("Unknown server group rule {k}")).into());
            }
            if p != "anti-affinity" {
                return Err(ComputeError::BadRequest("Only anti-affinity policy supports rules.".into()).into());
            }
            if val.as_i64().is_none_or(|n| n < 1) {
                return Err(ComputeError::BadRequest("max_server_per_host must be a positive integer".into()).into());
            }
        }
        (p.to_string(), rules)
    } else {
        let ps: Vec<&str> = g
            .get("policies")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if ps.len() != 1 {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute policies: exactly one policy is required".into(),
            )
            .into());
        }
        (ps[0].to_string(), json!({}))
    };
    if !allowed.contains(&policy.as_str()) {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute policy. Value: {policy}. It must be one of {allowed:?}"
        ))
        .into());
    }
    let limit = crate::servers::quota_limit(&st, &project, "server_groups").await?;
    let uuid = uuid::Uuid::new_v4().to_string();
    let row = (uuid.clone(), name.to_string(), project.clone(), ctx.user_id.clone(), policy, rules.to_string());
    st.platform
        .db
        .transaction(|tx| {
            let (uuid, name, project, user, policy, rules) = row.clone();
            Box::pin(async move {
                let n: i64 = Query::new("SELECT COUNT(*) AS n FROM compute_server_groups WHERE project_id = ")
                    .bind(&project)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.try_get("n"))
                    .transpose()?
                    .unwrap_or(0);
                if limit >= 0 && n + 1 > limit {
                    return Err(ComputeError::QuotaExceeded { resource: "server_groups".into(), requested: 1, used: n, allowed: limit });
                }
                let mut q = Query::new("INSERT INTO compute_server_groups (uuid, name, project_id, user_id, policy, rules_json, created_at) VALUES (");
                q.bind(&uuid).push(", ").bind(&name).push(", ").bind(&project).push(", ").bind(&user).push(", ");
                q.bind(&policy).push(", ").bind(&rules).push(", ").bind(stratus_core::time::now()).push(")");
                q.execute(&mut **tx).await?;
                Ok::<_, ComputeError>(())
            })
        })
        .await?;
    let g =
        load(&st.platform.db, &uuid).await?.ok_or_else(|| ComputeError::NotFound("server group vanished".into()))?;
    Ok(Json(json!({"server_group": g.view(v)})))
}

/// Number of groups of a project (quota usage).
pub async fn count(db: &Db, project: &str) -> Result<i64> {
    Ok(Query::new("SELECT COUNT(*) AS n FROM compute_server_groups WHERE project_id = ")
        .bind(project)
        .fetch_optional(db.reader())
        .await?
        .map(|r| r.try_get("n"))
        .transpose()?
        .unwrap_or(0))
}

/// The `group` hint of a server create: the group must exist and be visible, and
/// The group a boot asked for, with its project's `server_group_members` limit.
#[derive(Debug, Clone)]
pub struct GroupHint {
    /// Group uuid.
    pub uuid: String,
    /// Most live members (-1: unlimited).
    pub limit: i64,
}

/// `adding` more members must fit `server_group_members` (an early answer; the
/// binding check is [`add_members_tx`], in the transaction that creates the servers).
pub async fn check_hint(
    st: &AppState,
    ctx: &RequestContext,
    hints: &Value,
    adding: i64,
) -> Result<Option<GroupHint>, ApiError> {
    let id = match &hints["group"] {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_string(),
        other => return Err(ComputeError::BadRequest(format!("Invalid group hint {other}")).into()),
    };
    let g = match load(&st.platform.db, &id).await? {
        Some(g) if st.policy.check("os_compute_api:os-server-groups:show", ctx, &g.target()) => g,
        _ => return Err(ComputeError::BadRequest(format!("Invalid server group {id}: it does not exist")).into()),
    };
    let limit = crate::servers::quota_limit(st, &g.project_id, "server_group_members").await?;
    let used = g.members.len() as i64;
    if limit >= 0 && used + adding > limit {
        return Err(ComputeError::QuotaExceeded {
            resource: "server_group_members".into(),
            requested: adding,
            used,
            allowed: limit,
        }
        .into());
    }
    Ok(Some(GroupHint { uuid: g.uuid, limit }))
}

/// The groups a server is in (the server view's `server_groups`, 2.71+).
pub async fn of_instance(db: &Db, uuid: &str) -> Result<Vec<String>> {
    let rows = Query::new("SELECT group_uuid FROM compute_server_group_members WHERE instance_uuid = ")
        .bind(uuid)
        .fetch_all(db.reader())
        .await?;
    rows.iter().map(|r| Ok(r.try_get("group_uuid")?)).collect()
}

/// Records new members of a group inside the transaction that creates them, after
/// counting the live members in that same transaction: concurrent boots into one group
/// cannot together exceed `server_group_members` (on SQLite the single writer orders
/// them; on PostgreSQL SERIALIZABLE makes the later one retry and see the others).
pub async fn add_members_tx(tx: &mut stratus_db::Tx, g: &GroupHint, uuids: &[String]) -> Result<()> {
    if g.limit >= 0 {
        let used: i64 = Query::new(
            "SELECT COUNT(*) AS n FROM compute_server_group_members m \
             JOIN compute_instances i ON i.uuid = m.instance_uuid WHERE i.deleted = ",
        )
        .bind(false)
        .push_bind(" AND m.group_uuid = ", &g.uuid)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.try_get("n"))
        .transpose()?
        .unwrap_or(0);
        let adding = uuids.len() as i64;
        if used + adding > g.limit {
            return Err(ComputeError::QuotaExceeded {
                resource: "server_group_members".into(),
                requested: adding,
                used,
                allowed: g.limit,
            });
        }
    }
    for u in uuids {
        let mut q = Query::new("INSERT INTO compute_server_group_members (group_uuid, instance_uuid) VALUES (");
        q.bind(&g.uuid).push(", ").bind(u).push(") ON CONFLICT DO NOTHING");
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A soft weigher: higher is better.
pub(crate) type Weigher = Box<dyn Fn(&HostState) -> f64 + Send + Sync>;

/// Per-group locks: a hard-policy group schedules one member at a time, from filter to
/// claim, so two concurrent boots cannot both pass the (anti-)affinity filter.
static GROUP_LOCKS: std::sync::LazyLock<parking_lot::Mutex<BTreeMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>> =
    std::sync::LazyLock::new(Default::default);

/// Held while a member of a hard-policy group is being placed.
pub(crate) type GroupGuard = tokio::sync::OwnedMutexGuard<()>;

/// What a group adds to scheduling one of its members.
pub(crate) struct GroupScheduling {
    /// Hard filters.
    pub filters: Vec<Filter>,
    /// Soft weigher.
    pub weigher: Option<Weigher>,
    /// Serializes the group's placements (hard policies).
    pub guard: Option<GroupGuard>,
}

/// The group filter or weigher for an instance that is in a group. Where the other
/// members are is read from their placement allocations, which the claim of each
/// member writes before the group lock is released.
pub(crate) async fn scheduling(db: &Db, placement: &dyn PlacementApi, inst: &Instance) -> Result<GroupScheduling> {
    let none = || GroupScheduling { filters: vec![], weigher: None, guard: None };
    // Servers join groups only through the `group` hint at boot, which the row keeps:
    // without it there is nothing to read (one query less per boot).
    if inst.scheduler_hints.get("group").is_none_or(Value::is_null) {
        return Ok(none());
    }
    let r = Query::new("SELECT group_uuid FROM compute_server_group_members WHERE instance_uuid = ")
        .bind(&inst.uuid)
        .fetch_optional(db.reader())
        .await?;
    let Some(r) = r else { return Ok(none()) };
    let gid: String = r.try_get("group_uuid")?;
    let hard = {
        let Some(g) = load(db, &gid).await? else { return Ok(none()) };
        g.policy == "affinity" || g.policy == "anti-affinity"
    };
    let guard = if hard {
        let lock = GROUP_LOCKS.lock().entry(gid.clone()).or_default().clone();
        Some(lock.lock_owned().await)
    } else {
        None
    };
    // Read after the lock: members placed meanwhile are seen.
    let Some(g) = load(db, &gid).await? else { return Ok(none()) };
    let mut node_host: BTreeMap<String, String> = BTreeMap::new();
    for r in Query::new("SELECT id, host FROM compute_nodes").fetch_all(db.reader()).await? {
        node_host.insert(r.try_get("id")?, r.try_get("host")?);
    }
    let mut per_host: BTreeMap<String, i64> = BTreeMap::new();
    for m in g.members.iter().filter(|m| **m != inst.uuid) {
        let allocs = placement.allocations(m).await.map_err(|e| ComputeError::Unavailable(e.to_string()))?;
        let hosts: std::collections::BTreeSet<&String> = allocs.keys().filter_map(|rp| node_host.get(rp)).collect();
        for h in hosts {
            *per_host.entry(h.clone()).or_default() += 1;
        }
    }
    let max = g.max_per_host();
    let (filters, weigher): (Vec<Filter>, Option<Weigher>) = match g.policy.as_str() {
        "affinity" => (
            vec![(
                "ServerGroupAffinityFilter",
                Box::new(move |h: &HostState| per_host.is_empty() || per_host.contains_key(&h.host)) as _,
            )],
            None,
        ),
        "anti-affinity" => (
            vec![(
                "ServerGroupAntiAffinityFilter",
                Box::new(move |h: &HostState| per_host.get(&h.host).copied().unwrap_or(0) < max) as _,
            )],
            None,
        ),
        "soft-affinity" => {
            (vec![], Some(Box::new(move |h: &HostState| per_host.get(&h.host).copied().unwrap_or(0) as f64) as Weigher))
        }
        _ => (
            vec![],
            Some(Box::new(move |h: &HostState| -(per_host.get(&h.host).copied().unwrap_or(0) as f64)) as Weigher),
        ),
    };
    Ok(GroupScheduling { filters, weigher, guard })
}
