//! Compute service: the Nova v2.1 API, scheduler and conductor.
//!
//! Mounted under `/compute`. Routes, policy and SQL of each resource live in a module named
//! after it (`flavors`, `keypairs`, `servers`, `hosts` for os-services/os-hypervisors/AZs,
//! `limits` for limits and quota sets). Behind the API:
//! - [`scheduler`]: filters and weighers over placement's allocation candidates, then an
//!   atomic claim in placement;
//! - [`conductor`]: the only writer of instance state coming from agents; runs builds as
//!   resumable sagas (every step recorded on the instance row) and, at start, resumes or
//!   settles every server a crash left mid-operation;
//! - agents are reached only over the bus, in the messages of the contract crate
//!   `stratus-compute-proto`; this crate never links an agent (the binary assembles the
//!   in-process one, and a CI check fails if a controller crate depends on an agent).

mod aggregates;
pub mod clients;
pub mod conductor;
pub mod consoles;
mod error;
mod extensions;
mod external_events;
mod filters;
mod flavors;
mod floating_ip_proxy;
mod hosts;
mod image_proxy;
mod keypairs;
mod limits;
pub mod metadata;
pub mod metrics;
pub mod migrations;
mod net_proxy;
mod network_proxy;
mod os_hosts;
mod params;
pub mod placement;
pub mod policy;
mod removed;
pub mod scheduler;
mod secgroup_proxy;
mod sequences;
mod server_groups;
mod servers;
pub mod state;
mod usage;
mod usage_audit;
mod versions;
pub mod volume_api;

/// This service's entry in the identity catalog (the binary registers it while it serves it).
pub const CATALOG: &[stratus_core::CatalogEntry] = &[stratus_core::CatalogEntry {
    service_type: "compute",
    name: "nova",
    description: "Compute Service",
    path: "/compute/v2.1",
}];

use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::{require_auth, AuthState, Policy};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;
use stratus_db::Migration;

pub use error::ComputeError;
pub use versions::MICROVERSIONS;

/// Embedded migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") },
    Migration {
        version: 2,
        name: "instance_resources",
        sql: include_str!("../migrations/0002_instance_resources.sql"),
    },
    Migration {
        version: 3,
        name: "moves_aggregates_groups",
        sql: include_str!("../migrations/0003_moves_aggregates_groups.sql"),
    },
    Migration { version: 4, name: "id_sequences", sql: include_str!("../migrations/0004_id_sequences.sql") },
    Migration {
        version: 5,
        name: "console_auth_tokens",
        sql: include_str!("../migrations/0005_console_auth_tokens.sql"),
    },
    Migration {
        version: 6,
        name: "live_migration_ports",
        sql: include_str!("../migrations/0006_live_migration_ports.sql"),
    },
    Migration { version: 7, name: "service_numbers", sql: include_str!("../migrations/0007_service_numbers.sql") },
    Migration { version: 8, name: "backup_rotations", sql: include_str!("../migrations/0008_backup_rotations.sql") },
    Migration { version: 9, name: "node_numbers", sql: include_str!("../migrations/0009_node_numbers.sql") },
    Migration { version: 10, name: "auto_disk_config", sql: include_str!("../migrations/0010_auto_disk_config.sql") },
    Migration {
        version: 11,
        name: "block_device_mappings",
        sql: include_str!("../migrations/0011_block_device_mappings.sql"),
    },
];

/// `[compute]` configuration: the controller's keys. The same TOML section also holds
/// the in-process agent's keys (`local_agent`, `virt_driver`, `host_netns`,
/// `[compute.agent]`, `[compute.qemu]`, `[compute.fake]`), which the binary reads: the
/// controller never starts or links an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeConfig {
    /// Optional policy override file (YAML or JSON); default none.
    pub policy_file: Option<std::path::PathBuf>,
    /// VNC consoles: the noVNC client and the websocket proxy (`[compute.vnc]`).
    pub vnc: consoles::VncConfig,
    /// Seconds without a heartbeat after which a service is `down` (default 60).
    pub service_down_time_secs: u64,
    /// Build attempts on different hosts before a server goes to ERROR (default 3).
    pub max_attempts: u32,
    /// Randomly pick among this many best-weighed hosts (default 1).
    pub host_subset_size: usize,
    /// Weight of free RAM (default 1.0; negative stacks instead of spreading).
    pub ram_weight_multiplier: f64,
    /// Weight of free vCPUs (default 1.0).
    pub cpu_weight_multiplier: f64,
    /// Weight of free disk (default 1.0).
    pub disk_weight_multiplier: f64,
    /// Build passes the conductor runs at once (default 64); more wait their turn.
    pub max_concurrent_builds: usize,
    /// Most servers per host (Nova's NumInstancesFilter; default 50).
    pub max_instances_per_host: i64,
    /// Allocation candidates asked from placement per request (default 1000).
    pub max_placement_results: usize,
    /// Default availability zone of compute hosts (default `nova`).
    pub default_availability_zone: String,
    /// Seconds an agent gets to answer a call (default 30).
    pub rpc_timeout_secs: u64,
    /// Key metadata proxies sign `X-Instance-ID` with (Nova's `[neutron]
    /// metadata_proxy_shared_secret`). Default: empty = generated at first start and kept in
    /// `<data_dir>/metadata_proxy_shared_secret` (see [`metadata`]).
    pub metadata_proxy_shared_secret: String,
    /// Seconds a shelved server keeps its host before it is offloaded: 0 (default)
    /// offloads at once, -1 never.
    pub shelved_offload_time: i64,
    /// Deferred delete: seconds a deleted server stays SOFT_DELETED (restorable) before
    /// it is reclaimed; 0 (default) deletes at once.
    pub reclaim_instance_interval_secs: u64,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            policy_file: None,
            vnc: Default::default(),
            service_down_time_secs: 60,
            max_attempts: 3,
            host_subset_size: 1,
            ram_weight_multiplier: 1.0,
            cpu_weight_multiplier: 1.0,
            disk_weight_multiplier: 1.0,
            max_concurrent_builds: 64,
            max_instances_per_host: 50,
            max_placement_results: 1000,
            default_availability_zone: "nova".into(),
            rpc_timeout_secs: 30,
            metadata_proxy_shared_secret: String::new(),
            shelved_offload_time: 0,
            reclaim_instance_interval_secs: 0,
        }
    }
}

/// The other services compute calls.
#[derive(Clone)]
pub struct Backends {
    /// Placement.
    pub placement: Arc<dyn placement::PlacementApi>,
    /// Images.
    pub images: Arc<dyn clients::ImageApi>,
    /// Networks.
    pub network: Arc<dyn clients::NetworkApi>,
    /// Block storage.
    pub volumes: Arc<dyn volume_api::VolumeApi>,
}

impl Backends {
    /// The real services, through their REST APIs in-process.
    pub fn rest(platform: &Platform) -> Self {
        Backends {
            placement: Arc::new(placement::RestPlacement::new(platform.internal.clone())),
            images: Arc::new(clients::RestImages(platform.internal.clone())),
            network: Arc::new(clients::RestNetwork(platform.internal.clone())),
            volumes: Arc::new(volume_api::RestVolumes(platform.internal.clone())),
        }
    }
}

/// State shared by handlers, scheduler and conductor.
pub struct Inner {
    /// Infrastructure.
    pub platform: Platform,
    /// Configuration.
    pub cfg: ComputeConfig,
    /// Policy.
    pub policy: Policy,
    /// Other services.
    pub backends: Backends,
    /// The conductor.
    pub conductor: Arc<conductor::Conductor>,
}

/// Shared state handle.
pub type AppState = Arc<Inner>;

/// A method the path does not take: Nova's 404.
async fn method_not_routed(method: axum::http::Method, uri: axum::http::Uri) -> stratus_core::ApiError {
    ComputeError::NotFound(format!("{method} is not an operation of {}", uri.path())).into()
}

/// The running service.
pub struct ComputeService {
    inner: AppState,
    auth: AuthState,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ComputeService {
    /// Starts the service against the real placement, image and network APIs.
    pub async fn start(platform: Platform, auth: AuthState, config: ComputeConfig) -> anyhow::Result<Arc<Self>> {
        let backends = Backends::rest(&platform);
        Ok(Arc::new(Self::start_with(platform, auth, config, backends).await?))
    }

    /// Starts the service with explicit backends (tests, benchmarks).
    pub async fn start_with(
        platform: Platform,
        auth: AuthState,
        config: ComputeConfig,
        backends: Backends,
    ) -> anyhow::Result<Self> {
        platform.db.migrate("compute", MIGRATIONS).await?;
        flavors::bootstrap(&platform.db).await?;
        let policy = Policy::load("compute", policy::DEFAULTS, config.policy_file.as_deref())?;
        let conductor = Arc::new(conductor::Conductor::new(platform.clone(), config.clone(), backends.clone()));
        let inner = Arc::new(Inner { platform, cfg: config, policy, backends, conductor: conductor.clone() });
        let mut tasks = conductor.start().await?;
        tasks.extend(conductor.clone().spawn_offloader());
        tasks.extend(servers::spawn_reclaimer(inner.clone()));
        tasks.push(tokio::spawn(servers::volumes::ops::recover(inner.clone())));
        Ok(ComputeService { inner, auth, tasks })
    }

    /// The shared state (tests reach the conductor through it).
    pub fn state(&self) -> &AppState {
        &self.inner
    }

    /// Stops the conductor's tasks (tests use it to simulate a crash).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Routes, mounted under `/compute`.
    pub fn router(&self) -> Router {
        let base = self.inner.platform.service_url("/compute");
        let api = Router::new()
            .merge(flavors::routes())
            .merge(keypairs::routes())
            .merge(servers::routes())
            .merge(hosts::routes())
            .merge(limits::routes())
            .merge(migrations::routes())
            .merge(aggregates::routes())
            .merge(server_groups::routes())
            .merge(usage::routes())
            .merge(removed::routes())
            .merge(external_events::routes())
            .merge(usage_audit::routes())
            .merge(network_proxy::routes())
            .merge(floating_ip_proxy::routes())
            .merge(extensions::routes())
            .merge(image_proxy::routes())
            .merge(os_hosts::routes())
            .merge(secgroup_proxy::routes())
            // Nova answers a method a path does not take with 404 (its router finds no
            // route), not 405: `DELETE /images/` is "no such image".
            .method_not_allowed_fallback(method_not_routed)
            .with_state(self.inner.clone())
            .route_layer(from_fn_with_state(self.auth.clone(), require_auth));
        // Consoles authenticate with their own one-time tokens (browsers carry no Keystone token).
        let routes =
            versions::routes().with_state(base).merge(consoles::routes().with_state(self.inner.clone())).merge(api);
        service_stack(routes, FaultFormat::Nova, Some(MICROVERSIONS))
    }
}
