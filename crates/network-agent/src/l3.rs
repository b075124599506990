//! L3: per router a `qrouter-<id>` namespace, as Neutron's L3 agent builds it.
//!
//! - `qr-<port>` per interface port (veth whose other end `tap<port>` is plugged into the
//!   tenant bridge), carrying the subnet gateway address; `qg-<port>` on the external
//!   bridge with the gateway address, the floating IPs as /32s and the default route via the
//!   external subnet's gateway. Forwarding is enabled inside the namespace only.
//! - NAT in one nftables table `ip stratus_nat`, replaced atomically: floating IPs are 1:1
//!   DNAT (prerouting and output) + SNAT (postrouting, before the router's SNAT); tenant
//!   subnets are SNATed to the gateway address when `enable_snat`. DNATed traffic that came
//!   from inside (a guest reaching a floating IP: hairpin) is SNATed as well, to the sender's
//!   floating IP or the gateway address, so its answer comes back through the router.
//! - A floating IP address newly added sends a gratuitous ARP (`arping -U`) so upstream
//!   neighbours learn the router's MAC at once.
//! - IPv6: `qr-` devices carry the subnets' gateway addresses, the namespace forwards IPv6
//!   (`net.ipv6.conf.all.forwarding=1`, set inside it only) and there is no NAT for IPv6 (as
//!   in Neutron). Router advertisements for interface subnets with `ipv6_ra_mode` set come
//!   from a dnsmasq in the namespace that does nothing but RAs (Neutron runs radvd here;
//!   dnsmasq is already a dependency and does the same job): `ra-only` (A flag) for
//!   `slaac`, `ra-stateless` (A and O flags) for `dhcpv6-stateless`, a static range (M flag,
//!   no A flag) for `dhcpv6-stateful`, and `--dhcp-ignore=tag:!known` with no hosts so it
//!   never answers DHCPv6 itself (the network's DHCP namespace does). Guests take the
//!   router's link-local address as their default route; the subnet's IPv6 DNS servers go
//!   into the advertisement (RDNSS).

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::dev::{converge_addrs, ensure_veth, port_cidrs};
use crate::exec::{delete_netns, ensure_netns, list_netns, names, Ns};
use crate::l2;
use crate::model::{DesiredState, Router};
use crate::AgentConfig;

/// The namespace name of a router.
pub fn netns_name(cfg: &AgentConfig, router_id: &str) -> String {
    format!("{}qrouter-{router_id}", cfg.netns_prefix)
}

fn is_local(state: &DesiredState, cfg: &AgentConfig, r: &Router) -> bool {
    r.gateway_port_id
        .iter()
        .chain(&r.interface_port_ids)
        .any(|id| state.port(id).is_some_and(|p| p.binding_host_id == cfg.host))
}

/// Builds, updates and removes this host's routers.
pub async fn converge(host: &Ns, cfg: &AgentConfig, state: &DesiredState) -> Result<()> {
    let mut wanted = BTreeSet::new();
    let mut errors = Vec::new();
    for r in state.routers.iter().filter(|r| is_local(state, cfg, r)) {
        let name = netns_name(cfg, &r.id);
        if let Err(e) = converge_one(host, cfg, state, r, &name).await {
            errors.push(format!("router {}: {e:#}", r.id));
        }
        wanted.insert(name);
    }
    let prefix = netns_name(cfg, "");
    for ns in list_netns().await? {
        if ns.starts_with(&prefix) && !wanted.contains(&ns) {
            tracing::info!(netns = %ns, "removing deleted router");
            delete_netns(&ns).await?;
            let _ = tokio::fs::remove_dir_all(ra_dir(cfg, &ns[prefix.len()..])).await;
        }
    }
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

async fn converge_one(host: &Ns, cfg: &AgentConfig, state: &DesiredState, r: &Router, name: &str) -> Result<()> {
    let ns = ensure_netns(name).await?;
    ns.sysctl("net.ipv4.ip_forward", "1").await?;
    let v6 = r.interface_port_ids.iter().filter_map(|id| state.port(id)).any(|p| p.ipv6s().next().is_some());
    if v6 {
        ns.sysctl("net.ipv6.conf.all.forwarding", "1").await?;
    }
    let mut want_devs = BTreeSet::new();
    let mut snat_sources = Vec::new();
    for pid in &r.interface_port_ids {
        let port = state.port(pid).with_context(|| format!("interface port {pid} missing"))?;
        let mtu = state.network(&port.network_id).map_or(1500, |n| n.mtu);
        let dev = names::router_if(&port.id);
        ensure_veth(host, &names::tap(&port.id), &ns, &dev, &port.mac_address, mtu).await?;
        converge_addrs(&ns, &dev, &port_cidrs(state, port)).await?;
        for f in &port.fixed_ips {
            // Neutron does not NAT IPv6.
            if let Some(s) = state.subnet(&f.subnet_id).filter(|s| s.ip_version == 4) {
                snat_sources.push(s.cidr.clone());
            }
        }
        want_devs.insert(dev);
    }

    let mut nat = String::from("table ip stratus_nat {}\ndelete table ip stratus_nat\ntable ip stratus_nat {\n");
    let mut pre = String::new();
    let mut post = String::new();
    let mut new_fips = Vec::new();
    let mut hairpin = String::new();
    if let Some(gw_id) = &r.gateway_port_id {
        let port = state.port(gw_id).with_context(|| format!("gateway port {gw_id} missing"))?;
        let mtu = state.network(&port.network_id).map_or(1500, |n| n.mtu);
        let dev = names::router_gw(&port.id);
        ensure_veth(host, &names::tap(&port.id), &ns, &dev, &port.mac_address, mtu).await?;
        let mut want = port_cidrs(state, port);
        let fips: Vec<_> = state
            .floating_ips
            .iter()
            .filter(|f| {
                f.router_id.as_deref() == Some(r.id.as_str()) && f.fixed_ip_address.is_some() && f.port_id.is_some()
            })
            .collect();
        // Hairpin (a guest reaching a floating IP from inside): the DNATed packet leaves
        // through an interface again, and the answer would go straight back to the guest,
        // bypassing the NAT; so, as Neutron's L3 agent does, DNATed traffic that did not come
        // in from outside is SNATed too: to the sender's own floating IP, else to the
        // gateway address.
        let internal_dnat = format!("iifname != \"{dev}\" oifname != \"{dev}\" ct status dnat");
        for f in &fips {
            let fip: std::net::Ipv4Addr = f.floating_ip_address.parse()?;
            let fixed: std::net::Ipv4Addr = f.fixed_ip_address.as_deref().unwrap_or_default().parse()?;
            want.insert(format!("{fip}/32"));
            pre.push_str(&format!("    ip daddr {fip} dnat to {fixed}\n"));
            post.push_str(&format!("    ip saddr {fixed} oifname \"{dev}\" snat to {fip}\n"));
            hairpin.push_str(&format!("    {internal_dnat} ip saddr {fixed} snat to {fip}\n"));
        }
        for a in converge_addrs(&ns, &dev, &want).await? {
            if a.ends_with("/32") {
                new_fips.push(a.trim_end_matches("/32").to_owned());
            }
        }
        let gw_ip = port.ipv4s().next();
        if r.enable_snat {
            if let Some(gw_ip) = gw_ip {
                for src in &snat_sources {
                    post.push_str(&format!("    ip saddr {src} oifname \"{dev}\" snat to {gw_ip}\n"));
                }
                hairpin.push_str(&format!("    {internal_dnat} snat to {gw_ip}\n"));
            }
        }
        post.push_str(&hairpin);
        // Default route via the external subnet's (IPv4) gateway.
        let v4_gw = port
            .fixed_ips
            .iter()
            .filter_map(|f| state.subnet(&f.subnet_id).filter(|s| s.ip_version == 4))
            .find_map(|s| s.gateway_ip.clone());
        if let Some(gw) = v4_gw {
            ns.ip(&["route", "replace", "default", "via", &gw, "dev", &dev]).await?;
        }
        want_devs.insert(dev);
    }
    for route in &r.routes {
        ns.ip(&["route", "replace", &route.destination, "via", &route.nexthop]).await?;
    }
    nat.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n");
    nat.push_str(&pre);
    nat.push_str("  }\n  chain output {\n    type nat hook output priority -100; policy accept;\n");
    nat.push_str(&pre);
    nat.push_str("  }\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    nat.push_str(&post);
    nat.push_str("  }\n}\n");
    ns.nft_apply(&nat, &cfg.state_dir).await?;

    // Interfaces that were removed from the router.
    for link in l2::links(&ns).await? {
        let ours = link.name.starts_with("qr-") || link.name.starts_with("qg-");
        if ours && !want_devs.contains(&link.name) {
            ns.ip(&["link", "del", "dev", &link.name]).await?;
        }
    }
    converge_ra(cfg, state, r, &ns).await?;
    // Gratuitous ARP in the background: it must not hold up the convergence.
    for fip in new_fips {
        let dev = names::router_gw(r.gateway_port_id.as_deref().unwrap_or_default());
        let ns = ns.clone();
        tokio::spawn(async move {
            if let Err(e) = ns.exec("arping", &["-U", "-c", "1", "-I", &dev, &fip]).await {
                tracing::debug!(%fip, "gratuitous ARP: {e:#}");
            }
        });
    }
    Ok(())
}

fn ra_dir(cfg: &AgentConfig, router_id: &str) -> std::path::PathBuf {
    cfg.state_dir.join("ra").join(router_id)
}

/// The RA-only dnsmasq command line of a router (no `--dhcp-range` = nothing to advertise).
pub fn ra_args(state: &DesiredState, r: &Router, dir: &std::path::Path) -> Result<Vec<String>> {
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut a = vec![
        "--no-hosts".to_owned(),
        "--no-resolv".into(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        format!("--pid-file={}", d("pid")),
        format!("--log-facility={}", d("log")),
        "--bind-interfaces".into(),
        "--except-interface=lo".into(),
        "--enable-ra".into(),
        // No host is known: DHCPv6 belongs to the DHCP namespace; this one only advertises.
        "--dhcp-ignore=tag:!known".into(),
    ];
    let mut ranges = Vec::new();
    for pid in &r.interface_port_ids {
        let Some(port) = state.port(pid) else { continue };
        let dev = names::router_if(&port.id);
        let mut any = false;
        for f in &port.fixed_ips {
            let Some(s) = state.subnet(&f.subnet_id).filter(|s| s.ip_version == 6) else { continue };
            let kind = match s.ipv6_ra_mode.as_deref() {
                Some("slaac") => "ra-only",
                Some("dhcpv6-stateless") => "ra-stateless",
                Some("dhcpv6-stateful") => "static",
                _ => continue,
            };
            let (prefix, len) = crate::dhcp::v6_prefix(&s.cidr)?;
            ranges.push(format!("--dhcp-range=set:subnet-{},{prefix},{kind},{len},86400s", s.id));
            // RDNSS in the advertisement, as Neutron's radvd sends the subnet's DNS servers.
            let dns = crate::dhcp::v6_dns_servers(s);
            if !dns.is_empty() {
                ranges.push(format!("--dhcp-option=tag:subnet-{},option6:dns-server,{}", s.id, dns.join(",")));
            }
            any = true;
        }
        if any {
            a.push(format!("--interface={dev}"));
            a.push(format!("--ra-param={dev},{},1800", crate::dhcp::RA_INTERVAL_SECS));
        }
    }
    if ranges.is_empty() {
        return Ok(vec![]);
    }
    a.extend(ranges);
    Ok(a)
}

/// Starts, restarts (command line changed) or stops the router's RA dnsmasq.
async fn converge_ra(cfg: &AgentConfig, state: &DesiredState, r: &Router, ns: &Ns) -> Result<()> {
    let dir = ra_dir(cfg, &r.id);
    let args = ra_args(state, r, &dir)?;
    if args.is_empty() {
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            crate::dhcp::stop_dnsmasq(&dir).await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        return Ok(());
    }
    tokio::fs::create_dir_all(&dir).await?;
    let changed = crate::dhcp::write_if_changed(&dir.join("cmdline"), &args.join("\n")).await?;
    let running = crate::dhcp::running_pid(&dir).await;
    if running.is_none() || changed {
        crate::dhcp::stop_dnsmasq(&dir).await;
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.exec("dnsmasq", &argv).await.context("router advertisement daemon (dnsmasq)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FixedIp, Port, Subnet};

    #[test]
    fn router_advertises_only_subnets_with_an_ra_mode() {
        let sub = |id: &str, cidr: &str, mode: Option<&str>| Subnet {
            id: id.into(),
            network_id: "n".into(),
            ip_version: if cidr.contains(':') { 6 } else { 4 },
            cidr: cidr.into(),
            gateway_ip: None,
            enable_dhcp: true,
            dns_nameservers: vec!["fd00:53::1".into()],
            host_routes: vec![],
            ipv6_ra_mode: mode.map(Into::into),
            ipv6_address_mode: mode.map(Into::into),
        };
        let port = |id: &str, sid: &str, ip: &str| Port {
            id: id.into(),
            network_id: "n".into(),
            mac_address: "fa:16:3e:00:00:01".into(),
            fixed_ips: vec![FixedIp { subnet_id: sid.into(), ip_address: ip.into() }],
            device_owner: "network:router_interface".into(),
            device_id: "r".into(),
            binding_host_id: "h".into(),
            security_groups: vec![],
            allowed_address_pairs: vec![],
            port_security_enabled: false,
            admin_state_up: true,
        };
        let state = DesiredState {
            subnets: vec![
                sub("s4", "10.0.0.0/24", None),
                sub("sl", "fd00:1::/64", Some("slaac")),
                sub("sf", "fd00:2::/64", Some("dhcpv6-stateful")),
                sub("sn", "fd00:4::/64", None),
            ],
            ports: vec![
                port("p4aaaaaaaaaaa", "s4", "10.0.0.1"),
                port("plaaaaaaaaaaa", "sl", "fd00:1::1"),
                port("pfaaaaaaaaaaa", "sf", "fd00:2::1"),
                port("pnaaaaaaaaaaa", "sn", "fd00:4::1"),
            ],
            ..Default::default()
        };
        let mut r = Router {
            id: "r".into(),
            interface_port_ids: vec!["p4aaaaaaaaaaa".into(), "plaaaaaaaaaaa".into(), "pfaaaaaaaaaaa".into()],
            ..Default::default()
        };
        let a = ra_args(&state, &r, std::path::Path::new("/d")).unwrap();
        assert!(a.contains(&"--interface=qr-plaaaaaaaaa".to_owned()), "{a:?}");
        assert!(!a.contains(&"--interface=qr-p4aaaaaaaaa".to_owned()), "{a:?}");
        assert!(a.contains(&"--dhcp-range=set:subnet-sl,fd00:1::,ra-only,64,86400s".to_owned()), "{a:?}");
        assert!(a.contains(&"--dhcp-range=set:subnet-sf,fd00:2::,static,64,86400s".to_owned()), "{a:?}");
        assert!(a.contains(&"--dhcp-ignore=tag:!known".to_owned()), "never answers DHCPv6: {a:?}");
        assert!(a.contains(&"--ra-param=qr-plaaaaaaaaa,30,1800".to_owned()), "{a:?}");
        assert!(a.contains(&"--dhcp-option=tag:subnet-sl,option6:dns-server,[fd00:53::1]".to_owned()), "RDNSS: {a:?}");
        r.interface_port_ids = vec!["p4aaaaaaaaaaa".into(), "pnaaaaaaaaaaa".into()];
        assert!(ra_args(&state, &r, std::path::Path::new("/d")).unwrap().is_empty(), "nothing to advertise");
    }
}
