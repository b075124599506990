//! A small typed QMP (QEMU Machine Protocol) client over a unix socket.
//!
//! Why hand-written and single-owner (`&mut self`), with no background task:
//! QMP is a line-oriented JSON protocol where **events are delivered only to
//! the connection that is open when they happen**. Operations such as ACPI
//! powerdown (`SHUTDOWN`), device unplug (`DEVICE_DELETED`) or migration must
//! therefore wait for their event on the same connection that issued the
//! command. Reading replies and events in one place, and buffering events seen
//! while waiting for a reply, makes that ordering explicit: an event that
//! arrives before the command's reply is not lost, it waits in
//! [`QmpClient::events`] until [`QmpClient::wait_event`] takes it.
//!
//! Every command carries an `id` so that a late reply from a timed-out command
//! can never be mistaken for the reply of the next one. Reads use
//! `Lines::next_line`, which is cancellation safe, so timeouts never lose half
//! a line.
//!
//! A QEMU monitor socket accepts one client at a time: dropping the client
//! frees the socket for the next one (e.g. an agent that restarts and adopts).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::{timeout_at, Instant};

/// Errors of the QMP client.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Socket I/O failed.
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A line was not valid JSON, or a reply did not have the expected shape.
    #[error("QMP JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// QEMU closed the connection (it exited, or another client took over).
    #[error("QMP connection closed by QEMU")]
    Closed,
    /// The first line was not a QMP greeting.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU answered the command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// The command that failed.
        command: String,
        /// QMP error class, e.g. `GenericError`, `DeviceNotFound`.
        class: String,
        /// Human readable description.
        desc: String,
    },
    /// Nothing arrived in time.
    #[error("QMP timeout after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

type Result<T, E = QmpError> = std::result::Result<T, E>;

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    /// Event name, e.g. `SHUTDOWN`, `STOP`, `RESUME`, `DEVICE_DELETED`.
    pub event: String,
    /// Event payload (`{}` when absent).
    #[serde(default)]
    pub data: Value,
    /// `{"seconds":..,"microseconds":..}` as sent by QEMU.
    #[serde(default)]
    pub timestamp: Value,
}

/// The QEMU version from the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

/// VM run state (`query-status`'s `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Guest CPUs are running.
    Running,
    /// Stopped by `stop` (or after an incoming migration finished).
    Paused,
    /// Started with `-S`, never ran.
    Prelaunch,
    /// Waiting for an incoming migration (`-incoming`).
    Inmigrate,
    /// Outgoing migration finished; the source stays stopped.
    Postmigrate,
    /// Finishing an outgoing migration.
    FinishMigrate,
    /// The guest shut down (with `-no-shutdown`).
    Shutdown,
    /// Guest suspended to RAM (S3).
    Suspended,
    /// Stopped on an I/O error.
    IoError,
    /// The guest kernel panicked (pvpanic).
    GuestPanicked,
    /// An internal error stopped the VM (e.g. KVM emulation failure).
    InternalError,
    /// Any other state QEMU may report.
    #[serde(other)]
    Other,
}

/// Reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusInfo {
    /// Guest CPUs are running.
    pub running: bool,
    /// Detailed state.
    pub status: RunState,
}

/// Migration status (`query-migrate`'s `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationStatus {
    /// No migration ran yet.
    None,
    /// Setting up.
    Setup,
    /// Transferring.
    Active,
    /// Device state phase.
    Device,
    /// Stopped before the switchover (capability `pause-before-switchover`), waiting
    /// for `migrate-continue`.
    PreSwitchover,
    /// Done.
    Completed,
    /// Failed; see `error-desc`.
    Failed,
    /// Being cancelled.
    Cancelling,
    /// Cancelled.
    Cancelled,
    /// Any other state (postcopy, colo, wait-unplug ...).
    #[serde(other)]
    Other,
}

/// Reply of `query-migrate`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MigrationInfo {
    /// Absent before any migration.
    pub status: Option<MigrationStatus>,
    /// Set when `status` is `failed`.
    #[serde(rename = "error-desc")]
    pub error_desc: Option<String>,
    /// Milliseconds spent so far (or in total).
    #[serde(rename = "total-time")]
    pub total_time: Option<u64>,
    /// Milliseconds the guest was stopped for the switchover (once completed).
    pub downtime: Option<u64>,
    /// RAM transfer counters (`transferred`, `total`, `remaining`, `mbps`, ...).
    #[serde(default)]
    pub ram: Option<Value>,
}

/// Reply of `query-vnc`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VncInfo {
    /// A VNC server is configured.
    pub enabled: bool,
    /// Authentication scheme, e.g. `none`.
    pub auth: Option<String>,
    /// `ipv4`, `ipv6` or `unix`.
    pub family: Option<String>,
    /// Host (or socket path) the server listens on.
    pub host: Option<String>,
    /// Port (or empty for unix sockets).
    pub service: Option<String>,
    /// Connected clients.
    #[serde(default)]
    pub clients: Vec<Value>,
}

/// A connected QMP session in command mode.
#[derive(Debug)]
pub struct QmpClient {
    reader: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
    events: VecDeque<Event>,
    version: QemuVersion,
}

/// Build a `{"execute":..}` object (exposed for tests and logging).
pub fn command_json(command: &str, arguments: Option<&Value>, id: u64) -> Value {
    let mut obj = Map::new();
    obj.insert("execute".into(), Value::String(command.into()));
    if let Some(a) = arguments {
        obj.insert("arguments".into(), a.clone());
    }
    obj.insert("id".into(), json!(id));
    Value::Object(obj)
}

impl QmpClient {
    /// Connect to `path`, read the greeting and enter command mode.
    pub async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).await?;
        Self::handshake(stream, Duration::from_secs(10)).await
    }

    /// Perform the greeting + `qmp_capabilities` handshake on a stream.
    pub async fn handshake(stream: UnixStream, within: Duration) -> Result<Self> {
        let (r, writer) = stream.into_split();
        let mut reader = BufReader::new(r).lines();
        let deadline = Instant::now() + within;
        let version = loop {
            let line = timeout_at(deadline, reader.next_line())
                .await
                .map_err(|_| QmpError::Timeout(within, "QMP greeting".into()))??
                .ok_or(QmpError::Closed)?;
            let greeting: Value = serde_json::from_str(&line)?;
            if let Some(v) = greeting.pointer("/QMP/version/qemu") {
                break v.clone();
            }
            // An event emitted as the previous client hung up can still sit in the
            // monitor's output buffer and reach the next client before its greeting
            // (seen with VNC_DISCONNECTED): it belongs to nobody, skip it.
            if greeting.get("event").is_none() {
                return Err(QmpError::Protocol(format!("not a QMP greeting: {line}")));
            }
            tracing::debug!(%line, "QMP event before the greeting, skipped");
        };
        let version: QemuVersion = serde_json::from_value(version)?;
        let mut client = QmpClient { reader, writer, next_id: 1, events: VecDeque::new(), version };
        client.execute_within("qmp_capabilities", None, deadline - Instant::now()).await?;
        Ok(client)
    }

    /// QEMU's version from the greeting.
    pub fn version(&self) -> &QemuVersion {
        &self.version
    }

    /// Events received so far and not yet consumed.
    pub fn events(&self) -> &VecDeque<Event> {
        &self.events
    }

    /// Take all buffered events.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Run a command with a 30 s timeout and return its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.execute_within(command, arguments.as_ref(), Duration::from_secs(30)).await
    }

    /// Run a command and deserialize its `return` value.
    pub async fn execute_as<T: DeserializeOwned>(&mut self, command: &str, arguments: Option<Value>) -> Result<T> {
        let v = self.execute(command, arguments).await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Run a command with an explicit timeout.
    pub async fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<&Value>,
        within: Duration,
    ) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&command_json(command, arguments, id))?;
        line.push(b'\n');
        tracing::trace!(command, id, "QMP execute");
        self.writer.write_all(&line).await?;
        let deadline = Instant::now() + within;
        loop {
            let msg = self.read_message(deadline).await.map_err(|e| match e {
                QmpError::Timeout(..) => QmpError::Timeout(within, format!("reply to {command}")),
                e => e,
            })?;
            if msg.get("event").is_some() {
                self.events.push_back(serde_json::from_value(msg)?);
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                // A reply to an earlier command that timed out: drop it.
                tracing::debug!(?msg, "QMP: ignoring reply with another id");
                continue;
            }
            if let Some(err) = msg.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: err["class"].as_str().unwrap_or("?").to_owned(),
                    desc: err["desc"].as_str().unwrap_or("?").to_owned(),
                });
            }
            return Ok(msg.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Wait for the next event named `name` (already buffered or new).
    /// Other events stay buffered.
    pub async fn wait_event(&mut self, name: &str, within: Duration) -> Result<Event> {
        if let Some(pos) = self.events.iter().position(|e| e.event == name) {
            return Ok(self.events.remove(pos).expect("position is valid"));
        }
        let deadline = Instant::now() + within;
        loop {
            let msg = self.read_message(deadline).await.map_err(|e| match e {
                QmpError::Timeout(..) => QmpError::Timeout(within, format!("event {name}")),
                e => e,
            })?;
            if msg.get("event").is_some() {
                let ev: Event = serde_json::from_value(msg)?;
                if ev.event == name {
                    return Ok(ev);
                }
                self.events.push_back(ev);
            }
        }
    }

    async fn read_message(&mut self, deadline: Instant) -> Result<Value> {
        loop {
            let line = timeout_at(deadline, self.reader.next_line())
                .await
                .map_err(|_| QmpError::Timeout(Duration::ZERO, String::new()))??
                .ok_or(QmpError::Closed)?;
            if line.trim().is_empty() {
                continue;
            }
            return Ok(serde_json::from_str(&line)?);
        }
    }

    // ------------------------------------------------------------ typed commands

    /// `query-status`.
    pub async fn query_status(&mut self) -> Result<StatusInfo> {
        self.execute_as("query-status", None).await
    }

    /// `stop`: pause the guest CPUs (Nova `pause`).
    pub async fn stop(&mut self) -> Result<()> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont`: resume the guest CPUs (Nova `unpause`).
    pub async fn cont(&mut self) -> Result<()> {
        self.execute("cont", None).await.map(drop)
    }

    /// `system_powerdown`: press the ACPI power button.
    pub async fn system_powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `system_reset`: hard reset (Nova `reboot --hard` without a restart).
    pub async fn system_reset(&mut self) -> Result<()> {
        self.execute("system_reset", None).await.map(drop)
    }

    /// `quit`: QEMU exits right away. The connection closes afterwards.
    pub async fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `migrate` to a URI such as `file:/path/memory.state`.
    pub async fn migrate(&mut self, uri: &str) -> Result<()> {
        self.execute("migrate", Some(json!({ "uri": uri }))).await.map(drop)
    }

    /// `query-migrate`.
    pub async fn query_migrate(&mut self) -> Result<MigrationInfo> {
        self.execute_as("query-migrate", None).await
    }

    /// `migrate_cancel`: stop an outgoing migration; the source guest keeps running.
    pub async fn migrate_cancel(&mut self) -> Result<()> {
        self.execute("migrate_cancel", None).await.map(drop)
    }

    /// `migrate-set-capabilities` with `(name, state)` pairs.
    pub async fn migrate_set_capabilities(&mut self, caps: &[(&str, bool)]) -> Result<()> {
        let caps: Vec<Value> = caps.iter().map(|(c, on)| json!({ "capability": c, "state": on })).collect();
        self.execute("migrate-set-capabilities", Some(json!({ "capabilities": caps }))).await.map(drop)
    }

    /// `migrate-set-parameters` with a parameter object (e.g. `{"downtime-limit": 500}`).
    pub async fn migrate_set_parameters(&mut self, params: Value) -> Result<()> {
        self.execute("migrate-set-parameters", Some(params)).await.map(drop)
    }

    /// `migrate-incoming` (QEMU must run with `-incoming defer`).
    pub async fn migrate_incoming(&mut self, uri: &str) -> Result<()> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri }))).await.map(drop)
    }

    /// Poll `query-migrate` until `completed` (or fail on `failed`/`cancelled`).
    pub async fn wait_migration(&mut self, within: Duration) -> Result<MigrationInfo> {
        let deadline = Instant::now() + within;
        loop {
            let info = self.query_migrate().await?;
            match info.status {
                Some(MigrationStatus::Completed) => return Ok(info),
                Some(MigrationStatus::Failed) | Some(MigrationStatus::Cancelled) => {
                    return Err(QmpError::Command {
                        command: "migrate".into(),
                        class: format!("{:?}", info.status.expect("matched Some")),
                        desc: info.error_desc.unwrap_or_default(),
                    })
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(QmpError::Timeout(within, "migration to complete".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `screendump` of the primary display to a file (`png` or `ppm`).
    pub async fn screendump(&mut self, filename: &Path, format: Option<&str>) -> Result<()> {
        let mut args = json!({ "filename": filename });
        if let Some(f) = format {
            args["format"] = json!(f);
        }
        self.execute("screendump", Some(args)).await.map(drop)
    }

    /// `query-vnc`.
    pub async fn query_vnc(&mut self) -> Result<VncInfo> {
        self.execute_as("query-vnc", None).await
    }

    /// `blockdev-add` with a full argument object (e.g. a qcow2 node over a file node).
    pub async fn blockdev_add(&mut self, options: Value) -> Result<()> {
        self.execute("blockdev-add", Some(options)).await.map(drop)
    }

    /// `blockdev-del`.
    pub async fn blockdev_del(&mut self, node_name: &str) -> Result<()> {
        self.execute("blockdev-del", Some(json!({ "node-name": node_name }))).await.map(drop)
    }

    /// `device_add` with a driver, an id and extra properties.
    pub async fn device_add(&mut self, driver: &str, id: &str, props: Map<String, Value>) -> Result<()> {
        let mut args = props;
        args.insert("driver".into(), json!(driver));
        args.insert("id".into(), json!(id));
        self.execute("device_add", Some(Value::Object(args))).await.map(drop)
    }

    /// `device_del`, then wait for `DEVICE_DELETED` for this id on this connection.
    pub async fn device_del(&mut self, id: &str, within: Duration) -> Result<()> {
        self.execute("device_del", Some(json!({ "id": id }))).await?;
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.wait_event("DEVICE_DELETED", left).await?;
            if ev.data.get("device").and_then(Value::as_str) == Some(id) {
                return Ok(());
            }
            // DEVICE_DELETED for a child (e.g. the virtio backend path): keep waiting.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    /// A scripted fake QEMU: greeting, then for each received command reply
    /// with what `respond` returns (lines written verbatim).
    async fn fake_qemu(dir: &Path, respond: impl Fn(&Value) -> Vec<String> + Send + 'static) -> std::path::PathBuf {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n")
                .await
                .unwrap();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let cmd: Value = serde_json::from_str(&l).unwrap();
                for out in respond(&cmd) {
                    w.write_all(out.as_bytes()).await.unwrap();
                    w.write_all(b"\r\n").await.unwrap();
                }
            }
        });
        path
    }

    fn ret(cmd: &Value, v: Value) -> String {
        json!({"return": v, "id": cmd["id"]}).to_string()
    }

    #[tokio::test]
    async fn handshake_status_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let path = fake_qemu(d.path(), |cmd| match cmd["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ret(cmd, json!({}))],
            "query-status" => vec![ret(cmd, json!({"running": false, "status": "paused", "singlestep": false}))],
            _ => vec![json!({"error": {"class": "CommandNotFound", "desc": "nope"}, "id": cmd["id"]}).to_string()],
        })
        .await;
        let mut c = QmpClient::connect(&path).await.unwrap();
        assert_eq!(c.version().major, 10);
        let s = c.query_status().await.unwrap();
        assert_eq!(s.status, RunState::Paused);
        assert!(!s.running);
        match c.execute("bogus", None).await {
            Err(QmpError::Command { class, .. }) => assert_eq!(class, "CommandNotFound"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stale_event_before_the_greeting_is_skipped_but_garbage_is_not() {
        let d = tempfile::tempdir().unwrap();
        for (first, ok) in [
            (r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "VNC_DISCONNECTED", "data": {}}"#, true),
            (r#"{"hello": "world"}"#, false),
        ] {
            let path = d.path().join(format!("qmp-{ok}.sock"));
            let listener = UnixListener::bind(&path).unwrap();
            let first = first.to_string();
            tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                w.write_all(format!("{first}\r\n").as_bytes()).await.unwrap();
                w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\r\n").await.unwrap();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let cmd: Value = serde_json::from_str(&l).unwrap();
                    w.write_all(format!("{}\r\n", ret(&cmd, json!({}))).as_bytes()).await.unwrap();
                }
            });
            let c = QmpClient::connect(&path).await;
            assert_eq!(c.is_ok(), ok, "{c:?}");
            if let Ok(c) = c {
                assert!(c.events().is_empty(), "the stale event is nobody's");
            }
        }
    }

    #[tokio::test]
    async fn events_before_reply_are_buffered_for_wait_event() {
        let d = tempfile::tempdir().unwrap();
        let path = fake_qemu(d.path(), |cmd| match cmd["execute"].as_str().unwrap() {
            "system_powerdown" => vec![
                json!({"event": "POWERDOWN", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}).to_string(),
                // a stale reply with another id must be skipped
                json!({"return": {}, "id": 999}).to_string(),
                ret(cmd, json!({})),
                json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}).to_string(),
            ],
            _ => vec![ret(cmd, json!({}))],
        })
        .await;
        let mut c = QmpClient::connect(&path).await.unwrap();
        c.system_powerdown().await.unwrap();
        assert_eq!(c.events().len(), 1);
        let ev = c.wait_event("SHUTDOWN", Duration::from_secs(2)).await.unwrap();
        assert_eq!(ev.data["reason"], "guest-shutdown");
        let ev = c.wait_event("POWERDOWN", Duration::from_secs(2)).await.unwrap();
        assert_eq!(ev.event, "POWERDOWN");
        let err = c.wait_event("RESUME", Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, QmpError::Timeout(..)), "{err}");
    }

    #[tokio::test]
    async fn device_del_waits_for_its_own_device_deleted() {
        let d = tempfile::tempdir().unwrap();
        let path = fake_qemu(d.path(), |cmd| match cmd["execute"].as_str().unwrap() {
            "device_del" => vec![
                ret(cmd, json!({})),
                json!({"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/vol1/virtio-backend"}})
                    .to_string(),
                json!({"event": "DEVICE_DELETED", "data": {"device": "vol1", "path": "/machine/peripheral/vol1"}})
                    .to_string(),
            ],
            _ => vec![ret(cmd, json!({}))],
        })
        .await;
        let mut c = QmpClient::connect(&path).await.unwrap();
        c.device_del("vol1", Duration::from_secs(2)).await.unwrap();
    }

    #[test]
    fn command_json_shape() {
        let v = command_json("migrate", Some(&json!({"uri": "file:/x"})), 7);
        assert_eq!(v, json!({"execute": "migrate", "arguments": {"uri": "file:/x"}, "id": 7}));
        assert_eq!(command_json("stop", None, 1), json!({"execute": "stop", "id": 1}));
    }

    #[test]
    fn parses_replies() {
        let m: MigrationInfo = serde_json::from_value(json!({"status": "completed", "total-time": 950})).unwrap();
        assert_eq!(m.status, Some(MigrationStatus::Completed));
        let m: MigrationInfo = serde_json::from_value(json!({})).unwrap();
        assert_eq!(m.status, None);
        let s: StatusInfo = serde_json::from_value(json!({"running": true, "status": "colo"})).unwrap();
        assert_eq!(s.status, RunState::Other);
        let v: VncInfo = serde_json::from_value(json!({"enabled": true, "auth": "none", "family": "unix", "host": "/x/vnc.sock", "service": "", "clients": []})).unwrap();
        assert!(v.enabled);
    }
}
