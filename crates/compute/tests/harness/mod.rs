//! An in-process compute cloud for tests: the compute API behind a fake token validator,
//! placement and images in memory, fake-driver agents on the in-process bus.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use stratus_auth::AuthState;
use stratus_bus::InProcBus;
use stratus_compute::clients::{MemoryImages, NoNetwork};
use stratus_compute::placement::MemoryPlacement;
use stratus_compute::{Backends, ComputeConfig, ComputeService};
use stratus_compute_agent::virt::fake::{FakeDriver, FakeDriverConfig};
use stratus_compute_agent::{Agent, AgentConfig, AgentHandle};
use stratus_core::internal::InternalClient;
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use stratus_db::Db;
use tower::ServiceExt;

pub const IMAGE: &str = "11111111-2222-3333-4444-555555555555";

/// Tokens: `admin` (admin of project `pa`), `alice` (member of `pA`), `bob` (member of `pB`),
/// `svc` (a service user, role `service`).
pub struct Tokens;

#[async_trait]
impl TokenValidator for Tokens {
    async fn validate(&self, token: &str) -> Result<RequestContext, AuthFailure> {
        let (user, project, roles): (&str, &str, &[&str]) = match token {
            "admin" => ("u-admin", "pa", &["admin", "member", "reader"]),
            "alice" => ("u-alice", "pA", &["member", "reader"]),
            "alice2" => ("u-alice2", "pA", &["member", "reader"]),
            "bob" => ("u-bob", "pB", &["member", "reader"]),
            "svc" => ("u-svc", "service", &["service"]),
            _ => return Err(AuthFailure::Invalid("unknown token".into())),
        };
        Ok(RequestContext {
            user_id: user.into(),
            user_name: user.into(),
            project_id: Some(project.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        })
    }
}

pub struct Cloud {
    pub dir: tempfile::TempDir,
    pub platform: Platform,
    pub placement: MemoryPlacement,
    pub images: MemoryImages,
    pub cfg: ComputeConfig,
    pub service: ComputeService,
    pub router: Router,
    pub agents: Vec<(String, FakeDriver, Option<AgentHandle>)>,
    /// The real placement service, when the cloud runs with it.
    pub real_placement: Option<Router>,
    /// Reach the real placement over REST only (not its typed in-process API).
    pub rest_only: bool,
    /// The real network service (under `/network`), when the cloud runs with it.
    pub real_network: Option<Router>,
    /// The real image service (under `/image`), when the cloud runs with it.
    pub real_image: Option<Router>,
}

pub fn test_config() -> ComputeConfig {
    ComputeConfig::default()
}

impl Cloud {
    pub async fn start(hosts: usize, fake: FakeDriverConfig) -> Cloud {
        Self::start_with(hosts, fake, test_config()).await
    }

    pub async fn start_with(hosts: usize, fake: FakeDriverConfig, cfg: ComputeConfig) -> Cloud {
        Self::start_full(hosts, fake, cfg, false).await
    }

    /// Like [`Cloud::start_with`], with the real placement service (through its REST API).
    pub async fn start_with_placement(hosts: usize, fake: FakeDriverConfig, cfg: ComputeConfig) -> Cloud {
        Self::start_full(hosts, fake, cfg, true).await
    }

    /// Like [`Cloud::start_with_placement`], with every placement call over its REST API.
    pub async fn start_with_placement_rest(hosts: usize, fake: FakeDriverConfig, cfg: ComputeConfig) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        Self::start_db(dir, db, hosts, fake, cfg, true, true).await
    }

    /// Like [`Cloud::start`], with the real network service behind compute's network
    /// calls (its REST API, in-process).
    pub async fn start_with_network(hosts: usize, fake: FakeDriverConfig) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        Self::start_db_net(dir, db, hosts, fake, test_config(), false, false, (true, false)).await
    }

    /// Like [`Cloud::start`], with the real image service behind compute's image calls
    /// (its REST API, in-process; it starts with no images).
    pub async fn start_with_image(hosts: usize, fake: FakeDriverConfig) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        Self::start_db_net(dir, db, hosts, fake, test_config(), false, false, (false, true)).await
    }

    async fn start_full(hosts: usize, fake: FakeDriverConfig, cfg: ComputeConfig, real: bool) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        Self::start_db(dir, db, hosts, fake, cfg, real, false).await
    }

    /// Like [`Cloud::start_with`] on PostgreSQL (`STRATUS_TEST_POSTGRES_URL`), in a fresh
    /// schema.
    pub async fn start_postgres(hosts: usize, fake: FakeDriverConfig, cfg: ComputeConfig) -> Cloud {
        let base = std::env::var("STRATUS_TEST_POSTGRES_URL").expect(
            "STRATUS_TEST_POSTGRES_URL is not set: run the suite through scripts/test.sh, which starts PostgreSQL",
        );
        let db = Db::connect(&base).await.expect("PostgreSQL must be reachable");
        let schema = format!("compute_t{}_{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        stratus_db::sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
            .execute(db.reader())
            .await
            .unwrap();
        db.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let db = Db::connect(&format!("{base}{sep}options=-c%20search_path%3D{schema}")).await.unwrap();
        Self::start_db(tempfile::tempdir().unwrap(), db, hosts, fake, cfg, false, false).await
    }

    async fn start_db(
        dir: tempfile::TempDir,
        db: Db,
        hosts: usize,
        fake: FakeDriverConfig,
        cfg: ComputeConfig,
        real: bool,
        rest_only: bool,
    ) -> Cloud {
        Self::start_db_net(dir, db, hosts, fake, cfg, real, rest_only, (false, false)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_db_net(
        dir: tempfile::TempDir,
        db: Db,
        hosts: usize,
        fake: FakeDriverConfig,
        cfg: ComputeConfig,
        real: bool,
        rest_only: bool,
        (network, image): (bool, bool),
    ) -> Cloud {
        let platform = Platform {
            db,
            bus: Arc::new(InProcBus::new()),
            public_url: "http://cloud.test".into(),
            data_dir: dir.path().to_path_buf(),
            host: "controller".into(),
            internal: InternalClient::default(),
            region: "RegionOne".into(),
        };
        let placement = MemoryPlacement::default();
        let images = MemoryImages::default();
        images.add(IMAGE, "cirros");
        let real_placement = if real {
            let auth = AuthState { validator: Arc::new(Tokens), identity_uri: "http://cloud.test/identity".into() };
            let p =
                stratus_placement::PlacementService::start(platform.clone(), auth, Default::default()).await.unwrap();
            Some(Router::new().nest("/placement", p.router()))
        } else {
            None
        };
        let real_network = if network {
            let auth = AuthState { validator: Arc::new(Tokens), identity_uri: "http://cloud.test/identity".into() };
            let n = stratus_network::NetworkService::start(platform.clone(), auth, Default::default()).await.unwrap();
            Some(Router::new().nest("/network", n.router()))
        } else {
            None
        };
        let real_image = if image {
            let auth = AuthState { validator: Arc::new(Tokens), identity_uri: "http://cloud.test/identity".into() };
            let i = stratus_image::ImageService::start(platform.clone(), auth, Default::default()).await.unwrap();
            Some(Router::new().nest("/image", i.router()))
        } else {
            None
        };
        let (service, router) = Self::service(
            &platform,
            &placement,
            &images,
            &cfg,
            real_placement.clone(),
            rest_only,
            real_network.clone(),
            real_image.clone(),
        )
        .await;
        let mut c = Cloud {
            dir,
            platform,
            placement,
            images,
            cfg,
            service,
            router,
            agents: vec![],
            real_placement,
            rest_only,
            real_network,
            real_image,
        };
        for n in 0..hosts {
            let d = FakeDriver::new(FakeDriverConfig {
                vcpus: Some(8),
                memory_mb: Some(8192 + 512),
                local_gb: Some(100),
                ..fake.clone()
            });
            c.add_agent(&format!("node{}", n + 1), d).await;
        }
        c
    }

    #[allow(clippy::too_many_arguments)]
    async fn service(
        platform: &Platform,
        placement: &MemoryPlacement,
        images: &MemoryImages,
        cfg: &ComputeConfig,
        real_placement: Option<Router>,
        rest_only: bool,
        real_network: Option<Router>,
        real_image: Option<Router>,
    ) -> (ComputeService, Router) {
        use stratus_compute::placement::RestPlacement;
        let auth = AuthState { validator: Arc::new(Tokens), identity_uri: "http://cloud.test/identity".into() };
        let pl: Arc<dyn stratus_compute::placement::PlacementApi> = match &real_placement {
            Some(_) if rest_only => Arc::new(RestPlacement::rest_only(platform.internal.clone())),
            Some(_) => Arc::new(RestPlacement::new(platform.internal.clone())),
            None => Arc::new(placement.clone()),
        };
        let network: Arc<dyn stratus_compute::clients::NetworkApi> = match &real_network {
            Some(_) => Arc::new(stratus_compute::clients::RestNetwork(platform.internal.clone())),
            None => Arc::new(NoNetwork),
        };
        let images: Arc<dyn stratus_compute::clients::ImageApi> = match &real_image {
            Some(_) => Arc::new(stratus_compute::clients::RestImages(platform.internal.clone())),
            None => Arc::new(images.clone()),
        };
        let backends =
            Backends { placement: pl, images, network, volumes: Arc::new(stratus_compute::volume_api::NoVolumes) };
        let service = ComputeService::start_with(platform.clone(), auth, cfg.clone(), backends).await.unwrap();
        let mut router = Router::new().nest("/compute", service.router());
        if let Some(p) = real_placement {
            router = router.merge(p);
        }
        if let Some(n) = real_network {
            router = router.merge(n);
        }
        if let Some(i) = real_image {
            router = router.merge(i);
        }
        let router = router.layer(axum::middleware::from_fn(stratus_core::request_id::assign));
        platform.internal.install(router.clone());
        (service, router)
    }

    pub async fn add_agent(&mut self, host: &str, d: FakeDriver) {
        let cfg = AgentConfig {
            host: host.into(),
            heartbeat_interval_secs: 1,
            sync_interval_secs: 3600,
            ..Default::default()
        };
        let h = Agent::start(cfg, self.platform.bus.clone(), Arc::new(d.clone())).await.unwrap();
        self.agents.push((host.into(), d, Some(h)));
    }

    /// Kills agent `i` (its guests stay in the driver, like a crashed nova-compute).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(h) = self.agents[i].2.take() {
            h.stop();
        }
    }

    pub async fn restart_agent(&mut self, i: usize) {
        let (host, d) = (self.agents[i].0.clone(), self.agents[i].1.clone());
        let cfg = AgentConfig { host, heartbeat_interval_secs: 1, sync_interval_secs: 3600, ..Default::default() };
        let h = Agent::start(cfg, self.platform.bus.clone(), Arc::new(d)).await.unwrap();
        self.agents[i].2 = Some(h);
    }

    /// Simulates a controller crash and restart: the conductor's tasks die, a new compute
    /// service starts on the same database and bus, and runs its recovery.
    pub async fn restart_controller(&mut self) {
        self.service.stop();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (service, router) = Self::service(
            &self.platform,
            &self.placement,
            &self.images,
            &self.cfg,
            self.real_placement.clone(),
            self.rest_only,
            self.real_network.clone(),
            self.real_image.clone(),
        )
        .await;
        self.service = service;
        self.router = router;
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_v(method, path, token, body, "2.96").await
    }

    pub async fn call_v(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        version: &str,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("/compute/v2.1{path}"))
            .header("x-auth-token", token)
            .header("openstack-api-version", format!("compute {version}"));
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        let resp = self.router.clone().oneshot(b.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A call to any path as `token`, with a JSON body and extra headers (the real image or
    /// network service).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path).header("x-auth-token", token);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(&v).unwrap()),
            None => Body::empty(),
        };
        let resp = self.router.clone().oneshot(b.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A raw call to any path (placement with the real service).
    pub async fn raw(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path).header("x-auth-token", "admin");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self.router.clone().oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn boot(&self, token: &str, name: &str, flavor: &str) -> String {
        let (s, b) = self
            .post(
                "/servers",
                token,
                serde_json::json!({"server": {"name": name, "flavorRef": flavor, "imageRef": IMAGE, "networks": "none"}}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        b["server"]["id"].as_str().unwrap().to_string()
    }

    /// Waits (bounded) until the server's status is `want` with no task; returns the server.
    pub async fn wait_status(&self, id: &str, token: &str, want: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..500 {
            let (s, b) = self.get(&format!("/servers/{id}"), token).await;
            if s == StatusCode::OK && b["server"]["status"] == want && b["server"]["OS-EXT-STS:task_state"].is_null() {
                return b["server"].clone();
            }
            last = b;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server {id} never reached {want}: {last}");
    }

    pub async fn wait_gone(&self, id: &str, token: &str) {
        for _ in 0..500 {
            let (s, _) = self.get(&format!("/servers/{id}"), token).await;
            if s == StatusCode::NOT_FOUND {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server {id} was never deleted");
    }

    /// Ids of live servers, all projects.
    pub async fn live_servers(&self) -> Vec<String> {
        let (_, b) = self.get("/servers?all_tenants=1", "admin").await;
        let mut v: Vec<String> =
            b["servers"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    }
}
