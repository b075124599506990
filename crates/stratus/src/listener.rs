//! The API listener: accepts connections and serves HTTP/1.1 with every resource a
//! client can hold bounded.
//!
//! `axum::serve` accepts every connection and waits for each request's headers forever,
//! so a client sending one header line every ten seconds kept its connection (and task,
//! and buffers) for as long as it liked, and nothing capped how many such connections or
//! requests were open. Here:
//!
//! - **Header deadline.** A request's head must arrive whole within
//!   `header_read_timeout_secs` of the connection becoming ready to read it. The same
//!   deadline closes keep-alive connections idle between requests (hyper arms it as soon
//!   as it waits for the next head), so it is also the keep-alive idle timeout.
//! - **Body idle deadline.** A request body that produces no data for
//!   `body_idle_timeout_secs` fails the request (a slow upload that keeps moving is fine).
//! - **Connection cap.** At most `max_connections` connections are served at once; one
//!   more is answered `503` with `Retry-After` and closed at once, never left hanging.
//!   The cap is lowered to fit the process's file-descriptor limit.
//! - **In-flight cap.** At most `max_in_flight` requests run at once; the next one gets
//!   `503` + `Retry-After` in the fault format of the service it addressed.
//! - HTTP/2 is not served (OpenStack clients speak HTTP/1.1), so it needs no stream limits.
//!
//! Shutdown stops accepting, asks every connection to finish its current request and
//! close, and waits for them (the caller bounds the wait with its grace period).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use stratus_core::{ApiError, FaultFormat};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt};

/// `[server]` keys that bound what clients can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Seconds a request's head may take to arrive whole, and the longest a keep-alive
    /// connection may sit idle between requests.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may go without sending data.
    pub body_idle_timeout_secs: u64,
    /// Connections served at once; more are refused with 503.
    pub max_connections: usize,
    /// Requests in progress at once; more are refused with 503.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            max_connections: 10_000,
            max_in_flight: 1024,
        }
    }
}

/// File descriptors kept for everything that is not a client connection (database,
/// guests' QMP sockets, taps, logs...).
const RESERVED_FDS: u64 = 512;

/// `max_connections` lowered so that connections can never exhaust the process's
/// descriptors (accept failing with EMFILE would refuse everyone, silently).
pub fn effective_max_connections(configured: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let fit = soft.saturating_sub(RESERVED_FDS).max(64);
    configured.min(usize::try_from(fit).unwrap_or(usize::MAX)).max(1)
}

/// The service every connection is served by: the whole API.
pub type App = tower::util::BoxCloneSyncService<Request, Response, Infallible>;

/// Serves `app` on `listener` until `shutdown` turns true; over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_connections = effective_max_connections(limits.max_connections);
    if max_connections < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            max_connections,
            "server.max_connections lowered to fit the open-file limit (raise `ulimit -n` / LimitNOFILE to serve more)"
        );
    }
    let connections = Arc::new(Semaphore::new(max_connections));
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)))
        .keep_alive(true);
    let body_idle = Duration::from_secs(limits.body_idle_timeout_secs.max(1));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE and aborted handshakes: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = per_connection(app.clone(), peer, in_flight.clone(), body_idle);
        let (http, stop, tls) = (http.clone(), shutdown.clone(), tls.clone());
        let handshake = Duration::from_secs(limits.header_read_timeout_secs.max(1));
        tokio::spawn(async move {
            match tls {
                None => drive(&http, TokioIo::new(stream), svc, stop, peer).await,
                // The handshake gets the header deadline: a silent client holds no longer.
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => drive(&http, TokioIo::new(tls), svc, stop, peer).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it is gone.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = connections.acquire_many(all).await;
}

/// Serves one connection until it ends; on shutdown, finishes the request in progress
/// and closes.
async fn drive<I, S>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    svc: S,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body> + Send,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http.serve_connection(io, svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = stopped(&mut stop) => None,
    };
    let ended = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once shutdown is requested (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The service for one connection: records the peer (for per-source limits), bounds
/// body idleness, and admits the request against the in-flight cap.
fn per_connection(
    app: App,
    peer: SocketAddr,
    in_flight: Arc<Semaphore>,
    body_idle: Duration,
) -> hyper_util::service::TowerToHyperService<
    impl Service<hyper::Request<hyper::body::Incoming>, Response = Response, Error = Infallible, Future = impl Send>
        + Clone
        + Send,
> {
    let svc = tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let admitted = in_flight.clone().try_acquire_owned();
        async move {
            let mut req = req.map(|b| Body::new(tower_http::timeout::TimeoutBody::new(body_idle, b)));
            let Ok(permit) = admitted else {
                return Ok::<_, Infallible>(busy(req.uri().path(), "Too many requests in progress"));
            };
            req.extensions_mut().insert(ConnectInfo(peer));
            let resp = app.oneshot(req).await;
            let _permit: OwnedSemaphorePermit = permit;
            resp
        }
    });
    hyper_util::service::TowerToHyperService::new(svc)
}

/// The fault format of the service `path` addresses (the top-level prefixes of the
/// one listener); Keystone's for anything else.
fn format_for(path: &str) -> FaultFormat {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "compute" | "metadata" => FaultFormat::Nova,
        "volume" => FaultFormat::Cinder,
        "network" => FaultFormat::Neutron,
        "placement" => FaultFormat::Placement,
        "image" => FaultFormat::Glance,
        "object" => FaultFormat::Swift,
        "orchestration" => FaultFormat::Heat,
        _ => FaultFormat::Keystone,
    }
}

/// 503 with `Retry-After: 1`, in the addressed service's fault format.
fn busy(path: &str, why: &str) -> Response {
    let err = ApiError::unavailable(format!("{why}; retry shortly")).with_retry_after(1);
    let (body, ctype) = err.render(format_for(path), "");
    let bytes = match body {
        serde_json::Value::String(s) if ctype.starts_with("text/") => s.into_bytes(),
        v => serde_json::to_vec(&v).unwrap_or_default(),
    };
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, bytes).into_response();
    r.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Answers a connection over the cap with a complete 503 and closes it, without reading
/// its request (it may never send one). Bounded to a second.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"error": {"code": 503, "title": "Service Unavailable", "message": "Too many connections; retry shortly"}}"#;
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(msg.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::AsyncReadExt;

    /// A listener with `limits` over a tiny app: `/wait` blocks until `gate` is notified,
    /// `/upload` reads its whole body.
    async fn start(
        limits: Limits,
    ) -> (SocketAddr, Arc<tokio::sync::Notify>, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let router = axum::Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/wait",
                get(move || {
                    let g = g.clone();
                    async move {
                        g.notified().await;
                        "done"
                    }
                }),
            )
            .route("/upload", post(|b: axum::body::Bytes| async move { b.len().to_string() }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, tower::util::BoxCloneSyncService::new(router), limits, None, rx));
        (addr, gate, tx, task)
    }

    /// Reads until EOF or `limit`; `None` when the peer never closed.
    async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
            Err(_) => None,
        }
    }

    fn quick(limits: Limits) -> Limits {
        Limits { header_read_timeout_secs: 1, body_idle_timeout_secs: 1, ..limits }
    }

    #[tokio::test]
    async fn a_client_dribbling_headers_is_cut_off_at_the_deadline() {
        let (addr, _, _tx, _) = start(quick(Limits::default())).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        let t = std::time::Instant::now();
        let mut closed = false;
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes()).await.is_err() {
                closed = true;
                break;
            }
        }
        if !closed {
            closed = read_to_close(&mut s, Duration::from_secs(5)).await.is_some();
        }
        assert!(closed, "the dribbling client still held its connection after {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, _, _tx, _) = start(quick(Limits::default())).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(10)).await.expect("closed after idling");
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503_at_once_and_the_rest_are_served() {
        let (addr, _, _tx, _) = start(Limits { max_connections: 2, ..Limits::default() }).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let got = read_to_close(&mut c, Duration::from_secs(5)).await.expect("refused promptly");
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        assert!(got.contains("Retry-After: 1"), "{got}");
        drop(_a);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut d = TcpStream::connect(addr).await.unwrap();
        d.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let got = read_to_close(&mut d, Duration::from_secs(5)).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "a freed slot serves again: {got}");
    }

    #[tokio::test]
    async fn requests_over_the_in_flight_cap_get_503_in_the_services_format() {
        let (addr, gate, _tx, _) = start(Limits { max_in_flight: 1, ..Limits::default() }).await;
        let url = format!("http://{addr}");
        let first = tokio::spawn(reqwest::get(format!("{url}/wait")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = reqwest::get(format!("{url}/compute/v2.1/servers")).await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["serviceUnavailable"]["code"], 503, "{body}");
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap().text().await.unwrap(), "done");
        assert_eq!(reqwest::get(format!("{url}/ok")).await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn a_stalled_body_fails_the_request_instead_of_holding_it() {
        let (addr, _, _tx, _) = start(quick(Limits::default())).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789").await.unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(10)).await.expect("answered and closed");
        assert!(got.starts_with("HTTP/1.1 4"), "{got}");
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_progress_finish() {
        let (addr, gate, tx, task) = start(Limits::default()).await;
        let first = tokio::spawn(reqwest::get(format!("http://{addr}/wait")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap().text().await.unwrap(), "done");
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve returns").unwrap();
    }

    #[test]
    fn busy_answers_in_the_addressed_services_format() {
        assert_eq!(format_for("/compute/v2.1/servers"), FaultFormat::Nova);
        assert_eq!(format_for("/network/v2.0/ports"), FaultFormat::Neutron);
        assert_eq!(format_for("/identity/v3"), FaultFormat::Keystone);
        assert_eq!(format_for("/"), FaultFormat::Keystone);
        let r = busy("/compute/v2.1/servers", "Too many requests in progress");
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
    }

    #[test]
    fn the_connection_cap_fits_the_descriptor_limit() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        let got = effective_max_connections(usize::MAX);
        assert!(got as u64 <= soft.saturating_sub(RESERVED_FDS).max(64), "{got} vs soft limit {soft}");
        assert_eq!(effective_max_connections(10), 10);
    }
}
