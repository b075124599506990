//! In-process tests of the networking API: the router is driven with `oneshot` and a
//! trusted in-process caller context, on SQLite (and on PostgreSQL for the concurrency
//! test: `STRATUS_TEST_POSTGRES_URL` must be set, or that test fails).

mod common;

use std::collections::HashSet;

use common::{admin, env, env_on, err_type, user, Env};
use serde_json::{json, Value};
use stratus_network::NetworkConfig;

#[tokio::test]
async fn networks_get_segments_from_configured_ranges() {
    let cfg = NetworkConfig {
        vni_ranges: vec!["100:102".into()],
        network_vlan_ranges: vec!["physnet1:10:11".into()],
        ..Default::default()
    };
    let e = env_on(None, cfg).await;
    let a = admin();
    let n1 = e.network(&a, json!({"name": "t1"})).await;
    assert_eq!(n1["provider:network_type"], "vxlan");
    assert_eq!(n1["provider:segmentation_id"], 100);
    assert_eq!(n1["mtu"], 1450);
    assert_eq!(n1["status"], "ACTIVE");
    assert_eq!(n1["subnets"], json!([]));
    let n2 = e.network(&a, json!({"name": "t2"})).await;
    assert_eq!(n2["provider:segmentation_id"], 101);
    // Freed ids are reused: the allocator looks for the lowest gap.
    let (s, _) = e.delete(&a, &format!("/v2.0/networks/{}", n1["id"].as_str().unwrap())).await;
    assert_eq!(s, 204);
    let n3 = e.network(&a, json!({"name": "t3"})).await;
    assert_eq!(n3["provider:segmentation_id"], 100);
    e.network(&a, json!({"name": "t4"})).await;
    let (s, b) = e.post(&a, "/v2.0/networks", json!({"network": {"name": "t5"}})).await;
    assert_eq!((s, err_type(&b)), (503, "NoNetworkAvailable"), "{b}");
    let (s, b) = e
        .post(
            &a,
            "/v2.0/networks",
            json!({"network": {"provider:network_type": "vxlan", "provider:segmentation_id": 101}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "TunnelIdInUse"), "{b}");

    let flat = e.network(&a, json!({"name": "provider", "shared": true, "router:external": true, "provider:network_type": "flat", "provider:physical_network": "provider"})).await;
    assert_eq!(flat["provider:segmentation_id"], Value::Null);
    assert_eq!(flat["mtu"], 1500);
    assert_eq!(flat["router:external"], true);
    let (s, b) = e
        .post(
            &a,
            "/v2.0/networks",
            json!({"network": {"provider:network_type": "flat", "provider:physical_network": "provider"}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "FlatNetworkInUse"), "{b}");

    let v = e.network(&a, json!({"provider:network_type": "vlan"})).await;
    assert_eq!(
        (v["provider:physical_network"].as_str(), v["provider:segmentation_id"].as_i64()),
        (Some("physnet1"), Some(10))
    );
    let v = e.network(&a, json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 300})).await;
    assert_eq!(v["provider:segmentation_id"], 300);
    let (s, b) = e.post(&a, "/v2.0/networks", json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 300}})).await;
    assert_eq!((s, err_type(&b)), (409, "VlanIdInUse"), "{b}");
    let (s, b) = e.post(&a, "/v2.0/networks", json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 5000}})).await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "{b}");
    let local = e.network(&a, json!({"provider:network_type": "local"})).await;
    assert_eq!(local["provider:network_type"], "local");

    // Members may not set provider attributes, sharing or external, and never see them.
    let m = user("p1");
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": {"provider:network_type": "local"}})).await;
    assert_eq!((s, err_type(&b)), (403, "PolicyNotAuthorized"), "{b}");
    let (s, _) = e.post(&m, "/v2.0/networks", json!({"network": {"shared": true}})).await;
    assert_eq!(s, 403);
    let (s, b) = e.get(&m, &format!("/v2.0/networks/{}", flat["id"].as_str().unwrap())).await;
    assert_eq!(s, 200, "shared network visible: {b}");
    assert!(b["network"].get("provider:network_type").is_none());
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": {"name": "x", "bogus": 1}})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = e.get(&m, "/v2.0/networks/nope").await;
    assert_eq!((s, err_type(&b)), (404, "NetworkNotFound"));
    assert_eq!(b["NeutronError"]["message"], "Network nope could not be found.");
}

#[tokio::test]
async fn subnet_validation_matches_neutron() {
    let e = env().await;
    let a = admin();
    let n = e.network(&a, json!({"name": "n"})).await;
    let nid = n["id"].as_str().unwrap();
    let bad = |body: Value| {
        let mut b = body;
        b["network_id"] = json!(nid);
        json!({"subnet": b})
    };
    let (s, b) = e.post(&a, "/v2.0/subnets", bad(json!({"cidr": "10.0.0.1/24", "ip_version": 4}))).await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "{b}");
    assert!(b["NeutronError"]["message"].as_str().unwrap().contains("10.0.0.0/24"));
    let (s, b) = e.post(&a, "/v2.0/subnets", bad(json!({"cidr": "10.0.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.0.1.2", "end": "10.0.1.9"}]}))).await;
    assert_eq!((s, err_type(&b)), (400, "OutOfBoundsAllocationPool"), "{b}");
    let (s, b) = e
        .post(&a, "/v2.0/subnets", bad(json!({"cidr": "10.0.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.20"}, {"start": "10.0.0.10", "end": "10.0.0.30"}]})))
        .await;
    assert_eq!((s, err_type(&b)), (400, "OverlappingAllocationPools"), "{b}");
    let (s, b) = e.post(&a, "/v2.0/subnets", bad(json!({"cidr": "10.0.0.0/24", "ip_version": 4, "allocation_pools": [{"start": "10.0.0.9", "end": "10.0.0.2"}]}))).await;
    assert_eq!((s, err_type(&b)), (400, "InvalidAllocationPool"), "{b}");
    let (s, b) = e.post(&a, "/v2.0/subnets", bad(json!({"cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.5", "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.20"}]}))).await;
    assert_eq!((s, err_type(&b)), (409, "GatewayConflictWithAllocationPools"), "{b}");
    let (s, b) = e
        .post(&a, "/v2.0/subnets", bad(json!({"cidr": "10.0.0.0/24", "ip_version": 4, "ipv6_ra_mode": "slaac"})))
        .await;
    assert_eq!(s, 400, "{b}");

    let s1 = e
        .subnet(&a, json!({"network_id": nid, "cidr": "10.0.0.0/24", "ip_version": 4, "dns_nameservers": ["8.8.8.8"], "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]}))
        .await;
    assert_eq!(s1["gateway_ip"], "10.0.0.1");
    assert_eq!(s1["allocation_pools"], json!([{"start": "10.0.0.2", "end": "10.0.0.254"}]));
    assert_eq!(s1["enable_dhcp"], true);
    assert_eq!(s1["dns_nameservers"], json!(["8.8.8.8"]));
    let (s, b) = e.post(&a, "/v2.0/subnets", bad(json!({"cidr": "10.0.0.128/25", "ip_version": 4}))).await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "overlap: {b}");
    let s2 = e.subnet(&a, json!({"network_id": nid, "cidr": "10.1.0.0/24", "ip_version": 4, "gateway_ip": null, "enable_dhcp": false})).await;
    assert_eq!(s2["gateway_ip"], Value::Null);
    assert_eq!(s2["allocation_pools"], json!([{"start": "10.1.0.1", "end": "10.1.0.254"}]));
    let v6 = e.subnet(&a, json!({"network_id": nid, "cidr": "2001:db8::/64", "ip_version": 6, "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"})).await;
    assert_eq!(v6["gateway_ip"], "2001:db8::1");
    let (s, b) = e
        .post(&a, "/v2.0/subnets", bad(json!({"cidr": "2001:db9::/80", "ip_version": 6, "ipv6_address_mode": "slaac"})))
        .await;
    assert_eq!(s, 400, "{b}");
    let (_, net) = e.get(&a, &format!("/v2.0/networks/{nid}")).await;
    assert_eq!(net["network"]["subnets"].as_array().unwrap().len(), 3);

    // Default port addressing: one IPv4 from the first subnet, plus SLAAC (EUI-64).
    let (s, p) = e.port(&a, json!({"network_id": nid, "mac_address": "fa:16:3e:11:22:33"})).await;
    assert_eq!(s, 201, "{p}");
    let ips: Vec<&str> =
        p["port"]["fixed_ips"].as_array().unwrap().iter().map(|i| i["ip_address"].as_str().unwrap()).collect();
    assert_eq!(ips, vec!["10.0.0.2", "2001:db8::f816:3eff:fe11:2233"]);

    // Pool update and subnet delete in use.
    let (s, b) = e
        .put(
            &a,
            &format!("/v2.0/subnets/{}", s1["id"].as_str().unwrap()),
            json!({"subnet": {"allocation_pools": [{"start": "10.0.0.100", "end": "10.0.0.110"}], "name": "renamed"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnet"]["revision_number"], 1);
    let (s, p2) = e.port(&a, json!({"network_id": nid, "fixed_ips": [{"subnet_id": s1["id"]}]})).await;
    assert_eq!(s, 201);
    assert_eq!(p2["port"]["fixed_ips"][0]["ip_address"], "10.0.0.100");
    let (s, b) = e.delete(&a, &format!("/v2.0/subnets/{}", s1["id"].as_str().unwrap())).await;
    assert_eq!((s, err_type(&b)), (409, "SubnetInUse"));

    // Subnet pools.
    let (s, pool) = e.post(&a, "/v2.0/subnetpools", json!({"subnetpool": {"name": "pool", "prefixes": ["172.16.0.0/16"], "default_prefixlen": 26, "is_default": true, "shared": true}})).await;
    assert_eq!(s, 201, "{pool}");
    let pid = pool["subnetpool"]["id"].clone();
    let n2 = e.network(&a, json!({"name": "n2"})).await;
    let a1 = e.subnet(&a, json!({"network_id": n2["id"], "subnetpool_id": pid, "ip_version": 4})).await;
    assert_eq!(a1["cidr"], "172.16.0.0/26");
    let a2 = e.subnet(&a, json!({"network_id": n2["id"], "subnetpool_id": pid, "prefixlen": 24})).await;
    assert_eq!(a2["cidr"], "172.16.1.0/24");
    let n3 = e.network(&a, json!({"name": "n3"})).await;
    let a3 = e.subnet(&a, json!({"network_id": n3["id"], "use_default_subnet_pool": true, "ip_version": 4})).await;
    assert_eq!(a3["cidr"], "172.16.0.64/26");
    assert_eq!(a3["subnetpool_id"], pid);
}

#[tokio::test]
async fn ports_allocate_addresses_and_macs_once() {
    let e = env().await;
    let a = admin();
    let n = e.network(&a, json!({"name": "n"})).await;
    let nid = n["id"].as_str().unwrap().to_string();
    let sub = e.subnet(&a, json!({"network_id": nid, "cidr": "192.168.5.0/29", "ip_version": 4})).await;
    // /29: .2-.6 in the pool (5 addresses).
    let mut ports = Vec::new();
    for _ in 0..5 {
        let (s, p) =
            e.port(&a, json!({"network_id": nid, "device_owner": "compute:nova", "device_id": "server-1"})).await;
        assert_eq!(s, 201, "{p}");
        let p = p["port"].clone();
        assert!(p["mac_address"].as_str().unwrap().starts_with("fa:16:3e:"));
        assert_eq!(p["status"], "DOWN");
        assert_eq!(p["binding:vif_type"], "unbound");
        assert_eq!(p["binding:vnic_type"], "normal");
        assert_eq!(p["security_groups"].as_array().unwrap().len(), 1, "default group applied");
        assert!(p["dns_assignment"][0]["fqdn"].as_str().unwrap().ends_with(".openstacklocal."));
        ports.push(p);
    }
    let ips: HashSet<String> =
        ports.iter().map(|p| p["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string()).collect();
    assert_eq!(ips.len(), 5);
    let (s, b) = e.port(&a, json!({"network_id": nid})).await;
    assert_eq!((s, err_type(&b)), (409, "IpAddressGenerationFailure"), "{b}");
    // Released on delete, then handed out again.
    let freed = ports[2]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let (s, _) = e.delete(&a, &format!("/v2.0/ports/{}", ports[2]["id"].as_str().unwrap())).await;
    assert_eq!(s, 204);
    let (s, b) = e.port(&a, json!({"network_id": nid, "fixed_ips": [{"ip_address": freed}]})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = e
        .port(&a, json!({"network_id": nid, "fixed_ips": [{"ip_address": ports[0]["fixed_ips"][0]["ip_address"]}]}))
        .await;
    assert_eq!((s, err_type(&b)), (409, "IpAddressAlreadyAllocated"), "{b}");
    let (s, b) = e.port(&a, json!({"network_id": nid, "fixed_ips": [{"ip_address": "192.168.5.1"}]})).await;
    assert_eq!(s, 409, "gateway is reserved: {b}");
    let (s, b) = e.port(&a, json!({"network_id": nid, "fixed_ips": [{"ip_address": "10.9.9.9"}]})).await;
    assert_eq!((s, err_type(&b)), (400, "InvalidIpForNetwork"), "{b}");
    let (s, b) = e
        .port(&a, json!({"network_id": nid, "fixed_ips": [{"subnet_id": sub["id"], "ip_address": "192.168.5.7"}]}))
        .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidIpForSubnet"), "broadcast: {b}");
    let (s, b) = e.port(&a, json!({"network_id": nid, "fixed_ips": [], "mac_address": ports[1]["mac_address"]})).await;
    assert_eq!((s, err_type(&b)), (409, "MacAddressInUse"), "{b}");

    // Compute's calls: list by device id, bind to a host, delete.
    let (s, b) = e.get(&a, "/v2.0/ports?device_id=server-1").await;
    assert_eq!(s, 200);
    assert_eq!(b["ports"].as_array().unwrap().len(), 4);
    let pid = ports[0]["id"].as_str().unwrap();
    let (s, b) = e
        .put(
            &a,
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"binding:host_id": "host1", "device_owner": "compute:nova"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["port"]["binding:vif_type"], "bridge");
    assert_eq!(b["port"]["binding:host_id"], "host1");
    let (s, b) = e
        .put(
            &a,
            &format!("/v2.0/ports/{pid}"),
            json!({"port": {"allowed_address_pairs": [{"ip_address": "10.10.0.0/24"}]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["port"]["allowed_address_pairs"][0]["mac_address"], ports[0]["mac_address"]);
    let (s, b) = e.put(&a, &format!("/v2.0/ports/{pid}"), json!({"port": {"port_security_enabled": false}})).await;
    assert_eq!((s, err_type(&b)), (409, "PortSecurityPortHasSecurityGroup"), "{b}");
    // fields= selection and filters.
    let (_, b) = e.get(&a, &format!("/v2.0/ports?fields=id&fields=mac_address&network_id={nid}&limit=2")).await;
    assert_eq!(b["ports"].as_array().unwrap().len(), 2);
    assert_eq!(b["ports"][0].as_object().unwrap().len(), 2);
    assert!(b["ports_links"][0]["href"].as_str().unwrap().contains("marker="));
    // Agent wiring: status becomes ACTIVE through the internal route.
    let (s, b) = e.post(&a, &format!("/internal/ports/{pid}/status"), json!({"status": "ACTIVE"})).await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = e.get(&a, &format!("/v2.0/ports/{pid}")).await;
    assert_eq!(b["port"]["status"], "ACTIVE");
    // A member of another project never sees binding details nor these ports.
    let (s, _) = e.get(&user("other"), &format!("/v2.0/ports/{pid}")).await;
    assert_eq!(s, 404);
}

async fn concurrent_ports(e: &Env, tasks: usize, per_task: usize) {
    let a = admin();
    let (s, _) = e.put(&a, "/v2.0/quotas/adminproj", json!({"quota": {"port": -1}})).await;
    assert_eq!(s, 200);
    let n = e.network(&a, json!({"name": "conc"})).await;
    let nid = n["id"].as_str().unwrap().to_string();
    e.subnet(&a, json!({"network_id": nid, "cidr": "10.20.0.0/16", "ip_version": 4})).await;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (e, nid, a) = (e.clone(), nid.clone(), a.clone());
        handles.push(tokio::spawn(async move {
            let mut ips = Vec::new();
            for _ in 0..per_task {
                let (s, p) = e.port(&a, json!({"network_id": nid})).await;
                assert_eq!(s, 201, "{p}");
                ips.push(p["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string());
            }
            ips
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), tasks * per_task);
    assert_eq!(unique.len(), all.len(), "an address was handed out twice");
    let (_, b) = e.get(&a, &format!("/v2.0/network-ip-availabilities/{nid}")).await;
    assert_eq!(b["network_ip_availability"]["used_ips"], (tasks * per_task) as i64, "{b}");
}

#[tokio::test]
async fn ipam_concurrent_allocation_sqlite() {
    let e = env().await;
    concurrent_ports(&e, 8, 25).await;
}

#[tokio::test]
async fn ipam_concurrent_allocation_postgres() {
    let url = std::env::var("STRATUS_TEST_POSTGRES_URL")
        .expect("STRATUS_TEST_POSTGRES_URL must point at a PostgreSQL server (scripts/test-postgres.sh prints one)");
    let e = env_on(Some(url), NetworkConfig::default()).await;
    concurrent_ports(&e, 8, 25).await;
}

#[tokio::test]
async fn security_groups_default_and_rules() {
    let e = env().await;
    let m = user("p1");
    let (s, b) = e.get(&m, "/v2.0/security-groups").await;
    assert_eq!(s, 200);
    let groups = b["security_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let def = &groups[0];
    assert_eq!(def["name"], "default");
    assert_eq!(def["stateful"], true);
    let rules = def["security_group_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules.iter().filter(|r| r["direction"] == "egress" && r["remote_group_id"].is_null()).count(), 2);
    assert_eq!(rules.iter().filter(|r| r["direction"] == "ingress" && r["remote_group_id"] == def["id"]).count(), 2);
    // Listing again does not create a second default group.
    let (_, b) = e.get(&m, "/v2.0/security-groups").await;
    assert_eq!(b["security_groups"].as_array().unwrap().len(), 1);

    let (s, sg) =
        e.post(&m, "/v2.0/security-groups", json!({"security_group": {"name": "web", "description": "w"}})).await;
    assert_eq!(s, 201, "{sg}");
    let sgid = sg["security_group"]["id"].as_str().unwrap().to_string();
    assert_eq!(sg["security_group"]["security_group_rules"].as_array().unwrap().len(), 2);
    let rule = |body: Value| {
        let mut b = body;
        b["security_group_id"] = json!(sgid);
        json!({"security_group_rule": b})
    };
    let (s, r) = e.post(&m, "/v2.0/security-group-rules", rule(json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}))).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["security_group_rule"]["ethertype"], "IPv4");
    let (s, b) = e
        .post(
            &m,
            "/v2.0/security-group-rules",
            rule(json!({"direction": "ingress", "protocol": "6", "port_range_min": 22, "port_range_max": 22})),
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "SecurityGroupRuleExists"), "tcp == 6 and 0.0.0.0/0 == any: {b}");
    let (s, b) =
        e.post(&m, "/v2.0/security-group-rules", rule(json!({"direction": "ingress", "protocol": "icmp"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = e
        .post(
            &m,
            "/v2.0/security-group-rules",
            rule(json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80})),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "SecurityGroupInvalidPortRange"), "{b}");
    let (s, b) =
        e.post(&m, "/v2.0/security-group-rules", rule(json!({"direction": "ingress", "protocol": "bogus"}))).await;
    assert_eq!((s, err_type(&b)), (400, "SecurityGroupRuleInvalidProtocol"), "{b}");
    let (s, b) = e
        .post(
            &m,
            "/v2.0/security-group-rules",
            rule(json!({"direction": "ingress", "ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = e
        .post(
            &m,
            "/v2.0/security-group-rules",
            rule(json!({"direction": "ingress", "remote_group_id": sgid, "remote_ip_prefix": "10.0.0.0/8"})),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "SecurityGroupRemoteGroupAndRemoteIpPrefix"), "{b}");
    // A remote group that names nothing is 404, whether or not it looks like a UUID (Neutron).
    for bad in ["bad_group_id", "8a1d4a7e-1b6e-4d7e-9a53-5a1e0f0b9c11"] {
        let (s, b) = e
            .post(&m, "/v2.0/security-group-rules", rule(json!({"direction": "ingress", "remote_group_id": bad})))
            .await;
        assert_eq!((s, err_type(&b)), (404, "SecurityGroupNotFound"), "{bad}: {b}");
    }
    let (s, b) = e
        .post(
            &m,
            "/v2.0/security-group-rules",
            rule(json!({"direction": "ingress", "protocol": "udp", "remote_group_id": sgid})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // Another project sees none of it.
    let (s, _) = e.get(&user("p2"), &format!("/v2.0/security-groups/{sgid}")).await;
    assert_eq!(s, 404);
    let (s, _) = e.post(&user("p2"), "/v2.0/security-group-rules", rule(json!({"direction": "egress"}))).await;
    assert_eq!(s, 404);
    // Deleting a group takes the rules of other groups that name it as remote group with it
    // (Neutron's foreign key cascade).
    let (_, peer) =
        e.post(&m, "/v2.0/security-groups", json!({"security_group": {"name": "peer", "description": "p"}})).await;
    let peer_id = peer["security_group"]["id"].as_str().unwrap().to_string();
    let (s, r) = e
        .post(&m, "/v2.0/security-group-rules", rule(json!({"direction": "ingress", "remote_group_id": peer_id})))
        .await;
    assert_eq!(s, 201, "{r}");
    let rid = r["security_group_rule"]["id"].as_str().unwrap().to_string();
    assert_eq!(e.delete(&m, &format!("/v2.0/security-groups/{peer_id}")).await.0, 204);
    assert_eq!(
        e.get(&m, &format!("/v2.0/security-group-rules/{rid}")).await.0,
        404,
        "the rule went with its remote group"
    );
    let (_, g) = e.get(&m, &format!("/v2.0/security-groups/{sgid}")).await;
    let rules = g["security_group"]["security_group_rules"].as_array().unwrap();
    assert!(rules.iter().all(|r| r["remote_group_id"] != peer_id.as_str()), "{g}");
}

#[tokio::test]
async fn routers_floating_ips_and_reachability() {
    let e = env().await;
    let a = admin();
    let m = user("p1");
    let ext = e.network(&a, json!({"name": "public", "router:external": true, "provider:network_type": "flat", "provider:physical_network": "provider"})).await;
    let ext_sub = e.subnet(&a, json!({"network_id": ext["id"], "cidr": "203.0.113.0/24", "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.50"}]})).await;
    // The external network is visible to members (not shared).
    let (s, _) = e.get(&m, &format!("/v2.0/networks/{}", ext["id"].as_str().unwrap())).await;
    assert_eq!(s, 200);
    let net = e.network(&m, json!({"name": "vpc01"})).await;
    let sub = e.subnet(&m, json!({"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4})).await;
    let (s, r) = e
        .post(
            &m,
            "/v2.0/routers",
            json!({"router": {"name": "r1", "external_gateway_info": {"network_id": ext["id"]}}}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let r = r["router"].clone();
    let rid = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["external_gateway_info"]["enable_snat"], true);
    assert_eq!(r["external_gateway_info"]["external_fixed_ips"][0]["subnet_id"], ext_sub["id"]);
    assert_eq!(r["distributed"], false);
    assert_eq!(r["ha"], false);
    let (s, port) = e.port(&m, json!({"network_id": net["id"]})).await;
    assert_eq!(s, 201);
    let pid = port["port"]["id"].as_str().unwrap().to_string();

    // Not yet routed: association refused with Neutron's 404.
    let (s, f) = e.post(&m, "/v2.0/floatingips", json!({"floatingip": {"floating_network_id": ext["id"]}})).await;
    assert_eq!(s, 201, "{f}");
    let fid = f["floatingip"]["id"].as_str().unwrap().to_string();
    let fip_addr = f["floatingip"]["floating_ip_address"].as_str().unwrap().to_string();
    assert!(fip_addr.starts_with("203.0.113."));
    assert_eq!(f["floatingip"]["status"], "DOWN");
    let (s, b) = e.put(&m, &format!("/v2.0/floatingips/{fid}"), json!({"floatingip": {"port_id": pid}})).await;
    assert_eq!((s, err_type(&b)), (404, "ExternalGatewayForFloatingIPNotFound"), "{b}");

    let (s, b) = e.put(&m, &format!("/v2.0/routers/{rid}/add_router_interface"), json!({"subnet_id": sub["id"]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnet_id"], sub["id"]);
    let iface_port = b["port_id"].as_str().unwrap().to_string();
    let (_, p) = e.get(&m, &format!("/v2.0/ports/{iface_port}")).await;
    assert_eq!(p["port"]["fixed_ips"][0]["ip_address"], "10.0.0.1");
    assert_eq!(p["port"]["device_owner"], "network:router_interface");
    let (s, b) = e.put(&m, &format!("/v2.0/routers/{rid}/add_router_interface"), json!({"subnet_id": sub["id"]})).await;
    assert_eq!(s, 400, "second interface on the subnet: {b}");
    let (s, b) = e.delete(&m, &format!("/v2.0/ports/{iface_port}")).await;
    assert_eq!(s, 409, "{b}");

    let (s, b) = e.put(&m, &format!("/v2.0/floatingips/{fid}"), json!({"floatingip": {"port_id": pid}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["floatingip"]["router_id"], rid.as_str());
    assert_eq!(b["floatingip"]["fixed_ip_address"], port["port"]["fixed_ips"][0]["ip_address"]);
    let (s, b) = e
        .post(&m, "/v2.0/floatingips", json!({"floatingip": {"floating_network_id": ext["id"], "port_id": pid}}))
        .await;
    assert_eq!((s, err_type(&b)), (409, "FloatingIPPortAlreadyAssociated"), "{b}");
    let (s, b) =
        e.put(&m, &format!("/v2.0/routers/{rid}/remove_router_interface"), json!({"subnet_id": sub["id"]})).await;
    assert_eq!((s, err_type(&b)), (409, "RouterInterfaceInUseByFloatingIP"), "{b}");
    let (s, b) = e.put(&m, &format!("/v2.0/floatingips/{fid}"), json!({"floatingip": {"port_id": null}})).await;
    assert_eq!(s, 200);
    assert_eq!(b["floatingip"]["port_id"], Value::Null);

    // Port forwarding on an unassociated floating IP.
    let fixed = port["port"]["fixed_ips"][0]["ip_address"].clone();
    let (s, b) = e
        .post(&m, &format!("/v2.0/floatingips/{fid}/port_forwardings"), json!({"port_forwarding": {"protocol": "tcp", "internal_ip_address": fixed, "internal_port": 22, "external_port": 2222, "internal_port_id": pid}}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, b) = e.get(&m, &format!("/v2.0/floatingips/{fid}")).await;
    assert_eq!(b["floatingip"]["port_forwardings"][0]["external_port"], 2222);

    // Extra routes must point into an attached subnet.
    let (s, b) = e
        .put(
            &m,
            &format!("/v2.0/routers/{rid}"),
            json!({"router": {"routes": [{"destination": "172.20.0.0/16", "nexthop": "10.0.0.5"}]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = e
        .put(
            &m,
            &format!("/v2.0/routers/{rid}"),
            json!({"router": {"routes": [{"destination": "172.20.0.0/16", "nexthop": "99.0.0.5"}]}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidRoutes"), "{b}");
    let (s, _) = e.delete(&m, &format!("/v2.0/routers/{rid}")).await;
    assert_eq!(s, 409, "router with interfaces");
    let (s, b) =
        e.put(&m, &format!("/v2.0/routers/{rid}/remove_router_interface"), json!({"subnet_id": sub["id"]})).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = e.delete(&m, &format!("/v2.0/floatingips/{fid}")).await;
    assert_eq!(s, 204);
    let (s, _) = e.delete(&m, &format!("/v2.0/routers/{rid}")).await;
    assert_eq!(s, 204);
    // Everything handed out on the external subnet came back.
    let (_, b) = e.get(&a, &format!("/v2.0/network-ip-availabilities/{}", ext["id"].as_str().unwrap())).await;
    assert_eq!(b["network_ip_availability"]["used_ips"], 0, "{b}");
}

#[tokio::test]
async fn quotas_rbac_isolation_agents_and_discovery() {
    let e = env().await;
    let a = admin();
    let (p1, p2) = (user("p1"), user("p2"));
    let (s, b) = e.put(&a, "/v2.0/quotas/p1", json!({"quota": {"network": 1}})).await;
    assert_eq!(s, 200, "{b}");
    let n = e.network(&p1, json!({"name": "mine"})).await;
    let (s, b) = e.post(&p1, "/v2.0/networks", json!({"network": {"name": "second"}})).await;
    assert_eq!((s, err_type(&b)), (409, "OverQuota"), "{b}");
    let (s, b) = e.get(&p1, "/v2.0/quotas/p1/details").await;
    assert_eq!(s, 200);
    assert_eq!(b["quota"]["network"], json!({"used": 1, "limit": 1, "reserved": 0}));
    let (s, _) = e.get(&p2, "/v2.0/quotas/p1").await;
    assert_eq!(s, 403);
    let (s, _) = e.put(&p1, "/v2.0/quotas/p1", json!({"quota": {"network": 10}})).await;
    assert_eq!(s, 403);

    // Isolation, then sharing with one project by RBAC.
    let nid = n["id"].as_str().unwrap();
    e.subnet(&p1, json!({"network_id": nid, "cidr": "10.0.0.0/24"})).await;
    let (_, b) = e.get(&p2, "/v2.0/networks").await;
    assert_eq!(b["networks"].as_array().unwrap().len(), 0);
    let (s, b) = e.port(&p2, json!({"network_id": nid})).await;
    assert_eq!((s, err_type(&b)), (404, "NetworkNotFound"));
    let (s, b) = e.post(&p1, "/v2.0/rbac-policies", json!({"rbac_policy": {"object_type": "network", "object_id": nid, "action": "access_as_shared", "target_tenant": "p2"}})).await;
    assert_eq!(s, 201, "{b}");
    let rbac = b["rbac_policy"]["id"].as_str().unwrap().to_string();
    let (s, b) = e.post(&p1, "/v2.0/rbac-policies", json!({"rbac_policy": {"object_type": "network", "object_id": nid, "action": "access_as_shared", "target_tenant": "*"}})).await;
    assert_eq!(s, 403, "wildcard is admin-only: {b}");
    let (_, b) = e.get(&p2, "/v2.0/networks").await;
    assert_eq!(b["networks"].as_array().unwrap().len(), 1);
    let (_, b) = e.get(&p2, "/v2.0/subnets").await;
    assert_eq!(b["subnets"].as_array().unwrap().len(), 1);
    let (_, b) = e.get(&user("p3"), "/v2.0/networks").await;
    assert_eq!(b["networks"].as_array().unwrap().len(), 0);
    let (s, b) = e.port(&p2, json!({"network_id": nid})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = e.delete(&p1, &format!("/v2.0/rbac-policies/{rbac}")).await;
    assert_eq!((s, err_type(&b)), (409, "RbacPolicyInUse"));

    // Tags on resources and tag filters.
    let (s, _) = e.put(&p1, &format!("/v2.0/networks/{nid}/tags/blue"), json!({})).await;
    assert_eq!(s, 201);
    let (s, b) = e.put(&p1, &format!("/v2.0/networks/{nid}/tags"), json!({"tags": ["red", "green"]})).await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = e.get(&p1, "/v2.0/networks?tags=red&not-tags=blue").await;
    assert_eq!(b["networks"].as_array().unwrap().len(), 1);
    let (s, _) = e.get(&p1, &format!("/v2.0/networks/{nid}/tags/blue")).await;
    assert_eq!(s, 404);
    let (s, _) = e.put(&p2, &format!("/v2.0/networks/{nid}/tags/x"), json!({})).await;
    assert_eq!(s, 403, "shared-with is not owner");

    // Agents: reported through the internal route, alive from heartbeats, admin-only list.
    let (s, b) = e
        .post(
            &a,
            "/internal/agents",
            json!({"agent_type": "Linux bridge agent", "binary": "neutron-linuxbridge-agent", "host": "host1"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = e
        .post(
            &a,
            "/internal/agents",
            json!({"agent_type": "DHCP agent", "binary": "neutron-dhcp-agent", "host": "host1", "topic": "dhcp_agent"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = e.get(&a, "/v2.0/agents").await;
    let agents = b["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert!(agents.iter().all(|a| a["alive"] == true && a["admin_state_up"] == true));
    let (s, b) = e.get(&p1, "/v2.0/agents").await;
    assert_eq!((s, b), (200, json!({"agents": []})), "a member sees no agents, and is not refused (Neutron)");

    let (_, b) = e.get(&p1, "/v2.0/extensions").await;
    let aliases: Vec<&str> = b["extensions"].as_array().unwrap().iter().map(|x| x["alias"].as_str().unwrap()).collect();
    for want in ["router", "external-net", "security-group", "quotas", "provider", "rbac-policies", "standard-attr-tag"]
    {
        assert!(aliases.contains(&want), "{want}");
    }
    let (s, b) = e.get(&p1, "/v2.0/").await;
    assert_eq!(s, 200);
    assert!(b["resources"].as_array().unwrap().iter().any(|r| r["collection"] == "networks"));
    let (_, b) = e.get(&p1, "/v2.0/availability_zones").await;
    assert_eq!(b["availability_zones"][0]["name"], "nova");
    let (s, b) = e.get(&p1, "/v2.0/networks?sort_key=name&sort_dir=desc").await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn attribute_visibility_follows_policy_and_its_overrides() {
    let e = env().await;
    let m = user("p1");
    let n = e.network(&m, json!({"name": "mine"})).await;
    assert!(n.get("provider:network_type").is_none(), "{n}");
    e.subnet(&m, json!({"network_id": n["id"], "cidr": "10.3.0.0/24"})).await;
    let (s, p) = e.port(&m, json!({"network_id": n["id"]})).await;
    assert_eq!(s, 201);
    assert!(p["port"].get("binding:host_id").is_none() && p["port"]["binding:vnic_type"] == "normal", "{p}");
    let (s, _) = e.port(&m, json!({"network_id": n["id"], "binding:host_id": "h"})).await;
    assert_eq!(s, 403, "binding a port is admin-only");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, "\"get_network:provider:network_type\": \"\"\n\"create_network:shared\": \"role:member\"\n")
        .unwrap();
    let e = env_on(None, NetworkConfig { policy_file: Some(file), ..Default::default() }).await;
    let n = e.network(&m, json!({"name": "shared-by-member", "shared": true})).await;
    assert_eq!(n["provider:network_type"], "vxlan");
    assert!(n.get("provider:segmentation_id").is_none());
    assert_eq!(n["shared"], true);
}

/// Concurrent creates in one project stop exactly at its quota (the quota-lock row
/// serializes them on PostgreSQL; SQLite's single writer does anyway).
async fn concurrent_quota(e: &Env) {
    let project = format!("q-{}", uuid::Uuid::new_v4().simple());
    let a = admin();
    let (s, _) = e.put(&a, &format!("/v2.0/quotas/{project}"), json!({"quota": {"port": 10}})).await;
    assert_eq!(s, 200);
    let n = e.network(&a, json!({"name": "quota-net", "shared": true})).await;
    let nid = n["id"].as_str().unwrap().to_string();
    e.subnet(&a, json!({"network_id": nid, "cidr": "10.30.0.0/24", "ip_version": 4})).await;
    let m = user(&project);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (e, nid, m) = (e.clone(), nid.clone(), m.clone());
        handles.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..3 {
                let (s, b) = e.port(&m, json!({"network_id": nid})).await;
                match s {
                    201 => ok += 1,
                    409 => assert_eq!(b["NeutronError"]["type"], "OverQuota", "{b}"),
                    _ => panic!("{s} {b}"),
                }
            }
            ok
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 10, "exactly the quota of ports was created");
}

#[tokio::test]
async fn quota_holds_under_concurrent_creates_sqlite() {
    concurrent_quota(&env().await).await;
}

#[tokio::test]
async fn quota_holds_under_concurrent_creates_postgres() {
    let url = std::env::var("STRATUS_TEST_POSTGRES_URL")
        .expect("STRATUS_TEST_POSTGRES_URL must point at a PostgreSQL server (scripts/test-postgres.sh prints one)");
    concurrent_quota(&env_on(Some(url), NetworkConfig::default()).await).await;
}
