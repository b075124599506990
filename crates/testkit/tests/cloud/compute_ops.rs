//! Compute operations across hosts through the real `openstack` CLI: resize (confirm and
//! revert), cold and live migration, evacuation, shelve/unshelve, migration records,
//! aggregates and availability zones, server groups. Several fake compute agents run
//! in the test cloud as separate hosts; after every move the placement usages of every
//! host are checked against the servers that live there (no leak, no double count).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use stratus_compute_agent::virt::fake::FakeDriverConfig;
use stratus_testkit::TestCloud;

fn fake() -> FakeDriverConfig {
    FakeDriverConfig { vcpus: Some(8), memory_mb: Some(8192 + 512), local_gb: Some(100), ..Default::default() }
}

/// A cloud without the local agent and with `hosts` fake compute hosts.
async fn cloud_with_hosts(hosts: &[&str]) -> (TestCloud, Vec<stratus_compute_agent::AgentHandle>) {
    let cloud = TestCloud::start_with(|c| c.compute.local_agent = false).await;
    let mut agents = Vec::new();
    for h in hosts {
        agents.push(cloud.start_fake_agent(h, fake()).await.0);
    }
    let hvs = cloud.openstack(&["hypervisor", "list"]).await.expect("hypervisor list");
    assert_eq!(hvs.as_array().unwrap().len(), hosts.len(), "{hvs}");
    let img = cloud.data_dir.join("tiny.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    cloud
        .openstack(&[
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--public",
            "--file",
            img.to_str().unwrap(),
            "tiny",
        ])
        .await
        .expect("image create");
    (cloud, agents)
}

/// Host name → resource provider uuid.
async fn providers(cloud: &TestCloud) -> BTreeMap<String, String> {
    let rps = cloud.openstack(&["resource", "provider", "list"]).await.expect("resource provider list");
    rps.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["uuid"].as_str().unwrap().to_string()))
        .collect()
}

/// Host → (VCPU, MEMORY_MB) used, from placement through the CLI.
async fn usages(cloud: &TestCloud) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    for (host, rp) in providers(cloud).await {
        let u = cloud.openstack(&["resource", "provider", "usage", "show", &rp]).await.expect("usage show");
        let get = |rc: &str| {
            u.as_array()
                .unwrap()
                .iter()
                .find(|r| r["resource_class"] == rc)
                .and_then(|r| r["usage"].as_i64())
                .unwrap_or(0)
        };
        out.insert(host, (get("VCPU"), get("MEMORY_MB")));
    }
    out
}

/// Polls `server show` (bounded) until `status` and no task; returns the server.
async fn wait_for(cloud: &TestCloud, server: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = cloud.openstack(&["server", "show", server]).await.expect("server show");
        if last["status"] == status && last["OS-EXT-STS:task_state"].is_null() {
            return last;
        }
        if last["status"] == "ERROR" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{server} never reached {status}: {last}");
}

fn host_of(s: &Value) -> String {
    s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

fn flavor_name(s: &Value) -> String {
    // From 2.47 the server embeds its flavor; the CLI prints "name (id)" or a dict.
    let f = &s["flavor"];
    f["original_name"].as_str().or(f["name"].as_str()).or(f.as_str()).unwrap_or_default().to_string()
}

/// Usage expected when `server` (vcpus, ram) sits on `host` and nothing else runs.
fn only_on(hosts: &[&str], host: &str, res: (i64, i64)) -> BTreeMap<String, (i64, i64)> {
    hosts.iter().map(|h| (h.to_string(), if *h == host { res } else { (0, 0) })).collect()
}

const NANO: (i64, i64) = (1, 128);
const TINY: (i64, i64) = (1, 512);

#[tokio::test]
async fn resize_migrate_live_migrate_evacuate_and_shelve_through_the_cli() {
    let hosts = ["cmp-a", "cmp-b"];
    let (cloud, _agents) = cloud_with_hosts(&hosts).await;
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", "none", "--wait", "vm1"])
        .await
        .expect("server create --wait");
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    let h0 = host_of(&cloud.openstack(&["server", "show", "vm1"]).await.unwrap());
    let other = |h: &str| if h == "cmp-a" { "cmp-b".to_string() } else { "cmp-a".to_string() };
    assert_eq!(usages(&cloud).await, only_on(&hosts, &h0, NANO));

    // Resize, then confirm: the migration record holds the source share until confirm.
    cloud.openstack(&["server", "resize", "--flavor", "m1.tiny", "--wait", "vm1"]).await.expect("resize --wait");
    let s = wait_for(&cloud, "vm1", "VERIFY_RESIZE").await;
    assert_eq!(host_of(&s), other(&h0), "{s}");
    assert_eq!(flavor_name(&s), "m1.tiny", "{s}");
    let u = usages(&cloud).await;
    assert_eq!(u[&h0], NANO, "source share held by the migration: {u:?}");
    assert_eq!(u[&other(&h0)], TINY, "{u:?}");
    cloud.openstack(&["server", "resize", "confirm", "vm1"]).await.expect("resize confirm");
    let s = wait_for(&cloud, "vm1", "ACTIVE").await;
    let h1 = host_of(&s);
    assert_eq!(usages(&cloud).await, only_on(&hosts, &h1, TINY));

    // Resize, then revert: back to the old host and flavor, the new share released.
    cloud.openstack(&["server", "resize", "--flavor", "m1.small", "--wait", "vm1"]).await.expect("resize --wait");
    let s = wait_for(&cloud, "vm1", "VERIFY_RESIZE").await;
    assert_eq!(host_of(&s), other(&h1));
    let u = usages(&cloud).await;
    assert_eq!((u[&h1], u[&other(&h1)]), (TINY, (1, 2048)), "{u:?}");
    cloud.openstack(&["server", "resize", "revert", "vm1"]).await.expect("resize revert");
    let s = wait_for(&cloud, "vm1", "ACTIVE").await;
    assert_eq!(host_of(&s), h1, "reverted to the source host");
    assert_eq!(flavor_name(&s), "m1.tiny", "{s}");
    assert_eq!(usages(&cloud).await, only_on(&hosts, &h1, TINY));

    // Cold migration (admin), confirmed.
    cloud.openstack(&["server", "migrate", "--wait", "vm1"]).await.expect("migrate --wait");
    let s = wait_for(&cloud, "vm1", "VERIFY_RESIZE").await;
    let h2 = host_of(&s);
    assert_eq!(h2, other(&h1));
    cloud.openstack(&["server", "migration", "confirm", "vm1"]).await.expect("migration confirm");
    wait_for(&cloud, "vm1", "ACTIVE").await;
    assert_eq!(usages(&cloud).await, only_on(&hosts, &h2, TINY));

    // Live migration to a named host.
    let target = other(&h2);
    cloud
        .openstack(&["server", "migrate", "--live-migration", "--host", &target, "--wait", "vm1"])
        .await
        .expect("live migration");
    let s = wait_for(&cloud, "vm1", "ACTIVE").await;
    assert_eq!(host_of(&s), target);
    assert_eq!(usages(&cloud).await, only_on(&hosts, &target, TINY));

    // Every move has its record, ended in the right status.
    let migs = cloud.openstack(&["server", "migration", "list", "--server", "vm1"]).await.expect("migration list");
    let rows: Vec<(String, String)> = migs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["Type"].as_str().unwrap_or_default().into(), m["Status"].as_str().unwrap_or_default().into()))
        .collect();
    for want in
        [("resize", "confirmed"), ("resize", "reverted"), ("migration", "confirmed"), ("live-migration", "completed")]
    {
        assert!(rows.contains(&(want.0.into(), want.1.into())), "{want:?} missing from {rows:?}");
    }

    // Evacuation after the host is forced down: rebuilt elsewhere (stopped, as 2.95+).
    let dead = target.clone();
    cloud.openstack(&["compute", "service", "set", "--down", &dead, "nova-compute"]).await.expect("service set --down");
    cloud.openstack(&["server", "evacuate", "vm1"]).await.expect("server evacuate");
    let s = wait_for(&cloud, "vm1", "SHUTOFF").await;
    assert_eq!(host_of(&s), other(&dead));
    assert_eq!(usages(&cloud).await, only_on(&hosts, &other(&dead), TINY), "the dead host's share is released");
    cloud.openstack(&["compute", "service", "set", "--up", &dead, "nova-compute"]).await.expect("service set --up");
    let evac = cloud.openstack(&["server", "migration", "list", "--type", "evacuation"]).await.unwrap();
    assert_eq!(evac[0]["Status"], "done", "{evac}");

    // Shelve (offloaded at once by default): no host, no allocation; unshelve reschedules.
    cloud.openstack(&["server", "shelve", "vm1"]).await.expect("shelve");
    let s = wait_for(&cloud, "vm1", "SHELVED_OFFLOADED").await;
    assert_eq!(host_of(&s), "", "{s}");
    assert_eq!(usages(&cloud).await, only_on(&hosts, "", (0, 0)));
    cloud.openstack(&["server", "unshelve", "vm1"]).await.expect("unshelve");
    let s = wait_for(&cloud, "vm1", "ACTIVE").await;
    assert_eq!(usages(&cloud).await, only_on(&hosts, &host_of(&s), TINY));
    let events = cloud.openstack(&["server", "event", "list", "vm1"]).await.unwrap();
    let actions: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["Action"].as_str()).collect();
    for a in ["resize", "confirmResize", "revertResize", "migrate", "live-migration", "evacuate", "shelve", "unshelve"]
    {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }

    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("delete");
    assert_eq!(usages(&cloud).await, only_on(&hosts, "", (0, 0)));
    cloud.shutdown().await;
}
