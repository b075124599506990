//! The all-in-one process itself: version discovery, fault formats per service family,
//! request ids, microversions, restart on an existing data directory.

use serde_json::Value;
use stratus_testkit::TestCloud;

async fn get(cloud: &TestCloud, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = cloud.http().get(cloud.at(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn assert_request_id(h: &reqwest::header::HeaderMap) -> String {
    let id = h.get("x-openstack-request-id").expect("x-openstack-request-id").to_str().unwrap().to_string();
    assert!(id.starts_with("req-") && id.len() == 40, "request id {id}");
    id
}

#[tokio::test]
async fn every_service_answers_its_version_document() {
    let cloud = TestCloud::start().await;
    let (s, h, b) = get(&cloud, "/identity").await;
    assert_eq!(s, 300);
    assert_request_id(&h);
    assert_eq!(b["versions"]["values"][0]["id"], "v3.14");
    assert_eq!(b["versions"]["values"][0]["links"][0]["href"], format!("{}/identity/v3/", cloud.url));

    let (s, h, b) = get(&cloud, "/compute/").await;
    assert_eq!(s, 200);
    let id = assert_request_id(&h);
    assert_eq!(h.get("x-compute-request-id").unwrap().to_str().unwrap(), id);
    // Nova lists v2.0 and v2.1; v2.1 carries the microversion range.
    let ids: Vec<&str> = b["versions"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["v2.0", "v2.1"]);
    let v = &b["versions"][1];
    assert_eq!(v["id"], "v2.1");
    assert_eq!(v["min_version"], "2.1");
    assert!(v["version"].as_str().unwrap() >= "2.90");

    let (s, _, b) = get(&cloud, "/image").await;
    assert_eq!(s, 300);
    assert_eq!(b["versions"][0]["status"], "CURRENT");

    let (s, _, b) = get(&cloud, "/placement").await;
    assert_eq!(s, 200);
    assert_eq!(b["versions"][0]["min_version"], "1.0");
    assert_eq!(b["versions"][0]["max_version"], "1.39");

    let (s, _, b) = get(&cloud, "/network/").await;
    assert_eq!(s, 200);
    assert_eq!(b["versions"][0]["id"], "v2.0");

    let (s, _, b) = get(&cloud, "/volume/").await;
    assert_eq!(s, 300);
    assert_eq!(b["versions"][0]["id"], "v3.0");

    let (s, _, b) = get(&cloud, "/object/info").await;
    assert_eq!(s, 200);
    assert!(b["swift"]["version"].is_string());

    let r = cloud.http().get(cloud.at("/dashboard/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Stratus"));
    cloud.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_get_each_familys_fault() {
    let cloud = TestCloud::start().await;
    let (s, h, b) = get(&cloud, "/compute/v2.1/no-such-thing").await;
    assert_eq!(s, 404);
    assert_eq!(b["itemNotFound"]["code"], 404);
    assert!(b["itemNotFound"]["message"].as_str().unwrap().contains("/compute/v2.1/no-such-thing"));
    assert!(h.get("x-compute-request-id").is_some());

    let (s, _, b) = get(&cloud, "/network/v2.0/no-such-thing").await;
    assert_eq!(s, 404);
    assert_eq!(b["NeutronError"]["type"], "HTTPNotFound");

    let (s, _, b) = get(&cloud, "/identity/v3/no-such-thing").await;
    assert_eq!(s, 404);
    assert_eq!(b["error"]["code"], 404);
    assert_eq!(b["error"]["title"], "Not Found");

    let (s, h, b) = get(&cloud, "/placement/no-such-thing").await;
    assert_eq!(s, 404);
    let id = assert_request_id(&h);
    assert_eq!(b["errors"][0]["status"], 404);
    assert_eq!(b["errors"][0]["request_id"], id.as_str());

    let (s, _, b) = get(&cloud, "/image/v2/no-such-thing").await;
    assert_eq!(s, 404);
    assert_eq!(b["code"], "404 Not Found");

    let (s, _, b) = get(&cloud, "/no-such-service").await;
    assert_eq!(s, 404);
    assert!(b["error"]["message"].as_str().unwrap().contains("/identity"));

    let r = cloud.http().delete(cloud.at("/compute/")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["badMethod"]["code"], 405);
    cloud.shutdown().await;
}

#[tokio::test]
async fn placement_negotiates_microversions() {
    let cloud = TestCloud::start().await;
    let r = cloud
        .http()
        .get(cloud.at("/placement/"))
        .header("OpenStack-API-Version", "placement 1.10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["openstack-api-version"], "placement 1.10");
    assert!(r.headers()["vary"].to_str().unwrap().contains("OpenStack-API-Version"));

    let r = cloud
        .http()
        .get(cloud.at("/placement/"))
        .header("OpenStack-API-Version", "placement latest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["openstack-api-version"], "placement 1.39");

    let r = cloud
        .http()
        .get(cloud.at("/placement/"))
        .header("OpenStack-API-Version", "placement 9.99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errors"][0]["code"], "placement.microversion.unsupported");

    let r = cloud
        .http()
        .get(cloud.at("/placement/"))
        .header("OpenStack-API-Version", "placement one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    cloud.shutdown().await;
}

#[tokio::test]
async fn restart_on_the_same_data_dir_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = TestCloud::start_in(dir.path().to_path_buf(), |_| {}).await;
    assert!(dir.path().join("stratus.db").exists(), "database created on first start");
    cloud.shutdown().await;
    let cloud = TestCloud::start_in(dir.path().to_path_buf(), |_| {}).await;
    let (s, _, _) = get(&cloud, "/identity/v3").await;
    assert_eq!(s, 200);
    cloud.shutdown().await;
}

#[tokio::test]
async fn the_openstack_cli_discovers_every_service_from_its_version_document() {
    let cloud = TestCloud::start().await;
    let rows = cloud.openstack(&["versions", "show"]).await.unwrap();
    let rows = rows.as_array().expect("a list of versions");
    let find = |ty: &str| {
        rows.iter()
            .filter(|r| r["Service Type"] == ty)
            .map(|r| (r["Version"].as_str().unwrap_or("").to_string(), r["Status"].as_str().unwrap_or("").to_string()))
            .collect::<Vec<_>>()
    };
    assert!(find("identity").contains(&("3.14".into(), "CURRENT".into())), "{rows:?}");
    assert!(find("compute").contains(&("2.1".into(), "CURRENT".into())), "{rows:?}");
    assert!(find("image").iter().any(|(_, s)| s == "CURRENT"), "{rows:?}");
    assert!(!find("network").is_empty(), "{rows:?}");
    assert!(!find("placement").is_empty(), "{rows:?}");
    let compute = rows.iter().find(|r| r["Service Type"] == "compute" && r["Version"] == "2.1").unwrap();
    assert_eq!(compute["Max Microversion"], "2.96");
    cloud.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_415_in_the_services_format() {
    let cloud = TestCloud::start().await;
    let r = cloud
        .http()
        .post(cloud.at("/identity/v3/auth/tokens"))
        .header("content-type", "application/json")
        .body("{\"auth\": {")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], 400);
    assert!(b["error"]["message"].as_str().unwrap().contains("line 1 column"), "{b}");

    let r = cloud
        .http()
        .post(cloud.at("/identity/v3/auth/tokens"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], 415);

    let big = format!("{{\"auth\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = cloud
        .http()
        .post(cloud.at("/identity/v3/auth/tokens"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    cloud.shutdown().await;
}

/// A cloud whose guests could not reach their disks does not start (issue 23): a data
/// directory under a `0700` parent used to give a cloud that answered, logged one ERROR,
/// had no compute agent and failed every boot with "No valid host". The start now fails
/// with what to do. Needs QEMU (installed by scripts/install-host-packages.sh) and root
/// (guests run as users of their own only then).
#[tokio::test]
async fn a_data_directory_guests_cannot_reach_stops_the_start_with_what_to_do() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut config = stratus::Config { data_dir: parent.path().join("data"), ..stratus::Config::default() };
    config.server.listen = "127.0.0.1:0".into();
    config.network_agent.enabled = "false".into();
    config.compute.local.virt_driver = "qemu".into();
    let err = match stratus::Cloud::start(config, stratus::app::StartOptions::default()).await {
        Ok(cloud) => {
            cloud.shutdown().await.unwrap();
            panic!("the cloud started although its guests cannot reach the data directory");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("is not searchable by others") && err.contains("chmod o+x"), "{err}");
    assert!(err.contains("virt_driver = \"fake\""), "{err}");
}

/// A port already taken stops the start with what to do, and the banner says how guests run.
#[tokio::test]
async fn a_taken_port_is_refused_with_what_to_do_and_the_banner_names_the_driver() {
    let cloud = TestCloud::start().await;
    assert_eq!(cloud.handle().compute, "fake driver (no real guests)");
    let dir = tempfile::tempdir().unwrap();
    let mut config = stratus::Config { data_dir: dir.path().to_path_buf(), ..stratus::Config::default() };
    config.server.listen = cloud.handle().addr.to_string();
    config.network_agent.enabled = "false".into();
    config.compute.local.virt_driver = "fake".into();
    let err = match stratus::Cloud::start(config, stratus::app::StartOptions::default()).await {
        Ok(_) => panic!("a second cloud started on a port in use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("another stratus up") && err.contains("--listen"), "{err}");
    cloud.shutdown().await;
}
