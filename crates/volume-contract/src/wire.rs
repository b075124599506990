//! How contract messages travel on the bus, and how their errors come back.
//!
//! A request enum becomes a bus [`Message`] whose `method` is the variant name and
//! whose `args` are its fields plus `"v"`, the protocol version of the sender. A
//! receiver refuses messages from a newer incompatible protocol ([`decode`]); fields
//! added later carry `#[serde(default)]`, so a newer receiver still reads an older
//! sender. Agent failures travel as a JSON-encoded [`AgentError`] in the bus's remote
//! error string, so the controller tells "no such volume" from "no space" from "the
//! agent is gone" ([`CallError`]).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stratus_bus::{Bus, BusError, Message};

/// Version of this contract. Bump the major part (this number) only for changes an
/// older peer cannot read; additive fields with defaults keep it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Oldest version this build still understands.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Encodes a `#[serde(tag = "method", content = "args")]` enum as a bus message.
pub fn encode<T: Serialize>(req: &T) -> Message {
    let v = serde_json::to_value(req).unwrap_or(Value::Null);
    let method = v.get("method").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut args = match v.get("args") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::Null) | None => serde_json::Map::new(),
        Some(other) => {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), other.clone());
            m
        }
    };
    args.insert("v".into(), Value::from(PROTOCOL_VERSION));
    Message { method, args: Value::Object(args) }
}

/// Decodes a bus message into a request enum, refusing incompatible versions.
pub fn decode<T: DeserializeOwned>(m: &Message) -> Result<T, AgentError> {
    let v = m.args.get("v").and_then(Value::as_u64).unwrap_or(0) as u32;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v) {
        return Err(AgentError::Incompatible(format!(
            "{:?} speaks volume contract version {v}; this side speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}",
            m.method
        )));
    }
    let mut args = m.args.clone();
    if let Value::Object(map) = &mut args {
        map.remove("v");
    }
    let unit = matches!(&args, Value::Object(map) if map.is_empty());
    let mut doc = serde_json::json!({ "method": m.method });
    if !unit {
        doc["args"] = args;
    }
    serde_json::from_value(doc.clone())
        .or_else(|first| {
            // A unit variant sent with an (empty) args object.
            if unit {
                doc["args"] = Value::Object(Default::default());
                serde_json::from_value(doc)
            } else {
                Err(first)
            }
        })
        .map_err(|e| AgentError::Incompatible(format!("cannot decode {:?}: {e}", m.method)))
}

/// Why an agent (or the controller, answering an agent) refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum AgentError {
    /// The volume, snapshot or backup has no data on this backend.
    #[error("{0}")]
    NotFound(String),
    /// The resource's state on the backend does not allow this (a snapshot with
    /// clones, a volume in use).
    #[error("{0}")]
    InvalidState(String),
    /// The backend has no room for it.
    #[error("{0}")]
    NoSpace(String),
    /// This backend cannot do it (e.g. an NBD export from a backend without one).
    #[error("{0}")]
    Unsupported(String),
    /// The message could not be understood (version or shape).
    #[error("{0}")]
    Incompatible(String),
    /// The operation failed on the backend.
    #[error("{0}")]
    Failed(String),
}

impl AgentError {
    /// The error as it travels in a bus reply.
    pub fn to_wire(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.to_string())
    }

    /// The error from a bus reply (any text that is not one becomes `Failed`).
    pub fn from_wire(s: &str) -> AgentError {
        serde_json::from_str(s).unwrap_or_else(|_| AgentError::Failed(s.to_string()))
    }
}

impl From<crate::steps::InjectedFailure> for AgentError {
    fn from(f: crate::steps::InjectedFailure) -> Self {
        AgentError::Failed(f.to_string())
    }
}

/// Why a call over the bus did not give an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The peer answered with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Nobody answered: no consumer, a timeout, or the peer went away mid-call. The
    /// operation may or may not have happened.
    #[error("{0}")]
    Transport(BusError),
}

impl CallError {
    /// True when the peer could not be reached at all (nothing can have happened).
    pub fn unreachable(&self) -> bool {
        matches!(self, CallError::Transport(BusError::NoConsumer(_)))
    }
}

/// Sends `req` to `topic` and decodes the reply as `R`.
pub async fn call<T: Serialize, R: DeserializeOwned>(
    bus: &dyn Bus,
    topic: &str,
    req: &T,
    timeout: Duration,
) -> Result<R, CallError> {
    match bus.call(topic, encode(req), timeout).await {
        Ok(v) => serde_json::from_value(v)
            .map_err(|e| CallError::Agent(AgentError::Incompatible(format!("unexpected reply from {topic}: {e}")))),
        Err(BusError::Remote(s)) => Err(CallError::Agent(AgentError::from_wire(&s))),
        Err(e) => Err(CallError::Transport(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{AgentRequest, ControllerRequest};
    use crate::types::VolumeRef;

    #[test]
    fn round_trip_carries_the_version_and_refuses_newer_peers() {
        let req = AgentRequest::DeleteVolume {
            volume: VolumeRef { id: "v1".into(), size_gb: 1, pool: "p".into(), location: Some("loc".into()) },
        };
        let m = encode(&req);
        assert_eq!(m.method, "delete_volume");
        assert_eq!(m.args["v"], PROTOCOL_VERSION);
        assert_eq!(decode::<AgentRequest>(&m).unwrap(), req);

        let unit = encode(&AgentRequest::Reconcile);
        assert_eq!(decode::<AgentRequest>(&unit).unwrap(), AgentRequest::Reconcile);

        let mut newer = m.clone();
        newer.args["v"] = (PROTOCOL_VERSION + 1).into();
        assert!(matches!(decode::<AgentRequest>(&newer), Err(AgentError::Incompatible(_))));
        let unknown = Message::new("frobnicate", serde_json::json!({"v": PROTOCOL_VERSION}));
        assert!(matches!(decode::<ControllerRequest>(&unknown), Err(AgentError::Incompatible(_))));
    }

    #[test]
    fn errors_survive_the_bus() {
        let e = AgentError::NoSpace("pool full".into());
        assert_eq!(AgentError::from_wire(&e.to_wire()), e);
        assert_eq!(AgentError::from_wire("plain"), AgentError::Failed("plain".into()));
    }
}
