//! The network data plane under the whole cloud, with real packets (issue 9): the
//! in-process network agent realises what the `openstack` CLI created, in a host namespace
//! the test made (never the root namespace). "Guests" are namespaces with a veth named
//! `tap<port11>` in the host namespace carrying the port's MAC, as QEMU's tap would be;
//! servers are booted with the fake driver so ports have a real server (and keypair) behind
//! them. Namespaces and the processes in them are removed by the lab guard, even on failure.
//!
//! Needs root and the host tools (`scripts/install-host-packages.sh`).

/// The network agent's test lab, shared with `dataplane_guests` (one copy of the module).
#[path = "../../../network-agent/tests/common/mod.rs"]
pub(crate) mod common;

use std::time::{Duration, Instant};

use common::{must, Guest, Lab};
use serde_json::Value;
use stratus_network_agent::model::Port;
use stratus_testkit::TestCloud;

/// A cloud whose network agent lives in `host_ns`.
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

/// Waits until the port's status is ACTIVE.
pub(crate) async fn wait_active(cloud: &TestCloud, id: &str, limit: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let v = cloud.openstack(&["port", "show", id, "-c", "status"]).await;
        if v.is_ok_and(|v| v["status"] == "ACTIVE") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {id} not ACTIVE within {limit:?}");
}

/// The server's port as the agent model describes it (what a guest needs).
pub(crate) async fn server_port(cloud: &TestCloud, server: &str) -> (Port, String) {
    let ports = cloud.openstack(&["port", "list", "--server", server, "--long"]).await.expect("port list");
    let id = ports[0]["ID"].as_str().expect("a port").to_string();
    let p = cloud.openstack(&["port", "show", &id]).await.expect("port show");
    let ip = p["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let port = Port {
        id: id.clone(),
        network_id: p["network_id"].as_str().unwrap().into(),
        mac_address: p["mac_address"].as_str().unwrap().into(),
        fixed_ips: vec![],
        device_owner: String::new(),
        device_id: String::new(),
        binding_host_id: String::new(),
        security_groups: vec![],
        allowed_address_pairs: vec![],
        port_security_enabled: true,
        admin_state_up: true,
    };
    (port, ip)
}

fn curl(g: &Guest, url: &str) -> (u16, String) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &g.ns, "curl", "-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A deleted server's address goes to the next server at once (small pools hand out their
/// lowest free address); the new MAC must get the lease although dnsmasq still had one for
/// the old MAC (released by the agent with `dhcp_release`, as Neutron does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_servers_address_is_leased_to_the_next_server() {
    let lab = Lab::new("dre");
    let host = lab.netns("host");
    let cloud = cloud_with_agent(&lab, &host).await;
    cloud.create_tiny_image().await;
    let net = cloud.openstack(&["network", "create", "re-net"]).await.expect("network create");
    let nic = format!("net-id={}", net["id"].as_str().unwrap());
    cloud
        .openstack(&["subnet", "create", "--network", "re-net", "--subnet-range", "10.76.0.0/24", "re-sub"])
        .await
        .expect("subnet create");
    let boot = |name: &'static str| {
        let (cloud, nic) = (&cloud, nic.clone());
        async move {
            let args = ["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", &nic, "--wait", name];
            cloud.openstack(&args).await.unwrap_or_else(|e| panic!("server create {name}: {e}"));
        }
    };
    boot("vm1").await;
    let (p1, ip1) = server_port(&cloud, "vm1").await;
    let g1 = lab.guest("g1", &host, &p1);
    wait_active(&cloud, &p1.id, Duration::from_secs(15)).await;
    assert_eq!(g1.dhcp().get("ip_address"), ip1);
    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("delete vm1");
    must(&["ip", "-n", &host, "link", "del", &stratus_network_agent::exec::names::tap(&p1.id)]);

    boot("vm2").await;
    let (p2, ip2) = server_port(&cloud, "vm2").await;
    assert_eq!(ip2, ip1, "the freed address is reused (what this test is about)");
    assert_ne!(p2.mac_address, p1.mac_address);
    let g2 = lab.guest("g2", &host, &p2);
    wait_active(&cloud, &p2.id, Duration::from_secs(15)).await;
    let t = Instant::now();
    assert_eq!(g2.dhcp().get("ip_address"), ip2, "the new MAC gets the reused address");
    eprintln!("lease of the reused address after {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_built_network_carries_dhcp_metadata_and_security_groups() {
    let lab = Lab::new("cdp");
    let host = lab.netns("host");
    let cloud = cloud_with_agent(&lab, &host).await;
    let t_start = Instant::now();

    // What a user makes through the CLI.
    let img = cloud.data_dir.join("tiny.img");
    std::fs::write(&img, vec![0u8; 1 << 16]).unwrap();
    cloud
        .openstack(&[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--file",
            img.to_str().unwrap(),
            "tiny",
        ])
        .await
        .expect("image create");
    let key = lab.tmp.path().join("id_k1");
    must(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "k1@test", "-f", key.to_str().unwrap()]);
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_string();
    cloud
        .openstack(&["keypair", "create", "--public-key", key.with_extension("pub").to_str().unwrap(), "k1"])
        .await
        .expect("keypair create");
    let net = cloud.openstack(&["network", "create", "dp-net"]).await.expect("network create");
    let net_id = net["id"].as_str().unwrap().to_string();
    cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "dp-net",
            "--subnet-range",
            "10.77.0.0/24",
            "--dns-nameserver",
            "192.0.2.53",
            "dp-sub",
        ])
        .await
        .expect("subnet create");
    // A group without ingress rules (vm1's port moves into it later); both start in `default`.
    cloud.openstack(&["security", "group", "create", "locked"]).await.expect("sg create");
    let nic = format!("net-id={net_id}");
    let boot = |name: &'static str, extra: &'static [&'static str]| {
        let nic = nic.clone();
        let cloud = &cloud;
        async move {
            let mut args = vec!["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", &nic, "--wait"];
            args.extend_from_slice(extra);
            args.push(name);
            let v = cloud.openstack(&args).await.unwrap_or_else(|e| panic!("server create {name}: {e}"));
            assert_eq!(v["status"], "ACTIVE", "{v}");
            v["id"].as_str().unwrap().to_string()
        }
    };
    let vm1 = boot("vm1", &["--key-name", "k1"]).await;
    let vm2 = boot("vm2", &[]).await;
    let (p1, ip1) = server_port(&cloud, "vm1").await;
    let (p2, ip2) = server_port(&cloud, "vm2").await;

    // The agent schedules the network's DHCP port onto its host.
    let dhcp_ports =
        cloud.openstack(&["port", "list", "--network", "dp-net", "--device-owner", "network:dhcp"]).await.unwrap();
    assert_eq!(dhcp_ports.as_array().map(Vec::len), Some(1), "one DHCP port: {dhcp_ports}");

    // The hypervisor makes the taps; the agent plugs them and reports the ports ACTIVE.
    let g1 = lab.guest("g1", &host, &p1);
    let g2 = lab.guest("g2", &host, &p2);
    let t_plug = Instant::now();
    for p in [&p1, &p2] {
        wait_active(&cloud, &p.id, Duration::from_secs(15)).await;
    }
    let active_after = t_plug.elapsed();
    let l1 = g1.dhcp();
    let l2 = g2.dhcp();
    assert_eq!(l1.get("ip_address"), ip1, "the lease is the port's address");
    assert_eq!(l2.get("ip_address"), ip2);
    assert_eq!(l1.get("domain_name_servers"), "192.0.2.53");
    assert_eq!(l1.get("routers"), "10.77.0.1");
    assert!(l1.get("rfc3442_classless_static_routes").starts_with("32 169 254 169 254"), "{:?}", l1.vars);

    // The guests install the metadata route DHCP gave them (option 121: 169.254.169.254/32
    // via the DHCP port), as the guest's DHCP client would.
    let classless: Vec<&str> = l1.get("rfc3442_classless_static_routes").split_whitespace().collect();
    let via = classless[5..9].join(".");
    for g in [&g1, &g2] {
        must(&["ip", "-n", &g.ns, "route", "add", "169.254.169.254/32", "via", &via]);
    }

    // Metadata through the proxy in the DHCP namespace: each guest gets its own server's.
    let (code, body) = curl(&g1, "http://169.254.169.254/latest/meta-data/public-keys/0/openssh-key");
    assert_eq!((code, body.trim()), (200, pubkey.as_str()), "vm1's key");
    let (code, body) = curl(&g1, "http://169.254.169.254/openstack/latest/meta_data.json");
    assert_eq!(code, 200);
    let md: Value = serde_json::from_str(&body).expect("meta_data.json");
    assert_eq!(md["uuid"], vm1.as_str());
    assert_eq!(md["public_keys"]["k1"], pubkey.as_str());
    let (code, body) = curl(&g2, "http://169.254.169.254/openstack/latest/meta_data.json");
    assert_eq!(code, 200);
    let md2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(md2["uuid"], vm2.as_str(), "the second guest gets its own metadata");
    let (code, _) = curl(&g2, "http://169.254.169.254/latest/meta-data/public-keys/0/openssh-key");
    assert_eq!(code, 404, "vm2 has no key and cannot read vm1's");
    // Naming another instance does not help: identity comes from the source address.
    let forged = std::process::Command::new("ip")
        .args(["netns", "exec", &g2.ns, "curl", "-s", "-m", "5", "-H", &format!("X-Instance-ID: {vm1}")])
        .arg("http://169.254.169.254/openstack/latest/meta_data.json")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&forged.stdout).contains(&pubkey), "forged header leaked vm1's key");
    // A guest that changes its address (spoofing) gets nothing.
    must(&["ip", "-n", &g2.ns, "addr", "add", "10.77.0.250/24", "dev", "eth0"]);
    let spoof = std::process::Command::new("ip")
        .args(["netns", "exec", &g2.ns, "curl", "-s", "-m", "2", "--interface", "10.77.0.250"])
        .arg("http://169.254.169.254/latest/meta-data/instance-id")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&spoof.stdout).trim().is_empty(), "a spoofed source got an answer");
    must(&["ip", "-n", &g2.ns, "addr", "del", "10.77.0.250/24", "dev", "eth0"]);
    // The metadata API itself refuses unsigned requests.
    let r = cloud
        .http()
        .get(cloud.at("/metadata/latest/meta-data/instance-id"))
        .header("X-Instance-ID", vm1.as_str())
        .header("X-Instance-ID-Signature", "00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Agents report alive.
    let agents = cloud.openstack(&["network", "agent", "list"]).await.expect("agent list");
    let types: Vec<&str> = agents.as_array().unwrap().iter().filter_map(|a| a["Agent Type"].as_str()).collect();
    for t in ["Linux bridge agent", "DHCP agent", "L3 agent", "Metadata agent"] {
        assert!(types.contains(&t), "{t} missing: {agents}");
    }
    assert!(agents.as_array().unwrap().iter().all(|a| a["Alive"] == true || a["Alive"] == ":-)"), "{agents}");

    // Security groups: vm1's group has no ingress rule, so vm2 cannot ping it...
    // vm1's port moves into `locked` through the port API (a port update agents follow).
    assert!(g2.ping(&ip1), "both in `default`: the group's remote-group rule admits ICMP");
    cloud
        .openstack(&["port", "set", "--no-security-group", "--security-group", "locked", &p1.id])
        .await
        .expect("port set");
    let shown = cloud.openstack(&["port", "show", &p1.id, "-c", "security_group_ids"]).await.unwrap();
    let locked = cloud.openstack(&["security", "group", "show", "locked", "-c", "id"]).await.unwrap();
    assert_eq!(shown["security_group_ids"], serde_json::json!([locked["id"]]), "vm1's port is only in `locked`");
    let t_block = Instant::now();
    while g2.ping(&ip1) {
        assert!(t_block.elapsed() < Duration::from_secs(5), "moving the port into `locked` did not block ICMP");
    }
    // ...until a rule is added through the CLI.
    cloud
        .openstack(&["security", "group", "rule", "create", "--protocol", "icmp", "--ingress", "locked"])
        .await
        .expect("rule create");
    let sg_effect = g2.ping_until(&ip1, Duration::from_secs(5)).expect("ICMP allowed after the rule");
    assert!(sg_effect < Duration::from_secs(1), "rule took {sg_effect:?}");

    // A routed network: the router's namespace serves metadata too, reached through the
    // guest's default gateway once the DHCP-pushed route is gone.
    let router = cloud.openstack(&["router", "create", "dp-r"]).await.expect("router create");
    cloud.openstack(&["router", "add", "subnet", "dp-r", "dp-sub"]).await.expect("router add subnet");
    let qrouter = format!("{}h-qrouter-{}", lab.prefix, router["id"].as_str().unwrap());
    let t_router = Instant::now();
    while !common::link_exists(&qrouter, "lo")
        || !must(&["ip", "-n", &qrouter, "-4", "-o", "addr"]).contains("169.254.169.254")
    {
        assert!(t_router.elapsed() < Duration::from_secs(10), "router namespace {qrouter} with the metadata address");
        std::thread::sleep(Duration::from_millis(50));
    }
    must(&["ip", "-n", &g1.ns, "route", "del", "169.254.169.254/32"]);
    let mut routed = (0, String::new());
    for _ in 0..50 {
        routed = curl(&g1, "http://169.254.169.254/openstack/latest/meta_data.json");
        if routed.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(routed.0, 200, "metadata through the router: {routed:?}");
    let md: Value = serde_json::from_str(&routed.1).unwrap();
    assert_eq!(md["uuid"], vm1.as_str());

    // The guest goes away (its tap with it): the port is DOWN again.
    must(&["ip", "-n", &host, "link", "del", "dev", &stratus_network_agent::exec::names::tap(&p2.id)]);
    let t_down = Instant::now();
    loop {
        let v = cloud.openstack(&["port", "show", &p2.id, "-c", "status"]).await.unwrap();
        if v["status"] == "DOWN" {
            break;
        }
        assert!(t_down.elapsed() < Duration::from_secs(15), "port not DOWN after its tap vanished: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!(
        "dataplane: cloud start→ready {:?}; taps made→both ports ACTIVE {active_after:?}; DHCP lease {:?}/{:?}; SG rule CLI return→first reply {sg_effect:?}",
        t_start.elapsed(),
        l1.elapsed,
        l2.elapsed
    );
    cloud.shutdown().await;
}

/// `stratus up`'s first start with the data plane makes devstack's networks and the host
/// link (issue 23): the external network `public` bridged to a veth whose host end holds
/// the gateway address, the admin project's `private` network, and `router1` between
/// them, whose gateway then answers from the host at once. A restart makes nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_makes_devstacks_networks_and_the_router_answers_from_the_host() {
    let lab = Lab::new("dnw");
    let host = lab.netns("host");
    let data = tempfile::tempdir().unwrap();
    let start = |agent: stratus_network_agent::AgentConfig| {
        TestCloud::start_in(data.path().to_path_buf(), move |c| {
            c.network_agent = stratus_network_agent::AgentConfig {
                enabled: "true".into(),
                host: String::new(),
                heartbeat_interval_secs: 1,
                device_poll_interval_ms: 100,
                ..agent
            };
            c.public_network.enabled = true;
            // Not devstack's range: a Tempest run may hold that one on this machine.
            c.public_network.cidr = "172.31.250.0/24".into();
            c.public_network.private_cidr = "10.77.0.0/26".into();
            c.public_network.host_interface = "dnw-ex".into();
        })
    };
    let cloud = start(lab.agent_cfg("h", &host)).await;
    let banner = cloud.handle().data_plane.clone();
    assert!(banner.starts_with("on; public 172.31.250.0/24 via dnw-ex (172.31.250.1/24)"), "{banner}");

    let public = cloud.openstack(&["network", "show", "public"]).await.expect("public exists");
    assert_eq!(public["router:external"], true, "{public}");
    assert_eq!(public["provider:network_type"], "flat");
    assert_eq!(public["provider:physical_network"], "public");
    let sub = cloud.openstack(&["subnet", "show", "public-subnet"]).await.expect("public-subnet");
    assert_eq!(sub["cidr"], "172.31.250.0/24");
    assert_eq!(sub["gateway_ip"], "172.31.250.1");
    assert_eq!(sub["enable_dhcp"], false);
    let private = cloud.openstack(&["subnet", "show", "private-subnet"]).await.expect("private-subnet");
    assert_eq!(private["cidr"], "10.77.0.0/26");
    let admin = cloud.openstack(&["project", "show", "admin"]).await.expect("admin project");
    assert_eq!(private["project_id"], admin["id"], "private belongs to the admin project");
    let router = cloud.openstack(&["router", "show", "router1"]).await.expect("router1");
    let gw = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap_or_else(|| panic!("router1 has a gateway address: {router}"))
        .to_string();
    assert!(gw.starts_with("172.31.250."), "{gw}");
    let ports = cloud.openstack(&["port", "list", "--router", "router1", "--long"]).await.expect("router ports");
    assert_eq!(ports.as_array().map(Vec::len), Some(2), "a gateway and an interface on private: {ports}");

    // The router's gateway answers from the host (the namespace standing for it).
    let t0 = Instant::now();
    loop {
        let ok = std::process::Command::new("ip")
            .args(["netns", "exec", &host, "ping", "-c", "1", "-W", "1", &gw])
            .output()
            .expect("ping")
            .status
            .success();
        if ok {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "router1's gateway {gw} did not answer from the host");
    }
    eprintln!("router1's gateway {gw} answered from the host {:?} after the start", t0.elapsed());

    // A restart on the same data directory makes nothing twice (and remakes the host link).
    cloud.shutdown().await;
    must(&["ip", "-n", &host, "link", "del", "dnw-ex"]);
    let cloud = start(lab.agent_cfg("h", &host)).await;
    assert!(cloud.handle().data_plane.starts_with("on; public"), "{}", cloud.handle().data_plane);
    let nets = cloud.openstack(&["network", "list", "--name", "public"]).await.expect("network list");
    assert_eq!(nets.as_array().map(Vec::len), Some(1), "{nets}");
    let routers = cloud.openstack(&["router", "list"]).await.expect("router list");
    assert_eq!(routers.as_array().map(Vec::len), Some(1), "{routers}");
    must(&["ip", "-n", &host, "link", "show", "dnw-ex-br"]);
    cloud.shutdown().await;
}

/// A public range already held by another interface (another cloud, devstack) is refused
/// with what to do; the cloud still starts, with the data plane on and no public network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_range_held_by_another_interface_is_left_alone() {
    let lab = Lab::new("dnx");
    let host = lab.netns("host");
    must(&["ip", "-n", &host, "link", "add", "other0", "type", "veth", "peer", "name", "other1"]);
    must(&["ip", "-n", &host, "addr", "add", "172.31.251.1/24", "dev", "other0"]);
    let agent = lab.agent_cfg("h", &host);
    let cloud = TestCloud::start_with(move |c| {
        c.network_agent = stratus_network_agent::AgentConfig { enabled: "true".into(), host: String::new(), ..agent };
        c.public_network.enabled = true;
        c.public_network.cidr = "172.31.251.0/24".into();
        c.public_network.host_interface = "dnx-ex".into();
    })
    .await;
    assert_eq!(cloud.handle().data_plane, "on (no public network: see the log)");
    let nets = cloud.openstack(&["network", "list"]).await.expect("network list");
    assert_eq!(nets.as_array().map(Vec::len), Some(0), "{nets}");
    assert!(!std::process::Command::new("ip")
        .args(["-n", &host, "link", "show", "dnx-ex"])
        .output()
        .unwrap()
        .status
        .success());
    cloud.shutdown().await;
}
