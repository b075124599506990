//! The virt driver interface: everything the agent asks of a hypervisor.
//!
//! One trait, [`VirtDriver`], with every guest operation Nova's drivers implement. The
//! agent owns sequencing, reporting and reconciliation; a driver only changes and
//! reports the real state of guests. `fake` keeps guests in memory (CI, scale tests,
//! benchmarks); `qemu` (crate `stratus-qemu`) runs real QEMU processes behind the same
//! trait, so nothing on the API side changes when it is selected.

pub mod fake;
pub mod qemu;

use std::time::Duration;

use async_trait::async_trait;
pub use stratus_compute_proto::error::VirtError;
use stratus_compute_proto::spec::{GuestSpec, ImageSpec, VolumeSpec};
pub use stratus_compute_proto::virt::{
    HostResources, IncomingDisk, IncomingPorts, InstanceInfo, MigrationTarget, PowerState, VncConsole,
};

/// The other end of a cold migration between machines: the destination's agent, which
/// the source reaches over the bus while it holds the guest stopped.
#[async_trait]
pub trait DiskPeer: Send + Sync {
    /// Creates the destination's `<uuid>_incoming` disks and serves them writable over
    /// NBD; answers the TCP port (exports are named like the disks).
    async fn prepare_incoming_disks(&self, uuid: &str, disks: &[IncomingDisk]) -> Result<u16, String>;
    /// Stops serving them; `keep = false` also removes them (the move failed).
    async fn end_incoming_disks(&self, uuid: &str, keep: bool) -> Result<(), String>;
}

/// A hypervisor. Every method is idempotent where the name allows (destroying a guest
/// that is gone succeeds; spawning one that exists with the same uuid succeeds), because
/// after a crash the agent replays the operation it was running.
#[async_trait]
pub trait VirtDriver: Send + Sync + 'static {
    /// Driver name (`fake`, `qemu`).
    fn name(&self) -> &'static str;
    /// `hypervisor_type` reported in `os-hypervisors` (`fake`, `QEMU`).
    fn hypervisor_type(&self) -> String;
    /// Hypervisor version as an integer (`7002000` for 7.2.0).
    fn hypervisor_version(&self) -> i64 {
        1
    }
    /// Called once before anything else (adopt running guests, clean temp files).
    async fn init_host(&self, _host: &str) -> Result<(), VirtError> {
        Ok(())
    }
    /// Host resources for placement inventories.
    async fn host_resources(&self) -> Result<HostResources, VirtError>;
    /// Every guest on this host.
    async fn list_instances(&self) -> Result<Vec<InstanceInfo>, VirtError>;
    /// One guest.
    async fn get_info(&self, uuid: &str) -> Result<InstanceInfo, VirtError>;
    /// Creates disks and boots the guest.
    async fn spawn(&self, spec: &GuestSpec) -> Result<(), VirtError>;
    /// Stops the guest and removes its local files.
    async fn destroy(&self, uuid: &str) -> Result<(), VirtError>;
    /// Clean shutdown within `timeout`, then hard stop.
    async fn power_off(&self, uuid: &str, timeout: Duration) -> Result<(), VirtError>;
    /// Starts a stopped guest.
    async fn power_on(&self, spec: &GuestSpec) -> Result<(), VirtError>;
    /// Reboots (ACPI when `hard` is false, reset otherwise).
    async fn reboot(&self, spec: &GuestSpec, hard: bool) -> Result<(), VirtError>;
    /// Freezes vCPUs.
    async fn pause(&self, uuid: &str) -> Result<(), VirtError>;
    /// Thaws vCPUs.
    async fn unpause(&self, uuid: &str) -> Result<(), VirtError>;
    /// Saves memory to disk and stops.
    async fn suspend(&self, uuid: &str) -> Result<(), VirtError>;
    /// Restores a suspended guest.
    async fn resume(&self, spec: &GuestSpec) -> Result<(), VirtError>;
    /// Boots `rescue_image` with the guest's disk attached second.
    async fn rescue(&self, spec: &GuestSpec, rescue_image: Option<&ImageSpec>) -> Result<(), VirtError>;
    /// Boots the guest's own disk again.
    async fn unrescue(&self, spec: &GuestSpec) -> Result<(), VirtError>;
    /// Copies the root disk into image `image_id` in the image service.
    async fn snapshot(&self, uuid: &str, image_id: &str) -> Result<(), VirtError>;
    /// Re-creates the root disk from `spec.image`, keeping identity and ports.
    async fn rebuild(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        self.destroy(&spec.uuid).await?;
        self.spawn(spec).await
    }
    /// Sends an NMI.
    async fn trigger_crash_dump(&self, uuid: &str) -> Result<(), VirtError>;
    /// Serial console log.
    async fn console_output(&self, uuid: &str) -> Result<String, VirtError>;
    /// VNC endpoint.
    async fn vnc_console(&self, uuid: &str) -> Result<VncConsole, VirtError>;
    /// Cold migration/resize, source side: stop the guest and hand its disks to `target`.
    /// `peer` reaches the destination's agent when the disks must cross machines.
    async fn migrate_disk_and_power_off(
        &self,
        spec: &GuestSpec,
        target: &MigrationTarget,
        peer: &dyn DiskPeer,
    ) -> Result<(), VirtError>;
    /// Cold migration/resize, destination side: create the guest from the migrated disks
    /// (resized to `spec.flavor`), powered on when `power_on`.
    async fn finish_migration(&self, spec: &GuestSpec, power_on: bool) -> Result<(), VirtError>;
    /// Cold migration from another machine, destination side: create empty disks in
    /// `<uuid>_incoming` and serve them over NBD for the source to fill ([`DiskPeer`]).
    async fn prepare_incoming_disks(&self, _uuid: &str, _disks: &[IncomingDisk]) -> Result<u16, VirtError> {
        Err(VirtError::Unsupported { driver: self.name().into(), op: "incoming disk copies".into() })
    }
    /// Reconciliation: removes what moves to this host left behind (staged disks, their
    /// NBD server) for servers not in `expected`, i.e. no move to this host runs for them
    /// any more. Answers the servers whose leftovers went.
    async fn sweep_incoming(&self, _expected: &std::collections::HashSet<String>) -> Vec<String> {
        Vec::new()
    }
    /// Stop serving the incoming disks; remove them unless `keep`.
    async fn end_incoming_disks(&self, _uuid: &str, _keep: bool) -> Result<(), VirtError> {
        Err(VirtError::Unsupported { driver: self.name().into(), op: "incoming disk copies".into() })
    }
    /// Resize confirmed: remove the source copy.
    async fn confirm_migration(&self, uuid: &str) -> Result<(), VirtError>;
    /// Resize reverted: bring the source copy back.
    async fn finish_revert_migration(&self, spec: &GuestSpec, power_on: bool) -> Result<(), VirtError>;
    /// Live migration, destination side: prepare to receive the guest from host `source`.
    /// Answers the ports it listens on when the source must reach it over TCP (None:
    /// no ports, e.g. unix sockets between agents of one process).
    async fn pre_live_migration(&self, spec: &GuestSpec, source: &str) -> Result<Option<IncomingPorts>, VirtError>;
    /// Live migration, source side: move the running guest to `target`.
    async fn live_migration(&self, uuid: &str, target: &MigrationTarget) -> Result<(), VirtError>;
    /// Live migration, destination side: the guest arrived.
    async fn post_live_migration_at_destination(&self, spec: &GuestSpec) -> Result<(), VirtError>;
    /// Live migration, source side, while [`VirtDriver::live_migration`] runs: stop it
    /// (the guest stays here and that call fails with [`VirtError::Cancelled`]).
    async fn live_migration_abort(&self, _uuid: &str) -> Result<(), VirtError> {
        Err(VirtError::Unsupported { driver: self.name().into(), op: "live migration abort".into() })
    }
    /// Live migration, source side: make a running migration converge now, at the
    /// cost of a longer pause.
    async fn live_migration_force_complete(&self, _uuid: &str) -> Result<(), VirtError> {
        Err(VirtError::Unsupported { driver: self.name().into(), op: "live migration force complete".into() })
    }
    /// Hot-plugs a volume into a running guest; a guest that is not running gets it at
    /// its next start (the volume is in its spec from then on).
    async fn attach_volume(&self, _uuid: &str, _volume: &VolumeSpec) -> Result<(), VirtError> {
        Err(VirtError::Unsupported { driver: self.name().into(), op: "volume attach".into() })
    }
    /// Unplugs a volume, waiting for the guest to release it, and gives its file back.
    async fn detach_volume(&self, _uuid: &str, _volume: &VolumeSpec) -> Result<(), VirtError> {
        Err(VirtError::Unsupported { driver: self.name().into(), op: "volume detach".into() })
    }
    /// Gives back what attaching `volumes` lent the guest (file ownership) after the guest
    /// is gone (idempotent; the server delete path).
    async fn release_volumes(&self, _volumes: &[VolumeSpec]) {}
}
