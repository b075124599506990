//! Volume rows: reading them, and the conditional status changes every action goes
//! through (`UPDATE ... WHERE status IN (...)`), so two requests racing for one volume
//! cannot both win and a request against a volume in the wrong state gets a clear 400.

use serde_json::Value;
use stratus_auth::RequestContext;
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::{Query, Tx};

use crate::error::{invalid_volume, not_found, VolResult};
use crate::sql;
use crate::Vol;

/// A volume row.
#[derive(Debug, Clone, Default)]
pub struct Volume {
    /// Id.
    pub id: String,
    /// Owner project.
    pub project_id: String,
    /// Creator.
    pub user_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Size in GiB.
    pub size: i64,
    /// GiB reserved by an extension in progress.
    pub reserved_size: i64,
    /// Cinder status.
    pub status: String,
    /// Status to go back to after a temporary one (backing-up, uploading...).
    pub previous_status: Option<String>,
    /// `detached`, `attaching`, `attached`, `detaching`.
    pub attach_status: String,
    /// Migration status.
    pub migration_status: Option<String>,
    /// Availability zone.
    pub availability_zone: String,
    /// Volume type.
    pub volume_type_id: String,
    /// `host@backend#pool` once scheduled.
    pub host: Option<String>,
    /// What the backend answered when it created the volume.
    pub provider_location: Option<String>,
    /// Source volume of a clone.
    pub source_volid: Option<String>,
    /// Source snapshot.
    pub snapshot_id: Option<String>,
    /// Source backup.
    pub backup_id: Option<String>,
    /// Source image.
    pub image_id: Option<String>,
    /// Bootable flag.
    pub bootable: bool,
    /// May attach to several servers.
    pub multiattach: bool,
    /// Read-only (admin metadata `readonly`; `None` until it is first set).
    pub readonly: Option<bool>,
    /// Counts against quota.
    pub use_quota: bool,
    /// Group.
    pub group_id: Option<String>,
    /// Step of the operation running on it.
    pub task: Option<String>,
    /// That operation's arguments (JSON).
    pub task_args: Option<String>,
    /// Created.
    pub created_at: Option<String>,
    /// Updated.
    pub updated_at: Option<String>,
    /// Became available.
    pub launched_at: Option<String>,
}

impl Volume {
    /// From a `volume_volumes` row.
    pub fn from_row(r: &AnyRow) -> Volume {
        Volume {
            id: sql::s(r, "id"),
            project_id: sql::s(r, "project_id"),
            user_id: sql::s(r, "user_id"),
            name: sql::os(r, "name"),
            description: sql::os(r, "description"),
            size: sql::i(r, "size"),
            reserved_size: sql::i(r, "reserved_size"),
            status: sql::s(r, "status"),
            previous_status: sql::os(r, "previous_status"),
            attach_status: sql::s(r, "attach_status"),
            migration_status: sql::os(r, "migration_status"),
            availability_zone: sql::s(r, "availability_zone"),
            volume_type_id: sql::s(r, "volume_type_id"),
            host: sql::os(r, "host"),
            provider_location: sql::os(r, "provider_location"),
            source_volid: sql::os(r, "source_volid"),
            snapshot_id: sql::os(r, "snapshot_id"),
            backup_id: sql::os(r, "backup_id"),
            image_id: sql::os(r, "image_id"),
            bootable: sql::b(r, "bootable"),
            multiattach: sql::b(r, "multiattach"),
            readonly: r.try_get::<Option<i64>, _>("readonly").ok().flatten().map(|v| v != 0),
            use_quota: sql::b(r, "use_quota"),
            group_id: sql::os(r, "group_id"),
            task: sql::os(r, "task"),
            task_args: sql::os(r, "task_args"),
            created_at: sql::os(r, "created_at"),
            updated_at: sql::os(r, "updated_at"),
            launched_at: sql::os(r, "launched_at"),
        }
    }

    /// `host@backend` (the agent's topic suffix), once scheduled.
    pub fn backend(&self) -> Option<String> {
        self.host.as_deref().map(|h| h.split('#').next().unwrap_or(h).to_string())
    }

    /// The pool part of the host.
    pub fn pool(&self) -> String {
        self.host.as_deref().and_then(|h| h.split_once('#')).map(|(_, p)| p.to_string()).unwrap_or_default()
    }

    /// The volume as its backend knows it.
    pub fn as_ref(&self) -> stratus_volume_contract::VolumeRef {
        stratus_volume_contract::VolumeRef {
            id: self.id.clone(),
            size_gb: self.size.max(0) as u64,
            pool: self.pool(),
            location: self.provider_location.clone(),
        }
    }

    /// The operation's arguments.
    pub fn args(&self) -> Value {
        self.task_args.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null)
    }
}

/// The volume `id` (not deleted), whoever owns it.
pub async fn get(vol: &Vol, id: &str) -> VolResult<Option<Volume>> {
    let mut q = Query::new("SELECT * FROM volume_volumes WHERE deleted = 0 AND id = ");
    q.bind(id);
    Ok(q.fetch_optional(vol.db.reader()).await?.as_ref().map(Volume::from_row))
}

/// The volume `id` in a transaction.
pub async fn get_tx(tx: &mut Tx, id: &str) -> VolResult<Option<Volume>> {
    let mut q = Query::new("SELECT * FROM volume_volumes WHERE deleted = 0 AND id = ");
    q.bind(id);
    Ok(q.fetch_optional(&mut **tx).await?.as_ref().map(Volume::from_row))
}

/// The volume `id` if `ctx` may see it (its project's, or any for admins); 404 otherwise.
pub async fn visible(vol: &Vol, ctx: &RequestContext, id: &str) -> VolResult<Volume> {
    match get(vol, id).await? {
        Some(v) if ctx.is_admin() || ctx.project_id.as_deref() == Some(v.project_id.as_str()) => Ok(v),
        _ => Err(not_found("Volume", id)),
    }
}

/// Moves volume `id` from one of `from` to `to` (and `task`, `previous_status` when
/// given); 400 naming the current status when it is in none of `from`.
pub async fn transition(
    tx: &mut Tx,
    id: &str,
    from: &[&str],
    to: &str,
    extra: &[(&str, stratus_db::Arg)],
) -> VolResult<Volume> {
    let mut q = Query::new("UPDATE volume_volumes SET status = ");
    q.bind(to).push(", updated_at = ").bind(stratus_core::time::now());
    for (col, val) in extra {
        q.push(&format!(", {col} = ")).bind(val.clone());
    }
    q.push(" WHERE deleted = 0 AND id = ").bind(id).push(" AND ");
    q.push_in("status", from.iter().map(|s| s.to_string()));
    if q.execute(&mut **tx).await? == 0 {
        let now = get_tx(tx, id).await?.ok_or_else(|| not_found("Volume", id))?;
        return Err(invalid_volume(format!(
            "Volume {id} status must be {}, but current status is: {}.",
            from.join(" or "),
            now.status
        )));
    }
    get_tx(tx, id).await?.ok_or_else(|| not_found("Volume", id))
}

/// Sets columns of volume `id` unconditionally.
pub async fn set(tx: &mut Tx, id: &str, cols: &[(&str, stratus_db::Arg)]) -> VolResult<()> {
    let mut q = Query::new("UPDATE volume_volumes SET updated_at = ");
    q.bind(stratus_core::time::now());
    for (col, val) in cols {
        q.push(&format!(", {col} = ")).bind(val.clone());
    }
    q.push(" WHERE id = ").bind(id);
    q.execute(&mut **tx).await?;
    Ok(())
}
