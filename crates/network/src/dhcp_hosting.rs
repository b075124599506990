//! Which host's DHCP agent serves which network: the `dhcp_agent_scheduler` extension
//! (`/agents/{id}/dhcp-networks`) and the bindings the scheduler in [`crate::agent_rpc`]
//! follows.
//!
//! `network_dhcp_hosts` has one row per network that has been given a DHCP server: the
//! scheduler writes it when it first creates the network's `network:dhcp` port (on the host
//! that asked), [`crate::liveness`] moves it off a dead agent, and an admin moves it with
//! this API. A network's DHCP port is bound where its row says. A row with an empty host
//! means an admin removed the network from its agent; the scheduler then leaves it alone
//! (Neutron's automatic scheduling would put it straight back, which makes the removal
//! impossible to observe). A network an admin adds to an agent is hosted there even
//! before it has a DHCP-enabled subnet, as in Neutron; its port comes with the first one.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::OsJson;
use stratus_db::sqlx::{self, Any, Row};
use stratus_db::{Query, Tx};

use crate::body::{self, Opt, Uuid};
use crate::error::{not_found, NetError, NetResult};
use crate::policy::enforce;
use crate::store::{self, kind};
use crate::S;

/// Agent type of DHCP agents as `/agents` shows it.
const DHCP_AGENT: &str = "DHCP agent";

/// Routes.
pub(crate) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/agents/{id}/dhcp-networks", get(list).post(add))
        .route("/v2.0/agents/{id}/dhcp-networks/{network}", delete(remove))
}

/// network id → host of every network with a row (`""`: removed by an admin).
pub(crate) async fn bindings<'e, E>(ex: E) -> NetResult<BTreeMap<String, String>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows = Query::new("SELECT network_id, host FROM network_dhcp_hosts").fetch_all(ex).await?;
    Ok(rows
        .iter()
        .map(|r| (r.try_get::<String, _>("network_id").unwrap_or_default(), r.try_get("host").unwrap_or_default()))
        .collect())
}

/// Binds `network_id` to `host`, replacing any binding.
pub(crate) async fn pin(tx: &mut Tx, network_id: &str, host: &str) -> NetResult<()> {
    let mut q = Query::new("INSERT INTO network_dhcp_hosts (network_id, host) VALUES (");
    q.bind(network_id).push(", ").bind(host).push(") ON CONFLICT (network_id) DO UPDATE SET host = ").bind(host);
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Binds `network_id` to `host` unless it already has a binding (the scheduler's choice).
pub(crate) async fn claim(tx: &mut Tx, network_id: &str, host: &str) -> NetResult<()> {
    let mut q = Query::new("INSERT INTO network_dhcp_hosts (network_id, host) VALUES (");
    q.bind(network_id).push(", ").bind(host).push(") ON CONFLICT DO NOTHING");
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Forgets a deleted network.
pub(crate) async fn forget(tx: &mut Tx, network_id: &str) -> NetResult<()> {
    let mut q = Query::new("DELETE FROM network_dhcp_hosts WHERE network_id = ");
    q.bind(network_id);
    q.execute(&mut **tx).await?;
    Ok(())
}

/// The hosts serving DHCP for `network_id`: its binding, or where its DHCP port is bound
/// (networks scheduled before bindings were recorded).
pub(crate) async fn hosts_of(st: &S, network_id: &str) -> NetResult<Vec<String>> {
    let reader = st.db.reader();
    if let Some(h) = bindings(reader).await?.remove(network_id) {
        return Ok(if h.is_empty() { vec![] } else { vec![h] });
    }
    let ports = store::children(reader, kind::PORT, network_id).await?;
    let mut hosts: Vec<String> = ports
        .iter()
        .filter(|p| store::s(p, "device_owner") == "network:dhcp")
        .map(|p| store::s(p, "binding:host_id").to_string())
        .filter(|h| !h.is_empty())
        .collect();
    hosts.dedup();
    Ok(hosts)
}

/// The ids of the networks `host` serves DHCP for.
async fn hosted_by(st: &S, host: &str) -> NetResult<Vec<String>> {
    let reader = st.db.reader();
    let pinned = bindings(reader).await?;
    let mut ids: Vec<String> = pinned.iter().filter(|(_, h)| *h == host).map(|(n, _)| n.clone()).collect();
    for p in store::all(reader, kind::PORT).await? {
        let net = store::s(&p, "network_id");
        if store::s(&p, "device_owner") == "network:dhcp"
            && store::s(&p, "binding:host_id") == host
            && !pinned.contains_key(net)
            && !ids.iter().any(|i| i == net)
        {
            ids.push(net.to_string());
        }
    }
    Ok(ids)
}

/// The DHCP agent `id`: its host, or 404 / 409 for another kind of agent.
async fn dhcp_agent(st: &S, id: &str) -> NetResult<String> {
    let agent = crate::agents::all(st)
        .await?
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, a)| a)
        .ok_or_else(|| not_found("Agent", id))?;
    if agent["agent_type"] != DHCP_AGENT || agent["admin_state_up"] == json!(false) {
        return Err(NetError::Conflict(
            "InvalidDHCPAgent",
            format!("Agent {id} is not a valid DHCP Agent or has been disabled."),
        ));
    }
    Ok(store::s(&agent, "host").to_string())
}

/// `GET /v2.0/agents/{id}/dhcp-networks`.
async fn list(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_dhcp-networks", &ctx, &json!({}))?;
    let host = dhcp_agent(&st, &id).await?;
    let subnets = crate::networks::subnet_map(&st).await?;
    let mut nets = Vec::new();
    for n in hosted_by(&st, &host).await? {
        if let Some(body) = store::get(st.db.reader(), kind::NETWORK, &n).await? {
            nets.push(crate::networks::present(&st, &ctx, body, &subnets));
        }
    }
    Ok(Json(json!({"networks": nets})))
}

/// `POST /v2.0/agents/{id}/dhcp-networks`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AddNetwork {
    network_id: Opt<Uuid>,
}

async fn add(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<StatusCode> {
    enforce(&st.policy, "create_dhcp-network", &ctx, &json!({}))?;
    let Value::Object(obj) = req else {
        return Err(NetError::BadRequest("HTTPBadRequest", "Body contains invalid data".into()));
    };
    let req: AddNetwork = body::parse(obj)?;
    let network_id = req.network_id.opt().ok_or_else(|| {
        NetError::BadRequest(
            "HTTPBadRequest",
            "Failed to parse request. Required attribute 'network_id' not specified".into(),
        )
    })?;
    let host = dhcp_agent(&st, &id).await?;
    store::get(st.db.reader(), kind::NETWORK, &network_id).await?.ok_or_else(|| not_found("Network", &network_id))?;
    if hosts_of(&st, &network_id).await?.contains(&host) {
        return Err(NetError::Conflict(
            "NetworkHostedByDHCPAgent",
            format!("The network {network_id} has been already hosted by the DHCP Agent {id}."),
        ));
    }
    {
        let _g = st.schedule_lock.lock().await;
        st.db
            .transaction(|tx| {
                let (network_id, host) = (network_id.clone(), host.clone());
                Box::pin(async move { pin(tx, &network_id, &host).await })
            })
            .await?;
    }
    crate::agent_rpc::notify_agents(&st, "desired_state_changed").await;
    Ok(StatusCode::CREATED)
}

/// `DELETE /v2.0/agents/{id}/dhcp-networks/{network}`: the agent stops serving the
/// network and its DHCP port goes.
async fn remove(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path((id, network_id)): Path<(String, String)>,
) -> NetResult<StatusCode> {
    enforce(&st.policy, "delete_dhcp-network", &ctx, &json!({}))?;
    let host = dhcp_agent(&st, &id).await?;
    if !hosts_of(&st, &network_id).await?.contains(&host) {
        return Err(NetError::Conflict(
            "NetworkNotHostedByDhcpAgent",
            format!("The network {network_id} is not hosted by the DHCP agent {id}."),
        ));
    }
    {
        let _g = st.schedule_lock.lock().await;
        st.db
            .transaction(|tx| {
                let network_id = network_id.clone();
                Box::pin(async move {
                    pin(tx, &network_id, "").await?;
                    for p in store::children(&mut **tx, kind::PORT, &network_id).await? {
                        if store::s(&p, "device_owner") == "network:dhcp" {
                            crate::ports::delete_in_tx(tx, &p).await?;
                        }
                    }
                    Ok::<_, NetError>(())
                })
            })
            .await?;
    }
    crate::agent_rpc::notify_agents(&st, "desired_state_changed").await;
    Ok(StatusCode::NO_CONTENT)
}
