-- Every Neutron resource is one row: the columns visibility and lookups need, plus the
-- resource's API body as JSON. Allocation state that must never be handed out twice lives
-- in its own tables whose keys make double allocation impossible.
CREATE TABLE network_resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    parent_id TEXT,
    ref_id TEXT,
    shared BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX network_resources_project ON network_resources (kind, project_id);
CREATE INDEX network_resources_parent ON network_resources (kind, parent_id);
CREATE INDEX network_resources_ref ON network_resources (kind, ref_id);

CREATE TABLE network_ip_allocations (
    subnet_id TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    network_id TEXT NOT NULL,
    port_id TEXT NOT NULL,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE INDEX network_ip_allocations_port ON network_ip_allocations (port_id);

-- Free address ranges per subnet (bounds as 32-digit hex so text order is numeric order).
CREATE TABLE network_ipam_free (
    subnet_id TEXT NOT NULL,
    first_ip TEXT NOT NULL,
    last_ip TEXT NOT NULL,
    PRIMARY KEY (subnet_id, first_ip)
);

CREATE TABLE network_mac_addresses (
    network_id TEXT NOT NULL,
    mac_address TEXT NOT NULL,
    port_id TEXT NOT NULL,
    PRIMARY KEY (network_id, mac_address)
);

CREATE TABLE network_segment_allocations (
    network_type TEXT NOT NULL,
    physical_network TEXT NOT NULL,
    segmentation_id BIGINT NOT NULL,
    network_id TEXT NOT NULL,
    PRIMARY KEY (network_type, physical_network, segmentation_id)
);

CREATE TABLE network_default_security_groups (
    project_id TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL
);

CREATE TABLE network_quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);

CREATE TABLE network_agents (
    id TEXT PRIMARY KEY,
    agent_type TEXT NOT NULL,
    host TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (agent_type, host)
);
