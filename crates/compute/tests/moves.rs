//! Moves between hosts, shelving, aggregates and server groups in one process: state
//! machine, API edges per microversion, placement allocations after every step, and
//! crash recovery with controller and agents killed mid-operation.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use harness::Cloud;
use serde_json::{json, Value};
use stratus_compute::placement::PlacementApi;
use stratus_compute_agent::virt::fake::FakeDriverConfig;

/// Host name → node (resource provider) id.
async fn nodes(c: &Cloud) -> BTreeMap<String, String> {
    let (_, b) = c.get("/os-hypervisors", "admin").await;
    b["hypervisors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["hypervisor_hostname"].as_str().unwrap().into(), h["id"].as_str().unwrap().into()))
        .collect()
}

/// Host → MEMORY_MB used in placement.
async fn ram_used(c: &Cloud) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (h, n) in nodes(c).await {
        let u = c.placement.provider_usages(&n).await.unwrap();
        out.insert(h, u.get("MEMORY_MB").copied().unwrap_or(0));
    }
    out
}

fn host(s: &Value) -> String {
    s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

async fn action(c: &Cloud, id: &str, token: &str, body: Value) -> (StatusCode, Value) {
    c.post(&format!("/servers/{id}/action"), token, body).await
}

async fn migration_of(c: &Cloud, id: &str) -> Value {
    let (_, b) = c.get(&format!("/os-migrations?instance_uuid={id}"), "admin").await;
    b["migrations"][0].clone()
}

#[tokio::test]
async fn resize_holds_the_source_under_the_migration_until_confirm_or_revert() {
    let c = Cloud::start(2, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "r", "42").await;
    let s = c.wait_status(&id, "alice", "ACTIVE").await;
    let (src, _) = (host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]), s);

    // Edges: same flavor, unknown flavor, smaller disk, members cannot cold-migrate.
    let (st, b) = action(&c, &id, "alice", json!({"resize": {"flavorRef": "42"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (st, _) = action(&c, &id, "alice", json!({"resize": {"flavorRef": "nope"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = action(&c, &id, "alice", json!({"migrate": null})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, b) = action(&c, &id, "alice", json!({"confirmResize": null})).await;
    assert_eq!(st, StatusCode::CONFLICT, "not resized: {b}");

    let (st, b) = action(&c, &id, "alice", json!({"resize": {"flavorRef": "1"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let s = c.wait_status(&id, "alice", "VERIFY_RESIZE").await;
    assert_eq!(s["flavor"]["original_name"], "m1.tiny");
    let dst = host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]);
    assert_ne!(src, dst);
    let m = migration_of(&c, &id).await;
    assert_eq!((m["migration_type"].as_str(), m["status"].as_str()), (Some("resize"), Some("finished")), "{m}");
    let mig_uuid = m["uuid"].as_str().unwrap().to_string();
    let mut want = vec![id.clone(), mig_uuid.clone()];
    want.sort();
    assert_eq!(c.placement.consumers(), want, "instance on dest, migration holds the source");
    let u = ram_used(&c).await;
    assert_eq!((u[&src], u[&dst]), (128, 512));
    // A second move while one waits for confirmation is refused.
    let (st, _) = action(&c, &id, "admin", json!({"migrate": null})).await;
    assert_eq!(st, StatusCode::CONFLICT);

    let (st, _) = action(&c, &id, "alice", json!({"revertResize": null})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let s = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(s["flavor"]["original_name"], "m1.nano");
    assert_eq!(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]), src);
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    assert_eq!(ram_used(&c).await[&src], 128);
    assert_eq!(migration_of(&c, &id).await["status"], "reverted");
    // The dest copy is gone, the source one runs.
    let d_src = &c.agents.iter().find(|a| a.0 == src).unwrap().1;
    let d_dst = &c.agents.iter().find(|a| a.0 == dst).unwrap().1;
    assert_eq!((d_src.guest_count(), d_dst.guest_count()), (1, 0));

    // Stopped servers resize and stay stopped through confirm.
    action(&c, &id, "alice", json!({"os-stop": null})).await;
    c.wait_status(&id, "alice", "SHUTOFF").await;
    let (st, _) = action(&c, &id, "alice", json!({"resize": {"flavorRef": "1"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "VERIFY_RESIZE").await;
    let (st, _) = action(&c, &id, "alice", json!({"confirmResize": null})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let s = c.wait_status(&id, "alice", "SHUTOFF").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    assert_eq!(ram_used(&c).await[&dst], 512);
    assert_eq!((d_src.guest_count(), d_dst.guest_count()), (0, 1), "confirm drops the source copy");

    // Deleting a server that waits for a resize confirmation frees both shares.
    action(&c, &id, "alice", json!({"os-start": null})).await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    action(&c, &id, "alice", json!({"resize": {"flavorRef": "2"}})).await;
    c.wait_status(&id, "alice", "VERIFY_RESIZE").await;
    assert_eq!(c.placement.consumers().len(), 2);
    let (st, _) = c.call(Method::DELETE, &format!("/servers/{id}"), "alice", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    c.wait_gone(&id, "alice").await;
    for _ in 0..200 {
        if c.placement.consumers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(c.placement.consumers().is_empty(), "no leak: {:?}", c.placement.consumers());
    assert_eq!(migration_of(&c, &id).await["status"], "error");
}

#[tokio::test]
async fn live_migration_evacuation_and_migration_views() {
    let c = Cloud::start(3, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "l", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let src = host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]);
    let target = ["node1", "node2", "node3"].into_iter().find(|h| *h != src).unwrap().to_string();
    // `host` is required (even null), unknown hosts and the current host are refused.
    let (st, _) = action(&c, &id, "admin", json!({"os-migrateLive": {"block_migration": "auto"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) =
        action(&c, &id, "admin", json!({"os-migrateLive": {"host": "nowhere", "block_migration": "auto"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = action(&c, &id, "admin", json!({"os-migrateLive": {"host": src, "block_migration": "auto"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, b) =
        action(&c, &id, "admin", json!({"os-migrateLive": {"host": target, "block_migration": "auto"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]), target);
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    let m = migration_of(&c, &id).await;
    assert_eq!((m["migration_type"].as_str(), m["status"].as_str()), (Some("live-migration"), Some("completed")));
    // In-progress views only list running live migrations; old microversions hide the API.
    let (st, b) = c.get(&format!("/servers/{id}/migrations"), "admin").await;
    assert_eq!((st, b["migrations"].as_array().unwrap().len()), (StatusCode::OK, 0));
    let (st, _) = c.call_v(Method::GET, &format!("/servers/{id}/migrations"), "admin", None, "2.22").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let mid = m["id"].as_i64().unwrap();
    let (st, _) = c.call(Method::DELETE, &format!("/servers/{id}/migrations/{mid}"), "admin", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a completed migration cannot be aborted");
    // os-migrations per microversion.
    let (_, old) = c.call_v(Method::GET, "/os-migrations", "admin", None, "2.1").await;
    assert!(old["migrations"][0].get("migration_type").is_none() && old["migrations"][0].get("uuid").is_none());
    let (st, _) = c.get("/os-migrations", "alice").await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Evacuation needs the host down.
    let (st, b) = action(&c, &id, "admin", json!({"evacuate": {}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let i = c.agents.iter().position(|a| a.0 == target).unwrap();
    let (_, svcs) = c.get(&format!("/os-services?host={target}&binary=nova-compute"), "admin").await;
    let sid = svcs["services"][0]["id"].as_str().unwrap().to_string();
    let (st, _) =
        c.call(Method::PUT, &format!("/os-services/{sid}"), "admin", Some(json!({"forced_down": true}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = action(&c, &id, "admin", json!({"evacuate": {}})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // 2.95+: the evacuated server arrives stopped.
    let s = c.wait_status(&id, "alice", "SHUTOFF").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    let now = host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]);
    assert_ne!(now, target);
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    assert_eq!(ram_used(&c).await[&target], 0, "the dead host's allocation is released");
    assert_eq!(migration_of(&c, &id).await["status"], "done");
    // The dead host still has the old guest; its reconciliation removes it.
    assert_eq!(c.agents[i].1.guest_count(), 1);
    c.agents[i].2.as_ref().unwrap().agent.reconcile().await.unwrap();
    assert_eq!(c.agents[i].1.guest_count(), 0);

    // Before 2.95 an active server comes back active (and the password is returned before 2.14).
    action(&c, &id, "alice", json!({"os-start": null})).await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (_, svcs) = c.get(&format!("/os-services?host={now}&binary=nova-compute"), "admin").await;
    let sid2 = svcs["services"][0]["id"].as_str().unwrap().to_string();
    c.call(Method::PUT, &format!("/os-services/{sid}"), "admin", Some(json!({"forced_down": false}))).await;
    c.call(Method::PUT, &format!("/os-services/{sid2}"), "admin", Some(json!({"forced_down": true}))).await;
    let (st, b) = c
        .call_v(
            Method::POST,
            &format!("/servers/{id}/action"),
            "admin",
            Some(json!({"evacuate": {"host": target}})),
            "2.29",
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]), target);
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
}

#[tokio::test]
async fn no_valid_host_rolls_a_move_back_without_leaks() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "n", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (st, _) = action(&c, &id, "alice", json!({"resize": {"flavorRef": "1"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    // One host: nowhere to go. The server stays ACTIVE on its host, the migration errors.
    let mut m = Value::Null;
    for _ in 0..200 {
        m = migration_of(&c, &id).await;
        if m["status"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m["status"], "error", "{m}");
    let s = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(s["flavor"]["original_name"], "m1.nano");
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    let (_, acts) = c.get(&format!("/servers/{id}/os-instance-actions"), "alice").await;
    let resize = &acts["instanceActions"][0];
    assert_eq!((resize["action"].as_str(), resize["message"].as_str()), (Some("resize"), Some("Error")), "{acts}");
}

#[tokio::test]
async fn shelve_offloads_and_unshelve_reschedules() {
    let c = Cloud::start(2, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "s", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (st, _) = action(&c, &id, "alice", json!({"unshelve": null})).await;
    assert_eq!(st, StatusCode::CONFLICT, "not shelved");
    let (st, _) = action(&c, &id, "alice", json!({"shelve": null})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let s = c.wait_status(&id, "alice", "SHELVED_OFFLOADED").await;
    assert!(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]).is_empty(), "{s}");
    assert!(c.placement.consumers().is_empty(), "offloaded servers hold nothing");
    assert_eq!(c.agents.iter().map(|a| a.1.guest_count()).sum::<usize>(), 0);
    // An unknown zone is refused; unshelve to a named host (2.91, admin).
    let (st, _) = action(&c, &id, "alice", json!({"unshelve": {"availability_zone": "nope"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = action(&c, &id, "alice", json!({"unshelve": {"host": "node2"}})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, b) = action(&c, &id, "admin", json!({"unshelve": {"host": "node2"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]), "node2");
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    let (_, acts) = c.get(&format!("/servers/{id}/os-instance-actions"), "alice").await;
    let names: Vec<&str> =
        acts["instanceActions"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(names.contains(&"shelve") && names.contains(&"unshelve"), "{names:?}");
}

#[tokio::test]
async fn shelve_without_offload_keeps_the_host_until_asked() {
    let cfg = stratus_compute::ComputeConfig { shelved_offload_time: -1, ..harness::test_config() };
    let c = Cloud::start_with(1, FakeDriverConfig::default(), cfg).await;
    let id = c.boot("alice", "k", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    action(&c, &id, "alice", json!({"shelve": null})).await;
    let s = c.wait_status(&id, "alice", "SHELVED").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    assert_eq!(c.placement.consumers(), vec![id.clone()], "a shelved server keeps its claim");
    let (st, _) = action(&c, &id, "alice", json!({"shelveOffload": null})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "admin only");
    let (st, _) = action(&c, &id, "alice", json!({"unshelve": null})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let s = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    action(&c, &id, "alice", json!({"shelve": null})).await;
    c.wait_status(&id, "alice", "SHELVED").await;
    let (st, _) = action(&c, &id, "admin", json!({"shelveOffload": null})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "SHELVED_OFFLOADED").await;
    assert!(c.placement.consumers().is_empty());
}

/// Kills the controller and every agent while `id` is mid-operation, restarts them, and
/// returns once the restart has happened.
async fn crash_everything(c: &mut Cloud) {
    c.restart_controller().await;
    for i in 0..c.agents.len() {
        c.kill_agent(i);
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    for i in 0..c.agents.len() {
        c.restart_agent(i).await;
    }
    c.restart_controller().await;
}

/// The destination answers where it listens; the source's step gets it, also when the
/// step is sent again after a crash (the ports are on the migration's record).
#[tokio::test]
async fn the_source_is_sent_the_ports_the_destination_answered_also_after_a_crash() {
    let slow = FakeDriverConfig { op_delay_ms: 300, ..Default::default() };
    let mut c = Cloud::start(2, slow).await;
    let id = c.boot("alice", "lp", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let src = host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]);
    let si = c.agents.iter().position(|a| a.0 == src).unwrap();
    action(&c, &id, "admin", json!({"os-migrateLive": {"host": null, "block_migration": "auto"}})).await;
    // Prepared (the destination answered): the source's step is under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while migration_of(&c, &id).await["status"] != "running" {
        assert!(std::time::Instant::now() < deadline, "{}", migration_of(&c, &id).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    crash_everything(&mut c).await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let dest = host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]);
    assert_ne!(dest, src);
    assert_eq!(migration_of(&c, &id).await["status"], "completed");
    let targets = c.agents[si].1.live_migration_targets(&id);
    assert!(targets.len() >= 2, "sent, and sent again after the crash: {targets:?}");
    for t in &targets {
        assert_eq!(t.host, dest);
        assert_eq!(t.listen, Some(stratus_compute_agent::virt::fake::INCOMING_PORTS), "{t:?}");
    }
}

#[tokio::test]
async fn crashes_mid_move_end_in_stable_states_with_matching_allocations() {
    // Slow drivers keep every step in flight long enough to crash in the middle of it.
    let slow = FakeDriverConfig { op_delay_ms: 150, ..Default::default() };
    let mut c = Cloud::start(2, slow).await;
    let a = c.boot("alice", "a", "42").await;
    let b = c.boot("alice", "b", "42").await;
    let d = c.boot("alice", "d", "42").await;
    for id in [&a, &b, &d] {
        c.wait_status(id, "alice", "ACTIVE").await;
    }
    // a: resize, crashed at several points; b: live migration; d: shelve.
    action(&c, &a, "alice", json!({"resize": {"flavorRef": "1"}})).await;
    action(&c, &b, "admin", json!({"os-migrateLive": {"host": null, "block_migration": "auto"}})).await;
    action(&c, &d, "alice", json!({"shelve": null})).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    for (id, t) in [(&a, "resize_migrating"), (&b, "migrating"), (&d, "shelving")] {
        let (_, s) = c.get(&format!("/servers/{id}"), "admin").await;
        assert_eq!(s["server"]["OS-EXT-STS:task_state"], t, "caught mid-operation");
    }
    crash_everything(&mut c).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    crash_everything(&mut c).await;
    let sa = c.wait_status(&a, "alice", "VERIFY_RESIZE").await;
    assert_eq!(sa["flavor"]["original_name"], "m1.tiny");
    c.wait_status(&b, "alice", "ACTIVE").await;
    c.wait_status(&d, "alice", "SHELVED_OFFLOADED").await;
    let ma = migration_of(&c, &a).await;
    let mut want = vec![a.clone(), b.clone(), ma["uuid"].as_str().unwrap().to_string()];
    want.sort();
    assert_eq!(c.placement.consumers(), want, "instances + the resize's migration, nothing else");
    assert!(c.placement.overcommitted().is_empty());
    // A live migration caught while preparing is rolled back, one caught running completes.
    let mb = migration_of(&c, &b).await;
    assert!(mb["status"] == "completed" || mb["status"] == "error", "{mb}");

    // Confirm interrupted by a crash is finished at restart.
    let (st, _) = action(&c, &a, "alice", json!({"confirmResize": null})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    crash_everything(&mut c).await;
    c.wait_status(&a, "alice", "ACTIVE").await;
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    for _ in 0..200 {
        if c.placement.consumers() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.placement.consumers(), want);
    assert_eq!(migration_of(&c, &a).await["status"], "confirmed");

    // Unshelve and revert interrupted too.
    action(&c, &d, "alice", json!({"unshelve": null})).await;
    action(&c, &a, "alice", json!({"resize": {"flavorRef": "2"}})).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    crash_everything(&mut c).await;
    c.wait_status(&d, "alice", "ACTIVE").await;
    c.wait_status(&a, "alice", "VERIFY_RESIZE").await;
    action(&c, &a, "alice", json!({"revertResize": null})).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    crash_everything(&mut c).await;
    let sa = c.wait_status(&a, "alice", "ACTIVE").await;
    assert_eq!(sa["flavor"]["original_name"], "m1.tiny");
    let mut live = c.live_servers().await;
    live.sort();
    assert_eq!(c.placement.consumers(), live, "allocations match the servers");
    let guests: usize = c.agents.iter().map(|a| a.1.guest_count()).sum();
    assert!(guests >= 3, "every server has its guest");
}

#[tokio::test]
async fn aggregates_api_and_zone_rules() {
    let c = Cloud::start(2, FakeDriverConfig::default()).await;
    let (st, _) = c.post("/os-aggregates", "alice", json!({"aggregate": {"name": "x"}})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, a1) =
        c.post("/os-aggregates", "admin", json!({"aggregate": {"name": "a1", "availability_zone": "z1"}})).await;
    assert_eq!(st, StatusCode::OK, "{a1}");
    let (st, _) = c.post("/os-aggregates", "admin", json!({"aggregate": {"name": "a1"}})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) =
        c.post("/os-aggregates", "admin", json!({"aggregate": {"name": "bad", "availability_zone": "internal"}})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, a2) =
        c.post("/os-aggregates", "admin", json!({"aggregate": {"name": "a2", "availability_zone": "z2"}})).await;
    let (id1, id2) = (a1["aggregate"]["id"].as_i64().unwrap(), a2["aggregate"]["id"].as_i64().unwrap());
    let (st, b) =
        c.post(&format!("/os-aggregates/{id1}/action"), "admin", json!({"add_host": {"host": "node1"}})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["aggregate"]["hosts"], json!(["node1"]));
    let (st, _) =
        c.post(&format!("/os-aggregates/{id1}/action"), "admin", json!({"add_host": {"host": "node1"}})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) =
        c.post(&format!("/os-aggregates/{id1}/action"), "admin", json!({"add_host": {"host": "ghost"}})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) =
        c.post(&format!("/os-aggregates/{id2}/action"), "admin", json!({"add_host": {"host": "node1"}})).await;
    assert_eq!(st, StatusCode::CONFLICT, "a host is in one zone only");
    // Zone z1 now exists and steers boots; the host's provider is in the aggregate.
    let (_, z) = c.get("/os-availability-zone", "alice").await;
    let zones: Vec<&str> =
        z["availabilityZoneInfo"].as_array().unwrap().iter().filter_map(|z| z["zoneName"].as_str()).collect();
    assert!(zones.contains(&"z1") && zones.contains(&"nova"), "{zones:?}");
    let node1 = nodes(&c).await["node1"].clone();
    assert_eq!(
        c.placement.provider_aggregates(&node1).await.unwrap(),
        vec![a1["aggregate"]["uuid"].as_str().unwrap().to_string()]
    );
    let (s, b) = c
        .post("/servers", "alice", json!({"server": {"name": "z", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none", "availability_zone": "z1"}}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["server"]["id"].as_str().unwrap().to_string();
    let sv = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(sv["OS-EXT-AZ:availability_zone"], "z1");
    assert_eq!(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]), "node1");
    // Renaming the zone through metadata; older microversions omit uuid.
    let (st, b) = c
        .post(
            &format!("/os-aggregates/{id1}/action"),
            "admin",
            json!({"set_metadata": {"metadata": {"availability_zone": "z9", "k": "v"}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["aggregate"]["availability_zone"], "z9");
    let (_, old) = c.call_v(Method::GET, &format!("/os-aggregates/{id1}"), "admin", None, "2.40").await;
    assert!(old["aggregate"].get("uuid").is_none());
    let (st, _) = c.call(Method::DELETE, &format!("/os-aggregates/{id1}"), "admin", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "still has hosts");
    c.post(&format!("/os-aggregates/{id1}/action"), "admin", json!({"remove_host": {"host": "node1"}})).await;
    let (st, _) = c.call(Method::DELETE, &format!("/os-aggregates/{id1}"), "admin", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(c.placement.provider_aggregates(&node1).await.unwrap().is_empty());
}

#[tokio::test]
async fn server_groups_api_shapes_quotas_and_affinity() {
    let c = Cloud::start(2, FakeDriverConfig::default()).await;
    // 2.64 shape with rules; the old shape before it.
    let (st, b) = c
        .post(
            "/os-server-groups",
            "alice",
            json!({"server_group": {"name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["server_group"]["rules"]["max_server_per_host"], 2);
    let gid = b["server_group"]["id"].as_str().unwrap().to_string();
    let (st, _) = c
        .post(
            "/os-server-groups",
            "alice",
            json!({"server_group": {"name": "x", "policy": "affinity", "rules": {"max_server_per_host": 2}}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "rules only for anti-affinity");
    let (st, old) = c
        .call_v(
            Method::POST,
            "/os-server-groups",
            "alice",
            Some(json!({"server_group": {"name": "aff", "policies": ["affinity"]}})),
            "2.63",
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{old}");
    assert_eq!(old["server_group"]["policies"], json!(["affinity"]));
    let aff = old["server_group"]["id"].as_str().unwrap().to_string();
    let (st, _) = c
        .call_v(
            Method::POST,
            "/os-server-groups",
            "alice",
            Some(json!({"server_group": {"name": "s", "policies": ["soft-affinity"]}})),
            "2.14",
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "soft policies from 2.15");
    // Other projects do not see the group and cannot boot into it.
    let (st, _) = c.get(&format!("/os-server-groups/{gid}"), "bob").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let boot = |name: &str, group: &str| json!({"server": {"name": name, "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none"}, "os:scheduler_hints": {"group": group}});
    let (st, _) = c.post("/servers", "bob", boot("intruder", &gid)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Anti-affinity with max 2 per host on 2 hosts: 4 fit, the 5th does not.
    let mut ids = vec![];
    for n in 0..5 {
        let (st, b) = c.post("/servers", "alice", boot(&format!("g{n}"), &gid)).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        let id = b["server"]["id"].as_str().unwrap().to_string();
        if n < 4 {
            c.wait_status(&id, "alice", "ACTIVE").await;
        } else {
            let s = c.wait_status(&id, "alice", "ERROR").await;
            assert!(s["fault"]["message"].as_str().unwrap().contains("No valid host"), "{s}");
            let (_, ad) = c.get(&format!("/servers/{id}"), "admin").await;
            assert!(
                ad["server"]["fault"]["details"].as_str().unwrap().contains("ServerGroupAntiAffinityFilter"),
                "{ad}"
            );
        }
        ids.push(id);
    }
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids[..4] {
        *per_host.entry(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"])).or_default() += 1;
    }
    assert_eq!(per_host.values().copied().collect::<Vec<_>>(), vec![2, 2], "{per_host:?}");
    // Affinity: all on the first member's host.
    let mut aff_hosts = vec![];
    for n in 0..2 {
        let (_, b) = c.post("/servers", "alice", boot(&format!("a{n}"), &aff)).await;
        let id = b["server"]["id"].as_str().unwrap().to_string();
        c.wait_status(&id, "alice", "ACTIVE").await;
        aff_hosts.push(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]));
    }
    assert_eq!(aff_hosts[0], aff_hosts[1]);
    // Members are listed; quota server_group_members (default 10) and server_groups.
    let (_, g) = c.get(&format!("/os-server-groups/{gid}"), "alice").await;
    assert_eq!(g["server_group"]["members"].as_array().unwrap().len(), 5);
    let (_, l) = c.get("/limits", "alice").await;
    assert_eq!(l["limits"]["absolute"]["totalServerGroupsUsed"], 2);
    c.call(Method::PUT, "/os-quota-sets/pA", "admin", Some(json!({"quota_set": {"server_group_members": 5}}))).await;
    let (st, b) = c.post("/servers", "alice", boot("over", &gid)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    c.call(Method::PUT, "/os-quota-sets/pA", "admin", Some(json!({"quota_set": {"server_groups": 2}}))).await;
    let (st, _) =
        c.post("/os-server-groups", "alice", json!({"server_group": {"name": "third", "policy": "affinity"}})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = c.call(Method::DELETE, &format!("/os-server-groups/{aff}"), "alice", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, l) = c.get("/os-server-groups", "alice").await;
    assert_eq!(l["server_groups"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_boots_into_an_anti_affinity_group_never_share_a_host() {
    let c = Cloud::start(3, FakeDriverConfig::default()).await;
    let (_, b) =
        c.post("/os-server-groups", "alice", json!({"server_group": {"name": "g", "policy": "anti-affinity"}})).await;
    let gid = b["server_group"]["id"].as_str().unwrap().to_string();
    // Five at once (one request, min 1 / max 5) on three hosts: three land, two fail.
    let (st, b) = c
        .post(
            "/servers",
            "alice",
            json!({"server": {"name": "m", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none", "min_count": 1, "max_count": 5},
                   "os:scheduler_hints": {"group": gid}}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let mut ids = vec![];
    for _ in 0..300 {
        let (_, l) = c.get("/servers/detail", "alice").await;
        let all = l["servers"].as_array().unwrap().clone();
        if all.len() == 5 && all.iter().all(|s| s["status"] == "ACTIVE" || s["status"] == "ERROR") {
            ids = all;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ids.len(), 5, "all settled");
    let active: Vec<&Value> = ids.iter().filter(|s| s["status"] == "ACTIVE").collect();
    assert_eq!(active.len(), 3);
    let mut hosts: Vec<String> = Vec::new();
    for s in active {
        hosts.push(host(&c.get(&format!("/servers/{}", s["id"].as_str().unwrap()), "admin").await.1["server"]));
    }
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "one member per host: {hosts:?}");
    assert_eq!(c.placement.consumers().len(), 3);
}

#[tokio::test]
async fn moves_aggregates_and_groups_on_postgres() {
    let c = Cloud::start_postgres(2, FakeDriverConfig::default(), harness::test_config()).await;
    let (_, g) =
        c.post("/os-server-groups", "alice", json!({"server_group": {"name": "g", "policy": "anti-affinity"}})).await;
    let gid = g["server_group"]["id"].as_str().unwrap().to_string();
    let (st, b) = c
        .post("/servers", "alice", json!({"server": {"name": "p", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none"}, "os:scheduler_hints": {"group": gid}}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let id = b["server"]["id"].as_str().unwrap().to_string();
    c.wait_status(&id, "alice", "ACTIVE").await;
    action(&c, &id, "alice", json!({"resize": {"flavorRef": "1"}})).await;
    c.wait_status(&id, "alice", "VERIFY_RESIZE").await;
    action(&c, &id, "alice", json!({"confirmResize": null})).await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (st, _) = action(&c, &id, "admin", json!({"os-migrateLive": {"host": null, "block_migration": "auto"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "ACTIVE").await;
    action(&c, &id, "alice", json!({"shelve": null})).await;
    c.wait_status(&id, "alice", "SHELVED_OFFLOADED").await;
    action(&c, &id, "alice", json!({"unshelve": null})).await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    let (_, m) = c.get("/os-migrations", "admin").await;
    let st: Vec<&str> = m["migrations"].as_array().unwrap().iter().filter_map(|m| m["status"].as_str()).collect();
    assert_eq!(st, vec!["completed", "confirmed"]);
    let (_, a) =
        c.post("/os-aggregates", "admin", json!({"aggregate": {"name": "a", "availability_zone": "zz"}})).await;
    let aid = a["aggregate"]["id"].as_i64().unwrap();
    let (st, b) =
        c.post(&format!("/os-aggregates/{aid}/action"), "admin", json!({"add_host": {"host": "node2"}})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, l) = c.get("/os-aggregates", "admin").await;
    assert_eq!(l["aggregates"][0]["hosts"], json!(["node2"]));
    let (_, g) = c.get(&format!("/os-server-groups/{gid}"), "alice").await;
    assert_eq!(g["server_group"]["members"], json!([id]));
    let (_, s) = c.get(&format!("/servers/{id}"), "alice").await;
    assert_eq!(s["server"]["server_groups"], json!([gid]), "2.71+ shows the server's group");
}

#[tokio::test]
async fn a_preparing_live_migration_can_be_aborted_from_2_65() {
    let c = Cloud::start(2, FakeDriverConfig { op_delay_ms: 300, ..Default::default() }).await;
    let id = c.boot("alice", "ab", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let src = host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]);
    let (st, _) = action(&c, &id, "admin", json!({"os-migrateLive": {"host": null, "block_migration": "auto"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (st, l) = c.get(&format!("/servers/{id}/migrations"), "admin").await;
    assert_eq!(st, StatusCode::OK);
    let m = &l["migrations"][0];
    assert_eq!(m["status"], "preparing", "{l}");
    let mid = m["id"].as_i64().unwrap();
    let (st, shown) = c.get(&format!("/servers/{id}/migrations/{mid}"), "admin").await;
    assert_eq!((st, shown["migration"]["server_uuid"].as_str()), (StatusCode::OK, Some(id.as_str())));
    let (st, _) = c
        .call(
            Method::POST,
            &format!("/servers/{id}/migrations/{mid}/action"),
            "admin",
            Some(json!({"force_complete": null})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "only a running migration can be forced");
    let path = format!("/servers/{id}/migrations/{mid}");
    let (st, _) = c.call_v(Method::DELETE, &path, "admin", None, "2.64").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "before 2.65 only running migrations abort");
    let (st, _) = c.call(Method::DELETE, &path, "admin", None).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]), src, "stayed on its host");
    assert_eq!(migration_of(&c, &id).await["status"], "cancelled");
    assert_eq!(c.placement.consumers(), vec![id.clone()], "the destination claim is given back");
}

#[tokio::test]
async fn a_crash_mid_evacuation_and_mid_cold_migration_resumes() {
    let slow = FakeDriverConfig { op_delay_ms: 150, ..Default::default() };
    let mut c = Cloud::start(3, slow).await;
    let e = c.boot("alice", "e", "42").await;
    let m = c.boot("alice", "m", "42").await;
    for id in [&e, &m] {
        c.wait_status(id, "alice", "ACTIVE").await;
    }
    let dead = host(&c.get(&format!("/servers/{e}"), "admin").await.1["server"]);
    let (_, svcs) = c.get(&format!("/os-services?host={dead}&binary=nova-compute"), "admin").await;
    let sid = svcs["services"][0]["id"].as_str().unwrap().to_string();
    c.call(Method::PUT, &format!("/os-services/{sid}"), "admin", Some(json!({"forced_down": true}))).await;
    let (st, _) = action(&c, &e, "admin", json!({"evacuate": {}})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = action(&c, &m, "admin", json!({"migrate": null})).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(60)).await;
    for (id, t) in [(&e, "rebuilding"), (&m, "resize_migrating")] {
        let (_, s) = c.get(&format!("/servers/{id}"), "admin").await;
        assert_eq!(s["server"]["OS-EXT-STS:task_state"], t, "caught mid-operation");
    }
    crash_everything(&mut c).await;
    c.wait_status(&e, "alice", "SHUTOFF").await;
    c.wait_status(&m, "alice", "VERIFY_RESIZE").await;
    assert_ne!(host(&c.get(&format!("/servers/{e}"), "admin").await.1["server"]), dead);
    assert_eq!(migration_of(&c, &e).await["status"], "done");
    let mm = migration_of(&c, &m).await;
    let mut want = vec![e.clone(), m.clone(), mm["uuid"].as_str().unwrap().to_string()];
    want.sort();
    assert_eq!(c.placement.consumers(), want);
    assert!(c.placement.overcommitted().is_empty());
}
