//! Hypervisor-level values both sides use: power states, what a driver reports about a
//! guest and a host, where a console listens, and the two ends of a migration.

use serde::{Deserialize, Serialize};

/// Nova's power states (the integers the API shows as `OS-EXT-STS:power_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Unknown / no guest.
    NoState,
    /// Running.
    Running,
    /// vCPUs frozen.
    Paused,
    /// Stopped.
    Shutdown,
    /// Died.
    Crashed,
    /// Memory saved to disk.
    Suspended,
}

impl PowerState {
    /// The API's integer.
    pub fn code(self) -> i64 {
        match self {
            PowerState::NoState => 0,
            PowerState::Running => 1,
            PowerState::Paused => 3,
            PowerState::Shutdown => 4,
            PowerState::Crashed => 6,
            PowerState::Suspended => 7,
        }
    }

    /// From the API's integer.
    pub fn from_code(c: i64) -> PowerState {
        match c {
            1 => PowerState::Running,
            3 => PowerState::Paused,
            4 => PowerState::Shutdown,
            6 => PowerState::Crashed,
            7 => PowerState::Suspended,
            _ => PowerState::NoState,
        }
    }
}

/// What a driver reports about one guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Server uuid.
    pub uuid: String,
    /// Current power state.
    pub power_state: PowerState,
    /// True while booted into a rescue image.
    pub rescued: bool,
}

/// Raw resources of the host, before reservations and allocation ratios.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostResources {
    /// Logical CPUs.
    pub vcpus: i64,
    /// Memory in MiB.
    pub memory_mb: i64,
    /// Disk for instances in GiB.
    pub local_gb: i64,
    /// CPU model, for `os-hypervisors` `cpu_info`.
    pub cpu_model: String,
}

/// A resource provider inventory record, in placement's terms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Inventory {
    /// Total amount.
    pub total: i64,
    /// Held back for the host.
    pub reserved: i64,
    /// Smallest allocation.
    pub min_unit: i64,
    /// Largest allocation.
    pub max_unit: i64,
    /// Allocation granularity.
    pub step_size: i64,
    /// Overcommit ratio.
    pub allocation_ratio: f64,
}

/// Where a guest's VNC console is reachable (for the console proxy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VncConsole {
    /// Host address.
    pub host: String,
    /// TCP port, or 0 when `path` is a unix socket.
    pub port: u16,
    /// Unix socket path, if any.
    pub path: Option<String>,
}

/// Migration target for cold and live migrations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationTarget {
    /// Destination host name.
    pub host: String,
    /// Its address.
    pub host_ip: String,
    /// Copy disks (no shared storage).
    pub block_migration: bool,
    /// Where the destination of a live migration listens, as its `pre_live_migration`
    /// answered. None from a controller or destination that predates the answer: the
    /// destination then listens where both sides derive from the uuid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<IncomingPorts>,
}

/// The TCP ports the destination of a live migration chose in its configured range
/// (free when it chose them), for the source to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingPorts {
    /// The migration stream.
    pub port: u16,
    /// The NBD server the disks are mirrored into.
    pub nbd_port: u16,
}

/// One disk a cold migration copies to another machine: the destination creates it
/// empty with this virtual size and serves it over NBD under `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingDisk {
    /// File name in the instance directory (`disk`, `disk.eph0`, `disk.swap`).
    pub name: String,
    /// Bytes the guest sees.
    pub virtual_size: u64,
}
