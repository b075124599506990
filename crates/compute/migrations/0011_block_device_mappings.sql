-- Block device mappings: the volumes of a server (attached, or its root disk when it
-- boots from a volume), with the volume service's attachment and connection info.
-- A row lives while the volume is attached; detaching deletes it.
CREATE TABLE compute_block_device_mappings (
    uuid TEXT PRIMARY KEY,
    instance_uuid TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    attachment_id TEXT,
    source_type TEXT NOT NULL,
    boot_index BIGINT,
    device_name TEXT,
    tag TEXT,
    -- Boot from volume: the image a volume is made from, and its size in GiB.
    image_id TEXT,
    volume_size BIGINT,
    delete_on_termination BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    connection_info TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX compute_bdm_instance ON compute_block_device_mappings (instance_uuid);
CREATE INDEX compute_bdm_volume ON compute_block_device_mappings (volume_id);
