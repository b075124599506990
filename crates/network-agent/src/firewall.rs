//! Security groups and anti-spoofing with nftables, in the host namespace (the one that
//! holds the bridges).
//!
//! Design (measured on this kernel): the `bridge` family has no connection tracking here
//! (`ct` in a bridge table fails with EPROTO: no `nf_conntrack_bridge`), and the `inet`
//! family, fed with bridged IPv4 by `br_netfilter` (`net.bridge.bridge-nf-call-iptables=1`,
//! a per-namespace sysctl set in the host namespace), is stateful but sees the bridge, not
//! the port. So the work is split across two tables, replaced together in one `nft -f`
//! transaction (atomic: no packet sees half a ruleset):
//!
//! - `table bridge stratus_l2`, prerouting (priority -300, before `br_netfilter`):
//!   every packet entering a bridge gets `meta mark = zone << 16` (one zone per network),
//!   and packets from a filtered port jump to `from_<n>` which sets `mark = zone << 16 | n`
//!   and enforces anti-spoofing statelessly: source MAC, ARP sender MAC/IP, IPv4 source
//!   must be the port's own or in `allowed_address_pairs` (DHCP discover from 0.0.0.0
//!   excepted); DHCP server replies from a guest and IPv6 from a filtered port are dropped.
//! - `table inet stratus_sg`: raw prerouting maps the mark's zone to `ct zone` (so two
//!   projects with the same CIDR never share conntrack entries); forward accepts
//!   established/related, sends new flows from port n through `egress_<n>` (rules `return`
//!   on match, the chain ends in `drop`), then dispatches on destination address within the
//!   zone to `ingress_<n>` (rules `accept`, DHCP replies accepted, ends in `drop`: default
//!   deny ingress). Egress DHCP and metadata (169.254.169.254:80) are always allowed.
//!   Remote groups are named sets `rg_<group>` of member addresses.
//!
//! IPv6 (`net.bridge.bridge-nf-call-ip6tables=1` too): a filtered port may send from its
//! fixed IPv6 addresses, its allowed address pairs, its MAC's link-local address, and `::`
//! to link-local multicast only (duplicate address detection, MLD); router advertisements
//! and DHCPv6 server replies from it are dropped (anti-rogue-RA, as Neutron). Neighbour
//! discovery, router solicitations/advertisements and MLD (conntrack leaves them
//! untracked) are accepted in `forward` before any group is consulted, so a group without
//! ICMPv6 rules still lets the network work; DHCPv6 to and from the port is always allowed.
//! Rules with `ethertype: IPv6` match IPv6 only (`icmp` there means ICMPv6, as in Neutron),
//! remote groups have an IPv6 set `rg6_<group>` beside the IPv4 one.
//!
//! Established flows survive a rule removal (conntrack), as with Neutron's iptables driver
//! before it deletes conntrack entries; new flows see the new rules at once (the test
//! measures well under a second).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Result;

use crate::exec::{check_mac, check_name, names, short, Ns};
use crate::l2::local_networks;
use crate::model::{DesiredState, Direction, Port, SecurityGroupRule};
use crate::AgentConfig;

/// Applies the ruleset for this host's ports, then deletes the conntrack entries of ports
/// whose policy changed, so a removed rule also stops flows that were already established.
pub async fn converge(host: &Ns, cfg: &AgentConfig, state: &DesiredState, plugged: &[String]) -> Result<()> {
    host.sysctl("net.bridge.bridge-nf-call-iptables", "1").await?;
    if has_v6(state) {
        host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1").await?;
    }
    let (ruleset, policies) = render(cfg, state, plugged)?;
    host.nft_apply(&ruleset, &cfg.state_dir).await?;

    // Per-port policy fingerprints of the previous run (kept on disk so a restarted agent
    // does not flush every flow).
    let path = cfg.state_dir.join("firewall-policies.json");
    let before: BTreeMap<String, PortPolicy> =
        tokio::fs::read(&path).await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    for (port, now) in &policies {
        let Some(old) = before.get(port) else { continue };
        if old.text == now.text {
            continue;
        }
        let zone = now.zone.to_string();
        for ip in &now.ips {
            let family = if ip.contains(':') { "ipv6" } else { "ipv4" };
            for dir in ["--orig-src", "--orig-dst"] {
                // Exit status 1 with "0 flow entries" just means there was nothing to delete.
                if let Err(e) = host.exec("conntrack", &["-D", "-f", family, "-w", &zone, dir, ip]).await {
                    let msg = format!("{e:#}");
                    if !msg.contains("0 flow entries") {
                        tracing::warn!(%port, "conntrack flush: {msg}");
                    }
                }
            }
        }
    }
    tokio::fs::write(&path, serde_json::to_vec(&policies)?).await?;
    Ok(())
}

/// What decides a port's filtering: when it changes, the port's flows are re-evaluated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct PortPolicy {
    zone: u32,
    ips: Vec<String>,
    text: String,
}

/// Removes both tables (agent shutdown with cleanup, tests).
pub async fn teardown(host: &Ns, cfg: &AgentConfig) -> Result<()> {
    let rs = "table bridge stratus_l2 {}\ndelete table bridge stratus_l2\ntable inet stratus_sg {}\ndelete table inet stratus_sg\n";
    host.nft_apply(rs, &cfg.state_dir).await
}

fn addr_ok(s: &str) -> bool {
    let (ip, len) = s.split_once('/').unwrap_or((s, "32"));
    ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
}

fn addr6_ok(s: &str) -> bool {
    let (ip, len) = s.split_once('/').unwrap_or((s, "128"));
    ip.parse::<std::net::Ipv6Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
}

/// Whether any subnet is IPv6 (only then are IPv6 sysctls touched, so IPv4-only hosts
/// see exactly what they saw before).
fn has_v6(state: &DesiredState) -> bool {
    state.subnets.iter().any(|s| s.ip_version == 6)
}

/// ICMPv6 the network needs whatever the groups say: neighbour and router discovery, MLD.
const ICMPV6_ALWAYS: &str = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report";

/// Whether the port has IPv6 addresses (fixed or allowed pairs).
fn has_v6_addresses(p: &Port) -> bool {
    p.ipv6s().next().is_some() || p.allowed_address_pairs.iter().any(|a| addr6_ok(&a.ip_address))
}

/// The IPv6 sources a port may use: fixed addresses, allowed pairs, the MAC's link-local.
fn port_v6_sources(p: &Port) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = p.ipv6s().map(|i| i.to_string()).collect();
    out.extend(p.link_local().map(|l| l.to_string()));
    for pair in &p.allowed_address_pairs {
        if addr6_ok(&pair.ip_address) {
            out.insert(pair.ip_address.clone());
        }
        if let Some(ll) = pair.mac_address.as_deref().and_then(|m| crate::model::eui64("fe80::".parse().ok()?, m)) {
            out.insert(ll.to_string());
        }
    }
    out
}

/// The port's IPv6 addresses (and allowed prefixes) as 128-bit numbers and ranges, the
/// form a raw payload match compares with.
fn nd_target_set(sources: &BTreeSet<String>) -> String {
    let mut out = Vec::new();
    for s in sources {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u32>().unwrap_or(128).min(128)),
            None => (s.as_str(), 128),
        };
        let Ok(a) = addr.parse::<std::net::Ipv6Addr>() else { continue };
        let a = u128::from(a);
        let host_bits = if len == 0 { u128::MAX } else { (1u128 << (128 - len)).wrapping_sub(1) };
        let (lo, hi) = (a & !host_bits, a | host_bits);
        out.push(if lo == hi { format!("{lo:#034x}") } else { format!("{lo:#034x}-{hi:#034x}") });
    }
    if out.is_empty() {
        // Never empty (nft refuses `{ }`): the unspecified address is nobody's target.
        out.push(format!("{:#034x}", 0u128));
    }
    out.join(", ")
}

/// The whole ruleset text for `nft -f`.
pub fn ruleset(cfg: &AgentConfig, state: &DesiredState, plugged: &[String]) -> Result<String> {
    Ok(render(cfg, state, plugged)?.0)
}

fn render(
    cfg: &AgentConfig,
    state: &DesiredState,
    plugged: &[String],
) -> Result<(String, BTreeMap<String, PortPolicy>)> {
    let mut policies = BTreeMap::new();
    let zones: BTreeMap<&str, u32> =
        local_networks(state, &cfg.host).iter().enumerate().map(|(i, n)| (n.id.as_str(), i as u32 + 1)).collect();
    let filtered: Vec<&Port> = state
        .ports
        .iter()
        .filter(|p| plugged.contains(&p.id) && !p.is_network_owned() && p.port_security_enabled)
        .filter(|p| zones.contains_key(p.network_id.as_str()))
        .collect();

    let mut l2 = String::from("table bridge stratus_l2 {\n  chain prerouting {\n    type filter hook prerouting priority -300; policy accept;\n");
    // Zone marks by bridge port (`meta ibrname` is not supported by this kernel's bridge
    // family): the local ports' taps and the network's segment device.
    for (net, z) in &zones {
        let mut devs: BTreeSet<String> = state
            .ports
            .iter()
            .filter(|p| p.network_id == *net && p.binding_host_id == cfg.host)
            .map(|p| format!("\"{}\"", names::tap(&p.id)))
            .collect();
        if let Some(seg) = state.network(net).and_then(|n| segment_device(cfg, n)) {
            devs.insert(format!("\"{seg}\""));
        }
        let devs = devs.into_iter().collect::<Vec<_>>().join(", ");
        writeln!(l2, "    iifname {{ {devs} }} meta mark set {:#x}", z << 16)?;
    }
    for (i, p) in filtered.iter().enumerate() {
        writeln!(l2, "    iifname \"{}\" jump from_{}", names::tap(&p.id), i + 1)?;
    }
    l2.push_str("  }\n");

    let mut sg = String::from("table inet stratus_sg {\n");
    // Remote group sets.
    let groups: BTreeSet<&str> = filtered
        .iter()
        .flat_map(|p| &p.security_groups)
        .filter_map(|g| state.security_groups.iter().find(|s| &s.id == g))
        .flat_map(|s| &s.rules)
        .filter_map(|r| r.remote_group_id.as_deref())
        .collect();
    for g in &groups {
        let mut members = BTreeSet::new();
        let mut members6 = BTreeSet::new();
        for p in state.ports.iter().filter(|p| p.security_groups.iter().any(|x| x == g)) {
            members.extend(p.ipv4s().map(|i| i.to_string()));
            members.extend(p.allowed_address_pairs.iter().map(|a| a.ip_address.clone()).filter(|a| addr_ok(a)));
            members6.extend(p.ipv6s().map(|i| i.to_string()));
            members6.extend(p.allowed_address_pairs.iter().map(|a| a.ip_address.clone()).filter(|a| addr6_ok(a)));
        }
        write!(sg, "  set {} {{\n    type ipv4_addr; flags interval;\n", set_name(g))?;
        if !members.is_empty() {
            writeln!(sg, "    elements = {{ {} }}", members.into_iter().collect::<Vec<_>>().join(", "))?;
        }
        sg.push_str("  }\n");
        write!(sg, "  set {} {{\n    type ipv6_addr; flags interval;\n", set6_name(g))?;
        if !members6.is_empty() {
            writeln!(sg, "    elements = {{ {} }}", members6.into_iter().collect::<Vec<_>>().join(", "))?;
        }
        sg.push_str("  }\n");
    }
    sg.push_str("  chain raw {\n    type filter hook prerouting priority raw; policy accept;\n");
    for z in zones.values() {
        writeln!(sg, "    meta mark & 0xffff0000 == {:#x} ct zone set {z}", z << 16)?;
    }
    sg.push_str("  }\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    sg.push_str("    ct state established,related accept\n    ct state invalid drop\n");
    // Spoofed or rogue ND/RA never gets here (the bridge table dropped it).
    writeln!(sg, "    icmpv6 type {{ {ICMPV6_ALWAYS} }} accept")?;
    let mut chains = String::new();
    for (i, p) in filtered.iter().enumerate() {
        let n = i + 1;
        let z = zones[p.network_id.as_str()];
        let mut ips: BTreeSet<String> = p.ipv4s().map(|i| i.to_string()).collect();
        let mut macs: BTreeSet<String> = BTreeSet::new();
        macs.insert(check_mac(&p.mac_address)?.to_ascii_lowercase());
        for pair in &p.allowed_address_pairs {
            if addr_ok(&pair.ip_address) {
                ips.insert(pair.ip_address.clone());
            }
            if let Some(m) = &pair.mac_address {
                macs.insert(check_mac(m)?.to_ascii_lowercase());
            }
        }
        let macs = macs.into_iter().collect::<Vec<_>>().join(", ");
        let ip_set = if ips.is_empty() {
            "127.255.255.255".to_owned()
        } else {
            ips.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        let v6_sources = port_v6_sources(p);
        let nd_targets = nd_target_set(&v6_sources);
        let v6_set = v6_sources.into_iter().collect::<Vec<_>>().join(", ");
        // IPv6 from a port without IPv6 addresses is dropped outright (as before IPv6
        // existed here): its link-local traffic would otherwise skip the groups.
        let v6_rules = if has_v6_addresses(p) {
            // A neighbour advertisement may only speak for the port's own addresses
            // (Neutron's NA spoofing protection): else a guest could redirect its
            // neighbours' traffic for another guest's address to itself. nft has no
            // field for the target, so it is matched raw: 16 bytes after the ICMPv6
            // header's type, code, checksum and flags.
            format!("    icmpv6 type nd-router-advert drop\n    icmpv6 type nd-neighbor-advert @th,64,128 != {{ {nd_targets} }} drop\n    udp sport 547 drop\n    ip6 saddr :: ip6 daddr ff02::/16 accept\n    ip6 saddr != {{ {v6_set} }} drop\n")
        } else {
            "    ether type ip6 drop\n".to_owned()
        };
        // Layer 2 anti-spoofing.
        write!(
            l2,
            "  chain from_{n} {{\n    meta mark set {mark:#x}\n    ether saddr != {{ {macs} }} drop\n    arp saddr ether != {{ {macs} }} drop\n    arp saddr ip != {{ {ip_set}, 0.0.0.0 }} drop\n    ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept\n    ip saddr != {{ {ip_set} }} drop\n    udp sport 67 drop\n{v6_rules}  }}\n",
            mark = (z << 16) | n as u32
        )?;
        // Dispatch.
        writeln!(sg, "    meta mark {:#x} jump egress_{n}", (z << 16) | n as u32)?;
        // Security group chains.
        let rules: Vec<&SecurityGroupRule> = p
            .security_groups
            .iter()
            .filter_map(|g| state.security_groups.iter().find(|s| &s.id == g))
            .flat_map(|s| &s.rules)
            .filter(|r| r.ethertype.eq_ignore_ascii_case("ipv4") || r.ethertype.eq_ignore_ascii_case("ipv6"))
            .collect();
        let chain_start = chains.len();
        write!(chains, "  chain egress_{n} {{\n    udp sport 68 udp dport 67 return\n    ip daddr 169.254.169.254 tcp dport 80 return\n    ip6 daddr fe80::a9fe:a9fe tcp dport 80 return\n    udp sport 546 udp dport 547 return\n")?;
        for r in rules.iter().filter(|r| r.direction == Direction::Egress) {
            if let Some(m) = rule_match(r, "daddr")? {
                writeln!(chains, "    {m} return")?;
            }
        }
        chains.push_str("    drop\n  }\n");
        write!(
            chains,
            "  chain ingress_{n} {{\n    udp sport 67 udp dport 68 accept\n    udp sport 547 udp dport 546 accept\n"
        )?;
        for r in rules.iter().filter(|r| r.direction == Direction::Ingress) {
            if let Some(m) = rule_match(r, "saddr")? {
                writeln!(chains, "    {m} accept")?;
            }
        }
        chains.push_str("    drop\n  }\n");
        // Fingerprint: this port's chains (renumbered away) and its remote groups' members.
        let mut text = chains[chain_start..].replace(&format!("_{n} {{"), " {");
        for g in rules.iter().filter_map(|r| r.remote_group_id.as_deref()) {
            for name in [set_name(g), set6_name(g)] {
                let at = sg.find(&format!("set {name} {{")).unwrap_or(0);
                text.push_str(sg[at..].split("  }").next().unwrap_or_default());
            }
        }
        text.push_str(&ip_set);
        text.push_str(&v6_set);
        text.push_str(&macs);
        let ips = p.ipv4s().map(|i| i.to_string()).chain(p.ipv6s().map(|i| i.to_string())).collect();
        policies.insert(p.id.clone(), PortPolicy { zone: z, ips, text });
    }
    for (i, p) in filtered.iter().enumerate() {
        let z = zones[p.network_id.as_str()];
        let mut dst: BTreeSet<String> = p.ipv4s().map(|i| i.to_string()).collect();
        dst.extend(p.allowed_address_pairs.iter().map(|a| a.ip_address.clone()).filter(|a| addr_ok(a)));
        if !dst.is_empty() {
            let dst = dst.into_iter().collect::<Vec<_>>().join(", ");
            writeln!(sg, "    meta mark & 0xffff0000 == {:#x} ip daddr {{ {dst} }} jump ingress_{}", z << 16, i + 1)?;
        }
        // IPv6 only where the port has some (its link-local receives DHCPv6 replies).
        if has_v6_addresses(p) {
            let dst6 = port_v6_sources(p).into_iter().collect::<Vec<_>>().join(", ");
            writeln!(sg, "    meta mark & 0xffff0000 == {:#x} ip6 daddr {{ {dst6} }} jump ingress_{}", z << 16, i + 1)?;
        }
    }
    sg.push_str("  }\n");
    sg.push_str(&chains);
    sg.push_str("}\n");
    l2.push_str("}\n");

    let mut out = String::new();
    out.push_str("table bridge stratus_l2 {}\ndelete table bridge stratus_l2\n");
    out.push_str("table inet stratus_sg {}\ndelete table inet stratus_sg\n");
    out.push_str(&l2);
    out.push_str(&sg);
    Ok((out, policies))
}

/// The device carrying a network off the host, as [`crate::l2`] names it.
fn segment_device(cfg: &AgentConfig, n: &crate::model::Network) -> Option<String> {
    use crate::model::NetworkType::*;
    let phys = || n.physical_network.as_ref().and_then(|p| cfg.physical_interface_mappings.get(p));
    match n.network_type {
        Vxlan => n.segmentation_id.map(names::vxlan),
        Vlan => Some(names::vlan(phys()?, n.segmentation_id?)),
        Flat => phys().cloned(),
        Local => None,
    }
}

fn set_name(group: &str) -> String {
    format!("rg_{}", short(group, 24))
}

fn set6_name(group: &str) -> String {
    format!("rg6_{}", short(group, 24))
}

/// The match part of one rule (`None` when it cannot be expressed and is skipped).
fn rule_match(r: &SecurityGroupRule, peer: &str) -> Result<Option<String>> {
    let v6 = r.ethertype.eq_ignore_ascii_case("ipv6");
    let (fam, ip) = if v6 { ("ipv6", "ip6") } else { ("ipv4", "ip") };
    let mut m = vec![format!("meta nfproto {fam}")];
    let proto = r.protocol.as_deref().map(str::to_ascii_lowercase);
    let proto = match proto.as_deref() {
        None | Some("") | Some("any") => None,
        // Neutron treats `icmp` in an IPv6 rule as ICMPv6.
        Some("icmp" | "1") if v6 => Some("ipv6-icmp".to_owned()),
        Some("58" | "icmpv6" | "ipv6-icmp") => Some("ipv6-icmp".to_owned()),
        Some("1") => Some("icmp".to_owned()),
        Some("6") => Some("tcp".to_owned()),
        Some("17") => Some("udp".to_owned()),
        Some("132") => Some("sctp".to_owned()),
        Some(p) => Some(check_name(p)?.to_owned()),
    };
    if let Some(p) = &proto {
        m.push(format!("meta l4proto {p}"));
        match p.as_str() {
            "tcp" | "udp" | "sctp" => match (r.port_range_min, r.port_range_max) {
                (Some(a), Some(b)) if a == b => m.push(format!("{p} dport {a}")),
                (Some(a), Some(b)) => m.push(format!("{p} dport {a}-{b}")),
                (Some(a), None) => m.push(format!("{p} dport {a}")),
                _ => {}
            },
            "icmp" | "ipv6-icmp" => {
                let kw = if p == "icmp" { "icmp" } else { "icmpv6" };
                if let Some(t) = r.port_range_min {
                    m.push(format!("{kw} type {t}"));
                    if let Some(c) = r.port_range_max {
                        m.push(format!("{kw} code {c}"));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(prefix) = &r.remote_ip_prefix {
        if !(if v6 { addr6_ok(prefix) } else { addr_ok(prefix) }) {
            return Ok(None);
        }
        if prefix != "0.0.0.0/0" && prefix != "::/0" {
            m.push(format!("{ip} {peer} {prefix}"));
        }
    }
    if let Some(g) = &r.remote_group_id {
        let set = if v6 { set6_name(g) } else { set_name(g) };
        m.push(format!("{ip} {peer} @{set}"));
    }
    Ok(Some(m.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FixedIp, Network, NetworkType, SecurityGroup, Subnet};

    fn port(id: &str, mac: &str, ips: &[&str]) -> Port {
        Port {
            id: id.into(),
            network_id: "n1".into(),
            mac_address: mac.into(),
            fixed_ips: ips.iter().map(|i| FixedIp { subnet_id: "s".into(), ip_address: (*i).into() }).collect(),
            device_owner: "compute:nova".into(),
            device_id: String::new(),
            binding_host_id: "h".into(),
            security_groups: vec!["g".into()],
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            admin_state_up: true,
        }
    }

    fn rule(direction: Direction, ethertype: &str, protocol: Option<&str>, group: Option<&str>) -> SecurityGroupRule {
        SecurityGroupRule {
            id: String::new(),
            direction,
            ethertype: ethertype.into(),
            protocol: protocol.map(Into::into),
            port_range_min: None,
            port_range_max: None,
            remote_ip_prefix: None,
            remote_group_id: group.map(Into::into),
        }
    }

    fn state() -> DesiredState {
        DesiredState {
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
            subnets: vec![Subnet {
                id: "s".into(),
                network_id: "n1".into(),
                ip_version: 6,
                cidr: "fd00:1::/64".into(),
                gateway_ip: None,
                enable_dhcp: true,
                dns_nameservers: vec![],
                host_routes: vec![],
                ipv6_ra_mode: Some("slaac".into()),
                ipv6_address_mode: Some("slaac".into()),
            }],
            ports: vec![
                port("aaaaaaaaaaaa1", "fa:16:3e:00:00:05", &["10.0.0.5", "fd00:1::f816:3eff:fe00:5"]),
                port("bbbbbbbbbbbb2", "fa:16:3e:00:00:06", &["10.0.0.6"]),
            ],
            security_groups: vec![SecurityGroup {
                id: "g".into(),
                project_id: String::new(),
                stateful: true,
                rules: vec![
                    rule(Direction::Egress, "IPv6", None, None),
                    rule(Direction::Ingress, "IPv6", Some("icmp"), None),
                    rule(Direction::Ingress, "IPv6", Some("tcp"), Some("g")),
                ],
            }],
            ..Default::default()
        }
    }

    fn cfg() -> AgentConfig {
        AgentConfig { host: "h".into(), ..AgentConfig::default() }
    }

    #[test]
    fn ipv6_anti_spoofing_allows_own_addresses_and_link_local_and_blocks_rogue_ras() {
        let rs = ruleset(&cfg(), &state(), &["aaaaaaaaaaaa1".into(), "bbbbbbbbbbbb2".into()]).unwrap();
        let from1 = rs.split("chain from_1 {").nth(1).unwrap().split("\n  }").next().unwrap();
        assert!(from1.contains("icmpv6 type nd-router-advert drop"), "{from1}");
        assert!(from1.contains("udp sport 547 drop"), "{from1}");
        assert!(from1.contains("ip6 saddr != { fd00:1::f816:3eff:fe00:5, fe80::f816:3eff:fe00:5 } drop"), "{from1}");
        assert!(from1.contains("ip6 saddr :: ip6 daddr ff02::/16 accept"), "{from1}");
        assert!(
            from1.contains("icmpv6 type nd-neighbor-advert @th,64,128 != { 0xfd00000100000000f8163efffe000005, 0xfe80000000000000f8163efffe000005 } drop"),
            "neighbour advertisements only for its own addresses: {from1}"
        );
        // A port without IPv6 addresses sends no IPv6 at all, as before.
        let from2 = rs.split("chain from_2 {").nth(1).unwrap().split("\n  }").next().unwrap();
        assert!(from2.contains("ether type ip6 drop"), "{from2}");
    }

    #[test]
    fn nd_targets_cover_allowed_prefixes_as_ranges() {
        let set: BTreeSet<String> = ["fd00:9::/64".to_string(), "fe80::1".to_string()].into();
        assert_eq!(
            nd_target_set(&set),
            "0xfd000009000000000000000000000000-0xfd00000900000000ffffffffffffffff, 0xfe800000000000000000000000000001"
        );
        assert_eq!(nd_target_set(&BTreeSet::new()), "0x00000000000000000000000000000000");
    }

    #[test]
    fn ipv6_rules_neighbour_discovery_and_dhcpv6() {
        let rs = ruleset(&cfg(), &state(), &["aaaaaaaaaaaa1".into()]).unwrap();
        assert!(rs.contains(&format!("    icmpv6 type {{ {ICMPV6_ALWAYS} }} accept\n")), "{rs}");
        assert!(rs.contains("meta nfproto ipv6 return"), "egress IPv6 any: {rs}");
        assert!(rs.contains("meta nfproto ipv6 meta l4proto ipv6-icmp accept"), "icmp means ICMPv6: {rs}");
        assert!(rs.contains("meta nfproto ipv6 meta l4proto tcp ip6 saddr @rg6_g accept"), "{rs}");
        assert!(rs.contains("elements = { fd00:1::f816:3eff:fe00:5 }"), "{rs}");
        assert!(rs.contains("udp sport 546 udp dport 547 return"), "{rs}");
        assert!(rs.contains("udp sport 547 udp dport 546 accept"), "{rs}");
        assert!(rs.contains("ip6 daddr { fd00:1::f816:3eff:fe00:5, fe80::f816:3eff:fe00:5 } jump ingress_1"), "{rs}");
    }
}
