//! Heat's policy defaults (its persona rules: readers of a project read, members
//! create and delete), overridable by `[orchestration] policy_file`.
//!
//! Which stacks a caller sees at all is decided in SQL by project; these rules decide
//! what a caller may do in a project.

use stratus_auth::PolicyDefault;

const fn d(name: &'static str, check: &'static str) -> PolicyDefault {
    PolicyDefault { name, check, description: "" }
}

const READER: &str = "rule:project_reader";
const MEMBER: &str = "rule:project_member";

/// Shipped defaults.
pub const DEFAULTS: &[PolicyDefault] = &[
    d("context_is_admin", "role:admin"),
    d("project_reader", "role:admin or (role:reader and project_id:%(project_id)s)"),
    d("project_member", "role:admin or (role:member and project_id:%(project_id)s)"),
    d("stacks:create", MEMBER),
    d("stacks:delete", MEMBER),
    d("stacks:update", MEMBER),
    d("stacks:update_patch", MEMBER),
    d("stacks:preview_update", MEMBER),
    d("stacks:preview_update_patch", MEMBER),
    d("stacks:index", READER),
    d("stacks:show", READER),
    d("stacks:lookup", READER),
    d("stacks:template", READER),
    d("stacks:environment", READER),
    d("stacks:files", READER),
    d("stacks:list_outputs", READER),
    d("stacks:show_output", READER),
    d("stacks:validate_template", MEMBER),
    d("stacks:list_resource_types", READER),
    d("stacks:list_template_versions", READER),
    d("stacks:list_template_functions", READER),
    d("stacks:resource_schema", READER),
    d("resource:index", READER),
    d("resource:show", READER),
    d("resource:signal", MEMBER),
    d("resource:mark_unhealthy", MEMBER),
    d("events:index", READER),
    d("events:show", READER),
    d("build_info:build_info", READER),
];
