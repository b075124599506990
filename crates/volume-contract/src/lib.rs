//! The contract between the volume controller (crate `stratus-volume`: API, scheduler,
//! the only writer of volume records) and the volume agents (crate
//! `stratus-volume-agent`, one per storage host, owning backends and never the
//! database).
//!
//! The controller depends on this crate and never on the agent crate; the binary
//! assembles an in-process agent. Everything the two sides say is one of the typed
//! enums of [`messages`], carried on the bus as JSON with the protocol version in it
//! ([`wire`]), so an AMQP transport carries exactly what the in-process bus does and a
//! peer speaking an incompatible version is refused loudly instead of misread.
//!
//! [`steps`] is the step-table runner both sides declare their multi-step operations
//! with: each step next to its undo, progress recorded as it goes, faults injectable at
//! every step by the tests.

pub mod messages;
pub mod steps;
pub mod types;
pub mod wire;

pub use messages::{AgentRequest, ControllerRequest};
pub use types::*;
pub use wire::{call, AgentError, CallError, PROTOCOL_VERSION};

/// Topic the volume controller consumes (registrations, heartbeats, reconcile lists).
pub const CONTROLLER_TOPIC: &str = "volume.controller";

/// Topic the agent serving backend `host@backend` consumes.
pub fn agent_topic(backend: &str) -> String {
    format!("volume.agent.{backend}")
}
