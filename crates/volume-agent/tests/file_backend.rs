//! The `file` backend against real `qemu-img`/`qemu-io`: snapshots and clones share
//! layers instead of copying, data is where it should be after every operation, and a
//! failure or a crash injected at every step of every step table leaves either the old
//! state or something the next reconciliation turns into a clean one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use stratus_volume_agent::backend::file::FileBackend;
use stratus_volume_agent::backend::{Backend, DataFormat};
use stratus_volume_agent::config::FileConfig;
use stratus_volume_agent::export::Exports;
use stratus_volume_agent::images::ImageStore;
use stratus_volume_contract::steps::{FaultKind, Faults};
use stratus_volume_contract::{AgentError, Connector, Expected, ImageRef, SnapshotRef, VolumeRef, VolumeSource, GIB};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    faults: Faults,
    backend: FileBackend,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let faults = Faults::default();
    let cfg = FileConfig { path: root.join("volumes"), image_cache_max_age_secs: 0, ..Default::default() };
    let exports = Exports::new(&root.join("state"), "127.0.0.1", 20690, 20699);
    let backend = FileBackend::with_faults(cfg, "host-a", exports, faults.clone()).unwrap();
    Fixture { _dir: dir, root, faults, backend }
}

fn vol(id: &str, gb: u64) -> VolumeRef {
    VolumeRef { id: id.into(), size_gb: gb, pool: "volumes".into(), location: Some(format!("volume-{id}")) }
}

fn snap(id: &str, volume: &str) -> SnapshotRef {
    SnapshotRef { id: id.into(), volume_id: volume.into(), size_gb: 1, location: None }
}

/// Images "served" from files in a directory (the image service's role).
struct DirImages(PathBuf);

#[async_trait::async_trait]
impl ImageStore for DirImages {
    async fn download(&self, id: &str, dst: &Path) -> Result<u64, AgentError> {
        std::fs::copy(self.0.join(id), dst).map_err(|e| AgentError::NotFound(e.to_string()))
    }
    async fn upload(&self, id: &str, src: &Path) -> Result<(), AgentError> {
        std::fs::copy(src, self.0.join(id)).map(drop).map_err(|e| AgentError::Failed(e.to_string()))
    }
}

fn qemu_io(path: &Path, cmd: &str) -> bool {
    std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("qemu-io (qemu-utils) is installed")
        .success()
}

/// Writes byte `b` over the first 64 KiB of volume `id`.
fn write(f: &Fixture, id: &str, b: u8) {
    assert!(qemu_io(&f.backend.dir().join(format!("volume-{id}")), &format!("write -P {b} 0 64k")));
}

/// True when the first 64 KiB of `file` (a name in the volumes directory) are byte `b`.
fn reads(f: &Fixture, file: &str, b: u8) -> bool {
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-r", "-U", "-c", &format!("read -P {b} 0 64k")])
        .arg(f.backend.dir().join(file))
        .output()
        .unwrap();
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed")
}

fn listing(f: &Fixture) -> BTreeSet<String> {
    std::fs::read_dir(f.backend.dir()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect()
}

fn images(f: &Fixture) -> DirImages {
    DirImages(f.root.clone())
}

fn expected(volumes: &[&str], snapshots: &[&str]) -> Expected {
    Expected {
        volumes: volumes.iter().map(|v| vol(v, 1)).collect(),
        snapshots: snapshots.iter().map(|s| snap(s, "v")).collect(),
        attachments: vec![],
    }
}

#[tokio::test]
async fn snapshots_and_clones_share_layers_and_keep_their_data() {
    let f = fixture();
    let im = images(&f);
    f.backend.create_volume(&vol("v", 1), &VolumeSource::Blank, &im).await.unwrap();
    // Idempotent: the controller may send a create twice.
    f.backend.create_volume(&vol("v", 1), &VolumeSource::Blank, &im).await.unwrap();
    write(&f, "v", 0xa1);
    let s1 = f.backend.create_snapshot(&snap("s1", "v"), &vol("v", 1)).await.unwrap();
    assert_eq!(s1.location, "snapshot-s1");
    assert_eq!(s1.volume_location, "volume-v", "a volume's location never changes");
    f.backend.create_snapshot(&snap("s1", "v"), &vol("v", 1)).await.unwrap();
    write(&f, "v", 0xb2);
    assert!(reads(&f, "snapshot-s1", 0xa1) && reads(&f, "volume-v", 0xb2));

    // A volume from the snapshot and a clone of the volume: no copies.
    f.backend.create_volume(&vol("w", 2), &VolumeSource::Snapshot { snapshot: snap("s1", "v") }, &im).await.unwrap();
    f.backend.create_volume(&vol("x", 1), &VolumeSource::Volume { volume: vol("v", 1) }, &im).await.unwrap();
    assert!(reads(&f, "volume-w", 0xa1) && reads(&f, "volume-x", 0xb2));
    assert_eq!(f.backend.volume_stats(&vol("w", 2)).await.unwrap().size_bytes, 2 * GIB);
    for v in ["w", "x"] {
        let alloc = f.backend.volume_stats(&vol(v, 1)).await.unwrap().allocated_bytes;
        assert!(alloc < 2 << 20, "volume {v} takes {alloc} bytes: a clone must not copy");
    }
    write(&f, "x", 0xc3);
    assert!(reads(&f, "volume-v", 0xb2), "writing a clone leaves its source alone");

    // Revert to the snapshot; extend; the content stays.
    f.backend.revert_to_snapshot(&vol("v", 1), &snap("s1", "v")).await.unwrap();
    assert!(reads(&f, "volume-v", 0xa1));
    f.backend.extend_volume(&vol("v", 1), 3).await.unwrap();
    assert_eq!(f.backend.volume_stats(&vol("v", 3)).await.unwrap().size_bytes, 3 * GIB);
    assert!(reads(&f, "volume-v", 0xa1));
    assert!(matches!(f.backend.extend_volume(&vol("v", 3), 2).await, Err(AgentError::InvalidState(_))));

    // Exported data and imported data.
    let raw = f.root.join("v.raw");
    f.backend.export_data(&vol("v", 3), None, &raw, DataFormat::Raw).await.unwrap();
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 3 * GIB);
    assert_eq!(std::fs::read(&raw).unwrap()[..4], [0xa1; 4]);
    f.backend.import_data(&vol("x", 1), &raw).await.unwrap();
    assert!(reads(&f, "volume-x", 0xa1));
    assert_eq!(f.backend.volume_stats(&vol("x", 3)).await.unwrap().size_bytes, 3 * GIB);

    // Releasing the snapshot keeps its layer while `w` is built on it.
    f.backend.delete_snapshot(&snap("s1", "v"), &vol("v", 3)).await.unwrap();
    assert!(listing(&f).contains("snapshot-s1"));
    assert!(reads(&f, "volume-w", 0xa1));
    for v in ["v", "w", "x"] {
        f.backend.delete_volume(&vol(v, 1)).await.unwrap();
        f.backend.delete_volume(&vol(v, 1)).await.unwrap();
    }
    assert!(listing(&f).is_empty(), "nothing left: {:?}", listing(&f));
}

#[tokio::test]
async fn volumes_from_an_image_share_one_layer_and_connections_are_local_or_refused() {
    let f = fixture();
    let im = images(&f);
    let src = f.root.join("img.qcow2");
    assert!(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&src)
        .arg("16M")
        .status()
        .unwrap()
        .success());
    assert!(qemu_io(&src, "write -P 0x5a 0 64k"));
    std::fs::rename(&src, f.root.join("img1")).unwrap();
    let image = ImageRef { id: "img1".into(), disk_format: "qcow2".into(), size: None, direct_url: None };
    for v in ["a", "b"] {
        f.backend.create_volume(&vol(v, 1), &VolumeSource::Image { image: image.clone() }, &im).await.unwrap();
        assert!(reads(&f, &format!("volume-{v}"), 0x5a));
    }
    let files = listing(&f);
    assert_eq!(files.iter().filter(|n| n.starts_with("image-")).count(), 1, "{files:?}");
    // A raw image declared qcow2 is refused rather than probed.
    std::fs::write(f.root.join("bad"), vec![1u8; 4096]).unwrap();
    let bad = ImageRef { id: "bad".into(), disk_format: "qcow2".into(), size: None, direct_url: None };
    assert!(f.backend.create_volume(&vol("c", 1), &VolumeSource::Image { image: bad }, &im).await.is_err());
    assert!(!listing(&f).iter().any(|n| n.contains("-c")), "{:?}", listing(&f));

    let local = Connector { host: "host-a".into(), ..Default::default() };
    let c = f.backend.initialize_connection(&vol("a", 1), "att1", &local, Default::default()).await.unwrap();
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["driver_volume_type"], "file");
    assert!(v["data"]["path"].as_str().unwrap().ends_with("/volume-a"));

    f.backend.delete_volume(&vol("a", 1)).await.unwrap();
    assert!(listing(&f).contains("image-img1"), "the layer still backs b");
    // The image layer outlives its last volume only for `image_cache_max_age_secs` (0 here).
    f.backend.delete_volume(&vol("b", 1)).await.unwrap();
    assert!(listing(&f).is_empty(), "{:?}", listing(&f));
}

#[tokio::test]
async fn reconciliation_removes_what_the_controller_does_not_know() {
    let f = fixture();
    let im = images(&f);
    for v in ["keep", "orphan"] {
        f.backend.create_volume(&vol(v, 1), &VolumeSource::Blank, &im).await.unwrap();
    }
    f.backend.create_snapshot(&snap("s-orphan", "keep"), &vol("keep", 1)).await.unwrap();
    std::fs::write(f.backend.dir().join("volume-keep.part"), b"half").unwrap();
    let r = f.backend.reconcile(&expected(&["keep"], &[])).await.unwrap();
    assert_eq!(r.orphan_volumes, ["orphan"]);
    assert_eq!(r.orphan_snapshots, ["s-orphan"]);
    assert_eq!(r.repaired.len(), 1, "{r:?}");
    // The released snapshot's layer still backs `keep`: it stays until `keep` goes.
    assert_eq!(
        listing(&f),
        BTreeSet::from(["volume-keep".into(), "snapshot-s-orphan".into(), "snapshot-s-orphan.deleted".into()])
    );
    f.backend.delete_volume(&vol("keep", 1)).await.unwrap();
    assert!(listing(&f).is_empty(), "{:?}", listing(&f));
}

/// One multi-step operation under test: how to set it up, run it, check it and take it
/// back as the controller would after a failure.
#[derive(Clone, Copy, Debug)]
enum Op {
    Snapshot,
    Clone,
    FromSnapshot,
    Revert,
    Restore,
}

impl Op {
    fn tables(self) -> &'static [(&'static str, &'static [&'static str])] {
        const FREEZE: (&str, &[&str]) = ("file.freeze", &["overlay", "freeze", "promote"]);
        const CREATE: (&str, &[&str]) = ("file.create_volume", &["build", "publish"]);
        const REPLACE: (&str, &[&str]) = ("file.replace", &["prepare", "replace"]);
        match self {
            Op::Snapshot => &[FREEZE],
            Op::Clone => &[FREEZE, CREATE],
            Op::FromSnapshot => &[CREATE],
            Op::Revert | Op::Restore => &[REPLACE],
        }
    }

    async fn run(self, f: &Fixture) -> Result<(), AgentError> {
        let im = images(f);
        match self {
            Op::Snapshot => f.backend.create_snapshot(&snap("s2", "v"), &vol("v", 1)).await.map(drop),
            Op::Clone => f
                .backend
                .create_volume(&vol("n", 1), &VolumeSource::Volume { volume: vol("v", 1) }, &im)
                .await
                .map(drop),
            Op::FromSnapshot => f
                .backend
                .create_volume(&vol("n", 1), &VolumeSource::Snapshot { snapshot: snap("s1", "v") }, &im)
                .await
                .map(drop),
            Op::Revert => f.backend.revert_to_snapshot(&vol("v", 1), &snap("s1", "v")).await.map(drop),
            Op::Restore => f.backend.import_data(&vol("v", 1), &f.root.join("restore.raw")).await,
        }
    }

    /// The data is right after the operation succeeded.
    fn check_done(self, f: &Fixture) {
        match self {
            Op::Snapshot => assert!(reads(f, "snapshot-s2", 0xb2) && reads(f, "volume-v", 0xb2)),
            Op::Clone => assert!(reads(f, "volume-n", 0xb2) && reads(f, "volume-v", 0xb2)),
            Op::FromSnapshot => assert!(reads(f, "volume-n", 0xa1)),
            Op::Revert => assert!(reads(f, "volume-v", 0xa1)),
            Op::Restore => assert!(reads(f, "volume-v", 0x77)),
        }
    }

    /// What the controller expects once it gave the operation up (it deletes what the
    /// operation created).
    async fn give_up(self, f: &Fixture) -> Expected {
        match self {
            Op::Snapshot => {
                f.backend.delete_snapshot(&snap("s2", "v"), &vol("v", 1)).await.unwrap();
                expected(&["v"], &["s1"])
            }
            Op::Clone | Op::FromSnapshot => {
                f.backend.delete_volume(&vol("n", 1)).await.unwrap();
                expected(&["v"], &["s1"])
            }
            Op::Revert | Op::Restore => expected(&["v"], &["s1"]),
        }
    }
}

/// `v` with a snapshot `s1` (content 0xa1) and newer content 0xb2.
async fn base(f: &Fixture) {
    let im = images(f);
    f.backend.create_volume(&vol("v", 1), &VolumeSource::Blank, &im).await.unwrap();
    write(f, "v", 0xa1);
    f.backend.create_snapshot(&snap("s1", "v"), &vol("v", 1)).await.unwrap();
    write(f, "v", 0xb2);
    let mut raw = vec![0u8; 1 << 20];
    raw[..65536].fill(0x77);
    std::fs::write(f.root.join("restore.raw"), raw).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_or_crash_at_every_step_leaves_old_state_or_repairable_state() {
    use futures::StreamExt;
    let mut cases = Vec::new();
    for op in [Op::Snapshot, Op::Clone, Op::FromSnapshot, Op::Revert, Op::Restore] {
        for (table, steps) in op.tables() {
            for step in *steps {
                for kind in [FaultKind::Fail, FaultKind::CrashBefore, FaultKind::CrashAfter] {
                    cases.push((op, *table, *step, kind));
                }
            }
        }
    }
    // Independent directories: several cases at once (each is mostly qemu-img runs).
    futures::stream::iter(cases)
        .map(|(op, table, step, kind)| fault_case(op, table, step, kind))
        .buffer_unordered(6)
        .collect::<Vec<()>>()
        .await;
}

async fn fault_case(op: Op, table: &'static str, step: &'static str, kind: FaultKind) {
    let what = format!("{op:?} {table}/{step} {kind:?}");
    let f = fixture();
    base(&f).await;
    let before = listing(&f);
    f.faults.arm(table, step, kind);
    let r = op.run(&f).await;
    assert!(f.faults.is_empty(), "{what}: the fault never struck");
    assert!(r.is_err(), "{what}: an injected fault must fail the operation");
    if kind == FaultKind::Fail {
        // Undone: the state before, data intact (a clone's source may stay frozen under
        // a layer: a finished, harmless step).
        let now: BTreeSet<String> = listing(&f).into_iter().filter(|n| !n.starts_with("layer-")).collect();
        assert_eq!(now, before, "{what}");
        assert!(reads(&f, "volume-v", 0xb2) && reads(&f, "snapshot-s1", 0xa1), "{what}");
    }
    // The controller resumes: the same request again succeeds, and the data is right.
    op.run(&f).await.unwrap_or_else(|e| panic!("{what}: retry failed: {e}"));
    op.check_done(&f);

    // Or the controller gives up: after reconciliation, nothing is left beyond what it
    // expects (volumes, snapshots and the layers they use).
    let f = fixture();
    base(&f).await;
    f.faults.arm(table, step, kind);
    let _ = op.run(&f).await;
    let exp = op.give_up(&f).await;
    f.backend.reconcile(&exp).await.unwrap();
    let left = listing(&f);
    assert!(
        left.iter().all(|n| ["volume-v", "snapshot-s1"].contains(&n.as_str())
            || n.starts_with("layer-")
            || n.starts_with("snapshot-s2")),
        "{what}: {left:?}"
    );
    assert!(!left.iter().any(|n| n.contains(".tmp") || n.contains(".part")), "{what}: {left:?}");
    assert!(reads(&f, "snapshot-s1", 0xa1), "{what}");
    assert!(f.backend.dir().join("volume-v").exists(), "{what}: the volume survived");
    f.backend.delete_volume(&vol("v", 1)).await.unwrap();
    f.backend.delete_snapshot(&snap("s1", "v"), &vol("v", 1)).await.unwrap();
    let r = f.backend.reconcile(&expected(&[], &[])).await.unwrap();
    assert!(listing(&f).is_empty(), "{what}: {:?} after {r:?}", listing(&f));
}
