-- Stacks, their resources and their events. Templates, parameters and attributes are
-- JSON text; states are Heat's action and status kept apart (the API joins them).
CREATE TABLE heat_stacks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT NOT NULL,
    description TEXT NOT NULL,
    template TEXT NOT NULL,
    files TEXT NOT NULL,
    environment TEXT NOT NULL,
    parameters TEXT NOT NULL,
    disable_rollback BIGINT NOT NULL,
    timeout_mins BIGINT,
    tags TEXT,
    context TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    deleted_at TEXT
);
CREATE INDEX heat_stacks_project_name ON heat_stacks (project_id, name);

CREATE TABLE heat_resources (
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
    created_at TEXT NOT NULL,
    updated_at TEXT,
    PRIMARY KEY (stack_id, name)
);

CREATE TABLE heat_events (
    id TEXT PRIMARY KEY,
    stack_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    resource_name TEXT NOT NULL,
    physical_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX heat_events_stack ON heat_events (stack_id, seq);
