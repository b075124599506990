//! Device helpers shared by the DHCP and L3 realisers: a veth between the host namespace
//! (its end goes into a bridge as `tap<port>`) and a service namespace, and addresses.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::exec::{check_mac, Ns};
use crate::model::{DesiredState, Port};

/// Ensures the veth pair `host_dev` (in `host`) ↔ `inner_dev` (in `inner`) exists, with the
/// inner end carrying `mac` and `mtu`, up. A half-present pair is rebuilt.
pub async fn ensure_veth(host: &Ns, host_dev: &str, inner: &Ns, inner_dev: &str, mac: &str, mtu: u32) -> Result<()> {
    check_mac(mac)?;
    let inner_name = inner.name().context("service namespace must be named")?;
    let host_ok = host.link_exists(host_dev).await;
    let inner_ok = inner.link_exists(inner_dev).await;
    if host_ok && !inner_ok {
        host.ip(&["link", "del", "dev", host_dev]).await?;
    }
    if inner_ok && !host_ok {
        inner.ip(&["link", "del", "dev", inner_dev]).await?;
    }
    if !(host_ok && inner_ok) {
        host.ip(&["link", "add", "name", host_dev, "type", "veth", "peer", "name", inner_dev, "netns", inner_name])
            .await?;
    }
    let mtu = mtu.to_string();
    let info = inner.ip_json(&["link", "show", "dev", inner_dev]).await?;
    if !info[0]["address"].as_str().is_some_and(|a| a.eq_ignore_ascii_case(mac)) {
        inner.ip(&["link", "set", "dev", inner_dev, "address", mac]).await?;
    }
    inner.ip(&["link", "set", "dev", inner_dev, "mtu", &mtu, "up"]).await?;
    host.ip(&["link", "set", "dev", host_dev, "mtu", &mtu, "up"]).await?;
    Ok(())
}

/// IPv4 and global IPv6 addresses (`a.b.c.d/len`, `fd00::1/64`) of a device. IPv6
/// link-local addresses are the kernel's (derived from the MAC), never ours to manage.
pub async fn addrs(ns: &Ns, dev: &str) -> Result<BTreeSet<String>> {
    let v = ns.ip_json(&["addr", "show", "dev", dev]).await?;
    let mut out = BTreeSet::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if a["family"] == "inet6" && a["scope"] != "global" {
                continue;
            }
            if let (Some(ip), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                out.insert(format!("{ip}/{len}"));
            }
        }
    }
    Ok(out)
}

/// Makes the device's addresses (as [`addrs`] sees them) exactly `want`; returns the ones it added.
pub async fn converge_addrs(ns: &Ns, dev: &str, want: &BTreeSet<String>) -> Result<Vec<String>> {
    let have = addrs(ns, dev).await?;
    for a in have.difference(want) {
        ns.ip(&["addr", "del", a, "dev", dev]).await?;
    }
    let mut added = Vec::new();
    for a in want.difference(&have) {
        if a.contains(':') {
            // No duplicate address detection: the address is the port's, which the network
            // service allocated uniquely, and a tentative address cannot be bound by dnsmasq
            // nor answer neighbour solicitations for a second or more.
            ns.ip(&["-6", "addr", "add", a, "dev", dev, "nodad"]).await?;
        } else {
            ns.ip(&["addr", "add", a, "dev", dev]).await?;
        }
        added.push(a.clone());
    }
    Ok(added)
}

/// The port's addresses with their subnets' prefix lengths (`10.0.0.2/24`, `fd00::2/64`).
pub fn port_cidrs(state: &DesiredState, port: &Port) -> BTreeSet<String> {
    port.fixed_ips
        .iter()
        .filter_map(|f| {
            let ip: std::net::IpAddr = f.ip_address.parse().ok()?;
            let len = state.subnet(&f.subnet_id)?.cidr.split_once('/')?.1.parse::<u8>().ok()?;
            Some(format!("{ip}/{len}"))
        })
        .collect()
}

/// `10.0.0.0/24` → (network address, netmask) for dnsmasq's `--dhcp-range`.
pub fn network_and_mask(cidr: &str) -> Result<(std::net::Ipv4Addr, std::net::Ipv4Addr)> {
    let (ip, len) = cidr.split_once('/').context("cidr without /")?;
    let ip: std::net::Ipv4Addr = ip.parse()?;
    let len: u32 = len.parse()?;
    anyhow::ensure!(len <= 32, "bad prefix length in {cidr}");
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok(((u32::from(ip) & mask).into(), mask.into()))
}
