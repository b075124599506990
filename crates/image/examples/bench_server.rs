//! The image API alone on a loopback port, for `bench/image.sh`: one static token
//! (`bench-token`, an admin of project `bench`) instead of identity, so the benchmark
//! measures the image data path and nothing else.
//!
//! Usage: `bench_server <data-dir>`; prints `LISTEN http://127.0.0.1:PORT` and serves
//! until killed.

use std::sync::Arc;

use axum::Router;
use stratus_auth::AuthState;
use stratus_core::internal::InternalClient;
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};
use stratus_image::{ImageConfig, ImageService};

struct StaticToken;

#[async_trait::async_trait]
impl TokenValidator for StaticToken {
    async fn validate(&self, token: &str) -> Result<RequestContext, AuthFailure> {
        if token != "bench-token" {
            return Err(AuthFailure::Invalid("unknown token".into()));
        }
        Ok(RequestContext {
            user_id: "bench".into(),
            user_name: "bench".into(),
            project_id: Some("bench".into()),
            roles: vec!["admin".into(), "member".into(), "reader".into()],
            ..Default::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir =
        std::path::PathBuf::from(std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: bench_server DIR"))?);
    std::fs::create_dir_all(&dir)?;
    let db = stratus_db::Db::connect(&format!("sqlite://{}/stratus.db", dir.display())).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let platform = Platform {
        db,
        bus: Arc::new(stratus_bus::InProcBus::new()),
        public_url: url.clone(),
        data_dir: dir,
        host: "bench".into(),
        internal: InternalClient::default(),
        region: "RegionOne".into(),
    };
    let auth = AuthState { validator: Arc::new(StaticToken), identity_uri: format!("{url}/identity") };
    let svc = ImageService::start(platform, auth, ImageConfig::default()).await?;
    let app = Router::new().nest("/image", svc.router());
    println!("LISTEN {url}");
    axum::serve(listener, app).await?;
    Ok(())
}
