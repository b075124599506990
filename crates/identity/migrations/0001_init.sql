-- Identity schema: Keystone's model in portable SQL (SQLite and PostgreSQL).
-- Every credential lookup goes through a unique index or a primary key, so login and
-- token validation stay O(1) in the number of users and projects.

CREATE TABLE identity_domains (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_domains_name ON identity_domains (name);

CREATE TABLE identity_projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES identity_domains (id),
    parent_id TEXT,
    description TEXT NOT NULL DEFAULT '',
    enabled BIGINT NOT NULL DEFAULT 1,
    is_domain BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_projects_domain_name ON identity_projects (domain_id, name);
CREATE INDEX identity_projects_parent ON identity_projects (parent_id);

CREATE TABLE identity_project_tags (
    project_id TEXT NOT NULL REFERENCES identity_projects (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (project_id, tag)
);
CREATE INDEX identity_project_tags_tag ON identity_project_tags (tag);

CREATE TABLE identity_users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES identity_domains (id),
    enabled BIGINT NOT NULL DEFAULT 1,
    default_project_id TEXT,
    description TEXT,
    email TEXT,
    password_hash TEXT,
    password_created_at TEXT,
    password_expires_at TEXT,
    failed_auth_count BIGINT NOT NULL DEFAULT 0,
    last_failed_auth TEXT,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_users_domain_name ON identity_users (domain_id, name);

CREATE TABLE identity_groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES identity_domains (id),
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_groups_domain_name ON identity_groups (domain_id, name);

CREATE TABLE identity_group_members (
    group_id TEXT NOT NULL REFERENCES identity_groups (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES identity_users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX identity_group_members_user ON identity_group_members (user_id);

-- domain_id is '' for global roles (NULL would defeat the unique index).
CREATE TABLE identity_roles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_roles_domain_name ON identity_roles (domain_id, name);

CREATE TABLE identity_implied_roles (
    prior_role_id TEXT NOT NULL REFERENCES identity_roles (id) ON DELETE CASCADE,
    implied_role_id TEXT NOT NULL REFERENCES identity_roles (id) ON DELETE CASCADE,
    PRIMARY KEY (prior_role_id, implied_role_id)
);

-- actor_type: 'user' | 'group'; target_type: 'project' | 'domain' | 'system' (target_id 'all').
CREATE TABLE identity_assignments (
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    role_id TEXT NOT NULL REFERENCES identity_roles (id) ON DELETE CASCADE,
    inherited BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (actor_type, actor_id, target_type, target_id, role_id, inherited)
);
CREATE INDEX identity_assignments_target ON identity_assignments (target_type, target_id);
CREATE INDEX identity_assignments_role ON identity_assignments (role_id);

CREATE TABLE identity_regions (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    parent_region_id TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE identity_services (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE INDEX identity_services_type ON identity_services (type);

CREATE TABLE identity_endpoints (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES identity_services (id) ON DELETE CASCADE,
    interface TEXT NOT NULL,
    region_id TEXT,
    url TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE INDEX identity_endpoints_service ON identity_endpoints (service_id);

CREATE TABLE identity_app_creds (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES identity_users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    secret_hash TEXT NOT NULL,
    project_id TEXT NOT NULL,
    expires_at TEXT,
    unrestricted BIGINT NOT NULL DEFAULT 0,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_app_creds_user_name ON identity_app_creds (user_id, name);

-- Keystone's revocation events: a token is revoked when every non-NULL field matches it
-- and it was issued at or before issued_before.
CREATE TABLE identity_revocation_events (
    id TEXT PRIMARY KEY,
    user_id TEXT,
    project_id TEXT,
    domain_id TEXT,
    audit_id TEXT,
    audit_chain_id TEXT,
    app_cred_id TEXT,
    issued_before TEXT NOT NULL,
    revoked_at TEXT NOT NULL
);
CREATE INDEX identity_revocation_events_revoked_at ON identity_revocation_events (revoked_at);
