//! Two hypervisors on one machine (issue 9, test 5): host A and host B are namespaces the
//! test makes, each with its own network agent (host A's is `stratus up`'s in-process one
//! where the test allows it, host B's is what `stratus up` would run on a second machine),
//! joined by an "underlay" veth whose addresses are the agents' VXLAN `tunnel_ip`s. Tenant
//! networks are VXLAN; the FDB comes from port bindings (l2population, no multicast group).
//!
//! - [`two_hosts_vxlan_per_host_state_and_agent_failover`]: namespace "guests" (veths with the
//!   ports' MACs), no QEMU: a lease and pings across VXLAN, per-host desired state, and the
//!   DHCP server and the router moving to the live host when host B dies (agent stopped,
//!   underlay cut), as `openstack network agent list [--network|--router]` shows.
//! - [`two_hosts_real_guests_over_vxlan`]: one real TCG guest per host (a second qemu compute
//!   agent runs in host B's namespace), `server create --availability-zone nova:<host>`; the
//!   guest on B gets its lease and metadata across VXLAN from host A's DHCP namespace, the
//!   guests ping each other, ssh works across, and the TCP throughput between them is
//!   printed (`STRATUS_BENCH_SAME_HOST=1` adds a third guest for the same-host figure).
//!
//! Guards remove, even on panic: QEMUs mentioning the data directory, then every namespace
//! of the test with what runs inside (dnsmasq, metadata proxies stop with the runtime).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dataplane::common::{self, must, ping_from, Lab};
use crate::qemu::{image_dir, Reaper, ONE_AT_A_TIME};
use serde_json::Value;
use stratus_network_agent::model::{DesiredState, Port};
use stratus_network_agent::{AgentConfig, BusStateSource, DesiredStateSource};
use stratus_testkit::TestCloud;
use tokio::sync::watch;

/// The metadata proxies' shared secret (both hosts must sign alike).
const SECRET: &str = "dataplane-hosts-secret";
const TUNNEL_A: &str = "192.0.2.1";
const TUNNEL_B: &str = "192.0.2.2";

/// The underlay: one veth `und0` between the two host namespaces, with the tunnel addresses.
fn underlay(a: &str, b: &str) {
    must(&["ip", "-n", a, "link", "add", "und0", "type", "veth", "peer", "name", "und0", "netns", b]);
    for (h, ip) in [(a, TUNNEL_A), (b, TUNNEL_B)] {
        must(&["ip", "-n", h, "addr", "add", &format!("{ip}/24"), "dev", "und0"]);
        must(&["ip", "-n", h, "link", "set", "und0", "up"]);
    }
}

/// A host's agent configuration: its namespace, host name, VTEP, fast heartbeats.
fn agent_cfg(lab: &Lab, host: &str, ns: &str, tunnel_ip: &str) -> AgentConfig {
    AgentConfig {
        enabled: "true".into(),
        tunnel_ip: Some(tunnel_ip.parse().unwrap()),
        heartbeat_interval_secs: 1,
        device_poll_interval_ms: 100,
        metadata_proxy_shared_secret: SECRET.into(),
        ..lab.agent_cfg(host, ns)
    }
}

/// Runs a network agent for another host over the cloud's bus, as `stratus up` on that host
/// would; it stops (leaving its kernel state, as a crashed agent does) when the returned
/// sender says so or is dropped.
fn spawn_network_agent(cloud: &TestCloud, cfg: AgentConfig) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    stratus::netagent::spawn(cfg, &cloud.handle().platform, rx);
    tx
}

/// What the service sends host `host`'s agent.
async fn state_of(cloud: &TestCloud, host: &str) -> DesiredState {
    BusStateSource::new(cloud.handle().platform.bus.clone()).fetch(host).await.expect("get_desired_state")
}

async fn port_show(cloud: &TestCloud, id: &str) -> Value {
    cloud.openstack(&["port", "show", id]).await.expect("port show")
}

/// Polls `check` every 200 ms until it returns `Some`, panicking with `what` after `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(t0.elapsed() < limit, "{what} (waited {limit:?})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The network's DHCP port: (id, binding host).
async fn dhcp_port(cloud: &TestCloud, net: &str) -> Option<(String, String)> {
    let ports = cloud.openstack(&["port", "list", "--network", net, "--device-owner", "network:dhcp"]).await.ok()?;
    let id = ports.as_array()?.first()?["ID"].as_str()?.to_string();
    let host = port_show(cloud, &id).await["binding_host_id"].as_str().unwrap_or_default().to_string();
    Some((id, host))
}

fn alive(a: &Value) -> bool {
    a["Alive"] == true || a["Alive"] == ":-)"
}

/// The VXLAN device of a network and its FDB in a host namespace.
fn vxlan_fdb(ns: &str, vni: u64) -> String {
    must(&["bridge", "-n", ns, "fdb", "show", "dev", &format!("vxlan-{vni}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_vxlan_per_host_state_and_agent_failover() {
    let lab = Lab::new("hx");
    let (ns_a, ns_b) = (lab.netns("a"), lab.netns("b"));
    underlay(&ns_a, &ns_b);
    let t_start = Instant::now();
    // Both agents are the test's, so host B can be made to host DHCP first and then die.
    let cloud = TestCloud::start_with(|c| {
        c.network.agent_down_time = 3;
        c.compute.service.metadata_proxy_shared_secret = SECRET.into();
    })
    .await;
    let stop_b = spawn_network_agent(&cloud, agent_cfg(&lab, "hostb", &ns_b, TUNNEL_B));
    let c = &cloud;
    let agents = wait_for(Duration::from_secs(15), "host B's agents registered", move || async move {
        let v = c.openstack(&["network", "agent", "list", "--host", "hostb"]).await.ok()?;
        (v.as_array()?.len() == 4).then_some(v)
    })
    .await;
    assert!(agents.as_array().unwrap().iter().all(alive), "{agents}");

    let net = cloud.openstack(&["network", "create", "hx-net"]).await.expect("network create");
    let net_id = net["id"].as_str().unwrap().to_string();
    assert_eq!(net["provider:network_type"], "vxlan", "{net}");
    let vni = net["provider:segmentation_id"].as_u64().expect("a VNI");
    cloud
        .openstack(&["subnet", "create", "--network", "hx-net", "--subnet-range", "10.79.0.0/24", "hx-sub"])
        .await
        .expect("subnet create");
    let nid = net_id.as_str();
    let (dhcp_id, dhcp_host) = wait_for(Duration::from_secs(15), "DHCP scheduled", move || dhcp_port(c, nid)).await;
    assert_eq!(dhcp_host, "hostb", "the only agent got the network's DHCP server");
    // And the router (its interface port is bound where the L3 agent is).
    let router = cloud.openstack(&["router", "create", "hx-r"]).await.expect("router create");
    let router_id = router["id"].as_str().unwrap().to_string();
    cloud.openstack(&["router", "add", "subnet", "hx-r", "hx-sub"]).await.expect("router add subnet");
    let rid = router_id.as_str();
    let router_host = move || async move {
        let ports = c.openstack(&["port", "list", "--router", rid]).await.ok()?;
        let id = ports.as_array()?.first()?["ID"].as_str()?.to_string();
        Some(port_show(c, &id).await["binding_host_id"].as_str()?.to_string()).filter(|h| !h.is_empty())
    };
    assert_eq!(wait_for(Duration::from_secs(15), "router scheduled", router_host).await, "hostb");

    let stop_a = spawn_network_agent(&cloud, agent_cfg(&lab, "hosta", &ns_a, TUNNEL_A));
    // One guest port per host (admins bind ports as Nova does), plus a network only host A uses.
    let mut guests = Vec::new();
    for (name, host, ns) in [("pa", "hosta", &ns_a), ("pb", "hostb", &ns_b)] {
        let p = cloud.openstack(&["port", "create", "--network", "hx-net", "--host", host, name]).await.unwrap();
        let port = Port {
            id: p["id"].as_str().unwrap().into(),
            network_id: net_id.clone(),
            mac_address: p["mac_address"].as_str().unwrap().into(),
            fixed_ips: vec![],
            device_owner: String::new(),
            device_id: String::new(),
            binding_host_id: host.into(),
            security_groups: vec![],
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            admin_state_up: true,
        };
        let ip = p["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
        let g = lab.guest(&format!("g{name}"), ns, &port);
        guests.push((port, ip, g));
    }
    cloud.openstack(&["network", "create", "hx-a-only"]).await.unwrap();
    cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "hx-a-only",
            "--subnet-range",
            "10.80.0.0/24",
            "--no-dhcp",
            "hx-a-sub",
        ])
        .await
        .unwrap();
    // No security group: a port in `default` would reach B anyway, as a member of the remote
    // group B's port's `default` rules name (its address, not its network).
    let only_a = cloud
        .openstack(&["port", "create", "--network", "hx-a-only", "--host", "hosta", "--no-security-group", "pa2"])
        .await
        .unwrap();
    let member =
        cloud.openstack(&["port", "create", "--network", "hx-a-only", "--host", "hosta", "pa3"]).await.unwrap();
    let only_a_net = only_a["network_id"].as_str().unwrap().to_string();
    for (p, ..) in &guests {
        let id = p.id.as_str();
        wait_for(Duration::from_secs(20), &format!("port {id} ACTIVE"), move || async move {
            (port_show(c, id).await["status"] == "ACTIVE").then_some(())
        })
        .await;
    }

    // DHCP across VXLAN: host A's guest leases from host B's dnsmasq.
    let (ga, gb) = (&guests[0].2, &guests[1].2);
    let (ip_a, ip_b) = (guests[0].1.clone(), guests[1].1.clone());
    let lease_a = ga.dhcp();
    assert_eq!(lease_a.get("ip_address"), ip_a, "host A's guest leased its port's address across VXLAN");
    assert_eq!(lease_a.get("interface_mtu"), "1450", "VXLAN MTU: {:?}", lease_a.vars);
    let lease_b = gb.dhcp();
    assert_eq!(lease_b.get("ip_address"), ip_b);
    let ping = ga.ping_until(&ip_b, Duration::from_secs(5)).expect("guest A pings guest B across VXLAN");
    assert!(gb.ping_until(&ip_a, Duration::from_secs(5)).is_some(), "guest B pings guest A");

    // l2population: unicast FDB entries to the peer VTEP from the bindings, no multicast group.
    let fdb_a = vxlan_fdb(&ns_a, vni);
    assert!(fdb_a.contains(&format!("{} dst {TUNNEL_B}", guests[1].0.mac_address)), "host A's FDB: {fdb_a}");
    assert!(fdb_a.contains(&format!("00:00:00:00:00:00 dst {TUNNEL_B}")), "flooding to B: {fdb_a}");
    let dev = must(&["ip", "-n", &ns_b, "-d", "link", "show", &format!("vxlan-{vni}")]);
    let vx = dev.lines().find(|l| l.contains("vxlan id")).unwrap_or_else(|| panic!("no vxlan details: {dev}"));
    assert!(vx.contains(&format!("local {TUNNEL_B}")) && !vx.contains(" group "), "unicast VXLAN: {vx}");

    // Per-host desired state: B never hears of A's other network, its port or A-only VTEPs.
    let sb = state_of(&cloud, "hostb").await;
    let sa = state_of(&cloud, "hosta").await;
    assert!(sa.routers.is_empty(), "the router is host B's: {:?}", sa.routers);
    assert_eq!(sb.routers.len(), 1, "{:?}", sb.routers);
    let only_a_id = only_a["id"].as_str().unwrap();
    assert!(sa.networks.iter().any(|n| n.id == only_a_net) && sa.port(only_a_id).is_some(), "A gets its own");
    assert!(sb.networks.iter().all(|n| n.id != only_a_net), "B got A's network: {:?}", sb.networks);
    assert!(sb.port(only_a_id).is_none(), "B got A's port");
    assert!(sb.port(member["id"].as_str().unwrap()).is_some(), "B gets the remote group member (default's rules)");
    assert!(sb.subnets.iter().all(|s| s.network_id == net_id), "B's subnets: {:?}", sb.subnets);
    assert!(sb.port(&guests[0].0.id).is_some(), "B knows A's port on the shared network (l2population)");
    assert_eq!(sb.tunnel_ip("hosta"), Some(TUNNEL_A.parse().unwrap()));
    let bridge = stratus_network_agent::exec::names::bridge(&only_a_net);
    assert!(common::link_exists(&ns_a, &bridge) && !common::link_exists(&ns_b, &bridge), "A-only bridge on A only");

    // Both hosts' agents are listed; the network's DHCP agent is host B's.
    let agents = cloud.openstack(&["network", "agent", "list"]).await.unwrap();
    assert_eq!(agents.as_array().unwrap().len(), 8, "4 agent types on 2 hosts: {agents}");
    assert!(agents.as_array().unwrap().iter().all(alive), "{agents}");
    let hosting = cloud.openstack(&["network", "agent", "list", "--network", &net_id]).await.unwrap();
    assert_eq!(hosting.as_array().unwrap().len(), 1, "{hosting}");
    assert_eq!(hosting[0]["Host"], "hostb", "{hosting}");

    // Host B dies: agent stopped (its dnsmasq and bridges stay, as after a crash) and
    // underlay cut. Within agent_down_time (3 s) + a check, DHCP moves to host A.
    stop_b.send_replace(true);
    must(&["ip", "-n", &ns_b, "link", "set", "und0", "down"]);
    let t_dead = Instant::now();
    wait_for(Duration::from_secs(20), "DHCP rescheduled to host A", move || async move {
        let (_, host) = dhcp_port(c, nid).await?;
        (host == "hosta").then_some(())
    })
    .await;
    let moved_after = t_dead.elapsed();
    let agents = cloud.openstack(&["network", "agent", "list", "--host", "hostb"]).await.unwrap();
    assert!(agents.as_array().unwrap().iter().all(|a| !alive(a)), "host B's agents dead: {agents}");
    let agents = cloud.openstack(&["network", "agent", "list", "--host", "hosta"]).await.unwrap();
    assert!(agents.as_array().unwrap().iter().all(alive), "host A's agents alive: {agents}");
    let hosting = cloud.openstack(&["network", "agent", "list", "--network", &net_id]).await.unwrap();
    assert_eq!(hosting[0]["Host"], "hosta", "the DHCP agent list follows: {hosting}");
    assert_eq!(port_show(&cloud, &dhcp_id).await["device_id"], format!("dhcp-hosta-{net_id}"));
    // The router follows to host A's L3 agent.
    let t_router = Instant::now();
    loop {
        if router_host().await.as_deref() == Some("hosta") {
            break;
        }
        assert!(t_router.elapsed() < Duration::from_secs(20), "router not rescheduled to host A");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let l3 = cloud.openstack(&["network", "agent", "list", "--router", &router_id]).await.unwrap();
    assert_eq!(l3.as_array().unwrap().len(), 1, "{l3}");
    assert_eq!(l3[0]["Host"], "hosta", "the router's L3 agent list follows: {l3}");
    let qrouter_a = format!("{}hosta-qrouter-{router_id}", lab.prefix);
    let q = qrouter_a.as_str();
    wait_for(Duration::from_secs(15), "host A's router namespace", move || async move {
        common::link_exists(q, "lo").then_some(())
    })
    .await;
    let qdhcp_a = format!("{}hosta-qdhcp-{net_id}", lab.prefix);
    let q = qdhcp_a.as_str();
    wait_for(Duration::from_secs(15), "host A's DHCP namespace", move || async move {
        common::link_exists(q, "lo").then_some(())
    })
    .await;
    // A fresh lease, now from host A (host B is unreachable).
    must(&["ip", "-n", &ga.ns, "addr", "flush", "dev", "eth0"]);
    let relet = Instant::now();
    // Forget the old lease (dhclient would only confirm it, a REBOOT, not a new BOUND).
    std::fs::remove_file(ga.dir.join("leases")).expect("dhclient's lease file");
    let lease = ga.dhcp();
    assert_eq!(lease.get("ip_address"), ip_a);
    let server = lease.get("dhcp_server_identifier").to_string();
    assert!(ga.ping_until(&server, Duration::from_secs(5)).is_some(), "the guest reaches DHCP {server} on host A");

    // Host B comes back: its agent drops the DHCP server and router it no longer hosts (a
    // second dnsmasq with the same address and MAC on the segment would fight host A's),
    // and B's guest is reachable across VXLAN again.
    must(&["ip", "-n", &ns_b, "link", "set", "und0", "up"]);
    let stop_b = spawn_network_agent(&cloud, agent_cfg(&lab, "hostb", &ns_b, TUNNEL_B));
    let (qdhcp_b, qrouter_b) =
        (format!("{}hostb-qdhcp-{net_id}", lab.prefix), format!("{}hostb-qrouter-{router_id}", lab.prefix));
    let (qd, qr) = (qdhcp_b.as_str(), qrouter_b.as_str());
    wait_for(Duration::from_secs(20), "host B dropped its old DHCP and router namespaces", move || async move {
        (!common::link_exists(qd, "lo") && !common::link_exists(qr, "lo")).then_some(())
    })
    .await;
    assert!(ga.ping_until(&ip_b, Duration::from_secs(10)).is_some(), "guest A pings guest B again");
    let agents = cloud.openstack(&["network", "agent", "list", "--host", "hostb"]).await.unwrap();
    assert!(agents.as_array().unwrap().iter().all(alive), "host B's agents alive again: {agents}");
    eprintln!(
        "dataplane_hosts (namespaces): total {:?}; ping across VXLAN after {ping:?}; lease across VXLAN {:?}; \
         agent death→DHCP moved {moved_after:?}; re-lease from host A {:?}",
        t_start.elapsed(),
        lease_a.elapsed,
        relet.elapsed()
    );
    stop_a.send_replace(true);
    stop_b.send_replace(true);
    cloud.shutdown().await;
}

/// A command in a guest as `user` over ssh from namespace `from`: (exit code, output).
fn ssh(from: &str, key: &Path, user: &str, ip: &str, cmd: &str) -> (Option<i32>, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", from, "ssh", "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "LogLevel=ERROR",
            &format!("{user}@{ip}"),
            cmd,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// Waits until the guest printed `marker` on its serial console.
async fn wait_console(cloud: &TestCloud, server: &str, marker: &str, within: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let (code, out, err) = cloud.openstack_raw(&cloud.admin(), &["console", "log", "show", server]).await;
        assert_eq!(code, Some(0), "console log show {server}: {err}");
        if out.contains(marker) {
            return out;
        }
        assert!(t0.elapsed() < within, "{marker:?} not on the console of {server} within {within:?}:\n{out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A qemu compute agent for `host` whose QEMUs run in `netns` (their taps appear there).
async fn qemu_agent(cloud: &TestCloud, host: &str, netns: &str) -> stratus_compute_agent::AgentHandle {
    use stratus_compute_agent::virt::qemu::{images::InternalImageSource, QemuDriver, QemuDriverConfig};
    let platform = &cloud.handle().platform;
    let cfg = QemuDriverConfig {
        instances_path: Some(cloud.data_dir.join(host)),
        power_off_timeout_secs: 30,
        ..Default::default()
    };
    let source = Arc::new(InternalImageSource::new(platform.internal.clone()));
    let driver = QemuDriver::new(cfg, &cloud.data_dir, Some(netns.into()), source).await.expect("qemu driver");
    let acfg = stratus_compute_agent::AgentConfig { host: host.into(), sync_interval_secs: 2, ..Default::default() };
    stratus_compute_agent::Agent::start(acfg, platform.bus.clone(), Arc::new(driver)).await.expect("compute agent")
}

/// TCP throughput in MB/s from guest `from` to `to` (busybox httpd on `to` serving 16 MiB
/// from RAM, busybox wget on `from` fetching it 8 times; the guest's /proc/uptime times it).
fn throughput(qdhcp: &str, key: &Path, from: &str, to: &str) -> f64 {
    let (code, out) = ssh(
        qdhcp,
        key,
        "root",
        to,
        "mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/f bs=1M count=16 2>/dev/null; pidof httpd >/dev/null || httpd -p 8080 -h /tmp/www; echo ok",
    );
    assert!(code == Some(0) && out.contains("ok"), "httpd on {to}: {out}");
    let (code, out) = ssh(
        qdhcp,
        key,
        "root",
        from,
        &format!(
            "s=$(cut -d' ' -f1 /proc/uptime); for i in 1 2 3 4 5 6 7 8; do wget -q -O /dev/null http://{to}:8080/f || exit 9; done; \
             e=$(cut -d' ' -f1 /proc/uptime); echo \"T $s $e\""
        ),
    );
    assert_eq!(code, Some(0), "wget {from}→{to}: {out}");
    let line = out.lines().find(|l| l.starts_with("T ")).unwrap_or_else(|| panic!("no timing: {out}"));
    let t: Vec<f64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    128.0 * 1.048_576 / (t[1] - t[0]).max(0.01)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_real_guests_over_vxlan() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let img_dir = image_dir();
    assert!(Path::new("/usr/bin/ssh").exists(), "the OpenSSH client (/usr/bin/ssh) is needed");
    let same_host_bench = std::env::var_os("STRATUS_BENCH_SAME_HOST").is_some();
    // Drop order (reverse): cloud, QEMUs, data dir, namespaces.
    let lab = Lab::new("hq");
    let (ns_a, ns_b) = (lab.netns("a"), lab.netns("b"));
    underlay(&ns_a, &ns_b);
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let t_start = Instant::now();
    let agent_a = agent_cfg(&lab, "h", &ns_a, TUNNEL_A);
    let ns_for_compute = ns_a.clone();
    let cloud = TestCloud::start_in(data.path().to_path_buf(), |c| {
        c.compute.local.virt_driver = "qemu".into();
        c.compute.local.agent.host = "hosta".into();
        c.compute.local.host_netns = Some(ns_for_compute);
        c.compute.local.agent.sync_interval_secs = 2;
        c.compute.local.qemu.power_off_timeout_secs = 30;
        c.compute.service.metadata_proxy_shared_secret = SECRET.into();
        // Host A: `stratus up`'s own agent, named after the compute host.
        c.network_agent = AgentConfig { host: String::new(), ..agent_a };
    })
    .await;
    stratus::test_image::upload(&cloud.handle().platform, &img_dir).await.expect("test image upload");
    let compute_b = qemu_agent(&cloud, "hostb", &ns_b).await;

    let key = lab.tmp.path().join("k1.pem");
    cloud.openstack(&["keypair", "create", "--private-key", key.to_str().unwrap(), "k1"]).await.expect("keypair");
    must(&["chmod", "0600", key.to_str().unwrap()]);
    let net = cloud.openstack(&["network", "create", "hq-net"]).await.expect("network create");
    let net_id = net["id"].as_str().unwrap().to_string();
    assert_eq!(net["provider:network_type"], "vxlan", "{net}");
    let vni = net["provider:segmentation_id"].as_u64().expect("a VNI");
    cloud
        .openstack(&["subnet", "create", "--network", "hq-net", "--subnet-range", "10.81.0.0/24", "hq-sub"])
        .await
        .expect("subnet create");
    // DHCP lives on host A (its agent is the only one yet); host B's guest leases across VXLAN.
    let (c, nid) = (&cloud, net_id.as_str());
    let (_, dhcp_host) = wait_for(Duration::from_secs(15), "DHCP scheduled", move || async move {
        dhcp_port(c, nid).await.filter(|(_, h)| !h.is_empty())
    })
    .await;
    assert_eq!(dhcp_host, "hosta");
    let stop_b = spawn_network_agent(&cloud, agent_cfg(&lab, "hostb", &ns_b, TUNNEL_B));
    wait_for(Duration::from_secs(30), "two hypervisors and host B's network agents", move || async move {
        let hv = c.openstack(&["hypervisor", "list"]).await.ok()?;
        let ag = c.openstack(&["network", "agent", "list", "--host", "hostb"]).await.ok()?;
        (hv.as_array()?.len() == 2 && ag.as_array()?.len() == 4).then_some(())
    })
    .await;
    cloud.openstack(&["security", "group", "create", "hq-sg"]).await.expect("sg create");
    for rule in [
        &["--protocol", "icmp"][..],
        &["--protocol", "tcp", "--dst-port", "22"],
        &["--protocol", "tcp", "--dst-port", "8080"],
    ] {
        let mut args = vec!["security", "group", "rule", "create", "--ingress"];
        args.extend_from_slice(rule);
        args.push("hq-sg");
        cloud.openstack(&args).await.expect("sg rule");
    }

    let nic = format!("net-id={net_id}");
    let mut vms = vec![("vma", "hosta"), ("vmb", "hostb")];
    if same_host_bench {
        vms.push(("vmc", "hosta"));
    }
    let mut guests = Vec::new();
    for (name, host) in &vms {
        let t = Instant::now();
        let az = format!("nova:{host}");
        let v = cloud
            .openstack(&[
                "server",
                "create",
                "--image",
                "cirros",
                "--flavor",
                "m1.nano",
                "--nic",
                &nic,
                "--key-name",
                "k1",
                "--security-group",
                "hq-sg",
                "--availability-zone",
                &az,
                "--wait",
                name,
            ])
            .await
            .unwrap_or_else(|e| panic!("server create {name}: {e}"));
        assert_eq!(v["status"], "ACTIVE", "{v}");
        assert_eq!(v["OS-EXT-SRV-ATTR:host"], *host, "{name} on {host}: {v}");
        let ports = cloud.openstack(&["port", "list", "--server", name]).await.unwrap();
        let port = ports[0]["ID"].as_str().unwrap().to_string();
        let ip = port_show(&cloud, &port).await["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
        eprintln!("{name} on {host}: ACTIVE after {:?}, {ip}", t.elapsed());
        guests.push((name.to_string(), host.to_string(), port, ip));
    }
    for (name, host, port, ip) in &guests {
        let id = port.as_str();
        wait_for(Duration::from_secs(60), &format!("{name}'s port ACTIVE"), move || async move {
            (port_show(c, id).await["status"] == "ACTIVE").then_some(())
        })
        .await;
        let ns = if host == "hosta" { &ns_a } else { &ns_b };
        let tap = stratus_network_agent::exec::names::tap(port);
        assert!(common::link_exists(ns, &tap), "{name}'s tap in {host}'s namespace");
        // vmb's DHCP exchange and metadata fetch cross VXLAN to host A's DHCP namespace.
        let log =
            wait_console(&cloud, name, &format!("stratus-guest: DHCP bound eth0 ip={ip} "), Duration::from_secs(90))
                .await;
        assert!(!log.contains("metadata service unreachable"), "{name} reached metadata:\n{log}");
        let log = wait_console(&cloud, name, "stratus-guest: metadata done", Duration::from_secs(60)).await;
        assert!(log.contains(&format!("stratus-guest: hostname={name}")), "{name}'s own metadata:\n{log}");
        assert!(log.contains("stratus-guest: ssh key installed"), "{name} installed its key:\n{log}");
    }
    let fdb = vxlan_fdb(&ns_b, vni);
    assert!(fdb.contains(&format!("00:00:00:00:00:00 dst {TUNNEL_A}")), "host B floods to A only by l2pop: {fdb}");

    let qdhcp = format!("{}h-qdhcp-{net_id}", lab.prefix);
    let (ip_a, ip_b) = (guests[0].3.clone(), guests[1].3.clone());
    for ip in [&ip_a, &ip_b] {
        let t0 = Instant::now();
        while !ping_from(&qdhcp, ip) {
            assert!(t0.elapsed() < Duration::from_secs(20), "{ip} does not answer ping from host A's DHCP namespace");
        }
    }
    // ssh across: from host A's DHCP namespace into the guest on host B, then guest to guest.
    let t_ssh = Instant::now();
    let (code, out) = loop {
        let r = ssh(&qdhcp, &key, "cirros", &ip_b, "hostname");
        if r.0 == Some(0) || t_ssh.elapsed() > Duration::from_secs(90) {
            break r;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!((code, out.trim()), (Some(0), "vmb"), "ssh into vmb across VXLAN");
    let (code, out) = ssh(&qdhcp, &key, "root", &ip_a, &format!("ping -c 3 -W 2 {ip_b}"));
    assert_eq!(code, Some(0), "vma pings vmb across hosts: {out}");
    let (code, out) = ssh(&qdhcp, &key, "root", &ip_b, &format!("ping -c 3 -W 2 {ip_a}"));
    assert_eq!(code, Some(0), "vmb pings vma across hosts: {out}");

    let across = throughput(&qdhcp, &key, &ip_a, &ip_b);
    let mut line = format!("guest→guest TCP across hosts (VXLAN) {across:.1} MB/s");
    if same_host_bench {
        let same = throughput(&qdhcp, &key, &guests[2].3, &ip_a);
        line.push_str(&format!(", same host {same:.1} MB/s"));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("dataplane_hosts (real guests): {line}; load {}", load.trim());
    assert!(across > 0.1, "{line}");

    let names: Vec<&str> = guests.iter().map(|g| g.0.as_str()).collect();
    let mut args = vec!["server", "delete", "--wait"];
    args.extend(names);
    cloud.openstack(&args).await.expect("server delete --wait");
    for (name, host, port, _) in &guests {
        let ns = if host == "hosta" { &ns_a } else { &ns_b };
        let tap = stratus_network_agent::exec::names::tap(port);
        let t0 = Instant::now();
        while common::link_exists(ns, &tap) {
            assert!(t0.elapsed() < Duration::from_secs(30), "{name}'s tap left after delete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("dataplane_hosts (real guests): total {:?}", t_start.elapsed());
    stop_b.send_replace(true);
    compute_b.stop();
    cloud.shutdown().await;
}
