//! Netlink (rtnetlink) for the hot paths: plugging a port into its bridge when a guest boots,
//! and the VXLAN forwarding entries (l2population) that follow every port binding.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it, so
//! [`Netlink::connect`] opens it on a short-lived thread that first joins the host namespace
//! (`setns`); the socket then keeps talking to that namespace from any tokio worker. No
//! worker thread ever changes namespace.

use std::collections::BTreeMap;

use std::net::Ipv4Addr;

use anyhow::{anyhow, Context, Result};
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use crate::exec::Ns;

/// What the hot path needs to know about a link.
#[derive(Debug, Clone)]
pub struct NlLink {
    /// Interface index.
    pub index: u32,
    /// Bridge (controller) index, if enslaved.
    pub controller: Option<u32>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

/// An rtnetlink connection into one namespace.
pub struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Netlink {
    /// Opens a route netlink socket inside `ns`.
    pub async fn connect(ns: &Ns) -> Result<Netlink> {
        let rt = tokio::runtime::Handle::current();
        let path = ns.name().map(|n| format!("/run/netns/{n}"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| -> Result<_> {
                if let Some(p) = &path {
                    let f = std::fs::File::open(p).with_context(|| format!("open {p}"))?;
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                }
                let _g = rt.enter();
                let (conn, handle, _) = rtnetlink::new_connection()?;
                Ok((conn, handle))
            })();
            let _ = tx.send(r);
        });
        let (conn, handle) = rx.await.map_err(|_| anyhow!("netlink thread died"))??;
        Ok(Netlink { handle, task: tokio::spawn(conn) })
    }

    /// All links by name (one dump).
    pub async fn links(&self) -> Result<BTreeMap<String, NlLink>> {
        let mut out = BTreeMap::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.try_next().await? {
            let mut name = None;
            let mut l =
                NlLink { index: m.header.index, controller: None, mtu: 0, up: m.header.flags.contains(LinkFlags::Up) };
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Controller(c) => l.controller = Some(*c),
                    LinkAttribute::Mtu(v) => l.mtu = *v,
                    _ => {}
                }
            }
            if let Some(n) = name {
                out.insert(n, l);
            }
        }
        Ok(out)
    }

    /// Enslaves link `index` to bridge `controller`, with `mtu`, up — in one request, and
    /// only when something differs.
    pub async fn plug(&self, link: &NlLink, controller: u32, mtu: u32) -> Result<()> {
        if link.controller == Some(controller) && link.mtu == mtu && link.up {
            return Ok(());
        }
        let msg = LinkUnspec::new_with_index(link.index).controller(controller).mtu(mtu).up().build();
        self.handle.link().set(msg).execute().await?;
        Ok(())
    }
}

/// A MAC as the kernel sends it → `aa:bb:cc:dd:ee:ff`.
fn mac_text(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// `aa:bb:cc:dd:ee:ff` → bytes.
fn mac_bytes(s: &str) -> Result<Vec<u8>> {
    s.split(':').map(|p| u8::from_str_radix(p, 16).map_err(|e| anyhow!("bad MAC {s}: {e}"))).collect()
}

impl Netlink {
    /// The remote-VTEP entries (`mac`, `dst`) of a VXLAN device's forwarding table.
    pub async fn vxlan_fdb(&self, ifindex: u32) -> Result<std::collections::BTreeSet<(String, Ipv4Addr)>> {
        let mut out = std::collections::BTreeSet::new();
        let mut s = self.handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
        while let Some(m) = s.try_next().await? {
            if m.header.ifindex != ifindex {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => mac = Some(mac_text(l)),
                    // In AF_BRIDGE messages the kernel's NDA_DST is parsed as raw bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(*v4),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                        dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    }
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.insert((mac, dst));
            }
        }
        Ok(out)
    }

    fn fdb_message(ifindex: u32, mac: &str, dst: Ipv4Addr) -> Result<NeighbourMessage> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = ifindex;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own; // NTF_SELF: the VXLAN device's own table
        m.header.kind = RouteType::Unspec;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac_bytes(mac)?));
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        Ok(m)
    }

    /// Adds `mac → dst`. `append` adds one more destination for the same MAC (the all-zero
    /// flood entry has one per remote host, like `bridge fdb append`); otherwise it replaces.
    pub async fn vxlan_fdb_add(&self, ifindex: u32, mac: &str, dst: Ipv4Addr, append: bool) -> Result<()> {
        let m = Self::fdb_message(ifindex, mac, dst)?;
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(m));
        let mode = if append { NLM_F_APPEND } else { NLM_F_REPLACE };
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode;
        let mut resp = self.handle.clone().request(req)?;
        while let Some(msg) = resp.next().await {
            if let NetlinkPayload::Error(e) = msg.payload {
                return Err(anyhow!("fdb add {mac} dst {dst}: {e}"));
            }
        }
        Ok(())
    }

    /// Deletes `mac → dst`.
    pub async fn vxlan_fdb_del(&self, ifindex: u32, mac: &str, dst: Ipv4Addr) -> Result<()> {
        let m = Self::fdb_message(ifindex, mac, dst)?;
        self.handle.neighbours().del(m).execute().await?;
        Ok(())
    }
}
