//! Volumes on servers (`os-volume_attachments`, Nova's side of block storage): the API's
//! shapes and errors on the fake driver, and one real QEMU guest that sees an attached
//! volume as a disk whose serial is the volume id, writes to it, and gives it back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stratus_testkit::TestCloud;

use crate::qemu::{image_dir, Reaper, ONE_AT_A_TIME};

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// Waits until the volume's status is `want` (panics on `error`).
async fn wait_volume(cloud: &TestCloud, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = cloud.openstack(&["volume", "show", id]).await.expect("volume show");
        if s(&v, "status") == want {
            return v;
        }
        assert!(s(&v, "status") != "error", "volume {id} went to error: {v}");
        assert!(Instant::now() < deadline, "volume {id} is {} after 180 s, wanted {want}: {v}", s(&v, "status"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_backend(cloud: &TestCloud) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = cloud.openstack(&["volume", "service", "list"]).await.expect("volume service list");
        if list.as_array().unwrap().iter().any(|r| s(r, "Binary") == "cinder-volume" && s(r, "State") == "up") {
            return;
        }
        assert!(Instant::now() < deadline, "no cinder-volume service came up: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `method path` on compute at microversion `mv`, as admin: status and body.
async fn compute(
    cloud: &TestCloud,
    method: reqwest::Method,
    path: &str,
    mv: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let token = cloud.admin_token().await;
    let mut r = cloud
        .http()
        .request(method, cloud.at(&format!("/compute/v2.1{path}")))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", format!("compute {mv}"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("compute request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn volume_create(cloud: &TestCloud, name: &str) -> String {
    let v = cloud.openstack(&["volume", "create", "--size", "1", name]).await.expect("volume create");
    let id = s(&v, "id");
    wait_volume(cloud, &id, "available").await;
    id
}

#[tokio::test]
async fn volume_attachments_have_novas_shapes_and_errors() {
    let cloud = TestCloud::start().await;
    wait_backend(&cloud).await;
    let image = cloud.create_tiny_image().await;
    let vm = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            &s(&image, "id"),
            "--nic",
            "none",
            "--wait",
            "vm",
        ])
        .await
        .expect("server create");
    let server = s(&vm, "id");
    let vol = volume_create(&cloud, "v1").await;
    let path = format!("/servers/{server}/os-volume_attachments");

    // A volume that does not exist: 404; a body that is not Nova's: 400.
    let missing = "6a1f8e3c-0b5d-4c2e-9f7a-3d4b5c6e7f80".to_string();
    let (st, b) =
        compute(&cloud, reqwest::Method::POST, &path, "2.1", Some(json!({"volumeAttachment": {"volumeId": missing}})))
            .await;
    assert_eq!(st, 404, "{b}");
    assert!(b["itemNotFound"]["message"].as_str().unwrap().contains(&missing), "{b}");
    let (st, b) =
        compute(&cloud, reqwest::Method::POST, &path, "2.1", Some(json!({"volumeAttachment": {"volumeId": "nope"}})))
            .await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = compute(
        &cloud,
        reqwest::Method::POST,
        &path,
        "2.48",
        Some(json!({"volumeAttachment": {"volumeId": vol, "tag": "t"}})),
    )
    .await;
    assert_eq!(st, 400, "tag before 2.49: {b}");

    // Attach at 2.79: the answer names the device, the tag and delete_on_termination.
    let (st, b) = compute(
        &cloud,
        reqwest::Method::POST,
        &path,
        "2.79",
        Some(json!({"volumeAttachment": {"volumeId": vol, "tag": "data", "delete_on_termination": true}})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let a = &b["volumeAttachment"];
    assert_eq!((s(a, "id"), s(a, "volumeId"), s(a, "serverId")), (vol.clone(), vol.clone(), server.clone()), "{b}");
    assert_eq!(
        (s(a, "device"), s(a, "tag"), a["delete_on_termination"].clone()),
        ("/dev/vdb".into(), "data".into(), json!(true))
    );
    let v = wait_volume(&cloud, &vol, "in-use").await;
    assert!(v["attachments"].to_string().contains(&server), "{v}");

    // Shapes per microversion: id until 2.88, attachment_id and bdm_uuid from 2.89.
    let (_, l) = compute(&cloud, reqwest::Method::GET, &path, "2.1", None).await;
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&l["volumeAttachments"][0]), ["device", "id", "serverId", "volumeId"], "{l}");
    let (_, l) = compute(&cloud, reqwest::Method::GET, &path, "2.70", None).await;
    assert_eq!(keys(&l["volumeAttachments"][0]), ["device", "id", "serverId", "tag", "volumeId"], "{l}");
    let (_, l) = compute(&cloud, reqwest::Method::GET, &format!("{path}/{vol}"), "2.89", None).await;
    let a = &l["volumeAttachment"];
    assert_eq!(
        keys(a),
        ["attachment_id", "bdm_uuid", "delete_on_termination", "device", "serverId", "tag", "volumeId"],
        "{l}"
    );
    let att = cloud.openstack(&["--os-volume-api-version", "3.27", "volume", "attachment", "list"]).await;
    if let Ok(att) = att {
        assert!(
            att.to_string().contains(&s(a, "attachment_id")),
            "the volume service has attachment {}: {att}",
            s(a, "attachment_id")
        );
    }
    let (st, _) = compute(&cloud, reqwest::Method::GET, &format!("{path}/{missing}"), "2.1", None).await;
    assert_eq!(st, 404);
    let shown = cloud.openstack(&["server", "show", &server]).await.unwrap();
    assert!(shown.to_string().contains(&vol), "volumes_attached lists the volume: {shown}");

    // The same volume again (to this server or another): 400 as Nova.
    let (st, b) =
        compute(&cloud, reqwest::Method::POST, &path, "2.1", Some(json!({"volumeAttachment": {"volumeId": vol}})))
            .await;
    assert_eq!(st, 400, "{b}");
    let vm2 = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            &s(&image, "id"),
            "--nic",
            "none",
            "--wait",
            "vm2",
        ])
        .await
        .expect("second server");
    let path2 = format!("/servers/{}/os-volume_attachments", s(&vm2, "id"));
    let (st, b) =
        compute(&cloud, reqwest::Method::POST, &path2, "2.1", Some(json!({"volumeAttachment": {"volumeId": vol}})))
            .await;
    assert_eq!(st, 400, "an in-use volume that is not multiattach: {b}");
    assert!(b["badRequest"]["message"].as_str().is_some(), "{b}");

    // Detach through the CLI: available again, no mapping left.
    cloud.openstack(&["server", "remove", "volume", &server, &vol]).await.expect("server remove volume");
    let v = wait_volume(&cloud, &vol, "available").await;
    assert_eq!(v["attachments"], json!([]), "{v}");
    let (_, l) = compute(&cloud, reqwest::Method::GET, &path, "2.1", None).await;
    assert_eq!(l["volumeAttachments"], json!([]));
    let (st, _) = compute(&cloud, reqwest::Method::DELETE, &format!("{path}/{vol}"), "2.1", None).await;
    assert_eq!(st, 404, "detaching a volume that is not attached");

    // Attach through the CLI, then delete the server: delete_on_termination false keeps it.
    cloud.openstack(&["server", "add", "volume", &server, &vol]).await.expect("server add volume");
    wait_volume(&cloud, &vol, "in-use").await;
    cloud.openstack(&["server", "delete", "--wait", &server]).await.expect("server delete");
    wait_volume(&cloud, &vol, "available").await;
    // ... and a volume attached with delete_on_termination goes with its server.
    let (st, b) = compute(
        &cloud,
        reqwest::Method::POST,
        &path2,
        "2.79",
        Some(json!({"volumeAttachment": {"volumeId": vol, "delete_on_termination": true}})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    wait_volume(&cloud, &vol, "in-use").await;
    cloud.openstack(&["server", "delete", "--wait", &s(&vm2, "id")]).await.expect("server delete");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cloud.openstack(&["volume", "show", &vol]).await.is_ok() {
        assert!(Instant::now() < deadline, "the volume was not deleted with its server");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cloud.shutdown().await;
}

/// The script a guest runs from its user data: finds the disk whose serial starts with
/// `serial`, writes `data` at its start, and says so on the console.
fn finder_script(serial: &str, data: &str) -> String {
    format!(
        "#!/bin/sh\n(i=0\nwhile [ $i -lt 900 ]; do\n  for f in /sys/block/vd*/serial; do\n    [ -e \"$f\" ] || continue\n    \
         if [ \"$(cat $f)\" = \"{serial}\" ]; then\n      d=${{f%/serial}}; d=/dev/${{d##*/}}\n      \
         echo \"stratus-vol: found $d\" >/dev/console\n      echo {data} | dd of=$d bs=512 conv=sync 2>/dev/null\n      \
         sync\n      echo \"stratus-vol: written\" >/dev/console\n      exit 0\n    fi\n  done\n  sleep 1\n  i=$((i+1))\ndone\n\
         echo 'stratus-vol: not found' >/dev/console) &\n"
    )
}

async fn wait_console(cloud: &TestCloud, server: &str, marker: &str, times: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (code, out, err) = cloud.openstack_raw(&cloud.admin(), &["console", "log", "show", server]).await;
        assert_eq!(code, Some(0), "console log show: {err}");
        if out.matches(marker).count() >= times {
            return out;
        }
        assert!(!out.contains("stratus-vol: not found"), "the guest never saw the volume:\n{out}");
        assert!(Instant::now() < deadline, "{marker:?} not on the console of {server}:\n{out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn qemu_guest_sees_an_attached_volume_by_its_serial_and_gives_it_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = image_dir();
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = TestCloud::start_in(data.path().to_path_buf(), |c| {
        c.compute.local.virt_driver = "qemu".into();
        c.compute.local.agent.sync_interval_secs = 2;
        c.compute.local.qemu.power_off_timeout_secs = 30;
    })
    .await;
    stratus::test_image::upload(&cloud.handle().platform, &dir).await.expect("test image upload");
    wait_backend(&cloud).await;
    let t0 = Instant::now();
    let vol = volume_create(&cloud, "guest-vol").await;
    let serial: String = vol.chars().take(20).collect();
    let ud = data.path().join("user-data");
    std::fs::write(&ud, finder_script(&serial, "stratus-vol-data")).unwrap();
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
            "vm",
        ])
        .await
        .expect("server create");
    let server = s(&vm, "id");
    cloud.openstack(&["server", "add", "volume", &server, &vol]).await.expect("server add volume");
    let v = wait_volume(&cloud, &vol, "in-use").await;
    assert!(v["attachments"].to_string().contains(&server), "{v}");
    let volfile = data.path().join(format!("volumes/volume-{vol}"));
    let argv_has =
        || std::fs::read_to_string(data.path().join(format!("instances/{server}/qemu.argv"))).unwrap_or_default();
    let log = wait_console(&cloud, &server, "stratus-vol: written", 1).await;
    assert!(log.contains("stratus-vol: found /dev/vd"), "{log}");
    eprintln!("attach -> written in the guest after {:?}", t0.elapsed());

    // A hard reboot starts a new QEMU: the volume is on its command line now.
    cloud.openstack(&["server", "reboot", "--hard", "--wait", &server]).await.expect("reboot --hard");
    assert!(argv_has().contains(&format!("serial={vol}")), "the restarted guest has the volume:\n{}", argv_has());
    // The guest finds it again after the restart (and is up to release it on detach).
    wait_console(&cloud, &server, "stratus-vol: written", 2).await;

    // Detach: the guest releases the device, the volume is available and root's again.
    cloud.openstack(&["server", "remove", "volume", &server, &vol]).await.expect("server remove volume");
    wait_volume(&cloud, &vol, "available").await;
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&volfile).unwrap().uid(), 0, "the volume's file is given back");
    // What the guest wrote is in the volume.
    let raw = data.path().join("vol.raw");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(&volfile)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let mut head = vec![0u8; 64];
    use std::io::Read;
    std::fs::File::open(&raw).unwrap().read_exact(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head).starts_with("stratus-vol-data"), "{:?}", String::from_utf8_lossy(&head));
    cloud.openstack(&["server", "delete", "--wait", &server]).await.expect("server delete");
    cloud.shutdown().await;
}

#[tokio::test]
async fn qemu_server_boots_from_a_volume_made_from_an_image() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = image_dir();
    let data = tempfile::tempdir().unwrap();
    let _reaper = Reaper(data.path().to_path_buf());
    let cloud = TestCloud::start_in(data.path().to_path_buf(), |c| {
        c.compute.local.virt_driver = "qemu".into();
        c.compute.local.agent.sync_interval_secs = 2;
        c.compute.local.qemu.power_off_timeout_secs = 30;
    })
    .await;
    stratus::test_image::upload(&cloud.handle().platform, &dir).await.expect("test image upload");
    wait_backend(&cloud).await;
    let t0 = Instant::now();
    let vm = cloud
        .openstack(&[
            "server",
            "create",
            "--flavor",
            "m1.nano",
            "--image",
            "cirros",
            "--boot-from-volume",
            "1",
            "--nic",
            "none",
            "--wait",
            "bfv",
        ])
        .await
        .expect("server create --boot-from-volume");
    let server = s(&vm, "id");
    assert_eq!(s(&vm, "status"), "ACTIVE", "{vm}");
    let shown = cloud.openstack(&["server", "show", &server]).await.unwrap();
    let vols = shown["volumes_attached"].to_string();
    let vol: String = cloud
        .openstack(&["volume", "list", "--long"])
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| s(v, "ID"))
        .find(|id| vols.contains(id.as_str()))
        .unwrap_or_else(|| panic!("the root volume is listed on the server: {shown}"));
    let v = wait_volume(&cloud, &vol, "in-use").await;
    assert!(v["bootable"] == json!(true) || v["bootable"] == "true", "a volume made from an image is bootable: {v}");
    let argv = std::fs::read_to_string(data.path().join(format!("instances/{server}/qemu.argv"))).unwrap();
    assert!(
        argv.contains(&format!("volumes/volume-{vol},")) && argv.contains(&format!("serial={vol},bootindex=1")),
        "{argv}"
    );
    assert!(!data.path().join(format!("instances/{server}/disk")).exists(), "no local root disk");
    wait_console_marker(&cloud, &server, "stratus-guest: up").await;
    eprintln!("boot from volume: ACTIVE + guest up after {:?}", t0.elapsed());

    cloud.openstack(&["server", "delete", "--wait", &server]).await.expect("server delete");
    let v = cloud.openstack(&["volume", "show", &vol]).await;
    if let Ok(v) = v {
        assert_ne!(s(&v, "status"), "in-use", "the root volume is detached with its server: {v}");
    }
    cloud.shutdown().await;
}

async fn wait_console_marker(cloud: &TestCloud, server: &str, marker: &str) {
    wait_console(cloud, server, marker, 1).await;
}
