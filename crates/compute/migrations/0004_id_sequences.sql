-- Integer ids the API shows (migrations, aggregates) come from one counter row per
-- table, bumped inside the transaction that inserts the row. `MAX(id) + 1` let two
-- concurrent inserts on PostgreSQL pick the same id (a unique violation, a 500); two
-- updates of one counter row conflict as a serialization failure instead, which the
-- transaction helper retries.
CREATE TABLE IF NOT EXISTS compute_id_sequences (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO compute_id_sequences (name, value) SELECT 'compute_migrations', COALESCE(MAX(id), 0) FROM compute_migrations;
INSERT INTO compute_id_sequences (name, value) SELECT 'compute_aggregates', COALESCE(MAX(id), 0) FROM compute_aggregates;
