//! The response recorder: an opt-in tap that appends every JSON API answer the cloud gives
//! to a file, one JSON object per line, so that a whole-cloud run (Tempest, the test kit)
//! can be checked afterwards against OpenStack's API descriptions (`tools/apicheck.py
//! --check-recorded`, docs/conformance.md).
//!
//! It is off unless `[record] path` names a file (`STRATUS_RECORD_PATH`); off, no layer is
//! installed at all. On, it never fails or holds up a request: the middleware only clones
//! the (already buffered) body of a JSON answer and hands it to a bounded queue with
//! `try_send`; a writer task turns queued answers into lines off the request path. What
//! does not fit is counted, never waited for: a body over `max_body_bytes` or of unknown
//! length is recorded without its body, a full queue drops the answer, and the file stops
//! growing at `max_file_bytes`; each of these leaves a marker line, so a checker can tell
//! a complete record from a partial one. The file holds tokens' neighbours (catalogs,
//! application credential secrets): it is a test artifact, not for production clouds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Answers waiting for the writer at most; more are dropped (and counted).
const QUEUE: usize = 256;

/// `[record]`: the response recorder (off by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// File to append one JSON line per JSON API answer to; empty (the default) turns the
    /// recorder off. Holds secrets the APIs return: for test clouds only.
    pub path: String,
    /// Bodies longer than this many bytes are recorded without their body. Default 1 MiB.
    pub max_body_bytes: u64,
    /// The file stops growing at this many bytes (a marker line says so). Default 1 GiB.
    pub max_file_bytes: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig { path: String::new(), max_body_bytes: 1024 * 1024, max_file_bytes: 1024 * 1024 * 1024 }
    }
}

/// One answer on its way to the file.
struct Entry {
    method: Method,
    path: String,
    status: StatusCode,
    versions: Vec<(&'static str, String)>,
    body: Option<Bytes>,
    /// Why the body is absent, when it is.
    skipped: Option<&'static str>,
}

/// Handle the middleware holds; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Entry>,
    max_body: u64,
    dropped: Arc<AtomicU64>,
}

/// Response headers that carry the negotiated microversion.
const VERSION_HEADERS: [&str; 2] = ["openstack-api-version", "x-openstack-nova-api-version"];

impl Recorder {
    /// Opens (appending) the file named by `cfg` and starts the writer task; `None` when the
    /// recorder is off. Must run inside a tokio runtime.
    pub fn start(cfg: &RecordConfig) -> anyhow::Result<Option<Recorder>> {
        if cfg.path.is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(&cfg.path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening the response record {}", path.display()))?;
        let already = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_lines(tokio::fs::File::from_std(file), rx, dropped.clone(), already, cfg.max_file_bytes));
        tracing::warn!(path = %path.display(), "recording every JSON API response (test clouds only: the file holds secrets)");
        Ok(Some(Recorder { tx, max_body: cfg.max_body_bytes, dropped }))
    }
}

/// The middleware: passes the request on, and queues a copy of a JSON answer.
pub async fn record(State(rec): State<Recorder>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let resp = next.run(req).await;
    if !is_json(resp.headers()) {
        return resp;
    }
    let versions =
        VERSION_HEADERS.iter().filter_map(|h| Some((*h, resp.headers().get(*h)?.to_str().ok()?.to_string()))).collect();
    let (parts, body) = resp.into_parts();
    let mut entry = Entry { method, path, status: parts.status, versions, body: None, skipped: None };
    // Only a body whose whole length is known (JSON answers are built in memory) is copied;
    // reading it is then immediate. A streamed one passes through untouched.
    let body = match body.size_hint().exact() {
        Some(n) if n <= rec.max_body => match axum::body::to_bytes(body, n as usize).await {
            Ok(bytes) => {
                entry.body = Some(bytes.clone());
                Body::from(bytes)
            }
            Err(e) => {
                // The body itself failed: the client would have seen the same failure.
                tracing::warn!(error = %e, "response body failed while being recorded");
                entry.skipped = Some("body failed");
                Body::empty()
            }
        },
        Some(_) => {
            entry.skipped = Some("over max_body_bytes");
            body
        }
        None => {
            entry.skipped = Some("streamed");
            body
        }
    };
    if rec.tx.try_send(entry).is_err() {
        rec.dropped.fetch_add(1, Ordering::Relaxed);
    }
    Response::from_parts(parts, body)
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().ends_with("json"))
}

/// The line for one answer: `{"service", "method", "path", "status", "versions", "body"}`,
/// where `service` is the first path segment (`identity`, `compute`, ...), `versions` the
/// microversion headers of the answer, and `body` the JSON value (or, when it is not valid
/// JSON, `body_text` with the text; when it was not recorded, `body_skipped` with why).
fn line(e: Entry) -> Vec<u8> {
    let service = e.path.trim_start_matches('/').split(['/', '?']).next().unwrap_or("").to_string();
    let mut obj = serde_json::Map::new();
    obj.insert("service".into(), service.into());
    obj.insert("method".into(), e.method.as_str().into());
    obj.insert("path".into(), e.path.into());
    obj.insert("status".into(), e.status.as_u16().into());
    let versions: serde_json::Map<_, _> = e.versions.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
    obj.insert("versions".into(), versions.into());
    match (e.body, e.skipped) {
        (Some(b), _) if b.is_empty() => {
            obj.insert("body_skipped".into(), "empty".into());
        }
        (Some(b), _) => match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(v) => {
                obj.insert("body".into(), v);
            }
            Err(_) => {
                obj.insert("body_text".into(), String::from_utf8_lossy(&b).into_owned().into());
            }
        },
        (None, why) => {
            obj.insert("body_skipped".into(), why.unwrap_or("unknown").into());
        }
    }
    let mut out = serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The writer task: one line per answer, flushed whenever the queue runs empty; marker
/// lines for dropped answers and for the size cap.
async fn write_lines(
    file: tokio::fs::File,
    mut rx: mpsc::Receiver<Entry>,
    dropped: Arc<AtomicU64>,
    mut written: u64,
    max_file: u64,
) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut reported_drops = 0;
    let mut full = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(e) = next.take() {
            if full {
                break;
            }
            let mut bytes = Vec::new();
            let now_dropped = dropped.load(Ordering::Relaxed);
            if now_dropped > reported_drops {
                bytes.extend_from_slice(format!("{{\"dropped\":{}}}\n", now_dropped - reported_drops).as_bytes());
                reported_drops = now_dropped;
            }
            bytes.extend(line(e));
            if written + bytes.len() as u64 > max_file {
                full = true;
                bytes = b"{\"file_full\":true}\n".to_vec();
                tracing::warn!("response record reached [record] max_file_bytes; no more answers are recorded");
            }
            if let Err(err) = out.write_all(&bytes).await {
                tracing::warn!(error = %err, "writing the response record failed; recording stops");
                return;
            }
            written += bytes.len() as u64;
            next = rx.try_recv().ok();
        }
        if out.flush().await.is_err() || full {
            // Keep draining so senders never see a closed queue as anything but a drop.
            while rx.recv().await.is_some() {}
            return;
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app(rec: Recorder) -> Router {
        Router::new()
            .route(
                "/compute/v2.1/flavors",
                get(|| async {
                    ([("openstack-api-version", "compute 2.1")], axum::Json(serde_json::json!({"flavors": []})))
                }),
            )
            .route("/image/v2/images/x/file", get(|| async { "raw bytes" }))
            .route("/image/big", get(|| async { axum::Json(serde_json::json!({"x": "y".repeat(100)})) }))
            .layer(axum::middleware::from_fn_with_state(rec, record))
    }

    async fn lines_after(cfg: &RecordConfig, uris: &[&str]) -> Vec<serde_json::Value> {
        let rec = Recorder::start(cfg).unwrap().unwrap();
        for uri in uris {
            let resp = app(rec.clone()).oneshot(Request::get(*uri).body(Body::empty()).unwrap()).await.unwrap();
            // The client still gets the whole body.
            assert!(!axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().is_empty());
        }
        drop(rec);
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let text = std::fs::read_to_string(&cfg.path).unwrap_or_default();
            let lines: Vec<_> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if lines.len() >= uris.len() - 1 {
                return lines;
            }
        }
        panic!("the record never got its lines");
    }

    #[tokio::test]
    async fn json_answers_are_recorded_with_versions_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecordConfig {
            path: dir.path().join("r.jsonl").display().to_string(),
            max_body_bytes: 50,
            ..Default::default()
        };
        let lines =
            lines_after(&cfg, &["/compute/v2.1/flavors?limit=1", "/image/v2/images/x/file", "/image/big"]).await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["service"], "compute");
        assert_eq!(lines[0]["method"], "GET");
        assert_eq!(lines[0]["path"], "/compute/v2.1/flavors?limit=1");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["versions"]["openstack-api-version"], "compute 2.1");
        assert_eq!(lines[0]["body"], serde_json::json!({"flavors": []}));
        assert_eq!(lines[1]["path"], "/image/big");
        assert_eq!(lines[1]["body_skipped"], "over max_body_bytes");
        assert!(lines[1].get("body").is_none());
    }

    #[tokio::test]
    async fn the_file_stops_at_its_cap_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RecordConfig {
            path: dir.path().join("r.jsonl").display().to_string(),
            max_file_bytes: 200,
            ..Default::default()
        };
        let uris = ["/compute/v2.1/flavors"; 6];
        let rec = Recorder::start(&cfg).unwrap().unwrap();
        for uri in uris {
            let resp = app(rec.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "a full record never fails a request");
        }
        let mut text = String::new();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            text = std::fs::read_to_string(&cfg.path).unwrap();
            if text.contains("file_full") {
                break;
            }
        }
        assert!(text.ends_with("{\"file_full\":true}\n"), "{text}");
        assert!(text.len() <= 200 + 20, "{}", text.len());
    }

    #[test]
    fn off_by_default() {
        assert!(Recorder::start(&RecordConfig::default()).unwrap().is_none());
    }
}
