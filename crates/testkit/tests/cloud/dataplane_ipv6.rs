//! IPv6 in the data plane (issue 9, "IPv6 RA/DHCPv6 for IPv6 subnets"), with real packets:
//! subnets built with the `openstack` CLI, the in-process network agent realising them in a
//! host namespace the test made, and namespace "guests" whose kernels do SLAAC (`accept_ra=2`)
//! and whose DHCPv6 client is ISC `dhclient -6` (with a script that only records the lease).
//! Everything lives in namespaces of the lab, which removes them (and the processes inside)
//! even when the test fails.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dataplane::common::{self, must, Guest, Lab};
use serde_json::Value;
use stratus_network_agent::model::{eui64, Port};
use stratus_testkit::TestCloud;

async fn cloud_with_agent(lab: &Lab, host_ns: &str) -> TestCloud {
    let agent = lab.agent_cfg("h", host_ns);
    TestCloud::start_with(|c| {
        c.network_agent = stratus_network_agent::AgentConfig {
            enabled: "true".into(),
            host: String::new(),
            heartbeat_interval_secs: 1,
            device_poll_interval_ms: 100,
            ..agent
        };
    })
    .await
}

fn sh(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output() {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(e) => (false, e.to_string()),
    }
}

/// Polls `f` every 50 ms until it is true; panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// Turns IPv6 on in a guest (the lab turns it off everywhere) the way a cloud image runs:
/// router advertisements accepted, DAD on.
fn enable_v6(g: &Guest) {
    must(&["ip", "netns", "exec", &g.ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0"]);
    must(&["ip", "netns", "exec", &g.ns, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_ra=2"]);
    must(&["ip", "netns", "exec", &g.ns, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=0"]);
}

/// The guest's non-tentative IPv6 addresses on eth0.
fn v6_addrs(g: &Guest) -> Vec<String> {
    let out = sh(&["ip", "-j", "-n", &g.ns, "-6", "addr", "show", "dev", "eth0"]).1;
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["tentative"] != true)
        .filter_map(|a| a["local"].as_str().map(str::to_owned))
        .collect()
}

/// The next hop of the guest's IPv6 default route.
fn v6_default_via(g: &Guest) -> Option<String> {
    let out = sh(&["ip", "-j", "-n", &g.ns, "-6", "route", "show", "default"]).1;
    let v: Value = serde_json::from_str(&out).ok()?;
    v[0]["gateway"].as_str().map(str::to_owned)
}

fn ping6(ns: &str, ip: &str) -> bool {
    sh(&["ip", "netns", "exec", ns, "ping", "-6", "-n", "-q", "-c", "1", "-W", "1", ip]).0
}

fn ping6_until(ns: &str, ip: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if sh(&["ip", "netns", "exec", ns, "ping", "-6", "-n", "-q", "-c", "1", "-W", "0.2", ip]).0 {
            return Some(t0.elapsed());
        }
    }
    None
}

/// `dhclient -6` in the guest (`-S`: stateless, information only); returns its `new_*`
/// variables once it got an answer (BOUND6, or the information-only event).
fn dhcp6(g: &Guest, stateless: bool) -> (BTreeMap<String, String>, Duration) {
    let d = g.dir.display().to_string();
    let script = g.dir.join("script6");
    std::fs::write(&script, format!("#!/bin/sh\n/usr/bin/env > '{d}/'\"$reason\".tmp && /bin/mv '{d}/'\"$reason\".tmp '{d}/'\"$reason\".env\nexit 0\n")).unwrap();
    must(&["chmod", "0755", script.to_str().unwrap()]);
    // The script runs with PREINIT6 first, then with the event that carries the answer.
    let answered = || {
        std::fs::read_dir(&g.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "env") && !p.ends_with("PREINIT6.env"))
    };
    let t0 = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &g.ns, "dhclient", "-6", if stateless { "-S" } else { "-N" }, "-d", "-1", "-sf"])
        .arg(&script)
        .arg("-lf")
        .arg(g.dir.join("leases6"))
        .arg("-pf")
        .arg(g.dir.join("pid6"))
        .arg("eth0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(g.dir.join("dhclient6.log")).unwrap())
        .spawn()
        .expect("dhclient (scripts/install-host-packages.sh)");
    while answered().is_none() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let text = answered().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_else(|| {
        panic!(
            "no DHCPv6 lease in {} in 20 s; dhclient log: {}",
            g.ns,
            std::fs::read_to_string(g.dir.join("dhclient6.log")).unwrap_or_default()
        )
    });
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("new_"))
        .map(|(k, v)| (k.trim_start_matches("new_").to_owned(), v.to_owned()))
        .collect();
    (vars, elapsed)
}

/// A port bound to the agent's host, as the agent model needs it for a lab guest.
async fn bound_port(cloud: &TestCloud, net: &str, host: &str, name: &str) -> (Port, String) {
    let p = cloud.openstack(&["port", "create", "--network", net, "--host", host, name]).await.expect("port create");
    let ip = p["fixed_ips"][0]["ip_address"].as_str().expect("an address").to_string();
    let port = Port {
        id: p["id"].as_str().unwrap().into(),
        network_id: p["network_id"].as_str().unwrap().into(),
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
    (port, ip)
}

/// Prints the first router advertisement the namespace receives as JSON (flags, router
/// lifetime, prefixes with their A flag, RDNSS), so the test sees what guests are told.
const RA_SNIFFER: &str = r#"
import socket, struct, json, sys, time, ipaddress
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    s.settimeout(max(0.1, end - time.time()))
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        break
    if data[0] != 134:
        continue
    out = {"src": addr[0].split("%")[0], "M": bool(data[5] & 0x80), "O": bool(data[5] & 0x40),
           "lifetime": struct.unpack("!H", data[6:8])[0], "prefixes": [], "rdnss": []}
    i = 16
    while i + 2 <= len(data) and data[i + 1]:
        t, l = data[i], data[i + 1] * 8
        o = data[i:i + l]
        if t == 3:
            out["prefixes"].append({"prefix": str(ipaddress.IPv6Address(o[16:32])) + "/" + str(o[2]), "A": bool(o[3] & 0x40)})
        if t == 25:
            out["rdnss"] += [str(ipaddress.IPv6Address(o[k:k + 16])) for k in range(8, l, 16)]
        i += l
    print(json.dumps(out), flush=True)
    sys.exit(0)
sys.exit(1)
"#;

/// Starts listening for a router advertisement in the guest (before its interface asks).
fn sniff_ra(g: &Guest) -> std::process::Child {
    let c = Command::new("ip")
        .args(["netns", "exec", &g.ns, "python3", "-c", RA_SNIFFER, "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    std::thread::sleep(Duration::from_millis(300));
    c
}

fn ra_seen(c: std::process::Child) -> Value {
    let out = c.wait_with_output().expect("sniffer");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no router advertisement seen"))
}

fn link_local(mac: &str) -> String {
    eui64("fe80::".parse().unwrap(), mac).unwrap().to_string()
}

fn lab_namespaces(lab: &Lab, kind: &str) -> Vec<String> {
    let prefix = format!("{}h-{kind}-", lab.prefix);
    sh(&["ip", "netns", "list"])
        .1
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaac_dhcpv6_routing_and_security_groups_over_ipv6() {
    let lab = Lab::new("cd6");
    let host = lab.netns("host");
    let cloud = cloud_with_agent(&lab, &host).await;
    let t_start = Instant::now();
    let mark = |what: &str| eprintln!("dataplane_ipv6: {what} at {:?}", t_start.elapsed());

    // Two IPv6 networks, as a user makes them with the CLI.
    cloud.openstack(&["network", "create", "v6-a"]).await.expect("network create");
    cloud.openstack(&["network", "create", "v6-b"]).await.expect("network create");
    let slaac = cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "v6-a",
            "--ip-version",
            "6",
            "--ipv6-ra-mode",
            "slaac",
            "--ipv6-address-mode",
            "slaac",
            "--subnet-range",
            "fd00:1::/64",
            "v6-slaac",
        ])
        .await
        .expect("SLAAC subnet create");
    assert_eq!((slaac["ipv6_ra_mode"].as_str(), slaac["ipv6_address_mode"].as_str()), (Some("slaac"), Some("slaac")));
    assert_eq!(slaac["gateway_ip"], "fd00:1::1");
    cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "v6-b",
            "--ip-version",
            "6",
            "--ipv6-ra-mode",
            "dhcpv6-stateful",
            "--ipv6-address-mode",
            "dhcpv6-stateful",
            "--subnet-range",
            "fd00:2::/64",
            "v6-stateful",
        ])
        .await
        .expect("DHCPv6-stateful subnet create");
    // Neutron's validation of mode combinations.
    let bad = cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "v6-a",
            "--ip-version",
            "6",
            "--ipv6-ra-mode",
            "slaac",
            "--ipv6-address-mode",
            "dhcpv6-stateful",
            "--subnet-range",
            "fd00:9::/64",
            "bad",
        ])
        .await
        .expect_err("mismatched modes");
    assert!(format!("{bad:?}").contains("they must be the same value"), "{bad:?}");

    let agents = cloud.openstack(&["network", "agent", "list"]).await.expect("agent list");
    let agent_host = agents[0]["Host"].as_str().expect("agent host").to_string();

    // A SLAAC guest on an isolated subnet: the DHCP namespace advertises the prefix (no
    // default route: it is no router), and the kernel's EUI-64 address is the port's.
    let (p1, ip1) = bound_port(&cloud, "v6-a", &agent_host, "p1").await;
    let want1 = eui64("fd00:1::".parse().unwrap(), &p1.mac_address).unwrap().to_string();
    assert_eq!(ip1, want1, "the port's SLAAC address is EUI-64 of its MAC");
    let g1 = lab.guest("g1", &host, &p1);
    let dhcp_ns =
        wait_for("DHCP namespace of v6-a", Duration::from_secs(15), || !lab_namespaces(&lab, "qdhcp").is_empty());
    let _ = dhcp_ns;
    let sniff = sniff_ra(&g1);
    enable_v6(&g1);
    let ra_isolated = wait_for("SLAAC address from the DHCP namespace's RA", Duration::from_secs(20), || {
        v6_addrs(&g1).contains(&ip1)
    });
    assert_eq!(v6_default_via(&g1), None, "an isolated subnet's RA has router lifetime 0");
    let ra = ra_seen(sniff);
    assert_eq!((ra["lifetime"].as_u64(), &ra["prefixes"][0]["A"]), (Some(0), &Value::Bool(true)), "{ra}");

    mark("isolated SLAAC checked");
    // A router on both subnets: RAs now come from it, with its link-local as default route.
    cloud.openstack(&["router", "create", "r6"]).await.expect("router create");
    cloud.openstack(&["router", "add", "subnet", "r6", "v6-slaac"]).await.expect("router add subnet");
    cloud.openstack(&["router", "add", "subnet", "r6", "v6-stateful"]).await.expect("router add subnet");
    let qr_a = cloud
        .openstack(&["port", "list", "--network", "v6-a", "--device-owner", "network:router_interface"])
        .await
        .unwrap();
    let qr_b = cloud
        .openstack(&["port", "list", "--network", "v6-b", "--device-owner", "network:router_interface"])
        .await
        .unwrap();
    let gw_a = link_local(qr_a[0]["MAC Address"].as_str().expect("router port on v6-a"));
    let gw_b = link_local(qr_b[0]["MAC Address"].as_str().expect("router port on v6-b"));
    let route_after = wait_for("default route via the router", Duration::from_secs(20), || {
        v6_default_via(&g1).as_deref() == Some(&gw_a)
    });
    let qrouter = lab_namespaces(&lab, "qrouter").pop().expect("router namespace");
    assert_eq!(must(&["ip", "netns", "exec", &qrouter, "sysctl", "-n", "net.ipv6.conf.all.forwarding"]).trim(), "1");
    assert!(!common::nft_ruleset(&qrouter).contains("ip6"), "no IPv6 NAT in the router");

    // A DHCPv6-stateful guest gets exactly its port's address.
    let (p2, ip2) = bound_port(&cloud, "v6-b", &agent_host, "p2").await;
    let in_b = ip2.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.segments()[..4] == [0xfd00, 2, 0, 0]);
    assert!(in_b, "{ip2} is not in fd00:2::/64");
    let g2 = lab.guest("g2", &host, &p2);
    let sniff = sniff_ra(&g2);
    enable_v6(&g2);
    let ll2 = link_local(&p2.mac_address);
    wait_for("g2 link-local", Duration::from_secs(10), || v6_addrs(&g2).contains(&ll2));
    let ra = ra_seen(sniff);
    assert_eq!(ra["src"], gw_b.as_str(), "{ra}");
    assert_eq!((&ra["M"], &ra["prefixes"][0]["A"]), (&Value::Bool(true), &Value::Bool(false)), "stateful: {ra}");
    let (lease, lease_took) = dhcp6(&g2, false);
    assert_eq!(lease.get("ip6_address").map(String::as_str), Some(ip2.as_str()), "{lease:?}");
    must(&["ip", "-n", &g2.ns, "-6", "addr", "add", &format!("{ip2}/128"), "dev", "eth0", "nodad"]);
    wait_for("g2 default route via the router", Duration::from_secs(20), || {
        v6_default_via(&g2).as_deref() == Some(&gw_b)
    });
    let no_slaac = v6_addrs(&g2);
    assert!(
        !no_slaac.iter().any(|a| a.starts_with("fd00:2:") && a.contains("ff:fe")),
        "stateful RAs carry no autonomous prefix: {no_slaac:?}"
    );

    mark("stateful checked");
    // DHCPv6-stateless: the address by SLAAC from the router's RA (A and O flags), the DNS
    // servers by DHCPv6 information-request from the DHCP namespace.
    cloud.openstack(&["network", "create", "v6-c"]).await.expect("network create");
    cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "v6-c",
            "--ip-version",
            "6",
            "--ipv6-ra-mode",
            "dhcpv6-stateless",
            "--ipv6-address-mode",
            "dhcpv6-stateless",
            "--subnet-range",
            "fd00:3::/64",
            "--dns-nameserver",
            "fd00:3::53",
            "v6-stateless",
        ])
        .await
        .expect("DHCPv6-stateless subnet create");
    cloud.openstack(&["router", "add", "subnet", "r6", "v6-stateless"]).await.expect("router add subnet");
    let (p4, ip4) = bound_port(&cloud, "v6-c", &agent_host, "p4").await;
    assert_eq!(ip4, eui64("fd00:3::".parse().unwrap(), &p4.mac_address).unwrap().to_string());
    let g4 = lab.guest("g4", &host, &p4);
    let sniff = sniff_ra(&g4);
    enable_v6(&g4);
    let stateless_slaac =
        wait_for("g4 SLAAC address on the stateless subnet", Duration::from_secs(20), || v6_addrs(&g4).contains(&ip4));
    let ra = ra_seen(sniff);
    assert_eq!(
        (&ra["M"], &ra["O"], &ra["prefixes"][0]["A"]),
        (&Value::Bool(false), &Value::Bool(true), &Value::Bool(true)),
        "stateless: {ra}"
    );
    assert_eq!(ra["rdnss"], serde_json::json!(["fd00:3::53"]), "RDNSS: {ra}");
    let (info, info_took) = dhcp6(&g4, true);
    assert_eq!(info.get("dhcp6_name_servers").map(String::as_str), Some("fd00:3::53"), "{info:?}");
    assert!(!info.contains_key("ip6_address"), "no address from stateless DHCPv6: {info:?}");
    assert!(ping6_until(&g4.ns, &ip1, Duration::from_secs(10)).is_some(), "g4 → g1 over the router");

    mark("stateless checked");
    // Routed between the subnets (both in `default`: its IPv6 remote-group rule admits them).
    let first = ping6_until(&g1.ns, &ip2, Duration::from_secs(10)).expect("g1 → g2 over the router");
    assert!(ping6(&g2.ns, &ip1), "g2 → g1");

    // Anti-spoofing: a second guest on v6-a, and g1 using an address that is not its own.
    let (p3, ip3) = bound_port(&cloud, "v6-a", &agent_host, "p3").await;
    let g3 = lab.guest("g3", &host, &p3);
    enable_v6(&g3);
    wait_for("g3 SLAAC address", Duration::from_secs(20), || v6_addrs(&g3).contains(&ip3));
    assert!(ping6_until(&g1.ns, &ip3, Duration::from_secs(5)).is_some(), "g1 → g3 on the same network");
    must(&["ip", "-n", &g1.ns, "-6", "addr", "add", "fd00:1::bad/64", "dev", "eth0", "nodad"]);
    let spoofed =
        sh(&["ip", "netns", "exec", &g1.ns, "ping", "-6", "-n", "-q", "-c", "1", "-W", "1", "-I", "fd00:1::bad", &ip3]);
    assert!(!spoofed.0, "a spoofed IPv6 source got through");
    must(&["ip", "-n", &g1.ns, "-6", "addr", "del", "fd00:1::bad/64", "dev", "eth0"]);

    // Rogue router advertisements from a guest reach nobody (dnsmasq advertises prefixes of
    // its interface's addresses; RAs come from the link-local, which anti-spoofing allows).
    let rogue_log = g1.dir.join("rogue.log");
    must(&["ip", "-n", &g1.ns, "-6", "addr", "add", "fd00:99::1/64", "dev", "eth0", "nodad"]);
    must(&[
        "ip",
        "netns",
        "exec",
        &g1.ns,
        "dnsmasq",
        "--no-hosts",
        "--no-resolv",
        "--conf-file=/dev/null",
        "--port=0",
        &format!("--pid-file={}", g1.dir.join("rogue.pid").display()),
        &format!("--log-facility={}", rogue_log.display()),
        "--log-dhcp",
        "--bind-interfaces",
        "--interface=eth0",
        "--enable-ra",
        "--dhcp-range=fd00:99::,ra-only,64",
        "--ra-param=eth0,3,1800",
    ]);
    must(&["ip", "-n", &g3.ns, "link", "set", "eth0", "down"]);
    must(&["ip", "-n", &g3.ns, "link", "set", "eth0", "up"]);
    wait_for("g3 SLAAC address again", Duration::from_secs(20), || v6_addrs(&g3).contains(&ip3));
    wait_for("the rogue RA daemon advertising", Duration::from_secs(10), || {
        std::fs::read_to_string(&rogue_log).unwrap_or_default().matches("RTR-ADVERT").count() >= 2
    });
    std::thread::sleep(Duration::from_secs(1));
    let g3_addrs = v6_addrs(&g3);
    assert!(!g3_addrs.iter().any(|a| a.starts_with("fd00:99:")), "rogue prefix accepted: {g3_addrs:?}");
    assert_eq!(v6_default_via(&g3).as_deref(), Some(gw_a.as_str()), "rogue default router accepted");

    mark("anti-spoofing checked");
    // Security groups: without an ICMPv6 rule echo is blocked, neighbour discovery is not.
    cloud.openstack(&["security", "group", "create", "locked6"]).await.expect("sg create");
    cloud
        .openstack(&["port", "set", "--no-security-group", "--security-group", "locked6", &p2.id])
        .await
        .expect("port set");
    let t_block = Instant::now();
    while ping6(&g1.ns, &ip2) {
        assert!(t_block.elapsed() < Duration::from_secs(5), "moving the port into `locked6` did not block ICMPv6");
    }
    must(&["ip", "-n", &g2.ns, "-6", "neigh", "flush", "dev", "eth0"]);
    must(&["ip", "-n", &qrouter, "-6", "neigh", "flush", "all"]);
    assert!(ping6(&g2.ns, "fd00:2::1"), "g2 reaches its gateway (ND in both directions) in `locked6`");
    let neigh = must(&["ip", "-n", &qrouter, "-6", "neigh", "show", &ip2]);
    assert!(neigh.contains(&p2.mac_address.to_ascii_lowercase()), "router resolved g2: {neigh}");
    assert!(!ping6(&g1.ns, &ip2), "still blocked");
    cloud
        .openstack(&[
            "security",
            "group",
            "rule",
            "create",
            "--ethertype",
            "IPv6",
            "--protocol",
            "ipv6-icmp",
            "--ingress",
            "locked6",
        ])
        .await
        .expect("rule create");
    let sg_effect = ping6_until(&g1.ns, &ip2, Duration::from_secs(5)).expect("ICMPv6 allowed after the rule");

    mark("security groups checked");
    // Teardown: router and networks go, and with them every namespace and daemon.
    for s in ["v6-slaac", "v6-stateful", "v6-stateless"] {
        cloud.openstack(&["router", "remove", "subnet", "r6", s]).await.expect("router remove subnet");
    }
    cloud.openstack(&["router", "delete", "r6"]).await.expect("router delete");
    for p in ["p1", "p2", "p3", "p4"] {
        cloud.openstack(&["port", "delete", p]).await.expect("port delete");
    }
    for n in ["v6-a", "v6-b", "v6-c"] {
        cloud.openstack(&["network", "delete", n]).await.expect("network delete");
    }
    wait_for("router and DHCP namespaces removed", Duration::from_secs(15), || {
        lab_namespaces(&lab, "qrouter").is_empty() && lab_namespaces(&lab, "qdhcp").is_empty()
    });
    let ra_dir = lab.tmp.path().join("h").join("ra");
    let left: Vec<_> = std::fs::read_dir(&ra_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "RA state left: {left:?}");

    eprintln!(
        "dataplane_ipv6: cloud start→teardown {:?}; isolated RA → SLAAC address {ra_isolated:?}; router add subnet CLI returned → default route via router {route_after:?}; DHCPv6 lease {lease_took:?}; stateless: SLAAC {stateless_slaac:?}, DHCPv6 information {info_took:?}; first routed ping6 {first:?}; SG rule CLI return → first reply {sg_effect:?}",
        t_start.elapsed()
    );
    cloud.shutdown().await;
}

/// The API side, as Neutron behaves (no agent needed): mode validation, SLAAC addresses for
/// ports already on the network, router interfaces taking the gateway of a SLAAC subnet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_subnet_modes_follow_neutron() {
    let cloud = TestCloud::start().await;
    let token = cloud.admin_token().await;
    let post = |path: &str, body: Value| {
        let req = cloud.http().post(cloud.at(path)).header("X-Auth-Token", &token).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (_, net) = post("/network/v2.0/networks", serde_json::json!({"network": {"name": "n6"}})).await;
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    let subnet = |extra: Value| {
        let mut s = serde_json::json!({"network_id": net_id, "ip_version": 6, "cidr": "fd00:7::/64"});
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::json!({ "subnet": s })
    };
    let (code, err) = post(
        "/network/v2.0/subnets",
        subnet(serde_json::json!({"enable_dhcp": false, "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"})),
    )
    .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(
        err["NeutronError"]["message"],
        "Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False."
    );
    let (code, err) = post(
        "/network/v2.0/subnets",
        subnet(serde_json::json!({"cidr": "fd00:7::/80", "ipv6_ra_mode": "dhcpv6-stateless"})),
    )
    .await;
    assert_eq!(code, 400, "an RA mode alone makes the subnet auto-addressed (/64 only): {err}");
    assert!(err["NeutronError"]["message"].as_str().unwrap().contains("EUI-64"), "{err}");

    // A port made before the SLAAC subnet gets its EUI-64 address when the subnet appears.
    let (_, v4) = post(
        "/network/v2.0/subnets",
        serde_json::json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.7.0.0/24"}}),
    )
    .await;
    assert!(v4["subnet"]["id"].is_string(), "{v4}");
    let port = cloud.openstack(&["port", "create", "--network", "n6", "early"]).await.expect("port create");
    let mac = port["mac_address"].as_str().unwrap().to_string();
    let (code, s6) = post(
        "/network/v2.0/subnets",
        subnet(serde_json::json!({"ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"})),
    )
    .await;
    assert_eq!(code, 201, "{s6}");
    let shown = cloud.openstack(&["port", "show", "early"]).await.unwrap();
    let ips: Vec<&str> =
        shown["fixed_ips"].as_array().unwrap().iter().filter_map(|f| f["ip_address"].as_str()).collect();
    let want = eui64("fd00:7::".parse().unwrap(), &mac).unwrap().to_string();
    assert!(ips.contains(&want.as_str()), "{ips:?} lacks {want}");
    // A fixed address on a SLAAC subnet is refused for a guest port, taken by a router.
    let (code, err) = post(
        "/network/v2.0/ports",
        serde_json::json!({"port": {"network_id": net_id, "fixed_ips": [{"ip_address": "fd00:7::99"}]}}),
    )
    .await;
    assert_eq!(code, 400, "{err}");
    assert!(err["NeutronError"]["message"].as_str().unwrap().contains("automatic addresses"), "{err}");
    let (code, err) = {
        let r = cloud
            .http()
            .put(cloud.at(&format!("/network/v2.0/subnets/{}", s6["subnet"]["id"].as_str().unwrap())))
            .header("X-Auth-Token", &token)
            .json(&serde_json::json!({"subnet": {"enable_dhcp": false}}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(code, 400, "{err}");
    assert!(err["NeutronError"]["message"].as_str().unwrap().contains("Cannot disable enable_dhcp"), "{err}");
    cloud.openstack(&["router", "create", "r7"]).await.expect("router create");
    let sid = s6["subnet"]["id"].as_str().unwrap();
    cloud.openstack(&["router", "add", "subnet", "r7", sid]).await.expect("router interface on a SLAAC subnet");
    let rp = cloud.openstack(&["port", "list", "--device-owner", "network:router_interface", "--long"]).await.unwrap();
    assert!(rp.to_string().contains("fd00:7::1"), "{rp}");
    cloud.shutdown().await;
}

/// Sends one unsolicited neighbour advertisement (override flag set) for `target` with
/// `mac` as its link-layer address to all nodes on eth0; the kernel fills in the source
/// (the guest's link-local address, which its port allows) and the checksum.
const NA_SENDER: &str = r#"
import socket, struct, sys
target = socket.inet_pton(socket.AF_INET6, sys.argv[1])
mac = bytes.fromhex(sys.argv[2].replace(":", ""))
ifi = socket.if_nametoindex("eth0")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifi)
na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + struct.pack("!BB", 2, 1) + mac
s.sendto(na, ("ff02::1", 0, 0, ifi))
"#;

/// Prints the target of every neighbour advertisement the namespace receives for N seconds.
const NA_SNIFFER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    s.settimeout(max(0.05, end - time.time()))
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        break
    if data[0] == 136:
        print(socket.inet_ntop(socket.AF_INET6, data[8:24]), flush=True)
"#;

/// The MAC `observer` has for `ip` in its neighbour cache.
fn neighbour_mac(observer: &str, ip: &str) -> Option<String> {
    let out = sh(&["ip", "-j", "-n", observer, "-6", "neigh", "show", ip]).1;
    let v: Value = serde_json::from_str(&out).ok()?;
    v[0]["lladdr"].as_str().map(str::to_owned)
}

/// Neutron's NA spoofing protection: a guest may advertise its own IPv6 addresses, but a
/// neighbour advertisement claiming another guest's address never leaves its port, so the
/// neighbours keep sending that address's traffic to its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_claim_another_guests_ipv6_address_with_neighbour_advertisements() {
    let lab = Lab::new("na6");
    let host = lab.netns("host");
    let cloud = cloud_with_agent(&lab, &host).await;
    cloud.openstack(&["network", "create", "na-net"]).await.expect("network create");
    cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "na-net",
            "--ip-version",
            "6",
            "--ipv6-ra-mode",
            "dhcpv6-stateful",
            "--ipv6-address-mode",
            "dhcpv6-stateful",
            "--subnet-range",
            "fd00:7::/64",
            "na-sub",
        ])
        .await
        .expect("subnet create");
    let agents = cloud.openstack(&["network", "agent", "list"]).await.expect("agent list");
    let agent_host = agents[0]["Host"].as_str().expect("agent host").to_string();
    let mut guests = Vec::new();
    for name in ["victim", "attacker", "observer"] {
        let (port, ip) = bound_port(&cloud, "na-net", &agent_host, name).await;
        let g = lab.guest(name, &host, &port);
        enable_v6(&g);
        must(&["ip", "-n", &g.ns, "-6", "addr", "add", &format!("{ip}/64"), "dev", "eth0", "nodad"]);
        guests.push((g, port, ip));
    }
    let [(victim, vport, vip), (attacker, aport, aip), (observer, _, _)] = &guests[..] else { unreachable!() };
    wait_for("the three ports wired", Duration::from_secs(20), || {
        guests.iter().all(|(g, _, _)| ping6(&g.ns, vip) || g.ns == victim.ns)
    });
    assert_eq!(neighbour_mac(&observer.ns, vip).as_deref(), Some(vport.mac_address.as_str()), "learnt by ping");

    let send_na = |target: &str| {
        must(&["ip", "netns", "exec", &attacker.ns, "python3", "-c", NA_SENDER, target, &aport.mac_address]);
    };
    let sniff = || {
        Command::new("ip")
            .args(["netns", "exec", &observer.ns, "python3", "-c", NA_SNIFFER, "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3")
    };
    // Its own address: the advertisement reaches the neighbours.
    let s = sniff();
    std::thread::sleep(Duration::from_millis(300));
    send_na(aip);
    let seen = String::from_utf8_lossy(&s.wait_with_output().unwrap().stdout).to_string();
    assert!(seen.lines().any(|l| l == aip), "an NA for its own address arrives: {seen:?}");
    // The victim's address: dropped at the attacker's port; the observer keeps the right MAC.
    let s = sniff();
    std::thread::sleep(Duration::from_millis(300));
    send_na(vip);
    let seen = String::from_utf8_lossy(&s.wait_with_output().unwrap().stdout).to_string();
    assert!(!seen.lines().any(|l| l == vip), "a forged NA for {vip} must not arrive: {seen:?}");
    assert_eq!(
        neighbour_mac(&observer.ns, vip).as_deref(),
        Some(vport.mac_address.as_str()),
        "the observer still sends {vip}'s traffic to its owner"
    );
    assert!(ping6(&observer.ns, vip), "and reaches it");
}

/// `curl` from a guest namespace: (HTTP status, body); 0 when nothing answered.
fn curl6(ns: &str, url: &str) -> (u16, String) {
    let out = sh(&["ip", "netns", "exec", ns, "curl", "-g", "-s", "-m", "3", "-w", "\n%{http_code}", url]).1;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Metadata over IPv6 on an IPv6-only network, at Neutron's `fe80::a9fe:a9fe`: a server's
/// guest gets its own metadata from its link-local address; a port with no server gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_answers_over_ipv6_at_fe80_a9fe_a9fe() {
    let lab = Lab::new("md6");
    let host = lab.netns("host");
    let cloud = cloud_with_agent(&lab, &host).await;
    cloud.create_tiny_image().await;
    cloud.openstack(&["network", "create", "md6-net"]).await.expect("network create");
    cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "md6-net",
            "--ip-version",
            "6",
            "--ipv6-ra-mode",
            "dhcpv6-stateful",
            "--ipv6-address-mode",
            "dhcpv6-stateful",
            "--subnet-range",
            "fd00:8::/64",
            "md6-sub",
        ])
        .await
        .expect("subnet create");
    let vm = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            "tiny",
            "--nic",
            "net-id=md6-net",
            "--wait",
            "vm6",
        ])
        .await
        .expect("server create");
    let (port, _) = crate::dataplane::server_port(&cloud, "vm6").await;
    let g = lab.guest("g6", &host, &port);
    enable_v6(&g);
    crate::dataplane::wait_active(&cloud, &port.id, Duration::from_secs(20)).await;
    let ll = link_local(&port.mac_address);
    wait_for("the guest's link-local address", Duration::from_secs(10), || v6_addrs(&g).contains(&ll));

    let url = "http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json";
    let t = Instant::now();
    let mut got = (0, String::new());
    while t.elapsed() < Duration::from_secs(20) {
        got = curl6(&g.ns, url);
        if got.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(got.0, 200, "metadata over IPv6: {got:?}");
    let md: Value = serde_json::from_str(&got.1).expect("meta_data.json");
    assert_eq!(md["uuid"], vm["id"], "its own server's metadata");
    eprintln!("IPv6 metadata answered {:?} after the port was ACTIVE", t.elapsed());

    // A port that is no server's (same network, same path) gets nothing.
    let agents = cloud.openstack(&["network", "agent", "list"]).await.expect("agent list");
    let agent_host = agents[0]["Host"].as_str().expect("agent host").to_string();
    let (stranger, _) = bound_port(&cloud, "md6-net", &agent_host, "stranger").await;
    let s = lab.guest("s6", &host, &stranger);
    enable_v6(&s);
    let sll = link_local(&stranger.mac_address);
    wait_for("the stranger's link-local address", Duration::from_secs(10), || v6_addrs(&s).contains(&sll));
    let t = Instant::now();
    let mut code = 0;
    while t.elapsed() < Duration::from_secs(20) && code == 0 {
        code = curl6(&s.ns, url).0;
    }
    assert_eq!(code, 404, "no instance behind that address");
}
