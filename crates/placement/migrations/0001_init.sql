-- Placement: providers, their inventories, traits and aggregates; consumers and their
-- allocations. Provider and consumer rows carry generations for optimistic concurrency.
CREATE TABLE placement_resource_providers (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    generation BIGINT NOT NULL,
    parent_uuid TEXT NULL,
    root_uuid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX placement_rp_root ON placement_resource_providers (root_uuid);
CREATE INDEX placement_rp_parent ON placement_resource_providers (parent_uuid);

CREATE TABLE placement_custom_resource_classes (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE placement_custom_traits (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE placement_inventories (
    provider_uuid TEXT NOT NULL REFERENCES placement_resource_providers (uuid) ON DELETE CASCADE,
    resource_class TEXT NOT NULL,
    total BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    min_unit BIGINT NOT NULL,
    max_unit BIGINT NOT NULL,
    step_size BIGINT NOT NULL,
    allocation_ratio DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider_uuid, resource_class)
);
CREATE INDEX placement_inv_class ON placement_inventories (resource_class);

CREATE TABLE placement_provider_traits (
    provider_uuid TEXT NOT NULL REFERENCES placement_resource_providers (uuid) ON DELETE CASCADE,
    trait TEXT NOT NULL,
    PRIMARY KEY (provider_uuid, trait)
);
CREATE INDEX placement_rpt_trait ON placement_provider_traits (trait);

CREATE TABLE placement_provider_aggregates (
    provider_uuid TEXT NOT NULL REFERENCES placement_resource_providers (uuid) ON DELETE CASCADE,
    aggregate_uuid TEXT NOT NULL,
    PRIMARY KEY (provider_uuid, aggregate_uuid)
);
CREATE INDEX placement_rpa_agg ON placement_provider_aggregates (aggregate_uuid);

CREATE TABLE placement_consumers (
    uuid TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    consumer_type TEXT NULL,
    generation BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX placement_consumer_project ON placement_consumers (project_id, user_id);

CREATE TABLE placement_allocations (
    consumer_uuid TEXT NOT NULL,
    provider_uuid TEXT NOT NULL REFERENCES placement_resource_providers (uuid),
    resource_class TEXT NOT NULL,
    used BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (consumer_uuid, provider_uuid, resource_class)
);
CREATE INDEX placement_alloc_provider ON placement_allocations (provider_uuid, resource_class);
