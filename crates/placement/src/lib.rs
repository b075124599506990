//! Placement service: resource providers, inventories, allocations, traits.
//!
//! Mounted under `/placement`. Routes, policy and SQL of each resource live in a module named
//! after it; [`index`] is the in-memory read model that answers allocation candidates.

pub mod catalog;
mod common;
pub mod error;
pub mod index;
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
}

/// Shared state of the handlers.
pub struct AppState {
    /// The database: the authority for every claim.
    pub db: Db,
    /// Effective policy.
    pub policy: Policy,
    /// Read model answering candidates and filtered provider lists.
    pub index: RwLock<index::Index>,
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
        let state = Arc::new(AppState { db: platform.db.clone(), policy, index: RwLock::new(index::Index::default()) });
        store::reload_all(&state).await?;
        tracing::info!(providers = state.index.read().len(), "placement read model loaded");
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
        let protected = api.layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Placement, Some(versions::MICROVERSIONS))
    }
}
