//! Host aggregates (`os-aggregates`, admin only): CRUD, `add_host`/`remove_host`,
//! `set_metadata`, and what they mean for scheduling.
//!
//! An aggregate is mirrored into placement as a provider aggregate (same uuid) on the
//! resource provider of each member host, so the scheduler can ask placement for
//! candidates `member_of` the aggregates of a requested availability zone. The
//! `availability_zone` metadata key makes an AZ: each host's zone (kept on its service
//! row, which `os-services`, `os-availability-zone` and the AZ filter read) is the zone of
//! the aggregate that names one, else the default zone; a host cannot be in two zones.
//! Aggregate metadata also feeds `AggregateInstanceExtraSpecsFilter`.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::time::micros_naive;
use stratus_core::{ApiError, ApiVersion, OsJson};
use stratus_db::sqlx::Row;
use stratus_db::{Db, Query};

use crate::error::{ComputeError, Result};
use crate::scheduler::{Filter, HostState};
use crate::servers::store::Instance;
use crate::AppState;

/// The metadata key that turns an aggregate into an availability zone.
const AZ_KEY: &str = "availability_zone";
/// The zone of the controller services; no aggregate may use it.
const INTERNAL_ZONE: &str = "internal";

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-aggregates", get(list).post(create))
        .route("/v2.1/os-aggregates/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/os-aggregates/{id}/action", post(action))
}

#[derive(Debug, Clone)]
struct Aggregate {
    id: i64,
    uuid: String,
    name: String,
    created_at: String,
    updated_at: Option<String>,
    hosts: Vec<String>,
    metadata: BTreeMap<String, String>,
}

impl Aggregate {
    fn az(&self) -> Option<&str> {
        self.metadata.get(AZ_KEY).map(String::as_str)
    }

    fn view(&self, v: ApiVersion, full: bool) -> Value {
        let mut o = json!({
            "id": self.id,
            "name": self.name,
            "availability_zone": self.az(),
            "created_at": micros_naive(&self.created_at),
            "updated_at": self.updated_at.as_deref().map(micros_naive),
            "deleted": false,
            "deleted_at": null,
        });
        if full {
            o["hosts"] = json!(self.hosts);
            o["metadata"] = json!(self.metadata);
        }
        if v.at_least(2, 41) {
            o["uuid"] = json!(self.uuid);
        }
        o
    }
}

async fn load_all(db: &Db) -> Result<Vec<Aggregate>> {
    let rows = Query::new("SELECT * FROM compute_aggregates ORDER BY id").fetch_all(db.reader()).await?;
    let mut out: Vec<Aggregate> = Vec::new();
    for r in rows {
        out.push(Aggregate {
            id: r.try_get("id")?,
            uuid: r.try_get("uuid")?,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            hosts: vec![],
            metadata: BTreeMap::new(),
        });
    }
    for r in Query::new("SELECT aggregate_id, host FROM compute_aggregate_hosts ORDER BY host")
        .fetch_all(db.reader())
        .await?
    {
        let id: i64 = r.try_get("aggregate_id")?;
        if let Some(a) = out.iter_mut().find(|a| a.id == id) {
            a.hosts.push(r.try_get("host")?);
        }
    }
    for r in Query::new("SELECT aggregate_id, meta_key, meta_value FROM compute_aggregate_metadata")
        .fetch_all(db.reader())
        .await?
    {
        let id: i64 = r.try_get("aggregate_id")?;
        if let Some(a) = out.iter_mut().find(|a| a.id == id) {
            a.metadata.insert(r.try_get("meta_key")?, r.try_get("meta_value")?);
        }
    }
    Ok(out)
}

async fn load(db: &Db, id: &str) -> Result<Aggregate> {
    let nf = || ComputeError::NotFound(format!("Aggregate {id} could not be found."));
    let n: i64 = id.parse().map_err(|_| nf())?;
    load_all(db).await?.into_iter().find(|a| a.id == n).ok_or_else(nf)
}

async fn exec(db: &Db, qs: Vec<Query>) -> Result<()> {
    db.transaction(|tx| {
        let qs = qs.clone();
        Box::pin(async move {
            for q in qs {
                q.execute(&mut **tx).await?;
            }
            Ok::<_, ComputeError>(())
        })
    })
    .await
}

fn validate_name(v: &Value) -> Result<String> {
    let n = v.as_str().map(str::trim).unwrap_or("");
    if n.is_empty() || n.len() > 255 {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute name: must be 1-255 characters".into(),
        ));
    }
    Ok(n.to_string())
}

fn validate_az(v: &Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(z) if !z.trim().is_empty() && z.len() <= 255 && !z.contains(':') => {
            if z == INTERNAL_ZONE {
                return Err(ComputeError::BadRequest(format!(
                    "The availability zone {z} is reserved for the controller services"
                )));
            }
            Ok(Some(z.clone()))
        }
        other => Err(ComputeError::BadRequest(format!("Invalid availability_zone {other}"))),
    }
}

/// A host may only be in one zone: every other aggregate holding one of `hosts` must
/// name the same zone (or none).
fn check_zone_conflict(all: &[Aggregate], me: i64, hosts: &[String], zone: Option<&str>) -> Result<()> {
    let Some(zone) = zone else { return Ok(()) };
    for a in all.iter().filter(|a| a.id != me) {
        if let Some(other) = a.az() {
            if other != zone {
                if let Some(h) = a.hosts.iter().find(|h| hosts.contains(h)) {
                    return Err(ComputeError::Conflict(format!(
                        "Host {h} is already in availability zone {other} (aggregate {}); it cannot also be in {zone}",
                        a.id
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Writes each host's zone onto its service row (NULL: the default zone).
async fn sync_zones(db: &Db, hosts: &BTreeSet<String>) -> Result<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    let all = load_all(db).await?;
    let mut qs = Vec::new();
    for h in hosts {
        let zone = all.iter().filter(|a| a.hosts.contains(h)).find_map(|a| a.az().map(str::to_string));
        let mut q = Query::new("UPDATE compute_services SET availability_zone = ");
        q.bind(zone).push_bind(" WHERE host = ", h);
        qs.push(q);
    }
    exec(db, qs).await?;
    crate::scheduler::services_changed();
    Ok(())
}

/// Mirrors membership into placement on the host's resource provider.
async fn mirror(st: &AppState, host: &str, agg_uuid: &str, add: bool) -> Result<()> {
    let r = Query::new("SELECT id FROM compute_nodes WHERE host = ")
        .bind(host)
        .fetch_optional(st.platform.db.reader())
        .await?;
    let Some(r) = r else { return Ok(()) };
    let node: String = r.try_get("id")?;
    let p = &st.backends.placement;
    let mut aggs = p.provider_aggregates(&node).await.map_err(|e| ComputeError::Unavailable(e.to_string()))?;
    aggs.retain(|a| a != agg_uuid);
    if add {
        aggs.push(agg_uuid.to_string());
    }
    p.set_provider_aggregates(&node, &aggs).await.map_err(|e| ComputeError::Unavailable(e.to_string()))
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-aggregates:index", &ctx, &json!({}))?;
    let list: Vec<Value> = load_all(&st.platform.db).await?.iter().map(|a| a.view(v, true)).collect();
    Ok(Json(json!({"aggregates": list})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-aggregates:show", &ctx, &json!({}))?;
    Ok(Json(json!({"aggregate": load(&st.platform.db, &id).await?.view(v, true)})))
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-aggregates:create", &ctx, &json!({}))?;
    let a = b.get("aggregate").filter(|a| a.is_object()).ok_or_else(|| {
        ComputeError::BadRequest(
            "Invalid input for field/attribute aggregate: 'aggregate' is a required property".into(),
        )
    })?;
    let name = validate_name(&a["name"])?;
    let az = validate_az(&a[AZ_KEY])?;
    let db = &st.platform.db;
    let uuid = uuid::Uuid::new_v4().to_string();
    let now = stratus_core::time::now();
    let (n2, u2, az2) = (name.clone(), uuid.clone(), az.clone());
    let r = db
        .transaction(|tx| {
            let (name, uuid, az, now) = (n2.clone(), u2.clone(), az2.clone(), now.clone());
            Box::pin(async move {
                let taken = Query::new("SELECT 1 FROM compute_aggregates WHERE name = ")
                    .bind(&name)
                    .fetch_optional(&mut **tx)
                    .await?;
                if taken.is_some() {
                    return Err(ComputeError::Conflict(format!("Aggregate {name} already exists.")));
                }
                let id = crate::sequences::next_id(tx, "compute_aggregates").await?;
                let mut q = Query::new("INSERT INTO compute_aggregates (id, uuid, name, created_at) VALUES (");
                q.bind(id).push(", ").bind(&uuid).push(", ").bind(&name).push(", ").bind(&now).push(")");
                q.execute(&mut **tx).await?;
                if let Some(z) = az {
                    let mut q = Query::new(
                        "INSERT INTO compute_aggregate_metadata (aggregate_id, meta_key, meta_value) VALUES (",
                    );
                    q.bind(id).push(", ").bind(AZ_KEY).push(", ").bind(z).push(")");
                    q.execute(&mut **tx).await?;
                }
                Ok(id)
            })
        })
        .await?;
    let a = load(db, &r.to_string()).await?;
    Ok(Json(json!({"aggregate": a.view(v, false)})))
}

async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-aggregates:update", &ctx, &json!({}))?;
    let body = b.get("aggregate").and_then(Value::as_object).filter(|o| !o.is_empty()).ok_or_else(|| {
        ComputeError::BadRequest(
            "Invalid input for field/attribute aggregate: name or availability_zone is required".into(),
        )
    })?;
    let db = &st.platform.db;
    let a = load(db, &id).await?;
    let mut meta = BTreeMap::new();
    let mut name = None;
    for (k, val) in body {
        match k.as_str() {
            "name" => name = Some(validate_name(val)?),
            AZ_KEY => {
                meta.insert(AZ_KEY.to_string(), validate_az(val)?);
            }
            other => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute aggregate. Additional properties are not allowed ('{other}' was unexpected)"
                ))
                .into())
            }
        }
    }
    if let Some(n) = &name {
        if load_all(db).await?.iter().any(|x| x.id != a.id && &x.name == n) {
            return Err(ComputeError::Conflict(format!("Aggregate {n} already exists.")).into());
        }
    }
    write_metadata(&st, &a, name, meta).await?;
    Ok(Json(json!({"aggregate": load(db, &id).await?.view(v, true)})))
}

/// Applies a rename and metadata changes (None value: remove the key), keeping zones
/// consistent.
async fn write_metadata(
    st: &AppState,
    a: &Aggregate,
    name: Option<String>,
    meta: BTreeMap<String, Option<String>>,
) -> Result<()> {
    let db = &st.platform.db;
    if let Some(z) = meta.get(AZ_KEY) {
        check_zone_conflict(&load_all(db).await?, a.id, &a.hosts, z.as_deref())?;
    }
    let mut qs = Vec::new();
    let mut q = Query::new("UPDATE compute_aggregates SET updated_at = ");
    q.bind(stratus_core::time::now());
    if let Some(n) = &name {
        q.push_bind(", name = ", n);
    }
    q.push_bind(" WHERE id = ", a.id);
    qs.push(q);
    for (k, val) in &meta {
        let mut d = Query::new("DELETE FROM compute_aggregate_metadata WHERE aggregate_id = ");
        d.bind(a.id).push_bind(" AND meta_key = ", k);
        qs.push(d);
        if let Some(val) = val {
            let mut i =
                Query::new("INSERT INTO compute_aggregate_metadata (aggregate_id, meta_key, meta_value) VALUES (");
            i.bind(a.id).push(", ").bind(k).push(", ").bind(val).push(")");
            qs.push(i);
        }
    }
    exec(db, qs).await?;
    if meta.contains_key(AZ_KEY) {
        sync_zones(db, &a.hosts.iter().cloned().collect()).await?;
    }
    Ok(())
}

async fn delete(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    st.policy.enforce("os_compute_api:os-aggregates:delete", &ctx, &json!({}))?;
    let db = &st.platform.db;
    let a = load(db, &id).await?;
    if !a.hosts.is_empty() {
        return Err(ComputeError::BadRequest(format!(
            "Cannot remove aggregate {id}: it still has hosts {}",
            a.hosts.join(", ")
        ))
        .into());
    }
    let mut q = Query::new("DELETE FROM compute_aggregates WHERE id = ");
    q.bind(a.id);
    exec(db, vec![q]).await?;
    Ok(StatusCode::OK)
}

async fn action(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let obj = b.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        ComputeError::BadRequest("The action body must have exactly one key naming the action".into())
    })?;
    let (name, args) = obj.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap_or_default();
    let db = &st.platform.db;
    match name.as_str() {
        "add_host" | "remove_host" => {
            let add = name == "add_host";
            st.policy.enforce(
                if add { "os_compute_api:os-aggregates:add_host" } else { "os_compute_api:os-aggregates:remove_host" },
                &ctx,
                &json!({}),
            )?;
            let host = args["host"]
                .as_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    ComputeError::BadRequest(format!(
                        "Invalid input for field/attribute {name}: 'host' is a required property"
                    ))
                })?
                .to_string();
            let a = load(db, &id).await?;
            if add {
                let known = Query::new("SELECT 1 FROM compute_services WHERE host = ")
                    .bind(&host)
                    .fetch_optional(db.reader())
                    .await
                    .map_err(ComputeError::from)?;
                if known.is_none() {
                    return Err(ComputeError::NotFound(format!("Compute host {host} could not be found.")).into());
                }
                if a.hosts.contains(&host) {
                    return Err(ComputeError::Conflict(format!("Aggregate {id} already has host {host}.")).into());
                }
                check_zone_conflict(&load_all(db).await?, a.id, std::slice::from_ref(&host), a.az())?;
                let mut q = Query::new("INSERT INTO compute_aggregate_hosts (aggregate_id, host) VALUES (");
                q.bind(a.id).push(", ").bind(&host).push(")");
                exec(db, vec![q]).await?;
            } else {
                if !a.hosts.contains(&host) {
                    return Err(ComputeError::NotFound(format!(
                        "Cannot remove host {host} in aggregate {id}: it is not a member"
                    ))
                    .into());
                }
                let mut q = Query::new("DELETE FROM compute_aggregate_hosts WHERE aggregate_id = ");
                q.bind(a.id).push_bind(" AND host = ", &host);
                exec(db, vec![q]).await?;
            }
            mirror(&st, &host, &a.uuid, add).await?;
            sync_zones(db, &[host].into_iter().collect()).await?;
        }
        "set_metadata" => {
            st.policy.enforce("os_compute_api:os-aggregates:set_metadata", &ctx, &json!({}))?;
            let m = args["metadata"].as_object().ok_or_else(|| {
                ComputeError::BadRequest(
                    "Invalid input for field/attribute set_metadata: 'metadata' is a required property".into(),
                )
            })?;
            let mut meta = BTreeMap::new();
            for (k, val) in m {
                if k.is_empty() || k.len() > 255 {
                    return Err(ComputeError::BadRequest("Metadata keys must be 1-255 characters".into()).into());
                }
                let val = match val {
                    Value::Null => None,
                    Value::String(s) if s.len() <= 255 => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    other => return Err(ComputeError::BadRequest(format!("Invalid metadata value {other}")).into()),
                };
                if k == AZ_KEY {
                    validate_az(&json!(val))?;
                }
                meta.insert(k.clone(), val);
            }
            let a = load(db, &id).await?;
            write_metadata(&st, &a, None, meta).await?;
        }
        other => return Err(ComputeError::BadRequest(format!("There is no such aggregate action: {other}")).into()),
    }
    Ok(Json(json!({"aggregate": load(db, &id).await?.view(v, true)})))
}

// --- scheduling ------------------------------------------------------------------------------

/// Host → merged metadata of its aggregates (values of one key from several aggregates
/// are all kept).
async fn host_metadata(db: &Db) -> Result<BTreeMap<String, BTreeMap<String, BTreeSet<String>>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for a in load_all(db).await? {
        for h in &a.hosts {
            let e = out.entry(h.clone()).or_default();
            for (k, v) in &a.metadata {
                e.entry(k.clone()).or_default().extend(v.split(',').map(|s| s.trim().to_string()));
            }
        }
    }
    Ok(out)
}

/// What aggregates add to a scheduling request: the placement `member_of` for a
/// requested zone that an aggregate defines, and `AggregateInstanceExtraSpecsFilter`.
pub(crate) async fn scheduling(db: &Db, inst: &Instance, default_az: &str) -> Result<(Vec<String>, Vec<Filter>)> {
    // Nothing is read unless the request needs it (boots without a zone or aggregate
    // extra specs cost no query here).
    let mut member_of = Vec::new();
    if let Some(z) = inst.requested_az.as_deref().filter(|z| *z != default_az) {
        let mut q = Query::new(
            "SELECT a.uuid FROM compute_aggregates a JOIN compute_aggregate_metadata m ON m.aggregate_id = a.id \
             WHERE m.meta_key = ",
        );
        q.bind(AZ_KEY).push_bind(" AND m.meta_value = ", z);
        for r in q.fetch_all(db.reader()).await? {
            member_of.push(r.try_get("uuid")?);
        }
    }
    // Flavor extra specs scoped `aggregate_instance_extra_specs:` (or unscoped) must
    // match the host's aggregate metadata.
    let wanted: Vec<(String, String)> = inst
        .flavor
        .extra_specs
        .iter()
        .filter_map(|(k, v)| match k.split_once(':') {
            Some(("aggregate_instance_extra_specs", key)) => Some((key.to_string(), v.clone())),
            None => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let mut filters: Vec<Filter> = Vec::new();
    if !wanted.is_empty() {
        let meta = host_metadata(db).await?;
        filters.push((
            "AggregateInstanceExtraSpecsFilter",
            Box::new(move |h: &HostState| {
                let m = meta.get(&h.host);
                wanted.iter().all(|(k, v)| {
                    m.and_then(|m| m.get(k)).is_some_and(|vals| v.split(',').any(|x| vals.contains(x.trim())))
                })
            }),
        ));
    }
    Ok((member_of, filters))
}
