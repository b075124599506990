//! A guest as the hypervisor needs it: flavor, image, ports and identity, sent in full with
//! every operation so that an agent holds no state the controller does not have.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A flavor as the hypervisor needs it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FlavorSpec {
    /// Flavor id.
    pub id: String,
    /// Flavor name.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mb: u64,
    /// Root disk in GiB (0: the image's size).
    pub root_gb: u64,
    /// Ephemeral disk in GiB.
    pub ephemeral_gb: u64,
    /// Swap in MiB.
    pub swap_mb: u64,
    /// Extra specs (`hw:cpu_policy`, `quota:...`).
    pub extra_specs: BTreeMap<String, String>,
}

/// The image a guest boots from, as the image service describes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageSpec {
    /// Image id (the driver downloads `/image/v2/images/{id}/file`).
    pub id: String,
    /// Name.
    pub name: String,
    /// `qcow2`, `raw`, ...
    pub disk_format: Option<String>,
    /// `bare`, `ami`, ...
    pub container_format: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Minimum disk in GiB.
    pub min_disk: u64,
    /// Minimum RAM in MiB.
    pub min_ram: u64,
    /// Every other image property (`hw_disk_bus`, `kernel_id`, `os_type`, ...).
    pub properties: BTreeMap<String, Value>,
}

/// A network port the guest gets (from the network service).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PortSpec {
    /// Port id.
    pub id: String,
    /// Network id.
    pub network_id: String,
    /// Network name (for `addresses`).
    pub network_name: String,
    /// MAC address.
    pub mac_address: String,
    /// Fixed IPs.
    pub fixed_ips: Vec<String>,
    /// MTU of the network, when known.
    pub mtu: Option<u32>,
    /// The user brought this port: a server delete unbinds it instead of deleting it.
    #[serde(default)]
    pub preserve_on_delete: bool,
}

/// Everything a driver needs to create (or re-create) a guest. Sent in full with every
/// operation so that an agent holds no state the controller does not have.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GuestSpec {
    /// Server uuid.
    pub uuid: String,
    /// Display name.
    pub name: String,
    /// Guest hostname.
    pub hostname: String,
    /// Owner project.
    pub project_id: String,
    /// Owner user.
    pub user_id: String,
    /// Flavor.
    pub flavor: FlavorSpec,
    /// Boot image (None: boot from volume, later).
    pub image: Option<ImageSpec>,
    /// Ports.
    pub ports: Vec<PortSpec>,
    /// SSH public key to inject.
    pub key_data: Option<String>,
    /// User data (base64, as the API received it).
    pub user_data: Option<String>,
    /// Server metadata.
    pub metadata: BTreeMap<String, String>,
    /// Build a config drive.
    pub config_drive: bool,
    /// Admin password to set, if any.
    pub admin_pass: Option<String>,
    /// Volumes attached to the guest (part of its definition: a restart re-attaches
    /// them). Absent (empty) in the messages of older controllers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
}

/// A volume attached to a guest: one block device mapping with the connection the
/// volume service handed out for this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeSpec {
    /// Volume id: the disk's serial, so the guest finds it in `/dev/disk/by-id`.
    pub volume_id: String,
    /// The volume service's attachment id.
    pub attachment_id: String,
    /// `Some(0)`: the guest's root disk (boot from volume).
    #[serde(default)]
    pub boot_index: Option<i64>,
    /// Attached read-only (`access_mode` `ro`).
    #[serde(default)]
    pub read_only: bool,
    /// How the host reaches the volume.
    pub connection: VolumeConnection,
}

impl VolumeSpec {
    /// Whether this volume is the root disk.
    pub fn is_root(&self) -> bool {
        self.boot_index == Some(0)
    }
}

/// Cinder's `connection_info` as a hypervisor reads it (`driver_volume_type` + `data`;
/// fields of `data` not listed here are ignored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "driver_volume_type", content = "data", rename_all = "snake_case")]
pub enum VolumeConnection {
    /// A file on this host that QEMU opens itself.
    File {
        /// Absolute path.
        path: String,
        /// `qcow2` or `raw`.
        format: String,
    },
    /// An NBD export on another host (TLS with a pre-shared key).
    Nbd {
        /// Exporting host.
        host: String,
        /// Its port.
        port: u16,
        /// Export name.
        export: String,
    },
    /// An RBD image in a Ceph cluster.
    Rbd {
        /// `pool/image`.
        name: String,
    },
}
