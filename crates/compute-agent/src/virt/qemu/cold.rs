//! Cold migration and resize between machines: the disks cross over NBD.
//!
//! The destination creates each disk empty in `<uuid>_incoming` (qcow2, the flavor's
//! virtual size) and serves them writable with one `qemu-storage-daemon` on a TCP port
//! of the live migration range. The source, its guest stopped, writes the flattened
//! guest view of every disk into the exports (`qemu-img convert -n`: NBD carries the
//! raw bytes, the daemon lays them down as qcow2, skipping zeroes), compares, and asks
//! the destination to stop serving. From there `finish_migration` runs exactly as after
//! the local copy. The daemon's pid file sits in the incoming directory, so a replayed
//! preparation or an agent that restarted can still stop it.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::virt::IncomingDisk;

/// Pid file of the NBD server in the incoming directory.
pub const NBD_PID: &str = "nbd.pid";
/// Its log.
pub const NBD_LOG: &str = "nbd.log";

/// Disks a cold migration may carry (the config drive is regenerated on the
/// destination). Names come over the bus: nothing else becomes a path.
pub const DISKS: [&str; 3] = ["disk", "disk.eph0", "disk.swap"];

/// What one copy to another machine took (also logged).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// From asking the destination to serve until it stopped serving, in ms.
    pub wall_ms: u64,
    /// The disks copied.
    pub disks: Vec<String>,
    /// Their virtual bytes.
    pub virtual_bytes: u64,
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
            "driver=qcow2,node-name=n{i},file.driver=file,file.filename={}",
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

/// Stops the NBD server of `dir` (if any) and waits until it has closed the disks.
pub async fn stop(dir: &Path) {
    let Ok(text) = tokio::fs::read_to_string(dir.join(NBD_PID)).await else { return };
    let Ok(pid) = text.trim().parse::<u32>() else { return };
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
    #[test]
    fn nbd_urls_bracket_ipv6() {
        assert_eq!(super::nbd_url("10.0.0.2", 49153, "disk"), "nbd://10.0.0.2:49153/disk");
        assert_eq!(super::nbd_url("fd00::2", 49153, "disk.eph0"), "nbd://[fd00::2]:49153/disk.eph0");
        assert_eq!(super::opt("/a,b"), "/a,,b");
    }
}
