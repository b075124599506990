//! Image service: the Glance v2 API.
//!
//! Mounted under `/image`. Routes, policy and SQL of each resource live in a module named
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

/// `[image]` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {}

/// The running service.
pub struct ImageService {
    platform: Platform,
    auth: AuthState,
}

impl ImageService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, _config: ImageConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(ImageService { platform, auth }))
    }

    /// Routes, mounted under `/image`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/image");
        let protected = Router::new().layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Glance, None)
    }
}
