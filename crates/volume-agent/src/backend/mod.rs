//! Storage backends: what a volume agent does to volumes, behind one trait.
//!
//! Every operation is idempotent and keyed by the ids it names, because the controller
//! re-sends an operation it could not see finish (it crashed, the call timed out).
//! Operations never leave half-made data under a volume's or snapshot's final name:
//! they build under a temporary name and rename, so a crash leaves either the old
//! state or the new one plus garbage that [`Backend::reconcile`] removes.

pub mod file;

use std::path::Path;

use async_trait::async_trait;
use stratus_volume_contract::{
    AgentError, AttachMode, Connection, Connector, Expected, PoolReport, SnapshotCreated, SnapshotRef, VolumeCreated,
    VolumeRef, VolumeSource, VolumeStats,
};

use crate::images::ImageStore;

/// What a reconciliation pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Volumes' data removed because the controller does not know them.
    pub orphan_volumes: Vec<String>,
    /// Snapshots' data removed (or released) because the controller does not know them.
    pub orphan_snapshots: Vec<String>,
    /// Exports stopped because their attachment is gone.
    pub orphan_exports: Vec<String>,
    /// Unreferenced files or images removed by garbage collection.
    pub collected: Vec<String>,
    /// Operations a crash interrupted that were finished or rolled back.
    pub repaired: Vec<String>,
}

/// Raw bytes in and out of a volume, for backups, uploads and restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// The guest view, byte for byte.
    Raw,
    /// A standalone qcow2 image.
    Qcow2,
}

impl DataFormat {
    /// From an image's `disk_format`.
    pub fn from_disk_format(f: &str) -> Result<DataFormat, AgentError> {
        match f {
            "raw" => Ok(DataFormat::Raw),
            "qcow2" => Ok(DataFormat::Qcow2),
            other => Err(AgentError::Unsupported(format!(
                "disk format {other:?} is not supported for volume data (use raw or qcow2)"
            ))),
        }
    }

    /// `raw` / `qcow2`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Raw => "raw",
            DataFormat::Qcow2 => "qcow2",
        }
    }
}

/// One backend of a volume agent.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Driver name (`file`, `rbd`).
    fn driver(&self) -> &'static str;
    /// `volume_backend_name`.
    fn volume_backend_name(&self) -> &str;
    /// How hosts reach its volumes (`storage_protocol`).
    fn storage_protocol(&self) -> &'static str;
    /// Driver version.
    fn driver_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
    /// Pools with their capacity, measured now.
    async fn pools(&self) -> Result<Vec<PoolReport>, AgentError>;

    /// Creates a volume (idempotent).
    async fn create_volume(
        &self,
        volume: &VolumeRef,
        source: &VolumeSource,
        images: &dyn ImageStore,
    ) -> Result<VolumeCreated, AgentError>;
    /// Removes a volume's data (idempotent: nothing there is success). Refuses while
    /// snapshots of it keep data that depends on it only where the backend needs that.
    async fn delete_volume(&self, volume: &VolumeRef) -> Result<(), AgentError>;
    /// Grows a volume.
    async fn extend_volume(&self, volume: &VolumeRef, new_size_gb: u64) -> Result<VolumeCreated, AgentError>;
    /// Takes a snapshot (idempotent).
    async fn create_snapshot(&self, snapshot: &SnapshotRef, volume: &VolumeRef) -> Result<SnapshotCreated, AgentError>;
    /// Releases a snapshot (idempotent).
    async fn delete_snapshot(&self, snapshot: &SnapshotRef, volume: &VolumeRef) -> Result<(), AgentError>;
    /// Puts a volume back to a snapshot's content.
    async fn revert_to_snapshot(&self, volume: &VolumeRef, snapshot: &SnapshotRef)
        -> Result<VolumeCreated, AgentError>;
    /// Writes the guest view of `snapshot` (or, without one, of the volume itself, which
    /// nobody may be writing meanwhile) to `dst` as `format`.
    async fn export_data(
        &self,
        volume: &VolumeRef,
        snapshot: Option<&SnapshotRef>,
        dst: &Path,
        format: DataFormat,
    ) -> Result<(), AgentError>;
    /// Replaces the volume's content with the raw image `src` (restores).
    async fn import_data(&self, volume: &VolumeRef, src: &Path) -> Result<(), AgentError>;
    /// Makes the volume reachable from `connector`'s host.
    async fn initialize_connection(
        &self,
        volume: &VolumeRef,
        attachment_id: &str,
        connector: &Connector,
        mode: AttachMode,
    ) -> Result<Connection, AgentError>;
    /// Takes back what [`Backend::initialize_connection`] set up (idempotent).
    async fn terminate_connection(&self, volume: &VolumeRef, attachment_id: &str) -> Result<(), AgentError>;
    /// Size and space use of a volume.
    async fn volume_stats(&self, volume: &VolumeRef) -> Result<VolumeStats, AgentError>;
    /// Removes what the controller does not expect, finishes or rolls back what a crash
    /// interrupted, collects garbage.
    async fn reconcile(&self, expected: &Expected) -> Result<ReconcileReport, AgentError>;
}

/// An I/O error as an agent error naming what was being done.
pub(crate) fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> AgentError {
    move |e| AgentError::Failed(format!("{what}: {e}"))
}
