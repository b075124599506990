//! The `qemu` driver: one QEMU process per server, driven over QMP, no libvirt.
//!
//! Split by concern: [`images`] (the image service behind a trait, and the per-host
//! base cache), [`instance`] (a server's directory and its QEMU command line), and this
//! module, which maps every [`VirtDriver`] operation onto `stratus-qemu`.
//!
//! State lives in the instance directory and in QEMU, never only in memory: a QEMU
//! process is found again from its pid file (the agent can restart at any time and
//! `init_host` adopts what runs), "suspended" is the saved memory state file, and
//! "rescued" is the rescue disk. The driver opens a QMP session per operation instead
//! of holding one: QEMU's monitor socket serves a single client, and a session held by
//! an agent that is going away would lock the next one out. Operations on one guest
//! are serialized by a per-guest lock; status queries that find the guest busy answer
//! from the last state seen instead of waiting.
//!
//! Cold migration and resize follow Nova's layout: the source keeps its copy as
//! `<uuid>_resize` until the resize is confirmed (or brings it back on revert) and hands
//! the destination a flattened copy in `<uuid>_incoming`. Between agents of one process
//! that is a local copy; to another machine the disks go over NBD ([`cold`]). Live migration
//! ([`live`]) moves a running guest with its disks over QMP, NBD and the migration
//! stream, between agents of one process or of different machines.

pub mod aging;
pub mod cold;
pub mod images;
pub mod instance;
pub mod live;
pub mod volumes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use stratus_qemu::cmdline::DiskFormat;
use stratus_qemu::guest_user::{self, GuestUsers};
use stratus_qemu::img::QemuImg;
use stratus_qemu::process::SpawnOptions;
use stratus_qemu::qmp::RunState;
use stratus_qemu::{Accel, QemuBinary, QemuProcess, ResolvedAccel};

use self::images::{ImageCache, ImageSource, ImageUse};
use self::instance::{BootFiles, Instance, OVERLAY_FORMAT};
use super::{
    DiskPeer, HostResources, IncomingDisk, IncomingPorts, InstanceInfo, MigrationTarget, PowerState, VirtDriver,
    VirtError, VncConsole,
};
use stratus_compute_proto::spec::{GuestSpec, ImageSpec, VolumeSpec};

/// `[compute.qemu]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QemuDriverConfig {
    /// `auto` (KVM only when `kvm_intel`/`kvm_amd` is loaded, TCG otherwise), `kvm`,
    /// or `tcg` (Nova's `virt_type = qemu`). Default `auto`.
    pub accel: String,
    /// QEMU binary (default: `qemu-system-x86_64` on `PATH`).
    pub binary: Option<PathBuf>,
    /// `qemu-img` binary (default: `qemu-img` on `PATH`).
    pub qemu_img: Option<PathBuf>,
    /// Where instance directories and the `_base` image cache live
    /// (default `<data_dir>/instances`).
    pub instances_path: Option<PathBuf>,
    /// Format of cached base images: `qcow2` (default: keep the image as uploaded) or
    /// `raw` (convert qcow2 images to raw once, Nova's `force_raw_images`).
    pub image_cache_format: String,
    /// Seconds a stop gives the guest to power off after the ACPI button when the
    /// request names no timeout (default 60), then QEMU is stopped hard.
    pub power_off_timeout_secs: u64,
    /// Seconds a soft reboot waits for the ACPI shutdown before it resets hard (default 60).
    pub soft_reboot_timeout_secs: u64,
    /// Seconds a suspend or resume may take to write/read the memory state (default 120).
    pub suspend_timeout_secs: u64,
    /// Run QEMU with `-sandbox` (seccomp) when it supports it (default true).
    pub sandbox: bool,
    /// Address a guest's VNC server also listens on over TCP, for a console proxy on
    /// another machine (Nova's `[vnc] server_listen`). Default none: only the unix socket
    /// in the instance directory, which the proxy of `stratus up` on this host uses.
    /// When set, the first console request of a running QEMU adds a listener on this
    /// address with a port the kernel picks (QMP `display-update`), and the console
    /// endpoint becomes that TCP port. With `[compute] host_netns` it listens in that
    /// namespace.
    pub vnc_listen: Option<String>,
    /// Address the console proxy dials to reach those TCP listeners (Nova's `[vnc]
    /// server_proxyclient_address`). Default: `vnc_listen` itself.
    pub vnc_proxyclient_address: Option<String>,
    /// Address an incoming live migration listens on when the source is another
    /// machine (default `0.0.0.0`; agents of one process use unix sockets).
    pub live_migration_listen_address: String,
    /// Lowest TCP port of incoming moves (default 49152; two per live migration, the
    /// stream and the NBD disk exports, one per cold move from another machine). The
    /// destination takes the first free ones and tells the source.
    pub live_migration_port_min: u16,
    /// Highest TCP port of incoming live migrations (default 49215).
    pub live_migration_port_max: u16,
    /// Seconds a live migration may take, disks included, before it is cancelled and
    /// the guest stays on the source (default 600).
    pub live_migration_timeout_secs: u64,
    /// Longest pause (ms) QEMU aims for at the switchover (default 500, Nova's
    /// `live_migration_downtime`); force-complete lifts it.
    pub live_migration_downtime_ms: u64,
    /// Cap of the memory copy in MiB/s (default 0: QEMU's own default), Nova's
    /// `live_migration_bandwidth`.
    pub live_migration_bandwidth_mib: u64,
    /// Live migrations between agents of this process go over unix sockets (default
    /// true); false sends them over TCP like between machines.
    pub live_migration_local_sockets: bool,
    /// Cold migrations and resizes between agents of this process copy the disks
    /// locally (default true); false sends them over NBD like between machines.
    pub cold_migration_local_copy: bool,
    /// Remove base images no disk on this host uses any more (Nova's
    /// `remove_unused_base_images`, default true).
    pub remove_unused_base_images: bool,
    /// Seconds a base must have been unused before it is removed (Nova's
    /// `remove_unused_original_minimum_age_seconds`, default 86400).
    pub remove_unused_original_minimum_age_seconds: u64,
    /// Seconds between two passes over the base image cache (Nova's
    /// `[image_cache] manager_interval`, default 2400; 0 disables the passes).
    pub image_cache_manager_interval_secs: u64,
    /// Run each guest's QEMU as a user of its own that owns only that guest's
    /// directory (default true; applies when the agent runs as root). False runs
    /// QEMU as the agent's user, confined by seccomp alone.
    pub run_as_guest_users: bool,
    /// First uid of guest users (default 1879048192 = 0x70000000, a range Debian and
    /// systemd leave unassigned). Each guest also gets this number as its gid unless it
    /// uses KVM, then the group of `/dev/kvm`.
    pub guest_uid_min: u32,
    /// Number of guest uids (default 65536): the most guests one machine runs at once.
    pub guest_uid_count: u32,
    /// Where the uids handed out are recorded, one registry per machine so that
    /// several agents on one machine never share a uid (default
    /// `/var/lib/stratus/guest-uids`).
    pub guest_uid_registry: PathBuf,
    /// UEFI firmware for images with `hw_firmware_type=uefi` (default Debian's `ovmf`:
    /// `/usr/share/OVMF/OVMF_CODE_4M.fd`). UEFI guests need more than 128 MB of RAM
    /// (measured: OVMF hangs with 128, boots with 160).
    pub uefi_code: PathBuf,
    /// The empty variable store each UEFI guest gets a copy of (`nvram.fd` in its
    /// directory; default `/usr/share/OVMF/OVMF_VARS_4M.fd`).
    pub uefi_vars_template: PathBuf,
}

impl Default for QemuDriverConfig {
    fn default() -> Self {
        QemuDriverConfig {
            accel: "auto".into(),
            binary: None,
            qemu_img: None,
            instances_path: None,
            image_cache_format: "qcow2".into(),
            power_off_timeout_secs: 60,
            soft_reboot_timeout_secs: 60,
            suspend_timeout_secs: 120,
            sandbox: true,
            vnc_listen: None,
            vnc_proxyclient_address: None,
            live_migration_listen_address: "0.0.0.0".into(),
            live_migration_port_min: 49152,
            live_migration_port_max: 49215,
            live_migration_timeout_secs: 600,
            live_migration_downtime_ms: 500,
            live_migration_bandwidth_mib: 0,
            live_migration_local_sockets: true,
            cold_migration_local_copy: true,
            remove_unused_base_images: true,
            remove_unused_original_minimum_age_seconds: 86_400,
            image_cache_manager_interval_secs: 2_400,
            run_as_guest_users: true,
            guest_uid_min: 0x7000_0000,
            guest_uid_count: 65_536,
            guest_uid_registry: PathBuf::from("/var/lib/stratus/guest-uids"),
            uefi_code: PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            uefi_vars_template: PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        }
    }
}

/// The users guests run as, when wanted and possible (the agent runs as root).
/// Guests must be able to search their way to their directory and the bases:
/// the directories from the data dir down are made searchable (not listable);
/// an ancestor above it that is not is refused with what to do.
fn guest_users(
    cfg: &QemuDriverConfig,
    data_dir: &Path,
    instances: &Path,
    accel: ResolvedAccel,
) -> anyhow::Result<Option<GuestUsers>> {
    if !cfg.run_as_guest_users {
        return Ok(None);
    }
    if !guest_user::can_switch_users() {
        tracing::warn!("the agent is not root: guests' QEMU runs as the agent's user, confined by seccomp only");
        return Ok(None);
    }
    std::fs::create_dir_all(instances)?;
    let data_dir = std::path::absolute(data_dir)?;
    for dir in instances.ancestors().filter(|d| *d == instances || d.starts_with(&data_dir)) {
        guest_user::allow_search(dir)?;
    }
    if let Some(dir) = guest_user::unsearchable_ancestor(instances) {
        anyhow::bail!(
            "guests run as unprivileged users and cannot reach {}: {} is not searchable by others \
             (chmod o+x it, or set [compute.qemu] run_as_guest_users = false)",
            instances.display(),
            dir.display()
        );
    }
    let shared_gid = match accel {
        ResolvedAccel::Tcg => None,
        ResolvedAccel::Kvm => {
            use std::os::unix::fs::MetadataExt;
            let kvm = std::fs::metadata("/dev/kvm")?;
            guest_user::kvm_group(kvm.mode(), kvm.gid()).map_err(anyhow::Error::msg)?
        }
    };
    let users = GuestUsers::new(&cfg.guest_uid_registry, cfg.guest_uid_min, cfg.guest_uid_count, shared_gid)?;
    Ok(Some(users))
}

/// Whether a QEMU binary is installed (the `auto` driver choice).
pub fn qemu_available(cfg: &QemuDriverConfig) -> bool {
    match &cfg.binary {
        Some(p) => p.exists(),
        None => stratus_qemu::binary::which(QemuBinary::DEFAULT_NAME).is_some(),
    }
}

fn failed(e: impl std::fmt::Display) -> VirtError {
    VirtError::Failed(e.to_string())
}

const GIB: u64 = 1024 * 1024 * 1024;

/// The TCP port of the guest's VNC server, if it listens on one (`query-vnc-servers`).
async fn vnc_tcp_port(q: &mut stratus_qemu::QmpClient) -> Result<Option<u16>, VirtError> {
    let servers = q.execute("query-vnc-servers", None).await.map_err(failed)?;
    Ok(tcp_port_of(&servers))
}

fn tcp_port_of(servers: &serde_json::Value) -> Option<u16> {
    servers.as_array()?.iter().flat_map(|s| s["server"].as_array().cloned().unwrap_or_default()).find_map(|l| {
        let inet = matches!(l["family"].as_str(), Some("ipv4" | "ipv6"));
        (inet && l["websocket"] != true).then(|| l["service"].as_str()?.parse().ok()).flatten()
    })
}

/// The driver.
pub struct QemuDriver {
    cfg: QemuDriverConfig,
    instances: PathBuf,
    binary: QemuBinary,
    accel: ResolvedAccel,
    img: QemuImg,
    cache: Arc<ImageCache>,
    netns: Option<String>,
    /// The users guests run as (`None`: as the agent's user).
    users: Option<GuestUsers>,
    /// The periodic base image cache pass (aborted with the driver).
    aging: Mutex<Option<tokio::task::JoinHandle<()>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    last_seen: Mutex<HashMap<String, PowerState>>,
    /// Outgoing live migrations in flight (abort, force-complete).
    outgoing: Mutex<HashMap<String, Arc<live::Control>>>,
}

impl QemuDriver {
    /// Probes QEMU and prepares `<data_dir>/instances` (or `instances_path`).
    /// `netns`: the `[compute] host_netns` QEMU runs in, so its taps appear there.
    pub async fn new(
        cfg: QemuDriverConfig,
        data_dir: &Path,
        netns: Option<String>,
        source: Arc<dyn ImageSource>,
    ) -> anyhow::Result<Self> {
        let binary = match &cfg.binary {
            Some(p) => QemuBinary::probe(p).await?,
            None => QemuBinary::detect().await?,
        };
        let accel: Accel = cfg.accel.parse()?;
        let accel = accel.resolve();
        let force_raw = match cfg.image_cache_format.as_str() {
            "raw" => true,
            "qcow2" => false,
            other => anyhow::bail!("[compute.qemu] image_cache_format {other:?}: expected qcow2 or raw"),
        };
        let instances = cfg.instances_path.clone().unwrap_or_else(|| data_dir.join("instances"));
        // Claims name directories: make them absolute.
        let instances = std::path::absolute(&instances)?;
        let users = guest_users(&cfg, data_dir, &instances, accel)?;
        let img = cfg.qemu_img.clone().map(QemuImg::with_binary).unwrap_or_default();
        let cache = Arc::new(ImageCache::new(instances.join("_base"), source, img.clone(), force_raw));
        tracing::info!(
            binary = %binary.path.display(),
            version = ?binary.version,
            %accel,
            instances = %instances.display(),
            netns = ?netns,
            guest_users = users.is_some(),
            "qemu virt driver ready"
        );
        Ok(QemuDriver {
            cfg,
            instances,
            binary,
            accel,
            img,
            cache,
            netns,
            users,
            aging: Mutex::default(),
            locks: Mutex::default(),
            last_seen: Mutex::default(),
            outgoing: Mutex::default(),
        })
    }

    /// Where instance directories live.
    pub fn instances_path(&self) -> &Path {
        &self.instances
    }

    /// The accelerator in use.
    pub fn accel(&self) -> ResolvedAccel {
        self.accel
    }

    fn inst(&self, uuid: &str) -> Result<Instance, VirtError> {
        // The uuid becomes a path: only accept real UUIDs.
        uuid::Uuid::parse_str(uuid).map_err(|_| VirtError::NotFound(uuid.to_string()))?;
        Ok(Instance::new(&self.instances, uuid))
    }

    fn lock_for(&self, uuid: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(uuid.to_string()).or_default().clone()
    }

    /// How to start the guest in `inst` (which exists): in the host namespace, as its user.
    async fn spawn_options(&self, inst: &Instance) -> Result<SpawnOptions, VirtError> {
        let user = match &self.users {
            Some(users) => {
                let (users, root) = (users.clone(), inst.root().to_owned());
                Some(tokio::task::spawn_blocking(move || users.claim(&root)).await.map_err(failed)?.map_err(failed)?)
            }
            None => None,
        };
        Ok(SpawnOptions { netns: self.netns.clone(), user, ..Default::default() })
    }

    /// Forgets the uid of a guest whose directory is gone or going.
    fn release_user(&self, inst: &Instance) {
        if let Some(users) = &self.users {
            users.release(inst.root());
        }
    }

    fn binary(&self) -> QemuBinary {
        let mut b = self.binary.clone();
        b.sandbox &= self.cfg.sandbox;
        b
    }

    /// The real state from the files and QMP (caller holds the guest lock).
    async fn observe(&self, inst: &Instance, uuid: &str) -> Result<PowerState, VirtError> {
        if !inst.exists() {
            return Err(VirtError::NotFound(uuid.to_string()));
        }
        let state = if inst.dir.running_pid().is_some() {
            match QemuProcess::adopt(&inst.dir).await {
                Ok(mut p) => match p.status().await {
                    Ok(s) => match s.status {
                        RunState::Running => PowerState::Running,
                        RunState::Shutdown => PowerState::Shutdown,
                        RunState::GuestPanicked | RunState::InternalError | RunState::IoError => PowerState::Crashed,
                        _ => PowerState::Paused,
                    },
                    Err(_) => PowerState::Running,
                },
                Err(_) => PowerState::Running,
            }
        } else if inst.dir.is_suspended() {
            PowerState::Suspended
        } else {
            PowerState::Shutdown
        };
        self.last_seen.lock().insert(uuid.to_string(), state);
        Ok(state)
    }

    async fn boot_files(&self, spec: &GuestSpec) -> Result<BootFiles, VirtError> {
        let Some(image) = &spec.image else { return Ok(BootFiles::default()) };
        let get =
            |k: &str| image.properties.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);
        let mut b = BootFiles { cmdline: get("os_command_line"), ..Default::default() };
        if self.wants_uefi(spec)? {
            b.uefi_code = Some(self.cfg.uefi_code.clone());
        }
        if let Some(k) = get("kernel_id") {
            b.kernel = Some(self.cache.fetch(&k, ImageUse::Blob).await?.path);
            if let Some(r) = get("ramdisk_id") {
                b.ramdisk = Some(self.cache.fetch(&r, ImageUse::Blob).await?.path);
            }
        }
        Ok(b)
    }

    /// Whether the image asks for UEFI (`hw_firmware_type`), and this host has it.
    fn wants_uefi(&self, spec: &GuestSpec) -> Result<bool, VirtError> {
        let firmware = spec.image.as_ref().and_then(|i| i.properties.get("hw_firmware_type")).and_then(|v| v.as_str());
        match firmware {
            None | Some("") | Some("bios") => Ok(false),
            Some("uefi") => {
                for f in [&self.cfg.uefi_code, &self.cfg.uefi_vars_template] {
                    if !f.is_file() {
                        // Another host may have the firmware: reschedule.
                        return Err(failed(format!(
                            "the image asks for UEFI (hw_firmware_type=uefi) but this host has no {} \
                             (install the ovmf package, or set [compute.qemu] uefi_code/uefi_vars_template)",
                            f.display()
                        )));
                    }
                }
                Ok(true)
            }
            Some(other) => {
                Err(VirtError::BuildAborted(format!("hw_firmware_type {other:?} is not supported: use bios or uefi")))
            }
        }
    }

    /// Creates the disks the flavor and image call for that do not exist yet.
    async fn prepare_disks(&self, inst: &Instance, spec: &GuestSpec) -> Result<(), VirtError> {
        tokio::fs::create_dir_all(inst.root())
            .await
            .map_err(|e| failed(format!("creating {}: {e}", inst.root().display())))?;
        if self.wants_uefi(spec)? && !inst.nvram().exists() {
            // The guest's own EFI variables (boot entries): a copy of the empty store.
            let tmp = inst.nvram().with_extension("creating");
            tokio::fs::copy(&self.cfg.uefi_vars_template, &tmp)
                .await
                .map_err(|e| failed(format!("copying {}: {e}", self.cfg.uefi_vars_template.display())))?;
            tokio::fs::rename(&tmp, inst.nvram())
                .await
                .map_err(|e| failed(format!("renaming {}: {e}", tmp.display())))?;
        }
        if !inst.disk().exists() && !spec.volumes.iter().any(VolumeSpec::is_root) {
            let image = spec
                .image
                .as_ref()
                .ok_or_else(|| failed("the qemu driver cannot boot from a volume yet: the server has no image"))?;
            self.create_overlay(image, &inst.disk(), spec.flavor.root_gb).await?;
        }
        if spec.flavor.ephemeral_gb > 0 && !inst.ephemeral().exists() {
            self.img
                .create(&inst.ephemeral(), DiskFormat::Qcow2, spec.flavor.ephemeral_gb * GIB)
                .await
                .map_err(failed)?;
        }
        if spec.flavor.swap_mb > 0 && !inst.swap().exists() {
            self.img
                .create(&inst.swap(), DiskFormat::Qcow2, spec.flavor.swap_mb * 1024 * 1024)
                .await
                .map_err(failed)?;
        }
        if spec.config_drive && !inst.config_drive().exists() {
            let files = instance::metadata_facts(spec).tree().config_drive_files();
            instance::write_config_drive(&inst.config_drive(), &files).await?;
        }
        Ok(())
    }

    /// A qcow2 overlay on the cached base of `image`, grown to `root_gb` (0: the image's size).
    async fn create_overlay(&self, image: &ImageSpec, path: &Path, root_gb: u64) -> Result<(), VirtError> {
        let base = self.cache.fetch(&image.id, ImageUse::Disk).await?;
        let want = root_gb * GIB;
        if root_gb > 0 && base.virtual_size > want {
            // Nova's FlavorDiskSmallerThanImage, on the virtual size the API cannot know.
            return Err(VirtError::BuildAborted(format!(
                "Flavor's disk is too small for requested image. Flavor disk is {want} bytes, image is {} bytes.",
                base.virtual_size
            )));
        }
        let tmp = path.with_extension("creating");
        let _ = tokio::fs::remove_file(&tmp).await;
        let size = (root_gb > 0).then_some(want);
        self.img.create_overlay(&base.path, base.disk_format(), &tmp, size).await.map_err(failed)?;
        tokio::fs::rename(&tmp, path).await.map_err(|e| failed(format!("renaming {}: {e}", tmp.display())))
    }

    async fn start(&self, inst: &Instance, spec: &GuestSpec) -> Result<(), VirtError> {
        let boot = self.boot_files(spec).await?;
        let q = inst.qemu_spec(spec, self.accel, &boot)?;
        let opts = self.spawn_options(inst).await?;
        for v in &spec.volumes {
            volumes::lend(v, opts.user)?;
        }
        let p = QemuProcess::spawn(&self.binary(), &inst.dir, &q, &opts).await.map_err(failed)?;
        tracing::info!(uuid = %spec.uuid, pid = p.pid(), "guest started");
        self.last_seen.lock().insert(spec.uuid.clone(), PowerState::Running);
        Ok(())
    }

    async fn hard_stop(&self, inst: &Instance) -> Result<(), VirtError> {
        inst.dir.kill_running().await.map_err(failed).map(drop)
    }

    async fn graceful_stop(&self, inst: &Instance, within: Duration) -> Result<(), VirtError> {
        if inst.dir.running_pid().is_none() {
            return Ok(());
        }
        match QemuProcess::adopt(&inst.dir).await {
            Ok(p) => {
                let outcome = p.stop_graceful(within).await.map_err(failed)?;
                tracing::info!(dir = %inst.root().display(), ?outcome, "guest stopped");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(dir = %inst.root().display(), error = %e, "QMP unreachable; killing QEMU");
                self.hard_stop(inst).await
            }
        }
    }

    async fn remove_state(&self, inst: &Instance) {
        let _ = tokio::fs::remove_file(inst.dir.memory_state()).await;
    }

    /// Connects to a running guest, or says why not.
    async fn running(&self, inst: &Instance, uuid: &str, op: &str) -> Result<QemuProcess, VirtError> {
        if !inst.exists() {
            return Err(VirtError::NotFound(uuid.to_string()));
        }
        if inst.dir.running_pid().is_none() {
            let state = if inst.dir.is_suspended() { PowerState::Suspended } else { PowerState::Shutdown };
            return Err(VirtError::InvalidState { uuid: uuid.to_string(), state, op: op.to_string() });
        }
        QemuProcess::adopt(&inst.dir).await.map_err(failed)
    }

    async fn snapshot_locked(&self, inst: &Instance, uuid: &str, image_id: &str) -> Result<(), VirtError> {
        if !inst.disk().exists() {
            return Err(VirtError::NotFound(uuid.to_string()));
        }
        let tmp = inst.root().join("snapshot.qcow2");
        let _ = tokio::fs::remove_file(&tmp).await;
        // A consistent copy: vCPUs stopped (QEMU flushes its caches on `stop`) or no QEMU.
        let mut resume_after = None;
        if inst.dir.running_pid().is_some() {
            let mut p = QemuProcess::adopt(&inst.dir).await.map_err(failed)?;
            let status = p.status().await.map_err(failed)?;
            if status.status == RunState::Running {
                p.qmp().map_err(failed)?.stop().await.map_err(failed)?;
                resume_after = Some(p);
            }
        }
        let copied =
            self.img.convert_shared(&inst.disk(), OVERLAY_FORMAT, &tmp, DiskFormat::Qcow2).await.map_err(failed);
        if let Some(mut p) = resume_after {
            if let Err(e) = async { p.qmp()?.cont().await.map_err(Into::into) }.await {
                let e: stratus_qemu::process::ProcessError = e;
                tracing::error!(uuid, error = %e, "could not resume the guest after the snapshot copy");
            }
        }
        copied?;
        let uploaded = self.cache.source().upload(image_id, &tmp).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        uploaded
    }
}

fn host_resources(instances: &Path) -> HostResources {
    let vcpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kb| kb.parse::<i64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    // The disk instances can still use: free space of the file system holding them.
    let mut probe = instances.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let local_gb =
        rustix::fs::statvfs(&probe).map(|s| (s.f_bavail.saturating_mul(s.f_frsize) / GIB) as i64).unwrap_or(0);
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
impl VirtDriver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn hypervisor_type(&self) -> String {
        "QEMU".into()
    }

    fn hypervisor_version(&self) -> i64 {
        let (a, b, c) = self.binary.version;
        i64::from(a) * 1_000_000 + i64::from(b) * 1_000 + i64::from(c)
    }

    async fn init_host(&self, host: &str) -> Result<(), VirtError> {
        tokio::fs::create_dir_all(self.cache.dir())
            .await
            .map_err(|e| failed(format!("creating {}: {e}", self.cache.dir().display())))?;
        self.cache.clean_partials().await;
        if let Some(users) = &self.users {
            guest_user::allow_search(self.cache.dir()).map_err(failed)?;
            // Re-register the uid every guest directory already has (a lost registry
            // must not hand it to a newcomer first).
            let (users, instances) = (users.clone(), self.instances.clone());
            tokio::task::spawn_blocking(move || {
                for entry in std::fs::read_dir(&instances).into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    if uuid::Uuid::parse_str(&name.to_string_lossy()).is_ok() {
                        if let Err(e) = users.claim(&entry.path()) {
                            tracing::warn!(dir = %entry.path().display(), error = %e, "could not register the guest's user");
                        }
                    }
                }
            })
            .await
            .map_err(failed)?;
        }
        LOCAL_HOSTS.lock().insert(host.to_string(), self.instances.clone());
        if self.cfg.remove_unused_base_images && self.cfg.image_cache_manager_interval_secs > 0 {
            let mut aging = self.aging.lock();
            if aging.is_none() {
                *aging = Some(aging::spawn_periodic(
                    self.cache.clone(),
                    self.instances.clone(),
                    Duration::from_secs(self.cfg.image_cache_manager_interval_secs),
                    Duration::from_secs(self.cfg.remove_unused_original_minimum_age_seconds),
                ));
            }
        }
        for info in self.list_instances().await? {
            let pid = self.inst(&info.uuid)?.dir.running_pid();
            tracing::info!(host, uuid = %info.uuid, ?pid, state = ?info.power_state, "found guest at start-up");
        }
        Ok(())
    }

    async fn host_resources(&self) -> Result<HostResources, VirtError> {
        let dir = self.instances.clone();
        Ok(tokio::task::spawn_blocking(move || host_resources(&dir)).await.unwrap_or_default())
    }

    async fn list_instances(&self) -> Result<Vec<InstanceInfo>, VirtError> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(&self.instances).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(failed(format!("listing {}: {e}", self.instances.display()))),
        };
        while let Ok(Some(e)) = rd.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            if uuid::Uuid::parse_str(&name).is_err() {
                continue;
            }
            match self.get_info(&name).await {
                Ok(i) => out.push(i),
                Err(VirtError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        Ok(out)
    }

    async fn get_info(&self, uuid: &str) -> Result<InstanceInfo, VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let power_state = match lock.try_lock() {
            Ok(_g) => self.observe(&inst, uuid).await?,
            // An operation is running on this guest: answer from what was seen last.
            Err(_) => {
                if !inst.exists() {
                    return Err(VirtError::NotFound(uuid.to_string()));
                }
                self.last_seen.lock().get(uuid).copied().unwrap_or(PowerState::NoState)
            }
        };
        Ok(InstanceInfo { uuid: uuid.to_string(), power_state, rescued: inst.is_rescued() })
    }

    async fn spawn(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        if inst.dir.running_pid().is_some() {
            return Ok(());
        }
        let created = !inst.exists();
        let r = async {
            self.prepare_disks(&inst, spec).await?;
            self.start(&inst, spec).await
        }
        .await;
        if r.is_err() && created {
            let _ = inst.dir.kill_running().await;
            let _ = tokio::fs::remove_dir_all(inst.root()).await;
        }
        r
    }

    async fn destroy(&self, uuid: &str) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        if inst.exists() {
            self.hard_stop(&inst).await?;
            match tokio::fs::remove_dir_all(inst.root()).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(format!("removing {}: {e}", inst.root().display()))),
            }
            self.release_user(&inst);
            tracing::info!(uuid, "guest destroyed");
        }
        self.last_seen.lock().remove(uuid);
        Ok(())
    }

    async fn power_off(&self, uuid: &str, timeout: Duration) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        if !inst.exists() {
            return Err(VirtError::NotFound(uuid.to_string()));
        }
        let within = if timeout.is_zero() { Duration::from_secs(self.cfg.power_off_timeout_secs) } else { timeout };
        self.graceful_stop(&inst, within).await?;
        // A stopped guest starts from its disk, not from a saved memory state.
        self.remove_state(&inst).await;
        self.last_seen.lock().insert(uuid.to_string(), PowerState::Shutdown);
        Ok(())
    }

    async fn power_on(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        if inst.dir.running_pid().is_some() {
            return Ok(());
        }
        self.prepare_disks(&inst, spec).await?;
        if inst.dir.is_suspended() {
            return self.resume_locked(&inst, spec).await;
        }
        self.start(&inst, spec).await
    }

    async fn reboot(&self, spec: &GuestSpec, hard: bool) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        if !inst.exists() {
            return Err(VirtError::NotFound(spec.uuid.clone()));
        }
        if hard {
            self.hard_stop(&inst).await?;
            self.remove_state(&inst).await;
        } else {
            let state = self.observe(&inst, &spec.uuid).await?;
            if state != PowerState::Running {
                return Err(VirtError::InvalidState { uuid: spec.uuid.clone(), state, op: "reboot".into() });
            }
            self.graceful_stop(&inst, Duration::from_secs(self.cfg.soft_reboot_timeout_secs)).await?;
        }
        self.prepare_disks(&inst, spec).await?;
        self.start(&inst, spec).await
    }

    async fn pause(&self, uuid: &str) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        let mut p = self.running(&inst, uuid, "pause").await?;
        let s = p.status().await.map_err(failed)?;
        if s.status != RunState::Running {
            return Err(VirtError::InvalidState { uuid: uuid.into(), state: PowerState::Paused, op: "pause".into() });
        }
        p.qmp().map_err(failed)?.stop().await.map_err(failed)?;
        self.last_seen.lock().insert(uuid.to_string(), PowerState::Paused);
        Ok(())
    }

    async fn unpause(&self, uuid: &str) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        let mut p = self.running(&inst, uuid, "unpause").await?;
        let s = p.status().await.map_err(failed)?;
        if s.status != RunState::Paused {
            return Err(VirtError::InvalidState {
                uuid: uuid.into(),
                state: PowerState::Running,
                op: "unpause".into(),
            });
        }
        p.qmp().map_err(failed)?.cont().await.map_err(failed)?;
        self.last_seen.lock().insert(uuid.to_string(), PowerState::Running);
        Ok(())
    }

    async fn suspend(&self, uuid: &str) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        let p = self.running(&inst, uuid, "suspend").await?;
        p.suspend(Duration::from_secs(self.cfg.suspend_timeout_secs)).await.map_err(failed)?;
        self.last_seen.lock().insert(uuid.to_string(), PowerState::Suspended);
        Ok(())
    }

    async fn resume(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        if !inst.dir.is_suspended() {
            let state = self.observe(&inst, &spec.uuid).await?;
            return Err(VirtError::InvalidState { uuid: spec.uuid.clone(), state, op: "resume".into() });
        }
        self.resume_locked(&inst, spec).await
    }

    async fn rescue(&self, spec: &GuestSpec, rescue_image: Option<&ImageSpec>) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        if !inst.exists() {
            return Err(VirtError::NotFound(spec.uuid.clone()));
        }
        let image = rescue_image
            .or(spec.image.as_ref())
            .ok_or_else(|| failed("rescue needs an image: the server has none and none was given"))?;
        self.graceful_stop(&inst, Duration::from_secs(self.cfg.power_off_timeout_secs)).await?;
        self.remove_state(&inst).await;
        let _ = tokio::fs::remove_file(inst.rescue_disk()).await;
        self.create_overlay(image, &inst.rescue_disk(), 0).await?;
        // Direct kernel boot files come from the rescue image when it has them.
        let mut rescue_spec = spec.clone();
        rescue_spec.image = Some(image.clone());
        self.prepare_disks(&inst, spec).await?;
        self.start(&inst, &rescue_spec).await
    }

    async fn unrescue(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        if !inst.is_rescued() {
            let state = self.observe(&inst, &spec.uuid).await?;
            return Err(VirtError::InvalidState { uuid: spec.uuid.clone(), state, op: "unrescue".into() });
        }
        self.hard_stop(&inst).await?;
        let _ = tokio::fs::remove_file(inst.rescue_disk()).await;
        self.start(&inst, spec).await
    }

    async fn snapshot(&self, uuid: &str, image_id: &str) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        let started = std::time::Instant::now();
        self.snapshot_locked(&inst, uuid, image_id).await?;
        tracing::info!(uuid, image_id, ms = started.elapsed().as_millis() as u64, "snapshot uploaded");
        Ok(())
    }

    async fn rebuild(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        self.hard_stop(&inst).await?;
        for f in [
            inst.disk(),
            inst.ephemeral(),
            inst.swap(),
            inst.rescue_disk(),
            inst.config_drive(),
            inst.nvram(),
            inst.dir.memory_state(),
        ] {
            let _ = tokio::fs::remove_file(f).await;
        }
        // console.log stays: the guest's history is still its history.
        self.prepare_disks(&inst, spec).await?;
        self.start(&inst, spec).await
    }

    async fn trigger_crash_dump(&self, uuid: &str) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        let mut p = self.running(&inst, uuid, "trigger_crash_dump").await?;
        p.qmp().map_err(failed)?.execute("inject-nmi", None).await.map_err(failed).map(drop)
    }

    async fn console_output(&self, uuid: &str) -> Result<String, VirtError> {
        let inst = self.inst(uuid)?;
        if !inst.exists() {
            return Err(VirtError::NotFound(uuid.to_string()));
        }
        // The last MiB is plenty for `console log show` and bounds the reply.
        let raw = tokio::fs::read(inst.dir.paths().console).await.unwrap_or_default();
        let start = raw.len().saturating_sub(1024 * 1024);
        Ok(String::from_utf8_lossy(&raw[start..]).into_owned())
    }

    async fn vnc_console(&self, uuid: &str) -> Result<VncConsole, VirtError> {
        let inst = self.inst(uuid)?;
        if inst.dir.running_pid().is_none() {
            return Err(VirtError::NotFound(uuid.to_string()));
        }
        let unix = inst.dir.paths().vnc.to_string_lossy().into_owned();
        let Some(listen) = self.cfg.vnc_listen.clone() else {
            return Ok(VncConsole { host: "127.0.0.1".into(), port: 0, path: Some(unix) });
        };
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        let mut p = self.running(&inst, uuid, "vnc_console").await?;
        let q = p.qmp().map_err(failed)?;
        let port = match vnc_tcp_port(q).await? {
            Some(port) => port,
            None => {
                // Keep the unix socket (adopting agents and local tools use it) and add TCP.
                let addresses = serde_json::json!([
                    {"type": "unix", "path": unix},
                    {"type": "inet", "host": listen, "port": "0"},
                ]);
                q.execute("display-update", Some(serde_json::json!({"type": "vnc", "addresses": addresses})))
                    .await
                    .map_err(failed)?;
                vnc_tcp_port(q).await?.ok_or_else(|| failed("QEMU added no TCP VNC listener"))?
            }
        };
        let host = self.cfg.vnc_proxyclient_address.clone().unwrap_or(listen);
        Ok(VncConsole { host, port, path: None })
    }

    async fn migrate_disk_and_power_off(
        &self,
        spec: &GuestSpec,
        target: &MigrationTarget,
        peer: &dyn DiskPeer,
    ) -> Result<(), VirtError> {
        let uuid = spec.uuid.as_str();
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        let resize_dir = self.instances.join(format!("{uuid}_resize"));
        if !inst.exists() {
            // Replayed after a crash: the disks already went.
            return if resize_dir.exists() { Ok(()) } else { Err(VirtError::NotFound(uuid.to_string())) };
        }
        let local = local_host(&target.host).filter(|_| self.cfg.cold_migration_local_copy);
        let was_running = inst.dir.running_pid().is_some();
        self.graceful_stop(&inst, Duration::from_secs(self.cfg.power_off_timeout_secs)).await?;
        self.remove_state(&inst).await;
        let copied = match &local {
            Some(dest) => self.copy_local(&inst, uuid, dest).await,
            None => {
                let r = self.copy_to_peer(&inst, uuid, target, peer).await;
                if r.is_err() {
                    if let Err(e) = peer.end_incoming_disks(uuid, false).await {
                        tracing::warn!(uuid, target = %target.host, error = %e, "could not clean the destination");
                    }
                }
                r
            }
        };
        if let Err(e) = copied {
            // The move is rolled back: the guest runs here again as it did.
            if was_running {
                if let Err(e) = self.start(&inst, spec).await {
                    tracing::error!(uuid, error = %e, "could not restart the guest after a failed move");
                }
            }
            return Err(e);
        }
        let _ = tokio::fs::remove_dir_all(&resize_dir).await;
        tokio::fs::rename(inst.root(), &resize_dir)
            .await
            .map_err(|e| failed(format!("keeping the source copy: {e}")))?;
        // The kept copy is no guest's any more: its uid may go to another guest.
        if self.users.is_some() {
            std::os::unix::fs::lchown(&resize_dir, Some(0), Some(0))
                .map_err(|e| failed(format!("taking back {}: {e}", resize_dir.display())))?;
            self.release_user(&inst);
        }
        tracing::info!(uuid, target = %target.host, "disks handed to the destination; source copy kept until confirm");
        Ok(())
    }

    async fn prepare_incoming_disks(&self, uuid: &str, disks: &[IncomingDisk]) -> Result<u16, VirtError> {
        self.inst(uuid)?;
        if let Some(d) = disks.iter().find(|d| !cold::DISKS.contains(&d.name.as_str())) {
            return Err(failed(format!("{} is not a disk a migration carries", d.name)));
        }
        let incoming = self.instances.join(format!("{uuid}_incoming"));
        // Replayed: a server left from the last try goes first.
        cold::stop(&incoming).await;
        let _ = tokio::fs::remove_dir_all(&incoming).await;
        tokio::fs::create_dir_all(&incoming)
            .await
            .map_err(|e| failed(format!("creating {}: {e}", incoming.display())))?;
        let (min, max) = (self.cfg.live_migration_port_min, self.cfg.live_migration_port_max);
        let r = async {
            for d in disks {
                self.img
                    .create(&incoming.join(&d.name), cold::format_of(&d.name), d.virtual_size)
                    .await
                    .map_err(failed)?;
            }
            cold::serve_free(&incoming, disks, &self.cfg.live_migration_listen_address, min, max).await.map_err(failed)
        }
        .await;
        let port = match r {
            Ok(port) => port,
            Err(e) => {
                cold::stop(&incoming).await;
                let _ = tokio::fs::remove_dir_all(&incoming).await;
                return Err(e);
            }
        };
        tracing::info!(uuid, port, disks = disks.len(), "serving incoming disks over NBD");
        Ok(port)
    }

    async fn sweep_incoming(&self, expected: &std::collections::HashSet<String>) -> Vec<String> {
        cold::sweep_incoming(&self.instances, expected, cold::INCOMING_GRACE).await
    }

    async fn end_incoming_disks(&self, uuid: &str, keep: bool) -> Result<(), VirtError> {
        self.inst(uuid)?;
        let incoming = self.instances.join(format!("{uuid}_incoming"));
        cold::stop(&incoming).await;
        if keep {
            let _ = tokio::fs::remove_file(incoming.join(cold::NBD_LOG)).await;
        } else {
            let _ = tokio::fs::remove_dir_all(&incoming).await;
        }
        Ok(())
    }

    async fn finish_migration(&self, spec: &GuestSpec, power_on: bool) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        let incoming = self.instances.join(format!("{}_incoming", spec.uuid));
        if incoming.exists() {
            let _ = inst.dir.kill_running().await;
            let _ = tokio::fs::remove_dir_all(inst.root()).await;
            tokio::fs::rename(&incoming, inst.root()).await.map_err(|e| failed(format!("taking the disks: {e}")))?;
        } else if !inst.disk().exists() {
            return Err(failed(format!("no migrated disks for {} on this host", spec.uuid)));
        }
        let want = spec.flavor.root_gb * GIB;
        let info = self.img.info(&inst.disk(), Some(OVERLAY_FORMAT)).await.map_err(failed)?;
        if want > info.virtual_size {
            self.img.resize(&inst.disk(), OVERLAY_FORMAT, want, false).await.map_err(failed)?;
        }
        self.prepare_disks(&inst, spec).await?;
        if power_on && inst.dir.running_pid().is_none() {
            self.start(&inst, spec).await?;
        } else {
            self.last_seen.lock().insert(spec.uuid.clone(), PowerState::Shutdown);
        }
        Ok(())
    }

    async fn confirm_migration(&self, uuid: &str) -> Result<(), VirtError> {
        self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        match tokio::fs::remove_dir_all(self.instances.join(format!("{uuid}_resize"))).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed(format!("removing the source copy: {e}"))),
        }
    }

    async fn finish_revert_migration(&self, spec: &GuestSpec, power_on: bool) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        let resize_dir = self.instances.join(format!("{}_resize", spec.uuid));
        if resize_dir.exists() {
            let _ = inst.dir.kill_running().await;
            let _ = tokio::fs::remove_dir_all(inst.root()).await;
            tokio::fs::rename(&resize_dir, inst.root())
                .await
                .map_err(|e| failed(format!("restoring the source copy: {e}")))?;
        } else if !inst.exists() {
            return Err(VirtError::NotFound(spec.uuid.clone()));
        }
        if power_on && inst.dir.running_pid().is_none() {
            self.start(&inst, spec).await?;
        }
        Ok(())
    }

    async fn pre_live_migration(&self, spec: &GuestSpec, source: &str) -> Result<Option<IncomingPorts>, VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        if inst.dir.running_pid().is_some() {
            // Replayed after a restart: the incoming QEMU already waits, where it said.
            if let Ok(text) = tokio::fs::read_to_string(inst.root().join(live::INCOMING_MARKER)).await {
                let marker: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                return Ok(serde_json::from_value(marker["ports"].clone()).unwrap_or(None));
            }
            return Err(failed(format!("server {} already runs on this host", spec.uuid)));
        }
        let started = std::time::Instant::now();
        let r = self.prepare_incoming(&inst, spec, source).await;
        match &r {
            Ok(ports) => {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(uuid = %spec.uuid, ms, ?ports, "waiting for the live migration")
            }
            Err(_) => {
                let _ = inst.dir.kill_running().await;
                let _ = tokio::fs::remove_dir_all(inst.root()).await;
            }
        }
        r
    }

    async fn live_migration(&self, uuid: &str, t: &MigrationTarget) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        if !inst.exists() {
            // Replayed after the guest left: the destination has it.
            tracing::warn!(uuid, target = %t.host, "no guest here to migrate; assuming it already left");
            return Ok(());
        }
        let mut p = self.running(&inst, uuid, "live-migrate").await?;
        let ep = match (local_host(&t.host).filter(|_| self.cfg.live_migration_local_sockets), t.listen) {
            (Some(dir), _) => live::Endpoints::unix(&dir.join(uuid)),
            (None, Some(p)) => live::Endpoints::Tcp { host: t.host_ip.clone(), port: p.port, nbd_port: p.nbd_port },
            (None, None) => {
                // A destination that predates answering its ports listens where the uuid says.
                let port = live::port_for(uuid, self.cfg.live_migration_port_min, self.cfg.live_migration_port_max);
                live::Endpoints::Tcp { host: t.host_ip.clone(), port, nbd_port: port.saturating_add(1) }
            }
        };
        let settings = live::Settings {
            timeout: Duration::from_secs(self.cfg.live_migration_timeout_secs),
            downtime_ms: self.cfg.live_migration_downtime_ms,
            bandwidth_mib: self.cfg.live_migration_bandwidth_mib,
        };
        let ctl = Arc::new(live::Control::default());
        self.outgoing.lock().insert(uuid.to_string(), ctl.clone());
        tracing::info!(uuid, target = %t.host, uri = %ep.migrate_uri(), "live migration starts");
        let r = async {
            let q = p.qmp().map_err(failed)?;
            live::migrate_out(q, &ep, &ctl, &settings).await.map_err(|e| {
                // An abort asked for ends the migration however QEMU phrased it.
                if ctl.aborted() {
                    VirtError::Cancelled
                } else {
                    VirtError::Failed(e)
                }
            })
        }
        .await;
        self.outgoing.lock().remove(uuid);
        let stats = r?;
        tracing::info!(
            uuid,
            target = %t.host,
            wall_ms = stats.wall_ms,
            mirror_ms = stats.mirror_ms,
            total_ms = stats.total_ms,
            downtime_ms = stats.downtime_ms,
            ram_bytes = stats.ram_transferred,
            disks = ?stats.disks,
            forced = stats.forced,
            "live migration completed"
        );
        LAST_LIVE_MIGRATIONS.lock().insert(uuid.to_string(), stats);
        // The guest runs on the destination: this copy goes.
        if let Ok(q) = p.qmp() {
            let _ = q.quit().await;
        }
        if !p.wait_exit(Duration::from_secs(10)).await {
            let _ = p.kill().await;
        }
        let _ = inst.dir.kill_running().await;
        if let Err(e) = tokio::fs::remove_dir_all(inst.root()).await {
            tracing::warn!(uuid, error = %e, "could not remove the source directory after the migration");
        }
        self.release_user(&inst);
        self.last_seen.lock().remove(uuid);
        Ok(())
    }

    async fn post_live_migration_at_destination(&self, spec: &GuestSpec) -> Result<(), VirtError> {
        let inst = self.inst(&spec.uuid)?;
        let lock = self.lock_for(&spec.uuid);
        let _g = lock.lock().await;
        let mut p = self.running(&inst, &spec.uuid, "post-live-migration").await?;
        let state = live::finish_incoming(p.qmp().map_err(failed)?).await.map_err(VirtError::Failed)?;
        for f in [live::INCOMING_MARKER, live::MIGRATE_SOCK, live::NBD_SOCK] {
            let _ = tokio::fs::remove_file(inst.root().join(f)).await;
        }
        if self.users.is_some() {
            // Private again once the source is done with the sockets.
            use std::os::unix::fs::PermissionsExt;
            let _ = tokio::fs::set_permissions(inst.root(), std::fs::Permissions::from_mode(0o700)).await;
        }
        let power = if state == RunState::Running { PowerState::Running } else { PowerState::Paused };
        self.last_seen.lock().insert(spec.uuid.clone(), power);
        tracing::info!(uuid = %spec.uuid, pid = p.pid(), ?state, "live-migrated guest adopted");
        Ok(())
    }

    async fn attach_volume(&self, uuid: &str, volume: &VolumeSpec) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        if !inst.exists() {
            return Err(VirtError::NotFound(uuid.to_string()));
        }
        volumes::local_file(volume)?;
        if inst.dir.running_pid().is_none() {
            // Stopped or suspended: the next start opens it from the spec.
            return Ok(());
        }
        volumes::lend(volume, volumes::guest_of(inst.root()))?;
        let mut p = QemuProcess::adopt(&inst.dir).await.map_err(failed)?;
        let r = volumes::plug(p.qmp().map_err(failed)?, volume).await;
        if r.is_err() {
            volumes::give_back(volume);
        }
        tracing::info!(uuid, volume = %volume.volume_id, ok = r.is_ok(), "volume attach");
        r
    }

    async fn detach_volume(&self, uuid: &str, volume: &VolumeSpec) -> Result<(), VirtError> {
        let inst = self.inst(uuid)?;
        let lock = self.lock_for(uuid);
        let _g = lock.lock().await;
        if inst.dir.running_pid().is_some() {
            let mut p = QemuProcess::adopt(&inst.dir).await.map_err(failed)?;
            volumes::unplug(p.qmp().map_err(failed)?, volume, volumes::DETACH_WAIT).await?;
        }
        volumes::give_back(volume);
        tracing::info!(uuid, volume = %volume.volume_id, "volume detached");
        Ok(())
    }

    async fn release_volumes(&self, volumes: &[VolumeSpec]) {
        for v in volumes {
            volumes::give_back(v);
        }
    }

    async fn live_migration_abort(&self, uuid: &str) -> Result<(), VirtError> {
        let ctl = self.outgoing.lock().get(uuid).cloned();
        let ctl = ctl.ok_or_else(|| failed(format!("no live migration of {uuid} runs on this host")))?;
        ctl.abort();
        Ok(())
    }

    async fn live_migration_force_complete(&self, uuid: &str) -> Result<(), VirtError> {
        let ctl = self.outgoing.lock().get(uuid).cloned();
        let ctl = ctl.ok_or_else(|| failed(format!("no live migration of {uuid} runs on this host")))?;
        ctl.force_complete();
        Ok(())
    }
}

impl QemuDriver {
    /// Cold move between agents of this process: a flattened copy straight into the
    /// destination's `<uuid>_incoming`.
    async fn copy_local(&self, inst: &Instance, uuid: &str, dest: &Path) -> Result<(), VirtError> {
        // The copy is flattened (no backing file): the destination may have another base cache.
        let incoming = dest.join(format!("{uuid}_incoming"));
        let _ = tokio::fs::remove_dir_all(&incoming).await;
        tokio::fs::create_dir_all(&incoming)
            .await
            .map_err(|e| failed(format!("creating {}: {e}", incoming.display())))?;
        for name in ["disk", "disk.eph0", "disk.swap", "disk.config", "nvram.fd"] {
            let src = inst.root().join(name);
            if src.exists() {
                let part = incoming.join(format!("{name}.part"));
                if name == "disk.config" || name == "nvram.fd" {
                    tokio::fs::copy(&src, &part).await.map_err(|e| failed(format!("copying {name}: {e}")))?;
                } else {
                    self.img.convert(&src, OVERLAY_FORMAT, &part, DiskFormat::Qcow2, false).await.map_err(failed)?;
                }
                tokio::fs::rename(&part, incoming.join(name))
                    .await
                    .map_err(|e| failed(format!("moving {name}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Cold move to another machine: the destination serves empty disks over NBD, the
    /// guest view of each disk goes into them and is compared.
    async fn copy_to_peer(
        &self,
        inst: &Instance,
        uuid: &str,
        target: &MigrationTarget,
        peer: &dyn DiskPeer,
    ) -> Result<(), VirtError> {
        let started = std::time::Instant::now();
        let mut disks = Vec::new();
        for name in cold::DISKS {
            let path = inst.root().join(name);
            if path.exists() {
                let info = self.img.info(&path, Some(cold::format_of(name))).await.map_err(failed)?;
                disks.push(IncomingDisk { name: name.to_string(), virtual_size: info.virtual_size });
            }
        }
        let port = peer
            .prepare_incoming_disks(uuid, &disks)
            .await
            .map_err(|e| failed(format!("host {} could not take the disks: {e}", target.host)))?;
        for d in &disks {
            let url = cold::nbd_url(&target.host_ip, port, &d.name);
            let src = inst.root().join(&d.name);
            self.img.copy_into(&src, cold::format_of(&d.name), &url).await.map_err(failed)?;
            self.img
                .compare(&src, cold::format_of(&d.name), &url)
                .await
                .map_err(|e| failed(format!("the copy of {} differs: {e}", d.name)))?;
        }
        peer.end_incoming_disks(uuid, true)
            .await
            .map_err(|e| failed(format!("host {} could not close the disks: {e}", target.host)))?;
        let stats = cold::Stats {
            wall_ms: started.elapsed().as_millis() as u64,
            disks: disks.iter().map(|d| d.name.clone()).collect(),
            virtual_bytes: disks.iter().map(|d| d.virtual_size).sum(),
            port,
        };
        tracing::info!(uuid, target = %target.host, ?stats, "disks copied over NBD");
        LAST_COLD_COPIES.lock().insert(uuid.to_string(), stats);
        Ok(())
    }

    /// Destination of a live migration: the same devices as the source (disks on this
    /// host's copy of the base image), QEMU waiting for the stream, disks exported;
    /// answers the TCP ports it chose (None: unix sockets).
    async fn prepare_incoming(
        &self,
        inst: &Instance,
        spec: &GuestSpec,
        source: &str,
    ) -> Result<Option<IncomingPorts>, VirtError> {
        let _ = tokio::fs::remove_dir_all(inst.root()).await;
        self.prepare_disks(inst, spec).await?;
        // The serial log goes on where it was when the source is in this process (QEMU
        // appends to it); what the guest prints while its memory moves stays behind.
        if let Some(src) = local_host(source).filter(|_| self.cfg.live_migration_local_sockets) {
            let from = Instance::new(&src, &spec.uuid).dir.paths().console;
            if let Err(e) = tokio::fs::copy(&from, inst.dir.paths().console).await {
                tracing::warn!(uuid = %spec.uuid, error = %e, "could not carry the console log over");
            }
        }
        let boot = self.boot_files(spec).await?;
        let q = inst.qemu_spec(spec, self.accel, &boot)?;
        let opts = self.spawn_options(inst).await?;
        let mut p = QemuProcess::spawn_incoming(&self.binary(), &inst.dir, &q, &opts).await.map_err(failed)?;
        // A source in this process connects over unix sockets, others over TCP, to free
        // ports of the range that this host chooses and answers.
        let listen = if self.cfg.live_migration_local_sockets && local_host(source).is_some() {
            live::Listen::Unix(inst.root().to_path_buf())
        } else {
            live::Listen::Tcp {
                host: self.cfg.live_migration_listen_address.clone(),
                min: self.cfg.live_migration_port_min,
                max: self.cfg.live_migration_port_max,
            }
        };
        let (ep, disks) = live::prepare_incoming(p.qmp().map_err(failed)?, &listen)
            .await
            .map_err(|e| failed(format!("preparing the incoming migration: {e}")))?;
        if let (live::Endpoints::Unix { migrate, nbd }, Some(_)) = (&ep, &self.users) {
            // The source QEMU runs as another user: it may search this directory
            // (not list it; the disks stay 0600) and connect to the two sockets.
            use std::os::unix::fs::PermissionsExt;
            let open = |path: &Path, mode: u32| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| failed(format!("opening {} to the source: {e}", path.display())))
            };
            open(inst.root(), 0o711)?;
            open(migrate, 0o666)?;
            open(nbd, 0o666)?;
        }
        let ports = match &ep {
            live::Endpoints::Tcp { port, nbd_port, .. } => Some(IncomingPorts { port: *port, nbd_port: *nbd_port }),
            live::Endpoints::Unix { .. } => None,
        };
        let marker = serde_json::json!({"uri": ep.migrate_uri(), "ports": ports, "disks": disks});
        tokio::fs::write(inst.root().join(live::INCOMING_MARKER), marker.to_string())
            .await
            .map_err(|e| failed(format!("writing {}: {e}", live::INCOMING_MARKER)))?;
        self.last_seen.lock().insert(spec.uuid.clone(), PowerState::Paused);
        Ok(ports)
    }

    async fn resume_locked(&self, inst: &Instance, spec: &GuestSpec) -> Result<(), VirtError> {
        let boot = self.boot_files(spec).await?;
        let q = inst.qemu_spec(spec, self.accel, &boot)?;
        let within = Duration::from_secs(self.cfg.suspend_timeout_secs);
        let opts = self.spawn_options(inst).await?;
        let p = QemuProcess::resume(&self.binary(), &inst.dir, &q, &opts, within).await.map_err(failed)?;
        tracing::info!(uuid = %spec.uuid, pid = p.pid(), "guest resumed");
        self.last_seen.lock().insert(spec.uuid.clone(), PowerState::Running);
        Ok(())
    }
}

impl Drop for QemuDriver {
    fn drop(&mut self) {
        if let Some(h) = self.aging.lock().take() {
            h.abort();
        }
    }
}

/// Instance directories of the qemu agents in this process, by host name: how a cold
/// migration between two agents of one process finds the destination's directory.
static LOCAL_HOSTS: std::sync::LazyLock<Mutex<HashMap<String, PathBuf>>> = std::sync::LazyLock::new(Default::default);

fn local_host(host: &str) -> Option<PathBuf> {
    LOCAL_HOSTS.lock().get(host).cloned()
}

/// The last copy of each server's disks to another machine by an agent of this process.
static LAST_COLD_COPIES: std::sync::LazyLock<Mutex<HashMap<String, cold::Stats>>> =
    std::sync::LazyLock::new(Default::default);

/// What the last cold move of `uuid` over NBD from an agent of this process measured.
pub fn last_cold_copy(uuid: &str) -> Option<cold::Stats> {
    LAST_COLD_COPIES.lock().get(uuid).cloned()
}

/// The measurements of the last live migration of each server that left this process
/// (also logged): for operators and for the tests' numbers.
static LAST_LIVE_MIGRATIONS: std::sync::LazyLock<Mutex<HashMap<String, live::Stats>>> =
    std::sync::LazyLock::new(Default::default);

/// What the last live migration of `uuid` from an agent of this process measured.
pub fn last_live_migration(uuid: &str) -> Option<live::Stats> {
    LAST_LIVE_MIGRATIONS.lock().get(uuid).cloned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_tcp_vnc_port_comes_from_the_inet_listener() {
        // QEMU 10's answer after `display-update` added a TCP listener to the unix one.
        let servers = json!([{"auth": "none", "clients": [], "id": "default", "server": [
            {"auth": "none", "family": "ipv4", "service": "43147", "host": "127.0.0.1", "websocket": false},
            {"auth": "none", "family": "unix", "service": "/i/vnc.sock", "host": "", "websocket": false},
        ]}]);
        assert_eq!(super::tcp_port_of(&servers), Some(43147));
        let unix_only = json!([{"id": "default", "server": [
            {"auth": "none", "family": "unix", "service": "/i/vnc.sock", "host": "", "websocket": false},
        ]}]);
        assert_eq!(super::tcp_port_of(&unix_only), None);
    }
}
