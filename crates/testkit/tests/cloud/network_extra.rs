//! Network leftovers through the real `openstack` CLI: address groups (and security
//! group rules that use them), extra DHCP options of ports.

use serde_json::Value;
use stratus_testkit::{Creds, TestCloud};

async fn os(cloud: &TestCloud, creds: &Creds, args: &[&str]) -> Value {
    match cloud.openstack_as(creds, args).await {
        Ok(v) => v,
        Err(e) => panic!("openstack {} (as {}): {e}", args.join(" "), creds.username),
    }
}

fn addrs(v: &Value) -> Vec<String> {
    let mut a: Vec<String> = match &v["addresses"] {
        Value::Array(l) => l.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        Value::String(s) => s.split(',').map(|x| x.trim().trim_matches(['[', ']', '\'']).to_string()).collect(),
        other => panic!("addresses: {other}"),
    };
    a.sort();
    a
}

#[tokio::test]
async fn address_groups_and_extra_dhcp_options() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    os(&cloud, &admin, &["project", "create", "proj-x"]).await;
    os(&cloud, &admin, &["user", "create", "--project", "proj-x", "--password", "secret-pw", "xavier"]).await;
    os(&cloud, &admin, &["role", "add", "--project", "proj-x", "--user", "xavier", "member"]).await;
    let x = Creds::new("xavier", "secret-pw", "proj-x");

    let g =
        os(&cloud, &admin, &["address", "group", "create", "--address", "10.0.0.1", "--address", "10.1.2.3/16", "ag1"])
            .await;
    assert_eq!(addrs(&g), ["10.0.0.1/32", "10.1.0.0/16"], "{g}");
    os(&cloud, &admin, &["address", "group", "set", "--address", "192.0.2.0/24", "ag1"]).await;
    os(&cloud, &admin, &["address", "group", "unset", "--address", "10.0.0.1", "ag1"]).await;
    let g = os(&cloud, &admin, &["address", "group", "show", "ag1"]).await;
    assert_eq!(addrs(&g), ["10.1.0.0/16", "192.0.2.0/24"], "{g}");
    let e = cloud.openstack_as(&admin, &["address", "group", "unset", "--address", "10.9.9.9", "ag1"]).await;
    assert!(e.is_err(), "removing an absent address fails");
    // Project isolation: another project neither sees nor uses the group.
    let theirs = os(&cloud, &x, &["address", "group", "list"]).await;
    assert!(theirs.as_array().unwrap().is_empty(), "{theirs}");
    let ag_id = g["id"].as_str().unwrap().to_string();
    os(&cloud, &x, &["security", "group", "create", "xs"]).await;
    let e = cloud
        .openstack_as(
            &x,
            &[
                "security",
                "group",
                "rule",
                "create",
                "--remote-address-group",
                &ag_id,
                "--protocol",
                "tcp",
                "--dst-port",
                "22",
                "xs",
            ],
        )
        .await;
    assert!(e.is_err(), "xavier used admin's address group");

    os(&cloud, &admin, &["security", "group", "create", "sg"]).await;
    let r = os(
        &cloud,
        &admin,
        &[
            "security",
            "group",
            "rule",
            "create",
            "--remote-address-group",
            "ag1",
            "--protocol",
            "tcp",
            "--dst-port",
            "22",
            "sg",
        ],
    )
    .await;
    assert_eq!(r["remote_address_group_id"], ag_id.as_str(), "{r}");
    let e = cloud.openstack_as(&admin, &["address", "group", "delete", "ag1"]).await.unwrap_err();
    assert!(e.stderr.contains("in use"), "{}", e.stderr);
    os(&cloud, &admin, &["security", "group", "rule", "delete", r["id"].as_str().unwrap()]).await;
    os(&cloud, &admin, &["address", "group", "delete", "ag1"]).await;

    // Extra DHCP options: set at create, merged on set.
    os(&cloud, &x, &["network", "create", "n"]).await;
    os(&cloud, &x, &["subnet", "create", "--network", "n", "--subnet-range", "10.5.0.0/24", "s"]).await;
    let p =
        os(&cloud, &x, &["port", "create", "--network", "n", "--extra-dhcp-option", "name=mtu,value=1400", "p"]).await;
    assert!(p["extra_dhcp_opts"].to_string().contains("1400"), "{p}");
    os(&cloud, &x, &["port", "set", "--extra-dhcp-option", "name=ntp-server,value=10.5.0.9", "p"]).await;
    let p = os(&cloud, &x, &["port", "show", "p"]).await;
    let opts = p["extra_dhcp_opts"].to_string();
    assert!(opts.contains("1400") && opts.contains("10.5.0.9"), "{p}");
    let e = cloud
        .openstack_as(
            &x,
            &["port", "create", "--network", "n", "--extra-dhcp-option", "name=mtu,value=1,ip-version=5", "bad"],
        )
        .await;
    assert!(e.is_err(), "ip_version 5 refused");
    cloud.shutdown().await;
}
