//! Shared helpers for the real-QEMU integration tests.
//!
//! These tests never skip: a missing QEMU or test image is a failure that says
//! how to get them. Every test owns a temporary instance directory wrapped in
//! [`Sandbox`], whose `Drop` SIGKILLs any process whose command line mentions
//! that directory, so no QEMU outlives a test, even one that panicked.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stratus_qemu::cmdline::{DiskSpec, KernelBoot};
use stratus_qemu::{Accel, GuestSpec, InstanceDir, QemuBinary};
use uuid::Uuid;

/// Paths of the test image built by tools/build-test-image.sh.
pub struct TestImage {
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test image: `$STRATUS_TEST_IMAGE_DIR`, or `<repo>/build/test-image`.
pub fn test_image() -> TestImage {
    let dir = std::env::var_os("STRATUS_TEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build/test-image"));
    let img = TestImage {
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        disk: dir.join("disk.qcow2"),
        dir: dir.clone(),
    };
    for f in [&img.vmlinuz, &img.initrd, &img.disk] {
        assert!(
            f.exists(),
            "test image file {} is missing. Build the image with `tools/build-test-image.sh build/test-image` \
             (from the repository root; about 15 s, needs the host tools from `scripts/install-host-packages.sh`), \
             or point STRATUS_TEST_IMAGE_DIR at an existing build.",
            f.display()
        );
    }
    img
}

/// The second image variant (`<image dir>/b`), used by rebuild tests.
pub fn test_image_b() -> TestImage {
    let a = test_image();
    let dir = a.dir.join("b");
    let img = TestImage {
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        disk: dir.join("disk.qcow2"),
        dir: dir.clone(),
    };
    for f in [&img.vmlinuz, &img.initrd, &img.disk] {
        assert!(
            f.exists(),
            "second test image file {} is missing. `tools/build-test-image.sh build/test-image` builds both \
             variants unless VARIANTS=a was set.",
            f.display()
        );
    }
    img
}

/// Build an ISO9660 config drive (label `config-2`) from `files` (relative path, content).
pub fn make_config_drive(out: &Path, files: &[(&str, &str)]) {
    let tree = out.with_extension("d");
    for (rel, content) in files {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    let tool = ["genisoimage", "mkisofs", "xorrisofs"]
        .into_iter()
        .find(|t| stratus_qemu::binary::which(t).is_some())
        .expect("genisoimage (or xorriso) is needed for config drives: run scripts/install-host-packages.sh");
    let st = std::process::Command::new(tool)
        .args(["-quiet", "-o"])
        .arg(out)
        .args(["-V", "config-2", "-r", "-J"])
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success(), "{tool} failed");
}

/// The probed QEMU binary (`$STRATUS_QEMU` or `qemu-system-x86_64` on PATH).
pub async fn qemu() -> QemuBinary {
    let r = match std::env::var_os("STRATUS_QEMU") {
        Some(p) => QemuBinary::probe(Path::new(&p)).await,
        None => QemuBinary::detect().await,
    };
    r.unwrap_or_else(|e| {
        panic!(
            "QEMU is needed for these tests and was not found ({e}). \
             Install it with `sudo scripts/install-host-packages.sh` (qemu-system-x86 from bookworm-backports)."
        )
    })
}

/// A temporary instance directory; kills every process mentioning it on drop.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        // Short path: unix socket paths are limited to 107 bytes.
        let tmp = tempfile::Builder::new().prefix("sq-").tempdir_in("/tmp").expect("tempdir");
        Sandbox { tmp }
    }
    pub fn dir(&self) -> InstanceDir {
        InstanceDir::new(self.tmp.path())
    }
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let needle = self.tmp.path().to_string_lossy().into_owned();
        let mut killed = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if pid == std::process::id() as i32 {
                    continue;
                }
                let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                    continue;
                };
                if String::from_utf8_lossy(&cmd).contains(&needle) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    killed.push(pid);
                }
            }
        }
        // Give the kernel a moment so the temp dir is not removed under a live QEMU.
        let deadline = Instant::now() + Duration::from_secs(5);
        while killed.iter().any(|p| Path::new(&format!("/proc/{p}/cmdline")).exists() && !is_zombie(*p))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !killed.is_empty() {
            eprintln!("sandbox cleanup: killed leftover pids {killed:?}");
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Direct kernel boot of the test image, no disks, no network.
pub fn direct_spec(img: &TestImage, name: &str, extra_append: &str) -> GuestSpec {
    let mut s = GuestSpec::new(name, Uuid::new_v4(), 128, Accel::Auto.resolve());
    s.kernel = Some(KernelBoot {
        kernel: img.vmlinuz.clone(),
        initrd: Some(img.initrd.clone()),
        append: Some(format!("console=ttyS0,115200n8 {extra_append}").trim().to_owned()),
    });
    s
}

/// Disk boot (SeaBIOS + syslinux) from `disk`, no network.
pub fn disk_spec(disk: &Path, name: &str) -> GuestSpec {
    let mut s = GuestSpec::new(name, Uuid::new_v4(), 128, Accel::Auto.resolve());
    s.disks.push(DiskSpec::qcow2(disk));
    s
}

/// The guest's "all services started" console marker.
pub const UP_MARKER: &str = "stratus-guest: up image=";

/// Parse `uptime=12.34` out of a console line.
pub fn uptime_of(line: &str) -> f64 {
    line.split("uptime=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uptime in {line:?}"))
}
