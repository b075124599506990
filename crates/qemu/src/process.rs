//! One QEMU process per instance directory: spawn, adopt, stop, suspend, resume.
//!
//! Why an instance directory: everything needed to find and control a guest
//! again lives in one place with fixed names (`qmp.sock`, `vnc.sock`,
//! `console.log`, `qemu.pid`, `qemu.log`, `memory.state`). A compute agent that
//! restarts does not restart guests: it [`QemuProcess::adopt`]s them from the
//! pid file and the QMP socket. Dropping a [`QemuProcess`] therefore never
//! kills QEMU; stopping is always an explicit call.
//!
//! QEMU runs in its own process group (a Ctrl-C or SIGTERM sent to the agent's
//! group does not reach guests) with stdout/stderr in `qemu.log`.
//!
//! Suspend is libvirt's "managed save": `stop`, `migrate` to
//! `file:<dir>/memory.state`, wait for `completed`, `quit`. Resume starts the
//! same command line with `-incoming defer`, runs `migrate-incoming`, waits,
//! then `cont`. The state file is the durable marker of a suspended instance
//! and is removed only once the guest runs again.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::binary::QemuBinary;
use crate::cmdline::{render, GuestSpec, LaunchOptions, NicBackend, RunPaths, SpecError};
use crate::console::ConsoleLog;
use crate::guest_user::GuestUser;
use crate::qmp::{QmpClient, QmpError, StatusInfo};

/// Errors of the process lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The guest spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A QMP exchange failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited during start-up.
    #[error("QEMU exited during start-up ({status}); qemu.log:\n{log}")]
    EarlyExit {
        /// Exit status.
        status: std::process::ExitStatus,
        /// The end of `qemu.log`.
        log: String,
    },
    /// Something did not happen in time.
    #[error("timeout after {0:?}: {1}")]
    Timeout(Duration, String),
    /// No live QEMU for this instance directory.
    #[error("no QEMU running for {0}")]
    NotRunning(PathBuf),
    /// A live QEMU already serves this instance directory.
    #[error("QEMU pid {pid} is already running for {dir}")]
    AlreadyRunning {
        /// Its pid.
        pid: i32,
        /// The directory.
        dir: PathBuf,
    },
    /// Resume was asked for but there is no saved state.
    #[error("no saved memory state at {0}")]
    NoSavedState(PathBuf),
    /// Sending a signal failed.
    #[error("signal to pid {pid}: {source}")]
    Signal {
        /// Target.
        pid: i32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

type Result<T, E = ProcessError> = std::result::Result<T, E>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessError {
    let context = context.into();
    move |source| ProcessError::Io { context, source }
}

/// The per-instance directory and its fixed file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDir {
    root: PathBuf,
}

impl InstanceDir {
    /// Wrap a directory (created on spawn). Keep the path short: unix socket
    /// paths are limited to 107 bytes.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        InstanceDir { root: root.into() }
    }
    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Socket, console and pid file paths.
    pub fn paths(&self) -> RunPaths {
        RunPaths::in_dir(&self.root)
    }
    /// QEMU's own stdout/stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.root.join("qemu.log")
    }
    /// Saved RAM + device state of a suspended guest.
    pub fn memory_state(&self) -> PathBuf {
        self.root.join("memory.state")
    }
    /// The serial console log.
    pub fn console(&self) -> ConsoleLog {
        ConsoleLog::new(self.paths().console)
    }
    /// The guest is suspended (a saved state exists).
    pub fn is_suspended(&self) -> bool {
        self.memory_state().exists()
    }
    /// The pid of a live QEMU serving this directory, if any. Guards against
    /// pid reuse by checking that the process's command line names our QMP socket.
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.paths().pid).ok()?.trim().parse().ok()?;
        (pid_alive(pid) && cmdline_mentions(pid, &self.paths().qmp)).then_some(pid)
    }

    /// SIGKILL the QEMU serving this directory, without QMP (a hung monitor must
    /// not prevent a hard stop). Returns whether one was running.
    pub async fn kill_running(&self) -> Result<bool> {
        let Some(pid) = self.running_pid() else {
            return Ok(false);
        };
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(source) => return Err(ProcessError::Signal { pid, source }),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) {
            if Instant::now() >= deadline {
                return Err(ProcessError::Timeout(Duration::from_secs(10), format!("pid {pid} to die after SIGKILL")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let p = self.paths();
        for f in [&p.qmp, &p.vnc, &p.pid] {
            let _ = tokio::fs::remove_file(f).await;
        }
        Ok(true)
    }
}

/// Extra knobs for [`QemuProcess::spawn`].
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Start with CPUs stopped (`-S`).
    pub start_paused: bool,
    /// How long to wait for the QMP socket.
    pub ready_timeout: Duration,
    /// Start QEMU inside this named network namespace (as `ip netns exec`
    /// would), with its taps made there and not in the host's namespace.
    pub netns: Option<String>,
    /// Run QEMU as this unprivileged user, owner of the instance directory
    /// (see [`crate::guest_user`]). `None`: as the caller.
    pub user: Option<GuestUser>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions { start_paused: false, ready_timeout: Duration::from_secs(30), netns: None, user: None }
    }
}

/// How often [`QemuProcess::stop_graceful`] presses the power button again.
pub const POWERDOWN_RETRY: Duration = Duration::from_secs(5);

/// How [`QemuProcess::stop_graceful`] ended the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// QEMU was not running.
    AlreadyStopped,
    /// The guest shut down after the ACPI power button.
    Powerdown,
    /// The guest ignored ACPI; QEMU was told to `quit`.
    Quit,
    /// QEMU did not react to QMP; it was killed.
    Killed,
}

/// A running QEMU and its QMP session.
#[derive(Debug)]
pub struct QemuProcess {
    dir: InstanceDir,
    pid: i32,
    child: Option<Child>,
    qmp: Option<QmpClient>,
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes (it waits for its parent to reap it), but only
    // once every thread is: QEMU is multi-threaded, and after SIGKILL its main thread can
    // show `Z` while other threads are still exiting with the process's files, and so the
    // disk image's write lock, still open. Starting the guest again in that window failed
    // with "Failed to get "write" lock" (a hard reboot under load, Tempest).
    let live = |stat: &str| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    };
    match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks.flatten().any(|t| std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| live(&s))),
        Err(_) => std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| live(&s)),
    }
}

fn cmdline_mentions(pid: i32, path: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = path.to_string_lossy();
    raw.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(needle.as_ref()))
}

async fn tail_file(path: &Path, max: usize) -> String {
    let text = tokio::fs::read(path).await.unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// Opens the taps the spec names (in `netns`) and switches those NICs to the
/// fds, which QEMU inherits. The returned fds must stay open until QEMU runs.
fn open_taps(spec: &mut GuestSpec, netns: Option<&str>) -> Result<Vec<OwnedFd>> {
    let ns = netns.map(crate::tap::netns_path);
    let mut held = Vec::new();
    for nic in &mut spec.nics {
        if let NicBackend::TapName(name) = &nic.backend {
            let fd = crate::tap::open_tap(name, ns.as_deref()).map_err(io(format!("opening tap {name}")))?;
            nic.backend = NicBackend::TapFd(fd.as_raw_fd());
            held.push(fd);
        }
    }
    Ok(held)
}

/// What the child does between fork and exec, in this order: enter the
/// network namespace (needs root), let QEMU inherit its tap fds (cleared here,
/// in the child, so nothing else spawned meanwhile inherits them), then drop
/// to the guest's user for good (supplementary groups, gid, uid; with a
/// non-root uid the kernel clears every capability).
fn confine(cmd: &mut Command, netns: Option<RawFd>, taps: Vec<RawFd>, user: Option<GuestUser>) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    use std::os::fd::BorrowedFd;
    let child = move || -> std::io::Result<()> {
        if let Some(fd) = netns {
            // SAFETY: the namespace file stays open in the parent until the spawn returns.
            #[allow(unsafe_code)]
            let ns = unsafe { BorrowedFd::borrow_raw(fd) };
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        }
        for &fd in &taps {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        if let Some(u) = user {
            setgroups(&[])?;
            setgid(Gid::from_raw(u.gid))?;
            setuid(Uid::from_raw(u.uid))?;
        }
        Ok(())
    };
    // SAFETY: between fork and exec the closure only makes system calls
    // (setns, fcntl, setgroups, setgid, setuid); it allocates nothing and takes no locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(child);
    }
}

impl QemuProcess {
    /// Start QEMU for `spec` in `dir` and connect to QMP.
    pub async fn spawn(binary: &QemuBinary, dir: &InstanceDir, spec: &GuestSpec, opts: &SpawnOptions) -> Result<Self> {
        Self::spawn_inner(binary, dir, spec, opts, false).await
    }

    /// Start QEMU for `spec` waiting for an incoming migration (`-incoming defer`):
    /// the destination side of a live migration, which then runs `migrate-incoming`.
    pub async fn spawn_incoming(
        binary: &QemuBinary,
        dir: &InstanceDir,
        spec: &GuestSpec,
        opts: &SpawnOptions,
    ) -> Result<Self> {
        Self::spawn_inner(binary, dir, spec, opts, true).await
    }

    async fn spawn_inner(
        binary: &QemuBinary,
        dir: &InstanceDir,
        spec: &GuestSpec,
        opts: &SpawnOptions,
        incoming_defer: bool,
    ) -> Result<Self> {
        let launch = LaunchOptions { incoming_defer, sandbox: binary.sandbox, start_paused: opts.start_paused };
        spec.validate()?;
        if let Some(pid) = dir.running_pid() {
            return Err(ProcessError::AlreadyRunning { pid, dir: dir.root().to_owned() });
        }
        tokio::fs::create_dir_all(dir.root()).await.map_err(io(format!("creating {}", dir.root().display())))?;
        let paths = dir.paths();
        for stale in [&paths.qmp, &paths.vnc, &paths.pid] {
            match tokio::fs::remove_file(stale).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {}", stale.display()))(e)),
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.qemu_log())
            .map_err(io("opening qemu.log"))?;
        let log2 = log.try_clone().map_err(io("duplicating qemu.log fd"))?;
        let netns = match &opts.netns {
            Some(ns) => {
                Some(std::fs::File::open(crate::tap::netns_path(ns)).map_err(io(format!("opening netns {ns}")))?)
            }
            None => None,
        };
        // Opening a tap may wait for one an exiting QEMU still holds (see
        // `tap::open_tap`): on the blocking pool, not on an async worker.
        let (spec, taps) = {
            let (mut spec, ns) = (spec.clone(), opts.netns.clone());
            tokio::task::spawn_blocking(move || open_taps(&mut spec, ns.as_deref()).map(|taps| (spec, taps)))
                .await
                .map_err(|e| io("opening taps")(std::io::Error::other(e)))??
        };
        let argv = render(&spec, &dir.paths(), launch)?;
        tokio::fs::write(dir.root().join("qemu.argv"), argv.join("\n") + "\n")
            .await
            .map_err(io("writing qemu.argv"))?;
        if let Some(user) = opts.user {
            let root = dir.root().to_owned();
            tokio::task::spawn_blocking(move || crate::guest_user::hand_over(&root, user))
                .await
                .map_err(|e| io("handing the instance directory over")(std::io::Error::other(e)))?
                .map_err(|e| io("handing the instance directory over")(std::io::Error::other(e)))?;
        }

        tracing::info!(
            instance = %spec.name,
            dir = %dir.root().display(),
            incoming_defer,
            uid = opts.user.map(|u| u.uid),
            "starting QEMU"
        );
        let mut cmd = Command::new(&binary.path);
        confine(
            &mut cmd,
            netns.as_ref().map(|f| f.as_raw_fd()),
            taps.iter().map(|f| f.as_raw_fd()).collect(),
            opts.user,
        );
        let mut child = cmd
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(io(format!("spawning {}", binary.path.display())))?;
        // QEMU has its copies; the taps now live as long as QEMU does.
        drop(taps);
        drop(netns);
        let pid = child.id().map(|p| p as i32).unwrap_or_default();

        let deadline = Instant::now() + opts.ready_timeout;
        let qmp = loop {
            if let Some(status) = child.try_wait().map_err(io("waiting for QEMU"))? {
                return Err(ProcessError::EarlyExit { status, log: tail_file(&dir.qemu_log(), 4000).await });
            }
            if paths.qmp.exists() {
                match QmpClient::connect(&paths.qmp).await {
                    Ok(c) => break c,
                    Err(QmpError::Io(_)) => {}
                    Err(e) => {
                        let _ = child.start_kill();
                        return Err(e.into());
                    }
                }
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                return Err(ProcessError::Timeout(opts.ready_timeout, "QMP socket".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        tracing::info!(instance = %spec.name, pid, "QEMU is up");
        Ok(QemuProcess { dir: dir.clone(), pid, child: Some(child), qmp: Some(qmp) })
    }

    /// Take over a QEMU started earlier (e.g. by a previous agent process),
    /// from its pid file and QMP socket. The guest keeps running.
    pub async fn adopt(dir: &InstanceDir) -> Result<Self> {
        let pid = dir.running_pid().ok_or_else(|| ProcessError::NotRunning(dir.root().to_owned()))?;
        // The previous client may still be closing its connection: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        let qmp = loop {
            match QmpClient::connect(&dir.paths().qmp).await {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        tracing::info!(dir = %dir.root().display(), pid, "adopted running QEMU");
        Ok(QemuProcess { dir: dir.clone(), pid, child: None, qmp: Some(qmp) })
    }

    /// QEMU's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The instance directory.
    pub fn dir(&self) -> &InstanceDir {
        &self.dir
    }

    /// The QMP session.
    pub fn qmp(&mut self) -> Result<&mut QmpClient> {
        self.qmp.as_mut().ok_or(ProcessError::Qmp(QmpError::Closed))
    }

    /// `query-status` shortcut.
    pub async fn status(&mut self) -> Result<StatusInfo> {
        Ok(self.qmp()?.query_status().await?)
    }

    /// Resident memory of the QEMU process in bytes (from `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let kb: u64 = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Whether QEMU is still alive.
    pub fn is_running(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        pid_alive(self.pid)
    }

    /// Wait until QEMU has exited; `false` on timeout.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !self.is_running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        match kill(Pid::from_raw(self.pid), sig) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(ProcessError::Signal { pid: self.pid, source }),
        }
    }

    async fn cleanup_files(&self) {
        let p = self.dir.paths();
        for f in [&p.qmp, &p.vnc, &p.pid] {
            let _ = tokio::fs::remove_file(f).await;
        }
    }

    /// SIGKILL and wait (Nova's hard power-off fallback).
    pub async fn kill(mut self) -> Result<()> {
        self.qmp = None;
        self.signal(Signal::SIGKILL)?;
        if !self.wait_exit(Duration::from_secs(10)).await {
            return Err(ProcessError::Timeout(Duration::from_secs(10), "QEMU to die after SIGKILL".into()));
        }
        self.cleanup_files().await;
        Ok(())
    }

    /// Press the ACPI power button (again every [`POWERDOWN_RETRY`]) and wait
    /// up to `within` for the guest to power off; then `quit`; then SIGKILL.
    pub async fn stop_graceful(mut self, within: Duration) -> Result<StopOutcome> {
        if !self.is_running() {
            self.cleanup_files().await;
            return Ok(StopOutcome::AlreadyStopped);
        }
        // Like Nova's clean shutdown: press the button again every few seconds,
        // because a guest that is still booting (or busy) can miss one press.
        let deadline = Instant::now() + within;
        loop {
            if let Ok(q) = self.qmp() {
                match q.system_powerdown().await {
                    Ok(()) | Err(QmpError::Closed) => {}
                    Err(e) => tracing::warn!(pid = self.pid, error = %e, "system_powerdown failed"),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.wait_exit(left.min(POWERDOWN_RETRY)).await {
                self.cleanup_files().await;
                return Ok(StopOutcome::Powerdown);
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        tracing::warn!(pid = self.pid, ?within, "guest ignored ACPI powerdown; quitting QEMU");
        if let Ok(q) = self.qmp() {
            let _ = q.quit().await;
        }
        if self.wait_exit(Duration::from_secs(5)).await {
            self.cleanup_files().await;
            return Ok(StopOutcome::Quit);
        }
        self.kill().await?;
        Ok(StopOutcome::Killed)
    }

    /// Save the guest to `<dir>/memory.state` and end QEMU (Nova `suspend`).
    pub async fn suspend(mut self, within: Duration) -> Result<PathBuf> {
        let state = self.dir.memory_state();
        let tmp = state.with_extension("state.partial");
        let _ = tokio::fs::remove_file(&tmp).await;
        let started = Instant::now();
        let q = self.qmp()?;
        q.stop().await?;
        q.migrate(&format!("file:{}", tmp.display())).await?;
        let info = match q.wait_migration(within).await {
            Ok(i) => i,
            Err(e) => {
                // Leave the guest as it was.
                let _ = q.cont().await;
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e.into());
            }
        };
        // Make the state durable before the only other copy (QEMU) goes away.
        let f = tokio::fs::File::open(&tmp).await.map_err(io("opening memory state"))?;
        f.sync_all().await.map_err(io("syncing memory state"))?;
        tokio::fs::rename(&tmp, &state).await.map_err(io("renaming memory state"))?;
        self.qmp()?.quit().await?;
        if !self.wait_exit(Duration::from_secs(10)).await {
            self.signal(Signal::SIGKILL)?;
            self.wait_exit(Duration::from_secs(5)).await;
        }
        self.cleanup_files().await;
        tracing::info!(
            dir = %self.dir.root().display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            migrate_ms = info.total_time,
            "guest suspended"
        );
        Ok(state)
    }

    /// Start QEMU again from `<dir>/memory.state` and let the guest continue
    /// (Nova `resume`). `spec` must describe the same devices as before.
    pub async fn resume(
        binary: &QemuBinary,
        dir: &InstanceDir,
        spec: &GuestSpec,
        opts: &SpawnOptions,
        within: Duration,
    ) -> Result<Self> {
        let state = dir.memory_state();
        if !state.exists() {
            return Err(ProcessError::NoSavedState(state));
        }
        let mut p = Self::spawn_inner(binary, dir, spec, opts, true).await?;
        let loaded = async {
            let q = p.qmp()?;
            q.migrate_incoming(&format!("file:{}", state.display())).await?;
            q.wait_migration(within).await?;
            q.cont().await?;
            Ok::<_, ProcessError>(())
        }
        .await;
        if let Err(e) = loaded {
            tracing::warn!(dir = %dir.root().display(), error = %e, "resume failed; keeping the saved state");
            let _ = p.kill().await;
            return Err(e);
        }
        tokio::fs::remove_file(&state).await.map_err(io("removing memory state"))?;
        Ok(p)
    }
}

#[cfg(test)]
mod liveness_tests {
    use super::pid_alive;

    #[test]
    fn a_process_is_alive_while_any_of_its_threads_is() {
        let me = std::process::id() as i32;
        // This test process has several threads (the test harness's); it is alive.
        assert!(pid_alive(me));
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(pid_alive(pid));
        child.kill().unwrap();
        // Killed but not reaped yet: a zombie, every thread gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pid_alive(pid) {
            assert!(std::time::Instant::now() < deadline, "a killed child stays alive");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
