//! Networking through the real `openstack` CLI: networks with provider attributes,
//! subnets (pools, no gateway, DNS, no DHCP, IPv6 SLAAC), subnet pools, ports (fixed IPs,
//! MAC, allowed address pairs), security groups and rules, routers with gateways and
//! interfaces, floating IPs, agents, extensions, quotas, RBAC, and isolation between
//! two projects.

use serde_json::Value;
use stratus_testkit::{Creds, TestCloud};

async fn os(cloud: &TestCloud, args: &[&str]) -> Value {
    match cloud.openstack(args).await {
        Ok(v) => v,
        Err(e) => panic!("openstack {}: {e}", args.join(" ")),
    }
}

async fn os_as(cloud: &TestCloud, creds: &Creds, args: &[&str]) -> Value {
    match cloud.openstack_as(creds, args).await {
        Ok(v) => v,
        Err(e) => panic!("openstack {} (as {}): {e}", args.join(" "), creds.username),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().expect("list").iter().filter_map(|i| i["Name"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn networks_subnets_and_ports_through_the_cli() {
    let cloud = TestCloud::start().await;
    let provider = os(
        &cloud,
        &[
            "network",
            "create",
            "--share",
            "--external",
            "--provider-physical-network",
            "provider",
            "--provider-network-type",
            "flat",
            "provider",
        ],
    )
    .await;
    assert_eq!(provider["shared"], true);
    assert_eq!(provider["router:external"], true);
    assert_eq!(provider["provider:network_type"], "flat");
    assert_eq!(provider["provider:physical_network"], "provider");
    let psub = os(
        &cloud,
        &[
            "subnet",
            "create",
            "--network",
            "provider",
            "--allocation-pool",
            "start=203.0.113.101,end=203.0.113.250",
            "--dns-nameserver",
            "8.8.4.4",
            "--gateway",
            "203.0.113.1",
            "--subnet-range",
            "203.0.113.0/24",
            "--no-dhcp",
            "provider",
        ],
    )
    .await;
    assert_eq!(psub["enable_dhcp"], false);
    assert_eq!(psub["gateway_ip"], "203.0.113.1");
    let pools = format!("{}", psub["allocation_pools"]);
    assert!(pools.contains("203.0.113.101") && pools.contains("203.0.113.250"), "{pools}");

    let vpc = os(&cloud, &["network", "create", "vpc01"]).await;
    assert_eq!(vpc["provider:network_type"], "vxlan");
    assert!(vpc["provider:segmentation_id"].as_i64().is_some());
    let vlan = os(
        &cloud,
        &[
            "network",
            "create",
            "--provider-network-type",
            "vlan",
            "--provider-physical-network",
            "provider",
            "--provider-segment",
            "120",
            "vlan120",
        ],
    )
    .await;
    assert_eq!(vlan["provider:segmentation_id"], 120);
    let err = cloud
        .openstack(&[
            "network",
            "create",
            "--provider-network-type",
            "vlan",
            "--provider-physical-network",
            "provider",
            "--provider-segment",
            "120",
            "again",
        ])
        .await
        .unwrap_err();
    assert!(err.stderr.contains("120") || err.stderr.contains("409"), "{err}");

    let sub = os(
        &cloud,
        &[
            "subnet",
            "create",
            "--network",
            "vpc01",
            "--subnet-range",
            "10.0.0.0/24",
            "--dns-nameserver",
            "8.8.8.8",
            "vpc01-sub",
        ],
    )
    .await;
    assert_eq!(sub["gateway_ip"], "10.0.0.1");
    assert_eq!(sub["enable_dhcp"], true);
    let nogw = os(
        &cloud,
        &["subnet", "create", "--network", "vpc01", "--subnet-range", "10.9.0.0/24", "--gateway", "none", "nogw"],
    )
    .await;
    assert!(nogw["gateway_ip"].is_null(), "{nogw}");
    let v6 = os(
        &cloud,
        &[
            "subnet",
            "create",
            "--network",
            "vpc01",
            "--ip-version",
            "6",
            "--ipv6-ra-mode",
            "slaac",
            "--ipv6-address-mode",
            "slaac",
            "--subnet-range",
            "fd00:1::/64",
            "v6",
        ],
    )
    .await;
    assert_eq!(v6["ipv6_ra_mode"], "slaac");
    assert_eq!(v6["ip_version"], 6);
    let bad = cloud
        .openstack(&["subnet", "create", "--network", "vpc01", "--subnet-range", "10.0.0.128/25", "overlap"])
        .await
        .unwrap_err();
    assert!(bad.stderr.contains("overlaps"), "{bad}");
    let bad = cloud
        .openstack(&[
            "subnet",
            "create",
            "--network",
            "vpc01",
            "--subnet-range",
            "10.5.0.0/24",
            "--allocation-pool",
            "start=10.6.0.2,end=10.6.0.9",
            "oob",
        ])
        .await
        .unwrap_err();
    assert!(bad.stderr.contains("spans beyond"), "{bad}");
    os(&cloud, &["subnet", "set", "--name", "vpc01-subnet", "--dns-nameserver", "1.1.1.1", "vpc01-sub"]).await;
    let shown = os(&cloud, &["subnet", "show", "vpc01-subnet"]).await;
    assert_eq!(shown["dns_nameservers"].as_array().map(Vec::len), Some(2), "{shown}");
    let subnets = os(&cloud, &["subnet", "list", "--network", "vpc01"]).await;
    assert_eq!(subnets.as_array().unwrap().len(), 3);

    let pool = os(
        &cloud,
        &["subnet", "pool", "create", "--pool-prefix", "172.30.0.0/16", "--default-prefix-length", "26", "pool1"],
    )
    .await;
    assert_eq!(pool["default_prefixlen"], 26);
    let from_pool = os(&cloud, &["subnet", "create", "--network", "vlan120", "--subnet-pool", "pool1", "pooled"]).await;
    assert_eq!(from_pool["cidr"], "172.30.0.0/26");

    let p1 = os(
        &cloud,
        &[
            "port",
            "create",
            "--network",
            "vpc01",
            "--fixed-ip",
            "subnet=vpc01-subnet,ip-address=10.0.0.10",
            "--mac-address",
            "fa:16:3e:00:00:10",
            "--allowed-address",
            "ip-address=10.0.0.200",
            "p1",
        ],
    )
    .await;
    assert_eq!(p1["mac_address"], "fa:16:3e:00:00:10");
    assert_eq!(p1["status"], "DOWN");
    let fixed = format!("{}", p1["fixed_ips"]);
    assert!(fixed.contains("10.0.0.10"), "{fixed}");
    assert!(format!("{}", p1["allowed_address_pairs"]).contains("10.0.0.200"));
    let dup = cloud
        .openstack(&["port", "create", "--network", "vpc01", "--fixed-ip", "ip-address=10.0.0.10", "p2"])
        .await
        .unwrap_err();
    assert!(dup.stderr.contains("already allocated") || dup.stderr.contains("409"), "{dup}");
    let p2 = os(&cloud, &["port", "create", "--network", "vpc01", "p2"]).await;
    assert!(s(&p2, "mac_address").starts_with("fa:16:3e:"));
    os(&cloud, &["port", "set", "--name", "p2-renamed", "--description", "second", "p2"]).await;
    let shown = os(&cloud, &["port", "show", "p2-renamed"]).await;
    assert_eq!(shown["description"], "second");
    let ports = os(&cloud, &["port", "list", "--network", "vpc01"]).await;
    assert_eq!(ports.as_array().unwrap().len(), 2, "{ports}");

    os(&cloud, &["network", "set", "--name", "vpc01-renamed", "--description", "tenant net", "vpc01"]).await;
    let shown = os(&cloud, &["network", "show", "vpc01-renamed"]).await;
    assert_eq!(shown["description"], "tenant net");
    assert_eq!(shown["subnets"].as_array().map(Vec::len), Some(3), "{shown}");
    let err = cloud.openstack(&["network", "delete", "vpc01-renamed"]).await.unwrap_err();
    assert!(err.stderr.contains("in use") || err.stderr.contains("409"), "{err}");
    os(&cloud, &["port", "delete", "p1", "p2-renamed"]).await;
    os(&cloud, &["subnet", "delete", "nogw"]).await;
    os(&cloud, &["network", "delete", "vpc01-renamed"]).await;
    let nets = names(&os(&cloud, &["network", "list"]).await);
    assert!(!nets.contains(&"vpc01-renamed".to_string()) && nets.contains(&"provider".to_string()), "{nets:?}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn security_groups_routers_and_floating_ips_through_the_cli() {
    let cloud = TestCloud::start().await;
    os(
        &cloud,
        &[
            "network",
            "create",
            "--external",
            "--provider-physical-network",
            "provider",
            "--provider-network-type",
            "flat",
            "public",
        ],
    )
    .await;
    os(
        &cloud,
        &[
            "subnet",
            "create",
            "--network",
            "public",
            "--subnet-range",
            "198.51.100.0/24",
            "--allocation-pool",
            "start=198.51.100.10,end=198.51.100.99",
            "public-sub",
        ],
    )
    .await;
    os(&cloud, &["network", "create", "private"]).await;
    os(&cloud, &["subnet", "create", "--network", "private", "--subnet-range", "192.168.10.0/24", "private-sub"]).await;

    let groups = os(&cloud, &["security", "group", "list"]).await;
    assert!(names(&groups).contains(&"default".to_string()), "{groups}");
    let sg = os(&cloud, &["security", "group", "create", "--description", "web servers", "web"]).await;
    assert_eq!(sg["name"], "web");
    let icmp = os(&cloud, &["security", "group", "rule", "create", "--protocol", "icmp", "web"]).await;
    assert_eq!(icmp["protocol"], "icmp");
    let ssh =
        os(&cloud, &["security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "web"]).await;
    assert_eq!(ssh["port_range_min"], 22);
    assert_eq!(ssh["port_range_max"], 22);
    let dup = cloud
        .openstack(&["security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "web"])
        .await
        .unwrap_err();
    assert!(dup.stderr.contains("already exists"), "{dup}");
    let rg = os(
        &cloud,
        &[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            "80:81",
            "--remote-group",
            "web",
            "web",
        ],
    )
    .await;
    assert_eq!(rg["remote_group_id"], sg["id"]);
    let rules = os(&cloud, &["security", "group", "rule", "list", "web"]).await;
    assert_eq!(rules.as_array().unwrap().len(), 5, "2 egress + 3 created: {rules}");
    os(&cloud, &["security", "group", "rule", "delete", s(&icmp, "id")]).await;
    let shown = os(&cloud, &["security", "group", "show", "web"]).await;
    assert_eq!(shown["description"], "web servers");

    let r = os(&cloud, &["router", "create", "r1"]).await;
    assert_eq!(r["status"], "ACTIVE");
    os(&cloud, &["router", "set", "--external-gateway", "public", "r1"]).await;
    os(&cloud, &["router", "add", "subnet", "r1", "private-sub"]).await;
    let shown = os(&cloud, &["router", "show", "r1"]).await;
    let gw = format!("{}", shown["external_gateway_info"]);
    assert!(gw.contains("198.51.100.") && gw.contains("\"enable_snat\":true"), "{gw}");
    let port = os(&cloud, &["port", "create", "--network", "private", "--security-group", "web", "vm-port"]).await;
    assert_eq!(
        port["security_group_ids"].as_array().map(Vec::len).or(port["security_groups"].as_array().map(Vec::len)),
        Some(1),
        "{port}"
    );

    let fip = os(&cloud, &["floating", "ip", "create", "public"]).await;
    let addr = s(&fip, "floating_ip_address").to_string();
    assert!(addr.starts_with("198.51.100."), "{fip}");
    os(&cloud, &["floating", "ip", "set", "--port", "vm-port", &addr]).await;
    let shown = os(&cloud, &["floating", "ip", "show", &addr]).await;
    assert_eq!(shown["port_id"], port["id"]);
    assert_eq!(shown["router_id"], r["id"]);
    let list = os(&cloud, &["floating", "ip", "list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let blocked = cloud.openstack(&["router", "remove", "subnet", "r1", "private-sub"]).await.unwrap_err();
    assert!(blocked.stderr.contains("floating"), "{blocked}");
    os(&cloud, &["floating", "ip", "unset", "--port", &addr]).await;
    let shown = os(&cloud, &["floating", "ip", "show", &addr]).await;
    assert!(shown["port_id"].is_null(), "{shown}");
    os(&cloud, &["floating", "ip", "delete", &addr]).await;
    os(&cloud, &["port", "delete", "vm-port"]).await;
    os(&cloud, &["router", "remove", "subnet", "r1", "private-sub"]).await;
    os(&cloud, &["router", "delete", "r1"]).await;
    os(&cloud, &["security", "group", "delete", "web"]).await;
    assert!(os(&cloud, &["router", "list"]).await.as_array().unwrap().is_empty());

    // Agents reported in-process appear in the agent list.
    let platform = cloud.handle().platform.clone();
    let admin = stratus_core::RequestContext::internal_admin();
    for (ty, bin) in [
        ("Linux bridge agent", "neutron-linuxbridge-agent"),
        ("DHCP agent", "neutron-dhcp-agent"),
        ("L3 agent", "neutron-l3-agent"),
        ("Metadata agent", "neutron-metadata-agent"),
    ] {
        let body = serde_json::json!({"agent_type": ty, "binary": bin, "host": "node1"});
        let r = platform
            .internal
            .call(&admin, axum::http::Method::POST, "/network/internal/agents", Some(&body), &[])
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    }
    let agents = os(&cloud, &["network", "agent", "list"]).await;
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 4, "{agents:?}");
    assert!(agents.iter().all(|a| a["Alive"] == ":-)" || a["Alive"] == true), "{agents:?}");

    let ext = os(&cloud, &["extension", "list", "--network"]).await;
    let aliases: Vec<&str> = ext.as_array().unwrap().iter().filter_map(|e| e["Alias"].as_str()).collect();
    for want in ["router", "external-net", "security-group", "quotas", "provider"] {
        assert!(aliases.contains(&want), "{want} in {aliases:?}");
    }
    let q = os(&cloud, &["quota", "show", "--network"]).await;
    let text = format!("{q}");
    assert!(text.contains("100") && (text.contains("networks") || text.contains("network")), "{text}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn projects_are_isolated_unless_shared() {
    let cloud = TestCloud::start().await;
    for p in ["proj-a", "proj-b"] {
        os(&cloud, &["project", "create", "--domain", "default", p]).await;
        let user = format!("user-{p}");
        os(&cloud, &["user", "create", "--domain", "default", "--project", p, "--password", "secret-pass", &user])
            .await;
        os(&cloud, &["role", "add", "--project", p, "--user", &user, "member"]).await;
    }
    let a = Creds::new("user-proj-a", "secret-pass", "proj-a");
    let b = Creds::new("user-proj-b", "secret-pass", "proj-b");
    let net = os_as(&cloud, &a, &["network", "create", "net-a"]).await;
    assert!(
        net.get("provider:network_type").is_none_or(Value::is_null),
        "members do not see provider attributes: {net}"
    );
    os_as(&cloud, &a, &["subnet", "create", "--network", "net-a", "--subnet-range", "10.1.0.0/24", "sub-a"]).await;
    os_as(&cloud, &a, &["port", "create", "--network", "net-a", "port-a"]).await;
    os_as(&cloud, &a, &["router", "create", "router-a"]).await;
    os_as(&cloud, &a, &["security", "group", "create", "sg-a"]).await;

    assert!(os_as(&cloud, &b, &["network", "list"]).await.as_array().unwrap().is_empty());
    assert!(os_as(&cloud, &b, &["port", "list"]).await.as_array().unwrap().is_empty());
    assert!(os_as(&cloud, &b, &["router", "list"]).await.as_array().unwrap().is_empty());
    assert!(os_as(&cloud, &b, &["floating", "ip", "list"]).await.as_array().unwrap().is_empty());
    let groups = names(&os_as(&cloud, &b, &["security", "group", "list"]).await);
    assert_eq!(groups, vec!["default".to_string()], "only B's own default group");
    let id = s(&net, "id").to_string();
    let err = cloud.openstack_as(&b, &["port", "create", "--network", &id, "intruder"]).await.unwrap_err();
    assert!(err.stderr.contains("could not be found") || err.stderr.contains("No Network found"), "{err}");

    // Shared with B by RBAC: visible and usable by B, still not by others.
    let b_id = s(&os(&cloud, &["project", "show", "proj-b"]).await, "id").to_string();
    let rbac = os_as(
        &cloud,
        &a,
        &[
            "network",
            "rbac",
            "create",
            "--target-project",
            &b_id,
            "--action",
            "access_as_shared",
            "--type",
            "network",
            &id,
        ],
    )
    .await;
    assert_eq!(rbac["target_project_id"], b_id.as_str(), "{rbac}");
    let nets = names(&os_as(&cloud, &b, &["network", "list"]).await);
    assert_eq!(nets, vec!["net-a".to_string()]);
    let p = os_as(&cloud, &b, &["port", "create", "--network", &id, "guest-port"]).await;
    assert!(format!("{}", p["fixed_ips"]).contains("10.1.0."), "{p}");
    // B's port is B's: A does not see it in its own listing of ports it owns.
    let a_ports = names(&os_as(&cloud, &a, &["port", "list"]).await);
    assert_eq!(a_ports, vec!["port-a".to_string()]);
    cloud.shutdown().await;
}
