//! Image service through the real `openstack` CLI (python-openstackclient + openstacksdk):
//! the seeds' commands, sharing and RBAC, the publicize policy override, and bad input.

use std::path::Path;

use serde_json::Value;
use stratus_testkit::{Creds, TestCloud};

fn qemu_img(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("qemu-img").args(args).current_dir(dir).output().expect("qemu-img runs");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn md5_file(p: &Path) -> String {
    let out = std::process::Command::new("md5sum").arg(p).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
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

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = list.as_array().unwrap().iter().map(|i| s(i, "Name")).collect();
    n.sort();
    n
}

#[tokio::test]
async fn image_cli_create_list_show_set_save_delete() {
    let cloud = TestCloud::start().await;
    let dir = tempfile::tempdir().unwrap();
    qemu_img(dir.path(), &["create", "-f", "qcow2", "cirros.qcow2", "64M"]);
    let file = dir.path().join("cirros.qcow2");
    let file_s = file.to_str().unwrap();

    let im = cloud
        .openstack(&[
            "image",
            "create",
            "--disk-format",
            "qcow2",
            "--container-format",
            "bare",
            "--file",
            file_s,
            "--property",
            "hw_disk_bus=scsi",
            "--property",
            "os_distro=cirros",
            "--tag",
            "seed",
            "--min-disk",
            "1",
            "--min-ram",
            "64",
            "--public",
            "--protected",
            "cirros",
        ])
        .await
        .expect("image create");
    let id = s(&im, "id");
    assert_eq!(s(&im, "name"), "cirros");

    let shown = cloud.openstack(&["image", "show", "cirros"]).await.expect("image show");
    assert_eq!(s(&shown, "status"), "active");
    assert_eq!(s(&shown, "visibility"), "public");
    assert_eq!(s(&shown, "disk_format"), "qcow2");
    assert_eq!(shown["min_disk"], 1);
    assert_eq!(shown["min_ram"], 64);
    assert_eq!(shown["protected"], true);
    assert_eq!(shown["virtual_size"], 64 << 20);
    assert_eq!(s(&shown, "checksum"), md5_file(&file));
    // The CLI files the hash fields under `properties`, as it does against Glance.
    assert_eq!(shown["properties"]["os_hash_algo"], "sha512", "{shown}");
    let props = shown["properties"].to_string();
    assert!(props.contains("hw_disk_bus") && props.contains("scsi"), "{shown}");
    assert!(shown["tags"].to_string().contains("seed"), "{shown}");

    // Lists and filters.
    cloud
        .openstack(&["image", "create", "--disk-format", "raw", "--container-format", "bare", "--private", "empty"])
        .await
        .expect("create without data");
    assert_eq!(names(&cloud.openstack(&["image", "list"]).await.unwrap()), vec!["cirros", "empty"]);
    assert_eq!(names(&cloud.openstack(&["image", "list", "--public"]).await.unwrap()), vec!["cirros"]);
    assert_eq!(names(&cloud.openstack(&["image", "list", "--private"]).await.unwrap()), vec!["empty"]);
    // Without --file the SDK uploads zero bytes: both images are active.
    assert_eq!(
        names(&cloud.openstack(&["image", "list", "--status", "active"]).await.unwrap()),
        vec!["cirros", "empty"]
    );
    assert_eq!(names(&cloud.openstack(&["image", "list", "--status", "queued"]).await.unwrap()), Vec::<String>::new());
    assert_eq!(names(&cloud.openstack(&["image", "list", "--tag", "seed"]).await.unwrap()), vec!["cirros"]);
    assert_eq!(names(&cloud.openstack(&["image", "list", "--name", "empty"]).await.unwrap()), vec!["empty"]);
    assert_eq!(
        names(&cloud.openstack(&["image", "list", "--property", "os_distro=cirros"]).await.unwrap()),
        vec!["cirros"]
    );
    let long = cloud.openstack(&["image", "list", "--long", "--sort", "name:asc"]).await.unwrap();
    assert_eq!(s(&long[0], "Name"), "cirros");
    assert_eq!(s(&long[0], "Disk Format"), "qcow2");
    assert_eq!(s(&long[0], "Checksum"), md5_file(&file));
    // `--limit` turns the SDK's pagination off: one page, newest first; `--marker` continues.
    let page = cloud.openstack(&["image", "list", "--limit", "1"]).await.unwrap();
    assert_eq!(names(&page), vec!["empty"]);
    let next = cloud.openstack(&["image", "list", "--limit", "1", "--marker", &s(&page[0], "ID")]).await.unwrap();
    assert_eq!(names(&next), vec!["cirros"]);
    let owned = cloud.openstack(&["image", "list", "--project", "admin", "--long"]).await.unwrap();
    assert_eq!(owned.as_array().unwrap().len(), 2);

    // Set and unset.
    cloud
        .openstack(&[
            "image",
            "set",
            "--name",
            "cirros-0.6",
            "--property",
            "hw_vif_model=virtio",
            "--min-ram",
            "128",
            "cirros",
        ])
        .await
        .expect("image set");
    cloud.openstack(&["image", "unset", "--property", "hw_disk_bus", "cirros-0.6"]).await.expect("image unset");
    let shown = cloud.openstack(&["image", "show", &id]).await.unwrap();
    assert_eq!(s(&shown, "name"), "cirros-0.6");
    assert_eq!(shown["min_ram"], 128);
    let props = shown["properties"].to_string();
    assert!(props.contains("hw_vif_model") && !props.contains("hw_disk_bus"), "{props}");

    // Save: byte-identical.
    let out = dir.path().join("saved.img");
    let (code, _, err) =
        cloud.openstack_raw(&cloud.admin(), &["image", "save", "--file", out.to_str().unwrap(), &id]).await;
    assert_eq!(code, Some(0), "image save: {err}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());

    // Deactivate / activate.
    cloud.openstack(&["image", "set", "--deactivate", &id]).await.expect("deactivate");
    assert_eq!(s(&cloud.openstack(&["image", "show", &id]).await.unwrap(), "status"), "deactivated");
    cloud.openstack(&["image", "set", "--activate", &id]).await.expect("activate");
    assert_eq!(s(&cloud.openstack(&["image", "show", &id]).await.unwrap(), "status"), "active");

    // Protected: delete refused until unprotected.
    let e = cloud.openstack(&["image", "delete", &id]).await.expect_err("protected image deleted");
    assert!(e.stderr.contains("protected") || e.stderr.contains("403") || e.stderr.contains("Failed"), "{e}");
    cloud.openstack(&["image", "set", "--unprotected", &id]).await.expect("unprotect");
    cloud.openstack(&["image", "delete", &id, "empty"]).await.expect("image delete");
    assert_eq!(cloud.openstack(&["image", "list"]).await.unwrap(), Value::Array(vec![]));
    let files: Vec<_> = std::fs::read_dir(cloud.data_dir.join("images"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .collect();
    assert!(files.is_empty(), "image data removed: {files:?}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn image_cli_sharing_and_rbac() {
    let cloud = TestCloud::start().await;
    let (alice, alice_project) = member_user(&cloud, "alice").await;
    let (bob, bob_project) = member_user(&cloud, "bob").await;
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0x5a; 1 << 20]).unwrap();
    let raw_s = raw.to_str().unwrap();
    let create = |creds: Creds, name: &'static str, vis: &'static str| {
        let cloud = &cloud;
        async move {
            cloud
                .openstack_as(
                    &creds,
                    &[
                        "image",
                        "create",
                        "--disk-format",
                        "raw",
                        "--container-format",
                        "bare",
                        "--file",
                        raw_s,
                        vis,
                        name,
                    ],
                )
                .await
        }
    };
    // A member cannot publicize (admin-only publicize_image).
    let e = create(alice.clone(), "alice-public", "--public").await.expect_err("member publicized");
    assert!(e.stderr.contains("publicize_image") || e.stderr.contains("403"), "{e}");
    let private = create(alice.clone(), "alice-private", "--private").await.expect("private image");
    let shared = create(alice.clone(), "alice-shared", "--shared").await.expect("shared image");
    create(alice.clone(), "alice-community", "--community").await.expect("community image");
    let shared_id = s(&shared, "id");

    // Bob cannot see alice's private image, nor her shared one before it is shared.
    let e = cloud.openstack_as(&bob, &["image", "show", &s(&private, "id")]).await.expect_err("bob sees private");
    assert!(
        e.stderr.contains("No Image found") || e.stderr.contains("404") || e.stderr.contains("Could not find"),
        "{e}"
    );
    assert_eq!(names(&cloud.openstack_as(&bob, &["image", "list"]).await.unwrap()), Vec::<String>::new());
    assert_eq!(
        names(&cloud.openstack_as(&bob, &["image", "list", "--community"]).await.unwrap()),
        vec!["alice-community"]
    );

    // Share: alice adds bob's project; bob accepts; now it is in his list.
    cloud.openstack_as(&alice, &["image", "add", "project", &shared_id, &bob_project]).await.expect("add project");
    let members = cloud.openstack_as(&alice, &["image", "member", "list", &shared_id]).await.expect("member list");
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
    assert_eq!(s(&members[0], "Status"), "pending");
    assert_eq!(names(&cloud.openstack_as(&bob, &["image", "list"]).await.unwrap()), Vec::<String>::new());
    let e = cloud.openstack_as(&bob, &["image", "add", "project", &shared_id, &alice_project]).await;
    assert!(e.is_err(), "a member cannot share someone else's image");
    cloud.openstack_as(&bob, &["image", "set", "--accept", &shared_id]).await.expect("accept");
    assert_eq!(names(&cloud.openstack_as(&bob, &["image", "list"]).await.unwrap()), vec!["alice-shared"]);
    assert_eq!(
        s(&cloud.openstack_as(&bob, &["image", "member", "list", &shared_id]).await.unwrap()[0], "Status"),
        "accepted"
    );
    // Bob can download it, cannot change or delete it.
    let out = dir.path().join("bob.img");
    let (code, _, err) =
        cloud.openstack_raw(&bob, &["image", "save", "--file", out.to_str().unwrap(), &shared_id]).await;
    assert_eq!(code, Some(0), "image save: {err}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&raw).unwrap());
    assert!(cloud.openstack_as(&bob, &["image", "set", "--name", "mine", &shared_id]).await.is_err());
    assert!(cloud.openstack_as(&bob, &["image", "delete", &shared_id]).await.is_err());
    // Unshare.
    cloud
        .openstack_as(&alice, &["image", "remove", "project", &shared_id, &bob_project])
        .await
        .expect("remove project");
    assert_eq!(names(&cloud.openstack_as(&bob, &["image", "list"]).await.unwrap()), Vec::<String>::new());
    // Another project's member cannot deactivate; the owner can (Glance's default policy:
    // admin, or a member of the owning project) and reactivate; the admin can do all of it.
    // (The SDK ignores the 403 of an image action, so check the state, not the exit code.)
    let _ = cloud.openstack_as(&bob, &["image", "set", "--deactivate", &shared_id]).await;
    assert_eq!(s(&cloud.openstack(&["image", "show", &shared_id]).await.unwrap(), "status"), "active");
    let _ = cloud.openstack_as(&alice, &["image", "set", "--deactivate", &shared_id]).await;
    assert_eq!(s(&cloud.openstack(&["image", "show", &shared_id]).await.unwrap(), "status"), "deactivated");
    let _ = cloud.openstack_as(&alice, &["image", "set", "--activate", &shared_id]).await;
    assert_eq!(s(&cloud.openstack(&["image", "show", &shared_id]).await.unwrap(), "status"), "active");
    cloud.openstack(&["image", "set", "--public", &s(&private, "id")]).await.expect("admin publicizes");
    assert_eq!(names(&cloud.openstack_as(&bob, &["image", "list"]).await.unwrap()), vec!["alice-private"]);
    assert_eq!(names(&cloud.openstack(&["image", "list"]).await.unwrap()).len(), 3, "admin sees every image");
    cloud.openstack(&["image", "delete", &shared_id]).await.expect("admin deletes");
    cloud.shutdown().await;
}

#[tokio::test]
async fn image_cli_policy_file_lets_members_publicize() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("image-policy.yaml");
    std::fs::write(&policy, "\"publicize_image\": \"role:admin or role:member\"\n").unwrap();
    let p = policy.clone();
    let cloud = TestCloud::start_with(move |c| c.image.policy_file = Some(p)).await;
    let (alice, _) = member_user(&cloud, "alice").await;
    let im = cloud
        .openstack_as(
            &alice,
            &["image", "create", "--disk-format", "raw", "--container-format", "bare", "--public", "pub"],
        )
        .await
        .expect("member publicizes with the override");
    assert_eq!(s(&im, "visibility"), "public");
    cloud.shutdown().await;
}

#[tokio::test]
async fn image_cli_bad_input() {
    let cloud = TestCloud::start_with(|c| c.image.image_size_cap = 4 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    qemu_img(dir.path(), &["create", "-f", "qcow2", "base.qcow2", "16M"]);
    qemu_img(dir.path(), &["create", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", "evil.qcow2", "16M"]);
    std::fs::write(dir.path().join("plain.raw"), vec![1u8; 1 << 20]).unwrap();
    std::fs::write(dir.path().join("big.raw"), vec![1u8; 5 << 20]).unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let create = |name: &'static str, fmt: &'static str, file: String| {
        let cloud = &cloud;
        async move {
            cloud
                .openstack(&[
                    "image",
                    "create",
                    "--disk-format",
                    fmt,
                    "--container-format",
                    "bare",
                    "--file",
                    &file,
                    name,
                ])
                .await
        }
    };
    // The SDK deletes an image whose upload failed; if it is still there, it must be killed.
    let status = |name: &'static str| {
        let cloud = &cloud;
        async move {
            match cloud.openstack(&["image", "show", name]).await {
                Ok(v) => s(&v, "status"),
                Err(_) => "killed".to_string(),
            }
        }
    };
    // Declared qcow2, data raw: killed.
    let e = create("mismatch", "qcow2", path("plain.raw")).await.expect_err("mismatch accepted");
    assert!(e.stderr.contains("does not match") || e.stderr.contains("400"), "{e}");
    assert_eq!(status("mismatch").await, "killed");
    // qcow2 with a backing file: killed, whatever was declared.
    let e = create("evil", "qcow2", path("evil.qcow2")).await.expect_err("backing file accepted");
    assert!(e.stderr.contains("backing file") || e.stderr.contains("400"), "{e}");
    assert_eq!(status("evil").await, "killed");
    let e = create("evil-raw", "raw", path("evil.qcow2")).await.expect_err("disguised qcow2 accepted");
    assert!(e.stderr.contains("400") || e.stderr.contains("qcow2"), "{e}");
    // Oversized: image_size_cap is 4 MiB.
    let e = create("big", "raw", path("big.raw")).await.expect_err("oversized accepted");
    assert!(e.stderr.contains("413") || e.stderr.contains("image_size_cap"), "{e}");
    assert_eq!(status("big").await, "killed");
    // Unknown disk format: the CLI refuses or the API answers 400.
    assert!(cloud.openstack(&["image", "create", "--disk-format", "exe", "bad"]).await.is_err());
    // A good one, then direct API checks: upload twice (409), bad patch paths, wrong media type.
    let good = create("good", "qcow2", path("base.qcow2")).await.expect("good qcow2");
    let id = s(&good, "id");
    let token = cloud.admin_token().await;
    let http = cloud.http();
    let file_url = cloud.at(&format!("/image/v2/images/{id}/file"));
    let r = http
        .put(&file_url)
        .header("x-auth-token", &token)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let patch = |body: &'static str, ctype: &'static str| {
        let url = cloud.at(&format!("/image/v2/images/{id}"));
        let token = token.clone();
        async move {
            let r = http
                .patch(url)
                .header("x-auth-token", token)
                .header("content-type", ctype)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    const JP: &str = "application/openstack-images-v2.1-json-patch";
    assert_eq!(patch(r#"[{"op":"replace","path":"/status","value":"active"}]"#, JP).await.0, 403);
    assert_eq!(patch(r#"[{"op":"add","path":"/id","value":"x"}]"#, JP).await.0, 403);
    assert_eq!(patch(r#"[{"op":"add","path":"/a/b","value":"x"}]"#, JP).await.0, 400);
    assert_eq!(patch(r#"[{"op":"add","path":"name","value":"x"}]"#, JP).await.0, 400);
    assert_eq!(patch(r#"[{"op":"remove","path":"/no_such_property"}]"#, JP).await.0, 409);
    let (st, body) = patch(r#"[{"op":"replace","path":"/name","value":"x"}]"#, "application/json").await;
    assert_eq!(st, 415);
    assert!(body["message"].is_string(), "Glance fault body: {body}");
    // Nothing is stored for the rejected uploads.
    let files: Vec<String> = std::fs::read_dir(cloud.data_dir.join("images"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, vec![id], "only the good image has data");
    cloud.shutdown().await;
}
