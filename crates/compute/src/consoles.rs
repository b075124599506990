//! Graphical (VNC) consoles, Nova's `nova-novncproxy` inside the one listener.
//!
//! Owns three things, so the API handlers stay thin:
//! - [`ConsoleTokens`]: the one-time tokens `POST /servers/{id}/remote-consoles` hands
//!   out, stored (hashed) in the database like Nova's `console_auth_tokens`. A token is
//!   bound to its server and the host it ran on when issued, is consumed by the first
//!   websocket that presents it (to any API process on the database), expires after
//!   `token_ttl_secs` (Nova's `[consoleauth] token_ttl`, 600 s), and dies when its server
//!   is deleted or moves to another host (a server found deleted or elsewhere when the
//!   token is redeemed refuses it too).
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
use serde::{Deserialize, Serialize};
use stratus_compute_proto::virt::VncConsole;
use stratus_core::{time, ApiError, QueryPairs};
use stratus_db::sqlx::Row;
use stratus_db::{Db, DbError, Query, Tx};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ComputeError;
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
    /// 401: never issued, or revoked (its server was deleted or moved to another host).
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
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Server uuid.
    pub instance: String,
    /// Host the server ran on when the token was issued.
    pub host: String,
    /// Where its VNC server listens.
    pub endpoint: VncConsole,
}

/// The console type of the tokens this proxy issues (Nova's `console_type` column).
const NOVNC: &str = "novnc";

/// The SHA-256 of a token, in hex: what the table stores and looks tokens up by.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// How a redeem attempt ended inside its transaction.
enum Redeemed {
    Granted(Grant),
    Refused(ConsoleError),
}

/// The one-time console tokens (Nova's console auth tokens), in the
/// `compute_console_auth_tokens` table.
///
/// In the database, keyed by the token's SHA-256, so any API process sharing the database
/// redeems what another issued, a restart keeps them, and the table never holds a usable
/// token. Single use is one conditional UPDATE (`used_at IS NULL`): of two connections
/// racing with one token, in one process or two, exactly one sees its row count be 1.
/// Expired rows go when new tokens are issued (and at start-up), so the table is bounded
/// by the issue rate. Tokens of a server are deleted in the same transaction that marks
/// it deleted or records another host for it (see [`revoke_off_host`]).
pub struct ConsoleTokens {
    db: Db,
    ttl: chrono::Duration,
    sessions: Arc<AtomicUsize>,
}

impl ConsoleTokens {
    /// Tokens in `db`, valid for `ttl` after issue.
    pub fn new(db: Db, ttl: Duration) -> Self {
        // Capped so that `now + ttl` cannot overflow whatever the configuration says.
        let ttl = chrono::Duration::from_std(ttl.min(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or_else(|_| chrono::Duration::days(365));
        ConsoleTokens { db, ttl, sessions: Arc::default() }
    }

    /// A new token for `instance` (on `host`) reaching `endpoint`. Refused (409) when the
    /// server left `host` or was deleted while the agent was asked for its endpoint.
    pub async fn issue(&self, instance: &str, host: &str, endpoint: VncConsole) -> Result<String, ComputeError> {
        self.issue_at(instance, host, endpoint, chrono::Utc::now()).await
    }

    async fn issue_at(
        &self,
        instance: &str,
        host: &str,
        endpoint: VncConsole,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, ComputeError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let hash = token_hash(&token);
        let (created, expires) = (time::to_storage(now), time::to_storage(now + self.ttl));
        let (instance, host) = (instance.to_string(), host.to_string());
        let inserted = self
            .db
            .transaction(|tx| {
                let (hash, created, expires, instance, host, ep) =
                    (hash.clone(), created.clone(), expires.clone(), instance.clone(), host.clone(), endpoint.clone());
                Box::pin(async move {
                    Query::new("DELETE FROM compute_console_auth_tokens WHERE expires_at <= ")
                        .bind(created.clone())
                        .execute(&mut **tx)
                        .await?;
                    // Inserted only while the server is still on `host`: a move that
                    // committed meanwhile has already revoked its tokens, and this one
                    // would outlive that revocation. (PostgreSQL runs this SERIALIZABLE,
                    // SQLite serially, so a move committing concurrently conflicts.)
                    let n = Query::new(
                        "INSERT INTO compute_console_auth_tokens (token_hash, instance_uuid, host, console_type, \
                         target_host, target_port, target_path, created_at, expires_at) SELECT ",
                    )
                    .bind(hash)
                    .push(", uuid, host, ")
                    .bind(NOVNC)
                    .push(", ")
                    .bind(ep.host)
                    .push(", ")
                    .bind(i64::from(ep.port))
                    .push(", ")
                    .bind(ep.path)
                    .push(", ")
                    .bind(created)
                    .push(", ")
                    .bind(expires)
                    .push(" FROM compute_instances WHERE uuid = ")
                    .bind(instance)
                    .push(" AND host = ")
                    .bind(host)
                    .push(" AND deleted = ")
                    .bind(false)
                    .execute(&mut **tx)
                    .await?;
                    Ok::<_, ComputeError>(n)
                })
            })
            .await?;
        if inserted != 1 {
            return Err(ComputeError::Conflict(format!(
                "Instance {instance} moved or was deleted while its console was requested; ask again"
            )));
        }
        Ok(token)
    }

    /// Consumes a token. A used token stays known (refused as used) until it expires.
    pub async fn redeem(&self, token: &str) -> Result<Grant, ConsoleError> {
        self.redeem_at(token, chrono::Utc::now()).await
    }

    async fn redeem_at(&self, token: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Grant, ConsoleError> {
        let hash = token_hash(token);
        let now = time::to_storage(now);
        let outcome = self
            .db
            .transaction(|tx| {
                let (hash, now) = (hash.clone(), now.clone());
                Box::pin(async move {
                    // The row count decides who got the token.
                    let won = Query::new("UPDATE compute_console_auth_tokens SET used_at = ")
                        .bind(now.clone())
                        .push(" WHERE token_hash = ")
                        .bind(hash.clone())
                        .push(" AND used_at IS NULL AND expires_at > ")
                        .bind(now.clone())
                        .execute(&mut **tx)
                        .await?
                        == 1;
                    let row = Query::new(
                        "SELECT instance_uuid, host, target_host, target_port, target_path, expires_at, used_at \
                         FROM compute_console_auth_tokens WHERE token_hash = ",
                    )
                    .bind(hash.clone())
                    .fetch_optional(&mut **tx)
                    .await?;
                    let Some(row) = row else { return Ok(Redeemed::Refused(ConsoleError::UnknownToken)) };
                    if won {
                        let port: i64 = row.try_get("target_port")?;
                        return Ok(Redeemed::Granted(Grant {
                            instance: row.try_get("instance_uuid")?,
                            host: row.try_get("host")?,
                            endpoint: VncConsole {
                                host: row.try_get("target_host")?,
                                port: u16::try_from(port).unwrap_or_default(),
                                path: row.try_get("target_path")?,
                            },
                        }));
                    }
                    let expires: String = row.try_get("expires_at")?;
                    if expires <= now {
                        Query::new("DELETE FROM compute_console_auth_tokens WHERE token_hash = ")
                            .bind(hash)
                            .execute(&mut **tx)
                            .await?;
                        return Ok(Redeemed::Refused(ConsoleError::ExpiredToken));
                    }
                    Ok::<_, ComputeError>(Redeemed::Refused(ConsoleError::UsedToken))
                })
            })
            .await?;
        match outcome {
            Redeemed::Granted(g) => Ok(g),
            Redeemed::Refused(e) => Err(e),
        }
    }

    /// Deletes every token of `instance`; returns how many.
    pub async fn revoke_instance(&self, instance: &str) -> Result<u64, ComputeError> {
        let instance = instance.to_string();
        self.db
            .transaction(|tx| {
                let instance = instance.clone();
                Box::pin(async move { Ok::<_, ComputeError>(revoke_off_host(tx, &instance, None).await?) })
            })
            .await
    }

    /// Deletes the expired tokens; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, ComputeError> {
        let now = time::now();
        self.db
            .transaction(|tx| {
                let now = now.clone();
                Box::pin(async move {
                    Ok::<_, ComputeError>(
                        Query::new("DELETE FROM compute_console_auth_tokens WHERE expires_at <= ")
                            .bind(now)
                            .execute(&mut **tx)
                            .await?,
                    )
                })
            })
            .await
    }

    /// Console connections this process is relaying right now.
    pub fn active_sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

/// Deletes the tokens of `instance` bound to a host other than `host` (all of them when
/// `host` is None: the server was deleted or offloaded), in the caller's transaction.
///
/// [`store::Update`] calls it in the transaction that records a server's new host or its
/// deletion, which is where every move (resize and cold migration, their revert, live
/// migration, evacuation, shelve offload, unshelve) and every delete lands, so a token
/// never outlives the placement it was issued for (Nova's
/// `ConsoleAuthToken.clean_console_auths_for_instance`). Tokens for the host the server
/// stays on (a rolled-back move) are kept.
pub(crate) async fn revoke_off_host(tx: &mut Tx, instance: &str, host: Option<&str>) -> Result<u64, DbError> {
    let mut q = Query::new("DELETE FROM compute_console_auth_tokens WHERE instance_uuid = ");
    q.bind(instance);
    if let Some(h) = host {
        q.push(" AND host <> ").bind(h);
    }
    let n = q.execute(&mut **tx).await?;
    if n > 0 {
        tracing::info!(instance, ?host, revoked = n, "console tokens revoked");
    }
    Ok(n)
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
    let grant = tokens.redeem(token).await?;
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

    /// A migrated compute schema with servers `i1` and `i2` on `h1`: a temp SQLite file, or
    /// a fresh schema on `STRATUS_TEST_POSTGRES_URL`.
    struct TestDb {
        url: String,
        _dir: Option<tempfile::TempDir>,
        schema: Option<String>,
    }

    impl TestDb {
        async fn sqlite() -> Self {
            let d = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", d.path().join("t.db").display());
            Self::seeded(TestDb { url, _dir: Some(d), schema: None }).await
        }

        async fn postgres() -> Self {
            let base = std::env::var("STRATUS_TEST_POSTGRES_URL")
                .expect("STRATUS_TEST_POSTGRES_URL is not set: start PostgreSQL with scripts/test-postgres.sh");
            let schema =
                format!("consoles_t{}_{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let db = Db::connect(&base).await.expect("PostgreSQL must be reachable");
            stratus_db::sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(db.reader()).await.unwrap();
            db.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
            Self::seeded(TestDb { url, _dir: None, schema: Some(schema) }).await
        }

        async fn seeded(self) -> Self {
            let db = self.connect().await;
            db.migrate("compute", crate::MIGRATIONS).await.unwrap();
            for uuid in ["i1", "i2"] {
                let q = Query::new(
                    "INSERT INTO compute_instances (uuid, name, hostname, project_id, user_id, flavor_id, \
                     flavor_json, image_ref, host, vm_state, reservation_id, created_at, updated_at) VALUES (",
                )
                .bind(uuid)
                .push(", 'n', 'n', 'p', 'u', 'f', '{}', 'img', 'h1', 'active', 'r', '', '')")
                .clone();
                db.transaction(|tx| {
                    let q = q.clone();
                    Box::pin(async move { q.execute(&mut **tx).await })
                })
                .await
                .unwrap();
            }
            db.close().await;
            self
        }

        /// A new handle with pools of its own, as another process would have.
        async fn connect(&self) -> Db {
            Db::connect(&self.url).await.unwrap()
        }

        async fn cleanup(self) {
            if let Some(schema) = &self.schema {
                let db = Db::connect(&std::env::var("STRATUS_TEST_POSTGRES_URL").unwrap()).await.unwrap();
                stratus_db::sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(db.reader()).await.unwrap();
                db.close().await;
            }
        }
    }

    /// Runs `case` as two tests: on SQLite and on PostgreSQL.
    macro_rules! on_both_backends {
        ($case:ident, $sqlite:ident, $postgres:ident) => {
            #[tokio::test]
            async fn $sqlite() {
                let t = TestDb::sqlite().await;
                $case(&t).await;
                t.cleanup().await;
            }

            #[tokio::test]
            async fn $postgres() {
                let t = TestDb::postgres().await;
                $case(&t).await;
                t.cleanup().await;
            }
        };
    }

    async fn rows(db: &Db) -> Vec<(String, String, Option<String>)> {
        let rows = Query::new("SELECT token_hash, instance_uuid, used_at FROM compute_console_auth_tokens")
            .fetch_all(db.reader())
            .await
            .unwrap();
        rows.iter().map(|r| (r.get("token_hash"), r.get("instance_uuid"), r.get("used_at"))).collect()
    }

    on_both_backends!(
        good_once_until_expiry,
        a_token_is_good_once_and_only_until_it_expires,
        a_token_is_good_once_and_only_until_it_expires_on_postgres
    );
    async fn good_once_until_expiry(tdb: &TestDb) {
        let db = tdb.connect().await;
        let t = ConsoleTokens::new(db.clone(), Duration::from_secs(600));
        let now = chrono::Utc::now();
        let secs = chrono::Duration::seconds;
        let a = t.issue_at("i1", "h1", ep(), now).await.unwrap();
        let g = t.redeem_at(&a, now + secs(599)).await.expect("valid within the TTL");
        assert_eq!(g, Grant { instance: "i1".into(), host: "h1".into(), endpoint: ep() });
        assert!(matches!(t.redeem_at(&a, now + secs(1)).await, Err(ConsoleError::UsedToken)));

        let b = t.issue_at("i1", "h1", ep(), now).await.unwrap();
        assert!(matches!(t.redeem_at(&b, now + secs(600)).await, Err(ConsoleError::ExpiredToken)));
        assert!(matches!(t.redeem_at(&b, now).await, Err(ConsoleError::UnknownToken)), "expired tokens are forgotten");
        assert!(matches!(t.redeem_at("nope", now).await, Err(ConsoleError::UnknownToken)));

        // Another process on the same database redeems what this one issued, once.
        let c =
            t.issue_at("i2", "h1", VncConsole { host: "10.0.0.5".into(), port: 5901, path: None }, now).await.unwrap();
        let db2 = tdb.connect().await;
        let other = ConsoleTokens::new(db2.clone(), Duration::from_secs(1));
        let g = other.redeem_at(&c, now).await.expect("redeemed by another process");
        assert_eq!((g.instance.as_str(), g.endpoint.port, g.endpoint.path), ("i2", 5901, None));
        assert!(matches!(t.redeem_at(&c, now).await, Err(ConsoleError::UsedToken)));
        db2.close().await;
        db.close().await;
    }

    on_both_backends!(
        hashes_and_pruning,
        the_table_holds_hashes_and_issuing_prunes_expired_tokens,
        the_table_holds_hashes_and_issuing_prunes_expired_tokens_on_postgres
    );
    async fn hashes_and_pruning(tdb: &TestDb) {
        let db = tdb.connect().await;
        let t = ConsoleTokens::new(db.clone(), Duration::from_secs(10));
        let now = chrono::Utc::now();
        let old = t.issue_at("i1", "h1", ep(), now).await.unwrap();
        let later = now + chrono::Duration::seconds(11);
        let a = t.issue_at("i1", "h1", ep(), later).await.unwrap();
        let b = t.issue_at("i2", "h1", ep(), later).await.unwrap();
        let r = rows(&db).await;
        assert_eq!(r.len(), 2, "the expired token was pruned: {r:?}");
        let hashes: Vec<&str> = r.iter().map(|x| x.0.as_str()).collect();
        assert!(hashes.contains(&token_hash(&a).as_str()) && hashes.contains(&token_hash(&b).as_str()));
        assert!(!hashes.contains(&token_hash(&old).as_str()));
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        for tok in [&a, &b] {
            assert!(r.iter().all(|x| !x.0.contains(tok.as_str())), "the raw token is never stored");
        }

        assert_eq!(t.revoke_instance("i1").await.unwrap(), 1);
        assert!(matches!(t.redeem_at(&a, later).await, Err(ConsoleError::UnknownToken)));
        assert!(t.redeem_at(&b, later).await.is_ok(), "another server's token survives");
        db.close().await;
    }

    on_both_backends!(
        moves_and_deletes_revoke,
        moving_or_deleting_a_server_revokes_its_tokens_in_the_same_update,
        moving_or_deleting_a_server_revokes_its_tokens_in_the_same_update_on_postgres
    );
    async fn moves_and_deletes_revoke(tdb: &TestDb) {
        let db = tdb.connect().await;
        let t = ConsoleTokens::new(db.clone(), Duration::from_secs(600));
        let a = t.issue("i1", "h1", ep()).await.unwrap();
        let b = t.issue("i2", "h1", ep()).await.unwrap();
        // A rolled-back move writes the host the server already has: tokens stay.
        assert!(store::Update::new().set("host", "h1").apply(&db, "i1").await.unwrap());
        assert_eq!(rows(&db).await.len(), 2);
        // An update whose expectations fail changes nothing.
        assert!(!store::Update::new().set("host", "h2").expect_task(Some("migrating")).apply(&db, "i1").await.unwrap());
        assert_eq!(rows(&db).await.len(), 2);
        assert!(store::Update::new().set("host", "h2").apply(&db, "i1").await.unwrap());
        assert!(matches!(t.redeem(&a).await, Err(ConsoleError::UnknownToken)), "moved: revoked");
        // A token is not issued for a host the server has left meanwhile.
        let e = t.issue("i1", "h1", ep()).await.expect_err("the server is on h2 now");
        assert!(matches!(e, ComputeError::Conflict(_)), "{e:?}");
        let c = t.issue("i1", "h2", ep()).await.unwrap();
        // Offloaded (no host) or deleted: every token goes.
        assert!(store::Update::new().set("host", Option::<String>::None).apply(&db, "i1").await.unwrap());
        assert!(matches!(t.redeem(&c).await, Err(ConsoleError::UnknownToken)));
        assert!(store::Update::new().set("deleted", true).apply(&db, "i2").await.unwrap());
        assert!(matches!(t.redeem(&b).await, Err(ConsoleError::UnknownToken)));
        assert!(rows(&db).await.is_empty());
        db.close().await;
    }

    on_both_backends!(
        racing_redeems,
        two_redeems_racing_for_one_token_give_it_to_exactly_one,
        two_redeems_racing_for_one_token_give_it_to_exactly_one_on_postgres
    );
    async fn racing_redeems(tdb: &TestDb) {
        // Two handles with pools of their own, as two processes would have.
        let (db1, db2) = (tdb.connect().await, tdb.connect().await);
        let (t1, t2) = (
            ConsoleTokens::new(db1.clone(), Duration::from_secs(600)),
            ConsoleTokens::new(db2.clone(), Duration::from_secs(600)),
        );
        for _ in 0..20 {
            let tok = t1.issue("i1", "h1", ep()).await.unwrap();
            let (a, b) = tokio::join!(t1.redeem(&tok), t2.redeem(&tok));
            assert_eq!(u8::from(a.is_ok()) + u8::from(b.is_ok()), 1, "{a:?} {b:?}");
            let loser = if a.is_ok() { b } else { a };
            assert!(matches!(loser, Err(ConsoleError::UsedToken)), "{loser:?}");
        }
        db1.close().await;
        db2.close().await;
    }

    on_both_backends!(
        issue_racing_a_move,
        a_token_issued_while_its_server_moves_never_outlives_the_move,
        a_token_issued_while_its_server_moves_never_outlives_the_move_on_postgres
    );
    async fn issue_racing_a_move(tdb: &TestDb) {
        let (db1, db2) = (tdb.connect().await, tdb.connect().await);
        let t = ConsoleTokens::new(db1.clone(), Duration::from_secs(600));
        let (mut issued, mut refused) = (0, 0);
        for round in 0..20 {
            let (from, to) = if round % 2 == 0 { ("h1", "h2") } else { ("h2", "h1") };
            let mv = store::Update::new().set("host", to);
            let (tok, moved) = tokio::join!(t.issue("i1", from, ep()), mv.apply(&db2, "i1"));
            assert!(moved.unwrap());
            match tok {
                Ok(_) => issued += 1,
                Err(ComputeError::Conflict(_)) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
            // Whichever committed first, no token is left for the host the server left.
            let stale = rows(&db1).await.len();
            assert_eq!(stale, 0, "round {round}: a token for {from} survived the move to {to}");
        }
        assert_eq!(issued + refused, 20);
        eprintln!("issued {issued} refused {refused}");
        db1.close().await;
        db2.close().await;
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
