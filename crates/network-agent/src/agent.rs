//! The agent loop and its bus protocol.
//!
//! Bus methods (all JSON, topic `network-server` unless said otherwise):
//! - `get_desired_state {"host"}` (call) → a [`DesiredState`] document (see [`crate::model`]).
//! - `update_port_status {"port_id", "status": "ACTIVE"|"DOWN", "host"}` (cast), sent once
//!   per port when it becomes wired on this host (again after an agent restart).
//! - `report_state {"host", "agent_types": [...], "binary", "configurations", "timestamp"}`
//!   (cast) every `heartbeat_interval_secs`: the service's `/agents` derives `alive` from it.
//!   One message stands for the Linux bridge, DHCP and L3 agents of the host.
//! - fanout exchange `network-agent`, method `desired_state_changed` (no args needed):
//!   converge now instead of waiting for the next periodic resync; method
//!   `security_groups_changed`: only re-apply the firewall (rule/member changes, fast path).
//!
//! Restart adopts: every realiser checks before it changes, and nothing that is desired is
//! deleted, so a new agent process converging over a running host leaves guest traffic
//! alone (bridges, dnsmasq processes found by pid file, router namespaces all reused).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use serde_json::json;
use stratus_bus::{Bus, BusError, Message};
use tokio::sync::{watch, Mutex};

use crate::exec::{list_netns, Ns};
use crate::metadata::{MetadataBackend, MetadataProxy};
use crate::model::DesiredState;
use crate::{dhcp, firewall, l2, l3, AgentConfig};

/// Where the agent gets its desired state from.
#[async_trait]
pub trait DesiredStateSource: Send + Sync {
    /// The current desired state for `host`.
    async fn fetch(&self, host: &str) -> Result<DesiredState>;
}

/// Asks the network service over the bus (`get_desired_state`).
pub struct BusStateSource {
    bus: Arc<dyn Bus>,
    timeout: Duration,
}

impl BusStateSource {
    /// A source calling `network-server` on `bus`.
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        BusStateSource { bus, timeout: Duration::from_secs(30) }
    }
}

#[async_trait]
impl DesiredStateSource for BusStateSource {
    async fn fetch(&self, host: &str) -> Result<DesiredState> {
        let v = self
            .bus
            .call(SERVER_TOPIC, Message::new("get_desired_state", json!({ "host": host })), self.timeout)
            .await?;
        serde_json::from_value(v).context("bad desired state document")
    }
}

pub use stratus_network_proto::{AGENT_EXCHANGE, SERVER_TOPIC};

/// What one convergence did.
#[derive(Debug, Clone, Default)]
pub struct ConvergeReport {
    /// Ports wired on this host.
    pub plugged: Vec<String>,
}

/// One host's network agent.
pub struct NetworkAgent {
    cfg: AgentConfig,
    reported: Mutex<BTreeSet<String>>,
    lock: Mutex<()>,
    /// The last state fetched (tap polling and the metadata proxy read it).
    last: watch::Sender<Arc<DesiredState>>,
    metadata: std::sync::OnceLock<Arc<MetadataProxy>>,
}

impl NetworkAgent {
    /// An agent with its configuration.
    pub fn new(cfg: AgentConfig) -> Self {
        NetworkAgent {
            cfg,
            reported: Mutex::new(BTreeSet::new()),
            lock: Mutex::new(()),
            last: watch::channel(Arc::new(DesiredState::default())).0,
            metadata: std::sync::OnceLock::new(),
        }
    }

    /// Serves `169.254.169.254` in this host's DHCP and router namespaces, forwarding to
    /// `backend` (see [`crate::metadata`]). Call before [`NetworkAgent::run`].
    pub fn enable_metadata(&self, backend: Arc<dyn MetadataBackend>) -> Arc<MetadataProxy> {
        self.metadata.get_or_init(|| MetadataProxy::new(self.cfg.clone(), backend, self.state())).clone()
    }

    /// The last desired state the agent fetched, updated on every fetch.
    pub fn state(&self) -> watch::Receiver<Arc<DesiredState>> {
        self.last.subscribe()
    }

    /// Its configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    async fn host_ns(&self) -> Result<Ns> {
        let ns = self.cfg.host_ns();
        if let Some(n) = ns.name() {
            // The agent never creates its host namespace: that is the host's (or the test's) job.
            if !list_netns().await?.iter().any(|x| x == n) {
                bail!("host namespace {n} does not exist");
            }
        }
        Ok(ns)
    }

    /// Brings the host to `state`, idempotently. Order: bridges and segments, DHCP and router
    /// namespaces (which create their veths), plugging, then the firewall for what is plugged.
    pub async fn converge(&self, state: &DesiredState) -> Result<ConvergeReport> {
        let _g = self.lock.lock().await;
        tokio::fs::create_dir_all(&self.cfg.state_dir).await?;
        let ns = self.host_ns().await?;
        // Every stage runs even when an earlier one failed for some resource: one broken
        // network must not leave the others (or their firewall) unconverged.
        let mut errors = Vec::new();
        if let Err(e) = l2::converge_networks(&ns, &self.cfg, state).await {
            errors.push(format!("layer 2: {e:#}"));
        }
        if let Err(e) = dhcp::converge(&ns, &self.cfg, state).await {
            errors.push(format!("DHCP: {e:#}"));
        }
        if let Err(e) = l3::converge(&ns, &self.cfg, state).await {
            errors.push(format!("L3: {e:#}"));
        }
        let plugged = l2::plug_ports(&ns, &self.cfg, state).await.context("plugging")?;
        firewall::converge(&ns, &self.cfg, state, &plugged).await.context("firewall")?;
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(ConvergeReport { plugged })
    }

    /// Security groups only (Neutron's `security_groups_rule_updated` path): re-renders and
    /// applies the nftables ruleset for the ports already wired, without walking bridges,
    /// DHCP and routers. This is what keeps a rule change well under a second.
    pub async fn converge_security_groups(&self, state: &DesiredState) -> Result<()> {
        let _g = self.lock.lock().await;
        let ns = self.host_ns().await?;
        let plugged = l2::plugged_ports(&ns, &self.cfg, state).await?;
        firewall::converge(&ns, &self.cfg, state, &plugged).await
    }

    /// Removes everything this agent built (as for an empty desired state) and its nft tables.
    pub async fn teardown(&self) -> Result<()> {
        self.converge(&DesiredState::default()).await?;
        let _g = self.lock.lock().await;
        firewall::teardown(&self.host_ns().await?, &self.cfg).await
    }

    /// Fetches, converges, reports; re-converges every `resync_interval_secs` or when told on
    /// the fanout exchange; heartbeats. Returns when `shutdown` turns true or its sender is
    /// gone (state is left in place, so a restarted agent adopts it).
    pub async fn run(
        self: Arc<Self>,
        bus: Arc<dyn Bus>,
        source: Arc<dyn DesiredStateSource>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut changes = bus.subscribe_fanout(AGENT_EXCHANGE).await?;
        let mut resync = tokio::time::interval(Duration::from_secs(self.cfg.resync_interval_secs.max(1)));
        let mut heartbeat = tokio::time::interval(Duration::from_secs(self.cfg.heartbeat_interval_secs.max(1)));
        let mut poll = tokio::time::interval(Duration::from_millis(self.cfg.device_poll_interval_ms.max(50)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A dropped sender is a shutdown too (else `changed` would return at once, forever).
                res = shutdown.changed() => {
                    if res.is_err() || *shutdown.borrow() { return Ok(()); }
                }
                _ = heartbeat.tick() => self.heartbeat(bus.as_ref()).await,
                _ = resync.tick() => self.cycle(bus.as_ref(), source.as_ref()).await,
                _ = poll.tick() => {
                    let state = self.last.borrow().clone();
                    let ns = self.cfg.host_ns();
                    let wired = self.reported.lock().await.clone();
                    if l2::taps_changed(&ns, &self.cfg, &state, &wired).await.unwrap_or(false) {
                        self.cycle(bus.as_ref(), source.as_ref()).await;
                    }
                }
                d = changes.recv() => {
                    let Some(d) = d else { return Ok(()) };
                    // Coalesce a burst of notifications (one per API write) into one pass.
                    let (mut full, mut sg) = (false, false);
                    let mut next = Some(d);
                    while let Some(d) = next {
                        match d.message.method.as_str() {
                            "desired_state_changed" => full = true,
                            "security_groups_changed" => sg = true,
                            _ => {}
                        }
                        next = futures::FutureExt::now_or_never(changes.recv()).flatten();
                    }
                    if full {
                        self.cycle(bus.as_ref(), source.as_ref()).await;
                    } else if sg {
                        self.sg_cycle(source.as_ref()).await;
                    }
                }
            }
        }
    }

    async fn cycle(&self, bus: &dyn Bus, source: &dyn DesiredStateSource) {
        let state = match source.fetch(&self.cfg.host).await {
            Ok(s) => {
                self.last.send_replace(Arc::new(s.clone()));
                s
            }
            Err(e) => {
                tracing::warn!("cannot fetch desired state: {e:#}");
                return;
            }
        };
        match self.converge(&state).await {
            Ok(report) => {
                let mut reported = self.reported.lock().await;
                let plugged_now = report.plugged.clone();
                for port in report.plugged {
                    if reported.contains(&port) {
                        continue;
                    }
                    let msg = Message::new(
                        "update_port_status",
                        json!({ "port_id": port, "status": "ACTIVE", "host": self.cfg.host }),
                    );
                    match bus.cast(SERVER_TOPIC, msg).await {
                        Ok(()) => {
                            reported.insert(port);
                        }
                        Err(e) => tracing::warn!("cannot report port {port} ACTIVE: {e}"),
                    }
                }
                // Ports that were wired and no longer are (the tap went away with its guest)
                // are DOWN again while still bound here; deleted or moved ports are forgotten.
                let plugged: BTreeSet<&String> = plugged_now.iter().collect();
                let gone: Vec<String> = reported.iter().filter(|p| !plugged.contains(p)).cloned().collect();
                for port in gone {
                    reported.remove(&port);
                    let bound_here = state.port(&port).is_some_and(|p| p.binding_host_id == self.cfg.host);
                    if bound_here {
                        let msg = Message::new(
                            "update_port_status",
                            json!({ "port_id": port, "status": "DOWN", "host": self.cfg.host }),
                        );
                        if let Err(e) = bus.cast(SERVER_TOPIC, msg).await {
                            tracing::warn!("cannot report port {port} DOWN: {e}");
                        }
                    }
                }
            }
            Err(e) => tracing::error!(generation = state.generation, "convergence failed: {e:#}"),
        }
        if let Some(proxy) = self.metadata.get() {
            if let Err(e) = proxy.converge().await {
                tracing::warn!("{e:#}");
            }
        }
    }

    async fn sg_cycle(&self, source: &dyn DesiredStateSource) {
        match source.fetch(&self.cfg.host).await {
            Ok(state) => {
                self.last.send_replace(Arc::new(state.clone()));
                if let Err(e) = self.converge_security_groups(&state).await {
                    tracing::error!("security group update failed: {e:#}");
                }
            }
            Err(e) => tracing::warn!("cannot fetch desired state: {e:#}"),
        }
    }

    async fn heartbeat(&self, bus: &dyn Bus) {
        let msg = Message::new(
            "report_state",
            json!({
                "host": self.cfg.host,
                "binary": "stratus-network-agent",
                "agent_types": if self.metadata.get().is_some() {
                    vec!["Linux bridge agent", "DHCP agent", "L3 agent", "Metadata agent"]
                } else {
                    vec!["Linux bridge agent", "DHCP agent", "L3 agent"]
                },
                "configurations": {
                    "tunneling_ip": self.cfg.tunnel_ip,
                    "tunnel_types": if self.cfg.tunnel_ip.is_some() { vec!["vxlan"] } else { vec![] },
                    "interface_mappings": self.cfg.physical_interface_mappings,
                    "l2_population": true,
                },
                "timestamp": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default(),
            }),
        );
        if let Err(e) = bus.cast(SERVER_TOPIC, msg).await {
            if !matches!(e, BusError::NoConsumer(_)) {
                tracing::warn!("heartbeat: {e}");
            }
        }
    }
}
