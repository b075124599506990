//! Real QEMU guests on a Stratus network (issue 9, test 1), everything made through the
//! real `openstack` CLI: the `qemu` virt driver runs the guests in a host namespace the
//! test made, QEMU creates each port's tap there, the in-process network agent plugs it,
//! the guest takes its address by DHCP, fetches its key from the metadata service and runs
//! dropbear. The test then logs into guest 1 from the DHCP namespace with the keypair's
//! private key, pings guest 2 from inside guest 1, and watches a security group rule
//! removal cut that ping.
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
        c.compute.virt_driver = "qemu".into();
        c.compute.host_netns = Some(host_for_compute);
        c.compute.agent.sync_interval_secs = 2;
        c.compute.qemu.power_off_timeout_secs = 30;
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
