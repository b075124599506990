//! Who is calling: the request context built from a validated token.
//!
//! Identity issues tokens; every other service only needs "who, in which scope, with
//! which roles". That is this type, and [`TokenValidator`] is the one thing services ask
//! of identity. In the all-in-one process the validator is identity's own in-memory
//! implementation: no HTTP hop per request.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The authenticated caller of a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestContext {
    /// User id.
    pub user_id: String,
    /// User name.
    pub user_name: String,
    /// The user's domain id.
    pub user_domain_id: String,
    /// The user's domain name.
    pub user_domain_name: String,
    /// Project of a project-scoped token.
    pub project_id: Option<String>,
    /// Its name.
    pub project_name: Option<String>,
    /// Its domain id.
    pub project_domain_id: Option<String>,
    /// Its domain name.
    pub project_domain_name: Option<String>,
    /// Domain of a domain-scoped token.
    pub domain_id: Option<String>,
    /// Its name.
    pub domain_name: Option<String>,
    /// True for a system-scoped token (`system: all`).
    pub system_scope: bool,
    /// Effective role names (implied roles expanded).
    pub roles: Vec<String>,
    /// Effective role ids, parallel to nothing: used by token responses.
    pub role_ids: Vec<String>,
    /// The token itself (for calls made on the user's behalf).
    #[serde(skip)]
    pub token: String,
    /// Audit ids of the token chain.
    pub audit_ids: Vec<String>,
    /// Token expiry (RFC 3339).
    pub expires_at: String,
    /// Application credential the token came from, if any.
    pub application_credential_id: Option<String>,
}

impl RequestContext {
    /// True when the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// OpenStack's traditional `context_is_admin`: the admin role, in any scope.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    /// A context for work the cloud does on its own behalf (service-to-service calls
    /// in-process, periodic tasks). Never built from client input.
    pub fn internal_admin() -> Self {
        RequestContext {
            user_id: "stratus-internal".into(),
            user_name: "stratus-internal".into(),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            system_scope: true,
            roles: vec!["admin".into(), "member".into(), "reader".into(), "service".into()],
            ..Default::default()
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AuthFailure {
    /// Missing, malformed, expired, revoked or for a disabled user/project.
    #[error("{0}")]
    Invalid(String),
    /// Identity could not be consulted.
    #[error("identity is unavailable: {0}")]
    Unavailable(String),
}

/// Validates tokens into request contexts (keystonemiddleware's job).
#[async_trait]
pub trait TokenValidator: Send + Sync + 'static {
    /// Validates `token`, returning its context.
    async fn validate(&self, token: &str) -> Result<RequestContext, AuthFailure>;
}
