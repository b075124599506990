//! VNC consoles end to end: `openstack console url show` → the noVNC page served by the
//! cloud → the websocket proxy → the guest's QEMU VNC server (the real-guest test), and
//! the refusals around it (fake driver, unsupported types, bad tokens, missing noVNC).
//!
//! The real-guest test boots one TCG guest under the same in-process lock as the `qemu`
//! module (run it under the machine-wide QEMU flock too).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use stratus_testkit::TestCloud;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::qemu::{image_dir, Reaper, ONE_AT_A_TIME};

/// Where Debian's `novnc` package puts the web client (scripts/install-host-packages.sh).
const NOVNC: &str = "/usr/share/novnc";

fn assert_novnc_installed() {
    assert!(
        std::path::Path::new(NOVNC).join("vnc_lite.html").exists(),
        "noVNC is not installed in {NOVNC}: run `sudo scripts/install-host-packages.sh` (Debian package novnc)"
    );
}

/// The websocket URL noVNC's page builds from the console URL: `ws://<page host:port>/<path>`.
fn websocket_url(console_url: &str) -> String {
    let (page, query) = console_url.split_once('?').expect("a query string");
    let path = query.split('&').find_map(|kv| kv.strip_prefix("path=")).expect("a path parameter for noVNC");
    let path = percent_decode(path);
    let authority = page.strip_prefix("http://").expect("http").split('/').next().unwrap();
    format!("ws://{authority}/{path}")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the console websocket as noVNC does (offering the `binary` subprotocol);
/// Err((status, body)) when the proxy refuses before the upgrade.
async fn open(url: &str) -> Result<Ws, (u16, String)> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("binary"));
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()),
                Some("binary"),
                "the proxy answers noVNC's subprotocol"
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            Err((r.status().as_u16(), String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned()))
        }
        Err(e) => panic!("websocket connect {url}: {e}"),
    }
}

/// Reads binary frames until `n` bytes arrived (bounded).
async fn read_exact(ws: &mut Ws, buf: &mut Vec<u8>, n: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while buf.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("VNC bytes within 20 s");
        match msg {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected binary VNC data, got {other:?}"),
        }
    }
    buf.drain(..n).collect()
}

async fn console_url(cloud: &TestCloud, server: &str) -> String {
    let c = cloud.openstack(&["console", "url", "show", server]).await.expect("console url show");
    assert_eq!(c["type"], "novnc", "{c}");
    c["url"].as_str().expect("url").to_string()
}

async fn vnc_clients(dir: &std::path::Path) -> usize {
    let mut q = stratus_qemu::QmpClient::connect(&dir.join("qmp.sock")).await.expect("QMP connect");
    q.query_vnc().await.expect("query-vnc").clients.len()
}

/// A qemu-driver cloud with one ACTIVE guest `vm1` (the caller holds the locks).
async fn cloud_with_a_guest(
    data: &std::path::Path,
    vnc_listen: Option<&str>,
) -> (TestCloud, String, std::path::PathBuf) {
    assert_novnc_installed();
    let images = image_dir();
    let listen = vnc_listen.map(str::to_string);
    let cloud = TestCloud::start_in(data.to_path_buf(), |c| {
        c.compute.local.virt_driver = "qemu".into();
        c.compute.local.agent.sync_interval_secs = 2;
        c.compute.local.qemu.power_off_timeout_secs = 30;
        c.compute.local.qemu.vnc_listen = listen;
    })
    .await;
    stratus::test_image::upload(&cloud.handle().platform, &images).await.expect("test image upload");
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "cirros", "--nic", "none", "--wait", "vm1"])
        .await
        .expect("server create --wait");
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let dir = cloud.data_dir.join("instances").join(&id);
    (cloud, id, dir)
}

/// Opens the console and reads QEMU's RFB banner; returns the socket and the latency.
async fn banner(ws_url: &str) -> (Ws, Duration) {
    let t = Instant::now();
    let mut ws = open(ws_url).await.expect("the console websocket opens");
    let mut buf = vec![];
    let banner = read_exact(&mut ws, &mut buf, 12).await;
    let latency = t.elapsed();
    assert_eq!(banner, b"RFB 003.008\n");
    assert!(buf.is_empty());
    (ws, latency)
}

#[tokio::test]
async fn qemu_console_url_opens_novnc_and_its_websocket_reaches_the_guest_vnc() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, id, dir) = cloud_with_a_guest(data.path(), None).await;

    // The CLI's URL, and what the API call alone costs.
    let t = Instant::now();
    let url = console_url(&cloud, "vm1").await;
    let cli_time = t.elapsed();
    let token = cloud.admin_token().await;
    let t = Instant::now();
    let r = cloud
        .http()
        .post(cloud.at(&format!("/compute/v2.1/servers/{id}/remote-consoles")))
        .header("x-auth-token", &token)
        .header("openstack-api-version", "compute 2.6")
        .json(&json!({"remote_console": {"protocol": "vnc", "type": "novnc"}}))
        .send()
        .await
        .unwrap();
    let api_time = t.elapsed();
    assert_eq!(r.status(), 200);
    let api: Value = r.json().await.unwrap();
    assert_eq!(api["remote_console"]["protocol"], "vnc", "{api}");
    assert!(url.starts_with(&format!("{}/compute/novnc/vnc_lite.html?path=", cloud.url)), "{url}");

    // The page: noVNC's own HTML, which connects to `path` on load.
    let page = cloud.http().get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains("noVNC") && html.contains("readQueryVariable('path'"), "{html}");
    let js = cloud.http().get(cloud.at("/compute/novnc/core/rfb.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");

    // The websocket the page opens: RFB banner first, then a whole handshake through the relay.
    let ws_url = websocket_url(&url);
    let (mut ws, banner_latency) = banner(&ws_url).await;
    let mut buf = vec![];
    ws.send(Message::Binary(b"RFB 003.008\n".to_vec().into())).await.unwrap();
    let n = read_exact(&mut ws, &mut buf, 1).await[0] as usize;
    let types = read_exact(&mut ws, &mut buf, n).await;
    assert!(types.contains(&1), "QEMU offers security type None: {types:?}");
    ws.send(Message::Binary(vec![1].into())).await.unwrap();
    assert_eq!(read_exact(&mut ws, &mut buf, 4).await, [0, 0, 0, 0], "SecurityResult OK");
    ws.send(Message::Binary(vec![1].into())).await.unwrap(); // ClientInit, shared
    let init = read_exact(&mut ws, &mut buf, 24).await;
    let (w, h) = (u16::from_be_bytes([init[0], init[1]]), u16::from_be_bytes([init[2], init[3]]));
    assert!(w > 0 && h > 0, "ServerInit framebuffer {w}x{h}");
    assert_eq!(vnc_clients(&dir).await, 1, "QEMU sees the proxied client");
    ws.close(None).await.unwrap();
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    while vnc_clients(&dir).await != 0 {
        assert!(Instant::now() < deadline, "closing the websocket closes the proxy's VNC connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One connection per token; unknown tokens are refused before any upgrade.
    let (status, body) = open(&ws_url).await.expect_err("a used token is refused");
    assert_eq!(status, 401);
    assert!(body.contains("already used"), "{body}");
    let unknown = format!("{}?token=0123456789abcdef0123456789abcdef", ws_url.split('?').next().unwrap());
    let (status, body) = open(&unknown).await.expect_err("an unknown token is refused");
    assert_eq!(status, 401);
    assert!(body.contains("unknown"), "{body}");

    // Older clients (below 2.6) use the `os-getVNCConsole` action; its URL works the same.
    let old = cloud
        .openstack(&["--os-compute-api-version", "2.5", "console", "url", "show", "vm1"])
        .await
        .expect("console url show at 2.5");
    let old_url = old["url"].as_str().expect("url").to_string();
    assert_ne!(old_url, url);
    drop(banner(&websocket_url(&old_url)).await);

    // A server's tokens die with it, and an open console ends when its QEMU does.
    let fresh = websocket_url(&console_url(&cloud, "vm1").await);
    let (mut live, _) = banner(&websocket_url(&console_url(&cloud, "vm1").await)).await;
    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("server delete");
    let (status, body) = open(&fresh).await.expect_err("a deleted server's token is refused");
    assert_eq!(status, 401, "{body}");
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match live.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the proxy closes the websocket when the guest's VNC server goes away");

    eprintln!(
        "console numbers: `console url show` CLI {cli_time:?}, POST remote-consoles {api_time:?}, \
         websocket connect -> RFB banner {banner_latency:?}"
    );
    cloud.shutdown().await;
}

#[tokio::test]
async fn console_requests_this_cloud_cannot_serve_are_refused_clearly() {
    assert_novnc_installed();
    let cloud = TestCloud::start().await;
    cloud.create_tiny_image().await;
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", "none", "--wait", "f1"])
        .await
        .expect("server create");
    let id = vm["id"].as_str().unwrap().to_string();
    let token = cloud.admin_token().await;
    let post = |path: String, version: &'static str, body: Value| {
        let (http, token) = (cloud.http().clone(), token.clone());
        async move {
            let r = http
                .post(path)
                .header("x-auth-token", token)
                .header("openstack-api-version", version)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let consoles = cloud.at(&format!("/compute/v2.1/servers/{id}/remote-consoles"));
    for (protocol, kind) in [("spice", "spice-html5"), ("serial", "serial"), ("rdp", "rdp-html5")] {
        let (s, b) =
            post(consoles.clone(), "compute 2.6", json!({"remote_console": {"protocol": protocol, "type": kind}}))
                .await;
        assert_eq!(s, 400, "{protocol}/{kind}: {b}");
        assert!(b.to_string().contains(&format!("Unavailable console type {kind}")), "{b}");
    }
    let (s, b) =
        post(consoles.clone(), "compute 2.8", json!({"remote_console": {"protocol": "mks", "type": "webmks"}})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) =
        post(consoles.clone(), "compute 2.6", json!({"remote_console": {"protocol": "mks", "type": "webmks"}})).await;
    assert_eq!(s, 400, "mks is not a protocol before 2.8: {b}");
    assert!(b.to_string().contains("is not one of"), "{b}");

    // The fake driver has no framebuffer: 409, not a URL that cannot work.
    let (s, b) =
        post(consoles.clone(), "compute 2.6", json!({"remote_console": {"protocol": "vnc", "type": "novnc"}})).await;
    assert_eq!(s, 409, "{b}");
    assert!(b.to_string().contains("console is not available"), "{b}");
    let (code, _, err) = cloud.openstack_raw(&cloud.admin(), &["console", "url", "show", "f1"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("console is not available"), "{err}");

    // Legacy action (2.1-2.5), same answers; gone at 2.6 like in Nova.
    let action = cloud.at(&format!("/compute/v2.1/servers/{id}/action"));
    let (s, b) = post(action.clone(), "compute 2.1", json!({"os-getVNCConsole": {"type": "novnc"}})).await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = post(action.clone(), "compute 2.1", json!({"os-getSPICEConsole": {"type": "spice-html5"}})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = post(action.clone(), "compute 2.6", json!({"os-getVNCConsole": {"type": "novnc"}})).await;
    assert_eq!(s, 404, "{b}");

    // The proxy without a valid token, or without a websocket.
    let ws = format!("ws://{}/compute/novnc/websockify", cloud.handle().addr);
    let (s, b) = open(&ws).await.expect_err("no token");
    assert_eq!(s, 401, "{b}");
    let (s, b) = open(&format!("{ws}?token=nope")).await.expect_err("unknown token");
    assert_eq!(s, 401, "{b}");
    let r = cloud.http().get(cloud.at("/compute/novnc/websockify?token=x")).send().await.unwrap();
    assert_eq!(r.status(), 400, "plain GET on the websocket endpoint");

    // The web client's files: served, typed, and nothing outside the directory.
    let r = cloud.http().get(cloud.at("/compute/novnc/app/images/alt.svg")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "image/svg+xml"));
    let r = cloud.http().get(cloud.at("/compute/novnc/vnc_auto.html")).send().await.unwrap();
    assert_eq!(r.status(), 200, "Debian's vnc_auto.html link resolves inside the dir");
    for bad in ["..%2f..%2f..%2fetc%2fpasswd", "core%2f..%2f..%2fnovnc%2fvnc.html", "%2fetc%2fpasswd", "missing.js"] {
        let r = cloud.http().get(cloud.at(&format!("/compute/novnc/{bad}"))).send().await.unwrap();
        assert_eq!(r.status(), 404, "{bad}");
    }
    cloud.shutdown().await;

    // Without noVNC on the host the page says what to install.
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_path_buf();
    let cloud = TestCloud::start_with(|c| c.compute.service.vnc.novnc_dir = dir).await;
    let r = cloud.http().get(cloud.at("/compute/novnc/vnc_lite.html")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("novnc") && body.contains("install-host-packages"), "{body}");
    cloud.shutdown().await;
}

/// With `[compute.qemu] vnc_listen` (a proxy on another machine) the endpoint is TCP:
/// QEMU gets a TCP listener on the first console request and the proxy dials it.
#[tokio::test]
async fn qemu_console_over_tcp_when_vnc_listen_is_set() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, _id, dir) = cloud_with_a_guest(data.path(), Some("127.0.0.1")).await;
    let url = console_url(&cloud, "vm1").await;
    let (ws, latency) = banner(&websocket_url(&url)).await;
    let mut q = stratus_qemu::QmpClient::connect(&dir.join("qmp.sock")).await.expect("QMP connect");
    let vnc = q.execute("query-vnc-servers", None).await.unwrap();
    let listeners = vnc[0]["server"].as_array().unwrap().clone();
    assert!(listeners.iter().any(|l| l["family"] == "ipv4" && l["host"] == "127.0.0.1"), "{vnc}");
    assert!(listeners.iter().any(|l| l["family"] == "unix"), "the unix socket stays: {vnc}");
    let clients = vnc[0]["clients"].as_array().unwrap().clone();
    assert_eq!(clients.len(), 1, "{vnc}");
    assert_eq!(clients[0]["family"], "ipv4", "the proxy came over TCP: {vnc}");
    drop(ws);
    // QEMU's monitor serves one client at a time: let the agent have it back.
    drop(q);
    // A second console reuses the listener QEMU already has.
    let (ws, _) = banner(&websocket_url(&console_url(&cloud, "vm1").await)).await;
    let mut q = stratus_qemu::QmpClient::connect(&dir.join("qmp.sock")).await.expect("QMP connect");
    let again = q.execute("query-vnc-servers", None).await.unwrap();
    assert_eq!(again[0]["server"].as_array().unwrap().len(), 2, "{again}");
    drop(ws);
    drop(q);
    eprintln!("console numbers (tcp): websocket connect -> RFB banner {latency:?}");
    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("server delete");
    cloud.shutdown().await;
}

// --- console tokens in the database (fake driver, a stand-in VNC server) ----------------

/// A stand-in for a guest's VNC server: greets each connection with the RFB banner and
/// holds it open until the peer closes. Stops when dropped.
struct FakeVnc {
    endpoint: stratus_compute_agent::virt::VncConsole,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVnc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_vnc() -> FakeVnc {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(b"RFB 003.008\n").await.is_ok() {
                    let mut buf = [0u8; 256];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    FakeVnc { endpoint: stratus_compute_agent::virt::VncConsole { host: "127.0.0.1".into(), port, path: None }, task }
}

/// A PostgreSQL URL (`STRATUS_TEST_POSTGRES_URL`) whose connections use a fresh schema,
/// and the schema's name (dropped by the caller).
async fn postgres_schema() -> (String, String) {
    let base = std::env::var("STRATUS_TEST_POSTGRES_URL").expect(
        "STRATUS_TEST_POSTGRES_URL is not set: start PostgreSQL with scripts/test-postgres.sh and export its URL",
    );
    let db = stratus_db::Db::connect(&base).await.expect("PostgreSQL must be reachable");
    let schema = format!("console_t{}_{}", std::process::id(), rand::random::<u32>());
    stratus_db::sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(db.reader()).await.unwrap();
    db.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    (format!("{base}{sep}options=-c%20search_path%3D{schema}"), schema)
}

async fn drop_schema(schema: &str) {
    let base = std::env::var("STRATUS_TEST_POSTGRES_URL").unwrap();
    let db = stratus_db::Db::connect(&base).await.unwrap();
    stratus_db::sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(db.reader()).await.unwrap();
    db.close().await;
}

/// A fake-driver cloud (no local agent) on `data`, on `db_url` when given (else SQLite in
/// `data`). `public_url`: the address the deployment publishes (a second API process
/// behind the same load balancer keeps the catalog pointing there).
async fn fake_cloud(data: &std::path::Path, db_url: Option<&str>, public_url: Option<&str>) -> TestCloud {
    let (url, public) = (db_url.map(str::to_string), public_url.map(str::to_string));
    TestCloud::start_in(data.to_path_buf(), move |c| {
        c.compute.local.local_agent = false;
        if let Some(u) = url {
            c.database.url = u;
        }
        if let Some(p) = public {
            c.server.public_url = p;
        }
    })
    .await
}

fn fake_host() -> stratus_compute_agent::virt::fake::FakeDriverConfig {
    stratus_compute_agent::virt::fake::FakeDriverConfig {
        vcpus: Some(8),
        memory_mb: Some(8192 + 512),
        local_gb: Some(100),
        ..Default::default()
    }
}

/// Starts fake hosts `hosts` on `cloud` whose guests show `vnc`, and boots `vm1`; returns
/// the agents and the server's id.
async fn hosts_with_a_server(
    cloud: &TestCloud,
    hosts: &[&str],
    vnc: &FakeVnc,
) -> (Vec<stratus_compute_agent::AgentHandle>, String) {
    let mut agents = vec![];
    for h in hosts {
        let (a, driver) = cloud.start_fake_agent(h, fake_host()).await;
        driver.set_vnc_endpoint(Some(vnc.endpoint.clone()));
        agents.push(a);
    }
    cloud.create_tiny_image().await;
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "tiny", "--nic", "none", "--wait", "vm1"])
        .await
        .expect("server create --wait");
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    (agents, vm["id"].as_str().unwrap().to_string())
}

/// A console URL from `POST /servers/{id}/remote-consoles` (the CLI's call, without the
/// CLI's start-up time).
async fn api_console_url(cloud: &TestCloud, token: &str, id: &str) -> String {
    let r = cloud
        .http()
        .post(cloud.at(&format!("/compute/v2.1/servers/{id}/remote-consoles")))
        .header("x-auth-token", token)
        .header("openstack-api-version", "compute 2.6")
        .json(&json!({"remote_console": {"protocol": "vnc", "type": "novnc"}}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let b: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{b}");
    b["remote_console"]["url"].as_str().unwrap().to_string()
}

/// The websocket URL of `console_url`, sent to the cloud listening at `addr` instead.
fn websocket_on(console_url: &str, addr: std::net::SocketAddr) -> String {
    let ws = websocket_url(console_url);
    let path = ws.strip_prefix("ws://").and_then(|r| r.split_once('/')).map(|(_, p)| p).unwrap();
    format!("ws://{addr}/{path}")
}

fn token_of(ws_url: &str) -> String {
    ws_url.split_once("token=").expect("a token").1.to_string()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every column of every console token row, as text.
async fn token_rows(cloud: &TestCloud) -> Vec<Vec<String>> {
    use stratus_db::sqlx::Row;
    let rows = stratus_db::Query::new(
        "SELECT token_hash, instance_uuid, host, console_type, target_host, \
         CAST(target_port AS TEXT) AS target_port, COALESCE(target_path, '') AS target_path, created_at, \
         expires_at, COALESCE(used_at, '') AS used_at FROM compute_console_auth_tokens",
    )
    .fetch_all(cloud.handle().platform.db.reader())
    .await
    .unwrap();
    rows.iter().map(|r| (0..10).map(|i| r.get::<String, _>(i)).collect()).collect()
}

async fn assert_refused(ws_url: &str, why: &str) {
    let (status, body) = open(ws_url).await.expect_err("the token is refused");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(why), "expected {why:?}: {body}");
}

/// Two clouds on one database (two API processes of one deployment): a token issued by
/// one opens the console through the other, once; of two handshakes racing with one
/// token (one to each cloud) exactly one is upgraded; the table holds only hashes; and a
/// token survives a restart of the clouds.
async fn tokens_are_shared_by_clouds_on_one_database(db_url: Option<&str>) {
    let vnc = fake_vnc().await;
    let data = tempfile::tempdir().unwrap();
    let a = fake_cloud(data.path(), db_url, None).await;
    let (agents, id) = hosts_with_a_server(&a, &["cmp-a"], &vnc).await;
    let b = fake_cloud(data.path(), db_url, Some(&a.url)).await;
    let b_addr = b.handle().addr;

    // Issued by A (through the CLI), used through B, then refused by A.
    let url = console_url(&a, "vm1").await;
    let token = token_of(&websocket_url(&url));
    let rows = token_rows(&a).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], sha256_hex(&token), "rows are keyed by the token's SHA-256");
    assert_eq!(rows[0][1..5], [id.clone(), "cmp-a".into(), "novnc".into(), "127.0.0.1".into()]);
    assert!(rows.iter().flatten().all(|col| !col.contains(&token)), "the raw token is stored nowhere: {rows:?}");
    let (ws, _) = banner(&websocket_on(&url, b_addr)).await;
    drop(ws);
    assert_refused(&websocket_url(&url), "already used").await;

    // Racing handshakes, one to each cloud: one upgrade, one "already used".
    let api_token = a.admin_token().await;
    let t = Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        let url = api_console_url(&a, &api_token, &id).await;
        let (on_a, on_b) = (websocket_url(&url), websocket_on(&url, b_addr));
        let (x, y) = tokio::join!(open(&on_a), open(&on_b));
        assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "exactly one handshake wins");
        let lost = if x.is_ok() { y } else { x };
        let (status, body) = lost.err().unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("already used"), "{body}");
    }
    let race_time = t.elapsed() / rounds;

    // A token issued before a restart opens the console after it.
    let kept = api_console_url(&a, &api_token, &id).await;
    b.shutdown().await;
    for ag in agents {
        ag.stop();
    }
    a.shutdown().await;
    let c = fake_cloud(data.path(), db_url, None).await;
    drop(banner(&websocket_on(&kept, c.handle().addr)).await);
    assert_refused(&websocket_on(&kept, c.handle().addr), "already used").await;
    eprintln!(
        "console token numbers ({}): issue + racing handshake pair {race_time:?} per round",
        db_url.map_or("sqlite", |_| "postgres")
    );
    c.shutdown().await;
}

#[tokio::test]
async fn console_tokens_are_shared_by_clouds_on_one_sqlite_database_and_used_once() {
    tokens_are_shared_by_clouds_on_one_database(None).await;
}

#[tokio::test]
async fn console_tokens_are_shared_by_clouds_on_one_postgres_database_and_used_once() {
    let (url, schema) = postgres_schema().await;
    tokens_are_shared_by_clouds_on_one_database(Some(&url)).await;
    drop_schema(&schema).await;
}

async fn tokens_of(cloud: &TestCloud, id: &str) -> usize {
    token_rows(cloud).await.iter().filter(|r| r[1] == id).count()
}

/// Polls the API (every 50 ms; the CLI's `--wait` polls every few seconds) until the
/// server has `want` and no task.
async fn wait_status(cloud: &TestCloud, token: &str, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = cloud
            .http()
            .get(cloud.at(&format!("/compute/v2.1/servers/{id}")))
            .header("x-auth-token", token)
            .send()
            .await
            .unwrap();
        let s: Value = r.json().await.unwrap_or(Value::Null);
        let s = s["server"].clone();
        if s["status"] == want && s["OS-EXT-STS:task_state"].is_null() {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} never reached {want}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn host_of(s: &Value) -> String {
    s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

/// Every way a server changes host revokes its console tokens when the move is
/// recorded (the rows are gone before anyone presents them), while operations that
/// keep it in place leave them valid.
#[tokio::test]
async fn console_tokens_are_revoked_when_the_server_moves() {
    let vnc = fake_vnc().await;
    let cloud = TestCloud::start_with(|c| c.compute.local.local_agent = false).await;
    let (_agents, id) = hosts_with_a_server(&cloud, &["cmp-a", "cmp-b"], &vnc).await;
    let token = cloud.admin_token().await;
    let issue = || async { websocket_url(&api_console_url(&cloud, &token, &id).await) };

    // Staying in place: a reboot keeps the token.
    let kept = issue().await;
    cloud.openstack(&["server", "reboot", "vm1"]).await.expect("reboot");
    wait_status(&cloud, &token, &id, "ACTIVE").await;
    assert_eq!(tokens_of(&cloud, &id).await, 1);
    drop(banner(&kept).await);

    // Live migration.
    let t1 = issue().await;
    let h0 = host_of(&wait_status(&cloud, &token, &id, "ACTIVE").await);
    let other = |h: &str| if h == "cmp-a" { "cmp-b".to_string() } else { "cmp-a".to_string() };
    cloud
        .openstack(&["server", "migrate", "--live-migration", "--host", &other(&h0), "vm1"])
        .await
        .expect("live migration");
    let s = wait_status(&cloud, &token, &id, "ACTIVE").await;
    assert_eq!(host_of(&s), other(&h0));
    assert_eq!(tokens_of(&cloud, &id).await, 0, "live migration revoked the token");
    assert_refused(&t1, "unknown or was revoked").await;

    // Cold migration: revoked when the server lands on the destination, before confirm.
    let t2 = issue().await;
    cloud.openstack(&["server", "migrate", "vm1"]).await.expect("migrate");
    wait_status(&cloud, &token, &id, "VERIFY_RESIZE").await;
    assert_eq!(tokens_of(&cloud, &id).await, 0, "cold migration revoked the token");
    cloud.openstack(&["server", "migration", "confirm", "vm1"]).await.expect("migration confirm");
    wait_status(&cloud, &token, &id, "ACTIVE").await;
    assert_refused(&t2, "unknown or was revoked").await;

    // Resize, reverted: the token of the original host dies with the move away.
    let t3 = issue().await;
    cloud.openstack(&["server", "resize", "--flavor", "m1.tiny", "vm1"]).await.expect("resize");
    wait_status(&cloud, &token, &id, "VERIFY_RESIZE").await;
    assert_eq!(tokens_of(&cloud, &id).await, 0, "resize revoked the token");
    cloud.openstack(&["server", "resize", "revert", "vm1"]).await.expect("resize revert");
    wait_status(&cloud, &token, &id, "ACTIVE").await;
    assert_refused(&t3, "unknown or was revoked").await;

    // Evacuation off a host forced down.
    let t4 = issue().await;
    let h = host_of(&wait_status(&cloud, &token, &id, "ACTIVE").await);
    cloud.openstack(&["compute", "service", "set", "--down", &h, "nova-compute"]).await.expect("service set --down");
    cloud.openstack(&["server", "evacuate", "vm1"]).await.expect("server evacuate");
    let s = wait_status(&cloud, &token, &id, "SHUTOFF").await;
    assert_eq!(host_of(&s), other(&h));
    assert_eq!(tokens_of(&cloud, &id).await, 0, "evacuation revoked the token");
    assert_refused(&t4, "unknown or was revoked").await;
    cloud.openstack(&["compute", "service", "set", "--up", &h, "nova-compute"]).await.expect("service set --up");
    cloud.openstack(&["server", "start", "vm1"]).await.expect("server start");
    wait_status(&cloud, &token, &id, "ACTIVE").await;

    // Shelve (offloaded at once) and unshelve.
    let t5 = issue().await;
    cloud.openstack(&["server", "shelve", "vm1"]).await.expect("shelve");
    wait_status(&cloud, &token, &id, "SHELVED_OFFLOADED").await;
    assert_eq!(tokens_of(&cloud, &id).await, 0, "shelve offload revoked the token");
    cloud.openstack(&["server", "unshelve", "vm1"]).await.expect("unshelve");
    wait_status(&cloud, &token, &id, "ACTIVE").await;
    assert_refused(&t5, "unknown or was revoked").await;

    // Deletion, as before.
    let t6 = issue().await;
    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("delete");
    assert_eq!(tokens_of(&cloud, &id).await, 0, "deletion revoked the token");
    assert_refused(&t6, "unknown or was revoked").await;
    cloud.shutdown().await;
}
