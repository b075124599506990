//! Rescheduling away from dead agents (Neutron's `allow_automatic_dhcp_failover` and
//! `router_auto_schedule`/`allow_automatic_l3agent_failover`).
//!
//! DHCP servers and routers are scheduled to the first agent host that asks (see
//! [`crate::agent_rpc`]). When that host's agent stops heartbeating for longer than
//! `agent_down_time`, a periodic check (every `agent_down_time / 2`) moves its DHCP
//! ports and router ports to the live, enabled agent of the same type hosting the fewest,
//! and tells agents to converge: the new host builds the namespace, and the old one, should
//! it come back, drops what it no longer hosts. Nothing moves while no live agent can take
//! it, and nothing moves during the first `agent_down_time` after the service starts (every
//! agent looks dead then, since none could report while the service was down).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_auth::RequestContext;

use crate::body::Text;
use crate::error::NetResult;
use crate::store::{self, kind};
use crate::{ports, S};

/// Agent type names as `/v2.0/agents` shows them.
const DHCP: &str = "DHCP agent";
const L3: &str = "L3 agent";

/// Runs the periodic check until the process ends.
pub(crate) fn spawn(net: S) -> tokio::task::JoinHandle<()> {
    let down = net.cfg.agent_down_time.max(1) as u64;
    let started = Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(down * 500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if net.db.reader().is_closed() {
                return; // the cloud shut down
            }
            if started.elapsed() < Duration::from_secs(down) {
                continue;
            }
            match reschedule_dead(&net).await {
                Ok(true) => crate::agent_rpc::notify_agents(&net, "desired_state_changed").await,
                Ok(false) => {}
                Err(e) => tracing::warn!("agent liveness check: {e}"),
            }
        }
    })
}

/// Hosts of agents of `agent_type`: (dead ones, live and enabled ones).
fn hosts_by_liveness(agents: &[(String, Value)], agent_type: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut dead, mut live) = (BTreeSet::new(), BTreeSet::new());
    for (_, a) in agents.iter().filter(|(_, a)| a["agent_type"] == agent_type) {
        let host = store::s(a, "host").to_string();
        if a["alive"] != true {
            dead.insert(host);
        } else if a["admin_state_up"] != false {
            live.insert(host);
        }
    }
    (dead, live)
}

/// The live host hosting the fewest (ties: by name).
fn least_loaded(live: &BTreeSet<String>, load: &BTreeMap<String, usize>) -> Option<String> {
    live.iter().min_by_key(|h| (load.get(*h).copied().unwrap_or(0), (*h).clone())).cloned()
}

/// Moves DHCP ports and routers off hosts whose agent is dead; returns whether anything moved.
pub(crate) async fn reschedule_dead(net: &S) -> NetResult<bool> {
    let agents = crate::agents::all(net).await?;
    let (dead_dhcp, live_dhcp) = hosts_by_liveness(&agents, DHCP);
    let (dead_l3, live_l3) = hosts_by_liveness(&agents, L3);
    if dead_dhcp.is_empty() && dead_l3.is_empty() {
        return Ok(false);
    }
    let _g = net.schedule_lock.lock().await;
    let ports_all = store::all(net.db.reader(), kind::PORT).await?;
    let host_of = |p: &Value| store::s(p, "binding:host_id").to_string();
    let admin = RequestContext::internal_admin();
    let mut changed = false;

    let dhcp_ports: Vec<&Value> = ports_all.iter().filter(|p| store::s(p, "device_owner") == "network:dhcp").collect();
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    for p in &dhcp_ports {
        *load.entry(host_of(p)).or_default() += 1;
    }
    for p in dhcp_ports.iter().filter(|p| dead_dhcp.contains(&host_of(p))) {
        let Some(target) = least_loaded(&live_dhcp, &load) else { break };
        let net_id = store::s(p, "network_id");
        tracing::warn!(network = %net_id, from = %host_of(p), to = %target, "DHCP agent down: rescheduling the network");
        let upd = ports::PortUpdate {
            host_id: Text::from(target.as_str()).into(),
            device_id: Text::from(format!("dhcp-{target}-{net_id}").as_str()).into(),
            ..Default::default()
        };
        match ports::update_port(net, &admin, store::s(p, "id"), upd).await {
            Ok(_) => {
                let (n, t) = (net_id.to_string(), target.clone());
                net.db
                    .transaction(|tx| {
                        let (n, t) = (n.clone(), t.clone());
                        Box::pin(async move { crate::dhcp_hosting::pin(tx, &n, &t).await })
                    })
                    .await?;
                *load.entry(target).or_default() += 1;
                changed = true;
            }
            Err(e) => tracing::warn!(network = %net_id, "cannot move the DHCP port: {e}"),
        }
    }

    let routers = ports::by_router(&ports_all);
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    for ps in routers.values() {
        if let Some(h) = ps.iter().map(|p| host_of(p)).find(|h| !h.is_empty()) {
            *load.entry(h).or_default() += 1;
        }
    }
    for (router, ps) in &routers {
        let Some(from) = ps.iter().map(|p| host_of(p)).find(|h| dead_l3.contains(h)) else { continue };
        let Some(target) = least_loaded(&live_l3, &load) else { break };
        tracing::warn!(%router, %from, to = %target, "L3 agent down: rescheduling the router");
        for p in ps {
            ports::bind_to_host(net, store::s(p, "id"), &target, true).await?;
        }
        *load.entry(target).or_default() += 1;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(ty: &str, host: &str, alive: bool, up: bool) -> (String, Value) {
        (format!("{ty}-{host}"), json!({"agent_type": ty, "host": host, "alive": alive, "admin_state_up": up}))
    }

    #[test]
    fn dead_and_disabled_agents_are_no_targets() {
        let agents = vec![
            agent(DHCP, "a", false, true),
            agent(DHCP, "b", true, true),
            agent(DHCP, "c", true, false),
            agent(L3, "a", true, true),
        ];
        let (dead, live) = hosts_by_liveness(&agents, DHCP);
        assert_eq!(dead.into_iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(live.iter().cloned().collect::<Vec<_>>(), ["b"]);
        let (dead, live) = hosts_by_liveness(&agents, L3);
        assert!(dead.is_empty());
        assert_eq!(live.into_iter().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn the_least_loaded_live_host_wins() {
        let live: BTreeSet<String> = ["b", "c", "d"].into_iter().map(String::from).collect();
        let load: BTreeMap<String, usize> = [("b".to_string(), 2), ("c".to_string(), 1)].into_iter().collect();
        assert_eq!(least_loaded(&live, &load).as_deref(), Some("d"));
        let load: BTreeMap<String, usize> = [("b".to_string(), 1), ("c".to_string(), 1), ("d".to_string(), 1)].into();
        assert_eq!(least_loaded(&live, &load).as_deref(), Some("b"));
        assert_eq!(least_loaded(&BTreeSet::new(), &load), None);
    }
}
