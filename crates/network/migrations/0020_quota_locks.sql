-- One row per (project, resource) that quota checks upsert before counting. Write
-- transactions are SERIALIZABLE on PostgreSQL, which already stops racing creates from
-- overshooting a quota; the row lock keeps that true under READ COMMITTED too.
CREATE TABLE network_quota_locks (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    serial BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);
