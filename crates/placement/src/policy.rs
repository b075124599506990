//! Placement's policy defaults: every API is for the cloud's admins and its services
//! (nova, neutron, cyborg act with the `service` role), as Placement ships them.

use stratus_auth::PolicyDefault;

macro_rules! admin_or_service {
    ($name:literal, $desc:literal) => {
        PolicyDefault { name: $name, check: "rule:admin_or_service_api", description: $desc }
    };
}

/// Rule names and defaults, as in Placement's `policy.yaml`.
pub const DEFAULTS: &[PolicyDefault] = &[
    PolicyDefault { name: "admin_api", check: "role:admin", description: "Default rule for most placement APIs." },
    PolicyDefault {
        name: "service_api",
        check: "role:service",
        description: "Default rule for service-to-service APIs.",
    },
    PolicyDefault {
        name: "admin_or_service_api",
        check: "rule:admin_api or rule:service_api",
        description: "Default rule for most placement APIs.",
    },
    admin_or_service!("placement:resource_providers:list", "List resource providers."),
    admin_or_service!("placement:resource_providers:create", "Create resource provider."),
    admin_or_service!("placement:resource_providers:show", "Show resource provider."),
    admin_or_service!("placement:resource_providers:update", "Update resource provider."),
    admin_or_service!("placement:resource_providers:delete", "Delete resource provider."),
    admin_or_service!("placement:resource_providers:inventories:list", "List resource provider inventories."),
    admin_or_service!("placement:resource_providers:inventories:create", "Create one resource provider inventory."),
    admin_or_service!("placement:resource_providers:inventories:show", "Show resource provider inventory."),
    admin_or_service!("placement:resource_providers:inventories:update", "Update resource provider inventory."),
    admin_or_service!("placement:resource_providers:inventories:delete", "Delete resource provider inventory."),
    admin_or_service!("placement:resource_providers:aggregates:list", "List resource provider aggregates."),
    admin_or_service!("placement:resource_providers:aggregates:update", "Update resource provider aggregates."),
    admin_or_service!("placement:resource_providers:usages", "List resource provider usages."),
    admin_or_service!("placement:resource_providers:allocations:list", "List resource provider allocations."),
    admin_or_service!("placement:resource_providers:traits:list", "List resource provider traits."),
    admin_or_service!("placement:resource_providers:traits:update", "Update resource provider traits."),
    admin_or_service!("placement:resource_providers:traits:delete", "Delete resource provider traits."),
    admin_or_service!("placement:resource_classes:list", "List resource classes."),
    admin_or_service!("placement:resource_classes:create", "Create resource class."),
    admin_or_service!("placement:resource_classes:show", "Show resource class."),
    admin_or_service!("placement:resource_classes:update", "Update resource class."),
    admin_or_service!("placement:resource_classes:delete", "Delete resource class."),
    admin_or_service!("placement:traits:list", "List traits."),
    admin_or_service!("placement:traits:show", "Show trait."),
    admin_or_service!("placement:traits:update", "Create trait."),
    admin_or_service!("placement:traits:delete", "Delete trait."),
    admin_or_service!("placement:allocations:list", "List allocations of a consumer."),
    admin_or_service!("placement:allocations:manage", "Manage allocations of several consumers (POST /allocations)."),
    admin_or_service!("placement:allocations:update", "Update allocations of a consumer."),
    admin_or_service!("placement:allocations:delete", "Delete allocations of a consumer."),
    admin_or_service!("placement:allocation_candidates:list", "List allocation candidates."),
    admin_or_service!("placement:usages", "List total resource usages for a project/user."),
    admin_or_service!("placement:reshaper:reshape", "Reshape inventories and allocations."),
];
