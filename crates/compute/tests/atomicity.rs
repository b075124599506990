//! Races and no-valid-host outcomes, over the compute API in one process, on SQLite and
//! PostgreSQL: quotas that concurrent requests must not overshoot together (resize
//! cores, server group members), integer ids handed out to concurrent creates
//! (aggregates, migrations), and moves that find no host.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use harness::Cloud;
use serde_json::{json, Value};
use stratus_compute_agent::virt::fake::FakeDriverConfig;

async fn sqlite(hosts: usize) -> Arc<Cloud> {
    Arc::new(Cloud::start(hosts, FakeDriverConfig::default()).await)
}

async fn postgres(hosts: usize) -> Arc<Cloud> {
    Arc::new(Cloud::start_postgres(hosts, FakeDriverConfig::default(), harness::test_config()).await)
}

async fn action(c: &Cloud, id: &str, token: &str, body: Value) -> (StatusCode, Value) {
    c.post(&format!("/servers/{id}/action"), token, body).await
}

async fn set_quota(c: &Cloud, body: Value) {
    let (st, b) = c.call(Method::PUT, "/os-quota-sets/pA", "admin", Some(json!({ "quota_set": body }))).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// Fires `n` requests at once (each built by `f(i)`) and returns their statuses in order.
async fn at_once<F, Fut>(n: usize, f: F) -> Vec<(StatusCode, Value)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let fut = f(i);
        set.spawn(async move { (i, fut.await) });
    }
    let mut out = vec![(StatusCode::IM_A_TEAPOT, Value::Null); n];
    while let Some(r) = set.join_next().await {
        let (i, v) = r.unwrap();
        out[i] = v;
    }
    out
}

/// Waits (bounded) until the server has no task and its status is one of `want`.
async fn settle(c: &Cloud, id: &str, want: &[&str]) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        let (_, b) = c.get(&format!("/servers/{id}"), "admin").await;
        let s = &b["server"];
        if s["OS-EXT-STS:task_state"].is_null() && want.iter().any(|w| s["status"] == *w) {
            return s.clone();
        }
        last = b;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server {id} never settled in {want:?}: {last}");
}

// --- quotas ---------------------------------------------------------------------------

/// Four servers of 1 vCPU, a cores quota of 6: of four concurrent resizes that each add
/// one vCPU, exactly two are accepted, and once they wait for confirmation (the row
/// shows the new flavor) a fifth request is refused too.
async fn resizes_share_the_cores_quota(c: Arc<Cloud>) {
    let (st, b) = c
        .post("/flavors", "admin", json!({"flavor": {"name": "c2", "id": "c2", "ram": 128, "vcpus": 2, "disk": 1}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    set_quota(&c, json!({"cores": 6, "ram": -1, "instances": 10})).await;
    let mut ids = vec![];
    for n in 0..4 {
        ids.push(c.boot("alice", &format!("q{n}"), "42").await);
    }
    for id in &ids {
        c.wait_status(id, "alice", "ACTIVE").await;
    }
    let res = at_once(4, |i| {
        let (c, id) = (c.clone(), ids[i].clone());
        async move { action(&c, &id, "alice", json!({"resize": {"flavorRef": "c2"}})).await }
    })
    .await;
    let accepted: Vec<usize> = (0..4).filter(|i| res[*i].0 == StatusCode::ACCEPTED).collect();
    let refused: Vec<&(StatusCode, Value)> = res.iter().filter(|(s, _)| *s == StatusCode::FORBIDDEN).collect();
    assert_eq!((accepted.len(), refused.len()), (2, 2), "{res:?}");
    for (_, b) in &refused {
        let msg = b["forbidden"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("cores"), "{b}");
    }
    for i in &accepted {
        settle(&c, &ids[*i], &["VERIFY_RESIZE"]).await;
    }
    // Both resizes now count with their new flavor: 2 + 2 + 1 + 1 = 6 cores used.
    let other = (0..4).find(|i| !accepted.contains(i)).unwrap();
    let (st, b) = action(&c, &ids[other], "alice", json!({"resize": {"flavorRef": "c2"}})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    // Reverting one gives its core back.
    action(&c, &ids[accepted[0]], "alice", json!({"revertResize": null})).await;
    settle(&c, &ids[accepted[0]], &["ACTIVE"]).await;
    let (st, b) = action(&c, &ids[other], "alice", json!({"resize": {"flavorRef": "c2"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    settle(&c, &ids[other], &["VERIFY_RESIZE"]).await;
}

#[tokio::test]
async fn concurrent_resizes_cannot_exceed_the_cores_quota() {
    resizes_share_the_cores_quota(sqlite(2).await).await;
}

#[tokio::test]
async fn concurrent_resizes_cannot_exceed_the_cores_quota_on_postgres() {
    resizes_share_the_cores_quota(postgres(2).await).await;
}

/// `server_group_members` = 3: of eight concurrent boots into one group, exactly three
/// become members; the rest are refused with 403 and leave no server behind.
async fn group_members_share_their_quota(c: Arc<Cloud>) {
    set_quota(&c, json!({"server_group_members": 3, "instances": -1, "cores": -1, "ram": -1})).await;
    let (st, g) =
        c.post("/os-server-groups", "alice", json!({"server_group": {"name": "g", "policy": "soft-affinity"}})).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    let gid = g["server_group"]["id"].as_str().unwrap().to_string();
    let res = at_once(8, |i| {
        let (c, gid) = (c.clone(), gid.clone());
        async move {
            c.post(
                "/servers",
                "alice",
                json!({"server": {"name": format!("m{i}"), "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none"},
                       "os:scheduler_hints": {"group": gid}}),
            )
            .await
        }
    })
    .await;
    let ok: Vec<String> = res
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| b["server"]["id"].as_str().unwrap().to_string())
        .collect();
    let refused =
        res.iter().filter(|(s, b)| *s == StatusCode::FORBIDDEN && b.to_string().contains("server_group_members"));
    assert_eq!((ok.len(), refused.count()), (3, 5), "{res:?}");
    for id in &ok {
        c.wait_status(id, "alice", "ACTIVE").await;
    }
    let (_, g) = c.get(&format!("/os-server-groups/{gid}"), "alice").await;
    let mut members: Vec<String> =
        g["server_group"]["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
    members.sort();
    let mut ok = ok;
    ok.sort();
    assert_eq!(members, ok);
    assert_eq!(c.live_servers().await, ok, "refused boots leave no server");
}

#[tokio::test]
async fn concurrent_boots_cannot_exceed_the_server_group_members_quota() {
    group_members_share_their_quota(sqlite(2).await).await;
}

#[tokio::test]
async fn concurrent_boots_cannot_exceed_the_server_group_members_quota_on_postgres() {
    group_members_share_their_quota(postgres(2).await).await;
}

// --- integer ids ----------------------------------------------------------------------

/// Sixteen aggregates created at once and six servers cold-migrated at once all succeed
/// with distinct, increasing ids (they were `MAX(id) + 1`, which collided on PostgreSQL).
async fn ids_under_concurrency(c: Arc<Cloud>) {
    let res = at_once(16, |i| {
        let c = c.clone();
        async move { c.post("/os-aggregates", "admin", json!({"aggregate": {"name": format!("agg{i}")}})).await }
    })
    .await;
    let mut ids: Vec<i64> = res
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, StatusCode::OK, "{b}");
            b["aggregate"]["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=16).collect::<Vec<i64>>());

    set_quota(&c, json!({"instances": -1, "cores": -1, "ram": -1})).await;
    let mut servers = vec![];
    for n in 0..6 {
        servers.push(c.boot("alice", &format!("mig{n}"), "42").await);
    }
    for id in &servers {
        c.wait_status(id, "alice", "ACTIVE").await;
    }
    let res = at_once(6, |i| {
        let (c, id) = (c.clone(), servers[i].clone());
        async move { action(&c, &id, "admin", json!({"migrate": null})).await }
    })
    .await;
    for (s, b) in &res {
        assert_eq!(*s, StatusCode::ACCEPTED, "{b}");
    }
    for id in &servers {
        settle(&c, id, &["VERIFY_RESIZE", "ACTIVE"]).await;
    }
    let (_, m) = c.get("/os-migrations", "admin").await;
    let mut mids: Vec<i64> = m["migrations"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect();
    mids.sort();
    assert_eq!(mids, (1..=6).collect::<Vec<i64>>(), "{m}");
    // After the burst, the next id follows on.
    let (s, b) = c.post("/os-aggregates", "admin", json!({"aggregate": {"name": "after"}})).await;
    assert_eq!((s, b["aggregate"]["id"].as_i64()), (StatusCode::OK, Some(17)), "{b}");
}

#[tokio::test]
async fn concurrent_creates_get_distinct_aggregate_and_migration_ids() {
    ids_under_concurrency(sqlite(2).await).await;
}

#[tokio::test]
async fn concurrent_creates_get_distinct_aggregate_and_migration_ids_on_postgres() {
    ids_under_concurrency(postgres(2).await).await;
}

// --- no valid host --------------------------------------------------------------------

/// The latest action of a server and its events (as the admin sees them).
async fn last_action(c: &Cloud, id: &str) -> (Value, Vec<Value>) {
    let (_, acts) = c.get(&format!("/servers/{id}/os-instance-actions"), "admin").await;
    let a = acts["instanceActions"][0].clone();
    let rid = a["request_id"].as_str().unwrap().to_string();
    let (_, one) = c.get(&format!("/servers/{id}/os-instance-actions/{rid}"), "admin").await;
    (a, one["instanceAction"]["events"].as_array().cloned().unwrap_or_default())
}

/// Waits until the server's latest action has finished.
async fn action_done(c: &Cloud, id: &str, name: &str) -> (Value, Vec<Value>) {
    for _ in 0..500 {
        let (a, ev) = last_action(c, id).await;
        if a["action"] == name && !ev.is_empty() && ev.iter().all(|e| !e["finish_time"].is_null()) {
            // The list was read before the events: read the action again, now finished.
            return (last_action(c, id).await.0, ev);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("action {name} of {id} never finished: {:?}", last_action(c, id).await);
}

/// With nowhere to go, resize, cold migrate and live migrate answer 202 and leave the
/// server as it was (ACTIVE or SHUTOFF, no task, no fault, on its host), with the action
/// and its event marked Error and the migration `error`, as Nova's conductor does; an
/// unshelve leaves it SHELVED_OFFLOADED; an evacuation (whose source is down) ends in
/// ERROR with the "No valid host" fault, also as Nova.
#[tokio::test]
async fn moves_with_no_valid_host_leave_the_server_as_it_was() {
    let c = sqlite(1).await;
    let id = c.boot("alice", "nvh", "42").await;
    let before = c.wait_status(&id, "alice", "ACTIVE").await;
    let host = |s: &Value| s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string();
    let src = host(&c.get(&format!("/servers/{id}"), "admin").await.1["server"]);

    let moves: [(&str, Value, &str, &str); 4] = [
        ("resize", json!({"resize": {"flavorRef": "1"}}), "resize", "ACTIVE"),
        ("migrate", json!({"migrate": null}), "migrate", "ACTIVE"),
        ("live", json!({"os-migrateLive": {"host": null, "block_migration": "auto"}}), "live-migration", "ACTIVE"),
        ("migrate-stopped", json!({"migrate": null}), "migrate", "SHUTOFF"),
    ];
    for (what, body, act, want) in moves {
        if want == "SHUTOFF" {
            action(&c, &id, "alice", json!({"os-stop": null})).await;
            settle(&c, &id, &["SHUTOFF"]).await;
        }
        let (st, b) = action(&c, &id, "admin", body).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{what}: {b}");
        let (a, events) = action_done(&c, &id, act).await;
        assert_eq!(a["message"], "Error", "{what}: {a} {events:?}");
        assert!(events.iter().any(|e| e["result"] == "Error"), "{what}: {events:?}");
        let s = settle(&c, &id, &[want]).await;
        assert_eq!(s["status"], want, "{what}: {s}");
        assert!(s["fault"].is_null(), "{what}: a server still fine on its host has no fault: {s}");
        assert_eq!(host(&s), src, "{what}");
        assert_eq!(s["flavor"]["original_name"], before["flavor"]["original_name"], "{what}");
        let (_, m) = c.get(&format!("/os-migrations?instance_uuid={id}"), "admin").await;
        assert_eq!(m["migrations"][0]["status"], "error", "{what}: {m}");
    }
    assert_eq!(c.placement.consumers(), vec![id.clone()], "the source claim is the server's again");

    // Unshelve with the only host disabled: back to SHELVED_OFFLOADED, no task.
    action(&c, &id, "alice", json!({"os-start": null})).await;
    settle(&c, &id, &["ACTIVE"]).await;
    action(&c, &id, "alice", json!({"shelve": null})).await;
    settle(&c, &id, &["SHELVED_OFFLOADED"]).await;
    let (_, svcs) = c.get("/os-services?binary=nova-compute", "admin").await;
    let sid = svcs["services"][0]["id"].as_str().unwrap().to_string();
    let (st, _) =
        c.call(Method::PUT, &format!("/os-services/{sid}"), "admin", Some(json!({"status": "disabled"}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = action(&c, &id, "alice", json!({"unshelve": null})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let (a, _) = action_done(&c, &id, "unshelve").await;
    assert_eq!(a["message"], "Error", "{a}");
    let s = settle(&c, &id, &["SHELVED_OFFLOADED"]).await;
    assert!(s["fault"].is_null(), "{s}");
    assert!(c.placement.consumers().is_empty(), "an offloaded server holds nothing");
    c.call(Method::PUT, &format!("/os-services/{sid}"), "admin", Some(json!({"status": "enabled"}))).await;
    action(&c, &id, "alice", json!({"unshelve": null})).await;
    settle(&c, &id, &["ACTIVE"]).await;

    // Evacuate from a host that is down, with no other host: ERROR, as Nova.
    c.call(Method::PUT, &format!("/os-services/{sid}"), "admin", Some(json!({"forced_down": true}))).await;
    let (st, b) = action(&c, &id, "admin", json!({"evacuate": {}})).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let s = settle(&c, &id, &["ERROR"]).await;
    assert!(s["fault"]["message"].as_str().unwrap_or_default().contains("No valid host"), "{s}");
    assert_eq!(host(&s), src);
    let (_, m) = c.get(&format!("/os-migrations?instance_uuid={id}"), "admin").await;
    assert_eq!(
        (m["migrations"][0]["migration_type"].as_str(), m["migrations"][0]["status"].as_str()),
        (Some("evacuation"), Some("error")),
        "{m}"
    );
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
}

/// Undoing a claim goes through one checked path: a release that fails for a moment is
/// retried, and one that keeps failing is counted (not silently dropped) while the
/// server still ends where it would have (ERROR with "No valid host").
#[tokio::test]
async fn a_failed_undo_of_a_claim_is_retried_then_counted() {
    let c = sqlite(1).await;
    let (st, f) =
        c.post("/flavors", "admin", json!({"flavor": {"name": "huge", "ram": 1_000_000, "vcpus": 1, "disk": 1}})).await;
    assert_eq!(st, StatusCode::OK, "{f}");
    let huge = f["flavor"]["id"].as_str().unwrap().to_string();
    set_quota(&c, json!({"ram": -1})).await;
    let conductor = &c.service.state().conductor;
    // Two failures: the third attempt gives the claim back, nothing to count.
    c.placement.fail_next_releases(2);
    let a = c.boot("alice", "a", &huge).await;
    let s = c.wait_status(&a, "alice", "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap_or_default().starts_with("No valid host"), "{s}");
    assert_eq!(conductor.undo_failures(), 0);
    // Failing every attempt: the server still ends in ERROR, and the failure is counted.
    c.placement.fail_next_releases(3);
    let b = c.boot("alice", "b", &huge).await;
    let s = c.wait_status(&b, "alice", "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap_or_default().starts_with("No valid host"), "{s}");
    assert_eq!(conductor.undo_failures(), 1);
    assert!(c.placement.consumers().is_empty(), "nothing was claimed for either: {:?}", c.placement.consumers());
}

/// Waits (bounded, generously: sending to a dead host is retried for seconds) until the
/// server's status is `want` with no task.
async fn wait_settled(c: &Cloud, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, b) = c.get(&format!("/servers/{id}"), "admin").await;
        if b["server"]["status"] == want && b["server"]["OS-EXT-STS:task_state"].is_null() {
            return b["server"].clone();
        }
        last = b;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server {id} never reached {want}: {last}");
}

/// A step sent to a host whose agent is gone is retried, then fails the way its table
/// says: a build is rescheduled (here: nowhere else, so ERROR without a claim), a live
/// migration whose destination is gone is rolled back onto its source.
#[tokio::test]
async fn steps_sent_to_a_dead_host_end_in_the_operations_failure_state() {
    let mut c = Cloud::start(1, FakeDriverConfig::default()).await;
    c.kill_agent(0);
    let a = c.boot("alice", "orphan", "42").await;
    let s = wait_settled(&c, &a, "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap_or_default().contains("No valid host"), "{s}");
    assert!(c.placement.consumers().is_empty(), "{:?}", c.placement.consumers());

    let mut c = Cloud::start(2, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "lm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (_, s) = c.get(&format!("/servers/{id}"), "admin").await;
    let src = s["server"]["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    let dest = c.agents.iter().position(|(h, _, _)| *h != src).unwrap();
    c.kill_agent(dest);
    let (st, b) = action(&c, &id, "admin", json!({"os-migrateLive": {"host": null, "block_migration": "auto"}})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let s = wait_settled(&c, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], src.as_str(), "rolled back onto its source");
    let (_, l) = c.get(&format!("/os-migrations?instance_uuid={id}"), "admin").await;
    assert_eq!(l["migrations"][0]["status"], "error", "{l}");
    assert_eq!(c.placement.consumers(), vec![id.clone()], "the destination's claim is given back");
}
