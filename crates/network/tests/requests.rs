//! Request semantics Neutron has and OpenStack's own tests (Tempest) and fuzzing check:
//! bodies refused with Neutron's messages, bulk creation all or none, a router's empty
//! gateway, what deleting a subnet or an external network takes with it, and the DHCP
//! agent scheduler. In-process, on SQLite; what spans new SQL runs on PostgreSQL too
//! (`STRATUS_TEST_POSTGRES_URL`).

mod common;

use common::{admin, env, env_on, err_msg, err_type, postgres_url, user, Env};
use serde_json::{json, Value};
use stratus_network::NetworkConfig;

/// A name one character longer than Neutron allows.
fn too_long() -> String {
    "n".repeat(256)
}

#[tokio::test]
async fn bodies_are_refused_as_neutron_refuses_them() {
    let e = env().await;
    let (m, a) = (user("p1"), admin());
    let net = e.network(&m, json!({"name": "n1"})).await;
    let net_id = net["id"].as_str().unwrap().to_string();
    let sub = e.subnet(&m, json!({"network_id": net_id, "cidr": "10.0.0.0/24"})).await;

    // Names and descriptions over 255 characters, on every resource, on create and update.
    let creates = [
        ("/v2.0/networks", "network", json!({})),
        ("/v2.0/subnets", "subnet", json!({"network_id": net_id, "cidr": "10.1.0.0/24"})),
        ("/v2.0/ports", "port", json!({"network_id": net_id})),
        ("/v2.0/routers", "router", json!({})),
        ("/v2.0/security-groups", "security_group", json!({})),
        ("/v2.0/subnetpools", "subnetpool", json!({"prefixes": ["10.8.0.0/16"]})),
        ("/v2.0/address-groups", "address_group", json!({})),
    ];
    for (path, key, base) in &creates {
        for attr in ["name", "description"] {
            let mut b = base.clone();
            b[attr] = json!(too_long());
            let (s, body) = e.post(&m, path, json!({ *key: b })).await;
            assert_eq!(s, 400, "{path} {attr}: {body}");
            assert_eq!(err_type(&body), "HTTPBadRequest", "{body}");
            let msg = err_msg(&body);
            assert!(msg.starts_with(&format!("Invalid input for {attr}. Reason: 'nnn")), "{msg}");
            assert!(msg.ends_with("exceeds maximum length of 255."), "{msg}");
        }
    }
    let (s, b) = e.put(&m, &format!("/v2.0/networks/{net_id}"), json!({"network": {"name": too_long()}})).await;
    assert_eq!(s, 400, "{b}");
    let sub_id = sub["id"].as_str().unwrap();
    let (s, b) = e.put(&m, &format!("/v2.0/subnets/{sub_id}"), json!({"subnet": {"description": too_long()}})).await;
    assert_eq!(s, 400, "{b}");
    // Nothing a refused request named was created.
    assert_eq!(e.ids(&m, "/v2.0/networks", "networks").await, vec![net_id.clone()]);
    assert_eq!(e.ids(&m, "/v2.0/subnets", "subnets").await, [sub_id.to_string()]);
    assert!(e.ids(&m, "/v2.0/routers", "routers").await.is_empty());

    // Wrong types and nulls where Neutron refuses them (fuzzing found these accepted).
    let (s, b) = e.post(&m, "/v2.0/security-groups", json!({"security_group": {"name": "w", "stateful": null}})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_msg(&b), "Invalid input for stateful. Reason: 'None' cannot be converted to boolean.");
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": {"name": null}})).await;
    assert_eq!((s, err_msg(&b)), (400, "Invalid input for name. Reason: 'None' is not a valid string."), "{b}");
    let (s, b) = e.post(&a, "/v2.0/address-groups", json!({"address_group": {"project_id": {}}})).await;
    assert_eq!((s, err_msg(&b)), (400, "Invalid input for project_id. Reason: '{}' is not a valid string."), "{b}");
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": {"qos_policy_id": "not-a-uuid"}})).await;
    assert_eq!((s, err_msg(&b)), (400, "Invalid input for qos_policy_id. Reason: 'not-a-uuid' is not a valid UUID."));
    let (s, b) =
        e.post(&m, "/v2.0/ports", json!({"port": {"network_id": net_id, "qos_policy_id": uuid::Uuid::new_v4()}})).await;
    assert_eq!((s, err_type(&b)), (404, "QosPolicyNotFound"), "QoS is not offered: {b}");
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": {"admin_state_up": "maybe"}})).await;
    assert_eq!(
        (s, err_msg(&b)),
        (400, "Invalid input for admin_state_up. Reason: 'maybe' cannot be converted to boolean.")
    );
    // Neutron's own conversions still apply.
    let n2 = e.network(&m, json!({"name": "n2", "admin_state_up": "False", "mtu": "1400"})).await;
    assert_eq!((n2["admin_state_up"].clone(), n2["mtu"].clone()), (json!(false), json!(1400)));

    // Unknown and read-only attributes.
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": {"name": "x", "bogus": 1}})).await;
    assert_eq!((s, err_msg(&b)), (400, "Unrecognized attribute(s) 'bogus'"));
    let (s, b) = e.put(&m, &format!("/v2.0/subnets/{sub_id}"), json!({"subnet": {"cidr": "10.9.0.0/24"}})).await;
    assert_eq!((s, err_msg(&b)), (400, "Cannot update read-only attribute cidr"));
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": {"status": "DOWN"}})).await;
    assert_eq!((s, err_msg(&b)), (400, "Attribute 'status' not allowed in POST"));
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"networks": {"name": "x"}})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"network": "x"})).await;
    assert_eq!((s, err_msg(&b)), (400, "Object 'network' contains invalid data"));

    // Security groups: the protocol as a number or a numeric string; `default` is taken.
    let (_, sg) = e.post(&m, "/v2.0/security-groups", json!({"security_group": {"name": "web"}})).await;
    let sg_id = sg["security_group"]["id"].as_str().unwrap().to_string();
    for (p, min) in [(json!(17), 53), (json!("17"), 54), (json!("udp"), 55)] {
        let rule = json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress",
            "protocol": p, "port_range_min": min, "port_range_max": min}});
        let (s, b) = e.post(&m, "/v2.0/security-group-rules", rule).await;
        assert_eq!(s, 201, "{p}: {b}");
        let want = if p == json!("udp") { "udp" } else { "17" };
        assert_eq!(b["security_group_rule"]["protocol"], want);
    }
    let rule = json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress", "protocol": 256}});
    assert_eq!(e.post(&m, "/v2.0/security-group-rules", rule).await.0, 400);
    let (s, b) =
        e.put(&m, &format!("/v2.0/security-groups/{sg_id}"), json!({"security_group": {"name": "default"}})).await;
    assert_eq!((s, err_type(&b)), (409, "SecurityGroupDefaultAlreadyExists"), "{b}");
    let (s, b) = e.post(&m, "/v2.0/security-groups", json!({"security_group": {"name": "Default"}})).await;
    assert_eq!((s, err_type(&b)), (409, "SecurityGroupDefaultAlreadyExists"), "{b}");
    let (_, b) = e.get(&m, &format!("/v2.0/security-groups/{sg_id}")).await;
    assert_eq!(b["security_group"]["name"], "web", "the refused rename changed nothing");
}

/// Bulk creation on `e`: every item or none, whether an item is refused while reading
/// the request or while writing it.
async fn bulk_is_all_or_none(e: &Env) {
    let (m, a) = (user("p1"), admin());
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"networks": [{"name": "a"}, {"network": {"name": "b"}}]})).await;
    assert_eq!(s, 201, "{b}");
    let nets = b["networks"].as_array().unwrap();
    assert_eq!(nets.iter().map(|n| n["name"].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b"]);
    let (net_a, net_b) = (nets[0]["id"].as_str().unwrap().to_string(), nets[1]["id"].as_str().unwrap().to_string());
    let (s, b) = e.post(&m, "/v2.0/networks", json!({"networks": [{"name": "c"}, {"name": too_long()}]})).await;
    assert_eq!(s, 400, "{b}");
    let vlan = json!({"provider:network_type": "vlan", "provider:physical_network": "provider", "provider:segmentation_id": 7});
    let (s, b) = e.post(&a, "/v2.0/networks", json!({"networks": [{"name": "c"}, vlan, vlan]})).await;
    assert_eq!((s, err_type(&b)), (409, "VlanIdInUse"), "the third item fails inside the transaction: {b}");
    assert_eq!(e.ids(&a, "/v2.0/networks", "networks").await, [net_a.clone(), net_b.clone()], "no c, no VLAN 7");
    let (s, b) = e.post(&a, "/v2.0/networks", json!({"network": vlan})).await;
    assert_eq!(s, 201, "VLAN 7 was released with the failed bulk: {b}");

    let subnets = json!({"subnets": [
        {"network_id": net_a, "cidr": "10.0.0.0/24"},
        {"network_id": net_b, "cidr": "10.0.1.0/24", "name": "sb"},
    ]});
    let (s, b) = e.post(&m, "/v2.0/subnets", subnets).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["subnets"].as_array().unwrap().len(), 2);
    let overlapping = json!({"subnets": [
        {"network_id": net_a, "cidr": "10.2.0.0/24"},
        {"network_id": net_a, "cidr": "10.2.0.0/25"},
    ]});
    let (s, b) = e.post(&m, "/v2.0/subnets", overlapping).await;
    assert_eq!(s, 400, "the second overlaps the first, in the same request: {b}");
    assert_eq!(e.ids(&m, "/v2.0/subnets", "subnets").await.len(), 2, "10.2.0.0/24 was not kept");

    let (s, b) = e
        .post(
            &m,
            "/v2.0/ports",
            json!({"ports": [{"network_id": net_a}, {"network_id": net_a}, {"network_id": net_b}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let ports = b["ports"].as_array().unwrap();
    let ips: std::collections::HashSet<&str> =
        ports.iter().map(|p| p["fixed_ips"][0]["ip_address"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 3, "{b}");
    let fixed = json!([{"ip_address": "10.0.0.50"}]);
    let mac = "fa:16:3e:00:00:01";
    let (s, b) = e
        .post(
            &a,
            "/v2.0/ports",
            json!({"ports": [
                {"network_id": net_a, "fixed_ips": fixed, "mac_address": mac},
                {"network_id": net_a, "fixed_ips": fixed},
            ]}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "IpAddressAlreadyAllocated"), "{b}");
    assert_eq!(e.ids(&a, "/v2.0/ports", "ports").await.len(), 3, "the first port of the failed bulk is gone");
    let (s, b) = e.port(&a, json!({"network_id": net_a, "fixed_ips": fixed, "mac_address": mac})).await;
    assert_eq!(s, 201, "its address and MAC were released: {b}");
    let (s, b) = e.post(&m, "/v2.0/ports", json!({"ports": []})).await;
    assert_eq!((s, err_msg(&b)), (400, "Resources required"));
}

#[tokio::test]
async fn bulk_creation_is_all_or_none_sqlite() {
    bulk_is_all_or_none(&env().await).await;
}

#[tokio::test]
async fn bulk_creation_is_all_or_none_postgres() {
    bulk_is_all_or_none(&env_on(Some(postgres_url()), NetworkConfig::default()).await).await;
}

/// An external network with a subnet, made by the admin.
async fn external(e: &Env, cidr: &str) -> (String, String) {
    let a = admin();
    let n = e.network(&a, json!({"name": "public", "router:external": true})).await;
    let id = n["id"].as_str().unwrap().to_string();
    let s = e.subnet(&a, json!({"network_id": id, "cidr": cidr, "enable_dhcp": false})).await;
    (id, s["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn an_empty_gateway_is_no_gateway() {
    let e = env().await;
    let m = user("p1");
    let (ext, ext_sub) = external(&e, "172.24.4.0/24").await;
    let (s, b) = e.post(&m, "/v2.0/routers", json!({"router": {"name": "r", "external_gateway_info": {}}})).await;
    assert_eq!(s, 201, "{b}");
    assert!(b["router"]["external_gateway_info"].is_null(), "{b}");
    let r = b["router"]["id"].as_str().unwrap().to_string();
    let (s, b) =
        e.post(&m, "/v2.0/routers", json!({"router": {"external_gateway_info": {"enable_snat": false}}})).await;
    assert_eq!(s, 400, "a gateway without network_id: {b}");
    let (s, b) =
        e.post(&m, "/v2.0/routers", json!({"router": {"external_gateway_info": {"network_id": ext, "typo": 1}}})).await;
    assert_eq!(s, 400, "{b}");

    let path = format!("/v2.0/routers/{r}");
    let (s, b) = e.put(&m, &path, json!({"router": {"external_gateway_info": {"network_id": ext}}})).await;
    assert_eq!(s, 200, "{b}");
    let gw = &b["router"]["external_gateway_info"];
    assert_eq!(
        (gw["network_id"].as_str(), gw["external_fixed_ips"][0]["subnet_id"].as_str()),
        (Some(&*ext), Some(&*ext_sub))
    );
    let gw_ports = format!("/v2.0/ports?device_id={r}&device_owner=network:router_gateway");
    assert_eq!(e.ids(&admin(), &gw_ports, "ports").await.len(), 1);
    let (s, b) = e.put(&m, &path, json!({"router": {"external_gateway_info": {}}})).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["router"]["external_gateway_info"].is_null(), "{b}");
    assert!(e.ids(&admin(), &gw_ports, "ports").await.is_empty(), "the gateway port went with the gateway");
}

#[tokio::test]
async fn deleting_a_subnet_or_an_external_network_takes_what_neutron_takes() {
    let e = env().await;
    let (m, a) = (user("p1"), admin());
    // A SLAAC subnet's addresses go with it; the ports stay on their other addresses.
    let net = e.network(&m, json!({"name": "v6"})).await;
    let net_id = net["id"].as_str().unwrap();
    let v4 = e.subnet(&m, json!({"network_id": net_id, "cidr": "10.0.0.0/24"})).await;
    for mode in ["slaac", "dhcpv6-stateless"] {
        let v6 = e
            .subnet(
                &m,
                json!({"network_id": net_id, "cidr": "2001:db8::/64", "ip_version": 6,
                "ipv6_ra_mode": mode, "ipv6_address_mode": mode}),
            )
            .await;
        let (s, p) = e.port(&m, json!({"network_id": net_id})).await;
        assert_eq!(s, 201, "{p}");
        let pid = p["port"]["id"].as_str().unwrap();
        assert_eq!(p["port"]["fixed_ips"].as_array().unwrap().len(), 2, "{p}");
        let (s, b) = e.delete(&m, &format!("/v2.0/subnets/{}", v6["id"].as_str().unwrap())).await;
        assert_eq!(s, 204, "{mode}: {b}");
        let (_, p) = e.get(&m, &format!("/v2.0/ports/{pid}")).await;
        assert_eq!(
            p["port"]["fixed_ips"],
            json!([{"subnet_id": v4["id"], "ip_address": p["port"]["fixed_ips"][0]["ip_address"]}])
        );
        let (s, b) = e.delete(&m, &format!("/v2.0/networks/{net_id}")).await;
        assert_eq!((s, err_type(&b)), (409, "NetworkInUse"), "the port still uses the network");
        assert_eq!(e.delete(&m, &format!("/v2.0/ports/{pid}")).await.0, 204);
    }
    // A stateful subnet's addresses were chosen, not derived: the subnet stays in use.
    let v6 = e
        .subnet(
            &m,
            json!({"network_id": net_id, "cidr": "2001:db8:1::/64", "ip_version": 6,
            "ipv6_ra_mode": "dhcpv6-stateful", "ipv6_address_mode": "dhcpv6-stateful"}),
        )
        .await;
    let (_, p) = e.port(&m, json!({"network_id": net_id})).await;
    let (s, b) = e.delete(&m, &format!("/v2.0/subnets/{}", v6["id"].as_str().unwrap())).await;
    assert_eq!((s, err_type(&b)), (409, "SubnetInUse"), "{b}");
    e.delete(&m, &format!("/v2.0/ports/{}", p["port"]["id"].as_str().unwrap())).await;

    // An external network goes with its unassociated floating IPs and their ports.
    let (ext, _) = external(&e, "172.24.4.0/24").await;
    let (s, f) = e.post(&m, "/v2.0/floatingips", json!({"floatingip": {"floating_network_id": ext}})).await;
    assert_eq!(s, 201, "{f}");
    let (s, b) = e.delete(&a, &format!("/v2.0/networks/{ext}")).await;
    assert_eq!(s, 204, "{b}");
    assert!(e.ids(&a, "/v2.0/floatingips", "floatingips").await.is_empty());
    assert!(e.ids(&a, &format!("/v2.0/ports?network_id={ext}"), "ports").await.is_empty());

    // One in use (associated through a router) keeps the network.
    let (ext, _) = external(&e, "172.24.5.0/24").await;
    let (_, r) = e
        .post(&m, "/v2.0/routers", json!({"router": {"name": "r", "external_gateway_info": {"network_id": ext}}}))
        .await;
    let r = r["router"]["id"].as_str().unwrap().to_string();
    let (s, b) = e.put(&m, &format!("/v2.0/routers/{r}/add_router_interface"), json!({"subnet_id": v4["id"]})).await;
    assert_eq!(s, 200, "{b}");
    let (_, p) = e.port(&m, json!({"network_id": net_id})).await;
    let fip = json!({"floatingip": {"floating_network_id": ext, "port_id": p["port"]["id"]}});
    let (s, f) = e.post(&m, "/v2.0/floatingips", fip).await;
    assert_eq!(s, 201, "{f}");
    let (s, b) = e.delete(&a, &format!("/v2.0/networks/{ext}")).await;
    assert_eq!((s, err_type(&b)), (409, "NetworkInUse"), "{b}");
    assert_eq!(e.ids(&a, "/v2.0/floatingips", "floatingips").await.len(), 1, "nothing was deleted");
}

/// The DHCP agent scheduler on `e`: an admin moves networks on and off a DHCP agent, and
/// the scheduler (run by the agent's sync) follows.
async fn dhcp_scheduler(e: &Env) {
    let (m, a) = (user("p1"), admin());
    let report =
        json!({"agent_type": "DHCP agent", "binary": "neutron-dhcp-agent", "host": "h1", "topic": "dhcp_agent"});
    assert_eq!(e.post(&a, "/internal/agents", report).await.0, 200);
    let (s, b) = e.get(&a, "/v2.0/agents?agent_type=DHCP%20Agent").await;
    assert_eq!(s, 200);
    let agent = b["agents"][0]["id"].as_str().expect("the filter ignores case, as Neutron on MySQL").to_string();
    let nets_of_agent = format!("/v2.0/agents/{agent}/dhcp-networks");

    let n = e.network(&m, json!({"name": "served"})).await;
    let n = n["id"].as_str().unwrap().to_string();
    e.subnet(&m, json!({"network_id": n, "cidr": "10.0.0.0/24"})).await;
    let dhcp_ports = format!("/v2.0/ports?network_id={n}&device_owner=network:dhcp");
    assert!(e.ids(&a, &dhcp_ports, "ports").await.is_empty(), "nothing before an agent asks");
    e.agent_sync("h1").await;
    let (_, b) = e.get(&a, &dhcp_ports).await;
    assert_eq!(b["ports"][0]["binding:host_id"], "h1", "{b}");
    assert_eq!(e.ids(&a, &nets_of_agent, "networks").await, vec![n.clone()]);
    let (_, b) = e.get(&a, &format!("/v2.0/networks/{n}/dhcp-agents")).await;
    assert_eq!(b["agents"][0]["id"], json!(agent), "{b}");

    // Taken off the agent: its DHCP port goes, and the next sync does not bring it back.
    let (s, b) = e.delete(&a, &format!("{nets_of_agent}/{n}")).await;
    assert_eq!(s, 204, "{b}");
    assert!(e.ids(&a, &nets_of_agent, "networks").await.is_empty());
    e.agent_sync("h1").await;
    assert!(e.ids(&a, &dhcp_ports, "ports").await.is_empty(), "the removal sticks");
    let (s, b) = e.delete(&a, &format!("{nets_of_agent}/{n}")).await;
    assert_eq!((s, err_type(&b)), (409, "NetworkNotHostedByDhcpAgent"));

    // Added back: hosted at once, served from the next sync.
    let (s, b) = e.post(&a, &nets_of_agent, json!({"network_id": n})).await;
    assert_eq!(s, 201, "{b}");
    e.agent_sync("h1").await;
    assert_eq!(e.ids(&a, &dhcp_ports, "ports").await.len(), 1);
    let (s, b) = e.post(&a, &nets_of_agent, json!({"network_id": n})).await;
    assert_eq!((s, err_type(&b)), (409, "NetworkHostedByDHCPAgent"));
    // A network without subnets can be added too (its port comes with its first subnet).
    let bare = e.network(&m, json!({"name": "bare"})).await;
    let bare = bare["id"].as_str().unwrap().to_string();
    assert_eq!(e.post(&a, &nets_of_agent, json!({"network_id": bare})).await.0, 201);
    let mut hosted = e.ids(&a, &nets_of_agent, "networks").await;
    hosted.sort();
    let mut want = vec![n.clone(), bare.clone()];
    want.sort();
    assert_eq!(hosted, want);

    assert_eq!(e.post(&a, &nets_of_agent, json!({"network_id": "nope"})).await.0, 400);
    assert_eq!(e.get(&m, &nets_of_agent).await.0, 403, "admin only, as in Neutron");
    assert_eq!(e.get(&a, "/v2.0/agents/nope/dhcp-networks").await.0, 404);
    // Deleting the network forgets its binding.
    assert_eq!(e.delete(&m, &format!("/v2.0/networks/{bare}")).await.0, 204);
    assert_eq!(e.ids(&a, &nets_of_agent, "networks").await, [n]);
}

#[tokio::test]
async fn dhcp_agent_scheduler_sqlite() {
    dhcp_scheduler(&env().await).await;
}

#[tokio::test]
async fn dhcp_agent_scheduler_postgres() {
    dhcp_scheduler(&env_on(Some(postgres_url()), NetworkConfig::default()).await).await;
}

/// Subnets say whether their network is external, and follow it when that changes.
#[tokio::test]
async fn subnets_know_their_network_is_external() {
    let e = env().await;
    let (m, a) = (user("p1"), admin());
    let (ext, ext_sub) = external(&e, "172.24.4.0/24").await;
    let (_, b) = e.get(&m, &format!("/v2.0/subnets/{ext_sub}")).await;
    assert_eq!(b["subnet"]["router:external"], true, "a member sees the external subnet: {b}");
    let (_, b) = e.get(&m, "/v2.0/subnets?router:external=true").await;
    assert_eq!(b["subnets"].as_array().unwrap().len(), 1, "{b}");
    let (s, _) = e.put(&a, &format!("/v2.0/networks/{ext}"), json!({"network": {"router:external": false}})).await;
    assert_eq!(s, 200);
    assert_eq!(e.get(&a, &format!("/v2.0/subnets/{ext_sub}")).await.1["subnet"]["router:external"], false);
    assert_eq!(e.get(&m, &format!("/v2.0/subnets/{ext_sub}")).await.0, 404, "no longer visible to others");
    let (_, b) = e.get(&m, "/v2.0/extensions/subnet-external-network").await;
    assert_eq!(b["extension"]["alias"], "subnet-external-network");
    let _: Value = b;
}
