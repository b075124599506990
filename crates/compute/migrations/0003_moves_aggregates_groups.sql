-- Migration records (resize, cold and live migration, evacuation). `uuid` is also the
-- placement consumer that holds the source allocation while the move runs.
CREATE TABLE IF NOT EXISTS compute_migrations (
    id BIGINT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    instance_uuid TEXT NOT NULL,
    migration_type TEXT NOT NULL,
    status TEXT NOT NULL,
    source_compute TEXT,
    source_node TEXT,
    dest_compute TEXT,
    dest_node TEXT,
    dest_host TEXT,
    old_flavor_id TEXT,
    new_flavor_id TEXT,
    old_flavor_json TEXT,
    new_flavor_json TEXT,
    old_vm_state TEXT,
    requested_host TEXT,
    block_migration BIGINT NOT NULL DEFAULT 0,
    request_id TEXT,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS compute_migrations_instance ON compute_migrations (instance_uuid, created_at);
-- Shelving: the snapshot that holds the disk while the server has no host.
ALTER TABLE compute_instances ADD COLUMN shelved_image_id TEXT;
ALTER TABLE compute_instances ADD COLUMN shelved_at TEXT;
CREATE TABLE IF NOT EXISTS compute_aggregates (
    id BIGINT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS compute_aggregate_hosts (
    aggregate_id BIGINT NOT NULL REFERENCES compute_aggregates(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, host)
);
CREATE TABLE IF NOT EXISTS compute_aggregate_metadata (
    aggregate_id BIGINT NOT NULL REFERENCES compute_aggregates(id) ON DELETE CASCADE,
    meta_key TEXT NOT NULL,
    meta_value TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, meta_key)
);
CREATE TABLE IF NOT EXISTS compute_server_groups (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    rules_json TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS compute_server_group_members (
    group_uuid TEXT NOT NULL REFERENCES compute_server_groups(uuid) ON DELETE CASCADE,
    instance_uuid TEXT NOT NULL,
    PRIMARY KEY (group_uuid, instance_uuid)
);
