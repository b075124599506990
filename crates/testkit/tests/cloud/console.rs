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
        c.compute.virt_driver = "qemu".into();
        c.compute.agent.sync_interval_secs = 2;
        c.compute.qemu.power_off_timeout_secs = 30;
        c.compute.qemu.vnc_listen = listen;
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
    let cloud = TestCloud::start_with(|c| c.compute.vnc.novnc_dir = dir).await;
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
