//! Keystone's policy defaults (the rule names of keystone's `policy.yaml`).
//!
//! Management is admin-only (`admin_required`, which like Keystone's legacy default is
//! the admin role in any scope); system readers may read; users may read themselves,
//! their own projects and tokens, change their own password, and manage their own
//! application credentials.

use stratus_auth::PolicyDefault;

macro_rules! p {
    ($name:expr, $check:expr, $desc:expr) => {
        PolicyDefault { name: $name, check: $check, description: $desc }
    };
}

const ADMIN: &str = "rule:admin_required";
const ADMIN_OR_SYSTEM_READER: &str = "rule:admin_required or (role:reader and system_scope:all)";

/// Identity's shipped policy.
pub const DEFAULTS: &[PolicyDefault] = &[
    p!("admin_required", "role:admin or is_admin:1", "The admin role in any scope"),
    p!("service_role", "role:service", "The service role"),
    p!("service_or_admin", "rule:admin_required or rule:service_role", "Admin or a service"),
    p!("owner", "user_id:%(user_id)s", "The user the target belongs to"),
    p!("admin_or_owner", "rule:admin_required or rule:owner", "Admin or the owner"),
    p!("token_subject", "user_id:%(target.token.user_id)s", "The user a token belongs to"),
    p!("system_reader", "role:reader and system_scope:all", "A system-scoped reader"),
    // tokens
    p!("identity:check_token", "rule:service_or_admin or rule:token_subject", "HEAD /v3/auth/tokens"),
    p!("identity:validate_token", "rule:service_or_admin or rule:token_subject", "GET /v3/auth/tokens"),
    p!("identity:revoke_token", "rule:service_or_admin or rule:token_subject", "DELETE /v3/auth/tokens"),
    p!("identity:get_auth_catalog", "", "GET /v3/auth/catalog"),
    p!("identity:get_auth_projects", "", "GET /v3/auth/projects"),
    p!("identity:get_auth_domains", "", "GET /v3/auth/domains"),
    p!("identity:get_auth_system", "", "GET /v3/auth/system"),
    // users
    p!("identity:get_user", "rule:admin_required or rule:system_reader or user_id:%(target.user.id)s", "Show a user"),
    p!("identity:list_users", ADMIN_OR_SYSTEM_READER, "List users"),
    p!("identity:create_user", ADMIN, "Create a user"),
    p!("identity:update_user", ADMIN, "Update a user"),
    p!("identity:delete_user", ADMIN, "Delete a user"),
    p!("identity:change_password", "user_id:%(target.user.id)s", "A user changes their own password"),
    p!("identity:list_user_projects", "rule:admin_or_owner or rule:system_reader", "Projects of a user"),
    p!("identity:list_groups_for_user", "rule:admin_or_owner or rule:system_reader", "Groups of a user"),
    // projects
    p!(
        "identity:get_project",
        "rule:admin_required or rule:system_reader or project_id:%(target.project.id)s",
        "Show a project"
    ),
    p!("identity:list_projects", ADMIN_OR_SYSTEM_READER, "List projects"),
    p!("identity:create_project", ADMIN, "Create a project"),
    p!("identity:update_project", ADMIN, "Update a project"),
    p!("identity:delete_project", ADMIN, "Delete a project"),
    p!("identity:list_project_tags", "rule:admin_required or rule:system_reader or project_id:%(target.project.id)s", "Project tags"),
    p!("identity:update_project_tags", ADMIN, "Change project tags"),
    // domains
    p!(
        "identity:get_domain",
        "rule:admin_required or rule:system_reader or domain_id:%(target.domain.id)s or project_domain_id:%(target.domain.id)s",
        "Show a domain"
    ),
    p!("identity:list_domains", ADMIN_OR_SYSTEM_READER, "List domains"),
    p!("identity:create_domain", ADMIN, "Create a domain"),
    p!("identity:update_domain", ADMIN, "Update a domain"),
    p!("identity:delete_domain", ADMIN, "Delete a domain"),
    // groups
    p!("identity:get_group", ADMIN_OR_SYSTEM_READER, "Show a group"),
    p!("identity:list_groups", ADMIN_OR_SYSTEM_READER, "List groups"),
    p!("identity:create_group", ADMIN, "Create a group"),
    p!("identity:update_group", ADMIN, "Update a group"),
    p!("identity:delete_group", ADMIN, "Delete a group"),
    p!("identity:list_users_in_group", ADMIN_OR_SYSTEM_READER, "Members of a group"),
    p!("identity:add_user_to_group", ADMIN, "Add a member"),
    p!("identity:remove_user_from_group", ADMIN, "Remove a member"),
    p!("identity:check_user_in_group", ADMIN_OR_SYSTEM_READER, "Check membership"),
    // roles
    p!("identity:get_role", ADMIN_OR_SYSTEM_READER, "Show a role"),
    p!("identity:list_roles", ADMIN_OR_SYSTEM_READER, "List roles"),
    p!("identity:create_role", ADMIN, "Create a role"),
    p!("identity:update_role", ADMIN, "Update a role"),
    p!("identity:delete_role", ADMIN, "Delete a role"),
    p!("identity:get_implied_role", ADMIN_OR_SYSTEM_READER, "Show an inference rule"),
    p!("identity:list_implied_roles", ADMIN_OR_SYSTEM_READER, "Roles a role implies"),
    p!("identity:list_role_inference_rules", ADMIN_OR_SYSTEM_READER, "All inference rules"),
    p!("identity:create_implied_role", ADMIN, "Create an inference rule"),
    p!("identity:delete_implied_role", ADMIN, "Delete an inference rule"),
    p!("identity:check_grant", ADMIN_OR_SYSTEM_READER, "Check a role assignment"),
    p!("identity:list_grants", ADMIN_OR_SYSTEM_READER, "List role assignments on a target"),
    p!("identity:create_grant", ADMIN, "Grant a role"),
    p!("identity:revoke_grant", ADMIN, "Revoke a role"),
    p!("identity:list_role_assignments", ADMIN_OR_SYSTEM_READER, "GET /v3/role_assignments"),
    p!("identity:list_system_grants_for_user", ADMIN_OR_SYSTEM_READER, "System roles of a user"),
    p!("identity:check_system_grant_for_user", ADMIN_OR_SYSTEM_READER, "Check a system role"),
    p!("identity:create_system_grant_for_user", ADMIN, "Grant a system role"),
    p!("identity:revoke_system_grant_for_user", ADMIN, "Revoke a system role"),
    // catalog
    p!("identity:get_service", ADMIN_OR_SYSTEM_READER, "Show a service"),
    p!("identity:list_services", ADMIN_OR_SYSTEM_READER, "List services"),
    p!("identity:create_service", ADMIN, "Create a service"),
    p!("identity:update_service", ADMIN, "Update a service"),
    p!("identity:delete_service", ADMIN, "Delete a service"),
    p!("identity:get_endpoint", ADMIN_OR_SYSTEM_READER, "Show an endpoint"),
    p!("identity:list_endpoints", ADMIN_OR_SYSTEM_READER, "List endpoints"),
    p!("identity:create_endpoint", ADMIN, "Create an endpoint"),
    p!("identity:update_endpoint", ADMIN, "Update an endpoint"),
    p!("identity:delete_endpoint", ADMIN, "Delete an endpoint"),
    p!("identity:get_region", "", "Show a region"),
    p!("identity:list_regions", "", "List regions"),
    p!("identity:create_region", ADMIN, "Create a region"),
    p!("identity:update_region", ADMIN, "Update a region"),
    p!("identity:delete_region", ADMIN, "Delete a region"),
    // application credentials
    p!("identity:get_application_credential", "rule:admin_or_owner or rule:system_reader", "Show one"),
    p!("identity:list_application_credentials", "rule:admin_or_owner or rule:system_reader", "List them"),
    p!("identity:create_application_credential", "user_id:%(user_id)s", "Create one (owner only)"),
    p!("identity:delete_application_credential", "rule:admin_or_owner", "Delete one"),
];
