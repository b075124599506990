//! The wire protocol between the controller (conductor, API) and compute agents.
//!
//! Everything an agent and the controller say to each other is one of the two enums here,
//! carried on the bus as a [`Message`] whose `method` is the variant name and whose
//! `args` are its fields plus the sender's contract version ([`crate::version`]).
//! Keeping the protocol in one typed place means an AMQP transport carries exactly the
//! same JSON, and a peer of an incompatible version is refused with a message that says
//! which side to upgrade rather than failing somewhere later.
//!
//! Agents never touch the database: they ask the conductor (topic [`CONDUCTOR_TOPIC`]) to
//! register them, record heartbeats and record the outcome of every guest operation; the
//! controller asks an agent (topic [`agent_topic`]) to run operations on its guests.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stratus_bus::{BusError, Message};

use crate::error::AgentError;
use crate::spec::{GuestSpec, ImageSpec, VolumeSpec};
use crate::version::{ContractError, Version, CONTRACT, UNVERSIONED, VERSION_KEY};
use crate::virt::{HostResources, IncomingDisk, IncomingPorts, InstanceInfo, Inventory, MigrationTarget, PowerState};

/// Topic the conductor consumes.
pub const CONDUCTOR_TOPIC: &str = "compute.conductor";

/// Topic the agent of `host` consumes.
pub fn agent_topic(host: &str) -> String {
    format!("compute.agent.{host}")
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

/// Which guest operation, without its arguments: what a result names and what the
/// controller's step tables refer to. Encoded as the same snake_case name as the
/// operation's `op` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestOpKind {
    /// [`GuestOp::Spawn`].
    Spawn,
    /// [`GuestOp::Destroy`].
    Destroy,
    /// [`GuestOp::PowerOff`].
    PowerOff,
    /// [`GuestOp::PowerOn`].
    PowerOn,
    /// [`GuestOp::Reboot`].
    Reboot,
    /// [`GuestOp::Pause`].
    Pause,
    /// [`GuestOp::Unpause`].
    Unpause,
    /// [`GuestOp::Suspend`].
    Suspend,
    /// [`GuestOp::Resume`].
    Resume,
    /// [`GuestOp::Rescue`].
    Rescue,
    /// [`GuestOp::Unrescue`].
    Unrescue,
    /// [`GuestOp::Snapshot`].
    Snapshot,
    /// [`GuestOp::Rebuild`].
    Rebuild,
    /// [`GuestOp::TriggerCrashDump`].
    TriggerCrashDump,
    /// [`GuestOp::MigrateDiskAndPowerOff`].
    MigrateDiskAndPowerOff,
    /// [`GuestOp::FinishMigration`].
    FinishMigration,
    /// [`GuestOp::ConfirmMigration`].
    ConfirmMigration,
    /// [`GuestOp::RevertMigrationDest`].
    RevertMigrationDest,
    /// [`GuestOp::FinishRevertMigration`].
    FinishRevertMigration,
    /// [`GuestOp::PreLiveMigration`].
    PreLiveMigration,
    /// [`GuestOp::LiveMigration`].
    LiveMigration,
    /// [`GuestOp::PostLiveMigration`].
    PostLiveMigration,
    /// [`GuestOp::EvacuateRebuild`].
    EvacuateRebuild,
    /// [`GuestOp::Shelve`].
    Shelve,
    /// [`GuestOp::ShelveOffload`].
    ShelveOffload,
    /// [`GuestOp::Unshelve`].
    Unshelve,
}

impl GuestOpKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [GuestOpKind] = &[
        GuestOpKind::Spawn,
        GuestOpKind::Destroy,
        GuestOpKind::PowerOff,
        GuestOpKind::PowerOn,
        GuestOpKind::Reboot,
        GuestOpKind::Pause,
        GuestOpKind::Unpause,
        GuestOpKind::Suspend,
        GuestOpKind::Resume,
        GuestOpKind::Rescue,
        GuestOpKind::Unrescue,
        GuestOpKind::Snapshot,
        GuestOpKind::Rebuild,
        GuestOpKind::TriggerCrashDump,
        GuestOpKind::MigrateDiskAndPowerOff,
        GuestOpKind::FinishMigration,
        GuestOpKind::ConfirmMigration,
        GuestOpKind::RevertMigrationDest,
        GuestOpKind::FinishRevertMigration,
        GuestOpKind::PreLiveMigration,
        GuestOpKind::LiveMigration,
        GuestOpKind::PostLiveMigration,
        GuestOpKind::EvacuateRebuild,
        GuestOpKind::Shelve,
        GuestOpKind::ShelveOffload,
        GuestOpKind::Unshelve,
    ];

    /// The operation's name on the wire and in logs.
    pub fn name(self) -> &'static str {
        match self {
            GuestOpKind::Spawn => "spawn",
            GuestOpKind::Destroy => "destroy",
            GuestOpKind::PowerOff => "power_off",
            GuestOpKind::PowerOn => "power_on",
            GuestOpKind::Reboot => "reboot",
            GuestOpKind::Pause => "pause",
            GuestOpKind::Unpause => "unpause",
            GuestOpKind::Suspend => "suspend",
            GuestOpKind::Resume => "resume",
            GuestOpKind::Rescue => "rescue",
            GuestOpKind::Unrescue => "unrescue",
            GuestOpKind::Snapshot => "snapshot",
            GuestOpKind::Rebuild => "rebuild",
            GuestOpKind::TriggerCrashDump => "trigger_crash_dump",
            GuestOpKind::MigrateDiskAndPowerOff => "migrate_disk_and_power_off",
            GuestOpKind::FinishMigration => "finish_migration",
            GuestOpKind::ConfirmMigration => "confirm_migration",
            GuestOpKind::RevertMigrationDest => "revert_migration_dest",
            GuestOpKind::FinishRevertMigration => "finish_revert_migration",
            GuestOpKind::PreLiveMigration => "pre_live_migration",
            GuestOpKind::LiveMigration => "live_migration",
            GuestOpKind::PostLiveMigration => "post_live_migration",
            GuestOpKind::EvacuateRebuild => "evacuate_rebuild",
            GuestOpKind::Shelve => "shelve",
            GuestOpKind::ShelveOffload => "shelve_offload",
            GuestOpKind::Unshelve => "unshelve",
        }
    }
}

impl std::fmt::Display for GuestOpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl GuestOp {
    /// Which operation this is.
    pub fn kind(&self) -> GuestOpKind {
        match self {
            GuestOp::Spawn => GuestOpKind::Spawn,
            GuestOp::Destroy => GuestOpKind::Destroy,
            GuestOp::PowerOff { .. } => GuestOpKind::PowerOff,
            GuestOp::PowerOn => GuestOpKind::PowerOn,
            GuestOp::Reboot { .. } => GuestOpKind::Reboot,
            GuestOp::Pause => GuestOpKind::Pause,
            GuestOp::Unpause => GuestOpKind::Unpause,
            GuestOp::Suspend => GuestOpKind::Suspend,
            GuestOp::Resume => GuestOpKind::Resume,
            GuestOp::Rescue { .. } => GuestOpKind::Rescue,
            GuestOp::Unrescue => GuestOpKind::Unrescue,
            GuestOp::Snapshot { .. } => GuestOpKind::Snapshot,
            GuestOp::Rebuild => GuestOpKind::Rebuild,
            GuestOp::TriggerCrashDump => GuestOpKind::TriggerCrashDump,
            GuestOp::MigrateDiskAndPowerOff { .. } => GuestOpKind::MigrateDiskAndPowerOff,
            GuestOp::FinishMigration { .. } => GuestOpKind::FinishMigration,
            GuestOp::ConfirmMigration => GuestOpKind::ConfirmMigration,
            GuestOp::RevertMigrationDest => GuestOpKind::RevertMigrationDest,
            GuestOp::FinishRevertMigration { .. } => GuestOpKind::FinishRevertMigration,
            GuestOp::PreLiveMigration { .. } => GuestOpKind::PreLiveMigration,
            GuestOp::LiveMigration { .. } => GuestOpKind::LiveMigration,
            GuestOp::PostLiveMigration => GuestOpKind::PostLiveMigration,
            GuestOp::EvacuateRebuild { .. } => GuestOpKind::EvacuateRebuild,
            GuestOp::Shelve { .. } => GuestOpKind::Shelve,
            GuestOp::ShelveOffload => GuestOpKind::ShelveOffload,
            GuestOp::Unshelve => GuestOpKind::Unshelve,
        }
    }

    /// Name used in logs and results.
    pub fn name(&self) -> &'static str {
        self.kind().name()
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
    /// Hot-plugs `volume` into the running guest `uuid` (call). A guest that is not
    /// running gets it at its next start (it is in every later [`GuestSpec`]).
    AttachVolume {
        /// Server uuid.
        uuid: String,
        /// The volume and its connection.
        volume: VolumeSpec,
    },
    /// Unplugs `volume` from the guest `uuid` (call): answers once the guest has
    /// released the device (QEMU's `DEVICE_DELETED`), and gives the volume's file back.
    DetachVolume {
        /// Server uuid.
        uuid: String,
        /// The volume and its connection.
        volume: VolumeSpec,
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
        /// Which operation ran.
        op: GuestOpKind,
        /// Why it failed (None: it succeeded). Text from a contract 1.0 agent.
        error: Option<AgentError>,
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

/// A decoded message and the contract version its sender speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    /// The sender's version ([`UNVERSIONED`] when the message carried none).
    pub version: Version,
    /// The request.
    pub body: T,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The sender speaks a contract this side does not accept.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// The message is not one this side knows (an unknown method or malformed arguments).
    #[error("cannot decode {method:?}: {reason}")]
    Malformed {
        /// The method named.
        method: String,
        /// What is wrong.
        reason: String,
    },
}

/// Encodes a tagged request enum as a bus message carrying [`CONTRACT`].
pub fn to_message<T: Serialize>(req: &T) -> Message {
    encode_as(req, Some(CONTRACT))
}

/// Encodes `req` as a sender speaking `version` would (None: a contract 1.0 sender, which
/// put no version on its messages). Tests use it to play an older peer.
pub fn encode_as<T: Serialize>(req: &T, version: Option<Version>) -> Message {
    let v = serde_json::to_value(req).unwrap_or(Value::Null);
    let method = v.get("method").and_then(Value::as_str).unwrap_or("").to_string();
    let mut args = v.get("args").cloned().unwrap_or(Value::Null);
    if let Some(version) = version {
        if args.is_null() {
            args = Value::Object(Default::default());
        }
        if let Some(o) = args.as_object_mut() {
            o.insert(VERSION_KEY.into(), Value::String(version.to_string()));
        }
    }
    Message { method, args }
}

/// Decodes a bus message into a tagged request enum, after checking that this side
/// ([`CONTRACT`]) accepts the sender's version.
pub fn decode<T: DeserializeOwned>(m: &Message) -> Result<Envelope<T>, DecodeError> {
    let malformed = |reason: String| DecodeError::Malformed { method: m.method.clone(), reason };
    let mut args = m.args.clone();
    let version = match args.as_object_mut().and_then(|o| o.remove(VERSION_KEY)) {
        Some(Value::String(s)) => s.parse::<Version>().map_err(malformed)?,
        Some(other) => return Err(malformed(format!("{VERSION_KEY} must be a \"major.minor\" string, not {other}"))),
        None => UNVERSIONED,
    };
    CONTRACT.check(version)?;
    let mut v = serde_json::json!({"method": m.method});
    let empty = args.as_object().is_some_and(|o| o.is_empty());
    if !args.is_null() && !empty {
        v["args"] = args;
    }
    let body = serde_json::from_value(v).map_err(|e| malformed(e.to_string()))?;
    Ok(Envelope { version, body })
}

/// [`decode`] without the version, the error as text (what a bus reply carries).
pub fn from_message<T: DeserializeOwned>(m: &Message) -> Result<T, String> {
    decode(m).map(|e| e.body).map_err(|e| e.to_string())
}

/// How an agent answers a failed call ([`AgentRequest`]s that are calls): the bus carries
/// a reply's error as text, so the typed [`AgentError`] travels as its JSON there.
pub fn reply_error(e: impl Into<AgentError>) -> String {
    let e: AgentError = e.into();
    serde_json::to_string(&e).unwrap_or_else(|_| e.to_string())
}

/// Why a call to an agent failed: what the caller decides from, never the text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The agent ran the request and it failed. (Displayed as the bus displays a remote
    /// error, so messages built from it read as before.)
    #[error("remote error: {0}")]
    Agent(AgentError),
    /// The request or its answer was lost: no agent, no answer in time, the agent went away.
    #[error(transparent)]
    Bus(BusError),
}

impl From<BusError> for CallError {
    /// Reads a reply's error: an [`AgentError`] as [`reply_error`] wrote it, or the text of
    /// a contract 1.0 agent (read once, by [`AgentError::from_legacy_text`]).
    fn from(e: BusError) -> Self {
        match e {
            BusError::Remote(text) => CallError::Agent(
                serde_json::from_str::<AgentError>(&text).unwrap_or_else(|_| AgentError::from_legacy_text(&text)),
            ),
            other => CallError::Bus(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::VirtError;

    #[test]
    fn messages_round_trip_with_their_version() {
        let r = AgentRequest::RunOp {
            request_id: "req-1".into(),
            spec: GuestSpec { uuid: "u".into(), ..Default::default() },
            op: GuestOp::Reboot { hard: true },
        };
        let m = to_message(&r);
        assert_eq!(m.method, "run_op");
        assert_eq!(m.args["op"]["op"], "reboot");
        assert_eq!(m.args["contract"], "1.1");
        let e = decode::<AgentRequest>(&m).unwrap();
        assert_eq!((e.version, e.body), (CONTRACT, r));
        let m = to_message(&AgentRequest::ListInstances);
        assert_eq!(m.args, serde_json::json!({"contract": "1.1"}));
        assert_eq!(from_message::<AgentRequest>(&m).unwrap(), AgentRequest::ListInstances);
        assert!(from_message::<AgentRequest>(&Message::new("nope", Value::Null)).is_err());
        for k in GuestOpKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.name()));
        }
    }

    #[test]
    fn a_contract_1_0_result_is_read_with_typed_errors() {
        // What an agent before versions sent: no version, the error as text.
        let args = serde_json::json!({"host": "b", "uuid": "u", "request_id": "r", "op": "spawn",
            "error": "Build aborted: Flavor's disk is too small", "power_state": "no_state"});
        let e = decode::<ConductorRequest>(&Message::new("op_result", args)).unwrap();
        assert_eq!(e.version, UNVERSIONED);
        match e.body {
            ConductorRequest::OpResult { op, error, .. } => {
                assert_eq!(op, GuestOpKind::Spawn);
                assert_eq!(error, Some(AgentError::BuildAborted { reason: "Flavor's disk is too small".into() }));
            }
            other => panic!("{other:?}"),
        }
        // The same result from a 1.1 agent.
        let r = ConductorRequest::OpResult {
            host: "b".into(),
            uuid: "u".into(),
            request_id: "r".into(),
            op: GuestOpKind::LiveMigration,
            error: Some(AgentError::Failed { source: VirtError::NotFound("u".into()) }),
            power_state: PowerState::Running,
            listen: None,
        };
        assert_eq!(from_message::<ConductorRequest>(&to_message(&r)).unwrap(), r);
    }

    #[test]
    fn peers_of_other_versions_are_refused_clearly() {
        for (v, ok) in [("1.0", true), ("1.1", true), ("1.2", false), ("2.0", false), ("0.9", false)] {
            let m = encode_as(&ConductorRequest::Heartbeat { host: "h".into() }, Some(v.parse().unwrap()));
            match decode::<ConductorRequest>(&m) {
                Ok(e) => assert!(ok, "{v} accepted: {e:?}"),
                Err(DecodeError::Contract(c)) => {
                    assert!(!ok, "{v} refused: {c}");
                    assert!(c.to_string().contains(&format!("compute contract {v} is not supported")), "{c}");
                }
                Err(other) => panic!("{other}"),
            }
        }
        let m = Message::new("heartbeat", serde_json::json!({"host": "h", "contract": 11}));
        assert!(matches!(decode::<ConductorRequest>(&m), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn call_errors_cross_the_bus_typed() {
        let unsupported = VirtError::Unsupported { driver: "fake".into(), op: "live migration abort".into() };
        for (sent, read) in [
            // A 1.1 agent: the typed error, as JSON.
            (reply_error(unsupported.clone()), AgentError::Failed { source: unsupported.clone() }),
            (reply_error(VirtError::Cancelled), AgentError::Cancelled),
            (reply_error(VirtError::Failed("{\"not\": json}".into())), AgentError::failed("{\"not\": json}")),
            // A 1.0 agent: the text.
            (unsupported.to_string(), AgentError::Failed { source: unsupported.clone() }),
            ("qemu died".to_string(), AgentError::failed("qemu died")),
        ] {
            let e = CallError::from(BusError::Remote(sent));
            assert_eq!(e, CallError::Agent(read.clone()));
            // What a person reads is what the bus used to show.
            assert_eq!(e.to_string(), BusError::Remote(read.to_string()).to_string());
        }
        let lost = BusError::NoConsumer("compute.agent.h".into());
        assert_eq!(CallError::from(lost.clone()), CallError::Bus(lost));
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
