-- Object storage metadata (SQLite). Names compare bytewise (BINARY, SQLite's default),
-- which for UTF-8 is code-point order: the order Swift lists in.
CREATE TABLE object_accounts (
    account TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE object_containers (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    policy TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    object_count BIGINT NOT NULL DEFAULT 0,
    bytes_used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, name)
);

-- One row per visible object. `blob` names its bytes in the backend (NULL for objects
-- without bytes of their own: symlinks); several rows may share a blob (copies,
-- versions). `kind`: plain, slo (the blob holds the manifest), dlo, symlink.
CREATE TABLE object_objects (
    account TEXT NOT NULL,
    container TEXT NOT NULL,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    kind TEXT NOT NULL DEFAULT 'plain',
    blob TEXT,
    blob_size BIGINT NOT NULL DEFAULT 0,
    delete_at BIGINT,
    PRIMARY KEY (account, container, name)
);
CREATE INDEX object_objects_blob ON object_objects (blob);
CREATE INDEX object_objects_delete_at ON object_objects (delete_at);

-- S3 multipart uploads in flight, by controller host: a crashed run's are aborted on
-- its next start (the fs backend needs none: its temporary files are the record).
CREATE TABLE object_pending_uploads (
    blob TEXT PRIMARY KEY,
    upload_id TEXT NOT NULL,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL
);
