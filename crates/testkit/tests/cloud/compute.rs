//! Compute through the real `openstack` CLI: flavors, keypairs, admin views, what a
//! project member may and may not do, and servers booted from a real image onto a real
//! network through placement (fake virt driver).

use serde_json::Value;
use stratus_testkit::{Creds, TestCloud};

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array().unwrap().iter().map(|r| r[key].as_str().unwrap_or_default().to_string()).collect()
}

async fn member(cloud: &TestCloud, project: &str, user: &str) -> Creds {
    cloud.openstack(&["project", "create", project]).await.expect("project create");
    cloud
        .openstack(&["user", "create", "--project", project, "--password", "secret-pw", user])
        .await
        .expect("user create");
    cloud.openstack(&["role", "add", "--project", project, "--user", user, "member"]).await.expect("role add");
    Creds::new(user, "secret-pw", project)
}

#[tokio::test]
async fn flavors_through_the_cli() {
    let cloud = TestCloud::start().await;
    let list = cloud.openstack(&["flavor", "list"]).await.expect("flavor list");
    let ns = names(&list, "Name");
    for n in ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge", "m1.nano"] {
        assert!(ns.contains(&n.to_string()), "{ns:?}");
    }
    let nano = list.as_array().unwrap().iter().find(|f| f["Name"] == "m1.nano").unwrap();
    assert_eq!(nano["RAM"], 128);

    let f = cloud
        .openstack(&[
            "flavor",
            "create",
            "--vcpus",
            "2",
            "--ram",
            "256",
            "--disk",
            "3",
            "--private",
            "--id",
            "auto",
            "t.private",
        ])
        .await
        .expect("flavor create");
    assert_eq!(f["name"], "t.private");
    assert_eq!(f["os-flavor-access:is_public"], false);
    assert_eq!(f["vcpus"], 2);
    cloud.openstack(&["flavor", "set", "--property", "hw:cpu_policy=shared", "t.private"]).await.expect("flavor set");
    let shown = cloud.openstack(&["flavor", "show", "t.private"]).await.expect("flavor show");
    assert!(shown["properties"].to_string().contains("hw:cpu_policy"), "{shown}");

    let alice = member(&cloud, "demo", "alice").await;
    let e = cloud
        .openstack_as(&alice, &["flavor", "create", "--vcpus", "1", "--ram", "64", "--disk", "1", "nope"])
        .await
        .expect_err("members cannot create flavors");
    assert!(e.stderr.contains("403") || e.stderr.to_lowercase().contains("policy"), "{}", e.stderr);
    let theirs = cloud.openstack_as(&alice, &["flavor", "list", "--all"]).await.expect("member flavor list");
    assert!(!names(&theirs, "Name").contains(&"t.private".to_string()), "private flavors are hidden");
    cloud.openstack(&["flavor", "set", "--project", "demo", "t.private"]).await.expect("grant access");
    let theirs = cloud.openstack_as(&alice, &["flavor", "list", "--all"]).await.expect("member flavor list");
    assert!(names(&theirs, "Name").contains(&"t.private".to_string()), "{theirs}");

    cloud.openstack(&["flavor", "delete", "t.private"]).await.expect("flavor delete");
    assert!(cloud.openstack(&["flavor", "show", "t.private"]).await.is_err());
    cloud.shutdown().await;
}

#[tokio::test]
async fn keypairs_through_the_cli_are_per_user() {
    let cloud = TestCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let pubkey = key.with_extension("pub");
    let k = cloud
        .openstack(&["keypair", "create", "--public-key", pubkey.to_str().unwrap(), "imported"])
        .await
        .expect("keypair import");
    assert_eq!(k["name"], "imported");
    let fp = k["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 47, "md5 fingerprint: {fp}");
    let shown = cloud.openstack(&["keypair", "show", "imported"]).await.expect("keypair show");
    assert_eq!(shown["fingerprint"], fp.as_str());
    assert_eq!(shown["type"], "ssh");

    let generated = cloud.openstack_raw(&cloud.admin(), &["keypair", "create", "generated"]).await;
    assert_eq!(generated.0, Some(0), "{}", generated.2);
    assert!(generated.1.contains("PRIVATE KEY"), "the private key is printed once");
    let list = cloud.openstack(&["keypair", "list"]).await.expect("keypair list");
    let mut ns = names(&list, "Name");
    ns.sort();
    assert_eq!(ns, vec!["generated", "imported"]);

    let alice = member(&cloud, "demo", "alice").await;
    let theirs = cloud.openstack_as(&alice, &["keypair", "list"]).await.expect("member keypair list");
    assert!(theirs.as_array().unwrap().is_empty(), "keypairs are per user: {theirs}");
    assert!(cloud.openstack_as(&alice, &["keypair", "show", "imported"]).await.is_err());

    cloud.openstack(&["keypair", "delete", "imported"]).await.expect("keypair delete");
    assert!(cloud.openstack(&["keypair", "show", "imported"]).await.is_err());
    cloud.shutdown().await;
}

#[tokio::test]
async fn admin_views_and_member_limits_through_the_cli() {
    let cloud = TestCloud::start().await;
    let services = cloud.openstack(&["compute", "service", "list"]).await.expect("compute service list");
    let bins = names(&services, "Binary");
    for b in ["nova-conductor", "nova-scheduler", "nova-compute"] {
        assert!(bins.contains(&b.to_string()), "{services}");
    }
    // The local agent registered its host as a resource provider in placement.
    let mut hvs = Value::Null;
    for _ in 0..50 {
        hvs = cloud.openstack(&["hypervisor", "list"]).await.expect("hypervisor list");
        if !hvs.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(hvs.as_array().unwrap().len(), 1, "{hvs}");
    assert_eq!(hvs[0]["Hypervisor Type"], "fake", "{hvs}");
    assert_eq!(hvs[0]["State"], "up", "{hvs}");
    let rps = cloud.openstack(&["resource", "provider", "list"]).await.expect("resource provider list");
    assert_eq!(rps.as_array().unwrap().len(), 1, "{rps}");
    let zones = cloud.openstack(&["availability", "zone", "list", "--compute"]).await.expect("az list");
    assert!(names(&zones, "Zone Name").contains(&"nova".to_string()), "{zones}");

    let alice = member(&cloud, "demo", "alice").await;
    let e = cloud.openstack_as(&alice, &["compute", "service", "list"]).await.expect_err("admin only");
    assert!(e.stderr.contains("403") || e.stderr.to_lowercase().contains("policy"), "{}", e.stderr);
    let servers = cloud.openstack_as(&alice, &["server", "list"]).await.expect("member server list");
    assert!(servers.as_array().unwrap().is_empty());
    let e = cloud.openstack_as(&alice, &["server", "list", "--all-projects"]).await.expect_err("admin only");
    assert!(e.stderr.contains("403") || e.stderr.to_lowercase().contains("policy"), "{}", e.stderr);
    cloud.shutdown().await;
}

#[tokio::test]
async fn servers_boot_from_an_image_onto_a_network_and_live_their_lifecycle() {
    let cloud = TestCloud::start().await;
    let alice = member(&cloud, "proj-a", "alice").await;
    let bob = member(&cloud, "proj-b", "bob").await;
    let image = cloud.create_tiny_image().await;
    assert_eq!(image["status"], "active");
    let net = cloud.openstack_as(&alice, &["network", "create", "net-a"]).await.expect("network create");
    let net_id = net["id"].as_str().unwrap().to_string();
    cloud
        .openstack_as(&alice, &["subnet", "create", "--network", "net-a", "--subnet-range", "10.9.0.0/24", "sub-a"])
        .await
        .expect("subnet create");

    let nic = format!("net-id={net_id}");
    let vm = cloud
        .openstack_as(
            &alice,
            &["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", &nic, "--wait", "vm-a"],
        )
        .await
        .expect("server create --wait");
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    let shown = cloud.openstack_as(&alice, &["server", "show", "vm-a"]).await.unwrap();
    let addrs = shown["addresses"].as_object().expect("addresses keyed by network name");
    let ips = addrs.get("net-a").and_then(|v| v.as_array()).expect("an address on net-a");
    assert!(ips[0].as_str().unwrap().starts_with("10.9.0."), "{shown}");
    let ports = cloud.openstack_as(&alice, &["port", "list", "--server", "vm-a"]).await.unwrap();
    assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");

    // Lifecycle through the CLI, each state as Nova reports it.
    for (action, status) in [("stop", "SHUTOFF"), ("start", "ACTIVE"), ("pause", "PAUSED"), ("unpause", "ACTIVE")] {
        cloud.openstack_as(&alice, &["server", action, "vm-a"]).await.unwrap_or_else(|e| panic!("{action}: {e}"));
        let mut last = Value::Null;
        for _ in 0..100 {
            last = cloud.openstack_as(&alice, &["server", "show", "vm-a", "-c", "status", "-f", "json"]).await.unwrap();
            if last["status"] == status {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(last["status"], status, "after {action}");
    }
    // A second project neither sees nor touches the server.
    let listed = cloud.openstack_as(&bob, &["server", "list"]).await.unwrap();
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
    assert!(cloud.openstack_as(&bob, &["server", "stop", "vm-a"]).await.is_err());

    let events = cloud.openstack_as(&alice, &["server", "event", "list", "vm-a"]).await.unwrap();
    let actions: Vec<String> = names(&events, "Action");
    for a in ["create", "stop", "start", "pause", "unpause"] {
        assert!(actions.iter().any(|x| x == a), "{a} missing from {actions:?}");
    }

    cloud.openstack_as(&alice, &["server", "delete", "--wait", "vm-a"]).await.expect("server delete --wait");
    let ports = cloud.openstack_as(&alice, &["port", "list", "--network", "net-a"]).await.unwrap();
    assert!(ports.as_array().unwrap().is_empty(), "the server's port is released: {ports}");
    cloud.shutdown().await;
}
