//! `OS::Heat::WaitConditionHandle` and `OS::Heat::WaitCondition`: a stack waits until
//! something outside it (a guest's boot script) signals. The handle makes a secret
//! token and a signal URL (`endpoint`, and `curl_cli`: the curl command a script
//! completes with `--data-binary '{"status": "SUCCESS"}'`); signals are stored on the
//! handle's row ([`crate::store::record_signal`], so they survive a restart), and the
//! wait condition completes once `count` successes arrived, fails on a `FAILURE`, and
//! fails with `WaitConditionTimeout` after `timeout` seconds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{opt, req, Created, Cx, Kind, Prop, Registry, ResourceType};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(Handle));
    r.add(Arc::new(Wait));
}

/// The type name of handles (the signal API accepts signals only for them).
pub const HANDLE: &str = "OS::Heat::WaitConditionHandle";

struct Handle;

#[async_trait]
impl ResourceType for Handle {
    fn name(&self) -> &'static str {
        HANDLE
    }
    fn description(&self) -> &'static str {
        "A signal URL with a secret token, for OS::Heat::WaitCondition."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        Some(&[])
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["token", "endpoint", "curl_cli", "signal"]
    }
    async fn create(&self, cx: &Cx, _props: &Map<String, Value>) -> Result<Created, String> {
        let token: String =
            rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(40).map(char::from).collect();
        let id = uuid::Uuid::new_v4().to_string();
        let endpoint = format!("{}/v1/waitcondition/{}/{id}", cx.orch.base, cx.stack_id);
        let curl_cli = format!(
            "curl -i -X POST -H 'X-Auth-Token: {token}' -H 'Content-Type: application/json' -H 'Accept: application/json' {endpoint}"
        );
        let attributes = json!({"token": token, "endpoint": endpoint, "curl_cli": curl_cli, "signals": []});
        Ok(Created { physical_id: id, ref_id: None, attributes })
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _a: &Value) -> Result<(), String> {
        Ok(())
    }
}

struct Wait;

/// What the signals say so far: `Err` on a failure, else the successes' data by id.
fn tally(signals: &[Value]) -> Result<Map<String, Value>, String> {
    let mut data = Map::new();
    for (i, s) in signals.iter().enumerate() {
        if s["status"] == "FAILURE" {
            return Err(s["reason"].as_str().unwrap_or("Signal: status:FAILURE").to_string());
        }
        let id = match &s["id"] {
            Value::Null => (i + 1).to_string(),
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        data.insert(id, s["data"].clone());
    }
    Ok(data)
}

#[async_trait]
impl ResourceType for Wait {
    fn name(&self) -> &'static str {
        "OS::Heat::WaitCondition"
    }
    fn description(&self) -> &'static str {
        "Waits until its handle received count success signals (or a failure, or its timeout)."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("handle", Kind::Str, "The OS::Heat::WaitConditionHandle (get_resource)."),
            req("timeout", Kind::Int, "Seconds to wait for the signals."),
            opt("count", Kind::Int, "Success signals needed (default 1)."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["data"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let handle = props.get("handle").and_then(Value::as_str).unwrap_or_default().to_string();
        let count = props.get("count").and_then(Value::as_i64).unwrap_or(1).max(1) as usize;
        let timeout = props.get("timeout").and_then(Value::as_i64).unwrap_or(0);
        if timeout <= 0 {
            return Err(format!(
                "Property error: resources.{}.properties.timeout: must be at least 1",
                cx.resource_name
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout as u64);
        loop {
            let row = crate::store::resource_by_physical(&cx.db, &cx.stack_id, &handle)
                .await
                .map_err(|e| e.to_string())?
                .filter(|r| r.type_name == HANDLE)
                .ok_or_else(|| {
                    format!(
                        "resources.{}.properties.handle: {handle} is not a wait condition handle of this stack",
                        cx.resource_name
                    )
                })?;
            let signals = row.attributes["signals"].as_array().cloned().unwrap_or_default();
            let data = tally(&signals)
                .map_err(|why| format!("WaitConditionFailure: resources.{}: {why}", cx.resource_name))?;
            if data.len() >= count {
                let text = Value::Object(data).to_string();
                let id = format!("{}-{}", cx.stack_id, cx.resource_name);
                return Ok(Created { physical_id: id, ref_id: None, attributes: json!({"data": text}) });
            }
            if tokio::time::Instant::now() >= deadline {
                let got = data.len();
                return Err(format!("WaitConditionTimeout: resources.{}: {got} of {count} received", cx.resource_name));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _a: &Value) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_counted_and_a_failure_wins() {
        let ok = [json!({"status": "SUCCESS", "data": "a"}), json!({"status": "SUCCESS", "id": "x", "data": 2})];
        let d = tally(&ok).unwrap();
        assert_eq!(Value::Object(d), json!({"1": "a", "x": 2}));
        let bad = [json!({"status": "SUCCESS"}), json!({"status": "FAILURE", "reason": "disk full"})];
        assert_eq!(tally(&bad).unwrap_err(), "disk full");
    }
}
