//! The data plane with real packets, entirely inside namespaces these tests create.
//!
//! Guests are namespaces with a veth into the host namespace's bridge; they get their
//! addresses from the agent's dnsmasq with ISC dhclient. Needs root and the tools of
//! scripts/install-host-packages.sh; a missing tool fails the test.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use stratus_network_agent::exec::names;
use stratus_network_agent::model::{AddressPair, Direction, FloatingIp, NetworkType, Router};
use stratus_network_agent::NetworkAgent;

fn egress_all() -> stratus_network_agent::model::SecurityGroupRule {
    rule(Direction::Egress, None, None)
}

/// A host namespace with a VXLAN endpoint address on an underlay device (a veth: this
/// kernel has no dummy driver).
fn host_with_vtep(lab: &Lab, name: &str, ip: &str) -> String {
    let h = lab.netns(name);
    must(&["ip", "-n", &h, "link", "add", "und0", "type", "veth", "peer", "name", "und1"]);
    must(&["ip", "-n", &h, "link", "set", "und1", "up"]);
    must(&["ip", "-n", &h, "addr", "add", &format!("{ip}/24"), "dev", "und0"]);
    must(&["ip", "-n", &h, "link", "set", "und0", "up"]);
    h
}

#[tokio::test]
async fn dhcp_ping_security_groups_antispoofing_and_teardown() {
    let lab = Lab::new("sg");
    let h = host_with_vtep(&lab, "h1", "192.0.2.1");
    let mut cfg = lab.agent_cfg("h1", &h);
    cfg.tunnel_ip = Some("192.0.2.1".parse().unwrap());
    let agent = NetworkAgent::new(cfg.clone());

    let mut w = World::default();
    w.host("h1", Some("192.0.2.1"));
    let net = w.network("p1", NetworkType::Vxlan, Some(1001), None, 1450);
    let sub = w.subnet(&net, "10.0.0.0/24", Some("10.0.0.1"), true);
    let dhcp = w.port(&net, &sub, "10.0.0.2", "network:dhcp", "h1", &[]);
    w.sg("sg1", vec![egress_all()]);
    let pa = w.port(&net, &sub, "10.0.0.5", "compute:nova", "h1", &["sg1"]);
    let pb = w.port(&net, &sub, "10.0.0.6", "compute:nova", "h1", &["sg1"]);
    let a = lab.guest("ga", &h, &pa);
    let b = lab.guest("gb", &h, &pb);

    let t = Instant::now();
    let report = agent.converge(&w.s).await.unwrap();
    let converge = t.elapsed();
    assert!(report.plugged.contains(&pa.id) && report.plugged.contains(&pb.id) && report.plugged.contains(&dhcp.id));
    let la = a.dhcp();
    let plug_to_lease = t.elapsed();
    let lb = b.dhcp();
    assert_eq!(la.get("ip_address"), "10.0.0.5");
    assert_eq!(lb.get("ip_address"), "10.0.0.6");
    assert_eq!(la.get("host_name"), "host-10-0-0-5");
    assert_eq!(la.get("routers"), "10.0.0.1");
    assert_eq!(la.get("interface_mtu"), "1450");
    assert_eq!(la.get("domain_name_servers"), "192.0.2.53");
    // Option 121: 169.254.169.254/32 via the DHCP port, then the default route.
    assert_eq!(la.get("rfc3442_classless_static_routes"), "32 169 254 169 254 10 0 0 2 0 10 0 0 1");
    println!(
        "converge (first) {converge:?}; plug -> DHCP lease {plug_to_lease:?} (dhclient alone {:?}, second guest {:?})",
        la.elapsed, lb.elapsed
    );

    // No ingress ICMP rule: ping blocked both ways; the DHCP port still answers (unfiltered).
    assert!(!a.ping("10.0.0.6"), "ping must be blocked without an ICMP rule");
    assert!(!b.ping("10.0.0.5"));

    // Adding the rule (remote group = sg1) lets a new ping through within a second.
    w.sg("sg1", vec![egress_all(), rule(Direction::Ingress, Some("icmp"), Some("sg1"))]);
    let t = Instant::now();
    agent.converge_security_groups(&w.s).await.unwrap();
    let applied = t.elapsed();
    let effect = a.ping_until("10.0.0.6", Duration::from_secs(3)).expect("ICMP rule not effective in 3 s");
    let total = applied + effect;
    println!("SG rule add: applied {applied:?}, first reply {effect:?} later, total {total:?}");
    assert!(total < Duration::from_secs(1), "rule change took {total:?}");
    assert!(b.ping("10.0.0.5"));

    // Removing it stops a running ping (its conntrack entry is flushed) and blocks new ones.
    let running = std::process::Command::new("ip")
        .args(["netns", "exec", &a.ns, "ping", "-n", "-D", "-i", "0.05", "-c", "60", "10.0.0.6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    w.sg("sg1", vec![egress_all()]);
    let removed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let t = Instant::now();
    agent.converge_security_groups(&w.s).await.unwrap();
    println!("SG rule removal applied in {:?}", t.elapsed());
    let out = String::from_utf8(running.wait_with_output().unwrap().stdout).unwrap();
    let replies: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    assert!(replies.iter().any(|&r| r < removed_at), "the running ping never got through:\n{out}");
    let last = replies.iter().cloned().fold(0.0, f64::max);
    println!(
        "SG rule removal: last reply of the running ping {:.0} ms after the change began",
        (last - removed_at) * 1000.0
    );
    assert!(last - removed_at < 1.0, "running ping still answered {:.2} s after removal", last - removed_at);
    assert!(!a.ping("10.0.0.6"), "ping must be blocked after the rule is removed");

    // The full convergence renders the same ruleset (no drift between the two paths).
    let t = Instant::now();
    agent.converge(&w.s).await.unwrap();
    println!("full converge, nothing to change {:?}", t.elapsed());
    assert!(!a.ping("10.0.0.6"));

    // Anti-spoofing: with ICMP allowed, a guest that takes another address cannot talk.
    w.sg("sg1", vec![egress_all(), rule(Direction::Ingress, Some("icmp"), None)]);
    agent.converge(&w.s).await.unwrap();
    assert!(a.ping("10.0.0.6"));
    must(&["ip", "-n", &a.ns, "addr", "flush", "dev", "eth0"]);
    must(&["ip", "-n", &a.ns, "addr", "add", "10.0.0.99/24", "dev", "eth0"]);
    assert!(!a.ping("10.0.0.6"), "spoofed source address must be dropped");
    // ... unless the address is in allowed_address_pairs.
    w.s.ports.iter_mut().find(|p| p.id == pa.id).unwrap().allowed_address_pairs =
        vec![AddressPair { ip_address: "10.0.0.99/32".into(), mac_address: None }];
    agent.converge(&w.s).await.unwrap();
    assert!(a.ping("10.0.0.6"), "allowed address pair must pass");
    // A spoofed MAC is dropped too.
    must(&["ip", "-n", &a.ns, "link", "set", "dev", "eth0", "address", "fa:16:3e:99:99:99"]);
    assert!(!a.ping("10.0.0.6"), "spoofed MAC must be dropped");

    // Restart adopts: a new agent converging the same state keeps dnsmasq and the bridge.
    let pid_file = cfg.state_dir.join("dhcp").join(&net).join("pid");
    let pid_before = std::fs::read_to_string(&pid_file).unwrap();
    let again = NetworkAgent::new(cfg.clone());
    let t = Instant::now();
    again.converge(&w.s).await.unwrap();
    println!("converge (restart, nothing to do) {:?}", t.elapsed());
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid_before, "dnsmasq must be adopted, not restarted");
    must(&["ip", "-n", &a.ns, "link", "set", "dev", "eth0", "address", &pa.mac_address]);
    assert!(b.ping("10.0.0.99"));

    // Teardown removes everything the agent made.
    again.teardown().await.unwrap();
    assert!(!link_exists(&h, &names::bridge(&net)));
    assert!(!link_exists(&h, "vxlan-1001"));
    assert!(!nft_ruleset(&h).contains("stratus"), "nft tables left: {}", nft_ruleset(&h));
    let ns_list = must(&["ip", "netns", "list"]);
    assert!(!ns_list.contains(&format!("{}qdhcp-", cfg.netns_prefix)), "qdhcp namespace left");
}

#[tokio::test]
async fn router_snat_and_floating_ip() {
    let lab = Lab::new("l3");
    let h = lab.netns("h1");
    let outside = lab.netns("out");
    // The "physical" provider interface of the host, wired to an outside host.
    must(&["ip", "-n", &h, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", &outside]);
    must(&["ip", "-n", &h, "link", "set", "ext0", "up"]);
    must(&["ip", "-n", &outside, "addr", "add", "203.0.113.1/24", "dev", "eth0"]);
    must(&["ip", "-n", &outside, "link", "set", "eth0", "up"]);
    let mut cfg = lab.agent_cfg("h1", &h);
    cfg.physical_interface_mappings.insert("provider".into(), "ext0".into());
    let prefix = cfg.netns_prefix.clone();
    let agent = NetworkAgent::new(cfg);

    let mut w = World::default();
    let ext = w.network("admin", NetworkType::Flat, None, Some("provider"), 1500);
    let ext_sub = w.subnet(&ext, "203.0.113.0/24", Some("203.0.113.1"), false);
    let net = w.network("p1", NetworkType::Local, None, None, 1500);
    let sub = w.subnet(&net, "10.0.0.0/24", Some("10.0.0.1"), true);
    w.port(&net, &sub, "10.0.0.2", "network:dhcp", "h1", &[]);
    let gw = w.port(&ext, &ext_sub, "203.0.113.10", "network:router_gateway", "h1", &[]);
    let qr = w.port(&net, &sub, "10.0.0.1", "network:router_interface", "h1", &[]);
    w.sg("sg1", vec![egress_all(), rule(Direction::Ingress, Some("icmp"), None)]);
    let pa = w.port(&net, &sub, "10.0.0.5", "compute:nova", "h1", &["sg1"]);
    let router_id = uuid();
    w.s.routers.push(Router {
        id: router_id.clone(),
        project_id: "p1".into(),
        enable_snat: true,
        gateway_port_id: Some(gw.id.clone()),
        interface_port_ids: vec![qr.id.clone()],
        routes: vec![],
    });
    let a = lab.guest("ga", &h, &pa);
    agent.converge(&w.s).await.unwrap();
    a.dhcp();

    // SNAT: the outside host has no route to 10.0.0.0/24, so a reply proves translation.
    assert!(a.ping_until("203.0.113.1", Duration::from_secs(3)).is_some(), "guest cannot reach outside through SNAT");
    assert!(!ping_from(&outside, "10.0.0.5"));
    assert!(!ping_from(&outside, "203.0.113.20"));

    // Floating IP: reachable from outside.
    w.s.floating_ips.push(FloatingIp {
        id: uuid(),
        floating_ip_address: "203.0.113.20".into(),
        floating_network_id: ext.clone(),
        router_id: Some(router_id.clone()),
        port_id: Some(pa.id.clone()),
        fixed_ip_address: Some("10.0.0.5".into()),
    });
    let t = Instant::now();
    agent.converge(&w.s).await.unwrap();
    let reach = ping_until_from(&outside, "203.0.113.20", Duration::from_secs(3)).expect("floating IP not reachable");
    println!("floating IP associate: reachable {:?} after converge start", t.elapsed().max(reach));
    // Hairpin: the guest reaches its own floating IP from inside.
    assert!(a.ping_until("203.0.113.20", Duration::from_secs(3)).is_some(), "no hairpin to the floating IP");
    // Disassociate: unreachable again.
    let f = &mut w.s.floating_ips[0];
    f.port_id = None;
    f.fixed_ip_address = None;
    f.router_id = None;
    agent.converge(&w.s).await.unwrap();
    assert!(!ping_from(&outside, "203.0.113.20"), "floating IP still answers after disassociation");
    assert!(a.ping("203.0.113.1"), "SNAT must keep working");

    agent.teardown().await.unwrap();
    // This agent's namespaces only: other clouds on the machine have routers too.
    assert!(!must(&["ip", "netns", "list"]).contains(&format!("{prefix}qrouter-")), "router namespace left");
}

fn ping_until_from(ns: &str, ip: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if ping_from(ns, ip) {
            return Some(t0.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn same_cidr_projects_are_isolated() {
    let lab = Lab::new("iso");
    let h = host_with_vtep(&lab, "h1", "192.0.2.1");
    let mut cfg = lab.agent_cfg("h1", &h);
    cfg.tunnel_ip = Some("192.0.2.1".parse().unwrap());
    let agent = NetworkAgent::new(cfg);
    let mut w = World::default();
    w.host("h1", Some("192.0.2.1"));
    w.sg("open", vec![egress_all(), rule(Direction::Ingress, Some("icmp"), None)]);
    let n1 = w.network("p1", NetworkType::Vxlan, Some(2001), None, 1450);
    let s1 = w.subnet(&n1, "10.0.0.0/24", Some("10.0.0.1"), true);
    w.port(&n1, &s1, "10.0.0.2", "network:dhcp", "h1", &[]);
    let n2 = w.network("p2", NetworkType::Vxlan, Some(2002), None, 1450);
    let s2 = w.subnet(&n2, "10.0.0.0/24", Some("10.0.0.1"), true);
    w.port(&n2, &s2, "10.0.0.2", "network:dhcp", "h1", &[]);
    let a1 = w.port(&n1, &s1, "10.0.0.5", "compute:nova", "h1", &["open"]);
    let a2 = w.port(&n1, &s1, "10.0.0.6", "compute:nova", "h1", &["open"]);
    let b1 = w.port(&n2, &s2, "10.0.0.7", "compute:nova", "h1", &["open"]);
    let b2 = w.port(&n2, &s2, "10.0.0.5", "compute:nova", "h1", &["open"]);
    let ga1 = lab.guest("a1", &h, &a1);
    let ga2 = lab.guest("a2", &h, &a2);
    let gb1 = lab.guest("b1", &h, &b1);
    let gb2 = lab.guest("b2", &h, &b2);
    agent.converge(&w.s).await.unwrap();
    for g in [&ga1, &ga2, &gb1, &gb2] {
        g.dhcp();
    }
    assert!(ga1.ping("10.0.0.6"));
    assert!(gb1.ping("10.0.0.5"), "project 2 reaches its own 10.0.0.5");
    assert!(!ga1.ping("10.0.0.7"), "project 1 must not reach project 2");
    assert!(!gb2.ping("10.0.0.6"), "project 2 must not reach project 1");
    // The same address answers in each project from its own guest: ARP stays in the network.
    let neigh = must(&["ip", "-n", &gb1.ns, "neigh", "show", "10.0.0.5"]);
    assert!(neigh.contains(&b2.mac_address), "{neigh}");
    agent.teardown().await.unwrap();
}

#[tokio::test]
async fn vxlan_carries_a_tenant_network_between_two_hosts() {
    let lab = Lab::new("vx");
    let h1 = lab.netns("h1");
    let h2 = lab.netns("h2");
    // The underlay: one veth between the two hosts.
    must(&["ip", "-n", &h1, "link", "add", "und0", "type", "veth", "peer", "name", "und0", "netns", &h2]);
    for (h, ip) in [(&h1, "192.0.2.1/24"), (&h2, "192.0.2.2/24")] {
        must(&["ip", "-n", h, "addr", "add", ip, "dev", "und0"]);
        must(&["ip", "-n", h, "link", "set", "und0", "up"]);
    }
    let mut c1 = lab.agent_cfg("h1", &h1);
    c1.tunnel_ip = Some("192.0.2.1".parse().unwrap());
    let mut c2 = lab.agent_cfg("h2", &h2);
    c2.tunnel_ip = Some("192.0.2.2".parse().unwrap());
    let (ag1, ag2) = (NetworkAgent::new(c1), NetworkAgent::new(c2));

    let mut w = World::default();
    w.host("h1", Some("192.0.2.1"));
    w.host("h2", Some("192.0.2.2"));
    w.sg("open", vec![egress_all(), rule(Direction::Ingress, Some("icmp"), None)]);
    let net = w.network("p1", NetworkType::Vxlan, Some(3001), None, 1450);
    let sub = w.subnet(&net, "10.0.0.0/24", Some("10.0.0.1"), true);
    w.port(&net, &sub, "10.0.0.2", "network:dhcp", "h1", &[]);
    let pa = w.port(&net, &sub, "10.0.0.5", "compute:nova", "h1", &["open"]);
    let pb = w.port(&net, &sub, "10.0.0.6", "compute:nova", "h2", &["open"]);
    let a = lab.guest("ga", &h1, &pa);
    let b = lab.guest("gb", &h2, &pb);
    ag1.converge(&w.s).await.unwrap();
    let t = Instant::now();
    ag2.converge(&w.s).await.unwrap();
    // Guest B's DHCP exchange crosses the VXLAN (the DHCP server is on h1).
    let lb = b.dhcp();
    println!("h2 guest: plug -> lease over VXLAN {:?}", t.elapsed());
    assert_eq!(lb.get("ip_address"), "10.0.0.6");
    a.dhcp();
    assert!(a.ping_until("10.0.0.6", Duration::from_secs(3)).is_some(), "no ping across VXLAN");
    assert!(b.ping("10.0.0.5"));
    // l2population: static FDB entries towards the other host, learning off.
    let fdb = must(&["bridge", "-n", &h2, "fdb", "show", "dev", "vxlan-3001"]);
    assert!(fdb.contains(&format!("{} dst 192.0.2.1", pa.mac_address)), "{fdb}");
    assert!(fdb.contains("00:00:00:00:00:00 dst 192.0.2.1"), "{fdb}");
    let details = must(&["ip", "-d", "-n", &h2, "link", "show", "vxlan-3001"]);
    assert!(details.contains("nolearning"), "{details}");
    // Entries follow the bindings: B's port leaves h2, so h1 forgets B's MAC and h2's VTEP.
    let fdb1 = must(&["bridge", "-n", &h1, "fdb", "show", "dev", "vxlan-3001"]);
    assert!(fdb1.contains(&format!("{} dst 192.0.2.2", pb.mac_address)), "{fdb1}");
    w.s.ports.retain(|p| p.id != pb.id);
    ag1.converge(&w.s).await.unwrap();
    let fdb1 = must(&["bridge", "-n", &h1, "fdb", "show", "dev", "vxlan-3001"]);
    assert!(!fdb1.contains("dst 192.0.2.2"), "stale FDB entries: {fdb1}");
    ag1.teardown().await.unwrap();
    ag2.teardown().await.unwrap();
}

/// The agent loop against a fake network service on the in-process bus: it fetches the
/// desired state, wires the port and reports it ACTIVE, heartbeats, reacts to
/// `desired_state_changed` at once, and a restarted agent adopts the running dnsmasq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_loop_reports_active_heartbeats_and_adopts_on_restart() {
    use std::sync::Arc;
    use stratus_bus::{Bus, InProcBus, Message};
    use stratus_network_agent::{BusStateSource, DesiredStateSource};

    let lab = Lab::new("loop");
    let h = lab.netns("h1");
    let mut cfg = lab.agent_cfg("h1", &h);
    cfg.resync_interval_secs = 60;
    cfg.heartbeat_interval_secs = 1;
    let mut w = World::default();
    w.sg("open", vec![egress_all(), rule(Direction::Ingress, Some("icmp"), None)]);
    let net = w.network("p1", NetworkType::Local, None, None, 1500);
    let sub = w.subnet(&net, "10.0.0.0/24", Some("10.0.0.1"), true);
    w.port(&net, &sub, "10.0.0.2", "network:dhcp", "h1", &[]);
    let pa = w.port(&net, &sub, "10.0.0.5", "compute:nova", "h1", &["open"]);
    let a = lab.guest("ga", &h, &pa);

    let bus: Arc<dyn Bus> = Arc::new(InProcBus::new());
    let state = Arc::new(tokio::sync::Mutex::new(w.s.clone()));
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let mut server = bus.consume("network-server").await.unwrap();
    let st = state.clone();
    let server_task = tokio::spawn(async move {
        while let Some(d) = server.recv().await {
            if d.message.method == "get_desired_state" {
                let s = serde_json::to_value(&*st.lock().await).unwrap();
                d.reply(Ok(s));
            } else {
                let _ = events_tx.send(d.message.clone());
            }
        }
    });
    let source: Arc<dyn DesiredStateSource> = Arc::new(BusStateSource::new(bus.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent = Arc::new(NetworkAgent::new(cfg.clone()));
    let run = tokio::spawn(agent.clone().run(bus.clone(), source.clone(), stop_rx));
    let t = Instant::now();
    let mut active = BTreeSet::new();
    while active.len() < 2 {
        let m = wait_for(&mut events, "update_port_status").await.expect("no port status in 10 s");
        assert_eq!(m.args["status"], "ACTIVE");
        active.insert(m.args["port_id"].as_str().unwrap().to_owned());
    }
    println!("agent start -> ports ACTIVE {:?}", t.elapsed());
    assert!(active.contains(&pa.id));
    let hb = wait_for(&mut events, "report_state").await.expect("no heartbeat");
    assert_eq!(hb.args["host"], "h1");
    let a_dhcp = tokio::task::spawn_blocking(move || {
        a.dhcp();
        a
    });
    let a = a_dhcp.await.unwrap();
    assert!(a.ping("10.0.0.2") || a.ping_until("10.0.0.2", Duration::from_secs(2)).is_some(), "DHCP port unreachable");

    // A new port appears; the fanout makes the agent converge without waiting for the resync.
    let pb = {
        let mut w2 = World::default();
        let p = w2.port(&net, &sub, "10.0.0.6", "compute:nova", "h1", &["open"]);
        state.lock().await.ports.push(p.clone());
        p
    };
    let b = lab.guest("gb", &h, &pb);
    let t = Instant::now();
    bus.fanout("network-agent", Message::new("desired_state_changed", serde_json::json!({}))).await.unwrap();
    let m = wait_for(&mut events, "update_port_status").await.expect("new port not reported");
    assert_eq!(m.args["port_id"], pb.id.as_str());
    println!("desired_state_changed -> new port ACTIVE {:?}", t.elapsed());
    let b = tokio::task::spawn_blocking(move || {
        b.dhcp();
        b
    })
    .await
    .unwrap();
    assert!(b.ping("10.0.0.5"));

    // Stop the agent: the data plane stays; a new agent adopts it without restarting dnsmasq.
    stop_tx.send(true).unwrap();
    run.await.unwrap().unwrap();
    assert!(b.ping("10.0.0.5"), "traffic must survive the agent stopping");
    let pid_file = cfg.state_dir.join("dhcp").join(&net).join("pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent2 = Arc::new(NetworkAgent::new(cfg.clone()));
    let run2 = tokio::spawn(agent2.clone().run(bus.clone(), source, stop_rx));
    let m = wait_for(&mut events, "update_port_status").await.expect("restarted agent reports");
    assert_eq!(m.args["status"], "ACTIVE");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid, "dnsmasq restarted instead of adopted");
    assert!(b.ping("10.0.0.5"));
    stop_tx.send(true).unwrap();
    run2.await.unwrap().unwrap();
    agent2.teardown().await.unwrap();
    server_task.abort();
}

async fn wait_for(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<stratus_bus::Message>,
    method: &str,
) -> Result<stratus_bus::Message, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = events.recv().await.expect("bus closed");
            if m.method == method {
                return m;
            }
        }
    })
    .await
}

/// A flat provider network between two hosts over a shared "physical" link (mapped as
/// `physnet1`), plus TCP throughput: same host with security groups, across the flat
/// network and across VXLAN, next to two namespaces on a bare bridge without filtering.
/// VLAN networks need 802.1Q in the kernel, which this test host lacks: the test checks that
/// the agent then says so (and that the subinterface is made where the kernel has it).
#[tokio::test]
async fn provider_networks_between_two_hosts_and_throughput() {
    let lab = Lab::new("prov");
    let h1 = lab.netns("h1");
    let h2 = lab.netns("h2");
    must(&["ip", "-n", &h1, "link", "add", "phys0", "type", "veth", "peer", "name", "phys0", "netns", &h2]);
    must(&["ip", "-n", &h1, "link", "add", "und0", "type", "veth", "peer", "name", "und0", "netns", &h2]);
    for (h, ip) in [(&h1, "192.0.2.1/24"), (&h2, "192.0.2.2/24")] {
        must(&["ip", "-n", h, "link", "set", "phys0", "up"]);
        must(&["ip", "-n", h, "addr", "add", ip, "dev", "und0"]);
        must(&["ip", "-n", h, "link", "set", "und0", "up"]);
    }
    let cfgs: Vec<_> = [("h1", &h1, "192.0.2.1"), ("h2", &h2, "192.0.2.2")]
        .into_iter()
        .map(|(n, h, ip)| {
            let mut c = lab.agent_cfg(n, h);
            c.physical_interface_mappings.insert("physnet1".into(), "phys0".into());
            c.tunnel_ip = Some(ip.parse().unwrap());
            c
        })
        .collect();
    let ag1 = NetworkAgent::new(cfgs[0].clone());
    let ag2 = NetworkAgent::new(cfgs[1].clone());
    let mut w = World::default();
    w.host("h1", Some("192.0.2.1"));
    w.host("h2", Some("192.0.2.2"));
    w.sg("open", vec![egress_all(), rule(Direction::Ingress, None, None)]);
    let vlan = w.network("admin", NetworkType::Flat, None, Some("physnet1"), 1500);
    let vs = w.subnet(&vlan, "10.1.0.0/24", Some("10.1.0.1"), true);
    w.port(&vlan, &vs, "10.1.0.2", "network:dhcp", "h1", &[]);
    let va = w.port(&vlan, &vs, "10.1.0.5", "compute:nova", "h1", &["open"]);
    let va2 = w.port(&vlan, &vs, "10.1.0.7", "compute:nova", "h1", &["open"]);
    let vb = w.port(&vlan, &vs, "10.1.0.6", "compute:nova", "h2", &["open"]);
    let vx = w.network("p1", NetworkType::Vxlan, Some(4001), None, 1450);
    let xs = w.subnet(&vx, "10.2.0.0/24", Some("10.2.0.1"), true);
    w.port(&vx, &xs, "10.2.0.2", "network:dhcp", "h1", &[]);
    let xa = w.port(&vx, &xs, "10.2.0.5", "compute:nova", "h1", &["open"]);
    let xb = w.port(&vx, &xs, "10.2.0.6", "compute:nova", "h2", &["open"]);
    let (ga, ga2, gb) = (lab.guest("va", &h1, &va), lab.guest("va2", &h1, &va2), lab.guest("vb", &h2, &vb));
    let (gxa, gxb) = (lab.guest("xa", &h1, &xa), lab.guest("xb", &h2, &xb));
    ag1.converge(&w.s).await.unwrap();
    ag2.converge(&w.s).await.unwrap();
    for g in [&ga, &ga2, &gb, &gxa, &gxb] {
        g.dhcp();
    }
    assert!(ga.ping_until("10.1.0.6", Duration::from_secs(3)).is_some(), "no ping across the flat network");
    assert!(gxa.ping_until("10.2.0.6", Duration::from_secs(3)).is_some(), "no ping across VXLAN");

    let same_host = throughput(&ga, &ga2, "10.1.0.7");
    let across_flat = throughput(&ga, &gb, "10.1.0.6");
    let across_vxlan = throughput(&gxa, &gxb, "10.2.0.6");
    // Reference: two namespaces on a bare bridge, no filtering, no br_netfilter.
    let bare = lab.netns("bare");
    must(&["ip", "-n", &bare, "link", "add", "br0", "type", "bridge"]);
    must(&["ip", "-n", &bare, "link", "set", "br0", "up"]);
    let mut refs = Vec::new();
    for (i, name) in ["r1", "r2"].iter().enumerate() {
        let ns = lab.netns(name);
        let p = format!("p{i}");
        must(&["ip", "-n", &bare, "link", "add", &p, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        must(&["ip", "-n", &bare, "link", "set", &p, "master", "br0", "up"]);
        must(&["ip", "-n", &ns, "addr", "add", &format!("10.3.0.{}/24", i + 5), "dev", "eth0"]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        refs.push(common::Guest { ns, dir: lab.tmp.path().to_path_buf() });
    }
    let reference = throughput(&refs[0], &refs[1], "10.3.0.6");
    println!(
        "TCP throughput (MB/s): same host + SG {same_host:.0}, across hosts (flat) {across_flat:.0}, across VXLAN {across_vxlan:.0}, bare bridge reference {reference:.0}"
    );
    assert!(same_host > 1.0 && across_flat > 1.0 && across_vxlan > 1.0);

    // VLAN on the same physical network.
    let vl = w.network("admin", NetworkType::Vlan, Some(100), Some("physnet1"), 1500);
    let vls = w.subnet(&vl, "10.4.0.0/24", None, false);
    w.port(&vl, &vls, "10.4.0.5", "compute:nova", "h1", &[]);
    let kernel_has_vlan = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "CONFIG_VLAN_8021Q=y" || l == "CONFIG_VLAN_8021Q=m")
        })
        .unwrap_or(true);
    match ag1.converge(&w.s).await {
        Ok(_) => assert!(kernel_has_vlan && link_exists(&h1, "phys0.100")),
        Err(e) => {
            assert!(!kernel_has_vlan, "VLAN failed on a kernel with 802.1Q: {e:#}");
            assert!(format!("{e:#}").contains("CONFIG_VLAN_8021Q"), "{e:#}");
        }
    }
    w.s.networks.retain(|n| n.id != vl);
    w.s.ports.retain(|p| p.network_id != vl);
    ag1.converge(&w.s).await.unwrap();
    assert!(!link_exists(&h1, "phys0.100"), "VLAN subinterface must go with its network");
    ag1.teardown().await.unwrap();
    ag2.teardown().await.unwrap();
}

/// MB/s of one TCP stream of 200 MB (socat, no shell).
fn throughput(from: &common::Guest, to: &common::Guest, ip: &str) -> f64 {
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &to.ns, "socat", "-u", "TCP-LISTEN:5001,reuseaddr", "OPEN:/dev/null"])
        .spawn()
        .expect("socat");
    std::thread::sleep(Duration::from_millis(200));
    let bytes = 200_000_000u64;
    let t = Instant::now();
    must(&[
        "ip",
        "netns",
        "exec",
        &from.ns,
        "socat",
        "-u",
        &format!("OPEN:/dev/zero,readbytes={bytes}"),
        &format!("TCP:{ip}:5001"),
    ]);
    let secs = t.elapsed().as_secs_f64();
    let _ = server.wait();
    bytes as f64 / secs / 1e6
}
