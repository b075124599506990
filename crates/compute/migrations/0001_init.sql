CREATE TABLE IF NOT EXISTS compute_flavors (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    vcpus BIGINT NOT NULL,
    ram BIGINT NOT NULL,
    disk BIGINT NOT NULL,
    ephemeral BIGINT NOT NULL DEFAULT 0,
    swap BIGINT NOT NULL DEFAULT 0,
    rxtx_factor DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    is_public BIGINT NOT NULL DEFAULT 1,
    disabled BIGINT NOT NULL DEFAULT 0,
    description TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS compute_flavor_extra_specs (
    flavor_id TEXT NOT NULL REFERENCES compute_flavors(id) ON DELETE CASCADE,
    spec_key TEXT NOT NULL,
    spec_value TEXT NOT NULL,
    PRIMARY KEY (flavor_id, spec_key)
);
CREATE TABLE IF NOT EXISTS compute_flavor_projects (
    flavor_id TEXT NOT NULL REFERENCES compute_flavors(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    PRIMARY KEY (flavor_id, project_id)
);
CREATE TABLE IF NOT EXISTS compute_keypairs (
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE TABLE IF NOT EXISTS compute_instances (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    hostname TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    flavor_id TEXT NOT NULL,
    flavor_json TEXT NOT NULL,
    image_ref TEXT NOT NULL,
    image_json TEXT,
    key_name TEXT,
    key_data TEXT,
    user_data TEXT,
    availability_zone TEXT,
    requested_az TEXT,
    host TEXT,
    node TEXT,
    vm_state TEXT NOT NULL,
    task_state TEXT,
    power_state BIGINT NOT NULL DEFAULT 0,
    locked BIGINT NOT NULL DEFAULT 0,
    locked_by TEXT,
    locked_reason TEXT,
    config_drive BIGINT NOT NULL DEFAULT 0,
    access_ipv4 TEXT,
    access_ipv6 TEXT,
    progress BIGINT NOT NULL DEFAULT 0,
    reservation_id TEXT NOT NULL,
    launch_index BIGINT NOT NULL DEFAULT 0,
    security_groups_json TEXT NOT NULL DEFAULT '[]',
    requested_networks_json TEXT NOT NULL DEFAULT '"auto"',
    ports_json TEXT NOT NULL DEFAULT '[]',
    scheduler_hints_json TEXT NOT NULL DEFAULT '{}',
    retry_hosts_json TEXT NOT NULL DEFAULT '[]',
    fault_json TEXT,
    admin_pass TEXT,
    launched_at TEXT,
    terminated_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    deleted_at TEXT
);
CREATE INDEX IF NOT EXISTS compute_instances_project ON compute_instances (project_id, deleted, created_at);
CREATE INDEX IF NOT EXISTS compute_instances_host ON compute_instances (host, deleted);
CREATE TABLE IF NOT EXISTS compute_instance_metadata (
    instance_uuid TEXT NOT NULL REFERENCES compute_instances(uuid) ON DELETE CASCADE,
    meta_key TEXT NOT NULL,
    meta_value TEXT NOT NULL,
    PRIMARY KEY (instance_uuid, meta_key)
);
CREATE TABLE IF NOT EXISTS compute_instance_tags (
    instance_uuid TEXT NOT NULL REFERENCES compute_instances(uuid) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (instance_uuid, tag)
);
CREATE TABLE IF NOT EXISTS compute_instance_actions (
    id TEXT PRIMARY KEY,
    instance_uuid TEXT NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT NOT NULL,
    user_id TEXT,
    project_id TEXT,
    start_time TEXT NOT NULL,
    finish_time TEXT,
    message TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS compute_instance_actions_instance ON compute_instance_actions (instance_uuid, start_time);
CREATE TABLE IF NOT EXISTS compute_instance_action_events (
    id TEXT PRIMARY KEY,
    action_id TEXT NOT NULL REFERENCES compute_instance_actions(id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    start_time TEXT NOT NULL,
    finish_time TEXT,
    result TEXT,
    traceback TEXT,
    host TEXT,
    details TEXT
);
CREATE TABLE IF NOT EXISTS compute_services (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    binary_name TEXT NOT NULL,
    topic TEXT NOT NULL,
    availability_zone TEXT,
    disabled BIGINT NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    forced_down BIGINT NOT NULL DEFAULT 0,
    last_seen_up TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (host, binary_name)
);
CREATE TABLE IF NOT EXISTS compute_nodes (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    host TEXT NOT NULL UNIQUE,
    hypervisor_hostname TEXT NOT NULL,
    hypervisor_type TEXT NOT NULL,
    hypervisor_version BIGINT NOT NULL,
    host_ip TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    local_gb BIGINT NOT NULL,
    cpu_info TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS compute_quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);
CREATE TABLE IF NOT EXISTS compute_quota_classes (
    class_name TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (class_name, resource)
);
