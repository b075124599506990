//! The database layer on both backends: migrations, transactions, contention, and
//! uniqueness detection. The PostgreSQL half needs `STRATUS_TEST_POSTGRES_URL`
//! (`scripts/test.sh` starts a local server and sets it); without it the test fails
//! rather than passing silently.

use std::sync::Arc;

use sqlx::Row;
use stratus_db::{Db, DbError, Migration, Query};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "counters",
        sql: "CREATE TABLE t_counter (id TEXT PRIMARY KEY, n BIGINT NOT NULL, flag BIGINT NOT NULL, ratio DOUBLE PRECISION NOT NULL);
              CREATE TABLE t_unique (name TEXT NOT NULL UNIQUE);",
    },
    Migration { version: 2, name: "seed", sql: "INSERT INTO t_counter (id, n, flag, ratio) VALUES ('c', 0, 1, 1.5);" },
    Migration {
        version: 3,
        name: "nullable",
        sql: "CREATE TABLE t_nullable (id TEXT PRIMARY KEY, n BIGINT, flag BIGINT, ratio DOUBLE PRECISION, note TEXT);",
    },
];

async fn exercise(db: Db) {
    db.migrate("dbtest", MIGRATIONS).await.unwrap();
    // Idempotent: a second run applies nothing and does not fail on the seed row.
    db.migrate("dbtest", MIGRATIONS).await.unwrap();

    let row = sqlx::query("SELECT n, flag, ratio FROM t_counter WHERE id = $1")
        .bind("c")
        .fetch_one(db.reader())
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("n"), 0);
    assert!(stratus_db::flag(&row, "flag"));
    let total: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(n) + 5 AS BIGINT) FROM t_counter").fetch_one(db.reader()).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(row.get::<f64, _>("ratio"), 1.5);

    // `None` of every kind binds as a NULL the column's type accepts (PostgreSQL refuses a
    // NULL sent as text for a BIGINT or DOUBLE PRECISION column).
    let mut q = Query::new("INSERT INTO t_nullable (id, n, flag, ratio, note) VALUES (");
    q.bind("x").push(", ").bind(None::<i64>).push(", ").bind(None::<bool>).push(", ").bind(None::<f64>);
    q.push(", ").bind(None::<&str>).push(")");
    q.execute(db.reader()).await.expect("typed NULLs are accepted");
    let row =
        sqlx::query("SELECT n, flag, ratio, note FROM t_nullable WHERE id = 'x'").fetch_one(db.reader()).await.unwrap();
    assert_eq!(row.get::<Option<i64>, _>("n"), None);
    assert_eq!(row.get::<Option<i64>, _>("flag"), None);
    assert_eq!(row.get::<Option<f64>, _>("ratio"), None);
    assert_eq!(row.get::<Option<String>, _>("note"), None);

    // Rollback on error leaves nothing behind.
    let r: Result<(), DbError> = db
        .transaction(|tx| {
            Box::pin(async move {
                Query::new("UPDATE t_counter SET n = 100 WHERE id = 'c'").execute(&mut **tx).await?;
                Err(DbError::UnsupportedUrl("forced".into()))
            })
        })
        .await;
    assert!(r.is_err());
    let n: i64 = sqlx::query_scalar("SELECT n FROM t_counter WHERE id = 'c'").fetch_one(db.reader()).await.unwrap();
    assert_eq!(n, 0, "rolled back");

    // 32 concurrent read-modify-write transactions: none lost.
    let db = Arc::new(db);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.transaction(|tx| {
                Box::pin(async move {
                    let mut q = Query::new("SELECT n FROM t_counter WHERE id = ");
                    q.bind("c");
                    let row = q.fetch_optional(&mut **tx).await?.unwrap();
                    let n: i64 = row.get(0);
                    let mut u = Query::new("UPDATE t_counter SET n = ");
                    u.bind(n + 1).push(" WHERE id = ").bind("c").push(" AND n = ").bind(n);
                    let changed = u.execute(&mut **tx).await?;
                    assert_eq!(changed, 1, "transaction isolation let another writer in");
                    Ok::<_, DbError>(())
                })
            })
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT n FROM t_counter WHERE id = 'c'").fetch_one(db.reader()).await.unwrap();
    assert_eq!(n, 32);

    // Uniqueness violations are recognised as such.
    Query::new("INSERT INTO t_unique (name) VALUES ('a')").execute(db.reader()).await.unwrap();
    let e = Query::new("INSERT INTO t_unique (name) VALUES ('a')").execute(db.reader()).await.unwrap_err();
    assert!(e.is_unique_violation(), "{e}");

    // Builder: IN lists and NULL binds.
    let mut q = Query::new("SELECT COUNT(*) FROM t_unique WHERE ");
    q.push_in("name", ["a", "b"]);
    let c: i64 = q.fetch_optional(db.reader()).await.unwrap().unwrap().get(0);
    assert_eq!(c, 1);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(db.backend(), stratus_db::Backend::Sqlite);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(db.reader()).await.unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(db.reader()).await.unwrap();
    assert_eq!(fk, 1);
    exercise(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backend() {
    let base = std::env::var("STRATUS_TEST_POSTGRES_URL")
        .expect("STRATUS_TEST_POSTGRES_URL is not set: run the suite through scripts/test.sh, which starts PostgreSQL");
    let db = Db::connect(&base).await.expect("PostgreSQL must be reachable");
    // A fresh schema per run so reruns start clean.
    let schema = format!("t{}", std::process::id());
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
        .execute(db.reader())
        .await
        .unwrap();
    db.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(db.backend(), stratus_db::Backend::Postgres);
    exercise(db).await;
}
