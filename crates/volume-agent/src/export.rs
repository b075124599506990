//! Volumes exported to other hosts over NBD, authenticated and encrypted.
//!
//! Why NBD through `qemu-storage-daemon` and not iSCSI through `tgt`: the `file`
//! backend's volumes are qcow2 chains (snapshots and clones share layers), which the
//! daemon opens natively and exports as the guest view, while `tgt` serves raw files
//! only; QEMU on the other host opens NBD itself, and NBD over TLS with a pre-shared
//! key (`tls-creds-psk`) both authenticates the host and encrypts the data, where
//! iSCSI CHAP leaves the data in clear. (This kernel has no LIO/configfs either.)
//!
//! One daemon per attachment, with a key of its own that only that attachment's
//! connection info carries: ending the attachment stops the daemon and the key dies
//! with it. Each export's state is a directory `<state_dir>/exports/<attachment id>/`
//! (`keys.psk`, `port`, `image`, `qsd.pid`, `qsd.log`, `qmp.sock`), so a restarted agent
//! finds its exports again and reconciliation stops those whose attachment is gone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::RngCore;
use stratus_volume_contract::{AgentError, Connection};
use tokio::process::Command;

/// The NBD exports of one agent.
#[derive(Debug, Clone)]
pub struct Exports {
    dir: PathBuf,
    address: String,
    port_min: u16,
    port_max: u16,
}

/// QEMU option values double their commas.
fn opt(s: &str) -> String {
    s.replace(',', ",,")
}

fn valid_id(id: &str) -> Result<(), AgentError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(AgentError::Incompatible(format!("{id:?} is not a valid attachment id")));
    }
    Ok(())
}

/// Pid in `pidfile` when that process is alive and names `needle` on its command line
/// (a recycled pid belongs to somebody else).
pub(crate) fn live_pid(pidfile: &Path, needle: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline).contains(needle).then_some(pid)
}

impl Exports {
    /// Exports kept under `state_dir/exports`, listening on `address` at the first free
    /// port of `port_min..=port_max`.
    pub fn new(state_dir: &Path, address: &str, port_min: u16, port_max: u16) -> Exports {
        Exports { dir: state_dir.join("exports"), address: address.to_string(), port_min, port_max }
    }

    fn dir_of(&self, attachment_id: &str) -> PathBuf {
        self.dir.join(attachment_id)
    }

    /// The export of `attachment_id` is up (idempotent: an export already up for it is
    /// answered again). `image` is the qcow2 image to serve, `name` the export name.
    pub async fn start(
        &self,
        attachment_id: &str,
        image: &Path,
        name: &str,
        read_only: bool,
    ) -> Result<Connection, AgentError> {
        valid_id(attachment_id)?;
        let dir = self.dir_of(attachment_id);
        if let Some(c) = self.running(attachment_id, name) {
            return Ok(c);
        }
        // A dead export's leftovers (a crash): start over.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::Failed(format!("creating {}: {e}", dir.display())))?;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let key = hex::encode(key);
        let identity = format!("stratus-{attachment_id}");
        write_private(&dir.join("keys.psk"), &format!("{identity}:{key}\n"))?;
        std::fs::write(dir.join("image"), image.to_string_lossy().as_bytes())
            .map_err(|e| AgentError::Failed(format!("recording the export's image: {e}")))?;
        let mut last = String::new();
        for port in self.port_min.min(self.port_max)..=self.port_max.max(self.port_min) {
            match self.spawn(&dir, image, name, read_only, port).await {
                Ok(()) => {
                    std::fs::write(dir.join("port"), port.to_string())
                        .map_err(|e| AgentError::Failed(format!("recording the export's port: {e}")))?;
                    tracing::info!(attachment_id, port, image = %image.display(), "NBD export up");
                    return Ok(Connection::Nbd {
                        host: self.address.clone(),
                        port,
                        export: name.to_string(),
                        psk_identity: identity,
                        psk_key: key,
                    });
                }
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(AgentError::Failed(e));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(AgentError::Failed(format!(
            "no free port for an NBD export in {}..={}: {last}",
            self.port_min, self.port_max
        )))
    }

    async fn spawn(&self, dir: &Path, image: &Path, name: &str, read_only: bool, port: u16) -> Result<(), String> {
        let ro = if read_only { ",read-only=on" } else { "" };
        let log = std::fs::File::create(dir.join("qsd.log")).map_err(|e| format!("creating qsd.log: {e}"))?;
        let status = Command::new("qemu-storage-daemon")
            .arg("--object")
            .arg(format!("tls-creds-psk,id=tls0,endpoint=server,dir={}", opt(&dir.to_string_lossy())))
            .arg("--blockdev")
            .arg(format!(
                "driver=qcow2,node-name=vol{ro},file.driver=file,file.filename={}",
                opt(&image.to_string_lossy())
            ))
            .arg("--nbd-server")
            .arg(format!("addr.type=inet,addr.host={},addr.port={port},tls-creds=tls0", opt(&self.address)))
            .arg("--export")
            .arg(format!(
                "type=nbd,id=exp,node-name=vol,name={},writable={}",
                opt(name),
                if read_only { "off" } else { "on" }
            ))
            .arg("--chardev")
            .arg(format!("socket,id=qmp,path={},server=on,wait=off", opt(&dir.join("qmp.sock").to_string_lossy())))
            .arg("--monitor")
            .arg("chardev=qmp")
            .arg("--pidfile")
            .arg(dir.join("qsd.pid"))
            .arg("--daemonize")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .status()
            .await
            .map_err(|e| format!("starting qemu-storage-daemon: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "qemu-storage-daemon could not export on port {port}: {}",
                std::fs::read_to_string(dir.join("qsd.log")).unwrap_or_default().trim()
            ))
        }
    }

    /// The connection of a live export of `attachment_id`, if there is one.
    fn running(&self, attachment_id: &str, name: &str) -> Option<Connection> {
        let dir = self.dir_of(attachment_id);
        live_pid(&dir.join("qsd.pid"), &dir.to_string_lossy())?;
        let port: u16 = std::fs::read_to_string(dir.join("port")).ok()?.trim().parse().ok()?;
        let keys = std::fs::read_to_string(dir.join("keys.psk")).ok()?;
        let (identity, key) = keys.trim().split_once(':')?;
        Some(Connection::Nbd {
            host: self.address.clone(),
            port,
            export: name.to_string(),
            psk_identity: identity.to_string(),
            psk_key: key.to_string(),
        })
    }

    /// The image a live export serves.
    pub fn image_of(&self, attachment_id: &str) -> Option<PathBuf> {
        std::fs::read_to_string(self.dir_of(attachment_id).join("image")).ok().map(PathBuf::from)
    }

    /// Attachments whose export serves `image`.
    pub fn serving(&self, image: &Path) -> Vec<String> {
        self.list().into_iter().filter(|a| self.image_of(a).as_deref() == Some(image)).collect()
    }

    /// Stops the export of `attachment_id` and forgets its key (idempotent).
    pub async fn stop(&self, attachment_id: &str) -> Result<(), AgentError> {
        valid_id(attachment_id)?;
        let dir = self.dir_of(attachment_id);
        if let Some(pid) = live_pid(&dir.join("qsd.pid"), &dir.to_string_lossy()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            for _ in 0..100 {
                if live_pid(&dir.join("qsd.pid"), &dir.to_string_lossy()).is_none() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if live_pid(&dir.join("qsd.pid"), &dir.to_string_lossy()).is_some() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            tracing::info!(attachment_id, "NBD export stopped");
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::Failed(format!("removing {}: {e}", dir.display()))),
        }
    }

    /// Attachment ids with export state.
    pub fn list(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect()
    }

    /// Stops every export whose attachment is not in `keep`; answers those stopped.
    pub async fn sweep(&self, keep: &HashSet<String>) -> Vec<String> {
        let mut stopped = Vec::new();
        for a in self.list() {
            if !keep.contains(&a) && self.stop(&a).await.is_ok() {
                stopped.push(a);
            }
        }
        stopped
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AgentError::Failed(format!("writing {}: {e}", path.display())))?;
    f.write_all(content.as_bytes()).map_err(|e| AgentError::Failed(format!("writing {}: {e}", path.display())))
}
