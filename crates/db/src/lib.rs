//! The database layer every Stratus service shares.
//!
//! Stratus runs on an embedded SQLite file in the all-in-one cloud and on PostgreSQL when
//! scaled out. Both go through [`sqlx::Any`] so a service writes its SQL once, in the
//! portable subset both engines accept: `TEXT` ids and RFC 3339 timestamps, `BIGINT`
//! integers, `DOUBLE PRECISION`, and `$1`-style placeholders (SQLite maps `$N` to
//! parameter N, so the same text runs on both).
//!
//! Two limits of the `Any` driver shape that subset. It cannot decode SQLite's `BOOLEAN`
//! columns, so flags are `BIGINT` 0/1 ([`Arg::Bool`] binds 0/1, [`flag`] reads them). And
//! it cannot decode PostgreSQL's `NUMERIC`, which `SUM()`/`AVG()` of integers return, so
//! aggregates are written `CAST(SUM(x) AS BIGINT)`.
//!
//! SQLite allows one writer at a time. Rather than letting concurrent writers collide on
//! lock upgrades (`SQLITE_BUSY`, which `busy_timeout` cannot always resolve), all write
//! transactions go through a dedicated single-connection pool, while reads use a pool of
//! readers that WAL lets run beside the writer. On PostgreSQL both are the same pool and
//! conflicts surface as serialization failures, which [`Db::transaction`] retries.

mod migrate;
mod query;

pub use migrate::Migration;
pub use query::{Arg, Query};
pub use sqlx;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions, Executor, Transaction};

/// A database transaction on either backend.
pub type Tx = Transaction<'static, Any>;

/// Reads a `BIGINT` 0/1 flag column as a bool.
pub fn flag(row: &sqlx::any::AnyRow, column: &str) -> bool {
    use sqlx::Row;
    row.try_get::<i64, _>(column).map(|v| v != 0).unwrap_or(false)
}

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file (all-in-one default).
    Sqlite,
    /// PostgreSQL server (scale-out).
    Postgres,
}

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names an engine Stratus does not support.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// A migration failed to apply; the service cannot start on a half-migrated schema.
    #[error("migration {service}/{version} ({name}) failed: {source}")]
    Migration {
        /// Service owning the migration.
        service: String,
        /// Migration number.
        version: i64,
        /// Migration name.
        name: String,
        /// Underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// Any other SQL error.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

impl DbError {
    /// True when the error is a uniqueness violation (a row with that key exists).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sql(e) => is_unique_violation(e),
            _ => false,
        }
    }
}

/// True when `e` is a uniqueness violation on either backend.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.kind(), sqlx::error::ErrorKind::UniqueViolation),
        _ => false,
    }
}

/// True when `e` is transient contention worth retrying: SQLite busy/locked, or a
/// PostgreSQL serialization failure or deadlock.
pub fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite: 5 BUSY, 6 LOCKED and their extended codes (517, 261, 262...).
            // PostgreSQL: 40001 serialization_failure, 40P01 deadlock_detected.
            matches!(code.as_str(), "5" | "6" | "517" | "261" | "262" | "40001" | "40P01")
                || d.message().contains("database is locked")
        }
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

/// Shared handle on the database: a reader pool and a writer pool (the same pool on
/// PostgreSQL). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    /// The SQLite WAL file (see [`Db::bound_wal`]).
    wal: Option<Arc<PathBuf>>,
}

/// A boxed future borrowed from a transaction, as [`Db::transaction`] closures return.
pub type TxFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

impl Db {
    /// Connects to `url` (`sqlite://path` creates the file; `postgres://...`).
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl(url.to_string()));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
        }
        let opts = AnyConnectOptions::from_str(&url)?
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1))
            .log_statements(tracing::log::LevelFilter::Trace);
        match backend {
            Backend::Sqlite => {
                let write = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlite_pragmas(conn).await?;
                            // Checkpoints run beside the writer (see `checkpointer`).
                            conn.execute("PRAGMA wal_autocheckpoint = 0").await.map(|_| ())
                        })
                    })
                    .connect_with(opts.clone())
                    .await?;
                // The writer created the file and switched it to WAL; readers may open now.
                let read = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }))
                    .connect_with(opts)
                    .await?;
                tokio::spawn(checkpointer(read.clone(), write.clone()));
                let file = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let file = file.split('?').next().unwrap_or_default();
                let wal =
                    (!file.is_empty() && file != ":memory:").then(|| Arc::new(PathBuf::from(format!("{file}-wal"))));
                Ok(Db { read, write, backend, wal })
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await?;
                Ok(Db { read: pool.clone(), write: pool, backend, wal: None })
            }
        }
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The writer pool (on SQLite one connection; on PostgreSQL the same pool as
    /// [`Db::reader`]). For gauges such as `/metrics`; writes go through [`Db::begin`].
    pub fn writer_pool(&self) -> &AnyPool {
        &self.write
    }

    /// Begins a write transaction: on SQLite the single writer (so transactions are
    /// serial), on PostgreSQL at SERIALIZABLE isolation (so both backends give the same
    /// guarantee; conflicts surface as retryable serialization failures).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        let mut tx = self.write.begin().await?;
        if self.backend == Backend::Postgres {
            tx.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await?;
        }
        Ok(tx)
    }

    /// Runs `f` in a write transaction, committing on `Ok` and rolling back on `Err`.
    /// Transient contention (SQLite busy, PostgreSQL serialization failure/deadlock) is
    /// retried with jittered backoff up to 30 times; `f` must therefore be safe to run again.
    pub async fn transaction<T, E, F>(&self, mut f: F) -> Result<T, E>
    where
        F: for<'c> FnMut(&'c mut Tx) -> TxFuture<'c, T, E> + Send,
        E: From<DbError> + Retryable + Send,
        T: Send,
    {
        let mut attempt = 0u32;
        loop {
            let mut tx = self.begin().await.map_err(E::from)?;
            let result = f(&mut tx).await;
            match result {
                Ok(v) => match tx.commit().await {
                    Ok(()) => {
                        self.bound_wal().await;
                        return Ok(v);
                    }
                    Err(e) if is_retryable(&e) && attempt < MAX_RETRIES => {}
                    Err(e) => return Err(E::from(DbError::Sql(e))),
                },
                Err(e) => {
                    let _ = tx.rollback().await;
                    if !e.retryable() || attempt >= MAX_RETRIES {
                        return Err(e);
                    }
                }
            }
            attempt += 1;
            let backoff = jittered_backoff(attempt);
            tracing::debug!(attempt, ?backoff, "retrying transaction after contention");
            tokio::time::sleep(backoff).await;
        }
    }

    /// The WAL bound's backstop, on the write path itself: after a commit, when the WAL
    /// file has grown past [`WAL_SIZE_LIMIT_BYTES`], the log is truncated on the writer
    /// connection before the next write. The checkpointer normally does this first; but it
    /// is a task that looks now and then, and a CPU-starved process (2 cores, a build
    /// beside it) let writers outrun it to 38.8 MiB. A `stat` per commit costs a
    /// microsecond or two; the truncation, once per 16 MiB of writes, waits for the
    /// current readers with the writer held, so the file cannot grow meanwhile.
    async fn bound_wal(&self) {
        let Some(wal) = &self.wal else { return };
        let over = || std::fs::metadata(wal.as_path()).is_ok_and(|m| m.len() > WAL_SIZE_LIMIT_BYTES as u64);
        if !over() {
            return;
        }
        let Ok(mut conn) = self.write.acquire().await else { return };
        // Another commit may have truncated it while this one waited for the writer.
        if over() {
            if let Err(e) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await {
                tracing::debug!(error = %e, "WAL truncate after a commit failed; the checkpointer retries");
            }
        }
    }

    /// Closes both pools, waiting for connections to be returned (clean shutdown:
    /// SQLite checkpoints its WAL when the last connection closes).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

const MAX_RETRIES: u32 = 30;

/// Exponential backoff capped at ~100 ms, with jitter so conflicting writers retrying
/// together do not collide again in lockstep.
fn jittered_backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(6);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let jitter = u64::from(nanos) % (base * 1000 + 1);
    Duration::from_micros(base * 500 + jitter)
}

/// Errors that may say "try the transaction again".
pub trait Retryable {
    /// True when the failure was transient contention.
    fn retryable(&self) -> bool;
}

impl Retryable for DbError {
    fn retryable(&self) -> bool {
        match self {
            DbError::Sql(e) => is_retryable(e),
            _ => false,
        }
    }
}

/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL size (pages) above which the checkpointer forces the log to start over and
/// truncates the file (~16 MiB with 4 KiB pages).
const WAL_RESTART_FRAMES: i64 = 4_096;

/// Size the WAL file is cut back to whenever the log starts over (SQLite's
/// `journal_size_limit`): without it the file keeps its high-water size for ever — 70 MB
/// beside a 2.9 MB database after half an hour of API fuzzing.
pub const WAL_SIZE_LIMIT_BYTES: i64 = 16 * 1024 * 1024;

/// Checkpoints the SQLite WAL from a reader connection, off the writer's path.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages, on
/// the single writer connection, and with `synchronous = NORMAL` it is also where the
/// data is fsynced: every writer queued behind that commit waited for the copy and the
/// fsync (measured: 20–35 ms stalls every few hundred transactions, a third of the
/// placement claim benchmark's time). A PASSIVE checkpoint from another connection
/// blocks neither the writer nor readers. It also bounds what a power loss can take:
/// with NORMAL, commits since the last checkpoint's fsync — now at most ~0.5 s of them,
/// instead of "whatever 1,000 pages took to accumulate", which is unbounded on an idle
/// cloud. A process crash loses nothing either way (the WAL is in the OS's page cache).
async fn checkpointer(pool: AnyPool, writer: AnyPool) {
    let mut pause = CHECKPOINT_EVERY;
    let mut last = (std::time::Instant::now(), 0i64);
    let mut rate = 0.0;
    loop {
        tokio::time::sleep(pause).await;
        if pool.is_closed() || writer.is_closed() {
            return;
        }
        // Columns: busy, frames in the WAL, frames checkpointed.
        let frames = match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await
        {
            Ok((_, log, _)) => log,
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, "WAL checkpoint failed; retrying later");
                pause = CHECKPOINT_EVERY;
                continue;
            }
        };
        // The WAL restarts from its beginning only when no reader still uses it; under
        // a steady stream of overlapping reads that never happens by itself and the
        // file grows without bound (measured: 545 MB during 10,000 boots). A TRUNCATE
        // checkpoint waits for the current readers (milliseconds) while holding off
        // writers, then starts the WAL over and gives the file's space back. It runs on
        // the writer connection itself: from another connection it had to win SQLite's
        // write lock by polling, and a busy writer, which frees that lock only for
        // microseconds between transactions, could keep it waiting while the WAL grew
        // past twice its bound (35 MiB in CI). Taking the writer from its pool puts the
        // truncation in the writers' queue: the next transaction waits for it.
        if frames > WAL_RESTART_FRAMES {
            let truncated = match writer.acquire().await {
                Ok(mut conn) => conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = truncated {
                if writer.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, frames, "WAL truncate checkpoint failed; retrying soon");
            }
        }
        (pause, rate) = next_checkpoint_pause(last, frames, rate);
        last = (std::time::Instant::now(), frames);
    }
}

/// When to look at the WAL next: at the usual interval, or sooner when the log grows
/// fast enough to cross [`WAL_RESTART_FRAMES`] before then. The bound then holds at any
/// write rate (a fixed interval let a fast writer add 8+ MiB between two looks), while an
/// idle or lightly written database is looked at only twice a second.
///
/// The rate used is the higher of the one just measured and a decaying memory of the
/// earlier ones (frames per second): right after a truncation the writers are still
/// resuming and the measured rate understates what they will do in the next interval.
fn next_checkpoint_pause(last: (std::time::Instant, i64), frames: i64, earlier_rate: f64) -> (Duration, f64) {
    let (at, before) = last;
    // After a restart the count starts again from zero.
    let grown = if frames >= before { frames - before } else { frames };
    let elapsed = at.elapsed().as_secs_f64().max(0.001);
    let rate = (grown as f64 / elapsed).max(earlier_rate * 0.8);
    if rate < 1.0 {
        return (CHECKPOINT_EVERY, rate);
    }
    let headroom = (WAL_RESTART_FRAMES - frames.min(WAL_RESTART_FRAMES)) as f64;
    // Look again when a third of the headroom is used at that rate.
    let secs = headroom / rate / 3.0;
    (Duration::from_secs_f64(secs).clamp(MIN_CHECKPOINT_PAUSE, CHECKPOINT_EVERY), rate)
}

/// Shortest pause between two looks at the WAL under heavy writing.
const MIN_CHECKPOINT_PAUSE: Duration = Duration::from_millis(20);

async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    for pragma in [
        "PRAGMA journal_mode = WAL",
        "PRAGMA foreign_keys = ON",
        "PRAGMA busy_timeout = 10000",
        "PRAGMA synchronous = NORMAL",
    ] {
        conn.execute(pragma).await?;
    }
    let limit = format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}");
    for pragma in [limit.as_str()] {
        conn.execute(pragma).await?;
    }
    Ok(())
}
