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
