//! The volume agent: cinder-volume's role, one per storage host.
//!
//! It owns its host's backends ([`backend`]: `file` now, `rbd` for Ceph), their
//! exports to other hosts ([`export`]) and the backups it writes ([`backup`]), and talks
//! to the controller only through the bus, in the typed messages of
//! `stratus-volume-contract` ([`agent`]). It never touches the database: the controller
//! tells it what should exist, and its reconciliation removes the rest, so it can be
//! killed and restarted at any moment.

pub mod agent;
pub mod backend;
pub mod backup;
pub mod config;
pub mod export;
pub mod images;
pub mod qcow2;

pub use agent::{AgentHandle, VolumeAgent};
pub use config::AgentConfig;
