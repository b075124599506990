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
        }
    }
    anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

async fn converge_one(host: &Ns, cfg: &AgentConfig, state: &DesiredState, r: &Router, name: &str) -> Result<()> {
    let ns = ensure_netns(name).await?;
    ns.sysctl("net.ipv4.ip_forward", "1").await?;
    let mut want_devs = BTreeSet::new();
    let mut snat_sources = Vec::new();
    for pid in &r.interface_port_ids {
        let port = state.port(pid).with_context(|| format!("interface port {pid} missing"))?;
        let mtu = state.network(&port.network_id).map_or(1500, |n| n.mtu);
        let dev = names::router_if(&port.id);
        ensure_veth(host, &names::tap(&port.id), &ns, &dev, &port.mac_address, mtu).await?;
        converge_addrs(&ns, &dev, &port_cidrs(state, port)).await?;
        for f in &port.fixed_ips {
            if let Some(s) = state.subnet(&f.subnet_id) {
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
        // Default route via the external subnet's gateway.
        if let Some(gw) = port.fixed_ips.iter().find_map(|f| state.subnet(&f.subnet_id)?.gateway_ip.clone()) {
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
