//! The conductor: the controller side of every agent conversation, and the only writer
//! of instance state that comes from hosts.
//!
//! Builds are sagas whose progress lives on the instance row itself:
//! `scheduling` (no host) → claim in placement → host recorded, `networking` → ports
//! recorded, `spawning` → the agent's result → `active` (or a reschedule, or ERROR).
//! Every step is idempotent and keyed by the instance uuid (the placement consumer), so
//! [`Conductor::recover`] can resume any build a crash interrupted, and settle any other
//! task by asking the host what is real. Deletes release the placement allocation in
//! the same step that marks the row deleted, so allocations always match live servers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_bus::Delivery;
use stratus_compute_proto::error::AgentError;
use stratus_compute_proto::rpc::{
    agent_topic, decode, to_message, AgentRequest, CallError, ConductorRequest, DecodeError, ExpectedGuest, GuestOp,
    GuestOpKind, CONDUCTOR_TOPIC,
};
use stratus_compute_proto::version::{Version, CONTRACT};
use stratus_compute_proto::virt::Inventory;
use stratus_compute_proto::virt::{HostResources, InstanceInfo, PowerState, VncConsole};

use crate::consoles::ConsoleTokens;
use stratus_core::Platform;
use stratus_db::sqlx::Row;
use stratus_db::Query;
use tokio::task::JoinHandle;

use crate::clients::RequestedNetworks;
use crate::error::{ComputeError, Result};
use crate::scheduler::Scheduler;
use crate::servers::events;
use crate::servers::store::{self, fault, Instance, Update};
use crate::state::{task, vm};
use crate::{Backends, ComputeConfig};

/// The conductor.
pub struct Conductor {
    pub(crate) platform: Platform,
    pub(crate) cfg: ComputeConfig,
    pub(crate) backends: Backends,
    pub(crate) scheduler: Scheduler,
    /// One-time VNC console tokens (see [`crate::consoles`]).
    pub(crate) consoles: ConsoleTokens,
    /// Builds with a pass running in this process (a second trigger waits for none).
    building: Mutex<std::collections::HashSet<String>>,
    /// Bounds concurrent build passes: a burst of boots queues here instead of piling
    /// up on the database's single writer.
    build_slots: tokio::sync::Semaphore,
    /// Hosts whose heartbeat awaits the next write, and whether a writer is running.
    heartbeats: Mutex<(std::collections::BTreeSet<String>, bool)>,
    /// Claims whose undo failed even after retries (see [`Conductor::undo_claim`]).
    undo_failures: std::sync::atomic::AtomicU64,
    /// Per host, the servers its last power-state report did not list (see
    /// [`Conductor::sync_power_states`]).
    missing: Mutex<HashMap<String, std::collections::HashSet<String>>>,
}

/// Attempts at sending a build's spawn (≈ 9 s) before rescheduling it elsewhere, and a
/// move or shelve step (≈ 4.5 s) before failing it: an agent that restarts comes back
/// within seconds.
const BUILD_SEND_TRIES: u64 = 20;
pub(crate) const STEP_SEND_TRIES: u64 = 12;

/// Attempts at giving a claim back before the failure is reported (placement's DELETE
/// is idempotent, so repeating it is safe), and the pause before the second one
/// (doubled each time).
const RELEASE_ATTEMPTS: u32 = 3;
const RELEASE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Most hosts stamped by one heartbeat statement.
const HEARTBEAT_CHUNK: usize = 500;

/// A server the API has just created, handed to its first build pass as written.
struct NewBuild {
    inst: Instance,
    /// Its `create` action.
    action_id: String,
}

/// Removes a uuid from [`Conductor::building`] when a build pass ends, however it ends.
struct BuildPass<'a>(&'a Conductor, String);

impl Drop for BuildPass<'_> {
    fn drop(&mut self) {
        self.0.building.lock().remove(&self.1);
    }
}

/// The instance-action event Nova records for each guest operation: one table for the
/// plain operations and the steps of moves and shelving.
pub(crate) fn event_name(op: GuestOpKind) -> &'static str {
    use GuestOpKind as K;
    match op {
        K::Spawn => "compute_build_and_run_instance",
        K::Destroy => "compute_terminate_instance",
        K::PowerOff => "compute_stop_instance",
        K::PowerOn => "compute_start_instance",
        K::Reboot => "compute_reboot_instance",
        K::Pause => "compute_pause_instance",
        K::Unpause => "compute_unpause_instance",
        K::Suspend => "compute_suspend_instance",
        K::Resume => "compute_resume_instance",
        K::Rescue => "compute_rescue_instance",
        K::Unrescue => "compute_unrescue_instance",
        K::Snapshot => "compute_snapshot_instance",
        K::Rebuild => "compute_rebuild_instance",
        K::TriggerCrashDump => "compute_trigger_crash_dump",
        K::MigrateDiskAndPowerOff => "compute_resize_instance",
        K::FinishMigration => "compute_finish_resize",
        K::ConfirmMigration => "compute_confirm_resize",
        K::RevertMigrationDest => "compute_revert_resize",
        K::FinishRevertMigration => "compute_finish_revert_resize",
        K::PreLiveMigration => "compute_pre_live_migration",
        K::LiveMigration => "compute_live_migration",
        K::PostLiveMigration => "compute_post_live_migration_at_destination",
        K::EvacuateRebuild => "compute_rebuild_instance",
        K::Shelve => "compute_shelve_instance",
        K::ShelveOffload => "compute_shelve_offload_instance",
        K::Unshelve => "compute_unshelve_instance",
    }
}

/// The event of settling a server a restart interrupted.
const RECOVER_EVENT: &str = "compute_recover";

/// The vm_state an operation leaves the server in when it succeeds (None: unchanged).
fn success_state(op: GuestOpKind) -> Option<&'static str> {
    use GuestOpKind as K;
    Some(match op {
        K::PowerOff => vm::STOPPED,
        K::PowerOn | K::Reboot | K::Unpause | K::Resume | K::Unrescue | K::Rebuild => vm::ACTIVE,
        K::Pause => vm::PAUSED,
        K::Suspend => vm::SUSPENDED,
        K::Rescue => vm::RESCUED,
        _ => return None,
    })
}

impl Conductor {
    /// A conductor.
    pub fn new(platform: Platform, cfg: ComputeConfig, backends: Backends) -> Self {
        let scheduler = Scheduler::new(platform.clone(), cfg.clone(), backends.placement.clone());
        let cfg_slots = cfg.max_concurrent_builds.max(1);
        let consoles = ConsoleTokens::new(platform.db.clone(), Duration::from_secs(cfg.vnc.token_ttl_secs.max(1)));
        Conductor {
            platform,
            cfg,
            backends,
            scheduler,
            consoles,
            building: Mutex::default(),
            build_slots: tokio::sync::Semaphore::new(cfg_slots),
            heartbeats: Mutex::default(),
            undo_failures: Default::default(),
            missing: Mutex::default(),
        }
    }

    /// Gives back everything `consumer` (a server, or a migration record) holds in
    /// placement: the one path every release of a claim takes. Retried a few times, as a
    /// lost connection or a restarting placement should not leave a claim behind.
    pub(crate) async fn release_claim(&self, consumer: &str) -> Result<()> {
        let mut pause = RELEASE_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            match self.backends.placement.release(consumer).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= RELEASE_ATTEMPTS => return Err(ComputeError::Unavailable(e.to_string())),
                Err(e) => {
                    tracing::debug!(consumer, attempt, error = %e, "releasing a claim failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// [`Self::release_claim`] as the undo of a step that already failed (`step` says
    /// which): the step's own outcome stands, so a failed release is not returned but
    /// logged and counted ([`Self::undo_failures`]); start-up recovery releases claims
    /// left by servers that no longer exist.
    pub(crate) async fn undo_claim(&self, consumer: &str, step: &str) {
        if let Err(e) = self.release_claim(consumer).await {
            self.undo_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(consumer, step, error = %e, "a claim could not be given back; it stays until recovery");
        }
    }

    /// How many claims could not be given back by an undo since this conductor started.
    pub fn undo_failures(&self) -> u64 {
        self.undo_failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn rpc_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.rpc_timeout_secs.max(1))
    }

    /// Starts consuming agent requests and schedules crash recovery.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let mut sub = self.platform.bus.consume(CONDUCTOR_TOPIC).await?;
        let me = self.clone();
        let serve = tokio::spawn(async move {
            while let Some(d) = sub.recv().await {
                let me = me.clone();
                tokio::spawn(async move { me.handle(d).await });
            }
        });
        // The interrupted servers are listed now, before the API serves anything new, so
        // recovery never races a request made after this start.
        let interrupted = self.interrupted().await?;
        // Tokens that expired while no token was issued (issuing purges too).
        if let Err(e) = self.consoles.purge_expired().await {
            tracing::warn!(error = %e, "expired console tokens not purged");
        }
        let me = self.clone();
        let recover = tokio::spawn(async move { me.recover(interrupted).await });
        Ok(vec![serve, recover, self.clone().spawn_shelved_image_sweeper()])
    }

    async fn handle(self: Arc<Self>, d: Delivery) {
        let (version, req) = match decode::<ConductorRequest>(&d.message) {
            Ok(e) => (e.version, e.body),
            Err(e) => {
                let host = d.message.args.get("host").and_then(Value::as_str).unwrap_or("?").to_string();
                match &e {
                    DecodeError::Contract(_) => {
                        tracing::error!(host, method = %d.message.method, error = %e, "compute agent refused")
                    }
                    DecodeError::Malformed { .. } => tracing::error!(host, error = %e, "undecodable agent request"),
                }
                d.reply(Err(e.to_string()));
                return;
            }
        };
        let r = match req {
            ConductorRequest::RegisterHost {
                host,
                hypervisor_type,
                hypervisor_version,
                hypervisor_hostname,
                host_ip,
                resources,
                inventories,
            } => self
                .register_host(
                    version,
                    &host,
                    &hypervisor_type,
                    hypervisor_version,
                    &hypervisor_hostname,
                    &host_ip,
                    &resources,
                    &inventories,
                )
                .await
                .map(|id| json!({"node_id": id})),
            ConductorRequest::Heartbeat { host } => {
                self.heartbeat(host);
                Ok(Value::Null)
            }
            ConductorRequest::OpResult { host, uuid, request_id, op, error, power_state, listen } => {
                // Where the destination listens is recorded before its result moves the
                // live migration on (the source's step reads it from the record).
                let recorded = match listen.filter(|_| op == GuestOpKind::PreLiveMigration && error.is_none()) {
                    Some(p) => crate::migrations::record_dest_ports(&self.platform.db, &uuid, &host, p).await.map(drop),
                    None => Ok(()),
                };
                match recorded {
                    Ok(()) => self
                        .clone()
                        .op_result(&host, &uuid, &request_id, op, error.as_ref(), power_state)
                        .await
                        .map(|_| Value::Null),
                    Err(e) => Err(e),
                }
            }
            ConductorRequest::HostInstances { host } => self.expected_guests(&host).await.map(|v| json!(v)),
            ConductorRequest::SyncPowerStates { host, observed } => {
                self.sync_power_states(&host, &observed).await.map(|_| Value::Null)
            }
        };
        if let Err(e) = &r {
            tracing::error!(error = %e, "conductor request failed");
        }
        d.reply(r.map_err(|e| e.to_string()));
    }

    // --- hosts ----------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    async fn register_host(
        &self,
        version: Version,
        host: &str,
        hv_type: &str,
        hv_version: i64,
        hv_hostname: &str,
        host_ip: &str,
        res: &HostResources,
        inv: &std::collections::BTreeMap<String, Inventory>,
    ) -> Result<String> {
        let now = stratus_core::time::now();
        let (host_s, hv_type, hv_hostname, host_ip, res2) =
            (host.to_string(), hv_type.to_string(), hv_hostname.to_string(), host_ip.to_string(), res.clone());
        let node_id: String = self
            .platform
            .db
            .transaction(|tx| {
                let (host, hv_type, hv_hostname, host_ip, res, now) = (host_s.clone(), hv_type.clone(), hv_hostname.clone(), host_ip.clone(), res2.clone(), now.clone());
                Box::pin(async move {
                    let svc = Query::new("SELECT id FROM compute_services WHERE host = ").bind(&host).push_bind(" AND binary_name = ", "nova-compute").fetch_optional(&mut **tx).await?;
                    let service_id = match svc {
                        Some(r) => {
                            let id: String = r.try_get("id")?;
                            Query::new("UPDATE compute_services SET last_seen_up = ").bind(&now).push_bind(", updated_at = ", &now).push_bind(" WHERE id = ", &id).execute(&mut **tx).await?;
                            id
                        }
                        None => {
                            let id = uuid::Uuid::new_v4().to_string();
                            // The integer id shown below microversion 2.53.
                            let num = crate::sequences::next_id(tx, "compute_services").await?;
                            // Not up until its resources are in placement (below): the
                            // scheduler waits for an up host after a start, and one without
                            // inventory would only give "No valid host".
                            let mut q = Query::new("INSERT INTO compute_services (id, num, host, binary_name, topic, created_at, updated_at) VALUES (");
                            q.bind(&id).push(", ").bind(num).push(", ").bind(&host).push(", ").bind("nova-compute").push(", ").bind("compute").push(", ").bind(&now).push(", ").bind(&now).push(")");
                            q.execute(&mut **tx).await?;
                            id
                        }
                    };
                    let node = Query::new("SELECT id FROM compute_nodes WHERE host = ").bind(&host).fetch_optional(&mut **tx).await?;
                    let node_id = match node {
                        Some(r) => {
                            let id: String = r.try_get("id")?;
                            let mut q = Query::new("UPDATE compute_nodes SET service_id = ");
                            q.bind(&service_id).push_bind(", hypervisor_type = ", &hv_type).push_bind(", hypervisor_version = ", hv_version);
                            q.push_bind(", hypervisor_hostname = ", &hv_hostname).push_bind(", host_ip = ", &host_ip).push_bind(", vcpus = ", res.vcpus);
                            q.push_bind(", memory_mb = ", res.memory_mb).push_bind(", local_gb = ", res.local_gb).push_bind(", cpu_info = ", &res.cpu_model);
                            q.push_bind(", updated_at = ", &now).push_bind(" WHERE id = ", &id);
                            q.execute(&mut **tx).await?;
                            id
                        }
                        None => {
                            let id = uuid::Uuid::new_v4().to_string();
                            // The integer id shown below microversion 2.53.
                            let num = crate::sequences::next_id(tx, "compute_nodes").await?;
                            let mut q = Query::new("INSERT INTO compute_nodes (id, num, service_id, host, hypervisor_hostname, hypervisor_type, hypervisor_version, host_ip, vcpus, memory_mb, local_gb, cpu_info, created_at, updated_at) VALUES (");
                            for (i, a) in [
                                stratus_db::Arg::from(&id), num.into(), (&service_id).into(), (&host).into(), (&hv_hostname).into(), (&hv_type).into(), hv_version.into(),
                                (&host_ip).into(), res.vcpus.into(), res.memory_mb.into(), res.local_gb.into(), (&res.cpu_model).into(), (&now).into(), (&now).into(),
                            ]
                            .into_iter()
                            .enumerate()
                            {
                                if i > 0 {
                                    q.push(", ");
                                }
                                q.bind(a);
                            }
                            q.push(")");
                            q.execute(&mut **tx).await?;
                            id
                        }
                    };
                    Ok::<_, ComputeError>(node_id)
                })
            })
            .await?;
        crate::scheduler::services_changed();
        let p = &self.backends.placement;
        p.ensure_provider(&node_id, &hv_hostname).await.map_err(|e| ComputeError::Unavailable(e.to_string()))?;
        p.set_inventories(&node_id, inv).await.map_err(|e| ComputeError::Unavailable(e.to_string()))?;
        // Up from now on (a new service was inserted without `last_seen_up`).
        let seen = stratus_core::time::now();
        let (host_s, seen2) = (host.to_string(), seen.clone());
        self.platform
            .db
            .transaction(|tx| {
                let (host, seen) = (host_s.clone(), seen2.clone());
                Box::pin(async move {
                    Query::new("UPDATE compute_services SET last_seen_up = ")
                        .bind(&seen)
                        .push_bind(" WHERE host = ", &host)
                        .push_bind(" AND binary_name = ", "nova-compute")
                        .push(" AND last_seen_up IS NULL")
                        .execute(&mut **tx)
                        .await?;
                    Ok::<_, ComputeError>(())
                })
            })
            .await?;
        crate::scheduler::services_changed();
        tracing::info!(host, node = %node_id, contract = %version, "compute host registered");
        if version < CONTRACT {
            tracing::warn!(host, contract = %version, "this compute agent speaks an older contract: upgrade it");
        }
        Ok(node_id)
    }

    /// Records a heartbeat. Heartbeats are coalesced: while one write runs, the hosts
    /// heard from meanwhile are collected and stamped by the next, in one statement per
    /// 500 hosts. 5,000 agents at a 10 s interval would otherwise be 500 write
    /// transactions a second on SQLite's single writer, queued in front of every boot.
    fn heartbeat(self: &Arc<Self>, host: String) {
        let start = {
            let mut q = self.heartbeats.lock();
            q.0.insert(host);
            !std::mem::replace(&mut q.1, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.write_heartbeats().await });
        }
    }

    async fn write_heartbeats(&self) {
        loop {
            let hosts: Vec<String> = {
                let mut q = self.heartbeats.lock();
                if q.0.is_empty() {
                    q.1 = false;
                    return;
                }
                std::mem::take(&mut q.0).into_iter().collect()
            };
            let now = stratus_core::time::now();
            for chunk in hosts.chunks(HEARTBEAT_CHUNK) {
                let mut q = Query::new("UPDATE compute_services SET last_seen_up = ");
                q.bind(&now).push_bind(" WHERE binary_name = ", "nova-compute").push(" AND ");
                q.push_in("host", chunk.to_vec());
                let r = self
                    .platform
                    .db
                    .transaction(|tx| {
                        let q = q.clone();
                        Box::pin(async move { q.execute(&mut **tx).await })
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, hosts = chunk.len(), "heartbeats not recorded");
                }
            }
        }
    }

    /// True when `host`'s agent sent a heartbeat recently and is not forced down.
    pub async fn host_up(&self, host: &str) -> Result<bool> {
        let r = Query::new("SELECT last_seen_up, forced_down FROM compute_services WHERE host = ")
            .bind(host)
            .push_bind(" AND binary_name = ", "nova-compute")
            .fetch_optional(self.platform.db.reader())
            .await?;
        let Some(r) = r else { return Ok(false) };
        let last: Option<String> = r.try_get("last_seen_up")?;
        let forced: bool = stratus_db::flag(&r, "forced_down");
        Ok(!forced && last.is_some_and(|l| l >= crate::scheduler::chrono_horizon(self.cfg.service_down_time_secs)))
    }

    /// The guests `host` may keep: its servers, and those live-migrating to it (their
    /// guest waits there before the server's host changes; reconciliation must not
    /// take it for an orphan).
    async fn expected_guests(&self, host: &str) -> Result<Vec<ExpectedGuest>> {
        let mut out = self.host_instances(host).await?;
        // Guests moving here: a live migration's incoming QEMU, and a cold move's disks
        // being copied into `<uuid>_incoming` (the agent keeps both).
        let rows = Query::new("SELECT instance_uuid, migration_type FROM compute_migrations WHERE dest_compute = ")
            .bind(host)
            .push(" AND NOT ")
            .push_in("status", crate::migrations::terminal_names())
            .fetch_all(self.platform.db.reader())
            .await?;
        for r in rows {
            let uuid: String = r.try_get("instance_uuid")?;
            let kind: String = r.try_get("migration_type")?;
            let task = if kind == crate::migrations::kind::LIVE { task::MIGRATING } else { task::RESIZE_MIGRATING };
            if !out.iter().any(|e| e.uuid == uuid) {
                out.push(ExpectedGuest {
                    uuid,
                    vm_state: vm::ACTIVE.into(),
                    task_state: Some(task.into()),
                    power_state: 0,
                });
            }
        }
        Ok(out)
    }

    async fn host_instances(&self, host: &str) -> Result<Vec<ExpectedGuest>> {
        let rows = Query::new("SELECT uuid, vm_state, task_state, power_state FROM compute_instances WHERE deleted = ")
            .bind(false)
            .push_bind(" AND host = ", host)
            .fetch_all(self.platform.db.reader())
            .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(ExpectedGuest {
                uuid: r.try_get("uuid")?,
                vm_state: r.try_get("vm_state")?,
                task_state: r.try_get("task_state")?,
                power_state: r.try_get("power_state")?,
            });
        }
        Ok(out)
    }

    /// Nova stops a server whose guest stopped on its own (as the service, through the
    /// API), which leaves a `stop` action in the server's history; so do we.
    async fn record_external_stop(&self, uuid: &str, host: &str) {
        let db = &self.platform.db;
        let Ok(Some(inst)) = store::load(db, uuid).await else { return };
        let rid = format!("req-{}", uuid::Uuid::new_v4());
        let (u, h) = (uuid.to_string(), host.to_string());
        let r = db
            .transaction(|tx| {
                let (u, h, rid, user, project) =
                    (u.clone(), h.clone(), rid.clone(), inst.user_id.clone(), inst.project_id.clone());
                Box::pin(async move {
                    events::start_action(tx, &u, "stop", &rid, &user, &project).await?;
                    events::start_event_tx(tx, &u, &rid, "compute_stop_instance", Some(&h)).await?;
                    events::finish_event_tx(tx, &u, &rid, "compute_stop_instance", None, true).await
                })
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(uuid, error = %e, "could not record the stop of a guest that stopped on its own");
        }
    }

    /// Nova's `_sync_power_states`: record what the hypervisor sees; a server that stopped
    /// behind our back becomes SHUTOFF, one whose guest vanished becomes ERROR.
    ///
    /// A guest counts as vanished only when two reports in a row lack it: the agent lists
    /// its guests before the report travels, so a build that finishes in between is
    /// missing from one report although its guest runs.
    async fn sync_power_states(&self, host: &str, observed: &[InstanceInfo]) -> Result<()> {
        let seen: HashMap<&str, &InstanceInfo> = observed.iter().map(|i| (i.uuid.as_str(), i)).collect();
        let instances = self.host_instances(host).await?;
        let missed_before = {
            let mut missing = self.missing.lock();
            let before = missing.remove(host).unwrap_or_default();
            let now: std::collections::HashSet<String> = instances
                .iter()
                .filter(|e| e.task_state.is_none() && e.vm_state != vm::BUILDING)
                .filter(|e| !seen.contains_key(e.uuid.as_str()))
                .filter(|e| !(e.vm_state == vm::ERROR && e.power_state == 0))
                .map(|e| e.uuid.clone())
                .collect();
            let confirmed: std::collections::HashSet<String> = now.intersection(&before).cloned().collect();
            let pending: std::collections::HashSet<String> = now.difference(&confirmed).cloned().collect();
            if !pending.is_empty() {
                missing.insert(host.to_string(), pending);
            }
            confirmed
        };
        for e in instances {
            if e.task_state.is_some() || e.vm_state == vm::BUILDING {
                continue;
            }
            let db = &self.platform.db;
            match seen.get(e.uuid.as_str()) {
                Some(i) => {
                    let p = i.power_state.code();
                    if p == e.power_state {
                        continue;
                    }
                    let mut u = Update::new().set("power_state", p).expect_task(None);
                    let stopped_behind_our_back =
                        e.vm_state == vm::ACTIVE && matches!(i.power_state, PowerState::Shutdown | PowerState::Crashed);
                    if stopped_behind_our_back {
                        tracing::warn!(uuid = %e.uuid, "guest stopped outside of the API; marking it SHUTOFF");
                        u = u.set("vm_state", vm::STOPPED);
                    }
                    let changed = u.expect_vm(&[e.vm_state.as_str()]).apply(db, &e.uuid).await?;
                    if changed && stopped_behind_our_back {
                        self.record_external_stop(&e.uuid, host).await;
                    }
                }
                None => {
                    if !missed_before.contains(&e.uuid) {
                        continue;
                    }
                    tracing::error!(uuid = %e.uuid, host, "guest is gone from its host");
                    Update::new()
                        .set("power_state", PowerState::NoState.code())
                        .set("vm_state", vm::ERROR)
                        .set(
                            "fault_json",
                            fault(
                                500,
                                "The guest disappeared from its host",
                                &format!("host {host} has no guest for this server"),
                            )
                            .to_string(),
                        )
                        .expect_task(None)
                        .expect_vm(&[e.vm_state.as_str()])
                        .apply(db, &e.uuid)
                        .await?;
                }
            }
        }
        Ok(())
    }

    // --- builds -----------------------------------------------------------------------

    /// Runs the build saga of `uuid` in the background.
    pub fn spawn_build(self: Arc<Self>, uuid: String, request_id: String) {
        self.spawn_build_pass(uuid, request_id, None);
    }

    /// Runs the build saga of a server the API has just created, starting from the row
    /// it wrote (`inst`, with the id of its `create` action): nothing is read back and
    /// nothing can be claimed yet, so the first pass skips the load and the release.
    pub fn spawn_new_build(self: Arc<Self>, inst: Instance, request_id: String, action_id: String) {
        let uuid = inst.uuid.clone();
        self.spawn_build_pass(uuid, request_id, Some(NewBuild { inst, action_id }));
    }

    fn spawn_build_pass(self: Arc<Self>, uuid: String, request_id: String, new: Option<NewBuild>) {
        tokio::spawn(async move {
            if let Err(e) = self.build_pass(&uuid, &request_id, new).await {
                tracing::error!(instance = %uuid, error = %e, "build step failed");
                // A build that ends in ERROR holds nothing: no claim, no host.
                self.undo_claim(&uuid, "build ended in error").await;
                let _ = Update::new()
                    .set("host", Option::<String>::None)
                    .set("node", Option::<String>::None)
                    .expect_vm(&[vm::BUILDING])
                    .apply(&self.platform.db, &uuid)
                    .await;
                let _ = self
                    .fail(
                        &uuid,
                        &request_id,
                        event_name(GuestOpKind::Spawn),
                        500,
                        "Build failed unexpectedly",
                        &e.to_string(),
                    )
                    .await;
            }
        });
    }

    pub(crate) async fn set_error(&self, uuid: &str, f: Value) -> Result<()> {
        Update::new()
            .set("vm_state", vm::ERROR)
            .set("task_state", Option::<String>::None)
            .set("fault_json", f.to_string())
            .apply(&self.platform.db, uuid)
            .await?;
        Ok(())
    }

    /// ERROR with a fault and the event `ev` failed, unless the server is being deleted.
    pub(crate) async fn fail(
        &self,
        uuid: &str,
        rid: &str,
        ev: &str,
        code: u16,
        msg: &str,
        details: &str,
    ) -> Result<()> {
        let Some(i) = store::load(&self.platform.db, uuid).await? else { return Ok(()) };
        if i.task_state.as_deref() == Some(task::DELETING) {
            return Ok(());
        }
        self.set_error(uuid, fault(code, msg, details)).await?;
        events::finish_event(&self.platform.db, uuid, rid, ev, Some(msg), true).await
    }

    /// One pass of the build saga, from wherever the row says it is.
    pub async fn build(&self, uuid: &str, rid: &str) -> Result<()> {
        self.build_pass(uuid, rid, None).await
    }

    async fn build_pass(&self, uuid: &str, rid: &str, new: Option<NewBuild>) -> Result<()> {
        if !self.building.lock().insert(uuid.to_string()) {
            return Ok(());
        }
        let _pass = BuildPass(self, uuid.to_string());
        let _slot =
            self.build_slots.acquire().await.map_err(|_| ComputeError::Unavailable("conductor is stopping".into()))?;
        let db = &self.platform.db;
        let (mut inst, action_id) = match new {
            // Just created: the row is what the API wrote. Were it deleted meanwhile,
            // the conditional update below finds no row and the claim is given back.
            Some(n) => (n.inst, Some(n.action_id)),
            None => {
                let Some(inst) = store::load(db, uuid).await? else {
                    // Deleted before we started: make sure nothing stays claimed.
                    self.undo_claim(uuid, "build of a deleted server").await;
                    return Ok(());
                };
                (inst, None)
            }
        };
        if inst.vm_state != vm::BUILDING || inst.task_state.as_deref() == Some(task::DELETING) {
            return Ok(());
        }
        let mut spawn_event_started = false;
        if inst.host.is_none() {
            // A claim made before a crash, whose host was never recorded, is dropped
            // first (a server created a moment ago has none).
            if action_id.is_none() {
                self.release_claim(uuid).await?;
            }
            match self.scheduler.select_and_claim_for_build(&inst).await {
                Ok((host, node)) => {
                    let az = match self.scheduler.cached_az(&node) {
                        Some(az) => az,
                        None => self.host_az(&host).await?,
                    };
                    let req: RequestedNetworks =
                        serde_json::from_value(inst.requested_networks.clone()).unwrap_or(RequestedNetworks::Auto);
                    // Without ports to make, the build goes straight to spawning; host,
                    // task and both events are recorded in one transaction.
                    let next = if req == RequestedNetworks::None { task::SPAWNING } else { task::NETWORKING };
                    let u = Update::new()
                        .set("host", host.clone())
                        .set("node", node.clone())
                        .set("availability_zone", az.clone())
                        .set("task_state", next)
                        .expect_task(Some(task::SCHEDULING))
                        .expect_host(None);
                    let (u2, uuid2, rid2, host2, aid2) =
                        (u.clone(), uuid.to_string(), rid.to_string(), host.clone(), action_id.clone());
                    let ok = db
                        .transaction(|tx| {
                            let (u, uuid, rid, host, aid) =
                                (u2.clone(), uuid2.clone(), rid2.clone(), host2.clone(), aid2.clone());
                            Box::pin(async move {
                                if !u.apply_tx(tx, &uuid).await? {
                                    return Ok(false);
                                }
                                const SCHEDULE: &str = "conductor_schedule_and_build_instances";
                                const SPAWN: &str = "compute_build_and_run_instance";
                                match &aid {
                                    // A new build's events do not exist yet: written
                                    // straight to its action, no lookups.
                                    Some(aid) => {
                                        events::insert_event_tx(tx, aid, SCHEDULE, None, Some(None)).await?;
                                        if next == task::SPAWNING {
                                            events::insert_event_tx(tx, aid, SPAWN, Some(&host), None).await?;
                                        }
                                    }
                                    None => {
                                        events::finish_event_tx(tx, &uuid, &rid, SCHEDULE, None, false).await?;
                                        if next == task::SPAWNING {
                                            events::start_event_tx(tx, &uuid, &rid, SPAWN, Some(&host)).await?;
                                        }
                                    }
                                }
                                Ok::<_, ComputeError>(true)
                            })
                        })
                        .await?;
                    if !ok {
                        // Deleted (or reset) while we were choosing: give the room back.
                        self.undo_claim(uuid, "build of a server deleted while scheduling").await;
                        return Ok(());
                    }
                    spawn_event_started = next == task::SPAWNING;
                    // The row now says what we just wrote; no need to read it back.
                    inst.host = Some(host);
                    inst.node = Some(node);
                    inst.availability_zone = Some(az);
                    inst.task_state = Some(next.to_string());
                }
                Err(nvh) => {
                    tracing::warn!(instance = %uuid, details = %nvh.details, "{nvh}");
                    self.undo_claim(uuid, "build found no valid host").await;
                    events::finish_event(
                        db,
                        uuid,
                        rid,
                        "conductor_schedule_and_build_instances",
                        Some(&nvh.to_string()),
                        true,
                    )
                    .await?;
                    self.set_error(uuid, fault(500, &nvh.to_string(), &nvh.details)).await?;
                    return Ok(());
                }
            }
        }
        let host = inst.host.clone().unwrap_or_default();
        if inst.task_state.as_deref() == Some(task::NETWORKING) {
            let req: RequestedNetworks =
                serde_json::from_value(inst.requested_networks.clone()).unwrap_or(RequestedNetworks::Auto);
            let ctx = stratus_core::RequestContext {
                user_id: inst.user_id.clone(),
                project_id: Some(inst.project_id.clone()),
                roles: vec!["member".into(), "reader".into()],
                ..Default::default()
            };
            match self.backends.network.allocate(&ctx, uuid, &host, &req, &inst.security_groups).await {
                Ok(ports) => {
                    let ok = Update::new()
                        .set("ports_json", json!(ports).to_string())
                        .set("task_state", task::SPAWNING)
                        .expect_task(Some(task::NETWORKING))
                        .apply(db, uuid)
                        .await?;
                    if !ok {
                        let _ = self.backends.network.deallocate(uuid, &ports).await;
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.undo_claim(uuid, "build whose network allocation failed").await;
                    Update::new()
                        .set("host", Option::<String>::None)
                        .set("node", Option::<String>::None)
                        .apply(db, uuid)
                        .await?;
                    return self
                        .fail(uuid, rid, event_name(GuestOpKind::Spawn), 500, "Network allocation failed", &e.0)
                        .await;
                }
            }
            inst = store::must_load(db, uuid).await?;
        }
        if inst.task_state.as_deref() == Some(task::SPAWNING) {
            if !spawn_event_started {
                events::start_event(db, uuid, rid, "compute_build_and_run_instance", Some(&host)).await?;
            }
            // Boot from volume: the volumes are made and connected to this host first.
            if inst.bdms.iter().any(|b| b.status == crate::servers::volumes::store::status::PENDING) {
                if let Err(why) =
                    crate::servers::volumes::boot::prepare(db, self.backends.volumes.as_ref(), &inst).await
                {
                    self.undo_claim(uuid, "build whose volumes could not be prepared").await;
                    Update::new()
                        .set("host", Option::<String>::None)
                        .set("node", Option::<String>::None)
                        .apply(db, uuid)
                        .await?;
                    return self
                        .fail(uuid, rid, event_name(GuestOpKind::Spawn), 500, "Block Device Mapping is Invalid", &why)
                        .await;
                }
                inst = store::must_load(db, uuid).await?;
            }
            let msg = AgentRequest::RunOp { request_id: rid.to_string(), spec: inst.guest_spec(), op: GuestOp::Spawn };
            // An agent that is restarting comes back within seconds; only a host that
            // stays unreachable makes us reschedule.
            if let Err(e) = self.cast_retrying(&host, &msg, BUILD_SEND_TRIES).await {
                drop(_slot);
                drop(_pass);
                return self
                    .clone_reschedule(&inst, rid, &AgentError::failed(format!("host {host} is unreachable: {e}")))
                    .await;
            }
        }
        Ok(())
    }

    /// Casts `msg` to the agent of `host`, trying up to `tries` times with a growing
    /// pause (100 ms more each time, at most 500 ms): the one way a step is sent.
    pub(crate) async fn cast_retrying(
        &self,
        host: &str,
        msg: &AgentRequest,
        tries: u64,
    ) -> std::result::Result<(), stratus_bus::BusError> {
        let mut attempt = 1;
        loop {
            match self.platform.bus.cast(&agent_topic(host), to_message(msg)).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= tries => return Err(e),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100 * attempt.min(5))).await;
                    attempt += 1;
                }
            }
        }
    }

    pub(crate) async fn host_az(&self, host: &str) -> Result<String> {
        let r = Query::new("SELECT availability_zone FROM compute_services WHERE host = ")
            .bind(host)
            .fetch_optional(self.platform.db.reader())
            .await?;
        Ok(r.and_then(|r| r.try_get::<Option<String>, _>("availability_zone").ok().flatten())
            .unwrap_or_else(|| self.cfg.default_availability_zone.clone()))
    }

    /// A build failed on its host: release the claim and try another host, up to
    /// `max_attempts`; then ERROR with the last failure as fault.
    async fn clone_reschedule(&self, inst: &Instance, rid: &str, why_err: &AgentError) -> Result<()> {
        let db = &self.platform.db;
        let host = inst.host.clone().unwrap_or_default();
        let mut retry = inst.retry_hosts.clone();
        if !host.is_empty() && !retry.contains(&host) {
            retry.push(host.clone());
        }
        let _ = self.backends.network.deallocate(&inst.uuid, &inst.ports).await;
        self.release_claim(&inst.uuid).await?;
        let why_text = why_err.to_string();
        let why = why_text.as_str();
        events::finish_event(db, &inst.uuid, rid, "compute_build_and_run_instance", Some(why), false).await?;
        if let AgentError::BuildAborted { reason } = why_err {
            // No other host would do better: ERROR now, as Nova's BuildAbortException.
            Update::new()
                .set("host", Option::<String>::None)
                .set("node", Option::<String>::None)
                .set("ports_json", "[]")
                .expect_task(Some(task::SPAWNING))
                .apply(db, &inst.uuid)
                .await?;
            let msg = format!("Build of instance {} aborted: {reason}", inst.uuid);
            return self.fail(&inst.uuid, rid, event_name(GuestOpKind::Spawn), 500, &msg, reason).await;
        }
        if (retry.len() as u32) < self.cfg.max_attempts.max(1) {
            tracing::warn!(instance = %inst.uuid, host, why, "build failed; rescheduling");
            let ok = Update::new()
                .set("host", Option::<String>::None)
                .set("node", Option::<String>::None)
                .set("ports_json", "[]")
                .set("retry_hosts_json", json!(retry).to_string())
                .set("task_state", task::SCHEDULING)
                .expect_vm(&[vm::BUILDING])
                .expect_task(Some(task::SPAWNING))
                .apply(db, &inst.uuid)
                .await?;
            if ok {
                Box::pin(self.build(&inst.uuid, rid)).await?;
            }
            return Ok(());
        }
        Update::new()
            .set("host", Option::<String>::None)
            .set("node", Option::<String>::None)
            .set("ports_json", "[]")
            .set("retry_hosts_json", json!(retry).to_string())
            .expect_task(Some(task::SPAWNING))
            .apply(db, &inst.uuid)
            .await?;
        let msg = format!("Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance {}.", inst.uuid);
        self.fail(&inst.uuid, rid, event_name(GuestOpKind::Spawn), 500, &msg, why).await
    }

    // --- operations -------------------------------------------------------------------

    /// Sends `op` to the server's host (the API has set the task_state already).
    pub async fn dispatch(&self, inst: &Instance, op: GuestOp, rid: &str, action: &str) {
        let db = &self.platform.db;
        let host = inst.host.clone().unwrap_or_default();
        let ev = event_name(op.kind());
        let _ = events::start_event(db, &inst.uuid, rid, ev, Some(&host)).await;
        let msg = AgentRequest::RunOp { request_id: rid.to_string(), spec: inst.guest_spec(), op };
        if let Err(e) = self.platform.bus.cast(&agent_topic(&host), to_message(&msg)).await {
            tracing::warn!(instance = %inst.uuid, action, error = %e, "host unreachable; action abandoned");
            let _ = Update::new().set("task_state", Option::<String>::None).apply(db, &inst.uuid).await;
            let _ = events::finish_event(
                db,
                &inst.uuid,
                rid,
                ev,
                Some(&format!("Compute host {host} is unreachable")),
                true,
            )
            .await;
        }
    }

    async fn op_result(
        self: Arc<Self>,
        host: &str,
        uuid: &str,
        rid: &str,
        op: GuestOpKind,
        error: Option<&AgentError>,
        power: PowerState,
    ) -> Result<()> {
        let db = &self.platform.db;
        let ev = event_name(op);
        // Moves and shelving are multi-step sagas of their own (servers::moves, servers::shelve).
        if crate::servers::moves::handles(op) {
            return self.move_result(host, uuid, rid, op, error, power).await;
        }
        match op {
            // The common case, one transaction and no read: the update only applies to
            // a server still spawning on this host.
            GuestOpKind::Spawn if error.is_none() => {
                let u = Update::new()
                    .set("vm_state", vm::ACTIVE)
                    .set("task_state", Option::<String>::None)
                    .set("power_state", power.code())
                    .set("launched_at", stratus_core::time::now())
                    .set("progress", 100i64)
                    .expect_task(Some(task::SPAWNING))
                    .expect_host(Some(host));
                let (uuid2, rid2) = (uuid.to_string(), rid.to_string());
                db.transaction(|tx| {
                    let (u, uuid, rid) = (u.clone(), uuid2.clone(), rid2.clone());
                    Box::pin(async move {
                        if u.apply_tx(tx, &uuid).await? {
                            events::finish_open_event_tx(tx, &uuid, &rid, ev, true).await?;
                        }
                        Ok::<_, ComputeError>(())
                    })
                })
                .await?;
                Ok(())
            }
            GuestOpKind::Spawn => {
                let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
                if inst.host.as_deref() != Some(host) || inst.task_state.as_deref() != Some(task::SPAWNING) {
                    return Ok(());
                }
                let failed = AgentError::failed("spawn failed");
                self.clone_reschedule(&inst, rid, error.unwrap_or(&failed)).await
            }
            GuestOpKind::Destroy => {
                if let Some(err) = error {
                    let err = err.to_string();
                    self.set_error(uuid, fault(500, "Failed to delete the guest", &err)).await?;
                    return events::finish_event(db, uuid, rid, ev, Some(&err), true).await;
                }
                self.finalize_delete(uuid, rid).await
            }
            _ => {
                let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
                if inst.task_state.as_deref() == Some(task::DELETING) {
                    return Ok(());
                }
                if op == GuestOpKind::Snapshot {
                    // A backup's rotation runs only once its snapshot succeeded.
                    let images = self.backends.images.as_ref();
                    if let Err(e) = crate::servers::backups::finish(db, images, rid, error.is_none()).await {
                        tracing::warn!(instance = %uuid, error = %e, "rotating backups failed; older backups are kept");
                    }
                }
                if let (GuestOpKind::Snapshot, Some(err)) = (op, error) {
                    // A failed snapshot (its image deleted while saving, an upload refused)
                    // leaves the server as it was, as Nova's reverted task state does: the
                    // failure is the action event's, not the server's.
                    Update::new()
                        .set("task_state", Option::<String>::None)
                        .set("power_state", power.code())
                        .apply(db, uuid)
                        .await?;
                    return events::finish_event(db, uuid, rid, ev, Some(&err.to_string()), true).await;
                }
                if let Some(err) = error {
                    let msg = format!("Failed to {op} the server");
                    return self.fail(uuid, rid, ev, 500, &msg, &err.to_string()).await;
                }
                let mut u = Update::new().set("task_state", Option::<String>::None).set("power_state", power.code());
                // A soft-deleted server stays soft-deleted while its guest powers off.
                let keep = inst.vm_state == vm::SOFT_DELETED && op == GuestOpKind::PowerOff;
                if let Some(to) = success_state(op).filter(|_| !keep) {
                    u = u.set("vm_state", to);
                }
                u.apply(db, uuid).await?;
                events::finish_event(db, uuid, rid, ev, None, true).await
            }
        }
    }

    // --- deletes ----------------------------------------------------------------------

    /// Runs the delete of `uuid` in the background.
    pub fn spawn_delete(self: Arc<Self>, uuid: String, rid: String) {
        tokio::spawn(async move {
            if let Err(e) = self.delete(&uuid, &rid).await {
                tracing::error!(instance = %uuid, error = %e, "delete failed");
            }
        });
    }

    async fn delete(&self, uuid: &str, rid: &str) -> Result<()> {
        let Some(inst) = store::load(&self.platform.db, uuid).await? else { return Ok(()) };
        match &inst.host {
            Some(h) if self.host_up(h).await? => {
                events::start_event(&self.platform.db, uuid, rid, "compute_terminate_instance", Some(h)).await?;
                let msg =
                    AgentRequest::RunOp { request_id: rid.to_string(), spec: inst.guest_spec(), op: GuestOp::Destroy };
                if self.platform.bus.cast(&agent_topic(h), to_message(&msg)).await.is_err() {
                    self.finalize_delete(uuid, rid).await?;
                }
                Ok(())
            }
            // No host, or its agent is down: delete locally; the agent's reconciliation
            // destroys the orphan guest when it comes back.
            _ => self.finalize_delete(uuid, rid).await,
        }
    }

    async fn finalize_delete(&self, uuid: &str, rid: &str) -> Result<()> {
        let db = &self.platform.db;
        let Some(inst) = store::load(db, uuid).await? else { return Ok(()) };
        self.backends.network.deallocate(uuid, &inst.ports).await.map_err(|e| ComputeError::Unavailable(e.0))?;
        crate::servers::volumes::ops::release_all(db, self.backends.volumes.as_ref(), uuid).await;
        self.release_claim(uuid).await?;
        // A server deleted mid-move (or waiting for a resize confirmation) also gives
        // back the source share its migration record holds.
        self.end_moves_of_deleted(uuid).await?;
        // The update marking the server deleted also deletes its console tokens
        // (`store::Update` revokes them in the same transaction, as Nova does).
        let now = stratus_core::time::now();
        let mut u = Update::new()
            .set("deleted", true)
            .set("vm_state", vm::DELETED)
            .set("task_state", Option::<String>::None)
            .set("power_state", 0i64)
            .set("terminated_at", now.clone())
            .set("deleted_at", now);
        if inst.vm_state == vm::ERROR {
            // A failed shelve's snapshot may be the only copy of the disk: it is left to
            // its owner (Nova deletes it only for shelved servers).
            u = u.set("shelved_image_id", Option::<String>::None);
        }
        u.apply(db, uuid).await?;
        if let Err(e) = self.delete_shelved_image(uuid).await {
            tracing::warn!(instance = %uuid, error = %e, "shelved snapshot not deleted yet");
        }
        events::finish_event(db, uuid, rid, "compute_terminate_instance", None, true).await
    }

    // --- synchronous calls --------------------------------------------------------------

    /// The serial console log of a server.
    pub async fn console_output(&self, inst: &Instance, length: Option<usize>) -> Result<String> {
        let host = inst
            .host
            .clone()
            .ok_or_else(|| ComputeError::Conflict(format!("Instance {} has no host yet", inst.uuid)))?;
        let req = AgentRequest::ConsoleOutput { uuid: inst.uuid.clone(), length };
        let v =
            self.platform.bus.call(&agent_topic(&host), to_message(&req), self.rpc_timeout()).await.map_err(|e| {
                ComputeError::Conflict(format!("Console output is not available: {}", CallError::from(e)))
            })?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// A one-time token for the VNC console proxy, bound to the server and its host.
    pub async fn vnc_console_token(&self, inst: &Instance) -> Result<String> {
        let host = inst
            .host
            .clone()
            .ok_or_else(|| ComputeError::Conflict(format!("Instance {} has no host yet", inst.uuid)))?;
        let req = AgentRequest::VncConsole { uuid: inst.uuid.clone() };
        let v = self
            .platform
            .bus
            .call(&agent_topic(&host), to_message(&req), self.rpc_timeout())
            .await
            .map_err(|e| ComputeError::Conflict(format!("The console is not available: {}", CallError::from(e))))?;
        let c: VncConsole =
            serde_json::from_value(v).map_err(|e| ComputeError::Conflict(format!("Bad console answer: {e}")))?;
        self.consoles.issue(&inst.uuid, &host, c).await
    }

    // --- crash recovery -------------------------------------------------------------------

    /// Servers a crash left mid-operation (listed before the API serves new requests).
    async fn interrupted(&self) -> Result<Vec<(String, Option<String>, Option<String>)>> {
        let rows = Query::new("SELECT uuid, task_state, host FROM compute_instances WHERE deleted = ")
            .bind(false)
            .push(" AND (task_state IS NOT NULL OR vm_state = ")
            .bind(vm::BUILDING)
            .push(")")
            .fetch_all(self.platform.db.reader())
            .await?;
        let mut out = vec![];
        for r in rows {
            out.push((r.try_get("uuid")?, r.try_get("task_state")?, r.try_get("host")?));
        }
        Ok(out)
    }

    /// Resumes or settles every interrupted server:
    /// - builds resume from the recorded step (re-spawning is idempotent on the agent);
    /// - deletes are re-run;
    /// - other tasks are settled from the state the host reports (or ERROR if it cannot).
    pub async fn recover(self: &Arc<Self>, interrupted: Vec<(String, Option<String>, Option<String>)>) {
        // Resize confirmations run without a task_state; their migration records say so.
        self.clone().recover_confirmations();
        if interrupted.is_empty() {
            return;
        }
        tracing::warn!(count = interrupted.len(), "recovering servers interrupted by a restart");
        for (uuid, task, host) in interrupted {
            let rid = match self.open_request_id(&uuid).await {
                Ok(Some(r)) => r,
                _ => format!("req-recover-{}", uuid::Uuid::new_v4()),
            };
            let me = self.clone();
            tokio::spawn(async move {
                let r = match task.as_deref() {
                    Some(task::DELETING) => me.delete(&uuid, &rid).await,
                    Some(task::SCHEDULING) | Some(task::NETWORKING) | Some(task::SPAWNING) | None => {
                        me.build(&uuid, &rid).await
                    }
                    Some(t) if crate::servers::moves::recovers(t) => {
                        me.recover_move(&uuid, host.as_deref(), &rid).await
                    }
                    Some(_) => me.settle(&uuid, host.as_deref(), &rid).await,
                };
                if let Err(e) = r {
                    tracing::error!(instance = %uuid, error = %e, "recovery failed");
                    let _ = me.set_error(&uuid, fault(500, "Recovery after a restart failed", &e.to_string())).await;
                }
            });
        }
    }

    async fn open_request_id(&self, uuid: &str) -> Result<Option<String>> {
        let r = Query::new("SELECT request_id FROM compute_instance_actions WHERE instance_uuid = ")
            .bind(uuid)
            .push(" AND finish_time IS NULL ORDER BY start_time DESC")
            .fetch_optional(self.platform.db.reader())
            .await?;
        Ok(r.map(|r| r.try_get("request_id")).transpose()?)
    }

    /// Ends an interrupted task by asking the host what the guest really is.
    pub(crate) async fn settle(&self, uuid: &str, host: Option<&str>, rid: &str) -> Result<()> {
        let db = &self.platform.db;
        let Some(host) = host else {
            return self.fail(uuid, rid, RECOVER_EVENT, 500, "Interrupted by a restart", "no host").await;
        };
        // Give a restarting agent time to come back.
        let mut info = None;
        for _ in 0..20 {
            let req = AgentRequest::GetInfo { uuid: uuid.to_string() };
            match self
                .platform
                .bus
                .call(&agent_topic(host), to_message(&req), self.rpc_timeout())
                .await
                .map_err(CallError::from)
            {
                Ok(v) => {
                    info = serde_json::from_value::<InstanceInfo>(v).ok();
                    break;
                }
                // The agent answered: it has no such guest (or cannot tell).
                Err(CallError::Agent(_)) => break,
                Err(CallError::Bus(_)) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let Some(info) = info else {
            return self
                .fail(uuid, rid, RECOVER_EVENT, 500, "Interrupted by a restart and the guest could not be found", host)
                .await;
        };
        let to = match (info.power_state, info.rescued) {
            (_, true) => vm::RESCUED,
            (PowerState::Running, _) => vm::ACTIVE,
            (PowerState::Paused, _) => vm::PAUSED,
            (PowerState::Suspended, _) => vm::SUSPENDED,
            _ => vm::STOPPED,
        };
        Update::new()
            .set("vm_state", to)
            .set("task_state", Option::<String>::None)
            .set("power_state", info.power_state.code())
            .apply(db, uuid)
            .await?;
        events::finish_event(
            db,
            uuid,
            rid,
            "conductor_recover",
            Some("interrupted by a restart; state taken from the hypervisor"),
            true,
        )
        .await
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn every_guest_operation_has_novas_event_name() {
        use GuestOpKind as K;
        for (op, ev) in [
            (K::Spawn, "compute_build_and_run_instance"),
            (K::PowerOff, "compute_stop_instance"),
            (K::MigrateDiskAndPowerOff, "compute_resize_instance"),
            (K::FinishMigration, "compute_finish_resize"),
            (K::FinishRevertMigration, "compute_finish_revert_resize"),
            (K::PostLiveMigration, "compute_post_live_migration_at_destination"),
            (K::EvacuateRebuild, "compute_rebuild_instance"),
            (K::Shelve, "compute_shelve_instance"),
            (K::ShelveOffload, "compute_shelve_offload_instance"),
            (K::Unshelve, "compute_unshelve_instance"),
        ] {
            assert_eq!(event_name(op), ev, "{op}");
        }
        let mut names: Vec<_> = K::ALL.iter().map(|k| event_name(*k)).collect();
        assert!(names.iter().all(|n| n.starts_with("compute_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), K::ALL.len() - 1, "only an evacuation shares rebuild's event");
        assert_eq!(success_state(K::Rescue), Some(vm::RESCUED));
        assert_eq!(success_state(K::Shelve), None, "shelving settles its own states");
    }
}
