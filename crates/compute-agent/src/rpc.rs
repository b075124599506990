//! The wire protocol between the controller (conductor, API) and compute agents.
//!
//! Everything an agent and the controller say to each other is one of the enums here,
//! carried on the bus as a [`Message`] whose `method` is the variant name and whose
//! `args` are its fields. Keeping the protocol in one typed place means an AMQP transport
//! carries exactly the same JSON, and a newer agent fails loudly (unknown method) rather
//! than silently on a protocol mismatch.
//!
//! Agents never touch the database: they ask the conductor (topic [`CONDUCTOR_TOPIC`]) to
//! register them, record heartbeats and record the outcome of every guest operation; the
//! controller asks an agent (topic [`agent_topic`]) to run operations on its guests.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stratus_bus::Message;

use crate::virt::{HostResources, IncomingDisk, IncomingPorts, InstanceInfo, MigrationTarget, PowerState};

/// Topic the conductor consumes.
pub const CONDUCTOR_TOPIC: &str = "compute.conductor";

/// Topic the agent of `host` consumes.
pub fn agent_topic(host: &str) -> String {
    format!("compute.agent.{host}")
}

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

/// A guest operation the controller asks an agent to perform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuestOp {
    /// Create and boot (idempotent: a guest that exists is left as is).
    Spawn,
    /// Destroy the guest and its local disks (idempotent).
    Destroy,
    /// Stop (clean shutdown within `timeout_secs`, then hard).
    PowerOff {
        /// Seconds for a clean shutdown.
        timeout_secs: u64,
    },
    /// Start a stopped guest.
    PowerOn,
    /// Reboot.
    Reboot {
        /// Reset instead of an ACPI reboot.
        hard: bool,
    },
    /// Freeze vCPUs.
    Pause,
    /// Thaw vCPUs.
    Unpause,
    /// Save memory to disk and stop.
    Suspend,
    /// Restore from a suspend.
    Resume,
    /// Boot a rescue image with the original disk attached.
    Rescue {
        /// Rescue image (None: the guest's own image).
        image: Option<ImageSpec>,
        /// Admin password for the rescue system.
        admin_pass: Option<String>,
    },
    /// Back to the original disk.
    Unrescue,
    /// Copy the root disk into the image `image_id` (already created, queued).
    Snapshot {
        /// Target image.
        image_id: String,
    },
    /// Rebuild from a (possibly different) image, same identity.
    Rebuild,
    /// Force a crash dump (NMI).
    TriggerCrashDump,
    /// Cold migration/resize, source side: stop and hand the disks to `target`.
    MigrateDiskAndPowerOff {
        /// Destination.
        target: MigrationTarget,
    },
    /// Cold migration/resize, destination side: create the guest from the moved disks
    /// with `spec.flavor`.
    FinishMigration {
        /// Start it (it was running before the move).
        power_on: bool,
    },
    /// Resize confirmed, source side: drop the source copy.
    ConfirmMigration,
    /// Resize reverted, destination side: drop the guest that was moved here.
    RevertMigrationDest,
    /// Resize reverted, source side: bring the source copy back.
    FinishRevertMigration {
        /// Start it.
        power_on: bool,
    },
    /// Live migration, destination side: prepare to receive the guest.
    PreLiveMigration {
        /// The host the guest comes from.
        #[serde(default)]
        source: String,
    },
    /// Live migration, source side: move the running guest to `target`.
    LiveMigration {
        /// Destination.
        target: MigrationTarget,
    },
    /// Live migration, destination side: the guest has arrived.
    PostLiveMigration,
    /// Evacuation: re-create on this host a guest whose host died.
    EvacuateRebuild {
        /// Leave it running.
        power_on: bool,
    },
    /// Shelve: snapshot into `image_id`, then power off.
    Shelve {
        /// Target image.
        image_id: String,
    },
    /// Shelve offload: remove the guest from this host (the server lives on).
    ShelveOffload,
    /// Unshelve: start the shelved guest where it is, or re-create it from `spec.image`
    /// (the shelved snapshot) when it was offloaded.
    Unshelve,
}

impl GuestOp {
    /// Name used in logs and results.
    pub fn name(&self) -> &'static str {
        match self {
            GuestOp::Spawn => "spawn",
            GuestOp::Destroy => "destroy",
            GuestOp::PowerOff { .. } => "power_off",
            GuestOp::PowerOn => "power_on",
            GuestOp::Reboot { .. } => "reboot",
            GuestOp::Pause => "pause",
            GuestOp::Unpause => "unpause",
            GuestOp::Suspend => "suspend",
            GuestOp::Resume => "resume",
            GuestOp::Rescue { .. } => "rescue",
            GuestOp::Unrescue => "unrescue",
            GuestOp::Snapshot { .. } => "snapshot",
            GuestOp::Rebuild => "rebuild",
            GuestOp::TriggerCrashDump => "trigger_crash_dump",
            GuestOp::MigrateDiskAndPowerOff { .. } => "migrate_disk_and_power_off",
            GuestOp::FinishMigration { .. } => "finish_migration",
            GuestOp::ConfirmMigration => "confirm_migration",
            GuestOp::RevertMigrationDest => "revert_migration_dest",
            GuestOp::FinishRevertMigration { .. } => "finish_revert_migration",
            GuestOp::PreLiveMigration { .. } => "pre_live_migration",
            GuestOp::LiveMigration { .. } => "live_migration",
            GuestOp::PostLiveMigration => "post_live_migration",
            GuestOp::EvacuateRebuild { .. } => "evacuate_rebuild",
            GuestOp::Shelve { .. } => "shelve",
            GuestOp::ShelveOffload => "shelve_offload",
            GuestOp::Unshelve => "unshelve",
        }
    }
}

/// Requests the controller sends to an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // Wire messages: built once, serialized at once.
pub enum AgentRequest {
    /// Run `op` on the guest `spec.uuid` (cast; the outcome comes back as
    /// [`ConductorRequest::OpResult`]).
    RunOp {
        /// Operation id (instance action request id) echoed in the result.
        request_id: String,
        /// The guest.
        spec: GuestSpec,
        /// What to do.
        op: GuestOp,
    },
    /// State of one guest (call).
    GetInfo {
        /// Server uuid.
        uuid: String,
    },
    /// Every guest the driver knows (call).
    ListInstances,
    /// Last `length` lines of the serial console (call).
    ConsoleOutput {
        /// Server uuid.
        uuid: String,
        /// Lines (None: all).
        length: Option<usize>,
    },
    /// Where the guest's VNC server listens (call).
    VncConsole {
        /// Server uuid.
        uuid: String,
    },
    /// Run a reconciliation pass now (cast; tests and recovery use it).
    Reconcile,
    /// Abort or force-complete the live migration of `uuid` that this (source) host runs
    /// (call; answers at once, the migration step reports the outcome).
    LiveMigrationControl {
        /// Server uuid.
        uuid: String,
        /// What to do.
        action: MigrationAction,
    },
    /// Cold migration from another machine (call, from the source's agent): create
    /// the empty disks and serve them over NBD; answers the port.
    PrepareIncomingDisks {
        /// Server uuid.
        uuid: String,
        /// The disks to create.
        disks: Vec<IncomingDisk>,
    },
    /// The source's copy is over (call): stop serving, and drop the disks unless `keep`.
    EndIncomingDisks {
        /// Server uuid.
        uuid: String,
        /// The copy succeeded.
        keep: bool,
    },
}

/// What [`AgentRequest::LiveMigrationControl`] asks of a running live migration.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MigrationAction {
    /// Stop it; the guest stays on the source.
    Abort,
    /// Converge now, at the cost of a longer pause.
    ForceComplete,
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

/// What the controller believes about a guest on a host (for reconciliation).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExpectedGuest {
    /// Server uuid.
    pub uuid: String,
    /// vm_state.
    pub vm_state: String,
    /// task_state, if an operation runs.
    pub task_state: Option<String>,
    /// power_state recorded.
    pub power_state: i64,
}

/// Requests agents send to the conductor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum ConductorRequest {
    /// Register (or re-register after a restart) this host: its service record, its
    /// compute node and its resource provider with inventories (call).
    RegisterHost {
        /// Host name.
        host: String,
        /// Driver's hypervisor type (`fake`, `QEMU`).
        hypervisor_type: String,
        /// Hypervisor version.
        hypervisor_version: i64,
        /// Node name (= host for one node per host).
        hypervisor_hostname: String,
        /// Address other hosts and consoles reach it at.
        host_ip: String,
        /// Raw host resources.
        resources: HostResources,
        /// Inventories to publish in placement.
        inventories: BTreeMap<String, Inventory>,
    },
    /// I am alive (cast).
    Heartbeat {
        /// Host name.
        host: String,
    },
    /// The outcome of a [`GuestOp`] (call, retried by the agent until acknowledged).
    OpResult {
        /// Host that ran it.
        host: String,
        /// Server uuid.
        uuid: String,
        /// Operation id from the request.
        request_id: String,
        /// [`GuestOp::name`].
        op: String,
        /// Error message on failure.
        error: Option<String>,
        /// Power state after the operation.
        power_state: PowerState,
        /// `pre_live_migration`: the ports the destination listens on (absent from
        /// other operations and from agents that predate it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen: Option<IncomingPorts>,
    },
    /// Guests the controller expects on this host (call; reply: `Vec<ExpectedGuest>`).
    HostInstances {
        /// Host name.
        host: String,
    },
    /// Power states observed by the driver (cast).
    SyncPowerStates {
        /// Host name.
        host: String,
        /// What the driver sees.
        observed: Vec<InstanceInfo>,
    },
}

/// Encodes a tagged request enum as a bus message.
pub fn to_message<T: Serialize>(req: &T) -> Message {
    let v = serde_json::to_value(req).unwrap_or(Value::Null);
    let method = v.get("method").and_then(Value::as_str).unwrap_or("").to_string();
    let args = v.get("args").cloned().unwrap_or(Value::Null);
    Message { method, args }
}

/// Decodes a bus message into a tagged request enum.
pub fn from_message<T: DeserializeOwned>(m: &Message) -> Result<T, String> {
    let mut v = serde_json::json!({"method": m.method});
    if !m.args.is_null() {
        v["args"] = m.args.clone();
    }
    serde_json::from_value(v).map_err(|e| format!("cannot decode {:?}: {e}", m.method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let r = AgentRequest::RunOp {
            request_id: "req-1".into(),
            spec: GuestSpec { uuid: "u".into(), ..Default::default() },
            op: GuestOp::Reboot { hard: true },
        };
        let m = to_message(&r);
        assert_eq!(m.method, "run_op");
        assert_eq!(m.args["op"]["op"], "reboot");
        assert_eq!(from_message::<AgentRequest>(&m).unwrap(), r);
        let m = to_message(&AgentRequest::ListInstances);
        assert_eq!(m.method, "list_instances");
        assert_eq!(from_message::<AgentRequest>(&m).unwrap(), AgentRequest::ListInstances);
        assert!(from_message::<AgentRequest>(&Message::new("nope", Value::Null)).is_err());
    }

    #[test]
    fn migration_ports_are_optional_on_the_wire() {
        // An agent or controller that predates the ports sends messages without them.
        let old = serde_json::json!({"host": "b", "host_ip": "10.0.0.2", "block_migration": true});
        let t: MigrationTarget = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(t.listen, None);
        assert_eq!(serde_json::to_value(&t).unwrap(), old, "no new key when there are no ports");
        let t = MigrationTarget { listen: Some(IncomingPorts { port: 49154, nbd_port: 49155 }), ..t };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["listen"], serde_json::json!({"port": 49154, "nbd_port": 49155}));
        let args = serde_json::json!({"host": "b", "uuid": "u", "request_id": "r", "op": "pre_live_migration",
            "error": null, "power_state": "paused"});
        let r: ConductorRequest = from_message(&Message::new("op_result", args)).unwrap();
        assert!(matches!(r, ConductorRequest::OpResult { listen: None, .. }));
    }
}
