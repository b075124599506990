//! Where Stratus answered differently from Nova and Tempest caught it: each test pins
//! Nova's behaviour for one cause (request parameter types, fields per microversion,
//! removed APIs, version discovery).

mod harness;

use axum::http::{Method, StatusCode};
use harness::Cloud;
use serde_json::json;
use stratus_compute_agent::virt::fake::FakeDriverConfig;

/// Nova's boolean parameter type takes the strings "True"/"False" (and yes/no, on/off, 1/0).
#[tokio::test]
async fn flavor_is_public_takes_nova_boolean_strings() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    for (i, (given, want)) in [("True", true), ("False", false), ("yes", true), ("0", false)].into_iter().enumerate() {
        let body = json!({"flavor": {"name": format!("f{i}"), "ram": 64, "vcpus": 1, "disk": 0,
            "os-flavor-access:is_public": given}});
        let (s, f) = c.post("/flavors", "admin", body).await;
        assert_eq!(s, StatusCode::OK, "{given}: {f}");
        assert_eq!(f["flavor"]["os-flavor-access:is_public"], want, "{given}");
    }
    let body =
        json!({"flavor": {"name": "bad", "ram": 64, "vcpus": 1, "disk": 0, "os-flavor-access:is_public": "maybe"}});
    let (s, e) = c.post("/flavors", "admin", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["badRequest"]["message"].as_str().unwrap().contains("true or false"), "{e}");
}

/// Below 2.36 quota sets carry the nova-network quotas (and take them); from 2.36 they
/// are gone and an update naming them is refused.
#[tokio::test]
async fn quota_sets_show_network_quotas_below_2_36() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    let net = ["floating_ips", "fixed_ips", "security_groups", "security_group_rules"];
    for path in ["/os-quota-sets/pX", "/os-quota-sets/pX/defaults", "/os-quota-sets/pX/detail"] {
        let (s, q) = c.call_v(Method::GET, path, "admin", None, "2.35").await;
        assert_eq!(s, StatusCode::OK, "{q}");
        for k in net {
            assert!(q["quota_set"].get(k).is_some(), "{path} at 2.35 lacks {k}: {q}");
        }
        let (_, q) = c.call_v(Method::GET, path, "admin", None, "2.36").await;
        for k in net {
            assert!(q["quota_set"].get(k).is_none(), "{path} at 2.36 has {k}: {q}");
        }
    }
    let (_, q) = c.call_v(Method::GET, "/os-quota-sets/pX", "admin", None, "2.1").await;
    assert_eq!(q["quota_set"]["floating_ips"], 10);
    assert_eq!(q["quota_set"]["security_group_rules"], 20);
    let (s, q) = c
        .call_v(Method::PUT, "/os-quota-sets/pX", "admin", Some(json!({"quota_set": {"floating_ips": 7}})), "2.1")
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["quota_set"]["floating_ips"], 7);
    let (s, _) = c
        .call_v(Method::PUT, "/os-quota-sets/pX", "admin", Some(json!({"quota_set": {"floating_ips": 7}})), "2.36")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Quota classes: network quotas until 2.50, server group quotas from 2.50.
    let (_, q) = c.call_v(Method::GET, "/os-quota-class-sets/default", "admin", None, "2.1").await;
    assert!(q["quota_class_set"].get("floating_ips").is_some(), "{q}");
    assert!(q["quota_class_set"].get("server_groups").is_none(), "{q}");
    let (_, q) = c.call_v(Method::GET, "/os-quota-class-sets/default", "admin", None, "2.50").await;
    assert!(q["quota_class_set"].get("floating_ips").is_none(), "{q}");
    assert!(q["quota_class_set"].get("server_groups").is_some(), "{q}");
}

/// Services have integer ids below 2.53 (and are deleted by them), uuids from 2.53.
#[tokio::test]
async fn services_have_integer_ids_below_2_53() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let (s, l) = c.call_v(Method::GET, "/os-services", "admin", None, "2.52").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let list = l["services"].as_array().unwrap();
    assert!(list.iter().all(|s| s["id"].is_i64()), "{l}");
    let mut ids: Vec<i64> = list.iter().map(|s| s["id"].as_i64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), list.len(), "ids are unique: {l}");
    let compute = list.iter().find(|s| s["binary"] == "nova-compute").unwrap()["id"].as_i64().unwrap();
    let (_, l) = c.call_v(Method::GET, "/os-services", "admin", None, "2.53").await;
    assert!(l["services"].as_array().unwrap().iter().all(|s| uuid::Uuid::parse_str(s["id"].as_str().unwrap()).is_ok()));
    let (_, h) = c.call_v(Method::GET, "/os-hypervisors/detail", "admin", None, "2.1").await;
    assert_eq!(h["hypervisors"][0]["service"]["id"], compute, "{h}");
    let (s, e) = c.call_v(Method::DELETE, "/os-services/abc", "admin", None, "2.52").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = c.call_v(Method::DELETE, &format!("/os-services/{compute}"), "admin", None, "2.52").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, l) = c.call_v(Method::GET, "/os-services", "admin", None, "2.52").await;
    assert!(l["services"].as_array().unwrap().iter().all(|s| s["id"] != compute), "{l}");
}

/// Removed Nova APIs answer 410 Gone in Nova's fault format, whatever the method.
#[tokio::test]
async fn removed_apis_answer_gone() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    for (m, path) in [
        (Method::GET, "/os-cells"),
        (Method::GET, "/os-fping?all_tenants=1"),
        (Method::POST, "/os-cloudpipe"),
        (Method::GET, "/os-agents"),
        (Method::GET, "/os-fixed-ips/10.0.0.1"),
        (Method::GET, "/os-floating-ips-bulk"),
        (Method::DELETE, "/os-floating-ip-dns/example.org"),
        (Method::GET, "/os-security-group-default-rules"),
        (Method::GET, "/os-certificates/root"),
        (Method::POST, "/os-networks"),
        (Method::GET, "/servers/x/os-virtual-interfaces"),
    ] {
        let (s, e) = c.call(m.clone(), path, "admin", None).await;
        assert_eq!(s, StatusCode::GONE, "{m} {path}: {e}");
        let msg = e["computeFault"]["message"].as_str().unwrap_or_else(|| panic!("{m} {path}: {e}"));
        assert!(msg.contains("removed"), "{msg}");
    }
}

/// `GET /compute/` lists v2.0 then v2.1, and each self link answers its own document.
#[tokio::test]
async fn version_list_has_v2_0_then_v2_1() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    // (the binary trims the trailing slash of `/compute/` before routing)
    let (s, v) = c.raw(Method::GET, "/compute", &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["versions"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["v2.0", "v2.1"]);
    for ver in v["versions"].as_array().unwrap() {
        let href = ver["links"][0]["href"].as_str().unwrap();
        let path = href.strip_prefix("http://cloud.test").unwrap().trim_end_matches('/');
        let (s, d) = c.raw(Method::GET, path, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}: {d}");
        assert_eq!(d["version"]["id"], ver["id"]);
        assert_eq!(d["version"]["links"][0]["href"], href);
    }
}

/// `os-security-groups` and `os-security-group-rules` proxy the real network service at
/// 2.1–2.35, with Nova's checks, shapes and status codes; from 2.36 they are gone (404).
#[tokio::test]
async fn security_group_proxies_reach_the_network_service() {
    let c = Cloud::start_with_network(0, FakeDriverConfig::default()).await;
    let v = "2.35";
    let call = |m: Method, path: &str, token: &str, body: Option<serde_json::Value>| {
        let (c, path, token) = (&c, path.to_string(), token.to_string());
        async move { c.call_v(m, &path, &token, body, v).await }
    };
    let (s, g) = call(
        Method::POST,
        "/os-security-groups",
        "alice",
        Some(json!({"security_group": {"name": "web", "description": "web servers"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let web = g["security_group"]["id"].as_str().unwrap().to_string();
    assert_eq!(g["security_group"]["tenant_id"], "pA");
    assert_eq!(g["security_group"]["rules"], json!([]), "egress rules are not shown: {g}");
    for bad in [json!({"name": "x"}), json!({"name": "", "description": "d"}), json!({"name": 5, "description": "d"})] {
        let (s, e) = call(Method::POST, "/os-security-groups", "alice", Some(json!({"security_group": bad}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
    let rule = |body: serde_json::Value| {
        call(Method::POST, "/os-security-group-rules", "alice", Some(json!({"security_group_rule": body})))
    };
    let (s, r) = rule(json!({"parent_group_id": web, "ip_protocol": "tcp", "from_port": 22, "to_port": 22})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let ssh = r["security_group_rule"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["security_group_rule"]["ip_range"], json!({"cidr": "0.0.0.0/0"}));
    assert_eq!(r["security_group_rule"]["parent_group_id"], web.as_str());
    assert_eq!(r["security_group_rule"]["group"], json!({}));
    let (s, e) = rule(json!({"parent_group_id": web, "ip_protocol": "tcp", "from_port": 22, "to_port": 22})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a duplicate rule: {e}");
    let (s, _) = rule(json!({"parent_group_id": web, "ip_protocol": "tcp", "from_port": 22, "to_port": 21})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) =
        rule(json!({"parent_group_id": "not-an-id", "ip_protocol": "tcp", "from_port": 22, "to_port": 22})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let missing = uuid::Uuid::new_v4().to_string();
    let (s, e) = rule(json!({"parent_group_id": missing, "ip_protocol": "tcp", "from_port": 22, "to_port": 22})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, r) = rule(json!({"parent_group_id": web, "ip_protocol": "icmp", "from_port": -1, "to_port": -1})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["security_group_rule"]["from_port"].as_i64(), r["security_group_rule"]["to_port"].as_i64()),
        (Some(-1), Some(-1))
    );

    // A rule naming a peer group shows the peer, and goes when the peer is deleted.
    let (_, p) = call(
        Method::POST,
        "/os-security-groups",
        "alice",
        Some(json!({"security_group": {"name": "peer", "description": "p"}})),
    )
    .await;
    let peer = p["security_group"]["id"].as_str().unwrap().to_string();
    let (s, r) =
        rule(json!({"parent_group_id": web, "ip_protocol": "tcp", "from_port": 80, "to_port": 80, "group_id": peer}))
            .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["security_group_rule"]["group"], json!({"name": "peer", "tenant_id": "pA"}));
    assert_eq!(r["security_group_rule"]["ip_range"], json!({}));
    let (_, g) = call(Method::GET, &format!("/os-security-groups/{web}"), "alice", None).await;
    assert_eq!(g["security_group"]["rules"].as_array().unwrap().len(), 3, "{g}");
    assert_eq!(
        call(Method::DELETE, &format!("/os-security-groups/{peer}"), "alice", None).await.0,
        StatusCode::ACCEPTED
    );
    let (_, g) = call(Method::GET, &format!("/os-security-groups/{web}"), "alice", None).await;
    let rules = g["security_group"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "the rule naming the deleted peer went with it: {g}");

    // Listing: the caller's project (with its default group); all projects for an admin who asks.
    let (s, l) = call(Method::GET, "/os-security-groups", "alice", None).await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let names: Vec<&str> =
        l["security_groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"web") && names.contains(&"default"), "{names:?}");
    let (_, l) = call(Method::GET, "/os-security-groups", "bob", None).await;
    assert!(l["security_groups"].as_array().unwrap().iter().all(|g| g["name"] != "web"), "{l}");
    let (_, l) = call(Method::GET, "/os-security-groups?all_tenants=true", "admin", None).await;
    assert!(l["security_groups"].as_array().unwrap().iter().any(|g| g["id"] == web.as_str()), "{l}");
    assert_eq!(call(Method::GET, &format!("/os-security-groups/{web}"), "bob", None).await.0, StatusCode::NOT_FOUND);

    let (s, u) = call(
        Method::PUT,
        &format!("/os-security-groups/{web}"),
        "alice",
        Some(json!({"security_group": {"name": "www", "description": "renamed"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["security_group"]["name"], "www");
    let (_, l) = call(Method::GET, "/os-security-groups", "alice", None).await;
    let groups = l["security_groups"].as_array().unwrap();
    let default_id = groups.iter().find(|g| g["name"] == "default").unwrap()["id"].as_str().unwrap().to_string();
    let (s, e) = call(Method::DELETE, &format!("/os-security-groups/{default_id}"), "alice", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the default group stays: {e}");
    assert_eq!(
        call(Method::DELETE, &format!("/os-security-group-rules/{ssh}"), "alice", None).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(Method::DELETE, &format!("/os-security-group-rules/{ssh}"), "alice", None).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = c.call_v(Method::GET, "/os-security-groups", "alice", None, "2.36").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a proxy API is gone at 2.36");
}

/// `PUT /servers/{id}` and rebuild answer without the extension fields below 2.75 (key
/// name from 2.54 and user data from 2.57 on rebuild); the detail list has no
/// `server_groups`.
#[tokio::test]
async fn update_and_rebuild_bodies_follow_the_microversion() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let hidden = [
        "OS-EXT-STS:vm_state",
        "OS-EXT-AZ:availability_zone",
        "config_drive",
        "key_name",
        "security_groups",
        "OS-SRV-USG:launched_at",
        "os-extended-volumes:volumes_attached",
        "OS-EXT-SRV-ATTR:host",
    ];
    let put = |v: &'static str, name: &'static str| {
        let (c, id) = (&c, id.clone());
        async move {
            c.call_v(Method::PUT, &format!("/servers/{id}"), "admin", Some(json!({"server": {"name": name}})), v).await
        }
    };
    let (s, b) = put("2.1", "vm2").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["server"]["name"], "vm2");
    for k in hidden {
        assert!(b["server"].get(k).is_none(), "PUT at 2.1 shows {k}: {b}");
    }
    let (_, b) = put("2.75", "vm3").await;
    for k in hidden {
        assert!(b["server"].get(k).is_some(), "PUT at 2.75 lacks {k}: {b}");
    }
    let rebuild = json!({"rebuild": {"imageRef": harness::IMAGE}});
    let (s, b) = c.call_v(Method::POST, &format!("/servers/{id}/action"), "admin", Some(rebuild.clone()), "2.1").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    for k in hidden {
        assert!(b["server"].get(k).is_none(), "rebuild at 2.1 shows {k}: {b}");
    }
    assert!(b["server"].get("user_data").is_none());
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (_, b) = c.call_v(Method::POST, &format!("/servers/{id}/action"), "admin", Some(rebuild), "2.57").await;
    assert!(b["server"].get("user_data").is_some() && b["server"].get("key_name").is_some(), "{b}");
    assert!(b["server"].get("OS-EXT-STS:vm_state").is_none(), "{b}");
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (_, l) = c.call_v(Method::GET, "/servers/detail", "alice", None, "2.71").await;
    assert!(l["servers"][0].get("server_groups").is_none(), "{l}");
    let (_, one) = c.call_v(Method::GET, &format!("/servers/{id}"), "alice", None, "2.71").await;
    assert!(one["server"]["server_groups"].is_array(), "{one}");
}

/// `os-hosts` (up to 2.42): hosts by service and zone, a host's resources, enabling and
/// disabling its compute service; maintenance and power actions are 501 once the host is
/// found.
#[tokio::test]
async fn os_hosts_lists_shows_and_switches_hosts() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let get = |path: &str, token: &str| {
        let (c, path, token) = (&c, path.to_string(), token.to_string());
        async move { c.call_v(Method::GET, &path, &token, None, "2.42").await }
    };
    let (s, l) = get("/os-hosts", "admin").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let hosts = l["hosts"].as_array().unwrap();
    assert!(hosts.contains(&json!({"host_name": "node1", "service": "compute", "zone": "nova"})), "{l}");
    assert!(hosts.iter().any(|h| h["service"] == "conductor" && h["zone"] == "internal"), "{l}");
    assert_eq!(get("/os-hosts?zone=nova", "admin").await.1["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(get("/os-hosts?zone=", "admin").await.1["hosts"].as_array().unwrap().len(), hosts.len());
    assert!(get("/os-hosts?zone=xxx", "admin").await.1["hosts"].as_array().unwrap().is_empty());
    assert_eq!(get("/os-hosts", "alice").await.0, StatusCode::FORBIDDEN);

    let (s, h) = get("/os-hosts/node1", "admin").await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let res: Vec<&serde_json::Value> = h["host"].as_array().unwrap().iter().map(|r| &r["resource"]).collect();
    assert_eq!(res[0]["project"], "(total)");
    assert_eq!(res[0]["host"], "node1");
    assert_eq!(res[0]["cpu"], 8);
    let pa = res.iter().find(|r| r["project"] == "pA").unwrap_or_else(|| panic!("no pA usage: {h}"));
    assert_eq!(pa["memory_mb"], 128, "m1.nano's RAM: {h}");
    assert_eq!(get("/os-hosts/nope", "admin").await.0, StatusCode::NOT_FOUND);

    let put = |host: &str, body: serde_json::Value| {
        let (c, path) = (&c, format!("/os-hosts/{host}"));
        async move { c.call_v(Method::PUT, &path, "admin", Some(body), "2.42").await }
    };
    let (s, u) = put("node1", json!({"status": "disable"})).await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u, json!({"host": "node1", "status": "disabled"}));
    let (_, sv) = c.call_v(Method::GET, "/os-services?binary=nova-compute", "admin", None, "2.42").await;
    assert_eq!(sv["services"][0]["status"], "disabled", "{sv}");
    assert_eq!(put("node1", json!({"status": "Enable"})).await.1["status"], "enabled");
    assert_eq!(put("node1", json!({"status": "invalid"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(put("node1", json!({})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(put("nope", json!({"status": "enable", "maintenance_mode": "enable"})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(put("node1", json!({"maintenance_mode": "enable"})).await.0, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(get("/os-hosts/node1/reboot", "admin").await.0, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(get("/os-hosts/nope/startup", "admin").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get("/os-hosts/node1/shutdown", "alice").await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.call_v(Method::GET, "/os-hosts", "admin", None, "2.43").await.0, StatusCode::NOT_FOUND);
}

/// `GET /servers/{id}/ips` and `/ips/{network}`: plain addresses; an unknown network is 404.
#[tokio::test]
async fn server_ips_answer_by_network() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (s, a) = c.get(&format!("/servers/{id}/ips"), "alice").await;
    assert_eq!((s, a), (StatusCode::OK, json!({"addresses": {}})));
    let (s, e) = c.get(&format!("/servers/{id}/ips/private"), "alice").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(c.get(&format!("/servers/{id}/ips"), "bob").await.0, StatusCode::NOT_FOUND);
}

/// The `images` proxy (2.1–2.35) and image metadata (to 2.38) over the real image
/// service: Nova's image shape, its list filters and paging, metadata through JSON patches.
#[tokio::test]
async fn images_proxy_reaches_the_image_service() {
    let c = Cloud::start_with_image(0, FakeDriverConfig::default()).await;
    let json_ct = [("content-type", "application/json")];
    let glance = |body: serde_json::Value| {
        let c = &c;
        async move {
            let (s, b) = c.request(Method::POST, "/image/v2/images", "alice", Some(body), &json_ct).await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            b["id"].as_str().unwrap().to_string()
        }
    };
    let plain = glance(
        json!({"name": "plain", "disk_format": "qcow2", "container_format": "bare", "min_ram": 512, "purpose": "web"}),
    )
    .await;
    let snap = glance(json!({"name": "snap", "disk_format": "qcow2", "container_format": "bare",
        "image_type": "snapshot", "instance_uuid": "0c8f5a4c-2d1e-4b52-9a55-5b7a1f0f7c11"}))
    .await;
    let get = |path: String, token: &'static str| {
        let c = &c;
        async move { c.call_v(Method::GET, &path, token, None, "2.35").await }
    };
    let (s, l) = get("/images".into(), "alice").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["images"].as_array().unwrap().len(), 2, "{l}");
    assert_eq!(l["images"][0].as_object().unwrap().len(), 3, "id, name, links: {l}");
    let (_, d) = get(format!("/images/{plain}"), "alice").await;
    let im = &d["image"];
    assert_eq!(
        (im["status"].as_str(), im["progress"].as_i64(), im["minRam"].as_i64()),
        (Some("SAVING"), Some(25), Some(512)),
        "{d}"
    );
    assert_eq!(im["metadata"], json!({"purpose": "web"}), "only the image's own properties: {d}");
    assert!(im.get("server").is_none());
    let (_, d) = get(format!("/images/{snap}"), "alice").await;
    assert_eq!(d["image"]["server"]["id"], "0c8f5a4c-2d1e-4b52-9a55-5b7a1f0f7c11", "{d}");
    assert_eq!(get(format!("/images/{plain}"), "bob").await.0, StatusCode::NOT_FOUND, "a private image");

    let ids = |l: &serde_json::Value| -> Vec<String> {
        l["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(&get("/images/detail?type=snapshot".into(), "alice").await.1), [snap.as_str()]);
    assert_eq!(ids(&get("/images?name=plain".into(), "alice").await.1), [plain.as_str()]);
    assert_eq!(ids(&get("/images?minRam=256".into(), "alice").await.1), [plain.as_str()]);
    let by_ref = "/images?server=http://cloud.test/compute/v2.1/servers/0c8f5a4c-2d1e-4b52-9a55-5b7a1f0f7c11";
    assert_eq!(ids(&get(by_ref.into(), "alice").await.1), [snap.as_str()]);
    let first = ids(&get("/images?limit=1".into(), "alice").await.1);
    assert_eq!(first.len(), 1);
    let rest = ids(&get(format!("/images?marker={}", first[0]), "alice").await.1);
    assert_eq!(rest.len(), 1);
    assert_ne!(rest, first);
    assert_eq!(get("/images?marker=nope".into(), "alice").await.0, StatusCode::BAD_REQUEST);

    let meta = |m: Method, path: String, body: Option<serde_json::Value>| {
        let c = &c;
        async move { c.call_v(m, &path, "alice", body, "2.38").await }
    };
    let (s, m) = meta(Method::POST, format!("/images/{plain}/metadata"), Some(json!({"metadata": {"a": "1"}}))).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["metadata"], json!({"purpose": "web", "a": "1"}));
    let (s, m) = meta(Method::PUT, format!("/images/{plain}/metadata"), Some(json!({"metadata": {"b": "2"}}))).await;
    assert_eq!((s, m), (StatusCode::OK, json!({"metadata": {"b": "2"}})));
    let (s, m) = meta(Method::GET, format!("/images/{plain}/metadata/b"), None).await;
    assert_eq!((s, m), (StatusCode::OK, json!({"meta": {"b": "2"}})));
    let (s, _) = meta(Method::PUT, format!("/images/{plain}/metadata/b"), Some(json!({"meta": {"c": "3"}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "body and URI mismatch");
    let (s, m) = meta(Method::PUT, format!("/images/{plain}/metadata/c"), Some(json!({"meta": {"c": "3"}}))).await;
    assert_eq!((s, m), (StatusCode::OK, json!({"meta": {"c": "3"}})));
    assert_eq!(meta(Method::DELETE, format!("/images/{plain}/metadata/b"), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(meta(Method::DELETE, format!("/images/{plain}/metadata/b"), None).await.0, StatusCode::NOT_FOUND);
    let (_, m) = meta(Method::GET, format!("/images/{plain}/metadata"), None).await;
    assert_eq!(m, json!({"metadata": {"c": "3"}}));
    let (s, _) = meta(Method::POST, format!("/images/{plain}/metadata"), Some(json!({"metadata": {"": "x"}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(meta(Method::GET, format!("/images/{plain}/metadata"), None).await.0, StatusCode::OK);
    assert_eq!(
        c.call_v(Method::GET, &format!("/images/{plain}/metadata"), "alice", None, "2.39").await.0,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        c.call_v(Method::DELETE, &format!("/images/{plain}"), "bob", None, "2.35").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.call_v(Method::DELETE, &format!("/images/{plain}"), "alice", None, "2.35").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(get(format!("/images/{plain}"), "alice").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.call_v(Method::GET, "/images", "alice", None, "2.36").await.0, StatusCode::NOT_FOUND);
}

/// `createImage` checks the name and metadata as Nova's schema does, before any image is
/// made: 400, not the image service's refusal passed on as a 503.
#[tokio::test]
async fn create_image_checks_name_and_metadata() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    for (args, want) in [
        (json!({"name": "x".repeat(256)}), StatusCode::BAD_REQUEST),
        (json!({"name": "snap", "metadata": {"": ""}}), StatusCode::BAD_REQUEST),
        (json!({"name": "snap", "metadata": {"a".repeat(256): "b"}}), StatusCode::BAD_REQUEST),
        (json!({"name": "snap", "metadata": {"k": "v".repeat(256)}}), StatusCode::BAD_REQUEST),
        (json!({"name": "snap", "metadata": "nope"}), StatusCode::BAD_REQUEST),
    ] {
        let (s, e) = c.post(&format!("/servers/{id}/action"), "alice", json!({"createImage": args.clone()})).await;
        assert_eq!(s, want, "{args}: {e}");
    }
    assert_eq!(c.images.0.lock().len(), 1, "no snapshot image was made");
}

/// Hypervisor search and servers (below 2.53), `with_servers` (from 2.53), and
/// `cpu_info` as an object from 2.28.
#[tokio::test]
async fn hypervisors_search_servers_and_cpu_info() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (_, l) = c.call_v(Method::GET, "/os-hypervisors", "admin", None, "2.52").await;
    let name = l["hypervisors"][0]["hypervisor_hostname"].as_str().unwrap().to_string();
    let pattern = &name[..name.len() - 1];
    let (s, h) = c.call_v(Method::GET, &format!("/os-hypervisors/{pattern}/search"), "admin", None, "2.52").await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["hypervisors"][0]["hypervisor_hostname"], name.as_str());
    assert!(h["hypervisors"][0].get("servers").is_none());
    let (s, h) = c.call_v(Method::GET, &format!("/os-hypervisors/{pattern}/servers"), "admin", None, "2.52").await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["hypervisors"][0]["servers"], json!([{"uuid": id, "name": "vm"}]));
    assert_eq!(
        c.call_v(Method::GET, "/os-hypervisors/zzz/search", "admin", None, "2.52").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.call_v(Method::GET, &format!("/os-hypervisors/{pattern}/search"), "alice", None, "2.52").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.call_v(Method::GET, &format!("/os-hypervisors/{pattern}/search"), "admin", None, "2.53").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, d) = c.call_v(Method::GET, "/os-hypervisors/detail?with_servers=true", "admin", None, "2.53").await;
    assert_eq!(d["hypervisors"][0]["servers"][0]["uuid"], id.as_str(), "{d}");
    assert!(d["hypervisors"][0]["cpu_info"].is_object(), "{d}");
    let (_, d) = c.call_v(Method::GET, "/os-hypervisors/detail", "admin", None, "2.27").await;
    assert!(d["hypervisors"][0]["cpu_info"].is_string(), "{d}");
    // Integer ids below 2.53 (shown and taken), uuids from 2.53.
    let (_, l) = c.call_v(Method::GET, "/os-hypervisors", "admin", None, "2.1").await;
    let num = l["hypervisors"][0]["id"].as_i64().unwrap_or_else(|| panic!("{l}"));
    let (s, h) = c.call_v(Method::GET, &format!("/os-hypervisors/{num}"), "admin", None, "2.1").await;
    assert_eq!((s, h["hypervisor"]["hypervisor_hostname"].as_str()), (StatusCode::OK, Some(name.as_str())), "{h}");
    assert_eq!(
        c.call_v(Method::GET, &format!("/os-hypervisors/{num}/uptime"), "admin", None, "2.1").await.0,
        StatusCode::OK
    );
    let (_, l) = c.call_v(Method::GET, "/os-hypervisors", "admin", None, "2.53").await;
    let uuid = l["hypervisors"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.call_v(Method::GET, &format!("/os-hypervisors/{uuid}"), "admin", None, "2.53").await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.call_v(Method::GET, &format!("/os-hypervisors/{num}"), "admin", None, "2.53").await.0,
        StatusCode::NOT_FOUND
    );
}

/// The legacy extension list, as old clients look extensions up.
#[tokio::test]
async fn extensions_list_the_legacy_names() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    let (s, l) = c.get("/extensions", "alice").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert!(l["extensions"].as_array().unwrap().iter().any(|e| e["name"] == "Hosts"), "{l}");
    let (s, e) = c.get("/extensions/os-consoles", "alice").await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["extension"]["alias"], "os-consoles");
    assert_eq!(c.get("/extensions/os-nope", "alice").await.0, StatusCode::NOT_FOUND);
}

/// `os-floating-ips` and `os-floating-ip-pools` (to 2.35), `addFloatingIp` and
/// `removeFloatingIp` (to 2.43) over the real network service.
#[tokio::test]
async fn floating_ip_proxies_reach_the_network_service() {
    let c = Cloud::start_with_network(1, FakeDriverConfig::default()).await;
    let ct = [("content-type", "application/json")];
    let netcall = |m: Method, path: &str, token: &str, body: serde_json::Value| {
        let (c, path, token) = (&c, path.to_string(), token.to_string());
        async move {
            let (s, b) = c.request(m, &path, &token, Some(body), &ct).await;
            assert!(s.is_success(), "{path}: {s} {b}");
            b
        }
    };
    let ext = netcall(
        Method::POST,
        "/network/v2.0/networks",
        "admin",
        json!({"network": {"name": "public", "router:external": true}}),
    )
    .await;
    let ext_id = ext["network"]["id"].as_str().unwrap().to_string();
    netcall(
        Method::POST,
        "/network/v2.0/subnets",
        "admin",
        json!({"subnet": {"network_id": ext_id, "cidr": "172.24.4.0/24", "ip_version": 4, "enable_dhcp": false}}),
    )
    .await;
    let own = netcall(Method::POST, "/network/v2.0/networks", "alice", json!({"network": {"name": "private"}})).await;
    let own_id = own["network"]["id"].as_str().unwrap().to_string();
    let sub = netcall(
        Method::POST,
        "/network/v2.0/subnets",
        "alice",
        json!({"subnet": {"network_id": own_id, "cidr": "10.1.0.0/24", "ip_version": 4}}),
    )
    .await;
    let router = netcall(
        Method::POST,
        "/network/v2.0/routers",
        "alice",
        json!({"router": {"name": "r", "external_gateway_info": {"network_id": ext_id}}}),
    )
    .await;
    let rid = router["router"]["id"].as_str().unwrap().to_string();
    netcall(
        Method::PUT,
        &format!("/network/v2.0/routers/{rid}/add_router_interface"),
        "alice",
        json!({"subnet_id": sub["subnet"]["id"]}),
    )
    .await;

    let v = "2.35";
    let (s, p) = c.call_v(Method::GET, "/os-floating-ip-pools", "alice", None, v).await;
    assert_eq!((s, p), (StatusCode::OK, json!({"floating_ip_pools": [{"name": "public"}]})));
    let (s, f) = c.call_v(Method::POST, "/os-floating-ips", "alice", Some(json!({"pool": "public"})), v).await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let fip = f["floating_ip"].clone();
    assert_eq!(
        (fip["pool"].as_str(), fip["instance_id"].as_str(), fip["fixed_ip"].as_str()),
        (Some("public"), None, None),
        "{f}"
    );
    let (ip, fid) = (fip["ip"].as_str().unwrap().to_string(), fip["id"].as_str().unwrap().to_string());
    let (s, _) = c.call_v(Method::POST, "/os-floating-ips", "alice", Some(json!({"pool": "nope"})), v).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, l) = c.call_v(Method::GET, "/os-floating-ips", "alice", None, v).await;
    assert_eq!(l["floating_ips"].as_array().unwrap().len(), 1, "{l}");
    let (_, l) = c.call_v(Method::GET, "/os-floating-ips", "bob", None, v).await;
    assert!(l["floating_ips"].as_array().unwrap().is_empty(), "{l}");

    let (s, b) = c.post("/servers", "alice", json!({"server": {"name": "vm", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": [{"uuid": own_id}]}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["server"]["id"].as_str().unwrap().to_string();
    c.wait_status(&id, "alice", "ACTIVE").await;
    let act = |body: serde_json::Value| {
        let (c, path) = (&c, format!("/servers/{id}/action"));
        async move { c.call_v(Method::POST, &path, "alice", Some(body), "2.43").await }
    };
    assert_eq!(act(json!({"addFloatingIp": {"address": "0.0.0.0"}})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(act(json!({"removeFloatingIp": {"address": ip}})).await.0, StatusCode::CONFLICT);
    let (s, e) = act(json!({"addFloatingIp": {"address": ip}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    let (_, f) = c.call_v(Method::GET, &format!("/os-floating-ips/{fid}"), "alice", None, v).await;
    assert_eq!(f["floating_ip"]["instance_id"], id.as_str(), "{f}");
    assert!(f["floating_ip"]["fixed_ip"].as_str().unwrap().starts_with("10.1.0."), "{f}");
    let (_, srv) = c.get(&format!("/servers/{id}"), "alice").await;
    assert!(
        srv["server"]["addresses"]["private"].as_array().unwrap().iter().any(|a| a["addr"] == ip.as_str()),
        "{srv}"
    );
    assert_eq!(act(json!({"removeFloatingIp": {"address": ip}})).await.0, StatusCode::ACCEPTED);
    let (_, f) = c.call_v(Method::GET, &format!("/os-floating-ips/{fid}"), "alice", None, v).await;
    assert!(f["floating_ip"]["instance_id"].is_null(), "{f}");
    assert_eq!(
        c.call_v(
            Method::POST,
            &format!("/servers/{id}/action"),
            "alice",
            Some(json!({"addFloatingIp": {"address": ip}})),
            "2.44"
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        c.call_v(Method::DELETE, &format!("/os-floating-ips/{fid}"), "alice", None, v).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.call_v(Method::GET, &format!("/os-floating-ips/{fid}"), "alice", None, v).await.0,
        StatusCode::NOT_FOUND
    );
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        c.call_v(Method::DELETE, &format!("/os-floating-ips/{missing}"), "alice", None, v).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(c.call_v(Method::GET, "/os-floating-ips", "alice", None, "2.36").await.0, StatusCode::NOT_FOUND);
}

/// `os-networks` and `os-tenant-networks` reads (to 2.35) over the real network service;
/// their nova-network writes stay gone.
#[tokio::test]
async fn network_proxies_list_and_show() {
    let c = Cloud::start_with_network(0, FakeDriverConfig::default()).await;
    let ct = [("content-type", "application/json")];
    let (s, n) = c
        .request(Method::POST, "/network/v2.0/networks", "alice", Some(json!({"network": {"name": "private"}})), &ct)
        .await;
    assert!(s.is_success(), "{n}");
    let id = n["network"]["id"].as_str().unwrap().to_string();
    let (s, b) = c
        .request(
            Method::POST,
            "/network/v2.0/subnets",
            "alice",
            Some(json!({"subnet": {"network_id": id, "cidr": "10.9.0.0/24", "ip_version": 4}})),
            &ct,
        )
        .await;
    assert!(s.is_success(), "{b}");
    let (s, l) = c.call_v(Method::GET, "/os-networks", "alice", None, "2.35").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let mine =
        l["networks"].as_array().unwrap().iter().find(|n| n["label"] == "private").unwrap_or_else(|| panic!("{l}"));
    assert_eq!((mine["cidr"].as_str(), mine["netmask"].as_str()), (Some("10.9.0.0/24"), Some("255.255.255.0")), "{l}");
    assert!(mine.get("project_id").is_none(), "admin fields are for admins: {mine}");
    let (_, one) = c.call_v(Method::GET, &format!("/os-networks/{id}"), "admin", None, "2.35").await;
    assert_eq!(one["network"]["project_id"], "pA", "{one}");
    let (s, t) = c.call_v(Method::GET, "/os-tenant-networks", "alice", None, "2.35").await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert!(
        t["networks"].as_array().unwrap().contains(&json!({"id": id, "label": "private", "cidr": "10.9.0.0/24"})),
        "{t}"
    );
    let (s, t) = c.call_v(Method::GET, &format!("/os-tenant-networks/{id}"), "alice", None, "2.35").await;
    assert_eq!((s, t["network"]["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    assert_eq!(
        c.call_v(Method::GET, &format!("/os-tenant-networks/{id}"), "bob", None, "2.35").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(c.call_v(Method::GET, "/os-networks", "alice", None, "2.36").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        c.call_v(Method::DELETE, &format!("/os-networks/{id}"), "admin", None, "2.35").await.0,
        StatusCode::GONE
    );
}

/// `os-instance_usage_audit_log`: the last completed month, every compute host not run
/// (no audit task runs here); a bad time is a 400, a non-admin a 403.
#[tokio::test]
async fn instance_usage_audit_log_reports_the_last_month() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let (s, l) = c.get("/os-instance_usage_audit_log", "admin").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["instance_usage_audit_logs"]["hosts_not_run"], json!(["node1"]));
    assert_eq!(l["instance_usage_audit_logs"]["overall_status"], "0 of 1 hosts done. 0 errors.");
    let (s, l) = c.get("/os-instance_usage_audit_log/2026-12-07%2006%3A33%3A35", "admin").await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let log = &l["instance_usage_audit_log"];
    assert_eq!(
        (log["period_beginning"].as_str(), log["period_ending"].as_str()),
        (Some("2026-11-01 00:00:00"), Some("2026-12-01 00:00:00"))
    );
    assert_eq!(c.get("/os-instance_usage_audit_log/invalid_time", "admin").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(c.get("/os-instance_usage_audit_log", "alice").await.0, StatusCode::FORBIDDEN);
}

/// Unsetting a flavor extra spec answers 200, as Nova.
#[tokio::test]
async fn flavor_extra_spec_unset_answers_200() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    let (s, _) =
        c.post("/flavors/42/os-extra_specs", "admin", json!({"extra_specs": {"hw:cpu_policy": "shared"}})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        c.call(Method::DELETE, "/flavors/42/os-extra_specs/hw:cpu_policy", "admin", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.call(Method::DELETE, "/flavors/42/os-extra_specs/hw:cpu_policy", "admin", None).await.0,
        StatusCode::NOT_FOUND
    );
}

/// `os-server-external-events`: per-event codes (200 taken, 404 no such server), the
/// request's status from them; service users and admins only.
#[tokio::test]
async fn server_external_events_answer_per_event() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let missing = uuid::Uuid::new_v4().to_string();
    let ev = |uuid: &str| json!({"name": "network-changed", "server_uuid": uuid});
    let (s, b) = c.post("/os-server-external-events", "svc", json!({"events": [ev(&id)]})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["events"][0],
        json!({"name": "network-changed", "server_uuid": id, "status": "completed", "code": 200})
    );
    let (s, b) = c.post("/os-server-external-events", "admin", json!({"events": [ev(&id), ev(&missing)]})).await;
    assert_eq!(s, StatusCode::MULTI_STATUS, "{b}");
    assert_eq!(b["events"][1]["code"], 404);
    assert_eq!(
        c.post("/os-server-external-events", "admin", json!({"events": [ev(&missing)]})).await.0,
        StatusCode::NOT_FOUND
    );
    let bad = json!({"events": [{"name": "reboot-please", "server_uuid": id}]});
    assert_eq!(c.post("/os-server-external-events", "admin", bad).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        c.post("/os-server-external-events", "alice", json!({"events": [ev(&id)]})).await.0,
        StatusCode::FORBIDDEN
    );
}

/// Server create and update check what Nova checks before anything is made: access
/// addresses (IPv6 kept canonical), network and port ids, fixed IPs, security groups
/// that exist, disk config.
#[tokio::test]
async fn server_create_and_update_refuse_bad_input_at_once() {
    let c = Cloud::start_with_network(1, FakeDriverConfig::default()).await;
    let server = |extra: serde_json::Value| {
        let mut s = json!({"name": "vm", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none"});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        json!({"server": s})
    };
    for bad in [
        json!({"accessIPv4": "1.1.1.1.1.1"}),
        json!({"accessIPv4": "not-an-ip"}),
        json!({"accessIPv6": "notvalid"}),
        json!({"networks": [{"uuid": "a-b-c-d-e-f-g-h-i-j", "fixed_ip": "10.0.1.1"}]}),
        json!({"networks": [{"uuid": uuid::Uuid::new_v4().to_string(), "fixed_ip": "999.1.1.1"}]}),
        json!({"networks": [{"port": "not-a-port"}]}),
        json!({"security_groups": [{"name": "does_not_exist"}]}),
    ] {
        let (s, e) = c.post("/servers", "alice", server(bad.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
    assert!(c.live_servers().await.is_empty(), "nothing was recorded");
    let (s, b) =
        c.post("/servers", "alice", server(json!({"accessIPv6": "0000:0000:0000:0000:0000:babe:220.12.22.2"}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["server"]["id"].as_str().unwrap().to_string();
    let (_, g) = c.get(&format!("/servers/{id}"), "alice").await;
    assert_eq!(g["server"]["accessIPv6"], "::babe:dc0c:1602");
    for bad in [json!({"accessIPv4": {}}), json!({"OS-DCF:diskConfig": {}}), json!({"accessIPv6": "x"})] {
        let (s, e) =
            c.call(Method::PUT, &format!("/servers/{id}"), "alice", Some(json!({"server": bad.clone()}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
}

/// `createBackup` makes a backup image and, once its snapshot succeeded, deletes the
/// oldest backups of the server and type beyond `rotation`.
#[tokio::test]
async fn create_backup_rotates_old_backups() {
    let c = Cloud::start_with_image(1, FakeDriverConfig::default()).await;
    let ct = [("content-type", "application/json")];
    let (s, im) = c
        .request(
            Method::POST,
            "/image/v2/images",
            "admin",
            Some(json!({"name": "base", "disk_format": "raw", "container_format": "bare", "visibility": "public"})),
            &ct,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{im}");
    let image = im["id"].as_str().unwrap().to_string();
    let upload = axum::http::Request::builder()
        .method(Method::PUT)
        .uri(format!("/image/v2/images/{image}/file"))
        .header("x-auth-token", "admin")
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from(vec![7u8; 4096]))
        .unwrap();
    let r = tower::ServiceExt::oneshot(c.router.clone(), upload).await.unwrap();
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body));
    let (s, b) = c
        .post(
            "/servers",
            "alice",
            json!({"server": {"name": "vm", "flavorRef": "42", "imageRef": image, "networks": "none"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["server"]["id"].as_str().unwrap().to_string();
    c.wait_status(&id, "alice", "ACTIVE").await;
    let mut made = Vec::new();
    for n in 1..=3 {
        let (s, b) = c
            .call_v(
                Method::POST,
                &format!("/servers/{id}/action"),
                "alice",
                Some(json!({"createBackup": {"name": format!("b{n}"), "backup_type": "daily", "rotation": 2}})),
                "2.45",
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        made.push(b["image_id"].as_str().unwrap().to_string());
        c.wait_status(&id, "alice", "ACTIVE").await;
    }
    let (_, l) = c
        .request(Method::GET, &format!("/image/v2/images?instance_uuid={id}&image_type=backup"), "alice", None, &[])
        .await;
    let mut left: Vec<String> =
        l["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
    left.sort();
    let mut want = made[1..].to_vec();
    want.sort();
    assert_eq!(left, want, "the oldest backup went, the two newest stay");
    let (s, _) = c
        .post(&format!("/servers/{id}/action"), "alice", json!({"createBackup": {"name": "x", "backup_type": "daily"}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "rotation is required");
}

/// `injectNetworkInfo` is an admin action answered 202 (guests read their network from
/// DHCP and the metadata service, so nothing needs pushing).
#[tokio::test]
async fn inject_network_info_is_an_admin_action() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(
        c.post(&format!("/servers/{id}/action"), "admin", json!({"injectNetworkInfo": null})).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.post(&format!("/servers/{id}/action"), "alice", json!({"injectNetworkInfo": null})).await.0,
        StatusCode::FORBIDDEN
    );
}

/// An admin's `project_id`/`tenant_id` filter only counts with `all_tenants`; without it
/// the admin's own project is listed, as in Nova.
#[tokio::test]
async fn project_filter_needs_all_tenants() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let ids = |b: &serde_json::Value| -> Vec<String> {
        b["servers"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    };
    assert!(ids(&c.get("/servers/detail?tenant_id=pA", "admin").await.1).is_empty());
    assert_eq!(ids(&c.get("/servers/detail?all_tenants=1&tenant_id=pA", "admin").await.1), [id.as_str()]);
    assert_eq!(ids(&c.get("/servers?all_tenants&project_id=pA", "admin").await.1), [id.as_str()]);
    assert!(ids(&c.get("/servers?all_tenants&project_id=pB", "admin").await.1).is_empty());
}

/// A server whose last security group was removed shows no `security_groups` key.
#[tokio::test]
async fn removing_the_last_security_group_leaves_none() {
    let c = Cloud::start_with_network(1, FakeDriverConfig::default()).await;
    let ct = [("content-type", "application/json")];
    let (_, n) = c
        .request(Method::POST, "/network/v2.0/networks", "alice", Some(json!({"network": {"name": "private"}})), &ct)
        .await;
    let net = n["network"]["id"].as_str().unwrap().to_string();
    c.request(
        Method::POST,
        "/network/v2.0/subnets",
        "alice",
        Some(json!({"subnet": {"network_id": net, "cidr": "10.2.0.0/24", "ip_version": 4}})),
        &ct,
    )
    .await;
    let (s, b) = c.post("/servers", "alice", json!({"server": {"name": "vm", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": [{"uuid": net}]}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["server"]["id"].as_str().unwrap().to_string();
    let srv = c.wait_status(&id, "alice", "ACTIVE").await;
    assert_eq!(srv["security_groups"], json!([{"name": "default"}]));
    let (s, e) =
        c.post(&format!("/servers/{id}/action"), "alice", json!({"removeSecurityGroup": {"name": "default"}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    let (_, g) = c.get(&format!("/servers/{id}"), "alice").await;
    assert!(g["server"].get("security_groups").is_none(), "{g}");
}

/// Inputs found by fuzzing with OpenStack's API descriptions, refused as Nova refuses them.
#[tokio::test]
async fn fuzzed_inputs_are_refused() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    let act = |body: serde_json::Value, v: &'static str| {
        let (c, path) = (&c, format!("/servers/{id}/action"));
        async move { c.call_v(Method::POST, &path, "alice", Some(body), v).await.0 }
    };
    for len in [json!(-5), json!("ten"), json!({})] {
        assert_eq!(
            act(json!({"os-getConsoleOutput": {"length": len.clone()}}), "2.96").await,
            StatusCode::BAD_REQUEST,
            "{len}"
        );
    }
    assert_eq!(act(json!({"os-getConsoleOutput": {"length": -1}}), "2.96").await, StatusCode::OK);
    assert_eq!(
        act(json!({"rebuild": {"imageRef": harness::IMAGE, "adminPass": 5}}), "2.96").await,
        StatusCode::BAD_REQUEST
    );
    let personality = json!([{"path": "/etc/motd", "contents": "aGk="}]);
    assert_eq!(
        act(json!({"rebuild": {"imageRef": harness::IMAGE, "personality": personality.clone()}}), "2.57").await,
        StatusCode::BAD_REQUEST
    );
    let server = |extra: (&str, serde_json::Value)| {
        let mut s = json!({"name": "x", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none"});
        s[extra.0] = extra.1;
        json!({"server": s})
    };
    let (s, _) = c.call_v(Method::POST, "/servers", "alice", Some(server(("personality", personality))), "2.57").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = c.post("/servers", "alice", server(("name", json!("bad\u{0}name")))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) =
        c.call(Method::PUT, &format!("/servers/{id}"), "alice", Some(json!({"server": {"name": "a\u{7}b"}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, l) = c.call_v(Method::GET, "/os-services?binary=nova-compute", "admin", None, "2.53").await;
    let svc = l["services"][0]["id"].as_str().unwrap().to_string();
    let (s, e) = c
        .call_v(
            Method::PUT,
            &format!("/os-services/{svc}"),
            "admin",
            Some(json!({"status": "disabled", "disabled_reason": {}})),
            "2.53",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
}

/// A keypair of `type: x509` without a public key is generated by the server: a
/// certificate as the public key, its private key returned once.
#[tokio::test]
async fn x509_keypairs_are_generated() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    let (s, k) = c
        .call_v(
            Method::POST,
            "/os-keypairs",
            "alice",
            Some(json!({"keypair": {"name": "cert", "type": "x509"}})),
            "2.2",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert_eq!(k["keypair"]["type"], "x509");
    assert!(k["keypair"]["public_key"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"), "{k}");
    assert!(k["keypair"]["private_key"].as_str().unwrap().contains("PRIVATE KEY"), "{k}");
    let (_, g) = c.call_v(Method::GET, "/os-keypairs/cert", "alice", None, "2.2").await;
    assert_eq!(
        (g["keypair"]["type"].as_str(), g["keypair"]["fingerprint"].as_str()),
        (Some("x509"), k["keypair"]["fingerprint"].as_str())
    );
}

/// A requested hostname is checked: 2–63 characters before 2.94, an FQDN of at most 255
/// from 2.94.
#[tokio::test]
async fn requested_hostnames_are_checked() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let server = |h: String| json!({"server": {"name": "x", "flavorRef": "42", "imageRef": harness::IMAGE, "networks": "none", "hostname": h}});
    assert_eq!(
        c.call_v(Method::POST, "/servers", "alice", Some(server("h".repeat(300))), "2.94").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.call_v(Method::POST, "/servers", "alice", Some(server("h".repeat(64))), "2.90").await.0,
        StatusCode::BAD_REQUEST
    );
    let (s, b) = c.call_v(Method::POST, "/servers", "alice", Some(server("web.example.org".into())), "2.94").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
}

/// A failed snapshot leaves the server ACTIVE (the failure is the action's), as Nova.
#[tokio::test]
async fn a_failed_snapshot_leaves_the_server_as_it_was() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let id = c.boot("alice", "vm", "42").await;
    c.wait_status(&id, "alice", "ACTIVE").await;
    c.agents[0].1.fail_next("snapshot", 1);
    let (s, b) = c.post(&format!("/servers/{id}/action"), "alice", json!({"createImage": {"name": "snap"}})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let srv = c.wait_status(&id, "alice", "ACTIVE").await;
    assert!(srv.get("fault").is_none(), "{srv}");
    let (_, a) = c.get(&format!("/servers/{id}/os-instance-actions"), "alice").await;
    let snap = a["instanceActions"].as_array().unwrap().iter().find(|x| x["action"] == "createImage").unwrap().clone();
    let rid = snap["request_id"].as_str().unwrap();
    let (_, d) = c.get(&format!("/servers/{id}/os-instance-actions/{rid}"), "admin").await;
    assert_eq!(d["instanceAction"]["events"][0]["result"], "Error", "{d}");
}

/// From 2.86 the values of the extra specs Nova knows are checked; other keys are kept
/// as given.
#[tokio::test]
async fn known_extra_spec_values_are_checked_from_2_86() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    let set = |specs: serde_json::Value, v: &'static str| {
        let c = &c;
        async move {
            c.call_v(Method::POST, "/flavors/42/os-extra_specs", "admin", Some(json!({"extra_specs": specs})), v)
                .await
                .0
        }
    };
    assert_eq!(set(json!({"hw:numa_nodes": "-5"}), "2.86").await, StatusCode::BAD_REQUEST);
    assert_eq!(set(json!({"hw:cpu_policy": "sometimes"}), "2.86").await, StatusCode::BAD_REQUEST);
    assert_eq!(set(json!({"hw:numa_nodes": "-5"}), "2.85").await, StatusCode::OK, "not checked before 2.86");
    assert_eq!(
        set(json!({"hw:numa_nodes": "2", "hw:cpu_policy": "dedicated", "custom:thing": "x"}), "2.86").await,
        StatusCode::OK
    );
    let (s, _) = c
        .call_v(
            Method::PUT,
            "/flavors/42/os-extra_specs/hw:numa_nodes",
            "admin",
            Some(json!({"hw:numa_nodes": "0"})),
            "2.86",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Flavor access changes are refused by policy (403) before the flavor is looked up; a
/// security group delete without an id is 404 (Tempest's negative tests).
#[tokio::test]
async fn refusals_come_in_novas_order() {
    let c = Cloud::start_with_network(0, FakeDriverConfig::default()).await;
    let (s, f) = c
        .post(
            "/flavors",
            "admin",
            json!({"flavor": {"name": "p", "ram": 64, "vcpus": 1, "disk": 0, "os-flavor-access:is_public": "False"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let fid = f["flavor"]["id"].as_str().unwrap().to_string();
    let (s, _) = c.post(&format!("/flavors/{fid}/action"), "alice", json!({"addTenantAccess": {"tenant": "pA"}})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a private flavor alice cannot see: still 403");
    let (s, _) =
        c.post(&format!("/flavors/{fid}/action"), "alice", json!({"removeTenantAccess": {"tenant": "pA"}})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(c.call_v(Method::DELETE, "/os-security-groups", "alice", None, "2.35").await.0, StatusCode::NOT_FOUND);
}

/// A method a path does not take answers 404 as Nova's router does (`DELETE /images/`
/// names no image), not 405.
#[tokio::test]
async fn unrouted_methods_are_not_found() {
    let c = Cloud::start(0, FakeDriverConfig::default()).await;
    for (m, path) in [(Method::DELETE, "/images"), (Method::PUT, "/servers"), (Method::DELETE, "/os-hosts")] {
        let (s, e) = c.call_v(m.clone(), path, "admin", None, "2.35").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {path}: {e}");
        assert!(e["itemNotFound"]["message"].is_string(), "{e}");
    }
}

/// A block device mapping with a destination Nova does not know is refused with 400; the
/// caller's snapshot metadata is kept over the snapshot's own properties.
#[tokio::test]
async fn bdm_types_are_checked_and_snapshot_metadata_kept() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let bdm = json!([{"source_type": "image", "uuid": harness::IMAGE, "boot_index": 0, "destination_type": "local"},
        {"source_type": "volume", "uuid": uuid::Uuid::new_v4().to_string(), "destination_type": "invalid"}]);
    let (s, e) = c
        .post(
            "/servers",
            "alice",
            json!({"server": {"name": "x", "flavorRef": "42", "imageRef": harness::IMAGE,
        "networks": "none", "block_device_mapping_v2": bdm}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let c = Cloud::start_with_image(1, FakeDriverConfig::default()).await;
    let ct = [("content-type", "application/json")];
    let (_, im) = c
        .request(
            Method::POST,
            "/image/v2/images",
            "admin",
            Some(json!({"name": "base", "disk_format": "raw", "container_format": "bare", "visibility": "public", "min_ram": 96})),
            &ct,
        )
        .await;
    let image = im["id"].as_str().unwrap().to_string();
    let upload = axum::http::Request::builder()
        .method(Method::PUT)
        .uri(format!("/image/v2/images/{image}/file"))
        .header("x-auth-token", "admin")
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from(vec![1u8; 1024]))
        .unwrap();
    assert!(tower::ServiceExt::oneshot(c.router.clone(), upload).await.unwrap().status().is_success());
    let (_, b) = c
        .post(
            "/servers",
            "alice",
            json!({"server": {"name": "vm", "flavorRef": "42", "imageRef": image, "networks": "none"}}),
        )
        .await;
    let id = b["server"]["id"].as_str().unwrap().to_string();
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (s, b) = c
        .call_v(
            Method::POST,
            &format!("/servers/{id}/action"),
            "alice",
            Some(json!({"createImage": {"name": "snap", "metadata": {"image_type": "test"}}})),
            "2.45",
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let snap = b["image_id"].as_str().unwrap();
    let (_, m) = c.call_v(Method::GET, &format!("/images/{snap}/metadata"), "alice", None, "2.35").await;
    assert_eq!(m["metadata"]["image_type"], "test", "{m}");
    assert_eq!(m["metadata"]["instance_uuid"], id.as_str(), "{m}");
    let (_, d) = c.call_v(Method::GET, &format!("/images/{snap}"), "alice", None, "2.35").await;
    let mins = (d["image"]["minRam"].as_i64(), d["image"]["minDisk"].as_i64());
    assert_eq!(mins, (Some(96), Some(1)), "the base image's minimums, the root disk's size: {d}");
}

/// `OS-DCF:diskConfig` is kept as asked on create, rebuild and update, and shown back.
#[tokio::test]
async fn disk_config_is_kept_as_asked() {
    let c = Cloud::start(1, FakeDriverConfig::default()).await;
    let (s, b) = c
        .post(
            "/servers",
            "alice",
            json!({"server": {"name": "d", "flavorRef": "42", "imageRef": harness::IMAGE,
        "networks": "none", "OS-DCF:diskConfig": "AUTO"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(c.wait_status(&id, "alice", "ACTIVE").await["OS-DCF:diskConfig"], "AUTO");
    let (s, b) = c
        .post(
            &format!("/servers/{id}/action"),
            "alice",
            json!({"rebuild": {"imageRef": harness::IMAGE, "OS-DCF:diskConfig": "MANUAL"}}),
        )
        .await;
    assert_eq!((s, b["server"]["OS-DCF:diskConfig"].as_str()), (StatusCode::ACCEPTED, Some("MANUAL")), "{b}");
    c.wait_status(&id, "alice", "ACTIVE").await;
    let (_, b) = c
        .call(Method::PUT, &format!("/servers/{id}"), "alice", Some(json!({"server": {"OS-DCF:diskConfig": "AUTO"}})))
        .await;
    assert_eq!(b["server"]["OS-DCF:diskConfig"], "AUTO", "{b}");
    let (s, _) = c
        .post(
            "/servers",
            "alice",
            json!({"server": {"name": "d", "flavorRef": "42", "imageRef": harness::IMAGE,
        "networks": "none", "OS-DCF:diskConfig": "SOMETIMES"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
