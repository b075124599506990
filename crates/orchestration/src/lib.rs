//! Orchestration service: the Heat v1 API, HOT templates and a durable stack engine.
//!
//! Mounted under `/orchestration`, every route under `/v1/{project_id}` (catalog type
//! `orchestration`). A stack is created from a HOT template ([`template`]: sections,
//! parameters, intrinsic functions, the dependency graph, all validated before anything
//! is made); the [`engine`] then creates its resources in dependency order through the
//! other services' public APIs, as the stack's owner ([`resources`]: one module per
//! service family), recording every state in the database ([`store`]) before and after
//! each call, with an event per state change. The API ([`api`]) reads those rows.

pub mod api;
pub mod engine;
#[cfg(test)]
mod engine_tests;
mod error;
mod policy;
pub mod resources;
pub mod store;
pub mod template;
pub mod update;
#[cfg(test)]
mod update_tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::{require_auth, AuthState, Policy};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;
use stratus_db::{Db, Migration};

pub use error::{HeatError, HeatResult};
pub use resources::Registry;

/// This service's entry in the identity catalog.
pub const CATALOG: &[stratus_core::CatalogEntry] = &[stratus_core::CatalogEntry {
    service_type: "orchestration",
    name: "heat",
    description: "Orchestration Service",
    path: "/orchestration/v1/$(project_id)s",
}];

/// Schema of the orchestration service.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") },
    Migration { version: 2, name: "updates", sql: include_str!("../migrations/0002_updates.sql") },
];

/// `[orchestration]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestrationConfig {
    /// Operator policy overrides (YAML/JSON). Default: none.
    pub policy_file: Option<PathBuf>,
    /// Resources a template may declare (Heat's `max_resources_per_stack`, default 1000).
    pub max_resources_per_stack: usize,
    /// Stacks a project may have (Heat's `max_stacks_per_tenant`, default 512).
    pub max_stacks_per_tenant: usize,
}

impl Default for OrchestrationConfig {
    fn default() -> Self {
        OrchestrationConfig { policy_file: None, max_resources_per_stack: 1000, max_stacks_per_tenant: 512 }
    }
}

/// State shared by the handlers and the engine.
pub struct Orch {
    /// The database.
    pub db: Db,
    /// Policy.
    pub policy: Policy,
    /// Configuration.
    pub cfg: OrchestrationConfig,
    /// Public URL of `/orchestration`.
    pub base: String,
    /// Infrastructure (in-process calls to the other services).
    pub platform: Platform,
    /// Resource types offered.
    pub registry: Registry,
    /// Actions running, by stack id.
    pub(crate) running: parking_lot::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Whether resumed actions first wait until the cloud's router answers in-process
    /// calls (set when started inside a cloud; engine tests run without one).
    pub(crate) wait_for_cloud: bool,
    /// Failures injected by tests: `(resource name, message)`: creating a resource of
    /// that name fails with that message instead of calling its service.
    pub faults: parking_lot::Mutex<Vec<(String, String)>>,
}

/// Shared state handle.
pub type S = Arc<Orch>;

/// The running service.
pub struct OrchestrationService {
    st: S,
    auth: AuthState,
}

impl OrchestrationService {
    /// Starts the service: migrates and resumes (or fails cleanly) the stack actions a
    /// restart interrupted.
    pub async fn start(platform: Platform, auth: AuthState, config: OrchestrationConfig) -> anyhow::Result<Arc<Self>> {
        Self::start_with_registry(platform, auth, config, Registry::standard()).await
    }

    /// Like [`OrchestrationService::start`] with the resource types given (tests add
    /// their own).
    pub async fn start_with_registry(
        platform: Platform,
        auth: AuthState,
        config: OrchestrationConfig,
        registry: Registry,
    ) -> anyhow::Result<Arc<Self>> {
        let st = Self::build(platform, config, registry, true).await?;
        engine::recover(&st).await?;
        Ok(Arc::new(OrchestrationService { st, auth }))
    }

    /// The engine's state without the API or recovery (engine tests).
    pub async fn state(platform: Platform, config: OrchestrationConfig, registry: Registry) -> anyhow::Result<S> {
        Self::build(platform, config, registry, false).await
    }

    async fn build(
        platform: Platform,
        config: OrchestrationConfig,
        registry: Registry,
        wait_for_cloud: bool,
    ) -> anyhow::Result<S> {
        platform.db.migrate("orchestration", MIGRATIONS).await?;
        let policy = Policy::load("orchestration", policy::DEFAULTS, config.policy_file.as_deref())?;
        Ok(Arc::new(Orch {
            db: platform.db.clone(),
            policy,
            cfg: config,
            base: platform.service_url("/orchestration"),
            platform,
            registry,
            running: Default::default(),
            wait_for_cloud,
            faults: Default::default(),
        }))
    }

    /// The shared state.
    pub fn shared(&self) -> &S {
        &self.st
    }

    /// Routes, mounted under `/orchestration`.
    pub fn router(self: &Arc<Self>) -> Router {
        let protected =
            api::routes().with_state(self.st.clone()).route_layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes =
            api::versions(&self.st.base).merge(protected).merge(api::signal::routes().with_state(self.st.clone()));
        service_stack(routes, FaultFormat::Heat, None)
    }
}
