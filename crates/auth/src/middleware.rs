//! The token-validation layer every protected route sits behind.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stratus_core::internal::InternalCaller;
use stratus_core::{ApiError, AuthFailure, RequestContext, TokenValidator};

/// State of the auth layer.
#[derive(Clone)]
pub struct AuthState {
    /// Identity's validator.
    pub validator: Arc<dyn TokenValidator>,
    /// Identity's public URL, quoted in `WWW-Authenticate` so clients know where to log in.
    pub identity_uri: String,
}

/// Middleware: requires a valid token (or a trusted in-process caller).
pub async fn require_auth(State(st): State<AuthState>, mut req: Request, next: Next) -> Response {
    let ctx = if let Some(InternalCaller(ctx)) = req.extensions().get::<InternalCaller>() {
        ctx.clone()
    } else {
        let token = req.headers().get("x-auth-token").and_then(|v| v.to_str().ok()).map(str::trim);
        let token = match token {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => return unauthorized(&st, "The request you have made requires authentication."),
        };
        match st.validator.validate(&token).await {
            Ok(ctx) => ctx,
            Err(AuthFailure::Invalid(why)) => {
                tracing::info!(reason = %why, "token rejected");
                return unauthorized(&st, "The request you have made requires authentication.");
            }
            Err(AuthFailure::Unavailable(why)) => {
                return ApiError::unavailable(format!("Identity service unavailable: {why}")).into_response()
            }
        }
    };
    if let Some(rules) = &ctx.access_rules {
        // An application credential with access rules: only what a rule allows.
        let full = req.extensions().get::<axum::extract::OriginalUri>().map(|u| u.path().to_string());
        let full = full.unwrap_or_else(|| req.uri().path().to_string());
        let (services, path) = service_of(&full);
        let method = req.method().as_str();
        if !rules.iter().any(|r| services.iter().any(|s| r.allows(s, method, path))) {
            tracing::info!(%full, "application credential access rules do not allow this call");
            return unauthorized(&st, "The request you have made requires authentication.");
        }
    }
    let span = tracing::Span::current();
    span.record("user", ctx.user_id.as_str());
    if let Some(p) = &ctx.project_id {
        span.record("project", p.as_str());
    }
    req.extensions_mut().insert(ctx);
    next.run(req).await
}

/// The service types a public path belongs to (a service may be known by several), and
/// the path under that service's root (the devstack-style prefixes of the one listener).
fn service_of(path: &str) -> (&'static [&'static str], &str) {
    const PREFIXES: &[(&str, &[&str])] = &[
        ("/identity", &["identity"]),
        ("/image", &["image"]),
        ("/placement", &["placement"]),
        ("/compute", &["compute"]),
        ("/network", &["network"]),
        ("/volume", &["block-storage", "volumev3"]),
        ("/object", &["object-store"]),
        ("/orchestration", &["orchestration"]),
        ("/dashboard", &["dashboard"]),
    ];
    for (prefix, services) in PREFIXES {
        if let Some(rest) = path.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with('/') {
                return (services, rest);
            }
        }
    }
    (&[], path)
}

fn unauthorized(st: &AuthState, msg: &str) -> Response {
    let mut r = ApiError::unauthorized(msg).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("Keystone uri=\"{}\"", st.identity_uri)) {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

/// Extractor for the authenticated caller.
#[derive(Debug, Clone)]
pub struct Ctx(pub RequestContext);

impl std::ops::Deref for Ctx {
    type Target = RequestContext;
    fn deref(&self) -> &RequestContext {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .map(Ctx)
            .ok_or_else(|| ApiError::unauthorized("The request you have made requires authentication."))
    }
}
