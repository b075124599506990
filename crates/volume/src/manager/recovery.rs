//! Crash recovery: when the controller starts, every operation a crash left in flight
//! (a row with a `task`) is resumed from its recorded step.
//!
//! The rows are listed before the API serves anything, so recovery never races a
//! request made after the start. Steps are idempotent, so resuming a step that had
//! already done its work (the crash came before its success was recorded) does it
//! once; agents answer a re-sent request for data they already made with that data.
//! Resumed operations wait for agents that are registering again instead of failing.

use stratus_db::Query;

use super::{backup_ops, snapshot_ops, volume_ops};
use crate::backups::store::Backup;
use crate::snapshots::store::Snapshot;
use crate::volumes::store::Volume;
use crate::S;

/// What recovery found and resumed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// `table/step` of every operation resumed, with the resource id.
    pub resumed: Vec<(String, String)>,
    /// Tasks nobody knows how to resume (a newer version's), cleared.
    pub unknown: Vec<(String, String)>,
}

/// Lists interrupted operations now and resumes them in the background.
pub async fn spawn(vol: S) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let q = Query::new("SELECT * FROM volume_volumes WHERE deleted = 0 AND task IS NOT NULL");
    for r in q.fetch_all(vol.db.reader()).await? {
        let v = Volume::from_row(&r);
        let task = v.task.clone().unwrap_or_default();
        let (table, step) = task.split_once('/').unwrap_or((task.as_str(), ""));
        match table {
            "create_volume" => volume_ops::resume_create(&vol, &v, step),
            "delete_volume" => volume_ops::resume_delete(&vol, &v, step),
            "extend_volume" => volume_ops::resume_extend(&vol, &v, step),
            "revert_volume" => volume_ops::resume_revert(&vol, &v, step),
            "upload_volume" => volume_ops::resume_upload(&vol, &v, step),
            _ => {
                volume_ops::clear(&vol, &v.id).await?;
                report.unknown.push((task.clone(), v.id.clone()));
                continue;
            }
        }
        report.resumed.push((task.clone(), v.id.clone()));
    }
    let q = Query::new("SELECT * FROM volume_snapshots WHERE deleted = 0 AND task IS NOT NULL");
    for r in q.fetch_all(vol.db.reader()).await? {
        let s = Snapshot::from_row(&r);
        let task = s.task.clone().unwrap_or_default();
        let (table, step) = task.split_once('/').unwrap_or((task.as_str(), ""));
        match table {
            "create_snapshot" => snapshot_ops::resume_create(&vol, &s, step),
            "delete_snapshot" => snapshot_ops::resume_delete(&vol, &s, step),
            _ => {
                report.unknown.push((task.clone(), s.id.clone()));
                continue;
            }
        }
        report.resumed.push((task.clone(), s.id.clone()));
    }
    let q = Query::new("SELECT * FROM volume_backups WHERE deleted = 0 AND task IS NOT NULL");
    for r in q.fetch_all(vol.db.reader()).await? {
        let b = Backup::from_row(&r);
        let task = b.task.clone().unwrap_or_default();
        let (table, step) = task.split_once('/').unwrap_or((task.as_str(), ""));
        match table {
            "create_backup" => backup_ops::resume_create(&vol, &b, step),
            "restore_backup" => backup_ops::resume_restore(&vol, &b, step),
            "delete_backup" => backup_ops::resume_delete(&vol, &b, step),
            _ => {
                report.unknown.push((task.clone(), b.id.clone()));
                continue;
            }
        }
        report.resumed.push((task.clone(), b.id.clone()));
    }
    if !report.resumed.is_empty() || !report.unknown.is_empty() {
        tracing::info!(?report, "volume recovery: resuming interrupted operations");
    }
    Ok(report)
}
