//! Backup rows.

use stratus_db::sqlx::any::AnyRow;
use stratus_db::{Arg, Query, Tx};
use stratus_volume_contract::BackupSpec;

use crate::error::{not_found, VolResult};
use crate::sql;
use crate::Vol;

/// A backup row.
#[derive(Debug, Clone, Default)]
pub struct Backup {
    /// Id.
    pub id: String,
    /// The volume backed up.
    pub volume_id: String,
    /// The snapshot backed up, if it was one.
    pub snapshot_id: Option<String>,
    /// Owner project.
    pub project_id: String,
    /// Creator.
    pub user_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Size of the volume, GiB.
    pub size: i64,
    /// Status.
    pub status: String,
    /// Why it failed.
    pub fail_reason: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Container.
    pub container: Option<String>,
    /// Store it lives in.
    pub service: Option<String>,
    /// `host@backend` whose agent wrote it.
    pub host: Option<String>,
    /// Objects written.
    pub object_count: i64,
    /// An increment of `parent_id`.
    pub is_incremental: bool,
    /// Parent backup.
    pub parent_id: Option<String>,
    /// When the data was taken.
    pub data_timestamp: Option<String>,
    /// Volume a restore writes into.
    pub restore_volume_id: Option<String>,
    /// The source volume's bootable flag and image metadata (JSON).
    pub source_info: Option<String>,
    /// Step of the operation running on it.
    pub task: Option<String>,
    /// Its arguments.
    pub task_args: Option<String>,
    /// Created.
    pub created_at: Option<String>,
    /// Updated.
    pub updated_at: Option<String>,
}

impl Backup {
    /// From a row.
    pub fn from_row(r: &AnyRow) -> Backup {
        Backup {
            id: sql::s(r, "id"),
            volume_id: sql::s(r, "volume_id"),
            snapshot_id: sql::os(r, "snapshot_id"),
            project_id: sql::s(r, "project_id"),
            user_id: sql::s(r, "user_id"),
            name: sql::os(r, "name"),
            description: sql::os(r, "description"),
            size: sql::i(r, "size"),
            status: sql::s(r, "status"),
            fail_reason: sql::os(r, "fail_reason"),
            availability_zone: sql::os(r, "availability_zone"),
            container: sql::os(r, "container"),
            service: sql::os(r, "service"),
            host: sql::os(r, "host"),
            object_count: sql::i(r, "object_count"),
            is_incremental: sql::b(r, "is_incremental"),
            parent_id: sql::os(r, "parent_id"),
            data_timestamp: sql::os(r, "data_timestamp"),
            restore_volume_id: sql::os(r, "restore_volume_id"),
            source_info: sql::os(r, "source_info"),
            task: sql::os(r, "task"),
            task_args: sql::os(r, "task_args"),
            created_at: sql::os(r, "created_at"),
            updated_at: sql::os(r, "updated_at"),
        }
    }

    /// The operation's arguments.
    pub fn args(&self) -> serde_json::Value {
        self.task_args.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(serde_json::Value::Null)
    }
}

/// The backup `id` (not deleted).
pub async fn get(vol: &Vol, id: &str) -> VolResult<Option<Backup>> {
    let mut q = Query::new("SELECT * FROM volume_backups WHERE deleted = 0 AND id = ");
    q.bind(id);
    Ok(q.fetch_optional(vol.db.reader()).await?.as_ref().map(Backup::from_row))
}

/// The backup as an agent needs it, with its chain of parents.
pub async fn spec(vol: &Vol, id: &str) -> VolResult<BackupSpec> {
    let b = get(vol, id).await?.ok_or_else(|| not_found("Backup", id))?;
    let parent = match &b.parent_id {
        Some(p) => Some(Box::new(Box::pin(spec(vol, p)).await?)),
        None => None,
    };
    Ok(BackupSpec {
        id: b.id,
        volume_id: b.volume_id,
        container: b.container.unwrap_or_else(|| "volumebackups".into()),
        size_gb: b.size.max(0) as u64,
        parent,
    })
}

/// Number of backups that are increments of `id`.
pub async fn dependents(vol: &Vol, id: &str) -> VolResult<i64> {
    let mut q = Query::new("SELECT COUNT(*) AS n FROM volume_backups WHERE deleted = 0 AND parent_id = ");
    q.bind(id);
    Ok(q.fetch_optional(vol.db.reader()).await?.map(|r| sql::i(&r, "n")).unwrap_or(0))
}

/// Sets a backup's status.
pub async fn set_status(tx: &mut Tx, id: &str, status: &str) -> VolResult<()> {
    set(tx, id, &[("status", Arg::from(status))]).await
}

/// Sets columns of backup `id`.
pub async fn set(tx: &mut Tx, id: &str, cols: &[(&str, Arg)]) -> VolResult<()> {
    let mut q = Query::new("UPDATE volume_backups SET updated_at = ");
    q.bind(stratus_core::time::now());
    for (c, v) in cols {
        q.push(&format!(", {c} = ")).bind(v.clone());
    }
    q.push(" WHERE id = ").bind(id);
    q.execute(&mut **tx).await?;
    Ok(())
}
