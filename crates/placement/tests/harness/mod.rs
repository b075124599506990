//! An in-process Placement on a temp SQLite file (or a fresh PostgreSQL schema), driven
//! through its router with a trusted internal caller.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use stratus_auth::AuthState;
use stratus_core::internal::{InternalCaller, InternalClient};
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use stratus_db::Db;
use stratus_placement::{PlacementConfig, PlacementService};
use tower::ServiceExt;

struct NoTokens;

#[async_trait::async_trait]
impl TokenValidator for NoTokens {
    async fn validate(&self, _token: &str) -> Result<RequestContext, AuthFailure> {
        Err(AuthFailure::Invalid("tests use internal callers".into()))
    }
}

pub struct Harness {
    pub router: Router,
    pub svc: Arc<PlacementService>,
    pub db: Db,
    _dir: tempfile::TempDir,
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}/p.db", dir.path().display())).await.unwrap();
    start(db, dir).await
}

pub async fn postgres() -> Harness {
    let base = std::env::var("STRATUS_TEST_POSTGRES_URL")
        .expect("STRATUS_TEST_POSTGRES_URL is not set: run the suite through scripts/test.sh, which starts PostgreSQL");
    let db = Db::connect(&base).await.expect("PostgreSQL must be reachable");
    let schema = format!("placement_t{}_{}", std::process::id(), rand_suffix());
    stratus_db::sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
        .execute(db.reader())
        .await
        .unwrap();
    db.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    let db = Db::connect(&format!("{base}{sep}options=-c%20search_path%3D{schema}")).await.unwrap();
    start(db, tempfile::tempdir().unwrap()).await
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

async fn start(db: Db, dir: tempfile::TempDir) -> Harness {
    let platform = Platform {
        db: db.clone(),
        bus: Arc::new(stratus_bus::InProcBus::new()),
        public_url: "http://127.0.0.1:5080".into(),
        data_dir: dir.path().to_path_buf(),
        host: "test".into(),
        internal: InternalClient::default(),
        region: "RegionOne".into(),
    };
    let auth = AuthState { validator: Arc::new(NoTokens), identity_uri: "http://127.0.0.1:5080/identity".into() };
    let svc = PlacementService::start(platform, auth, PlacementConfig::default()).await.unwrap();
    let router = svc.router();
    Harness { router, svc, db, _dir: dir }
}

impl Harness {
    /// Calls as the cloud's internal admin.
    pub async fn call(&self, method: &str, path: &str, version: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(RequestContext::internal_admin(), method, path, version, body).await
    }

    pub async fn call_as(
        &self,
        ctx: RequestContext,
        method: &str,
        path: &str,
        version: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, b) = self.call_full(ctx, method, path, version, body).await;
        (s, b)
    }

    pub async fn call_full(
        &self,
        ctx: RequestContext,
        method: &str,
        path: &str,
        version: &str,
        body: Option<Value>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut b = Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap()).uri(path);
        if !version.is_empty() {
            b = b.header("openstack-api-version", format!("placement {version}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        let mut req = b.body(body).unwrap();
        req.extensions_mut().insert(InternalCaller(ctx));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 26).await.unwrap();
        let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        (status, headers, v)
    }

    /// Creates a provider (latest version) and returns its uuid.
    pub async fn provider(&self, name: &str, parent: Option<&str>) -> String {
        let mut body = serde_json::json!({"name": name});
        if let Some(p) = parent {
            body["parent_provider_uuid"] = p.into();
        }
        let (s, v) = self.call("POST", "/resource_providers", "1.39", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["uuid"].as_str().unwrap().to_string()
    }

    /// Sets inventories `(class, total, reserved, ratio)`.
    pub async fn inventory(&self, rp: &str, invs: &[(&str, i64, i64, f64)]) {
        let (_, cur) = self.call("GET", &format!("/resource_providers/{rp}/inventories"), "1.39", None).await;
        let mut m = serde_json::Map::new();
        for (rc, total, reserved, ratio) in invs {
            m.insert(
                rc.to_string(),
                serde_json::json!({"total": total, "reserved": reserved, "allocation_ratio": ratio}),
            );
        }
        let body =
            serde_json::json!({"resource_provider_generation": cur["resource_provider_generation"], "inventories": m});
        let (s, v) = self.call("PUT", &format!("/resource_providers/{rp}/inventories"), "1.39", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    pub async fn traits(&self, rp: &str, traits: &[&str]) {
        for t in traits {
            if t.starts_with("CUSTOM_") {
                self.call("PUT", &format!("/traits/{t}"), "1.39", None).await;
            }
        }
        let (_, cur) = self.call("GET", &format!("/resource_providers/{rp}/traits"), "1.39", None).await;
        let body =
            serde_json::json!({"resource_provider_generation": cur["resource_provider_generation"], "traits": traits});
        let (s, v) = self.call("PUT", &format!("/resource_providers/{rp}/traits"), "1.39", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    pub async fn aggregates(&self, rp: &str, aggs: &[&str]) {
        let (_, cur) = self.call("GET", &format!("/resource_providers/{rp}/aggregates"), "1.39", None).await;
        let body = serde_json::json!({"resource_provider_generation": cur["resource_provider_generation"], "aggregates": aggs});
        let (s, v) = self.call("PUT", &format!("/resource_providers/{rp}/aggregates"), "1.39", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}
