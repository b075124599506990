//! Identity service: the Keystone v3 API under `/identity`.
//!
//! Every other service authenticates through this one: it issues tokens and, through
//! [`IdentityService::validator`], validates them in-process for the auth middleware.

mod versions;

use std::sync::Arc;

use async_trait_shim::validator_placeholder;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::{Platform, TokenValidator};

/// `[identity]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Token lifetime in seconds.
    pub token_expiration_secs: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig { token_expiration_secs: 24 * 3600 }
    }
}

/// The running identity service.
pub struct IdentityService {
    platform: Platform,
    #[allow(dead_code)]
    config: IdentityConfig,
}

impl IdentityService {
    /// Starts identity: migrates its schema.
    pub async fn start(platform: Platform, config: IdentityConfig) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(IdentityService { platform, config }))
    }

    /// The in-process token validator other services' auth layers use.
    pub fn validator(self: &Arc<Self>) -> Arc<dyn TokenValidator> {
        validator_placeholder()
    }

    /// Identity's routes, mounted under `/identity`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/identity");
        let routes = Router::new().route("/", get(versions::root)).route("/v3", get(versions::v3)).with_state(base);
        service_stack(routes, FaultFormat::Keystone, None)
    }
}

mod async_trait_shim {
    use std::sync::Arc;

    use stratus_core::{AuthFailure, RequestContext, TokenValidator};

    struct NoTokens;

    #[async_trait::async_trait]
    impl TokenValidator for NoTokens {
        async fn validate(&self, _token: &str) -> Result<RequestContext, AuthFailure> {
            Err(AuthFailure::Invalid("token issue is not implemented yet".into()))
        }
    }

    pub fn validator_placeholder() -> Arc<dyn TokenValidator> {
        Arc::new(NoTokens)
    }
}
