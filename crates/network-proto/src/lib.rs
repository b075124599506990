//! The network contract: what the network service (`stratus-network`) and a network agent
//! (`stratus-network-agent`) exchange over the bus, and nothing of either side's
//! implementation, so the service never links the agent (nor netlink, nftables or
//! dnsmasq code).
//!
//! - [`model`]: the desired state of one host (networks, subnets, ports, routers,
//!   floating IPs, security groups), the answer to `get_desired_state`;
//! - the topics below. The methods and their arguments are described in
//!   `stratus_network_agent::agent` (`get_desired_state`, `update_port_status`,
//!   `report_state`; `desired_state_changed` and `security_groups_changed` on the fanout
//!   exchange).

pub mod model;

pub use model::DesiredState;

/// Topic the network service consumes.
pub const SERVER_TOPIC: &str = "network-server";

/// Fanout exchange the agents listen on.
pub const AGENT_EXCHANGE: &str = "network-agent";
