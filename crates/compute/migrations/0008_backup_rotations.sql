-- createBackup's rotation, kept until its snapshot ends: when it succeeds, the oldest
-- backups of the server and backup type beyond `rotation` are deleted (Nova rotates
-- after the upload, so a failed backup never costs an old one).
CREATE TABLE IF NOT EXISTS compute_backup_rotations (
    request_id TEXT PRIMARY KEY,
    instance_uuid TEXT NOT NULL,
    image_id TEXT NOT NULL,
    backup_type TEXT NOT NULL,
    rotation BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
