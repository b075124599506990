//! Live migration between two QEMUs, storage included, over QMP only.
//!
//! There is no shared storage, and QEMU 10 has no `migrate -b` any more, so disks move
//! the way libvirt moves them with `-blockdev`: the destination QEMU starts with the
//! same devices and `-incoming defer`, exports its fresh disks (overlays on the same
//! base image, fetched through its own image cache) writable over NBD, and the source
//! mirrors every writable disk into those exports (`blockdev-mirror`, `sync=top`, so
//! only what the overlay holds travels). Once every mirror is `ready`, RAM migration
//! starts with `pause-before-switchover`: when QEMU has stopped the source vCPUs for
//! the switchover it waits in `pre-switchover`, the mirrors are completed (nothing
//! writes any more, so the destination's disks are exact), and only then is the device
//! state sent. The destination starts on its own (QEMU carries the source's run state:
//! a paused guest arrives paused).
//!
//! Both ends listen on unix sockets in the destination's instance directory when both
//! agents run in this process (two hosts on one machine), and on free TCP ports of
//! `[compute.qemu] live_migration_port_min..=max` otherwise: the destination tries the
//! ports of the range in turn ([`listen_incoming`]), answers the two it got (NBD and
//! the migration stream) from `pre_live_migration`, and the conductor hands them to the
//! source with the destination's `host_ip` from its service record. Only a destination
//! that predates that answer listens where [`port_for`] derives from the uuid.
//!
//! Everything before the switchover can be undone: the migration is cancelled, the
//! mirror jobs are cancelled and their NBD nodes removed, and the source guest keeps
//! running as it was. Abort and force-complete reach the loop that drives the migration
//! through [`Control`] (the QMP monitor serves one client, and that client is the loop).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use stratus_qemu::qmp::{MigrationInfo, MigrationStatus, QmpClient, QmpError, RunState};
use tokio::time::Instant;

/// The migration stream socket in the destination's instance directory.
pub const MIGRATE_SOCK: &str = "migrate.sock";
/// The NBD server socket in the destination's instance directory.
pub const NBD_SOCK: &str = "nbd.sock";
/// Present on the destination from `pre_live_migration` until the guest is adopted:
/// says the QEMU in this directory is an incoming one (a replayed preparation finds it).
pub const INCOMING_MARKER: &str = "incoming.json";
/// The error text of a migration aborted on request (for logs: the driver reports it as
/// [`crate::virt::VirtError::Cancelled`], decided by [`Control::aborted`], not by this text).
pub const CANCELLED: &str = "live migration cancelled by request";

/// Prefix of the NBD block nodes and mirror jobs a migration adds on the source.
const JOB_PREFIX: &str = "mig-";
const POLL: Duration = Duration::from_millis(20);

/// Where the destination listens (and the source connects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// Both QEMUs on this machine: sockets in the destination's instance directory.
    Unix {
        /// Migration stream.
        migrate: PathBuf,
        /// NBD server.
        nbd: PathBuf,
    },
    /// Over the network.
    Tcp {
        /// Listen address (destination) or address to reach (source).
        host: String,
        /// Migration stream port.
        port: u16,
        /// NBD server port.
        nbd_port: u16,
    },
}

impl Endpoints {
    /// Unix sockets in `dir`.
    pub fn unix(dir: &Path) -> Self {
        Endpoints::Unix { migrate: dir.join(MIGRATE_SOCK), nbd: dir.join(NBD_SOCK) }
    }

    /// The URI of `migrate` and `migrate-incoming`.
    pub fn migrate_uri(&self) -> String {
        match self {
            Endpoints::Unix { migrate, .. } => format!("unix:{}", migrate.display()),
            Endpoints::Tcp { host, port, .. } => format!("tcp:{}:{port}", bracket(host)),
        }
    }

    /// `nbd-server-start`'s `addr` (SocketAddressLegacy).
    pub fn nbd_server_addr(&self) -> Value {
        match self {
            Endpoints::Unix { nbd, .. } => json!({"type": "unix", "data": {"path": nbd}}),
            Endpoints::Tcp { host, nbd_port, .. } => {
                json!({"type": "inet", "data": {"host": host, "port": nbd_port.to_string()}})
            }
        }
    }

    /// The `server` of an `nbd` block node on the source (SocketAddress).
    pub fn nbd_client_addr(&self) -> Value {
        match self {
            Endpoints::Unix { nbd, .. } => json!({"type": "unix", "path": nbd}),
            Endpoints::Tcp { host, nbd_port, .. } => {
                json!({"type": "inet", "host": host, "port": nbd_port.to_string()})
            }
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Where the destination of a migration listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Unix sockets in this instance directory.
    Unix(PathBuf),
    /// Free TCP ports of `min..=max` on `host`.
    Tcp {
        /// Listen address.
        host: String,
        /// Lowest port.
        min: u16,
        /// Highest port.
        max: u16,
    },
}

/// Most ports one listener tries: the configured range, bounded for absurd ones.
pub const MAX_PORT_TRIES: usize = 256;

/// The ports of `min..=max` (either order) in the order a listener tries them, at most
/// [`MAX_PORT_TRIES`], `skip` left out.
pub fn candidates(min: u16, max: u16, skip: Option<u16>) -> impl Iterator<Item = u16> {
    let (min, max) = (min.min(max), min.max(max));
    (min..=max).filter(move |p| Some(*p) != skip).take(MAX_PORT_TRIES)
}

/// Whether a listener failed because its port is taken (the only failure worth trying
/// the next port for): QEMU says `Failed to find an available port: Address already in use`.
pub fn port_taken(msg: &str) -> bool {
    msg.contains("Address already in use")
}

/// The port QEMU's incoming migration listens on (`query-migrate`'s `socket-address`).
fn incoming_port(info: &Value) -> Option<u16> {
    info["socket-address"].as_array()?.iter().find_map(|a| a["port"].as_str()?.parse().ok())
}

/// The migration port a destination that predates [`Listen::Tcp`]'s free-port choice
/// listens on (and, one above it, its NBD port): derived from the server's uuid in
/// `min..=max`, so a source talking to such a destination finds it without an answer.
pub fn port_for(uuid: &str, min: u16, max: u16) -> u16 {
    let (min, max) = (min.min(max), min.max(max));
    let ports = u32::from(max - min) + 1;
    let pairs = ports / 2;
    if pairs == 0 {
        return min;
    }
    // FNV-1a: stable across builds and hosts (std's hasher is not).
    let h = uuid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    min + 2 * (h % u64::from(pairs)) as u16
}

/// Requests from the API for a migration in flight.
#[derive(Debug, Default)]
pub struct Control {
    abort: AtomicBool,
    force_complete: AtomicBool,
}

impl Control {
    /// Ask the migration to stop; the guest stays on the source.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }
    /// Whether an abort was asked for.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
    /// Ask the migration to converge now (longer pause accepted).
    pub fn force_complete(&self) {
        self.force_complete.store(true, Ordering::SeqCst);
    }
}

/// What a finished migration measured (QEMU's `query-migrate`, plus our wall time).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// From the first QMP command on the source to the switchover, disks included (ms).
    pub wall_ms: u64,
    /// Time the disks took to reach `ready` on the destination (ms).
    pub mirror_ms: u64,
    /// QEMU's `total-time` of the RAM migration (ms).
    pub total_ms: u64,
    /// QEMU's `downtime`: how long the guest was stopped (ms).
    pub downtime_ms: u64,
    /// RAM bytes sent.
    pub ram_transferred: u64,
    /// Disks mirrored.
    pub disks: Vec<String>,
    /// Whether force-complete was used.
    pub forced: bool,
}

/// Tunables of one migration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whole-migration limit; past it the migration is cancelled.
    pub timeout: Duration,
    /// `downtime-limit` (ms) QEMU aims for.
    pub downtime_ms: u64,
    /// `max-bandwidth` in MiB/s (0: QEMU's default).
    pub bandwidth_mib: u64,
}

type QResult<T> = Result<T, QmpError>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The writable disks of a QEMU (`query-block`): `(device, node-name)`.
pub async fn writable_disks(q: &mut QmpClient) -> QResult<Vec<(String, String)>> {
    let blocks = q.execute("query-block", None).await?;
    let mut out = Vec::new();
    for b in blocks.as_array().into_iter().flatten() {
        let Some(ins) = b.get("inserted") else { continue };
        if ins.get("ro").and_then(Value::as_bool).unwrap_or(true) {
            continue;
        }
        let dev = b.get("device").and_then(Value::as_str).unwrap_or_default();
        let node = ins.get("node-name").and_then(Value::as_str).unwrap_or_default();
        if !dev.is_empty() && !node.is_empty() {
            out.push((dev.to_string(), node.to_string()));
        }
    }
    Ok(out)
}

/// Destination: export every writable disk over NBD and wait for the migration stream;
/// answers where it listens and the disks exported.
pub async fn prepare_incoming(q: &mut QmpClient, listen: &Listen) -> Result<(Endpoints, Vec<String>), String> {
    match listen {
        Listen::Unix(dir) => {
            let ep = Endpoints::unix(dir);
            q.execute("nbd-server-start", Some(json!({ "addr": ep.nbd_server_addr() }))).await.map_err(err)?;
            let disks = export_disks(q).await.map_err(err)?;
            q.migrate_incoming(&ep.migrate_uri()).await.map_err(err)?;
            Ok((ep, disks))
        }
        Listen::Tcp { host, min, max } => listen_incoming(q, host, *min, *max).await,
    }
}

/// Free ports in one QEMU. NBD first, port after port: a taken one fails
/// `nbd-server-start` and the next is tried. The migration stream last: QEMU takes one
/// `migrate-incoming` only (a failed one leaves the incoming state in `setup`), so that
/// single command gets the whole range (`to=`) and QEMU binds the first free port of it,
/// which `query-migrate` then reports.
pub async fn listen_incoming(
    q: &mut QmpClient,
    host: &str,
    min: u16,
    max: u16,
) -> Result<(Endpoints, Vec<String>), String> {
    let (min, max) = (min.min(max), min.max(max));
    let mut nbd_port = None;
    let mut tried = 0;
    for port in candidates(min, max, None) {
        let addr = json!({"type": "inet", "data": {"host": host, "port": port.to_string()}});
        tried += 1;
        match q.execute("nbd-server-start", Some(json!({ "addr": addr }))).await {
            Ok(_) => {
                nbd_port = Some(port);
                break;
            }
            Err(QmpError::Command { desc, .. }) if port_taken(&desc) => {
                tracing::debug!(port, "NBD port taken; trying the next one");
            }
            Err(e) => return Err(format!("starting the NBD server on port {port}: {e}")),
        }
    }
    let nbd_port = nbd_port.ok_or_else(|| format!("no free port for NBD in {min}..={max} ({tried} tried)"))?;
    let disks = export_disks(q).await.map_err(err)?;
    let uri = format!("tcp:{}:{min},to={max}", bracket(host));
    q.migrate_incoming(&uri).await.map_err(|e| match &e {
        QmpError::Command { desc, .. } if port_taken(desc) => {
            format!("no free port for the migration stream in {min}..={max}: {e}")
        }
        _ => format!("listening for the migration stream: {e}"),
    })?;
    let info = q.execute("query-migrate", None).await.map_err(err)?;
    let port = incoming_port(&info).ok_or_else(|| format!("QEMU reported no incoming migration port: {info}"))?;
    tracing::debug!(port, nbd_port, "incoming migration listens");
    Ok((Endpoints::Tcp { host: host.to_string(), port, nbd_port }, disks))
}

/// Exports every writable disk (named like its device) on the NBD server.
async fn export_disks(q: &mut QmpClient) -> QResult<Vec<String>> {
    let disks = writable_disks(q).await?;
    for (dev, node) in &disks {
        q.execute(
            "block-export-add",
            Some(json!({
                "type": "nbd",
                "id": format!("{JOB_PREFIX}{dev}"),
                "node-name": node,
                "name": dev,
                "writable": true,
            })),
        )
        .await?;
    }
    Ok(disks.into_iter().map(|(d, _)| d).collect())
}

/// Destination, once the guest arrived: the NBD exports go (the guest owns its disks).
pub async fn finish_incoming(q: &mut QmpClient) -> Result<RunState, String> {
    let status = q.query_status().await.map_err(err)?;
    if status.status == RunState::Inmigrate {
        return Err("the guest has not arrived: the incoming migration did not complete".into());
    }
    match q.execute("nbd-server-stop", None).await {
        Ok(_) => {}
        // Already stopped (a replayed step).
        Err(QmpError::Command { .. }) => {}
        Err(e) => return Err(err(e)),
    }
    Ok(status.status)
}

/// Source: moves the guest to `ep`. On success the source QEMU is in `postmigrate`
/// (the caller ends it); on failure the source guest runs as before.
pub async fn migrate_out(q: &mut QmpClient, ep: &Endpoints, ctl: &Control, s: &Settings) -> Result<Stats, String> {
    let started = Instant::now();
    let was_running = q.query_status().await.map_err(err)?.running;
    // What a failed migration restores (a later suspend migrates to a file with them).
    let params = q.execute("query-migrate-parameters", None).await.map_err(err)?;
    let saved = json!({"downtime-limit": params["downtime-limit"], "max-bandwidth": params["max-bandwidth"]});
    let mut m = Outgoing { nodes: Vec::new(), jobs: Vec::new(), disks: Vec::new(), migrating: false };
    match m.run(q, ep, ctl, s, started).await {
        Ok(stats) => Ok(stats),
        Err(e) => {
            // The migration may have completed after all (e.g. the error was a
            // slow reply): then the guest lives on the destination, not here.
            if let Ok(info) = q.query_migrate().await {
                if info.status == Some(MigrationStatus::Completed) {
                    tracing::warn!(error = %e, "live migration completed despite an error on the way");
                    return Ok(stats_of(&info, started, 0, &m.disks, false));
                }
            }
            m.undo(q, was_running).await;
            if let Err(e) = q.migrate_set_parameters(saved).await {
                tracing::warn!(error = %e, "could not restore the migration parameters");
            }
            Err(e)
        }
    }
}

struct Outgoing {
    /// NBD nodes added (removed again on failure).
    nodes: Vec<String>,
    /// Mirror jobs still running.
    jobs: Vec<String>,
    /// Devices copied.
    disks: Vec<String>,
    migrating: bool,
}

fn stats_of(info: &MigrationInfo, started: Instant, mirror_ms: u64, disks: &[String], forced: bool) -> Stats {
    Stats {
        wall_ms: started.elapsed().as_millis() as u64,
        mirror_ms,
        total_ms: info.total_time.unwrap_or_default(),
        downtime_ms: info.downtime.unwrap_or_default(),
        ram_transferred: info.ram.as_ref().and_then(|r| r.get("transferred")).and_then(Value::as_u64).unwrap_or(0),
        disks: disks.to_vec(),
        forced,
    }
}

/// A failed or errored block job from the buffered events, if any.
fn job_error(q: &mut QmpClient, jobs: &[String]) -> Option<String> {
    let mut found = None;
    for ev in q.drain_events() {
        let dev = ev.data.get("device").and_then(Value::as_str).unwrap_or_default().to_string();
        if !jobs.contains(&dev) {
            continue;
        }
        match ev.event.as_str() {
            "BLOCK_JOB_COMPLETED" | "BLOCK_JOB_CANCELLED" if ev.data.get("error").is_some() => {
                found = Some(format!("disk copy {dev} failed: {}", ev.data["error"].as_str().unwrap_or("?")));
            }
            "BLOCK_JOB_ERROR" => {
                found = Some(format!("disk copy {dev} failed ({})", ev.data["operation"].as_str().unwrap_or("io")));
            }
            _ => {}
        }
    }
    found
}

async fn our_jobs(q: &mut QmpClient) -> QResult<Vec<Value>> {
    let v = q.execute("query-block-jobs", None).await?;
    Ok(v.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j.get("device").and_then(Value::as_str).is_some_and(|d| d.starts_with(JOB_PREFIX)))
        .collect())
}

impl Outgoing {
    async fn run(
        &mut self,
        q: &mut QmpClient,
        ep: &Endpoints,
        ctl: &Control,
        s: &Settings,
        started: Instant,
    ) -> Result<Stats, String> {
        let deadline = started + s.timeout;
        let aborted = || ctl.abort.load(Ordering::SeqCst);
        // 1. Disks: mirror every writable disk into the destination's NBD exports.
        for (dev, _) in writable_disks(q).await.map_err(err)? {
            let node = format!("{JOB_PREFIX}{dev}");
            q.blockdev_add(json!({
                "driver": "nbd",
                "node-name": node,
                "server": ep.nbd_client_addr(),
                "export": dev,
            }))
            .await
            .map_err(|e| format!("connecting to the destination's disk {dev}: {e}"))?;
            self.nodes.push(node.clone());
            q.execute("blockdev-mirror", Some(json!({"job-id": node, "device": dev, "target": node, "sync": "top"})))
                .await
                .map_err(|e| format!("starting the copy of {dev}: {e}"))?;
            self.jobs.push(node);
            self.disks.push(dev);
        }
        loop {
            if aborted() {
                return Err(CANCELLED.into());
            }
            if let Some(e) = job_error(q, &self.jobs) {
                return Err(e);
            }
            let jobs = our_jobs(q).await.map_err(err)?;
            if jobs.len() < self.jobs.len() {
                return Err("a disk copy ended before it was ready".into());
            }
            if jobs.iter().all(|j| j.get("ready").and_then(Value::as_bool) == Some(true)) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("the disks were not copied within {:?}", s.timeout));
            }
            tokio::time::sleep(POLL).await;
        }
        let mirror_ms = started.elapsed().as_millis() as u64;

        // 2. Memory and device state, stopping before the switchover for the disks.
        q.migrate_set_capabilities(&[("pause-before-switchover", true)]).await.map_err(err)?;
        let mut params = json!({"downtime-limit": s.downtime_ms});
        if s.bandwidth_mib > 0 {
            params["max-bandwidth"] = json!(s.bandwidth_mib << 20);
        }
        q.migrate_set_parameters(params).await.map_err(err)?;
        q.migrate(&ep.migrate_uri()).await.map_err(|e| format!("starting the migration: {e}"))?;
        self.migrating = true;
        let mut forced = false;
        loop {
            let info = q.query_migrate().await.map_err(err)?;
            match info.status {
                Some(MigrationStatus::Completed) => {
                    return Ok(stats_of(&info, started, mirror_ms, &self.disks, forced));
                }
                Some(MigrationStatus::Failed) => {
                    return Err(format!("migration failed: {}", info.error_desc.unwrap_or_default()));
                }
                Some(MigrationStatus::Cancelled) => {
                    return Err(if aborted() { CANCELLED.into() } else { "migration cancelled".into() });
                }
                Some(MigrationStatus::PreSwitchover) => {
                    if aborted() {
                        return Err(CANCELLED.into());
                    }
                    self.complete_mirrors(q, deadline).await?;
                    q.execute("migrate-continue", Some(json!({"state": "pre-switchover"}))).await.map_err(err)?;
                }
                _ => {}
            }
            if aborted() {
                return Err(CANCELLED.into());
            }
            if ctl.force_complete.load(Ordering::SeqCst) && !forced {
                // Nova pauses the guest; a downtime limit QEMU always meets has the
                // same effect and leaves the guest's run state alone.
                forced = true;
                tracing::info!("force-complete: accepting any downtime");
                q.migrate_set_parameters(json!({"downtime-limit": 2_000_000u64})).await.map_err(err)?;
            }
            if let Some(e) = job_error(q, &self.jobs) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(format!("the migration did not complete within {:?}", s.timeout));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// vCPUs are stopped: completing a ready mirror flushes what is left and detaches it.
    async fn complete_mirrors(&mut self, q: &mut QmpClient, deadline: Instant) -> Result<(), String> {
        for j in &self.jobs {
            q.execute("block-job-cancel", Some(json!({"device": j}))).await.map_err(err)?;
        }
        loop {
            if let Some(e) = job_error(q, &self.jobs) {
                return Err(e);
            }
            if our_jobs(q).await.map_err(err)?.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err("the disk copies did not finish".into());
            }
            tokio::time::sleep(POLL).await;
        }
        self.jobs.clear();
        Ok(())
    }

    /// Back to where the source was before the migration.
    async fn undo(&mut self, q: &mut QmpClient, was_running: bool) {
        if self.migrating {
            if let Err(e) = q.migrate_cancel().await {
                tracing::warn!(error = %e, "migrate_cancel failed");
            }
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                match q.query_migrate().await.map(|i| i.status) {
                    Ok(Some(MigrationStatus::Active | MigrationStatus::Setup | MigrationStatus::Cancelling))
                    | Ok(Some(MigrationStatus::PreSwitchover | MigrationStatus::Device)) => {}
                    _ => break,
                }
                tokio::time::sleep(POLL).await;
            }
        }
        // A later suspend (`migrate` to a file) must not stop before its switchover.
        let _ = q.migrate_set_capabilities(&[("pause-before-switchover", false)]).await;
        for j in &self.jobs {
            let _ = q.execute("block-job-cancel", Some(json!({"device": j, "force": true}))).await;
        }
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && our_jobs(q).await.is_ok_and(|j| !j.is_empty()) {
            tokio::time::sleep(POLL).await;
        }
        for n in &self.nodes {
            if let Err(e) = q.blockdev_del(n).await {
                tracing::warn!(node = %n, error = %e, "could not remove the migration's NBD node");
            }
        }
        q.drain_events();
        if was_running {
            match q.query_status().await {
                Ok(s) if !s.running => {
                    if let Err(e) = q.cont().await {
                        tracing::error!(error = %e, "could not resume the guest after a failed migration");
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn endpoints_render_qemu_addresses() {
        let u = Endpoints::unix(Path::new("/i/x"));
        assert_eq!(u.migrate_uri(), "unix:/i/x/migrate.sock");
        assert_eq!(u.nbd_server_addr(), json!({"type": "unix", "data": {"path": "/i/x/nbd.sock"}}));
        assert_eq!(u.nbd_client_addr(), json!({"type": "unix", "path": "/i/x/nbd.sock"}));
        let t = Endpoints::Tcp { host: "10.0.0.2".into(), port: 49160, nbd_port: 49157 };
        assert_eq!(t.migrate_uri(), "tcp:10.0.0.2:49160");
        assert_eq!(t.nbd_server_addr()["data"]["port"], "49157");
        assert_eq!(t.nbd_client_addr(), json!({"type": "inet", "host": "10.0.0.2", "port": "49157"}));
        assert_eq!(Endpoints::Tcp { host: "::1".into(), port: 5, nbd_port: 6 }.migrate_uri(), "tcp:[::1]:5");
    }

    #[test]
    fn candidates_cover_the_range_once_and_are_bounded() {
        assert_eq!(candidates(49152, 49155, None).collect::<Vec<_>>(), [49152, 49153, 49154, 49155]);
        assert_eq!(candidates(49155, 49152, Some(49153)).collect::<Vec<_>>(), [49152, 49154, 49155]);
        assert_eq!(candidates(7, 7, None).collect::<Vec<_>>(), [7]);
        assert_eq!(candidates(1024, 65535, None).count(), MAX_PORT_TRIES);
        assert_eq!(candidates(65535, 65535, None).collect::<Vec<_>>(), [65535], "no overflow at the top");
    }

    #[test]
    fn only_a_taken_port_is_worth_another_try() {
        assert!(port_taken("Failed to find an available port: Address already in use"));
        assert!(port_taken(
            "qemu-storage-daemon: --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port=49153: \
             Failed to find an available port: Address already in use"
        ));
        assert!(!port_taken("Failed to bind socket: Cannot assign requested address"));
        assert!(!port_taken("Failed to find an available port: Permission denied"));
        assert!(!port_taken("address resolution failed for 10.0.0.300:49152: Name or service not known"));
    }

    /// `count` consecutive ports free on loopback, each held by a listener of ours (the
    /// test frees one by dropping it).
    /// Ranges never overlap within the test process (its tests run in parallel and free
    /// ports of their ranges on purpose).
    pub(crate) fn held_range(count: u16) -> (u16, Vec<Option<std::net::TcpListener>>) {
        static NEXT: Mutex<u16> = Mutex::new(0);
        let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
        if *next == 0 {
            *next = 30_000 + (std::process::id() % 1000) as u16 * 20;
        }
        while *next < 60_000 {
            let base = *next;
            *next += count;
            let held: Vec<_> =
                (base..base + count).map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok()).collect();
            if held.len() == usize::from(count) {
                return (base, held.into_iter().map(Some).collect());
            }
        }
        panic!("no {count} consecutive free ports");
    }

    /// A QEMU with no guest (`-machine none`) waiting for an incoming migration.
    struct Incoming {
        child: tokio::process::Child,
        _dir: tempfile::TempDir,
        q: QmpClient,
    }

    async fn incoming_qemu() -> Incoming {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let child = tokio::process::Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-display", "none", "-nodefaults", "-S", "-incoming", "defer", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .kill_on_drop(true)
            .spawn()
            .expect("qemu-system-x86_64");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(q) = QmpClient::connect(&sock).await {
                return Incoming { child, _dir: dir, q };
            }
            assert!(Instant::now() < deadline, "QMP of the test QEMU");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn taken(port: u16) -> bool {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
    }

    #[tokio::test]
    async fn the_destination_listens_on_the_first_free_ports_of_its_range() {
        let (min, mut held) = held_range(6);
        // Someone else holds min and min + 2; the rest is free.
        for i in [1, 3, 4, 5] {
            held[i] = None;
        }
        let mut qemu = incoming_qemu().await;
        let (ep, disks) = listen_incoming(&mut qemu.q, "127.0.0.1", min, min + 5).await.expect("listening");
        assert!(disks.is_empty());
        assert_eq!(ep, Endpoints::Tcp { host: "127.0.0.1".into(), port: min + 3, nbd_port: min + 1 });
        assert!(taken(min + 1) && taken(min + 3), "QEMU listens on both");
        assert!(!taken(min + 4), "and on nothing else");
        qemu.child.kill().await.unwrap();
    }

    /// Two migrations prepared at once on one host (what the uuid scheme let collide):
    /// both get ports, all different.
    #[tokio::test]
    async fn two_destinations_preparing_at_once_get_different_ports() {
        let (min, mut held) = held_range(4);
        held.iter_mut().for_each(|h| *h = None);
        let (mut one, mut two) = (incoming_qemu().await, incoming_qemu().await);
        let (a, b) = tokio::join!(
            listen_incoming(&mut one.q, "127.0.0.1", min, min + 3),
            listen_incoming(&mut two.q, "127.0.0.1", min, min + 3)
        );
        let ports = |ep: Endpoints| match ep {
            Endpoints::Tcp { port, nbd_port, .. } => [port, nbd_port],
            Endpoints::Unix { .. } => unreachable!(),
        };
        let mut all: Vec<u16> = [ports(a.unwrap().0), ports(b.unwrap().0)].concat();
        all.sort_unstable();
        assert_eq!(all, [min, min + 1, min + 2, min + 3]);
        one.child.kill().await.unwrap();
        two.child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn a_full_range_fails_the_preparation_with_the_reason() {
        let (min, mut held) = held_range(3);
        let mut qemu = incoming_qemu().await;
        let e = listen_incoming(&mut qemu.q, "127.0.0.1", min, min + 2).await.unwrap_err();
        assert!(e.contains("no free port for NBD"), "{e}");
        // One port free: NBD takes it, the migration stream finds none (QEMU's single try).
        held[1] = None;
        let e = listen_incoming(&mut qemu.q, "127.0.0.1", min, min + 2).await.unwrap_err();
        assert!(e.contains("no free port for the migration stream"), "{e}");
        qemu.child.kill().await.unwrap();
    }

    #[test]
    fn the_incoming_port_comes_from_query_migrate() {
        // QEMU 10's answer after `migrate-incoming tcp:127.0.0.1:49390,to=49395` with 49390 taken.
        let info = json!({"status": "setup", "socket-address": [
            {"port": "49391", "ipv4": true, "host": "127.0.0.1", "type": "inet"}]});
        assert_eq!(incoming_port(&info), Some(49391));
        assert_eq!(incoming_port(&json!({"status": "setup"})), None);
    }

    #[test]
    fn ports_are_stable_even_offsets_in_the_range() {
        let a = port_for("8f1c6a52-8d0b-4f43-9a57-0d6f4c1d2e3f", 49152, 49215);
        assert_eq!(a, port_for("8f1c6a52-8d0b-4f43-9a57-0d6f4c1d2e3f", 49152, 49215));
        assert!((49152..=49214).contains(&a) && (a - 49152).is_multiple_of(2), "{a}");
        let spread: std::collections::HashSet<u16> =
            (0..64).map(|i| port_for(&format!("uuid-{i}"), 49152, 49215)).collect();
        assert!(spread.len() > 10, "{spread:?}");
        assert_eq!(port_for("x", 6000, 6000), 6000);
    }
}
