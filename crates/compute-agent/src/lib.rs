//! The compute agent: nova-compute's role, one per hypervisor host.
//!
//! It drives a [`virt::VirtDriver`] and talks to the controller only through the bus, in
//! the messages of the contract crate `stratus-compute-proto` (re-exported as [`proto`]):
//! it registers its host (service, compute node, resource provider with inventories from
//! the host's real resources), heartbeats, runs guest operations it is sent, reports every
//! outcome to the conductor, and periodically reconciles what the driver sees with what
//! the controller expects (power states; guests without a server are destroyed). It
//! holds no state the controller does not have, so it can be killed and restarted at any
//! time. The controller never links this crate: the binary assembles an in-process agent.

pub mod agent;
pub mod virt;

pub use agent::{Agent, AgentConfig, AgentHandle};
pub use stratus_compute_proto as proto;
