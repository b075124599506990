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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::dev::{converge_addrs, ensure_veth, network_and_mask, port_cidrs};
use crate::exec::{check_mac, delete_netns, ensure_netns, list_netns, names, Ns};
use crate::model::{DesiredState, Network, Port};
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
        let v4_dhcp = state.subnets.iter().any(|s| s.network_id == net.id && s.enable_dhcp && s.ip_version == 4);
        if !v4_dhcp {
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
    let dev = names::dhcp_dev(&port.id);
    ensure_veth(host, &names::tap(&port.id), &ns, &dev, &port.mac_address, net.mtu).await?;
    converge_addrs(&ns, &dev, &port_cidrs(state, port)).await?;

    let dir = state_dir(cfg, &net.id);
    tokio::fs::create_dir_all(&dir).await?;
    set_mode(&dir, 0o755).await?;
    let hosts = hosts_file(state, net);
    let opts = opts_file(state, net, port)?;
    let args = dnsmasq_args(state, net, &dev, &dir)?;
    let changed_hosts = write_if_changed(&dir.join("host"), &hosts).await?;
    let changed_opts = write_if_changed(&dir.join("opts"), &opts).await?;
    let changed_args = write_if_changed(&dir.join("cmdline"), &args.join("\n")).await?;

    match running_pid(&dir).await {
        Some(pid) if !changed_args => {
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

/// Neutron's hosts file: one line per port with an address on a DHCP-enabled subnet.
pub fn hosts_file(state: &DesiredState, net: &Network) -> String {
    let mut out = String::new();
    for p in state.ports.iter().filter(|p| p.network_id == net.id && p.device_owner != "network:dhcp") {
        if check_mac(&p.mac_address).is_err() {
            continue;
        }
        for f in &p.fixed_ips {
            let dhcp = state.subnet(&f.subnet_id).is_some_and(|s| s.enable_dhcp && s.ip_version == 4);
            if dhcp && f.ip_address.parse::<std::net::Ipv4Addr>().is_ok() {
                let hostname = format!("host-{}", f.ip_address.replace('.', "-"));
                out.push_str(&format!(
                    "{},{hostname}.openstacklocal,{}\n",
                    p.mac_address.to_ascii_lowercase(),
                    f.ip_address
                ));
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
    Ok(out)
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
    a.push(format!("--dhcp-lease-max={n}"));
    Ok(a)
}

async fn write_if_changed(path: &Path, content: &str) -> Result<bool> {
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

async fn stop_dnsmasq(dir: &Path) {
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
