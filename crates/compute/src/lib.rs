//! Compute service: the Nova v2.1 API, scheduler and conductor.
//!
//! Mounted under `/compute`. Routes, policy and SQL of each resource live in a module named
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

/// `[compute]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeConfig {}

/// The running service.
pub struct ComputeService {
    platform: Platform,
    auth: AuthState,
}

impl ComputeService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, _config: ComputeConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(ComputeService { platform, auth }))
    }

    /// Routes, mounted under `/compute`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/compute");
        let protected = Router::new().layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Nova, None)
    }
}
