-- Block storage: one table per Cinder resource. Deleted rows stay with `deleted = 1`
-- (Cinder's soft delete: ids are never reused and `changes-since` style listings can
-- see them); every query filters on it. `task` on a volume, snapshot or backup is the
-- step of the multi-step operation running on it (see src/manager), the only state
-- crash recovery needs.

CREATE TABLE volume_services (
    id BIGINT NOT NULL,
    host TEXT NOT NULL,
    service_binary TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    frozen BIGINT NOT NULL DEFAULT 0,
    backend_state TEXT,
    report TEXT,
    uuid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (host, service_binary)
);
CREATE UNIQUE INDEX volume_services_id ON volume_services (id);

CREATE TABLE volume_types (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    is_public BIGINT NOT NULL DEFAULT 1,
    qos_specs_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    deleted BIGINT NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE UNIQUE INDEX volume_types_name ON volume_types (name) WHERE deleted = 0;

CREATE TABLE volume_type_extra_specs (
    type_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (type_id, key)
);

CREATE TABLE volume_type_projects (
    type_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    PRIMARY KEY (type_id, project_id)
);

CREATE TABLE volume_default_types (
    project_id TEXT PRIMARY KEY,
    type_id TEXT NOT NULL
);

CREATE TABLE volume_qos_specs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    consumer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE UNIQUE INDEX volume_qos_specs_name ON volume_qos_specs (name);

CREATE TABLE volume_qos_spec_values (
    spec_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (spec_id, key)
);

CREATE TABLE volume_volumes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    size BIGINT NOT NULL,
    reserved_size BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    previous_status TEXT,
    attach_status TEXT NOT NULL DEFAULT 'detached',
    migration_status TEXT,
    availability_zone TEXT NOT NULL,
    volume_type_id TEXT NOT NULL,
    host TEXT,
    provider_location TEXT,
    source_volid TEXT,
    snapshot_id TEXT,
    backup_id TEXT,
    image_id TEXT,
    bootable BIGINT NOT NULL DEFAULT 0,
    multiattach BIGINT NOT NULL DEFAULT 0,
    readonly BIGINT,
    use_quota BIGINT NOT NULL DEFAULT 1,
    group_id TEXT,
    task TEXT,
    task_args TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    launched_at TEXT,
    terminated_at TEXT,
    deleted BIGINT NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE INDEX volume_volumes_project ON volume_volumes (project_id, deleted);
CREATE INDEX volume_volumes_host ON volume_volumes (host, deleted);
CREATE INDEX volume_volumes_task ON volume_volumes (task);

CREATE TABLE volume_metadata (
    volume_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (volume_id, key)
);

CREATE TABLE volume_image_metadata (
    volume_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (volume_id, key)
);

CREATE TABLE volume_attachments (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    instance_uuid TEXT,
    attached_host TEXT,
    mountpoint TEXT,
    attach_status TEXT NOT NULL,
    attach_mode TEXT NOT NULL DEFAULT 'rw',
    connector TEXT,
    connection_info TEXT,
    attach_time TEXT,
    detach_time TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    deleted BIGINT NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE INDEX volume_attachments_volume ON volume_attachments (volume_id, deleted);
CREATE INDEX volume_attachments_instance ON volume_attachments (instance_uuid, deleted);

CREATE TABLE volume_snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    volume_size BIGINT NOT NULL,
    status TEXT NOT NULL,
    progress TEXT,
    provider_location TEXT,
    use_quota BIGINT NOT NULL DEFAULT 1,
    group_snapshot_id TEXT,
    task TEXT,
    task_args TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    deleted BIGINT NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE INDEX volume_snapshots_volume ON volume_snapshots (volume_id, deleted);
CREATE INDEX volume_snapshots_project ON volume_snapshots (project_id, deleted);

CREATE TABLE volume_snapshot_metadata (
    snapshot_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, key)
);

CREATE TABLE volume_backups (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    snapshot_id TEXT,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT,
    description TEXT,
    size BIGINT NOT NULL,
    status TEXT NOT NULL,
    fail_reason TEXT,
    availability_zone TEXT,
    container TEXT,
    service TEXT,
    host TEXT,
    object_count BIGINT NOT NULL DEFAULT 0,
    is_incremental BIGINT NOT NULL DEFAULT 0,
    parent_id TEXT,
    data_timestamp TEXT,
    restore_volume_id TEXT,
    temp_snapshot_id TEXT,
    source_info TEXT,
    task TEXT,
    task_args TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    deleted BIGINT NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE INDEX volume_backups_project ON volume_backups (project_id, deleted);
CREATE INDEX volume_backups_volume ON volume_backups (volume_id, deleted);

CREATE TABLE volume_backup_metadata (
    backup_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (backup_id, key)
);

CREATE TABLE volume_transfers (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    name TEXT,
    salt TEXT NOT NULL,
    crypt_hash TEXT NOT NULL,
    source_project_id TEXT NOT NULL,
    destination_project_id TEXT,
    accepted BIGINT NOT NULL DEFAULT 0,
    no_snapshots BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    deleted BIGINT NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE INDEX volume_transfers_volume ON volume_transfers (volume_id, deleted);

CREATE TABLE volume_quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);

CREATE TABLE volume_quota_classes (
    class_name TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (class_name, resource)
);

CREATE TABLE volume_messages (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    request_id TEXT,
    resource_type TEXT,
    resource_uuid TEXT,
    event_id TEXT NOT NULL,
    message_level TEXT NOT NULL,
    user_message TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT
);
CREATE INDEX volume_messages_project ON volume_messages (project_id);
