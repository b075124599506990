//! Graphical (VNC) consoles, Nova's `nova-novncproxy` inside the one listener.
//!
//! Owns three things, so the API handlers stay thin:
//! - [`ConsoleTokens`]: the one-time tokens `POST /servers/{id}/remote-consoles` hands
//!   out. A token is bound to its server and the host it ran on when issued, is consumed
//!   by the first websocket that presents it, expires after `token_ttl_secs`
//!   (Nova's `[consoleauth] token_ttl`, 600 s), and dies with its server (deletes revoke
//!   every token of the server; a server found deleted or on another host when the token
//!   is redeemed refuses it too).
//! - the noVNC web client: Debian's `novnc` package files (`/usr/share/novnc`), served
//!   read-only under `/compute/novnc/`. Under `/compute` rather than a port of its own
//!   (Nova's 6080) because Stratus is one listener; under `novnc/` so the page's relative
//!   imports (`core/rfb.js`, `app/...`) resolve inside the same mount.
//! - the websocket proxy, `GET /compute/novnc/websockify?token=…`: checks the token
//!   before the upgrade (401 with the reason otherwise), connects to the guest's VNC
//!   server (a unix socket for the local QEMU driver, or TCP host:port), answers the
//!   `binary` subprotocol noVNC may offer, then relays bytes both ways until either side
//!   closes, and closes the other.
//!
//! The URL handed out is `…/compute/novnc/vnc_lite.html?path=<websocket path>`: noVNC
//! builds its websocket URL as `ws[s]://<page host>:<page port>/<path>`, so `path` carries
//! the proxy's path (relative to the host) and the token. `vnc_lite.html` connects on
//! load (Debian's `vnc_auto.html` is a link to `vnc.html`, which waits for a click).
//!
//! These routes sit outside the token middleware: a browser has no Keystone token; the
//! console token is the credential.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use stratus_compute_agent::virt::VncConsole;
use stratus_core::{ApiError, QueryPairs};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::servers::store;
use crate::state::vm;
use crate::AppState;

/// `[compute.vnc]`: the console proxy and the noVNC web client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VncConfig {
    /// Directory holding noVNC's web client (default `/usr/share/novnc`, where Debian's
    /// `novnc` package installs it).
    pub novnc_dir: PathBuf,
    /// The noVNC page console URLs open, relative to `novnc_dir` (default `vnc_lite.html`,
    /// which connects on load).
    pub novnc_page: String,
    /// Seconds a console token stays valid after it is issued (default 600, Nova's
    /// `[consoleauth] token_ttl`).
    pub token_ttl_secs: u64,
    /// Extra browser origins (`host` or `host:port`) allowed to open the websocket, besides
    /// the host the request was sent to and the cloud's public URL (Nova's
    /// `[console] allowed_origins`; default none).
    pub allowed_origins: Vec<String>,
}

impl Default for VncConfig {
    fn default() -> Self {
        VncConfig {
            novnc_dir: PathBuf::from("/usr/share/novnc"),
            novnc_page: "vnc_lite.html".into(),
            token_ttl_secs: 600,
            allowed_origins: vec![],
        }
    }
}

/// Why a console request was refused; each maps once to a status.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// 401: no token in the request.
    #[error("No console token: open the URL `openstack console url show` returns")]
    NoToken,
    /// 401: never issued, or forgotten (deleted server, restarted cloud).
    #[error("The console token is unknown or was revoked; ask for a new console URL")]
    UnknownToken,
    /// 401: already consumed by an earlier connection.
    #[error("The console token was already used; console tokens are good for one connection")]
    UsedToken,
    /// 401: past its TTL.
    #[error("The console token expired; ask for a new console URL")]
    ExpiredToken,
    /// 401: the server the token was issued for is gone or moved.
    #[error("The console token is no longer valid: {0}")]
    Stale(String),
    /// 403: a page of another site tried to open the console (cross-site websocket).
    #[error("Origin {0} is not allowed to open consoles of this cloud")]
    Origin(String),
    /// 400: not a websocket handshake.
    #[error("This is the console websocket: connect with a websocket client such as noVNC ({0})")]
    NotWebsocket(String),
    /// 404: no such file in the noVNC directory (or a path escaping it).
    #[error("No such noVNC file: {0}")]
    NoFile(String),
    /// 503: noVNC is not installed.
    #[error(
        "The noVNC web client is not installed: {0} has no {1}. Install Debian's `novnc` package \
         (scripts/install-host-packages.sh) or set [compute.vnc] novnc_dir"
    )]
    NoNovnc(String, String),
    /// 503: the guest's VNC server does not answer.
    #[error("The console of server {0} cannot be reached: {1}")]
    Unreachable(String, String),
    /// 409: the server cannot show a console now.
    #[error("Instance {0} is not ready for a console (vm_state {1})")]
    NotReady(String, String),
    /// Reading the server failed (mapped as compute maps it).
    #[error(transparent)]
    Db(#[from] crate::error::ComputeError),
}

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> ApiError {
        let status = match &e {
            ConsoleError::NoToken
            | ConsoleError::UnknownToken
            | ConsoleError::UsedToken
            | ConsoleError::ExpiredToken
            | ConsoleError::Stale(_) => StatusCode::UNAUTHORIZED,
            ConsoleError::Origin(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotWebsocket(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NoFile(_) => StatusCode::NOT_FOUND,
            ConsoleError::NoNovnc(..) | ConsoleError::Unreachable(..) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::NotReady(..) => StatusCode::CONFLICT,
            ConsoleError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ConsoleError::Db(d) = e {
            return ApiError::from(d);
        }
        ApiError::new(status, e.to_string())
    }
}

/// What a token grants: the VNC endpoint of one server on one host.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Server uuid.
    pub instance: String,
    /// Host the server ran on when the token was issued.
    pub host: String,
    /// Where its VNC server listens.
    pub endpoint: VncConsole,
    expires: Instant,
    used: bool,
}

/// The one-time console tokens of this process (Nova's console auth tokens).
///
/// In memory: the proxy that redeems a token is the process that issued it, and a
/// restart forgetting them only means asking for a new URL.
pub struct ConsoleTokens {
    ttl: Duration,
    grants: Mutex<HashMap<String, Grant>>,
    sessions: Arc<AtomicUsize>,
}

impl ConsoleTokens {
    /// Tokens valid for `ttl` after issue.
    pub fn new(ttl: Duration) -> Self {
        ConsoleTokens { ttl, grants: Mutex::default(), sessions: Arc::default() }
    }

    /// A new token for `instance` (on `host`) reaching `endpoint`.
    pub fn issue(&self, instance: &str, host: &str, endpoint: VncConsole) -> String {
        self.issue_at(instance, host, endpoint, Instant::now())
    }

    fn issue_at(&self, instance: &str, host: &str, endpoint: VncConsole, now: Instant) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let grant =
            Grant { instance: instance.into(), host: host.into(), endpoint, expires: now + self.ttl, used: false };
        let mut g = self.grants.lock();
        // Expired grants go when new ones come, so the map is bounded by the issue rate.
        g.retain(|_, v| v.expires > now);
        g.insert(token.clone(), grant);
        token
    }

    /// Consumes a token. A used token stays known (refused as used) until it expires.
    pub fn redeem(&self, token: &str) -> Result<Grant, ConsoleError> {
        self.redeem_at(token, Instant::now())
    }

    fn redeem_at(&self, token: &str, now: Instant) -> Result<Grant, ConsoleError> {
        let mut g = self.grants.lock();
        let grant = g.get_mut(token).ok_or(ConsoleError::UnknownToken)?;
        if grant.expires <= now {
            g.remove(token);
            return Err(ConsoleError::ExpiredToken);
        }
        if grant.used {
            return Err(ConsoleError::UsedToken);
        }
        grant.used = true;
        Ok(grant.clone())
    }

    /// Forgets every token of `instance` (it was deleted or moved); returns how many.
    pub fn revoke_instance(&self, instance: &str) -> usize {
        let mut g = self.grants.lock();
        let before = g.len();
        g.retain(|_, v| v.instance != instance);
        before - g.len()
    }

    /// Console connections being relayed right now.
    pub fn active_sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

/// Counts a relayed connection for as long as it lives.
struct SessionGuard(Arc<AtomicUsize>);

impl SessionGuard {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        SessionGuard(n.clone())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a server in `vm_state` has a running guest whose VNC server answers (a paused
/// QEMU still serves its frozen screen).
pub fn console_ready(vm_state: &str) -> bool {
    matches!(vm_state, vm::ACTIVE | vm::RESCUED | vm::PAUSED)
}

/// The console URL of `token`: the noVNC page, told (through `path`) to open our websocket.
pub fn console_url(public_url: &str, cfg: &VncConfig, token: &str) -> String {
    let base = public_url.trim_end_matches('/');
    // noVNC joins `path` to the page's host, so it needs the public URL's own path
    // prefix (a cloud behind a reverse proxy at https://x/cloud) as well.
    let prefix = base.split_once("://").map(|(_, rest)| rest).and_then(|r| r.split_once('/')).map(|(_, p)| p);
    let ws_path = match prefix {
        Some(p) if !p.is_empty() => format!("{p}/compute/novnc/websockify?token={token}"),
        _ => format!("compute/novnc/websockify?token={token}"),
    };
    format!("{base}/compute/novnc/{}?path={}", cfg.novnc_page, stratus_core::query::encode(&ws_path))
}

/// Routes, mounted under `/compute` outside the token middleware.
pub fn routes() -> Router<AppState> {
    Router::new().route("/novnc/websockify", get(websockify)).route("/novnc/{*file}", get(novnc_file))
}

/// `GET /compute/novnc/{file}`: a file of the noVNC web client.
async fn novnc_file(
    State(st): State<AppState>,
    file: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let file = file.map_err(|e| ConsoleError::NoFile(e.body_text()))?.0;
    let cfg = &st.cfg.vnc;
    if !cfg.novnc_dir.join(&cfg.novnc_page).is_file() {
        return Err(ConsoleError::NoNovnc(cfg.novnc_dir.display().to_string(), cfg.novnc_page.clone()).into());
    }
    let path = safe_join(&cfg.novnc_dir, &file).ok_or_else(|| ConsoleError::NoFile(file.clone()))?;
    let body = tokio::fs::read(&path).await.map_err(|_| ConsoleError::NoFile(file.clone()))?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path))),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    Ok((headers, body).into_response())
}

/// `root/rel` when `rel` names a regular file inside `root` (after symlinks), else None.
///
/// Only plain components are accepted (no `..`, `.`, absolute paths or backslashes; the
/// router has already percent-decoded, so `%2e%2e` arrives here as `..`), and the
/// resolved path must stay under the resolved root, so a link cannot lead out either.
fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let full = root.join(rel).canonicalize().ok()?;
    (full.starts_with(&root) && full.is_file()).then_some(full)
}

/// Content types of what the noVNC package ships.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "ttf" => "font/ttf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "mp3" => "audio/mpeg",
        "oga" | "ogg" => "audio/ogg",
        "md" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The host (and port) part of an origin or Host header, lowercased.
fn authority(s: &str) -> String {
    let s = s.split_once("://").map(|(_, r)| r).unwrap_or(s);
    s.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// Nova's origin check: a browser page may open the console only from this cloud's own
/// address (or an allowed one), so another site cannot ride a leaked URL in the
/// background. Clients that send no Origin (not browsers) are not concerned.
fn check_origin(headers: &HeaderMap, public_url: &str, cfg: &VncConfig) -> Result<(), ConsoleError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let o = authority(origin);
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(authority);
    let strip_port = |a: &str| a.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_else(|| a.to_string());
    let ok = host.as_deref() == Some(o.as_str())
        || authority(public_url) == o
        || cfg.allowed_origins.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a == o || a == strip_port(&o)
        });
    if ok {
        Ok(())
    } else {
        Err(ConsoleError::Origin(origin.to_string()))
    }
}

/// `GET /compute/novnc/websockify?token=…`: the websocket proxy.
async fn websockify(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: QueryPairs,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| ConsoleError::NotWebsocket(e.body_text()))?;
    check_origin(&headers, &st.platform.public_url, &st.cfg.vnc)?;
    let token = q.get("token").filter(|t| !t.is_empty()).ok_or(ConsoleError::NoToken)?;
    let tokens = &st.conductor.consoles;
    let grant = tokens.redeem(token)?;
    let inst = store::load(&st.platform.db, &grant.instance).await?;
    let inst = match inst {
        Some(i) if !i.deleted => i,
        _ => return Err(ConsoleError::Stale(format!("server {} was deleted", grant.instance)).into()),
    };
    if inst.task_state.as_deref() == Some(crate::state::task::DELETING) {
        return Err(ConsoleError::Stale(format!("server {} is being deleted", inst.uuid)).into());
    }
    if inst.host.as_deref() != Some(grant.host.as_str()) {
        return Err(ConsoleError::Stale(format!("server {} moved to another host", inst.uuid)).into());
    }
    if !console_ready(&inst.vm_state) {
        return Err(ConsoleError::NotReady(inst.uuid, inst.vm_state).into());
    }
    let vnc = connect(&grant.endpoint).await.map_err(|e| ConsoleError::Unreachable(inst.uuid.clone(), e))?;
    let guard = SessionGuard::new(&tokens.sessions);
    let uuid = inst.uuid.clone();
    tracing::info!(instance = %uuid, open = tokens.active_sessions(), "console connection opened");
    Ok(ws
        .protocols(["binary"])
        .on_upgrade(move |socket| async move {
            let _guard = guard;
            let started = Instant::now();
            let (up, down) = relay(socket, vnc).await;
            tracing::info!(instance = %uuid, secs = started.elapsed().as_secs_f64(), bytes_to_guest = up,
                bytes_from_guest = down, "console connection closed");
        })
        .into_response())
}

/// A connection to a guest's VNC server.
trait VncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> VncStream for T {}

/// Connects to the VNC endpoint the agent reported (unix socket, else TCP).
async fn connect(ep: &VncConsole) -> Result<Box<dyn VncStream>, String> {
    let limit = Duration::from_secs(5);
    let fut = async {
        Ok::<Box<dyn VncStream>, std::io::Error>(match &ep.path {
            Some(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            None => Box::new(tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await?),
        })
    };
    let what = match &ep.path {
        Some(p) => format!("unix:{p}"),
        None => format!("{}:{}", ep.host, ep.port),
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

/// Relays until either side closes, then closes the other (both are dropped on return).
/// Returns the bytes sent to and received from the guest.
async fn relay(socket: WebSocket, vnc: Box<dyn VncStream>) -> (u64, u64) {
    let (mut vr, mut vw) = tokio::io::split(vnc);
    let (mut tx, mut rx) = socket.split();
    let (mut up, mut down) = (0u64, 0u64);
    let to_guest = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                // websockify's old base64 `Text` mode is long gone from noVNC; binary only.
                Message::Text(_) => break,
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if vw.write_all(&data).await.is_err() {
                break;
            }
            up += data.len() as u64;
        }
        let _ = vw.shutdown().await;
    };
    let from_guest = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match vr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        return;
                    }
                    down += n as u64;
                }
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = to_guest => {}
        () = from_guest => {}
    }
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> VncConsole {
        VncConsole { host: "127.0.0.1".into(), port: 0, path: Some("/x/vnc.sock".into()) }
    }

    #[test]
    fn a_token_is_good_once_and_only_until_it_expires() {
        let t = ConsoleTokens::new(Duration::from_secs(600));
        let now = Instant::now();
        let a = t.issue_at("i1", "h1", ep(), now);
        let g = t.redeem_at(&a, now + Duration::from_secs(599)).expect("valid within the TTL");
        assert_eq!((g.instance.as_str(), g.host.as_str()), ("i1", "h1"));
        assert!(matches!(t.redeem_at(&a, now + Duration::from_secs(1)), Err(ConsoleError::UsedToken)));

        let b = t.issue_at("i1", "h1", ep(), now);
        assert!(matches!(t.redeem_at(&b, now + Duration::from_secs(600)), Err(ConsoleError::ExpiredToken)));
        assert!(matches!(t.redeem_at(&b, now), Err(ConsoleError::UnknownToken)), "expired tokens are forgotten");
        assert!(matches!(t.redeem_at("nope", now), Err(ConsoleError::UnknownToken)));
    }

    #[test]
    fn issuing_prunes_expired_tokens_and_deletes_revoke_only_their_server() {
        let t = ConsoleTokens::new(Duration::from_secs(10));
        let now = Instant::now();
        let old = t.issue_at("i1", "h1", ep(), now);
        let later = now + Duration::from_secs(11);
        let a = t.issue_at("i1", "h1", ep(), later);
        let b = t.issue_at("i2", "h1", ep(), later);
        assert_eq!(t.grants.lock().len(), 2, "the expired token was pruned");
        assert!(!t.grants.lock().contains_key(&old));
        assert_eq!(t.revoke_instance("i1"), 1);
        assert!(matches!(t.redeem_at(&a, later), Err(ConsoleError::UnknownToken)));
        assert!(t.redeem_at(&b, later).is_ok(), "another server's token survives");
    }

    #[test]
    fn files_outside_the_novnc_dir_are_unreachable() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("novnc");
        std::fs::create_dir_all(root.join("core")).unwrap();
        std::fs::write(root.join("vnc.html"), "page").unwrap();
        std::fs::write(root.join("core/rfb.js"), "js").unwrap();
        std::fs::write(d.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink("vnc.html", root.join("vnc_auto.html")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("leak")).unwrap();

        assert!(safe_join(&root, "vnc.html").is_some());
        assert!(safe_join(&root, "core/rfb.js").is_some());
        assert!(safe_join(&root, "vnc_auto.html").is_some(), "links inside the dir are followed");
        for bad in [
            "../secret",
            "core/../../secret",
            "./vnc.html",
            "/etc/passwd",
            "core/..\\..\\secret",
            "leak",
            "core",
            "",
            "missing.js",
            "vnc.html\0",
        ] {
            assert_eq!(safe_join(&root, bad), None, "{bad:?} must not be served");
        }
    }

    #[test]
    fn content_types_match_the_files() {
        assert_eq!(content_type(Path::new("a/vnc_lite.html")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("core/rfb.js")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("app/images/alt.svg")), "image/svg+xml");
        assert_eq!(content_type(Path::new("app/styles/Orbitron700.woff")), "font/woff");
        assert_eq!(content_type(Path::new("utils/novnc_proxy")), "application/octet-stream");
    }

    #[test]
    fn the_url_points_the_page_at_the_websocket_proxy() {
        let cfg = VncConfig::default();
        assert_eq!(
            console_url("http://127.0.0.1:5080", &cfg, "abc"),
            "http://127.0.0.1:5080/compute/novnc/vnc_lite.html?path=compute%2Fnovnc%2Fwebsockify%3Ftoken%3Dabc"
        );
        assert_eq!(
            console_url("https://cloud.example/os/", &cfg, "abc"),
            "https://cloud.example/os/compute/novnc/vnc_lite.html?path=os%2Fcompute%2Fnovnc%2Fwebsockify%3Ftoken%3Dabc"
        );
    }

    #[test]
    fn only_the_clouds_own_pages_may_open_a_console() {
        let cfg = VncConfig { allowed_origins: vec!["console.example".into()], ..VncConfig::default() };
        let h = |origin: Option<&str>| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static("127.0.0.1:5080"));
            if let Some(o) = origin {
                m.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            m
        };
        let url = "http://cloud.example:5080";
        assert!(check_origin(&h(None), url, &cfg).is_ok());
        assert!(check_origin(&h(Some("http://127.0.0.1:5080")), url, &cfg).is_ok());
        assert!(check_origin(&h(Some("http://cloud.example:5080")), url, &cfg).is_ok());
        assert!(check_origin(&h(Some("https://console.example:8443")), url, &cfg).is_ok());
        assert!(check_origin(&h(Some("http://evil.example")), url, &cfg).is_err());
        assert!(check_origin(&h(Some("http://127.0.0.1:9999")), url, &cfg).is_err());
    }
}
