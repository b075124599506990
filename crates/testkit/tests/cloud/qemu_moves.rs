//! Moving real guests between two qemu agents of one process (hosts `lm-a` and `lm-b`,
//! each with its own instance directory), through the real `openstack` CLI: live
//! migration (the same guest keeps running: its uptime heartbeat continues on the
//! destination without a new boot), a live migration whose destination dies half-way
//! (the guest stays where it was), and evacuation from a dead host (the host destroys
//! its stale guest when its agent returns).
//!
//! Cold migration and resize between agents told to behave as separate machines move
//! the disks over NBD (the destination serves empty disks, the source writes them).
//! Between such agents the destination listens on free ports of its range, also when
//! the ones it would try first are taken, and answers them to the source. Staged disks
//! a move left behind are swept by the destination's reconciliation.
//!
//! Like the other qemu tests these never skip, take the module lock of `qemu.rs` so that
//! at most two TCG guests run at once, and kill every process mentioning their data
//! directory when they end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_compute_agent::virt::qemu::{images::InternalImageSource, QemuDriver, QemuDriverConfig};
use stratus_compute_agent::AgentHandle;
use stratus_testkit::TestCloud;

use crate::qemu::{create_direct_boot_image, Reaper, ONE_AT_A_TIME};

const HOSTS: [&str; 2] = ["lm-a", "lm-b"];

/// A cloud without its own agent, and the qemu agents of `lm-a` and `lm-b`.
async fn two_host_cloud(data: &Path) -> (TestCloud, Vec<AgentHandle>) {
    two_host_cloud_capped(data, 0).await
}

/// [`two_host_cloud`] whose agents live-migrate over TCP on loopback, as between machines
/// (marked for [`from_unix`]).
async fn two_host_cloud_over_tcp(data: &Path) -> (TestCloud, Vec<AgentHandle>) {
    let (cloud, agents) = two_host_cloud_with(data, |c| {
        c.live_migration_local_sockets = false;
        c.live_migration_listen_address = "127.0.0.1".into();
    })
    .await;
    std::fs::write(cloud.data_dir.join("tcp"), "").unwrap();
    (cloud, agents)
}

/// [`two_host_cloud`] with the memory copy capped at `mib` MiB/s (0: no cap), so that a
/// migration of a 128 MiB guest lasts seconds and can be steered or broken half-way.
async fn two_host_cloud_capped(data: &Path, mib: u64) -> (TestCloud, Vec<AgentHandle>) {
    two_host_cloud_with(data, |c| c.live_migration_bandwidth_mib = mib).await
}

async fn two_host_cloud_with(data: &Path, tweak: impl Fn(&mut QemuDriverConfig)) -> (TestCloud, Vec<AgentHandle>) {
    let cloud = TestCloud::start_in(data.to_path_buf(), |c| {
        c.compute.local.local_agent = false;
        c.compute.local.virt_driver = "qemu".into();
    })
    .await;
    let mut agents = Vec::new();
    for h in HOSTS {
        agents.push(start_agent_with(&cloud, h, &tweak).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while cloud.openstack(&["hypervisor", "list"]).await.unwrap().as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "two hypervisors");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (cloud, agents)
}

/// The agent of `host` (also after a restart: it adopts what runs in its directory).
async fn start_agent(cloud: &TestCloud, host: &str) -> AgentHandle {
    start_agent_with(cloud, host, |_| {}).await
}

async fn start_agent_with(cloud: &TestCloud, host: &str, tweak: impl Fn(&mut QemuDriverConfig)) -> AgentHandle {
    let platform = &cloud.handle().platform;
    let mut cfg = QemuDriverConfig {
        instances_path: Some(host_dir(cloud, host)),
        power_off_timeout_secs: 30,
        ..Default::default()
    };
    tweak(&mut cfg);
    let source = Arc::new(InternalImageSource::new(platform.internal.clone()));
    let driver = QemuDriver::new(cfg, &cloud.data_dir, None, source).await.expect("qemu driver");
    let acfg = stratus_compute_agent::AgentConfig {
        host: host.into(),
        heartbeat_interval_secs: 1,
        sync_interval_secs: 2,
        ..Default::default()
    };
    stratus_compute_agent::Agent::start(acfg, platform.bus.clone(), Arc::new(driver)).await.expect("qemu agent")
}

fn host_dir(cloud: &TestCloud, host: &str) -> PathBuf {
    cloud.data_dir.join(host)
}

fn other(host: &str) -> &'static str {
    if host == HOSTS[0] {
        HOSTS[1]
    } else {
        HOSTS[0]
    }
}

/// A direct-kernel-boot image whose guest prints its uptime every second on the serial
/// console (`stratus.heartbeat=1`, see tools/build-test-image.sh).
async fn heartbeat_image(cloud: &TestCloud) {
    create_direct_boot_image(
        cloud,
        "hb",
        &["os_command_line=root=/dev/vda console=ttyS0,115200n8 stratus.heartbeat=1"],
    )
    .await;
}

/// Boots `name` from the heartbeat image and waits until the guest's uptime passed
/// `above` seconds; returns its id and host.
async fn boot_heartbeat_guest(cloud: &TestCloud, name: &str, above: f64) -> (String, String) {
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "hb", "--nic", "none", "--wait", name])
        .await
        .expect("server create --wait");
    let id = vm["id"].as_str().unwrap().to_string();
    let host = host_of(&show(cloud, name).await);
    wait_heartbeat(cloud, name, above).await;
    (id, host)
}

async fn show(cloud: &TestCloud, server: &str) -> Value {
    cloud.openstack(&["server", "show", server]).await.unwrap_or_else(|e| panic!("server show {server}: {e}"))
}

async fn wait_status(cloud: &TestCloud, server: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = show(cloud, server).await;
        if s["status"] == want && s["OS-EXT-STS:task_state"].is_null() {
            return s;
        }
        assert!(s["status"] != "ERROR" || want == "ERROR", "{server} went to ERROR: {s}");
        assert!(Instant::now() < deadline, "{server} not {want} within {within:?}: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn host_of(s: &Value) -> String {
    s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

fn pid_of(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("qemu.pid")).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned)))
        .is_some_and(|st| st != "Z" && st != "X")
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn console(cloud: &TestCloud, server: &str) -> String {
    let (code, out, err) = cloud.openstack_raw(&cloud.admin(), &["console", "log", "show", server]).await;
    assert_eq!(code, Some(0), "console log show: {err}");
    out
}

/// The uptimes of the guest's heartbeat lines.
fn heartbeats(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split("stratus-guest: heartbeat uptime=").nth(1))
        .filter_map(|u| u.trim().parse().ok())
        .collect()
}

/// Waits until the console shows a heartbeat above `above`; returns the console.
async fn wait_heartbeat(cloud: &TestCloud, server: &str, above: f64) -> String {
    // TCG boots on a shared 2-core machine take 5 s idle, a minute under load.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let log = console(cloud, server).await;
        if heartbeats(&log).iter().any(|u| *u > above) {
            return log;
        }
        assert!(Instant::now() < deadline, "no heartbeat above {above} on the console of {server}:\n{log}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the agents of this test talk over unix sockets (then the console log moves too).
fn from_unix(cloud: &TestCloud) -> bool {
    !cloud.data_dir.join("tcp").exists()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One live migration of `server` (now on `from`) to the other host, checked end to end.
async fn live_migrate(cloud: &TestCloud, id: &str, from: &str) {
    let to = other(from);
    let src = host_dir(cloud, from).join(id);
    let src_pid = pid_of(&src).expect("QEMU runs on the source");
    let before = heartbeats(&console(cloud, "lm1").await).into_iter().fold(0.0, f64::max);
    assert!(before > 0.0, "the guest printed heartbeats before the move");
    // Data the guest's disk holds (written through QEMU, as the guest would) travels too.
    let pattern = format!("{}", 0x30 + (before as u64 % 0x40));
    let offset = 4 << 20;
    let mut q = stratus_qemu::QmpClient::connect(&src.join("qmp.sock")).await.expect("QMP of the source");
    let cmd = format!("qemu-io drive-disk0 \"write -P {pattern} {offset} 65536\"");
    q.execute("human-monitor-command", Some(serde_json::json!({"command-line": cmd}))).await.expect("write");
    drop(q);
    let started = Instant::now();
    cloud
        .openstack(&["server", "migrate", "--live-migration", "--host", to, "--wait", "lm1"])
        .await
        .expect("server migrate --live-migration --wait");
    let s = wait_status(cloud, "lm1", "ACTIVE", Duration::from_secs(120)).await;
    let api_ms = started.elapsed().as_millis();
    assert_eq!(host_of(&s), to, "{s}");
    assert_eq!(s["OS-EXT-STS:power_state"], 1, "{s}");
    let dest = host_dir(cloud, to).join(id);
    let dest_pid = pid_of(&dest).expect("QEMU runs on the destination");
    assert_ne!(dest_pid, src_pid);
    wait_until("the source QEMU ends", Duration::from_secs(30), || !alive(src_pid)).await;
    assert!(!src.exists(), "the source directory is removed");
    assert!(!dest.join("incoming.json").exists(), "the destination adopted the guest");
    let read = std::process::Command::new("qemu-io")
        .args(["-r", "-U", "-f", "qcow2", "-c", &format!("read -P {pattern} {offset} 65536")])
        .arg(dest.join("disk"))
        .output()
        .expect("qemu-io");
    let out = String::from_utf8_lossy(&read.stdout);
    assert!(read.status.success() && !out.contains("verification failed"), "the disk's data moved: {out}");
    // The same guest: its uptime goes on from where it was, and it never booted here.
    let log = wait_heartbeat(cloud, "lm1", before + 1.0).await;
    let own = std::fs::read_to_string(dest.join("console.log")).unwrap_or_default();
    let here: Vec<f64> = heartbeats(&own).into_iter().filter(|u| *u > before).collect();
    assert!(!here.is_empty(), "the destination's QEMU prints the heartbeat:\n{own}");
    // The boot banner is there only when the log came along (it was printed on the first host).
    let boots = log.matches("stratus-guest: init started").count();
    assert_eq!(boots, usize::from(from_unix(cloud)), "no new boot on the destination:\n{log}");
    if from_unix(cloud) {
        assert!(heartbeats(&own).contains(&before), "the console log was carried over:\n{own}");
    }
    let stats = stratus_compute_agent::virt::qemu::last_live_migration(id).expect("migration measured");
    eprintln!(
        "LIVE-MIGRATION {from}->{to}: api {api_ms} ms (CLI --wait to ACTIVE), driver wall {} ms, disks ready after {} ms, \
         RAM total {} ms, downtime {} ms, RAM sent {} B, disks {:?}; load {}",
        stats.wall_ms,
        stats.mirror_ms,
        stats.total_ms,
        stats.downtime_ms,
        stats.ram_transferred,
        stats.disks,
        load()
    );
    // Where the API's time goes: the steps of the action, from its events.
    let events = cloud.openstack(&["server", "event", "list", "lm1"]).await.unwrap();
    let req = events[0]["Request ID"].as_str().unwrap().to_string();
    let ev = cloud.openstack(&["server", "event", "show", "lm1", &req]).await.unwrap();
    for e in ev["events"].as_array().into_iter().flatten() {
        eprintln!(
            "  step {:45} {} -> {}",
            e["event"].as_str().unwrap_or_default(),
            e["start_time"].as_str().unwrap_or_default(),
            e["finish_time"].as_str().unwrap_or_default()
        );
    }
    assert!(stats.downtime_ms < 5_000, "{stats:?}");
    assert!(!stats.disks.is_empty(), "the root disk was copied: {stats:?}");
}

#[tokio::test]
async fn qemu_live_migration_keeps_the_guest_running_across_two_agents() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, agents) = two_host_cloud(data.path()).await;
    heartbeat_image(&cloud).await;
    let (id, a) = boot_heartbeat_guest(&cloud, "lm1", 3.0).await;

    live_migrate(&cloud, &id, &a).await;
    // And back: the first destination is now the source.
    live_migrate(&cloud, &id, other(&a)).await;

    let migs = cloud.openstack(&["server", "migration", "list", "--server", "lm1"]).await.expect("migration list");
    let done: Vec<&Value> = migs
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["Type"] == "live-migration" && m["Status"] == "completed")
        .collect();
    assert_eq!(done.len(), 2, "{migs}");
    let events = cloud.openstack(&["server", "event", "list", "lm1"]).await.unwrap();
    let lives = events.as_array().unwrap().iter().filter(|e| e["Action"] == "live-migration").count();
    assert_eq!(lives, 2, "{events}");

    cloud.openstack(&["server", "delete", "--wait", "lm1"]).await.expect("delete");
    assert!(!host_dir(&cloud, &a).join(&id).exists());
    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
}

/// A UEFI guest's variable store (`nvram.fd`, a writable pflash) moves with it like a disk,
/// live and cold (over NBD): what the source held is what the destination runs with.
#[tokio::test]
async fn qemu_live_and_cold_migration_carry_a_uefi_guests_variable_store() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, agents) = two_host_cloud_with(data.path(), |c| {
        c.cold_migration_local_copy = false;
        c.live_migration_listen_address = "127.0.0.1".into();
    })
    .await;
    create_direct_boot_image(
        &cloud,
        "hb-efi",
        &["os_command_line=root=/dev/vda console=ttyS0,115200n8 stratus.heartbeat=1", "hw_firmware_type=uefi"],
    )
    .await;
    // OVMF needs more than 128 MB.
    cloud.openstack(&["flavor", "create", "--ram", "256", "--disk", "1", "m1.uefi"]).await.expect("flavor create");
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.uefi", "--image", "hb-efi", "--nic", "none", "--wait", "lm1"])
        .await
        .expect("server create --wait");
    let id = vm["id"].as_str().unwrap().to_string();
    let a = host_of(&show(&cloud, "lm1").await);
    wait_heartbeat(&cloud, "lm1", 3.0).await;
    assert!(console(&cloud, "lm1").await.contains("EDK II"), "booted from OVMF");
    // What OVMF wrote into its variable store while booting (pflash writes go through to
    // the file) is what the destination must run with. A write from outside the guest would
    // not do: the flash's contents travel in the device's memory, which the destination
    // writes back to its file once it runs.
    let src = host_dir(&cloud, &a).join(&id);
    let before = std::fs::read(src.join("nvram.fd")).unwrap();
    let template = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.fd").unwrap();
    assert_ne!(before, template, "OVMF stored variables at boot (what this test carries)");

    live_migrate(&cloud, &id, &a).await;
    let dest = host_dir(&cloud, other(&a)).join(&id);
    let after = std::fs::read(dest.join("nvram.fd")).expect("the destination has the variable store");
    assert!(after == before, "the variable store arrived as the guest left it");

    // Cold, back to the first host over NBD: the store is one of the disks copied and
    // compared (`qemu-img compare` against the export, or the move fails).
    cloud.openstack(&["server", "migrate", "--host", &a, "--wait", "lm1"]).await.expect("server migrate --host");
    let s = wait_status(&cloud, "lm1", "VERIFY_RESIZE", Duration::from_secs(120)).await;
    assert_eq!(host_of(&s), a, "{s}");
    let stats = stratus_compute_agent::virt::qemu::last_cold_copy(&id).expect("an NBD copy was made");
    assert_eq!(stats.disks, ["disk", "nvram.fd"], "{stats:?}");
    let kept = host_dir(&cloud, other(&a)).join(format!("{id}_resize")).join("nvram.fd");
    assert_eq!(std::fs::read(&kept).unwrap(), after, "the source's copy is what was sent");
    cloud.openstack(&["server", "resize", "confirm", "lm1"]).await.expect("resize confirm");
    wait_status(&cloud, "lm1", "ACTIVE", Duration::from_secs(60)).await;
    assert!(pid_of(&host_dir(&cloud, &a).join(&id)).is_some(), "the guest runs on its first host again");
    cloud.openstack(&["server", "delete", "--wait", "lm1"]).await.expect("delete");
    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
}

/// Watches the destination directory `dest` for the incoming marker; answers it parsed
/// (null when none appeared within two minutes).
fn watch_marker(dest: PathBuf) -> tokio::task::JoinHandle<Value> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(m) = std::fs::read_to_string(dest.join("incoming.json")) {
                if let Ok(v) = serde_json::from_str(&m) {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Value::Null
    })
}

/// The ports a TCP destination answered (its marker), checked against its URI and `range`.
fn marker_ports(marker: &Value, range: std::ops::RangeInclusive<u16>) -> (u16, u16) {
    let port = marker["ports"]["port"].as_u64().unwrap_or_else(|| panic!("ports answered: {marker}")) as u16;
    let nbd = marker["ports"]["nbd_port"].as_u64().unwrap_or_else(|| panic!("ports answered: {marker}")) as u16;
    assert_eq!(marker["uri"], format!("tcp:127.0.0.1:{port}"), "the stream listens there: {marker}");
    assert!(range.contains(&port) && range.contains(&nbd) && port != nbd, "{port} {nbd} in {range:?}");
    (port, nbd)
}

/// Between machines the stream and the disks go over TCP (here on loopback: the agents
/// are told not to use their unix sockets), to free ports the destination chose and answered.
#[tokio::test]
async fn qemu_live_migration_over_tcp() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, agents) = two_host_cloud_over_tcp(data.path()).await;
    heartbeat_image(&cloud).await;
    // An ephemeral disk travels too; the read-only config drive is made again there.
    cloud
        .openstack(&["flavor", "create", "--vcpus", "1", "--ram", "128", "--disk", "1", "--ephemeral", "1", "lm.eph"])
        .await
        .expect("flavor create");
    let vm = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "lm.eph",
            "--image",
            "hb",
            "--nic",
            "none",
            "--config-drive",
            "true",
            "--wait",
            "lm1",
        ])
        .await
        .expect("server create --wait");
    let id = vm["id"].as_str().unwrap().to_string();
    let a = host_of(&show(&cloud, "lm1").await);
    wait_heartbeat(&cloud, "lm1", 2.0).await;
    let b = other(&a);
    let watcher = watch_marker(host_dir(&cloud, b).join(&id));
    live_migrate(&cloud, &id, &a).await;
    marker_ports(&watcher.await.unwrap(), 49152..=49215);
    let stats = stratus_compute_agent::virt::qemu::last_live_migration(&id).unwrap();
    assert_eq!(stats.disks, ["drive-disk0", "drive-disk1"], "root and ephemeral disks copied: {stats:?}");
    assert!(host_dir(&cloud, b).join(&id).join("disk.config").exists(), "config drive on the destination");

    cloud.openstack(&["server", "delete", "--wait", "lm1"]).await.expect("delete");
    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
}

/// Listeners on `ports` of loopback (the ones already taken are skipped).
fn hold(ports: &[u16]) -> Vec<std::net::TcpListener> {
    ports.iter().filter_map(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).ok()).collect()
}

/// The ports the uuid scheme gave this server, and the first ones of the range, are taken
/// by someone else on the destination: it listens on others and the source finds them.
#[tokio::test]
async fn qemu_live_migration_over_tcp_takes_free_ports_when_the_first_ones_are_taken() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, agents) = two_host_cloud_over_tcp(data.path()).await;
    heartbeat_image(&cloud).await;
    let (id, a) = boot_heartbeat_guest(&cloud, "lm1", 2.0).await;
    let old = stratus_compute_agent::virt::qemu::live::port_for(&id, 49152, 49215);
    let taken = [old, old + 1, 49152, 49153, 49154];
    let held = hold(&taken);
    assert!(held.len() >= 3, "the test holds the ports");
    for from in [a.clone(), other(&a).to_string()] {
        let watcher = watch_marker(host_dir(&cloud, other(&from)).join(&id));
        live_migrate(&cloud, &id, &from).await;
        let (port, nbd) = marker_ports(&watcher.await.unwrap(), 49152..=49215);
        assert!(!taken.contains(&port) && !taken.contains(&nbd), "{port} {nbd} are not among {taken:?}");
        eprintln!("LIVE-MIGRATION {from}->{}: stream port {port}, NBD port {nbd} ({taken:?} taken)", other(&from));
    }
    drop(held);

    cloud.openstack(&["server", "delete", "--wait", "lm1"]).await.expect("delete");
    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
}

#[tokio::test]
async fn qemu_live_migration_whose_destination_dies_leaves_the_guest_on_its_source() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    // ~100 MiB of RAM at 16 MiB/s: the copy runs for seconds.
    let (cloud, agents) = two_host_cloud_capped(data.path(), 16).await;
    heartbeat_image(&cloud).await;
    let (id, a) = boot_heartbeat_guest(&cloud, "lm1", 2.0).await;
    let b = other(&a);
    let src_pid = pid_of(&host_dir(&cloud, &a).join(&id)).expect("QEMU on the source");

    // The destination QEMU is killed while the memory is being copied (its disks are
    // ready within ~50 ms of its start, the memory takes seconds).
    let dest = host_dir(&cloud, b).join(&id);
    let killer = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if dest.join("incoming.json").exists() {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                if let Some(pid) = pid_of(&dest) {
                    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    });
    // `--wait` ends when the server is ACTIVE again, wherever it is.
    let (code, _, err) = cloud
        .openstack_raw(&cloud.admin(), &["server", "migrate", "--live-migration", "--host", b, "--wait", "lm1"])
        .await;
    assert_eq!(code, Some(0), "server migrate: {err}");
    assert!(killer.await.unwrap(), "the destination QEMU was started and killed");
    let s = wait_status(&cloud, "lm1", "ACTIVE", Duration::from_secs(120)).await;
    assert_eq!(host_of(&s), a, "the server stays on its source: {s}");
    assert_eq!(pid_of(&host_dir(&cloud, &a).join(&id)), Some(src_pid), "the same QEMU runs the guest");
    let migs = cloud.openstack(&["server", "migration", "list", "--server", "lm1"]).await.expect("migration list");
    assert_eq!(migs[0]["Status"], "error", "{migs}");
    let events = cloud.openstack(&["server", "event", "list", "lm1"]).await.unwrap();
    let req = events[0]["Request ID"].as_str().unwrap().to_string();
    let ev = cloud.openstack(&["server", "event", "show", "lm1", &req]).await.unwrap();
    assert_eq!(ev["action"], "live-migration", "{ev}");
    assert!(ev.to_string().contains("Error"), "the failed step is in the action's events: {ev}");
    wait_until("the destination directory is removed", Duration::from_secs(30), || {
        !host_dir(&cloud, b).join(&id).exists()
    })
    .await;
    // The guest still runs (its heartbeat goes on) and can still move.
    let last = heartbeats(&console(&cloud, "lm1").await).into_iter().fold(0.0, f64::max);
    wait_heartbeat(&cloud, "lm1", last + 1.0).await;
    live_migrate(&cloud, &id, &a).await;

    cloud.openstack(&["server", "delete", "--wait", "lm1"]).await.expect("delete");
    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
}

#[tokio::test]
async fn qemu_evacuate_rebuilds_on_the_other_host_and_the_returning_host_drops_its_stale_guest() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, agents) = two_host_cloud(data.path()).await;
    heartbeat_image(&cloud).await;
    let (id, a) = boot_heartbeat_guest(&cloud, "ev1", 1.0).await;
    let b = other(&a);
    let stale = pid_of(&host_dir(&cloud, &a).join(&id)).expect("QEMU on the first host");

    // Host A's agent dies (its guest keeps running, as QEMU does not belong to the agent).
    let mut agents: Vec<Option<AgentHandle>> = agents.into_iter().map(Some).collect();
    let ia = HOSTS.iter().position(|h| *h == a).unwrap();
    agents[ia].take().unwrap().stop();
    cloud.openstack(&["compute", "service", "set", "--down", &a, "nova-compute"]).await.expect("service set --down");
    // Before 2.95 an evacuated server comes back running.
    let (code, _, err) =
        cloud.openstack_raw(&cloud.admin(), &["--os-compute-api-version", "2.94", "server", "evacuate", "ev1"]).await;
    assert_eq!(code, Some(0), "server evacuate: {err}");
    let s = wait_status(&cloud, "ev1", "ACTIVE", Duration::from_secs(180)).await;
    assert_eq!(host_of(&s), b, "{s}");
    let fresh = pid_of(&host_dir(&cloud, b).join(&id)).expect("QEMU on the new host");
    let log = wait_heartbeat(&cloud, "ev1", 0.0).await;
    assert!(log.contains("stratus-guest: init started"), "rebuilt: a new boot on the new host:\n{log}");
    assert!(alive(stale), "the dead host's guest still runs until its agent returns");
    let evac = cloud.openstack(&["server", "migration", "list", "--type", "evacuation"]).await.unwrap();
    assert_eq!(evac[0]["Status"], "done", "{evac}");

    // A's agent returns: its stale copy is destroyed, never run a second time.
    agents[ia] = Some(start_agent(&cloud, &a).await);
    cloud.openstack(&["compute", "service", "set", "--up", &a, "nova-compute"]).await.expect("service set --up");
    wait_until("the stale guest is destroyed", Duration::from_secs(60), || !alive(stale)).await;
    wait_until("the stale directory is removed", Duration::from_secs(30), || !host_dir(&cloud, &a).join(&id).exists())
        .await;
    assert_eq!(pid_of(&host_dir(&cloud, b).join(&id)), Some(fresh), "the evacuated guest is untouched");
    let s = show(&cloud, "ev1").await;
    assert_eq!((s["status"].as_str(), host_of(&s).as_str()), (Some("ACTIVE"), b), "{s}");

    cloud.openstack(&["server", "delete", "--wait", "ev1"]).await.expect("delete");
    for h in agents.into_iter().flatten() {
        h.stop();
    }
    cloud.shutdown().await;
}

/// The running live migration of `server` (its `Id`), once it has been copying for a
/// moment (so the source's driver is the one that gets the request).
async fn running_migration(cloud: &TestCloud, server: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let migs = cloud.openstack(&["server", "migration", "list", "--server", server]).await.expect("migration list");
        if let Some(m) = migs.as_array().unwrap().iter().find(|m| m["Status"] == "running") {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            return m["Id"].to_string();
        }
        assert!(Instant::now() < deadline, "no running migration: {migs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn qemu_live_migration_abort_and_force_complete_steer_the_running_copy() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, agents) = two_host_cloud_capped(data.path(), 8).await;
    heartbeat_image(&cloud).await;
    let (id, a) = boot_heartbeat_guest(&cloud, "lm1", 2.0).await;
    let b = other(&a);
    let src_pid = pid_of(&host_dir(&cloud, &a).join(&id)).expect("QEMU on the source");

    // Abort (2.24): the copy stops, the guest stays, the migration is cancelled.
    cloud.openstack(&["server", "migrate", "--live-migration", "--host", b, "lm1"]).await.expect("live migrate");
    let mid = running_migration(&cloud, "lm1").await;
    let (code, _, err) = cloud
        .openstack_raw(
            &cloud.admin(),
            &["--os-compute-api-version", "2.24", "server", "migration", "abort", "lm1", &mid],
        )
        .await;
    assert_eq!(code, Some(0), "server migration abort: {err}");
    let s = wait_status(&cloud, "lm1", "ACTIVE", Duration::from_secs(120)).await;
    assert_eq!(host_of(&s), a, "{s}");
    assert_eq!(pid_of(&host_dir(&cloud, &a).join(&id)), Some(src_pid), "the same QEMU runs the guest");
    let migs = cloud.openstack(&["server", "migration", "list", "--server", "lm1"]).await.expect("migration list");
    assert_eq!(migs[0]["Status"], "cancelled", "{migs}");
    wait_until("the destination directory is removed", Duration::from_secs(30), || {
        !host_dir(&cloud, b).join(&id).exists()
    })
    .await;
    let last = heartbeats(&console(&cloud, "lm1").await).into_iter().fold(0.0, f64::max);
    wait_heartbeat(&cloud, "lm1", last + 1.0).await;

    // Force complete (2.22): at 8 MiB/s the copy would take ~13 s; forced, the guest
    // pauses once and the rest goes in one piece.
    let started = Instant::now();
    cloud.openstack(&["server", "migrate", "--live-migration", "--host", b, "lm1"]).await.expect("live migrate");
    let mid = running_migration(&cloud, "lm1").await;
    let (code, _, err) = cloud
        .openstack_raw(
            &cloud.admin(),
            &["--os-compute-api-version", "2.22", "server", "migration", "force", "complete", "lm1", &mid],
        )
        .await;
    assert_eq!(code, Some(0), "server migration force complete: {err}");
    let s = wait_status(&cloud, "lm1", "ACTIVE", Duration::from_secs(120)).await;
    assert_eq!(host_of(&s), b, "{s}");
    assert!(!alive(src_pid), "the source QEMU ended");
    let stats = stratus_compute_agent::virt::qemu::last_live_migration(&id).expect("migration measured");
    eprintln!("FORCE-COMPLETE: {stats:?} (api {} ms); load {}", started.elapsed().as_millis(), load());
    assert!(stats.forced, "{stats:?}");
    let log = wait_heartbeat(&cloud, "lm1", last + 2.0).await;
    assert_eq!(log.matches("stratus-guest: init started").count(), 1, "no new boot on the destination:\n{log}");
    let migs = cloud.openstack(&["server", "migration", "list", "--server", "lm1"]).await.expect("migration list");
    assert_eq!(migs[0]["Status"], "completed", "{migs}");

    cloud.openstack(&["server", "delete", "--wait", "lm1"]).await.expect("delete");
    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
}

/// Writes `pattern` at 4 MiB into `drive` of the running guest (through QEMU, as the guest would).
async fn write_pattern(dir: &Path, drive: &str, pattern: u8) {
    let mut q = stratus_qemu::QmpClient::connect(&dir.join("qmp.sock")).await.expect("QMP");
    let cmd = format!("qemu-io {drive} \"write -P {pattern} {} 65536\"", 4 << 20);
    q.execute("human-monitor-command", Some(serde_json::json!({"command-line": cmd}))).await.expect("write");
}

fn has_pattern(disk: &Path, pattern: u8) -> bool {
    let read = std::process::Command::new("qemu-io")
        .args(["-r", "-U", "-f", "qcow2", "-c", &format!("read -P {pattern} {} 65536", 4 << 20)])
        .arg(disk)
        .output()
        .expect("qemu-io");
    let out = String::from_utf8_lossy(&read.stdout);
    read.status.success() && !out.contains("verification failed")
}

fn image_info(disk: &Path) -> Value {
    let out = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(disk).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("qemu-img info {}", disk.display()))
}

/// NBD servers of this test still running.
fn nbd_servers(data: &Path) -> usize {
    let needle = data.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .filter(|c| c.starts_with("qemu-storage-daemon") && c.contains(&needle))
        .count()
}

/// Cold migration (failed and rolled back, then confirmed) and resize (reverted) between
/// agents that may not copy locally: root and ephemeral disks go over NBD, with what the
/// guest wrote on them.
#[tokio::test]
async fn qemu_cold_migration_and_resize_copy_the_disks_over_nbd() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let t0 = Instant::now();
    // A range of three ports, all held by the test for now.
    let (min, mut held) = held_range(3);
    let (cloud, agents) = two_host_cloud_with(data.path(), |c| {
        c.cold_migration_local_copy = false;
        c.live_migration_listen_address = "127.0.0.1".into();
        (c.live_migration_port_min, c.live_migration_port_max) = (min, min + 2);
    })
    .await;
    heartbeat_image(&cloud).await;
    for (name, disk) in [("cm.a", "1"), ("cm.b", "2")] {
        cloud
            .openstack(&["flavor", "create", "--vcpus", "1", "--ram", "128", "--disk", disk, "--ephemeral", "1", name])
            .await
            .expect("flavor create");
    }
    let vm = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "cm.a",
            "--image",
            "hb",
            "--nic",
            "none",
            "--config-drive",
            "true",
            "--wait",
            "cm1",
        ])
        .await
        .expect("server create --wait");
    let id = vm["id"].as_str().unwrap().to_string();
    let a = host_of(&show(&cloud, "cm1").await);
    let b = other(&a).to_string();
    wait_heartbeat(&cloud, "cm1", 1.0).await;
    let src = host_dir(&cloud, &a).join(&id);

    // A destination that cannot serve the disks (every port of its range is taken): the
    // move is rolled back, the guest runs here again with its disks, nothing is left over there.
    let pid0 = pid_of(&src).expect("running");
    cloud.openstack(&["server", "migrate", "--host", &b, "cm1"]).await.expect("server migrate --host");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let migs = cloud.openstack(&["server", "migration", "list", "--server", "cm1"]).await.expect("migration list");
        if migs[0]["Status"] == "error" {
            break;
        }
        assert!(Instant::now() < deadline, "the migration fails: {migs}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = wait_status(&cloud, "cm1", "ACTIVE", Duration::from_secs(60)).await;
    assert_eq!(host_of(&s), a, "{s}");
    let pid1 = pid_of(&src).expect("the guest runs on its source again");
    assert_ne!(pid0, pid1, "restarted after the stop");
    assert!(!host_dir(&cloud, &b).join(format!("{id}_incoming")).exists(), "the destination cleaned up");
    assert!(!host_dir(&cloud, &b).join(&id).exists());
    assert_eq!(nbd_servers(data.path()), 0);
    let migs = cloud.openstack(&["server", "migration", "list", "--server", "cm1"]).await.expect("migration list");
    assert_eq!(migs[0]["Status"], "error", "{migs}");
    // Only the first port stays taken: the destination serves on the next one.
    held.truncate(1);

    write_pattern(&src, "drive-disk0", 0x5a).await;
    write_pattern(&src, "drive-disk1", 0x3c).await;
    let overlay = image_info(&src.join("disk"))["actual-size"].as_u64().unwrap_or(0);

    // Cold migration to the other host, confirmed.
    let started = Instant::now();
    cloud.openstack(&["server", "migrate", "--host", &b, "--wait", "cm1"]).await.expect("server migrate --host --wait");
    let s = wait_status(&cloud, "cm1", "VERIFY_RESIZE", Duration::from_secs(120)).await;
    let api_ms = started.elapsed().as_millis();
    assert_eq!(host_of(&s), b, "{s}");
    let dest = host_dir(&cloud, &b).join(&id);
    assert!(pid_of(&dest).is_some(), "running on the destination");
    assert!(has_pattern(&dest.join("disk"), 0x5a), "the root disk's data moved");
    assert!(has_pattern(&dest.join("disk.eph0"), 0x3c), "the ephemeral disk's data moved");
    assert!(image_info(&dest.join("disk"))["backing-filename"].is_null(), "a flattened copy");
    assert!(dest.join("disk.config").exists(), "the config drive is made again");
    assert!(!host_dir(&cloud, &b).join(format!("{id}_incoming")).exists());
    assert!(!dest.join("nbd.pid").exists());
    assert_eq!(nbd_servers(data.path()), 0, "the NBD server is gone");
    let stats = stratus_compute_agent::virt::qemu::last_cold_copy(&id).expect("an NBD copy was made");
    assert_eq!(stats.disks, ["disk", "disk.eph0"], "{stats:?}");
    assert_eq!(stats.port, min + 1, "the free port after the taken one: {stats:?}");
    let copied: u64 =
        ["disk", "disk.eph0"].iter().map(|d| image_info(&dest.join(d))["actual-size"].as_u64().unwrap_or(0)).sum();
    eprintln!(
        "COLD-MIGRATION {a}->{b} over NBD: api {api_ms} ms (CLI --wait to VERIFY_RESIZE), copy {} ms for {:?} \
         ({} MiB virtual); source overlay {:.1} MiB allocated, destination copies {:.1} MiB allocated; load {}",
        stats.wall_ms,
        stats.disks,
        stats.virtual_bytes >> 20,
        overlay as f64 / 1048576.0,
        copied as f64 / 1048576.0,
        load()
    );
    let source_copy = host_dir(&cloud, &a).join(format!("{id}_resize"));
    assert!(source_copy.join("disk").exists(), "the source keeps its copy until confirm");
    cloud.openstack(&["server", "resize", "confirm", "cm1"]).await.expect("resize confirm");
    wait_status(&cloud, "cm1", "ACTIVE", Duration::from_secs(60)).await;
    wait_until("confirm removes the source copy", Duration::from_secs(30), || !source_copy.exists()).await;
    assert!(!src.exists());

    // Resize back to the first host, reverted: the guest runs on this host again with its disks.
    let started = Instant::now();
    cloud.openstack(&["server", "resize", "--flavor", "cm.b", "--wait", "cm1"]).await.expect("resize --wait");
    let s = wait_status(&cloud, "cm1", "VERIFY_RESIZE", Duration::from_secs(120)).await;
    let api_ms = started.elapsed().as_millis();
    assert_eq!(host_of(&s), a, "{s}");
    assert_eq!(image_info(&src.join("disk"))["virtual-size"], 2u64 << 30, "grown to the new flavor");
    assert!(has_pattern(&src.join("disk"), 0x5a), "the data came along again");
    let stats = stratus_compute_agent::virt::qemu::last_cold_copy(&id).unwrap();
    eprintln!("COLD-RESIZE {b}->{a} over NBD: api {api_ms} ms, copy {} ms; load {}", stats.wall_ms, load());
    cloud.openstack(&["server", "resize", "revert", "cm1"]).await.expect("resize revert");
    let s = wait_status(&cloud, "cm1", "ACTIVE", Duration::from_secs(120)).await;
    assert_eq!(host_of(&s), b, "{s}");
    assert_eq!(s["flavor"]["original_name"], "cm.a", "{s}");
    assert!(pid_of(&dest).is_some(), "running again where it was");
    assert!(has_pattern(&dest.join("disk"), 0x5a));
    wait_until("revert removes the destination's copy", Duration::from_secs(30), || !src.exists()).await;
    assert_eq!(nbd_servers(data.path()), 0);

    cloud.openstack(&["server", "delete", "--wait", "cm1"]).await.expect("delete");
    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
    drop(held);
    eprintln!("COLD-MIGRATION test took {} ms", t0.elapsed().as_millis());
}

/// `count` consecutive ports free on loopback, each held by a listener of the test.
fn held_range(count: u16) -> (u16, Vec<std::net::TcpListener>) {
    for base in (41_000..48_000).step_by(usize::from(count) + 11) {
        let held = hold(&(base..base + count).collect::<Vec<_>>());
        if held.len() == usize::from(count) {
            return (base, held);
        }
    }
    panic!("no {count} consecutive free ports");
}

/// A fresh random server uuid.
fn some_uuid() -> String {
    let (a, b): (u32, u64) = (rand::random(), rand::random());
    format!(
        "{a:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        b >> 48,
        (b >> 36) & 0xfff,
        (b >> 24) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// Sets the modification time of `path` `ago` in the past.
fn age(path: &Path, ago: Duration) {
    let f = std::fs::File::open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - ago).unwrap();
}

/// Staged disks in `<uuid>_incoming` that nothing touched for an hour.
fn stale_incoming(host: &Path, uuid: &str) -> PathBuf {
    let dir = host.join(format!("{uuid}_incoming"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("disk"), b"staged").unwrap();
    age(&dir.join("disk"), Duration::from_secs(3600));
    age(&dir, Duration::from_secs(3600));
    dir
}

/// What two agents that died mid-copy leave on the destination: `<uuid>_incoming` and
/// the NBD server serving it. The destination's reconciliation removes it once no move
/// to that host runs for the server, and not before.
#[tokio::test]
async fn qemu_reconciliation_sweeps_incoming_disks_no_move_claims() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let (cloud, mut agents) = two_host_cloud(data.path()).await;
    // Both agents of a cold move died mid-copy; the destination's is down while we look.
    agents.pop().unwrap().stop();
    let b = host_dir(&cloud, HOSTS[1]);
    let (orphan, moving) = (some_uuid(), some_uuid());
    let left = stale_incoming(&b, &orphan);
    let img = stratus_qemu::img::QemuImg::default();
    img.create(&left.join("disk.eph0"), stratus_qemu::cmdline::DiskFormat::Qcow2, 1 << 20).await.unwrap();
    // The move's NBD server, still serving (it outlives agents).
    let disk = left.join("disk.eph0");
    let status = std::process::Command::new("qemu-storage-daemon")
        .arg("--blockdev")
        .arg(format!("driver=qcow2,node-name=n0,file.driver=file,file.filename={}", disk.display()))
        .arg("--nbd-server")
        .arg("addr.type=inet,addr.host=127.0.0.1,addr.port=0")
        .arg("--export")
        .arg("type=nbd,id=e0,node-name=n0,name=disk.eph0,writable=on")
        .arg("--pidfile")
        .arg(left.join("nbd.pid"))
        .arg("--daemonize")
        .status()
        .expect("qemu-storage-daemon");
    assert!(status.success());
    age(&disk, Duration::from_secs(3600));
    age(&left.join("nbd.pid"), Duration::from_secs(3600));
    age(&left, Duration::from_secs(3600));
    assert_eq!(nbd_servers(data.path()), 1);
    // A cold migration to this host that still runs (as its record says) keeps its disks.
    let claimed = stale_incoming(&b, &moving);
    let db = &cloud.handle().platform.db;
    let mig = moving.clone();
    db.transaction(|tx| {
        let mut q = stratus_db::Query::new(
            "INSERT INTO compute_migrations (id, uuid, instance_uuid, migration_type, status, source_compute, \
             dest_compute, project_id, user_id, created_at, updated_at) VALUES (",
        );
        q.bind(987_654i64)
            .push_bind(", ", some_uuid())
            .push_bind(", ", mig.clone())
            .push_bind(", ", "migration")
            .push_bind(", ", "migrating")
            .push_bind(", ", HOSTS[0])
            .push_bind(", ", HOSTS[1])
            .push(", 'p', 'u', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')");
        Box::pin(async move { q.execute(&mut **tx).await })
    })
    .await
    .expect("insert");

    // The agent returns: its first reconciliation sweeps.
    let started = Instant::now();
    agents.push(start_agent(&cloud, HOSTS[1]).await);
    wait_until("the orphaned staging directory is removed", Duration::from_secs(30), || !left.exists()).await;
    eprintln!("agent start to sweep: {} ms", started.elapsed().as_millis());
    wait_until("its NBD server is stopped", Duration::from_secs(10), || nbd_servers(data.path()) == 0).await;
    assert!(claimed.join("disk").exists(), "the running move keeps its disks");

    // The move ends (rolled back): the next pass takes its leftovers too.
    db.transaction(|tx| {
        let q = stratus_db::Query::new("UPDATE compute_migrations SET status = 'error' WHERE id = 987654");
        Box::pin(async move { q.execute(&mut **tx).await })
    })
    .await
    .expect("update");
    let started = Instant::now();
    agents[1].agent.reconcile().await.expect("reconciliation");
    eprintln!("RECONCILE with a sweep: {} ms", started.elapsed().as_millis());
    assert!(!claimed.exists(), "the ended move's staging directory is removed");

    for h in agents {
        h.stop();
    }
    cloud.shutdown().await;
}
