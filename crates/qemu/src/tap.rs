//! Tap devices created by the agent and handed to QEMU as open file descriptors.
//!
//! Why not let QEMU create them (`-netdev tap,ifname=`): that needs
//! `CAP_NET_ADMIN` and `/dev/net/tun`, and a guest's QEMU runs as an
//! unprivileged user with neither (see [`crate::guest_user`]). libvirt does
//! the same: the privileged side opens `/dev/net/tun`, names the tap, and QEMU
//! gets only the fd (`-netdev tap,fd=N`). The tap is not persistent: it
//! disappears when the last fd (QEMU's) closes, as one QEMU made itself would.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: u64 = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
/// QEMU asks for virtio-net headers on taps it opens itself; so do we, or
/// guests would lose checksum and segmentation offloads.
const IFF_VNET_HDR: i16 = 0x4000;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags, in 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _rest: [u8; 22],
}

/// Where `ip netns` keeps the namespace called `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Creates (or attaches to) the tap `name` and returns its fd, close-on-exec
/// (the spawn clears that flag in the child only, so no other process started
/// meanwhile inherits it). With `netns`, the tap is made in that namespace.
/// Blocking: waits up to [`TAP_RELEASE_WAIT`] for a tap an exiting process holds.
pub fn open_tap(name: &str, netns: Option<&Path>) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad tap name {name:?}")));
    }
    match netns {
        None => open_here(name),
        Some(ns) => {
            let ns = File::open(ns).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", ns.display())))?;
            let name = name.to_owned();
            // The tap belongs to the namespace of whoever opens /dev/net/tun; a
            // throwaway thread enters the namespace so the agent's threads stay put.
            std::thread::spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                open_here(&name)
            })
            .join()
            .map_err(|_| std::io::Error::other("the tap thread panicked"))?
        }
    }
}

/// How long a tap still held by a QEMU that is exiting may stay busy. A hard
/// reboot kills QEMU and opens the same tap name at once; the kernel frees a
/// non-persistent tap when the dying process's last fd is released, which can
/// trail the process's disappearance by a few milliseconds (`EBUSY` meanwhile).
const TAP_RELEASE_WAIT: Duration = Duration::from_secs(5);

fn open_here(name: &str) -> std::io::Result<OwnedFd> {
    let deadline = Instant::now() + TAP_RELEASE_WAIT;
    loop {
        match try_open_here(name) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("creating tap {name}: {e}"))),
            Ok(fd) => return Ok(fd),
        }
    }
}

fn try_open_here(name: &str) -> std::io::Result<OwnedFd> {
    let tun = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    let mut req = IfReq { name: [0; 16], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _rest: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back) one `struct ifreq`; `req`
    // has its layout and size and lives across the call.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::offset_of!(IfReq, flags), 16);
    }

    #[test]
    fn odd_names_never_reach_the_kernel() {
        for bad in ["", "this-name-is-too-long", "tap/x", "tap x"] {
            assert_eq!(open_tap(bad, None).unwrap_err().kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    /// A namespace of our own, deleted even when the test fails.
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn link_exists(ns: &str, dev: &str) -> bool {
        std::process::Command::new("ip").args(["-n", ns, "link", "show", dev]).output().unwrap().status.success()
    }

    #[test]
    fn the_tap_appears_in_the_namespace_and_goes_with_its_fd() {
        let ns = Ns(format!("stratus-taptest-{}", std::process::id()));
        assert!(std::process::Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
        let fd = open_tap("taptest0", Some(&netns_path(&ns.0))).unwrap();
        assert!(link_exists(&ns.0, "taptest0"), "the tap is in the namespace");
        assert!(!std::path::Path::new("/sys/class/net/taptest0").exists(), "and not in ours");
        drop(fd);
        assert!(!link_exists(&ns.0, "taptest0"), "closing the last fd removes it");
    }

    #[test]
    fn a_tap_still_held_is_waited_for_and_then_opened() {
        let ns = Ns(format!("stratus-tapbusy-{}", std::process::id()));
        assert!(std::process::Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
        let path = netns_path(&ns.0);
        let held = open_tap("tapbusy0", Some(&path)).unwrap();
        // The old holder lets go a little later, as an exiting QEMU does.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let start = std::time::Instant::now();
        let again = open_tap("tapbusy0", Some(&path)).expect("opened once the holder let go");
        assert!(start.elapsed() >= std::time::Duration::from_millis(250), "it waited for the release");
        releaser.join().unwrap();
        assert!(link_exists(&ns.0, "tapbusy0"));
        drop(again);
    }
}
