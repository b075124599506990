//! Value types both sides of the contract use: what a backend reports about itself,
//! how a volume, snapshot or backup is named to the backend that holds it, and how a
//! host reaches a volume (connector in, connection out).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One pool of a backend, as its agent measures it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolReport {
    /// Pool name (the part after `#` in a volume's host).
    pub name: String,
    /// Physical capacity in GiB.
    pub total_capacity_gb: f64,
    /// Physical free space in GiB.
    pub free_capacity_gb: f64,
    /// What the backend has handed out (sum of virtual sizes it holds), in GiB.
    pub provisioned_capacity_gb: f64,
    /// Percentage of the capacity kept free.
    pub reserved_percentage: u32,
    /// How far thin volumes may overcommit the capacity.
    pub max_over_subscription_ratio: f64,
    /// Volumes take space only as they are written.
    pub thin_provisioning_support: bool,
    /// Volumes can be fully allocated up front.
    pub thick_provisioning_support: bool,
    /// A volume may be attached to several servers at once.
    pub multiattach: bool,
    /// Volumes can grow while attached.
    pub online_extend_support: bool,
    /// Volumes can be reverted to their latest snapshot in place.
    pub revert_to_snapshot_support: bool,
    /// Front-end QoS specs are honoured by the hosts that attach its volumes.
    #[serde(rename = "QoS_support")]
    pub qos_support: bool,
}

/// What an agent says about one backend it serves (registration and heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Host the agent runs on.
    pub host: String,
    /// Backend name on that host (a `[volume_agent]` backend section).
    pub backend: String,
    /// `file` or `rbd`.
    pub driver: String,
    /// The name volume types select it by (`volume_backend_name` extra spec).
    pub volume_backend_name: String,
    /// Availability zone of the host.
    pub availability_zone: String,
    /// How hosts reach its volumes (`file`/`nbd`, `ceph`).
    pub storage_protocol: String,
    /// Who made the storage.
    pub vendor_name: String,
    /// Version of the backend driver.
    pub driver_version: String,
    /// `up`, or `down` when the agent cannot reach its storage.
    pub backend_state: String,
    /// The pools.
    pub pools: Vec<PoolReport>,
    /// The agent also stores backups (a `cinder-backup` service on this host).
    #[serde(default)]
    pub backup: bool,
    /// Contract version the agent speaks.
    #[serde(default)]
    pub protocol: u32,
}

impl BackendReport {
    /// `host@backend`: the service host and the agent's topic suffix.
    pub fn name(&self) -> String {
        format!("{}@{}", self.host, self.backend)
    }
}

/// A volume as its backend knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRef {
    /// Volume id.
    pub id: String,
    /// Size in GiB the volume has (or should have).
    pub size_gb: u64,
    /// Pool it lives in.
    pub pool: String,
    /// What the backend answered when it created the volume (`provider_location`);
    /// `None` while it is being created.
    pub location: Option<String>,
}

/// A snapshot as its backend knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// Snapshot id.
    pub id: String,
    /// Its volume.
    pub volume_id: String,
    /// Size in GiB of the volume when it was taken.
    pub size_gb: u64,
    /// What the backend answered when it took the snapshot.
    pub location: Option<String>,
}

/// An image in the image service a volume is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Image id.
    pub id: String,
    /// `raw`, `qcow2`, ...
    pub disk_format: String,
    /// Size of the image data in bytes, when known.
    pub size: Option<u64>,
    /// Where the image's data is when it lives in a Ceph cluster (`rbd://fsid/pool/image/snap`),
    /// so an `rbd` backend in the same cluster can clone instead of copy.
    #[serde(default)]
    pub direct_url: Option<String>,
}

/// Where a new volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VolumeSource {
    /// All zeroes.
    Blank,
    /// An image's data (converted to the backend's format).
    Image {
        /// The image.
        image: ImageRef,
    },
    /// A snapshot on the same backend.
    Snapshot {
        /// The snapshot.
        snapshot: SnapshotRef,
    },
    /// Another volume on the same backend (a clone).
    Volume {
        /// The source volume.
        volume: VolumeRef,
    },
}

/// What the backend answers for a new (or changed) volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCreated {
    /// The volume's `provider_location` from now on.
    pub location: String,
}

/// What the backend answers for a new snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreated {
    /// The snapshot's `provider_location`.
    pub location: String,
    /// The volume's `provider_location` after the snapshot.
    pub volume_location: String,
}

/// How a host that wants to attach a volume describes itself (os-brick's connector
/// properties; Nova sends these).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    /// Host name.
    #[serde(default)]
    pub host: String,
    /// Address the host reaches storage from.
    #[serde(default)]
    pub ip: Option<String>,
    /// iSCSI initiator name, when the host has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// Everything else the host said (kept, never interpreted).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Read-write or read-only attachment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Read and write.
    #[default]
    Rw,
    /// Read only.
    Ro,
}

impl AttachMode {
    /// `rw` / `ro`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Rw => "rw",
            AttachMode::Ro => "ro",
        }
    }
}

/// How the host named by a [`Connector`] reaches a volume: Cinder's `connection_info`
/// (`driver_volume_type` + `data`). The controller adds `qos_specs`, `access_mode` and
/// `volume_id` to `data` before handing it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "driver_volume_type", content = "data", rename_all = "snake_case")]
pub enum Connection {
    /// A qcow2 file on the host itself (same host as the backend): the hypervisor
    /// opens it directly.
    File {
        /// Absolute path of the volume's active image.
        path: String,
        /// Its format (`qcow2`).
        format: String,
    },
    /// An NBD export of the volume's guest view, over TCP with TLS and a pre-shared key
    /// that is this attachment's alone.
    Nbd {
        /// Address of the exporting host.
        host: String,
        /// Its port.
        port: u16,
        /// Export name.
        export: String,
        /// TLS-PSK identity.
        psk_identity: String,
        /// TLS-PSK key (hex).
        psk_key: String,
    },
    /// An RBD image in a Ceph cluster; the hypervisor uses its own cephx key for
    /// `auth_username` (never carried here, as Nova's `rbd_secret_uuid`).
    Rbd {
        /// `pool/image`.
        name: String,
        /// Monitor addresses.
        hosts: Vec<String>,
        /// Monitor ports, parallel to `hosts`.
        ports: Vec<String>,
        /// Cluster name (`ceph`).
        cluster_name: String,
        /// cephx is on.
        auth_enabled: bool,
        /// cephx user the hypervisor authenticates as.
        auth_username: String,
    },
}

/// A backup as the agent that writes or reads it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSpec {
    /// Backup id.
    pub id: String,
    /// The volume it was taken of.
    pub volume_id: String,
    /// Container (directory, or object storage container) it lives in.
    pub container: String,
    /// Size in GiB of the volume backed up.
    pub size_gb: u64,
    /// The backup this one is an increment of, if any.
    pub parent: Option<Box<BackupSpec>>,
}

/// What an agent answers for a written backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCreated {
    /// Objects (chunks) the backup wrote.
    pub object_count: u64,
    /// Bytes of volume data it holds (not counting blocks an increment reuses).
    pub stored_bytes: u64,
    /// Where the store keeps it (a directory or an object storage URL).
    pub service: String,
}

/// What the controller expects a backend to hold (the agent's reconciliation removes
/// everything else, so a crash leaves no orphan).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Volumes that have (or are getting) data on the backend.
    pub volumes: Vec<VolumeRef>,
    /// Snapshots that have (or are getting) data on the backend.
    pub snapshots: Vec<SnapshotRef>,
    /// Attachments whose exports must stay up.
    pub attachments: Vec<String>,
}

/// Size and space use of one volume on its backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStats {
    /// Guest-visible size in bytes.
    pub size_bytes: u64,
    /// Bytes it takes on the backend.
    pub allocated_bytes: u64,
}

/// Bytes in one GiB.
pub const GIB: u64 = 1 << 30;
