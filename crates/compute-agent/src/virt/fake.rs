//! The `fake` driver: guests in memory, with the state transitions of a real hypervisor.
//!
//! Used by CI, scale tests and benchmarks. It refuses what a real hypervisor refuses
//! (pausing a stopped guest), can be slowed down (`op_delay`) to widen race windows, and
//! can be told to fail the next N calls of an operation, so tests exercise the error paths
//! (ERROR with a fault, reschedules) without a real hypervisor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{
    DiskPeer, HostResources, IncomingPorts, InstanceInfo, MigrationTarget, PowerState, VirtDriver, VirtError,
    VncConsole,
};
use stratus_compute_proto::spec::{GuestSpec, ImageSpec, VolumeSpec};

/// `[compute.fake]` settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeDriverConfig {
    /// Milliseconds every operation takes (default 0).
    pub op_delay_ms: u64,
    /// Report these resources instead of the real host's (default: the real host).
    pub vcpus: Option<i64>,
    /// Memory in MiB to report (default: the real host's).
    pub memory_mb: Option<i64>,
    /// Disk in GiB to report (default: the real host's).
    pub local_gb: Option<i64>,
}

#[derive(Debug, Clone)]
struct Guest {
    power: PowerState,
    rescued: bool,
    console: Vec<String>,
    /// Volumes plugged in, by id.
    volumes: Vec<String>,
}

#[derive(Default)]
struct State {
    guests: HashMap<String, Guest>,
    failures: HashMap<String, u32>,
    /// Every `live_migration` target, by server.
    targets: HashMap<String, Vec<MigrationTarget>>,
    /// The VNC endpoint every guest reports, once a test has set one.
    vnc: Option<VncConsole>,
}

/// The ports a fake destination answers from `pre_live_migration` (as a real one
/// listening over TCP would), so the controller's hand-over to the source can be checked.
pub const INCOMING_PORTS: IncomingPorts = IncomingPorts { port: 49154, nbd_port: 49155 };

/// The in-memory driver. Clones share the same guests.
#[derive(Clone, Default)]
pub struct FakeDriver {
    cfg: FakeDriverConfig,
    state: Arc<Mutex<State>>,
}

impl FakeDriver {
    /// A driver with `cfg`.
    pub fn new(cfg: FakeDriverConfig) -> Self {
        FakeDriver { cfg, state: Arc::default() }
    }

    /// Makes the next `times` calls of `op` (`spawn`, `power_off`, ...) fail.
    pub fn fail_next(&self, op: &str, times: u32) {
        self.state.lock().failures.insert(op.to_string(), times);
    }

    /// Makes every guest report `endpoint` as its VNC console (a server the test runs),
    /// so the console proxy can be exercised without a real hypervisor. Until then, and
    /// with None, guests have no console (the API answers 409).
    pub fn set_vnc_endpoint(&self, endpoint: Option<VncConsole>) {
        self.state.lock().vnc = endpoint;
    }

    /// Simulates a guest dying or being stopped behind the controller's back.
    pub fn set_power_state(&self, uuid: &str, p: PowerState) {
        if let Some(g) = self.state.lock().guests.get_mut(uuid) {
            g.power = p;
        }
    }

    /// Adds a guest no server knows about (reconciliation tests).
    pub fn add_orphan(&self, uuid: &str) {
        self.state.lock().guests.insert(
            uuid.to_string(),
            Guest { power: PowerState::Running, rescued: false, console: vec![], volumes: vec![] },
        );
    }

    /// Forgets a guest as if its hypervisor lost it (vanished-guest tests).
    pub fn lose_guest(&self, uuid: &str) {
        self.state.lock().guests.remove(uuid);
    }

    /// The targets `live_migration` of `uuid` was called with on this host, in order.
    pub fn live_migration_targets(&self, uuid: &str) -> Vec<MigrationTarget> {
        self.state.lock().targets.get(uuid).cloned().unwrap_or_default()
    }

    /// The volumes plugged into guest `uuid` (None: no such guest).
    pub fn volumes_of(&self, uuid: &str) -> Option<Vec<String>> {
        self.state.lock().guests.get(uuid).map(|g| g.volumes.clone())
    }

    /// Number of guests.
    pub fn guest_count(&self) -> usize {
        self.state.lock().guests.len()
    }

    async fn step(&self, op: &str) -> Result<(), VirtError> {
        if self.cfg.op_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.cfg.op_delay_ms)).await;
        }
        let mut st = self.state.lock();
        if let Some(n) = st.failures.get_mut(op) {
            if *n > 0 {
                *n -= 1;
                return Err(VirtError::Failed(format!("fake driver: injected failure of {op}")));
            }
        }
        Ok(())
    }

    /// Applies `f` to a guest whose power state is one of `from`, under the lock.
    fn transition(
        &self,
        uuid: &str,
        op: &str,
        from: &[PowerState],
        f: impl FnOnce(&mut Guest),
    ) -> Result<(), VirtError> {
        let mut st = self.state.lock();
        let g = st.guests.get_mut(uuid).ok_or_else(|| VirtError::NotFound(uuid.to_string()))?;
        if !from.contains(&g.power) {
            return Err(VirtError::InvalidState { uuid: uuid.to_string(), state: g.power, op: op.to_string() });
        }
        f(g);
        g.console.push(format!("[fake] {op} -> {:?}", g.power));
        Ok(())
    }
}

fn real_host_resources() -> HostResources {
    let vcpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<i64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(1024);
    let local_gb = rustix::fs::statvfs("/")
        .map(|s| (s.f_blocks.saturating_mul(s.f_frsize) / (1024 * 1024 * 1024)) as i64)
        .unwrap_or(10);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    HostResources { vcpus, memory_mb, local_gb, cpu_model }
}

#[async_trait]
impl VirtDriver for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn hypervisor_type(&self) -> String {
        "fake".into()
    }

    async fn host_resources(&self) -> Result<HostResources, VirtError> {
        let mut r = tokio::task::spawn_blocking(real_host_resources).await.unwrap_or_default();
        if let Some(v) = self.cfg.vcpus {
            r.vcpus = v;
        }
        if let Some(v) = self.cfg.memory_mb {
            r.memory_mb = v;
        }
        if let Some(v) = self.cfg.local_gb {
            r.local_gb = v;
        }
        Ok(r)
    }

    async fn list_instances(&self) -> Result<Vec<InstanceInfo>, VirtError> {
        let st = self.state.lock();
        let mut v: Vec<_> = st
            .guests
            .iter()
            .map(|(u, g)| InstanceInfo { uuid: u.clone(), power_state: g.power, rescued: g.rescued })
            .collect();
        v.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        Ok(v)
    }

    async fn get_info(&self, uuid: &str) -> Result<InstanceInfo, VirtError> {
        let st = self.state.lock();
        let g = st.guests.get(uuid).ok_or_else(|| VirtError::NotFound(uuid.to_string()))?;
        Ok(InstanceInfo { uuid: uuid.to_string(), power_state: g.power, rescued: g.rescued })
    }

    async fn spawn(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        self.step("spawn").await?;
        let mut st = self.state.lock();
        st.guests.entry(spec.uuid.clone()).or_insert_with(|| Guest {
            power: PowerState::Running,
            rescued: false,
            console: vec![format!("[fake] booting {} ({})", spec.hostname, spec.uuid), "login:".into()],
            volumes: spec.volumes.iter().map(|v| v.volume_id.clone()).collect(),
        });
        Ok(())
    }

    async fn destroy(&self, uuid: &str) -> Result<(), VirtError> {
        self.step("destroy").await?;
        self.state.lock().guests.remove(uuid);
        Ok(())
    }

    async fn power_off(&self, uuid: &str, _timeout: Duration) -> Result<(), VirtError> {
        self.step("power_off").await?;
        use PowerState::*;
        self.transition(uuid, "power_off", &[Running, Paused, Shutdown, Crashed, Suspended], |g| g.power = Shutdown)
    }

    async fn power_on(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        self.step("power_on").await?;
        use PowerState::*;
        self.transition(&spec.uuid, "power_on", &[Shutdown, Crashed, Running], |g| g.power = Running)
    }

    async fn reboot(&self, spec: &GuestSpec, hard: bool) -> Result<(), VirtError> {
        self.step("reboot").await?;
        use PowerState::*;
        let from: &[PowerState] = if hard { &[Running, Paused, Shutdown, Crashed, Suspended] } else { &[Running] };
        self.transition(&spec.uuid, "reboot", from, |g| g.power = Running)
    }

    async fn pause(&self, uuid: &str) -> Result<(), VirtError> {
        self.step("pause").await?;
        self.transition(uuid, "pause", &[PowerState::Running], |g| g.power = PowerState::Paused)
    }

    async fn unpause(&self, uuid: &str) -> Result<(), VirtError> {
        self.step("unpause").await?;
        self.transition(uuid, "unpause", &[PowerState::Paused], |g| g.power = PowerState::Running)
    }

    async fn suspend(&self, uuid: &str) -> Result<(), VirtError> {
        self.step("suspend").await?;
        use PowerState::*;
        self.transition(uuid, "suspend", &[Running, Paused], |g| g.power = Suspended)
    }

    async fn resume(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        self.step("resume").await?;
        self.transition(&spec.uuid, "resume", &[PowerState::Suspended], |g| g.power = PowerState::Running)
    }

    async fn rescue(&self, spec: &GuestSpec, _image: Option<&ImageSpec>) -> Result<(), VirtError> {
        self.step("rescue").await?;
        use PowerState::*;
        self.transition(&spec.uuid, "rescue", &[Running, Shutdown, Crashed], |g| {
            g.rescued = true;
            g.power = Running;
        })
    }

    async fn unrescue(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        self.step("unrescue").await?;
        use PowerState::*;
        let mut st = self.state.lock();
        let g = st.guests.get_mut(&spec.uuid).ok_or_else(|| VirtError::NotFound(spec.uuid.clone()))?;
        if !g.rescued {
            return Err(VirtError::InvalidState { uuid: spec.uuid.clone(), state: g.power, op: "unrescue".into() });
        }
        g.rescued = false;
        g.power = Running;
        Ok(())
    }

    async fn snapshot(&self, uuid: &str, _image_id: &str) -> Result<(), VirtError> {
        self.step("snapshot").await?;
        self.get_info(uuid).await.map(|_| ())
    }

    async fn trigger_crash_dump(&self, uuid: &str) -> Result<(), VirtError> {
        self.step("trigger_crash_dump").await?;
        self.transition(uuid, "trigger_crash_dump", &[PowerState::Running], |g| g.console.push("[fake] NMI".into()))
    }

    async fn console_output(&self, uuid: &str) -> Result<String, VirtError> {
        let st = self.state.lock();
        let g = st.guests.get(uuid).ok_or_else(|| VirtError::NotFound(uuid.to_string()))?;
        Ok(g.console.join("\n") + "\n")
    }

    async fn vnc_console(&self, uuid: &str) -> Result<VncConsole, VirtError> {
        // A fake guest has no framebuffer: say so instead of handing out an endpoint
        // nothing listens on (the API answers 409 "console not available"), unless a
        // test provides one with `set_vnc_endpoint`.
        self.get_info(uuid).await?;
        self.state
            .lock()
            .vnc
            .clone()
            .ok_or_else(|| VirtError::Unsupported { driver: "fake".into(), op: "graphical (VNC) consoles".into() })
    }

    async fn migrate_disk_and_power_off(
        &self,
        spec: &GuestSpec,
        _t: &MigrationTarget,
        _peer: &dyn DiskPeer,
    ) -> Result<(), VirtError> {
        self.power_off(&spec.uuid, Duration::from_secs(0)).await
    }

    async fn finish_migration(&self, spec: &GuestSpec, power_on: bool) -> Result<(), VirtError> {
        self.step("finish_migration").await?;
        self.spawn(spec).await?;
        self.set_power_state(&spec.uuid, if power_on { PowerState::Running } else { PowerState::Shutdown });
        Ok(())
    }

    async fn confirm_migration(&self, uuid: &str) -> Result<(), VirtError> {
        self.step("confirm_migration").await?;
        self.state.lock().guests.remove(uuid);
        Ok(())
    }

    async fn finish_revert_migration(&self, spec: &GuestSpec, power_on: bool) -> Result<(), VirtError> {
        self.finish_migration(spec, power_on).await
    }

    async fn pre_live_migration(&self, _spec: &GuestSpec, _source: &str) -> Result<Option<IncomingPorts>, VirtError> {
        self.step("pre_live_migration").await.map(|_| Some(INCOMING_PORTS))
    }

    async fn live_migration(&self, uuid: &str, t: &MigrationTarget) -> Result<(), VirtError> {
        self.state.lock().targets.entry(uuid.to_string()).or_default().push(t.clone());
        self.step("live_migration").await?;
        self.state.lock().guests.remove(uuid);
        Ok(())
    }

    async fn attach_volume(&self, uuid: &str, volume: &VolumeSpec) -> Result<(), VirtError> {
        self.step("attach_volume").await?;
        let mut st = self.state.lock();
        let g = st.guests.get_mut(uuid).ok_or_else(|| VirtError::NotFound(uuid.to_string()))?;
        if !g.volumes.contains(&volume.volume_id) {
            g.volumes.push(volume.volume_id.clone());
        }
        Ok(())
    }

    async fn detach_volume(&self, uuid: &str, volume: &VolumeSpec) -> Result<(), VirtError> {
        self.step("detach_volume").await?;
        let mut st = self.state.lock();
        let g = st.guests.get_mut(uuid).ok_or_else(|| VirtError::NotFound(uuid.to_string()))?;
        g.volumes.retain(|v| v != &volume.volume_id);
        Ok(())
    }

    async fn post_live_migration_at_destination(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        self.spawn(spec).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transitions_follow_a_real_hypervisor() {
        let d = FakeDriver::default();
        let spec = GuestSpec { uuid: "u1".into(), ..Default::default() };
        d.spawn(&spec).await.unwrap();
        d.spawn(&spec).await.unwrap(); // idempotent
        assert_eq!(d.guest_count(), 1);
        d.pause("u1").await.unwrap();
        assert!(matches!(d.suspend("u1").await, Ok(())));
        assert!(matches!(d.pause("u1").await, Err(VirtError::InvalidState { .. })));
        d.resume(&spec).await.unwrap();
        d.power_off("u1", Duration::ZERO).await.unwrap();
        assert_eq!(d.get_info("u1").await.unwrap().power_state, PowerState::Shutdown);
        assert!(d.reboot(&spec, false).await.is_err(), "soft reboot needs a running guest");
        d.reboot(&spec, true).await.unwrap();
        d.fail_next("destroy", 1);
        assert!(d.destroy("u1").await.is_err());
        d.destroy("u1").await.unwrap();
        d.destroy("u1").await.unwrap();
        assert!(matches!(d.get_info("u1").await, Err(VirtError::NotFound(_))));
        assert!(d.host_resources().await.unwrap().vcpus >= 1);
    }
}
