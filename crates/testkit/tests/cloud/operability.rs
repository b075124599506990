//! What an operator watches (issue 23): the Prometheus endpoint `/metrics`.

use stratus_testkit::TestCloud;

/// The value of the sample whose name and labels are `series` (exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_show_capacity_usage_and_servers() {
    let cloud = TestCloud::start().await;
    cloud.create_tiny_image().await;
    // One refused request, so a 401 is counted.
    let r = cloud.http().get(cloud.at("/compute/v2.1/servers")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", "none", "--wait", "m1"])
        .await
        .expect("server create");

    let r = cloud.http().get(cloud.at("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let at_least = |series: &str, min: f64| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(v >= min, "{series} = {v}, expected >= {min}");
        v
    };
    at_least("stratus_http_requests_total{service=\"compute\",method=\"GET\",code=\"401\"}", 1.0);
    at_least("stratus_http_requests_total{service=\"compute\",method=\"POST\",code=\"202\"}", 1.0);
    at_least("stratus_http_requests_total{service=\"identity\",method=\"POST\",code=\"201\"}", 1.0);
    let count = at_least("stratus_http_request_duration_seconds_count{service=\"compute\"}", 2.0);
    let inf = at_least("stratus_http_request_duration_seconds_bucket{service=\"compute\",le=\"+Inf\"}", 2.0);
    assert_eq!(count, inf);
    at_least("stratus_process_resident_memory_bytes", 1e6);
    at_least("stratus_db_pool_connections{pool=\"write\"}", 1.0);

    let host = cloud.openstack(&["server", "show", "m1", "-c", "OS-EXT-SRV-ATTR:host"]).await.expect("server show");
    let host = host["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    assert_eq!(
        sample(&text, &format!("stratus_compute_servers{{host=\"{host}\",vm_state=\"active\"}}")),
        Some(1.0),
        "{text}"
    );
    let vcpu = |what: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("stratus_placement_{what}{{")) && l.contains("resource_class=\"VCPU\""))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>()
    };
    assert_eq!(vcpu("usage"), 1.0, "m1.nano holds one VCPU:\n{text}");
    assert!(vcpu("capacity") >= 1.0);
    // Unknown paths are counted under `other`, never under a label of their own.
    let _ = cloud.http().get(cloud.at("/wp-admin/x.php")).send().await.unwrap();
    let again = cloud.http().get(cloud.at("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!again.contains("wp-admin"));
    let other = sample(&again, "stratus_http_requests_total{service=\"other\",method=\"GET\",code=\"404\"}");
    assert_eq!(other, Some(1.0), "{again}");
    let scrapes = sample(&again, "stratus_http_requests_total{service=\"metrics\",method=\"GET\",code=\"200\"}");
    assert_eq!(scrapes, Some(1.0), "the first scrape is counted");
    cloud.shutdown().await;
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let cloud = TestCloud::start_with(|c| c.metrics.enabled = false).await;
    let r = cloud.http().get(cloud.at("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    cloud.shutdown().await;
}

/// `stratus status` (its library half): what the cloud's own APIs say, gathered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_services_hosts_and_servers() {
    let cloud = TestCloud::start().await;
    cloud.create_tiny_image().await;
    cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", "none", "--wait", "s1"])
        .await
        .expect("server create");
    // The credentials `stratus up` wrote, as `stratus status --data-dir` reads them.
    let creds = stratus::status::Credentials::find(&|_| None, &cloud.data_dir.join("admin-openrc")).expect("openrc");
    let status = stratus::status::gather(&creds).await.expect("status");
    assert!(status.apis.values().all(Option::is_some), "{:?}", status.apis);
    let compute: Vec<_> = status.agents.iter().filter(|a| a.binary == "nova-compute").collect();
    assert_eq!(compute.len(), 1, "{:?}", status.agents);
    assert!(compute[0].up && compute[0].enabled);
    assert_eq!(status.hosts.len(), 1, "{:?}", status.hosts);
    assert_eq!(status.hosts[0].servers, 1);
    assert_eq!(status.hosts[0].vcpus_used, 1);
    assert_eq!(status.servers.get("ACTIVE"), Some(&1));
    assert!(!status.data_plane, "the test cloud runs no network agent");
    assert!(status.healthy, "{}", status.render());
    let text = status.render();
    assert!(
        text.contains("healthy") && text.contains("1 ACTIVE") && text.contains("Network data plane: OFF"),
        "{text}"
    );

    // Wrong credentials are said plainly.
    let bad = stratus::status::Credentials { password: "wrong".into(), ..creds };
    let e = stratus::status::gather(&bad).await.unwrap_err().to_string();
    assert!(e.contains("401"), "{e}");
    cloud.shutdown().await;
}

/// `stratus backup` while the cloud runs, `stratus restore` into a fresh data directory:
/// the restored cloud has the same projects, users, images (with their data), networks
/// and flavors, and honours a token issued before the backup (its keys came along).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_running_restores_the_same_cloud() {
    let cloud = TestCloud::start().await;
    let image = cloud.create_tiny_image().await;
    let image_id = image["id"].as_str().unwrap().to_string();
    cloud.openstack(&["project", "create", "bk-project"]).await.expect("project");
    cloud.openstack(&["user", "create", "--password", "pw-bk", "bk-user"]).await.expect("user");
    cloud.openstack(&["network", "create", "bk-net"]).await.expect("network");
    cloud
        .openstack(&["flavor", "create", "--vcpus", "1", "--ram", "64", "--disk", "1", "bk-flavor"])
        .await
        .expect("flavor");
    let token = cloud.openstack(&["token", "issue"]).await.expect("token")["id"].as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloud.tar.gz");
    let config = stratus::Config { data_dir: cloud.data_dir.clone(), ..stratus::Config::default() };
    let m = stratus::backup::create(&config, &file, &Default::default()).await.expect("backup while running");
    assert_eq!((m.database.as_str(), m.images), ("sqlite", true));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "it holds keys");
    assert!(m.left_out.iter().any(|l| l.starts_with("instances:")));
    let again = stratus::backup::create(&config, &file, &Default::default()).await.unwrap_err();
    assert!(format!("{again:#}").contains("never overwritten"), "{again:#}");
    // What is written after the backup is not in it.
    cloud.openstack(&["project", "create", "after-backup"]).await.expect("project");
    cloud.shutdown().await;

    // Never over a cloud.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("stratus.db"), b"a cloud").unwrap();
    let busy = stratus::Config { data_dir: busy, ..stratus::Config::default() };
    let over = stratus::backup::restore(&busy, &file).await.unwrap_err();
    assert!(format!("{over:#}").contains("not empty"), "{over:#}");

    let target = dir.path().join("restored");
    let rconfig = stratus::Config { data_dir: target.clone(), ..stratus::Config::default() };
    stratus::backup::restore(&rconfig, &file).await.expect("restore");
    let restored = TestCloud::start_in(target.clone(), |_| {}).await;
    restored.openstack(&["project", "show", "bk-project"]).await.expect("the project is back");
    assert!(restored.openstack(&["project", "show", "after-backup"]).await.is_err());
    restored.openstack(&["user", "show", "bk-user"]).await.expect("the user is back");
    restored.openstack(&["network", "show", "bk-net"]).await.expect("the network is back");
    restored.openstack(&["flavor", "show", "bk-flavor"]).await.expect("the flavor is back");
    let out = dir.path().join("tiny.out");
    restored
        .openstack(&["image", "save", "--file", out.to_str().unwrap(), &image_id])
        .await
        .expect("the image's data is back");
    assert_eq!(std::fs::read(&out).unwrap(), vec![0u8; 1 << 20]);
    // A token from before the backup is still valid: the Fernet keys came along.
    let r = restored
        .http()
        .get(restored.at("/identity/v3/auth/tokens"))
        .header("x-auth-token", &token)
        .header("x-subject-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    restored.shutdown().await;
}

/// TLS on the listener (issue 23): the catalog advertises `https://`, the real `openstack`
/// CLI works with `OS_CACERT`, and plain HTTP to the port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_apis_over_https_to_the_real_cli() {
    let certs = tempfile::tempdir().unwrap();
    let set = stratus::tls::self_signed(certs.path(), "").expect("self-signed set");
    let (cert, key) = (set.cert.display().to_string(), set.key.display().to_string());
    let cloud = TestCloud::start_with(move |c| {
        c.server.tls_cert = cert;
        c.server.tls_key = key;
    })
    .await;
    let url = cloud.handle().public_url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl").args(["-s", "-m", "10"]).args(args).output().expect("curl");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let ca = set.ca.display().to_string();
    let (code, body) = curl(&["--cacert", &ca, &format!("{url}/identity/v3")]);
    assert_eq!(code, Some(0), "{body}");
    assert!(
        body.contains(&format!("\"href\": \"{url}/identity/v3/\"")) || body.contains(&format!("{url}/identity/v3/")),
        "{body}"
    );
    // Without the CA the certificate is not trusted; plain HTTP gets no HTTP answer.
    assert_ne!(curl(&[&format!("{url}/identity/v3")]).0, Some(0));
    let plain = url.replace("https://", "http://");
    let (_, body) = curl(&["-o", "-", "-w", "%{http_code}", &format!("{plain}/identity/v3")]);
    assert!(!body.contains("\"version\""), "{body}");

    let mut cmd = std::process::Command::new(stratus_testkit::openstack_cli());
    cmd.args(["catalog", "list", "-f", "json"]);
    for (k, v) in cloud.os_env(&cloud.admin()) {
        cmd.env(k, v);
    }
    let out = cmd.env("OS_CACERT", &ca).output().expect("openstack");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("{url}/compute/v2.1")), "the catalog advertises https: {text}");
    // `stratus status` with the CA, as admin-openrc's OS_CACERT gives it.
    let creds = stratus::status::Credentials {
        auth_url: format!("{url}/identity/v3"),
        username: "admin".into(),
        password: stratus_testkit::ADMIN_PASSWORD.into(),
        project: "admin".into(),
        domain: "Default".into(),
        cacert: Some(set.ca.clone()),
    };
    let status = stratus::status::gather(&creds).await.expect("status over https");
    assert!(status.apis.values().all(Option::is_some), "{:?}", status.apis);
    cloud.shutdown().await;
}
