//! Compute control-plane benchmark with the fake driver (no hypervisor cost):
//!
//! 1. `POST /servers` → ACTIVE latency, sequential boots on one host (p50/p99);
//! 2. scheduler throughput: N fake compute nodes sized so that exactly `capacity` servers
//!    fit, `boots` concurrent creates; counts ACTIVE, ERROR (no valid host) and checks
//!    that placement shows zero overcommit and no leaked allocation;
//! 3. `GET /servers/detail?limit=1000` latency over the servers of (2);
//! 4. scale (issue 6 (3)): `agents` (default 5,000) fake compute agents registered and
//!    heartbeating every 10 s (Nova's `report_interval`), `servers` (default 10,000)
//!    booted on them, then `GET /servers/detail?limit=1000` p50/p99 while the
//!    heartbeats keep coming (`0` agents skips this part).
//!
//! Run: `cargo run -p stratus-compute --example bench [--release] -- [nodes] [boots]
//! [real|memory] [agents] [servers]`.
//! Placement and images are the in-memory implementations of their contracts; the API,
//! conductor, scheduler, bus, agents and SQLite database are the real ones.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use harness::{Cloud, IMAGE};
use serde_json::json;
use stratus_compute_agent::virt::fake::{FakeDriver, FakeDriverConfig};
use stratus_compute_agent::{Agent, AgentConfig};

/// CPU seconds (user + system) this process has used: load-independent cost per boot,
/// where wall-clock rates on a shared machine mostly measure the other tenants.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let boots: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2000);
    // `real`: claims go to the real placement service (REST, in-process, same SQLite).
    let real = args.get(3).map(String::as_str) == Some("real");
    let n_agents: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let n_servers: usize = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    println!("load average at start: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());

    let mut cfg = stratus_compute::ComputeConfig { max_instances_per_host: 100_000, ..harness::test_config() };
    // Experiments: `STRATUS_BENCH_MAX_BUILDS=256` etc. (default: the service's defaults).
    if let Some(n) = std::env::var("STRATUS_BENCH_MAX_BUILDS").ok().and_then(|v| v.parse().ok()) {
        cfg.max_concurrent_builds = n;
    }
    if let Some(n) = std::env::var("STRATUS_BENCH_PLACEMENT_RESULTS").ok().and_then(|v| v.parse().ok()) {
        cfg.max_placement_results = n;
    }
    println!(
        "max_concurrent_builds {}, max_placement_results {}",
        cfg.max_concurrent_builds, cfg.max_placement_results
    );
    // --- 1. latency ---------------------------------------------------------------
    let mut c = Cloud::start_with(0, FakeDriverConfig::default(), cfg.clone()).await;
    let big =
        FakeDriverConfig { vcpus: Some(1024), memory_mb: Some(1 << 20), local_gb: Some(100_000), ..Default::default() };
    c.add_agent("big", FakeDriver::new(big)).await;
    let unlimited = json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}});
    c.call(axum::http::Method::PUT, "/os-quota-sets/pA", "admin", Some(unlimited.clone())).await;
    let (mut api, mut active) = (vec![], vec![]);
    for n in 0..200 {
        let t0 = Instant::now();
        let id = c.boot("alice", &format!("lat{n}"), "42").await;
        api.push(t0.elapsed().as_secs_f64() * 1000.0);
        loop {
            let (_, b) = c.get(&format!("/servers/{id}"), "alice").await;
            if b["server"]["status"] == "ACTIVE" {
                break;
            }
            if b["server"]["status"] == "ERROR" {
                let (_, a) = c.get(&format!("/servers/{id}"), "admin").await;
                panic!("{}", a["server"]["fault"]);
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        active.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!("POST /servers (API only):  p50 {:.2} ms  p99 {:.2} ms", pct(&mut api, 0.5), pct(&mut api, 0.99));
    println!(
        "POST /servers -> ACTIVE:   p50 {:.2} ms  p99 {:.2} ms  (200 sequential boots, status polled every ~1 ms)",
        pct(&mut active, 0.5),
        pct(&mut active, 0.99)
    );
    drop(c);

    // --- 2. scheduler throughput ------------------------------------------------------
    let per_node = boots.div_ceil(nodes) as i64;
    let mut c = if real {
        Cloud::start_with_placement(0, FakeDriverConfig::default(), cfg.clone()).await
    } else {
        Cloud::start_with(0, FakeDriverConfig::default(), cfg.clone()).await
    };
    c.call(axum::http::Method::PUT, "/os-quota-sets/pA", "admin", Some(unlimited)).await;
    let t = Instant::now();
    for n in 0..nodes {
        // Room for exactly `per_node` m1.nano servers (128 MiB each) after the 512 MiB reserve.
        let d = FakeDriver::new(FakeDriverConfig {
            vcpus: Some(64),
            memory_mb: Some(512 + per_node * 128),
            local_gb: Some(10_000),
            ..Default::default()
        });
        c.add_agent(&format!("fake{n:03}"), d).await;
    }
    println!("{nodes} fake compute nodes registered in {:.2} s", t.elapsed().as_secs_f64());
    let capacity = per_node as usize * nodes;
    let total = boots + boots / 20; // 5% more than fits: those must fail cleanly.
    let c = std::sync::Arc::new(c);
    let t = Instant::now();
    let cpu0 = cpu_s();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let c = c.clone();
        tasks.spawn(async move {
            let (s, b) = c
                .post("/servers", "alice", json!({"server": {"name": format!("s{n}"), "flavorRef": "42", "imageRef": IMAGE, "networks": "none"}}))
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
            b["server"]["id"].as_str().unwrap().to_string()
        });
    }
    let mut ids = vec![];
    while let Some(r) = tasks.join_next().await {
        ids.push(r.unwrap());
    }
    let accepted = t.elapsed().as_secs_f64();
    // Wait until nothing is building (a status filter scans the project's servers:
    // polled every 100 ms so the benchmark does not measure its own polling).
    loop {
        let (_, b) = c.get("/servers?limit=1&status=BUILD", "alice").await;
        if b["servers"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = t.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    // `limit` is capped at 1000: count by pages for the real numbers.
    let count = |status: &'static str| {
        let c = c.clone();
        async move {
            let mut n = 0;
            let mut marker = String::new();
            loop {
                let q = if marker.is_empty() {
                    format!("/servers?status={status}&limit=1000")
                } else {
                    format!("/servers?status={status}&limit=1000&marker={marker}")
                };
                let (_, b) = c.get(&q, "alice").await;
                let page = b["servers"].as_array().unwrap();
                n += page.len();
                match page.last() {
                    Some(l) if page.len() == 1000 => marker = l["id"].as_str().unwrap().to_string(),
                    _ => return n,
                }
            }
        }
    };
    let n_active = count("ACTIVE").await;
    let n_error = count("ERROR").await;
    let (over, consumers) = if real {
        let pv = [("OpenStack-API-Version", "placement 1.39")];
        let (_, rps) = c.raw(axum::http::Method::GET, "/placement/resource_providers", &pv).await;
        let mut over = vec![];
        for rp in rps["resource_providers"].as_array().unwrap() {
            let id = rp["uuid"].as_str().unwrap();
            let (_, u) =
                c.raw(axum::http::Method::GET, &format!("/placement/resource_providers/{id}/usages"), &pv).await;
            let (_, i) =
                c.raw(axum::http::Method::GET, &format!("/placement/resource_providers/{id}/inventories"), &pv).await;
            // Every class of every provider: usage within (total - reserved) × ratio.
            for (rc, inv) in i["inventories"].as_object().unwrap() {
                let cap = (inv["total"].as_f64().unwrap() - inv["reserved"].as_f64().unwrap())
                    * inv["allocation_ratio"].as_f64().unwrap();
                if u["usages"][rc].as_f64().unwrap_or(0.0) > cap {
                    over.push(format!("{id}/{rc}"));
                }
            }
        }
        let (_, u) = c.raw(axum::http::Method::GET, "/placement/usages?project_id=pA", &pv).await;
        (over, u["usages"]["all"]["consumer_count"].as_u64().unwrap_or(0) as usize)
    } else {
        (c.placement.overcommitted(), c.placement.consumers().len())
    };
    println!(
        "placement: {}",
        if real {
            "the real service, in-process (typed candidates and claims, REST otherwise)"
        } else {
            "in-memory contract"
        }
    );
    println!(
        "{total} concurrent boots on {nodes} nodes (capacity {capacity}): all accepted in {accepted:.2} s, settled in {settled:.2} s"
    );
    println!(
        "  ACTIVE {n_active}, ERROR (no valid host) {n_error}; placed {:.0} servers/s; overcommitted providers: {}; allocations {consumers} (= ACTIVE: {})",
        n_active as f64 / settled,
        over.len(),
        consumers == n_active
    );
    println!(
        "  process CPU {cpu:.1} s for {total} boots: {:.2} ms CPU per boot (load average now {})",
        cpu * 1000.0 / total as f64,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let (_, errs) = c.get("/servers/detail?status=ERROR&limit=1000&all_tenants=1", "admin").await;
    let mut why: std::collections::BTreeMap<String, usize> = Default::default();
    for e in errs["servers"].as_array().unwrap() {
        let f = &e["fault"];
        let key = format!(
            "{} | {}",
            f["message"].as_str().unwrap_or(""),
            f["details"].as_str().unwrap_or("").chars().take(160).collect::<String>()
        );
        *why.entry(key).or_default() += 1;
    }
    for (k, n) in why {
        println!("  {n:5} x {k}");
    }
    // --- 3. list latency -------------------------------------------------------------
    let mut lat = vec![];
    for _ in 0..30 {
        let t0 = Instant::now();
        let (s, b) = c.get("/servers/detail?limit=1000", "alice").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["servers"].as_array().unwrap().len(), ids.len().min(1000));
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "GET /servers/detail?limit=1000 over {} servers: p50 {:.1} ms  p99 {:.1} ms",
        ids.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    drop(c);

    // --- 4. scale: thousands of agents heartbeating, ten thousand servers ---------------
    if n_agents == 0 {
        return;
    }
    let c = Cloud::start_with_placement(0, FakeDriverConfig::default(), cfg.clone()).await;
    let unlimited = json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}});
    c.call(axum::http::Method::PUT, "/os-quota-sets/pA", "admin", Some(unlimited)).await;
    let per_agent = n_servers.div_ceil(n_agents) as i64 + 1;
    let t = Instant::now();
    let mut handles = Vec::with_capacity(n_agents);
    let mut starting = tokio::task::JoinSet::new();
    for n in 0..n_agents {
        let bus = c.platform.bus.clone();
        starting.spawn(async move {
            let d = FakeDriver::new(FakeDriverConfig {
                vcpus: Some(64),
                memory_mb: Some(512 + per_agent * 128),
                local_gb: Some(10_000),
                ..Default::default()
            });
            let cfg = AgentConfig { host: format!("scale{n:05}"), sync_interval_secs: 3600, ..Default::default() };
            Agent::start(cfg, bus, std::sync::Arc::new(d)).await.unwrap()
        });
        // Registration is a burst of writes: keep a bounded number in flight.
        if starting.len() >= 64 {
            handles.push(starting.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(h) = starting.join_next().await {
        handles.push(h.unwrap());
    }
    println!(
        "{n_agents} fake compute agents registered in {:.1} s (heartbeat every 10 s: {} heartbeats/s)",
        t.elapsed().as_secs_f64(),
        n_agents / 10
    );
    let c = std::sync::Arc::new(c);
    let t = Instant::now();
    let cpu0 = cpu_s();
    let mut tasks = tokio::task::JoinSet::new();
    let mut booted = 0usize;
    for n in 0..n_servers {
        let c = c.clone();
        tasks.spawn(async move {
            let (s, b) = c
                .post("/servers", "alice", json!({"server": {"name": format!("x{n}"), "flavorRef": "42", "imageRef": IMAGE, "networks": "none"}}))
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        });
        if tasks.len() >= 256 {
            tasks.join_next().await.unwrap().unwrap();
            booted += 1;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        booted += 1;
    }
    loop {
        let (_, b) = c.get("/servers?limit=1&status=BUILD", "alice").await;
        if b["servers"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = t.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu0;
    let (_, up) = c.get("/os-services?binary=nova-compute", "admin").await;
    let n_up = up["services"].as_array().map(|a| a.iter().filter(|s| s["state"] == "up").count()).unwrap_or(0);
    println!(
        "{booted} servers booted on {n_agents} agents in {settled:.1} s ({:.0} servers/s, {:.2} ms CPU per boot); services up: {n_up}",
        booted as f64 / settled,
        cpu * 1000.0 / booted as f64
    );
    let mut lat = vec![];
    for _ in 0..40 {
        let t0 = Instant::now();
        let (s, b) = c.get("/servers/detail?limit=1000", "alice").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["servers"].as_array().unwrap().len(), 1000);
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "GET /servers/detail?limit=1000 over {booted} servers, {n_agents} agents heartbeating: p50 {:.1} ms  p99 {:.1} ms",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!("load average at end: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    for h in handles {
        h.stop();
    }
}
