//! The compute agent: nova-compute's role, one per hypervisor host.
//!
//! It drives a [`virt::VirtDriver`] and talks to the controller only through the bus
//! ([`rpc`]): it registers its host (service, compute node, resource provider with
//! inventories from the host's real resources), heartbeats, runs guest operations it is
//! sent, reports every outcome to the conductor, and periodically reconciles what the
//! driver sees with what the controller expects (power states; guests without a server
//! are destroyed). It holds no state the controller does not have, so it can be killed
//! and restarted at any time.

pub mod agent;
pub mod metadata;
pub mod rpc;
pub mod virt;

pub use agent::{Agent, AgentConfig, AgentHandle};
