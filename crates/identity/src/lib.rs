//! Identity service: the Keystone v3 API under `/identity`.
//!
//! Every other service authenticates through this one: it issues Fernet tokens and,
//! through [`IdentityService::validator`], validates them in-process for the auth
//! middleware (keystonemiddleware's role, without an HTTP hop).
//!
//! Layout: [`state`] is the core (keys, revocations, caches, token views); [`auth`]
//! the `/v3/auth` routes; one module per resource (`users`, `projects`, `domains`,
//! `groups`, `roles` with assignments, `catalog`, `app_creds` with access rules, `trusts`,
//! `credentials` with EC2, `oauth1` consumers, `policies`, `domain_config`,
//! `endpoint_filter`); [`compliance`] holds the password rules; [`bootstrap`] creates the
//! default domain, projects, roles, admin and catalog on start.

pub mod app_creds;
pub mod auth;
pub mod bootstrap;
pub mod catalog;
pub mod compliance;
pub mod credentials;
pub mod domain_config;
pub mod domains;
pub mod endpoint_filter;
pub mod error;
pub mod fernet;
pub mod groups;
pub mod model;
pub mod oauth1;
pub mod password;
pub mod policies;
pub mod policy;
pub mod projects;
pub mod revocation;
pub mod roles;
pub mod state;
pub mod throttle;
pub mod trusts;
pub mod users;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::{AuthState, Policy};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::{AuthFailure, Platform, RequestContext, TokenValidator};

use crate::fernet::KeyRepository;
use crate::state::Identity;

/// Migrations of identity's tables.
pub const MIGRATIONS: &[stratus_db::Migration] = &[
    stratus_db::Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") },
    stratus_db::Migration {
        version: 2,
        name: "keystone_extensions",
        sql: include_str!("../migrations/0002_keystone_extensions.sql"),
    },
];

/// Identity's own entry in the catalog.
pub const CATALOG: &[stratus_core::CatalogEntry] = &[stratus_core::CatalogEntry {
    service_type: "identity",
    name: "keystone",
    description: "Identity Service",
    path: "/identity",
}];

/// `[identity]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Token lifetime in seconds. Default 86400 (24 h, as Keystone).
    pub token_expiration_secs: u64,
    /// argon2id memory cost in KiB for password and secret hashes. Default 19456
    /// (OWASP's argon2id recommendation); tests use the minimum, 8.
    pub password_hash_memory_kib: u32,
    /// argon2id iterations. Default 2.
    pub password_hash_iterations: u32,
    /// Failed logins before an account is locked; 0 disables lockout (Keystone's
    /// `lockout_failure_attempts`). Default 0.
    pub lockout_failure_attempts: u32,
    /// Seconds an account stays locked; 0 means until an admin re-enables it
    /// (Keystone's `lockout_duration`). Default 1800.
    pub lockout_duration_secs: u64,
    /// How long validated token views (user, scope, roles) are cached, in milliseconds.
    /// Writes on this node void the cache at once; this bounds staleness from writes made
    /// by other nodes. Default 5000.
    pub cache_ttl_ms: u64,
    /// Keys kept in the Fernet repository (staged + primary + secondaries), at least 3
    /// (Keystone's `max_active_keys`). Default 3.
    pub max_active_keys: usize,
    /// Seconds between reloads of keys and revocation events from disk and database
    /// (picks up `stratus identity rotate-keys` and other nodes' revocations). Default 10.
    pub refresh_secs: u64,
    /// YAML/JSON file overriding identity policy rules; empty means the shipped
    /// defaults only. Default empty.
    pub policy_file: String,
    /// Memory that password hashing may use at once, in MiB: at most
    /// `budget / password_hash_memory_kib` hashes run concurrently, each in a work area
    /// allocated once and reused. Default 64 (three hashes at the default cost).
    pub password_hash_memory_budget_mib: u64,
    /// How long a login waits for a hashing slot before it is refused with 503 and
    /// `Retry-After`, in milliseconds. Default 2000.
    pub password_hash_queue_ms: u64,
    /// Failed logins one source address may make in a burst before it is refused with
    /// 429 without any hashing; 0 turns the per-source limit off. Default 30.
    pub failed_login_source_burst: u32,
    /// Failed logins per minute a source address is forgiven. Default 60.
    pub failed_login_source_per_minute: u32,
    /// Failed logins one account name may collect in a burst (from any address) before
    /// further attempts on it are refused with 429; 0 turns it off. This sits in front of
    /// Keystone's lockout, which stays. Default 10.
    pub failed_login_user_burst: u32,
    /// Failed logins per minute an account name is forgiven. Default 20.
    pub failed_login_user_per_minute: u32,
    /// How many of a user's most recent passwords (the current one included) a
    /// self-service change may not reuse; 0 turns the check off (Keystone's
    /// `unique_last_password_count`). An admin reset is not checked, as in Keystone.
    /// Default 0.
    pub unique_last_password_count: u32,
    /// Days a password must be kept before its owner may change it again; 0 = any time
    /// (Keystone's `minimum_password_age`). Default 0.
    pub minimum_password_age_days: u32,
    /// Days after which a password expires and must be changed before logging in again;
    /// 0 = never (Keystone's `password_expires_days`). Default 0.
    pub password_expires_days: u32,
    /// Regular expression every new password must match; empty = any (Keystone's
    /// `password_regex`). Default empty.
    pub password_regex: String,
    /// What `password_regex` demands, in words, for the 400 a refused password gets.
    pub password_regex_description: String,
    /// A password set by an admin (creation or reset) must be changed by its user before
    /// the first login (Keystone's `change_password_upon_first_use`). Default false.
    pub change_password_upon_first_use: bool,
    /// Days without a successful login after which an account is disabled; 0 = never
    /// (Keystone's `disable_user_account_days_inactive`). Default 0.
    pub disable_user_account_days_inactive: u32,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            token_expiration_secs: 24 * 3600,
            password_hash_memory_kib: 19456,
            password_hash_iterations: 2,
            lockout_failure_attempts: 0,
            lockout_duration_secs: 1800,
            cache_ttl_ms: 5000,
            max_active_keys: 3,
            refresh_secs: 10,
            policy_file: String::new(),
            password_hash_memory_budget_mib: 64,
            password_hash_queue_ms: 2000,
            failed_login_source_burst: 30,
            failed_login_source_per_minute: 60,
            failed_login_user_burst: 10,
            failed_login_user_per_minute: 20,
            unique_last_password_count: 0,
            minimum_password_age_days: 0,
            password_expires_days: 0,
            password_regex: String::new(),
            password_regex_description: String::new(),
            change_password_upon_first_use: false,
            disable_user_account_days_inactive: 0,
        }
    }
}

/// Where the Fernet keys of a data directory live.
pub fn key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("identity").join("fernet-keys")
}

/// `stratus identity rotate-keys`: rotates the key repository of `data_dir`; returns the
/// new primary key number. Running servers pick the new keys up within `refresh_secs`.
pub fn rotate_keys(data_dir: &Path, cfg: &IdentityConfig) -> anyhow::Result<u32> {
    KeyRepository::new(key_dir(data_dir), cfg.max_active_keys).rotate()
}

/// The running identity service.
pub struct IdentityService {
    core: Arc<Identity>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for IdentityService {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl IdentityService {
    /// Starts identity: migrates its schema, sets up the key repository, loads
    /// revocation events and bootstraps the defaults (idempotent). `admin_password` is
    /// used when the admin user is first created (generated when absent); `catalog` holds
    /// the entries of the services being served (the catalog lists those and no others).
    pub async fn start(
        platform: Platform,
        config: IdentityConfig,
        admin_password: Option<String>,
        catalog: Vec<stratus_core::CatalogEntry>,
    ) -> anyhow::Result<Arc<Self>> {
        platform.db.migrate("identity", MIGRATIONS).await?;
        let repo = KeyRepository::new(key_dir(&platform.data_dir), config.max_active_keys);
        repo.setup()?;
        let policy_file = (!config.policy_file.is_empty()).then(|| PathBuf::from(&config.policy_file));
        let policy = Policy::load("identity", policy::DEFAULTS, policy_file.as_deref())?;
        let refresh = Duration::from_secs(config.refresh_secs.max(1));
        let core = Arc::new(Identity::new(platform, config, policy, repo)?);
        core.refresh().await?;
        bootstrap::run(&core, admin_password, &catalog).await?;
        let weak = Arc::downgrade(&core);
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(core) = weak.upgrade() else { return };
                if let Err(e) = core.refresh().await {
                    tracing::warn!(error = %e, "identity refresh failed");
                }
            }
        });
        Ok(Arc::new(IdentityService { core, refresher }))
    }

    /// The identity core (tests and benchmarks).
    pub fn core(&self) -> &Arc<Identity> {
        &self.core
    }

    /// The in-process token validator other services' auth layers use.
    pub fn validator(self: &Arc<Self>) -> Arc<dyn TokenValidator> {
        Arc::new(Validator(self.core.clone()))
    }

    /// Identity's routes, mounted under `/identity`.
    pub fn router(self: &Arc<Self>) -> Router {
        let core = self.core.clone();
        let auth = AuthState { validator: self.validator(), identity_uri: core.base.clone() };
        let protected = Router::new()
            .merge(auth::routes())
            .merge(users::routes())
            .merge(projects::routes())
            .merge(domains::routes())
            .merge(groups::routes())
            .merge(roles::routes())
            .merge(catalog::routes())
            .merge(app_creds::routes())
            .merge(trusts::routes())
            .merge(credentials::routes())
            .merge(oauth1::routes())
            .merge(policies::routes())
            .merge(domain_config::routes())
            .merge(endpoint_filter::routes())
            .layer(axum::middleware::from_fn_with_state(auth, stratus_auth::require_auth))
            .with_state(core.clone());
        let versions =
            Router::new().route("/", get(versions::root)).route("/v3", get(versions::v3)).with_state(core.base.clone());
        let routes = Router::new()
            .merge(versions)
            .merge(auth::public_routes().merge(users::public_routes()).with_state(core))
            .merge(protected);
        service_stack(routes, FaultFormat::Keystone, None)
    }
}

struct Validator(Arc<Identity>);

#[async_trait::async_trait]
impl TokenValidator for Validator {
    async fn validate(&self, token: &str) -> Result<RequestContext, AuthFailure> {
        match self.0.validate(token).await {
            Ok(v) => Ok(self.0.context(&v)),
            Err(error::IdentityError::Db(e)) => Err(AuthFailure::Unavailable(e.to_string())),
            Err(e) => Err(AuthFailure::Invalid(e.to_string())),
        }
    }
}
