-- Stack updates: each resource keeps the properties it was made (or last updated) with,
-- to tell what an update changes; a stack being updated keeps the template it is
-- updated from (what a rollback returns to); a resource being replaced keeps its old
-- self as a backup row until the update is done with it (deleted), or a rollback puts
-- it back.
ALTER TABLE heat_resources ADD COLUMN properties TEXT;
ALTER TABLE heat_stacks ADD COLUMN prev_template TEXT;
ALTER TABLE heat_stacks ADD COLUMN prev_files TEXT;
ALTER TABLE heat_stacks ADD COLUMN prev_environment TEXT;
ALTER TABLE heat_stacks ADD COLUMN prev_parameters TEXT;
-- A nested stack (an OS::Heat::ResourceGroup's members) names its parent stack; the
-- parent's engine drives it (it is not listed, nor recovered on its own).
ALTER TABLE heat_stacks ADD COLUMN parent_id TEXT;
CREATE TABLE heat_resource_backups (
    stack_id TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT NOT NULL,
    physical_id TEXT,
    ref_id TEXT,
    attributes TEXT,
    properties TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    PRIMARY KEY (stack_id, id)
);
