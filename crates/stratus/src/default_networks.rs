//! What `stratus up` creates on its first start when the network data plane runs:
//! devstack's networks, so that a new cloud's first server is reachable at once.
//!
//! - On the host: a veth pair. Its host end (`[public_network] host_interface`) holds the
//!   public range's gateway address (172.24.4.1/24 by default, devstack's `br-ex`); its
//!   other end (`<host_interface>-br`) is the physical interface of the physical network
//!   `public`, which the network agent enslaves to the public network's bridge. Floating
//!   IPs and router gateways then answer from the host. Made on every start (idempotent:
//!   a veth survives only as long as the host is up).
//! - In the cloud, once (a marker file in the data directory remembers it, so a network
//!   the operator deleted is not made again): the external flat network `public` with its
//!   subnet, the admin project's `private` network and subnet, and the router `router1`
//!   joining them, as devstack's `lib/neutron` does.
//!
//! Tests and benchmarks keep the data plane in namespaces of their own: with `[network_agent]
//! host_netns` set, both ends of the veth live in that namespace.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context};
use axum::http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stratus_core::{Platform, RequestContext};
use stratus_network_agent::AgentConfig;

/// `[public_network]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublicNetworkConfig {
    /// Make the host link and devstack's networks when the data plane runs. Default true.
    pub enabled: bool,
    /// The public (floating IP) range; the host holds its first address. Default
    /// `172.24.4.0/24` (devstack's).
    pub cidr: String,
    /// Host end of the veth (at most 12 characters; the other end adds `-br`). Default
    /// `stratus-ex`.
    pub host_interface: String,
    /// Physical network name of `public`. Default `public`.
    pub physical_network: String,
    /// The admin project's `private` subnet. Default `10.0.0.0/26` (devstack's).
    pub private_cidr: String,
}

impl Default for PublicNetworkConfig {
    fn default() -> Self {
        PublicNetworkConfig {
            enabled: true,
            cidr: "172.24.4.0/24".into(),
            host_interface: "stratus-ex".into(),
            physical_network: "public".into(),
            private_cidr: "10.0.0.0/26".into(),
        }
    }
}

/// A checked IPv4 range: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    net: Ipv4Addr,
    len: u8,
}

impl Range {
    fn parse(what: &str, s: &str) -> anyhow::Result<Range> {
        let (addr, len) =
            s.split_once('/').with_context(|| format!("{what} {s:?} is not a CIDR like 172.24.4.0/24"))?;
        let addr: Ipv4Addr = addr.parse().with_context(|| format!("{what} {s:?}: bad address"))?;
        let len: u8 = len.parse().ok().filter(|l| (8..=29).contains(l)).with_context(|| {
            format!("{what} {s:?}: the prefix length must be between 8 and 29 (room for a gateway and guests)")
        })?;
        let mask = u32::MAX << (32 - u32::from(len));
        let net = Ipv4Addr::from(u32::from(addr) & mask);
        if net != addr {
            bail!("{what} {s:?} has host bits set; did you mean {net}/{len}?");
        }
        Ok(Range { net, len })
    }

    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + n)
    }

    fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + (1u32 << (32 - u32::from(self.len))) - 2)
    }

    fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl PublicNetworkConfig {
    /// Checks the values (at start-up, before anything is made).
    pub fn validate(&self) -> anyhow::Result<()> {
        Range::parse("public_network.cidr", &self.cidr)?;
        Range::parse("public_network.private_cidr", &self.private_cidr)?;
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok(&self.host_interface) || self.host_interface.len() > 12 {
            bail!(
                "public_network.host_interface {:?} must be 1-12 letters, digits, '-' or '_' (the other end adds \"-br\")",
                self.host_interface
            );
        }
        if !name_ok(&self.physical_network) {
            bail!("public_network.physical_network {:?} must be letters, digits, '-' or '_'", self.physical_network);
        }
        Ok(())
    }

    fn peer(&self) -> String {
        format!("{}-br", self.host_interface)
    }
}

/// Makes the host link (the veth pair and the gateway address) and maps the physical
/// network to its cloud end in `agent`. Refuses, with what to do, when the gateway address
/// is already held by another interface (another cloud on this machine).
pub async fn prepare_host(cfg: &PublicNetworkConfig, agent: &mut AgentConfig) -> anyhow::Result<String> {
    let range = Range::parse("public_network.cidr", &cfg.cidr)?;
    let ns = agent.host_ns();
    let (host, peer) = (cfg.host_interface.as_str(), cfg.peer());
    let gw = format!("{}/{}", range.gateway(), range.len);
    let holders = ns.ip(&["-4", "-o", "addr", "show", "to", &gw]).await.unwrap_or_default();
    if let Some(other) = holders.lines().filter_map(|l| l.split_whitespace().nth(1)).find(|dev| *dev != host) {
        bail!(
            "{gw} is already on interface {other}: another cloud (or devstack) owns the public range here. \
             Set [public_network] cidr to a free range, or enabled = false"
        );
    }
    if !ns.link_exists(host).await {
        ns.ip(&["link", "add", host, "type", "veth", "peer", "name", &peer])
            .await
            .with_context(|| format!("creating the veth pair {host} <-> {peer}"))?;
    }
    if ns.ip(&["-4", "-o", "addr", "show", "dev", host, "to", &gw]).await.unwrap_or_default().trim().is_empty() {
        ns.ip(&["addr", "add", &gw, "dev", host]).await.with_context(|| format!("putting {gw} on {host}"))?;
    }
    ns.ip(&["link", "set", host, "up"]).await?;
    ns.ip(&["link", "set", &peer, "up"]).await?;
    agent.physical_interface_mappings.entry(cfg.physical_network.clone()).or_insert_with(|| peer.clone());
    Ok(format!("public {range} via {host} ({gw})"))
}

/// The marker file that says the networks were made.
fn marker(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("default-networks.json")
}

/// Ids of what [`create_networks`] made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Made {
    /// `public`.
    pub public: String,
    /// `private`.
    pub private: String,
    /// `router1`.
    pub router: String,
}

/// Creates devstack's networks once. Returns what exists (made now or before), or None
/// when the cloud already had a network named `public` of its own.
pub async fn create_networks(platform: &Platform, cfg: &PublicNetworkConfig) -> anyhow::Result<Option<Made>> {
    let path = marker(&platform.data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(serde_json::from_str(&text).ok());
    }
    let api = Api { platform, ctx: RequestContext::internal_admin() };
    if !api.get("/network/v2.0/networks?name=public").await?["networks"].as_array().is_none_or(|a| a.is_empty()) {
        tracing::info!("a network named public exists already: not making devstack's networks");
        std::fs::write(&path, "null").with_context(|| format!("writing {}", path.display()))?;
        return Ok(None);
    }
    let projects = api.get("/identity/v3/projects?name=admin&domain_id=default").await?;
    let admin = projects["projects"][0]["id"].as_str().context("the admin project does not exist")?.to_string();
    let range = Range::parse("public_network.cidr", &cfg.cidr)?;
    let private = Range::parse("public_network.private_cidr", &cfg.private_cidr)?;
    let public = api
        .post(
            "/network/v2.0/networks",
            json!({"network": {
                "name": "public", "project_id": admin, "router:external": true,
                "provider:network_type": "flat", "provider:physical_network": cfg.physical_network,
                "description": "devstack's public network: floating IPs and router gateways (stratus up)",
            }}),
        )
        .await?["network"]["id"]
        .as_str()
        .context("network id")?
        .to_string();
    api.post(
        "/network/v2.0/subnets",
        json!({"subnet": {
            "name": "public-subnet", "project_id": admin, "network_id": public, "ip_version": 4,
            "cidr": range.to_string(), "gateway_ip": range.gateway().to_string(), "enable_dhcp": false,
            "allocation_pools": [{"start": range.nth(2).to_string(), "end": range.last_host().to_string()}],
        }}),
    )
    .await?;
    let private_net = api
        .post("/network/v2.0/networks", json!({"network": {"name": "private", "project_id": admin}}))
        .await?["network"]["id"]
        .as_str()
        .context("network id")?
        .to_string();
    let private_subnet = api
        .post(
            "/network/v2.0/subnets",
            json!({"subnet": {
                "name": "private-subnet", "project_id": admin, "network_id": private_net, "ip_version": 4,
                "cidr": private.to_string(), "gateway_ip": private.gateway().to_string(),
            }}),
        )
        .await?["subnet"]["id"]
        .as_str()
        .context("subnet id")?
        .to_string();
    let router = api
        .post(
            "/network/v2.0/routers",
            json!({"router": {"name": "router1", "project_id": admin,
                "external_gateway_info": {"network_id": public}}}),
        )
        .await?["router"]["id"]
        .as_str()
        .context("router id")?
        .to_string();
    api.put(&format!("/network/v2.0/routers/{router}/add_router_interface"), json!({"subnet_id": private_subnet}))
        .await?;
    let made = Made { public, private: private_net, router };
    std::fs::write(&path, serde_json::to_vec_pretty(&made)?).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(?made, "made devstack's networks: public, private, router1");
    Ok(Some(made))
}

/// Calls of the in-process APIs as the internal admin, failing on any non-2xx answer.
struct Api<'a> {
    platform: &'a Platform,
    ctx: RequestContext,
}

impl Api<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let what = format!("{method} {path}");
        let resp = self
            .platform
            .internal
            .call(&self.ctx, method, path, body.as_ref(), &[])
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {}", e.message))?;
        if !resp.status.is_success() {
            bail!("{what}: {} {}", resp.status, resp.body);
        }
        Ok(resp.body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_and_give_devstacks_addresses() {
        let r = Range::parse("x", "172.24.4.0/24").unwrap();
        assert_eq!(r.gateway().to_string(), "172.24.4.1");
        assert_eq!(r.nth(2).to_string(), "172.24.4.2");
        assert_eq!(r.last_host().to_string(), "172.24.4.254");
        assert_eq!(Range::parse("x", "10.0.0.0/26").unwrap().last_host().to_string(), "10.0.0.62");
        let e = Range::parse("x", "172.24.4.1/24").unwrap_err().to_string();
        assert!(e.contains("did you mean 172.24.4.0/24"), "{e}");
        assert!(Range::parse("x", "172.24.4.0/31").is_err());
        assert!(Range::parse("x", "nonsense").is_err());
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_do() {
        let mut c = PublicNetworkConfig::default();
        c.validate().unwrap();
        c.host_interface = "a-very-long-name".into();
        assert!(c.validate().unwrap_err().to_string().contains("1-12"));
        c = PublicNetworkConfig { cidr: "300.1.1.0/24".into(), ..Default::default() };
        assert!(c.validate().is_err());
    }
}
