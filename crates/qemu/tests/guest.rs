//! End-to-end check of the test guest's network path, using loopback only.
//!
//! QEMU's user-mode network runs with `restrict=on` (the guest cannot reach
//! anything outside), on the 169.254.0.0/16 link so that 169.254.169.254 is
//! on-link. `guestfwd` hands every guest connection to 169.254.169.254:80 to
//! `socat`, which connects to a tiny metadata server this test runs on
//! 127.0.0.1; `hostfwd` exposes the guest's sshd on 127.0.0.1. This exercises
//! the image's DHCP script, metadata fetch, key install, user-data and
//! dropbear without taps, namespaces or any non-loopback traffic.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{direct_spec, test_image, Sandbox, UP_MARKER};
use stratus_qemu::cmdline::{render, LaunchOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

async fn serve_metadata(listener: TcpListener, pubkey: String) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            return;
        };
        let pubkey = pubkey.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            let Ok(Some(req)) = lines.next_line().await else {
                return;
            };
            // drain headers
            while let Ok(Some(l)) = lines.next_line().await {
                if l.is_empty() {
                    break;
                }
            }
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let body = match path {
                "/2009-04-04/meta-data/instance-id" => Some("i-stratus-test".to_owned()),
                "/2009-04-04/meta-data/hostname" => Some("meta-vm.novalocal".to_owned()),
                "/2009-04-04/meta-data/public-keys/0/openssh-key" => Some(pubkey),
                "/2009-04-04/user-data" => Some("#!/bin/sh\necho hello-from-user-data-on-$(hostname)\n".to_owned()),
                _ => None,
            };
            let resp = match body {
                Some(b) => format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len()),
                None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
            };
            let _ = w.write_all(resp.as_bytes()).await;
        });
    }
}

fn require(tool: &str) {
    assert!(
        stratus_qemu::binary::which(tool).is_some(),
        "{tool} is needed for this test; run scripts/install-host-packages.sh"
    );
}

#[tokio::test]
async fn guest_dhcp_metadata_userdata_and_ssh_over_loopback() {
    let img = test_image();
    let bin = common::qemu().await;
    require("socat");
    require("ssh");
    require("ssh-keygen");
    let sb = Sandbox::new();
    let dir = sb.dir();

    let key = sb.path().join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    let md = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let md_port = md.local_addr().unwrap().port();
    tokio::spawn(serve_metadata(md, pubkey));
    let ssh_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let spec = direct_spec(&img, "net-vm", "");
    // No -sandbox: guestfwd's cmd: needs QEMU to fork socat.
    let mut argv = render(&spec, &dir.paths(), LaunchOptions::default()).unwrap();
    argv.extend([
        "-netdev".to_owned(),
        format!(
            "user,id=n0,restrict=on,net=169.254.0.0/16,host=169.254.0.2,\
             guestfwd=tcp:169.254.169.254:80-cmd:socat - TCP:127.0.0.1:{md_port},\
             hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
        ),
        "-device".to_owned(),
        "virtio-net-pci,netdev=n0,mac=fa:16:3e:00:00:01".to_owned(),
    ]);
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&bin.path)
        .args(&argv)
        .current_dir(sb.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.qemu_log()).unwrap())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let console = dir.console();
    let (bound, _) = console.wait_for("stratus-guest: DHCP bound eth0", 0, Duration::from_secs(90)).await.unwrap();
    let lease_s = started.elapsed().as_secs_f64();
    assert!(bound.contains("ip=169.254."), "{bound}");
    console.wait_for(UP_MARKER, 0, Duration::from_secs(60)).await.unwrap();
    console.wait_for("stratus-guest: metadata done", 0, Duration::from_secs(60)).await.unwrap();
    let key_s = started.elapsed().as_secs_f64();
    let text = console.read().await.unwrap();
    for want in [
        "stratus-guest: metadata instance-id=i-stratus-test",
        "stratus-guest: hostname=meta-vm",
        "stratus-guest: ssh key installed",
        "hello-from-user-data-on-meta-vm",
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----",
    ] {
        assert!(text.contains(want), "{want:?} missing from console:\n{text}");
    }

    for user in ["root", "cirros"] {
        let out = tokio::process::Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args(["-p", &ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@127.0.0.1"))
            .arg("cat /etc/stratus-image; hostname; id -un")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ssh as {user} failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("name=stratus-test-a"), "{stdout}");
        assert!(stdout.contains("meta-vm"), "{stdout}");
        assert!(stdout.trim_end().ends_with(user), "{stdout}");
    }
    eprintln!(
        "lease after {lease_s:.2} s, metadata+key after {key_s:.2} s, ssh ok after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    child.kill().await.unwrap();
}
