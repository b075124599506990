//! `[volume_agent]`: which backends this host serves and how.
//!
//! Backends are named sections (`[volume_agent.file]`, `[volume_agent.rbd]`) switched
//! on by `enabled_backends`, as Cinder's `enabled_backends` names backend sections;
//! each becomes the `cinder-volume` service `host@name`. Every key has a default and an
//! environment variable (`STRATUS_VOLUME_AGENT_RBD_POOL`), so lists of tables are avoided.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The agent's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Run a volume agent inside `stratus up` (default true).
    pub enabled: bool,
    /// Host name the backends register under (default: the compute agent's host, else
    /// the machine's host name).
    pub host: String,
    /// Availability zone of this host's backends (default `nova`, Cinder's).
    pub availability_zone: String,
    /// Backend sections to serve (default `["file"]`).
    pub enabled_backends: Vec<String>,
    /// Seconds between heartbeats (default 10).
    pub heartbeat_interval_secs: u64,
    /// Seconds between reconciliation passes (default 60).
    pub sync_interval_secs: u64,
    /// Address other hosts reach this host's volume exports at (default 127.0.0.1).
    pub export_address: String,
    /// First TCP port NBD exports may listen on (default 10810, beside NBD's 10809; exports take the first
    /// free port of `export_port_min..=export_port_max`).
    pub export_port_min: u16,
    /// Last TCP port NBD exports may listen on (default 10899).
    pub export_port_max: u16,
    /// Where the agent keeps export state (default `<data_dir>/volume-agent`).
    pub state_dir: PathBuf,
    /// The `file` backend (`[volume_agent.file]`).
    pub file: FileConfig,
    /// The `rbd` backend (`[volume_agent.rbd]`).
    pub rbd: RbdConfig,
    /// Backups (`[volume_agent.backup]`).
    pub backup: BackupConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            enabled: true,
            host: String::new(),
            availability_zone: "nova".into(),
            enabled_backends: vec!["file".into()],
            heartbeat_interval_secs: 10,
            sync_interval_secs: 60,
            export_address: "127.0.0.1".into(),
            export_port_min: 10810,
            export_port_max: 10899,
            state_dir: PathBuf::new(),
            file: FileConfig::default(),
            rbd: RbdConfig::default(),
            backup: BackupConfig::default(),
        }
    }
}

/// `[volume_agent.file]`: qcow2 files in a directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of the volumes (default `<data_dir>/volumes`).
    pub path: PathBuf,
    /// Name volume types select the backend by (default `file`).
    pub volume_backend_name: String,
    /// Capacity reported, in GiB (default 0: the filesystem's size).
    pub total_capacity_gb: u64,
    /// How far thin volumes may overcommit the capacity (default 20.0, Cinder's).
    pub max_over_subscription_ratio: f64,
    /// Percentage of the capacity kept free (default 0).
    pub reserved_percentage: u32,
    /// Seconds an image layer no volume uses is kept for the next volume made from
    /// that image (default 86400).
    pub image_cache_max_age_secs: u64,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            path: PathBuf::new(),
            volume_backend_name: "file".into(),
            total_capacity_gb: 0,
            max_over_subscription_ratio: 20.0,
            reserved_percentage: 0,
            image_cache_max_age_secs: 86400,
        }
    }
}

/// `[volume_agent.rbd]`: RBD images in a Ceph pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RbdConfig {
    /// Ceph configuration file (default `/etc/ceph/ceph.conf`).
    pub ceph_conf: PathBuf,
    /// Keyring of `user` (default: Ceph's search path).
    pub keyring: Option<PathBuf>,
    /// cephx user the agent and the hypervisors act as (default `cinder`).
    pub user: String,
    /// Pool of the volumes (default `volumes`).
    pub pool: String,
    /// Cluster name (default `ceph`).
    pub cluster_name: String,
    /// Name volume types select the backend by (default `rbd`).
    pub volume_backend_name: String,
    /// How far thin volumes may overcommit the capacity (default 20.0).
    pub max_over_subscription_ratio: f64,
    /// Percentage of the capacity kept free (default 0).
    pub reserved_percentage: u32,
}

impl Default for RbdConfig {
    fn default() -> Self {
        RbdConfig {
            ceph_conf: PathBuf::from("/etc/ceph/ceph.conf"),
            keyring: None,
            user: "cinder".into(),
            pool: "volumes".into(),
            cluster_name: "ceph".into(),
            volume_backend_name: "rbd".into(),
            max_over_subscription_ratio: 20.0,
            reserved_percentage: 0,
        }
    }
}

/// `[volume_agent.backup]`: where backups go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Store backups at all (default true: a `cinder-backup` service on this host).
    pub enabled: bool,
    /// Directory backups are written under, one directory per container (default
    /// `<data_dir>/backups`).
    pub path: PathBuf,
    /// Container used when a backup names none (default `volumebackups`, Cinder's).
    pub default_container: String,
    /// Bytes per backup object (default 32 MiB); increments store only the objects
    /// whose content changed.
    pub chunk_size_bytes: u64,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            enabled: true,
            path: PathBuf::new(),
            default_container: "volumebackups".into(),
            chunk_size_bytes: 32 << 20,
        }
    }
}
