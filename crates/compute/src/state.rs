//! The server state machine: `vm_state` (stable), `task_state` (what runs now),
//! `power_state` (what the hypervisor says), and the `status` the API derives from them.
//!
//! Each action declares the vm_states it starts from; the API checks it (409 otherwise)
//! and sets the action's task_state in the same UPDATE that checks the current state, so
//! two concurrent actions cannot both start. The conductor ends every task: success moves
//! to the action's target vm_state, failure to ERROR with a fault.

use crate::error::ComputeError;

/// vm_states.
pub mod vm {
    /// Running (or at least booted).
    pub const ACTIVE: &str = "active";
    /// Being built.
    pub const BUILDING: &str = "building";
    /// Paused.
    pub const PAUSED: &str = "paused";
    /// Suspended.
    pub const SUSPENDED: &str = "suspended";
    /// Stopped.
    pub const STOPPED: &str = "stopped";
    /// In rescue.
    pub const RESCUED: &str = "rescued";
    /// Resized, waiting for confirm/revert.
    pub const RESIZED: &str = "resized";
    /// Soft-deleted.
    pub const SOFT_DELETED: &str = "soft-delete";
    /// Deleted.
    pub const DELETED: &str = "deleted";
    /// Failed.
    pub const ERROR: &str = "error";
    /// Shelved.
    pub const SHELVED: &str = "shelved";
    /// Shelved and off its host.
    pub const SHELVED_OFFLOADED: &str = "shelved_offloaded";
}

/// task_states.
pub mod task {
    /// Looking for a host.
    pub const SCHEDULING: &str = "scheduling";
    /// Creating ports.
    pub const NETWORKING: &str = "networking";
    /// The hypervisor builds it.
    pub const SPAWNING: &str = "spawning";
    /// Soft reboot.
    pub const REBOOTING: &str = "rebooting";
    /// Hard reboot.
    pub const REBOOTING_HARD: &str = "rebooting_hard";
    /// Stop.
    pub const POWERING_OFF: &str = "powering-off";
    /// Start.
    pub const POWERING_ON: &str = "powering-on";
    /// Pause.
    pub const PAUSING: &str = "pausing";
    /// Unpause.
    pub const UNPAUSING: &str = "unpausing";
    /// Suspend.
    pub const SUSPENDING: &str = "suspending";
    /// Resume.
    pub const RESUMING: &str = "resuming";
    /// Rescue.
    pub const RESCUING: &str = "rescuing";
    /// Unrescue.
    pub const UNRESCUING: &str = "unrescuing";
    /// Snapshot.
    pub const IMAGE_SNAPSHOT: &str = "image_snapshot";
    /// Rebuild.
    pub const REBUILDING: &str = "rebuilding";
    /// Delete.
    pub const DELETING: &str = "deleting";
    /// Resize/cold migration: source allocation moved, destination being chosen.
    pub const RESIZE_PREP: &str = "resize_prep";
    /// Resize/cold migration: the source host hands over the disks.
    pub const RESIZE_MIGRATING: &str = "resize_migrating";
    /// Resize/cold migration: the destination host creates the guest.
    pub const RESIZE_FINISH: &str = "resize_finish";
    /// Resize revert.
    pub const RESIZE_REVERTING: &str = "resize_reverting";
    /// Live migration.
    pub const MIGRATING: &str = "migrating";
    /// Shelve (snapshot, then stop).
    pub const SHELVING: &str = "shelving";
    /// Shelve offload (guest removed from its host).
    pub const SHELVING_OFFLOADING: &str = "shelving_offloading";
    /// Unshelve.
    pub const UNSHELVING: &str = "unshelving";
}

/// The API `status` of a server.
pub fn status(vm_state: &str, task_state: Option<&str>) -> &'static str {
    let t = task_state.unwrap_or("");
    match vm_state {
        vm::ACTIVE => match t {
            "rebooting" | "reboot_pending" | "reboot_started" => "REBOOT",
            "rebooting_hard" | "reboot_pending_hard" | "reboot_started_hard" => "HARD_REBOOT",
            "updating_password" => "PASSWORD",
            "rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning" => "REBUILD",
            "migrating" => "MIGRATING",
            "resize_prep" | "resize_migrating" | "resize_migrated" | "resize_finish" => "RESIZE",
            _ => "ACTIVE",
        },
        vm::BUILDING => "BUILD",
        vm::STOPPED => match t {
            "resize_prep" | "resize_migrating" | "resize_migrated" | "resize_finish" => "RESIZE",
            "rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning" => "REBUILD",
            _ => "SHUTOFF",
        },
        vm::RESIZED => match t {
            "resize_reverting" => "REVERT_RESIZE",
            _ => "VERIFY_RESIZE",
        },
        vm::PAUSED => match t {
            "migrating" => "MIGRATING",
            _ => "PAUSED",
        },
        vm::SUSPENDED => "SUSPENDED",
        vm::RESCUED => "RESCUE",
        vm::ERROR => match t {
            "rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning" => "REBUILD",
            _ => "ERROR",
        },
        vm::DELETED => "DELETED",
        vm::SOFT_DELETED => "SOFT_DELETED",
        vm::SHELVED => "SHELVED",
        vm::SHELVED_OFFLOADED => "SHELVED_OFFLOADED",
        _ => "UNKNOWN",
    }
}

/// The vm_states whose servers have `status` `s` (for the `status` list filter).
pub fn vm_states_for_status(s: &str) -> Vec<&'static str> {
    let all = [
        vm::ACTIVE,
        vm::BUILDING,
        vm::PAUSED,
        vm::SUSPENDED,
        vm::STOPPED,
        vm::RESCUED,
        vm::RESIZED,
        vm::SOFT_DELETED,
        vm::DELETED,
        vm::ERROR,
        vm::SHELVED,
        vm::SHELVED_OFFLOADED,
    ];
    all.into_iter().filter(|v| status(v, None).eq_ignore_ascii_case(s)).collect()
}

/// A server action with its preconditions and the task_state it runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Name used in 409 messages and instance actions (`stop`, `reboot`).
    pub action: &'static str,
    /// vm_states it may start from.
    pub from: &'static [&'static str],
    /// task_state while it runs (None: synchronous, no task).
    pub task: Option<&'static str>,
    /// vm_state on success.
    pub to: Option<&'static str>,
}

use vm::*;

/// `os-stop`.
pub const STOP: Transition =
    Transition { action: "stop", from: &[ACTIVE, ERROR], task: Some(task::POWERING_OFF), to: Some(STOPPED) };
/// `os-start`.
pub const START: Transition =
    Transition { action: "start", from: &[STOPPED], task: Some(task::POWERING_ON), to: Some(ACTIVE) };
/// `reboot` SOFT.
pub const REBOOT_SOFT: Transition =
    Transition { action: "reboot", from: &[ACTIVE], task: Some(task::REBOOTING), to: Some(ACTIVE) };
/// `reboot` HARD.
pub const REBOOT_HARD: Transition = Transition {
    action: "reboot",
    from: &[ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR],
    task: Some(task::REBOOTING_HARD),
    to: Some(ACTIVE),
};
/// `pause`.
pub const PAUSE: Transition =
    Transition { action: "pause", from: &[ACTIVE], task: Some(task::PAUSING), to: Some(PAUSED) };
/// `unpause`.
pub const UNPAUSE: Transition =
    Transition { action: "unpause", from: &[PAUSED], task: Some(task::UNPAUSING), to: Some(ACTIVE) };
/// `suspend`.
pub const SUSPEND: Transition =
    Transition { action: "suspend", from: &[ACTIVE], task: Some(task::SUSPENDING), to: Some(SUSPENDED) };
/// `resume`.
pub const RESUME: Transition =
    Transition { action: "resume", from: &[SUSPENDED], task: Some(task::RESUMING), to: Some(ACTIVE) };
/// `rescue`.
pub const RESCUE: Transition =
    Transition { action: "rescue", from: &[ACTIVE, STOPPED, ERROR], task: Some(task::RESCUING), to: Some(RESCUED) };
/// `unrescue`.
pub const UNRESCUE: Transition =
    Transition { action: "unrescue", from: &[RESCUED], task: Some(task::UNRESCUING), to: Some(ACTIVE) };
/// `createImage`.
pub const SNAPSHOT: Transition = Transition {
    action: "createImage",
    from: &[ACTIVE, STOPPED, PAUSED, SUSPENDED],
    task: Some(task::IMAGE_SNAPSHOT),
    to: None,
};
/// `rebuild`.
pub const REBUILD: Transition =
    Transition { action: "rebuild", from: &[ACTIVE, STOPPED, ERROR], task: Some(task::REBUILDING), to: Some(ACTIVE) };
/// `resize`.
pub const RESIZE: Transition =
    Transition { action: "resize", from: &[ACTIVE, STOPPED], task: Some(task::RESIZE_PREP), to: Some(RESIZED) };
/// `migrate` (cold).
pub const MIGRATE: Transition =
    Transition { action: "migrate", from: &[ACTIVE, STOPPED], task: Some(task::RESIZE_PREP), to: Some(RESIZED) };
/// `confirmResize` (no task: the migration record's status guards it).
pub const CONFIRM_RESIZE: Transition = Transition { action: "confirmResize", from: &[RESIZED], task: None, to: None };
/// `revertResize`.
pub const REVERT_RESIZE: Transition =
    Transition { action: "revertResize", from: &[RESIZED], task: Some(task::RESIZE_REVERTING), to: None };
/// `os-migrateLive`.
pub const LIVE_MIGRATE: Transition =
    Transition { action: "live-migration", from: &[ACTIVE, PAUSED], task: Some(task::MIGRATING), to: None };
/// `evacuate`.
pub const EVACUATE: Transition =
    Transition { action: "evacuate", from: &[ACTIVE, STOPPED, ERROR], task: Some(task::REBUILDING), to: None };
/// `shelve`.
pub const SHELVE: Transition = Transition {
    action: "shelve",
    from: &[ACTIVE, STOPPED, PAUSED, SUSPENDED],
    task: Some(task::SHELVING),
    to: Some(SHELVED),
};
/// `shelveOffload`.
pub const SHELVE_OFFLOAD: Transition = Transition {
    action: "shelveOffload",
    from: &[SHELVED],
    task: Some(task::SHELVING_OFFLOADING),
    to: Some(SHELVED_OFFLOADED),
};
/// `unshelve`.
pub const UNSHELVE: Transition = Transition {
    action: "unshelve",
    from: &[SHELVED, SHELVED_OFFLOADED],
    task: Some(task::UNSHELVING),
    to: Some(ACTIVE),
};
/// `trigger_crash_dump`.
pub const CRASH_DUMP: Transition = Transition { action: "trigger_crash_dump", from: &[ACTIVE], task: None, to: None };

impl Transition {
    /// Checks that a server in (`vm_state`, `task_state`) may start this action.
    pub fn check(&self, uuid: &str, vm_state: &str, task_state: Option<&str>) -> Result<(), ComputeError> {
        if let Some(t) = task_state {
            return Err(ComputeError::InvalidState {
                action: self.action.into(),
                uuid: uuid.into(),
                attr: "task_state",
                state: t.into(),
            });
        }
        if !self.from.contains(&vm_state) {
            return Err(ComputeError::InvalidState {
                action: self.action.into(),
                uuid: uuid.into(),
                attr: "vm_state",
                state: vm_state.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_derived_like_nova() {
        assert_eq!(status(ACTIVE, None), "ACTIVE");
        assert_eq!(status(ACTIVE, Some("rebooting_hard")), "HARD_REBOOT");
        assert_eq!(status(ACTIVE, Some("powering-off")), "ACTIVE");
        assert_eq!(status(BUILDING, Some("scheduling")), "BUILD");
        assert_eq!(status(STOPPED, None), "SHUTOFF");
        assert_eq!(status(RESIZED, Some("resize_reverting")), "REVERT_RESIZE");
        assert_eq!(status(ERROR, Some("rebuilding")), "REBUILD");
        assert_eq!(vm_states_for_status("SHUTOFF"), vec![STOPPED]);
        assert_eq!(vm_states_for_status("active"), vec![ACTIVE]);
    }

    #[test]
    fn transitions_guard_states() {
        assert!(STOP.check("u", ACTIVE, None).is_ok());
        let e = STOP.check("u", STOPPED, None).unwrap_err();
        assert_eq!(e.to_string(), "Cannot 'stop' instance u while it is in vm_state stopped");
        let e = START.check("u", STOPPED, Some("powering-on")).unwrap_err();
        assert!(e.to_string().contains("task_state powering-on"));
        assert!(REBOOT_SOFT.check("u", STOPPED, None).is_err());
        assert!(REBOOT_HARD.check("u", STOPPED, None).is_ok());
        assert!(PAUSE.check("u", PAUSED, None).is_err());
        assert!(UNRESCUE.check("u", RESCUED, None).is_ok());
    }
}
