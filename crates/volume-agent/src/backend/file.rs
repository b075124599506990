//! The `file` backend: volumes as qcow2 files in one directory.
//!
//! Snapshots and clones copy nothing: they are qcow2 backing chains. The directory
//! holds, by name:
//! - `volume-<id>`: a volume's active image (always this name, so a volume's location
//!   never changes and the controller never has to learn a new one);
//! - `snapshot-<id>`: the frozen image a snapshot keeps (read-only from then on);
//! - `layer-<id>`: a frozen image shared by a volume and its clone `<id>`;
//! - `image-<id>`: an image's data as a qcow2 layer, shared by every volume made from it
//!   and kept for a while after the last one goes (a cache, like Nova's `_base`);
//! - `snapshot-<id>.deleted`: the snapshot is gone but its image still backs others;
//! - `volume-<id>.tmp`, `volume-<id>.part`, `image-<id>.part`: work in progress.
//!
//! Freezing a volume (for a snapshot or a clone) builds the new active image under
//! `.tmp` with the frozen name as its backing, renames the active image to the frozen
//! name, then the `.tmp` to the active name. A crash between the two renames leaves a
//! `.tmp` and no active image, and is rolled forward; a `.tmp` beside an active image
//! never got past its first rename and is dropped ([`FileBackend::repair`]). A frozen
//! file is removed only when nothing names it as backing and no snapshot keeps it
//! (mark and sweep over the qcow2 headers, [`FileBackend::collect`]).
//!
//! Hosts other than this one reach a volume over NBD ([`crate::export`]); this host's
//! hypervisor opens the file itself.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use stratus_volume_contract::steps::{run, Faults, NoProgress, Outcome, Performer, Step, StepFuture, StepTable};
use stratus_volume_contract::{
    AgentError, AttachMode, Connection, Connector, Expected, PoolReport, SnapshotCreated, SnapshotRef, VolumeCreated,
    VolumeRef, VolumeSource, VolumeStats, GIB,
};
use tokio::process::Command;

use super::{io_err, Backend, DataFormat, ReconcileReport};
use crate::config::FileConfig;
use crate::export::Exports;
use crate::images::ImageStore;
use crate::qcow2;

/// The `file` backend of one agent.
pub struct FileBackend {
    dir: PathBuf,
    cfg: FileConfig,
    host: String,
    exports: Exports,
    /// Operations take it shared; reconciliation (which removes what it does not
    /// expect and work in progress left by a crash) takes it exclusive.
    ops: tokio::sync::RwLock<()>,
    /// One lock per volume or image id, so operations on one volume run one at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One garbage collection at a time.
    gc: tokio::sync::Mutex<()>,
    /// Faults tests inject into the step tables below.
    faults: Faults,
}

/// The context of one multi-step file operation (owned, so the step tables are static).
struct FileOp {
    dir: PathBuf,
    /// The volume whose active image changes.
    id: String,
    /// Name the volume's content is frozen under (freeze), or the layer a new volume is
    /// built on (create), or the snapshot a revert goes back to.
    backing: Mutex<Option<String>>,
    /// Virtual size in bytes of the image being built.
    size: Mutex<u64>,
    /// Raw data a restore imports.
    import: Option<PathBuf>,
}

impl FileOp {
    fn new(dir: &Path, id: &str) -> FileOp {
        FileOp {
            dir: dir.to_path_buf(),
            id: id.to_string(),
            backing: Mutex::new(None),
            size: Mutex::new(0),
            import: None,
        }
    }
    fn active(&self) -> PathBuf {
        self.dir.join(format!("volume-{}", self.id))
    }
    fn tmp(&self) -> PathBuf {
        self.dir.join(format!("volume-{}.tmp", self.id))
    }
    fn part(&self) -> PathBuf {
        self.dir.join(format!("volume-{}.part", self.id))
    }
    fn backing(&self) -> String {
        self.backing.lock().clone().unwrap_or_default()
    }
}

type FileStep = Step<FileOp, AgentError>;

/// An overlay `volume-<id>.tmp` of the current size, backed by the (future) frozen name.
fn overlay_on_backing(c: &FileOp) -> StepFuture<'_, AgentError> {
    Box::pin(async move {
        let size = c.size.lock().to_string();
        let (b, t) = (c.backing(), c.tmp());
        qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", &b, "-F", "qcow2", &t.to_string_lossy(), &size]).await
    })
}

fn drop_tmp(c: &FileOp) -> StepFuture<'_, AgentError> {
    Box::pin(async move { remove(&c.tmp()).map(drop) })
}

/// The tmp image becomes the active one (one atomic rename, replacing any).
fn promote_tmp(c: &FileOp) -> StepFuture<'_, AgentError> {
    Box::pin(async move { rename(&c.tmp(), &c.active()) })
}

/// Freezing a volume's content under a new name (snapshots, clones).
static FREEZE: StepTable<FileOp, AgentError> = StepTable {
    name: "file.freeze",
    steps: &[
        FileStep { name: "overlay", performer: Performer::Agent, run: overlay_on_backing, undo: Some(drop_tmp) },
        FileStep {
            name: "freeze",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let frozen = c.dir.join(c.backing());
                    rename(&c.active(), &frozen)?;
                    freeze_mode(&frozen);
                    Ok(())
                })
            },
            undo: Some(|c| {
                Box::pin(async move {
                    let frozen = c.dir.join(c.backing());
                    if exists(&frozen) && !exists(&c.active()) {
                        rename(&frozen, &c.active())?;
                    }
                    Ok(())
                })
            }),
        },
        FileStep { name: "promote", performer: Performer::Agent, run: promote_tmp, undo: None },
    ],
};

/// Building a new volume (its source, if any, is ready as `backing`).
static CREATE: StepTable<FileOp, AgentError> = StepTable {
    name: "file.create_volume",
    steps: &[
        FileStep {
            name: "build",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    let (p, s) = (c.part(), c.size.lock().to_string());
                    let p = p.to_string_lossy();
                    let backing = c.backing.lock().clone();
                    match backing {
                        None => qemu_img(&["create", "-q", "-f", "qcow2", &p, &s]).await,
                        Some(b) => {
                            qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", &b, "-F", "qcow2", &p, &s]).await
                        }
                    }
                })
            },
            undo: Some(|c| Box::pin(async move { remove(&c.part()).map(drop) })),
        },
        FileStep {
            name: "publish",
            performer: Performer::Agent,
            run: |c| Box::pin(async move { rename(&c.part(), &c.active()) }),
            undo: Some(|c| Box::pin(async move { remove(&c.active()).map(drop) })),
        },
    ],
};

/// Replacing a volume's content: with a fresh overlay on a snapshot (revert) or with
/// imported raw data (restore).
static REPLACE: StepTable<FileOp, AgentError> = StepTable {
    name: "file.replace",
    steps: &[
        FileStep {
            name: "prepare",
            performer: Performer::Agent,
            run: |c| {
                Box::pin(async move {
                    match &c.import {
                        None => overlay_on_backing(c).await,
                        Some(src) => {
                            let t = c.tmp();
                            let t = t.to_string_lossy();
                            qemu_img(&["convert", "-q", "-f", "raw", "-O", "qcow2", &src.to_string_lossy(), &t])
                                .await?;
                            let want = *c.size.lock();
                            if FileBackend::size_of(&c.tmp())? < want {
                                qemu_img(&["resize", "-q", "-f", "qcow2", &t, &want.to_string()]).await?;
                            }
                            Ok(())
                        }
                    }
                })
            },
            undo: Some(drop_tmp),
        },
        FileStep { name: "replace", performer: Performer::Agent, run: promote_tmp, undo: None },
    ],
};

/// A step table's outcome as the operation's result (an injected crash leaves
/// everything where it was, as a real one would).
fn settle(o: Outcome<AgentError>) -> Result<(), AgentError> {
    match o {
        Outcome::Done => Ok(()),
        Outcome::Failed { error, .. } => Err(error),
        Outcome::Crashed { step } => Err(AgentError::Failed(format!("crashed at {step} (injected)"))),
    }
}

/// Ids become file names: nothing but letters, digits and dashes.
fn check_id(id: &str) -> Result<(), AgentError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(AgentError::Incompatible(format!("{id:?} is not a valid id")));
    }
    Ok(())
}

/// Runs `qemu-img` with `args`.
async fn qemu_img(args: &[&str]) -> Result<(), AgentError> {
    let out = Command::new("qemu-img")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| AgentError::Failed(format!("running qemu-img: {e} (install qemu-utils)")))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let no_space = err.contains("No space left");
        let msg = format!("qemu-img {} failed: {err}", args.first().copied().unwrap_or_default());
        Err(if no_space { AgentError::NoSpace(msg) } else { AgentError::Failed(msg) })
    }
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn remove(p: &Path) -> Result<bool, AgentError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(AgentError::Failed(format!("removing {}: {e}", p.display()))),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), AgentError> {
    std::fs::rename(from, to).map_err(io_err(format!("renaming {} to {}", from.display(), to.display())))
}

/// Read-only from now on (a frozen layer is never written again).
fn freeze_mode(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o444));
}

impl FileBackend {
    /// The backend over `cfg.path` (created if missing), on `host`.
    pub fn new(cfg: FileConfig, host: &str, exports: Exports) -> Result<FileBackend, AgentError> {
        Self::with_faults(cfg, host, exports, Faults::default())
    }

    /// The backend with faults injected into its step tables (tests).
    pub fn with_faults(
        cfg: FileConfig,
        host: &str,
        exports: Exports,
        faults: Faults,
    ) -> Result<FileBackend, AgentError> {
        let dir = cfg.path.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(FileBackend {
            dir,
            cfg,
            host: host.to_string(),
            exports,
            ops: Default::default(),
            locks: Default::default(),
            gc: Default::default(),
            faults,
        })
    }

    /// The directory of the volumes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active(&self, id: &str) -> PathBuf {
        self.dir.join(format!("volume-{id}"))
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(key.to_string()).or_default().clone()
    }

    fn forget_lock(&self, key: &str) {
        let mut locks = self.locks.lock();
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    /// Finishes or rolls back a freeze or a replacement a crash interrupted for volume
    /// `id` (see the module doc). Answers what it did.
    fn repair_volume(&self, id: &str) -> Result<Option<String>, AgentError> {
        let active = self.active(id);
        let tmp = self.dir.join(format!("volume-{id}.tmp"));
        if !exists(&tmp) {
            return Ok(None);
        }
        if exists(&active) {
            remove(&tmp)?;
            Ok(Some(format!("volume {id}: dropped an unfinished new image")))
        } else {
            rename(&tmp, &active)?;
            Ok(Some(format!("volume {id}: finished putting its new image in place")))
        }
    }

    /// The guest-visible size of a qcow2 file.
    fn size_of(p: &Path) -> Result<u64, AgentError> {
        match qcow2::virtual_size(p) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(AgentError::Failed(format!("{} is not a qcow2 image", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(AgentError::NotFound(format!("{} does not exist", p.display())))
            }
            Err(e) => Err(AgentError::Failed(format!("reading {}: {e}", p.display()))),
        }
    }

    /// Freezes volume `id`'s current content under `frozen` (a file name in the
    /// directory) and gives the volume a new, empty active image on top of it.
    /// Idempotent: a volume already frozen under that name is left as it is.
    async fn freeze(&self, id: &str, frozen: &str) -> Result<(), AgentError> {
        let active = self.active(id);
        let frozen_path = self.dir.join(frozen);
        self.repair_volume(id)?;
        if exists(&frozen_path) {
            return Ok(());
        }
        if !self.exports.serving(&active).is_empty() {
            return Err(AgentError::InvalidState(format!(
                "volume {id} is exported to another host; it cannot be frozen while attached there"
            )));
        }
        let op = FileOp::new(&self.dir, id);
        *op.size.lock() = Self::size_of(&active)?;
        *op.backing.lock() = Some(frozen.to_string());
        settle(run(&FREEZE, &op, &NoProgress, &self.faults).await)
    }

    /// An image's data as a qcow2 layer `image-<id>` (downloaded once, then shared).
    async fn image_layer(
        &self,
        image: &stratus_volume_contract::ImageRef,
        images: &dyn ImageStore,
    ) -> Result<String, AgentError> {
        check_id(&image.id)?;
        let name = format!("image-{}", image.id);
        let lock = self.lock(&name);
        let _g = lock.lock().await;
        let path = self.dir.join(&name);
        if exists(&path) {
            // A cache hit keeps the layer young (see `collect`).
            let _ = std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
            return Ok(name);
        }
        let download = self.dir.join(format!("{name}.download"));
        let part = self.dir.join(format!("{name}.part"));
        let result = async {
            images.download(&image.id, &download).await?;
            let declared = DataFormat::from_disk_format(&image.disk_format)?;
            // The declared format only: probing would let a raw image pose as qcow2.
            let info =
                stratus_qemu::img::QemuImg::default().info(&download, Some(qemu_format(declared))).await.map_err(
                    |e| AgentError::Failed(format!("image {} is not a valid {}: {e}", image.id, declared.as_str())),
                )?;
            info.check_safe_upload(Some(declared.as_str()))
                .map_err(|e| AgentError::Failed(format!("image {} refused: {e}", image.id)))?;
            let (src, dst) = (download.to_string_lossy(), part.to_string_lossy());
            qemu_img(&["convert", "-q", "-f", declared.as_str(), "-O", "qcow2", &src, &dst]).await?;
            rename(&part, &path)?;
            freeze_mode(&path);
            Ok(())
        }
        .await;
        let _ = remove(&download);
        let _ = remove(&part);
        result.map(|()| name)
    }

    /// Every file of the directory, by name.
    fn listing(&self) -> Result<Vec<String>, AgentError> {
        let rd = std::fs::read_dir(&self.dir).map_err(io_err(format!("listing {}", self.dir.display())))?;
        Ok(rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
    }

    /// Mark and sweep: removes frozen layers nothing uses, released snapshots nothing
    /// uses, and image layers nothing used for `image_cache_max_age_secs`. Every qcow2
    /// file of the directory (work in progress included) protects its backing chain.
    pub async fn collect(&self) -> Result<Vec<String>, AgentError> {
        let _g = self.gc.lock().await;
        let names = self.listing()?;
        let all: HashSet<&str> = names.iter().map(String::as_str).collect();
        let released: HashSet<&str> =
            names.iter().filter_map(|n| n.strip_suffix(".deleted")).filter(|n| all.contains(n)).collect();
        let mut referenced: HashSet<String> = HashSet::new();
        for n in &names {
            if n.ends_with(".deleted") || n.ends_with(".download") {
                continue;
            }
            if let Ok(Some(b)) = qcow2::backing_file(&self.dir.join(n)) {
                referenced.insert(b);
            }
        }
        let max_age = Duration::from_secs(self.cfg.image_cache_max_age_secs);
        let mut removed = Vec::new();
        for n in &names {
            let path = self.dir.join(n);
            let is_ref = referenced.contains(n.as_str());
            let gone = if let Some(of) = n.strip_suffix(".deleted") {
                !all.contains(of)
            } else if let Some(snap) = n.strip_prefix("snapshot-") {
                !snap.contains('.') && released.contains(n.as_str()) && !is_ref
            } else if n.starts_with("layer-") {
                !is_ref
            } else if n.starts_with("image-") && !n.contains('.') {
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                !is_ref && age >= max_age
            } else {
                false
            };
            if gone && remove(&path)? {
                let _ = remove(&self.dir.join(format!("{n}.deleted")));
                removed.push(n.clone());
            }
        }
        if !removed.is_empty() {
            tracing::info!(dir = %self.dir.display(), ?removed, "file backend: collected unused layers");
        }
        Ok(removed)
    }

    fn filesystem(&self) -> Result<(f64, f64), AgentError> {
        let st = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| AgentError::Failed(format!("statvfs {}: {e}", self.dir.display())))?;
        let frsize = st.fragment_size() as f64;
        let total = st.blocks() as f64 * frsize / GIB as f64;
        let free = st.blocks_available() as f64 * frsize / GIB as f64;
        Ok((total, free))
    }

    /// True when `connector` is this host (its hypervisor opens the file itself).
    fn is_local(&self, connector: &Connector) -> bool {
        connector.host == self.host
    }
}

fn qemu_format(f: DataFormat) -> stratus_qemu::cmdline::DiskFormat {
    match f {
        DataFormat::Raw => stratus_qemu::cmdline::DiskFormat::Raw,
        DataFormat::Qcow2 => stratus_qemu::cmdline::DiskFormat::Qcow2,
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn driver(&self) -> &'static str {
        "file"
    }

    fn volume_backend_name(&self) -> &str {
        &self.cfg.volume_backend_name
    }

    fn storage_protocol(&self) -> &'static str {
        "file"
    }

    async fn pools(&self) -> Result<Vec<PoolReport>, AgentError> {
        let (fs_total, free) = self.filesystem()?;
        let total = if self.cfg.total_capacity_gb > 0 { self.cfg.total_capacity_gb as f64 } else { fs_total };
        let mut provisioned = 0u64;
        for n in self.listing()? {
            if n.starts_with("volume-") && !n.contains('.') {
                provisioned += qcow2::virtual_size(&self.dir.join(&n)).ok().flatten().unwrap_or(0);
            }
        }
        Ok(vec![PoolReport {
            name: "volumes".into(),
            total_capacity_gb: (total * 100.0).round() / 100.0,
            free_capacity_gb: (free.min(total) * 100.0).round() / 100.0,
            provisioned_capacity_gb: provisioned as f64 / GIB as f64,
            reserved_percentage: self.cfg.reserved_percentage,
            max_over_subscription_ratio: self.cfg.max_over_subscription_ratio,
            thin_provisioning_support: true,
            thick_provisioning_support: false,
            multiattach: false,
            online_extend_support: true,
            revert_to_snapshot_support: true,
            qos_support: true,
        }])
    }

    async fn create_volume(
        &self,
        volume: &VolumeRef,
        source: &VolumeSource,
        images: &dyn ImageStore,
    ) -> Result<VolumeCreated, AgentError> {
        check_id(&volume.id)?;
        let _ops = self.ops.read().await;
        let lock = self.lock(&volume.id);
        let _g = lock.lock().await;
        let active = self.active(&volume.id);
        let location = VolumeCreated { location: format!("volume-{}", volume.id) };
        if exists(&active) {
            return Ok(location);
        }
        let part = self.dir.join(format!("volume-{}.part", volume.id));
        remove(&part)?;
        let size = volume.size_gb * GIB;
        let backing = match source {
            VolumeSource::Blank => None,
            VolumeSource::Snapshot { snapshot } => {
                check_id(&snapshot.id)?;
                let name = format!("snapshot-{}", snapshot.id);
                if !exists(&self.dir.join(&name)) {
                    return Err(AgentError::NotFound(format!("snapshot {} has no data on this backend", snapshot.id)));
                }
                Some(name)
            }
            VolumeSource::Volume { volume: src } => {
                check_id(&src.id)?;
                let src_lock = self.lock(&src.id);
                let _s = src_lock.lock().await;
                let name = format!("layer-{}", volume.id);
                self.freeze(&src.id, &name).await?;
                Some(name)
            }
            VolumeSource::Image { image } => {
                let name = self.image_layer(image, images).await?;
                let vsize = Self::size_of(&self.dir.join(&name))?;
                if vsize > size {
                    return Err(AgentError::InvalidState(format!(
                        "image {} is {vsize} bytes, larger than the {} GiB volume",
                        image.id, volume.size_gb
                    )));
                }
                Some(name)
            }
        };
        let op = FileOp::new(&self.dir, &volume.id);
        let mut want = size;
        if let Some(b) = &backing {
            want = want.max(Self::size_of(&self.dir.join(b))?);
        }
        *op.size.lock() = want;
        *op.backing.lock() = backing.clone();
        settle(run(&CREATE, &op, &NoProgress, &self.faults).await)?;
        tracing::info!(volume = %volume.id, backing = ?backing, "file backend: volume created");
        Ok(location)
    }

    async fn delete_volume(&self, volume: &VolumeRef) -> Result<(), AgentError> {
        check_id(&volume.id)?;
        {
            let _ops = self.ops.read().await;
            let lock = self.lock(&volume.id);
            let _g = lock.lock().await;
            let active = self.active(&volume.id);
            for a in self.exports.serving(&active) {
                self.exports.stop(&a).await?;
            }
            for suffix in ["", ".tmp", ".part"] {
                remove(&self.dir.join(format!("volume-{}{suffix}", volume.id)))?;
            }
        }
        self.forget_lock(&volume.id);
        self.collect().await?;
        Ok(())
    }

    async fn extend_volume(&self, volume: &VolumeRef, new_size_gb: u64) -> Result<VolumeCreated, AgentError> {
        check_id(&volume.id)?;
        let _ops = self.ops.read().await;
        let lock = self.lock(&volume.id);
        let _g = lock.lock().await;
        self.repair_volume(&volume.id)?;
        let active = self.active(&volume.id);
        let now = Self::size_of(&active)?;
        let want = new_size_gb * GIB;
        if want < now {
            return Err(AgentError::InvalidState(format!(
                "volume {} is already {} GiB; volumes do not shrink",
                volume.id,
                now / GIB
            )));
        }
        if want > now {
            let (p, s) = (active.to_string_lossy(), want.to_string());
            qemu_img(&["resize", "-q", "-f", "qcow2", &p, &s]).await?;
        }
        Ok(VolumeCreated { location: format!("volume-{}", volume.id) })
    }

    async fn create_snapshot(&self, snapshot: &SnapshotRef, volume: &VolumeRef) -> Result<SnapshotCreated, AgentError> {
        check_id(&snapshot.id)?;
        check_id(&volume.id)?;
        let _ops = self.ops.read().await;
        let lock = self.lock(&volume.id);
        let _g = lock.lock().await;
        let name = format!("snapshot-{}", snapshot.id);
        self.freeze(&volume.id, &name).await?;
        Ok(SnapshotCreated { location: name, volume_location: format!("volume-{}", volume.id) })
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotRef, _volume: &VolumeRef) -> Result<(), AgentError> {
        check_id(&snapshot.id)?;
        {
            let _ops = self.ops.read().await;
            let name = format!("snapshot-{}", snapshot.id);
            if exists(&self.dir.join(&name)) {
                std::fs::write(self.dir.join(format!("{name}.deleted")), b"")
                    .map_err(io_err(format!("releasing snapshot {}", snapshot.id)))?;
            }
        }
        self.collect().await?;
        Ok(())
    }

    async fn revert_to_snapshot(
        &self,
        volume: &VolumeRef,
        snapshot: &SnapshotRef,
    ) -> Result<VolumeCreated, AgentError> {
        check_id(&volume.id)?;
        check_id(&snapshot.id)?;
        let _ops = self.ops.read().await;
        let lock = self.lock(&volume.id);
        let _g = lock.lock().await;
        self.repair_volume(&volume.id)?;
        let name = format!("snapshot-{}", snapshot.id);
        if !exists(&self.dir.join(&name)) {
            return Err(AgentError::NotFound(format!("snapshot {} has no data on this backend", snapshot.id)));
        }
        let active = self.active(&volume.id);
        let op = FileOp::new(&self.dir, &volume.id);
        *op.size.lock() = Self::size_of(&active)?.max(Self::size_of(&self.dir.join(&name))?);
        *op.backing.lock() = Some(name);
        // Replacing the active image is one atomic rename; its old content goes.
        settle(run(&REPLACE, &op, &NoProgress, &self.faults).await)?;
        Ok(VolumeCreated { location: format!("volume-{}", volume.id) })
    }

    async fn export_data(
        &self,
        volume: &VolumeRef,
        snapshot: Option<&SnapshotRef>,
        dst: &Path,
        format: DataFormat,
    ) -> Result<(), AgentError> {
        check_id(&volume.id)?;
        let _ops = self.ops.read().await;
        let src = match snapshot {
            Some(s) => {
                check_id(&s.id)?;
                self.dir.join(format!("snapshot-{}", s.id))
            }
            None => self.active(&volume.id),
        };
        if !exists(&src) {
            return Err(AgentError::NotFound(format!("{} has no data on this backend", src.display())));
        }
        let (s, d) = (src.to_string_lossy(), dst.to_string_lossy());
        // `-U`: a frozen snapshot may be the backing of a running guest's image, which
        // QEMU holds a shared lock on; reading it is safe.
        qemu_img(&["convert", "-q", "-U", "-f", "qcow2", "-O", format.as_str(), &s, &d]).await
    }

    async fn import_data(&self, volume: &VolumeRef, src: &Path) -> Result<(), AgentError> {
        check_id(&volume.id)?;
        let _ops = self.ops.read().await;
        let lock = self.lock(&volume.id);
        let _g = lock.lock().await;
        self.repair_volume(&volume.id)?;
        let mut op = FileOp::new(&self.dir, &volume.id);
        op.import = Some(src.to_path_buf());
        *op.size.lock() = Self::size_of(&self.active(&volume.id))?;
        settle(run(&REPLACE, &op, &NoProgress, &self.faults).await)
    }

    async fn initialize_connection(
        &self,
        volume: &VolumeRef,
        attachment_id: &str,
        connector: &Connector,
        mode: AttachMode,
    ) -> Result<Connection, AgentError> {
        check_id(&volume.id)?;
        let _ops = self.ops.read().await;
        let active = self.active(&volume.id);
        if !exists(&active) {
            return Err(AgentError::NotFound(format!("volume {} has no data on this backend", volume.id)));
        }
        if self.is_local(connector) {
            return Ok(Connection::File { path: active.to_string_lossy().into_owned(), format: "qcow2".into() });
        }
        self.exports.start(attachment_id, &active, &volume.id, mode == AttachMode::Ro).await
    }

    async fn terminate_connection(&self, _volume: &VolumeRef, attachment_id: &str) -> Result<(), AgentError> {
        self.exports.stop(attachment_id).await
    }

    async fn volume_stats(&self, volume: &VolumeRef) -> Result<VolumeStats, AgentError> {
        check_id(&volume.id)?;
        let active = self.active(&volume.id);
        let size_bytes = Self::size_of(&active)?;
        let allocated_bytes = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&active).map(|m| m.blocks() * 512).unwrap_or(0)
        };
        Ok(VolumeStats { size_bytes, allocated_bytes })
    }

    async fn reconcile(&self, expected: &Expected) -> Result<ReconcileReport, AgentError> {
        let mut report = ReconcileReport::default();
        {
            let Ok(_ops) = self.ops.try_write() else {
                tracing::debug!("file backend: operations running; reconciliation waits for the next pass");
                return Ok(report);
            };
            let volumes: HashSet<&str> = expected.volumes.iter().map(|v| v.id.as_str()).collect();
            let snapshots: HashSet<&str> = expected.snapshots.iter().map(|s| s.id.as_str()).collect();
            for n in self.listing()? {
                let path = self.dir.join(&n);
                if let Some(rest) = n.strip_prefix("volume-") {
                    match rest.split_once('.') {
                        Some((id, "tmp")) => {
                            if let Some(what) = self.repair_volume(id)? {
                                report.repaired.push(what);
                            }
                        }
                        Some((id, "part")) => {
                            remove(&path)?;
                            report.repaired.push(format!("volume {id}: dropped an unfinished creation"));
                        }
                        Some(_) => {}
                        None => {}
                    }
                } else if let Some(rest) = n.strip_prefix("image-") {
                    if rest.ends_with(".part") || rest.ends_with(".download") {
                        remove(&path)?;
                        report.repaired.push(format!("dropped an unfinished image download {n}"));
                    }
                }
            }
            for n in self.listing()? {
                if let Some(id) = n.strip_prefix("volume-").filter(|r| !r.contains('.')) {
                    if !volumes.contains(id) {
                        tracing::warn!(volume = id, "file backend: removing a volume the controller does not know");
                        let active = self.active(id);
                        for a in self.exports.serving(&active) {
                            self.exports.stop(&a).await?;
                        }
                        remove(&active)?;
                        report.orphan_volumes.push(id.to_string());
                    }
                } else if let Some(id) = n.strip_prefix("snapshot-").filter(|r| !r.contains('.')) {
                    let marker = self.dir.join(format!("{n}.deleted"));
                    if !snapshots.contains(id) && !exists(&marker) {
                        tracing::warn!(
                            snapshot = id,
                            "file backend: releasing a snapshot the controller does not know"
                        );
                        std::fs::write(&marker, b"").map_err(io_err(format!("releasing snapshot {id}")))?;
                        report.orphan_snapshots.push(id.to_string());
                    }
                }
            }
            let keep: HashSet<String> = expected.attachments.iter().cloned().collect();
            report.orphan_exports = self.exports.sweep(&keep).await;
        }
        report.collected = self.collect().await?;
        Ok(report)
    }
}
