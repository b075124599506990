//! The agent runtime: registration, heartbeats, operation execution, reconciliation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stratus_bus::{Bus, Delivery};
use tokio::task::JoinHandle;

use stratus_compute_proto::error::AgentError;
use stratus_compute_proto::rpc::{
    agent_topic, from_message, reply_error, to_message, AgentRequest, CallError, ConductorRequest, ExpectedGuest,
    GuestOp, MigrationAction, CONDUCTOR_TOPIC,
};
use stratus_compute_proto::spec::GuestSpec;
use stratus_compute_proto::virt::Inventory;

use crate::virt::{DiskPeer, IncomingDisk, InstanceInfo, PowerState, VirtDriver, VirtError};

/// Agent settings (the `[compute]` section's agent keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Host name this agent registers as (default: the machine's host name).
    pub host: String,
    /// Address other hosts reach this one at (default 127.0.0.1).
    pub host_ip: String,
    /// Seconds between heartbeats (default 10; `os-services` shows `down` after
    /// `service_down_time`).
    pub heartbeat_interval_secs: u64,
    /// Seconds between reconciliation passes (default 60).
    pub sync_interval_secs: u64,
    /// VCPU overcommit (default 4.0, Nova's initial ratio).
    pub cpu_allocation_ratio: f64,
    /// RAM overcommit (default 1.0).
    pub ram_allocation_ratio: f64,
    /// Disk overcommit (default 1.0).
    pub disk_allocation_ratio: f64,
    /// CPUs held back for the host (default 0).
    pub reserved_host_cpus: i64,
    /// MiB held back for the host (default 512).
    pub reserved_host_memory_mb: i64,
    /// GiB held back for the host (default 0).
    pub reserved_host_disk_gb: i64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            host: String::new(),
            host_ip: "127.0.0.1".into(),
            heartbeat_interval_secs: 10,
            sync_interval_secs: 60,
            cpu_allocation_ratio: 4.0,
            ram_allocation_ratio: 1.0,
            disk_allocation_ratio: 1.0,
            reserved_host_cpus: 0,
            reserved_host_memory_mb: 512,
            reserved_host_disk_gb: 0,
        }
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed call to another agent, as the text the driver reports (the typed reply read
/// back into what a person reads).
fn call_error_text(e: stratus_bus::BusError) -> String {
    CallError::from(e).to_string()
}

/// The destination's agent as a cold migration's source sees it: calls over the bus.
struct BusPeer {
    bus: Arc<dyn Bus>,
    host: String,
}

#[async_trait::async_trait]
impl DiskPeer for BusPeer {
    async fn prepare_incoming_disks(&self, uuid: &str, disks: &[IncomingDisk]) -> Result<u16, String> {
        let req = AgentRequest::PrepareIncomingDisks { uuid: uuid.to_string(), disks: disks.to_vec() };
        let v =
            self.bus.call(&agent_topic(&self.host), to_message(&req), CALL_TIMEOUT).await.map_err(call_error_text)?;
        serde_json::from_value(v).map_err(|e| format!("host {} answered no port: {e}", self.host))
    }

    async fn end_incoming_disks(&self, uuid: &str, keep: bool) -> Result<(), String> {
        let req = AgentRequest::EndIncomingDisks { uuid: uuid.to_string(), keep };
        self.bus
            .call(&agent_topic(&self.host), to_message(&req), CALL_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(call_error_text)
    }
}

/// The agent of one host.
pub struct Agent {
    cfg: AgentConfig,
    bus: Arc<dyn Bus>,
    driver: Arc<dyn VirtDriver>,
    /// One lock per guest so that operations on one guest run in the order sent.
    guest_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set when the agent stops: in-flight operations are abandoned where they are,
    /// exactly as a crash would leave them.
    stopped: tokio::sync::watch::Sender<bool>,
}

/// Running agent tasks; dropping the handle does not stop them, [`AgentHandle::stop`] does.
pub struct AgentHandle {
    /// The agent.
    pub agent: Arc<Agent>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Stops every task of the agent (a crash, as far as the controller can tell).
    pub fn stop(self) {
        let _ = self.agent.stopped.send(true);
        for t in self.tasks {
            t.abort();
        }
    }
}

impl Agent {
    /// Registers with the conductor (retrying until it answers) and starts serving.
    pub async fn start(
        cfg: AgentConfig,
        bus: Arc<dyn Bus>,
        driver: Arc<dyn VirtDriver>,
    ) -> anyhow::Result<AgentHandle> {
        let agent = Arc::new(Agent {
            cfg,
            bus,
            driver,
            guest_locks: Mutex::default(),
            stopped: tokio::sync::watch::channel(false).0,
        });
        agent.driver.init_host(&agent.cfg.host).await?;
        // Subscribe before registering so no request sent after registration is lost.
        let sub = agent.bus.consume(&agent_topic(&agent.cfg.host)).await?;
        agent.register().await?;
        let mut tasks = Vec::new();
        let a = agent.clone();
        tasks.push(tokio::spawn(async move { a.serve(sub).await }));
        let a = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(a.cfg.heartbeat_interval_secs.max(1)));
            loop {
                tick.tick().await;
                let msg = to_message(&ConductorRequest::Heartbeat { host: a.cfg.host.clone() });
                if let Err(e) = a.bus.cast(CONDUCTOR_TOPIC, msg).await {
                    tracing::warn!(error = %e, "heartbeat not delivered");
                }
            }
        }));
        let a = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(a.cfg.sync_interval_secs.max(1)));
            loop {
                tick.tick().await;
                if let Err(e) = a.reconcile().await {
                    tracing::warn!(error = %e, "reconciliation pass failed");
                }
            }
        }));
        tracing::info!(host = %agent.cfg.host, driver = agent.driver.name(), "compute agent started");
        Ok(AgentHandle { agent, tasks })
    }

    /// The inventories this host offers, from the driver's resources and the config.
    pub async fn inventories(&self) -> Result<BTreeMap<String, Inventory>, VirtError> {
        let r = self.driver.host_resources().await?;
        let c = &self.cfg;
        let inv = |total: i64, reserved: i64, ratio: f64| Inventory {
            total,
            reserved: reserved.min(total),
            min_unit: 1,
            max_unit: total.max(1),
            step_size: 1,
            allocation_ratio: ratio,
        };
        let mut m = BTreeMap::new();
        m.insert("VCPU".into(), inv(r.vcpus, c.reserved_host_cpus, c.cpu_allocation_ratio));
        m.insert("MEMORY_MB".into(), inv(r.memory_mb, c.reserved_host_memory_mb, c.ram_allocation_ratio));
        m.insert("DISK_GB".into(), inv(r.local_gb, c.reserved_host_disk_gb, c.disk_allocation_ratio));
        Ok(m)
    }

    async fn register(&self) -> anyhow::Result<()> {
        let resources = self.driver.host_resources().await?;
        let req = ConductorRequest::RegisterHost {
            host: self.cfg.host.clone(),
            hypervisor_type: self.driver.hypervisor_type(),
            hypervisor_version: self.driver.hypervisor_version(),
            hypervisor_hostname: self.cfg.host.clone(),
            host_ip: self.cfg.host_ip.clone(),
            resources,
            inventories: self.inventories().await?,
        };
        let mut delay = Duration::from_millis(50);
        for attempt in 0.. {
            match self.bus.call(CONDUCTOR_TOPIC, to_message(&req), CALL_TIMEOUT).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 40 => {
                    tracing::info!(error = %e, "conductor not ready; retrying registration");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => anyhow::bail!("could not register with the conductor: {e}"),
            }
        }
        unreachable!()
    }

    async fn serve(self: Arc<Self>, mut sub: stratus_bus::Subscription) {
        while let Some(d) = sub.recv().await {
            let a = self.clone();
            let mut stopped = self.stopped.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = a.handle(d) => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, d: Delivery) {
        let req: AgentRequest = match from_message(&d.message) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "unknown request from the controller");
                d.reply(Err(e));
                return;
            }
        };
        let reply: Result<Value, String> = match req {
            AgentRequest::RunOp { request_id, spec, op } => {
                self.run_op(request_id, spec, op).await;
                Ok(Value::Null)
            }
            AgentRequest::GetInfo { uuid } => self.driver.get_info(&uuid).await.map(|i| json!(i)).map_err(reply_error),
            AgentRequest::ListInstances => self.driver.list_instances().await.map(|i| json!(i)).map_err(reply_error),
            AgentRequest::ConsoleOutput { uuid, length } => {
                self.driver.console_output(&uuid).await.map_err(reply_error).map(|out| {
                    let lines: Vec<&str> = out.lines().collect();
                    let start = length.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
                    json!(lines[start..].join("\n"))
                })
            }
            AgentRequest::VncConsole { uuid } => {
                self.driver.vnc_console(&uuid).await.map(|c| json!(c)).map_err(reply_error)
            }
            AgentRequest::Reconcile => {
                self.reconcile().await.map(|_| Value::Null).map_err(|e| reply_error(AgentError::failed(e.to_string())))
            }
            // Not behind the guest's lock: the migration it steers holds it.
            AgentRequest::LiveMigrationControl { uuid, action } => match action {
                MigrationAction::Abort => self.driver.live_migration_abort(&uuid).await,
                MigrationAction::ForceComplete => self.driver.live_migration_force_complete(&uuid).await,
            }
            .map(|_| Value::Null)
            .map_err(reply_error),
            // Not behind the guest's lock either: the source's step holds it here when
            // both hosts are agents of one process.
            AgentRequest::PrepareIncomingDisks { uuid, disks } => {
                self.driver.prepare_incoming_disks(&uuid, &disks).await.map(|p| json!(p)).map_err(reply_error)
            }
            AgentRequest::EndIncomingDisks { uuid, keep } => {
                self.driver.end_incoming_disks(&uuid, keep).await.map(|_| Value::Null).map_err(reply_error)
            }
            // Behind the guest's lock: a plug must not race a start or a stop of the guest.
            AgentRequest::AttachVolume { uuid, volume } => {
                let lock = self.lock_for(&uuid);
                let _g = lock.lock().await;
                self.driver.attach_volume(&uuid, &volume).await.map(|_| Value::Null).map_err(reply_error)
            }
            AgentRequest::DetachVolume { uuid, volume } => {
                let lock = self.lock_for(&uuid);
                let _g = lock.lock().await;
                self.driver.detach_volume(&uuid, &volume).await.map(|_| Value::Null).map_err(reply_error)
            }
        };
        d.reply(reply);
    }

    fn lock_for(&self, uuid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.guest_locks.lock().entry(uuid.to_string()).or_default().clone()
    }

    /// Runs one operation and reports its outcome (retrying until the conductor has it).
    pub async fn run_op(&self, request_id: String, spec: GuestSpec, op: GuestOp) {
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        let d = &self.driver;
        let mut listen = None;
        let result = match &op {
            GuestOp::Spawn => d.spawn(&spec).await,
            GuestOp::Destroy => {
                let r = d.destroy(&spec.uuid).await;
                if r.is_ok() {
                    d.release_volumes(&spec.volumes).await;
                }
                r
            }
            GuestOp::PowerOff { timeout_secs } => d.power_off(&spec.uuid, Duration::from_secs(*timeout_secs)).await,
            GuestOp::PowerOn => d.power_on(&spec).await,
            GuestOp::Reboot { hard } => d.reboot(&spec, *hard).await,
            GuestOp::Pause => d.pause(&spec.uuid).await,
            GuestOp::Unpause => d.unpause(&spec.uuid).await,
            GuestOp::Suspend => d.suspend(&spec.uuid).await,
            GuestOp::Resume => d.resume(&spec).await,
            GuestOp::Rescue { image, .. } => d.rescue(&spec, image.as_ref()).await,
            GuestOp::Unrescue => d.unrescue(&spec).await,
            GuestOp::Snapshot { image_id } => d.snapshot(&spec.uuid, image_id).await,
            GuestOp::Rebuild => d.rebuild(&spec).await,
            GuestOp::TriggerCrashDump => d.trigger_crash_dump(&spec.uuid).await,
            GuestOp::MigrateDiskAndPowerOff { target } => {
                let peer = BusPeer { bus: self.bus.clone(), host: target.host.clone() };
                d.migrate_disk_and_power_off(&spec, target, &peer).await
            }
            GuestOp::FinishMigration { power_on } => d.finish_migration(&spec, *power_on).await,
            GuestOp::ConfirmMigration => d.confirm_migration(&spec.uuid).await,
            GuestOp::RevertMigrationDest => d.destroy(&spec.uuid).await,
            GuestOp::FinishRevertMigration { power_on } => d.finish_revert_migration(&spec, *power_on).await,
            GuestOp::PreLiveMigration { source } => d.pre_live_migration(&spec, source).await.map(|p| listen = p),
            GuestOp::LiveMigration { target } => d.live_migration(&spec.uuid, target).await,
            GuestOp::PostLiveMigration => d.post_live_migration_at_destination(&spec).await,
            GuestOp::EvacuateRebuild { power_on } => evacuate_rebuild(d.as_ref(), &spec, *power_on).await,
            GuestOp::Shelve { image_id } => shelve(d.as_ref(), &spec.uuid, image_id).await,
            GuestOp::ShelveOffload => d.destroy(&spec.uuid).await,
            GuestOp::Unshelve => unshelve(d.as_ref(), &spec).await,
        };
        let power_state = match d.get_info(&spec.uuid).await {
            Ok(i) => i.power_state,
            Err(_) => PowerState::NoState,
        };
        if let Err(e) = &result {
            tracing::warn!(uuid = %spec.uuid, op = op.name(), error = %e, "guest operation failed");
        }
        let report = ConductorRequest::OpResult {
            host: self.cfg.host.clone(),
            uuid: spec.uuid.clone(),
            request_id,
            op: op.kind(),
            error: result.err().map(AgentError::from),
            power_state,
            listen,
        };
        let mut delay = Duration::from_millis(20);
        for attempt in 0..30 {
            match self.bus.call(CONDUCTOR_TOPIC, to_message(&report), CALL_TIMEOUT).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "could not report an operation result; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        if matches!(
            op,
            GuestOp::Destroy
                | GuestOp::ShelveOffload
                | GuestOp::RevertMigrationDest
                | GuestOp::ConfirmMigration
                | GuestOp::LiveMigration { .. }
        ) {
            self.guest_locks.lock().remove(&spec.uuid);
        }
    }

    /// One reconciliation pass: destroy guests the controller does not know, report power
    /// states so the conductor can sync them.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        let reply = self
            .bus
            .call(
                CONDUCTOR_TOPIC,
                to_message(&ConductorRequest::HostInstances { host: self.cfg.host.clone() }),
                CALL_TIMEOUT,
            )
            .await?;
        let expected: Vec<ExpectedGuest> = serde_json::from_value(reply)?;
        let known: HashSet<&str> = expected.iter().map(|e| e.uuid.as_str()).collect();
        // The list names the servers moving here too: their staged disks stay.
        let claimed: HashSet<String> = known.iter().map(|u| u.to_string()).collect();
        self.driver.sweep_incoming(&claimed).await;
        let observed = self.driver.list_instances().await?;
        let mut kept: Vec<InstanceInfo> = Vec::new();
        for g in observed {
            if known.contains(g.uuid.as_str()) {
                kept.push(g);
                continue;
            }
            // The per-guest lock makes sure we do not race a spawn that is in progress.
            let lock = self.lock_for(&g.uuid);
            let _l = lock.lock().await;
            tracing::warn!(uuid = %g.uuid, host = %self.cfg.host, "destroying a guest that has no server");
            if let Err(e) = self.driver.destroy(&g.uuid).await {
                tracing::error!(uuid = %g.uuid, error = %e, "could not destroy orphan guest");
            }
        }
        let msg = ConductorRequest::SyncPowerStates { host: self.cfg.host.clone(), observed: kept };
        self.bus.cast(CONDUCTOR_TOPIC, to_message(&msg)).await?;
        Ok(())
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<dyn VirtDriver> {
        &self.driver
    }
}

/// Evacuation on the new host: the guest is re-created from its image (the old host's
/// disks are out of reach), then stopped again if it was stopped.
async fn evacuate_rebuild(d: &dyn VirtDriver, spec: &GuestSpec, power_on: bool) -> Result<(), VirtError> {
    d.spawn(spec).await?;
    if !power_on {
        d.power_off(&spec.uuid, Duration::from_secs(0)).await?;
    }
    Ok(())
}

/// Shelve: the disk goes to an image first, then the guest stops (a guest already
/// stopped stays stopped).
async fn shelve(d: &dyn VirtDriver, uuid: &str, image_id: &str) -> Result<(), VirtError> {
    d.snapshot(uuid, image_id).await?;
    d.power_off(uuid, Duration::from_secs(60)).await
}

/// Unshelve: a guest still here is started; an offloaded one is re-created (spawn
/// boots it).
async fn unshelve(d: &dyn VirtDriver, spec: &GuestSpec) -> Result<(), VirtError> {
    match d.get_info(&spec.uuid).await {
        Ok(i) if i.power_state == PowerState::Running => Ok(()),
        Ok(_) => d.power_on(spec).await,
        Err(_) => d.spawn(spec).await,
    }
}
