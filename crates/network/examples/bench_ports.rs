//! Port-creation benchmark (issue 7's performance section).
//!
//! 1. Throughput: `BENCH_PORTS` (default 4000) ports created by 8 concurrent clients on
//!    one network with one /16 subnet; every address checked unique.
//! 2. Last address of a nearly full /24: 252 of 253 pool addresses taken, then the time to
//!    create a port that gets the last one (repeated by deleting and re-creating it), next
//!    to the time of a port on an empty /24 — equal times mean no scan of addresses.
//!
//! Requests go through the full service stack (auth layer, fault layer, handlers, DB) via
//! `tower::ServiceExt::oneshot`, i.e. everything but the TCP socket. SQLite by default;
//! `BENCH_DB_URL=postgres://...` for PostgreSQL. Run:
//! `cargo run --release -p stratus-network --example bench_ports`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use serde_json::{json, Value};
use stratus_auth::AuthState;
use stratus_core::internal::{InternalCaller, InternalClient};
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use stratus_db::Db;
use stratus_network::{NetworkConfig, NetworkService};
use tower::ServiceExt;

struct NoTokens;

#[async_trait]
impl TokenValidator for NoTokens {
    async fn validate(&self, _token: &str) -> Result<RequestContext, AuthFailure> {
        Err(AuthFailure::Invalid("in-process only".into()))
    }
}

fn admin() -> RequestContext {
    RequestContext {
        user_id: "admin".into(),
        project_id: Some("bench".into()),
        roles: vec!["admin".into(), "member".into()],
        ..Default::default()
    }
}

async fn call(r: &Router, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut b = Request::builder().method(method).uri(format!("/network{path}"));
    let body = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut req = b.body(body).expect("request");
    req.extensions_mut().insert(InternalCaller(admin()));
    let resp = r.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn network_with_subnet(r: &Router, cidr: &str) -> String {
    let (s, n) = call(r, Method::POST, "/v2.0/networks", Some(json!({"network": {"name": cidr}}))).await;
    assert_eq!(s, 201, "{n}");
    let nid = n["network"]["id"].as_str().expect("id").to_string();
    let (s, b) = call(
        r,
        Method::POST,
        "/v2.0/subnets",
        Some(json!({"subnet": {"network_id": nid, "cidr": cidr, "ip_version": 4}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    nid
}

async fn port(r: &Router, nid: &str) -> (String, String) {
    let (s, p) = call(r, Method::POST, "/v2.0/ports", Some(json!({"port": {"network_id": nid}}))).await;
    assert_eq!(s, 201, "{p}");
    (
        p["port"]["id"].as_str().unwrap_or("").to_string(),
        p["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap_or("").to_string(),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = std::env::var("BENCH_DB_URL").unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.path().display()));
    let total: usize = std::env::var("BENCH_PORTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let db = Db::connect(&url).await?;
    let platform = Platform {
        db,
        bus: Arc::new(stratus_bus::InProcBus::new()),
        public_url: "http://bench".into(),
        data_dir: dir.path().to_path_buf(),
        host: "bench".into(),
        internal: InternalClient::default(),
        region: "RegionOne".into(),
    };
    let auth = AuthState { validator: Arc::new(NoTokens), identity_uri: "http://bench/identity".into() };
    let svc = NetworkService::start(platform, auth, NetworkConfig::default()).await?;
    let r = Router::new().nest("/network", svc.router());
    let (s, _) =
        call(&r, Method::PUT, "/v2.0/quotas/bench", Some(json!({"quota": {"port": -1, "network": -1, "subnet": -1}})))
            .await;
    assert_eq!(s, 200);
    println!("backend: {}", if url.starts_with("postgres") { "PostgreSQL" } else { "SQLite" });

    // 1. Throughput at concurrency 8 on one /16.
    let nid = network_with_subnet(&r, "10.128.0.0/16").await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (r, nid) = (r.clone(), nid.clone());
        let n = total / 8 + usize::from(w < total % 8);
        tasks.push(tokio::spawn(async move {
            let mut ips = Vec::with_capacity(n);
            for _ in 0..n {
                ips.push(port(&r, &nid).await.1);
            }
            ips
        }));
    }
    let mut ips = Vec::new();
    for t in tasks {
        ips.extend(t.await?);
    }
    let elapsed = start.elapsed();
    let unique: HashSet<&String> = ips.iter().collect();
    println!(
        "throughput: {} ports in {:.2} s at concurrency 8 = {:.0} ports/s; duplicate IPs: {}",
        ips.len(),
        elapsed.as_secs_f64(),
        ips.len() as f64 / elapsed.as_secs_f64(),
        ips.len() - unique.len()
    );
    assert_eq!(unique.len(), ips.len(), "duplicate addresses handed out");

    // 2. Last free address of a nearly full /24 vs a port on an empty /24.
    let empty = network_with_subnet(&r, "10.200.1.0/24").await;
    let mut fresh = Vec::new();
    for _ in 0..25 {
        let t = Instant::now();
        let (id, _) = port(&r, &empty).await;
        fresh.push(t.elapsed());
        call(&r, Method::DELETE, &format!("/v2.0/ports/{id}"), None).await;
    }
    let full = network_with_subnet(&r, "10.200.2.0/24").await;
    for _ in 0..252 {
        port(&r, &full).await;
    }
    let mut last = Vec::new();
    let mut last_ip = String::new();
    for _ in 0..25 {
        let t = Instant::now();
        let (id, ip) = port(&r, &full).await;
        last.push(t.elapsed());
        last_ip = ip;
        let (s, _) = call(&r, Method::DELETE, &format!("/v2.0/ports/{id}"), None).await;
        assert_eq!(s, 204);
    }
    port(&r, &full).await;
    let (s, b) = call(&r, Method::POST, "/v2.0/ports", Some(json!({"port": {"network_id": full}}))).await;
    assert_eq!(s, 409, "the /24 is full now: {b}");
    println!(
        "nearly full /24: last free address ({last_ip}) allocated in median {:.2} ms; empty /24 first address: median {:.2} ms; full /24 then refuses with {}",
        median(last).as_secs_f64() * 1000.0,
        median(fresh).as_secs_f64() * 1000.0,
        b["NeutronError"]["type"].as_str().unwrap_or("?")
    );
    Ok(())
}
