//! Object storage through the real clients: `openstack container/object ...` and
//! python-swiftclient's `swift` (upload with SLO and DLO segments, download, ACLs with a
//! second project, temporary URLs fetched with plain `curl`, stat), on the `fs` backend
//! with SQLite and PostgreSQL, on the `s3` backend against Ceph's radosgw, and a crash
//! (`kill -9` of an out-of-process `stratus up` during a 1 GiB upload).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use stratus_testkit::{Creds, TestCloud};

/// `<repo>/.venv/bin/swift`.
fn swift_cli() -> PathBuf {
    stratus_testkit::repo_root().join(".venv/bin/swift")
}

/// Runs `swift <args>` as `creds`; returns (success, stdout, stderr).
async fn swift(cloud: &TestCloud, creds: &Creds, args: &[&str]) -> (bool, String, String) {
    let cli = swift_cli();
    assert!(cli.exists(), "swift is not installed at {}: run scripts/setup-clients.sh", cli.display());
    let mut cmd = tokio::process::Command::new(&cli);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("OS_") || k.starts_with("ST_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(cloud.os_env(creds));
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("swift finished")
        .expect("swift runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn swift_ok(cloud: &TestCloud, creds: &Creds, args: &[&str]) -> String {
    let (ok, out, err) = swift(cloud, creds, args).await;
    assert!(ok, "swift {args:?} failed: {err}{out}");
    out
}

fn sha(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(p).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

fn random_file(p: &Path, len: usize) {
    let data: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    std::fs::write(p, data).unwrap();
}

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> =
        list.as_array().unwrap().iter().map(|i| i["Name"].as_str().unwrap_or_default().to_string()).collect();
    n.sort();
    n
}

async fn curl(url: &str) -> (String, Vec<u8>) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .await
        .expect("curl runs");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[nl + 1..]).to_string();
    body.truncate(nl);
    (code, body)
}

/// A project `name` with a member user `name`.
async fn member_user(cloud: &TestCloud, name: &str) -> Creds {
    cloud.openstack(&["project", "create", "--domain", "default", name]).await.expect("project create");
    let pw = format!("{name}-pw");
    cloud
        .openstack(&["user", "create", "--domain", "default", "--password", &pw, "--project", name, name])
        .await
        .expect("user create");
    cloud.openstack(&["role", "add", "--project", name, "--user", name, "member"]).await.expect("role add");
    Creds::new(name, &pw, name)
}

/// The whole client scenario; runs on any backend and database.
async fn client_scenario(cloud: &TestCloud) {
    let admin = cloud.admin();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello object storage\n").unwrap();
    let small_s = small.to_str().unwrap();

    // openstack container ...
    cloud.openstack(&["container", "create", "docs"]).await.expect("container create");
    assert_eq!(names(&cloud.openstack(&["container", "list"]).await.unwrap()), vec!["docs"]);
    cloud.openstack(&["container", "set", "--property", "color=blue", "docs"]).await.expect("container set");
    let show = cloud.openstack(&["container", "show", "docs"]).await.unwrap();
    assert_eq!(show["container"], "docs");
    assert!(show["properties"].to_string().contains("blue"), "{show}");

    // openstack object ...
    let made = cloud.openstack(&["object", "create", "--name", "notes/small.txt", "docs", small_s]).await.unwrap();
    assert_eq!(made[0]["object"], "notes/small.txt", "{made}");
    let listed = cloud.openstack(&["object", "list", "docs"]).await.unwrap();
    assert_eq!(names(&listed), vec!["notes/small.txt"]);
    let listed = cloud.openstack(&["object", "list", "--prefix", "notes/", "--delimiter", "/", "docs"]).await.unwrap();
    assert_eq!(names(&listed), vec!["notes/small.txt"]);
    cloud.openstack(&["object", "set", "--property", "owner=me", "docs", "notes/small.txt"]).await.expect("object set");
    let shown = cloud.openstack(&["object", "show", "docs", "notes/small.txt"]).await.unwrap();
    assert_eq!(shown["content-length"], "21", "{shown}");
    assert!(shown["properties"].to_string().contains("me"), "{shown}");
    let saved = dir.path().join("saved.txt");
    cloud
        .openstack(&["object", "save", "--file", saved.to_str().unwrap(), "docs", "notes/small.txt"])
        .await
        .expect("object save");
    assert_eq!(std::fs::read(&saved).unwrap(), b"hello object storage\n");

    // swift upload with segments: SLO and DLO, downloaded back byte-identical.
    let big = dir.path().join("big.bin");
    random_file(&big, 5 * 1024 * 1024 + 123);
    let big_s = big.to_str().unwrap();
    for (mode, name) in [("--use-slo", "big-slo"), ("--use-dlo", "big-dlo")] {
        swift_ok(cloud, &admin, &["upload", mode, "--segment-size", "1048576", "--object-name", name, "media", big_s])
            .await;
        let out = dir.path().join(format!("{name}.out"));
        swift_ok(cloud, &admin, &["download", "media", name, "-o", out.to_str().unwrap()]).await;
        assert_eq!(sha(&out), sha(&big), "{name} downloads byte-identical");
    }
    let stat = swift_ok(cloud, &admin, &["stat", "media", "big-slo"]).await;
    assert!(stat.contains("X-Static-Large-Object: True") || stat.contains("Manifest"), "{stat}");
    let stat = swift_ok(cloud, &admin, &["stat", "media", "big-dlo"]).await;
    assert!(stat.contains("Manifest: media_segments/big-dlo/"), "{stat}");
    let acct = swift_ok(cloud, &admin, &["stat"]).await;
    assert!(acct.contains("Containers: 3"), "docs, media, media_segments: {acct}");

    // ACLs: a second project reads the container only after `swift post -r`.
    let other = member_user(cloud, "objreader").await;
    let (_, auth, _) = swift(cloud, &admin, &["auth"]).await;
    let storage_url = auth
        .lines()
        .find_map(|l| l.strip_prefix("export OS_STORAGE_URL="))
        .expect("swift auth prints the storage URL")
        .trim()
        .to_string();
    let as_other = |obj: &'static str| {
        let url = storage_url.clone();
        let other = other.clone();
        async move { swift(cloud, &other, &["--os-storage-url", &url, "download", "docs", obj, "-o", "-"]).await }
    };
    let (ok, _, err) = as_other("notes/small.txt").await;
    assert!(!ok && err.contains("403"), "refused before the ACL: {err}");
    swift_ok(cloud, &admin, &["post", "-r", "objreader:objreader", "docs"]).await;
    let (ok, out, err) = as_other("notes/small.txt").await;
    assert!(ok && out == "hello object storage\n", "read after the ACL: {err}");
    let (ok, _, err) =
        swift(cloud, &other, &["--os-storage-url", &storage_url, "upload", "--object-name", "x", "docs", small_s])
            .await;
    assert!(!ok && err.contains("403"), "a read ACL does not let them write: {err}");
    swift_ok(cloud, &admin, &["post", "-w", "objreader:objreader", "docs"]).await;
    swift_ok(cloud, &other, &["--os-storage-url", &storage_url, "upload", "--object-name", "x", "docs", small_s]).await;

    // Temporary URLs with plain curl; refused once expired.
    swift_ok(cloud, &admin, &["post", "-m", "Temp-URL-Key:s3cret"]).await;
    let account_path = format!("/v1/{}", storage_url.rsplit('/').next().unwrap());
    let path = format!("{account_path}/docs/notes/small.txt");
    let signed = swift_ok(cloud, &admin, &["tempurl", "GET", "60", &path, "s3cret"]).await;
    let (code, body) = curl(&format!("{}/object{}", cloud.url, signed.trim())).await;
    assert_eq!((code.as_str(), body.as_slice()), ("200", b"hello object storage\n".as_slice()));
    let (code, _) = curl(&format!("{}/object{path}", cloud.url)).await;
    assert_eq!(code, "401", "no token, no signature");
    let short = swift_ok(cloud, &admin, &["tempurl", "GET", "1", &path, "s3cret"]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, body) = curl(&format!("{}/object{}", cloud.url, short.trim())).await;
    assert_eq!(code, "401", "expired: {}", String::from_utf8_lossy(&body));

    // An upload whose bytes do not match the ETag sent stores nothing (422).
    let token = cloud.admin_token().await;
    let url = format!("{storage_url}/docs/mismatch");
    let r = cloud
        .http()
        .put(&url)
        .header("x-auth-token", &token)
        .header("etag", "0123456789abcdef0123456789abcdef")
        .body("some bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let r = cloud.http().head(&url).header("x-auth-token", &token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "nothing stored after a 422");

    // Deleting: a non-empty container refuses (409), then objects and container go.
    let err = cloud.openstack(&["container", "delete", "docs"]).await.unwrap_err();
    assert!(err.stderr.contains("409") || err.stderr.contains("Conflict"), "{err}");
    for o in ["notes/small.txt", "x"] {
        cloud.openstack(&["object", "delete", "docs", o]).await.expect("object delete");
    }
    cloud.openstack(&["container", "delete", "docs"]).await.expect("container delete");
    swift_ok(cloud, &admin, &["delete", "media"]).await;
    let left = swift_ok(cloud, &admin, &["list"]).await;
    assert!(!left.contains("docs") && !left.contains("media\n"), "{left}");
}

/// Every blob file under the fs backend.
fn blob_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["data", "tmp"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else { continue };
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(std::fs::read_dir(e.path()).unwrap().flatten().map(|f| f.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn object_clients_fs_sqlite() {
    let cloud = TestCloud::start().await;
    client_scenario(&cloud).await;
    // Everything deleted: the released bytes are gone too (released in the background).
    let root = cloud.data_dir.join("objects");
    for _ in 0..50 {
        if blob_files(&root).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(blob_files(&root), Vec::<PathBuf>::new(), "no bytes left behind");
    cloud.shutdown().await;
}

#[tokio::test]
async fn object_clients_fs_postgres() {
    let base = std::env::var("STRATUS_TEST_POSTGRES_URL").expect(
        "STRATUS_TEST_POSTGRES_URL is not set: start PostgreSQL with scripts/test-postgres.sh and export its URL",
    );
    let db = stratus_db::Db::connect(&base).await.expect("PostgreSQL must be reachable");
    let schema = format!("object_t{}_{}", std::process::id(), rand::random::<u32>());
    stratus_db::sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(db.reader()).await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let cloud = TestCloud::start_with(move |c| c.database.url = url).await;
    client_scenario(&cloud).await;
    cloud.shutdown().await;
    stratus_db::sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(db.reader()).await.unwrap();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_clients_s3_radosgw() {
    let ceph = tokio::task::spawn_blocking(stratus_testkit::ceph::Ceph::start_temp)
        .await
        .unwrap()
        .expect("a one-node Ceph with radosgw starts (scripts/install-ceph.sh installs it)");
    let s3 = ceph.s3().expect("radosgw runs");
    let cloud = TestCloud::start_with(move |c| {
        c.object.backend = "s3".into();
        c.object.s3_endpoint = s3.endpoint;
        c.object.s3_access_key = s3.access_key;
        c.object.s3_secret_key = s3.secret_key;
        c.object.s3_bucket = "stratus-test".into();
        // Small parts so the 5 MiB test object goes up as a multipart upload.
        c.object.s3_part_size_mib = 5;
    })
    .await;
    client_scenario(&cloud).await;
    // The bytes live in radosgw: a large object went up as a multipart upload, and
    // nothing is left in the bucket after everything was deleted.
    cloud.shutdown().await;
    let out = std::process::Command::new("radosgw-admin")
        .args(["--conf", ceph.conf().to_str().unwrap(), "bucket", "stats", "--bucket", "stratus-test"])
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let objects = stats.pointer("/usage/rgw.main/num_objects").and_then(Value::as_i64).unwrap_or(0);
    assert_eq!(objects, 0, "bucket empty after the deletes: {stats}");
    drop(ceph);
}

/// The `stratus` binary of this workspace, built if needed.
fn stratus_bin() -> PathBuf {
    let root = stratus_testkit::repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "stratus", "--bin", "stratus"])
        .current_dir(&root)
        .status()
        .expect("cargo build runs");
    assert!(st.success(), "building the stratus binary");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    target.join("debug/stratus")
}

/// An out-of-process `stratus up` on `data` and a free port; killed on drop.
struct Up {
    child: std::process::Child,
    url: String,
}

impl Up {
    fn start(bin: &Path, data: &Path) -> Up {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let child = std::process::Command::new(bin)
            .args(["up", "--data-dir", data.to_str().unwrap(), "--admin-password", stratus_testkit::ADMIN_PASSWORD])
            .env("STRATUS_SERVER_LISTEN", format!("127.0.0.1:{port}"))
            .env("STRATUS_COMPUTE_VIRT_DRIVER", "fake")
            .env("STRATUS_NETWORK_AGENT_ENABLED", "false")
            .env("STRATUS_IDENTITY_PASSWORD_HASH_MEMORY_KIB", "8")
            .env("STRATUS_IDENTITY_PASSWORD_HASH_ITERATIONS", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("stratus up starts");
        Up { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn token(&self, http: &reqwest::Client) -> (String, String) {
        let body = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": stratus_testkit::ADMIN_PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}});
        for _ in 0..600 {
            if let Ok(r) = http.post(format!("{}/identity/v3/auth/tokens", self.url)).json(&body).send().await {
                if r.status().as_u16() == 201 {
                    let tok = r.headers()["x-subject-token"].to_str().unwrap().to_string();
                    let v: Value = r.json().await.unwrap();
                    let project = v["token"]["project"]["id"].as_str().unwrap().to_string();
                    return (tok, format!("{}/object/v1/AUTH_{project}", self.url));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("stratus up did not answer within 60 s");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A body of `total` zero bytes in 1 MiB chunks; `sent` counts what was handed over.
fn zeros(total: u64, sent: std::sync::Arc<std::sync::atomic::AtomicU64>) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let n = total >> 20;
    let s = futures::stream::iter(0..n).then(move |_| {
        let c = chunk.clone();
        let sent = sent.clone();
        async move {
            sent.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, std::io::Error>(c)
        }
    });
    reqwest::Body::wrap_stream(s)
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_kill_9_during_1gib_upload_leaves_nothing() {
    const GIB: u64 = 1 << 30;
    let bin = tokio::task::spawn_blocking(stratus_bin).await.unwrap();
    let dir = tempfile::Builder::new().prefix("s5ob-crash").tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let http = reqwest::Client::new();
    let mut up = Up::start(&bin, &data);
    let (token, account) = up.token(&http).await;
    let put = |url: String, body: reqwest::Body, len: u64| {
        http.put(url).header("x-auth-token", &token).header("content-length", len).body(body).send()
    };
    assert!(put(format!("{account}/c"), reqwest::Body::from(""), 0).await.unwrap().status().is_success());
    let keep = put(format!("{account}/c/keep"), reqwest::Body::from("kept"), 4).await.unwrap();
    assert_eq!(keep.status().as_u16(), 201);

    // Start a 1 GiB upload; kill -9 the server once ~300 MiB went in.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let upload = tokio::spawn(put(format!("{account}/c/big"), zeros(GIB, sent.clone()), GIB));
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 300 << 20 {
        assert!(!upload.is_finished(), "the upload ended before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = nix::unistd::Pid::from_raw(up.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = up.child.wait();
    let r = upload.await.unwrap();
    assert!(r.is_err() || !r.unwrap().status().is_success(), "the killed upload did not succeed");
    let root = data.join("objects");
    assert!(!blob_files(&root).is_empty(), "the interrupted upload left partial bytes (what this test is about)");

    // Restart: no partial object visible, and no orphaned bytes after the start-up sweep.
    drop(up);
    let up = Up::start(&bin, &data);
    let (token, account) = up.token(&http).await;
    let list = http.get(format!("{account}/c")).header("x-auth-token", &token).send().await.unwrap();
    assert_eq!(list.text().await.unwrap(), "keep\n");
    let head = http.head(format!("{account}/c/big")).header("x-auth-token", &token).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 404);
    let files = blob_files(&root);
    assert_eq!(files.len(), 1, "only the kept object's bytes remain: {files:?}");

    // The client retries, and the whole GiB is stored.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let put = |url: String, body: reqwest::Body, len: u64| {
        http.put(url).header("x-auth-token", &token).header("content-length", len).body(body).send()
    };
    let r = put(format!("{account}/c/big"), zeros(GIB, sent), GIB).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let head = http.head(format!("{account}/c/big")).header("x-auth-token", &token).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], GIB.to_string().as_str());
    // md5 of 1 GiB of zeros.
    assert_eq!(head.headers()["etag"], "cd573cfaace07e7949bc0c46028904ff");
    drop(up);
}
