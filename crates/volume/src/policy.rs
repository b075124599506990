//! Cinder's policy defaults (its current persona rules: readers of a project read,
//! members write, admins administer), overridable by `[volume] policy_file`.
//!
//! Visibility (which rows a caller sees at all) is decided in SQL by project; these
//! rules decide what a caller who can see a resource may do with it.

use serde_json::{json, Value};
use stratus_auth::{Policy, PolicyDefault, RequestContext};

use crate::error::{VolError, VolResult};

const fn d(name: &'static str, check: &'static str) -> PolicyDefault {
    PolicyDefault { name, check, description: "" }
}

/// Readers of the project (and admins).
const READER: &str = "rule:system_or_project_reader";
/// Members of the project (and admins).
const MEMBER: &str = "rule:system_admin_or_project_member";
/// Admins.
const ADMIN: &str = "rule:admin_api";

/// Shipped defaults.
pub const DEFAULTS: &[PolicyDefault] = &[
    d("context_is_admin", "role:admin"),
    d("admin_api", "role:admin"),
    d("system_or_project_reader", "role:admin or (role:reader and project_id:%(project_id)s)"),
    d("system_admin_or_project_member", "role:admin or (role:member and project_id:%(project_id)s)"),
    d("admin_or_owner", "rule:context_is_admin or project_id:%(project_id)s"),
    // volumes
    d("volume:create", ""),
    d("volume:create_from_image", ""),
    d("volume:get", READER),
    d("volume:get_all", READER),
    d("volume:update", MEMBER),
    d("volume:delete", MEMBER),
    d("volume:force_delete", ADMIN),
    d("volume:multiattach", MEMBER),
    d("volume:extend", MEMBER),
    d("volume:extend_attached_volume", MEMBER),
    d("volume:extend_volume_completion", ADMIN),
    d("volume:revert_to_snapshot", MEMBER),
    d("volume:retype", MEMBER),
    d("volume:reimage", MEMBER),
    d("volume:update_readonly_flag", MEMBER),
    d("volume:get_volume_metadata", READER),
    d("volume:create_volume_metadata", MEMBER),
    d("volume:update_volume_metadata", MEMBER),
    d("volume:delete_volume_metadata", MEMBER),
    d("volume:update_volume_admin_metadata", ADMIN),
    d("volume_extension:volume_host_attribute", ADMIN),
    d("volume_extension:volume_tenant_attribute", READER),
    d("volume_extension:volume_mig_status_attribute", ADMIN),
    d("volume_extension:volume_image_metadata:show", READER),
    d("volume_extension:volume_image_metadata:set", MEMBER),
    d("volume_extension:volume_image_metadata:remove", MEMBER),
    d("volume_extension:volume_admin_actions:reset_status", ADMIN),
    d("volume_extension:volume_admin_actions:force_detach", ADMIN),
    d("volume_extension:volume_admin_actions:migrate_volume", ADMIN),
    d("volume_extension:volume_actions:upload_image", MEMBER),
    d("volume_extension:volume_actions:upload_public", ADMIN),
    d("volume_extension:volume_actions:attach", MEMBER),
    d("volume_extension:volume_actions:detach", MEMBER),
    d("volume_extension:volume_actions:reserve", MEMBER),
    d("volume_extension:volume_actions:unreserve", MEMBER),
    d("volume_extension:volume_actions:begin_detaching", MEMBER),
    d("volume_extension:volume_actions:roll_detaching", MEMBER),
    d("volume_extension:volume_actions:initialize_connection", MEMBER),
    d("volume_extension:volume_actions:terminate_connection", MEMBER),
    d("volume_extension:volume_actions:set_bootable", MEMBER),
    // attachments
    d("volume:attachment_create", ""),
    d("volume:attachment_get", READER),
    d("volume:attachment_update", MEMBER),
    d("volume:attachment_complete", MEMBER),
    d("volume:attachment_delete", MEMBER),
    d("volume:multiattach_bootable_volume", MEMBER),
    // snapshots
    d("volume:create_snapshot", MEMBER),
    d("volume:get_snapshot", READER),
    d("volume:get_all_snapshots", READER),
    d("volume:update_snapshot", MEMBER),
    d("volume:delete_snapshot", MEMBER),
    d("volume:get_snapshot_metadata", READER),
    d("volume:update_snapshot_metadata", MEMBER),
    d("volume:delete_snapshot_metadata", MEMBER),
    d("volume_extension:extended_snapshot_attributes", READER),
    d("volume_extension:snapshot_admin_actions:reset_status", ADMIN),
    d("volume_extension:volume_type_encryption", ADMIN),
    // Nova's assisted snapshots report progress as the volume's owner (Cinder's default).
    d("snapshot_extension:snapshot_actions:update_snapshot_status", MEMBER),
    d("volume_extension:snapshot_admin_actions:force_delete", ADMIN),
    // backups
    d("backup:create", ""),
    d("backup:get", READER),
    d("backup:get_all", READER),
    d("backup:update", MEMBER),
    d("backup:delete", MEMBER),
    d("backup:restore", MEMBER),
    d("backup:backup_project_attribute", ADMIN),
    d("backup:backup-export", ADMIN),
    d("backup:backup-import", ADMIN),
    d("volume_extension:backup_admin_actions:reset_status", ADMIN),
    d("volume_extension:backup_admin_actions:force_delete", ADMIN),
    // types, extra specs, access, default types
    d("volume_extension:types_manage", ADMIN),
    d("volume_extension:type_create", ADMIN),
    d("volume_extension:type_update", ADMIN),
    d("volume_extension:type_delete", ADMIN),
    d("volume_extension:type_get", ""),
    d("volume_extension:type_get_all", ""),
    d("volume_extension:access_types_extra_specs", READER),
    d("volume_extension:types_extra_specs:read_sensitive", ADMIN),
    d("volume_extension:access_types_qos_specs_id", ADMIN),
    d("volume_extension:volume_type_access", "rule:admin_or_owner"),
    d("volume_extension:volume_type_access:addProjectAccess", ADMIN),
    d("volume_extension:volume_type_access:removeProjectAccess", ADMIN),
    d("volume_extension:types_extra_specs:index", READER),
    d("volume_extension:types_extra_specs:show", READER),
    d("volume_extension:types_extra_specs:create", ADMIN),
    d("volume_extension:types_extra_specs:update", ADMIN),
    d("volume_extension:types_extra_specs:delete", ADMIN),
    d("volume_extension:default_set_or_update", ADMIN),
    d("volume_extension:default_get", READER),
    d("volume_extension:default_get_all", ADMIN),
    d("volume_extension:default_unset", ADMIN),
    // QoS specs
    d("volume_extension:qos_specs_manage:get", ADMIN),
    d("volume_extension:qos_specs_manage:get_all", ADMIN),
    d("volume_extension:qos_specs_manage:create", ADMIN),
    d("volume_extension:qos_specs_manage:update", ADMIN),
    d("volume_extension:qos_specs_manage:delete", ADMIN),
    // quotas, limits
    d("volume_extension:quotas:show", READER),
    d("volume_extension:quotas:update", ADMIN),
    d("volume_extension:quotas:delete", ADMIN),
    d("volume_extension:quota_classes", ADMIN),
    d("volume_extension:quota_classes:update", ADMIN),
    d("limits_extension:used_limits", READER),
    // transfers
    d("volume:create_transfer", MEMBER),
    d("volume:get_transfer", READER),
    d("volume:get_all_transfers", READER),
    d("volume:accept_transfer", ""),
    d("volume:delete_transfer", MEMBER),
    // messages
    d("message:get", READER),
    d("message:get_all", READER),
    d("message:delete", MEMBER),
    // operators' views
    d("volume_extension:availability_zone_list", ""),
    d("volume_extension:services:index", ADMIN),
    d("volume_extension:services:update", ADMIN),
    d("scheduler_extension:scheduler_stats:get_pools", ADMIN),
    d("volume_extension:capabilities", ADMIN),
    d("volume_extension:hosts", ADMIN),
    // groups
    d("group:group_types:create", ADMIN),
    d("group:group_types:update", ADMIN),
    d("group:group_types:delete", ADMIN),
    d("group:access_group_types_specs", ADMIN),
    d("group:group_types_specs", ADMIN),
    d("group:create", ""),
    d("group:get", READER),
    d("group:get_all", READER),
    d("group:update", MEMBER),
    d("group:delete", MEMBER),
    d("group:reset_status", ADMIN),
    d("group:create_group_snapshot", MEMBER),
    d("group:get_group_snapshot", READER),
    d("group:get_all_group_snapshots", READER),
    d("group:delete_group_snapshot", MEMBER),
    d("group:update_group_snapshot", MEMBER),
    d("group:reset_group_snapshot_status", ADMIN),
];

/// Enforces `action` on a resource of `project_id` (None: no owner, e.g. a create).
pub fn enforce(policy: &Policy, action: &str, ctx: &RequestContext, project_id: Option<&str>) -> VolResult<()> {
    let target = target(ctx, project_id);
    if policy.check(action, ctx, &target) {
        Ok(())
    } else {
        Err(VolError::Forbidden(format!("Policy doesn't allow {action} to be performed.")))
    }
}

/// True when `ctx` may do `action` on a resource of `project_id`.
pub fn allowed(policy: &Policy, action: &str, ctx: &RequestContext, project_id: Option<&str>) -> bool {
    policy.check(action, ctx, &target(ctx, project_id))
}

fn target(ctx: &RequestContext, project_id: Option<&str>) -> Value {
    let p = project_id.map(str::to_string).or_else(|| ctx.project_id.clone()).unwrap_or_default();
    json!({"project_id": p, "user_id": ctx.user_id})
}
