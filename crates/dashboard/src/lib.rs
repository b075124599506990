//! Dashboard: the web UI, served by the same process.
//!
//! Mounted under `/dashboard`. Routes, policy and SQL of each resource live in a module named
//! after it.

mod versions;

use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::{require_auth, AuthState};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;

/// `[dashboard]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {}

/// The running service.
pub struct DashboardService {
    platform: Platform,
    auth: AuthState,
}

impl DashboardService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, _config: DashboardConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(DashboardService { platform, auth }))
    }

    /// Routes, mounted under `/dashboard`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/dashboard");
        let protected = Router::new().layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Keystone, None)
    }
}
