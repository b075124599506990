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

/// The tests of this module run one at a time: each boots up to two TCG guests, and
/// more at once would only make every boot slower on a 2-core machine (`dataplane_guests`
/// takes the same lock).
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Kills every process mentioning `dir` on drop (stray QEMUs of a failed test).
pub(crate) struct Reaper(pub(crate) PathBuf);

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

/// Uploads the test image's kernel and initrd as AKI/ARI images (`<name>-kernel`,
/// `<name>-ramdisk`) and its disk as `name`, pointing at them through `kernel_id` /
/// `ramdisk_id` so the guest boots its kernel directly; `properties` are extra
/// `key=value` image properties.
pub(crate) async fn create_direct_boot_image(cloud: &TestCloud, name: &str, properties: &[&str]) {
    let dir = image_dir();
    let mut ids = Vec::new();
    for (part, fmt, file) in [("kernel", "aki", "vmlinuz"), ("ramdisk", "ari", "initrd.img")] {
        let f = dir.join(file);
        let part_name = format!("{name}-{part}");
        let v = cloud
            .openstack(&[
                "image",
                "create",
                "--disk-format",
                fmt,
                "--container-format",
                fmt,
                "--file",
                f.to_str().unwrap(),
                &part_name,
            ])
            .await
            .unwrap_or_else(|e| panic!("image create {part_name}: {e}"));
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let disk = dir.join("disk.qcow2");
    let (kp, rp) = (format!("kernel_id={}", ids[0]), format!("ramdisk_id={}", ids[1]));
    let mut args = vec![
        "image",
        "create",
        "--disk-format",
        "qcow2",
        "--container-format",
        "bare",
        "--file",
        disk.to_str().unwrap(),
        "--property",
        &kp,
        "--property",
        &rp,
    ];
    for p in properties {
        args.extend(["--property", p]);
    }
    args.push(name);
    cloud.openstack(&args).await.unwrap_or_else(|e| panic!("image create {name} with kernel_id/ramdisk_id: {e}"));
}

pub(crate) fn image_dir() -> PathBuf {
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
        c.compute.local.virt_driver = "qemu".into();
        c.compute.local.agent.sync_interval_secs = 2;
        // The guest reacts to ACPI in ~3 s; keep failures quick.
        c.compute.local.qemu.power_off_timeout_secs = 30;
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
    wait_status(cloud, server, want, Duration::from_secs(180)).await
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
    // Generous: TCG boots on a shared 2-core machine take 5 s idle, a minute under load.
    let deadline = Instant::now() + Duration::from_secs(240);
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
    let _serial = ONE_AT_A_TIME.lock().await;
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
    assert_isolated(pid, &dir, &image_id);

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
    // Two guests at once: each QEMU is its own user and cannot open the other's files.
    let dir2 = inst_dir(&cloud, vm2["id"].as_str().unwrap());
    let base = cloud.data_dir.join("instances/_base").join(&image_id);
    let uid1 = assert_private(pid_of(&dir).unwrap(), &dir, &dir2, &base);
    let uid2 = assert_private(pid_of(&dir2).unwrap(), &dir2, &dir, &base);
    assert_ne!(uid1, uid2, "two guests, two users");
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

/// What confines a guest's QEMU: the seccomp sandbox is active (`Seccomp: 2`, filter
/// mode), and the only files it holds open are its own instance directory's, its base
/// image (read-only) and shared system files, never another guest's.
fn assert_isolated(pid: i32, dir: &Path, image_id: &str) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "QEMU runs under a seccomp filter:\n{status}");
    let argv = std::fs::read_to_string(dir.join("qemu.argv")).unwrap();
    assert!(argv.contains("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"), "{argv}");
    let instances = dir.parent().unwrap();
    let base = instances.join("_base").join(image_id);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        if !target.starts_with(instances) {
            continue;
        }
        assert!(target.starts_with(dir) || target == base, "QEMU {pid} holds {} open", target.display());
        if target == base {
            let fdinfo = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()))
                .unwrap_or_default();
            let flags = fdinfo.lines().find_map(|l| l.strip_prefix("flags:")).unwrap_or("0").trim();
            let flags = u32::from_str_radix(flags, 8).unwrap_or(u32::MAX);
            assert_eq!(flags & 0o3, 0, "the base image is open read-only ({fdinfo})");
        }
    }
}

/// A guest's QEMU runs as a user of its own, without capabilities, owning its
/// directory alone (0700): as that user, its own disk opens, the other guest's
/// does not, and the shared base opens for reading only. Returns the uid.
fn assert_private(pid: i32, dir: &Path, other: &Path, base: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let line = status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {status}"));
        line.split_whitespace().map(|v| v.parse().unwrap()).collect()
    };
    let (uids, gids) = (field("Uid:"), field("Gid:"));
    let uid = uids[0];
    assert!(uid != 0 && uids.iter().all(|u| *u == uid), "QEMU {pid} runs as one unprivileged uid: {uids:?}");
    assert!(gids.iter().all(|g| *g != 0), "and no root group: {gids:?}");
    assert!(status.lines().any(|l| l == "CapEff:\t0000000000000000"), "QEMU {pid} has no capabilities:\n{status}");
    let meta = std::fs::metadata(dir).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700), "{} belongs to its guest alone", dir.display());
    let as_guest = |script: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &gids[0].to_string(), "--clear-groups", "--"])
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    };
    let reads = |path: &Path| as_guest(&format!("head -c 1 '{}' >/dev/null", path.display()));
    assert!(reads(&dir.join("disk")).status.success(), "the guest's user reads its own disk");
    let denied = reads(&other.join("disk"));
    assert!(!denied.status.success(), "uid {uid} must not read {}", other.display());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"), "{denied:?}");
    assert!(reads(base).status.success(), "the shared base is readable");
    let writes = as_guest(&format!(": >> '{}'", base.display()));
    assert!(!writes.status.success(), "the shared base is not writable by uid {uid}");
    uid
}

#[tokio::test]
async fn qemu_guest_is_adopted_after_a_restart_and_a_killed_qemu_goes_shutoff() {
    let _serial = ONE_AT_A_TIME.lock().await;
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

/// The id of the one image called `name`, or `None`.
async fn image_named(cloud: &TestCloud, name: &str) -> Option<String> {
    let list = cloud.openstack(&["image", "list", "--name", name]).await.expect("image list");
    let ids: Vec<String> =
        list.as_array().unwrap().iter().filter_map(|i| i["ID"].as_str().map(str::to_string)).collect();
    assert!(ids.len() <= 1, "one image {name}: {list}");
    ids.into_iter().next()
}

async fn wait_image_gone(cloud: &TestCloud, id: &str) {
    for _ in 0..100 {
        let (code, _, _) = cloud.openstack_raw(&cloud.admin(), &["image", "show", id]).await;
        if code != Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("image {id} still exists");
}

fn backing_file(disk: &Path) -> String {
    let out = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(disk).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("qemu-img info {}", disk.display()));
    v["backing-filename"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn qemu_shelve_offloads_the_guest_and_unshelve_boots_it_from_the_shelved_image() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_in(data.path().to_path_buf()).await;
    let image_id = upload_image(&cloud).await;

    // An image whose virtual size exceeds the flavor's root disk passes the API (its file
    // is small) but the driver refuses to make a smaller disk: ERROR with Nova's fault.
    let big = data.path().join("big.qcow2");
    let ok = std::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&big).arg("2G").status();
    assert!(ok.unwrap().success());
    #[rustfmt::skip]
    let args = [
        "image", "create", "--disk-format", "qcow2", "--container-format", "bare",
        "--file", big.to_str().unwrap(), "big",
    ];
    cloud.openstack(&args).await.expect("image create big");
    cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "big", "--nic", "none", "too-small"])
        .await
        .expect("server create accepted");
    let s = wait_status(&cloud, "too-small", "ERROR", Duration::from_secs(60)).await;
    let fault = s["fault"].to_string();
    assert!(
        fault.contains("aborted: Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, image is 2147483648 bytes."),
        "{s}"
    );
    let sid = s["id"].as_str().unwrap();
    assert!(!inst_dir(&cloud, sid).exists(), "no disk was made");
    cloud.openstack(&["server", "delete", "--wait", "too-small"]).await.expect("delete too-small");

    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "cirros", "--nic", "none", "--wait", "vm1"])
        .await
        .expect("server create --wait");
    let id = vm["id"].as_str().unwrap().to_string();
    let dir = inst_dir(&cloud, &id);
    let pid = pid_of(&dir).expect("QEMU runs");
    wait_console(&cloud, "vm1", "stratus-guest: up", 1).await;

    // Shelve, offloaded at once (shelved_offload_time 0): snapshot, QEMU and disk gone, no host.
    let t = Instant::now();
    cloud.openstack(&["server", "shelve", "vm1"]).await.expect("shelve");
    let s = wait_status(&cloud, "vm1", "SHELVED_OFFLOADED", Duration::from_secs(180)).await;
    eprintln!("shelve -> SHELVED_OFFLOADED in {:?}", t.elapsed());
    assert!(s["OS-EXT-SRV-ATTR:host"].is_null() || s["OS-EXT-SRV-ATTR:host"] == "", "{s}");
    wait_gone(pid).await;
    assert!(!dir.exists(), "the offloaded guest's directory is gone");
    let snap = image_named(&cloud, "vm1-shelved").await.expect("the shelved snapshot image");
    let img = cloud.openstack(&["image", "show", &snap]).await.unwrap();
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["disk_format"], "qcow2", "{img}");
    let props = &img["properties"];
    assert_eq!(props["image_type"], "snapshot", "{img}");
    assert_eq!(props["instance_uuid"], id.as_str(), "{img}");
    assert_eq!(props["base_image_ref"], image_id.as_str(), "{img}");

    // Unshelve: scheduled again, booted from the snapshot, which is then deleted.
    let t = Instant::now();
    let s = cloud.openstack(&["server", "unshelve", "--wait", "vm1"]).await;
    s.expect("unshelve --wait");
    let s = wait_status(&cloud, "vm1", "ACTIVE", Duration::from_secs(60)).await;
    eprintln!("unshelve --wait -> ACTIVE in {:?}", t.elapsed());
    assert!(s["image"].to_string().contains(&image_id), "the server still shows its own image: {s}");
    let pid2 = pid_of(&dir).expect("QEMU runs again");
    assert_ne!(pid, pid2);
    assert!(backing_file(&dir.join("disk")).ends_with(&format!("_base/{snap}")), "booted from the shelved image");
    let log = wait_console(&cloud, "vm1", "stratus-guest: up", 1).await;
    assert!(log.contains("Linux version"), "the guest booted again:\n{log}");
    wait_image_gone(&cloud, &snap).await;
    assert!(cloud.data_dir.join("instances/_base").join(&snap).exists(), "the disk's base stays cached");

    // Shelved again, then deleted while offloaded: the new snapshot goes with the server.
    cloud.openstack(&["server", "shelve", "vm1"]).await.expect("shelve again");
    wait_status(&cloud, "vm1", "SHELVED_OFFLOADED", Duration::from_secs(180)).await;
    wait_gone(pid2).await;
    let snap2 = image_named(&cloud, "vm1-shelved").await.expect("a second shelved snapshot");
    assert_ne!(snap, snap2);
    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("delete shelved vm1");
    wait_image_gone(&cloud, &snap2).await;
    assert!(!dir.exists());
    cloud.shutdown().await;
}

/// A second qemu agent in the same process (host `qemu-b`, its own instance directory).
async fn second_agent(cloud: &TestCloud) -> stratus_compute_agent::AgentHandle {
    use stratus_compute_agent::virt::qemu::{images::InternalImageSource, QemuDriver, QemuDriverConfig};
    let platform = &cloud.handle().platform;
    let cfg = QemuDriverConfig {
        instances_path: Some(cloud.data_dir.join("host-b")),
        power_off_timeout_secs: 30,
        ..Default::default()
    };
    let source = std::sync::Arc::new(InternalImageSource::new(platform.internal.clone()));
    let driver = QemuDriver::new(cfg, &cloud.data_dir, None, source).await.expect("qemu driver");
    let acfg =
        stratus_compute_agent::AgentConfig { host: "qemu-b".into(), sync_interval_secs: 2, ..Default::default() };
    stratus_compute_agent::Agent::start(acfg, platform.bus.clone(), std::sync::Arc::new(driver))
        .await
        .expect("second agent")
}

fn dir_on(cloud: &TestCloud, host: &str, id: &str) -> PathBuf {
    if host == "qemu-b" {
        cloud.data_dir.join("host-b").join(id)
    } else {
        inst_dir(cloud, id)
    }
}

fn virtual_size(disk: &Path) -> u64 {
    let out = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(disk).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("qemu-img info {}", disk.display()));
    v["virtual-size"].as_u64().unwrap()
}

#[tokio::test]
async fn qemu_resize_moves_the_disk_between_two_agents_with_confirm_and_revert() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_in(data.path().to_path_buf()).await;
    upload_image(&cloud).await;
    let agent_b = second_agent(&cloud).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cloud.openstack(&["hypervisor", "list"]).await.unwrap().as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "two hypervisors");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, ram, disk) in [("t.b", "160", "2"), ("t.c", "192", "3")] {
        cloud
            .openstack(&["flavor", "create", "--vcpus", "1", "--ram", ram, "--disk", disk, name])
            .await
            .expect("flavor create");
    }
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.nano", "--image", "cirros", "--nic", "none", "--wait", "vm1"])
        .await
        .expect("server create --wait");
    let id = vm["id"].as_str().unwrap().to_string();
    let host1 = vm["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    wait_console(&cloud, "vm1", "stratus-guest: up", 1).await;

    // Resize + confirm: the disk moves to the other host, grown to the new flavor.
    let s = act(&cloud, &["resize", "--flavor", "t.b"], "vm1", "VERIFY_RESIZE").await;
    let host2 = s["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    assert_ne!(host1, host2, "{s}");
    let dest = dir_on(&cloud, &host2, &id);
    assert!(pid_of(&dest).is_some(), "running on the destination");
    assert_eq!(virtual_size(&dest.join("disk")), 2 << 30);
    let source_copy = dir_on(&cloud, &host1, &format!("{id}_resize"));
    assert!(source_copy.join("disk").exists(), "the source keeps its copy until confirm");
    // A new console log on the destination (the source's stays with its copy).
    wait_console(&cloud, "vm1", "stratus-guest: up", 1).await;
    act(&cloud, &["resize", "confirm"], "vm1", "ACTIVE").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while source_copy.exists() {
        assert!(Instant::now() < deadline, "confirm removes the source copy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dir_on(&cloud, &host1, &id).exists());

    // Resize + revert: back on the host it came from, with its disk and flavor.
    let s = act(&cloud, &["resize", "--flavor", "t.c"], "vm1", "VERIFY_RESIZE").await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], host1.as_str(), "{s}");
    assert_eq!(virtual_size(&dir_on(&cloud, &host1, &id).join("disk")), 3 << 30);
    let s = act(&cloud, &["resize", "revert"], "vm1", "ACTIVE").await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], host2.as_str(), "{s}");
    assert_eq!(s["flavor"]["original_name"], "t.b", "{s}");
    let back = dir_on(&cloud, &host2, &id);
    assert!(pid_of(&back).is_some(), "running again where it was");
    assert_eq!(virtual_size(&back.join("disk")), 2 << 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir_on(&cloud, &host1, &id).exists() {
        assert!(Instant::now() < deadline, "revert removes the destination's copy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cloud.openstack(&["server", "delete", "--wait", "vm1"]).await.expect("delete");
    assert!(!back.exists());
    agent_b.stop();
    cloud.shutdown().await;
}

#[tokio::test]
async fn qemu_config_drive_and_direct_kernel_boot() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_in(data.path().to_path_buf()).await;
    upload_image(&cloud).await;
    let ud = data.path().join("user-data");
    std::fs::write(&ud, "#!/bin/sh\necho user-data-ran-on-$(hostname)\n").unwrap();
    let vm = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            "cirros",
            "--nic",
            "none",
            "--config-drive",
            "true",
            "--user-data",
            ud.to_str().unwrap(),
            "--wait",
            "cd-vm",
        ])
        .await
        .expect("server create --config-drive");
    let id = vm["id"].as_str().unwrap().to_string();
    assert!(inst_dir(&cloud, &id).join("disk.config").exists());
    let log = wait_console(&cloud, "cd-vm", "stratus-guest: up", 1).await;
    assert!(log.contains(&format!("uuid={id}")), "the guest read its uuid from the config drive:\n{log}");
    assert!(log.contains("user-data-ran-on-cd-vm"), "user data ran:\n{log}");
    cloud.openstack(&["server", "delete", "--wait", "cd-vm"]).await.expect("delete");

    // AKI/ARI images: kernel_id/ramdisk_id boot the kernel directly (no boot loader).
    create_direct_boot_image(&cloud, "direct", &[]).await;
    cloud
        .openstack(&[
            "server", "create", "--flavor", "m1.nano", "--image", "direct", "--nic", "none", "--wait", "dk-vm",
        ])
        .await
        .expect("server create from an AKI/ARI image");
    let log = wait_console(&cloud, "dk-vm", "stratus-guest: up", 1).await;
    assert!(!log.contains("SYSLINUX"), "no boot loader ran:\n{log}");
    assert!(log.contains("Command line: root=/dev/vda console=tty0 console=ttyS0"), "{log}");
    cloud.openstack(&["server", "delete", "--wait", "dk-vm"]).await.expect("delete");
    cloud.shutdown().await;
}

#[tokio::test]
async fn qemu_uefi_image_boots_with_ovmf_and_a_variable_store_of_its_own() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_in(data.path().to_path_buf()).await;
    // OVMF needs more than m1.nano's 128 MB (it hangs with 128, boots with 160).
    cloud
        .openstack(&["flavor", "create", "--ram", "256", "--disk", "1", "--vcpus", "1", "m1.uefi"])
        .await
        .expect("flavor create");
    create_direct_boot_image(&cloud, "uefi", &["hw_firmware_type=uefi", "os_type=windows"]).await;
    let vm = cloud
        .openstack(&["server", "create", "--flavor", "m1.uefi", "--image", "uefi", "--nic", "none", "--wait", "efi-vm"])
        .await
        .expect("server create from a hw_firmware_type=uefi image");
    let dir = inst_dir(&cloud, vm["id"].as_str().unwrap());
    let log = wait_console(&cloud, "efi-vm", "stratus-guest: up", 1).await;
    assert!(log.contains("efi: EFI v2") && log.contains("EDK II"), "the kernel started from OVMF:\n{log}");
    let nvram = dir.join("nvram.fd");
    let template = std::fs::metadata("/usr/share/OVMF/OVMF_VARS_4M.fd").expect("the ovmf package").len();
    assert_eq!(std::fs::metadata(&nvram).unwrap().len(), template, "a copy of the empty variable store");
    let argv = std::fs::read_to_string(dir.join("qemu.argv")).unwrap();
    assert!(argv.contains("if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"), "{argv}");
    assert!(argv.contains(&format!("if=pflash,format=raw,unit=1,file={}", nvram.display())), "{argv}");
    assert!(argv.contains("-rtc\nbase=localtime"), "os_type=windows keeps the clock in local time:\n{argv}");
    assert!(!argv.contains("hv-"), "no Hyper-V enlightenments under TCG:\n{argv}");
    // The variable store is the guest's: it survives a stop/start (same file).
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&nvram).unwrap());
    act(&cloud, &["stop"], "efi-vm", "SHUTOFF").await;
    act(&cloud, &["start"], "efi-vm", "ACTIVE").await;
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&nvram).unwrap()), ino);
    wait_console(&cloud, "efi-vm", "stratus-guest: up", 2).await;
    cloud.openstack(&["server", "delete", "--wait", "efi-vm"]).await.expect("delete");

    // A firmware this driver does not know fails the build clearly, without rescheduling.
    create_direct_boot_image(&cloud, "odd-fw", &["hw_firmware_type=coreboot"]).await;
    let (code, _, err) = cloud
        .openstack_raw(
            &cloud.admin(),
            &["server", "create", "--flavor", "m1.uefi", "--image", "odd-fw", "--nic", "none", "--wait", "odd-vm"],
        )
        .await;
    assert_ne!(code, Some(0), "the build fails: {err}");
    let odd = cloud.openstack(&["server", "show", "odd-vm"]).await.unwrap();
    assert_eq!(odd["status"], "ERROR", "{odd}");
    assert!(odd["fault"].to_string().contains("hw_firmware_type \\\"coreboot\\\" is not supported"), "{odd}");
    cloud.shutdown().await;
}

/// The network lab of the network agent's tests (namespaces removed on drop); the
/// dataplane module includes it too, privately.
#[allow(clippy::duplicate_mod)]
#[path = "../../../network-agent/tests/common/mod.rs"]
mod lab;

/// A qemu-driver cloud on `data` whose network agent lives in the lab's `host` namespace,
/// where the agent makes the guests' taps and the network agent plugs them.
async fn qemu_cloud_with_network(lab: &lab::Lab, host: &str, data: &Path) -> TestCloud {
    let agent = lab.agent_cfg("h", host);
    let host = host.to_string();
    TestCloud::start_in(data.to_path_buf(), move |c| {
        c.compute.local.virt_driver = "qemu".into();
        c.compute.local.host_netns = Some(host);
        c.network_agent = stratus_network_agent::AgentConfig {
            enabled: "true".into(),
            host: String::new(),
            heartbeat_interval_secs: 1,
            device_poll_interval_ms: 100,
            ..agent
        };
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_guest_on_a_cli_network_gets_its_lease_and_metadata_key() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = lab::Lab::new("qnet");
    let host = lab.netns("host");
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_with_network(&lab, &host, data.path()).await;
    upload_image(&cloud).await;
    let key = lab.tmp.path().join("id_k1");
    lab::must(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "k1@test", "-f", key.to_str().unwrap()]);
    let pubkey = key.with_extension("pub");
    cloud.openstack(&["keypair", "create", "--public-key", pubkey.to_str().unwrap(), "k1"]).await.expect("keypair");
    let net = cloud.openstack(&["network", "create", "qnet"]).await.expect("network create");
    let nic = format!("net-id={}", net["id"].as_str().unwrap());
    cloud
        .openstack(&["subnet", "create", "--network", "qnet", "--subnet-range", "10.78.0.0/24", "qsub"])
        .await
        .expect("subnet create");
    let vm = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            "cirros",
            "--nic",
            &nic,
            "--key-name",
            "k1",
            "--wait",
            "net-vm",
        ])
        .await
        .expect("server create on a network");
    let id = vm["id"].as_str().unwrap().to_string();
    let ports = cloud.openstack(&["port", "list", "--server", "net-vm"]).await.unwrap();
    let port_id = ports[0]["ID"].as_str().unwrap().to_string();
    let port = cloud.openstack(&["port", "show", &port_id]).await.unwrap();
    let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let tap = format!("tap{}", port_id.chars().filter(char::is_ascii_alphanumeric).take(11).collect::<String>());
    let argv = std::fs::read_to_string(inst_dir(&cloud, &id).join("qemu.argv")).unwrap();
    // The agent made the tap and QEMU (unprivileged) got it as an open fd.
    assert!(argv.contains("-netdev\ntap,id=net0,fd="), "{argv}");
    let qemu_pid = pid_of(&inst_dir(&cloud, &id)).expect("QEMU runs");
    let holds_tun = std::fs::read_dir(format!("/proc/{qemu_pid}/fd"))
        .unwrap()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/net/tun")));
    assert!(holds_tun, "QEMU holds its tap's /dev/net/tun fd");
    assert!(argv.contains(port["mac_address"].as_str().unwrap()), "{argv}");
    let links = lab::must(&["ip", "-n", &host, "-br", "link", "show", &tap]);
    assert!(links.contains(&tap), "QEMU's tap is in the host namespace: {links}");

    let log = wait_console(&cloud, "net-vm", "stratus-guest: metadata done", 1).await;
    assert!(log.contains(&format!("DHCP bound eth0 ip={ip}")), "the guest leased its port's address:\n{log}");
    assert!(log.contains("stratus-guest: metadata instance-id=i-"), "metadata answered (EC2 instance id):\n{log}");
    assert!(log.contains("stratus-guest: hostname=net-vm"), "this server's metadata:\n{log}");
    assert!(log.contains("stratus-guest: ssh key installed"), "the key came from metadata:\n{log}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cloud.openstack(&["port", "show", &port_id]).await.unwrap()["status"] != "ACTIVE" {
        assert!(Instant::now() < deadline, "port ACTIVE once plugged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cloud.openstack(&["server", "delete", "--wait", "net-vm"]).await.expect("delete");
    let gone = std::process::Command::new("ip").args(["-n", &host, "link", "show", &tap]).output().unwrap();
    assert!(!gone.status.success(), "the tap went away with QEMU");
    cloud.shutdown().await;
}

/// Milliseconds since `t0` at which `path` first holds more than `min_len` bytes and,
/// if `marker` is given, contains it; polled every 5 ms, at most `within`.
async fn file_reaches(path: &Path, min_len: u64, marker: Option<&str>, t0: Instant, within: Duration) -> f64 {
    loop {
        let ok = match marker {
            None => std::fs::metadata(path).is_ok_and(|m| m.len() > min_len),
            Some(m) => std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b[..]).contains(m)),
        };
        if ok {
            return t0.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(t0.elapsed() < within, "{} never reached {marker:?}", path.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When a process started, in ms after the moment `uptime_at_t0` (seconds of
/// `/proc/uptime`) was read: `/proc/<pid>/stat` counts clock ticks (100 Hz) since boot.
fn started_ms_after(pid: i32, uptime_at_t0: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ticks: f64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    (ticks / 100.0 - uptime_at_t0) * 1000.0
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Boot benchmark of issue 8, to the guest's DHCP lease: N servers (STRATUS_BENCH_BOOTS,
/// default 10) booted one after the other from `cirros` on m1.nano with a port on a
/// Stratus network (network agent, dnsmasq, security groups in a lab namespace), each
/// timed from `POST /servers` to ACTIVE and to the guest's `DHCP bound` console line, split
/// into control plane (POST -> QEMU exec), QEMU + firmware (exec -> first console byte)
/// and guest boot (-> lease). Reference, in the same run: a bare `qemu-system-x86_64`
/// with the very same argv (a fresh overlay of the same base), its tap replaced by QEMU's
/// user-mode network, whose built-in DHCP answers at once. Run by bench/boot-lease.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/boot-lease.sh"]
async fn qemu_boot_to_dhcp_lease_bench() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let n: usize = std::env::var("STRATUS_BENCH_BOOTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let lab = lab::Lab::new("qbench");
    let host = lab.netns("host");
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = qemu_cloud_with_network(&lab, &host, data.path()).await;
    let image_id = upload_image(&cloud).await;
    let net = cloud.openstack(&["network", "create", "bnet"]).await.expect("network create");
    let net_id = net["id"].as_str().unwrap().to_string();
    cloud
        .openstack(&["subnet", "create", "--network", "bnet", "--subnet-range", "10.79.0.0/24", "bsub"])
        .await
        .expect("subnet create");
    // Guests answer nothing here; the default group is fine for DHCP (egress + replies).
    let flavor = cloud.openstack(&["flavor", "show", "m1.nano"]).await.unwrap();
    let flavor_id = flavor["id"].as_str().unwrap().to_string();
    let token = cloud.admin_token().await;
    let http = cloud.http();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap();

    let (mut api, mut active, mut exec, mut first, mut lease) = (vec![], vec![], vec![], vec![], vec![]);
    let mut argv_template = None;
    for i in 0..n {
        let body = serde_json::json!({"server": {"name": format!("b{i}"), "imageRef": image_id,
            "flavorRef": flavor_id, "networks": [{"uuid": net_id}]}});
        let up0 = uptime();
        let t0 = Instant::now();
        let r = http
            .post(cloud.at("/compute/v2.1/servers"))
            .header("X-Auth-Token", &token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let api_ms = t0.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
        let id = r.json::<Value>().await.unwrap()["server"]["id"].as_str().unwrap().to_string();
        let active_ms = loop {
            let s: Value = http
                .get(cloud.at(&format!("/compute/v2.1/servers/{id}")))
                .header("X-Auth-Token", &token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match s["server"]["status"].as_str() {
                Some("ACTIVE") => break t0.elapsed().as_secs_f64() * 1000.0,
                Some("ERROR") => panic!("boot failed: {s}"),
                _ => {}
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "not ACTIVE");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let dir = inst_dir(&cloud, &id);
        let console = dir.join("console.log");
        let first_ms = file_reaches(&console, 0, None, t0, Duration::from_secs(120)).await;
        let lease_ms = file_reaches(&console, 0, Some("DHCP bound eth0"), t0, Duration::from_secs(120)).await;
        let exec_ms = started_ms_after(pid_of(&dir).expect("QEMU runs"), up0);
        eprintln!(
            "stratus run {}: API {api_ms:.1} ms, ACTIVE {active_ms:.0} ms, QEMU exec {exec_ms:.0} ms, \
             first console byte {first_ms:.0} ms, DHCP lease {:.2} s",
            i + 1,
            lease_ms / 1000.0
        );
        api.push(api_ms);
        active.push(active_ms);
        exec.push(exec_ms);
        first.push(first_ms);
        lease.push(lease_ms);
        if argv_template.is_none() {
            argv_template = Some((std::fs::read_to_string(dir.join("qemu.argv")).unwrap(), dir.clone()));
        }
        let r = http
            .delete(cloud.at(&format!("/compute/v2.1/servers/{id}")))
            .header("X-Auth-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let deadline = Instant::now() + Duration::from_secs(60);
        while dir.exists() {
            assert!(Instant::now() < deadline, "server {id} not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The reference: the same argv on a fresh overlay, QEMU's own network and DHCP.
    let (argv, old_dir) = argv_template.unwrap();
    let base = cloud.data_dir.join("instances/_base").join(&image_id);
    let (mut b_first, mut b_lease) = (vec![], vec![]);
    for i in 0..n {
        let bare = data.path().join(format!("bare{i}"));
        std::fs::create_dir_all(&bare).unwrap();
        lab::must(&[
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            bare.join("disk").to_str().unwrap(),
            "1G",
        ]);
        let args: Vec<String> = argv
            .lines()
            .map(|a| a.replace(old_dir.to_str().unwrap(), bare.to_str().unwrap()))
            .map(|a| if a.starts_with("tap,id=net0,fd=") { "user,id=net0".to_string() } else { a })
            .collect();
        let t0 = Instant::now();
        let mut child = std::process::Command::new("qemu-system-x86_64")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let console = bare.join("console.log");
        let first_ms = file_reaches(&console, 0, None, t0, Duration::from_secs(120)).await;
        let lease_ms = file_reaches(&console, 0, Some("DHCP bound eth0"), t0, Duration::from_secs(120)).await;
        eprintln!(
            "bare qemu run {}: first console byte {first_ms:.0} ms, DHCP lease {:.2} s",
            i + 1,
            lease_ms / 1000.0
        );
        let _ = child.kill();
        let _ = child.wait();
        b_first.push(first_ms);
        b_lease.push(lease_ms);
        let _ = std::fs::remove_dir_all(&bare);
    }

    let (m_exec, m_first, m_lease) = (median(&mut exec), median(&mut first), median(&mut lease));
    let (mb_first, mb_lease) = (median(&mut b_first), median(&mut b_lease));
    eprintln!("load before: {}load after: {}", load_before, std::fs::read_to_string("/proc/loadavg").unwrap());
    eprintln!("medians of {n}:");
    eprintln!("  POST /servers API time      {:.1} ms", median(&mut api));
    eprintln!("  POST /servers -> ACTIVE     {:.0} ms", median(&mut active));
    eprintln!("  control plane (POST -> QEMU exec)          {m_exec:.0} ms");
    eprintln!("  QEMU + firmware (exec -> first console byte) {:.0} ms (bare {mb_first:.0} ms)", m_first - m_exec);
    eprintln!(
        "  guest boot (first byte -> DHCP lease)      {:.2} s (bare {:.2} s)",
        (m_lease - m_first) / 1000.0,
        (mb_lease - mb_first) / 1000.0
    );
    eprintln!(
        "  POST -> DHCP lease {:.2} s; bare QEMU start -> lease {:.2} s; Stratus adds {:+.2} s",
        m_lease / 1000.0,
        mb_lease / 1000.0,
        (m_lease - mb_lease) / 1000.0
    );
    cloud.shutdown().await;
}
