//! Networking service: the Neutron v2.0 API.
//!
//! Mounted under `/network`. Routes, policy and SQL of each resource live in a module named
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

/// `[network]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {}

/// The running service.
pub struct NetworkService {
    platform: Platform,
    auth: AuthState,
}

impl NetworkService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, _config: NetworkConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(NetworkService { platform, auth }))
    }

    /// Routes, mounted under `/network`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/network");
        let protected = Router::new().layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Neutron, None)
    }
}
