-- Tasks (image imports and legacy import tasks) and metadata definitions (metadefs).

CREATE TABLE image_tasks (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    owner TEXT NOT NULL,
    image_id TEXT,
    request_id TEXT,
    user_id TEXT,
    input TEXT NOT NULL,
    result TEXT,
    message TEXT NOT NULL DEFAULT '',
    expires_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX image_tasks_image ON image_tasks (image_id);
CREATE INDEX image_tasks_owner ON image_tasks (owner, created_at);

-- A namespace groups definitions; its name is its id in the API.
CREATE TABLE image_metadef_namespaces (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL UNIQUE,
    display_name TEXT,
    description TEXT,
    visibility TEXT NOT NULL,
    protected BIGINT NOT NULL DEFAULT 0,
    owner TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Resource types are known to the whole cloud (OS::Glance::Image...); associations
-- say which namespaces apply to which.
CREATE TABLE image_metadef_resource_types (
    name TEXT PRIMARY KEY,
    protected BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE image_metadef_associations (
    namespace_id TEXT NOT NULL REFERENCES image_metadef_namespaces (id) ON DELETE CASCADE,
    resource_type TEXT NOT NULL REFERENCES image_metadef_resource_types (name),
    prefix TEXT,
    properties_target TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (namespace_id, resource_type)
);

-- Properties, objects and tags belong to one namespace; their names are unique in it.
-- A property's and an object's definition is kept as the JSON the client gave.
CREATE TABLE image_metadef_properties (
    namespace_id TEXT NOT NULL REFERENCES image_metadef_namespaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    json_schema TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (namespace_id, name)
);

CREATE TABLE image_metadef_objects (
    namespace_id TEXT NOT NULL REFERENCES image_metadef_namespaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    required TEXT NOT NULL,
    json_schema TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (namespace_id, name)
);

CREATE TABLE image_metadef_tags (
    namespace_id TEXT NOT NULL REFERENCES image_metadef_namespaces (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (namespace_id, name)
);

-- The resource types the OpenStack services define, as `glance-manage db_load_metadefs`
-- leaves them in a new cloud; protected, so they cannot be removed.
INSERT INTO image_metadef_resource_types (name, protected, created_at, updated_at) VALUES
    ('OS::Glance::Image', 1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z'),
    ('OS::Cinder::Volume', 1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z'),
    ('OS::Nova::Flavor', 1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z'),
    ('OS::Nova::Aggregate', 1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z'),
    ('OS::Nova::Server', 1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z'),
    ('OS::Trove::Instance', 1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00.000000Z');
