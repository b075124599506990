//! `createBackup`: a snapshot of the server kept as a backup (`image_type: backup`,
//! `backup_type`), and the rotation that follows it: once the snapshot succeeds, the
//! oldest backups of the same server and type beyond `rotation` are deleted.
//!
//! The rotation waits in `compute_backup_rotations` (keyed by the action's request id)
//! until the conductor reports the snapshot's end, so a failed or interrupted backup
//! never deletes an older one.

use axum::http::Method;
use serde_json::Value;
use stratus_core::internal::InternalUri;
use stratus_core::RequestContext;
use stratus_db::sqlx::Row;
use stratus_db::{Db, Query};

use crate::clients::ImageApi;
use crate::error::{ComputeError, Result};

/// The checked arguments of `createBackup`.
pub struct BackupArgs {
    /// Image name.
    pub name: String,
    /// `daily`, `weekly`, ... (free text, as Nova).
    pub backup_type: String,
    /// How many backups of this type to keep.
    pub rotation: i64,
}

/// Checks `createBackup`'s arguments as Nova's schema does.
pub fn parse(args: &Value) -> Result<BackupArgs> {
    let name = args["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty() && n.chars().count() <= 255)
        .ok_or_else(|| ComputeError::BadRequest("createBackup requires a name of 1 to 255 characters".into()))?;
    let backup_type = args["backup_type"]
        .as_str()
        .filter(|t| !t.is_empty() && t.chars().count() <= 255)
        .ok_or_else(|| ComputeError::BadRequest("createBackup requires a backup_type (such as daily)".into()))?;
    let rotation = match &args["rotation"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|r| *r >= 0)
    .ok_or_else(|| ComputeError::BadRequest("createBackup requires a rotation: an integer >= 0".into()))?;
    Ok(BackupArgs { name: name.to_string(), backup_type: backup_type.to_string(), rotation })
}

/// Records the rotation to run when the snapshot of request `rid` ends.
pub async fn remember(db: &Db, rid: &str, uuid: &str, image_id: &str, a: &BackupArgs) -> Result<()> {
    let mut q = Query::new(
        "INSERT INTO compute_backup_rotations (request_id, instance_uuid, image_id, backup_type, rotation, created_at) VALUES (",
    );
    q.bind(rid)
        .push(", ")
        .bind(uuid)
        .push(", ")
        .bind(image_id)
        .push(", ")
        .bind(&a.backup_type)
        .push(", ")
        .bind(a.rotation)
        .push(", ")
        .bind(stratus_core::time::now())
        .push(")");
    db.transaction(|tx| {
        let q = q.clone();
        Box::pin(async move { q.execute(&mut **tx).await })
    })
    .await?;
    Ok(())
}

/// Forgets the rotation of `rid` (its snapshot did not start).
pub async fn forget(db: &Db, rid: &str) -> Result<()> {
    let mut q = Query::new("DELETE FROM compute_backup_rotations WHERE request_id = ");
    q.bind(rid);
    db.transaction(|tx| {
        let q = q.clone();
        Box::pin(async move { q.execute(&mut **tx).await })
    })
    .await?;
    Ok(())
}

/// The end of the snapshot of request `rid`: when it was a backup and `succeeded`, deletes
/// the oldest backups of its server and type beyond its rotation. Returns the images
/// deleted.
pub async fn finish(db: &Db, images: &dyn ImageApi, rid: &str, succeeded: bool) -> Result<Vec<String>> {
    let row = Query::new("SELECT * FROM compute_backup_rotations WHERE request_id = ")
        .bind(rid)
        .fetch_optional(db.reader())
        .await?;
    let Some(row) = row else { return Ok(vec![]) };
    let mut deleted = Vec::new();
    if succeeded {
        let uuid: String = row.try_get("instance_uuid")?;
        let backup_type: String = row.try_get("backup_type")?;
        let rotation: i64 = row.try_get("rotation")?;
        let admin = RequestContext::internal_admin();
        let uri = InternalUri::new("/image/v2/images")
            .query("instance_uuid", &uuid)
            .query("image_type", "backup")
            .query("backup_type", &backup_type)
            .query("sort_key", "created_at")
            .query("sort_dir", "desc")
            .query("limit", "1000");
        let (status, body) = images
            .request(&admin, Method::GET, uri.as_str(), None, &[])
            .await
            .map_err(|e| ComputeError::Unavailable(e.0))?;
        if !status.is_success() {
            return Err(ComputeError::Unavailable(format!("the image service answered {status} listing backups")));
        }
        let list = body["images"].as_array().cloned().unwrap_or_default();
        for old in list.iter().skip(usize::try_from(rotation).unwrap_or(0)) {
            if let Some(id) = old["id"].as_str() {
                images.delete(id).await.map_err(|e| ComputeError::Unavailable(e.0))?;
                deleted.push(id.to_string());
            }
        }
        tracing::info!(server = %uuid, backup_type, rotation, deleted = ?deleted, "backups rotated");
    }
    forget(db, rid).await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_checked() {
        let a = parse(&json!({"name": "b", "backup_type": "daily", "rotation": "2"})).unwrap();
        assert_eq!((a.name.as_str(), a.backup_type.as_str(), a.rotation), ("b", "daily", 2));
        for bad in [
            json!({"name": "b", "backup_type": "daily"}),
            json!({"name": "b", "backup_type": "daily", "rotation": -1}),
            json!({"name": "b", "rotation": 1}),
            json!({"backup_type": "daily", "rotation": 1}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
