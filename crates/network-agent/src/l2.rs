//! Layer 2: one Linux bridge per network, its segment device, and ports plugged into it.
//!
//! - Bridge `brq<net>` (MTU of the network) in the host namespace.
//! - Segment: `vxlan-<vni>` (learning off, `local` = the configured tunnel IP, UDP 4789)
//!   whose forwarding table is filled from port bindings — l2population: one all-zero
//!   entry per remote host carrying ports of the network (broadcast/ARP flooding by head-end
//!   replication) and one entry per remote port MAC. No multicast group is needed.
//!   VLAN: `<phys>.<vid>` on the interface mapped to the physical network. Flat: the mapped
//!   interface itself is enslaved.
//! - Ports bound to this host are plugged by name (`tap<port>`), whoever made the device
//!   (compute for guests, the DHCP/L3 realisers for their veths).
//!
//! Everything is checked before it is changed, so converging twice changes nothing, and an
//! agent restart adopts what is there. Bridges and VXLAN devices the desired state no
//! longer names are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};

use crate::exec::{check_mac, check_name, names, Ns};
use crate::model::{DesiredState, Network, NetworkType};
use crate::AgentConfig;

/// Networks that need a bridge on `host`: those with a port bound there.
pub fn local_networks<'a>(state: &'a DesiredState, host: &str) -> Vec<&'a Network> {
    let ids: BTreeSet<&str> =
        state.ports.iter().filter(|p| p.binding_host_id == host).map(|p| p.network_id.as_str()).collect();
    state.networks.iter().filter(|n| ids.contains(n.id.as_str())).collect()
}

/// Brings bridges, segments and FDB entries of every local network to the desired state,
/// and removes the bridges and VXLAN devices of networks that are gone.
pub async fn converge_networks(ns: &Ns, cfg: &AgentConfig, state: &DesiredState) -> Result<()> {
    let nets = local_networks(state, &cfg.host);
    let mut want_bridges = BTreeSet::new();
    let mut want_vxlans = BTreeSet::new();
    let mut want_vlans = BTreeSet::new();
    let mut errors = Vec::new();
    for net in &nets {
        // A network that fails does not stop the others; its devices are not treated as stale.
        want_bridges.insert(names::bridge(&net.id));
        if let Some(vni) =
            net.segmentation_id.filter(|_| net.network_type == NetworkType::Vxlan && cfg.tunnel_ip.is_some())
        {
            want_vxlans.insert(names::vxlan(vni));
        }
        match converge_network(ns, cfg, state, net).await {
            Ok(Some(vlan)) => {
                want_vlans.insert(vlan);
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("network {}: {e:#}", net.id)),
        }
    }
    // Remove what belongs to networks that are gone.
    for link in links(ns).await? {
        let stale_bridge = link.kind == "bridge" && link.name.starts_with("brq") && !want_bridges.contains(&link.name);
        let stale_vxlan = link.kind == "vxlan" && link.name.starts_with("vxlan-") && !want_vxlans.contains(&link.name);
        // VLAN subinterfaces are ours when they sit on a mapped physical interface.
        let on_mapped = cfg.physical_interface_mappings.values().any(|p| {
            link.name.starts_with(&format!("{p}."))
                || link.name.starts_with(&format!("vlan{}-", crate::exec::short(p, 5)))
        });
        let stale_vlan = link.kind == "vlan" && on_mapped && !want_vlans.contains(&link.name);
        if stale_bridge || stale_vxlan || stale_vlan {
            tracing::info!(dev = %link.name, "removing stale device");
            ns.ip(&["link", "del", "dev", &link.name]).await?;
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// One network's bridge and segment; returns the VLAN subinterface it uses, if any.
async fn converge_network(ns: &Ns, cfg: &AgentConfig, state: &DesiredState, net: &Network) -> Result<Option<String>> {
    let mut vlan = None;
    check_name(&net.id)?;
    let br = names::bridge(&net.id);
    ensure_bridge(ns, &br, net.mtu).await?;
    match net.network_type {
        NetworkType::Vxlan => {
            let vni = net.segmentation_id.context("vxlan network without VNI")?;
            // Without a tunnel endpoint (all-in-one), a VXLAN network is host-local: the
            // bridge alone carries it, as Neutron's agent does with VXLAN disabled.
            let Some(local) = cfg.tunnel_ip else {
                let state_word = if net.admin_state_up { "up" } else { "down" };
                ns.ip(&["link", "set", "dev", &br, state_word]).await?;
                return Ok(None);
            };
            let dev = names::vxlan(vni);
            ensure_vxlan(ns, &dev, vni, local, cfg, net.mtu).await?;
            enslave(ns, &dev, &br).await?;
            converge_fdb(ns, &dev, &vxlan_fdb(state, cfg, net)).await?;
        }
        NetworkType::Vlan => {
            let phys = physical_interface(cfg, net)?;
            let vid = net.segmentation_id.context("vlan network without VLAN id")?;
            let dev = names::vlan(phys, vid);
            if !ns.link_exists(&dev).await {
                let vid = vid.to_string();
                ns.ip(&["link", "add", "link", phys, "name", &dev, "type", "vlan", "id", &vid])
                    .await
                    .context("cannot create a VLAN subinterface: the kernel needs 802.1Q (CONFIG_VLAN_8021Q)")?;
            }
            enslave(ns, &dev, &br).await?;
            vlan = Some(dev);
        }
        NetworkType::Flat => {
            let phys = physical_interface(cfg, net)?;
            enslave(ns, phys, &br).await?;
        }
        NetworkType::Local => {}
    }
    let state_word = if net.admin_state_up { "up" } else { "down" };
    ns.ip(&["link", "set", "dev", &br, state_word]).await?;
    Ok(vlan)
}

fn physical_interface<'a>(cfg: &'a AgentConfig, net: &Network) -> Result<&'a str> {
    let phys = net.physical_network.as_deref().context("flat/vlan network without physical network")?;
    match cfg.physical_interface_mappings.get(phys) {
        Some(dev) => check_name(dev),
        None => bail!("physical network {phys} is not in physical_interface_mappings"),
    }
}

/// A link as `ip -d -j link` shows it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Name.
    pub name: String,
    /// `bridge`, `vxlan`, `veth`, `vlan`... (empty for plain devices).
    pub kind: String,
    /// Bridge it is enslaved to.
    pub master: Option<String>,
}

/// All links of the namespace.
pub async fn links(ns: &Ns) -> Result<Vec<Link>> {
    let v = ns.ip_json(&["-d", "link", "show"]).await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|l| Link {
            name: l["ifname"].as_str().unwrap_or_default().to_owned(),
            kind: l["linkinfo"]["info_kind"].as_str().unwrap_or_default().to_owned(),
            master: l["master"].as_str().map(str::to_owned),
        })
        .collect())
}

async fn ensure_bridge(ns: &Ns, br: &str, mtu: u32) -> Result<()> {
    if !ns.link_exists(br).await {
        // No STP and no forwarding delay: a port forwards as soon as it is plugged.
        ns.ip(&["link", "add", "name", br, "type", "bridge", "stp_state", "0", "forward_delay", "0"]).await?;
    }
    ns.ip(&["link", "set", "dev", br, "mtu", &mtu.to_string()]).await?;
    Ok(())
}

async fn ensure_vxlan(ns: &Ns, dev: &str, vni: u32, local: Ipv4Addr, cfg: &AgentConfig, mtu: u32) -> Result<()> {
    if !ns.link_exists(dev).await {
        let (vni, local, port) = (vni.to_string(), local.to_string(), cfg.vxlan_port.to_string());
        let mut args = vec![
            "link",
            "add",
            "name",
            dev,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            &local,
            "dstport",
            &port,
            "nolearning",
        ];
        if let Some(d) = &cfg.tunnel_interface {
            args.extend(["dev", check_name(d)?]);
        }
        ns.ip(&args).await?;
    }
    ns.ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()]).await?;
    Ok(())
}

/// Enslaves `dev` to `br` and sets it up, unless it already is.
pub async fn enslave(ns: &Ns, dev: &str, br: &str) -> Result<()> {
    let info = ns.ip_json(&["link", "show", "dev", dev]).await?;
    let l = &info[0];
    if l["master"].as_str() != Some(br) {
        ns.ip(&["link", "set", "dev", dev, "master", br]).await?;
    }
    let up = l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"));
    if !up || l["master"].as_str() != Some(br) {
        ns.ip(&["link", "set", "dev", dev, "up"]).await?;
    }
    Ok(())
}

/// The FDB a VXLAN device should have: MAC → remote VTEP (the zero MAC once per remote host).
fn vxlan_fdb(state: &DesiredState, cfg: &AgentConfig, net: &Network) -> BTreeSet<(String, Ipv4Addr)> {
    let mut want = BTreeSet::new();
    for p in state.ports.iter().filter(|p| p.network_id == net.id) {
        if p.binding_host_id.is_empty() || p.binding_host_id == cfg.host {
            continue;
        }
        let Some(vtep) = state.tunnel_ip(&p.binding_host_id) else { continue };
        if Some(vtep) == cfg.tunnel_ip || check_mac(&p.mac_address).is_err() {
            continue;
        }
        want.insert(("00:00:00:00:00:00".to_owned(), vtep));
        want.insert((p.mac_address.to_ascii_lowercase(), vtep));
    }
    want
}

async fn converge_fdb(ns: &Ns, dev: &str, want: &BTreeSet<(String, Ipv4Addr)>) -> Result<()> {
    let nl = crate::nl::Netlink::connect(ns).await?;
    let index = nl.links().await?.get(dev).map(|l| l.index).with_context(|| format!("{dev} vanished"))?;
    let have = nl.vxlan_fdb(index).await?;
    for (mac, dst) in have.difference(want) {
        nl.vxlan_fdb_del(index, mac, *dst).await?;
    }
    for (mac, dst) in want.difference(&have) {
        nl.vxlan_fdb_add(index, mac, *dst, mac == "00:00:00:00:00:00").await?;
    }
    Ok(())
}

/// Plugs every port bound to this host whose device exists into its network's bridge,
/// over rtnetlink (one link dump, then one request per port that is not yet right).
/// Returns the ids of the ports that are wired (to be reported ACTIVE).
pub async fn plug_ports(ns: &Ns, cfg: &AgentConfig, state: &DesiredState) -> Result<Vec<String>> {
    let nl = crate::nl::Netlink::connect(ns).await?;
    let present = nl.links().await?;
    let mut wired = Vec::new();
    for p in state.ports.iter().filter(|p| p.binding_host_id == cfg.host && p.admin_state_up) {
        let Some(net) = state.network(&p.network_id) else { continue };
        let (Some(tap), Some(br)) = (present.get(&names::tap(&p.id)), present.get(&names::bridge(&p.network_id)))
        else {
            continue;
        };
        // A port whose network failed to realise stays unplugged (and is not reported ACTIVE).
        match nl.plug(tap, br.index, net.mtu).await {
            Ok(()) => wired.push(p.id.clone()),
            Err(e) => tracing::warn!(port = %p.id, "cannot plug: {e:#}"),
        }
    }
    Ok(wired)
}

/// Ports bound to this host that are already wired (tap enslaved to its bridge): the cheap
/// query the security-group fast path uses instead of a full plug pass.
pub async fn plugged_ports(ns: &Ns, cfg: &AgentConfig, state: &DesiredState) -> Result<Vec<String>> {
    let present: BTreeMap<String, Link> = links(ns).await?.into_iter().map(|l| (l.name.clone(), l)).collect();
    Ok(state
        .ports
        .iter()
        .filter(|p| p.binding_host_id == cfg.host)
        .filter(|p| {
            present.get(&names::tap(&p.id)).and_then(|l| l.master.as_deref())
                == Some(names::bridge(&p.network_id).as_str())
        })
        .map(|p| p.id.clone())
        .collect())
}

/// Whether the taps changed under the agent: a port bound to this host has its device but
/// is not (correctly) plugged yet (the hypervisor made a tap), or a port in `wired` lost its
/// device (the guest went away). One netlink dump, cheap enough to poll (Neutron's Linux
/// bridge agent polls its taps the same way).
pub async fn taps_changed(ns: &Ns, cfg: &AgentConfig, state: &DesiredState, wired: &BTreeSet<String>) -> Result<bool> {
    let nl = crate::nl::Netlink::connect(ns).await?;
    let present = nl.links().await?;
    if wired.iter().any(|id| !present.contains_key(&names::tap(id))) {
        return Ok(true);
    }
    Ok(state.ports.iter().filter(|p| p.binding_host_id == cfg.host && p.admin_state_up).any(|p| {
        let Some(tap) = present.get(&names::tap(&p.id)) else { return false };
        // No bridge means the network failed to realise: polling would not fix that.
        let Some(bridge) = present.get(&names::bridge(&p.network_id)) else { return false };
        tap.controller != Some(bridge.index) || !tap.up
    }))
}
