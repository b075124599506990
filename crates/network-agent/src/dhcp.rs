//! DHCP: per network a `qdhcp-<net>` namespace with the DHCP port and a dnsmasq, as
//! Neutron's DHCP agent does it.
//!
//! dnsmasq gets static ranges only (`--dhcp-range=set:subnet-<id>,<net>,static,<mask>`), a
//! hosts file (`<mac>,host-<ip>.openstacklocal,<ip>`: a MAC gets exactly its port's address,
//! unknown MACs get nothing) and an options file tagged per subnet: router, DNS servers, MTU,
//! and classless static routes (option 121 and Microsoft's 249) carrying the subnet's host
//! routes, `169.254.169.254/32` via the DHCP port (isolated metadata) and the default route.
//! A change of hosts/options is a rewrite plus SIGHUP; a change of the command line (ranges,
//! interface) restarts it. Files live in `<state_dir>/dhcp/<net>/` and must be readable by
//! the unprivileged user dnsmasq drops to (it re-reads them on SIGHUP).
//!
//! DNS is off (`--port=0`): guests get the subnet's `dns_nameservers` only.
//!
//! IPv6, by the subnet's modes, as Neutron's dnsmasq driver maps them: `dhcpv6-stateful`
//! (and a subnet with neither mode set) gets a static DHCPv6 range and `[addr]` host lines,
//! so a MAC gets exactly its port's address; `dhcpv6-stateless` gets a static range with no
//! addresses (options only: DNS servers, domain); `slaac` gets nothing. The DHCP port
//! carries its IPv6 addresses (no DAD, no autoconfiguration from RAs). Router
//! advertisements normally come from the router ([`crate::l3`]). Stratus addition: when a
//! network has IPv6 subnets with `ipv6_ra_mode` set and none of its IPv6 subnets is on a
//! router, this dnsmasq advertises them itself (`--enable-ra`; `ra-only` for SLAAC,
//! `ra-stateless` for stateless, the static range for stateful) with router lifetime 0, so
//! guests get addresses but no default route through the DHCP namespace. Neutron leaves
//! such isolated subnets without RAs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::dev::{converge_addrs, ensure_veth, network_and_mask, port_cidrs};
use crate::exec::{check_mac, delete_netns, ensure_netns, list_netns, names, Ns};
use crate::model::{DesiredState, Network, Port, Subnet};
use crate::AgentConfig;

/// The namespace name of a network's DHCP server.
pub fn netns_name(cfg: &AgentConfig, net_id: &str) -> String {
    format!("{}qdhcp-{net_id}", cfg.netns_prefix)
}

/// The DHCP port of a network on this host, if DHCP runs here.
fn local_dhcp_port<'a>(state: &'a DesiredState, cfg: &AgentConfig, net: &Network) -> Option<&'a Port> {
    state
        .ports
        .iter()
        .find(|p| p.network_id == net.id && p.device_owner == "network:dhcp" && p.binding_host_id == cfg.host)
}

/// Starts, reloads or stops the DHCP servers of this host.
pub async fn converge(host: &Ns, cfg: &AgentConfig, state: &DesiredState) -> Result<()> {
    let mut wanted = BTreeSet::new();
    let mut errors = Vec::new();
    for net in &state.networks {
        let Some(port) = local_dhcp_port(state, cfg, net) else { continue };
        let any_dhcp = state.subnets.iter().any(|s| s.network_id == net.id && s.enable_dhcp);
        if !any_dhcp {
            continue;
        }
        let name = netns_name(cfg, &net.id);
        if let Err(e) = converge_one(host, cfg, state, net, port, &name).await {
            errors.push(format!("DHCP of network {}: {e:#}", net.id));
        }
        wanted.insert(name);
    }
    let prefix = netns_name(cfg, "");
    for ns in list_netns().await? {
        if ns.starts_with(&prefix) && !wanted.contains(&ns) {
            let net_id = &ns[prefix.len()..];
            tracing::info!(netns = %ns, "removing DHCP of deleted network");
            stop_dnsmasq(&state_dir(cfg, net_id)).await;
            delete_netns(&ns).await?;
            let _ = tokio::fs::remove_dir_all(state_dir(cfg, net_id)).await;
        }
    }
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

fn state_dir(cfg: &AgentConfig, net_id: &str) -> PathBuf {
    cfg.state_dir.join("dhcp").join(net_id)
}

async fn converge_one(
    host: &Ns,
    cfg: &AgentConfig,
    state: &DesiredState,
    net: &Network,
    port: &Port,
    name: &str,
) -> Result<()> {
    let ns = ensure_netns(name).await?;
    // The DHCP port's IPv6 addresses are static: RAs (ours from the router, or a guest's)
    // must not add or age addresses here.
    let v6 = state.subnets.iter().any(|s| s.network_id == net.id && s.ip_version == 6);
    if v6 {
        for conf in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{conf}.accept_ra"), "0").await?;
        }
    }
    let dev = names::dhcp_dev(&port.id);
    ensure_veth(host, &names::tap(&port.id), &ns, &dev, &port.mac_address, net.mtu).await?;
    if v6 {
        ns.sysctl(&format!("net.ipv6.conf.{dev}.accept_ra"), "0").await?;
    }
    converge_addrs(&ns, &dev, &port_cidrs(state, port)).await?;

    let dir = state_dir(cfg, &net.id);
    tokio::fs::create_dir_all(&dir).await?;
    set_mode(&dir, 0o755).await?;
    let hosts = hosts_file(state, net);
    let opts = opts_file(state, net, port)?;
    let args = dnsmasq_args(state, net, &dev, &dir)?;
    if !args.iter().any(|a| a.starts_with("--dhcp-range=")) {
        // Only SLAAC subnets behind a router: nothing for dnsmasq to serve.
        stop_dnsmasq(&dir).await;
        let _ = tokio::fs::remove_file(dir.join("cmdline")).await;
        return Ok(());
    }
    let changed_hosts = write_if_changed(&dir.join("host"), &hosts).await?;
    let changed_opts = write_if_changed(&dir.join("opts"), &opts).await?;
    let changed_args = write_if_changed(&dir.join("cmdline"), &args.join("\n")).await?;

    match running_pid(&dir).await {
        Some(pid) if !changed_args => {
            if changed_hosts {
                let leases = tokio::fs::read_to_string(dir.join("leases")).await.unwrap_or_default();
                release_stale(&ns, &dev, &stale_leases(&leases, &hosts)).await;
            }
            if changed_hosts || changed_opts {
                tracing::debug!(network = %net.id, "SIGHUP dnsmasq");
                kill(pid, Signal::SIGHUP)?;
            }
        }
        other => {
            if other.is_some() {
                stop_dnsmasq(&dir).await;
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            ns.exec("dnsmasq", &argv).await?;
        }
    }
    Ok(())
}

/// A lease dnsmasq holds that the hosts file no longer backs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleLease {
    /// An IPv4 lease: address, MAC, client id (`*` when none).
    V4 { ip: String, mac: String, client_id: String },
    /// A DHCPv6 lease: address, IAID, client DUID, and this server's DUID.
    V6 { ip: String, iaid: String, client_id: String, server_id: String },
}

/// Leases (dnsmasq's lease file) of addresses the hosts file no longer gives to that
/// client: a deleted port's address goes to the next port at once (small pools hand out
/// their lowest free address), and dnsmasq refuses a configured address that is still
/// leased to another MAC, so the new guest would get no lease for a day. Neutron's
/// dnsmasq driver releases such leases the same way (`dhcp_release`).
pub fn stale_leases(leases: &str, hosts: &str) -> Vec<StaleLease> {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for line in hosts.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(mac), Some(ip)) = (fields.first(), fields.last()) else { continue };
        match ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
            Some(ip6) => v6.insert(ip6.to_string()),
            None => v4.insert((mac.to_ascii_lowercase(), ip.to_string())),
        };
    }
    let mut server_id = None;
    let mut out = Vec::new();
    for line in leases.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"duid") {
            server_id = f.get(1).map(|d| d.to_string());
            continue;
        }
        let [_, second, ip, _, client_id, ..] = f[..] else { continue };
        if ip.contains(':') {
            if !v6.contains(ip) {
                if let Some(server_id) = &server_id {
                    out.push(StaleLease::V6 {
                        ip: ip.into(),
                        iaid: second.into(),
                        client_id: client_id.into(),
                        server_id: server_id.clone(),
                    });
                }
            }
        } else if !v4.contains(&(second.to_ascii_lowercase(), ip.to_string())) {
            out.push(StaleLease::V4 { ip: ip.into(), mac: second.into(), client_id: client_id.into() });
        }
    }
    out
}

/// Releases `stale` leases from inside the DHCP namespace (`dhcp_release`,
/// `dhcp_release6` of dnsmasq-utils); a failure is logged, not fatal: the lease then
/// only expires.
async fn release_stale(ns: &Ns, dev: &str, stale: &[StaleLease]) {
    for lease in stale {
        let r = match lease {
            StaleLease::V4 { ip, mac, client_id } => {
                let mut args = vec![dev, ip.as_str(), mac.as_str()];
                if client_id != "*" {
                    args.push(client_id);
                }
                ns.exec("dhcp_release", &args).await
            }
            StaleLease::V6 { ip, iaid, client_id, server_id } => {
                let args =
                    ["--iface", dev, "--ip", ip, "--iaid", iaid, "--client-id", client_id, "--server-id", server_id];
                ns.exec("dhcp_release6", &args).await
            }
        };
        match r {
            Ok(_) => tracing::info!(?lease, "released a stale DHCP lease"),
            Err(e) => tracing::warn!(?lease, "could not release a stale DHCP lease (install dnsmasq-utils): {e:#}"),
        }
    }
}

/// Neutron's hosts file: one line per port with an address on a DHCP-enabled subnet.
pub fn hosts_file(state: &DesiredState, net: &Network) -> String {
    let mut out = String::new();
    for p in state.ports.iter().filter(|p| p.network_id == net.id && p.device_owner != "network:dhcp") {
        if check_mac(&p.mac_address).is_err() {
            continue;
        }
        for f in &p.fixed_ips {
            let Some(s) = state.subnet(&f.subnet_id).filter(|s| s.enable_dhcp) else { continue };
            let mac = p.mac_address.to_ascii_lowercase();
            if s.ip_version == 4 && f.ip_address.parse::<std::net::Ipv4Addr>().is_ok() {
                let hostname = format!("host-{}", f.ip_address.replace('.', "-"));
                out.push_str(&format!("{mac},{hostname}.openstacklocal,{}\n", f.ip_address));
            } else if v6_mode(s) == Some(V6Mode::Stateful) {
                if let Ok(ip) = f.ip_address.parse::<std::net::Ipv6Addr>() {
                    let hostname = format!("host-{}", ip.to_string().replace(':', "-"));
                    out.push_str(&format!("{mac},{hostname}.openstacklocal,[{ip}]\n"));
                }
            }
        }
    }
    out
}

/// Neutron's options file, tagged per subnet.
pub fn opts_file(state: &DesiredState, net: &Network, dhcp_port: &Port) -> Result<String> {
    let mut out = String::new();
    for s in state.subnets.iter().filter(|s| s.network_id == net.id && s.enable_dhcp && s.ip_version == 4) {
        let tag = format!("tag:subnet-{}", s.id);
        let dhcp_ip = dhcp_port.fixed_ips.iter().find(|f| f.subnet_id == s.id).map(|f| f.ip_address.clone());
        let mut routes: Vec<String> = Vec::new();
        if let Some(ip) = &dhcp_ip {
            routes.push(format!("169.254.169.254/32,{ip}"));
        }
        for r in &s.host_routes {
            routes.push(format!("{},{}", r.destination, r.nexthop));
        }
        match &s.gateway_ip {
            Some(gw) => {
                routes.push(format!("0.0.0.0/0,{gw}"));
                out.push_str(&format!("{tag},option:router,{gw}\n"));
            }
            // An empty router option tells the client there is no gateway.
            None => out.push_str(&format!("{tag},option:router\n")),
        }
        out.push_str(&format!("{tag},option:classless-static-route,{}\n", routes.join(",")));
        out.push_str(&format!("{tag},249,{}\n", routes.join(",")));
        if !s.dns_nameservers.is_empty() {
            out.push_str(&format!("{tag},option:dns-server,{}\n", s.dns_nameservers.join(",")));
        }
        out.push_str(&format!("{tag},option:mtu,{}\n", net.mtu));
    }
    for s in state.subnets.iter().filter(|s| s.network_id == net.id && s.enable_dhcp && s.ip_version == 6) {
        if matches!(v6_mode(s), Some(V6Mode::Stateful | V6Mode::Stateless)) {
            let tag = format!("tag:subnet-{}", s.id);
            let dns = v6_dns_servers(s);
            if !dns.is_empty() {
                out.push_str(&format!("{tag},option6:dns-server,{}\n", dns.join(",")));
            }
            out.push_str(&format!("{tag},option6:domain-search,openstacklocal\n"));
        }
    }
    Ok(out)
}

/// What dnsmasq does for an IPv6 subnet (Neutron's mapping of the subnet modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V6Mode {
    /// Addresses by DHCPv6 (`dhcpv6-stateful`, or no mode at all: Neutron's default).
    Stateful,
    /// Options by DHCPv6, addresses by SLAAC.
    Stateless,
    /// Addresses by SLAAC, no DHCPv6.
    Slaac,
}

/// A subnet's IPv6 DNS servers in dnsmasq's bracketed form (DHCPv6 option and RDNSS).
pub fn v6_dns_servers(s: &Subnet) -> Vec<String> {
    s.dns_nameservers.iter().filter_map(|d| d.parse::<std::net::Ipv6Addr>().ok()).map(|d| format!("[{d}]")).collect()
}

/// The mode of an IPv6 subnet; `None` for IPv4 or DHCP off.
pub fn v6_mode(s: &Subnet) -> Option<V6Mode> {
    if s.ip_version != 6 || !s.enable_dhcp {
        return None;
    }
    let mode = s.ipv6_address_mode.as_deref().or(s.ipv6_ra_mode.as_deref());
    Some(match mode {
        Some("slaac") => V6Mode::Slaac,
        Some("dhcpv6-stateless") => V6Mode::Stateless,
        _ => V6Mode::Stateful,
    })
}

/// Whether a router interface port has an address on the subnet.
pub fn on_router(state: &DesiredState, subnet_id: &str) -> bool {
    state.ports.iter().any(|p| {
        p.device_owner.starts_with("network:router_interface") && p.fixed_ips.iter().any(|f| f.subnet_id == subnet_id)
    })
}

/// Whether this network's DHCP server sends the router advertisements (see the module doc).
fn dhcp_sends_ra(state: &DesiredState, net: &Network) -> bool {
    let v6: Vec<&Subnet> =
        state.subnets.iter().filter(|s| s.network_id == net.id && s.ip_version == 6 && s.enable_dhcp).collect();
    v6.iter().any(|s| s.ipv6_ra_mode.is_some()) && !v6.iter().any(|s| on_router(state, &s.id))
}

fn dnsmasq_args(state: &DesiredState, net: &Network, dev: &str, dir: &Path) -> Result<Vec<String>> {
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut a = vec![
        "--no-hosts".to_owned(),
        "--no-resolv".into(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        format!("--pid-file={}", d("pid")),
        format!("--dhcp-hostsfile={}", d("host")),
        format!("--dhcp-optsfile={}", d("opts")),
        format!("--dhcp-leasefile={}", d("leases")),
        format!("--log-facility={}", d("log")),
        "--log-dhcp".into(),
        "--bind-interfaces".into(),
        format!("--interface={dev}"),
        "--except-interface=lo".into(),
        "--domain=openstacklocal".into(),
        "--dhcp-authoritative".into(),
    ];
    let mut n = 0;
    for s in state.subnets.iter().filter(|s| s.network_id == net.id && s.enable_dhcp && s.ip_version == 4) {
        let (addr, mask) = network_and_mask(&s.cidr)?;
        a.push(format!("--dhcp-range=set:subnet-{},{addr},static,{mask},86400s", s.id));
        n += 1 << (32 - mask.to_bits().count_ones()).min(16);
    }
    let ra = dhcp_sends_ra(state, net);
    for s in state.subnets.iter().filter(|s| s.network_id == net.id) {
        let Some(mode) = v6_mode(s) else { continue };
        let (prefix, len) = v6_prefix(&s.cidr)?;
        let kind = match (mode, ra && s.ipv6_ra_mode.is_some()) {
            (V6Mode::Stateful, _) | (V6Mode::Stateless, false) => "static",
            (V6Mode::Stateless, true) => "ra-stateless",
            (V6Mode::Slaac, true) => "ra-only",
            (V6Mode::Slaac, false) => continue,
        };
        a.push(format!("--dhcp-range=set:subnet-{},{prefix},{kind},{len},86400s", s.id));
        n += 1 << 16;
    }
    if ra {
        // Router lifetime 0: the DHCP namespace is no router.
        a.push("--enable-ra".into());
        a.push(format!("--ra-param={dev},{RA_INTERVAL_SECS},0"));
    }
    a.push(format!("--dhcp-lease-max={n}"));
    Ok(a)
}

/// Seconds between unsolicited router advertisements (Neutron's radvd uses 30–100).
pub const RA_INTERVAL_SECS: u32 = 30;

/// `fd00:1::/64` → (network address, prefix length).
pub fn v6_prefix(cidr: &str) -> Result<(std::net::Ipv6Addr, u8)> {
    let (ip, len) = cidr.split_once('/').context("cidr without /")?;
    let ip: std::net::Ipv6Addr = ip.parse()?;
    let len: u8 = len.parse()?;
    anyhow::ensure!(len <= 128, "bad prefix length in {cidr}");
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    Ok(((u128::from(ip) & mask).into(), len))
}

pub(crate) async fn write_if_changed(path: &Path, content: &str) -> Result<bool> {
    if tokio::fs::read_to_string(path).await.ok().as_deref() == Some(content) {
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, content).await?;
    set_mode(&tmp, 0o644).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(true)
}

async fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await?;
    Ok(())
}

/// The pid of the dnsmasq serving `dir`, if it runs (checked against its command line so a
/// recycled pid is not mistaken for it).
pub async fn running_pid(dir: &Path) -> Option<Pid> {
    let pid: i32 = tokio::fs::read_to_string(dir.join("pid")).await.ok()?.trim().parse().ok()?;
    let cmdline = tokio::fs::read(format!("/proc/{pid}/cmdline")).await.ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let marker = format!("--pid-file={}", dir.join("pid").to_string_lossy());
    (cmdline.contains("dnsmasq") && cmdline.contains(&marker)).then(|| Pid::from_raw(pid))
}

pub(crate) async fn stop_dnsmasq(dir: &Path) {
    if let Some(pid) = running_pid(dir).await {
        let _ = kill(pid, Signal::SIGTERM);
        for _ in 0..50 {
            if running_pid(dir).await.is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FixedIp, NetworkType, Subnet};

    fn subnet(id: &str, cidr: &str, v: u8, mode: Option<&str>) -> Subnet {
        Subnet {
            id: id.into(),
            network_id: "n1".into(),
            ip_version: v,
            cidr: cidr.into(),
            gateway_ip: None,
            enable_dhcp: true,
            dns_nameservers: if v == 6 { vec!["fd00:53::1".into()] } else { vec![] },
            host_routes: vec![],
            ipv6_ra_mode: mode.map(Into::into),
            ipv6_address_mode: mode.map(Into::into),
        }
    }

    fn port(id: &str, mac: &str, owner: &str, ips: &[(&str, &str)]) -> Port {
        Port {
            id: id.into(),
            network_id: "n1".into(),
            mac_address: mac.into(),
            fixed_ips: ips.iter().map(|(s, i)| FixedIp { subnet_id: (*s).into(), ip_address: (*i).into() }).collect(),
            device_owner: owner.into(),
            device_id: String::new(),
            binding_host_id: "h".into(),
            security_groups: vec![],
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            admin_state_up: true,
        }
    }

    fn state(with_router: bool) -> DesiredState {
        let mut s = DesiredState {
            networks: vec![Network {
                id: "n1".into(),
                project_id: String::new(),
                network_type: NetworkType::Local,
                segmentation_id: None,
                physical_network: None,
                mtu: 1500,
                router_external: false,
                admin_state_up: true,
            }],
            subnets: vec![
                subnet("s4", "10.0.0.0/24", 4, None),
                subnet("sl", "fd00:1::/64", 6, Some("slaac")),
                subnet("sf", "fd00:2::/64", 6, Some("dhcpv6-stateful")),
                subnet("st", "fd00:3::/64", 6, Some("dhcpv6-stateless")),
            ],
            ..Default::default()
        };
        s.ports.push(port(
            "vm",
            "FA:16:3E:00:00:05",
            "compute:nova",
            &[
                ("s4", "10.0.0.5"),
                ("sl", "fd00:1::f816:3eff:fe00:5"),
                ("sf", "fd00:2::5"),
                ("st", "fd00:3::f816:3eff:fe00:5"),
            ],
        ));
        if with_router {
            s.ports.push(port("rp", "fa:16:3e:00:00:01", "network:router_interface", &[("sl", "fd00:1::1")]));
        }
        s
    }

    #[test]
    fn hosts_give_stateful_ipv6_addresses_only() {
        let s = state(false);
        let hosts = hosts_file(&s, &s.networks[0]);
        assert_eq!(
            hosts,
            "fa:16:3e:00:00:05,host-10-0-0-5.openstacklocal,10.0.0.5\n\
             fa:16:3e:00:00:05,host-fd00-2--5.openstacklocal,[fd00:2::5]\n"
        );
    }

    #[test]
    fn ipv6_options_are_tagged_per_subnet() {
        let s = state(false);
        let opts = opts_file(&s, &s.networks[0], &port("d", "fa:16:3e:00:00:02", "network:dhcp", &[])).unwrap();
        assert!(opts.contains("tag:subnet-sf,option6:dns-server,[fd00:53::1]\n"), "{opts}");
        assert!(opts.contains("tag:subnet-st,option6:domain-search,openstacklocal\n"), "{opts}");
        assert!(!opts.contains("tag:subnet-sl"), "SLAAC gets no DHCPv6 options: {opts}");
    }

    #[test]
    fn ranges_follow_neutrons_mapping_and_isolated_subnets_get_ras() {
        let dir = Path::new("/tmp/x");
        let s = state(false);
        let a = dnsmasq_args(&s, &s.networks[0], "ns-x", dir).unwrap();
        assert!(a.contains(&"--dhcp-range=set:subnet-s4,10.0.0.0,static,255.255.255.0,86400s".to_owned()), "{a:?}");
        assert!(a.contains(&"--dhcp-range=set:subnet-sl,fd00:1::,ra-only,64,86400s".to_owned()), "{a:?}");
        assert!(a.contains(&"--dhcp-range=set:subnet-sf,fd00:2::,static,64,86400s".to_owned()), "{a:?}");
        assert!(a.contains(&"--dhcp-range=set:subnet-st,fd00:3::,ra-stateless,64,86400s".to_owned()), "{a:?}");
        assert!(a.contains(&"--enable-ra".to_owned()));
        assert!(a.contains(&"--ra-param=ns-x,30,0".to_owned()), "no default route via DHCP: {a:?}");

        // Behind a router: Neutron's ranges, RAs come from the router.
        let s = state(true);
        let a = dnsmasq_args(&s, &s.networks[0], "ns-x", dir).unwrap();
        assert!(!a.iter().any(|x| x.contains("subnet-sl")), "{a:?}");
        assert!(a.contains(&"--dhcp-range=set:subnet-st,fd00:3::,static,64,86400s".to_owned()), "{a:?}");
        assert!(!a.iter().any(|x| x.starts_with("--enable-ra") || x.starts_with("--ra-param")), "{a:?}");
    }

    #[test]
    fn ipv4_only_networks_keep_their_command_line() {
        let mut s = state(false);
        s.subnets.retain(|x| x.ip_version == 4);
        let a = dnsmasq_args(&s, &s.networks[0], "ns-x", Path::new("/d")).unwrap();
        let ranges: Vec<&String> = a.iter().filter(|x| x.starts_with("--dhcp-range")).collect();
        assert_eq!(ranges.len(), 1);
        assert_eq!(a.last().unwrap(), "--dhcp-lease-max=256");
        assert!(!a.iter().any(|x| x.starts_with("--enable-ra") || x.starts_with("--ra-param")));
    }

    #[test]
    fn v6_prefix_masks_the_host_part() {
        assert_eq!(v6_prefix("fd00:1::5/64").unwrap(), ("fd00:1::".parse().unwrap(), 64));
        assert!(v6_prefix("fd00::/129").is_err());
    }

    #[test]
    fn leases_the_hosts_file_no_longer_backs_are_stale() {
        let hosts = "fa:16:3e:00:00:02,host-10-0-0-3.openstacklocal,10.0.0.3\n\
                     fa:16:3e:00:00:06,host-fd00--6.openstacklocal,[fd00::6]\n";
        let leases = "1700000000 fa:16:3e:00:00:01 10.0.0.3 host-10-0-0-3 *\n\
                      1700000000 FA:16:3E:00:00:02 10.0.0.3 host-10-0-0-3 01:fa:16:3e:00:00:02\n\
                      1700000000 fa:16:3e:00:00:09 10.0.0.9 host-10-0-0-9 01:fa:16:3e:00:00:09\n\
                      duid 00:01:00:01:aa:bb\n\
                      1700000000 1234 fd00::6 host-fd00--6 00:03:00:01:fa:16:3e:00:00:06\n\
                      1700000000 4321 fd00::7 host-fd00--7 00:03:00:01:fa:16:3e:00:00:07\n";
        let stale = stale_leases(leases, hosts);
        assert_eq!(
            stale,
            vec![
                StaleLease::V4 { ip: "10.0.0.3".into(), mac: "fa:16:3e:00:00:01".into(), client_id: "*".into() },
                StaleLease::V4 {
                    ip: "10.0.0.9".into(),
                    mac: "fa:16:3e:00:00:09".into(),
                    client_id: "01:fa:16:3e:00:00:09".into()
                },
                StaleLease::V6 {
                    ip: "fd00::7".into(),
                    iaid: "4321".into(),
                    client_id: "00:03:00:01:fa:16:3e:00:00:07".into(),
                    server_id: "00:01:00:01:aa:bb".into()
                },
            ],
            "the old MAC's lease of a reused address, a deleted port's, and a gone IPv6 address"
        );
        assert!(stale_leases("", hosts).is_empty());
    }
}
