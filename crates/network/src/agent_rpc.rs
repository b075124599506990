//! The server side of the network agents' bus protocol (Neutron's plugin RPC, l2pop and
//! DHCP/L3 scheduling in one place).
//!
//! Consumes topic `network-server` (see `stratus_network_agent::agent` for the agent side;
//! the document and the topics are the contract crate `stratus-network-proto`):
//! - `get_desired_state {"host"}` (call): the [`DesiredState`] of that host: what its ports
//!   need, with l2population peers and remote security group members (see
//!   [`crate::host_state`]). Before answering, the networks and routers nobody hosts yet
//!   are scheduled to the asking host (see [`schedule`]); [`crate::liveness`] moves them
//!   away from hosts whose agent died.
//! - `update_port_status {"port_id","status","host"}` (cast): ACTIVE/DOWN, accepted only
//!   from the host the port is bound to (a stale agent cannot flip a port it no longer owns).
//! - `report_state {"host","binary","agent_types","configurations"}` (cast): one heartbeat
//!   row per agent type in `/agents`.
//!
//! After every successful API write that changes what agents realise, [`fanout_after_write`]
//! (a middleware on the API router, so no write path needs its own hook) fans out
//! `desired_state_changed` — or `security_groups_changed` for security group writes, the
//! agents' firewall-only fast path — on exchange `network-agent`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};
use stratus_auth::RequestContext;
use stratus_bus::{Bus, Delivery, Message};
use stratus_network_proto::model as m;
use stratus_network_proto::DesiredState;

use crate::body::{Field, List, Text, Uuid};
use crate::error::NetResult;
use crate::store::{self, kind};
use crate::{ports, S};

/// Topic the service consumes.
pub const SERVER_TOPIC: &str = stratus_network_proto::SERVER_TOPIC;
/// Exchange the agents listen on.
pub const AGENT_EXCHANGE: &str = stratus_network_proto::AGENT_EXCHANGE;

/// Starts consuming `network-server`; each delivery is handled on its own task so a slow
/// state build never delays heartbeats.
pub(crate) async fn spawn(net: S, bus: Arc<dyn Bus>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut sub = bus.consume(SERVER_TOPIC).await?;
    Ok(tokio::spawn(async move {
        while let Some(d) = sub.recv().await {
            let net = net.clone();
            tokio::spawn(async move { handle(&net, d).await });
        }
    }))
}

async fn handle(net: &S, d: Delivery) {
    let args = d.message.args.clone();
    let host = args["host"].as_str().unwrap_or_default().to_string();
    let result = match d.message.method.as_str() {
        "get_desired_state" => desired_state_for(net, &host).await.map(|s| serde_json::to_value(s).unwrap_or_default()),
        "update_port_status" => update_port_status(net, &args).await.map(|_| Value::Null),
        "report_state" => report_state(net, &args).await.map(|_| Value::Null),
        other => Err(crate::error::invalid(format!("unknown method {other}"))),
    };
    let result = result.map_err(|e| {
        let msg = e.to_string();
        tracing::warn!(method = %d.message.method, %host, "agent RPC failed: {msg}");
        msg
    });
    d.reply(result);
}

/// Fans out that agents should converge (`security_groups_changed` = firewall only).
pub(crate) async fn notify_agents(net: &S, method: &str) {
    net.generation.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = net.bus.fanout(AGENT_EXCHANGE, Message::new(method, json!({}))).await {
        tracing::warn!("cannot notify network agents: {e}");
    }
}

/// What a successful write to `path` means for agents.
fn change_kind(method: &Method, path: &str) -> Option<&'static str> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let rest = path.split("/v2.0/").nth(1)?;
    match rest.split('/').next()? {
        "ports" | "networks" | "subnets" | "routers" | "floatingips" => Some("desired_state_changed"),
        "security-groups" | "security-group-rules" | "address-groups" => Some("security_groups_changed"),
        _ => None,
    }
}

/// Middleware: after a successful write to a resource agents realise, tell them.
pub(crate) async fn fanout_after_write(State(net): State<S>, req: Request, next: Next) -> Response {
    let what = change_kind(req.method(), req.uri().path());
    let resp = next.run(req).await;
    if let Some(method) = what.filter(|_| resp.status().is_success()) {
        notify_agents(&net, method).await;
    }
    resp
}

async fn update_port_status(net: &S, args: &Value) -> NetResult<()> {
    let id = args["port_id"].as_str().unwrap_or_default();
    let status = args["status"].as_str().unwrap_or_default();
    let host = args["host"].as_str().unwrap_or_default();
    if !matches!(status, "ACTIVE" | "DOWN") {
        return Err(crate::error::invalid(format!("'{status}' is not a status an agent reports")));
    }
    let Some(p) = store::get(net.db.reader(), kind::PORT, id).await? else { return Ok(()) };
    if store::s(&p, "binding:host_id") != host || store::s(&p, "status") == status {
        return Ok(());
    }
    ports::set_status(net, id, status).await?;
    Ok(())
}

/// Neutron's binary and topic for each agent type a Stratus agent stands for.
fn agent_identity(agent_type: &str) -> Option<(&'static str, &'static str, bool)> {
    Some(match agent_type {
        "Linux bridge agent" => ("neutron-linuxbridge-agent", "N/A", false),
        "DHCP agent" => ("neutron-dhcp-agent", "dhcp_agent", true),
        "L3 agent" => ("neutron-l3-agent", "l3_agent", true),
        "Metadata agent" => ("neutron-metadata-agent", "N/A", false),
        _ => return None,
    })
}

async fn report_state(net: &S, args: &Value) -> NetResult<()> {
    let host = args["host"].as_str().unwrap_or_default().to_string();
    for t in args["agent_types"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let Some((binary, topic, zoned)) = agent_identity(t) else { continue };
        let report = crate::agents::AgentReport {
            agent_type: t.to_string(),
            binary: binary.to_string(),
            host: host.clone(),
            topic: topic.to_string(),
            configurations: args["configurations"].clone(),
            availability_zone: zoned.then(|| net.cfg.availability_zone.clone()),
        };
        crate::agents::report(net, report).await?;
    }
    Ok(())
}

/// Schedules what has no host yet onto `host`, then builds the host's state document.
pub(crate) async fn desired_state_for(net: &S, host: &str) -> NetResult<DesiredState> {
    if !host.is_empty() {
        let changed = {
            let _g = net.schedule_lock.lock().await;
            schedule(net, host).await?
        };
        if changed {
            // Other hosts need the new ports for l2population.
            notify_agents(net, "desired_state_changed").await;
        }
    }
    Ok(crate::host_state::for_host(desired_state(net).await?, host))
}

/// IPv4 and IPv6 subnets alike: the DHCP namespace serves DHCPv6 (and, for isolated
/// subnets, router advertisements) too.
fn is_dhcp_subnet(s: &Value) -> bool {
    s["enable_dhcp"].as_bool().unwrap_or(false)
}

/// DHCP and router scheduling, as Neutron's DHCP agent (which asks for its port) and L3
/// scheduler do: a network with DHCP-enabled subnets gets one `network:dhcp` port
/// with an address on each of them, bound to the first agent host that asks; a router's
/// unbound ports go to the host its other ports are on, else to the asking host. A DHCP
/// port whose network no longer has DHCP subnets is removed. Returns whether it changed
/// anything.
async fn schedule(net: &S, host: &str) -> NetResult<bool> {
    let reader = net.db.reader();
    let admin = RequestContext::internal_admin();
    let mut changed = false;
    let subnets = store::all(reader, kind::SUBNET).await?;
    let ports_all = store::all(reader, kind::PORT).await?;
    let mut dhcp_subnets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in subnets.iter().filter(|s| is_dhcp_subnet(s)) {
        dhcp_subnets.entry(store::s(s, "network_id").to_string()).or_default().push(store::s(s, "id").to_string());
    }
    let mut dhcp_ports: BTreeMap<String, &Value> = BTreeMap::new();
    for p in ports_all.iter().filter(|p| store::s(p, "device_owner") == "network:dhcp") {
        dhcp_ports.insert(store::s(p, "network_id").to_string(), p);
    }
    let pinned = crate::dhcp_hosting::bindings(reader).await?;
    for (net_id, sids) in &dhcp_subnets {
        // Where the network's DHCP server goes: its binding, else where its port already
        // is, else the asking host.
        let bound = dhcp_ports.get(net_id).map(|p| store::s(p, "binding:host_id")).filter(|h| !h.is_empty());
        let target = match pinned.get(net_id) {
            Some(h) if h.is_empty() => continue, // an admin took it off its agent
            Some(h) => h.as_str(),
            None => bound.unwrap_or(host),
        };
        match dhcp_ports.get(net_id) {
            None => {
                let Some(network) = store::get(reader, kind::NETWORK, net_id).await? else { continue };
                let req = ports::PortCreate {
                    network_id: Uuid::from(net_id.as_str()).into(),
                    device_owner: Text::from("network:dhcp").into(),
                    device_id: Text::from(format!("dhcp-{target}-{net_id}").as_str()).into(),
                    host_id: Text::from(target).into(),
                    fixed_ips: Field::Set(List(sids.iter().map(|s| ports::FixedIp::on(s, None)).collect())),
                    ..Default::default()
                };
                let project = store::s(&network, "project_id").to_string();
                match ports::create_port(net, &admin, req, project).await {
                    Ok(_) => changed = true,
                    Err(e) => tracing::warn!(network = %net_id, "cannot create the DHCP port: {e}"),
                }
            }
            Some(p) => {
                let have: BTreeSet<&str> =
                    p["fixed_ips"].as_array().into_iter().flatten().filter_map(|f| f["subnet_id"].as_str()).collect();
                let missing: Vec<&String> = sids.iter().filter(|s| !have.contains(s.as_str())).collect();
                let mut upd = ports::PortUpdate::default();
                if !missing.is_empty() {
                    let mut ips: Vec<ports::FixedIp> = p["fixed_ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|i| ports::FixedIp::on(store::s(i, "subnet_id"), i["ip_address"].as_str()))
                        .collect();
                    ips.extend(missing.iter().map(|s| ports::FixedIp::on(s, None)));
                    upd.fixed_ips = Field::Set(List(ips));
                }
                if store::s(p, "binding:host_id") != target {
                    upd.host_id = Text::from(target).into();
                    upd.device_id = Text::from(format!("dhcp-{target}-{net_id}").as_str()).into();
                }
                if upd.fixed_ips.present() || upd.host_id.present() {
                    match ports::update_port(net, &admin, store::s(p, "id"), upd).await {
                        Ok(_) => changed = true,
                        Err(e) => tracing::warn!(network = %net_id, "cannot update the DHCP port: {e}"),
                    }
                }
            }
        }
        if !pinned.contains_key(net_id) {
            let (net_id, target) = (net_id.clone(), target.to_string());
            net.db
                .transaction(|tx| {
                    let (net_id, target) = (net_id.clone(), target.clone());
                    Box::pin(async move { crate::dhcp_hosting::claim(tx, &net_id, &target).await })
                })
                .await?;
        }
    }
    for (net_id, p) in &dhcp_ports {
        let unserved = pinned.get(net_id).is_some_and(|h| h.is_empty());
        if !dhcp_subnets.contains_key(net_id) || unserved {
            let p = (*p).clone();
            net.db
                .transaction(|tx| {
                    let p = p.clone();
                    Box::pin(async move { ports::delete_in_tx(tx, &p).await })
                })
                .await?;
            changed = true;
        }
    }
    // Routers.
    for ps in ports::by_router(&ports_all).values() {
        let target =
            ps.iter().map(|p| store::s(p, "binding:host_id")).find(|h| !h.is_empty()).unwrap_or(host).to_string();
        for p in ps.iter().filter(|p| store::s(p, "binding:host_id").is_empty()) {
            ports::bind_to_host(net, store::s(p, "id"), &target, false).await?;
            changed = true;
        }
    }
    Ok(changed)
}

fn opt_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn routes_of(v: &Value) -> Vec<m::Route> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(m::Route {
                destination: r["destination"].as_str()?.to_string(),
                nexthop: r["nexthop"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// The whole cloud as agents see it (IPv4 only: the agents realise IPv4).
pub(crate) async fn desired_state(net: &S) -> NetResult<DesiredState> {
    let reader = net.db.reader();
    let mut state = DesiredState { generation: net.generation.load(Ordering::Relaxed), ..Default::default() };
    let mut hosts = BTreeMap::new();
    for (_, a) in crate::agents::all(net).await? {
        if a["agent_type"] == "Linux bridge agent" {
            let ip = a["configurations"]["tunneling_ip"].as_str().and_then(|s| s.parse().ok());
            hosts.insert(store::s(&a, "host").to_string(), ip);
        }
    }
    state.hosts = hosts.into_iter().map(|(host, tunnel_ip)| m::HostInfo { host, tunnel_ip }).collect();
    for n in store::all(reader, kind::NETWORK).await? {
        let ty = match store::s(&n, "provider:network_type") {
            "flat" => m::NetworkType::Flat,
            "vlan" => m::NetworkType::Vlan,
            "vxlan" => m::NetworkType::Vxlan,
            _ => m::NetworkType::Local,
        };
        state.networks.push(m::Network {
            id: store::s(&n, "id").to_string(),
            project_id: store::s(&n, "project_id").to_string(),
            network_type: ty,
            segmentation_id: n["provider:segmentation_id"].as_u64().map(|v| v as u32),
            physical_network: n["provider:physical_network"].as_str().map(str::to_string),
            mtu: n["mtu"].as_u64().unwrap_or(1500) as u32,
            router_external: n["router:external"].as_bool().unwrap_or(false),
            admin_state_up: n["admin_state_up"].as_bool().unwrap_or(true),
        });
    }
    let mut known = BTreeSet::new();
    for s in store::all(reader, kind::SUBNET).await? {
        let ip_version = match s["ip_version"].as_i64() {
            Some(6) => 6,
            Some(4) => 4,
            _ => continue,
        };
        known.insert(store::s(&s, "id").to_string());
        state.subnets.push(m::Subnet {
            id: store::s(&s, "id").to_string(),
            network_id: store::s(&s, "network_id").to_string(),
            ip_version,
            ipv6_ra_mode: s["ipv6_ra_mode"].as_str().map(str::to_string),
            ipv6_address_mode: s["ipv6_address_mode"].as_str().map(str::to_string),
            cidr: store::s(&s, "cidr").to_string(),
            gateway_ip: s["gateway_ip"].as_str().map(str::to_string),
            enable_dhcp: s["enable_dhcp"].as_bool().unwrap_or(true),
            dns_nameservers: s["dns_nameservers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            host_routes: routes_of(&s["host_routes"]),
        });
    }
    let ports = store::all(reader, kind::PORT).await?;
    for p in &ports {
        state.ports.push(m::Port {
            id: store::s(p, "id").to_string(),
            network_id: store::s(p, "network_id").to_string(),
            mac_address: store::s(p, "mac_address").to_string(),
            fixed_ips: p["fixed_ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["subnet_id"].as_str().is_some_and(|s| known.contains(s)))
                .filter_map(|f| {
                    Some(m::FixedIp {
                        subnet_id: f["subnet_id"].as_str()?.to_string(),
                        ip_address: f["ip_address"].as_str()?.to_string(),
                    })
                })
                .collect(),
            device_owner: store::s(p, "device_owner").to_string(),
            device_id: store::s(p, "device_id").to_string(),
            binding_host_id: store::s(p, "binding:host_id").to_string(),
            security_groups: p["security_groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            allowed_address_pairs: p["allowed_address_pairs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some(m::AddressPair {
                        ip_address: a["ip_address"].as_str()?.to_string(),
                        mac_address: a["mac_address"].as_str().map(str::to_string),
                    })
                })
                .collect(),
            port_security_enabled: p["port_security_enabled"].as_bool().unwrap_or(true),
            admin_state_up: p["admin_state_up"].as_bool().unwrap_or(true),
        });
    }
    for r in store::all(reader, kind::ROUTER).await? {
        let id = store::s(&r, "id");
        let mine = ports.iter().filter(|p| store::s(p, "device_id") == id);
        let mut router = m::Router {
            id: id.to_string(),
            project_id: store::s(&r, "project_id").to_string(),
            enable_snat: r["external_gateway_info"]["enable_snat"].as_bool().unwrap_or(true),
            routes: routes_of(&r["routes"]),
            ..Default::default()
        };
        for p in mine {
            match store::s(p, "device_owner") {
                "network:router_gateway" => router.gateway_port_id = Some(store::s(p, "id").to_string()),
                "network:router_interface" => router.interface_port_ids.push(store::s(p, "id").to_string()),
                _ => {}
            }
        }
        state.routers.push(router);
    }
    for f in store::all(reader, kind::FLOATINGIP).await? {
        state.floating_ips.push(m::FloatingIp {
            id: store::s(&f, "id").to_string(),
            floating_ip_address: store::s(&f, "floating_ip_address").to_string(),
            floating_network_id: store::s(&f, "floating_network_id").to_string(),
            router_id: f["router_id"].as_str().map(str::to_string),
            port_id: f["port_id"].as_str().map(str::to_string),
            fixed_ip_address: f["fixed_ip_address"].as_str().map(str::to_string),
        });
    }
    let mut rules: BTreeMap<String, Vec<m::SecurityGroupRule>> = BTreeMap::new();
    // Address groups: id → CIDRs; a rule naming one stands for one rule per CIDR of
    // its ethertype (an empty group admits nothing).
    let groups: BTreeMap<String, Vec<String>> = store::all(reader, crate::address_groups::KIND)
        .await?
        .iter()
        .map(|g| {
            let addrs = g["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string);
            (store::s(g, "id").to_string(), addrs.collect())
        })
        .collect();
    for r in store::all(reader, kind::SECURITY_GROUP_RULE).await? {
        let direction = match store::s(&r, "direction") {
            "egress" => m::Direction::Egress,
            _ => m::Direction::Ingress,
        };
        let ethertype = r["ethertype"].as_str().unwrap_or("IPv4").to_string();
        let rule = |id: String, prefix: Option<String>| m::SecurityGroupRule {
            id,
            direction,
            ethertype: ethertype.clone(),
            protocol: opt_string(&r["protocol"]),
            port_range_min: r["port_range_min"].as_u64().map(|v| v as u16),
            port_range_max: r["port_range_max"].as_u64().map(|v| v as u16),
            remote_ip_prefix: prefix,
            remote_group_id: opt_string(&r["remote_group_id"]),
        };
        let id = store::s(&r, "id").to_string();
        let entry = rules.entry(store::s(&r, "security_group_id").to_string()).or_default();
        match r["remote_address_group_id"].as_str() {
            Some(ag) => {
                let v6 = ethertype == "IPv6";
                for (n, cidr) in groups.get(ag).into_iter().flatten().filter(|c| c.contains(':') == v6).enumerate() {
                    entry.push(rule(format!("{id}-ag{n}"), Some(cidr.clone())));
                }
            }
            None => entry.push(rule(id, opt_string(&r["remote_ip_prefix"]))),
        }
    }
    for g in store::all(reader, kind::SECURITY_GROUP).await? {
        let id = store::s(&g, "id").to_string();
        state.security_groups.push(m::SecurityGroup {
            rules: rules.remove(&id).unwrap_or_default(),
            id,
            project_id: store::s(&g, "project_id").to_string(),
            stateful: g["stateful"].as_bool().unwrap_or(true),
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_realised_resources_notify() {
        assert_eq!(change_kind(&Method::POST, "/v2.0/ports"), Some("desired_state_changed"));
        assert_eq!(change_kind(&Method::PUT, "/v2.0/address-groups/a/add_addresses"), Some("security_groups_changed"));
        assert_eq!(change_kind(&Method::PUT, "/v2.0/routers/r/add_router_interface"), Some("desired_state_changed"));
        assert_eq!(change_kind(&Method::DELETE, "/v2.0/security-group-rules/x"), Some("security_groups_changed"));
        assert_eq!(change_kind(&Method::GET, "/v2.0/ports"), None);
        assert_eq!(change_kind(&Method::POST, "/v2.0/quotas/p"), None);
    }
}
