//! Netlink (rtnetlink) for the hot path: plugging a port into its bridge when a guest boots.
//!
//! A netlink socket belongs to the network namespace of the thread that opened it, so
//! [`Netlink::connect`] opens it on a short-lived thread that first joins the host namespace
//! (`setns`); the socket then keeps talking to that namespace from any tokio worker. No
//! worker thread ever changes namespace.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
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
