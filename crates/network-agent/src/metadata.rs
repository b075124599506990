//! Metadata proxy: `http://169.254.169.254/` for guests, as Neutron's metadata proxy
//! (isolated networks: inside `qdhcp-<net>`; routed ones: inside `qrouter-<id>`).
//!
//! In every DHCP and router namespace this host runs, `169.254.169.254/32` sits on `lo`
//! and a listener on port 80 serves it. Guests reach it through the DHCP port (DHCP pushes
//! the route, option 121) or through their gateway. The listening socket is created on a
//! short-lived thread that first joins the namespace (`setns`): a socket keeps the
//! namespace it was made in, so the tokio task serving it never changes namespace.
//! Over IPv6 (Neutron's `fe80::a9fe:a9fe`, for IPv6-only networks) the DHCP namespaces
//! also carry that address on the DHCP port's interface and listen on `[::]:80`; a guest
//! is then known by its port's IPv6 address or the link-local address of its MAC.
//!
//! A request is mapped to an instance by where it came from: the namespace tells the network
//! (for a router, the networks of its interfaces) and the source address the port on it; the
//! port's `device_id` is the server. A guest therefore cannot name another instance: the
//! identity comes from the desired state, never from the request. The proxy forwards with
//! Nova's headers `X-Instance-ID`, `X-Instance-ID-Signature` (hex HMAC-SHA256 of the
//! instance id with the shared secret) and `X-Forwarded-For` to a [`MetadataBackend`]
//! (in `stratus up`, the compute service's metadata API in-process).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{watch, Mutex};

use crate::model::DesiredState;
use crate::{dhcp, l3, AgentConfig};

/// The metadata address.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The metadata address over IPv6 (Neutron's, for IPv6-only networks): link-local, on
/// the DHCP port's interface of each network's DHCP namespace.
pub const METADATA_IP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe);

/// A metadata API answer.
#[derive(Debug, Clone)]
pub struct MetadataReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

/// Where signed requests go (the compute service's metadata API).
#[async_trait]
pub trait MetadataBackend: Send + Sync {
    /// `GET path_and_query` (relative to the metadata root, e.g. `/latest/meta-data/`) with
    /// the identifying headers.
    async fn get(&self, path_and_query: &str, headers: &[(String, String)]) -> Result<MetadataReply>;
}

/// Hex HMAC-SHA256 of `instance_id` keyed with `secret`: Nova's `X-Instance-ID-Signature`.
pub fn sign(secret: &str, instance_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(instance_id.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a listener serves: one network's namespace or one router's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Network(String),
    Router(String),
}

struct Listener {
    inode: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxies of one host.
pub struct MetadataProxy {
    cfg: AgentConfig,
    backend: Arc<dyn MetadataBackend>,
    state: watch::Receiver<Arc<DesiredState>>,
    listeners: Mutex<BTreeMap<String, Listener>>,
}

struct Ctx {
    proxy: Arc<MetadataProxy>,
    scope: Scope,
}

impl MetadataProxy {
    /// A proxy reading the agent's current state from `state`.
    pub fn new(
        cfg: AgentConfig,
        backend: Arc<dyn MetadataBackend>,
        state: watch::Receiver<Arc<DesiredState>>,
    ) -> Arc<Self> {
        Arc::new(MetadataProxy { cfg, backend, state, listeners: Mutex::new(BTreeMap::new()) })
    }

    /// The namespaces this host should serve metadata in, with what they serve.
    fn wanted(&self, state: &DesiredState) -> BTreeMap<String, Scope> {
        let mut out = BTreeMap::new();
        for net in &state.networks {
            let here = state.ports.iter().any(|p| {
                p.network_id == net.id && p.device_owner == "network:dhcp" && p.binding_host_id == self.cfg.host
            });
            if here {
                out.insert(dhcp::netns_name(&self.cfg, &net.id), Scope::Network(net.id.clone()));
            }
        }
        for r in &state.routers {
            let here = r
                .interface_port_ids
                .iter()
                .any(|id| state.port(id).is_some_and(|p| p.binding_host_id == self.cfg.host));
            if here {
                out.insert(l3::netns_name(&self.cfg, &r.id), Scope::Router(r.id.clone()));
            }
        }
        out
    }

    /// Starts listeners in namespaces that have none (or were recreated) and stops those
    /// whose namespace is no longer wanted. Namespaces not yet made are retried next time.
    pub async fn converge(self: &Arc<Self>) -> Result<()> {
        let state = self.state.borrow().clone();
        let wanted = self.wanted(&state);
        let mut listeners = self.listeners.lock().await;
        listeners.retain(|ns, _| wanted.contains_key(ns));
        let mut errors = Vec::new();
        for (ns, scope) in wanted {
            let Ok(inode) = std::fs::metadata(format!("/run/netns/{ns}")).map(|m| m.ino()) else { continue };
            // Interfaces come and go (a router gains one): their IPv6 metadata address too.
            if let Err(e) = ensure_v6_address(&ns).await {
                // IPv4 metadata must not depend on it (a host may run without IPv6).
                tracing::warn!(netns = %ns, "no IPv6 metadata address: {e:#}");
            }
            if listeners.get(&ns).is_some_and(|l| l.inode == inode && !l.task.is_finished()) {
                continue;
            }
            match self.listen(&ns, scope).await {
                Ok(task) => {
                    listeners.insert(ns, Listener { inode, task });
                }
                Err(e) => errors.push(format!("metadata proxy in {ns}: {e:#}")),
            }
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    /// Namespaces with a running listener (tests).
    pub async fn serving(&self) -> BTreeSet<String> {
        self.listeners.lock().await.keys().cloned().collect()
    }

    async fn listen(self: &Arc<Self>, ns: &str, scope: Scope) -> Result<tokio::task::JoinHandle<()>> {
        let n = crate::exec::Ns::named(ns);
        let have = n.ip(&["-4", "-o", "addr", "show", "dev", "lo"]).await?;
        if !have.contains(&format!(" {METADATA_IP}/32")) {
            n.ip(&["addr", "add", &format!("{METADATA_IP}/32"), "dev", "lo"]).await?;
        }
        n.ip(&["link", "set", "dev", "lo", "up"]).await?;
        let path = format!("/run/netns/{ns}");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| -> Result<(std::net::TcpListener, Option<std::net::TcpListener>)> {
                let f = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                let l = std::net::TcpListener::bind(SocketAddr::from((METADATA_IP, 80))).context("bind :80")?;
                l.set_nonblocking(true)?;
                let v6 = listen_v6().map_err(|e| tracing::warn!("no IPv6 metadata listener (IPv4 only): {e}")).ok();
                Ok((l, v6))
            })();
            let _ = tx.send(r);
        });
        let (std_v4, std_v6) = rx.await.map_err(|_| anyhow!("listener thread died"))??;
        let ctx = Arc::new(Ctx { proxy: self.clone(), scope });
        let app = axum::Router::new().fallback(serve).with_state(ctx);
        let ns = ns.to_string();
        let serve_on = |l: std::net::TcpListener, app: axum::Router, ns: String| async move {
            let listener = tokio::net::TcpListener::from_std(l)?;
            let svc = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, svc).await {
                tracing::warn!(netns = %ns, "metadata proxy stopped: {e}");
            }
            Ok::<_, std::io::Error>(())
        };
        let v4 = serve_on(std_v4, app.clone(), ns.clone());
        let v6 = std_v6.map(|l| serve_on(l, app, ns));
        Ok(tokio::spawn(async move {
            match v6 {
                Some(v6) => drop(tokio::join!(v4, v6)),
                None => drop(v4.await),
            }
        }))
    }

    /// The instance behind a source address in a scope: the `compute:*` port with that
    /// fixed IP on the scope's network(s), or over IPv6 also with that link-local address
    /// (the EUI-64 of its MAC, which anti-spoofing lets it use, as Neutron maps it).
    fn instance_of(&self, scope: &Scope, src: IpAddr) -> Option<String> {
        let state = self.state.borrow().clone();
        let networks: BTreeSet<String> = match scope {
            Scope::Network(n) => [n.clone()].into(),
            Scope::Router(r) => {
                let r = state.routers.iter().find(|x| &x.id == r)?;
                r.interface_port_ids.iter().filter_map(|id| state.port(id)).map(|p| p.network_id.clone()).collect()
            }
        };
        state
            .ports
            .iter()
            .filter(|p| networks.contains(&p.network_id) && p.device_owner.starts_with("compute:"))
            .find(|p| match src {
                IpAddr::V4(v4) => p.ipv4s().any(|a| a == v4),
                IpAddr::V6(v6) => p.ipv6s().any(|a| a == v6) || p.link_local() == Some(v6),
            })
            .map(|p| p.device_id.clone())
            .filter(|d| !d.is_empty())
    }
}

/// The IPv6 listener: `[::]:80`, IPv6 only (the IPv4 one holds 169.254.169.254:80).
fn listen_v6() -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 80, 0, 0)).into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Puts [`METADATA_IP6`] on the DHCP port's interface (`ns-`) of namespace `ns`, without
/// duplicate detection (the same link-local address on every network is the point). Not
/// on a router's interfaces: the router's advertisements would then come from it, and
/// guests take their default route from that source; so on routed networks metadata
/// over IPv6 needs the network's DHCP port (isolated metadata), as IPv4's option 121 does.
async fn ensure_v6_address(ns: &str) -> Result<()> {
    let n = crate::exec::Ns::named(ns);
    let links = n.ip(&["-o", "link", "show"]).await?;
    let addrs = n.ip(&["-6", "-o", "addr", "show"]).await.unwrap_or_default();
    for dev in links.lines().filter_map(|l| l.split(": ").nth(1)).map(|d| d.split('@').next().unwrap_or(d)) {
        if !dev.starts_with("ns-") {
            continue;
        }
        let have = addrs.lines().any(|l| l.contains(&format!(" {dev} ")) && l.contains(&format!("{METADATA_IP6}/64")));
        if !have {
            n.ip(&["-6", "addr", "add", &format!("{METADATA_IP6}/64"), "dev", dev, "nodad"]).await?;
        }
    }
    Ok(())
}

async fn serve(State(ctx): State<Arc<Ctx>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return (StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n").into_response();
    }
    let src = match peer.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    };
    let Some(instance) = ctx.proxy.instance_of(&ctx.scope, src) else {
        tracing::info!(%src, "metadata request from an address with no instance");
        return (StatusCode::NOT_FOUND, "404 Not Found\n").into_response();
    };
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let headers = vec![
        ("X-Instance-ID".to_string(), instance.clone()),
        ("X-Instance-ID-Signature".to_string(), sign(&ctx.proxy.cfg.metadata_proxy_shared_secret, &instance)),
        ("X-Forwarded-For".to_string(), src.to_string()),
    ];
    match ctx.proxy.backend.get(&path, &headers).await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [(header::CONTENT_TYPE, r.content_type)], r.body).into_response()
        }
        Err(e) => {
            tracing::warn!(%instance, "metadata backend: {e:#}");
            (StatusCode::BAD_GATEWAY, "502 Bad Gateway\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
