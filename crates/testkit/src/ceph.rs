//! A one-node Ceph cluster for tests that need a real distributed store: RBD pools for
//! block storage, radosgw's S3 and Swift APIs for object storage.
//!
//! [`Ceph::start`] runs `scripts/ceph-cluster.sh start DIR` (mon + mgr + one BlueStore OSD
//! on a sparse file + radosgw, all on 127.0.0.1, state under `DIR`) and reads the
//! `DIR/env` it writes; dropping the handle stops every daemon, also when the test
//! panicked. The Debian packages come from `scripts/install-ceph.sh` (CI runs it).
//! Ports default to 20530/20531 (mon v2/v1) and 20580 (radosgw) and can be changed with
//! [`CephOptions`]. Tests that start one run under the machine-wide heavy lock
//! (`flock /tmp/stratus-heavy.lock cargo test ...`), which also keeps two clusters from
//! meeting on the same ports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where and how to start the cluster.
#[derive(Debug, Clone)]
pub struct CephOptions {
    /// Monitor msgr2 port (default 20530).
    pub mon_port_v2: u16,
    /// Monitor legacy msgr1 port (default 20531).
    pub mon_port_v1: u16,
    /// radosgw port (default 20580).
    pub rgw_port: u16,
    /// Start radosgw (S3/Swift) too. Default true; RBD-only users save ~100 MiB without it.
    pub rgw: bool,
    /// Size of the OSD's sparse block file in GiB (default 10; only written blocks take space).
    pub osd_size_gb: u32,
}

impl Default for CephOptions {
    fn default() -> Self {
        CephOptions { mon_port_v2: 20530, mon_port_v1: 20531, rgw_port: 20580, rgw: true, osd_size_gb: 10 }
    }
}

/// A running one-node cluster; stopped on drop.
#[derive(Debug)]
pub struct Ceph {
    dir: PathBuf,
    env: HashMap<String, String>,
    _tmp: Option<tempfile::TempDir>,
}

/// S3 credentials of the radosgw user the cluster creates.
#[derive(Debug, Clone)]
pub struct S3Creds {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

/// Why the cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum CephError {
    /// The packages are not installed (`scripts/install-ceph.sh`).
    #[error("Ceph is not installed: run scripts/install-ceph.sh ({0})")]
    NotInstalled(String),
    /// The start script failed; its message says why.
    #[error("scripts/ceph-cluster.sh start failed: {0}")]
    Start(String),
    /// I/O around the script.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Ceph {
    /// True when the Ceph daemons are installed.
    pub fn installed() -> bool {
        ["ceph-mon", "ceph-osd", "radosgw", "ceph"].iter().all(|b| which(b))
    }

    /// Starts a cluster with default options under a fresh temporary directory.
    pub fn start_temp() -> Result<Ceph, CephError> {
        let tmp = tempfile::Builder::new().prefix("s5ob-ceph-").tempdir()?;
        let mut c = Self::start(tmp.path(), &CephOptions::default())?;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// Starts a cluster with all its state under `dir` (created if missing). Blocks for
    /// the ~20-30 s the cluster needs to reach HEALTH_OK and radosgw to answer.
    pub fn start(dir: &Path, opts: &CephOptions) -> Result<Ceph, CephError> {
        if !Self::installed() {
            return Err(CephError::NotInstalled("ceph-mon, ceph-osd, radosgw or ceph not on PATH".into()));
        }
        std::fs::create_dir_all(dir)?;
        let script = crate::repo_root().join("scripts/ceph-cluster.sh");
        let out = Command::new(&script)
            .arg("start")
            .arg(dir)
            .env("CEPH_MON_PORT_V2", opts.mon_port_v2.to_string())
            .env("CEPH_MON_PORT_V1", opts.mon_port_v1.to_string())
            .env("CEPH_RGW_PORT", opts.rgw_port.to_string())
            .env("CEPH_RGW", if opts.rgw { "1" } else { "0" })
            .env("CEPH_OSD_SIZE_GB", opts.osd_size_gb.to_string())
            .output()?;
        let mut c = Ceph { dir: dir.to_path_buf(), env: HashMap::new(), _tmp: None };
        if !out.status.success() {
            // `c` drops here and runs `stop` too (the script already did; harmless).
            return Err(CephError::Start(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        let text = std::fs::read_to_string(dir.join("env"))?;
        c.env = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(c)
    }

    fn get(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or("")
    }

    /// The cluster's state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `ceph.conf` (pass as `--conf` or `CEPH_CONF`).
    pub fn conf(&self) -> PathBuf {
        PathBuf::from(self.get("CEPH_CONF"))
    }
    /// The `client.admin` keyring.
    pub fn admin_keyring(&self) -> PathBuf {
        PathBuf::from(self.get("CEPH_ADMIN_KEYRING"))
    }
    /// Monitor address, `127.0.0.1:PORT` (msgr1, what `mon_host=` in librados URIs takes).
    pub fn mon_addr(&self) -> &str {
        self.get("CEPH_MON_ADDR")
    }
    /// The full `mon host` value, `[v2:127.0.0.1:P2,v1:127.0.0.1:P1]`.
    pub fn mon_host(&self) -> &str {
        self.get("CEPH_MON_HOST")
    }
    /// RBD pool `volumes` (application rbd, initialised).
    pub fn rbd_pool(&self) -> &str {
        self.get("RBD_POOL")
    }
    /// The cephx client allowed on the RBD pool: (`volumes`, its key, its keyring file).
    /// The name is without the `client.` prefix, as QEMU's `id=` and librbd take it.
    pub fn rbd_client(&self) -> (&str, &str, PathBuf) {
        let name = self.get("RBD_CLIENT").trim_start_matches("client.");
        (name, self.get("RBD_CLIENT_KEY"), PathBuf::from(self.get("RBD_CLIENT_KEYRING")))
    }
    /// radosgw's S3 endpoint and user (`None` when started without radosgw).
    pub fn s3(&self) -> Option<S3Creds> {
        let endpoint = self.env.get("RGW_ENDPOINT")?.clone();
        Some(S3Creds {
            endpoint,
            access_key: self.get("S3_ACCESS_KEY").to_string(),
            secret_key: self.get("S3_SECRET_KEY").to_string(),
        })
    }
    /// radosgw's Swift v1 auth: (`{endpoint}/auth/1.0`, user, key).
    pub fn swift(&self) -> Option<(String, String, String)> {
        let endpoint = self.env.get("RGW_ENDPOINT")?;
        Some((format!("{endpoint}/auth/1.0"), self.get("SWIFT_USER").into(), self.get("SWIFT_KEY").into()))
    }

    /// Runs the `ceph` CLI as admin against this cluster; returns stdout.
    pub fn ceph(&self, args: &[&str]) -> Result<String, CephError> {
        let out = Command::new("ceph").arg("--conf").arg(self.conf()).args(args).output()?;
        if !out.status.success() {
            return Err(CephError::Start(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the daemons (also done on drop).
    pub fn stop(&self) {
        let script = crate::repo_root().join("scripts/ceph-cluster.sh");
        let _ = Command::new(script).arg("stop").arg(&self.dir).status();
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file())).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a real cluster, checks RBD's pool and client and radosgw's S3 user, stops it.
    /// Needs the packages and the heavy lock: `flock /tmp/stratus-heavy.lock cargo test -p
    /// stratus-testkit --lib ceph`.
    #[test]
    fn cluster_starts_serves_and_stops() {
        let c = Ceph::start_temp().expect("ceph starts (scripts/install-ceph.sh installs it)");
        let health = c.ceph(&["health"]).unwrap();
        assert!(health.contains("HEALTH_OK"), "{health}");
        let pools = c.ceph(&["osd", "pool", "ls", "detail"]).unwrap();
        assert!(pools.contains("'volumes'") && pools.contains("application rbd"), "{pools}");
        let (name, key, keyring) = c.rbd_client();
        assert_eq!(name, "volumes");
        assert!(!key.is_empty() && keyring.exists());
        let s3 = c.s3().expect("radosgw");
        let code =
            Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &s3.endpoint]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&code.stdout), "200");
        let pids: Vec<i32> = ["mon", "mgr", "osd", "rgw"]
            .iter()
            .map(|d| std::fs::read_to_string(c.dir().join(format!("{d}.pid"))).unwrap().trim().parse().unwrap())
            .collect();
        drop(c);
        for pid in pids {
            // Gone, or a zombie waiting for whoever reaps orphans here.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            assert!(matches!(state, None | Some('Z') | Some('X')), "daemon {pid} still running after drop: {stat}");
        }
    }
}
