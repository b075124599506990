//! Real-VM tests: boot the Stratus test image under QEMU (TCG on hosts
//! without hardware KVM) and drive it through QMP. No networking: guests get
//! `-nic none`.
//!
//! Needs `qemu-system-x86_64` (`scripts/install-host-packages.sh`) and the
//! test image (`tools/build-test-image.sh build/test-image`, or
//! `STRATUS_TEST_IMAGE_DIR`). Missing either is a failure, never a skip.

mod common;

use std::time::{Duration, Instant};

use common::{
    direct_spec, disk_spec, make_config_drive, qemu, test_image, test_image_b, uptime_of, Sandbox, UP_MARKER,
};
use serde_json::json;
use stratus_qemu::cmdline::{DiskBus, DiskFormat, DiskSpec};
use stratus_qemu::img::QemuImg;
use stratus_qemu::process::{ProcessError, SpawnOptions, StopOutcome};
use stratus_qemu::qmp::RunState;
use stratus_qemu::QemuProcess;
use tokio::io::AsyncReadExt;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn disk_boot_from_overlay_vnc_screendump_and_acpi_powerdown() {
    let img = test_image();
    let bin = qemu().await;
    let sb = Sandbox::new();
    let dir = sb.dir();

    // Nova-style per-instance overlay on the (read-only) base image.
    let overlay = sb.path().join("disk.qcow2");
    let qimg = QemuImg::default();
    qimg.create_overlay(&img.disk, DiskFormat::Qcow2, &overlay, None).await.unwrap();
    let info = qimg.info(&overlay, Some(DiskFormat::Qcow2)).await.unwrap();
    assert_eq!(info.backing_filename.as_deref(), Some(img.disk.to_str().unwrap()));
    assert!(info.check_safe_upload(Some("qcow2")).is_err());

    let started = Instant::now();
    let mut vm =
        QemuProcess::spawn(&bin, &dir, &disk_spec(&overlay, "disk-vm"), &SpawnOptions::default()).await.unwrap();
    let (line, _) = dir.console().wait_for(UP_MARKER, 0, BOOT_TIMEOUT).await.unwrap();
    let boot = started.elapsed();
    assert!(line.contains("image=stratus-test-a"), "{line}");
    eprintln!(
        "disk boot: marker after {:.2} s, guest uptime {:.2} s, QEMU RSS {} MiB",
        boot.as_secs_f64(),
        uptime_of(&line),
        vm.rss_bytes().unwrap_or(0) >> 20
    );

    // VNC on the unix socket speaks RFB 3.8.
    let mut s = tokio::net::UnixStream::connect(dir.paths().vnc).await.unwrap();
    let mut banner = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut banner)).await.expect("VNC banner timeout").unwrap();
    assert_eq!(&banner, b"RFB 003.008\n");
    drop(s);
    let vnc = vm.qmp().unwrap().query_vnc().await.unwrap();
    assert!(vnc.enabled);
    let shot = sb.path().join("screen.png");
    vm.qmp().unwrap().screendump(&shot, Some("png")).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "screendump is not a PNG");

    // ACPI power button: busybox acpid powers the guest off and QEMU exits.
    let t = Instant::now();
    let outcome = vm.stop_graceful(Duration::from_secs(30)).await.unwrap();
    assert_eq!(outcome, StopOutcome::Powerdown);
    eprintln!("ACPI powerdown -> QEMU exit: {:.2} s", t.elapsed().as_secs_f64());
    let console = dir.console().read().await.unwrap();
    assert!(console.contains("stratus-guest: ACPI power button pressed"), "{console}");
    assert!(dir.running_pid().is_none());
}

#[tokio::test]
async fn direct_boot_pause_cont_suspend_resume_keeps_uptime() {
    let img = test_image();
    let bin = qemu().await;
    let sb = Sandbox::new();
    let dir = sb.dir();
    let spec = direct_spec(&img, "susp-vm", "stratus.heartbeat=1");

    let started = Instant::now();
    let mut vm = QemuProcess::spawn(&bin, &dir, &spec, &SpawnOptions::default()).await.unwrap();
    let (line, off) = dir.console().wait_for(UP_MARKER, 0, BOOT_TIMEOUT).await.unwrap();
    eprintln!(
        "direct boot: marker after {:.2} s (guest uptime {:.2} s)",
        started.elapsed().as_secs_f64(),
        uptime_of(&line)
    );

    // pause / unpause
    assert_eq!(vm.status().await.unwrap().status, RunState::Running);
    vm.qmp().unwrap().stop().await.unwrap();
    let st = vm.status().await.unwrap();
    assert_eq!((st.running, st.status), (false, RunState::Paused));
    vm.qmp().unwrap().cont().await.unwrap();
    assert_eq!(vm.status().await.unwrap().status, RunState::Running);

    // a heartbeat, then suspend
    dir.console().wait_for("stratus-guest: heartbeat", off, Duration::from_secs(20)).await.unwrap();
    let old_pid = vm.pid();
    let t = Instant::now();
    let state = vm.suspend(Duration::from_secs(60)).await.unwrap();
    let suspend_s = t.elapsed().as_secs_f64();
    let state_len = std::fs::metadata(&state).unwrap().len();
    assert!(dir.is_suspended());
    assert!(dir.running_pid().is_none(), "QEMU still running after suspend");
    // The old QEMU is gone (or at most an unreaped zombie).
    let stat = std::fs::read_to_string(format!("/proc/{old_pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'),
        "old QEMU {old_pid} still alive: {stat}"
    );
    let before = dir.console().read().await.unwrap();
    let last_beat = before.lines().rfind(|l| l.contains("stratus-guest: heartbeat")).map(uptime_of).unwrap();

    // resume: same guest continues (uptime goes on, no second boot)
    let t = Instant::now();
    let mut vm =
        QemuProcess::resume(&bin, &dir, &spec, &SpawnOptions::default(), Duration::from_secs(60)).await.unwrap();
    let resume_s = t.elapsed().as_secs_f64();
    assert_eq!(vm.status().await.unwrap().status, RunState::Running);
    assert!(!dir.is_suspended(), "memory.state must be removed after resume");
    let (beat, _) =
        dir.console().wait_for("stratus-guest: heartbeat", before.len(), Duration::from_secs(20)).await.unwrap();
    let after = uptime_of(&beat);
    eprintln!(
        "suspend {suspend_s:.2} s ({} MiB state), resume {resume_s:.2} s, guest uptime {last_beat:.2} -> {after:.2}",
        state_len >> 20
    );
    assert!(after > last_beat && after < last_beat + 15.0, "uptime {last_beat} -> {after}");
    let console = dir.console().read().await.unwrap();
    assert!(!console[before.len()..].contains("stratus-guest: init started"), "the guest rebooted instead of resuming");
    // console.log was appended to, not truncated, by the resumed QEMU
    assert!(console.starts_with(&before));
    vm.kill().await.unwrap();
}

#[tokio::test]
async fn adopt_after_dropping_handle_keeps_same_pid() {
    let img = test_image();
    let bin = qemu().await;
    let sb = Sandbox::new();
    let dir = sb.dir();
    let spec = direct_spec(&img, "adopt-vm", "");

    let vm = QemuProcess::spawn(&bin, &dir, &spec, &SpawnOptions::default()).await.unwrap();
    let pid = vm.pid();
    drop(vm); // an agent restart: the handle goes, the guest must not

    // -sandbox is used exactly when this QEMU has seccomp.
    let argv = std::fs::read_to_string(sb.path().join("qemu.argv")).unwrap();
    assert_eq!(argv.lines().any(|l| l == "-sandbox"), bin.sandbox, "{argv}");

    let mut adopted = QemuProcess::adopt(&dir).await.unwrap();
    assert_eq!(adopted.pid(), pid);
    assert!(adopted.is_running());
    assert_eq!(adopted.status().await.unwrap().status, RunState::Running);
    // The guest keeps booting under the adopted handle.
    dir.console().wait_for(UP_MARKER, 0, BOOT_TIMEOUT).await.unwrap();

    // A second QEMU for the same directory is refused.
    match QemuProcess::spawn(&bin, &dir, &spec, &SpawnOptions::default()).await {
        Err(ProcessError::AlreadyRunning { pid: p, .. }) => assert_eq!(p, pid),
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    adopted.kill().await.unwrap();
    assert!(matches!(QemuProcess::adopt(&dir).await, Err(ProcessError::NotRunning(_))));
}

#[tokio::test]
async fn spawn_failure_reports_qemu_log() {
    let bin = qemu().await;
    let sb = Sandbox::new();
    let spec = disk_spec(&sb.path().join("does-not-exist.qcow2"), "bad-vm");
    match QemuProcess::spawn(&bin, &sb.dir(), &spec, &SpawnOptions::default()).await {
        Err(ProcessError::EarlyExit { log, .. }) => {
            assert!(log.contains("does-not-exist.qcow2"), "{log}")
        }
        other => panic!("expected EarlyExit, got {other:?}"),
    }
}

#[tokio::test]
async fn config_drive_second_image_and_volume_hotplug() {
    let img = test_image_b();
    let bin = qemu().await;
    let sb = Sandbox::new();
    let dir = sb.dir();
    let uuid = uuid::Uuid::new_v4();

    let iso = sb.path().join("config.iso");
    let meta = json!({
        "uuid": uuid,
        "name": "cd-vm",
        "hostname": "cd-vm.novalocal",
        "public_keys": {"k1": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample test@stratus\n"},
    })
    .to_string();
    make_config_drive(
        &iso,
        &[
            ("openstack/latest/meta_data.json", meta.as_str()),
            ("openstack/latest/user_data", "#!/bin/sh\necho user-data-ran-on-$(hostname)\n"),
        ],
    );
    let mut spec = direct_spec(&img, "cd-vm", "");
    spec.disks.push(DiskSpec { format: DiskFormat::Raw, bus: DiskBus::Ide, cdrom: true, ..DiskSpec::qcow2(&iso) });
    let mut vm = QemuProcess::spawn(&bin, &dir, &spec, &SpawnOptions::default()).await.unwrap();
    let (line, off) = dir.console().wait_for(UP_MARKER, 0, BOOT_TIMEOUT).await.unwrap();
    assert!(line.contains("image=stratus-test-b"), "{line}");
    let console = dir.console().read().await.unwrap();
    for want in [
        format!("uuid={uuid}"),
        "stratus-guest: hostname=cd-vm".to_owned(),
        "stratus-guest: ssh key installed".to_owned(),
        "user-data-ran-on-cd-vm".to_owned(),
    ] {
        assert!(console.contains(&want), "{want:?} missing from console:\n{console}");
    }

    // Volume attach: blockdev-add + device_add; the guest kernel sees a new virtio disk.
    let vol = sb.path().join("vol1.qcow2");
    QemuImg::default().create(&vol, DiskFormat::Qcow2, 8 << 20).await.unwrap();
    let q = vm.qmp().unwrap();
    q.blockdev_add(json!({
        "driver": "qcow2",
        "node-name": "vol1",
        "file": {"driver": "file", "filename": vol},
    }))
    .await
    .unwrap();
    let mut props = serde_json::Map::new();
    props.insert("drive".into(), json!("vol1"));
    props.insert("serial".into(), json!("stratus-vol1"));
    let t = Instant::now();
    q.device_add("virtio-blk-pci", "vol1dev", props).await.unwrap();
    let (seen, _) =
        dir.console().wait_for("16384 512-byte logical blocks", off, Duration::from_secs(20)).await.unwrap();
    eprintln!("hot-plugged disk seen by the guest after {:.2} s: {seen}", t.elapsed().as_secs_f64());
    // Detach: DEVICE_DELETED arrives on this same connection, then the node goes.
    let t = Instant::now();
    let q = vm.qmp().unwrap();
    q.device_del("vol1dev", Duration::from_secs(20)).await.unwrap();
    q.blockdev_del("vol1").await.unwrap();
    eprintln!("device_del -> DEVICE_DELETED: {:.2} s", t.elapsed().as_secs_f64());
    vm.kill().await.unwrap();
}
