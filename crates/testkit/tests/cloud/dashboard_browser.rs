//! The dashboard in a real browser: Debian's headless `chromium`, driven over the
//! DevTools protocol (a small client on a websocket, below). It logs in through the
//! form, launches an instance on the fake driver from the launch form with a hostile
//! name, and watches the list turn the instance ACTIVE without reloading (the page's
//! polling script), with the name shown as text and never run. Screenshots of the pages
//! are written under the target directory (`tmp/dashboard-screenshots`).
//!
//! Needs `chromium` (`scripts/install-chromium.sh`, run by `scripts/test.sh`).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use stratus_testkit::{TestCloud, ADMIN_PASSWORD};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A headless Chromium, killed with all its helper processes (its own process group)
/// and its profile removed when dropped.
struct Chromium {
    child: std::process::Child,
    profile: Option<tempfile::TempDir>,
    port: u16,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        // Helpers may still be exiting: retry the removal briefly.
        if let Some(dir) = self.profile.take() {
            let path = dir.path().to_path_buf();
            for _ in 0..50 {
                if std::fs::remove_dir_all(&path).is_ok() || !path.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = dir.close();
        }
    }
}

impl Chromium {
    async fn start() -> Chromium {
        let profile = tempfile::Builder::new().prefix("dsh-chromium-").tempdir().expect("profile dir");
        let child = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium starts (install it with scripts/install-chromium.sh)");
        // Owned from here on, so a failure below still kills it and removes the profile.
        let file = profile.path().join("DevToolsActivePort");
        let mut chromium = Chromium { child, profile: Some(profile), port: 0 };
        // Chromium writes the port it bound into the profile.
        let deadline = Instant::now() + Duration::from_secs(30);
        chromium.port = loop {
            if let Ok(s) = std::fs::read_to_string(&file) {
                if let Some(p) = s.lines().next().and_then(|l| l.trim().parse().ok()) {
                    break p;
                }
            }
            assert!(Instant::now() < deadline, "chromium did not open its DevTools port");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        chromium
    }

    /// A DevTools session on the first page target.
    async fn page(&self) -> Cdp {
        let list: Value = reqwest::get(format!("http://127.0.0.1:{}/json/list", self.port))
            .await
            .expect("devtools list")
            .json()
            .await
            .expect("devtools json");
        let ws = list
            .as_array()
            .and_then(|a| a.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(ws).await.expect("devtools websocket");
        Cdp { ws, next: 0 }
    }
}

/// A minimal DevTools protocol client: commands and their results (events are skipped).
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.expect("devtools send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("devtools answers")
                .expect("devtools open")
                .expect("devtools message");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("devtools json");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page and returns its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}))
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page (navigation in between is fine).
    async fn wait_for(&mut self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .call("Runtime.evaluate", json!({"expression": format!("!!({expr})"), "returnByValue": true}))
                .await;
            if r["result"]["value"] == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", url).await;
    }

    async fn screenshot(&mut self, name: &str) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).expect("png");
        assert!(png.len() > 1000, "a screenshot with content");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot");
    }
}

#[tokio::test]
async fn dashboard_in_chromium_logs_in_and_launches_an_instance() {
    // Every fake-driver operation takes 2 s, so the new instance is listed as BUILD first.
    let cloud = TestCloud::start_with(|c| c.compute.local.fake.op_delay_ms = 2000).await;
    let admin = cloud.admin_token().await;
    super::dashboard::tiny_image(&cloud, &admin).await;
    let browser = Chromium::start().await;
    let mut page = browser.page().await;

    page.goto(&cloud.at("/dashboard")).await;
    page.wait_for("location.pathname.endsWith('/dashboard/auth/login')", "the login page").await;
    page.screenshot("login").await;
    page.eval(&format!(
        "document.querySelector('input[name=domain]').value = 'Default';
         document.querySelector('input[name=username]').value = 'admin';
         document.querySelector('input[name=password]').value = {};
         document.querySelector('form').requestSubmit(); true",
        json!(ADMIN_PASSWORD)
    ))
    .await;
    page.wait_for(
        "location.pathname.endsWith('/project/overview') && document.readyState === 'complete'",
        "the overview",
    )
    .await;
    assert_eq!(page.eval("document.querySelector('h1').textContent").await, json!("Overview"));
    assert_eq!(page.eval("document.cookie").await, json!(""), "the session cookie is HttpOnly");
    page.screenshot("overview").await;

    // Launch from the form, with a name that would run if it were markup.
    let evil = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=1</script>";
    page.goto(&cloud.at("/dashboard/project/instances/launch")).await;
    page.eval(&format!(
        "document.querySelector('input[name=name]').value = {};
         document.querySelector('select[name=flavor_id]').value = '1';
         document.querySelector('main form').requestSubmit(); true",
        json!(evil)
    ))
    .await;
    page.wait_for("location.pathname.endsWith('/project/instances') && document.readyState === 'complete'", "the list")
        .await;
    let loaded_at = page.eval("performance.timeOrigin").await;
    // Listed at once, and ACTIVE without a reload (the fake driver boots in a moment;
    // the page's script refreshes the table while anything is in progress).
    page.wait_for(
        "[...document.querySelectorAll('td.name')].some(td => td.textContent.includes('onerror'))",
        "the new instance in the list",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('#servers .status-ACTIVE') === null").await,
        json!(true),
        "still building when the list is first shown"
    );
    page.wait_for("document.querySelector('#servers .status-ACTIVE')", "the instance ACTIVE").await;
    assert_eq!(page.eval("performance.timeOrigin").await, loaded_at, "no reload happened");
    assert_eq!(page.eval("document.querySelector('td.name').textContent").await, json!(evil), "shown as text");
    assert_eq!(page.eval("typeof window.pwned").await, json!("undefined"), "never run");
    page.screenshot("instances").await;

    // Create an image from a file: the browser PUTs the file, the dashboard streams it on.
    page.goto(&cloud.at("/dashboard/project/images")).await;
    let file = tempfile::Builder::new().prefix("dsh-upload-").tempfile().expect("upload file");
    std::fs::write(file.path(), vec![7u8; 3 << 20]).expect("write upload file");
    let doc = page.call("DOM.getDocument", json!({})).await;
    let input =
        page.call("DOM.querySelector", json!({"nodeId": doc["root"]["nodeId"], "selector": "input[type=file]"})).await;
    page.call("DOM.setFileInputFiles", json!({"nodeId": input["nodeId"], "files": [file.path()]})).await;
    page.eval(
        "document.querySelector('form[data-upload] input[name=name]').value = 'uploaded-img';
         document.querySelector('form[data-upload] select[name=disk_format]').value = 'raw';
         document.querySelector('form[data-upload]').requestSubmit(); true",
    )
    .await;
    page.wait_for(
        "[...document.querySelectorAll('#images tr')].some(tr => tr.textContent.includes('uploaded-img') && tr.textContent.includes('active'))",
        "the uploaded image active in the list",
    )
    .await;
    let admin = cloud.admin_token().await;
    let images: Value = cloud
        .http()
        .get(cloud.at("/image/v2/images?name=uploaded-img"))
        .header("x-auth-token", &admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(images["images"][0]["size"], json!(3 << 20), "every byte arrived");
    assert_eq!(images["images"][0]["status"], json!("active"));

    for (name, path) in [
        ("images", "/dashboard/project/images"),
        ("networks", "/dashboard/project/networks"),
        ("volumes", "/dashboard/project/volumes"),
        ("routers", "/dashboard/project/routers"),
        ("floating_ips", "/dashboard/project/floating_ips"),
        ("projects", "/dashboard/identity/projects"),
    ] {
        page.goto(&cloud.at(path)).await;
        page.wait_for("document.querySelector('main h1')", name).await;
        page.screenshot(name).await;
    }
    drop(page);
    drop(browser);
    cloud.shutdown().await;
}
