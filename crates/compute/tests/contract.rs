//! The controller and agents of different contract versions: a 1.0 agent (the protocol
//! before versions, errors as text) is accepted and its errors are read into the same
//! typed outcomes; an agent of a version the controller does not accept is refused at
//! registration with a message that says which side to upgrade.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::Cloud;
use serde_json::json;
use stratus_bus::{BusError, Message};
use stratus_compute_agent::virt::fake::FakeDriverConfig;
use stratus_compute_proto::rpc::{
    agent_topic, decode, encode_as, AgentRequest, ConductorRequest, GuestOp, CONDUCTOR_TOPIC,
};
use stratus_compute_proto::version::Version;
use stratus_compute_proto::virt::{HostResources, Inventory};

fn register(host: &str) -> ConductorRequest {
    let inv =
        |total| Inventory { total, reserved: 0, min_unit: 1, max_unit: total, step_size: 1, allocation_ratio: 1.0 };
    ConductorRequest::RegisterHost {
        host: host.into(),
        hypervisor_type: "fake".into(),
        hypervisor_version: 1,
        hypervisor_hostname: host.into(),
        host_ip: "127.0.0.1".into(),
        resources: HostResources { vcpus: 8, memory_mb: 8192, local_gb: 100, cpu_model: String::new() },
        inventories: BTreeMap::from([
            ("VCPU".to_string(), inv(8)),
            ("MEMORY_MB".to_string(), inv(8192)),
            ("DISK_GB".to_string(), inv(100)),
        ]),
    }
}

/// A contract 1.0 agent, hand-written: unversioned messages, errors as text. It answers
/// each spawn with `outcome` (None: success).
async fn old_agent(c: &Cloud, host: &str, outcomes: Vec<Option<&'static str>>) {
    let bus = c.platform.bus.clone();
    let mut sub = bus.consume(&agent_topic(host)).await.unwrap();
    bus.call(CONDUCTOR_TOPIC, encode_as(&register(host), None), Duration::from_secs(10)).await.unwrap();
    let host = host.to_string();
    tokio::spawn(async move {
        let mut outcomes = outcomes.into_iter();
        while let Some(d) = sub.recv().await {
            let Ok(env) = decode::<AgentRequest>(&d.message) else { continue };
            let AgentRequest::RunOp { request_id, spec, op: GuestOp::Spawn } = env.body else { continue };
            let outcome = outcomes.next().flatten();
            let args = json!({"host": host, "uuid": spec.uuid, "request_id": request_id, "op": "spawn",
                "error": outcome, "power_state": if outcome.is_some() { "no_state" } else { "running" }});
            bus.call(CONDUCTOR_TOPIC, Message::new("op_result", args), Duration::from_secs(10)).await.unwrap();
        }
    });
}

#[tokio::test]
async fn a_contract_1_0_agent_is_served_and_its_errors_are_typed() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    old_agent(&c, "old1", vec![Some("Build aborted: Flavor's disk is too small"), None]).await;
    let (_, svcs) = c.get("/os-services?binary=nova-compute", "admin").await;
    assert_eq!(svcs["services"][0]["host"], "old1", "{svcs}");
    // "Build aborted" from a 1.0 agent still ends the build at once, not rescheduled.
    let a = c.boot("alice", "a", "42").await;
    let s = c.wait_status(&a, "alice", "ERROR").await;
    let (_, s2) = c.get(&format!("/servers/{a}"), "admin").await;
    let fault = s2["server"]["fault"]["message"].as_str().unwrap().to_string();
    assert!(fault.starts_with(&format!("Build of instance {a} aborted")), "{fault} / {s}");
    // And its successes are successes.
    let b = c.boot("alice", "b", "42").await;
    c.wait_status(&b, "alice", "ACTIVE").await;
}

#[tokio::test]
async fn an_agent_of_an_unaccepted_version_is_refused_clearly() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    for v in [Version::new(2, 0), Version::new(1, 2), Version::new(0, 9)] {
        let r =
            c.platform.bus.call(CONDUCTOR_TOPIC, encode_as(&register("new1"), Some(v)), Duration::from_secs(10)).await;
        let Err(BusError::Remote(msg)) = r else { panic!("{v} must be refused: {r:?}") };
        assert!(msg.contains(&format!("compute contract {v} is not supported here: this side speaks 1.1")), "{msg}");
    }
    let (_, svcs) = c.get("/os-services?binary=nova-compute", "admin").await;
    assert_eq!(svcs["services"], json!([]), "nothing registered");
}
