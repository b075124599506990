//! The in-process volume agent of `stratus up` (`[volume_agent]`): the storage host
//! role of this machine, beside the compute agent (same host name, so a volume attached
//! on this host is opened as a file rather than exported), keeping its volumes, exports
//! and backups under the data directory unless configured elsewhere.

use std::sync::Arc;

use stratus_core::Platform;
use stratus_volume_agent::backend::file::FileBackend;
use stratus_volume_agent::backend::Backend;
use stratus_volume_agent::backup::{BackupStore, DirStore};
use stratus_volume_agent::export::Exports;
use stratus_volume_agent::images::InternalImages;
use stratus_volume_agent::{AgentConfig, AgentHandle, VolumeAgent};

use crate::config::Config;

/// The agent configuration with `stratus up`'s defaults filled in.
pub fn resolve(config: &Config, platform: &Platform) -> AgentConfig {
    let mut cfg = config.volume_agent.clone();
    if cfg.host.is_empty() {
        cfg.host = if config.compute.local.agent.host.is_empty() {
            platform.host.clone()
        } else {
            config.compute.local.agent.host.clone()
        };
    }
    if cfg.state_dir.as_os_str().is_empty() {
        cfg.state_dir = config.data_dir.join("volume-agent");
    }
    if cfg.file.path.as_os_str().is_empty() {
        cfg.file.path = config.data_dir.join("volumes");
    }
    if cfg.backup.path.as_os_str().is_empty() {
        cfg.backup.path = config.data_dir.join("backups");
    }
    cfg
}

/// The backends `cfg.enabled_backends` names, built.
pub fn backends(cfg: &AgentConfig) -> anyhow::Result<Vec<(String, Arc<dyn Backend>)>> {
    let exports = Exports::new(&cfg.state_dir, &cfg.export_address, cfg.export_port_min, cfg.export_port_max);
    let mut out: Vec<(String, Arc<dyn Backend>)> = Vec::new();
    for name in &cfg.enabled_backends {
        match name.as_str() {
            "file" => {
                out.push((name.clone(), Arc::new(FileBackend::new(cfg.file.clone(), &cfg.host, exports.clone())?)))
            }
            other => anyhow::bail!(
                "[volume_agent] enabled_backends names {other:?}, which is not a backend this build has (file)"
            ),
        }
    }
    Ok(out)
}

/// Starts the agent; it registers with the controller over the bus.
pub async fn start(cfg: AgentConfig, platform: &Platform) -> anyhow::Result<AgentHandle> {
    let backends = backends(&cfg)?;
    let backups: Option<Arc<dyn BackupStore>> =
        if cfg.backup.enabled { Some(Arc::new(DirStore::new(&cfg.backup.path))) } else { None };
    let images = Arc::new(InternalImages::new(platform.internal.clone()));
    VolumeAgent::start(cfg, platform.bus.clone(), backends, images, backups).await
}

/// Starts the agent in the background (it waits for the controller to answer).
pub fn spawn(cfg: AgentConfig, platform: &Platform) {
    let platform = platform.clone();
    tokio::spawn(async move {
        match start(cfg, &platform).await {
            // The agent's tasks run until the process exits.
            Ok(handle) => std::mem::forget(handle),
            Err(e) => tracing::error!(error = %e, "the local volume agent could not start"),
        }
    });
}
