//! Background clean-up: the orphan sweeper and the object expirer.
//!
//! *Orphans.* Bytes are written before the row that references them, so a crash (or a
//! failed database write) between the two leaves a blob no row references. The sweeper
//! lists the backend's blobs older than a cut-off and deletes those no row references.
//! On start-up the cut-off for the `fs` backend is the start time (no other process
//! writes that directory, so nothing older can be in flight); afterwards, and always on
//! `s3` (other controllers may share the bucket), it is `sweep_grace_secs` ago, longer
//! than any upload takes between its last byte and its row.
//!
//! *Expiry.* Objects past `X-Delete-At` are invisible at once (every query filters
//! them); the expirer removes their rows and releases their bytes every
//! `expirer_interval_secs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::db;
use crate::Svc;

/// What one sweep did (logged; returned to tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Blobs looked at.
    pub examined: usize,
    /// Unreferenced blobs deleted.
    pub deleted: usize,
    /// Deletions that failed (retried next time).
    pub failed: usize,
}

/// Deletes blobs older than `before` that no row references.
pub async fn sweep_orphans(svc: &Svc, before: SystemTime) -> anyhow::Result<SweepReport> {
    let keys = svc.backend.list_before(before).await?;
    let mut rep = SweepReport { examined: keys.len(), ..Default::default() };
    for chunk in keys.chunks(500) {
        let used = db::referenced_among(&svc.platform.db, chunk).await?;
        for k in chunk.iter().filter(|k| !used.contains(*k)) {
            match svc.backend.delete(k).await {
                Ok(()) => rep.deleted += 1,
                Err(e) => {
                    rep.failed += 1;
                    tracing::warn!(blob = %k, error = %e, "could not delete an orphaned blob");
                }
            }
        }
    }
    if rep.deleted + rep.failed > 0 {
        tracing::info!(examined = rep.examined, deleted = rep.deleted, failed = rep.failed, "orphan sweep");
    }
    Ok(rep)
}

/// Removes expired rows and releases their bytes; returns how many.
pub async fn reap_expired(svc: &Svc) -> anyhow::Result<usize> {
    let mut n = 0;
    loop {
        let batch = db::expired(&svc.platform.db, 500).await?;
        if batch.is_empty() {
            break;
        }
        let len = batch.len();
        for o in batch {
            if let Some(blob) = db::reap(&svc.platform.db, &o).await? {
                svc.release_blobs(vec![blob]);
            }
            n += 1;
        }
        if len < 500 {
            break;
        }
    }
    if n > 0 {
        tracing::info!(reaped = n, "expired objects removed");
    }
    Ok(n)
}

/// Runs the periodic sweeps until the service is dropped.
pub fn spawn(svc: &Arc<Svc>) {
    let weak = Arc::downgrade(svc);
    let expire_every = Duration::from_secs(svc.cfg.expirer_interval_secs.max(1));
    let sweep_every = Duration::from_secs(svc.cfg.sweep_interval_secs.max(1));
    tokio::spawn(async move {
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(expire_every).await;
            let Some(svc) = weak.upgrade() else { return };
            if let Err(e) = reap_expired(&svc).await {
                tracing::warn!(error = %e, "object expirer pass failed");
            }
            if last_sweep.elapsed() >= sweep_every {
                last_sweep = tokio::time::Instant::now();
                let before = SystemTime::now() - Duration::from_secs(svc.cfg.sweep_grace_secs);
                if let Err(e) = sweep_orphans(&svc, before).await {
                    tracing::warn!(error = %e, "orphan sweep failed");
                }
            }
        }
    });
}
