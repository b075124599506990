//! Embedded, per-service schema migrations.
//!
//! Each service ships its migrations as SQL files compiled into the binary, numbered
//! from 1. A migration runs in its own transaction together with the row recording it,
//! so a crash mid-migration leaves the schema at the previous version, never between.

use sqlx::Executor;

use crate::{Db, DbError};

/// One schema change of one service.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position in the service's sequence, from 1.
    pub version: i64,
    /// Short name, recorded with the version.
    pub name: &'static str,
    /// Portable SQL; may hold several statements.
    pub sql: &'static str,
}

impl Db {
    /// Applies the migrations of `service` not yet applied, in order. Idempotent.
    pub async fn migrate(&self, service: &str, migrations: &[Migration]) -> Result<(), DbError> {
        self.write
            .execute(
                "CREATE TABLE IF NOT EXISTS stratus_migrations (
                    service TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    name TEXT NOT NULL,
                    applied_at TEXT NOT NULL,
                    PRIMARY KEY (service, version))",
            )
            .await?;
        let applied: Vec<(i64,)> = sqlx::query_as("SELECT version FROM stratus_migrations WHERE service = $1")
            .bind(service)
            .fetch_all(&self.write)
            .await?;
        let applied: std::collections::HashSet<i64> = applied.into_iter().map(|r| r.0).collect();
        for m in migrations {
            if applied.contains(&m.version) {
                continue;
            }
            let wrap = |source| DbError::Migration {
                service: service.to_string(),
                version: m.version,
                name: m.name.to_string(),
                source,
            };
            let mut tx = self.write.begin().await?;
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(wrap)?;
            sqlx::query("INSERT INTO stratus_migrations (service, version, name, applied_at) VALUES ($1, $2, $3, $4)")
                .bind(service)
                .bind(m.version)
                .bind(m.name)
                .bind(now_rfc3339())
                .execute(&mut *tx)
                .await
                .map_err(wrap)?;
            tx.commit().await.map_err(wrap)?;
            tracing::info!(service, version = m.version, name = m.name, "applied migration");
        }
        Ok(())
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
