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
    p!("identity:check_implied_role", ADMIN_OR_SYSTEM_READER, "HEAD an inference rule"),
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
    p!("identity:list_access_rules", "rule:admin_or_owner or rule:system_reader", "A user's access rules"),
    p!("identity:get_access_rule", "rule:admin_or_owner or rule:system_reader", "Show an access rule"),
    p!("identity:delete_access_rule", "rule:admin_or_owner", "Delete an unused access rule"),
    // trusts (the handlers also require the caller to be the trustor on create)
    p!("trust_party", "user_id:%(target.trust.trustor_user_id)s or user_id:%(target.trust.trustee_user_id)s", "Trustor or trustee"),
    p!("identity:create_trust", "user_id:%(trust.trustor_user_id)s", "The trustor creates a trust"),
    p!("identity:list_trusts", ADMIN_OR_SYSTEM_READER, "List every trust"),
    p!("identity:get_trust", "rule:admin_required or rule:system_reader or rule:trust_party", "Show a trust"),
    p!("identity:delete_trust", "rule:admin_required or user_id:%(target.trust.trustor_user_id)s", "Delete a trust"),
    p!("identity:list_roles_for_trust", "rule:admin_required or rule:system_reader or rule:trust_party", "A trust's roles"),
    p!("identity:get_role_for_trust", "rule:admin_required or rule:system_reader or rule:trust_party", "A trust's role"),
    // credentials
    p!("credential_owner", "user_id:%(target.credential.user_id)s", "The credential's user"),
    p!("identity:list_credentials", "", "List credentials (filtered to those the caller may see)"),
    p!("identity:get_credential", "rule:admin_required or rule:system_reader or rule:credential_owner", "Show a credential"),
    p!("identity:create_credential", "rule:admin_required or rule:credential_owner", "Create a credential"),
    p!("identity:update_credential", "rule:admin_required or rule:credential_owner", "Update a credential"),
    p!("identity:delete_credential", "rule:admin_required or rule:credential_owner", "Delete a credential"),
    p!("identity:ec2_list_credentials", "rule:admin_required or rule:system_reader or rule:owner", "A user's EC2 credentials"),
    p!("identity:ec2_get_credential", "rule:admin_required or rule:system_reader or rule:credential_owner", "Show one"),
    p!("identity:ec2_create_credential", "rule:admin_required or rule:owner", "Create one"),
    p!("identity:ec2_delete_credential", "rule:admin_required or rule:credential_owner", "Delete one"),
    // OAuth1 consumers, policies, domain configuration, endpoint filters: admin
    p!("identity:get_consumer", ADMIN_OR_SYSTEM_READER, "Show an OAuth1 consumer"),
    p!("identity:list_consumers", ADMIN_OR_SYSTEM_READER, "List OAuth1 consumers"),
    p!("identity:create_consumer", ADMIN, "Create an OAuth1 consumer"),
    p!("identity:update_consumer", ADMIN, "Update an OAuth1 consumer"),
    p!("identity:delete_consumer", ADMIN, "Delete an OAuth1 consumer"),
    p!("identity:get_policy", ADMIN_OR_SYSTEM_READER, "Show a policy blob"),
    p!("identity:list_policies", ADMIN_OR_SYSTEM_READER, "List policy blobs"),
    p!("identity:create_policy", ADMIN, "Create a policy blob"),
    p!("identity:update_policy", ADMIN, "Update a policy blob"),
    p!("identity:delete_policy", ADMIN, "Delete a policy blob"),
    p!("identity:get_domain_config_default", "", "Default domain configuration"),
    p!("identity:get_domain_config", ADMIN_OR_SYSTEM_READER, "A domain's configuration"),
    p!("identity:create_domain_config", ADMIN, "Create a domain's configuration"),
    p!("identity:update_domain_config", ADMIN, "Update a domain's configuration"),
    p!("identity:delete_domain_config", ADMIN, "Delete a domain's configuration"),
    p!("identity:list_endpoint_groups", ADMIN_OR_SYSTEM_READER, "List endpoint groups"),
    p!("identity:get_endpoint_group", ADMIN_OR_SYSTEM_READER, "Show an endpoint group"),
    p!("identity:create_endpoint_group", ADMIN, "Create an endpoint group"),
    p!("identity:update_endpoint_group", ADMIN, "Update an endpoint group"),
    p!("identity:delete_endpoint_group", ADMIN, "Delete an endpoint group"),
    p!("identity:list_projects_associated_with_endpoint_group", ADMIN_OR_SYSTEM_READER, "Projects of a group"),
    p!("identity:list_endpoints_associated_with_endpoint_group", ADMIN_OR_SYSTEM_READER, "Endpoints of a group"),
    p!("identity:get_endpoint_group_in_project", ADMIN_OR_SYSTEM_READER, "Check a group on a project"),
    p!("identity:list_endpoint_groups_for_project", ADMIN_OR_SYSTEM_READER, "Groups of a project"),
    p!("identity:add_endpoint_group_to_project", ADMIN, "Associate a group with a project"),
    p!("identity:remove_endpoint_group_from_project", ADMIN, "Dissociate a group from a project"),
    p!("identity:list_endpoints_for_project", ADMIN_OR_SYSTEM_READER, "Endpoints of a project"),
    p!("identity:check_endpoint_in_project", ADMIN_OR_SYSTEM_READER, "Check an endpoint on a project"),
    p!("identity:add_endpoint_to_project", ADMIN, "Associate an endpoint with a project"),
    p!("identity:remove_endpoint_from_project", ADMIN, "Dissociate an endpoint from a project"),
    p!("identity:list_projects_for_endpoint", ADMIN_OR_SYSTEM_READER, "Projects of an endpoint"),
];

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stratus_auth::{Policy, RequestContext};

    use super::DEFAULTS;

    fn ctx(user: &str, project: &str, roles: &[&str]) -> RequestContext {
        RequestContext {
            user_id: user.into(),
            project_id: Some(project.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn keystone_defaults_parse_and_separate_admin_from_members() {
        let p = Policy::load("identity", DEFAULTS, None).unwrap();
        let admin = ctx("a", "p0", &["admin", "member", "reader"]);
        let member = ctx("u", "p1", &["member", "reader"]);
        assert!(p.check("identity:create_user", &admin, &json!({})));
        assert!(!p.check("identity:create_user", &member, &json!({})));
        assert!(!p.check("identity:list_users", &member, &json!({})));
        let me = json!({"target": {"user": {"id": "u"}}, "user_id": "u"});
        let other = json!({"target": {"user": {"id": "v"}}, "user_id": "v"});
        assert!(p.check("identity:get_user", &member, &me));
        assert!(!p.check("identity:get_user", &member, &other));
        assert!(p.check("identity:get_project", &member, &json!({"target": {"project": {"id": "p1"}}})));
        assert!(!p.check("identity:get_project", &member, &json!({"target": {"project": {"id": "p2"}}})));
        let mut sys_reader = ctx("r", "p9", &["reader"]);
        sys_reader.project_id = None;
        sys_reader.system_scope = true;
        assert!(p.check("identity:list_users", &sys_reader, &json!({})));
        assert!(!p.check("identity:create_user", &sys_reader, &json!({})));
    }
}
