//! Where compute meets network, and the server API's breadth, through the real
//! `openstack` CLI: floating IPs on servers, interfaces (ports and networks), security
//! groups of servers, get-me-a-network (`--nic auto`), tags, deferred delete and
//! restore, usage, passwords — and what another project must not be able to do.

use std::time::Duration;

use serde_json::Value;
use stratus_testkit::{Creds, TestCloud};

async fn os(cloud: &TestCloud, creds: &Creds, args: &[&str]) -> Value {
    match cloud.openstack_as(creds, args).await {
        Ok(v) => v,
        Err(e) => panic!("openstack {} (as {}): {e}", args.join(" "), creds.username),
    }
}

async fn member(cloud: &TestCloud, project: &str, user: &str) -> Creds {
    let admin = cloud.admin();
    os(cloud, &admin, &["project", "create", project]).await;
    os(cloud, &admin, &["user", "create", "--project", project, "--password", "secret-pw", user]).await;
    os(cloud, &admin, &["role", "add", "--project", project, "--user", user, "member"]).await;
    Creds::new(user, "secret-pw", project)
}

/// A public image and the cloud's default external network with a subnet.
async fn image_and_external(cloud: &TestCloud) {
    let admin = cloud.admin();
    cloud.create_tiny_image().await;
    os(cloud, &admin, &["network", "create", "--external", "--default", "ext"]).await;
    os(
        cloud,
        &admin,
        &["subnet", "create", "--network", "ext", "--subnet-range", "203.0.113.0/24", "--no-dhcp", "ext-sub"],
    )
    .await;
}

/// A routed project network `net` (subnet `cidr`) with router `router` to `ext`.
async fn routed_network(cloud: &TestCloud, creds: &Creds, net: &str, cidr: &str, router: &str) -> String {
    let n = os(cloud, creds, &["network", "create", net]).await;
    let sub = format!("{net}-sub");
    os(cloud, creds, &["subnet", "create", "--network", net, "--subnet-range", cidr, &sub]).await;
    os(cloud, creds, &["router", "create", router]).await;
    os(cloud, creds, &["router", "set", "--external-gateway", "ext", router]).await;
    os(cloud, creds, &["router", "add", "subnet", router, &sub]).await;
    n["id"].as_str().unwrap().to_string()
}

async fn boot(cloud: &TestCloud, creds: &Creds, name: &str, nic: &str) -> Value {
    let vm =
        os(cloud, creds, &["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", nic, "--wait", name])
            .await;
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    vm
}

/// All addresses of a server as `server show` prints them (network name → list).
async fn addresses(cloud: &TestCloud, creds: &Creds, server: &str) -> Value {
    os(cloud, creds, &["server", "show", server]).await["addresses"].clone()
}

fn has_addr(addrs: &Value, net: &str, ip: &str) -> bool {
    addrs[net].as_array().is_some_and(|a| a.iter().any(|x| x == ip))
}

async fn wait_status(cloud: &TestCloud, creds: &Creds, server: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = os(cloud, creds, &["server", "show", server]).await;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{server} never reached {status}: {last}");
}

#[tokio::test]
async fn floating_ips_interfaces_and_security_groups_of_servers() {
    let cloud = TestCloud::start().await;
    image_and_external(&cloud).await;
    let alice = member(&cloud, "proj-a", "alice").await;
    let bob = member(&cloud, "proj-b", "bob").await;
    let net_a = routed_network(&cloud, &alice, "net-a", "10.1.0.0/24", "r-a").await;
    let net_b = routed_network(&cloud, &bob, "net-b", "10.2.0.0/24", "r-b").await;
    boot(&cloud, &alice, "vm-a", &format!("net-id={net_a}")).await;
    boot(&cloud, &bob, "vm-b", &format!("net-id={net_b}")).await;

    // Floating IP: associated through Neutron by the CLI, shown by compute.
    let fip = os(&cloud, &alice, &["floating", "ip", "create", "ext"]).await;
    let addr = fip["floating_ip_address"].as_str().unwrap().to_string();
    os(&cloud, &alice, &["server", "add", "floating", "ip", "vm-a", &addr]).await;
    let a = addresses(&cloud, &alice, "vm-a").await;
    assert!(has_addr(&a, "net-a", &addr), "floating address in server show: {a}");
    let detail = os(&cloud, &alice, &["server", "list", "--long"]).await;
    assert!(detail.to_string().contains(&addr), "server list shows it too: {detail}");
    // Another project can neither use A's floating IP nor see it.
    let e = cloud.openstack_as(&bob, &["server", "add", "floating", "ip", "vm-b", &addr]).await;
    assert!(e.is_err(), "bob attached alice's floating IP: {e:?}");
    let b = addresses(&cloud, &bob, "vm-b").await;
    assert!(!b.to_string().contains(&addr), "{b}");
    os(&cloud, &alice, &["server", "remove", "floating", "ip", "vm-a", &addr]).await;
    let a = addresses(&cloud, &alice, "vm-a").await;
    assert!(!a.to_string().contains(&addr), "floating address gone: {a}");

    // A second network, attached and detached.
    os(&cloud, &alice, &["network", "create", "net-a2"]).await;
    os(&cloud, &alice, &["subnet", "create", "--network", "net-a2", "--subnet-range", "10.3.0.0/24", "net-a2-sub"])
        .await;
    os(&cloud, &alice, &["server", "add", "network", "vm-a", "net-a2"]).await;
    let a = addresses(&cloud, &alice, "vm-a").await;
    assert!(a["net-a2"].as_array().is_some_and(|l| l[0].as_str().unwrap().starts_with("10.3.0.")), "{a}");
    let ports = os(&cloud, &alice, &["port", "list", "--server", "vm-a"]).await;
    assert_eq!(ports.as_array().unwrap().len(), 2, "{ports}");
    os(&cloud, &alice, &["server", "remove", "network", "vm-a", "net-a2"]).await;
    let a = addresses(&cloud, &alice, "vm-a").await;
    assert!(a.get("net-a2").is_none(), "{a}");
    let left = os(&cloud, &alice, &["port", "list", "--network", "net-a2"]).await;
    assert!(left.as_array().unwrap().is_empty(), "the port compute made is deleted: {left}");

    // A port the user made: attached, detached (kept), re-attached, and kept (unbound)
    // when the server is deleted.
    let p = os(&cloud, &alice, &["port", "create", "--network", "net-a2", "mine"]).await;
    let pid = p["id"].as_str().unwrap().to_string();
    os(&cloud, &alice, &["server", "add", "port", "vm-a", "mine"]).await;
    let shown = os(&cloud, &alice, &["port", "show", "mine"]).await;
    assert!(shown["device_owner"].as_str().unwrap().starts_with("compute:"), "{shown}");
    assert!(addresses(&cloud, &alice, "vm-a").await.get("net-a2").is_some());
    os(&cloud, &alice, &["server", "remove", "port", "vm-a", "mine"]).await;
    let shown = os(&cloud, &alice, &["port", "show", "mine"]).await;
    assert_eq!(shown["device_id"], "", "detached port is kept, unbound: {shown}");
    // Project B cannot plug A's port into its server.
    assert!(cloud.openstack_as(&bob, &["server", "add", "port", "vm-b", &pid]).await.is_err());
    os(&cloud, &alice, &["server", "add", "port", "vm-a", "mine"]).await;

    // Security groups: applied to every port of the server, and removed again.
    let web = os(&cloud, &alice, &["security", "group", "create", "web"]).await;
    let web_id = web["id"].as_str().unwrap().to_string();
    os(&cloud, &alice, &["server", "add", "security", "group", "vm-a", "web"]).await;
    let ports = os(&cloud, &alice, &["port", "list", "--server", "vm-a", "--long"]).await;
    for p in ports.as_array().unwrap() {
        assert!(p["Security Groups"].to_string().contains(&web_id), "{p}");
    }
    let shown = os(&cloud, &alice, &["server", "show", "vm-a"]).await;
    assert!(shown["security_groups"].to_string().contains("web"), "{shown}");
    let again = cloud.openstack_as(&alice, &["server", "add", "security", "group", "vm-a", "web"]).await;
    assert!(again.unwrap_err().stderr.contains("already associated"));
    // Bob cannot add his group to alice's server, nor alice's group to his.
    os(&cloud, &bob, &["security", "group", "create", "bobs"]).await;
    assert!(cloud.openstack_as(&bob, &["server", "add", "security", "group", "vm-a", "bobs"]).await.is_err());
    assert!(cloud.openstack_as(&bob, &["server", "add", "security", "group", "vm-b", &web_id]).await.is_err());
    os(&cloud, &alice, &["server", "remove", "security", "group", "vm-a", "web"]).await;
    let ports = os(&cloud, &alice, &["port", "list", "--server", "vm-a", "--long"]).await;
    assert!(!ports.to_string().contains(&web_id), "{ports}");

    // Delete: the port compute made goes, the user's port stays (unbound).
    os(&cloud, &alice, &["server", "delete", "--wait", "vm-a"]).await;
    let on_a = os(&cloud, &alice, &["port", "list", "--network", "net-a"]).await;
    assert!(!on_a.to_string().contains("compute:"), "{on_a}");
    let shown = os(&cloud, &alice, &["port", "show", &pid]).await;
    assert_eq!(shown["device_id"], "", "{shown}");
    assert_eq!(shown["device_owner"], "", "{shown}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn nic_auto_gets_a_network_once_per_project() {
    let cloud = TestCloud::start().await;
    image_and_external(&cloud).await;
    let carol = member(&cloud, "proj-c", "carol").await;
    boot(&cloud, &carol, "auto-1", "auto").await;
    let a = addresses(&cloud, &carol, "auto-1").await;
    assert!(a.get("auto_allocated_network").is_some(), "{a}");
    boot(&cloud, &carol, "auto-2", "auto").await;
    let nets = os(&cloud, &carol, &["network", "list"]).await;
    let own: Vec<&Value> = nets.as_array().unwrap().iter().filter(|n| n["Name"] == "auto_allocated_network").collect();
    assert_eq!(own.len(), 1, "one topology per project: {nets}");
    let routers = os(&cloud, &carol, &["router", "list"]).await;
    assert_eq!(routers.as_array().unwrap().len(), 1, "{routers}");
    // The allocated network is routed: a floating IP can be attached.
    let fip = os(&cloud, &carol, &["floating", "ip", "create", "ext"]).await;
    let addr = fip["floating_ip_address"].as_str().unwrap();
    os(&cloud, &carol, &["server", "add", "floating", "ip", "auto-1", addr]).await;
    assert!(has_addr(&addresses(&cloud, &carol, "auto-1").await, "auto_allocated_network", addr));
    // A boot that fails after making a port gives it back: the second NIC names a port
    // another device holds.
    let auto_net =
        os(&cloud, &carol, &["network", "show", "auto_allocated_network"]).await["id"].as_str().unwrap().to_string();
    let busy = os(
        &cloud,
        &carol,
        &[
            "port",
            "create",
            "--network",
            "auto_allocated_network",
            "--device",
            "0b5e2a1c-0000-4000-8000-000000000001",
            "busy",
        ],
    )
    .await;
    let compute_ports = || async {
        let l = os(
            &cloud,
            &carol,
            &["port", "list", "--network", "auto_allocated_network", "--device-owner", "compute:nova"],
        )
        .await;
        l.as_array().unwrap().len()
    };
    assert_eq!(compute_ports().await, 2, "auto-1 and auto-2");
    let nic1 = format!("net-id={auto_net}");
    let nic2 = format!("port-id={}", busy["id"].as_str().unwrap());
    let failed = cloud
        .openstack_as(
            &carol,
            &[
                "server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", &nic1, "--nic", &nic2, "--wait",
                "doomed",
            ],
        )
        .await;
    assert!(failed.is_err(), "the boot fails: {failed:?}");
    let doomed = wait_status(&cloud, &carol, "doomed", "ERROR").await;
    assert!(doomed["fault"]["message"].to_string().contains("Network allocation failed"), "{doomed}");
    let seen_by_admin = os(&cloud, &cloud.admin(), &["server", "show", doomed["id"].as_str().unwrap()]).await;
    assert!(seen_by_admin["fault"]["details"].to_string().contains("in use"), "{seen_by_admin}");
    assert_eq!(compute_ports().await, 2, "the port the failed boot made is gone");
    let busy_now = os(&cloud, &carol, &["port", "show", "busy"]).await;
    assert_eq!(busy_now["device_id"], "0b5e2a1c-0000-4000-8000-000000000001", "the user's port is untouched");
    os(&cloud, &carol, &["server", "delete", "--wait", "doomed"]).await;
    // Named security groups go on the ports compute makes.
    let web = os(&cloud, &carol, &["security", "group", "create", "web"]).await;
    let web_id = web["id"].as_str().unwrap().to_string();
    os(
        &cloud,
        &carol,
        &[
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            "tiny",
            "--nic",
            "auto",
            "--security-group",
            "web",
            "--wait",
            "auto-3",
        ],
    )
    .await;
    let ports = os(&cloud, &carol, &["port", "list", "--server", "auto-3", "--long"]).await;
    assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");
    assert!(ports[0]["Security Groups"].to_string().contains(&web_id), "{ports}");

    // With two networks to choose from, `auto` is ambiguous: refused at the API.
    os(&cloud, &carol, &["network", "create", "second"]).await;
    let e = cloud
        .openstack_as(&carol, &["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", "auto", "x"])
        .await
        .expect_err("ambiguous auto");
    assert!(e.stderr.contains("Multiple possible networks"), "{}", e.stderr);
    cloud.shutdown().await;
}

#[tokio::test]
async fn tags_passwords_soft_delete_restore_and_usage() {
    let cloud = TestCloud::start_with(|c| c.compute.service.reclaim_instance_interval_secs = 3600).await;
    image_and_external(&cloud).await;
    let dave = member(&cloud, "proj-d", "dave").await;
    let erin = member(&cloud, "proj-e", "erin").await;
    boot(&cloud, &dave, "vm-d", "none").await;
    boot(&cloud, &dave, "vm-d2", "none").await;

    // Tags (2.26).
    os(&cloud, &dave, &["server", "set", "--tag", "blue", "--tag", "prod", "vm-d"]).await;
    os(&cloud, &dave, &["server", "set", "--tag", "blue", "vm-d2"]).await;
    let shown = os(&cloud, &dave, &["server", "show", "vm-d"]).await;
    assert!(shown["tags"].to_string().contains("prod"), "{shown}");
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> =
            v.as_array().unwrap().iter().map(|s| s["Name"].as_str().unwrap().to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&os(&cloud, &dave, &["server", "list", "--tags", "blue"]).await), ["vm-d", "vm-d2"]);
    assert_eq!(names(&os(&cloud, &dave, &["server", "list", "--tags", "blue,prod"]).await), ["vm-d"]);
    assert_eq!(names(&os(&cloud, &dave, &["server", "list", "--not-tags", "prod"]).await), ["vm-d2"]);
    os(&cloud, &dave, &["server", "unset", "--tag", "prod", "vm-d"]).await;
    assert_eq!(names(&os(&cloud, &dave, &["server", "list", "--tags", "prod"]).await), Vec::<String>::new());
    assert!(cloud.openstack_as(&erin, &["server", "set", "--tag", "x", "vm-d"]).await.is_err());

    // Passwords: no driver can set one in a running guest: a clear 409, nothing stored.
    let e = cloud.openstack_as(&dave, &["server", "set", "--password", "n3w-Secret", "vm-d"]).await.unwrap_err();
    assert!(e.stderr.contains("409") || e.stderr.contains("cannot set passwords"), "{}", e.stderr);
    os(&cloud, &dave, &["server", "set", "--no-password", "vm-d"]).await;
    // Crash dump (2.17) on the fake driver.
    os(&cloud, &dave, &["server", "dump", "create", "vm-d"]).await;

    // Deferred delete: SOFT_DELETED, then restored; a forced delete is final.
    os(&cloud, &dave, &["server", "delete", "vm-d"]).await;
    wait_status(&cloud, &dave, "vm-d", "SOFT_DELETED").await;
    assert!(cloud.openstack_as(&erin, &["server", "restore", "vm-d"]).await.is_err(), "not erin's to restore");
    os(&cloud, &dave, &["server", "restore", "vm-d"]).await;
    let back = wait_status(&cloud, &dave, "vm-d", "ACTIVE").await;
    assert_eq!(back["OS-EXT-STS:power_state"], 1, "running again: {back}");
    os(&cloud, &dave, &["server", "delete", "vm-d2"]).await;
    wait_status(&cloud, &dave, "vm-d2", "SOFT_DELETED").await;
    os(&cloud, &dave, &["server", "delete", "--force", "--wait", "vm-d2"]).await;
    assert!(cloud.openstack_as(&dave, &["server", "show", "vm-d2"]).await.is_err());

    // Usage: both servers counted for dave's project (the deleted one too).
    let pid = os(&cloud, &cloud.admin(), &["project", "show", "proj-d"]).await["id"].as_str().unwrap().to_string();
    let count = |v: &Value| match v {
        Value::Array(a) => a.len() as u64,
        other => other.as_u64().unwrap_or_else(|| panic!("server count: {other}")),
    };
    let usage = os(&cloud, &cloud.admin(), &["usage", "list"]).await;
    let row = usage
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Project"] == pid.as_str() || r["Project"] == "proj-d")
        .unwrap_or_else(|| panic!("proj-d in usage list: {usage}"))
        .clone();
    assert_eq!(count(&row["Servers"]), 2, "{row}");
    assert!(row["RAM MB-Hours"].as_f64().unwrap() > 0.0, "{row}");
    let mine = os(&cloud, &dave, &["usage", "show"]).await;
    assert_eq!(count(&mine["Servers"]), 2, "{mine}");
    assert!(cloud.openstack_as(&dave, &["usage", "list"]).await.is_err(), "usage list is admin only");
    let theirs = os(&cloud, &erin, &["usage", "show"]).await;
    assert!(!theirs.to_string().contains("vm-d"), "{theirs}");
    cloud.shutdown().await;
}

/// The CLI command fails with HTTP 400 and `want` in its message.
async fn refused(cloud: &TestCloud, args: &[&str], want: &str) {
    let (code, out, err) = cloud.openstack_raw(&cloud.admin(), args).await;
    assert_ne!(code, Some(0), "{args:?} was accepted: {out}");
    assert!(err.contains(want) && err.contains("400"), "{args:?}: want {want:?} (400) in {err}");
}

/// Nova's flavor/image checks (`min_ram`, `min_disk`) at create, rebuild and resize,
/// with Nova's 400 messages.
#[tokio::test]
async fn flavors_smaller_than_the_image_needs_are_refused_at_create_rebuild_and_resize() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    cloud.create_tiny_image().await;
    let file = cloud.data_dir.join("tiny.img");
    let file = file.to_str().unwrap();
    #[rustfmt::skip]
    let needy = [
        "image", "create", "--disk-format", "raw", "--container-format", "bare", "--public",
        "--min-disk", "2", "--min-ram", "256", "--file", file, "needy",
    ];
    os(&cloud, &admin, &needy).await;
    for (name, ram, disk) in [("r512d1", "512", "1"), ("r512d2", "512", "2"), ("r128d3", "128", "3")] {
        os(&cloud, &admin, &["flavor", "create", "--vcpus", "1", "--ram", ram, "--disk", disk, name]).await;
    }
    refused(
        &cloud,
        &["server", "create", "--flavor", "m1.nano", "--image", "needy", "--nic", "none", "x"],
        "Flavor's memory is too small for requested image.",
    )
    .await;
    refused(
        &cloud,
        &["server", "create", "--flavor", "r512d1", "--image", "needy", "--nic", "none", "x"],
        "Flavor's disk is smaller than the minimum size specified in image metadata. \
         Flavor disk is 1073741824 bytes, minimum size is 2147483648 bytes.",
    )
    .await;
    let none = cloud.openstack(&["server", "list", "--name", "^x$"]).await.unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0, "refused boots leave no server: {none}");

    // A flavor that fits boots.
    let vm = os(
        &cloud,
        &admin,
        &["server", "create", "--flavor", "r512d2", "--image", "needy", "--nic", "none", "--wait", "fits"],
    )
    .await;
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    // Resize to more disk but less RAM than the server's image needs.
    refused(
        &cloud,
        &["server", "resize", "--flavor", "r128d3", "fits"],
        "Flavor's memory is too small for requested image.",
    )
    .await;
    // Rebuild of a small server with the needy image.
    os(
        &cloud,
        &admin,
        &["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", "none", "--wait", "small"],
    )
    .await;
    refused(
        &cloud,
        &["server", "rebuild", "--image", "needy", "small"],
        "Flavor's memory is too small for requested image.",
    )
    .await;
    let s = os(&cloud, &admin, &["server", "show", "small"]).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("ACTIVE"), None), "{s}");
    let s = os(&cloud, &admin, &["server", "show", "fits"]).await;
    assert_eq!(s["status"], "ACTIVE", "refused resize leaves the server alone: {s}");
    cloud.shutdown().await;
}
