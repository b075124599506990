//! Why a guest operation failed: a driver's [`VirtError`], and the [`AgentError`] an agent
//! reports to the controller, which decides what happens next from its variant alone.
//!
//! Contract 1.0 agents reported errors as text, and the controller told a build that
//! must not be rescheduled (`Build aborted: …`) and a cancelled live migration apart by
//! reading that text. From 1.1 the variant says it; text from a 1.0 agent is turned into
//! the same variants once, when it is decoded ([`AgentError::from_legacy_text`]).

use serde::{Deserialize, Deserializer, Serialize};

use crate::virt::PowerState;

/// Starts the text of a 1.0 agent's error that no other host can fix.
pub const LEGACY_BUILD_ABORTED: &str = "Build aborted: ";

/// The text of a 1.0 agent's error for a live migration cancelled on request.
pub const LEGACY_CANCELLED: &str = "live migration cancelled by request";

/// Why a driver operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Serialize, Deserialize)]
pub enum VirtError {
    /// No such guest on this host.
    #[error("instance {0} not found on this host")]
    NotFound(String),
    /// The guest's state does not allow the operation.
    #[error("instance {uuid} is {state:?}; cannot {op}")]
    InvalidState {
        /// Guest.
        uuid: String,
        /// Its power state.
        state: PowerState,
        /// Operation refused.
        op: String,
    },
    /// The driver does not implement this operation.
    #[error("the {driver} driver does not support {op}")]
    Unsupported {
        /// Driver name.
        driver: String,
        /// Operation.
        op: String,
    },
    /// A build that no other host would do better (Nova's `BuildAbortException`, e.g. a
    /// flavor disk smaller than the image): the controller ends it instead of
    /// rescheduling.
    #[error("Build aborted: {0}")]
    BuildAborted(String),
    /// A live migration stopped on request: the guest stays on its source.
    #[error("live migration cancelled by request")]
    Cancelled,
    /// The hypervisor failed.
    #[error("{0}")]
    Failed(String),
}

/// The outcome of a failed guest operation, as an agent reports it.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentError {
    /// No other host would do better: a build ends in ERROR instead of rescheduling.
    #[error("Build aborted: {reason}")]
    BuildAborted {
        /// What is wrong with the request.
        reason: String,
    },
    /// A live migration was cancelled on request: the move is rolled back as
    /// `cancelled`, not `error`.
    #[error("live migration cancelled by request")]
    Cancelled,
    /// The driver failed.
    #[error("{source}")]
    Failed {
        /// The driver's error.
        source: VirtError,
    },
}

impl From<VirtError> for AgentError {
    fn from(e: VirtError) -> Self {
        match e {
            VirtError::BuildAborted(reason) => AgentError::BuildAborted { reason },
            VirtError::Cancelled => AgentError::Cancelled,
            source => AgentError::Failed { source },
        }
    }
}

impl AgentError {
    /// A failure with only a message (the controller's own, e.g. an unreachable host).
    pub fn failed(msg: impl Into<String>) -> Self {
        AgentError::Failed { source: VirtError::Failed(msg.into()) }
    }

    /// How a contract 1.0 agent's error text is read: the only place where text decides.
    pub fn from_legacy_text(text: &str) -> Self {
        if let Some(reason) = text.strip_prefix(LEGACY_BUILD_ABORTED) {
            return AgentError::BuildAborted { reason: reason.to_string() };
        }
        if text.contains(LEGACY_CANCELLED) {
            return AgentError::Cancelled;
        }
        // `VirtError`'s own texts, so that a 1.0 agent's call replies read the same.
        if let Some((driver, op)) =
            text.strip_prefix("the ").and_then(|rest| rest.split_once(" driver does not support "))
        {
            return AgentError::Failed { source: VirtError::Unsupported { driver: driver.into(), op: op.into() } };
        }
        if let Some(uuid) = text.strip_prefix("instance ").and_then(|rest| rest.strip_suffix(" not found on this host"))
        {
            return AgentError::Failed { source: VirtError::NotFound(uuid.into()) };
        }
        AgentError::failed(text)
    }
}

impl<'de> Deserialize<'de> for AgentError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Typed {
            BuildAborted { reason: String },
            Cancelled,
            Failed { source: VirtError },
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Typed(Typed),
            Legacy(String),
        }
        Ok(match Wire::deserialize(d)? {
            Wire::Typed(Typed::BuildAborted { reason }) => AgentError::BuildAborted { reason },
            Wire::Typed(Typed::Cancelled) => AgentError::Cancelled,
            Wire::Typed(Typed::Failed { source }) => AgentError::Failed { source },
            Wire::Legacy(text) => AgentError::from_legacy_text(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_and_keep_their_text() {
        for e in [
            AgentError::BuildAborted { reason: "disk too small".into() },
            AgentError::Cancelled,
            AgentError::Failed { source: VirtError::NotFound("u".into()) },
            AgentError::failed("qemu died"),
        ] {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(serde_json::from_value::<AgentError>(v).unwrap(), e);
        }
        assert_eq!(AgentError::from(VirtError::BuildAborted("x".into())).to_string(), "Build aborted: x");
        assert_eq!(AgentError::from(VirtError::Cancelled).to_string(), LEGACY_CANCELLED);
        assert_eq!(AgentError::failed("boom").to_string(), "boom");
        assert_eq!(serde_json::to_value(AgentError::Cancelled).unwrap(), serde_json::json!({"kind": "cancelled"}));
    }

    #[test]
    fn contract_1_0_text_is_read_into_the_same_variants() {
        let read = |s: &str| serde_json::from_value::<AgentError>(serde_json::json!(s)).unwrap();
        assert_eq!(
            read("Build aborted: flavor disk too small"),
            AgentError::BuildAborted { reason: "flavor disk too small".into() }
        );
        assert_eq!(read("migration failed: live migration cancelled by request"), AgentError::Cancelled);
        assert_eq!(read("qemu exited"), AgentError::failed("qemu exited"));
        for e in [
            VirtError::Unsupported { driver: "fake".into(), op: "live migration abort".into() },
            VirtError::NotFound("u-1".into()),
        ] {
            assert_eq!(read(&e.to_string()), AgentError::Failed { source: e });
        }
    }
}
