//! Cold migration and resize between machines: the disks cross over NBD.
//!
//! The destination creates each disk empty in `<uuid>_incoming` (qcow2, the flavor's
//! virtual size) and serves them writable with one `qemu-storage-daemon` on the first
//! free TCP port of the live migration range ([`serve_free`]), which it answers. The source, its guest stopped, writes the flattened
//! guest view of every disk into the exports (`qemu-img convert -n`: NBD carries the
//! raw bytes, the daemon lays them down as qcow2, skipping zeroes), compares, and asks
//! the destination to stop serving. From there `finish_migration` runs exactly as after
//! the local copy. The daemon's pid file sits in the incoming directory, so a replayed
//! preparation or an agent that restarted can still stop it.
//!
//! A move both agents gave up on (they died mid-copy, the conductor rolled it back)
//! leaves `<uuid>_incoming` and possibly its daemon behind: the agent's reconciliation
//! removes those no move to this host still runs for ([`sweep_incoming`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use stratus_qemu::cmdline::DiskFormat;
use tokio::process::Command;

use crate::virt::IncomingDisk;

/// Pid file of the NBD server in the incoming directory.
pub const NBD_PID: &str = "nbd.pid";
/// Its log.
pub const NBD_LOG: &str = "nbd.log";

/// Disks a cold migration may carry (the config drive is regenerated on the
/// destination), the UEFI variable store among them. Names come over the bus:
/// nothing else becomes a path.
pub const DISKS: [&str; 4] = ["disk", "disk.eph0", "disk.swap", "nvram.fd"];

/// The format a carried disk has on both sides: the variable store is a raw flash
/// image, the others are qcow2.
pub fn format_of(name: &str) -> DiskFormat {
    if name == "nvram.fd" {
        DiskFormat::Raw
    } else {
        DiskFormat::Qcow2
    }
}

/// What one copy to another machine took (also logged).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// From asking the destination to serve until it stopped serving, in ms.
    pub wall_ms: u64,
    /// The disks copied.
    pub disks: Vec<String>,
    /// Their virtual bytes.
    pub virtual_bytes: u64,
    /// The port the destination served them on.
    pub port: u16,
}

/// `nbd://` address of export `name`.
pub fn nbd_url(host: &str, port: u16, name: &str) -> String {
    if host.contains(':') {
        format!("nbd://[{host}]:{port}/{name}")
    } else {
        format!("nbd://{host}:{port}/{name}")
    }
}

/// QEMU option values double their commas.
fn opt(s: &str) -> String {
    s.replace(',', ",,")
}

/// Serves the disks of `dir` over NBD on `listen:port`; returns once the exports are up
/// (the daemon's parent exits after its setup).
pub async fn serve(dir: &Path, disks: &[IncomingDisk], listen: &str, port: u16) -> Result<(), String> {
    let mut cmd = Command::new("qemu-storage-daemon");
    for (i, d) in disks.iter().enumerate() {
        let path = dir.join(&d.name);
        cmd.arg("--blockdev").arg(format!(
            "driver={},node-name=n{i},file.driver=file,file.filename={}",
            format_of(&d.name),
            opt(&path.to_string_lossy())
        ));
    }
    cmd.arg("--nbd-server").arg(format!("addr.type=inet,addr.host={},addr.port={port}", opt(listen)));
    for (i, d) in disks.iter().enumerate() {
        cmd.arg("--export").arg(format!("type=nbd,id=e{i},node-name=n{i},name={},writable=on", d.name));
    }
    let log = std::fs::File::create(dir.join(NBD_LOG)).map_err(|e| format!("creating {NBD_LOG}: {e}"))?;
    cmd.arg("--pidfile").arg(dir.join(NBD_PID)).arg("--daemonize");
    // stdout/stderr to a file: the daemon keeps them, and a pipe would never close.
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .status()
        .await
        .map_err(|e| format!("starting qemu-storage-daemon: {e}"))?;
    if !status.success() {
        let why = std::fs::read_to_string(dir.join(NBD_LOG)).unwrap_or_default();
        return Err(format!("qemu-storage-daemon could not serve the incoming disks on port {port}: {}", why.trim()));
    }
    Ok(())
}

/// Serves the disks of `dir` on the first free port of `min..=max` (a taken port fails
/// the daemon's start; the next one is tried); answers the port.
pub async fn serve_free(dir: &Path, disks: &[IncomingDisk], listen: &str, min: u16, max: u16) -> Result<u16, String> {
    let mut tried = 0;
    for port in super::live::candidates(min, max, None) {
        tried += 1;
        match serve(dir, disks, listen, port).await {
            Ok(()) => return Ok(port),
            Err(e) if super::live::port_taken(&e) => tracing::debug!(port, "NBD port taken; trying the next one"),
            Err(e) => return Err(e),
        }
    }
    Err(format!("no free port to serve the incoming disks in {}..={} ({tried} tried)", min.min(max), min.max(max)))
}

/// Suffix of a cold move's staging directory in the instances directory.
pub const INCOMING_SUFFIX: &str = "_incoming";

/// How long a staging directory nobody claims must have been left alone (nothing
/// written in it or to its disks) before [`sweep_incoming`] removes it. It covers the
/// moment between the controller's list and the directory listing, when a move that
/// just started is not in the list yet; a copy writes its disks all along.
pub const INCOMING_GRACE: Duration = Duration::from_secs(120);

/// The newest modification time of `dir` and of the files in it.
fn last_written(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).ok()?.modified().ok()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}

/// Staging directories in `instances` of servers not in `keep` (no move to this host
/// runs for them) that were left alone for `grace`: their NBD server is stopped and
/// they are removed. Answers the server uuids swept.
pub async fn sweep_incoming(instances: &Path, keep: &HashSet<String>, grace: Duration) -> Vec<String> {
    let mut stale: Vec<(String, PathBuf)> = Vec::new();
    let Ok(rd) = std::fs::read_dir(instances) else { return Vec::new() };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(uuid) = name.strip_suffix(INCOMING_SUFFIX) else { continue };
        if uuid::Uuid::parse_str(uuid).is_err() || keep.contains(uuid) {
            continue;
        }
        let idle = last_written(&e.path()).and_then(|t| t.elapsed().ok());
        if idle.is_some_and(|idle| idle >= grace) {
            stale.push((uuid.to_string(), e.path()));
        }
    }
    let mut swept = Vec::new();
    for (uuid, dir) in stale {
        stop(&dir).await;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {
                tracing::warn!(uuid, dir = %dir.display(), "removed the disks of a move to this host that no longer runs");
                swept.push(uuid);
            }
            Err(e) => tracing::warn!(uuid, error = %e, "could not remove a stale incoming directory"),
        }
    }
    swept
}

/// Stops the NBD server of `dir` (if any) and waits until it has closed the disks.
pub async fn stop(dir: &Path) {
    let Ok(text) = tokio::fs::read_to_string(dir.join(NBD_PID)).await else { return };
    let Ok(pid) = text.trim().parse::<u32>() else { return };
    // A pid file outliving its daemon (an agent long dead) may name another process by
    // now: only the one started for this directory (it has it on its command line) goes.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(dir.to_string_lossy().as_ref()) {
        let _ = tokio::fs::remove_file(dir.join(NBD_PID)).await;
        return;
    }
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if alive() {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tokio::fs::remove_file(dir.join(NBD_PID)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, ago: Duration) {
        let f = std::fs::File::open(path).unwrap();
        f.set_modified(SystemTime::now() - ago).unwrap();
    }

    fn staging(root: &Path, name: &str, ago: Duration) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("disk"), b"qcow2").unwrap();
        age(&dir.join("disk"), ago);
        age(&dir, ago);
        dir
    }

    #[tokio::test]
    async fn the_sweep_removes_only_unclaimed_staging_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let (gone, claimed, fresh) =
            (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        // Left by a move that died, with its "NBD server" (a process naming the directory).
        let stale = staging(root.path(), &format!("{gone}_incoming"), hour);
        let mut daemon = std::process::Command::new("tail")
            .arg("-f")
            .arg(stale.join(NBD_LOG))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(stale.join(NBD_PID), daemon.id().to_string()).unwrap();
        age(&stale.join(NBD_PID), hour);
        age(&stale, hour);
        // A move to this host still runs for this one.
        let kept = staging(root.path(), &format!("{claimed}_incoming"), hour);
        // Unclaimed but just written: a move that started after the controller's answer.
        let young = staging(root.path(), &format!("{fresh}_incoming"), Duration::ZERO);
        // Not staging of ours.
        let other = staging(root.path(), "notes_incoming", hour);
        let resize = staging(root.path(), &format!("{gone}_resize"), hour);
        let guest = staging(root.path(), &gone, hour);
        // A disk written a moment ago keeps an old directory.
        let busy = staging(root.path(), &format!("{}_incoming", uuid::Uuid::new_v4()), hour);
        std::fs::write(busy.join("disk"), b"more").unwrap();
        age(&busy, hour);

        let keep: HashSet<String> = [claimed.clone()].into();
        let swept = sweep_incoming(root.path(), &keep, INCOMING_GRACE).await;
        assert_eq!(swept, [gone]);
        assert!(!stale.exists());
        let exited = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            daemon.try_wait().unwrap().is_some()
        });
        assert!(exited, "the stale NBD server was stopped");
        for d in [&kept, &young, &other, &resize, &guest, &busy] {
            assert!(d.join("disk").exists(), "{} kept", d.display());
        }
        // Nothing is left to sweep a second time.
        assert!(sweep_incoming(root.path(), &keep, INCOMING_GRACE).await.is_empty());
    }

    #[tokio::test]
    async fn a_pid_file_naming_another_process_is_not_obeyed() {
        let root = tempfile::tempdir().unwrap();
        let mut bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(root.path().join(NBD_PID), bystander.id().to_string()).unwrap();
        stop(root.path()).await;
        assert!(bystander.try_wait().unwrap().is_none(), "a process of someone else keeps running");
        assert!(!root.path().join(NBD_PID).exists());
        bystander.kill().unwrap();
        bystander.wait().unwrap();
    }

    #[tokio::test]
    async fn the_incoming_disks_are_served_on_the_first_free_port() {
        let (min, mut held) = super::super::live::tests::held_range(3);
        held[1] = None;
        held[2] = None;
        let dir = tempfile::tempdir().unwrap();
        let img = stratus_qemu::img::QemuImg::default();
        img.create(&dir.path().join("disk"), stratus_qemu::cmdline::DiskFormat::Qcow2, 1 << 20).await.unwrap();
        let disks = [IncomingDisk { name: "disk".into(), virtual_size: 1 << 20 }];
        let port = serve_free(dir.path(), &disks, "127.0.0.1", min, min + 2).await.expect("served");
        assert_eq!(port, min + 1, "the taken first port is skipped");
        assert!(dir.path().join(NBD_PID).exists());
        stop(dir.path()).await;
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "stopped");
        // Every port taken: the reason comes back, no daemon is left.
        held[1] = std::net::TcpListener::bind(("127.0.0.1", min + 1)).ok();
        held[2] = std::net::TcpListener::bind(("127.0.0.1", min + 2)).ok();
        let e = serve_free(dir.path(), &disks, "127.0.0.1", min, min + 2).await.unwrap_err();
        assert!(e.contains("no free port") && e.contains("3 tried"), "{e}");
    }

    #[test]
    fn nbd_urls_bracket_ipv6() {
        assert_eq!(super::nbd_url("10.0.0.2", 49153, "disk"), "nbd://10.0.0.2:49153/disk");
        assert_eq!(super::nbd_url("fd00::2", 49153, "disk.eph0"), "nbd://[fd00::2]:49153/disk.eph0");
        assert_eq!(super::opt("/a,b"), "/a,,b");
    }
}
