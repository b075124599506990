//! Neutron's policy defaults (the classic owner-or-admin rules).
//!
//! Visibility (who can see a resource at all: owner, admin, shared or RBAC-granted
//! networks) is decided in SQL by the store; these rules decide which actions and which
//! attributes a caller who can see the resource may use.

use serde_json::Value;
use stratus_auth::{Policy, PolicyDefault, RequestContext};

use crate::error::{NetError, NetResult};

const fn d(name: &'static str, check: &'static str) -> PolicyDefault {
    PolicyDefault { name, check, description: "" }
}

/// Shipped defaults, overridable by `[network] policy_file`.
pub const DEFAULTS: &[PolicyDefault] = &[
    d("context_is_admin", "role:admin"),
    d("owner", "tenant_id:%(tenant_id)s"),
    d("admin_or_owner", "rule:context_is_admin or rule:owner"),
    d("admin_only", "rule:context_is_admin"),
    d("network_owner", "tenant_id:%(network:tenant_id)s"),
    d("admin_or_network_owner", "rule:context_is_admin or rule:network_owner"),
    d("admin_owner_or_network_owner", "rule:owner or rule:admin_or_network_owner"),
    d("regular_user", ""),
    d("create_network", "rule:regular_user"),
    d("create_network:shared", "rule:admin_only"),
    d("create_network:router:external", "rule:admin_only"),
    d("create_network:is_default", "rule:admin_only"),
    d("create_network:provider:network_type", "rule:admin_only"),
    d("create_network:provider:physical_network", "rule:admin_only"),
    d("create_network:provider:segmentation_id", "rule:admin_only"),
    d("get_network:provider:network_type", "rule:admin_only"),
    d("get_network:provider:physical_network", "rule:admin_only"),
    d("get_network:provider:segmentation_id", "rule:admin_only"),
    d("update_network", "rule:admin_or_owner"),
    d("update_network:shared", "rule:admin_only"),
    d("update_network:router:external", "rule:admin_only"),
    d("update_network:provider:network_type", "rule:admin_only"),
    d("update_network:provider:physical_network", "rule:admin_only"),
    d("update_network:provider:segmentation_id", "rule:admin_only"),
    d("delete_network", "rule:admin_or_owner"),
    d("create_subnet", "rule:admin_or_network_owner"),
    d("update_subnet", "rule:admin_or_network_owner"),
    d("delete_subnet", "rule:admin_or_network_owner"),
    d("create_subnetpool", "rule:regular_user"),
    d("create_subnetpool:shared", "rule:admin_only"),
    d("create_subnetpool:is_default", "rule:admin_only"),
    d("update_subnetpool", "rule:admin_or_owner"),
    d("update_subnetpool:is_default", "rule:admin_only"),
    d("delete_subnetpool", "rule:admin_or_owner"),
    d("create_port", "rule:regular_user"),
    d("create_port:mac_address", "rule:admin_or_network_owner"),
    d("create_port:fixed_ips:ip_address", "rule:admin_or_network_owner"),
    d("create_port:binding:host_id", "rule:admin_only"),
    d("create_port:binding:profile", "rule:admin_only"),
    d("get_port:binding:host_id", "rule:admin_only"),
    d("get_port:binding:profile", "rule:admin_only"),
    d("get_port:binding:vif_type", "rule:admin_only"),
    d("get_port:binding:vif_details", "rule:admin_only"),
    d("update_port", "rule:admin_or_owner"),
    d("update_port:binding:host_id", "rule:admin_only"),
    d("update_port:binding:profile", "rule:admin_only"),
    d("update_port:mac_address", "rule:admin_only"),
    d("update_port:fixed_ips:ip_address", "rule:admin_or_network_owner"),
    d("delete_port", "rule:admin_owner_or_network_owner"),
    d("create_router", "rule:regular_user"),
    d("create_router:external_gateway_info:external_fixed_ips", "rule:admin_only"),
    d("create_router:distributed", "rule:admin_only"),
    d("create_router:ha", "rule:admin_only"),
    d("update_router", "rule:admin_or_owner"),
    d("update_router:external_gateway_info:external_fixed_ips", "rule:admin_only"),
    d("delete_router", "rule:admin_or_owner"),
    d("add_router_interface", "rule:admin_or_owner"),
    d("remove_router_interface", "rule:admin_or_owner"),
    d("create_floatingip", "rule:regular_user"),
    d("create_floatingip:floating_ip_address", "rule:admin_only"),
    d("update_floatingip", "rule:admin_or_owner"),
    d("delete_floatingip", "rule:admin_or_owner"),
    d("create_security_group", "rule:regular_user"),
    d("update_security_group", "rule:admin_or_owner"),
    d("delete_security_group", "rule:admin_or_owner"),
    d("create_security_group_rule", "rule:admin_or_owner"),
    d("delete_security_group_rule", "rule:admin_or_owner"),
    d("create_rbac_policy", "rule:regular_user"),
    d("create_rbac_policy:target_tenant_wildcard", "rule:admin_only"),
    d("update_rbac_policy", "rule:admin_or_owner"),
    d("delete_rbac_policy", "rule:admin_or_owner"),
    d("create_address_group", "rule:regular_user"),
    d("update_address_group", "rule:admin_or_owner"),
    d("delete_address_group", "rule:admin_or_owner"),
    d("get_auto_allocated_topology", "rule:admin_or_owner"),
    d("delete_auto_allocated_topology", "rule:admin_or_owner"),
    d("get_agent", "rule:admin_only"),
    d("update_agent", "rule:admin_only"),
    d("delete_agent", "rule:admin_only"),
    d("get_dhcp-agents", "rule:admin_only"),
    d("get_dhcp-networks", "rule:admin_only"),
    d("create_dhcp-network", "rule:admin_only"),
    d("delete_dhcp-network", "rule:admin_only"),
    d("get_l3-agents", "rule:admin_only"),
    d("get_quota", "rule:context_is_admin or project_id:%(project_id)s"),
    d("update_quota", "rule:admin_only"),
    d("delete_quota", "rule:admin_only"),
    d("get_network_ip_availability", "rule:admin_only"),
];

/// Enforces `action` with Neutron's 403 message.
pub fn enforce(policy: &Policy, action: &str, ctx: &RequestContext, target: &Value) -> NetResult<()> {
    if policy.check(action, ctx, target) {
        Ok(())
    } else {
        Err(NetError::Forbidden(format!("(rule:{action}) is disallowed by policy")))
    }
}

/// Enforces `<action>:<attr>` for every restricted attribute present in `body`.
pub fn enforce_attrs(
    policy: &Policy,
    action: &str,
    attrs: &[&str],
    ctx: &RequestContext,
    body: &Value,
    target: &Value,
) -> NetResult<()> {
    for a in attrs {
        if body.get(*a).is_some_and(|v| !v.is_null()) {
            enforce(policy, &format!("{action}:{a}"), ctx, target)?;
        }
    }
    Ok(())
}
