-- Keystone's remaining v3 resources: trusts (OS-TRUST), credentials (incl. EC2), OAuth1
-- consumers, domain configuration, endpoint groups and project endpoint filters
-- (OS-EP-FILTER), policies, access rules of application credentials, password history
-- (security compliance), attributes Keystone keeps beside the known ones ("extra"),
-- role options, and which catalog services the bootstrap owns.

-- Unknown attributes of a user or project, kept as Keystone keeps them (a JSON object).
ALTER TABLE identity_users ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
-- User options (ignore_password_expiry, ignore_lockout_failure_attempts, ...), JSON.
ALTER TABLE identity_users ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
-- Day of the last successful login (disable_user_account_days_inactive).
ALTER TABLE identity_users ADD COLUMN last_active_at TEXT;
ALTER TABLE identity_projects ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
-- Role options (only `immutable` exists), JSON.
ALTER TABLE identity_roles ADD COLUMN options TEXT NOT NULL DEFAULT '{}';

-- 1 for a catalog service the bootstrap registered: those are removed again when the
-- binary stops serving them. The rows the old bootstrap made are recognised by the
-- (type, name) pairs it used.
ALTER TABLE identity_services ADD COLUMN bootstrap BIGINT NOT NULL DEFAULT 0;
UPDATE identity_services SET bootstrap = 1 WHERE
    (type = 'identity' AND name = 'keystone') OR (type = 'image' AND name = 'glance')
    OR (type = 'placement' AND name = 'placement') OR (type = 'compute' AND name = 'nova')
    OR (type = 'network' AND name = 'neutron') OR (type = 'volumev3' AND name = 'cinderv3')
    OR (type = 'object-store' AND name = 'swift');

-- Earlier password hashes of a user, newest first by created_at (unique_last_password_count).
CREATE TABLE identity_password_history (
    user_id TEXT NOT NULL REFERENCES identity_users (id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX identity_password_history_user ON identity_password_history (user_id, created_at);

CREATE TABLE identity_trusts (
    id TEXT PRIMARY KEY,
    trustor_user_id TEXT NOT NULL,
    trustee_user_id TEXT NOT NULL,
    project_id TEXT,
    impersonation BIGINT NOT NULL DEFAULT 0,
    expires_at TEXT,
    -- NULL: unlimited.
    remaining_uses BIGINT,
    allow_redelegation BIGINT NOT NULL DEFAULT 0,
    redelegation_count BIGINT NOT NULL DEFAULT 0,
    redelegated_trust_id TEXT,
    deleted_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX identity_trusts_trustor ON identity_trusts (trustor_user_id);
CREATE INDEX identity_trusts_trustee ON identity_trusts (trustee_user_id);

CREATE TABLE identity_trust_roles (
    trust_id TEXT NOT NULL REFERENCES identity_trusts (id) ON DELETE CASCADE,
    role_id TEXT NOT NULL,
    PRIMARY KEY (trust_id, role_id)
);

-- type: 'ec2', 'cert', 'totp' or any other; blob is the client's text (JSON for ec2).
-- access_key: the EC2 access key (unique), so an EC2 signature finds its credential.
CREATE TABLE identity_credentials (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    project_id TEXT,
    type TEXT NOT NULL,
    blob TEXT NOT NULL,
    access_key TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE INDEX identity_credentials_user ON identity_credentials (user_id);
CREATE UNIQUE INDEX identity_credentials_access_key ON identity_credentials (access_key);

CREATE TABLE identity_oauth_consumers (
    id TEXT PRIMARY KEY,
    description TEXT,
    secret_hash TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);

-- Domain-specific configuration: one row per (domain, group, option), value as JSON.
CREATE TABLE identity_domain_configs (
    domain_id TEXT NOT NULL REFERENCES identity_domains (id) ON DELETE CASCADE,
    config_group TEXT NOT NULL,
    option_name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (domain_id, config_group, option_name)
);

CREATE TABLE identity_policies (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    blob TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);

CREATE TABLE identity_endpoint_groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    filters TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE identity_project_endpoints (
    project_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    PRIMARY KEY (project_id, endpoint_id)
);
CREATE INDEX identity_project_endpoints_endpoint ON identity_project_endpoints (endpoint_id);

CREATE TABLE identity_project_endpoint_groups (
    project_id TEXT NOT NULL,
    endpoint_group_id TEXT NOT NULL REFERENCES identity_endpoint_groups (id) ON DELETE CASCADE,
    PRIMARY KEY (project_id, endpoint_group_id)
);
CREATE INDEX identity_project_endpoint_groups_group ON identity_project_endpoint_groups (endpoint_group_id);

-- Access rules of application credentials: (service, path, method) a credential may call.
CREATE TABLE identity_access_rules (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES identity_users (id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    path TEXT NOT NULL,
    method TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_access_rules_rule ON identity_access_rules (user_id, service, path, method);

CREATE TABLE identity_app_cred_access_rules (
    app_cred_id TEXT NOT NULL REFERENCES identity_app_creds (id) ON DELETE CASCADE,
    access_rule_id TEXT NOT NULL REFERENCES identity_access_rules (id),
    PRIMARY KEY (app_cred_id, access_rule_id)
);
CREATE INDEX identity_app_cred_access_rules_rule ON identity_app_cred_access_rules (access_rule_id);
