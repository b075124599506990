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
}
