//! The in-process bus of the all-in-one cloud: tokio channels, no broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{Bus, BusError, Delivery, Message, Notification, Subscription};

const QUEUE_DEPTH: usize = 1024;

#[derive(Default)]
struct Topic {
    consumers: Vec<mpsc::Sender<Delivery>>,
    next: AtomicUsize,
}

/// Bus for a single process. Topic consumers are served round-robin, skipping any that
/// have gone away, which is how a restarted agent simply re-subscribes.
#[derive(Clone)]
pub struct InProcBus {
    topics: Arc<Mutex<HashMap<String, Topic>>>,
    fanouts: Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Delivery>>>>>,
    notifications: broadcast::Sender<Notification>,
}

impl Default for InProcBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcBus {
    /// An empty bus.
    pub fn new() -> Self {
        InProcBus { topics: Arc::default(), fanouts: Arc::default(), notifications: broadcast::channel(QUEUE_DEPTH).0 }
    }

    fn pick(&self, topic: &str) -> Option<mpsc::Sender<Delivery>> {
        let mut topics = self.topics.lock();
        let t = topics.get_mut(topic)?;
        t.consumers.retain(|c| !c.is_closed());
        if t.consumers.is_empty() {
            return None;
        }
        let i = t.next.fetch_add(1, Ordering::Relaxed) % t.consumers.len();
        Some(t.consumers[i].clone())
    }

    async fn deliver(&self, topic: &str, d: Delivery) -> Result<(), BusError> {
        let mut d = d;
        // A consumer may close between pick and send; try the others once each.
        for _ in 0..8 {
            let Some(tx) = self.pick(topic) else { break };
            match tx.send(d).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => d = back,
            }
        }
        Err(BusError::NoConsumer(topic.to_string()))
    }
}

#[async_trait]
impl Bus for InProcBus {
    async fn cast(&self, topic: &str, msg: Message) -> Result<(), BusError> {
        self.deliver(topic, Delivery { message: msg, reply: None }).await
    }

    async fn call(&self, topic: &str, msg: Message, timeout: Duration) -> Result<Value, BusError> {
        let (tx, rx) = oneshot::channel();
        self.deliver(topic, Delivery { message: msg, reply: Some(tx) }).await?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(BusError::Timeout { topic: topic.to_string(), timeout_ms: timeout.as_millis() as u64 }),
            Ok(Err(_)) => Err(BusError::Disconnected(topic.to_string())),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(BusError::Remote(e)),
        }
    }

    async fn fanout(&self, exchange: &str, msg: Message) -> Result<(), BusError> {
        let subs: Vec<_> = {
            let mut f = self.fanouts.lock();
            let subs = f.entry(exchange.to_string()).or_default();
            subs.retain(|s| !s.is_closed());
            subs.clone()
        };
        for s in subs {
            let _ = s.send(Delivery { message: msg.clone(), reply: None }).await;
        }
        Ok(())
    }

    async fn notify(&self, n: Notification) -> Result<(), BusError> {
        // No listener is not an error: notifications are best effort by design.
        let _ = self.notifications.send(n);
        Ok(())
    }

    async fn consume(&self, topic: &str) -> Result<Subscription, BusError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        self.topics.lock().entry(topic.to_string()).or_default().consumers.push(tx);
        Ok(Subscription { rx })
    }

    async fn subscribe_fanout(&self, exchange: &str) -> Result<Subscription, BusError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        self.fanouts.lock().entry(exchange.to_string()).or_default().push(tx);
        Ok(Subscription { rx })
    }

    async fn listen_notifications(&self) -> Result<broadcast::Receiver<Notification>, BusError> {
        Ok(self.notifications.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn call_gets_reply_and_cast_is_delivered_once() {
        let bus = InProcBus::new();
        let mut a = bus.consume("compute.host1").await.unwrap();
        tokio::spawn(async move {
            while let Some(d) = a.recv().await {
                let v = d.message.args["x"].as_i64().unwrap();
                d.reply(Ok(json!({"y": v * 2})));
            }
        });
        let r = bus.call("compute.host1", Message::new("double", json!({"x": 21})), Duration::from_secs(1)).await;
        assert_eq!(r.unwrap(), json!({"y": 42}));
    }

    #[tokio::test]
    async fn call_without_consumer_or_reply_fails_cleanly() {
        let bus = InProcBus::new();
        let e = bus.call("nobody", Message::new("m", Value::Null), Duration::from_millis(50)).await;
        assert_eq!(e.unwrap_err(), BusError::NoConsumer("nobody".into()));
        let mut s = bus.consume("slow").await.unwrap();
        let keep = tokio::spawn(async move {
            let d = s.recv().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(d);
        });
        let e = bus.call("slow", Message::new("m", Value::Null), Duration::from_millis(50)).await;
        assert!(matches!(e.unwrap_err(), BusError::Timeout { .. }));
        keep.await.unwrap();
        // Consumer dropped: the topic has nobody left.
        let e = bus.cast("slow", Message::new("m", Value::Null)).await;
        assert!(matches!(e.unwrap_err(), BusError::NoConsumer(_)));
    }

    #[tokio::test]
    async fn round_robin_and_fanout_and_notifications() {
        let bus = InProcBus::new();
        let mut c1 = bus.consume("t").await.unwrap();
        let mut c2 = bus.consume("t").await.unwrap();
        bus.cast("t", Message::new("a", Value::Null)).await.unwrap();
        bus.cast("t", Message::new("b", Value::Null)).await.unwrap();
        assert_eq!(c1.recv().await.unwrap().message.method, "a");
        assert_eq!(c2.recv().await.unwrap().message.method, "b");

        let mut f1 = bus.subscribe_fanout("x").await.unwrap();
        let mut f2 = bus.subscribe_fanout("x").await.unwrap();
        bus.fanout("x", Message::new("all", Value::Null)).await.unwrap();
        assert_eq!(f1.recv().await.unwrap().message.method, "all");
        assert_eq!(f2.recv().await.unwrap().message.method, "all");

        let mut n = bus.listen_notifications().await.unwrap();
        bus.notify(Notification { event_type: "e".into(), publisher_id: "p".into(), payload: Value::Null })
            .await
            .unwrap();
        assert_eq!(n.recv().await.unwrap().event_type, "e");
    }
}
