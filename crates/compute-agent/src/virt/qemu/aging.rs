//! Ageing of the base image cache: bases in `_base/` that no disk on this host uses
//! any more are removed once they have been unused for a while (Nova's image cache
//! manager: `remove_unused_base_images`, `remove_unused_original_minimum_age_seconds`).
//!
//! Why the file system and not the database: the agent never reads the controller's
//! tables, and what matters is what the disks on this host really point at. A base is
//! in use when a qcow2 file in any directory next to `_base/` (servers, `<uuid>_resize`
//! copies kept for a revert, incoming migrations, rescue overlays) names it as its
//! backing file, or when a guest's recorded command line (`qemu.argv`) loads it (direct
//! kernel boot kernels and ramdisks). The backing file name is read from the qcow2
//! header itself: no `qemu-img` per disk, and no lock taken on a running guest's image.
//!
//! "Unused for a while" is the base's mtime: a pass refreshes the mtime of every base
//! in use, and the cache refreshes it on every cache hit, so the age is the time since
//! the base was last needed. A base is removed under the cache's per-image lock after
//! its age was checked again, so a boot that just took it from the cache keeps it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::images::ImageCache;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgingReport {
    /// Bases removed.
    pub removed: Vec<String>,
    /// Bases some disk or guest uses.
    pub in_use: Vec<String>,
    /// Unused bases not old enough yet.
    pub young: Vec<String>,
}

/// The backing file a qcow2 image names, if `path` is a qcow2 image with one.
pub fn qcow2_backing_file(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 20];
    f.read_exact_at(&mut header, 0).ok()?;
    if header[0..4] != *b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().ok()?);
    let size = u32::from_be_bytes(header[16..20].try_into().ok()?) as usize;
    // QEMU limits backing file names to 1023 bytes.
    if offset == 0 || size == 0 || size > 1023 {
        return None;
    }
    let mut name = vec![0u8; size];
    f.read_exact_at(&mut name, offset).ok()?;
    let name = PathBuf::from(String::from_utf8(name).ok()?);
    // A relative name is relative to the overlay's directory.
    Some(if name.is_absolute() { name } else { path.parent()?.join(name) })
}

/// The image id `path` names when it is a file directly in `base_dir`.
fn base_id(path: &Path, base_dir: &Path, base_canon: Option<&Path>) -> Option<String> {
    let parent = path.parent()?;
    let same_dir = parent == base_dir
        || base_canon.is_some_and(|c| std::fs::canonicalize(parent).map(|p| p == c).unwrap_or(false));
    if !same_dir {
        return None;
    }
    Some(path.file_name()?.to_string_lossy().into_owned())
}

/// Ids of the bases in `base_dir` that disks or guests under `instances` use.
pub fn bases_in_use(instances: &Path, base_dir: &Path) -> HashSet<String> {
    let mut used = HashSet::new();
    let base_canon = std::fs::canonicalize(base_dir).ok();
    let base_prefix = format!("{}/", base_dir.display());
    let canon_prefix = base_canon.as_ref().map(|c| format!("{}/", c.display()));
    let Ok(dirs) = std::fs::read_dir(instances) else { return used };
    for d in dirs.flatten() {
        let dir = d.path();
        if !d.file_type().map(|t| t.is_dir()).unwrap_or(false) || dir == base_dir {
            continue;
        }
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        for f in files.flatten() {
            if !f.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            let path = f.path();
            if f.file_name() == "qemu.argv" {
                // Kernels, ramdisks and anything else the guest is started with.
                let Ok(argv) = std::fs::read_to_string(&path) else { continue };
                for prefix in std::iter::once(&base_prefix).chain(canon_prefix.as_ref()) {
                    for (i, _) in argv.match_indices(prefix.as_str()) {
                        let rest = &argv[i + prefix.len()..];
                        let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                        if !id.is_empty() {
                            used.insert(id);
                        }
                    }
                }
                continue;
            }
            if let Some(backing) = qcow2_backing_file(&path) {
                if let Some(id) = base_id(&backing, base_dir, base_canon.as_deref()) {
                    used.insert(id);
                }
            }
        }
    }
    used
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Sets a file's mtime to `now` (best effort: a base's age restarts).
pub fn touch(path: &Path, now: SystemTime) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(now);
    }
}

/// One pass over `cache`: refreshes the bases in use, removes the unused ones older
/// than `min_age` at `now` (a parameter so tests need no sleeping).
pub async fn age_out(cache: &ImageCache, instances: &Path, min_age: Duration, now: SystemTime) -> AgingReport {
    let base_dir = cache.dir().to_path_buf();
    let (inst, bd) = (instances.to_path_buf(), base_dir.clone());
    let used = tokio::task::spawn_blocking(move || bases_in_use(&inst, &bd)).await.unwrap_or_default();
    let mut report = AgingReport::default();
    let Ok(rd) = std::fs::read_dir(&base_dir) else { return report };
    let mut ids: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".json") && !n.ends_with(".part") && !n.starts_with('.'))
        .collect();
    ids.sort();
    for id in ids {
        let path = base_dir.join(&id);
        if used.contains(&id) {
            touch(&path, now);
            report.in_use.push(id);
            continue;
        }
        let removed = cache
            .with_lock(&id, || {
                // Checked again under the lock: a boot may have just taken it.
                let age = mtime(&path).and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
                if age < min_age {
                    tracing::debug!(image = %id, age_secs = age.as_secs(), "unused base image kept until it is older");
                    return false;
                }
                // The record first: a base without it is fetched again, never trusted half-removed.
                let _ = std::fs::remove_file(base_dir.join(format!("{id}.json")));
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        tracing::info!(image = %id, age_secs = age.as_secs(), "removed unused base image");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(image = %id, error = %e, "could not remove unused base image");
                        false
                    }
                }
            })
            .await;
        if removed {
            report.removed.push(id);
        } else {
            report.young.push(id);
        }
    }
    report
}

/// Runs [`age_out`] every `interval` until aborted.
pub fn spawn_periodic(
    cache: std::sync::Arc<ImageCache>,
    instances: PathBuf,
    interval: Duration,
    min_age: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let r = age_out(&cache, &instances, min_age, SystemTime::now()).await;
            tracing::info!(
                removed = r.removed.len(),
                in_use = r.in_use.len(),
                unused_young = r.young.len(),
                "base image cache pass"
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use async_trait::async_trait;
    use stratus_qemu::cmdline::DiskFormat;
    use stratus_qemu::img::QemuImg;

    use super::super::images::{ByteStream, ImageMeta, ImageSource};
    use super::*;
    use crate::virt::VirtError;

    struct NoSource;

    #[async_trait]
    impl ImageSource for NoSource {
        async fn metadata(&self, id: &str) -> Result<ImageMeta, VirtError> {
            Err(VirtError::NotFound(id.into()))
        }
        async fn download(&self, id: &str) -> Result<ByteStream, VirtError> {
            Err(VirtError::NotFound(id.into()))
        }
        async fn upload(&self, _id: &str, _path: &Path) -> Result<(), VirtError> {
            Ok(())
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn only_old_bases_no_disk_uses_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let instances = tmp.path().join("instances");
        let base_dir = instances.join("_base");
        std::fs::create_dir_all(&base_dir).unwrap();
        let img = QemuImg::default();
        let mut bases = HashMap::new();
        for id in ["b-server", "b-resize", "b-rescue", "b-kernel", "b-unused", "b-young"] {
            let p = base_dir.join(id);
            img.create(&p, DiskFormat::Qcow2, 1 << 20).await.expect("qemu-img (scripts/install-host-packages.sh)");
            std::fs::write(base_dir.join(format!("{id}.json")), b"{}").unwrap();
            bases.insert(id, p);
        }
        std::fs::write(base_dir.join("b-partial.part"), b"x").unwrap();
        let uuid = "8f1c6a52-8d0b-4f43-9a57-0d6f4c1d2e3f";
        let server = instances.join(uuid);
        let resize = instances.join(format!("{uuid}_resize"));
        std::fs::create_dir_all(&server).unwrap();
        std::fs::create_dir_all(&resize).unwrap();
        img.create_overlay(&bases["b-server"], DiskFormat::Qcow2, &server.join("disk"), None).await.unwrap();
        img.create_overlay(&bases["b-rescue"], DiskFormat::Qcow2, &server.join("disk.rescue"), None).await.unwrap();
        img.create_overlay(&bases["b-resize"], DiskFormat::Qcow2, &resize.join("disk"), None).await.unwrap();
        std::fs::write(server.join("console.log"), b"QFI but not an image").unwrap();
        std::fs::write(server.join("qemu.argv"), format!("-kernel\n{}\n-m\n128\n", bases["b-kernel"].display()))
            .unwrap();
        assert_eq!(
            qcow2_backing_file(&server.join("disk")).as_deref(),
            Some(bases["b-server"].as_path()),
            "the backing file name is read from the qcow2 header"
        );
        assert_eq!(qcow2_backing_file(&bases["b-server"]), None, "a base has no backing file");
        assert_eq!(qcow2_backing_file(&server.join("console.log")), None);

        let cache = ImageCache::new(base_dir.clone(), Arc::new(NoSource), img, false);
        let now = SystemTime::now();
        // Everything is a minute old: nothing goes with a one-day minimum age.
        let r = age_out(&cache, &instances, DAY, now).await;
        assert!(r.removed.is_empty(), "{r:?}");
        assert_eq!(r.in_use, ["b-kernel", "b-rescue", "b-resize", "b-server"]);
        assert_eq!(r.young, ["b-unused", "b-young"]);

        // Two days later (a fake clock), b-young was touched by a cache hit a minute ago.
        let later = now + 2 * DAY;
        touch(&bases["b-young"], later - Duration::from_secs(60));
        let r = age_out(&cache, &instances, DAY, later).await;
        assert_eq!(r.removed, ["b-unused"], "{r:?}");
        assert_eq!(r.young, ["b-young"]);
        assert!(!bases["b-unused"].exists() && !base_dir.join("b-unused.json").exists());
        assert!(base_dir.join("b-partial.part").exists(), "partial downloads are the cache's business");
        for id in ["b-server", "b-resize", "b-rescue", "b-kernel"] {
            assert!(bases[id].exists(), "{id} is still used");
            let m = mtime(&bases[id]).unwrap();
            assert_eq!(m, later, "{id}: a pass refreshes the age of bases in use");
        }

        // The resize is confirmed and the rescue ends: their bases age from now on.
        std::fs::remove_dir_all(&resize).unwrap();
        std::fs::remove_file(server.join("disk.rescue")).unwrap();
        let r = age_out(&cache, &instances, DAY, later + Duration::from_secs(3600)).await;
        assert!(r.removed.is_empty(), "{r:?}");
        let r = age_out(&cache, &instances, DAY, later + 2 * DAY).await;
        assert_eq!(r.removed, ["b-rescue", "b-resize", "b-young"], "{r:?}");
        assert_eq!(r.in_use, ["b-kernel", "b-server"]);
    }
}
