//! The messages: what the controller asks of an agent, and what an agent tells the
//! controller.
//!
//! Every agent request is idempotent and keyed by the ids it names: sent twice (a
//! controller that restarted and resumes an operation), it does the work once and
//! answers the same. A request for an operation still running on the agent waits for
//! that run instead of starting another.

use serde::{Deserialize, Serialize};

use crate::types::{AttachMode, BackendReport, BackupSpec, Connector, ImageRef, SnapshotRef, VolumeRef, VolumeSource};

/// Requests the controller sends to the agent of one backend (topic
/// [`crate::agent_topic`]). All are calls; the reply type is named on each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum AgentRequest {
    /// Create `volume` from `source` → [`crate::VolumeCreated`].
    CreateVolume {
        /// The new volume (no location yet).
        volume: VolumeRef,
        /// Where its data comes from.
        source: VolumeSource,
    },
    /// Remove a volume's data (also when it has none) → `()`.
    DeleteVolume {
        /// The volume.
        volume: VolumeRef,
    },
    /// Grow a volume to `new_size_gb` → [`crate::VolumeCreated`] (its location after).
    ExtendVolume {
        /// The volume.
        volume: VolumeRef,
        /// New size.
        new_size_gb: u64,
    },
    /// Take a snapshot of `volume` → [`crate::SnapshotCreated`].
    CreateSnapshot {
        /// The snapshot to take.
        snapshot: SnapshotRef,
        /// Its volume.
        volume: VolumeRef,
    },
    /// Remove a snapshot (also when it has no data) → `()`.
    DeleteSnapshot {
        /// The snapshot.
        snapshot: SnapshotRef,
        /// Its volume.
        volume: VolumeRef,
    },
    /// Put `volume` back to the content of `snapshot` → [`crate::VolumeCreated`].
    RevertToSnapshot {
        /// The volume.
        volume: VolumeRef,
        /// Its (latest) snapshot.
        snapshot: SnapshotRef,
    },
    /// Write the volume's data as the data of the (queued) image `image.id` → `()`.
    UploadToImage {
        /// The volume.
        volume: VolumeRef,
        /// The image to fill (`disk_format` says how).
        image: ImageRef,
    },
    /// Back `volume` up into `backup` (an increment when `backup.parent` is set) →
    /// [`crate::BackupCreated`].
    CreateBackup {
        /// The backup to write.
        backup: BackupSpec,
        /// The volume.
        volume: VolumeRef,
        /// Back up this snapshot of the volume instead of the volume itself (a
        /// snapshot backup, or the temporary snapshot of an in-use volume).
        #[serde(default)]
        snapshot: Option<SnapshotRef>,
    },
    /// Write `backup`'s data into `volume` → `()`.
    RestoreBackup {
        /// The backup.
        backup: BackupSpec,
        /// The volume to overwrite.
        volume: VolumeRef,
    },
    /// Remove a backup from the store → `()`.
    DeleteBackup {
        /// The backup.
        backup: BackupSpec,
    },
    /// Make `volume` reachable from the host described by `connector` for
    /// `attachment_id` → [`crate::Connection`].
    InitializeConnection {
        /// The volume.
        volume: VolumeRef,
        /// The attachment it is for.
        attachment_id: String,
        /// The host.
        connector: Connector,
        /// Read-write or read-only.
        #[serde(default)]
        mode: AttachMode,
    },
    /// Undo [`AgentRequest::InitializeConnection`] for `attachment_id` → `()`.
    TerminateConnection {
        /// The volume.
        volume: VolumeRef,
        /// The attachment.
        attachment_id: String,
    },
    /// Size and space use of a volume → [`crate::VolumeStats`].
    VolumeStats {
        /// The volume.
        volume: VolumeRef,
    },
    /// Run a reconciliation pass now → `()`.
    Reconcile,
}

impl AgentRequest {
    /// Name used in logs and fault injection.
    pub fn name(&self) -> &'static str {
        match self {
            AgentRequest::CreateVolume { .. } => "create_volume",
            AgentRequest::DeleteVolume { .. } => "delete_volume",
            AgentRequest::ExtendVolume { .. } => "extend_volume",
            AgentRequest::CreateSnapshot { .. } => "create_snapshot",
            AgentRequest::DeleteSnapshot { .. } => "delete_snapshot",
            AgentRequest::RevertToSnapshot { .. } => "revert_to_snapshot",
            AgentRequest::UploadToImage { .. } => "upload_to_image",
            AgentRequest::CreateBackup { .. } => "create_backup",
            AgentRequest::RestoreBackup { .. } => "restore_backup",
            AgentRequest::DeleteBackup { .. } => "delete_backup",
            AgentRequest::InitializeConnection { .. } => "initialize_connection",
            AgentRequest::TerminateConnection { .. } => "terminate_connection",
            AgentRequest::VolumeStats { .. } => "volume_stats",
            AgentRequest::Reconcile => "reconcile",
        }
    }

    /// The key concurrent duplicates of this request share (the same operation on the
    /// same resource), so the agent runs it once.
    pub fn dedup_key(&self) -> Option<String> {
        let id = match self {
            AgentRequest::CreateVolume { volume, .. }
            | AgentRequest::DeleteVolume { volume }
            | AgentRequest::ExtendVolume { volume, .. }
            | AgentRequest::RevertToSnapshot { volume, .. } => volume.id.clone(),
            AgentRequest::CreateSnapshot { snapshot, .. } | AgentRequest::DeleteSnapshot { snapshot, .. } => {
                snapshot.id.clone()
            }
            AgentRequest::UploadToImage { image, .. } => image.id.clone(),
            AgentRequest::CreateBackup { backup, .. }
            | AgentRequest::RestoreBackup { backup, .. }
            | AgentRequest::DeleteBackup { backup } => backup.id.clone(),
            AgentRequest::InitializeConnection { attachment_id, .. }
            | AgentRequest::TerminateConnection { attachment_id, .. } => attachment_id.clone(),
            AgentRequest::VolumeStats { .. } | AgentRequest::Reconcile => return None,
        };
        Some(format!("{}:{id}", self.name()))
    }
}

/// Requests agents send to the controller (topic [`crate::CONTROLLER_TOPIC`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum ControllerRequest {
    /// Register (or re-register after a restart) a backend: its `cinder-volume`
    /// service and its pools (call → `()`).
    Register {
        /// The backend.
        report: BackendReport,
    },
    /// The backend is alive; its pools now look like this (cast).
    Heartbeat {
        /// The backend.
        report: BackendReport,
    },
    /// What the backend should hold (call → [`crate::Expected`]).
    Expected {
        /// `host@backend`.
        backend: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Connection, PoolReport};
    use crate::wire::{decode, encode};

    #[test]
    fn every_shape_round_trips() {
        let vol = VolumeRef { id: "v".into(), size_gb: 2, pool: "volumes".into(), location: None };
        let snap = SnapshotRef { id: "s".into(), volume_id: "v".into(), size_gb: 2, location: Some("x".into()) };
        let reqs = vec![
            AgentRequest::CreateVolume { volume: vol.clone(), source: VolumeSource::Blank },
            AgentRequest::CreateVolume {
                volume: vol.clone(),
                source: VolumeSource::Image {
                    image: ImageRef { id: "i".into(), disk_format: "qcow2".into(), size: Some(9), direct_url: None },
                },
            },
            AgentRequest::CreateVolume {
                volume: vol.clone(),
                source: VolumeSource::Snapshot { snapshot: snap.clone() },
            },
            AgentRequest::CreateSnapshot { snapshot: snap.clone(), volume: vol.clone() },
            AgentRequest::InitializeConnection {
                volume: vol.clone(),
                attachment_id: "a".into(),
                connector: Connector { host: "h".into(), ..Default::default() },
                mode: AttachMode::Ro,
            },
        ];
        for r in reqs {
            assert_eq!(decode::<AgentRequest>(&encode(&r)).unwrap(), r);
        }
        assert_eq!(
            AgentRequest::CreateSnapshot { snapshot: snap, volume: vol }.dedup_key().as_deref(),
            Some("create_snapshot:s")
        );
        let reg = ControllerRequest::Register {
            report: BackendReport {
                host: "h".into(),
                backend: "file".into(),
                pools: vec![PoolReport { name: "volumes".into(), qos_support: true, ..Default::default() }],
                ..Default::default()
            },
        };
        let m = encode(&reg);
        assert_eq!(m.args["report"]["pools"][0]["QoS_support"], true);
        assert_eq!(decode::<ControllerRequest>(&m).unwrap(), reg);
        let c = serde_json::to_value(Connection::File { path: "/p".into(), format: "qcow2".into() }).unwrap();
        assert_eq!(c, serde_json::json!({"driver_volume_type": "file", "data": {"path": "/p", "format": "qcow2"}}));
    }
}
