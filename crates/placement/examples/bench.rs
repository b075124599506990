//! Placement benchmark: 10,000 providers (VCPU 64, MEMORY_MB 262144, DISK_GB 4096, a few
//! traits, half of them in aggregates, half partly allocated), then
//! `GET /allocation_candidates` latency (p50/p99) and claim throughput at concurrency 8,
//! all through the real router in-process (as the compute scheduler calls it).
//!
//! `cargo run -p stratus-placement --example bench -- [--providers N] [--queries N]
//! [--claims N] [--concurrency N] [--postgres URL]`; `bench/placement.sh` wraps it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::json;
use stratus_auth::AuthState;
use stratus_core::internal::{InternalCaller, InternalClient};
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use stratus_db::{Db, Query};
use stratus_placement::{PlacementConfig, PlacementService};
use tower::ServiceExt;

struct NoTokens;

#[async_trait::async_trait]
impl TokenValidator for NoTokens {
    async fn validate(&self, _: &str) -> Result<RequestContext, AuthFailure> {
        Err(AuthFailure::Invalid("benchmark uses internal callers".into()))
    }
}

const AGGREGATES: usize = 10;
const TRAIT_SETS: &[&[&str]] = &[
    &["COMPUTE_NODE", "HW_CPU_X86_AVX2", "HW_CPU_X86_SSE42", "STORAGE_DISK_SSD"],
    &["COMPUTE_NODE", "HW_CPU_X86_SSE42", "STORAGE_DISK_HDD"],
    &["COMPUTE_NODE", "HW_CPU_X86_AVX2", "HW_CPU_X86_AVX512F", "STORAGE_DISK_SSD"],
    &["COMPUTE_NODE", "HW_CPU_X86_SSE42", "STORAGE_DISK_SSD", "HW_NIC_SRIOV"],
];

fn agg(i: usize) -> String {
    format!("aaaaaaaa-0000-0000-0000-{:012}", i)
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

async fn flush(db: &Db, sql: &str, rows: &mut Vec<Vec<stratus_db::Arg>>) {
    if rows.is_empty() {
        return;
    }
    let mut q = Query::new(sql);
    for (i, r) in rows.iter().enumerate() {
        q.push(if i == 0 { " (" } else { ", (" });
        for (j, a) in r.iter().enumerate() {
            if j > 0 {
                q.push(", ");
            }
            q.bind(a.clone());
        }
        q.push(")");
    }
    let mut tx = db.begin().await.unwrap();
    q.execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    rows.clear();
}

/// Loads the fixture straight into the tables (the API path is measured separately).
async fn load(db: &Db, n: usize) {
    use stratus_db::Arg::{Float, Int, Text};
    let now = stratus_core::time::now();
    let (mut rps, mut invs, mut traits, mut aggs, mut cons, mut allocs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let u = format!("00000000-0000-0000-0000-{:012}", i);
        rps.push(vec![
            Text(u.clone()),
            Text(format!("cn{i:05}")),
            Int(1),
            Text(u.clone()),
            Text(now.clone()),
            Text(now.clone()),
        ]);
        for (rc, total, ratio) in [("VCPU", 64, 4.0), ("MEMORY_MB", 262_144, 1.0), ("DISK_GB", 4096, 1.0)] {
            invs.push(vec![
                Text(u.clone()),
                Text(rc.into()),
                Int(total),
                Int(0),
                Int(1),
                Int(total),
                Int(1),
                Float(ratio),
            ]);
        }
        for t in TRAIT_SETS[i % TRAIT_SETS.len()] {
            traits.push(vec![Text(u.clone()), Text(t.to_string())]);
        }
        if i % 2 == 0 {
            aggs.push(vec![Text(u.clone()), Text(agg(i / 2 % AGGREGATES))]);
        }
        if i % 4 < 2 {
            let c = format!("cccccccc-0000-0000-0000-{:012}", i);
            cons.push(vec![
                Text(c.clone()),
                Text("p".into()),
                Text("u".into()),
                Text("INSTANCE".into()),
                Int(0),
                Text(now.clone()),
                Text(now.clone()),
            ]);
            for (rc, used) in [("VCPU", 8 + (i % 7) as i64 * 8), ("MEMORY_MB", 65_536), ("DISK_GB", 500)] {
                allocs.push(vec![Text(c.clone()), Text(u.clone()), Text(rc.into()), Int(used), Text(now.clone())]);
            }
        }
        if rps.len() >= 400 || i + 1 == n {
            flush(db, "INSERT INTO placement_resource_providers (uuid, name, generation, root_uuid, created_at, updated_at) VALUES", &mut rps).await;
            flush(db, "INSERT INTO placement_inventories (provider_uuid, resource_class, total, reserved, min_unit, max_unit, step_size, allocation_ratio) VALUES", &mut invs).await;
            flush(db, "INSERT INTO placement_provider_traits (provider_uuid, trait) VALUES", &mut traits).await;
            flush(db, "INSERT INTO placement_provider_aggregates (provider_uuid, aggregate_uuid) VALUES", &mut aggs)
                .await;
            flush(db, "INSERT INTO placement_consumers (uuid, project_id, user_id, consumer_type, generation, created_at, updated_at) VALUES", &mut cons).await;
            flush(db, "INSERT INTO placement_allocations (consumer_uuid, provider_uuid, resource_class, used, created_at) VALUES", &mut allocs).await;
        }
    }
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(path).header("openstack-api-version", "placement 1.39");
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&v).unwrap())
        }
        None => Body::empty(),
    };
    let mut req = b.body(body).unwrap();
    req.extensions_mut().insert(InternalCaller(RequestContext::internal_admin()));
    let resp = router.clone().oneshot(req).await.unwrap();
    let s = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 28).await.unwrap();
    (s, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn latency(router: &Router, label: &str, path: &str, n: usize) {
    let (s, v) = call(router, "GET", path, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let found = v["allocation_requests"].as_array().map(|a| a.len()).unwrap_or(0);
    let mut lats = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (s, _) = call(router, "GET", path, None).await;
        lats.push(t.elapsed());
        assert_eq!(s, StatusCode::OK);
    }
    lats.sort();
    println!(
        "{label:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  ({found} candidates, {n} queries)",
        pct(&lats, 0.5),
        pct(&lats, 0.99)
    );
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = arg("--providers", "10000").parse().unwrap();
    let queries: usize = arg("--queries", "300").parse().unwrap();
    let claims: usize = arg("--claims", "4000").parse().unwrap();
    let conc: usize = arg("--concurrency", "8").parse().unwrap();
    let pg = arg("--postgres", "");
    let dir = tempfile::tempdir().unwrap();
    let url = if pg.is_empty() { format!("sqlite://{}/bench.db", dir.path().display()) } else { pg.clone() };
    let db = Db::connect(&url).await.unwrap();
    if !pg.is_empty() {
        for t in [
            "allocations",
            "consumers",
            "provider_aggregates",
            "provider_traits",
            "inventories",
            "custom_traits",
            "custom_resource_classes",
            "resource_providers",
        ] {
            stratus_db::sqlx::raw_sql(&format!("DROP TABLE IF EXISTS placement_{t} CASCADE"))
                .execute(db.reader())
                .await
                .unwrap();
        }
        stratus_db::sqlx::raw_sql("DELETE FROM stratus_migrations WHERE service = 'placement'")
            .execute(db.reader())
            .await
            .ok();
    }
    db.migrate("placement", stratus_placement::MIGRATIONS).await.unwrap();
    let t = Instant::now();
    load(&db, n).await;
    let loaded = t.elapsed();
    let platform = Platform {
        db: db.clone(),
        bus: Arc::new(stratus_bus::InProcBus::new()),
        public_url: "http://127.0.0.1:5080".into(),
        data_dir: dir.path().to_path_buf(),
        host: "bench".into(),
        internal: InternalClient::default(),
        region: "RegionOne".into(),
    };
    let auth = AuthState { validator: Arc::new(NoTokens), identity_uri: String::new() };
    let t = Instant::now();
    let svc = PlacementService::start(platform, auth, PlacementConfig::default()).await.unwrap();
    let started = t.elapsed();
    let router = svc.router();
    println!(
        "backend {}  providers {n}  fixture load {:.1} s  service start (read model) {:.0} ms",
        if pg.is_empty() { "sqlite" } else { "postgresql" },
        loaded.as_secs_f64(),
        started.as_secs_f64() * 1000.0
    );
    // The read model alone (no HTTP, no JSON), to separate search from serialization.
    for limit in [Some(10), Some(50), None] {
        let q = stratus_placement::index::CandidateQuery {
            groups: vec![stratus_placement::index::Group {
                resources: vec![("VCPU".into(), 2), ("MEMORY_MB".into(), 2048), ("DISK_GB".into(), 20)],
                ..Default::default()
            }],
            limit,
            ..Default::default()
        };
        let mut lats = Vec::new();
        let mut found = 0;
        for _ in 0..if limit.is_some() { queries } else { 20 } {
            let t = Instant::now();
            found = svc.state().index.read().candidates(&q).len();
            lats.push(t.elapsed());
        }
        lats.sort();
        println!(
            "{:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  ({found} candidates)",
            format!("read model search only, limit={limit:?}"),
            pct(&lats, 0.5),
            pct(&lats, 0.99)
        );
    }
    let base = "/allocation_candidates?resources=VCPU:2,MEMORY_MB:2048,DISK_GB:20";
    latency(&router, "candidates limit=50", &format!("{base}&limit=50"), queries).await;
    latency(
        &router,
        "candidates limit=50 +required +member_of",
        &format!("{base}&limit=50&required=HW_CPU_X86_AVX512F&member_of={}", agg(3)),
        queries,
    )
    .await;
    latency(&router, "candidates limit=10", &format!("{base}&limit=10"), queries).await;
    latency(&router, "candidates, no limit (every provider)", base, queries.min(30)).await;

    // Claims: each task schedules like nova: pick a provider, claim for a new consumer.
    let router = Arc::new(router);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (router, next, conflicts) = (router.clone(), next.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            let mut lats = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= claims {
                    break;
                }
                let rp = format!("00000000-0000-0000-0000-{:012}", (i * 7919) % n);
                let body = json!({"allocations": {rp: {"resources": {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10}}},
                    "project_id": "bench", "user_id": "bench", "consumer_generation": null, "consumer_type": "INSTANCE"});
                let c = uuid::Uuid::new_v4();
                let t = Instant::now();
                loop {
                    let (s, v) = call(&router, "PUT", &format!("/allocations/{c}"), Some(body.clone())).await;
                    if s == StatusCode::NO_CONTENT {
                        break;
                    }
                    assert_eq!(s, StatusCode::CONFLICT, "{v}");
                    conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                lats.push(t.elapsed());
            }
            lats
        }));
    }
    let mut lats = Vec::new();
    for t in tasks {
        lats.extend(t.await.unwrap());
    }
    let wall = t.elapsed().as_secs_f64();
    lats.sort();
    println!(
        "claims PUT /allocations, concurrency {conc:<3}          {:>7.0} claims/s  p50 {:.2} ms  p99 {:.2} ms  ({} claims, {} retried conflicts)",
        lats.len() as f64 / wall,
        pct(&lats, 0.5),
        pct(&lats, 0.99),
        lats.len(),
        conflicts.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("RSS {:.0} MiB", rss_mib());
    db.close().await;
}
