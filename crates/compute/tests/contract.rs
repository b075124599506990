//! The controller and agents of different contract versions: a 1.0 agent (the protocol
//! before versions, errors as text) is accepted and its errors are read into the same
//! typed outcomes; an agent of a version the controller does not accept is refused at
//! registration with a message that says which side to upgrade; the answers of calls to
//! an agent (e.g. "this driver cannot steer a live migration") are typed too, and read
//! the same from either version.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::Cloud;
use serde_json::json;
use stratus_bus::{BusError, Message};
use stratus_compute_agent::virt::fake::FakeDriverConfig;
use stratus_compute_proto::error::VirtError;
use stratus_compute_proto::rpc::{
    agent_topic, decode, encode_as, reply_error, AgentRequest, ConductorRequest, GuestOp, GuestOpKind, CONDUCTOR_TOPIC,
};
use stratus_compute_proto::version::Version;
use stratus_compute_proto::virt::{HostResources, Inventory, PowerState};

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

/// An agent that boots guests and prepares live migrations at once, and holds every live
/// migration it is the source of (it stays `running`): the controller's requests to steer
/// it are answered with "this driver does not support that", as contract `version` (None:
/// 1.0, as text) encodes it.
async fn holding_agent(c: &Cloud, host: &str, version: Option<Version>) {
    let bus = c.platform.bus.clone();
    let mut sub = bus.consume(&agent_topic(host)).await.unwrap();
    bus.call(CONDUCTOR_TOPIC, encode_as(&register(host), version), Duration::from_secs(10)).await.unwrap();
    let host = host.to_string();
    tokio::spawn(async move {
        while let Some(d) = sub.recv().await {
            let Ok(env) = decode::<AgentRequest>(&d.message) else { continue };
            let (request_id, spec, op, power_state) = match env.body {
                AgentRequest::RunOp { request_id, spec, op: GuestOp::Spawn } => {
                    (request_id, spec, GuestOpKind::Spawn, PowerState::Running)
                }
                AgentRequest::RunOp { request_id, spec, op: GuestOp::PreLiveMigration { .. } } => {
                    (request_id, spec, GuestOpKind::PreLiveMigration, PowerState::Paused)
                }
                AgentRequest::LiveMigrationControl { action, .. } => {
                    let e = VirtError::Unsupported { driver: "held".into(), op: format!("{action:?}") };
                    d.reply(Err(if version.is_some() { reply_error(e) } else { e.to_string() }));
                    continue;
                }
                // The live migration itself is held; nothing else is asked in this test.
                _ => continue,
            };
            let r = ConductorRequest::OpResult {
                host: host.clone(),
                uuid: spec.uuid,
                request_id,
                op,
                error: None,
                power_state,
                listen: None,
            };
            bus.call(CONDUCTOR_TOPIC, encode_as(&r, version), Duration::from_secs(10)).await.unwrap();
        }
    });
}

#[tokio::test]
async fn an_agent_that_cannot_steer_a_live_migration_is_understood_in_either_version() {
    for version in [Some(stratus_compute_proto::CONTRACT), None] {
        let c = Cloud::start(0, FakeDriverConfig::default()).await;
        holding_agent(&c, "held1", version).await;
        holding_agent(&c, "held2", version).await;
        let id = c.boot("alice", "lm", "42").await;
        c.wait_status(&id, "alice", "ACTIVE").await;
        let body = json!({"os-migrateLive": {"host": null, "block_migration": "auto"}});
        let (st, b) = c.post(&format!("/servers/{id}/action"), "admin", body).await;
        assert_eq!(st.as_u16(), 202, "{b}");
        // The source holds the copy, so the migration stays running until steered.
        let mut mid = None;
        for _ in 0..500 {
            let (_, l) = c.get(&format!("/servers/{id}/migrations"), "admin").await;
            if l["migrations"][0]["status"] == "running" {
                mid = l["migrations"][0]["id"].as_i64();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mid = mid.expect("the live migration runs");
        let path = format!("/servers/{id}/migrations/{mid}");
        let (st, b) = c.call(axum::http::Method::DELETE, &path, "admin", None).await;
        assert_eq!(st.as_u16(), 400, "{b}");
        let msg = b["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("this cloud's drivers cannot interrupt it"), "{version:?}: {msg}");
        // Forcing completion is a hint a driver may not take: accepted either way.
        let (st, b) = c.post(&format!("{path}/action"), "admin", json!({"force_complete": null})).await;
        assert_eq!(st.as_u16(), 202, "{version:?}: {b}");
    }
}
