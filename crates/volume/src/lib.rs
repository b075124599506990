//! Block storage service: the Cinder v3 API (version discovery so far).
//!
//! Mounted under `/volume`. Routes, policy and SQL of each resource live in a module named
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

/// `[volume]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeConfig {}

/// The running service.
pub struct VolumeService {
    platform: Platform,
    auth: AuthState,
}

impl VolumeService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, _config: VolumeConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(VolumeService { platform, auth }))
    }

    /// Routes, mounted under `/volume`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/volume");
        let protected = Router::new().layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Cinder, None)
    }
}
