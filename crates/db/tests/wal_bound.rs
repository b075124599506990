//! The SQLite WAL stays bounded under sustained writes with readers running beside them.
//!
//! A cloud writes all the time (heartbeats, boots, fuzzing clients) while its APIs read.
//! Before the bound, the WAL file kept its high-water size (70 MB beside a 2.9 MB database
//! after half an hour of fuzzing). This test writes as fast as 8 writers can for
//! `STRATUS_WAL_SOAK_SECS` (default 20; the minutes-long run sets it higher),
//! with 4 readers looping and one reader holding a read transaction for a second now and
//! then, samples the `-wal` file's size every 50 ms, and asserts it never exceeds the
//! truncation threshold plus what one checkpoint interval can add, and that it is back
//! under the size limit once the writing stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_db::{Db, DbError, Migration, Query};

const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "soak", sql: "CREATE TABLE soak (id BIGINT NOT NULL, payload TEXT NOT NULL);" }];

fn wal_len(db_path: &std::path::Path) -> u64 {
    std::fs::metadata(db_path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_under_sustained_writes_and_reads() {
    let secs: u64 = std::env::var("STRATUS_WAL_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soak.db");
    let db = Db::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    db.migrate("soak", MIGRATIONS).await.unwrap();
    let db = Arc::new(db);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let payload = "x".repeat(2000);
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let (db, stop, written, payload) = (db.clone(), stop.clone(), written.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let p = payload.clone();
                let id = (w as i64) << 40 | i;
                db.transaction(|tx| {
                    let p = p.clone();
                    Box::pin(async move {
                        for k in 0..4 {
                            let mut q = Query::new("INSERT INTO soak (id, payload) VALUES (");
                            q.bind(id * 4 + k).push(", ").bind(p.clone()).push(")");
                            q.execute(&mut **tx).await?;
                        }
                        // Keep the table small: the point is WAL traffic, not growth.
                        let mut q = Query::new("DELETE FROM soak WHERE id < ");
                        q.bind(id * 4 - 400);
                        q.execute(&mut **tx).await?;
                        Ok::<_, DbError>(())
                    })
                })
                .await
                .unwrap();
                written.fetch_add(4, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..4 {
        let (db, stop) = (db.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM soak")
                    .fetch_one(db.reader())
                    .await
                    .unwrap();
            }
        }));
    }
    {
        // A reader that holds a snapshot for a second, every few seconds.
        let (db, stop) = (db.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut tx = db.reader().begin().await.unwrap();
                let _: i64 =
                    sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM soak").fetch_one(&mut *tx).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx.rollback().await.unwrap();
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }));
    }
    let start = Instant::now();
    let mut peak = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        peak = peak.max(wal_len(&path));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let rows = written.load(Ordering::Relaxed);
    // Idle: the checkpointer's next rounds bring the file back under the limit.
    let mut after = wal_len(&path);
    for _ in 0..100 {
        if after <= stratus_db::WAL_SIZE_LIMIT_BYTES as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = wal_len(&path);
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "{secs} s: {rows} rows written ({:.0} MiB of payload), WAL peak {:.1} MiB, {:.1} MiB after",
        mib(rows * 2000),
        mib(peak),
        mib(after)
    );
    assert!(
        rows * 2000 > 2 * stratus_db::WAL_SIZE_LIMIT_BYTES as u64,
        "the load must exceed the bound many times over"
    );
    assert!(peak <= 2 * stratus_db::WAL_SIZE_LIMIT_BYTES as u64, "WAL peaked at {:.1} MiB", mib(peak));
    assert!(after <= stratus_db::WAL_SIZE_LIMIT_BYTES as u64, "WAL {:.1} MiB once idle", mib(after));
    db.close().await;
}
