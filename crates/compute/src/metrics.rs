//! Compute's samples for `/metrics`: servers per host and state, and compute services
//! up or down, so an operator sees at a glance where guests are and whether hosts report.

use stratus_core::metrics::Sample;
use stratus_db::{Db, DbError};

/// Servers (not deleted) by host and `vm_state`.
pub async fn samples(db: &Db) -> Result<Vec<Sample>, DbError> {
    let rows: Vec<(Option<String>, String, i64)> = stratus_db::sqlx::query_as(
        "SELECT host, vm_state, CAST(COUNT(*) AS BIGINT) FROM compute_instances WHERE deleted = 0 \
         GROUP BY host, vm_state ORDER BY host, vm_state",
    )
    .fetch_all(db.reader())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(host, state, n)| {
            Sample::new(
                "stratus_compute_servers",
                "Servers that are not deleted, by host (empty: not placed yet) and vm_state.",
                vec![("host", host.unwrap_or_default()), ("vm_state", state)],
                n as f64,
            )
        })
        .collect())
}
