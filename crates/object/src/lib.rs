//! Object storage service: the Swift API (capabilities so far).
//!
//! Mounted under `/object`. Routes, policy and SQL of each resource live in a module named
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

/// `[object]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectConfig {}

/// The running service.
pub struct ObjectService {
    platform: Platform,
    auth: AuthState,
}

impl ObjectService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, _config: ObjectConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(ObjectService { platform, auth }))
    }

    /// Routes, mounted under `/object`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/object");
        let protected = Router::new().layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Swift, None)
    }
}
