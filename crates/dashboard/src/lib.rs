//! Dashboard: the web console, served by the same process under `/dashboard`.
//!
//! Pages are rendered on the server with maud (templates compiled into the binary, every
//! interpolated string HTML-escaped); the stylesheet and the few lines of script are
//! embedded too, so there is no Node build step. The dashboard calls the cloud's APIs
//! as the logged-in user ([`api`]), so what a person sees and may do is exactly what the
//! APIs' policy allows. Every response carries a strict Content-Security-Policy (no
//! inline script or style), and every state-changing request must carry the session's
//! CSRF token ([`guard`]).
//!
//! Modules: [`session`] (the bounded server-side store), [`login`] (log in, switch
//! project, log out), [`layout`] (the page shell and navigation), one module per panel
//! ([`overview`], [`instances`], [`images`], [`networks`], [`routers`],
//! [`floating_ips`], [`volumes`], [`identity`]), [`assets`].

pub mod api;
pub mod assets;
pub mod error;
pub mod floating_ips;
pub mod guard;
pub mod identity;
pub mod images;
pub mod instances;
pub mod layout;
pub mod login;
pub mod networks;
pub mod overview;
pub mod routers;
pub mod session;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::AuthState;
use stratus_core::Platform;

use crate::session::SessionStore;

/// `[dashboard]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Most sessions held at once; the least recently used go first beyond it.
    pub max_sessions: usize,
    /// A session without a request for this long ends (its token may still be valid).
    pub session_idle_secs: u64,
    /// Mark cookies `Secure`. Default: when the cloud's public URL is `https://`.
    pub secure_cookies: Option<bool>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig { max_sessions: 10_000, session_idle_secs: 3600, secure_cookies: None }
    }
}

/// What every handler shares.
pub struct Dash {
    /// Shared infrastructure (the in-process API client).
    pub platform: Platform,
    /// Identity's token validator.
    pub auth: AuthState,
    /// Sessions.
    pub sessions: SessionStore,
    /// The path the dashboard is served under as browsers see it (`/dashboard`, or
    /// `/cloud/dashboard` behind a proxy with a path prefix).
    pub prefix: String,
    /// Whether cookies are marked `Secure`.
    pub secure: bool,
}

impl Dash {
    /// An absolute path under the dashboard (`rel` starts with `/`).
    pub fn url(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }
}

/// The running service.
pub struct DashboardService {
    dash: Arc<Dash>,
}

impl DashboardService {
    /// Starts the service.
    pub async fn start(platform: Platform, auth: AuthState, config: DashboardConfig) -> anyhow::Result<Arc<Self>> {
        let public = platform.service_url("/dashboard");
        let prefix = public
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_else(|| "/dashboard".into());
        let secure = config.secure_cookies.unwrap_or_else(|| platform.public_url.starts_with("https://"));
        let sessions = SessionStore::new(config.max_sessions, Duration::from_secs(config.session_idle_secs));
        Ok(Arc::new(DashboardService { dash: Arc::new(Dash { platform, auth, sessions, prefix, secure }) }))
    }

    /// The shared state (tests look at the session store).
    pub fn state(&self) -> &Arc<Dash> {
        &self.dash
    }

    /// Routes, mounted under `/dashboard`.
    pub fn router(self: &Arc<Self>) -> Router {
        let d = self.dash.clone();
        Router::new()
            .route("/", get(root))
            .route("/static/{file}", get(assets::serve))
            .route("/auth/login", get(login::form).post(login::submit))
            .route("/auth/logout", post(login::logout))
            .route("/auth/switch", post(login::switch))
            .route("/project/overview", get(overview::page))
            .route("/project/instances", get(instances::page))
            .route("/project/instances/rows", get(instances::rows))
            .route("/project/instances/launch", get(instances::launch_form).post(instances::launch))
            .route("/project/instances/{id}/action", post(instances::action))
            .route("/project/instances/{id}/console", post(instances::console))
            .route("/project/images", get(images::page).post(images::create))
            .route("/project/images/{id}/data", put(images::upload))
            .route("/project/images/{id}/delete", post(images::delete))
            .route("/project/networks", get(networks::page).post(networks::create))
            .route("/project/networks/{id}/delete", post(networks::delete))
            .route("/project/floating_ips", get(floating_ips::page).post(floating_ips::allocate))
            .route("/project/floating_ips/{id}/associate", post(floating_ips::associate))
            .route("/project/floating_ips/{id}/disassociate", post(floating_ips::disassociate))
            .route("/project/floating_ips/{id}/release", post(floating_ips::release))
            .route("/project/volumes", get(volumes::page).post(volumes::create))
            .route("/project/volumes/rows", get(volumes::rows))
            .route("/project/volumes/{id}/attach", post(volumes::attach))
            .route("/project/volumes/{id}/detach", post(volumes::detach))
            .route("/project/volumes/{id}/delete", post(volumes::delete))
            .route("/project/routers", get(routers::page).post(routers::create))
            .route("/project/routers/{id}/interface", post(routers::add_interface))
            .route("/project/routers/{id}/delete", post(routers::delete))
            .route("/identity/projects", get(identity::projects))
            .route("/identity/users", get(identity::users))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(d.clone(), guard::csrf))
            .layer(axum::middleware::map_response(guard::security_headers))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(guard::panic_page))
            .with_state(d)
    }
}

/// `GET /dashboard`: the overview when logged in, the login form otherwise.
async fn root(axum::extract::State(d): axum::extract::State<Arc<Dash>>, sess: Option<login::Sess>) -> Redirect {
    match sess {
        Some(_) => Redirect::to(&d.url("/project/overview")),
        None => Redirect::to(&d.url("/auth/login")),
    }
}

async fn not_found() -> Response {
    error::DashError::Api { status: axum::http::StatusCode::NOT_FOUND, message: "There is no such page.".into() }
        .into_response()
}
