//! The Stratus network agent: makes a host's kernel carry the networks the network service
//! describes (Neutron's Linux bridge + DHCP + L3 agents in one).
//!
//! The agent builds everything relative to a configurable *host namespace*
//! ([`AgentConfig::host_netns`]): in production that is the root namespace (`None`), in
//! tests a namespace the test created to play a hypervisor. Bridges, VXLAN/VLAN devices,
//! taps and the nftables tables live there; each DHCP server and router gets its own named
//! namespace (`<netns_prefix>qdhcp-<net>`, `<netns_prefix>qrouter-<id>`), joined to the
//! bridges by veth pairs.
//!
//! Modules: [`model`] (the desired state JSON, from the contract crate `stratus-network-proto`), [`l2`] (bridges, segments, plugging,
//! l2population), [`dhcp`] (dnsmasq), [`l3`] (routers, NAT, floating IPs), [`firewall`]
//! (security groups, anti-spoofing), [`agent`] (the convergence loop and its bus protocol).
//!
//! Plugging ports (the per-boot hot path) uses rtnetlink ([`nl`]); the rest of the device,
//! address and FDB work goes through iproute2 (`ip -j`, `bridge -j`) with validated argv
//! (no shell).

pub mod agent;
pub mod dev;
pub mod dhcp;
pub mod exec;
pub mod firewall;
pub mod l2;
pub mod l3;
pub mod metadata;
pub mod nl;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use agent::{BusStateSource, DesiredStateSource, NetworkAgent};
pub use stratus_network_proto::model;
pub use stratus_network_proto::DesiredState;

/// The `[network_agent]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Run the agent inside `stratus up`: `"true"`, `"false"`, or `"auto"` (yes when
    /// running as root with `ip`, `nft` and `dnsmasq` installed). Default: `"auto"`, so
    /// `stratus up` as root runs its data plane as devstack does (env
    /// `STRATUS_NETWORK_AGENT_ENABLED`). Tests and benchmarks on a shared machine set
    /// `"false"`, or `"true"` with a `host_netns` of their own: an agent in the root namespace
    /// builds bridges and nft tables there.
    pub enabled: String,
    /// Host name ports are bound to (`binding:host_id`). Default: empty, which `stratus up`
    /// replaces with the local compute agent's host (so bindings match).
    pub host: String,
    /// Namespace holding bridges and taps; `None` (default) = in `stratus up`, `[compute]
    /// host_netns` (where QEMU makes the taps), and when that is unset too, the agent's own
    /// (root) namespace.
    pub host_netns: Option<String>,
    /// Prefix of the DHCP/router namespace names. Default: empty (`qdhcp-…`, `qrouter-…`).
    pub netns_prefix: String,
    /// Physical network name → interface in the host namespace (flat and VLAN networks).
    /// Default: empty.
    pub physical_interface_mappings: BTreeMap<String, String>,
    /// Local VXLAN endpoint address. Default: none (VXLAN networks then fail to realise).
    pub tunnel_ip: Option<Ipv4Addr>,
    /// Underlay device for VXLAN; default none (the route to the peer decides).
    pub tunnel_interface: Option<String>,
    /// VXLAN UDP port. Default: 4789.
    pub vxlan_port: u16,
    /// Where dnsmasq files and nft scratch files go. Default: empty, which `stratus up`
    /// replaces with `<data_dir>/network-agent`.
    pub state_dir: PathBuf,
    /// Seconds between full re-convergences. Default: 30.
    pub resync_interval_secs: u64,
    /// Seconds between heartbeats (`report_state`). Default: 10.
    pub heartbeat_interval_secs: u64,
    /// Milliseconds between looks for new tap devices of bound ports (a hypervisor made
    /// one), which trigger a convergence. Default: 500.
    pub device_poll_interval_ms: u64,
    /// Key of the metadata proxy's `X-Instance-ID-Signature` (Neutron's
    /// `metadata_proxy_shared_secret`). Default: empty, which `stratus up` replaces with the
    /// compute service's secret.
    pub metadata_proxy_shared_secret: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            enabled: "auto".into(),
            host: String::new(),
            host_netns: None,
            netns_prefix: String::new(),
            physical_interface_mappings: BTreeMap::new(),
            tunnel_ip: None,
            tunnel_interface: None,
            vxlan_port: 4789,
            state_dir: PathBuf::new(),
            resync_interval_secs: 30,
            heartbeat_interval_secs: 10,
            device_poll_interval_ms: 500,
            metadata_proxy_shared_secret: String::new(),
        }
    }
}

impl AgentConfig {
    /// The host namespace as an [`exec::Ns`].
    pub fn host_ns(&self) -> exec::Ns {
        match &self.host_netns {
            Some(n) => exec::Ns::named(n.clone()),
            None => exec::Ns::Root,
        }
    }
}
