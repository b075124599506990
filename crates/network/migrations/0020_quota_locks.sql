-- One row per (project, resource) that quota checks upsert before counting: on
-- PostgreSQL the row lock serializes concurrent creates of the same resource in the same
-- project until commit, so the count each of them sees includes the others' rows and a
-- quota cannot be overshot (SQLite's single writer serializes them anyway).
CREATE TABLE network_quota_locks (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    serial BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);
