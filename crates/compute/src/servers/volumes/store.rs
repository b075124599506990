//! Block device mapping rows (`compute_block_device_mappings`): the volumes of a server.
//!
//! A row is written when a volume is reserved for a server (`attaching`), carries the
//! connection info once the volume service handed it out, becomes `attached` when the
//! guest has the disk, `detaching` while it is taken away, and is deleted when the
//! volume is detached. Only rows with a connection are part of the guest's definition
//! ([`volume_specs`]), so a restart re-attaches exactly those.

use std::collections::BTreeMap;

use stratus_compute_proto::spec::{VolumeConnection, VolumeSpec};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::{Arg, Db, Query};

use crate::error::Result;

/// Row statuses.
pub mod status {
    /// Asked for at create (boot from volume); made by the build.
    pub const PENDING: &str = "pending";
    /// Reserved in the volume service; being connected and plugged.
    pub const ATTACHING: &str = "attaching";
    /// In the guest.
    pub const ATTACHED: &str = "attached";
    /// Being unplugged.
    pub const DETACHING: &str = "detaching";
}

/// One mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Bdm {
    /// The mapping's own id (`bdm_uuid`, 2.89).
    pub uuid: String,
    /// Server.
    pub instance_uuid: String,
    /// Volume.
    pub volume_id: String,
    /// The volume service's attachment.
    pub attachment_id: Option<String>,
    /// `volume` (attached, or booted from), `image`/`blank` (a volume compute created).
    pub source_type: String,
    /// `Some(0)`: the root disk.
    pub boot_index: Option<i64>,
    /// `/dev/vdb`...
    pub device_name: Option<String>,
    /// Device tag (2.49+).
    pub tag: Option<String>,
    /// Delete the volume with the server.
    pub delete_on_termination: bool,
    /// See [`status`].
    pub status: String,
    /// The connection info (JSON), once connected.
    pub connection_info: Option<String>,
    /// Created.
    pub created_at: String,
}

impl Bdm {
    fn from_row(r: &AnyRow) -> Result<Bdm> {
        Ok(Bdm {
            uuid: r.try_get("uuid")?,
            instance_uuid: r.try_get("instance_uuid")?,
            volume_id: r.try_get("volume_id")?,
            attachment_id: r.try_get("attachment_id")?,
            source_type: r.try_get("source_type")?,
            boot_index: r.try_get("boot_index")?,
            device_name: r.try_get("device_name")?,
            tag: r.try_get("tag")?,
            delete_on_termination: stratus_db::flag(r, "delete_on_termination"),
            status: r.try_get("status")?,
            connection_info: r.try_get("connection_info")?,
            created_at: r.try_get("created_at")?,
        })
    }

    /// What the agent needs to attach this volume (None: not connected yet).
    pub fn spec(&self) -> Option<VolumeSpec> {
        let info: serde_json::Value = serde_json::from_str(self.connection_info.as_deref()?).ok()?;
        let connection: VolumeConnection = serde_json::from_value(info.clone()).ok()?;
        Some(VolumeSpec {
            volume_id: self.volume_id.clone(),
            attachment_id: self.attachment_id.clone().unwrap_or_default(),
            boot_index: self.boot_index,
            read_only: info["data"]["access_mode"].as_str() == Some("ro"),
            connection,
        })
    }

    /// Whether this is the server's root disk.
    pub fn is_root(&self) -> bool {
        self.boot_index == Some(0)
    }
}

/// Inserts `b`.
pub async fn insert(db: &Db, b: &Bdm) -> Result<()> {
    let mut q = Query::new(
        "INSERT INTO compute_block_device_mappings (uuid, instance_uuid, volume_id, attachment_id, source_type, \
         boot_index, device_name, tag, delete_on_termination, status, connection_info, created_at, updated_at) VALUES (",
    );
    let vals: Vec<Arg> = vec![
        b.uuid.clone().into(),
        b.instance_uuid.clone().into(),
        b.volume_id.clone().into(),
        b.attachment_id.clone().into(),
        b.source_type.clone().into(),
        b.boot_index.into(),
        b.device_name.clone().into(),
        b.tag.clone().into(),
        b.delete_on_termination.into(),
        b.status.clone().into(),
        b.connection_info.clone().into(),
        b.created_at.clone().into(),
        b.created_at.clone().into(),
    ];
    for (n, v) in vals.into_iter().enumerate() {
        if n > 0 {
            q.push(", ");
        }
        q.bind(v);
    }
    q.push(")");
    let mut tx = db.begin().await?;
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets columns of mapping `uuid`; false when it is gone.
pub async fn set(db: &Db, uuid: &str, cols: &[(&str, Arg)]) -> Result<bool> {
    let mut q = Query::new("UPDATE compute_block_device_mappings SET updated_at = ");
    q.bind(stratus_core::time::now());
    for (c, v) in cols {
        q.push(&format!(", {c} = ")).bind(v.clone());
    }
    q.push(" WHERE uuid = ").bind(uuid);
    let mut tx = db.begin().await?;
    let n = q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// Moves mapping `uuid` from status `from` to `to`; false when it was not in `from`.
pub async fn transition(db: &Db, uuid: &str, from: &str, to: &str) -> Result<bool> {
    let mut q = Query::new("UPDATE compute_block_device_mappings SET status = ");
    q.bind(to).push_bind(", updated_at = ", stratus_core::time::now());
    q.push_bind(" WHERE uuid = ", uuid).push_bind(" AND status = ", from);
    let mut tx = db.begin().await?;
    let n = q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// The image and size a mapping's volume is to be made from (boot from volume).
pub async fn source_of(db: &Db, uuid: &str) -> Result<(Option<String>, Option<u64>)> {
    let r = Query::new("SELECT image_id, volume_size FROM compute_block_device_mappings WHERE uuid = ")
        .bind(uuid)
        .fetch_optional(db.reader())
        .await?;
    let Some(r) = r else { return Ok((None, None)) };
    let size: Option<i64> = r.try_get("volume_size")?;
    Ok((r.try_get("image_id")?, size.map(|s| s.max(0) as u64)))
}

/// Deletes mapping `uuid` (idempotent).
pub async fn delete(db: &Db, uuid: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    Query::new("DELETE FROM compute_block_device_mappings WHERE uuid = ").bind(uuid).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The mappings of server `instance`, oldest first.
pub async fn of_instance(db: &Db, instance: &str) -> Result<Vec<Bdm>> {
    let rows = Query::new("SELECT * FROM compute_block_device_mappings WHERE instance_uuid = ")
        .bind(instance)
        .push(" ORDER BY created_at, uuid")
        .fetch_all(db.reader())
        .await?;
    rows.iter().map(Bdm::from_row).collect()
}

/// The mapping of volume `volume` on server `instance`.
pub async fn find(db: &Db, instance: &str, volume: &str) -> Result<Option<Bdm>> {
    Ok(of_instance(db, instance).await?.into_iter().find(|b| b.volume_id == volume))
}

/// Mappings a crash may have left mid-way (`attaching` or `detaching`).
pub async fn unfinished(db: &Db) -> Result<Vec<Bdm>> {
    let mut q = Query::new("SELECT * FROM compute_block_device_mappings WHERE status IN (");
    q.bind(status::ATTACHING).push(", ").bind(status::DETACHING).push(") ORDER BY created_at");
    q.fetch_all(db.reader()).await?.iter().map(Bdm::from_row).collect()
}

/// The mappings of each of `instances`, oldest first.
pub async fn of_instances(db: &Db, instances: &[String]) -> Result<BTreeMap<String, Vec<Bdm>>> {
    let mut out: BTreeMap<String, Vec<Bdm>> = BTreeMap::new();
    if instances.is_empty() {
        return Ok(out);
    }
    let mut q = Query::new("SELECT * FROM compute_block_device_mappings WHERE ");
    q.push_in("instance_uuid", instances.to_vec()).push(" ORDER BY created_at, uuid");
    for r in q.fetch_all(db.reader()).await? {
        let b = Bdm::from_row(&r)?;
        out.entry(b.instance_uuid.clone()).or_default().push(b);
    }
    Ok(out)
}

/// The next free `/dev/vdX` on a server whose mappings are `bdms`, after the disks the
/// flavor gives it (root `vda`, then ephemeral and swap), as Nova's libvirt driver names them.
pub fn next_device(bdms: &[Bdm], local_disks: usize) -> String {
    let used: Vec<&str> = bdms.iter().filter_map(|b| b.device_name.as_deref()).collect();
    for c in b'a'..=b'z' {
        let name = format!("/dev/vd{}", c as char);
        if usize::from(c - b'a') < local_disks || used.contains(&name.as_str()) {
            continue;
        }
        return name;
    }
    format!("/dev/vd{}", used.len() + local_disks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_after_the_local_disks_and_the_volumes_attached() {
        let b = |d: &str| Bdm {
            uuid: String::new(),
            instance_uuid: String::new(),
            volume_id: String::new(),
            attachment_id: None,
            source_type: "volume".into(),
            boot_index: None,
            device_name: Some(d.into()),
            tag: None,
            delete_on_termination: false,
            status: status::ATTACHED.into(),
            connection_info: None,
            created_at: String::new(),
        };
        assert_eq!(next_device(&[], 1), "/dev/vdb");
        assert_eq!(next_device(&[], 2), "/dev/vdc");
        assert_eq!(next_device(&[b("/dev/vdb")], 1), "/dev/vdc");
        assert_eq!(next_device(&[b("/dev/vdc")], 1), "/dev/vdb", "a detached slot is used again");
    }
}
