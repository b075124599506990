//! Placement service: resource providers, inventories, allocations, traits.
//!
//! Mounted under `/placement`. Routes, policy and SQL of each resource live in a module named
//! after it; [`index`] is the in-memory read model that answers allocation candidates.

pub mod catalog;
mod common;
pub mod direct;
pub mod error;
pub mod index;
pub mod metrics;
pub mod policy;
mod store;
mod versions;

mod aggregates;
mod allocation_candidates;
mod allocations;
mod inventories;
mod reshaper;
mod resource_classes;
mod resource_providers;
mod traits;
mod usages;

/// This service's entry in the identity catalog (the binary registers it while it serves it).
pub const CATALOG: &[stratus_core::CatalogEntry] = &[stratus_core::CatalogEntry {
    service_type: "placement",
    name: "placement",
    description: "Placement Service",
    path: "/placement",
}];

use std::path::PathBuf;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::Router;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use stratus_auth::{require_auth, AuthState, Policy};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;
use stratus_db::{Db, Migration};

pub use versions::MICROVERSIONS;

/// Schema migrations.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") }];

/// `[placement]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// Operator policy overrides (YAML `rule: check`). Default: none, Placement's defaults
    /// (admin or service role for every API).
    pub policy_file: Option<PathBuf>,
    /// Seconds between full re-reads of the in-memory read model from the database;
    /// 0 disables. Each process updates its model on its own writes, so this is only
    /// needed when several controllers write one PostgreSQL database. Default: 0.
    pub index_resync_seconds: u64,
}

/// Shared state of the handlers.
pub struct AppState {
    /// The database: the authority for every claim.
    pub db: Db,
    /// Effective policy.
    pub policy: Policy,
    /// Read model answering candidates and filtered provider lists.
    pub index: RwLock<index::Index>,
    /// Public URL of the service (`http://host:5080/placement`).
    pub public_base: String,
    /// Claims for new consumers waiting to be written together (group commit).
    pub(crate) batcher: allocations::Batcher,
}

impl AppState {
    /// An absolute `Location` for `path` under the service, as webob makes Placement's
    /// (osc-placement follows it through the session, which only accepts absolute URLs
    /// or paths relative to the endpoint).
    pub fn location(&self, path: &str) -> String {
        format!("{}{path}", self.public_base)
    }
}

/// The running service.
pub struct PlacementService {
    platform: Platform,
    auth: AuthState,
    state: Arc<AppState>,
}

impl PlacementService {
    /// Starts the service: migrates its tables and loads the read model.
    pub async fn start(platform: Platform, auth: AuthState, config: PlacementConfig) -> anyhow::Result<Arc<Self>> {
        platform.db.migrate("placement", MIGRATIONS).await?;
        let policy = Policy::load("placement", policy::DEFAULTS, config.policy_file.as_deref())?;
        let state = Arc::new(AppState {
            db: platform.db.clone(),
            policy,
            index: RwLock::new(index::Index::default()),
            public_base: platform.service_url("/placement"),
            batcher: allocations::Batcher::default(),
        });
        store::reload_all(&state).await?;
        tracing::info!(providers = state.index.read().len(), "placement read model loaded");
        // Compute's scheduler in this process asks for candidates and claims through the
        // typed API instead of JSON (same answers; see `direct`).
        platform.internal.provide(Arc::new(direct::Direct::new(state.clone())));
        if config.index_resync_seconds > 0 {
            let weak = Arc::downgrade(&state);
            let every = std::time::Duration::from_secs(config.index_resync_seconds);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(st) = weak.upgrade() else { break };
                    if let Err(e) = store::reload_all(&st).await {
                        tracing::warn!(error = %e, "placement read model resync failed");
                    }
                }
            });
        }
        Ok(Arc::new(PlacementService { platform, auth, state }))
    }

    /// The handlers' state (tests and benchmarks look inside).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Routes, mounted under `/placement`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/placement");
        let api = Router::new()
            .merge(resource_providers::routes())
            .merge(inventories::routes())
            .merge(resource_classes::routes())
            .merge(traits::routes())
            .merge(aggregates::routes())
            .merge(allocations::routes())
            .merge(usages::routes())
            .merge(allocation_candidates::routes())
            .merge(reshaper::routes())
            .with_state(self.state.clone());
        let protected = api
            .layer(axum::middleware::from_fn(cache_headers))
            .layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Placement, Some(versions::MICROVERSIONS))
    }
}

/// From 1.15 every successful GET carries `cache-control: no-cache` and a `last-modified`
/// date, as Placement sends them.
async fn cache_headers(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{header, HeaderValue, Method};
    let is_get = req.method() == Method::GET;
    let v = req.extensions().get::<stratus_core::ApiVersion>().copied();
    let mut resp = next.run(req).await;
    if is_get && v.is_some_and(|v| v.at_least(1, 15)) && resp.status().is_success() {
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let now = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(val) = HeaderValue::from_str(&now) {
            h.insert(header::LAST_MODIFIED, val);
        }
    }
    resp
}
