//! Snapshot rows.

use stratus_db::sqlx::any::AnyRow;
use stratus_db::{Arg, Query, Tx};

use crate::error::VolResult;
use crate::sql;
use crate::Vol;

/// A snapshot row.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Id.
    pub id: String,
    /// Its volume.
    pub volume_id: String,
    /// Owner project.
    pub project_id: String,
    /// Creator.
    pub user_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Size of the volume when taken, GiB.
    pub volume_size: i64,
    /// Status.
    pub status: String,
    /// Progress (`0%`..`100%`).
    pub progress: Option<String>,
    /// Where the backend keeps it.
    pub provider_location: Option<String>,
    /// Counts against quota.
    pub use_quota: bool,
    /// Group snapshot.
    pub group_snapshot_id: Option<String>,
    /// Step of the operation running on it.
    pub task: Option<String>,
    /// Its arguments.
    pub task_args: Option<String>,
    /// Created.
    pub created_at: Option<String>,
    /// Updated.
    pub updated_at: Option<String>,
}

impl Snapshot {
    /// From a row.
    pub fn from_row(r: &AnyRow) -> Snapshot {
        Snapshot {
            id: sql::s(r, "id"),
            volume_id: sql::s(r, "volume_id"),
            project_id: sql::s(r, "project_id"),
            user_id: sql::s(r, "user_id"),
            name: sql::os(r, "name"),
            description: sql::os(r, "description"),
            volume_size: sql::i(r, "volume_size"),
            status: sql::s(r, "status"),
            progress: sql::os(r, "progress"),
            provider_location: sql::os(r, "provider_location"),
            use_quota: sql::b(r, "use_quota"),
            group_snapshot_id: sql::os(r, "group_snapshot_id"),
            task: sql::os(r, "task"),
            task_args: sql::os(r, "task_args"),
            created_at: sql::os(r, "created_at"),
            updated_at: sql::os(r, "updated_at"),
        }
    }

    /// The snapshot as its backend knows it.
    pub fn as_ref(&self) -> stratus_volume_contract::SnapshotRef {
        stratus_volume_contract::SnapshotRef {
            id: self.id.clone(),
            volume_id: self.volume_id.clone(),
            size_gb: self.volume_size.max(0) as u64,
            location: self.provider_location.clone(),
        }
    }

    /// The operation's arguments.
    pub fn args(&self) -> serde_json::Value {
        self.task_args.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(serde_json::Value::Null)
    }
}

/// The snapshot `id` (not deleted).
pub async fn get(vol: &Vol, id: &str) -> VolResult<Option<Snapshot>> {
    let mut q = Query::new("SELECT * FROM volume_snapshots WHERE deleted = 0 AND id = ");
    q.bind(id);
    Ok(q.fetch_optional(vol.db.reader()).await?.as_ref().map(Snapshot::from_row))
}

/// The snapshots of volume `volume_id` (not deleted), oldest first.
pub async fn of_volume(vol: &Vol, volume_id: &str) -> VolResult<Vec<Snapshot>> {
    let mut q = Query::new("SELECT * FROM volume_snapshots WHERE deleted = 0 AND volume_id = ");
    q.bind(volume_id).push(" ORDER BY created_at, id");
    Ok(q.fetch_all(vol.db.reader()).await?.iter().map(Snapshot::from_row).collect())
}

/// Sets a snapshot's status.
pub async fn set_status(tx: &mut Tx, id: &str, status: &str) -> VolResult<()> {
    set(tx, id, &[("status", Arg::from(status))]).await
}

/// Sets columns of snapshot `id`.
pub async fn set(tx: &mut Tx, id: &str, cols: &[(&str, Arg)]) -> VolResult<()> {
    let mut q = Query::new("UPDATE volume_snapshots SET updated_at = ");
    q.bind(stratus_core::time::now());
    for (c, v) in cols {
        q.push(&format!(", {c} = ")).bind(v.clone());
    }
    q.push(" WHERE id = ").bind(id);
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Marks snapshot `id` deleted.
pub async fn mark_deleted(vol: &Vol, id: &str) -> VolResult<()> {
    let now = stratus_core::time::now();
    let mut tx = vol.db.begin().await?;
    set(
        &mut tx,
        id,
        &[
            ("status", Arg::from("deleted")),
            ("deleted", Arg::from(true)),
            ("deleted_at", Arg::from(now)),
            ("task", Arg::Null),
            ("task_args", Arg::Null),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
