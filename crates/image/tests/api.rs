//! In-process API tests of the image service: the router driven with `oneshot`, callers
//! identified by the trusted in-process context (the auth layer's `InternalCaller`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use stratus_auth::AuthState;
use stratus_core::internal::{InternalCaller, InternalClient};
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use stratus_image::{ImageConfig, ImageService};
use tower::ServiceExt;

struct NoTokens;

#[async_trait::async_trait]
impl TokenValidator for NoTokens {
    async fn validate(&self, _t: &str) -> Result<RequestContext, AuthFailure> {
        Err(AuthFailure::Invalid("tests use in-process callers".into()))
    }
}

struct Cloud {
    router: Router,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    platform: Platform,
}

fn ctx(project: &str, roles: &[&str]) -> RequestContext {
    RequestContext {
        user_id: format!("user-{project}"),
        user_name: format!("user-{project}"),
        project_id: Some(project.to_string()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }
}
fn admin() -> RequestContext {
    ctx("proj-admin", &["admin", "member", "reader"])
}
fn alice() -> RequestContext {
    ctx("proj-a", &["member", "reader"])
}
fn bob() -> RequestContext {
    ctx("proj-b", &["member", "reader"])
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Cloud {
    async fn start(cfg: ImageConfig) -> Cloud {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut c = Cloud::start_in(dir, cfg).await;
        c._tmp = Some(tmp);
        c
    }

    /// The same service on PostgreSQL (`STRATUS_TEST_POSTGRES_URL`, set by scripts/test.sh),
    /// in a fresh schema of its own.
    async fn start_pg(cfg: ImageConfig, tag: &str) -> Cloud {
        let base = std::env::var("STRATUS_TEST_POSTGRES_URL").expect(
            "STRATUS_TEST_POSTGRES_URL is not set: run the suite through scripts/test.sh, which starts PostgreSQL",
        );
        let db = stratus_db::Db::connect(&base).await.expect("PostgreSQL must be reachable");
        let schema = format!("img_{tag}_{}", std::process::id());
        stratus_db::sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
            .execute(db.reader())
            .await
            .unwrap();
        db.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let mut c = Cloud::start_url(tmp.path().to_path_buf(), &url, cfg).await;
        c._tmp = Some(tmp);
        c
    }

    async fn start_in(dir: PathBuf, cfg: ImageConfig) -> Cloud {
        let url = format!("sqlite://{}/stratus.db", dir.display());
        Cloud::start_url(dir, &url, cfg).await
    }

    async fn start_url(dir: PathBuf, url: &str, cfg: ImageConfig) -> Cloud {
        let db = stratus_db::Db::connect(url).await.unwrap();
        let platform = Platform {
            db,
            bus: Arc::new(stratus_bus::InProcBus::new()),
            public_url: "http://127.0.0.1:5080".into(),
            data_dir: dir.clone(),
            host: "test".into(),
            internal: InternalClient::default(),
            region: "RegionOne".into(),
        };
        let auth = AuthState { validator: Arc::new(NoTokens), identity_uri: "http://x/identity".into() };
        let svc = ImageService::start(platform.clone(), auth, cfg).await.unwrap();
        Cloud { router: svc.router(), dir, _tmp: None, platform }
    }

    async fn req(&self, who: &RequestContext, method: Method, path: &str, ctype: Option<&str>, body: Body) -> Resp {
        self.req_h(who, method, path, ctype, body, &[]).await
    }

    async fn req_h(
        &self,
        who: &RequestContext,
        method: Method,
        path: &str,
        ctype: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(c) = ctype {
            b = b.header("content-type", c);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = b.body(body).unwrap();
        r.extensions_mut().insert(InternalCaller(who.clone()));
        let resp = self.router.clone().oneshot(r).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        Resp { status, headers, body }
    }

    async fn get(&self, who: &RequestContext, path: &str) -> Resp {
        self.req(who, Method::GET, path, None, Body::empty()).await
    }
    async fn post(&self, who: &RequestContext, path: &str, v: Value) -> Resp {
        self.req(who, Method::POST, path, Some("application/json"), Body::from(v.to_string())).await
    }
    async fn patch(&self, who: &RequestContext, id: &str, ops: Value) -> Resp {
        let ct = Some("application/openstack-images-v2.1-json-patch");
        self.req(who, Method::PATCH, &format!("/v2/images/{id}"), ct, Body::from(ops.to_string())).await
    }
    async fn upload(&self, who: &RequestContext, id: &str, data: Vec<u8>) -> Resp {
        let ct = Some("application/octet-stream");
        self.req(who, Method::PUT, &format!("/v2/images/{id}/file"), ct, Body::from(data)).await
    }
    async fn create(&self, who: &RequestContext, v: Value) -> String {
        let r = self.post(who, "/v2/images", v).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_string()
    }
    async fn status_of(&self, id: &str) -> String {
        self.get(&admin(), &format!("/v2/images/{id}")).await.json()["status"].as_str().unwrap_or("").to_string()
    }
    fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }
    fn files(&self) -> Vec<String> {
        std::fs::read_dir(self.images_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    }
}

fn md5_hex(d: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(d).iter().map(|b| format!("{b:02x}")).collect()
}
fn sha512_hex(d: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha512::digest(d).iter().map(|b| format!("{b:02x}")).collect()
}

fn qemu_img(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("qemu-img").args(args).current_dir(dir).output().expect("qemu-img");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(dir.join(args[args.len() - 2])).unwrap_or_default()
}

#[tokio::test]
async fn image_lifecycle_upload_download_delete() {
    image_lifecycle_upload_download_delete_on(Cloud::start(ImageConfig::default()).await).await;
}

#[tokio::test]
async fn pg_image_lifecycle_upload_download_delete() {
    image_lifecycle_upload_download_delete_on(Cloud::start_pg(ImageConfig::default(), "life").await).await;
}

async fn image_lifecycle_upload_download_delete_on(c: Cloud) {
    let r = c
        .post(
            &alice(),
            "/v2/images",
            json!({"name": "cirros", "disk_format": "raw", "container_format": "bare", "min_disk": 1,
                   "min_ram": 64, "tags": ["t1"], "hw_disk_bus": "scsi", "protected": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let im = r.json();
    let id = im["id"].as_str().unwrap().to_string();
    assert_eq!(im["status"], "queued");
    assert_eq!(im["visibility"], "shared");
    assert_eq!(im["owner"], "proj-a");
    assert_eq!(im["hw_disk_bus"], "scsi");
    assert_eq!(im["size"], Value::Null);
    assert_eq!(im["self"], format!("/v2/images/{id}"));
    assert_eq!(im["file"], format!("/v2/images/{id}/file"));
    assert_eq!(im["schema"], "/v2/schemas/image");
    assert!(im.get("locations").is_none(), "locations are hidden");

    // No data yet: 204.
    assert_eq!(c.get(&alice(), &format!("/v2/images/{id}/file")).await.status, StatusCode::NO_CONTENT);

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = c.upload(&alice(), &id, data.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&r.body));
    let im = c.get(&alice(), &format!("/v2/images/{id}")).await.json();
    assert_eq!(im["status"], "active");
    assert_eq!(im["size"], data.len());
    assert_eq!(im["virtual_size"], data.len());
    assert_eq!(im["checksum"], md5_hex(&data));
    assert_eq!(im["os_hash_algo"], "sha512");
    assert_eq!(im["os_hash_value"], sha512_hex(&data));
    assert_eq!(im["stores"], "file");

    let r = c.get(&alice(), &format!("/v2/images/{id}/file")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-md5"], md5_hex(&data).as_str());
    assert_eq!(r.headers["content-length"], data.len().to_string().as_str());
    assert!(r.body == data, "downloaded bytes differ");

    let r = c
        .req_h(
            &alice(),
            Method::GET,
            &format!("/v2/images/{id}/file"),
            None,
            Body::empty(),
            &[("range", "bytes=10-19")],
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers["content-range"], format!("bytes 10-19/{}", data.len()).as_str());
    assert_eq!(&r.body[..], &data[10..20]);
    let r = c
        .req_h(
            &alice(),
            Method::GET,
            &format!("/v2/images/{id}/file"),
            None,
            Body::empty(),
            &[("range", "bytes=9999999-")],
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // Upload twice: 409, and the first data is intact.
    let r = c.upload(&alice(), &id, b"again".to_vec()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(c.status_of(&id).await, "active");

    // Protected images cannot be deleted.
    assert_eq!(
        c.patch(&alice(), &id, json!([{"op": "replace", "path": "/protected", "value": true}])).await.status,
        StatusCode::OK
    );
    let r = c.req(&alice(), Method::DELETE, &format!("/v2/images/{id}"), None, Body::empty()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    c.patch(&alice(), &id, json!([{"op": "replace", "path": "/protected", "value": false}])).await;
    assert_eq!(c.files(), vec![id.clone()]);
    let r = c.req(&bob(), Method::DELETE, &format!("/v2/images/{id}"), None, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "shared image of another project is invisible");
    let r = c.req(&alice(), Method::DELETE, &format!("/v2/images/{id}"), None, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&alice(), &format!("/v2/images/{id}")).await.status, StatusCode::NOT_FOUND);
    assert!(c.files().is_empty(), "image data removed with the image");
}

#[tokio::test]
async fn format_inspection_kills_unsafe_and_mismatched_uploads() {
    let c = Cloud::start(ImageConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let good = qemu_img(tmp.path(), &["create", "-f", "qcow2", "good.qcow2", "32M"]);
    qemu_img(tmp.path(), &["create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", "evil.qcow2", "1M"]);
    let evil = std::fs::read(tmp.path().join("evil.qcow2")).unwrap();

    let id = c.create(&alice(), json!({"name": "good", "disk_format": "qcow2", "container_format": "bare"})).await;
    let r = c.upload(&alice(), &id, good.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&r.body));
    let im = c.get(&alice(), &format!("/v2/images/{id}")).await.json();
    assert_eq!(im["virtual_size"], 32 << 20);
    assert_eq!(im["size"], good.len());

    let id = c.create(&alice(), json!({"name": "evil", "disk_format": "qcow2", "container_format": "bare"})).await;
    let r = c.upload(&alice(), &id, evil.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"].as_str().unwrap().contains("backing file"), "{}", r.json());
    assert_eq!(c.status_of(&id).await, "killed");

    // Declared raw, but the data is a qcow2 (with a backing file): rejected too.
    let id = c.create(&alice(), json!({"name": "disguised", "disk_format": "raw", "container_format": "bare"})).await;
    let r = c.upload(&alice(), &id, evil).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(c.status_of(&id).await, "killed");

    // Declared qcow2, data raw: mismatch.
    let id = c.create(&alice(), json!({"name": "mismatch", "disk_format": "qcow2", "container_format": "bare"})).await;
    let r = c.upload(&alice(), &id, vec![0u8; 100_000]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"].as_str().unwrap().contains("does not match"), "{}", r.json());
    assert_eq!(c.status_of(&id).await, "killed");
    // Only the good image's data remains; no partials.
    assert_eq!(c.files().len(), 1, "{:?}", c.files());

    // Unknown disk_format on create: 400. Missing formats at upload: 400.
    let r = c.post(&alice(), "/v2/images", json!({"name": "x", "disk_format": "exe"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let id = c.create(&alice(), json!({"name": "noformat"})).await;
    assert_eq!(c.upload(&alice(), &id, vec![1, 2, 3]).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(c.status_of(&id).await, "queued");
}

#[tokio::test]
async fn quotas_enforced_while_streaming() {
    let cfg = ImageConfig {
        image_size_cap: 1_000_000,
        user_storage_quota: "3MB".into(),
        image_count_quota: 4,
        ..Default::default()
    };
    let c = Cloud::start(cfg).await;
    let fmt = json!({"disk_format": "raw", "container_format": "bare"});
    let id = c.create(&alice(), fmt.clone()).await;
    // Chunked body (no Content-Length) bigger than the cap: stopped while streaming.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..20).map(|_| Ok(Bytes::from(vec![7u8; 100_000]))).collect();
    let body = Body::from_stream(futures::stream::iter(chunks));
    let r =
        c.req(&alice(), Method::PUT, &format!("/v2/images/{id}/file"), Some("application/octet-stream"), body).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"].as_str().unwrap().contains("image_size_cap"));
    assert_eq!(c.status_of(&id).await, "killed");
    assert!(c.files().is_empty(), "no partial data: {:?}", c.files());

    // Storage quota: 3 MB per project; two ~1 MB images fit, the data of a third would not.
    for _ in 0..3 {
        let id = c.create(&alice(), fmt.clone()).await;
        assert_eq!(c.upload(&alice(), &id, vec![1u8; 1_000_000]).await.status, StatusCode::NO_CONTENT);
    }
    // Image count quota: 4 images owned (one killed, three active).
    let r = c.post(&alice(), "/v2/images", fmt.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let id = c.create(&bob(), fmt.clone()).await;
    assert_eq!(c.upload(&bob(), &id, vec![1u8; 500_000]).await.status, StatusCode::NO_CONTENT, "quota is per project");
}

#[tokio::test]
async fn storage_quota_stops_upload() {
    storage_quota_stops_upload_on(
        Cloud::start(ImageConfig { user_storage_quota: "1500000".into(), ..Default::default() }).await,
    )
    .await;
}

#[tokio::test]
async fn pg_storage_quota_stops_upload() {
    storage_quota_stops_upload_on(
        Cloud::start_pg(ImageConfig { user_storage_quota: "1500000".into(), ..Default::default() }, "quota").await,
    )
    .await;
}

async fn storage_quota_stops_upload_on(c: Cloud) {
    let fmt = json!({"disk_format": "raw", "container_format": "bare"});
    let id = c.create(&alice(), fmt.clone()).await;
    assert_eq!(c.upload(&alice(), &id, vec![1u8; 1_000_000]).await.status, StatusCode::NO_CONTENT);
    let id2 = c.create(&alice(), fmt).await;
    let r = c.upload(&alice(), &id2, vec![1u8; 1_000_000]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["message"].as_str().unwrap().contains("quota"));
    assert_eq!(c.status_of(&id2).await, "killed");
    assert_eq!(c.files(), vec![id]);
}

#[tokio::test]
async fn client_disconnect_mid_upload_kills_and_cleans() {
    let c = Cloud::start(ImageConfig::default()).await;
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(vec![1u8; 200_000])),
        Ok(Bytes::from(vec![2u8; 200_000])),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")),
    ];
    let body = Body::from_stream(futures::stream::iter(chunks));
    let r =
        c.req(&alice(), Method::PUT, &format!("/v2/images/{id}/file"), Some("application/octet-stream"), body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(c.status_of(&id).await, "killed");
    assert!(c.files().is_empty(), "{:?}", c.files());
    // Wrong content type for data: 415.
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    let r = c
        .req(&alice(), Method::PUT, &format!("/v2/images/{id}/file"), Some("application/json"), Body::from("{}"))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn restart_kills_stale_saving_images() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Cloud::start_in(tmp.path().to_path_buf(), ImageConfig::default()).await;
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    // Simulate a crash mid-upload: status saving and a partial file on disk.
    let mut tx = c.platform.db.begin().await.unwrap();
    stratus_db::Query::new("UPDATE image_images SET status = 'saving' WHERE id = ")
        .bind(id.clone())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    std::fs::write(c.images_dir().join(format!("{id}.partial")), b"half").unwrap();
    c.platform.db.close().await;
    drop(c);
    let c = Cloud::start_in(tmp.path().to_path_buf(), ImageConfig::default()).await;
    assert_eq!(c.status_of(&id).await, "killed");
    assert!(c.files().is_empty(), "{:?}", c.files());
}

#[tokio::test]
async fn visibility_members_and_policy() {
    visibility_members_and_policy_on(Cloud::start(ImageConfig::default()).await).await;
}

#[tokio::test]
async fn pg_visibility_members_and_policy() {
    visibility_members_and_policy_on(Cloud::start_pg(ImageConfig::default(), "vis").await).await;
}

async fn visibility_members_and_policy_on(c: Cloud) {
    let private = c.create(&alice(), json!({"name": "a-private", "visibility": "private"})).await;
    let shared = c.create(&alice(), json!({"name": "a-shared"})).await;
    let community = c.create(&alice(), json!({"name": "a-community", "visibility": "community"})).await;
    let public = c.create(&admin(), json!({"name": "public", "visibility": "public"})).await;
    let names = |v: Value| -> Vec<String> {
        let mut n: Vec<String> =
            v["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
        n.sort();
        n
    };
    // A member cannot publicize (admin-only publicize_image).
    let r = c.post(&alice(), "/v2/images", json!({"name": "p", "visibility": "public"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["message"].as_str().unwrap().contains("publicize_image"));
    let r = c.patch(&alice(), &shared, json!([{"op": "replace", "path": "/visibility", "value": "public"}])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    assert_eq!(
        names(c.get(&alice(), "/v2/images").await.json()),
        vec!["a-community", "a-private", "a-shared", "public"]
    );
    assert_eq!(names(c.get(&bob(), "/v2/images").await.json()), vec!["public"]);
    assert_eq!(names(c.get(&bob(), "/v2/images?visibility=community").await.json()), vec!["a-community"]);
    assert_eq!(c.get(&bob(), &format!("/v2/images/{private}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&bob(), &format!("/v2/images/{community}")).await.status, StatusCode::OK);
    assert_eq!(c.get(&bob(), &format!("/v2/images/{shared}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(names(c.get(&admin(), "/v2/images").await.json()).len(), 4, "admin sees all");

    // Members: only shared images; only the owner adds.
    let r = c.post(&alice(), &format!("/v2/images/{private}/members"), json!({"member": "proj-b"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c.post(&alice(), &format!("/v2/images/{shared}/members"), json!({"member": "proj-b"})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "pending");
    assert_eq!(r.json()["schema"], "/v2/schemas/member");
    let r = c.post(&alice(), &format!("/v2/images/{shared}/members"), json!({"member": "proj-b"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Pending: bob may look, but it is not in his default list.
    assert_eq!(c.get(&bob(), &format!("/v2/images/{shared}")).await.status, StatusCode::OK);
    assert_eq!(names(c.get(&bob(), "/v2/images").await.json()), vec!["public"]);
    assert_eq!(
        names(c.get(&bob(), "/v2/images?member_status=pending&visibility=shared").await.json()),
        vec!["a-shared"]
    );
    let r = c.post(&bob(), &format!("/v2/images/{shared}/members"), json!({"member": "proj-c"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The owner cannot accept for the member; the member can.
    let put = |who: RequestContext, status: &str| {
        let body = json!({"status": status}).to_string();
        let path = format!("/v2/images/{shared}/members/proj-b");
        let c = &c;
        async move { c.req(&who, Method::PUT, &path, Some("application/json"), Body::from(body)).await }
    };
    assert_eq!(put(alice(), "accepted").await.status, StatusCode::FORBIDDEN);
    assert_eq!(put(bob(), "bogus").await.status, StatusCode::BAD_REQUEST);
    let r = put(bob(), "accepted").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "accepted");
    assert_eq!(names(c.get(&bob(), "/v2/images").await.json()), vec!["a-shared", "public"]);
    let r = c.get(&alice(), &format!("/v2/images/{shared}/members")).await.json();
    assert_eq!(r["members"].as_array().unwrap().len(), 1);
    assert_eq!(r["schema"], "/v2/schemas/members");
    // Bob cannot modify or delete alice's image.
    assert_eq!(
        c.patch(&bob(), &shared, json!([{"op": "replace", "path": "/name", "value": "x"}])).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.req(&bob(), Method::DELETE, &format!("/v2/images/{shared}"), None, Body::empty()).await.status,
        StatusCode::FORBIDDEN
    );
    // Unshare.
    let r = c.req(&alice(), Method::DELETE, &format!("/v2/images/{shared}/members/proj-b"), None, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&bob(), &format!("/v2/images/{shared}")).await.status, StatusCode::NOT_FOUND);
    // Admin can publicize.
    let r = c.patch(&admin(), &private, json!([{"op": "replace", "path": "/visibility", "value": "public"}])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(c.get(&bob(), &format!("/v2/images/{private}")).await.status, StatusCode::OK);
    let _ = public;
}

#[tokio::test]
async fn policy_file_overrides_publicize_image() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("policy.yaml");
    std::fs::write(&f, "\"publicize_image\": \"role:admin or role:member\"\n").unwrap();
    let c = Cloud::start(ImageConfig { policy_file: Some(f), ..Default::default() }).await;
    let r = c.post(&alice(), "/v2/images", json!({"name": "p", "visibility": "public"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A reader-only user still cannot.
    let reader = ctx("proj-r", &["reader"]);
    let r = c.post(&reader, "/v2/images", json!({"name": "p", "visibility": "public"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn patch_semantics_and_errors() {
    patch_semantics_and_errors_on(Cloud::start(ImageConfig::default()).await).await;
}

#[tokio::test]
async fn pg_patch_semantics_and_errors() {
    patch_semantics_and_errors_on(Cloud::start_pg(ImageConfig::default(), "patch").await).await;
}

async fn patch_semantics_and_errors_on(c: Cloud) {
    let id = c.create(&alice(), json!({"name": "n", "disk_format": "raw", "container_format": "bare", "k": "v"})).await;
    let r = c
        .patch(
            &alice(),
            &id,
            json!([
                {"op": "replace", "path": "/name", "value": "renamed"},
                {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
                {"op": "remove", "path": "/k"},
                {"op": "add", "path": "/tags", "value": ["x", "y"]},
                {"op": "replace", "path": "/min_ram", "value": 256}
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let im = r.json();
    assert_eq!((im["name"].as_str(), im["hw_disk_bus"].as_str(), im.get("k")), (Some("renamed"), Some("virtio"), None));
    assert_eq!(im["tags"], json!(["x", "y"]));
    assert_eq!(im["min_ram"], 256);
    for uri in ["/v2/images/%00", "/v2/images?name=%00", "/v2/images?tag=a%00"] {
        let r = c.req(&alice(), Method::GET, uri, None, Body::empty()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["message"].is_string(), "Glance fault body");
    }
    let wrong_type =
        c.req(&alice(), Method::PATCH, &format!("/v2/images/{id}"), Some("application/json"), Body::from("[]")).await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for (ops, want) in [
        (json!([{"op": "replace", "path": "/status", "value": "active"}]), 403),
        (json!([{"op": "replace", "path": "/checksum", "value": "x"}]), 403),
        (json!([{"op": "add", "path": "/deleted", "value": "x"}]), 403),
        (json!([{"op": "remove", "path": "/missing"}]), 409),
        (json!([{"op": "add", "path": "bad", "value": "x"}]), 400),
        (json!([{"op": "add", "path": "/a/b", "value": "x"}]), 400),
        (json!([{"op": "copy", "path": "/name", "from": "/x"}]), 400),
        (json!([{"op": "replace", "path": "/visibility", "value": "everyone"}]), 400),
        (json!({"not": "a list"}), 400),
        // NUL fits no database column (PostgreSQL refuses it: these were 500s there).
        (json!([{"op": "replace", "path": "/name", "value": "a\u{0}b"}]), 400),
        (json!([{"op": "add", "path": "/tags", "value": ["a\u{0}"]}]), 400),
        (json!([{"op": "add", "path": "/k2", "value": "v\u{0}"}]), 400),
    ] {
        let r = c.patch(&alice(), &id, ops.clone()).await;
        assert_eq!(r.status.as_u16(), want, "{ops} -> {}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["message"].is_string(), "Glance fault body");
    }
    let r = c
        .req(
            &alice(),
            Method::PATCH,
            &format!("/v2/images/{id}"),
            Some("application/openstack-images-v2.1-json-patch"),
            Body::from("[{"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Read-only attributes on create: 403.
    assert_eq!(c.post(&alice(), "/v2/images", json!({"status": "active"})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.post(&alice(), "/v2/images", json!({"id": "not-a-uuid"})).await.status, StatusCode::BAD_REQUEST);
    // Tags endpoints.
    assert_eq!(
        c.req(&alice(), Method::PUT, &format!("/v2/images/{id}/tags/z"), None, Body::empty()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.get(&alice(), &format!("/v2/images/{id}")).await.json()["tags"], json!(["x", "y", "z"]));
    assert_eq!(
        c.req(&alice(), Method::DELETE, &format!("/v2/images/{id}/tags/x"), None, Body::empty()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.req(&alice(), Method::DELETE, &format!("/v2/images/{id}/tags/x"), None, Body::empty()).await.status,
        StatusCode::NOT_FOUND
    );
    // disk_format is fixed once data is in.
    assert_eq!(c.upload(&alice(), &id, vec![0u8; 1000]).await.status, StatusCode::NO_CONTENT);
    let r = c.patch(&alice(), &id, json!([{"op": "replace", "path": "/disk_format", "value": "qcow2"}])).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn list_filters_sorting_pagination() {
    list_filters_sorting_pagination_on(Cloud::start(ImageConfig::default()).await).await;
}

#[tokio::test]
async fn pg_list_filters_sorting_pagination() {
    list_filters_sorting_pagination_on(Cloud::start_pg(ImageConfig::default(), "list").await).await;
}

async fn list_filters_sorting_pagination_on(c: Cloud) {
    let mut ids = Vec::new();
    for (i, name) in ["delta", "alpha", "echo", "charlie", "bravo"].iter().enumerate() {
        let mut body = json!({"name": name, "disk_format": if i % 2 == 0 { "raw" } else { "qcow2" },
                              "container_format": "bare", "tags": [format!("t{}", i % 2)]});
        if i == 2 {
            body["os_distro"] = json!("cirros");
        }
        ids.push(c.create(&alice(), body).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hidden = c.create(&alice(), json!({"name": "hidden", "os_hidden": true})).await;
    let names = |v: &Value| -> Vec<String> {
        v["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
    };
    let all = c.get(&alice(), "/v2/images").await.json();
    assert_eq!(names(&all), vec!["bravo", "charlie", "echo", "alpha", "delta"], "created_at desc, hidden excluded");
    assert_eq!(all["first"], "/v2/images");
    assert_eq!(all["schema"], "/v2/schemas/images");
    assert!(all.get("next").is_none());

    let p1 = c.get(&alice(), "/v2/images?limit=2&sort_key=name&sort_dir=asc").await.json();
    assert_eq!(names(&p1), vec!["alpha", "bravo"]);
    let next = p1["next"].as_str().unwrap().to_string();
    assert!(next.starts_with("/v2/images?") && next.contains("marker="), "{next}");
    let p2 = c.get(&alice(), &next).await.json();
    assert_eq!(names(&p2), vec!["charlie", "delta"]);
    let p3 = c.get(&alice(), p2["next"].as_str().unwrap()).await.json();
    assert_eq!(names(&p3), vec!["echo"]);
    assert!(p3.get("next").is_none());

    assert_eq!(names(&c.get(&alice(), "/v2/images?sort=name:desc").await.json())[0], "echo");
    assert_eq!(
        names(&c.get(&alice(), "/v2/images?sort_key=name").await.json())[0],
        "echo",
        "sort_dir defaults to desc"
    );
    assert_eq!(names(&c.get(&alice(), "/v2/images?name=alpha").await.json()), vec!["alpha"]);
    assert_eq!(
        names(&c.get(&alice(), "/v2/images?name=in:alpha,echo&sort=name:asc").await.json()),
        vec!["alpha", "echo"]
    );
    assert_eq!(
        names(&c.get(&alice(), "/v2/images?disk_format=qcow2&sort=name:asc").await.json()),
        vec!["alpha", "charlie"]
    );
    assert_eq!(names(&c.get(&alice(), "/v2/images?tag=t1&sort=name:asc").await.json()), vec!["alpha", "charlie"]);
    assert_eq!(names(&c.get(&alice(), "/v2/images?os_distro=cirros").await.json()), vec!["echo"]);
    assert_eq!(names(&c.get(&alice(), "/v2/images?os_hidden=true").await.json()), vec!["hidden"]);
    assert_eq!(names(&c.get(&alice(), "/v2/images?status=active").await.json()).len(), 0);
    assert_eq!(names(&c.get(&alice(), "/v2/images?created_at=gt:2000-01-01T00:00:00Z").await.json()).len(), 5);
    assert_eq!(names(&c.get(&alice(), "/v2/images?created_at=lt:2000-01-01T00:00:00Z").await.json()).len(), 0);
    c.upload(&alice(), &ids[0], vec![0u8; 5000]).await;
    assert_eq!(names(&c.get(&alice(), "/v2/images?size_min=4000").await.json()), vec!["delta"]);
    assert_eq!(names(&c.get(&alice(), "/v2/images?size_max=4000").await.json()).len(), 0);
    for bad in [
        "limit=-1",
        "sort_key=password",
        "sort_dir=sideways",
        "marker=nope",
        "visibility=everyone",
        "sort=name&sort_key=name",
        "created_at=gt:yesterday",
        "member_status=maybe",
        "size_min=x",
    ] {
        let r = c.get(&alice(), &format!("/v2/images?{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let _ = hidden;
}

/// Glance's default policy: the owner (a member of the image's project) or an admin
/// deactivates and reactivates; a reader or another project may not.
#[tokio::test]
async fn deactivate_reactivate_by_owner_or_admin() {
    let c = Cloud::start(ImageConfig::default()).await;
    let id =
        c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare", "visibility": "community"})).await;
    let path = |a: &str| format!("/v2/images/{id}/actions/{a}");
    let act = |who: RequestContext, a: &'static str| {
        let c = &c;
        let p = path(a);
        async move { c.req(&who, Method::POST, &p, None, Body::empty()).await.status }
    };
    assert_eq!(act(admin(), "deactivate").await, StatusCode::FORBIDDEN, "queued");
    c.upload(&alice(), &id, vec![5u8; 4096]).await;
    assert_eq!(act(bob(), "deactivate").await, StatusCode::FORBIDDEN, "another project");
    let reader = ctx("proj-a", &["reader"]);
    assert_eq!(act(reader, "deactivate").await, StatusCode::FORBIDDEN, "a reader of the owner's project");
    assert_eq!(act(alice(), "deactivate").await, StatusCode::NO_CONTENT);
    assert_eq!(c.status_of(&id).await, "deactivated");
    assert_eq!(c.get(&alice(), &format!("/v2/images/{id}/file")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get(&admin(), &format!("/v2/images/{id}/file")).await.status, StatusCode::OK);
    assert_eq!(act(alice(), "reactivate").await, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&alice(), &format!("/v2/images/{id}/file")).await.body.len(), 4096);
    assert_eq!(act(admin(), "deactivate").await, StatusCode::NO_CONTENT);
    assert_eq!(act(admin(), "reactivate").await, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn glance_direct_stage_and_import() {
    let c = Cloud::start(ImageConfig::default()).await;
    let info = c.get(&alice(), "/v2/info/import").await.json();
    assert_eq!(info["import-methods"]["value"], json!(["glance-direct"]));
    assert_eq!(c.get(&alice(), "/v2/info/stores").await.json()["stores"][0]["id"], "file");
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    let data = vec![9u8; 300_000];
    let r = c
        .req(
            &alice(),
            Method::PUT,
            &format!("/v2/images/{id}/stage"),
            Some("application/octet-stream"),
            Body::from(data.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(c.status_of(&id).await, "uploading");
    let r = c
        .post(
            &alice(),
            &format!("/v2/images/{id}/import"),
            json!({"method": {"name": "web-download", "uri": "http://127.0.0.1:1/x"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "web-download is off by default");
    let r = c.post(&alice(), &format!("/v2/images/{id}/import"), json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let mut status = String::new();
    for _ in 0..100 {
        status = c.status_of(&id).await;
        if status == "active" || status == "killed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "active");
    let im = c.get(&alice(), &format!("/v2/images/{id}")).await.json();
    assert_eq!(im["checksum"], md5_hex(&data));
    assert!(!c.images_dir().join("staging").join(&id).exists(), "staged data removed after import");
}

#[tokio::test]
async fn schemas_describe_every_returned_field() {
    let c = Cloud::start(ImageConfig::default()).await;
    let schema = c.get(&alice(), "/v2/schemas/image").await.json();
    let id = c.create(&alice(), json!({"name": "s", "disk_format": "raw", "container_format": "bare"})).await;
    c.upload(&alice(), &id, vec![1u8; 10]).await;
    let im = c.get(&alice(), &format!("/v2/images/{id}")).await.json();
    for k in im.as_object().unwrap().keys() {
        assert!(schema["properties"].get(k).is_some(), "field {k} missing from the image schema");
    }
    assert_eq!(c.get(&alice(), "/v2/schemas/images").await.json()["properties"]["images"]["items"], schema);
    let m = c.get(&alice(), "/v2/schemas/member").await.json();
    for k in ["created_at", "image_id", "member_id", "schema", "status", "updated_at"] {
        assert!(m["properties"].get(k).is_some(), "{k}");
    }
    assert!(c.get(&alice(), "/v2/schemas/members").await.json()["properties"]["members"].is_object());
}

/// The compute agent pulls image data in-process: the download must stream through
/// `InternalClient::call_streaming` (not be buffered) and carry the checksum.
#[tokio::test]
async fn internal_streaming_download_for_compute() {
    let c = Cloud::start(ImageConfig::default()).await;
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    c.upload(&alice(), &id, data.clone()).await;
    let client = InternalClient::default();
    client.install(Router::new().nest("/image", c.router.clone()));
    let req = Request::get(format!("/image/v2/images/{id}/file")).body(Body::empty()).unwrap();
    let resp = client.call_streaming(&alice(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-md5"], md5_hex(&data).as_str());
    let mut stream = resp.into_body().into_data_stream();
    let (mut n, mut chunks, mut got) = (0usize, 0usize, Vec::new());
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.unwrap();
        n += chunk.len();
        chunks += 1;
        got.extend_from_slice(&chunk);
    }
    assert_eq!(n, data.len());
    assert!(chunks > 1, "the body arrives in chunks, not as one buffer");
    assert!(got == data);
}

/// web-download fetches only allow-listed URLs (here a loopback server), and the fetched
/// data goes through the same checks as an upload.
#[tokio::test]
async fn web_download_only_from_the_allow_list() {
    let data: Vec<u8> = vec![3u8; 700_000];
    let served = Bytes::from(data.clone());
    let app = Router::new().route("/images/disk.raw", axum::routing::get(move || async move { served.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/images/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let c = Cloud::start(ImageConfig { web_download_allowed_urls: vec![base.clone()], ..Default::default() }).await;
    let info = c.get(&alice(), "/v2/info/import").await.json();
    assert_eq!(info["import-methods"]["value"], json!(["glance-direct", "web-download"]));
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    let import = |uri: String| {
        let body = json!({"method": {"name": "web-download", "uri": uri}});
        let path = format!("/v2/images/{id}/import");
        let c = &c;
        async move { c.post(&alice(), &path, body).await.status }
    };
    assert_eq!(import("http://169.254.169.254/latest/meta-data".into()).await, StatusCode::BAD_REQUEST);
    assert_eq!(import("file:///etc/passwd".into()).await, StatusCode::BAD_REQUEST);
    assert_eq!(c.status_of(&id).await, "queued");
    assert_eq!(import(format!("{base}disk.raw")).await, StatusCode::ACCEPTED);
    let mut status = String::new();
    for _ in 0..100 {
        status = c.status_of(&id).await;
        if status == "active" || status == "killed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "active");
    let im = c.get(&alice(), &format!("/v2/images/{id}")).await.json();
    assert_eq!(im["checksum"], md5_hex(&data));
    assert_eq!(im["size"], data.len());
    server.abort();
}

async fn wait_status(c: &Cloud, id: &str, done: &[&str]) -> String {
    let mut status = String::new();
    for _ in 0..200 {
        status = c.status_of(id).await;
        if done.contains(&status.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    status
}

async fn wait_tasks(c: &Cloud, who: &RequestContext, id: &str) -> Vec<Value> {
    for _ in 0..200 {
        let tasks =
            c.get(who, &format!("/v2/images/{id}/tasks")).await.json()["tasks"].as_array().cloned().unwrap_or_default();
        if !tasks.is_empty() && tasks.iter().all(|t| t["status"] == "success" || t["status"] == "failure") {
            return tasks;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the tasks of image {id} did not finish");
}

async fn stage(c: &Cloud, who: &RequestContext, id: &str, data: Vec<u8>) {
    let r = c
        .req(who, Method::PUT, &format!("/v2/images/{id}/stage"), Some("application/octet-stream"), Body::from(data))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&r.body));
}

/// `os_glance_*` is the service's own namespace (403), more than `image_property_quota`
/// custom properties is 413, and a property name cannot hold `/` or a control character.
#[tokio::test]
async fn reserved_properties_quota_and_names() {
    let c = Cloud::start(ImageConfig { image_property_quota: 5, ..Default::default() }).await;
    let r = c.post(&alice(), "/v2/images", json!({"name": "r", "os_glance_foo": "bar"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "403 Forbidden", "Glance's fault body");
    let id = c.create(&alice(), json!({"name": "p"})).await;
    assert_eq!(
        c.patch(&alice(), &id, json!([{"op": "add", "path": "/os_glance_foo", "value": "x"}])).await.status,
        StatusCode::FORBIDDEN
    );
    let many: Vec<Value> = (0..6).map(|i| json!({"op": "add", "path": format!("/p{i}"), "value": "v"})).collect();
    let r = c.patch(&alice(), &id, Value::Array(many.clone())).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", String::from_utf8_lossy(&r.body));
    assert!(c.get(&alice(), &format!("/v2/images/{id}")).await.json().get("p0").is_none(), "nothing applied");
    assert_eq!(c.patch(&alice(), &id, Value::Array(many[..5].to_vec())).await.status, StatusCode::OK);
    let r = c.post(&alice(), "/v2/images", json!({"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6"})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    for bad in ["/a~1b", "/nul\u{0}", "/bell\u{7}"] {
        let r = c
            .patch(
                &alice(),
                &id,
                json!([{"op": "replace", "path": "/p0", "value": "w"}, {"op": "add", "path": bad, "value": "v"}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    assert_eq!(c.get(&alice(), "/v2/images/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.req(&alice(), Method::DELETE, "/v2/images/", None, Body::empty()).await.status, StatusCode::NOT_FOUND);
}

/// Every import is a task the image's owner can list, with the request that started it.
#[tokio::test]
async fn imports_are_tasks_of_their_image() {
    let c = Cloud::start(ImageConfig::default()).await;
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    stage(&c, &alice(), &id, vec![1u8; 5000]).await;
    let r = c.post(&alice(), &format!("/v2/images/{id}/import"), json!({"method": {"name": "glance-direct"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let tasks = wait_tasks(&c, &alice(), &id).await;
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(t["status"], "success", "{t}");
    assert_eq!(t["type"], "api_image_import");
    assert_eq!(t["input"]["import_req"]["method"]["name"], "glance-direct");
    assert_eq!(t["result"]["image_id"], id.as_str());
    assert_eq!(t["image_id"], id.as_str());
    assert!(t["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let im = c.get(&alice(), &format!("/v2/images/{id}")).await.json();
    assert_eq!(im["status"], "active");
    assert_eq!(im["stores"], "file");
    assert_eq!(im["os_glance_importing_to_stores"], "");
    assert_eq!(im["os_glance_failed_import"], "");
    assert!(im.get("os_glance_import_task").is_none(), "the import lock is released");
    // Another project sees neither the image nor its tasks; the legacy task API is admin-only.
    assert_eq!(c.get(&bob(), &format!("/v2/images/{id}/tasks")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&alice(), "/v2/tasks").await.status, StatusCode::FORBIDDEN);
    let all = c.get(&admin(), "/v2/tasks").await.json();
    assert!(all["tasks"][0].get("input").is_none(), "lists show task stubs");
    let task_id = t["id"].as_str().unwrap();
    assert_eq!(c.get(&admin(), &format!("/v2/tasks/{task_id}")).await.json()["status"], "success");
    // Import methods not offered are refused before anything changes.
    let id2 = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    for (body, want) in [
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"method": {"name": "copy-image"}}), StatusCode::BAD_REQUEST),
        (json!({"method": {"name": "glance-direct"}, "all_stores": "yes"}), StatusCode::BAD_REQUEST),
        (json!({"method": {"name": "glance-direct"}}), StatusCode::CONFLICT),
    ] {
        assert_eq!(c.post(&alice(), &format!("/v2/images/{id2}/import"), body.clone()).await.status, want, "{body}");
    }
    assert_eq!(c.status_of(&id2).await, "queued");
}

/// Two stores: import into both, copy an uploaded image into the other, remove its data
/// from one store (never the last).
#[tokio::test]
async fn multiple_stores_import_copy_and_remove() {
    let c = Cloud::start(ImageConfig { stores: vec!["fast".into(), "cheap".into()], ..Default::default() }).await;
    let stores = c.get(&alice(), "/v2/info/stores").await.json();
    assert_eq!(stores["stores"][0], json!({"id": "fast", "description": "Filesystem store fast", "default": true}));
    assert_eq!(stores["stores"][1]["id"], "cheap");
    let methods = c.get(&alice(), "/v2/info/import").await.json()["import-methods"]["value"].clone();
    assert_eq!(methods, json!(["glance-direct", "copy-image"]));
    let store_file = |s: &str, id: &str| c.dir.join("image-stores").join(s).join(id);

    let data = vec![7u8; 100_000];
    let id = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    stage(&c, &alice(), &id, data.clone()).await;
    let r = c
        .post(
            &alice(),
            &format!("/v2/images/{id}/import"),
            json!({"method": {"name": "glance-direct"}, "all_stores": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(wait_status(&c, &id, &["active", "queued", "killed"]).await, "active");
    wait_tasks(&c, &alice(), &id).await;
    let im = c.get(&alice(), &format!("/v2/images/{id}")).await.json();
    assert_eq!(im["stores"], "cheap,fast");
    assert_eq!(std::fs::read(store_file("fast", &id)).unwrap(), data);
    assert_eq!(std::fs::read(store_file("cheap", &id)).unwrap(), data);
    let r = c
        .post(
            &alice(),
            &format!("/v2/images/{id}/import"),
            json!({"method": {"name": "glance-direct"}, "stores": ["nope"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "active images are not import targets");

    // copy-image: admin only, into the stores that lack the data.
    let id2 = c.create(&alice(), json!({"disk_format": "raw", "container_format": "bare"})).await;
    c.upload(&alice(), &id2, data.clone()).await;
    assert_eq!(c.get(&alice(), &format!("/v2/images/{id2}")).await.json()["stores"], "fast");
    let copy = json!({"method": {"name": "copy-image"}, "all_stores": true, "all_stores_must_succeed": false});
    assert_eq!(c.post(&alice(), &format!("/v2/images/{id2}/import"), copy.clone()).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.post(&admin(), &format!("/v2/images/{id2}/import"), copy).await.status, StatusCode::ACCEPTED);
    let mut im = Value::Null;
    for _ in 0..200 {
        im = c.get(&alice(), &format!("/v2/images/{id2}")).await.json();
        if im["os_glance_importing_to_stores"] == "" && im["stores"] == "cheap,fast" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(im["stores"], "cheap,fast", "{im}");
    assert_eq!(im["os_glance_failed_import"], "");
    assert_eq!(std::fs::read(store_file("cheap", &id2)).unwrap(), data);
    let again = json!({"method": {"name": "copy-image"}, "stores": ["cheap"]});
    assert_eq!(c.post(&admin(), &format!("/v2/images/{id2}/import"), again).await.status, StatusCode::BAD_REQUEST);

    // Removing data from one store: admin only, never the last copy.
    let del = |who: RequestContext, s: &'static str| {
        let c = &c;
        let p = format!("/v2/stores/{s}/{id2}");
        async move { c.req(&who, Method::DELETE, &p, None, Body::empty()).await.status }
    };
    assert_eq!(del(alice(), "fast").await, StatusCode::FORBIDDEN);
    assert_eq!(del(admin(), "nowhere").await, StatusCode::CONFLICT);
    assert_eq!(del(admin(), "fast").await, StatusCode::NO_CONTENT);
    assert!(!store_file("fast", &id2).exists());
    assert_eq!(c.get(&alice(), &format!("/v2/images/{id2}")).await.json()["stores"], "cheap");
    assert_eq!(
        c.get(&alice(), &format!("/v2/images/{id2}/file")).await.body.len(),
        data.len(),
        "read from the store left"
    );
    assert_eq!(del(admin(), "cheap").await, StatusCode::FORBIDDEN, "the last copy stays");
    assert_eq!(
        c.req(&alice(), Method::DELETE, &format!("/v2/images/{id2}"), None, Body::empty()).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!store_file("cheap", &id2).exists());
}

/// The legacy task API creates an image from an allow-listed URL; other URLs are 400.
#[tokio::test]
async fn legacy_import_task_from_allow_listed_url() {
    let data: Vec<u8> = vec![4u8; 65536];
    let served = Bytes::from(data.clone());
    let app = Router::new().route("/img.raw", axum::routing::get(move || async move { served.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let c = Cloud::start(ImageConfig { web_download_allowed_urls: vec![base.clone()], ..Default::default() }).await;
    let task = |from: String| {
        json!({"type": "import", "input": {"import_from": from, "import_from_format": "raw",
               "image_properties": {"name": "legacy", "disk_format": "raw", "container_format": "bare"}}})
    };
    assert_eq!(c.post(&alice(), "/v2/tasks", task(format!("{base}img.raw"))).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.post(&admin(), "/v2/tasks", task("http://elsewhere.invalid/x.qcow2".into())).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.post(&admin(), "/v2/tasks", json!({"type": "export", "input": {}})).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = c.post(&admin(), "/v2/tasks", task(format!("{base}img.raw"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let mut t = Value::Null;
    for _ in 0..200 {
        t = c.get(&admin(), &format!("/v2/tasks/{id}")).await.json();
        if t["status"] == "success" || t["status"] == "failure" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t["status"], "success", "{t}");
    let image = t["result"]["image_id"].as_str().unwrap();
    let im = c.get(&admin(), &format!("/v2/images/{image}")).await.json();
    assert_eq!(im["status"], "active");
    assert_eq!(im["checksum"], md5_hex(&data));
    assert_eq!(
        c.req(&admin(), Method::DELETE, &format!("/v2/tasks/{id}"), None, Body::empty()).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.abort();
}

/// Metadata definitions: admins define, everyone reads public namespaces, a private
/// namespace is its project's; protected namespaces are not deleted.
#[tokio::test]
async fn metadefs_namespaces_and_their_definitions() {
    let c = Cloud::start(ImageConfig::default()).await;
    let types = c.get(&alice(), "/v2/metadefs/resource_types").await.json();
    assert!(types["resource_types"].as_array().unwrap().iter().any(|t| t["name"] == "OS::Glance::Image"));
    let ns = json!({
        "namespace": "OS::Compute::Test", "display_name": "Test", "description": "d", "visibility": "public",
        "protected": true,
        "resource_type_associations": [{"name": "OS::Nova::Flavor", "prefix": "hw:"}],
        "properties": {"cpu_policy": {"title": "CPU policy", "type": "string", "enum": ["shared", "dedicated"]}},
        "objects": [{"name": "CPU", "properties": {"cores": {"title": "Cores", "type": "integer", "minimum": 1}}}],
        "tags": [{"name": "t1"}]
    });
    assert_eq!(c.post(&alice(), "/v2/metadefs/namespaces", ns.clone()).await.status, StatusCode::FORBIDDEN);
    let r = c.post(&admin(), "/v2/metadefs/namespaces", ns.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(c.post(&admin(), "/v2/metadefs/namespaces", ns).await.status, StatusCode::CONFLICT);
    let base = "/v2/metadefs/namespaces/OS::Compute::Test";
    let shown = c.get(&alice(), base).await.json();
    assert_eq!(shown["namespace"], "OS::Compute::Test");
    assert_eq!(shown["properties"]["cpu_policy"]["enum"], json!(["shared", "dedicated"]));
    assert_eq!(shown["objects"][0]["properties"]["cores"]["minimum"], 1);
    assert_eq!(shown["tags"], json!([{"name": "t1"}]));
    assert_eq!(shown["resource_type_associations"][0]["prefix"], "hw:");
    let prefixed = c.get(&alice(), &format!("{base}?resource_type=OS::Nova::Flavor")).await.json();
    assert!(prefixed["properties"].get("hw:cpu_policy").is_some(), "{prefixed}");
    assert_eq!(
        c.get(&alice(), &format!("{base}/properties/hw:cpu_policy?resource_type=OS::Nova::Flavor")).await.json()
            ["name"],
        "hw:cpu_policy"
    );
    for (body, want) in [
        (json!({"namespace": "x", "bogus": 1}), StatusCode::BAD_REQUEST),
        (json!({"namespace": "x", "created_at": "now"}), StatusCode::FORBIDDEN),
        (json!({"namespace": "x", "visibility": "shared"}), StatusCode::BAD_REQUEST),
        (json!({"namespace": "x".repeat(81)}), StatusCode::BAD_REQUEST),
        (json!({"namespace": "x", "properties": {"p": {"type": "string"}}}), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(c.post(&admin(), "/v2/metadefs/namespaces", body.clone()).await.status, want, "{body}");
    }
    assert_eq!(
        c.req(&admin(), Method::DELETE, base, None, Body::empty()).await.status,
        StatusCode::FORBIDDEN,
        "protected"
    );

    // Properties, objects and tags one by one.
    let prop = json!({"name": "mem", "title": "Memory", "type": "integer", "minimum": 0});
    assert_eq!(c.post(&admin(), &format!("{base}/properties"), prop.clone()).await.status, StatusCode::CREATED);
    assert_eq!(c.post(&admin(), &format!("{base}/properties"), prop).await.status, StatusCode::CONFLICT);
    let put = |path: String, v: Value| {
        let c = &c;
        async move { c.req(&admin(), Method::PUT, &path, Some("application/json"), Body::from(v.to_string())).await }
    };
    let r = put(format!("{base}/properties/mem"), json!({"name": "ram", "title": "RAM", "type": "integer"})).await;
    assert_eq!(r.json()["name"], "ram");
    assert_eq!(c.get(&alice(), &format!("{base}/properties/mem")).await.status, StatusCode::NOT_FOUND);
    let props = c.get(&alice(), &format!("{base}/properties")).await.json();
    assert_eq!(props["properties"]["ram"]["title"], "RAM");
    let r = c.post(&admin(), &format!("{base}/objects"), json!({"name": "Disk", "required": ["size"]})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["self"], format!("{base}/objects/Disk"));
    assert_eq!(put(format!("{base}/objects/Disk"), json!({"name": "Disks"})).await.json()["name"], "Disks");
    assert_eq!(c.get(&alice(), &format!("{base}/objects")).await.json()["objects"].as_array().unwrap().len(), 2);
    let tags = json!({"tags": [{"name": "a"}, {"name": "b"}]});
    assert_eq!(c.post(&admin(), &format!("{base}/tags"), tags).await.json()["tags"].as_array().unwrap().len(), 2);
    let listed = c.get(&alice(), &format!("{base}/tags")).await.json();
    assert_eq!(
        listed["tags"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect::<Vec<_>>(),
        vec![json!("a"), json!("b")],
        "t1 replaced"
    );
    let r = c
        .req_h(
            &admin(),
            Method::POST,
            &format!("{base}/tags"),
            Some("application/json"),
            Body::from(json!({"tags": [{"name": "c"}]}).to_string()),
            &[("X-Openstack-Append", "True")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(c.get(&alice(), &format!("{base}/tags")).await.json()["tags"].as_array().unwrap().len(), 3);
    assert_eq!(
        c.req(&admin(), Method::POST, &format!("{base}/tags/d"), None, Body::empty()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(put(format!("{base}/tags/d"), json!({"name": "e"})).await.json()["name"], "e");
    assert_eq!(
        c.req(&admin(), Method::DELETE, &format!("{base}/tags"), None, Body::empty()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.get(&alice(), &format!("{base}/tags")).await.json()["tags"], json!([]));
    assert_eq!(
        c.req(&alice(), Method::DELETE, &format!("{base}/objects/Disks"), None, Body::empty()).await.status,
        StatusCode::FORBIDDEN
    );

    // A private namespace is its owner project's.
    let private = json!({"namespace": "Private::NS", "visibility": "private", "owner": "proj-a"});
    assert_eq!(c.post(&admin(), "/v2/metadefs/namespaces", private).await.status, StatusCode::CREATED);
    assert_eq!(c.get(&alice(), "/v2/metadefs/namespaces/Private::NS").await.status, StatusCode::OK);
    assert_eq!(c.get(&bob(), "/v2/metadefs/namespaces/Private::NS").await.status, StatusCode::NOT_FOUND);
    let names = |v: Value| {
        v["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["namespace"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(names(c.get(&alice(), "/v2/metadefs/namespaces").await.json()).contains(&"Private::NS".to_string()));
    assert!(!names(c.get(&bob(), "/v2/metadefs/namespaces").await.json()).contains(&"Private::NS".to_string()));
    let page = c.get(&admin(), "/v2/metadefs/namespaces?limit=1").await.json();
    assert_eq!(page["namespaces"].as_array().unwrap().len(), 1);
    assert!(page["next"].as_str().unwrap().contains("marker="));
    let by_type = names(c.get(&admin(), "/v2/metadefs/namespaces?resource_types=OS::Nova::Flavor").await.json());
    assert_eq!(by_type, vec!["OS::Compute::Test"]);

    // Unprotect, rename, delete.
    let r = put(
        base.to_string(),
        json!({"namespace": "OS::Compute::Renamed", "protected": false, "visibility": "private"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        c.get(&admin(), "/v2/metadefs/namespaces/OS::Compute::Renamed/properties/ram").await.status,
        StatusCode::OK,
        "definitions follow the rename"
    );
    let r = c
        .req(
            &admin(),
            Method::DELETE,
            "/v2/metadefs/namespaces/OS::Compute::Renamed/resource_types/OS::Nova::Flavor",
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        c.req(&admin(), Method::DELETE, "/v2/metadefs/namespaces/OS::Compute::Renamed", None, Body::empty())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.get(&admin(), "/v2/metadefs/namespaces/OS::Compute::Renamed").await.status, StatusCode::NOT_FOUND);
    for s in [
        "namespace",
        "namespaces",
        "resource_type",
        "resource_types",
        "property",
        "properties",
        "object",
        "objects",
        "tag",
        "tags",
    ] {
        let schema = c.get(&alice(), &format!("/v2/schemas/metadefs/{s}")).await.json();
        assert!(schema["name"].is_string(), "{s}");
    }
}
