//! The agent runtime: registration, heartbeats, serving requests, reconciliation.
//!
//! Each backend is a `cinder-volume` service of its own (`host@backend`) with a topic
//! of its own. A request is handled in a task of its own; a request for an operation
//! that is already running (the controller re-sent it after a restart or a timeout)
//! joins that run instead of starting another ([`VolumeAgent::dispatch`]). Stopping the
//! agent abandons in-flight work exactly where it is, as a crash would: the backends'
//! operations are built so that what a crash leaves is finished or removed by the next
//! reconciliation, which runs at start and every `sync_interval_secs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_bus::{Bus, Delivery, Notification};
use stratus_volume_contract::wire::{decode, encode};
use stratus_volume_contract::{
    agent_topic, AgentError, AgentRequest, BackendReport, ControllerRequest, Expected, CONTROLLER_TOPIC,
    PROTOCOL_VERSION,
};
use tokio::task::JoinHandle;

use crate::backend::{Backend, DataFormat, ReconcileReport};
use crate::backup::{self, BackupStore};
use crate::config::AgentConfig;
use crate::images::ImageStore;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Reply = Result<Value, AgentError>;

/// The volume agent of one host.
pub struct VolumeAgent {
    cfg: AgentConfig,
    bus: Arc<dyn Bus>,
    backends: Vec<(String, Arc<dyn Backend>)>,
    images: Arc<dyn ImageStore>,
    backups: Option<Arc<dyn BackupStore>>,
    tmp_dir: PathBuf,
    /// Operations running now, by [`AgentRequest::dedup_key`].
    inflight: Mutex<HashMap<String, Shared<BoxFuture<'static, Reply>>>>,
    stopped: tokio::sync::watch::Sender<bool>,
}

/// The agent's tasks; [`AgentHandle::stop`] ends them (a crash, as the controller sees it).
pub struct AgentHandle {
    /// The agent.
    pub agent: Arc<VolumeAgent>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Stops every task of the agent at once, in-flight operations included.
    pub fn stop(self) {
        let _ = self.agent.stopped.send(true);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// A backend's answer as the JSON the controller decodes.
fn to_value<T: serde::Serialize>(v: Result<T, AgentError>) -> Reply {
    v.map(|x| serde_json::to_value(x).unwrap_or(Value::Null))
}

impl VolumeAgent {
    /// Registers every backend with the controller (retrying until it answers) and
    /// starts serving them.
    pub async fn start(
        cfg: AgentConfig,
        bus: Arc<dyn Bus>,
        backends: Vec<(String, Arc<dyn Backend>)>,
        images: Arc<dyn ImageStore>,
        backups: Option<Arc<dyn BackupStore>>,
    ) -> anyhow::Result<AgentHandle> {
        let tmp_dir = cfg.state_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        // Leftovers of operations a crash interrupted.
        for e in std::fs::read_dir(&tmp_dir)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let agent = Arc::new(VolumeAgent {
            cfg,
            bus,
            backends,
            images,
            backups,
            tmp_dir,
            inflight: Mutex::default(),
            stopped: tokio::sync::watch::channel(false).0,
        });
        let mut tasks = Vec::new();
        for (name, backend) in &agent.backends {
            let full = agent.backend_name(name);
            // Subscribe before registering: nothing sent after registration is lost.
            let sub = agent.bus.consume(&agent_topic(&full)).await?;
            agent.register(name, backend.as_ref()).await?;
            if let Err(e) = agent.reconcile_one(name, backend.as_ref()).await {
                tracing::warn!(backend = %full, error = %e, "first reconciliation failed; the periodic one retries");
            }
            let a = agent.clone();
            let (n, b) = (name.clone(), backend.clone());
            tasks.push(tokio::spawn(async move { a.serve(n, b, sub).await }));
        }
        let a = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(a.cfg.heartbeat_interval_secs.max(1)));
            tick.tick().await;
            loop {
                tick.tick().await;
                for (name, backend) in &a.backends {
                    let report = a.report(name, backend.as_ref()).await;
                    let msg = encode(&ControllerRequest::Heartbeat { report });
                    if let Err(e) = a.bus.cast(CONTROLLER_TOPIC, msg).await {
                        tracing::warn!(error = %e, "volume heartbeat not delivered");
                    }
                }
            }
        }));
        let a = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(a.cfg.sync_interval_secs.max(1)));
            tick.tick().await;
            loop {
                tick.tick().await;
                for (name, backend) in &a.backends {
                    if let Err(e) = a.reconcile_one(name, backend.as_ref()).await {
                        tracing::warn!(backend = %name, error = %e, "volume reconciliation failed");
                    }
                }
            }
        }));
        tracing::info!(host = %agent.cfg.host, backends = ?agent.backends.iter().map(|b| &b.0).collect::<Vec<_>>(), "volume agent started");
        Ok(AgentHandle { agent, tasks })
    }

    fn backend_name(&self, name: &str) -> String {
        format!("{}@{name}", self.cfg.host)
    }

    /// What `backend` reports about itself now.
    pub async fn report(&self, name: &str, backend: &dyn Backend) -> BackendReport {
        let (pools, state) = match backend.pools().await {
            Ok(p) => (p, "up"),
            Err(e) => {
                tracing::warn!(backend = name, error = %e, "cannot measure the backend's pools");
                (Vec::new(), "down")
            }
        };
        BackendReport {
            host: self.cfg.host.clone(),
            backend: name.to_string(),
            driver: backend.driver().to_string(),
            volume_backend_name: backend.volume_backend_name().to_string(),
            availability_zone: self.cfg.availability_zone.clone(),
            storage_protocol: backend.storage_protocol().to_string(),
            // What Cinder's own open drivers report, and what Tempest's `vendor_name` expects.
            vendor_name: "Open Source".into(),
            driver_version: backend.driver_version().to_string(),
            backend_state: state.into(),
            pools,
            backup: self.backups.is_some(),
            protocol: PROTOCOL_VERSION,
        }
    }

    async fn register(&self, name: &str, backend: &dyn Backend) -> anyhow::Result<()> {
        let mut delay = Duration::from_millis(50);
        for attempt in 0.. {
            let report = self.report(name, backend).await;
            let req = ControllerRequest::Register { report };
            match stratus_volume_contract::call::<_, Value>(self.bus.as_ref(), CONTROLLER_TOPIC, &req, CALL_TIMEOUT)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 40 => {
                    tracing::info!(error = %e, "volume controller not ready; retrying registration");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => anyhow::bail!("could not register backend {name} with the volume controller: {e}"),
            }
        }
        unreachable!()
    }

    /// One reconciliation pass of one backend: asks the controller what it should hold.
    pub async fn reconcile_one(&self, name: &str, backend: &dyn Backend) -> Result<ReconcileReport, AgentError> {
        let req = ControllerRequest::Expected { backend: self.backend_name(name) };
        let expected: Expected = stratus_volume_contract::call(self.bus.as_ref(), CONTROLLER_TOPIC, &req, CALL_TIMEOUT)
            .await
            .map_err(|e| AgentError::Failed(format!("asking the controller what {name} should hold: {e}")))?;
        let report = backend.reconcile(&expected).await?;
        if report != ReconcileReport::default() {
            tracing::info!(backend = name, ?report, "volume reconciliation");
        }
        Ok(report)
    }

    async fn serve(self: Arc<Self>, name: String, backend: Arc<dyn Backend>, mut sub: stratus_bus::Subscription) {
        while let Some(d) = sub.recv().await {
            let a = self.clone();
            let (n, b) = (name.clone(), backend.clone());
            let mut stopped = self.stopped.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = a.handle(n, b, d) => {}
                    _ = stopped.wait_for(|s| *s) => {}
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, name: String, backend: Arc<dyn Backend>, d: Delivery) {
        let req: AgentRequest = match decode(&d.message) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "volume agent: undecodable request");
                d.reply(Err(e.to_wire()));
                return;
            }
        };
        let reply = self.dispatch(name, backend, req).await;
        d.reply(reply.map_err(|e| e.to_wire()));
    }

    /// Runs `req` on `backend`, joining a run of the same operation already in flight.
    pub async fn dispatch(self: &Arc<Self>, name: String, backend: Arc<dyn Backend>, req: AgentRequest) -> Reply {
        let Some(key) = req.dedup_key() else { return self.execute(&name, backend, req).await };
        let key = format!("{name}/{key}");
        let fut = {
            let mut inflight = self.inflight.lock();
            if let Some(f) = inflight.get(&key) {
                tracing::info!(operation = %key, "joining an operation already running");
                f.clone()
            } else {
                let me = self.clone();
                let k = key.clone();
                let f = async move {
                    let r = me.execute(&name, backend, req).await;
                    me.inflight.lock().remove(&k);
                    r
                }
                .boxed()
                .shared();
                inflight.insert(key, f.clone());
                f
            }
        };
        fut.await
    }

    async fn execute(&self, name: &str, backend: Arc<dyn Backend>, req: AgentRequest) -> Reply {
        let op = req.name();
        let r = self.execute_inner(name, backend.as_ref(), req).await;
        if let Err(e) = &r {
            tracing::warn!(backend = name, operation = op, error = %e, "volume operation failed");
        }
        r
    }

    async fn execute_inner(&self, name: &str, backend: &dyn Backend, req: AgentRequest) -> Reply {
        match req {
            AgentRequest::CreateVolume { volume, source } => {
                to_value(backend.create_volume(&volume, &source, self.images.as_ref()).await)
            }
            AgentRequest::DeleteVolume { volume } => backend.delete_volume(&volume).await.map(|()| Value::Null),
            AgentRequest::ExtendVolume { volume, new_size_gb } => {
                to_value(backend.extend_volume(&volume, new_size_gb).await)
            }
            AgentRequest::CreateSnapshot { snapshot, volume } => {
                to_value(backend.create_snapshot(&snapshot, &volume).await)
            }
            AgentRequest::DeleteSnapshot { snapshot, volume } => {
                backend.delete_snapshot(&snapshot, &volume).await.map(|()| Value::Null)
            }
            AgentRequest::RevertToSnapshot { volume, snapshot } => {
                to_value(backend.revert_to_snapshot(&volume, &snapshot).await)
            }
            AgentRequest::UploadToImage { volume, image } => {
                let fmt = DataFormat::from_disk_format(&image.disk_format)?;
                let tmp = self.tmp_dir.join(format!("upload-{}", uuid::Uuid::new_v4()));
                let r = async {
                    backend.export_data(&volume, None, &tmp, fmt).await?;
                    self.images.upload(&image.id, &tmp).await
                }
                .await;
                let _ = std::fs::remove_file(&tmp);
                r.map(|()| Value::Null)
            }
            AgentRequest::CreateBackup { backup, volume, snapshot } => {
                let store = self.backup_store()?;
                let tmp = self.tmp_dir.join(format!("backup-{}", uuid::Uuid::new_v4()));
                let bus = self.bus.clone();
                let (id, host) = (backup.id.clone(), self.backend_name(name));
                let progress = move |pct: u32| {
                    let n = Notification {
                        event_type: "backup.createprogress".into(),
                        publisher_id: format!("backup.{host}"),
                        payload: json!({"backup_id": id, "progress": pct}),
                    };
                    let bus = bus.clone();
                    tokio::spawn(async move { bus.notify(n).await });
                };
                let r = async {
                    backend.export_data(&volume, snapshot.as_ref(), &tmp, DataFormat::Raw).await?;
                    backup::write(store.as_ref(), &backup, &tmp, self.cfg.backup.chunk_size_bytes, &progress).await
                }
                .await;
                let _ = std::fs::remove_file(&tmp);
                to_value(r)
            }
            AgentRequest::RestoreBackup { backup, volume } => {
                let store = self.backup_store()?;
                let tmp = self.tmp_dir.join(format!("restore-{}", uuid::Uuid::new_v4()));
                let r = async {
                    backup::read(store.as_ref(), &backup, &tmp).await?;
                    backend.import_data(&volume, &tmp).await
                }
                .await;
                let _ = std::fs::remove_file(&tmp);
                r.map(|()| Value::Null)
            }
            AgentRequest::DeleteBackup { backup } => {
                let store = self.backup_store()?;
                store.delete_prefix(&backup.container, &backup.id).await.map(|()| Value::Null)
            }
            AgentRequest::InitializeConnection { volume, attachment_id, connector, mode } => {
                to_value(backend.initialize_connection(&volume, &attachment_id, &connector, mode).await)
            }
            AgentRequest::TerminateConnection { volume, attachment_id } => {
                backend.terminate_connection(&volume, &attachment_id).await.map(|()| Value::Null)
            }
            AgentRequest::VolumeStats { volume } => to_value(backend.volume_stats(&volume).await),
            AgentRequest::Reconcile => self.reconcile_one(name, backend).await.map(|_| Value::Null),
        }
    }

    fn backup_store(&self) -> Result<Arc<dyn BackupStore>, AgentError> {
        self.backups.clone().ok_or_else(|| AgentError::Unsupported(format!("host {} keeps no backups", self.cfg.host)))
    }

    /// The backends, by section name.
    pub fn backends(&self) -> &[(String, Arc<dyn Backend>)] {
        &self.backends
    }
}
