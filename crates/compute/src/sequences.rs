//! Integer ids shown by the API (migration and aggregate ids), taken from a counter row
//! per table (`compute_id_sequences`) inside the inserting transaction.
//!
//! Why not `MAX(id) + 1`: on PostgreSQL two concurrent transactions read the same
//! maximum and the second insert dies on the primary key (a 500 to the client). Bumping
//! one row makes the second writer wait for the first and then fail with a
//! serialization error, which [`stratus_db::Db::transaction`] retries; on SQLite the
//! single writer serializes them anyway. Ids stay dense and increasing, as Nova's
//! autoincrement ones are.

use stratus_db::sqlx::Row;
use stratus_db::{Query, Tx};

use crate::error::Result;

/// The next id for `table`, reserved in `tx` (rolled back with it).
pub async fn next_id(tx: &mut Tx, table: &'static str) -> Result<i64> {
    let row = Query::new("UPDATE compute_id_sequences SET value = value + 1 WHERE name = ")
        .bind(table)
        .push(" RETURNING value")
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(r) = row {
        return Ok(r.try_get("value")?);
    }
    // Migration 0004 seeds every counter; this covers a row removed by hand.
    let mut q = Query::new("INSERT INTO compute_id_sequences (name, value) SELECT ");
    q.bind(table).push(", CAST(COALESCE(MAX(id), 0) + 1 AS BIGINT) FROM ").push(table);
    q.execute(&mut **tx).await?;
    let r = Query::new("SELECT value FROM compute_id_sequences WHERE name = ")
        .bind(table)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(r.map(|r| r.try_get("value")).transpose()?.unwrap_or(1))
}
