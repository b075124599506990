//! The compute contract: everything the controller (`stratus-compute`) and a compute agent
//! (`stratus-compute-agent`) say to each other, and the value types both sides need.
//!
//! Neither side's implementation lives here, so the compiler enforces what the design
//! promises: the controller reaches an agent only over the bus, with these messages (it
//! links this crate, never the agent, QEMU or netlink), and an agent never needs the
//! controller's code or database. omicron keeps Nexus and its sled agents apart the same
//! way (a client/types crate in between).
//!
//! - [`version`]: the contract version every message carries, and which versions a side
//!   accepts (the previous minor version of its peer, so hosts upgrade one at a time);
//! - [`rpc`]: the two request enums ([`rpc::AgentRequest`], [`rpc::ConductorRequest`]),
//!   the guest operations ([`rpc::GuestOp`]) and their encoding as bus messages;
//! - [`spec`]: a guest as the hypervisor needs it ([`spec::GuestSpec`]);
//! - [`virt`]: hypervisor-level values (power states, host resources, migration targets);
//! - [`error`]: why a driver operation failed ([`error::VirtError`]) and the typed
//!   outcome an agent reports ([`error::AgentError`]);
//! - [`metadata`]: the instance metadata documents (metadata API and config drives).

pub mod error;
pub mod metadata;
pub mod rpc;
pub mod spec;
pub mod version;
pub mod virt;

pub use error::{AgentError, VirtError};
pub use version::{Version, CONTRACT};
