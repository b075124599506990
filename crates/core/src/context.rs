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
    /// The access rules of that application credential: when set, the token may only
    /// call what one of them allows (keystonemiddleware's check). `None`: unrestricted.
    #[serde(default)]
    pub access_rules: Option<Vec<AccessRule>>,
}

/// One access rule of an application credential: a service type, an HTTP method and a
/// path under the service's root where `*` matches one segment and `**` any number.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AccessRule {
    /// Service type (`compute`, `image`...).
    pub service: String,
    /// HTTP method.
    pub method: String,
    /// Path template (`/v2.1/servers/*/ips`).
    pub path: String,
}

impl AccessRule {
    /// Whether a call of `method` on `path` (under the root of service `service`) is allowed.
    pub fn allows(&self, service: &str, method: &str, path: &str) -> bool {
        fn matches(pattern: &[&str], path: &[&str]) -> bool {
            match (pattern.first(), path.first()) {
                (None, None) => true,
                (Some(&"**"), _) => (0..=path.len()).any(|i| matches(&pattern[1..], &path[i..])),
                (Some(p), Some(s)) if *p == "*" || p == s => matches(&pattern[1..], &path[1..]),
                _ => false,
            }
        }
        let split =
            |s: &str| s.trim_matches('/').split('/').filter(|x| !x.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        let (pat, got) = (split(&self.path), split(path));
        let pat: Vec<&str> = pat.iter().map(String::as_str).collect();
        let got: Vec<&str> = got.iter().map(String::as_str).collect();
        self.service == service && self.method.eq_ignore_ascii_case(method) && matches(&pat, &got)
    }
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

#[cfg(test)]
mod access_rule_tests {
    use super::AccessRule;

    #[test]
    fn access_rules_match_service_method_and_path_templates() {
        let r = AccessRule { service: "compute".into(), method: "GET".into(), path: "/v2.1/servers/*/ips".into() };
        assert!(r.allows("compute", "GET", "/v2.1/servers/abc/ips"));
        assert!(!r.allows("compute", "GET", "/v2.1/servers/abc/ips/x"));
        assert!(!r.allows("compute", "POST", "/v2.1/servers/abc/ips"));
        assert!(!r.allows("image", "GET", "/v2.1/servers/abc/ips"));
        assert!(!r.allows("compute", "GET", "/v2.1/servers"));
        let any = AccessRule { service: "image".into(), method: "GET".into(), path: "/v2/**".into() };
        assert!(any.allows("image", "GET", "/v2/images/x/file"));
        assert!(any.allows("image", "GET", "/v2"));
        assert!(!any.allows("image", "GET", "/v1/images"));
    }
}
