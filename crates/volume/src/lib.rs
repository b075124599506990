//! Block storage service: the Cinder v3 API, its scheduler and the controller side of
//! the volume agents' conversation.
//!
//! Mounted under `/volume`, every route both as `/v3/{project_id}/...` and as the
//! project-less `/v3/...` (3.67). Each resource keeps its routes, policy use and SQL in
//! a module named after it (`volumes`, `snapshots`, `backups`, `attachments`, `types`,
//! `qos`, `transfers`, `quotas`, `services`, `messages`). Behind the API:
//! - [`manager`]: every operation that involves a backend is a step table run against
//!   the resource's row (progress in `task`), resumed or unwound after a crash;
//!   the scheduler picks a backend by capacity, availability zone and the type's
//!   `volume_backend_name`, and says why when none fits;
//! - [`backends`]: registrations, heartbeats and the reconcile lists of the volume
//!   agents, which are reached only over the bus through `stratus-volume-contract`
//!   (this crate never depends on the agent crate).

mod attachments;
mod backends;
mod backups;
mod body;
mod error;
mod extensions;
pub mod manager;
mod messages;
mod policy;
mod qos;
mod quotas;
mod services;
mod snapshots;
mod sql;
mod transfers;
mod types;
mod versions;
mod volumes;

use std::path::PathBuf;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::routing::MethodRouter;
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::{require_auth, AuthState, Policy};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;
use stratus_db::{Db, Migration};
use stratus_volume_contract::steps::Faults;

pub use error::{VolError, VolResult};
pub use versions::MICROVERSIONS;

/// Catalog entries: `block-storage` (what openstacksdk and Tempest look up) and its
/// older alias `volumev3`, both at the project-scoped v3 root as devstack registers them.
pub const CATALOG: &[stratus_core::CatalogEntry] = &[
    stratus_core::CatalogEntry {
        service_type: "block-storage",
        name: "cinder",
        description: "Block Storage Service",
        path: "/volume/v3/$(project_id)s",
    },
    stratus_core::CatalogEntry {
        service_type: "volumev3",
        name: "cinderv3",
        description: "Block Storage Service v3",
        path: "/volume/v3/$(project_id)s",
    },
];

/// Schema of the block storage service.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") }];

/// `[volume]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeConfig {
    /// Operator policy overrides (YAML/JSON). Default: none.
    pub policy_file: Option<PathBuf>,
    /// Type of volumes created without one, when the project has no default type of its
    /// own (default `__DEFAULT__`, created at first start as Cinder does).
    pub default_volume_type: String,
    /// Availability zone of volumes created without one (default `nova`).
    pub default_availability_zone: String,
    /// Create a volume in another zone when the requested one has no room (default false).
    pub allow_availability_zone_fallback: bool,
    /// Seconds without a heartbeat after which a volume service is `down` (default 60).
    pub service_down_time_secs: u64,
    /// Seconds an agent gets for a quick call (snapshots, connections) (default 60).
    pub rpc_timeout_secs: u64,
    /// Seconds an agent gets for an operation that moves data (images, backups,
    /// clones) (default 3600).
    pub data_timeout_secs: u64,
    /// Days user messages are kept (default 30).
    pub message_ttl_days: u64,
    /// Largest page a listing returns (default 1000, Cinder's `osapi_max_limit`).
    pub max_limit: usize,
    /// Default per-project quotas (`-1` = unlimited).
    pub quotas: QuotaDefaults,
}

/// Default per-project quotas (Cinder's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaDefaults {
    /// Volumes (default 10).
    pub volumes: i64,
    /// Snapshots (default 10).
    pub snapshots: i64,
    /// GiB of volumes and snapshots (default 1000).
    pub gigabytes: i64,
    /// Backups (default 10).
    pub backups: i64,
    /// GiB of backups (default 1000).
    pub backup_gigabytes: i64,
    /// Groups (default 10).
    pub groups: i64,
    /// Largest volume in GiB (default -1).
    pub per_volume_gigabytes: i64,
}

impl Default for QuotaDefaults {
    fn default() -> Self {
        QuotaDefaults {
            volumes: 10,
            snapshots: 10,
            gigabytes: 1000,
            backups: 10,
            backup_gigabytes: 1000,
            groups: 10,
            per_volume_gigabytes: -1,
        }
    }
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            policy_file: None,
            default_volume_type: "__DEFAULT__".into(),
            default_availability_zone: "nova".into(),
            allow_availability_zone_fallback: false,
            service_down_time_secs: 60,
            rpc_timeout_secs: 60,
            data_timeout_secs: 3600,
            message_ttl_days: 30,
            max_limit: 1000,
            quotas: QuotaDefaults::default(),
        }
    }
}

/// State shared by handlers, the manager and the agent registry.
pub struct Vol {
    /// The database.
    pub db: Db,
    /// Policy.
    pub policy: Policy,
    /// Configuration.
    pub cfg: VolumeConfig,
    /// Public URL of `/volume`.
    pub base: String,
    /// Infrastructure (bus, in-process calls to the image and compute APIs).
    pub platform: Platform,
    /// Faults tests inject into the operations' step tables.
    pub faults: Faults,
    /// Operations running in this process (handles, for a clean stop in tests).
    pub(crate) tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Shared state handle.
pub type S = Arc<Vol>;

/// The running service.
pub struct VolumeService {
    vol: S,
    auth: AuthState,
}

impl VolumeService {
    /// Starts the service: migrates, bootstraps the default type, starts listening to the
    /// agents and resumes what a crash interrupted.
    pub async fn start(platform: Platform, auth: AuthState, config: VolumeConfig) -> anyhow::Result<Arc<Self>> {
        Self::start_with_faults(platform, auth, config, Faults::default()).await
    }

    /// Like [`VolumeService::start`], with faults armed in the operations (tests).
    pub async fn start_with_faults(
        platform: Platform,
        auth: AuthState,
        config: VolumeConfig,
        faults: Faults,
    ) -> anyhow::Result<Arc<Self>> {
        platform.db.migrate("volume", MIGRATIONS).await?;
        let policy = Policy::load("volume", policy::DEFAULTS, config.policy_file.as_deref())?;
        let vol = Arc::new(Vol {
            db: platform.db.clone(),
            policy,
            cfg: config,
            base: platform.service_url("/volume"),
            platform,
            faults,
            tasks: Default::default(),
        });
        types::bootstrap(&vol).await?;
        services::register_controller(&vol).await?;
        backends::spawn(vol.clone()).await?;
        manager::recovery::spawn(vol.clone()).await?;
        Ok(Arc::new(VolumeService { vol, auth }))
    }

    /// The shared state (tests reach the database and faults through it).
    pub fn state(&self) -> &S {
        &self.vol
    }

    /// Stops every operation this service runs, where it is (a crash, for tests).
    pub fn stop(&self) {
        for t in self.vol.tasks.lock().drain(..) {
            t.abort();
        }
    }

    /// Routes, mounted under `/volume`.
    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .merge(volumes::routes())
            .merge(snapshots::routes())
            .merge(backups::routes())
            .merge(attachments::routes())
            .merge(types::routes())
            .merge(qos::routes())
            .merge(transfers::routes())
            .merge(quotas::routes())
            .merge(services::routes())
            .merge(messages::routes())
            .merge(extensions::routes())
            .with_state(self.vol.clone())
            .route_layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes(&self.vol.base).merge(api);
        service_stack(routes, FaultFormat::Cinder, Some(MICROVERSIONS))
    }
}

/// Registers `path` both under `/v3/{project_id}` and under `/v3` (3.67: URLs no longer
/// need the project).
pub(crate) fn both(r: Router<S>, path: &str, m: MethodRouter<S>) -> Router<S> {
    r.route(&format!("/v3{path}"), m.clone()).route(&format!("/v3/{{project_id}}{path}"), m)
}
