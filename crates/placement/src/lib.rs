//! Placement service: resource providers, inventories, allocations, traits.
//!
//! Mounted under `/placement`. Routes, policy and SQL of each resource live in a module named
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

/// `[placement]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {}

/// The running service.
pub struct PlacementService {
    platform: Platform,
    auth: AuthState,
}

impl PlacementService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, _config: PlacementConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(PlacementService { platform, auth }))
    }

    /// Routes, mounted under `/placement`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/placement");
        let protected = Router::new().layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Placement, Some(versions::MICROVERSIONS))
    }
}
