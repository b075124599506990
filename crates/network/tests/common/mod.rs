//! The in-process networking service the API tests drive: its router called with
//! `oneshot` as a trusted in-process caller, on SQLite or (in a fresh schema) PostgreSQL.

#![allow(dead_code)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use serde_json::{json, Value};
use stratus_auth::AuthState;
use stratus_core::internal::{InternalCaller, InternalClient};
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use stratus_db::Db;
use stratus_network::{NetworkConfig, NetworkService};
use tower::ServiceExt;

struct NoTokens;

#[async_trait]
impl TokenValidator for NoTokens {
    async fn validate(&self, _token: &str) -> Result<RequestContext, AuthFailure> {
        Err(AuthFailure::Invalid("tests use in-process callers".into()))
    }
}

/// A running networking service.
#[derive(Clone)]
pub struct Env {
    router: Router,
    /// The service's message bus (agents' RPC).
    pub bus: Arc<stratus_bus::InProcBus>,
    _dir: Arc<tempfile::TempDir>,
}

/// Starts the service on PostgreSQL (`url`, in a fresh schema) or, without one, SQLite.
pub async fn env_on(url: Option<String>, cfg: NetworkConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = match url {
        // A fresh schema per test: tests run at once, and two migrating one schema collide.
        Some(base) => {
            let db = Db::connect(&base).await.expect("PostgreSQL must be reachable");
            let schema = format!("network_t{}_{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
            stratus_db::sqlx::raw_sql(&format!("CREATE SCHEMA {schema}")).execute(db.reader()).await.unwrap();
            db.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            Db::connect(&format!("{base}{sep}options=-c%20search_path%3D{schema}")).await.unwrap()
        }
        None => Db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap(),
    };
    let bus = Arc::new(stratus_bus::InProcBus::new());
    let platform = Platform {
        db,
        bus: bus.clone(),
        public_url: "http://test".into(),
        data_dir: dir.path().to_path_buf(),
        host: "host1".into(),
        internal: InternalClient::default(),
        region: "RegionOne".into(),
    };
    let auth = AuthState { validator: Arc::new(NoTokens), identity_uri: "http://test/identity".into() };
    let svc = NetworkService::start(platform, auth, cfg).await.unwrap();
    Env { router: Router::new().nest("/network", svc.router()), bus, _dir: Arc::new(dir) }
}

/// The service on SQLite with the default configuration.
pub async fn env() -> Env {
    env_on(None, NetworkConfig::default()).await
}

/// A member of `project`.
pub fn user(project: &str) -> RequestContext {
    RequestContext {
        user_id: format!("u-{project}"),
        project_id: Some(project.into()),
        roles: vec!["member".into(), "reader".into()],
        ..Default::default()
    }
}

/// A cloud admin.
pub fn admin() -> RequestContext {
    RequestContext {
        user_id: "admin".into(),
        project_id: Some("adminproj".into()),
        roles: vec!["admin".into(), "member".into(), "reader".into()],
        ..Default::default()
    }
}

impl Env {
    pub async fn call(&self, ctx: &RequestContext, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut b = Request::builder().method(method).uri(format!("/network{path}"));
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = b.body(body).unwrap();
        req.extensions_mut().insert(InternalCaller(ctx.clone()));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
    pub async fn get(&self, ctx: &RequestContext, path: &str) -> (u16, Value) {
        self.call(ctx, Method::GET, path, None).await
    }
    pub async fn post(&self, ctx: &RequestContext, path: &str, body: Value) -> (u16, Value) {
        self.call(ctx, Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, ctx: &RequestContext, path: &str, body: Value) -> (u16, Value) {
        self.call(ctx, Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, ctx: &RequestContext, path: &str) -> (u16, Value) {
        self.call(ctx, Method::DELETE, path, None).await
    }
    pub async fn network(&self, ctx: &RequestContext, body: Value) -> Value {
        let (s, b) = self.post(ctx, "/v2.0/networks", json!({"network": body})).await;
        assert_eq!(s, 201, "{b}");
        b["network"].clone()
    }
    pub async fn subnet(&self, ctx: &RequestContext, body: Value) -> Value {
        let (s, b) = self.post(ctx, "/v2.0/subnets", json!({"subnet": body})).await;
        assert_eq!(s, 201, "{b}");
        b["subnet"].clone()
    }
    pub async fn port(&self, ctx: &RequestContext, body: Value) -> (u16, Value) {
        self.post(ctx, "/v2.0/ports", json!({"port": body})).await
    }
}

/// The Neutron error type of a fault body.
pub fn err_type(b: &Value) -> &str {
    b["NeutronError"]["type"].as_str().unwrap_or("")
}

/// The Neutron error message of a fault body.
pub fn err_msg(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

/// `STRATUS_TEST_POSTGRES_URL`, which the PostgreSQL variants of tests need.
pub fn postgres_url() -> String {
    std::env::var("STRATUS_TEST_POSTGRES_URL")
        .expect("STRATUS_TEST_POSTGRES_URL must point at a PostgreSQL server (scripts/test-postgres.sh prints one)")
}

impl Env {
    /// What `host`'s network agent does on each sync: ask for its desired state (the
    /// service schedules unhosted DHCP servers and routers to it first).
    pub async fn agent_sync(&self, host: &str) -> Value {
        use stratus_bus::Bus;
        let msg = stratus_bus::Message::new("get_desired_state", json!({"host": host}));
        self.bus
            .call(stratus_network::agent_rpc::SERVER_TOPIC, msg, std::time::Duration::from_secs(30))
            .await
            .expect("desired state")
    }

    /// The ids of the resources a list call returns.
    pub async fn ids(&self, ctx: &RequestContext, path: &str, collection: &str) -> Vec<String> {
        let (s, b) = self.get(ctx, path).await;
        assert_eq!(s, 200, "{path}: {b}");
        b[collection].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
    }
}
