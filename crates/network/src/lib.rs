//! Networking service: the Neutron v2.0 API.
//!
//! Mounted under `/network`. Routes, policy and SQL of each resource live in a module named
//! after it; `store` keeps resource rows, `ipam` hands out addresses, `listing` applies
//! Neutron's filter/sort/page/fields rules to every collection.

pub(crate) mod address_groups;
pub mod agent_rpc;
pub mod agents;
mod auto_allocate;
pub mod body;
mod dhcp_hosting;
mod dhcp_opts;
pub mod error;
mod host_state;
pub mod ip;
pub mod ipam;
pub mod listing;
mod liveness;
mod misc;
mod networks;
pub mod policy;
mod ports;
mod quotas;
mod routers;
mod secgroups;
pub mod store;
mod subnets;
mod versions;

/// This service's entry in the identity catalog (the binary registers it while it serves it).
pub const CATALOG: &[stratus_core::CatalogEntry] = &[stratus_core::CatalogEntry {
    service_type: "network",
    name: "neutron",
    description: "Network Service",
    path: "/network",
}];

use std::path::PathBuf;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stratus_auth::{require_auth, AuthState, Policy, RequestContext};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;
use stratus_db::{Db, Migration};

use crate::error::{NetError, NetResult};

/// Schema of the networking service.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") },
    Migration { version: 20, name: "quota_locks", sql: include_str!("../migrations/0020_quota_locks.sql") },
    Migration { version: 21, name: "dhcp_hosts", sql: include_str!("../migrations/0021_dhcp_hosts.sql") },
];

/// `[network]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Operator policy overrides (YAML/JSON). Default: none.
    pub policy_file: Option<PathBuf>,
    /// Type given to networks created without provider attributes: `vxlan`, `vlan` or
    /// `local`. Default `["vxlan"]` (the first is used).
    pub tenant_network_types: Vec<String>,
    /// VXLAN VNI ranges `"min:max"` tenant networks draw from. Default `["1:1000"]`.
    pub vni_ranges: Vec<String>,
    /// VLAN physical networks, optionally with id ranges tenant networks draw from:
    /// `"physnet"` or `"physnet:min:max"`. Default `["provider"]`.
    pub network_vlan_ranges: Vec<String>,
    /// Physical networks flat networks may use (`"*"` = any). Default `["*"]`.
    pub flat_networks: Vec<String>,
    /// MTU of the physical network; VXLAN networks get 50 bytes less. Default 1500.
    pub global_physnet_mtu: i64,
    /// DNS domain of port names (`dns_assignment` fqdn). Default `"openstacklocal."`.
    pub dns_domain: String,
    /// Availability zone networks and routers are reported in. Default `"nova"`.
    pub availability_zone: String,
    /// Seconds without a heartbeat after which an agent is reported dead and its DHCP
    /// servers and routers move to a live agent (see `liveness.rs`). Default 75.
    pub agent_down_time: i64,
    /// Default per-project quotas (`-1` = unlimited). Defaults: Neutron's (network 100,
    /// subnet 100, port 500, router 10, floatingip 50, security_group 10,
    /// security_group_rule 100, subnetpool -1, rbac_policy 10).
    pub quotas: QuotaDefaults,
}

/// Default per-project quotas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaDefaults {
    /// Networks. Default 100.
    pub network: i64,
    /// Subnets. Default 100.
    pub subnet: i64,
    /// Ports. Default 500.
    pub port: i64,
    /// Routers. Default 10.
    pub router: i64,
    /// Floating IPs. Default 50.
    pub floatingip: i64,
    /// Security groups. Default 10.
    pub security_group: i64,
    /// Security group rules. Default 100.
    pub security_group_rule: i64,
    /// Subnet pools. Default -1.
    pub subnetpool: i64,
    /// RBAC policies. Default 10.
    pub rbac_policy: i64,
}

impl Default for QuotaDefaults {
    fn default() -> Self {
        QuotaDefaults {
            network: 100,
            subnet: 100,
            port: 500,
            router: 10,
            floatingip: 50,
            security_group: 10,
            security_group_rule: 100,
            subnetpool: -1,
            rbac_policy: 10,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            policy_file: None,
            tenant_network_types: vec!["vxlan".into()],
            vni_ranges: vec!["1:1000".into()],
            network_vlan_ranges: vec!["provider".into()],
            flat_networks: vec!["*".into()],
            global_physnet_mtu: 1500,
            dns_domain: "openstacklocal.".into(),
            availability_zone: "nova".into(),
            agent_down_time: 75,
            quotas: QuotaDefaults::default(),
        }
    }
}

/// Shared state of the handlers.
pub(crate) struct Net {
    pub db: Db,
    pub policy: Policy,
    pub cfg: NetworkConfig,
    /// Public URL of `/network`.
    pub base: String,
    /// The platform bus (agent notifications).
    pub bus: Arc<dyn stratus_bus::Bus>,
    /// Bumped on every agent notification (`DesiredState::generation`).
    pub generation: std::sync::atomic::AtomicU64,
    /// Serialises DHCP/router scheduling (one DHCP port per network).
    pub schedule_lock: tokio::sync::Mutex<()>,
    /// In-process calls to this (and other) services' APIs (get-me-a-network builds
    /// through the API).
    pub internal: stratus_core::internal::InternalClient,
    /// Per-network allocation turns on PostgreSQL.
    pub ip_locks: ipam::NetworkLocks,
}

pub(crate) type S = Arc<Net>;

/// The running service.
pub struct NetworkService {
    platform: Platform,
    auth: AuthState,
    net: S,
}

impl NetworkService {
    /// Starts the service: migrates its tables and loads policy.
    pub async fn start(platform: Platform, auth: AuthState, config: NetworkConfig) -> anyhow::Result<Arc<Self>> {
        platform.db.migrate("network", MIGRATIONS).await?;
        let policy = Policy::load("network", policy::DEFAULTS, config.policy_file.as_deref())?;
        networks::parse_ranges(&config).map_err(|e| anyhow::anyhow!("[network] configuration: {e}"))?;
        let net = Arc::new(Net {
            db: platform.db.clone(),
            policy,
            cfg: config,
            base: platform.service_url("/network"),
            bus: platform.bus.clone(),
            generation: Default::default(),
            schedule_lock: Default::default(),
            internal: platform.internal.clone(),
            ip_locks: Default::default(),
        });
        agent_rpc::spawn(net.clone(), platform.bus.clone()).await?;
        liveness::spawn(net.clone());
        Ok(Arc::new(NetworkService { platform, auth, net }))
    }

    /// Records an agent heartbeat (what the network agent calls in-process).
    pub async fn report_agent(&self, report: agents::AgentReport) -> anyhow::Result<Value> {
        agents::report(&self.net, report).await.map_err(|e| anyhow::anyhow!("{}", stratus_core::ApiError::from(e)))
    }

    /// Routes, mounted under `/network`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.platform.service_url("/network");
        let api = Router::new()
            .merge(misc::routes())
            .merge(networks::routes())
            .merge(subnets::routes())
            .merge(ports::routes())
            .merge(secgroups::routes())
            .merge(routers::routes())
            .merge(quotas::routes())
            .merge(agents::routes())
            .merge(dhcp_hosting::routes())
            .merge(address_groups::routes())
            .merge(auto_allocate::routes())
            .with_state(self.net.clone());
        let protected = api
            .layer(from_fn_with_state(self.net.clone(), agent_rpc::fanout_after_write))
            .layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Neutron, None)
    }
}

/// The project a new resource belongs to: the caller's, or (admins only) the one named by
/// `project_id`/`tenant_id`, which must agree.
pub(crate) fn owner(
    ctx: &RequestContext,
    project_id: &body::Opt<body::ProjectId>,
    tenant_id: &body::Opt<body::ProjectId>,
) -> NetResult<String> {
    let (p, t) = (project_id.opt(), tenant_id.opt());
    if let (Some(p), Some(t)) = (&p, &t) {
        if p != t {
            return Err(NetError::BadRequest("HTTPBadRequest", "'project_id' and 'tenant_id' do not match".into()));
        }
    }
    let own = ctx.project_id.clone().unwrap_or_default();
    match p.or(t) {
        Some(p) if p != own => {
            if ctx.is_admin() {
                Ok(p)
            } else {
                Err(NetError::Forbidden(
                    "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges".into(),
                ))
            }
        }
        _ => Ok(own),
    }
}

/// QoS policies are not offered (no `qos` extension), so a `qos_policy_id` that is a UUID
/// names a policy that does not exist; `null` (no policy) is accepted.
pub(crate) fn no_qos(id: &body::Field<body::Uuid>) -> NetResult<()> {
    match id.get() {
        Some(u) => Err(NetError::NotFoundTyped("QosPolicyNotFound", format!("QoS policy {} could not be found.", u.0))),
        None => Ok(()),
    }
}
