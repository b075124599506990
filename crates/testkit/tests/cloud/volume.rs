//! Block storage (Cinder v3) through the real `openstack` CLI and raw HTTP, on the `file`
//! backend of the in-process volume agent: volumes (empty, from an image, from a snapshot,
//! clones), update and extend, snapshots, backups, volume types and the scheduler's
//! `volume_backend_name`, quotas and limits as Cinder reports them, a second project that
//! sees nothing of the first, and Cinder's fault bodies for bad input.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stratus_testkit::{Creds, TestCloud};

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// Waits until the local volume agent's `cinder-volume` service is up (the agent
/// registers over the bus shortly after the API answers).
async fn wait_backend(cloud: &TestCloud) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = cloud.openstack(&["volume", "service", "list"]).await.expect("volume service list");
        let up = list.as_array().unwrap().iter().any(|r| s(r, "Binary") == "cinder-volume" && s(r, "State") == "up");
        if up {
            return;
        }
        assert!(Instant::now() < deadline, "no cinder-volume service came up: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls `volume show` (or `volume snapshot show` / `volume backup show` with `kind`)
/// until the status is `want`; panics on an unexpected `error`.
async fn wait_status(cloud: &TestCloud, creds: &Creds, kind: &[&str], id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut args: Vec<&str> = kind.to_vec();
        args.extend(["show", id]);
        let v = cloud.openstack_as(creds, &args).await.expect("show");
        let st = s(&v, "status");
        if st == want {
            return v;
        }
        assert!(st != "error" || want == "error", "{kind:?} {id} went to error while waiting for {want}: {v}");
        assert!(Instant::now() < deadline, "{kind:?} {id} stayed {st}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `volume show` fails (the volume is gone).
async fn wait_gone(cloud: &TestCloud, creds: &Creds, kind: &[&str], id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut args: Vec<&str> = kind.to_vec();
        args.extend(["show", id]);
        if cloud.openstack_as(creds, &args).await.is_err() {
            return;
        }
        assert!(Instant::now() < deadline, "{kind:?} {id} was never deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A project with a user holding `member` (and `reader`) in it.
async fn member_user(cloud: &TestCloud, name: &str) -> (Creds, String) {
    let p = cloud.openstack(&["project", "create", "--domain", "default", name]).await.expect("project create");
    let pw = format!("{name}-pw");
    cloud
        .openstack(&["user", "create", "--domain", "default", "--password", &pw, "--project", name, name])
        .await
        .expect("user create");
    cloud.openstack(&["role", "add", "--project", name, "--user", name, "member"]).await.expect("role add");
    (Creds::new(name, &pw, name), s(&p, "id"))
}

const VOL: &[&str] = &["volume"];
const SNAP: &[&str] = &["volume", "snapshot"];
const BACKUP: &[&str] = &["volume", "backup"];

#[tokio::test]
async fn volume_cli_create_set_extend_snapshot_clone_delete() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    wait_backend(&cloud).await;
    cloud.create_tiny_image().await;

    // Empty volume with properties.
    let v = cloud
        .openstack(&["volume", "create", "--size", "1", "--description", "first", "--property", "a=b", "v1"])
        .await
        .expect("volume create");
    let id = s(&v, "id");
    assert_eq!(v["size"], 1);
    let v = wait_status(&cloud, &admin, VOL, &id, "available").await;
    assert_eq!(s(&v, "description"), "first");
    assert_eq!(v["properties"], json!({"a": "b"}));
    assert_eq!(v["bootable"], false);
    assert_eq!(s(&v, "type"), "__DEFAULT__");

    // Rename, properties, extend (os-extend through `--size`).
    cloud
        .openstack(&["volume", "set", "--name", "v1b", "--property", "c=d", "--size", "2", &id])
        .await
        .expect("volume set");
    let v = wait_status(&cloud, &admin, VOL, "v1b", "available").await;
    assert_eq!(v["size"], 2);
    cloud.openstack(&["volume", "unset", "--property", "a", "v1b"]).await.expect("volume unset");
    let v = cloud.openstack(&["volume", "show", "v1b"]).await.unwrap();
    assert_eq!(v["properties"], json!({"c": "d"}));
    // Shrinking is refused (the CLI checks first; the API's own refusal is tested with
    // raw HTTP below).
    assert!(cloud.openstack(&["volume", "set", "--size", "1", "v1b"]).await.is_err());

    // The file backend really holds a 2 GiB volume.
    let files: Vec<_> = walk(&cloud.data_dir.join("volumes"));
    assert!(!files.is_empty(), "no volume file under the data directory");

    // From an image: bootable, with the image's metadata.
    let vi = cloud.openstack(&["volume", "create", "--image", "tiny", "--size", "1", "vimg"]).await.unwrap();
    let vi = wait_status(&cloud, &admin, VOL, &s(&vi, "id"), "available").await;
    assert_eq!(vi["bootable"], true);
    assert_eq!(s(&vi["volume_image_metadata"], "image_name"), "tiny");
    assert_eq!(s(&vi["volume_image_metadata"], "disk_format"), "raw");

    // Snapshot, a volume from it (its size by default), a clone.
    let sn = cloud.openstack(&["volume", "snapshot", "create", "--volume", "v1b", "s1"]).await.unwrap();
    let sn_id = s(&sn, "id");
    let sn = wait_status(&cloud, &admin, SNAP, &sn_id, "available").await;
    assert_eq!(sn["size"], 2);
    let vs = cloud.openstack(&["volume", "create", "--snapshot", "s1", "vs"]).await.unwrap();
    assert_eq!(vs["size"], 2);
    let vs = wait_status(&cloud, &admin, VOL, &s(&vs, "id"), "available").await;
    assert_eq!(s(&vs, "snapshot_id"), sn_id);
    let vc = cloud.openstack(&["volume", "create", "--source", "v1b", "--size", "3", "vc"]).await.unwrap();
    let vc = wait_status(&cloud, &admin, VOL, &s(&vc, "id"), "available").await;
    assert_eq!(vc["size"], 3);
    assert_eq!(s(&vc, "source_volid"), id);

    let list = cloud.openstack(&["volume", "list", "--long"]).await.unwrap();
    let mut names: Vec<String> = list.as_array().unwrap().iter().map(|r| s(r, "Name")).collect();
    names.sort();
    assert_eq!(names, ["v1b", "vc", "vimg", "vs"]);
    let filtered = cloud.openstack(&["volume", "list", "--name", "vs"]).await.unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    // A volume with snapshots cannot be deleted, and the reason says why.
    let err = cloud.openstack(&["volume", "delete", "v1b"]).await.unwrap_err();
    assert!(err.stderr.contains("has 1 snapshot(s)"), "{err}");
    cloud.openstack(&["volume", "snapshot", "delete", "s1"]).await.expect("snapshot delete");
    wait_gone(&cloud, &admin, SNAP, &sn_id).await;
    for name in ["v1b", "vc", "vimg", "vs"] {
        cloud.openstack(&["volume", "delete", name]).await.expect("volume delete");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = cloud.openstack(&["volume", "list"]).await.unwrap();
        if list.as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "volumes left: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Nothing left behind on the backend but the image layer, a cache kept for
    // `image_cache_max_age_secs` after its last user (like Nova's `_base`).
    let left: Vec<_> = walk(&cloud.data_dir.join("volumes"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("image-"))
        .collect();
    assert!(left.is_empty(), "volume files left behind: {left:?}");
    cloud.shutdown().await;
}

/// Regular files under `dir` (recursively).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn volume_types_pick_the_backend_and_say_why_none_fits() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    wait_backend(&cloud).await;

    let t = cloud
        .openstack(&[
            "volume",
            "type",
            "create",
            "--property",
            "volume_backend_name=file",
            "--description",
            "d",
            "fast",
        ])
        .await
        .expect("type create");
    assert_eq!(t["properties"], json!({"volume_backend_name": "file"}));
    cloud
        .openstack(&["volume", "type", "create", "--property", "volume_backend_name=nowhere", "lost"])
        .await
        .expect("type create");
    let types = cloud.openstack(&["volume", "type", "list"]).await.unwrap();
    let mut names: Vec<String> = types.as_array().unwrap().iter().map(|r| s(r, "Name")).collect();
    names.sort();
    assert_eq!(names, ["__DEFAULT__", "fast", "lost"]);

    let vf = cloud.openstack(&["volume", "create", "--size", "1", "--type", "fast", "vf"]).await.unwrap();
    let vf = wait_status(&cloud, &admin, VOL, &s(&vf, "id"), "available").await;
    assert_eq!(s(&vf, "type"), "fast");
    let vl = cloud.openstack(&["volume", "create", "--size", "1", "--type", "lost", "vl"]).await.unwrap();
    let vl_id = s(&vl, "id");
    wait_status(&cloud, &admin, VOL, &vl_id, "error").await;
    // The user message (3.3) says why.
    let msgs = cloud.openstack(&["--os-volume-api-version", "3.3", "volume", "message", "list"]).await.unwrap();
    let m = msgs
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m.to_string().contains(&vl_id))
        .unwrap_or_else(|| panic!("a message for the volume in {msgs}"));
    assert!(m.to_string().contains("No valid host") || m.to_string().contains("No valid backend"), "{m}");

    // A type in use cannot be deleted; an unused one can.
    let err = cloud.openstack(&["volume", "type", "delete", "fast"]).await.unwrap_err();
    assert!(err.stderr.contains("in use") || err.stderr.contains("volumes present"), "{err}");
    cloud.openstack(&["volume", "delete", "vl"]).await.expect("delete an errored volume");
    wait_gone(&cloud, &admin, VOL, &vl_id).await;
    cloud.openstack(&["volume", "type", "delete", "lost"]).await.expect("type delete");

    // Members may not create types.
    let (member, _) = member_user(&cloud, "stvtypes").await;
    let err = cloud.openstack_as(&member, &["volume", "type", "create", "mine"]).await.unwrap_err();
    assert!(err.stderr.contains("403"), "{err}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn volume_quotas_limits_backups_and_a_second_project() {
    let cloud = TestCloud::start().await;
    let admin = cloud.admin();
    wait_backend(&cloud).await;
    let (member, pid) = member_user(&cloud, "stvq").await;

    let av = cloud.openstack(&["volume", "create", "--size", "1", "adminvol"]).await.unwrap();
    let av_id = s(&av, "id");
    wait_status(&cloud, &admin, VOL, &av_id, "available").await;

    cloud.openstack(&["quota", "set", "--volumes", "1", "--gigabytes", "3", &pid]).await.expect("quota set");
    let q = cloud.openstack(&["quota", "show", "--volume", &pid]).await.expect("quota show");
    let limit = |name: &str| {
        q.as_array().unwrap().iter().find(|r| s(r, "Resource") == name).map(|r| r["Limit"].clone()).unwrap_or_default()
    };
    assert_eq!(limit("volumes"), 1);
    assert_eq!(limit("gigabytes"), 3);

    // The member sees nothing of the admin project.
    let list = cloud.openstack_as(&member, &["volume", "list"]).await.unwrap();
    assert_eq!(list, json!([]));
    let err = cloud.openstack_as(&member, &["volume", "show", &av_id]).await.unwrap_err();
    assert!(err.stderr.contains("No Volume found") || err.stderr.contains("404"), "{err}");
    let err = cloud.openstack_as(&member, &["volume", "delete", &av_id]).await.unwrap_err();
    assert!(!err.stderr.is_empty());

    // Quota: 4 GiB is over the gigabytes quota, a second volume over the volumes quota.
    let err = cloud.openstack_as(&member, &["volume", "create", "--size", "4", "big"]).await.unwrap_err();
    assert!(err.stderr.contains("413") && err.stderr.contains("gigabytes"), "{err}");
    let m1 = cloud
        .openstack_as(&member, &["volume", "create", "--size", "1", "--property", "kept=yes", "m1"])
        .await
        .unwrap();
    let m1_id = s(&m1, "id");
    wait_status(&cloud, &member, VOL, &m1_id, "available").await;
    let err = cloud.openstack_as(&member, &["volume", "create", "--size", "1", "m2"]).await.unwrap_err();
    assert!(err.stderr.contains("413") && err.stderr.contains("volumes"), "{err}");

    let limits = cloud.openstack_as(&member, &["limits", "show", "--absolute"]).await.expect("limits show");
    let lim = |name: &str| {
        limits.as_array().unwrap().iter().find(|r| s(r, "Name") == name).map(|r| r["Value"].clone()).unwrap_or_default()
    };
    assert_eq!(lim("max_total_volumes"), 1, "{limits}");
    assert_eq!(lim("max_total_volume_gigabytes"), 3, "{limits}");
    assert_eq!(lim("total_volumes_used"), 1, "{limits}");
    assert_eq!(lim("total_gigabytes_used"), 1, "{limits}");

    // A backup of the member's volume, restored to a new volume (after raising the
    // volumes quota: a restore creates a volume and counts against it).
    let b = cloud.openstack_as(&member, &["volume", "backup", "create", "--name", "b1", &m1_id]).await.unwrap();
    let b_id = s(&b, "id");
    let b = wait_status(&cloud, &member, BACKUP, &b_id, "available").await;
    assert_eq!(b["size"], 1);
    wait_status(&cloud, &member, VOL, &m1_id, "available").await;
    cloud.openstack(&["quota", "set", "--volumes", "2", &pid]).await.expect("quota set");
    let r = cloud.openstack_as(&member, &["volume", "backup", "restore", &b_id, "restored"]).await.unwrap();
    let r_id = s(&r, "volume_id");
    assert!(!r_id.is_empty(), "{r}");
    let restored = wait_status(&cloud, &member, VOL, &r_id, "available").await;
    // The backup keeps the volume's metadata and the restore brings it back.
    assert_eq!(restored["properties"]["kept"], "yes", "{restored}");
    cloud.openstack_as(&member, &["volume", "backup", "delete", &b_id]).await.expect("backup delete");
    wait_gone(&cloud, &member, BACKUP, &b_id).await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn volume_faults_are_cinder_bodies() {
    let cloud = TestCloud::start().await;
    wait_backend(&cloud).await;
    let token = cloud.admin_token().await;
    let v = cloud.openstack(&["volume", "create", "--size", "1", "f1"]).await.unwrap();
    let id = s(&v, "id");
    let tok = cloud.openstack(&["token", "issue"]).await.unwrap();
    let base = cloud.at(&format!("/volume/v3/{}", s(&tok, "project_id")));
    wait_status(&cloud, &cloud.admin(), VOL, &id, "available").await;

    async fn call(
        cloud: &TestCloud,
        token: &str,
        method: reqwest::Method,
        url: String,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = cloud.http().request(method, url).header("X-Auth-Token", token);
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let st = resp.status().as_u16();
        (st, resp.json().await.unwrap_or(Value::Null))
    }
    use reqwest::Method;

    let (st, b) = call(&cloud, &token, Method::GET, format!("{base}/volumes/nope"), None).await;
    assert_eq!((st, b["itemNotFound"]["code"].clone()), (404, json!(404)), "{b}");
    assert!(s(&b["itemNotFound"], "message").contains("nope"), "{b}");

    for bad in [r#"{"volume":{"size":0}}"#, r#"{"volume":{"size":"x"}}"#, "notjson", r#"{"volume":{}}"#] {
        let (st, b) = call(&cloud, &token, Method::POST, format!("{base}/volumes"), Some(bad)).await;
        assert_eq!(st, 400, "{bad}: {b}");
        assert_eq!(b["badRequest"]["code"], 400, "{bad}: {b}");
        assert!(!s(&b["badRequest"], "message").is_empty(), "{b}");
    }
    let (st, b) = call(
        &cloud,
        &token,
        Method::POST,
        format!("{base}/volumes"),
        Some(r#"{"volume":{"size":1,"volume_type":"zzz"}}"#),
    )
    .await;
    assert_eq!(st, 404, "{b}");
    assert!(s(&b["itemNotFound"], "message").contains("zzz"), "{b}");

    let (st, b) =
        call(&cloud, &token, Method::POST, format!("{base}/volumes/{id}/action"), Some(r#"{"os-bogus":{}}"#)).await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = call(
        &cloud,
        &token,
        Method::POST,
        format!("{base}/volumes/{id}/action"),
        Some(r#"{"os-extend":{"new_size":1}}"#),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    assert!(s(&b["badRequest"], "message").contains("greater than current size"), "{b}");

    let resp = cloud
        .http()
        .get(format!("{base}/volumes"))
        .header("X-Auth-Token", &token)
        .header("OpenStack-API-Version", "volume 3.99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 406);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["notAcceptable"]["code"], 406, "{b}");

    // The version document is truthful about the microversions served.
    let resp = cloud.http().get(cloud.at("/volume/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 300);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["versions"][0]["min_version"], "3.0");
    assert_eq!(b["versions"][0]["version"], "3.70");
    cloud.shutdown().await;
}
