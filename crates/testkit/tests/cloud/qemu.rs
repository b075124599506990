//! Real guests through the real `openstack` CLI: the `qemu` virt driver booting the
//! project's test image (tools/build-test-image.sh) under TCG (KVM where the host has it).
//!
//! These tests never skip: without QEMU or the image they fail and say how to get
//! them. Every test kills, in a guard, any process whose command line mentions its data
//! directory, so no QEMU outlives a test. At most two guests run at once (2-core hosts).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_testkit::TestCloud;

/// Kills every process mentioning `dir` on drop (stray QEMUs of a failed test).
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().into_owned();
        let Ok(rd) = std::fs::read_dir("/proc") else { return };
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            if pid == std::process::id() as i32 {
                continue;
            }
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

fn image_dir() -> PathBuf {
    let dir = std::env::var_os("STRATUS_TEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| stratus_testkit::repo_root().join("build/test-image"));
    assert!(
        dir.join("disk.qcow2").exists(),
        "the test image {}/disk.qcow2 is missing: build it with `tools/build-test-image.sh build/test-image` \
         (host tools from `scripts/install-host-packages.sh`) or set STRATUS_TEST_IMAGE_DIR",
        dir.display()
    );
    assert!(
        stratus_qemu::binary::which("qemu-system-x86_64").is_some(),
        "qemu-system-x86_64 is not installed: run `sudo scripts/install-host-packages.sh` \
         (QEMU 10 from bookworm-backports)"
    );
    dir
}

async fn qemu_cloud_in(data_dir: PathBuf) -> TestCloud {
    let cloud = TestCloud::start_in(data_dir, |c| {
        c.compute.virt_driver = "qemu".into();
        c.compute.agent.sync_interval_secs = 2;
        // The guest reacts to ACPI in ~3 s; keep failures quick.
        c.compute.qemu.power_off_timeout_secs = 30;
    })
    .await;
    cloud
}

async fn upload_image(cloud: &TestCloud) -> String {
    let dir = image_dir();
    let id = stratus::test_image::upload(&cloud.handle().platform, &dir).await.expect("test image upload");
    let id = id.expect("a fresh cloud has no cirros image yet");
    let again = stratus::test_image::upload(&cloud.handle().platform, &dir).await.expect("second upload");
    assert_eq!(again, None, "the bootstrap upload is idempotent");
    id
}

async fn status(cloud: &TestCloud, server: &str) -> Value {
    cloud.openstack(&["server", "show", server]).await.unwrap_or_else(|e| panic!("server show {server}: {e}"))
}

async fn wait_status(cloud: &TestCloud, server: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(cloud, server).await;
        if s["status"] == want && s["OS-EXT-STS:task_state"].is_null() {
            return s;
        }
        assert!(s["status"] != "ERROR" || want == "ERROR", "{server} went to ERROR: {s}");
        assert!(Instant::now() < deadline, "{server} not {want} within {within:?}: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn act(cloud: &TestCloud, args: &[&str], server: &str, want: &str) -> Value {
    let mut full: Vec<&str> = vec!["server"];
    full.extend_from_slice(args);
    full.push(server);
    cloud.openstack(&full).await.unwrap_or_else(|e| panic!("server {args:?}: {e}"));
    wait_status(cloud, server, want, Duration::from_secs(90)).await
}

fn inst_dir(cloud: &TestCloud, id: &str) -> PathBuf {
    cloud.data_dir.join("instances").join(id)
}

fn pid_of(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("qemu.pid")).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
    (state != "Z" && state != "X").then_some(pid)
}

async fn wait_gone(pid: i32) {
    for _ in 0..200 {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z") && !s.contains(") X"))
            .unwrap_or(false);
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("QEMU pid {pid} still alive");
}

/// Waits until the guest printed `marker` on its serial console `times` times
/// (through `openstack console log show`).
async fn wait_console(cloud: &TestCloud, server: &str, marker: &str, times: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, out, err) = cloud.openstack_raw(&cloud.admin(), &["console", "log", "show", server]).await;
        assert_eq!(code, Some(0), "console log show: {err}");
        if out.matches(marker).count() >= times {
            return out;
        }
        assert!(Instant::now() < deadline, "{marker:?} x{times} not on the console of {server}:\n{out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn qmp_status(dir: &Path) -> String {
    let mut q = stratus_qemu::QmpClient::connect(&dir.join("qmp.sock")).await.expect("QMP connect");
    let s = q.query_status().await.expect("query-status");
    serde_json::to_value(s.status).unwrap().as_str().unwrap().to_string()
}

#[tokio::test]
async fn qemu_guest_lives_its_whole_lifecycle_through_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_in(data.path().to_path_buf()).await;
    let image_id = upload_image(&cloud).await;
    let hv = cloud.openstack(&["hypervisor", "list", "--long"]).await.expect("hypervisor list");
    assert_eq!(hv[0]["Hypervisor Type"], "QEMU", "{hv}");

    let t = Instant::now();
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "cirros", "--nic", "none", "--wait", "vm1"])
        .await
        .expect("server create --wait");
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let dir = inst_dir(&cloud, &id);
    let pid = pid_of(&dir).expect("a live QEMU for the server");
    assert!(cloud.data_dir.join("instances/_base").join(&image_id).exists(), "base image cached");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(dir.join("disk"))
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1u64 << 30, "overlay sized to m1.nano's 1 GiB root disk: {info}");
    assert!(info["backing-filename"].as_str().unwrap().ends_with(&format!("_base/{image_id}")), "{info}");
    let log = wait_console(&cloud, "vm1", "stratus-guest: up", 1).await;
    eprintln!("boot: ACTIVE + console marker after {:?}", t.elapsed());
    assert!(log.contains("Linux version"), "kernel messages on the console");
    assert_eq!(qmp_status(&dir).await, "running");

    // stop / start: ACPI power-off ends QEMU; start runs a new one.
    act(&cloud, &["stop"], "vm1", "SHUTOFF").await;
    wait_gone(pid).await;
    assert!(dir.join("disk").exists(), "a stopped server keeps its disk");
    act(&cloud, &["start"], "vm1", "ACTIVE").await;
    let pid2 = pid_of(&dir).expect("running again");
    assert_ne!(pid, pid2);
    wait_console(&cloud, "vm1", "stratus-guest: up", 2).await;

    // Soft reboot (ACPI, then a new QEMU) and hard reboot.
    act(&cloud, &["reboot", "--soft"], "vm1", "ACTIVE").await;
    let pid3 = pid_of(&dir).expect("running after soft reboot");
    assert_ne!(pid2, pid3);
    wait_gone(pid2).await;
    wait_console(&cloud, "vm1", "stratus-guest: up", 3).await;
    act(&cloud, &["reboot", "--hard"], "vm1", "ACTIVE").await;
    let pid4 = pid_of(&dir).expect("running after hard reboot");
    assert_ne!(pid3, pid4);
    wait_console(&cloud, "vm1", "stratus-guest: up", 4).await;

    // Pause / unpause: the vCPUs stop and continue in the same QEMU.
    act(&cloud, &["pause"], "vm1", "PAUSED").await;
    assert_eq!(qmp_status(&dir).await, "paused");
    act(&cloud, &["unpause"], "vm1", "ACTIVE").await;
    assert_eq!(qmp_status(&dir).await, "running");
    assert_eq!(pid_of(&dir), Some(pid4));

    // Suspend / resume: memory saved to a file, QEMU gone, the same guest continues.
    act(&cloud, &["suspend"], "vm1", "SUSPENDED").await;
    assert!(dir.join("memory.state").exists());
    wait_gone(pid4).await;
    act(&cloud, &["resume"], "vm1", "ACTIVE").await;
    assert!(!dir.join("memory.state").exists());
    assert_eq!(qmp_status(&dir).await, "running");
    let log = wait_console(&cloud, "vm1", "stratus-guest: up", 4).await;
    assert_eq!(log.matches("stratus-guest: init started").count(), 4, "resume does not reboot the guest");

    // Rescue boots the image with the server's disk second; unrescue goes back.
    act(&cloud, &["rescue"], "vm1", "RESCUE").await;
    assert!(dir.join("disk.rescue").exists());
    let argv = std::fs::read_to_string(dir.join("qemu.argv")).unwrap();
    assert!(argv.find("disk.rescue").unwrap() < argv.find("/disk,").unwrap(), "rescue disk boots first:\n{argv}");
    wait_console(&cloud, "vm1", "stratus-guest: up", 5).await;
    act(&cloud, &["unrescue"], "vm1", "ACTIVE").await;
    assert!(!dir.join("disk.rescue").exists());
    wait_console(&cloud, "vm1", "stratus-guest: up", 6).await;

    // Snapshot -> image -> a second server boots from it.
    let snap = cloud
        .openstack(&["server", "image", "create", "--name", "snap1", "--wait", "vm1"])
        .await
        .expect("server image create");
    let snap_id = snap["id"].as_str().unwrap().to_string();
    let img = cloud.openstack(&["image", "show", &snap_id]).await.unwrap();
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["disk_format"], "qcow2");
    assert!(img["properties"].to_string().contains("snapshot"), "image_type=snapshot: {img}");
    wait_status(&cloud, "vm1", "ACTIVE", Duration::from_secs(30)).await;
    assert_eq!(qmp_status(&dir).await, "running", "the guest runs again after the copy");
    let vm2 = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "snap1", "--nic", "none", "--wait", "vm2"])
        .await
        .expect("boot from the snapshot");
    assert_eq!(vm2["status"], "ACTIVE", "{vm2}");
    wait_console(&cloud, "vm2", "stratus-guest: up", 1).await;
    cloud.openstack(&["server", "delete", "--wait", "vm2"]).await.expect("delete vm2");

    // Rebuild: new disk from the image, same server, new QEMU.
    let pid5 = pid_of(&dir).unwrap();
    act(&cloud, &["rebuild", "--image", "cirros"], "vm1", "ACTIVE").await;
    let pid6 = pid_of(&dir).expect("running after rebuild");
    assert_ne!(pid5, pid6);
    wait_console(&cloud, "vm1", "stratus-guest: up", 7).await;

    // Delete: QEMU gone, instance directory gone, base image kept.
    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("server delete --wait");
    wait_gone(pid6).await;
    assert!(!dir.exists(), "instance directory removed");
    assert!(cloud.data_dir.join("instances/_base").join(&image_id).exists(), "base image kept");
    cloud.shutdown().await;
}

#[tokio::test]
async fn qemu_guest_is_adopted_after_a_restart_and_a_killed_qemu_goes_shutoff() {
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_in(data.path().to_path_buf()).await;
    upload_image(&cloud).await;
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "cirros", "--nic", "none", "--wait", "vm1"])
        .await
        .expect("server create --wait");
    let id = vm["id"].as_str().unwrap().to_string();
    let dir = inst_dir(&cloud, &id);
    let pid = pid_of(&dir).expect("QEMU runs");
    cloud.shutdown().await;

    // The guest outlives the cloud; a new cloud on the same data dir adopts it.
    assert_eq!(pid_of(&dir), Some(pid), "stopping the cloud leaves guests running");
    let cloud = qemu_cloud_in(data.path().to_path_buf()).await;
    wait_status(&cloud, "vm1", "ACTIVE", Duration::from_secs(30)).await;
    act(&cloud, &["pause"], "vm1", "PAUSED").await;
    assert_eq!(pid_of(&dir), Some(pid), "adopted, not restarted");
    assert_eq!(qmp_status(&dir).await, "paused");
    act(&cloud, &["unpause"], "vm1", "ACTIVE").await;

    // QEMU killed behind the cloud's back: the sync marks the server SHUTOFF.
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    wait_gone(pid).await;
    let s = wait_status(&cloud, "vm1", "SHUTOFF", Duration::from_secs(30)).await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4, "power state SHUTDOWN: {s}");
    let events = cloud.openstack(&["server", "event", "list", "vm1"]).await.unwrap();
    let actions: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["Action"].as_str()).collect();
    assert!(actions.contains(&"stop"), "the stop is in the server's history: {events}");
    act(&cloud, &["start"], "vm1", "ACTIVE").await;
    assert!(pid_of(&dir).is_some());
    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("delete");
    assert!(!dir.exists());
    cloud.shutdown().await;
}
