//! Compute API behaviour end to end in one process: API → conductor → scheduler →
//! placement (in memory) → agent over the bus → fake driver → back.

mod harness;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use harness::{Cloud, IMAGE};
use serde_json::json;
use stratus_compute_agent::virt::fake::FakeDriverConfig;
use stratus_compute_agent::virt::PowerState;

#[tokio::test]
async fn flavors_access_and_extra_specs() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    let (s, b) = c.get("/flavors/detail", "alice").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = b["flavors"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for n in ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge", "m1.nano"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let nano = b["flavors"].as_array().unwrap().iter().find(|f| f["name"] == "m1.nano").unwrap();
    assert_eq!(nano["ram"], 128);
    assert_eq!(nano["swap"], 0, "2.75+ shows swap as an integer");

    let body = json!({"flavor": {"name": "priv", "ram": 256, "vcpus": 1, "disk": 1, "id": "auto", "os-flavor-access:is_public": false}});
    let (s, _) = c.post("/flavors", "alice", body.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, f) = c.post("/flavors", "admin", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let fid = f["flavor"]["id"].as_str().unwrap().to_string();
    let (s, _) = c.post("/flavors", "admin", body).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(c.get(&format!("/flavors/{fid}"), "alice").await.0, StatusCode::NOT_FOUND);
    let (s, a) = c.post(&format!("/flavors/{fid}/action"), "admin", json!({"addTenantAccess": {"tenant": "pA"}})).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["flavor_access"][0]["tenant_id"], "pA");
    assert_eq!(c.get(&format!("/flavors/{fid}"), "alice").await.0, StatusCode::OK);
    assert_eq!(c.get(&format!("/flavors/{fid}"), "bob").await.0, StatusCode::NOT_FOUND);

    let (s, e) = c
        .post(&format!("/flavors/{fid}/os-extra_specs"), "admin", json!({"extra_specs": {"hw:cpu_policy": "shared"}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (_, f) = c.get(&format!("/flavors/{fid}"), "alice").await;
    assert_eq!(f["flavor"]["extra_specs"]["hw:cpu_policy"], "shared");
    let (s, _) = c.call(Method::DELETE, &format!("/flavors/{fid}/os-extra_specs/hw:cpu_policy"), "alice", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = c.call(Method::DELETE, &format!("/flavors/{fid}"), "admin", None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, e) = c.get("/flavors/nope", "alice").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["itemNotFound"]["message"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn keypairs_generate_import_and_stay_per_user() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    let (s, k) =
        c.call_v(Method::POST, "/os-keypairs", "alice", Some(json!({"keypair": {"name": "gen"}})), "2.10").await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert!(k["keypair"]["private_key"].as_str().unwrap().contains("OPENSSH PRIVATE KEY"));
    let public = k["keypair"]["public_key"].as_str().unwrap().to_string();
    let (s, k2) = c.post("/os-keypairs", "alice", json!({"keypair": {"name": "imp", "public_key": public}})).await;
    assert_eq!(s, StatusCode::CREATED, "{k2}");
    assert!(k2["keypair"].get("private_key").is_none());
    assert_eq!(k2["keypair"]["fingerprint"], k["keypair"]["fingerprint"]);
    let (s, _) = c.post("/os-keypairs", "alice", json!({"keypair": {"name": "imp", "public_key": public}})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) =
        c.post("/os-keypairs", "alice", json!({"keypair": {"name": "bad", "public_key": "ssh-rsa AAAA"}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, l) = c.get("/os-keypairs", "alice").await;
    assert_eq!(l["keypairs"].as_array().unwrap().len(), 2);
    let (_, l) = c.get("/os-keypairs", "alice2").await;
    assert_eq!(l["keypairs"].as_array().unwrap().len(), 0, "keypairs are per user");
    assert_eq!(c.get("/os-keypairs/imp?user_id=u-alice", "alice2").await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/os-keypairs/imp?user_id=u-alice", "admin").await.0, StatusCode::OK);
    assert_eq!(c.call(Method::DELETE, "/os-keypairs/imp", "alice", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.get("/os-keypairs/imp", "alice").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn server_lifecycle_state_machine_and_actions() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "web 1", "42").await;
    let s = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    assert_eq!(s["flavor"]["original_name"], "m1.nano");
    assert_eq!(s["flavor"]["ram"], 128);
    assert_eq!(s["OS-EXT-SRV-ATTR:hostname"], "web-1");
    assert_eq!(s["locked"], false);
    assert!(s.get("OS-EXT-SRV-ATTR:host").is_none(), "members do not see the host");
    let (_, a) = c.get(&format!("/servers/{id}"), "admin").await;
    assert_eq!(a["server"]["OS-EXT-SRV-ATTR:host"], "node1");
    assert_eq!(c.placement.consumers(), vec![id.clone()]);

    let act = |body: serde_json::Value| {
        let (c, id) = (&c, id.clone());
        async move { c.post(&format!("/servers/{id}/action"), "alice", body).await }
    };
    assert_eq!(act(json!({"os-stop": null})).await.0, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "SHUTOFF").await;
    let (s, e) = act(json!({"os-stop": null})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(e["conflictingRequest"]["message"].as_str().unwrap().contains("vm_state stopped"), "{e}");
    assert_eq!(act(json!({"reboot": {"type": "SOFT"}})).await.0, StatusCode::CONFLICT);
    assert_eq!(act(json!({"os-start": null})).await.0, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(act(json!({"reboot": {"type": "HARD"}})).await.0, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(act(json!({"pause": null})).await.0, StatusCode::ACCEPTED);
    let p = c.wait_status(&id, "alice", "PAUSED").await;
    assert_eq!(p["OS-EXT-STS:power_state"], 3);
    assert_eq!(act(json!({"suspend": null})).await.0, StatusCode::CONFLICT);
    assert_eq!(act(json!({"unpause": null})).await.0, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(act(json!({"suspend": null})).await.0, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "SUSPENDED").await;
    assert_eq!(act(json!({"resume": null})).await.0, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (s, r) = act(json!({"rescue": null})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(r["adminPass"].is_string());
    c.wait_status(&id, "alice", "RESCUE").await;
    assert_eq!(act(json!({"unrescue": null})).await.0, StatusCode::ACCEPTED);
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (s, out) = act(json!({"os-getConsoleOutput": {"length": 50}})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(out["output"].as_str().unwrap().contains("booting"), "{out}");
    assert_eq!(act(json!({"bogus": null})).await.0, StatusCode::BAD_REQUEST);

    // Locks: the owner's lock blocks actions by other members; an admin's lock blocks
    // the owner's unlock; admins are exempt.
    assert_eq!(act(json!({"lock": {"locked_reason": "maintenance"}})).await.0, StatusCode::ACCEPTED);
    let (_, s) = c.get(&format!("/servers/{id}"), "alice").await;
    assert_eq!(s["server"]["locked"], true);
    assert_eq!(s["server"]["locked_reason"], "maintenance");
    let (st, _) = c.post(&format!("/servers/{id}/action"), "alice2", json!({"os-stop": null})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(c.call(Method::DELETE, &format!("/servers/{id}"), "alice", None).await.0, StatusCode::CONFLICT);
    assert_eq!(act(json!({"unlock": null})).await.0, StatusCode::ACCEPTED);
    assert_eq!(c.post(&format!("/servers/{id}/action"), "admin", json!({"lock": {}})).await.0, StatusCode::ACCEPTED);
    assert_eq!(act(json!({"unlock": null})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        c.post(&format!("/servers/{id}/action"), "admin", json!({"unlock": null})).await.0,
        StatusCode::ACCEPTED
    );

    // Metadata and update.
    let (s, m) = c.post(&format!("/servers/{id}/metadata"), "alice", json!({"metadata": {"role": "web"}})).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let (s, u) = c
        .call(
            Method::PUT,
            &format!("/servers/{id}"),
            "alice",
            Some(json!({"server": {"name": "renamed", "description": "d"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["server"]["name"], "renamed");
    assert_eq!(u["server"]["metadata"]["role"], "web");

    // Instance actions, newest first, with events.
    let (_, ia) = c.get(&format!("/servers/{id}/os-instance-actions"), "alice").await;
    let actions: Vec<&str> =
        ia["instanceActions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions.last(), Some(&"create"));
    for a in ["stop", "start", "reboot", "pause", "suspend", "rescue", "lock"] {
        assert!(actions.contains(&a), "{actions:?}");
    }
    let create_req =
        ia["instanceActions"].as_array().unwrap().last().unwrap()["request_id"].as_str().unwrap().to_string();
    let (_, one) = c.get(&format!("/servers/{id}/os-instance-actions/{create_req}"), "admin").await;
    let events: Vec<&str> =
        one["instanceAction"]["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["conductor_schedule_and_build_instances", "compute_build_and_run_instance"]);
    assert!(one["instanceAction"]["events"].as_array().unwrap().iter().all(|e| e["result"] == "Success"));

    // Delete releases everything.
    assert_eq!(c.call(Method::DELETE, &format!("/servers/{id}"), "alice", None).await.0, StatusCode::NO_CONTENT);
    c.wait_gone(&id, "alice").await;
    assert!(c.placement.consumers().is_empty());
    assert_eq!(c.agents[0].1.guest_count(), 0);
}

#[tokio::test]
async fn projects_are_isolated_and_lists_filter_and_page() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let a1 = c.boot("alice", "alpha-1", "42").await;
    let a2 = c.boot("alice", "alpha-2", "42").await;
    let b1 = c.boot("bob", "beta", "42").await;
    for (id, t) in [(&a1, "alice"), (&a2, "alice"), (&b1, "bob")] {
        c.wait_status(id, t, "ACTIVE").await;
    }
    let (_, l) = c.get("/servers", "bob").await;
    assert_eq!(l["servers"].as_array().unwrap().len(), 1);
    assert_eq!(c.get(&format!("/servers/{a1}"), "bob").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        c.post(&format!("/servers/{a1}/action"), "bob", json!({"os-stop": null})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(c.call(Method::DELETE, &format!("/servers/{a1}"), "bob", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/servers?all_tenants=1", "bob").await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.live_servers().await.len(), 3);

    let (_, l) = c.get("/servers/detail?name=alpha-2", "alice").await;
    assert_eq!(l["servers"].as_array().unwrap().len(), 1);
    assert_eq!(l["servers"][0]["id"], a2.as_str());
    let (_, l) = c.get("/servers?status=SHUTOFF", "alice").await;
    assert!(l["servers"].as_array().unwrap().is_empty());
    let (_, p1) = c.get("/servers?limit=1&sort_key=display_name&sort_dir=asc", "alice").await;
    assert_eq!(p1["servers"][0]["name"], "alpha-1");
    let next = p1["servers_links"][0]["href"].as_str().unwrap();
    assert!(next.contains(&format!("marker={a1}")), "{next}");
    let (_, p2) = c.get(&format!("/servers?limit=1&sort_key=display_name&sort_dir=asc&marker={a1}"), "alice").await;
    assert_eq!(p2["servers"][0]["name"], "alpha-2");
    let (_, h) = c.get("/servers?all_tenants=1&host=node1", "admin").await;
    assert_eq!(h["servers"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn build_failures_reschedule_then_error_with_fault_and_no_leak() {
    let c = Cloud::start(2, FakeDriverConfig::default()).await;
    // node1 wins the tie on weights; its failure reschedules the build to node2.
    c.agents[0].1.fail_next("spawn", 1);
    let id = c.boot("alice", "retry", "42").await;
    let s = c.wait_status(&id, "admin", "ACTIVE").await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "node2");
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    let (_, ia) = c.get(&format!("/servers/{id}/os-instance-actions"), "admin").await;
    let req = ia["instanceActions"][0]["request_id"].as_str().unwrap().to_string();
    let (_, ev) = c.get(&format!("/servers/{id}/os-instance-actions/{req}"), "admin").await;
    assert!(ev["instanceAction"]["events"].as_array().unwrap().iter().any(|e| e["result"] == "Error"), "{ev}");
    // Every host fails: ERROR with a fault, nothing claimed.
    c.agents[0].1.fail_next("spawn", 10);
    c.agents[1].1.fail_next("spawn", 10);
    let bad = c.boot("alice", "doomed", "42").await;
    let s = c.wait_status(&bad, "admin", "ERROR").await;
    assert!(s["fault"]["details"].as_str().unwrap().contains("RetryFilter: (start: 2, end: 0)"), "{s}");
    assert_eq!(c.placement.consumers(), vec![id.clone()]);
    // Too big for any host: No valid host, with per-filter details for admins only.
    let (st, f) =
        c.post("/flavors", "admin", json!({"flavor": {"name": "huge", "ram": 1_000_000, "vcpus": 1, "disk": 1}})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, q) = c.call(Method::PUT, "/os-quota-sets/pA", "admin", Some(json!({"quota_set": {"ram": -1}}))).await;
    assert_eq!(st, StatusCode::OK, "{q}");
    let big = c.boot("alice", "big", f["flavor"]["id"].as_str().unwrap()).await;
    let s = c.wait_status(&big, "admin", "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap().starts_with("No valid host was found"), "{s}");
    assert!(s["fault"]["details"].as_str().unwrap().contains("placement: 0 candidates"), "{s}");
    let (_, user_view) = c.get(&format!("/servers/{big}"), "alice").await;
    assert!(user_view["server"]["fault"].get("details").is_none());
    // Deleting ERROR servers works and leaves only the good claim.
    for x in [&bad, &big] {
        assert_eq!(c.call(Method::DELETE, &format!("/servers/{x}"), "alice", None).await.0, StatusCode::NO_CONTENT);
        c.wait_gone(x, "alice").await;
    }
    assert_eq!(c.placement.consumers(), vec![id]);
}

#[tokio::test]
async fn quotas_limit_creates_and_limits_report_usage() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let (s, _) = c.call(Method::PUT, "/os-quota-sets/pA", "alice", Some(json!({"quota_set": {"instances": 1}}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = c.call(Method::PUT, "/os-quota-sets/pA", "admin", Some(json!({"quota_set": {"instances": 1}}))).await;
    assert_eq!(s, StatusCode::OK);
    let id = c.boot("alice", "one", "42").await;
    let (s, e) = c
        .post(
            "/servers",
            "alice",
            json!({"server": {"name": "two", "flavorRef": "42", "imageRef": IMAGE, "networks": "none"}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(e["forbidden"]["message"].as_str().unwrap().contains("Quota exceeded for instances"));
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (_, l) = c.get("/limits", "alice").await;
    assert_eq!(l["limits"]["absolute"]["totalInstancesUsed"], 1);
    assert_eq!(l["limits"]["absolute"]["maxTotalInstances"], 1);
    assert_eq!(l["limits"]["absolute"]["totalRAMUsed"], 128);
    let (_, d) = c.get("/os-quota-sets/pA/detail", "alice").await;
    assert_eq!(d["quota_set"]["instances"]["in_use"], 1);
    assert_eq!(c.get("/os-quota-sets/pA", "bob").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn services_hypervisors_and_zones() {
    let cfg = stratus_compute::ComputeConfig { service_down_time_secs: 2, ..harness::test_config() };
    let mut c = Cloud::start_with(2, FakeDriverConfig::default(), cfg).await;
    let (s, l) = c.get("/os-services?binary=nova-compute", "admin").await;
    assert_eq!(s, StatusCode::OK);
    let svcs = l["services"].as_array().unwrap();
    assert_eq!(svcs.len(), 2);
    assert!(svcs.iter().all(|s| s["state"] == "up" && s["status"] == "enabled"));
    assert_eq!(c.get("/os-services", "alice").await.0, StatusCode::FORBIDDEN);
    // Disable node1 with a reason: the scheduler stops using it.
    let sid = svcs.iter().find(|s| s["host"] == "node1").unwrap()["id"].as_str().unwrap().to_string();
    let (s, u) = c
        .call(
            Method::PUT,
            &format!("/os-services/{sid}"),
            "admin",
            Some(json!({"status": "disabled", "disabled_reason": "maint"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["service"]["disabled_reason"], "maint");
    for n in 0..3 {
        let id = c.boot("alice", &format!("s{n}"), "42").await;
        let s = c.wait_status(&id, "admin", "ACTIVE").await;
        assert_eq!(s["OS-EXT-SRV-ATTR:host"], "node2");
    }
    let (_, h) = c.call_v(Method::GET, "/os-hypervisors/detail", "admin", None, "2.87").await;
    let n2 = h["hypervisors"].as_array().unwrap().iter().find(|h| h["hypervisor_hostname"] == "node2").unwrap();
    assert_eq!(n2["running_vms"], 3);
    assert_eq!(n2["memory_mb_used"], 3 * 128);
    assert_eq!(n2["hypervisor_type"], "fake");
    let (_, st) = c.call_v(Method::GET, "/os-hypervisors/statistics", "admin", None, "2.87").await;
    assert_eq!(st["hypervisor_statistics"]["count"], 2);
    let (_, z) = c.get("/os-availability-zone", "alice").await;
    assert_eq!(z["availabilityZoneInfo"][0]["zoneName"], "nova");
    // A dead agent shows as down once its heartbeats stop, and gets no new servers.
    c.kill_agent(1);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (_, l) = c.get("/os-services?host=node2", "admin").await;
    assert_eq!(l["services"][0]["state"], "down");
    let id = c.boot("alice", "nowhere", "42").await;
    let s = c.wait_status(&id, "admin", "ERROR").await;
    assert!(s["fault"]["details"].as_str().unwrap().contains("ComputeFilter: (start: 2, end: 0)"), "{s}");
}

#[tokio::test]
async fn crash_mid_build_resumes_to_active_and_allocations_match() {
    // Slow spawns keep builds in flight when the controller "crashes".
    let mut c = Cloud::start(1, FakeDriverConfig { op_delay_ms: 300, ..Default::default() }).await;
    let ids: Vec<String> = {
        let mut v = vec![];
        for n in 0..3 {
            v.push(c.boot("alice", &format!("c{n}"), "42").await);
        }
        v
    };
    // A claim made right before a crash, whose host never got recorded.
    let orphan_claim = c.boot("alice", "c-orphan", "42").await;
    c.restart_controller().await;
    c.kill_agent(0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.restart_agent(0).await;
    c.restart_controller().await;
    for id in ids.iter().chain([&orphan_claim]) {
        c.wait_status(id, "alice", "ACTIVE").await;
    }
    let mut live = c.live_servers().await;
    live.sort();
    assert_eq!(c.placement.consumers(), live, "allocations match the servers");
    assert!(c.placement.overcommitted().is_empty());
    assert_eq!(c.agents[0].1.guest_count(), 4);
}

#[tokio::test]
async fn crash_mid_action_settles_from_the_hypervisor() {
    let mut c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "x", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    // A stop is in flight on a slow hypervisor when agent and controller crash; the guest
    // did stop. After the restart the task is settled from what the hypervisor reports.
    c.agents[0].2.take().unwrap().stop();
    let slow =
        stratus_compute_agent::virt::fake::FakeDriver::new(FakeDriverConfig { op_delay_ms: 500, ..Default::default() });
    slow.add_orphan(&id);
    c.agents[0].1 = slow;
    c.restart_agent(0).await;
    let (s, _) = c.post(&format!("/servers/{id}/action"), "alice", json!({"os-stop": null})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.kill_agent(0);
    let (_, mid) = c.get(&format!("/servers/{id}"), "alice").await;
    assert_eq!(mid["server"]["OS-EXT-STS:task_state"], "powering-off");
    c.agents[0].1.set_power_state(&id, PowerState::Shutdown);
    c.restart_agent(0).await;
    c.restart_controller().await;
    let s = c.wait_status(&id, "alice", "SHUTOFF").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
}

#[tokio::test]
async fn reconciliation_destroys_orphans_and_syncs_power_state() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "r", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let d = &c.agents[0].1;
    d.add_orphan("00000000-dead-beef-0000-000000000000");
    d.set_power_state(&id, PowerState::Shutdown);
    c.agents[0].2.as_ref().unwrap().agent.reconcile().await.unwrap();
    let s = c.wait_status(&id, "alice", "SHUTOFF").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    assert_eq!(d.guest_count(), 1);
}

/// A guest missing from one power-state report may only have been listed before its
/// build finished; one missing from two reports in a row is gone: ERROR with a fault.
#[tokio::test]
async fn a_vanished_guest_is_an_error_only_when_two_reports_lack_it() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "v", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    c.agents[0].1.lose_guest(&id);
    let agent = &c.agents[0].2.as_ref().unwrap().agent;
    agent.reconcile().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, once) = c.get(&format!("/servers/{id}"), "alice").await;
    assert_eq!(once["server"]["status"], "ACTIVE", "one report lacking the guest is not enough: {once}");
    agent.reconcile().await.unwrap();
    let s = c.wait_status(&id, "alice", "ERROR").await;
    assert_eq!(s["fault"]["message"], "The guest disappeared from its host", "{s}");
}

#[tokio::test]
async fn boots_claim_in_the_real_placement_service() {
    let c = Cloud::start_with_placement(2, FakeDriverConfig::default(), harness::test_config()).await;
    boots_claim_in(c).await;
}

/// The same with candidates and claims over placement's REST API (what a placement in
/// another process gets) instead of its typed in-process API.
#[tokio::test]
async fn boots_claim_in_the_real_placement_service_over_rest() {
    let c = Cloud::start_with_placement_rest(2, FakeDriverConfig::default(), harness::test_config()).await;
    boots_claim_in(c).await;
}

async fn boots_claim_in(c: Cloud) {
    let pv = [("OpenStack-API-Version", "placement 1.39")];
    let (s, rps) = c.raw(Method::GET, "/placement/resource_providers", &pv).await;
    assert_eq!(s, StatusCode::OK, "{rps}");
    let rps = rps["resource_providers"].as_array().unwrap().clone();
    assert_eq!(rps.len(), 2, "{rps:?}");
    let rp = rps[0]["uuid"].as_str().unwrap().to_string();
    let (_, inv) = c.raw(Method::GET, &format!("/placement/resource_providers/{rp}/inventories"), &pv).await;
    assert_eq!(inv["inventories"]["MEMORY_MB"]["reserved"], 512);
    assert_eq!(inv["inventories"]["VCPU"]["allocation_ratio"], 4.0);

    let mut ids = vec![];
    for n in 0..6 {
        ids.push(c.boot("alice", &format!("p{n}"), "42").await);
    }
    for id in &ids {
        c.wait_status(id, "alice", "ACTIVE").await;
    }
    let (_, a) = c.raw(Method::GET, &format!("/placement/allocations/{}", ids[0]), &pv).await;
    let alloc = a["allocations"].as_object().unwrap();
    assert_eq!(alloc.len(), 1);
    assert_eq!(alloc.values().next().unwrap()["resources"]["MEMORY_MB"], 128);
    let (_, u) = c.raw(Method::GET, "/placement/usages?project_id=pA", &pv).await;
    assert_eq!(u["usages"]["all"]["MEMORY_MB"], 6 * 128, "{u}");
    for id in &ids {
        assert_eq!(c.call(Method::DELETE, &format!("/servers/{id}"), "alice", None).await.0, StatusCode::NO_CONTENT);
        c.wait_gone(id, "alice").await;
    }
    let (_, u) = c.raw(Method::GET, "/placement/usages?project_id=pA", &pv).await;
    assert_eq!(u["usages"]["all"]["MEMORY_MB"].as_i64().unwrap_or(0), 0, "no leaked allocation: {u}");
}
