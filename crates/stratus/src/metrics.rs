//! The Prometheus endpoint (`[metrics]`, `GET /metrics`): what every request did, what the
//! process holds, and the services' own gauges (placement capacity and usage, servers per
//! host and state).
//!
//! Requests are counted by service (the path's first segment, one of the served
//! prefixes; anything else is `other`, so a scanner cannot blow up the label set), method
//! and status code, with a latency histogram per service. Client requests only: the
//! services' in-process calls to each other are not counted twice. The endpoint is on the
//! API port unless `[metrics] listen` gives it a listener of its own (then only there);
//! it carries no project or user names.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use stratus_core::metrics::{labels, render_gauges, Sample};
use stratus_core::Platform;

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`. Default true.
    pub enabled: bool,
    /// A listener of its own for `/metrics` (e.g. `127.0.0.1:9180`), so it need not be
    /// reachable where the APIs are. Default empty: on the API listener.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: String::new() }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Path prefixes that are services; anything else is counted as `other`.
const SERVICES: [&str; 11] = [
    "identity",
    "image",
    "placement",
    "compute",
    "network",
    "volume",
    "object",
    "orchestration",
    "dashboard",
    "metadata",
    "metrics",
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, &'static str, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
    in_flight: i64,
}

/// The request counters (cheap to clone).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// New counters, the uptime counted from now.
    pub fn new() -> Metrics {
        Metrics { inner: Arc::default(), started: Instant::now() }
    }

    fn observe(&self, service: &'static str, method: &'static str, status: u16, secs: f64) {
        let mut g = self.inner.lock();
        *g.requests.entry((service, method, status)).or_default() += 1;
        let h = g.latency.entry(service).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    fn render_http(&self, out: &mut String) {
        let g = self.inner.lock();
        out.push_str("# HELP stratus_http_requests_total Requests answered, by service, method and status code.\n");
        out.push_str("# TYPE stratus_http_requests_total counter\n");
        for ((service, method, code), n) in &g.requests {
            let l =
                labels(&[("service", service.to_string()), ("method", method.to_string()), ("code", code.to_string())]);
            let _ = writeln!(out, "stratus_http_requests_total{l} {n}");
        }
        out.push_str("# HELP stratus_http_request_duration_seconds Time to the response's headers, by service.\n");
        out.push_str("# TYPE stratus_http_request_duration_seconds histogram\n");
        for (service, h) in &g.latency {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "stratus_http_request_duration_seconds_bucket{{service=\"{service}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "stratus_http_request_duration_seconds_bucket{{service=\"{service}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "stratus_http_request_duration_seconds_sum{{service=\"{service}\"}} {}", h.sum);
            let _ = writeln!(out, "stratus_http_request_duration_seconds_count{{service=\"{service}\"}} {}", h.count);
        }
        out.push_str("# HELP stratus_http_requests_in_flight Requests being answered now.\n");
        out.push_str("# TYPE stratus_http_requests_in_flight gauge\n");
        let _ = writeln!(out, "stratus_http_requests_in_flight {}", g.in_flight);
    }
}

fn service_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    SERVICES.iter().find(|s| **s == first).copied().unwrap_or("other")
}

fn method_of(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware that counts every client request.
pub async fn count(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let (service, method) = (service_of(req.uri().path()), method_of(req.method()));
    let t0 = Instant::now();
    metrics.inner.lock().in_flight += 1;
    let resp = next.run(req).await;
    metrics.inner.lock().in_flight -= 1;
    metrics.observe(service, method, resp.status().as_u16(), t0.elapsed().as_secs_f64());
    resp
}

/// What `/metrics` needs.
#[derive(Clone)]
pub struct Endpoint {
    /// The request counters.
    pub metrics: Metrics,
    /// The cloud (its database, for the services' gauges).
    pub platform: Platform,
}

/// `GET /metrics`.
pub async fn serve(State(ep): State<Endpoint>) -> Response {
    let mut out = String::with_capacity(8192);
    ep.metrics.render_http(&mut out);
    let mut gauges = process_samples(&ep);
    let db = &ep.platform.db;
    for (name, got) in [
        ("placement", stratus_placement::metrics::samples(db).await),
        ("compute", stratus_compute::metrics::samples(db).await),
    ] {
        match got {
            Ok(s) => gauges.extend(s),
            Err(e) => tracing::warn!(error = %e, service = name, "metrics: the service's gauges could not be read"),
        }
    }
    render_gauges(&gauges, &mut out);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

/// The process's own numbers, read from `/proc/self` (Linux).
fn process_samples(ep: &Endpoint) -> Vec<Sample> {
    let mut out = Vec::new();
    let page = 4096.0;
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
    {
        out.push(Sample::new(
            "stratus_process_resident_memory_bytes",
            "Resident memory of the process.",
            vec![],
            rss * page,
        ));
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces): utime is the 14th field.
        if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15; `rest` starts at field 3.
            let cpu = (ticks(11) + ticks(12)) / 100.0;
            out.push(Sample::new(
                "stratus_process_cpu_seconds",
                "User and system CPU time of the process.",
                vec![],
                cpu,
            ));
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push(Sample::new("stratus_process_open_fds", "Open file descriptors.", vec![], fds.count() as f64));
    }
    out.push(Sample::new(
        "stratus_process_uptime_seconds",
        "Seconds since the cloud started.",
        vec![],
        ep.metrics.started.elapsed().as_secs_f64(),
    ));
    let (read, write) = (ep.platform.db.reader(), ep.platform.db.writer_pool());
    for (name, pool) in [("read", read), ("write", write)] {
        out.push(Sample::new(
            "stratus_db_pool_connections",
            "Database connections open, by pool (read and write are one pool on PostgreSQL).",
            vec![("pool", name.into())],
            pool.size() as f64,
        ));
        out.push(Sample::new(
            "stratus_db_pool_idle_connections",
            "Database connections open and idle, by pool.",
            vec![("pool", name.into())],
            pool.num_idle() as f64,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_methods_have_bounded_labels() {
        assert_eq!(service_of("/compute/v2.1/servers"), "compute");
        assert_eq!(service_of("/wp-admin/x.php"), "other");
        assert_eq!(service_of("/"), "other");
        assert_eq!(method_of(&axum::http::Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn the_histogram_is_cumulative() {
        let m = Metrics::new();
        m.observe("image", "GET", 200, 0.003);
        m.observe("image", "GET", 200, 0.3);
        m.observe("image", "POST", 400, 20.0);
        let mut out = String::new();
        m.render_http(&mut out);
        assert!(
            out.contains("stratus_http_requests_total{service=\"image\",method=\"GET\",code=\"200\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("stratus_http_requests_total{service=\"image\",method=\"POST\",code=\"400\"} 1\n"));
        assert!(out.contains("le=\"0.001\"} 0\n"));
        assert!(out.contains("le=\"0.005\"} 1\n"));
        assert!(out.contains("le=\"0.5\"} 2\n"));
        assert!(out.contains("le=\"10\"} 2\n"));
        assert!(out.contains("le=\"+Inf\"} 3\n"));
        assert!(out.contains("stratus_http_request_duration_seconds_count{service=\"image\"} 3\n"));
    }
}
