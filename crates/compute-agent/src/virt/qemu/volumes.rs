//! Volumes in a QEMU guest: how a volume's connection becomes a disk, on the command
//! line (a guest started with volumes attached) or hot-plugged over QMP (`blockdev-add`
//! + `device_add` virtio-blk; `device_del`, waiting for `DEVICE_DELETED`, + `blockdev-del`).
//!
//! Every volume disk has a stable device id (`vol-<volume id>`) and the volume id as its
//! serial, so it is unplugged the same way whether it was hot-plugged or on the command
//! line, and the guest finds it as `/dev/disk/by-id/virtio-<first 20 characters>`.
//!
//! A guest's QEMU runs as a user of its own that can open only its instance directory
//! (see `stratus_qemu::guest_user`): a volume's file is lent to that user (owner, mode
//! 0600) while it is attached and given back to root when it is detached or the guest
//! is destroyed. Backing layers of the volume's qcow2 chain are read-only to everyone
//! already (the volume backend freezes them 0444).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};
use stratus_compute_proto::spec::{VolumeConnection, VolumeSpec};
use stratus_qemu::cmdline::{DiskBus, DiskFormat, DiskSpec};
use stratus_qemu::guest_user::{self, GuestUser};
use stratus_qemu::QmpClient;

use super::failed;
use crate::virt::VirtError;

/// How long a detach waits for the guest to release the device before it fails (the
/// volume stays attached; the user may retry).
pub const DETACH_WAIT: Duration = Duration::from_secs(60);

/// The device id of a volume's disk.
pub fn device_id(volume_id: &str) -> String {
    format!("vol-{volume_id}")
}

/// The block node of a hot-plugged volume (QEMU node names are at most 31 characters).
pub fn node_name(volume_id: &str) -> String {
    let hex: String = volume_id.chars().filter(char::is_ascii_alphanumeric).take(28).collect();
    format!("vol{hex}")
}

/// The file and format of a volume this host opens itself, or why it cannot.
pub fn local_file(v: &VolumeSpec) -> Result<(&str, DiskFormat), VirtError> {
    match &v.connection {
        VolumeConnection::File { path, format } => {
            let f = match format.as_str() {
                "raw" => DiskFormat::Raw,
                "qcow2" => DiskFormat::Qcow2,
                other => return Err(failed(format!("volume {} has format {other:?}: use qcow2 or raw", v.volume_id))),
            };
            Ok((path.as_str(), f))
        }
        VolumeConnection::Nbd { .. } | VolumeConnection::Rbd { .. } => Err(VirtError::Unsupported {
            driver: "qemu".into(),
            op: format!("volume {} on another host (only volumes of this host's file backend attach yet)", v.volume_id),
        }),
    }
}

/// The disk of volume `v` on QEMU's command line.
pub fn disk_spec(v: &VolumeSpec, bus: DiskBus) -> Result<DiskSpec, VirtError> {
    let (path, format) = local_file(v)?;
    Ok(DiskSpec {
        format,
        bus,
        serial: Some(v.volume_id.clone()),
        read_only: v.read_only,
        id: Some(device_id(&v.volume_id)),
        ..DiskSpec::qcow2(path)
    })
}

/// Lends the file of volume `v` to the guest's user (none: QEMU runs as the agent).
pub fn lend(v: &VolumeSpec, user: Option<GuestUser>) -> Result<(), VirtError> {
    let Some(user) = user else { return Ok(()) };
    let (path, _) = local_file(v)?;
    let path = Path::new(path);
    if let Some(dir) = path.parent() {
        guest_user::allow_search(dir).map_err(failed)?;
    }
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| failed(format!("lending {} to the guest's user: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed(format!("restricting {}: {e}", path.display())))
}

/// Gives the file of volume `v` back to root (idempotent; a file gone is no error).
pub fn give_back(v: &VolumeSpec) {
    let Ok((path, _)) = local_file(v) else { return };
    let Ok(meta) = std::fs::metadata(path) else { return };
    if meta.uid() != 0 && guest_user::can_switch_users() {
        if let Err(e) = std::os::unix::fs::chown(path, Some(0), Some(0)) {
            tracing::warn!(path, error = %e, "could not give a detached volume back to root");
        }
    }
}

/// The user the guest in `root` runs as (the owner of its directory), if not root.
pub fn guest_of(root: &Path) -> Option<GuestUser> {
    let m = std::fs::metadata(root).ok()?;
    (m.uid() != 0 && guest_user::can_switch_users()).then_some(GuestUser { uid: m.uid(), gid: m.gid() })
}

/// Whether the guest has a device `id` (`qom-list /machine/peripheral`).
pub async fn has_device(q: &mut QmpClient, id: &str) -> Result<bool, VirtError> {
    let list = q.execute("qom-list", Some(json!({"path": "/machine/peripheral"}))).await.map_err(failed)?;
    Ok(list.as_array().is_some_and(|l| l.iter().any(|p| p["name"].as_str() == Some(id))))
}

/// Hot-plugs volume `v` (idempotent: a disk already there is left as is).
pub async fn plug(q: &mut QmpClient, v: &VolumeSpec) -> Result<(), VirtError> {
    let (path, format) = local_file(v)?;
    let (dev, node) = (device_id(&v.volume_id), node_name(&v.volume_id));
    if has_device(q, &dev).await? {
        return Ok(());
    }
    // A node left by an earlier attempt whose device_add failed.
    let _ = q.blockdev_del(&node).await;
    q.blockdev_add(json!({
        "driver": format.to_string(),
        "node-name": node,
        "read-only": v.read_only,
        "file": {"driver": "file", "filename": path},
    }))
    .await
    .map_err(|e| failed(format!("opening volume {}: {e}", v.volume_id)))?;
    let mut props = Map::new();
    props.insert("drive".into(), Value::String(node.clone()));
    props.insert("serial".into(), Value::String(v.volume_id.clone()));
    if let Err(e) = q.device_add("virtio-blk-pci", &dev, props).await {
        let _ = q.blockdev_del(&node).await;
        return Err(failed(format!("plugging volume {} into the guest: {e}", v.volume_id)));
    }
    Ok(())
}

/// Unplugs volume `v`: `device_del`, then waits for the guest to release it
/// (`DEVICE_DELETED`), then drops the block node of a hot-plugged disk (a disk from the
/// command line goes with its device). A disk that is not there is no error.
pub async fn unplug(q: &mut QmpClient, v: &VolumeSpec, within: Duration) -> Result<(), VirtError> {
    let (dev, node) = (device_id(&v.volume_id), node_name(&v.volume_id));
    if has_device(q, &dev).await? {
        q.device_del(&dev, within)
            .await
            .map_err(|e| failed(format!("the guest did not release volume {} within {within:?}: {e}", v.volume_id)))?;
    }
    let _ = q.blockdev_del(&node).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_disks_have_stable_ids_and_short_node_names() {
        let id = "2f3a6c1e-9b7d-4c55-8e21-0a1b2c3d4e5f";
        assert_eq!(device_id(id), "vol-2f3a6c1e-9b7d-4c55-8e21-0a1b2c3d4e5f");
        assert!(node_name(id).len() <= 31, "{}", node_name(id));
        let v = VolumeSpec {
            volume_id: id.into(),
            attachment_id: "a".into(),
            boot_index: None,
            read_only: true,
            connection: VolumeConnection::File { path: "/v/volume-x".into(), format: "qcow2".into() },
        };
        let d = disk_spec(&v, DiskBus::Virtio).unwrap();
        assert_eq!(
            (d.serial.as_deref(), d.id.as_deref(), d.read_only),
            (Some(id), Some("vol-2f3a6c1e-9b7d-4c55-8e21-0a1b2c3d4e5f"), true)
        );
        let nbd =
            VolumeSpec { connection: VolumeConnection::Nbd { host: "h".into(), port: 1, export: "e".into() }, ..v };
        assert!(matches!(disk_spec(&nbd, DiskBus::Virtio), Err(VirtError::Unsupported { .. })));
    }
}
