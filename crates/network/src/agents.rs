//! Agents: the network agents (Linux bridge, DHCP, L3, metadata) report heartbeats; the
//! API lists them with `alive` computed from the last heartbeat.
//!
//! Agents run in-process beside the API (or, later, on other hosts over the bus) and call
//! [`report`] directly or `POST /network/internal/agents` through the in-process client.
//! The `/internal` routes accept only trusted in-process callers: a request that came
//! from the network has no [`InternalCaller`] and gets 404.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::internal::InternalCaller;
use stratus_core::{OsJson, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::body::{self, Bool, Field, Opt, Text};
use crate::error::{invalid, not_found, NetError, NetResult};
use crate::policy::enforce;
use crate::{Net, S};

/// Every attribute of an agent: a request naming anything else is refused.
const ATTRS: &[&str] = &[
    "id",
    "agent_type",
    "binary",
    "host",
    "topic",
    "admin_state_up",
    "alive",
    "availability_zone",
    "configurations",
    "created_at",
    "started_at",
    "heartbeat_timestamp",
    "description",
    "resources_synced",
];

/// `PUT /v2.0/agents/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AgentUpdate {
    admin_state_up: Opt<Bool>,
    description: Field<Text<255>>,
}

/// Agent routes (public and internal).
pub(crate) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/agents", get(list))
        .route("/v2.0/agents/{id}", get(show).put(update).delete(remove))
        .route("/v2.0/networks/{id}/dhcp-agents", get(network_dhcp_agents))
        .route("/v2.0/routers/{id}/l3-agents", get(router_l3_agents))
        .route("/internal/agents", post(report_route))
        .route("/internal/ports/{id}/status", post(port_status_route))
}

/// What an agent reports with each heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentReport {
    /// `Linux bridge agent`, `DHCP agent`, `L3 agent`, `Metadata agent`.
    pub agent_type: String,
    /// `neutron-linuxbridge-agent`, `neutron-dhcp-agent`...
    pub binary: String,
    /// Host the agent runs on.
    pub host: String,
    /// RPC topic (`N/A`, `dhcp_agent`, `l3_agent`).
    #[serde(default)]
    pub topic: String,
    /// Free-form agent configuration.
    #[serde(default)]
    pub configurations: Value,
    /// Availability zone (DHCP and L3 agents).
    #[serde(default)]
    pub availability_zone: Option<String>,
}

fn neutron_time(stored: &str) -> String {
    stratus_core::time::parse(stored).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

fn render(net: &Net, body: &str, heartbeat: &str) -> Value {
    let mut v: Value = serde_json::from_str(body).unwrap_or(json!({}));
    let age = stratus_core::time::parse(heartbeat).map(|t| (chrono_now() - t.timestamp()).abs()).unwrap_or(i64::MAX);
    v["alive"] = json!(age <= net.cfg.agent_down_time);
    v["heartbeat_timestamp"] = json!(neutron_time(heartbeat));
    v
}

fn chrono_now() -> i64 {
    stratus_core::time::parse(&stratus_core::time::now()).map(|t| t.timestamp()).unwrap_or(0)
}

/// Records a heartbeat, registering the agent on its first report.
pub(crate) async fn report(net: &Net, r: AgentReport) -> NetResult<Value> {
    if r.agent_type.is_empty() || r.host.is_empty() || r.binary.is_empty() {
        return Err(invalid("agent_type, binary and host are required"));
    }
    let now = stratus_core::time::now();
    let r2 = r.clone();
    let n2 = now.clone();
    let (body, hb) = net
        .db
        .transaction(|tx| {
            let (r, now) = (r2.clone(), n2.clone());
            Box::pin(async move {
                let mut q = Query::new("SELECT body FROM network_agents WHERE agent_type = ");
                q.bind(&r.agent_type).push(" AND host = ").bind(&r.host);
                let existing = q.fetch_optional(&mut **tx).await?.and_then(|row| row.try_get::<String, _>("body").ok());
                let mut body: Value = match existing {
                    Some(b) => serde_json::from_str(&b).unwrap_or(json!({})),
                    None => json!({
                        "id": uuid::Uuid::new_v4().to_string(),
                        "admin_state_up": true,
                        "created_at": neutron_time(&now),
                        "started_at": neutron_time(&now),
                        "description": null,
                        "resources_synced": null,
                    }),
                };
                body["agent_type"] = json!(r.agent_type);
                body["binary"] = json!(r.binary);
                body["host"] = json!(r.host);
                body["topic"] = json!(if r.topic.is_empty() { "N/A".to_string() } else { r.topic.clone() });
                body["configurations"] = if r.configurations.is_null() { json!({}) } else { r.configurations.clone() };
                body["availability_zone"] = json!(r.availability_zone);
                let id = body["id"].as_str().unwrap_or_default().to_string();
                let mut up =
                    Query::new("INSERT INTO network_agents (id, agent_type, host, heartbeat_at, body) VALUES (");
                up.bind(&id)
                    .push(", ")
                    .bind(&r.agent_type)
                    .push(", ")
                    .bind(&r.host)
                    .push(", ")
                    .bind(&now)
                    .push(", ")
                    .bind(body.to_string());
                up.push(") ON CONFLICT (agent_type, host) DO UPDATE SET heartbeat_at = ").bind(&now);
                up.push(", body = ").bind(body.to_string());
                up.execute(&mut **tx).await?;
                Ok::<_, NetError>((body.to_string(), now))
            })
        })
        .await?;
    Ok(render(net, &body, &hb))
}

pub(crate) async fn all(net: &Net) -> NetResult<Vec<(String, Value)>> {
    let rows = Query::new("SELECT id, body, heartbeat_at FROM network_agents ORDER BY agent_type, host")
        .fetch_all(net.db.reader())
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: String = r.try_get("id").unwrap_or_default();
            let body: String = r.try_get("body").unwrap_or_default();
            let hb: String = r.try_get("heartbeat_at").unwrap_or_default();
            (id, render(net, &body, &hb))
        })
        .collect())
}

/// `GET /v2.0/agents`. As in Neutron, a caller policy does not let see agents gets an
/// empty list, not 403. The `agent_type` filter ignores case: Neutron's reference
/// deployment compares it in MySQL, whose collation does, and clients (Tempest among them)
/// ask for "DHCP Agent".
async fn list(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let url = format!("{}/v2.0/agents", st.base);
    if !st.policy.check("get_agent", &ctx, &json!({})) {
        return Ok(Json(crate::listing::respond("agents", vec![], &q, &url)?));
    }
    let types = q.all("agent_type");
    let items = all(&st)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .filter(|a| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(crate::store::s(a, "agent_type"))))
        .collect();
    let q = QueryPairs(q.0.iter().filter(|(k, _)| k != "agent_type").cloned().collect());
    Ok(Json(crate::listing::respond("agents", items, &q, &url)?))
}

/// The agents of `agent_type` on the hosts `ports` (of one network or router) are bound to:
/// where the scheduler (and [`crate::liveness`] after a failover) put them.
async fn hosting(st: &S, agent_type: &str, ports: Vec<Value>) -> NetResult<Vec<Value>> {
    let hosts: std::collections::BTreeSet<String> =
        ports.iter().map(|p| crate::store::s(p, "binding:host_id").to_string()).filter(|h| !h.is_empty()).collect();
    Ok(all(st)
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a["agent_type"] == agent_type && hosts.contains(crate::store::s(a, "host")))
        .collect())
}

/// `GET /v2.0/networks/{id}/dhcp-agents` (`openstack network agent list --network`).
async fn network_dhcp_agents(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_dhcp-agents", &ctx, &json!({}))?;
    let reader = st.db.reader();
    crate::store::get(reader, crate::store::kind::NETWORK, &id).await?.ok_or_else(|| not_found("Network", &id))?;
    let hosts = crate::dhcp_hosting::hosts_of(&st, &id).await?;
    let agents: Vec<Value> = all(&st)
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a["agent_type"] == "DHCP agent" && hosts.iter().any(|h| h == crate::store::s(a, "host")))
        .collect();
    Ok(Json(json!({"agents": agents})))
}

/// `GET /v2.0/routers/{id}/l3-agents` (`openstack network agent list --router`).
async fn router_l3_agents(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_l3-agents", &ctx, &json!({}))?;
    let reader = st.db.reader();
    crate::store::get(reader, crate::store::kind::ROUTER, &id).await?.ok_or_else(|| not_found("Router", &id))?;
    let ports = crate::store::all(reader, crate::store::kind::PORT).await?;
    let ports = ports.into_iter().filter(|p| {
        p["device_id"] == id.as_str()
            && matches!(p["device_owner"].as_str(), Some("network:router_interface" | "network:router_gateway"))
    });
    Ok(Json(json!({"agents": hosting(&st, "L3 agent", ports.collect()).await?})))
}

async fn find(st: &S, id: &str) -> NetResult<Value> {
    all(st).await?.into_iter().find(|(i, _)| i == id).map(|(_, v)| v).ok_or_else(|| not_found("Agent", id))
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_agent", &ctx, &json!({}))?;
    Ok(Json(json!({"agent": find(&st, &id).await?})))
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    enforce(&st.policy, "update_agent", &ctx, &json!({}))?;
    let req: AgentUpdate = body::parse_update(body::one(req, "agent")?, ATTRS)?;
    let mut a = find(&st, &id).await?;
    if let Some(v) = req.admin_state_up.opt() {
        a["admin_state_up"] = json!(v);
    }
    if let Some(d) = req.description.clone().change() {
        a["description"] = json!(d.map(|d| d.0));
    }
    let stored = {
        let mut s = a.clone();
        if let Some(m) = s.as_object_mut() {
            m.remove("alive");
            m.remove("heartbeat_timestamp");
        }
        s
    };
    st.db
        .transaction(|tx| {
            let (id, stored) = (id.clone(), stored.clone());
            Box::pin(async move {
                let mut q = Query::new("UPDATE network_agents SET body = ");
                q.bind(stored.to_string()).push(" WHERE id = ").bind(&id);
                q.execute(&mut **tx).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(Json(json!({"agent": a})))
}

async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    enforce(&st.policy, "delete_agent", &ctx, &json!({}))?;
    find(&st, &id).await?;
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                let mut q = Query::new("DELETE FROM network_agents WHERE id = ");
                q.bind(&id);
                q.execute(&mut **tx).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn require_internal(req: &Request) -> NetResult<()> {
    if req.extensions().get::<InternalCaller>().is_some() {
        Ok(())
    } else {
        Err(NetError::NotFoundTyped("HTTPNotFound", "The resource could not be found.".into()))
    }
}

async fn report_route(State(st): State<S>, req: Request) -> NetResult<Json<Value>> {
    require_internal(&req)?;
    let bytes = stratus_core::json::read_body(req, &()).await?;
    let r: AgentReport = stratus_core::json::parse_json(&bytes)?;
    Ok(Json(json!({"agent": report(&st, r).await?})))
}

async fn port_status_route(State(st): State<S>, Path(id): Path<String>, req: Request) -> NetResult<Json<Value>> {
    require_internal(&req)?;
    let bytes = stratus_core::json::read_body(req, &()).await?;
    let v: Value = stratus_core::json::parse_json(&bytes)?;
    let status = v.get("status").and_then(Value::as_str).ok_or_else(|| invalid("status is required"))?;
    Ok(Json(json!({"port": crate::ports::set_status(&st, &id, status).await?})))
}
