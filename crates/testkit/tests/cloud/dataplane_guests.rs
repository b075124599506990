//! Real QEMU guests on a Stratus network (issue 9, test 1), everything made through the
//! real `openstack` CLI: the `qemu` virt driver runs the guests in a host namespace the
//! test made, QEMU creates each port's tap there, the in-process network agent plugs it,
//! the guest takes its address by DHCP, fetches its key from the metadata service and runs
//! dropbear. The test then logs into guest 1 from the DHCP namespace with the keypair's
//! private key, pings guest 2 from inside guest 1, and watches a security group rule
//! removal cut that ping.
//!
//! Tests 2–4 share [`GuestCloud`]: security groups and anti-spoofing between two guests
//! (spoofed IP and MAC, allowed address pairs), a router to an external flat network with
//! SNAT and a floating IP seen from an "external host" namespace (hairpin included), and two
//! projects with the same CIDR (one address used in both). The ignored
//! `dataplane_guests_throughput_bench` is `bench/guest-throughput.sh`.
//!
//! Guards remove, even on panic: every QEMU mentioning the data directory, and every
//! namespace of the test (killing what runs inside). Needs root, QEMU, the test image
//! (STRATUS_TEST_IMAGE_DIR) and the host tools (`scripts/install-host-packages.sh`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dataplane::common::{self, must, ping_from, Lab};
use crate::qemu::{image_dir, Reaper, ONE_AT_A_TIME};
use serde_json::Value;
use stratus_testkit::TestCloud;

/// The OpenSSH client logs into the guest from the DHCP namespace.
fn require_ssh() {
    assert!(Path::new("/usr/bin/ssh").exists(), "the OpenSSH client (/usr/bin/ssh) is needed to log into the guest");
}

/// Waits until the guest printed `marker` on its serial console.
async fn wait_console(cloud: &TestCloud, server: &str, marker: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (code, out, err) = cloud.openstack_raw(&cloud.admin(), &["console", "log", "show", server]).await;
        assert_eq!(code, Some(0), "console log show {server}: {err}");
        if out.contains(marker) {
            return out;
        }
        assert!(Instant::now() < deadline, "{marker:?} not on the console of {server} within {within:?}:\n{out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Timing only: a thread reading every instance's console file every 100 ms and noting
/// when each `stratus-guest:` line first appeared (the CLI takes a second or more per call and
/// `server create --wait` blocks, so polling through it would measure the test, not the cloud).
struct ConsoleWatch {
    seen: Arc<Mutex<HashMap<(String, String), Instant>>>,
    stop: Arc<AtomicBool>,
}

impl ConsoleWatch {
    fn start(instances: PathBuf) -> ConsoleWatch {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for e in std::fs::read_dir(&instances).into_iter().flatten().flatten() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    let text = std::fs::read_to_string(e.path().join("console.log")).unwrap_or_default();
                    let mut seen = s.lock().unwrap();
                    for line in text.lines().filter_map(|l| l.find("stratus-guest: ").map(|i| &l[i..])) {
                        seen.entry((id.clone(), line.trim_end().to_owned())).or_insert_with(Instant::now);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        ConsoleWatch { seen, stop }
    }

    /// When a console line starting with `prefix` first appeared.
    fn first_seen(&self, id: &str, prefix: &str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|((i, l), _)| i == id && l.starts_with(prefix)).map(|(_, t)| *t).min()
    }
}

impl Drop for ConsoleWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A command run in a guest as `user` over ssh from the DHCP namespace: (exit code, output).
fn ssh(dhcp_ns: &str, key: &Path, user: &str, ip: &str, cmd: &str) -> (Option<i32>, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", dhcp_ns, "ssh", "-i"])
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

/// The server's only port: (id, fixed IP, status).
async fn server_port(cloud: &TestCloud, server: &str) -> (String, String, String) {
    let ports = cloud.openstack(&["port", "list", "--server", server]).await.expect("port list");
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "one port on {server}: {ports}");
    let id = ports[0]["ID"].as_str().unwrap().to_string();
    let p = cloud.openstack(&["port", "show", &id]).await.expect("port show");
    let ip = p["fixed_ips"][0]["ip_address"].as_str().expect("a fixed IP").to_string();
    (id, ip, p["status"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_guests_dhcp_metadata_ssh_and_security_groups() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let img_dir = image_dir();
    require_ssh();
    // Drop order (reverse): cloud, QEMUs, data dir, namespaces.
    let lab = Lab::new("rg");
    let host = lab.netns("host");
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let agent = lab.agent_cfg("h", &host);
    let host_for_compute = host.clone();
    let t_start = Instant::now();
    let cloud = TestCloud::start_in(data.path().to_path_buf(), |c| {
        c.compute.local.virt_driver = "qemu".into();
        c.compute.local.host_netns = Some(host_for_compute);
        c.compute.local.agent.sync_interval_secs = 2;
        c.compute.local.qemu.power_off_timeout_secs = 30;
        c.network_agent = stratus_network_agent::AgentConfig {
            enabled: "true".into(),
            host: String::new(),
            heartbeat_interval_secs: 1,
            device_poll_interval_ms: 100,
            ..agent
        };
    })
    .await;
    stratus::test_image::upload(&cloud.handle().platform, &img_dir).await.expect("test image upload");

    // Keypair generated by the cloud; the private key is only shown once.
    let key = lab.tmp.path().join("k1.pem");
    cloud
        .openstack(&["keypair", "create", "--private-key", key.to_str().unwrap(), "k1"])
        .await
        .expect("keypair create");
    must(&["chmod", "0600", key.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"), "private key saved");

    let net = cloud.openstack(&["network", "create", "rg-net"]).await.expect("network create");
    let net_id = net["id"].as_str().unwrap().to_string();
    cloud
        .openstack(&["subnet", "create", "--network", "rg-net", "--subnet-range", "10.78.0.0/24", "rg-sub"])
        .await
        .expect("subnet create");
    // A group of its own (not `default`, whose remote-group rule would admit ICMP anyway).
    cloud.openstack(&["security", "group", "create", "rg-sg"]).await.expect("sg create");
    let icmp = cloud
        .openstack(&["security", "group", "rule", "create", "--ingress", "--protocol", "icmp", "rg-sg"])
        .await
        .expect("icmp rule");
    let icmp_rule = icmp["id"].as_str().unwrap().to_string();
    cloud
        .openstack(&[
            "security",
            "group",
            "rule",
            "create",
            "--ingress",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "rg-sg",
        ])
        .await
        .expect("ssh rule");

    let watch = ConsoleWatch::start(cloud.data_dir.join("instances"));
    let nic = format!("net-id={net_id}");
    let mut created = Vec::new();
    for name in ["vm1", "vm2"] {
        let t = Instant::now();
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
                "rg-sg",
                "--wait",
                name,
            ])
            .await
            .unwrap_or_else(|e| panic!("server create {name}: {e}"));
        assert_eq!(v["status"], "ACTIVE", "{v}");
        created.push((name, v["id"].as_str().unwrap().to_string(), t, t.elapsed()));
    }

    // Ports ACTIVE (the agent plugged QEMU's taps).
    let mut guests = Vec::new();
    for (name, ..) in &created {
        let (port, ip, _) = server_port(&cloud, name).await;
        let t0 = Instant::now();
        loop {
            let (_, _, status) = server_port(&cloud, name).await;
            if status == "ACTIVE" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "port {port} of {name} not ACTIVE: {status}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let tap = stratus_network_agent::exec::names::tap(&port);
        assert!(common::link_exists(&host, &tap), "QEMU's tap {tap} in the host namespace");
        guests.push((port, ip, tap));
    }

    let dhcp_marker = |ip: &str| format!("stratus-guest: DHCP bound eth0 ip={ip} ");
    // What the user sees through the CLI: each guest leased its port's address and fetched its
    // own hostname and key from the metadata service.
    for (i, (name, id, _, t_active)) in created.iter().enumerate() {
        let ip = &guests[i].1;
        let log = wait_console(&cloud, name, &dhcp_marker(ip), Duration::from_secs(60)).await;
        assert!(!log.contains("metadata service unreachable"), "{name} reached metadata:\n{log}");
        // The metadata fetch runs in the background of the boot ("up" may come first).
        let log = wait_console(&cloud, name, "stratus-guest: metadata done", Duration::from_secs(60)).await;
        assert!(log.contains("stratus-guest: metadata instance-id=i-"), "{name} read its EC2 instance id:\n{log}");
        assert!(log.contains(&format!("stratus-guest: hostname={name}")), "{name} got its own metadata:\n{log}");
        assert!(log.contains("stratus-guest: ssh key installed"), "{name} installed its key from metadata:\n{log}");
        assert!(log.contains("stratus-guest: dropbear started on :22"), "{name} runs dropbear:\n{log}");
        let t_create = created[i].2;
        let at = |m: &str| watch.first_seen(id, m).map(|t| t - t_create);
        let (dhcp, md) = (at(&dhcp_marker(ip)), at("stratus-guest: metadata done"));
        eprintln!(
            "{name} ({id}, {ip}): create→ACTIVE {t_active:?}; create→DHCP bound on the console {dhcp:?}; create→metadata done {md:?}"
        );
    }
    let (ip1, ip2) = (guests[0].1.clone(), guests[1].1.clone());

    let qdhcp = format!("{}h-qdhcp-{net_id}", lab.prefix);
    assert!(common::link_exists(&qdhcp, "lo"), "DHCP namespace {qdhcp}");
    for (_, ip, _) in &guests {
        // A few tries: a loaded TCG guest can miss a 1 s deadline.
        let t0 = Instant::now();
        while !ping_from(&qdhcp, ip) {
            assert!(t0.elapsed() < Duration::from_secs(15), "guest {ip} does not answer ping from the DHCP namespace");
        }
    }

    // Into guest 1 with the private key, then guest 1 pings guest 2.
    let t_ssh = Instant::now();
    let (code, out) = loop {
        let r = ssh(&qdhcp, &key, "cirros", &ip1, "id -un; hostname");
        if r.0 == Some(0) || t_ssh.elapsed() > Duration::from_secs(90) {
            break r;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(code, Some(0), "ssh into vm1 ({ip1}) with the keypair: {out}");
    assert!(out.starts_with("cirros\n"), "logged in as cirros: {out}");
    let ssh_time = t_ssh.elapsed();
    // The image's busybox ping needs a raw socket (no setuid, no sudo, no ping_group_range),
    // so the pings run as root, whose authorized key is the same keypair (dropbear -g only
    // refuses root *passwords*).
    let (code, out) = ssh(&qdhcp, &key, "root", &ip1, &format!("ping -c 3 -W 2 {ip2}"));
    assert_eq!(code, Some(0), "vm1 pings vm2 ({ip2}): {out}");

    // The ICMP rule goes: fresh pings (new ICMP ids, so no conntrack entry) stop within seconds.
    cloud.openstack(&["security", "group", "rule", "delete", &icmp_rule]).await.expect("rule delete");
    let t_rule = Instant::now();
    let (code, out) = ssh(
        &qdhcp,
        &key,
        "root",
        &ip1,
        &format!("i=0; while ping -c 1 -W 1 {ip2} >/dev/null; do i=$((i+1)); [ $i -ge 5 ] && exit 7; sleep 1; done; echo blocked after $i"),
    );
    assert!(
        code == Some(0) && out.contains("blocked after"),
        "ping vm1→vm2 still works 5 s after the ICMP rule is gone: {out}"
    );
    eprintln!("vm1→vm2 after the rule delete: {}", out.trim());
    let block_time = t_rule.elapsed();
    assert!(!ping_from(&qdhcp, &ip2), "no ICMP rule: the DHCP namespace cannot ping vm2 either");
    let (code, out) = ssh(&qdhcp, &key, "cirros", &ip1, "true");
    assert_eq!(code, Some(0), "tcp 22 still admitted: {out}");
    // The rule, and only the rule, was what stopped the ping: it comes back with it.
    cloud
        .openstack(&["security", "group", "rule", "create", "--ingress", "--protocol", "icmp", "rg-sg"])
        .await
        .expect("icmp rule again");
    let (code, out) = ssh(
        &qdhcp,
        &key,
        "root",
        &ip1,
        &format!("i=0; until ping -c 1 -W 1 {ip2} >/dev/null; do i=$((i+1)); [ $i -ge 5 ] && exit 7; sleep 1; done; echo allowed after $i"),
    );
    assert!(code == Some(0) && out.contains("allowed after"), "ping vm1→vm2 not back 5 s after the rule: {out}");

    // Delete: QEMU gone, taps gone, ports gone.
    cloud.openstack(&["server", "delete", "--wait", "vm1", "vm2"]).await.expect("server delete --wait");
    for (port, _, tap) in &guests {
        let t0 = Instant::now();
        while common::link_exists(&host, tap) {
            assert!(t0.elapsed() < Duration::from_secs(30), "tap {tap} left after delete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (code, _, _) = cloud.openstack_raw(&cloud.admin(), &["port", "show", port]).await;
        assert_ne!(code, Some(0), "port {port} deleted with its server");
    }
    let left: Value = cloud.openstack(&["port", "list", "--network", "rg-net", "--long"]).await.unwrap();
    let left: Vec<&Value> = left.as_array().unwrap().iter().filter(|p| p["Device Owner"] != "network:dhcp").collect();
    assert!(left.is_empty(), "only the DHCP port is left on the network: {left:?}");
    eprintln!(
        "dataplane_guests: total {:?}; ssh ready after {ssh_time:?} (from first try); ICMP rule delete→vm1 ping of vm2 refused {block_time:?} (includes the ssh login)",
        t_start.elapsed()
    );
    cloud.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Issue 9, tests 2–4 with real guests, and the same-host guest throughput benchmark. They
// share one setup: a cloud whose `qemu` driver and network agent live in a host namespace
// of the test, the test image, and the admin's keypair `k1`.

/// A cloud with real QEMU guests; fields drop in order (cloud, QEMUs, data dir, namespaces).
struct GuestCloud {
    cloud: TestCloud,
    _reaper: Reaper,
    _data: tempfile::TempDir,
    lab: Lab,
    /// The host namespace (taps, bridges, nft tables).
    host: String,
    /// Private key of the admin's keypair `k1`.
    key: PathBuf,
}

impl std::ops::Deref for GuestCloud {
    type Target = TestCloud;
    fn deref(&self) -> &TestCloud {
        &self.cloud
    }
}

/// A booted guest, logged into over ssh from its network's DHCP namespace.
#[derive(Clone, Debug)]
struct Vm {
    name: String,
    id: String,
    port: String,
    ip: String,
    mac: String,
    qdhcp: String,
    key: PathBuf,
    creds: stratus_testkit::Creds,
}

impl Vm {
    /// Waits until ssh into the guest works (its group must admit tcp 22 from the DHCP port).
    async fn wait_ssh(&self) {
        let t = Instant::now();
        loop {
            let (code, out) = self.sh("true");
            if code == Some(0) {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "no ssh into {} ({}): {out}", self.name, self.ip);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Runs `cmd` as root in the guest (root's authorized key is the keypair's too).
    fn sh(&self, cmd: &str) -> (Option<i32>, String) {
        ssh(&self.qdhcp, &self.key, "root", &self.ip, cmd)
    }

    /// Runs `cmd` and panics unless it exits 0.
    fn must(&self, cmd: &str) -> String {
        let (code, out) = self.sh(cmd);
        assert_eq!(code, Some(0), "{} ({}): `{cmd}` failed: {out}", self.name, self.ip);
        out
    }

    /// Whether one of `tries` pings (1 s each) from the guest to `ip` is answered.
    fn pings(&self, ip: &str, tries: u32) -> bool {
        let (code, out) = self.sh(&format!(
            "i=0; while [ $i -lt {tries} ]; do ping -c 1 -W 1 {ip} >/dev/null && exit 0; i=$((i+1)); done; exit 1"
        ));
        assert!(matches!(code, Some(0) | Some(1)), "{}: ssh failed: {out}", self.name);
        code == Some(0)
    }

    /// Whether a TCP connection from the guest to `ip:22` gets dropbear's banner.
    fn ssh_banner(&self, ip: &str) -> bool {
        let (code, out) = self.sh(&format!("timeout 4 nc -w 3 {ip} 22 </dev/null | head -c 64; true"));
        assert_eq!(code, Some(0), "{}: ssh failed: {out}", self.name);
        out.contains("SSH-2.0-")
    }
}

impl GuestCloud {
    /// Starts the cloud; `agent` adjusts the network agent's configuration (physical
    /// interface mappings) after the lab and the host namespace exist.
    async fn start(test: &str, agent: impl FnOnce(&Lab, &str, &mut stratus_network_agent::AgentConfig)) -> GuestCloud {
        let img_dir = image_dir();
        require_ssh();
        let lab = Lab::new(test);
        let host = lab.netns("host");
        let data = tempfile::tempdir().unwrap();
        let reaper = Reaper(data.path().to_path_buf());
        let mut agent_cfg = lab.agent_cfg("h", &host);
        agent(&lab, &host, &mut agent_cfg);
        let host_for_compute = host.clone();
        let cloud = TestCloud::start_in(data.path().to_path_buf(), |c| {
            c.compute.local.virt_driver = "qemu".into();
            c.compute.local.host_netns = Some(host_for_compute);
            c.compute.local.agent.sync_interval_secs = 2;
            c.compute.local.qemu.power_off_timeout_secs = 30;
            c.network_agent = stratus_network_agent::AgentConfig {
                enabled: "true".into(),
                host: String::new(),
                heartbeat_interval_secs: 1,
                device_poll_interval_ms: 100,
                ..agent_cfg
            };
        })
        .await;
        stratus::test_image::upload(&cloud.handle().platform, &img_dir).await.expect("test image upload");
        let key = lab.tmp.path().join("k1.pem");
        cloud
            .openstack(&["keypair", "create", "--private-key", key.to_str().unwrap(), "k1"])
            .await
            .expect("keypair create");
        must(&["chmod", "0600", key.to_str().unwrap()]);
        GuestCloud { cloud, _reaper: reaper, _data: data, lab, host, key }
    }

    async fn finish(self) {
        let GuestCloud { cloud, .. } = self;
        cloud.shutdown().await;
    }

    /// `openstack` as `creds`, panicking with the CLI's message on failure.
    async fn cli(&self, creds: &stratus_testkit::Creds, args: &[&str]) -> Value {
        self.cloud.openstack_as(creds, args).await.unwrap_or_else(|e| panic!("openstack {args:?}: {e}"))
    }

    /// A network with one IPv4 subnet; returns the network id.
    async fn network(&self, creds: &stratus_testkit::Creds, name: &str, cidr: &str) -> String {
        let net = self.cli(creds, &["network", "create", name]).await;
        self.cli(creds, &["subnet", "create", "--network", name, "--subnet-range", cidr, &format!("{name}-sub")]).await;
        net["id"].as_str().unwrap().to_string()
    }

    /// A security group admitting ingress ICMP and ssh (tcp 22) from anywhere.
    async fn open_group(&self, creds: &stratus_testkit::Creds, name: &str) {
        self.cli(creds, &["security", "group", "create", name]).await;
        self.cli(creds, &["security", "group", "rule", "create", "--ingress", "--protocol", "icmp", name]).await;
        self.cli(
            creds,
            &["security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "22", name],
        )
        .await;
    }

    /// Boots the servers of `specs` (name, network id, security group, extra `--nic`
    /// options) at once as `creds` with keypair `key_name`, waits for ACTIVE, their ports
    /// ACTIVE, DHCP, metadata and dropbear on each console.
    async fn boot(
        &self,
        creds: &stratus_testkit::Creds,
        key_name: &str,
        key: &Path,
        specs: &[(&str, &str, &str, &str)],
    ) -> Vec<Vm> {
        let t0 = Instant::now();
        // Created without `--wait`, so the guests boot side by side.
        let mut servers = Vec::new();
        for (name, net, sg, nic_extra) in specs {
            let nic = format!("net-id={net}{nic_extra}");
            let args = [
                "server",
                "create",
                "--image",
                "cirros",
                "--flavor",
                "m1.nano",
                "--nic",
                &nic,
                "--key-name",
                key_name,
                "--security-group",
                sg,
                name,
            ];
            servers.push(self.cli(creds, &args).await);
        }
        for (v, (name, ..)) in servers.iter_mut().zip(specs) {
            let t = Instant::now();
            *v = loop {
                let s = self.cli(creds, &["server", "show", v["id"].as_str().unwrap()]).await;
                if s["status"] == "ACTIVE" {
                    break s;
                }
                assert!(s["status"] != "ERROR" && t.elapsed() < Duration::from_secs(120), "{name} not ACTIVE: {s}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
        }
        let mut vms = Vec::new();
        for ((name, net, _, _), v) in specs.iter().zip(servers) {
            let ports = self.cli(creds, &["port", "list", "--server", name]).await;
            assert_eq!(ports.as_array().map(Vec::len), Some(1), "one port on {name}: {ports}");
            let port = ports[0]["ID"].as_str().unwrap().to_string();
            let t = Instant::now();
            let p = loop {
                let p = self.cli(creds, &["port", "show", &port]).await;
                if p["status"] == "ACTIVE" {
                    break p;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "port {port} of {name} not ACTIVE: {p}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            let ip = p["fixed_ips"][0]["ip_address"].as_str().expect("a fixed IP").to_string();
            vms.push(Vm {
                name: name.to_string(),
                id: v["id"].as_str().unwrap().to_string(),
                port,
                ip,
                mac: p["mac_address"].as_str().unwrap().to_string(),
                qdhcp: format!("{}h-qdhcp-{net}", self.lab.prefix),
                key: key.to_path_buf(),
                creds: creds.clone(),
            });
        }
        for vm in &vms {
            let console = |marker: String| self.console(vm, marker, Duration::from_secs(90));
            console(format!("stratus-guest: DHCP bound eth0 ip={} ", vm.ip)).await;
            let log = console("stratus-guest: metadata done".into()).await;
            assert!(
                log.contains(&format!("stratus-guest: hostname={}", vm.name)),
                "{} read its metadata:\n{log}",
                vm.name
            );
            assert!(log.contains("stratus-guest: ssh key installed"), "{} installed its key:\n{log}", vm.name);
            console("stratus-guest: dropbear started on :22".into()).await;
        }
        eprintln!(
            "booted {:?} in {:?} (create → dropbear started in each)",
            vms.iter().map(|v| format!("{} {}", v.name, v.ip)).collect::<Vec<_>>(),
            t0.elapsed()
        );
        vms
    }

    /// Waits for `marker` on the console of `vm` (as its owner); returns the console log.
    async fn console(&self, vm: &Vm, marker: String, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (code, out, err) = self.cloud.openstack_raw(&vm.creds, &["console", "log", "show", &vm.id]).await;
            assert_eq!(code, Some(0), "console log show {}: {err}", vm.name);
            if out.contains(&marker) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{marker:?} not on the console of {} within {within:?}:\n{out}",
                vm.name
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Pings `ip` from namespace `ns` every ~0.2 s until it answers; how long that took.
fn ping_until_from(ns: &str, ip: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "0.2", ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(t0.elapsed());
        }
    }
    None
}

/// Issue 9 test 2: security groups and anti-spoofing between two real guests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_guests_security_groups_and_anti_spoofing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t_start = Instant::now();
    let gc = GuestCloud::start("gsg", |_, _, _| {}).await;
    let admin = gc.admin();
    let net = gc.network(&admin, "sg-net", "10.79.0.0/24").await;
    gc.open_group(&admin, "sg-open").await;
    // No ingress rule at all (a new group only has the two egress rules).
    let closed = gc.cli(&admin, &["security", "group", "create", "sg-closed"]).await;
    let closed_id = closed["id"].as_str().unwrap().to_string();
    let vms = gc.boot(&admin, "k1", &gc.key, &[("vm1", &net, "sg-open", ""), ("vm2", &net, "sg-closed", "")]).await;
    let (vm1, vm2) = (&vms[0], &vms[1]);
    vm1.wait_ssh().await;
    let t_booted = t_start.elapsed();

    // vm2's group admits nothing: neither ping nor tcp 22 from vm1 (nor from the DHCP namespace).
    assert!(!vm1.pings(&vm2.ip, 2), "vm1 pings vm2 whose group has no ICMP rule");
    assert!(!vm1.ssh_banner(&vm2.ip), "vm1 reaches vm2's tcp 22 without an ssh rule");
    assert!(ping_until_from(&vm2.qdhcp, &vm2.ip, Duration::from_secs(1)).is_none(), "DHCP namespace pings vm2");

    // Rules through the CLI: the ping is answered within a second of the CLI returning.
    let icmp =
        gc.cli(&admin, &["security", "group", "rule", "create", "--ingress", "--protocol", "icmp", "sg-closed"]).await;
    let icmp_effect =
        ping_until_from(&vm2.qdhcp, &vm2.ip, Duration::from_secs(5)).expect("ICMP rule added: vm2 answers ping");
    let ssh_rule = gc
        .cli(
            &admin,
            &["security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "22", "sg-closed"],
        )
        .await;
    let t_rule = Instant::now();
    let mut ssh_effect = None;
    while t_rule.elapsed() < Duration::from_secs(5) {
        // When the attempt whose SYN got through started (socat then waits for the banner).
        let at = t_rule.elapsed();
        let ok = Command::new("ip")
            .args(["netns", "exec", &vm2.qdhcp, "socat", "-T0.3", "-u"])
            .arg(format!("TCP:{}:22,connect-timeout=0.2", vm2.ip))
            .arg("-")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("SSH-2.0-"));
        if ok {
            ssh_effect = Some(at);
            break;
        }
    }
    let ssh_effect = ssh_effect.expect("tcp 22 rule added: vm2's dropbear reachable within 5 s");
    eprintln!("rule create (CLI returned) → effect: ICMP {icmp_effect:?}, tcp 22 {ssh_effect:?}");
    assert!(icmp_effect < Duration::from_secs(1) && ssh_effect < Duration::from_secs(1), "rules took more than 1 s");
    assert!(vm1.pings(&vm2.ip, 3), "vm1 cannot ping vm2 after the ICMP rule");
    assert!(vm1.ssh_banner(&vm2.ip), "vm1 cannot reach vm2's ssh after the tcp 22 rule");
    // ssh into vm2 works now too; from there, vm1's group admits both.
    vm2.wait_ssh().await;
    assert!(vm2.pings(&vm1.ip, 3), "vm2 cannot ping vm1 (sg-open admits ICMP)");
    assert!(vm2.ssh_banner(&vm1.ip), "vm2 cannot reach vm1's ssh (sg-open admits tcp 22)");

    // Anti-spoofing. vm1 takes a second address of the subnet that is not its port's: what
    // it sends from there (ARP included) is dropped at its tap, while its own address still works.
    let spoof_ip = "10.79.0.200";
    vm1.must(&format!("ip addr add {spoof_ip}/24 dev eth0"));
    assert!(vm1.pings(&vm2.ip, 1), "vm1's own address must keep working");
    let (code, out) = vm1.sh(&format!("ping -c 2 -W 2 -I {spoof_ip} {}", vm2.ip));
    assert_ne!(code, Some(0), "a ping from a spoofed source address got through: {out}");
    // A forged MAC: frames from it never reach the bridge (which would learn it otherwise).
    let spoof_mac = "fa:16:3e:de:ad:01";
    let bridge = stratus_network_agent::exec::names::bridge(&net);
    let forged = format!(
        "ip link set dev eth0 address {spoof_mac} && ping -c 2 -W 1 {ip2} >/dev/null; r=$?; ip link set dev eth0 address {mac}; echo rc=$r",
        ip2 = vm2.ip,
        mac = vm1.mac
    );
    let out = vm1.must(&forged);
    assert!(out.contains("rc=1"), "ping with a forged MAC: {out}");
    let fdb = must(&["bridge", "-n", &gc.host, "fdb", "show", "br", &bridge]);
    assert!(!fdb.contains(spoof_mac), "the bridge learned the forged MAC {spoof_mac}: {fdb}");
    assert!(vm1.pings(&vm2.ip, 3), "vm1 back on its own MAC");

    // Allowed address pairs: the extra address becomes vm1's too, then a MAC with it.
    let t_pair = Instant::now();
    gc.cli(&admin, &["port", "set", "--allowed-address", &format!("ip-address={spoof_ip}"), &vm1.port]).await;
    let shown = gc.cli(&admin, &["port", "show", &vm1.port, "-c", "allowed_address_pairs"]).await;
    assert!(shown.to_string().contains(spoof_ip), "pair listed: {shown}");
    let (code, out) = vm1.sh(&format!(
        "i=0; until ping -c 1 -W 1 -I {spoof_ip} {ip2} >/dev/null; do i=$((i+1)); [ $i -ge 10 ] && exit 7; done; echo ok after $i",
        ip2 = vm2.ip
    ));
    assert_eq!(code, Some(0), "the allowed address pair did not let {spoof_ip} through: {out}");
    eprintln!("allowed address pair: port set → spoofed source answered {:?} ({})", t_pair.elapsed(), out.trim());
    let pair = format!("ip-address={spoof_ip},mac-address={spoof_mac}");
    gc.cli(&admin, &["port", "set", "--allowed-address", &pair, &vm1.port]).await;
    // The reply goes to the MAC vm2 has cached for vm1, so only the bridge's learning shows
    // that the forged frames got through now.
    let t = Instant::now();
    loop {
        vm1.must(&forged);
        let fdb = must(&["bridge", "-n", &gc.host, "fdb", "show", "br", &bridge]);
        if fdb.contains(spoof_mac) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "with the pair's MAC allowed, its frames reach the bridge: {fdb}"
        );
    }
    assert!(vm1.pings(&vm2.ip, 3), "vm1 back on its own MAC");
    vm1.must(&format!("ip addr del {spoof_ip}/24 dev eth0"));

    // Rules removed: blocked again (new flows; the agent also drops the established ones).
    for rule in [&icmp, &ssh_rule] {
        gc.cli(&admin, &["security", "group", "rule", "delete", rule["id"].as_str().unwrap()]).await;
    }
    let t_del = Instant::now();
    while ping_until_from(&vm2.qdhcp, &vm2.ip, Duration::from_millis(300)).is_some() {
        assert!(t_del.elapsed() < Duration::from_secs(5), "ICMP still admitted 5 s after the rule delete");
    }
    let del_effect = t_del.elapsed();
    assert!(!vm1.pings(&vm2.ip, 2), "vm1 still pings vm2 after the ICMP rule is gone");
    assert!(!vm1.ssh_banner(&vm2.ip), "vm1 still reaches vm2's tcp 22 after the rule is gone");
    let left = gc.cli(&admin, &["security", "group", "rule", "list", &closed_id]).await;
    assert!(left.as_array().unwrap().iter().all(|r| r["Direction"] == "egress"), "only egress rules left: {left}");

    gc.cli(&admin, &["server", "delete", "--wait", "vm1", "vm2"]).await;
    eprintln!(
        "dataplane_guests_security_groups_and_anti_spoofing: total {:?} (boot of both {t_booted:?}); rule delete → ping refused {del_effect:?}",
        t_start.elapsed()
    );
    gc.finish().await;
}

/// Whether a TCP connection from namespace `ns` to `ip:22` gets dropbear's banner within ~1 s.
fn banner_from(ns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "socat", "-T0.5", "-u"])
        .arg(format!("TCP:{ip}:22,connect-timeout=0.5"))
        .arg("-")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("SSH-2.0-"))
}

/// Issue 9 test 3: a router between a tenant network and an external flat provider network
/// (a veth of the host namespace leading to an "external host" namespace): SNAT, then a
/// floating IP associated and removed, all seen from the external host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_guests_router_snat_and_floating_ip() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t_start = Instant::now();
    let mut ext_ns = String::new();
    let gc = GuestCloud::start("gl3", |lab, host, cfg| {
        // The provider interface `ext0` of the host, wired to the external host's eth0.
        ext_ns = lab.netns("ext");
        must(&["ip", "-n", host, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", &ext_ns]);
        must(&["ip", "-n", &ext_ns, "addr", "add", "203.0.113.1/24", "dev", "eth0"]);
        must(&["ip", "-n", &ext_ns, "link", "set", "eth0", "up"]);
        cfg.physical_interface_mappings.insert("extnet".into(), "ext0".into());
    })
    .await;
    // The external host answers every TCP connection on :8080 with the address it came from
    // (killed with the namespace if the test fails).
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &ext_ns, "socat", "TCP-LISTEN:8080,reuseaddr,fork", "SYSTEM:echo peer=$SOCAT_PEERADDR"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("socat listener");
    let admin = gc.admin();
    gc.cli(
        &admin,
        &[
            "network",
            "create",
            "--external",
            "--provider-network-type",
            "flat",
            "--provider-physical-network",
            "extnet",
            "ext-net",
        ],
    )
    .await;
    gc.cli(
        &admin,
        &[
            "subnet",
            "create",
            "--network",
            "ext-net",
            "--subnet-range",
            "203.0.113.0/24",
            "--gateway",
            "203.0.113.1",
            "--no-dhcp",
            "--allocation-pool",
            "start=203.0.113.10,end=203.0.113.99",
            "ext-sub",
        ],
    )
    .await;
    let net = gc.network(&admin, "l3-net", "10.81.0.0/24").await;
    gc.cli(&admin, &["router", "create", "l3-r"]).await;
    gc.cli(&admin, &["router", "set", "--external-gateway", "ext-net", "l3-r"]).await;
    gc.cli(&admin, &["router", "add", "subnet", "l3-r", "l3-net-sub"]).await;
    let router = gc.cli(&admin, &["router", "show", "l3-r"]).await;
    let gw_ip = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap_or_else(|| panic!("router gateway address: {router}"))
        .to_string();
    gc.open_group(&admin, "l3-open").await;
    let vms = gc.boot(&admin, "k1", &gc.key, &[("vm1", &net, "l3-open", "")]).await;
    let vm = &vms[0];
    vm.wait_ssh().await;
    let out = vm.must("ip route");
    assert!(out.contains("default via 10.81.0.1"), "the guest's default route is the router (DHCP): {out}");

    // SNAT: the external host has no route to 10.81.0.0/24, and sees the router's address.
    let t = Instant::now();
    let peer = loop {
        let (code, out) = vm.sh("timeout 5 nc -w 3 203.0.113.1 8080 </dev/null");
        if code == Some(0) && out.contains("peer=") {
            break out;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "guest cannot reach the external host through SNAT: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(peer.trim(), format!("peer={gw_ip}"), "the external host sees the router's gateway address");
    assert!(vm.pings("203.0.113.1", 3), "the guest pings the external host");
    assert!(ping_until_from(&ext_ns, &vm.ip, Duration::from_secs(1)).is_none(), "fixed IP reachable from outside");

    // Floating IP: the external host reaches the guest by it (ping and ssh), and the
    // guest's own connections leave with it.
    let fip = gc.cli(&admin, &["floating", "ip", "create", "ext-net"]).await;
    let fip = fip["floating_ip_address"].as_str().unwrap().to_string();
    assert!(ping_until_from(&ext_ns, &fip, Duration::from_secs(1)).is_none(), "unassociated floating IP answers");
    gc.cli(&admin, &["server", "add", "floating", "ip", "vm1", &fip]).await;
    let fip_effect = ping_until_from(&ext_ns, &fip, Duration::from_secs(10)).expect("floating IP not reachable");
    let (code, out) = ssh(&ext_ns, &gc.key, "cirros", &fip, "hostname");
    assert_eq!((code, out.trim()), (Some(0), "vm1"), "ssh to the floating IP from the external host");
    let out = vm.must("timeout 5 nc -w 3 203.0.113.1 8080 </dev/null");
    assert_eq!(out.trim(), format!("peer={fip}"), "with a floating IP the guest's connections leave with it");
    // Hairpin: from inside, the guest reaches a floating IP (its own here) as Neutron's
    // router allows it (DNATed internal traffic is SNATed back through the router).
    assert!(vm.pings(&fip, 3), "the guest cannot ping its own floating IP");
    assert!(vm.ssh_banner(&fip), "the guest cannot reach tcp 22 at its own floating IP");
    let shown = gc.cli(&admin, &["floating", "ip", "show", &fip]).await;
    assert_eq!(shown["fixed_ip_address"], vm.ip.as_str(), "{shown}");

    // Removed: unreachable again, while SNAT keeps working.
    gc.cli(&admin, &["server", "remove", "floating", "ip", "vm1", &fip]).await;
    let t_rm = Instant::now();
    while ping_until_from(&ext_ns, &fip, Duration::from_millis(300)).is_some() {
        assert!(t_rm.elapsed() < Duration::from_secs(10), "floating IP still answers 10 s after its removal");
    }
    let rm_effect = t_rm.elapsed();
    assert!(!banner_from(&ext_ns, &fip), "ssh to the removed floating IP still connects");
    let out = vm.must("timeout 5 nc -w 3 203.0.113.1 8080 </dev/null");
    assert_eq!(out.trim(), format!("peer={gw_ip}"), "back to the router's SNAT address");

    gc.cli(&admin, &["server", "delete", "--wait", "vm1"]).await;
    let _ = listener.kill();
    let _ = listener.wait();
    eprintln!(
        "dataplane_guests_router_snat_and_floating_ip: total {:?}; server add floating ip (CLI returned) → ping from outside {fip_effect:?}; remove → no answer {rm_effect:?}",
        t_start.elapsed()
    );
    gc.finish().await;
}

/// Issue 9 test 4: two projects (the second one made through the CLI as admin) with
/// networks of the same CIDR, one guest in project 1 and two in project 2, one of which has
/// the very address of project 1's guest: no guest reaches the other project's, at layer 3
/// or by ARP, while each keeps its own DHCP server and metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_guests_same_cidr_projects_are_isolated() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t_start = Instant::now();
    let gc = GuestCloud::start("giso", |_, _, _| {}).await;
    let admin = gc.admin();
    gc.cli(&admin, &["project", "create", "iso-p2"]).await;
    gc.cli(&admin, &["user", "create", "--project", "iso-p2", "--password", "iso-secret", "iso-u2"]).await;
    gc.cli(&admin, &["role", "add", "--project", "iso-p2", "--user", "iso-u2", "member"]).await;
    let u2 = stratus_testkit::Creds::new("iso-u2", "iso-secret", "iso-p2");
    let key2 = gc.lab.tmp.path().join("k2.pem");
    gc.cli(&u2, &["keypair", "create", "--private-key", key2.to_str().unwrap(), "k2"]).await;
    must(&["chmod", "0600", key2.to_str().unwrap()]);

    let cidr = "10.82.0.0/24";
    let net_a = gc.network(&admin, "iso-a", cidr).await;
    let net_b = gc.network(&u2, "iso-b", cidr).await;
    // Distinct names: the admin sees every project's groups, so a shared name would be ambiguous.
    gc.open_group(&admin, "iso-open-a").await;
    gc.open_group(&u2, "iso-open-b").await;
    let a = gc.boot(&admin, "k1", &gc.key, &[("vm-a", &net_a, "iso-open-a", "")]).await.remove(0);
    // Project 2: vm-b on an address project 1 does not use, vm-c on vm-a's very address.
    let p2 = gc
        .boot(
            &u2,
            "k2",
            &key2,
            &[
                ("vm-b", &net_b, "iso-open-b", ",v4-fixed-ip=10.82.0.50"),
                ("vm-c", &net_b, "iso-open-b", &format!(",v4-fixed-ip={}", a.ip)),
            ],
        )
        .await;
    let (b, c) = (&p2[0], &p2[1]);
    assert_eq!((b.ip.as_str(), c.ip.as_str()), ("10.82.0.50", a.ip.as_str()));
    for vm in [&a, b, c] {
        vm.wait_ssh().await;
    }
    let t_booted = t_start.elapsed();
    assert!(!gc.cli(&u2, &["server", "list"]).await.to_string().contains("vm-a"), "project 2 sees project 1's server");

    // Each reaches its own DHCP server (the same address, 10.82.0.2, in both networks)
    // and its own metadata, vm-a and vm-c although they share their address.
    for vm in [&a, b, c] {
        assert!(vm.pings("10.82.0.2", 3), "{} cannot ping its DHCP server", vm.name);
        let md = vm.must("timeout 10 wget -q -O - http://169.254.169.254/openstack/latest/meta_data.json");
        let others: Vec<&Vm> = [&a, b, c].into_iter().filter(|o| o.id != vm.id).collect();
        assert!(
            md.contains(&vm.id) && others.iter().all(|o| !md.contains(&o.id)),
            "{} got someone else's metadata: {md}",
            vm.name
        );
        let addr = vm.must("ip -4 addr show dev eth0; hostname");
        assert!(addr.contains(&format!("inet {}/24", vm.ip)) && addr.contains(&vm.name), "{}: {addr}", vm.name);
    }
    // vm-a and vm-b do not reach each other, not even by ARP.
    assert!(!a.pings(&b.ip, 2), "vm-a (project 1) pings vm-b (project 2)");
    let (code, out) = a.sh(&format!("arping -c 2 -w 3 -I eth0 {}", b.ip));
    assert_ne!(code, Some(0), "vm-a got an ARP answer from vm-b's {}: {out}", b.ip);
    assert!(!a.ssh_banner(&b.ip), "vm-a reaches vm-b's ssh");
    // vm-b's 10.82.0.3 is vm-c, never vm-a: the ARP answer comes from vm-c's MAC.
    assert!(b.pings(&c.ip, 3), "vm-b cannot ping vm-c in its own network");
    let neigh = b.must(&format!("ip neigh show {}", c.ip));
    assert!(neigh.contains(&c.mac) && !neigh.contains(&a.mac), "vm-b's neighbour {}: {neigh}", c.ip);
    // From each DHCP namespace, the shared address is that network's guest.
    assert_ne!(a.qdhcp, b.qdhcp);
    for (vm, ns) in [(&a, &a.qdhcp), (c, &b.qdhcp)] {
        let (code, out) = ssh(ns, &vm.key, "root", &vm.ip, "hostname");
        assert_eq!((code, out.trim()), (Some(0), vm.name.as_str()), "ssh {} from {ns}", vm.ip);
    }
    assert!(ping_until_from(&a.qdhcp, &b.ip, Duration::from_secs(1)).is_none(), "net A's namespace reaches vm-b");

    gc.cli(&admin, &["server", "delete", "--wait", "vm-a"]).await;
    gc.cli(&u2, &["server", "delete", "--wait", "vm-b", "vm-c"]).await;
    eprintln!(
        "dataplane_guests_same_cidr_projects_are_isolated: total {:?} (boot of all three {t_booted:?})",
        t_start.elapsed()
    );
    gc.finish().await;
}

/// One TCP stream of `mb` MiB from `from` to `to:5001`, both guests: busybox `dd` from
/// /dev/zero piped into `nc` (what the test image has), timed by the sender's
/// /proc/uptime; the receiver counts the bytes. MB/s (10^6 bytes).
fn guest_to_guest(from: &Vm, to: &Vm, mb: u64) -> f64 {
    let bytes = mb << 20;
    let rx = {
        let to = to.clone();
        // The listener's stdin must never end: busybox nc half-closes on stdin EOF, and the
        // sender's nc quits as soon as its socket reads EOF. A FIFO held open read-write
        // blocks forever.
        std::thread::spawn(move || {
            to.sh("rm -f /tmp/nc.in; mkfifo /tmp/nc.in; exec 3<>/tmp/nc.in; nc -l -p 5001 <&3 | wc -c")
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let out = from.must(&format!(
        "read a _ </proc/uptime; dd if=/dev/zero bs=64k count={} 2>/dev/null | nc {} 5001; read b _ </proc/uptime; echo \"$a $b\"",
        mb * 16,
        to.ip
    ));
    let (code, got) = rx.join().unwrap();
    assert_eq!((code, got.trim()), (Some(0), bytes.to_string().as_str()), "receiver got every byte");
    let t: Vec<f64> = out.split_whitespace().rev().take(2).filter_map(|x| x.parse().ok()).collect();
    assert_eq!(t.len(), 2, "uptimes: {out}");
    bytes as f64 / (t[0] - t[1]) / 1e6
}

/// One TCP stream of `mb` MiB from guest `from` to a native `socat` sink at `ip` in `ns`.
fn guest_to_ns(from: &Vm, ns: &str, ip: &str, mb: u64) -> f64 {
    let mut sink = Command::new("ip")
        .args(["netns", "exec", ns, "socat", "-u", "TCP-LISTEN:5002,reuseaddr", "OPEN:/dev/null"])
        .spawn()
        .expect("socat");
    std::thread::sleep(Duration::from_millis(300));
    let out = from.must(&format!(
        "read a _ </proc/uptime; dd if=/dev/zero bs=64k count={} 2>/dev/null | nc {ip} 5002; read b _ </proc/uptime; echo \"$a $b\"",
        mb * 16
    ));
    let _ = sink.wait();
    let t: Vec<f64> = out.split_whitespace().rev().take(2).filter_map(|x| x.parse().ok()).collect();
    ((mb << 20) as f64) / (t[0] - t[1]) / 1e6
}

/// One TCP stream of 200 MB between two namespaces (socat, native on both ends).
fn ns_to_ns(from: &str, to: &str, ip: &str) -> f64 {
    let mut server = Command::new("ip")
        .args(["netns", "exec", to, "socat", "-u", "TCP-LISTEN:5001,reuseaddr", "OPEN:/dev/null"])
        .spawn()
        .expect("socat");
    std::thread::sleep(Duration::from_millis(200));
    let bytes = 200_000_000u64;
    let t = Instant::now();
    must(&[
        "ip",
        "netns",
        "exec",
        from,
        "socat",
        "-u",
        &format!("OPEN:/dev/zero,readbytes={bytes}"),
        &format!("TCP:{ip}:5001"),
    ]);
    let secs = t.elapsed().as_secs_f64();
    let _ = server.wait();
    bytes as f64 / secs / 1e6
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The same-host throughput benchmark (bench/guest-throughput.sh): TCP between two TCG
/// guests on one network, with security groups and with port security off, a guest into a
/// native sink, and two namespaces on a plain bridge without filtering as the physical
/// reference. Ignored in the test suite (it measures, and boots guests for a while).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/guest-throughput.sh"]
async fn dataplane_guests_throughput_bench() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mb: u64 = std::env::var("STRATUS_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
    let runs: usize = std::env::var("STRATUS_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let load_start = loadavg();
    let gc = GuestCloud::start("gtp", |_, _, _| {}).await;
    let admin = gc.admin();
    let net = gc.network(&admin, "tp-net", "10.83.0.0/24").await;
    gc.open_group(&admin, "tp-open").await;
    gc.cli(
        &admin,
        &["security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "5001", "tp-open"],
    )
    .await;
    let vms = gc.boot(&admin, "k1", &gc.key, &[("tp1", &net, "tp-open", ""), ("tp2", &net, "tp-open", "")]).await;
    let (a, b) = (&vms[0], &vms[1]);
    a.wait_ssh().await;
    b.wait_ssh().await;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" ");

    let filtered: Vec<f64> = (0..runs).map(|_| guest_to_guest(a, b, mb)).collect();
    let to_ns: Vec<f64> = (0..runs).map(|_| guest_to_ns(a, &a.qdhcp, "10.83.0.2", mb)).collect();
    for vm in [a, b] {
        gc.cli(&admin, &["port", "set", "--no-security-group", "--disable-port-security", &vm.port]).await;
    }
    let ruleset = || must(&["ip", "netns", "exec", &gc.host, "nft", "list", "table", "inet", "stratus_sg"]);
    let t = Instant::now();
    while ruleset().contains("egress_") {
        assert!(t.elapsed() < Duration::from_secs(10), "port security off, yet the ports are still filtered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unfiltered: Vec<f64> = (0..runs).map(|_| guest_to_guest(a, b, mb)).collect();
    gc.cli(&admin, &["server", "delete", "--wait", "tp1", "tp2"]).await;

    // The physical reference: two namespaces on a bare bridge, no filtering, no br_netfilter.
    let bare = gc.lab.netns("bare");
    must(&["ip", "-n", &bare, "link", "add", "br0", "type", "bridge"]);
    must(&["ip", "-n", &bare, "link", "set", "br0", "up"]);
    let mut refs = Vec::new();
    for (i, name) in ["r1", "r2"].iter().enumerate() {
        let ns = gc.lab.netns(name);
        let p = format!("p{i}");
        must(&["ip", "-n", &bare, "link", "add", &p, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        must(&["ip", "-n", &bare, "link", "set", &p, "master", "br0", "up"]);
        must(&["ip", "-n", &ns, "addr", "add", &format!("10.84.0.{}/24", i + 5), "dev", "eth0"]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        refs.push(ns);
    }
    let reference: Vec<f64> = (0..runs).map(|_| ns_to_ns(&refs[0], &refs[1], "10.84.0.6")).collect();
    println!("guest throughput, TCP, one stream, same host, MB/s (median of {runs}; all runs):");
    println!(
        "  guest -> guest, security groups:      {:>8.1}  ({}) [{mb} MiB, busybox dd | nc]",
        median(filtered.clone()),
        fmt(&filtered)
    );
    println!("  guest -> guest, port security off:    {:>8.1}  ({})", median(unfiltered.clone()), fmt(&unfiltered));
    println!("  guest -> DHCP namespace (socat sink): {:>8.1}  ({})", median(to_ns.clone()), fmt(&to_ns));
    println!(
        "  namespace -> namespace, bare bridge:  {:>8.1}  ({}) [200 MB, socat]",
        median(reference.clone()),
        fmt(&reference)
    );
    println!(
        "  load average: {load_start} at start, {} at end; {} CPUs; TCG guests, 1 vCPU each",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    assert!(filtered.iter().chain(&unfiltered).all(|x| *x > 0.0));
    gc.finish().await;
}
