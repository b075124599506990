//! One unprivileged user per guest: which uid a QEMU runs as, and handing its
//! instance directory over to that uid.
//!
//! Why: seccomp stops a compromised QEMU from spawning programs or gaining
//! privileges, but a QEMU running as root could still open every file on the
//! host, including other guests' disks. libvirt answers this with a shared
//! `libvirt-qemu` user plus per-guest SELinux/AppArmor labels; this host has
//! neither LSM configured, so Stratus gives each guest its own uid instead and
//! relies on plain file modes: an instance directory is `0700` and owned by its
//! guest's uid, so no other guest (and no other QEMU) can open anything in it.
//! Base images in `_base/` stay root-owned and world-readable, read-only to
//! every guest, as sVirt's shared read-only label makes them.
//!
//! The uid of a guest is recorded twice: as the owner of its instance
//! directory (what survives a reboot and what the kernel enforces) and as a
//! claim file `<registry>/<uid>` naming that directory. The registry is one
//! per machine, so two compute agents on one machine (separate data dirs)
//! never hand out the same uid. A claim whose directory is gone, or no longer
//! owned by that uid, is stale and may be taken again. Claims are made under
//! an exclusive `flock` on `<registry>/.lock`, which also excludes threads of
//! one process (each claim opens the lock file anew).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The user (and primary group) a guest's QEMU runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestUser {
    /// Its own uid.
    pub uid: u32,
    /// Its primary gid: the uid's number, or a shared group such as `kvm`
    /// that only grants access to `/dev/kvm` (instance files carry no group bits).
    pub gid: u32,
}

/// Errors of claiming and handing over.
#[derive(Debug, thiserror::Error)]
pub enum GuestUserError {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Every uid of the range has a live claim.
    #[error("all {count} guest uids from {min} are in use (raise [compute.qemu] guest_uid_count)")]
    Exhausted {
        /// First uid.
        min: u32,
        /// Size of the range.
        count: u32,
    },
}

type Result<T, E = GuestUserError> = std::result::Result<T, E>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuestUserError {
    let context = context.into();
    move |source| GuestUserError::Io { context, source }
}

/// The machine-wide pool of guest uids.
#[derive(Debug, Clone)]
pub struct GuestUsers {
    registry: PathBuf,
    min: u32,
    count: u32,
    shared_gid: Option<u32>,
}

impl GuestUsers {
    /// A pool of `count` uids from `min`, claims recorded in `registry`
    /// (created `0700`). `shared_gid`: the primary group every guest gets
    /// (the group of `/dev/kvm` when guests use KVM); `None` gives each guest
    /// a gid equal to its uid.
    pub fn new(registry: impl Into<PathBuf>, min: u32, count: u32, shared_gid: Option<u32>) -> Result<Self> {
        let registry = registry.into();
        std::fs::create_dir_all(&registry).map_err(io(format!("creating {}", registry.display())))?;
        std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("securing {}", registry.display())))?;
        Ok(GuestUsers { registry, min, count: count.max(1), shared_gid })
    }

    /// Whether `uid` is one of ours.
    pub fn owns(&self, uid: u32) -> bool {
        uid >= self.min && uid - self.min < self.count
    }

    fn user(&self, uid: u32) -> GuestUser {
        GuestUser { uid, gid: self.shared_gid.unwrap_or(uid) }
    }

    fn claim_file(&self, uid: u32) -> PathBuf {
        self.registry.join(uid.to_string())
    }

    /// The directory a claim names, if the claim is live (its directory
    /// exists and is owned by that uid).
    fn live_claim(&self, uid: u32) -> Option<PathBuf> {
        let dir = PathBuf::from(std::fs::read_to_string(self.claim_file(uid)).ok()?.trim_end());
        let owner = std::fs::metadata(&dir).ok()?.uid();
        (owner == uid).then_some(dir)
    }

    fn write_claim(&self, uid: u32, dir: &Path) -> Result<()> {
        let path = self.claim_file(uid);
        let tmp = self.registry.join(format!(".{uid}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io(format!("writing {}", tmp.display())))?;
        f.write_all(dir.as_os_str().as_encoded_bytes()).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("writing {}", path.display())))
    }

    /// The user of the guest in `dir` (absolute, existing): the uid that already
    /// owns it if its claim is ours or free, otherwise the lowest uid without a
    /// live claim, which then owns `dir` itself (not yet its contents: that is
    /// [`hand_over`]).
    pub fn claim(&self, dir: &Path) -> Result<GuestUser> {
        let lock_path = self.registry.join(".lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io(format!("locking {}", lock_path.display()))(e.into()))?;

        if let Ok(meta) = std::fs::metadata(dir) {
            let uid = meta.uid();
            if self.owns(uid) {
                match self.live_claim(uid) {
                    Some(claimed) if claimed == dir => return Ok(self.user(uid)),
                    // Another live directory holds this uid (a registry lost
                    // and rebuilt in another order): take a fresh one below.
                    Some(_) => {}
                    None => {
                        self.write_claim(uid, dir)?;
                        return Ok(self.user(uid));
                    }
                }
            }
        }
        for uid in (0..self.count).map(|i| self.min + i) {
            if self.live_claim(uid).is_none() {
                self.write_claim(uid, dir)?;
                // Owning the directory is what makes the claim live: do it under
                // the lock, or a concurrent claim would find it stale.
                let user = self.user(uid);
                std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))
                    .map_err(io(format!("giving {} to uid {uid}", dir.display())))?;
                return Ok(user);
            }
        }
        Err(GuestUserError::Exhausted { min: self.min, count: self.count })
    }

    /// Drops the claim of `dir` (its directory is going away). A claim left
    /// behind is harmless: it turns stale once the directory is gone.
    pub fn release(&self, dir: &Path) {
        for entry in std::fs::read_dir(&self.registry).into_iter().flatten().flatten() {
            let Some(uid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let named = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if Path::new(named.trim_end()) == dir {
                let _ = std::fs::remove_file(self.claim_file(uid));
            }
        }
    }
}

/// The primary group guests need to open `/dev/kvm` (mode and gid given):
/// none when everyone may, its group when that group may read and write it.
/// A device only root may open cannot serve unprivileged guests: the error
/// says what to change.
pub fn kvm_group(mode: u32, gid: u32) -> std::result::Result<Option<u32>, String> {
    if mode & 0o006 == 0o006 {
        Ok(None)
    } else if mode & 0o060 == 0o060 && gid != 0 {
        Ok(Some(gid))
    } else {
        Err(format!(
            "guests run as unprivileged users but /dev/kvm (mode {:o}, gid {gid}) is root's alone: give it to a \
             group (Debian: 0660 root:kvm), or set [compute.qemu] run_as_guest_users = false",
            mode & 0o777
        ))
    }
}

/// Whether this process may start QEMU as other users (it runs as root).
pub fn can_switch_users() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Gives `dir` and everything in it to `user`: the directory becomes `0700`,
/// files lose their group and other bits. Symlinks are re-owned, not followed.
pub fn hand_over(dir: &Path, user: GuestUser) -> Result<()> {
    fn walk(path: &Path, user: GuestUser, top: bool) -> Result<()> {
        let meta = std::fs::symlink_metadata(path).map_err(io(format!("reading {}", path.display())))?;
        std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(io(format!(
            "giving {} to uid {}",
            path.display(),
            user.uid
        )))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.mode() & 0o7777;
        let want = if meta.is_dir() && top { 0o700 } else { mode & !0o077 };
        if want != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))
                .map_err(io(format!("restricting {}", path.display())))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io(format!("listing {}", path.display())))? {
                let entry = entry.map_err(io(format!("listing {}", path.display())))?;
                walk(&entry.path(), user, false)?;
            }
        }
        Ok(())
    }
    walk(dir, user, true)
}

/// Lets others search (not list) `dir`: guests must reach their own
/// directory and the bases beneath it.
pub fn allow_search(dir: &Path) -> Result<()> {
    let mode = std::fs::metadata(dir).map_err(io(format!("reading {}", dir.display())))?.mode() & 0o7777;
    if mode & 0o001 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
            .map_err(io(format!("making {} searchable", dir.display())))?;
    }
    Ok(())
}

/// The first directory from `path` up to `/` that others cannot search, if any.
pub fn unsearchable_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| std::fs::metadata(p).map(|m| m.mode() & 0o001 == 0).unwrap_or(true)).map(Path::to_owned)
}

/// Makes a base image readable, and only readable, by every guest.
pub fn share_read_only(path: &Path) -> Result<()> {
    let mode = std::fs::metadata(path).map_err(io(format!("reading {}", path.display())))?.mode() & 0o7777;
    if mode != 0o644 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(io(format!("sharing {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Handing over needs root (chown), as the agent itself does; CI runs as root.

    #[test]
    fn claims_are_distinct_reused_and_taken_back_when_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let users = GuestUsers::new(tmp.path().join("registry"), 1_879_048_192, 4, None).unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let ua = users.claim(&a).unwrap();
        let ub = users.claim(&b).unwrap();
        assert_ne!(ua.uid, ub.uid);
        assert_eq!(ua.gid, ua.uid, "without a shared group the gid is the uid");
        hand_over(&a, ua).unwrap();
        hand_over(&b, ub).unwrap();
        // A directory keeps its uid.
        assert_eq!(users.claim(&a).unwrap(), ua);
        // Once `a` is gone its uid goes to the next newcomer, not `b`'s.
        std::fs::remove_dir_all(&a).unwrap();
        let c = tmp.path().join("c");
        std::fs::create_dir(&c).unwrap();
        assert_eq!(users.claim(&c).unwrap(), ua);
        assert_ne!(users.claim(&c).unwrap(), ub);
    }

    #[test]
    fn a_lost_registry_keeps_owners_and_never_doubles_a_uid() {
        let tmp = tempfile::tempdir().unwrap();
        let users = GuestUsers::new(tmp.path().join("registry"), 1_879_048_200, 8, None).unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let ua = users.claim(&a).unwrap();
        hand_over(&a, ua).unwrap();
        // The registry disappears: `a` is still owned by its uid and re-registers it
        // (the agent does so for every instance directory at start-up), so a newcomer
        // gets another one.
        std::fs::remove_dir_all(tmp.path().join("registry")).unwrap();
        let users = GuestUsers::new(tmp.path().join("registry"), 1_879_048_200, 8, None).unwrap();
        assert_eq!(users.claim(&a).unwrap(), ua);
        let ub = users.claim(&b).unwrap();
        assert_ne!(ub, ua);
        users.release(&b);
        assert!(!tmp.path().join("registry").join(ub.uid.to_string()).exists());
        assert_eq!(users.live_claim(ua.uid), Some(a));
    }

    #[test]
    fn the_range_runs_out_with_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let users = GuestUsers::new(tmp.path().join("registry"), 1_879_048_300, 1, None).unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let ua = users.claim(&a).unwrap();
        hand_over(&a, ua).unwrap();
        let e = users.claim(&b).unwrap_err();
        assert!(e.to_string().contains("guest_uid_count"), "{e}");
    }

    #[test]
    fn kvm_guests_share_the_group_that_may_open_dev_kvm() {
        assert_eq!(kvm_group(0o20660, 993), Ok(Some(993)), "Debian's 0660 root:kvm");
        assert_eq!(kvm_group(0o20666, 0), Ok(None), "open to all: no group needed");
        let e = kvm_group(0o20600, 0).unwrap_err();
        assert!(e.contains("mode 600") && e.contains("run_as_guest_users"), "{e}");
        assert!(kvm_group(0o20660, 0).is_err(), "root's group is not handed to guests");
    }

    #[test]
    fn hand_over_makes_the_directory_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("inst");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("disk"), b"x").unwrap();
        std::fs::set_permissions(dir.join("disk"), std::fs::Permissions::from_mode(0o664)).unwrap();
        let user = GuestUser { uid: 1_879_048_400, gid: 1_879_048_400 };
        hand_over(&dir, user).unwrap();
        let d = std::fs::metadata(&dir).unwrap();
        let f = std::fs::metadata(dir.join("disk")).unwrap();
        assert_eq!((d.uid(), d.gid(), d.mode() & 0o777), (user.uid, user.gid, 0o700));
        assert_eq!((f.uid(), f.mode() & 0o777), (user.uid, 0o600));
    }
}
