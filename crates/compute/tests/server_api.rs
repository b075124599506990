//! Server API breadth on the in-process compute cloud (fake driver): deferred delete
//! (soft delete, restore, forceDelete, the reclaim loop), the server tags API,
//! os-simple-tenant-usage, changePassword.

mod harness;

use axum::http::{Method, StatusCode};
use harness::{test_config, Cloud};
use serde_json::json;
use stratus_compute::ComputeConfig;
use stratus_compute_agent::virt::fake::FakeDriverConfig;

fn deferred(secs: u64) -> ComputeConfig {
    ComputeConfig { reclaim_instance_interval_secs: secs, ..test_config() }
}

#[tokio::test]
async fn soft_delete_restore_and_force_delete() {
    let c = Cloud::start_with(1, FakeDriverConfig::default(), deferred(3600)).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (s, _) = c.call(Method::DELETE, &format!("/servers/{id}"), "alice", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let mut soft = c.wait_status(&id, "alice", "SOFT_DELETED").await;
    for _ in 0..200 {
        if soft["OS-EXT-STS:power_state"] == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        soft = c.get(&format!("/servers/{id}"), "alice").await.1["server"].clone();
    }
    assert_eq!(soft["OS-EXT-STS:power_state"], 4, "the guest is powered off: {soft}");
    assert_eq!(soft["status"], "SOFT_DELETED", "and stays soft-deleted: {soft}");
    // Still counted, still listed; another project cannot restore it.
    assert_eq!(c.live_servers().await, vec![id.clone()]);
    let (s, _) = c.post(&format!("/servers/{id}/action"), "bob", json!({"restore": null})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = c.post(&format!("/servers/{id}/action"), "alice", json!({"os-start": null})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, _) = c.post(&format!("/servers/{id}/action"), "alice", json!({"restore": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let back = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(back["OS-EXT-STS:power_state"], 1, "{back}");
    let (s, b) = c.post(&format!("/servers/{id}/action"), "alice", json!({"forceDelete": null})).await;
    assert_eq!(s, StatusCode::CONFLICT, "forceDelete needs a soft-deleted server: {b}");
    c.call(Method::DELETE, &format!("/servers/{id}"), "alice", None).await;
    c.wait_status(&id, "alice", "SOFT_DELETED").await;
    let (s, _) = c.post(&format!("/servers/{id}/action"), "alice", json!({"forceDelete": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    c.wait_gone(&id, "alice").await;
    assert!(c.live_servers().await.is_empty());
}

#[tokio::test]
async fn the_reclaim_loop_deletes_old_soft_deleted_servers() {
    let c = Cloud::start_with(1, FakeDriverConfig::default(), deferred(1)).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    c.call(Method::DELETE, &format!("/servers/{id}"), "alice", None).await;
    c.wait_status(&id, "alice", "SOFT_DELETED").await;
    let mut gone = false;
    for _ in 0..100 {
        if c.get(&format!("/servers/{id}"), "alice").await.0 == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "reclaimed within 10 s");
    let (_, ev) = c.get(&format!("/servers/{id}/os-instance-actions"), "admin").await;
    assert!(ev.to_string().contains("softDelete"), "{ev}");
}

#[tokio::test]
async fn server_tags_api() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    let path = format!("/servers/{id}/tags");
    let (s, _) = c.call_v(Method::GET, &path, "alice", None, "2.25").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "tags need 2.26");
    let (s, b) = c.call(Method::PUT, &path, "alice", Some(json!({"tags": ["a", "b", "a"]}))).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"tags": ["a", "b"]})));
    let (s, _) = c.call(Method::PUT, &format!("{path}/c"), "alice", None).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = c.call(Method::PUT, &format!("{path}/c"), "alice", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&format!("{path}/c"), "alice").await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&format!("{path}/zz"), "alice").await.0, StatusCode::NOT_FOUND);
    let (s, _) = c.call(Method::PUT, &format!("{path}/x,y"), "alice", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let many: Vec<String> = (0..51).map(|n| format!("t{n}")).collect();
    let (s, _) = c.call(Method::PUT, &path, "alice", Some(json!({"tags": many}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = c.call(Method::PUT, &format!("{path}/d"), "bob", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "bob cannot see alice's server");
    let (_, b) = c.get("/servers/detail?tags=c", "alice").await;
    assert_eq!(b["servers"].as_array().unwrap().len(), 1);
    let (s, _) = c.call(Method::DELETE, &format!("{path}/c"), "alice", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = c.call(Method::DELETE, &path, "alice", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, b) = c.get(&path, "alice").await;
    assert_eq!(b, json!({"tags": []}));
}

#[tokio::test]
async fn usage_password_and_crash_dump() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (s, b) = c.post(&format!("/servers/{id}/action"), "alice", json!({"changePassword": {"adminPass": "x"}})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, _) = c.post(&format!("/servers/{id}/action"), "alice", json!({"changePassword": {}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = c.get(&format!("/servers/{id}/os-server-password"), "alice").await;
    assert_eq!((s, b), (StatusCode::OK, json!({"password": ""})));
    let (s, _) = c
        .call_v(
            Method::POST,
            &format!("/servers/{id}/action"),
            "alice",
            Some(json!({"trigger_crash_dump": null})),
            "2.16",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "trigger_crash_dump needs 2.17");
    let (s, _) = c.post(&format!("/servers/{id}/action"), "alice", json!({"trigger_crash_dump": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = c.get("/os-simple-tenant-usage?detailed=1", "alice").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = c.get("/os-simple-tenant-usage?detailed=1", "admin").await;
    assert_eq!(s, StatusCode::OK);
    let u = &b["tenant_usages"][0];
    assert_eq!(u["tenant_id"], "pA", "{b}");
    assert_eq!(u["server_usages"][0]["instance_id"], id.as_str());
    let (s, b) = c.get("/os-simple-tenant-usage/pA?start=2000-01-01T00:00:00&end=2000-01-02T00:00:00", "alice").await;
    assert_eq!((s, b), (StatusCode::OK, json!({"tenant_usage": {}})), "nothing in another period");
    let (s, _) = c.get("/os-simple-tenant-usage/pA", "bob").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = c.get("/os-simple-tenant-usage?start=2020-01-02T00:00:00&end=2020-01-01T00:00:00", "admin").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// A boot accepted before any compute host is up (a cloud that has just started: its
/// agents register a moment after the APIs answer) waits for one instead of failing at
/// once with "No valid host"; a host becomes up only once its resources are in placement.
#[tokio::test]
async fn a_boot_before_any_host_is_up_waits_for_one() {
    let mut c = Cloud::start(0, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "early", "42").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (_, b) = c.get(&format!("/servers/{id}"), "alice").await;
    assert_eq!(b["server"]["status"], "BUILD", "no host yet: still building, not ERROR: {b}");
    c.add_agent("late", stratus_compute_agent::virt::fake::FakeDriver::new(FakeDriverConfig::default())).await;
    let s = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], serde_json::Value::Null, "members do not see the host");
}
