//! Test lab: namespaces made by the test (hosts, guests, an "outside" host), a real DHCP
//! client, ping. Nothing runs in the root namespace: every command is `ip -n <ours>` or
//! `ip netns exec <ours>`, and every namespace name starts with `stratus-<test>-<random>-`.
//! The lab deletes its namespaces (killing what runs inside: dnsmasq, dhclient) on drop,
//! even when the test panics, and removes leftovers of earlier runs of the same test first.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use stratus_network_agent::model::*;
use stratus_network_agent::AgentConfig;

const TOOLS: &[&str] =
    &["ip", "bridge", "nft", "dnsmasq", "dhclient", "ping", "arping", "sysctl", "conntrack", "socat"];

pub fn require_tools() {
    for t in TOOLS {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| std::path::Path::new(d).join(t).exists());
        assert!(found, "{t} is missing: run scripts/install-host-packages.sh (as root)");
    }
    let uid = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = uid.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    assert!(root, "these tests create network namespaces and must run as root");
}

fn sh(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn must(args: &[&str]) -> String {
    let (ok, out) = sh(args);
    assert!(ok, "{args:?} failed: {out}");
    out
}

fn netns_list() -> Vec<String> {
    sh(&["ip", "netns", "list"]).1.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

fn delete_ns_with_prefix(prefix: &str) {
    assert!(prefix.starts_with("stratus-") && prefix.len() > 10, "refusing broad cleanup prefix {prefix}");
    for ns in netns_list().into_iter().filter(|n| n.starts_with(prefix)) {
        for pid in sh(&["ip", "netns", "pids", &ns]).1.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = sh(&["ip", "netns", "del", &ns]);
    }
}

pub struct Lab {
    pub prefix: String,
    pub tmp: tempfile::TempDir,
}

impl Lab {
    pub fn new(test: &str) -> Lab {
        require_tools();
        delete_ns_with_prefix(&format!("stratus-{test}-"));
        let r: u16 = rand::thread_rng().gen();
        let tmp = tempfile::tempdir().unwrap();
        // dnsmasq drops privileges and re-reads its files on SIGHUP.
        must(&["chmod", "0755", tmp.path().to_str().unwrap()]);
        assert_root_namespace_untouched();
        Lab { prefix: format!("stratus-{test}-{r:04x}-"), tmp }
    }

    /// Creates namespace `<prefix><name>` with loopback up; returns its full name.
    pub fn netns(&self, name: &str) -> String {
        let full = format!("{}{name}", self.prefix);
        must(&["ip", "netns", "add", &full]);
        must(&["ip", "-n", &full, "link", "set", "lo", "up"]);
        must(&["ip", "netns", "exec", &full, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
        full
    }

    /// An agent configuration for a host namespace.
    pub fn agent_cfg(&self, host: &str, host_ns: &str) -> AgentConfig {
        let dir = self.tmp.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        must(&["chmod", "0755", dir.to_str().unwrap()]);
        AgentConfig {
            host: host.into(),
            host_netns: Some(host_ns.into()),
            netns_prefix: format!("{}{host}-", self.prefix),
            state_dir: dir,
            ..AgentConfig::default()
        }
    }

    /// A guest: namespace with `eth0` (MAC of the port) whose peer `tap<port>` sits in the host
    /// namespace, unplugged, as a hypervisor leaves it.
    pub fn guest(&self, name: &str, host_ns: &str, port: &Port) -> Guest {
        let ns = self.netns(name);
        let tap = stratus_network_agent::exec::names::tap(&port.id);
        must(&["ip", "-n", host_ns, "link", "add", "name", &tap, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        must(&["ip", "-n", &ns, "link", "set", "dev", "eth0", "address", &port.mac_address, "up"]);
        must(&["ip", "-n", host_ns, "link", "set", "dev", &tap, "up"]);
        let dir = self.tmp.path().join(format!("guest-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        Guest { ns, dir }
    }
}

/// Panics if the root namespace holds anything the agent makes (a test that leaked out of
/// its namespaces would show up here).
pub fn assert_root_namespace_untouched() {
    let links = sh(&["ip", "-br", "link", "show"]).1;
    for l in links.lines().filter_map(|l| l.split_whitespace().next()) {
        let ours = ["brq", "vxlan-", "tap", "qr-", "qg-", "ns-"].iter().any(|p| l.starts_with(p));
        assert!(!ours, "device {l} appeared in the ROOT namespace");
    }
    let tables = sh(&["nft", "list", "tables"]).1;
    assert!(!tables.contains("stratus"), "nft table in the ROOT namespace: {tables}");
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_root_namespace_untouched();
        }
        delete_ns_with_prefix(&self.prefix);
        let left: Vec<_> = netns_list().into_iter().filter(|n| n.starts_with(&self.prefix)).collect();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("namespaces left behind: {left:?}");
        }
    }
}

pub struct Guest {
    pub ns: String,
    pub dir: PathBuf,
}

/// What the DHCP client was given (dhclient's `new_*` variables).
#[derive(Debug)]
pub struct Lease {
    pub vars: BTreeMap<String, String>,
    pub elapsed: Duration,
}

impl Lease {
    pub fn get(&self, k: &str) -> &str {
        self.vars.get(k).map(String::as_str).unwrap_or("")
    }
}

impl Guest {
    /// Runs ISC dhclient inside the guest with a script that only records what it got (no
    /// system file is touched), waits for BOUND, stops the client, and applies address, MTU and
    /// default route inside the guest.
    pub fn dhcp(&self) -> Lease {
        let d = self.dir.display().to_string();
        let script = self.dir.join("script");
        std::fs::write(&script, format!("#!/bin/sh\n/usr/bin/env > '{d}/'\"$reason\".tmp && /bin/mv '{d}/'\"$reason\".tmp '{d}/'\"$reason\".env\nexit 0\n")).unwrap();
        must(&["chmod", "0755", script.to_str().unwrap()]);
        let conf = self.dir.join("dhclient.conf");
        std::fs::write(
            &conf,
            "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
             request subnet-mask, broadcast-address, routers, domain-name-servers, host-name, domain-name, interface-mtu, rfc3442-classless-static-routes;\n\
             timeout 20;\ninitial-interval 1;\n",
        )
        .unwrap();
        let bound = self.dir.join("BOUND.env");
        let _ = std::fs::remove_file(&bound);
        let t0 = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "dhclient", "-d", "-1", "-sf"])
            .arg(&script)
            .arg("-cf")
            .arg(&conf)
            .arg("-lf")
            .arg(self.dir.join("leases"))
            .arg("-pf")
            .arg(self.dir.join("pid"))
            .arg("eth0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("dhclient.log")).unwrap())
            .spawn()
            .expect("dhclient (scripts/install-host-packages.sh)");
        while !bound.exists() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = t0.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&bound).unwrap_or_else(|_| {
            panic!(
                "no DHCP lease in {} in 20 s; dhclient log: {}",
                self.ns,
                std::fs::read_to_string(self.dir.join("dhclient.log")).unwrap_or_default()
            )
        });
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("new_"))
            .map(|(k, v)| (k.trim_start_matches("new_").to_owned(), v.to_owned()))
            .collect();
        let lease = Lease { vars, elapsed };
        let len = lease.get("subnet_mask").split('.').map(|o| o.parse::<u8>().unwrap_or(0).count_ones()).sum::<u32>();
        must(&["ip", "-n", &self.ns, "addr", "add", &format!("{}/{len}", lease.get("ip_address")), "dev", "eth0"]);
        if !lease.get("interface_mtu").is_empty() {
            must(&["ip", "-n", &self.ns, "link", "set", "dev", "eth0", "mtu", lease.get("interface_mtu")]);
        }
        if let Some(gw) = lease.get("routers").split_whitespace().next() {
            must(&["ip", "-n", &self.ns, "route", "add", "default", "via", gw]);
        }
        lease
    }

    /// One echo request with a short timeout.
    pub fn ping(&self, ip: &str) -> bool {
        sh(&["ip", "netns", "exec", &self.ns, "ping", "-n", "-q", "-c", "1", "-W", "1", ip]).0
    }

    /// Pings until it works or `limit` passes; returns how long it took.
    pub fn ping_until(&self, ip: &str, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if sh(&["ip", "netns", "exec", &self.ns, "ping", "-n", "-q", "-c", "1", "-W", "0.2", ip]).0 {
                return Some(t0.elapsed());
            }
        }
        None
    }
}

/// Pings from any namespace.
pub fn ping_from(ns: &str, ip: &str) -> bool {
    sh(&["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "1", ip]).0
}

/// Whether a link exists in a namespace.
pub fn link_exists(ns: &str, dev: &str) -> bool {
    sh(&["ip", "-n", ns, "link", "show", "dev", dev]).0
}

/// The nft ruleset of a namespace.
pub fn nft_ruleset(ns: &str) -> String {
    must(&["ip", "netns", "exec", ns, "nft", "list", "ruleset"])
}

/// A random UUID-shaped id (its first 11 characters name devices, so they must differ).
pub fn uuid() -> String {
    let mut r = rand::thread_rng();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        r.gen::<u32>(),
        r.gen::<u16>(),
        r.gen::<u16>() & 0xfff,
        r.gen::<u16>() & 0xfff,
        r.gen::<u64>() & 0xffff_ffff_ffff
    )
}

/// Builder of desired states for the tests.
#[derive(Default)]
pub struct World {
    pub s: DesiredState,
    macs: u32,
}

impl World {
    pub fn host(&mut self, host: &str, tunnel_ip: Option<&str>) {
        self.s.hosts.push(HostInfo { host: host.into(), tunnel_ip: tunnel_ip.map(|t| t.parse().unwrap()) });
    }

    pub fn network(
        &mut self,
        project: &str,
        ty: NetworkType,
        seg: Option<u32>,
        physnet: Option<&str>,
        mtu: u32,
    ) -> String {
        let id = uuid();
        self.s.networks.push(Network {
            id: id.clone(),
            project_id: project.into(),
            network_type: ty,
            segmentation_id: seg,
            physical_network: physnet.map(Into::into),
            mtu,
            router_external: physnet.is_some(),
            admin_state_up: true,
        });
        id
    }

    pub fn subnet(&mut self, net: &str, cidr: &str, gw: Option<&str>, dhcp: bool) -> String {
        let id = uuid();
        self.s.subnets.push(Subnet {
            id: id.clone(),
            network_id: net.into(),
            ip_version: 4,
            cidr: cidr.into(),
            gateway_ip: gw.map(Into::into),
            enable_dhcp: dhcp,
            dns_nameservers: vec!["192.0.2.53".into()],
            host_routes: vec![],
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
        });
        id
    }

    pub fn port(&mut self, net: &str, subnet: &str, ip: &str, owner: &str, host: &str, sgs: &[&str]) -> Port {
        self.macs += 1;
        let p = Port {
            id: uuid(),
            network_id: net.into(),
            mac_address: format!(
                "fa:16:3e:{:02x}:{:02x}:{:02x}",
                rand::thread_rng().gen::<u8>(),
                self.macs >> 8,
                self.macs & 0xff
            ),
            fixed_ips: vec![FixedIp { subnet_id: subnet.into(), ip_address: ip.into() }],
            device_owner: owner.into(),
            device_id: String::new(),
            binding_host_id: host.into(),
            security_groups: sgs.iter().map(|s| s.to_string()).collect(),
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            admin_state_up: true,
        };
        self.s.ports.push(p.clone());
        p
    }

    pub fn sg(&mut self, id: &str, rules: Vec<SecurityGroupRule>) {
        self.s.security_groups.retain(|g| g.id != id);
        self.s.security_groups.push(SecurityGroup { id: id.into(), project_id: String::new(), stateful: true, rules });
    }
}

pub fn rule(direction: Direction, protocol: Option<&str>, remote_group: Option<&str>) -> SecurityGroupRule {
    SecurityGroupRule {
        id: uuid(),
        direction,
        ethertype: "IPv4".into(),
        protocol: protocol.map(Into::into),
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id: remote_group.map(Into::into),
    }
}
