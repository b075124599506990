//! The message bus between controller and agents (oslo.messaging's role).
//!
//! Four patterns, as Nova and Neutron use them: `cast` (one consumer of a topic gets the
//! message, no reply), `call` (one consumer replies, the caller waits with a timeout),
//! `fanout` (every subscriber of an exchange gets it), and `notify` (events for
//! whoever listens). Payloads are JSON values so a networked transport (AMQP) can carry
//! exactly what the in-process one does; nothing here assumes a shared address space.

mod inproc;

pub use inproc::InProcBus;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request travelling on the bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// The remote method to invoke (e.g. `build_instance`).
    pub method: String,
    /// Its arguments.
    pub args: Value,
}

impl Message {
    /// A message for `method` with `args`.
    pub fn new(method: impl Into<String>, args: Value) -> Self {
        Message { method: method.into(), args }
    }
}

/// An event published for listeners (`compute.instance.create.end` and the like).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    /// Event type, dotted.
    pub event_type: String,
    /// Who emitted it (`compute.host1`).
    pub publisher_id: String,
    /// Event body.
    pub payload: Value,
}

/// Errors the bus reports to callers.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Serialize, Deserialize)]
pub enum BusError {
    /// Nobody consumes the topic, so the message would be lost.
    #[error("no consumer for topic {0}")]
    NoConsumer(String),
    /// The consumer did not reply in time.
    #[error("call to {topic} timed out after {timeout_ms} ms")]
    Timeout {
        /// Topic called.
        topic: String,
        /// Timeout applied.
        timeout_ms: u64,
    },
    /// The consumer went away before replying.
    #[error("consumer of {0} went away before replying")]
    Disconnected(String),
    /// The remote handler returned an error.
    #[error("remote error: {0}")]
    Remote(String),
}

/// A received message and, for `call`, the means to answer it.
pub struct Delivery {
    /// The message.
    pub message: Message,
    reply: Option<tokio::sync::oneshot::Sender<Result<Value, String>>>,
}

impl Delivery {
    /// True when the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.reply.is_some()
    }

    /// Answers a `call`; ignored for a `cast`.
    pub fn reply(self, result: Result<Value, String>) {
        if let Some(tx) = self.reply {
            let _ = tx.send(result);
        }
    }
}

/// A stream of deliveries for one topic or exchange.
pub struct Subscription {
    rx: tokio::sync::mpsc::Receiver<Delivery>,
}

impl Subscription {
    /// Next delivery; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

/// The transport-neutral bus interface.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Delivers `msg` to one consumer of `topic`, without waiting for it to be handled.
    async fn cast(&self, topic: &str, msg: Message) -> Result<(), BusError>;
    /// Delivers `msg` to one consumer of `topic` and waits up to `timeout` for its reply.
    async fn call(&self, topic: &str, msg: Message, timeout: Duration) -> Result<Value, BusError>;
    /// Delivers `msg` to every subscriber of `exchange` (none is fine).
    async fn fanout(&self, exchange: &str, msg: Message) -> Result<(), BusError>;
    /// Publishes a notification to every notification listener.
    async fn notify(&self, n: Notification) -> Result<(), BusError>;
    /// Joins the competing consumers of `topic`.
    async fn consume(&self, topic: &str) -> Result<Subscription, BusError>;
    /// Subscribes to every message fanned out on `exchange`.
    async fn subscribe_fanout(&self, exchange: &str) -> Result<Subscription, BusError>;
    /// Receives every notification published from now on.
    async fn listen_notifications(&self) -> Result<tokio::sync::broadcast::Receiver<Notification>, BusError>;
}
