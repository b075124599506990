//! Glance's policy rules and their defaults (the secure-RBAC defaults of recent Glance).
//! Metadata definitions use one rule per kind of access (read a namespace, list, add,
//! modify, delete) for the namespace and everything in it, as Glance's rules for
//! objects, properties, tags and associations all default to the same checks.
//!
//! Visibility ("may this project see this image at all?") is decided in code, in the
//! same place for show and list (see `images::visible_to`), as Glance's database layer
//! does; the rules below decide what a caller who can see an image may do with it.
//! Operators override any rule with `[image] policy_file`, e.g. the guides'
//! `"publicize_image": "role:admin or role:member"`.

use stratus_auth::PolicyDefault;

const ADMIN_OR_PROJECT_MEMBER: &str = "role:admin or (role:member and project_id:%(project_id)s)";
const ADMIN_OR_PROJECT_READER: &str = "role:admin or (role:reader and project_id:%(project_id)s)";
const ADMIN_OR_READER: &str = "role:admin or role:reader or role:member";

/// The shipped defaults.
pub const DEFAULTS: &[PolicyDefault] = &[
    PolicyDefault { name: "context_is_admin", check: "role:admin", description: "Admin in any scope." },
    PolicyDefault { name: "default", check: "role:admin", description: "Rules not defined elsewhere." },
    PolicyDefault { name: "add_image", check: ADMIN_OR_PROJECT_MEMBER, description: "Create an image." },
    PolicyDefault { name: "delete_image", check: ADMIN_OR_PROJECT_MEMBER, description: "Delete an image." },
    PolicyDefault { name: "get_image", check: ADMIN_OR_READER, description: "Show an image visible to the caller." },
    PolicyDefault { name: "get_images", check: ADMIN_OR_PROJECT_READER, description: "List images." },
    PolicyDefault { name: "modify_image", check: ADMIN_OR_PROJECT_MEMBER, description: "Update an image." },
    PolicyDefault { name: "publicize_image", check: "role:admin", description: "Make an image public." },
    PolicyDefault {
        name: "communitize_image",
        check: ADMIN_OR_PROJECT_MEMBER,
        description: "Make an image community-visible.",
    },
    PolicyDefault { name: "download_image", check: ADMIN_OR_READER, description: "Download image data." },
    PolicyDefault { name: "upload_image", check: ADMIN_OR_PROJECT_MEMBER, description: "Upload image data." },
    PolicyDefault { name: "import_image", check: ADMIN_OR_PROJECT_MEMBER, description: "Stage and import data." },
    PolicyDefault { name: "deactivate", check: ADMIN_OR_PROJECT_MEMBER, description: "Deactivate an image." },
    PolicyDefault { name: "reactivate", check: ADMIN_OR_PROJECT_MEMBER, description: "Reactivate an image." },
    PolicyDefault { name: "copy_image", check: "role:admin", description: "Copy image data to more stores." },
    PolicyDefault {
        name: "delete_image_location",
        check: "role:admin",
        description: "Remove image data from one store.",
    },
    PolicyDefault { name: "add_member", check: ADMIN_OR_PROJECT_MEMBER, description: "Share an image." },
    PolicyDefault { name: "delete_member", check: ADMIN_OR_PROJECT_MEMBER, description: "Unshare an image." },
    PolicyDefault {
        name: "get_member",
        check: "role:admin or (role:reader and (project_id:%(project_id)s or project_id:%(member_id)s))",
        description: "Show a member.",
    },
    PolicyDefault {
        name: "get_members",
        check: "role:admin or (role:reader and (project_id:%(project_id)s or project_id:%(member_id)s))",
        description: "List members.",
    },
    PolicyDefault {
        name: "modify_member",
        check: "role:admin or (role:member and project_id:%(member_id)s)",
        description: "Accept or reject a shared image.",
    },
    PolicyDefault { name: "add_tag", check: ADMIN_OR_PROJECT_MEMBER, description: "Tag an image." },
    PolicyDefault { name: "delete_tag", check: ADMIN_OR_PROJECT_MEMBER, description: "Untag an image." },
    PolicyDefault { name: "get_image_location", check: ADMIN_OR_PROJECT_READER, description: "See image locations." },
    PolicyDefault { name: "set_image_location", check: "!", description: "Set image locations (never)." },
    PolicyDefault { name: "stores_info_detail", check: "role:admin", description: "Store details." },
    PolicyDefault { name: "tasks_api_access", check: "role:admin", description: "Use the task API at all." },
    PolicyDefault { name: "get_task", check: "rule:default", description: "Show a task." },
    PolicyDefault { name: "get_tasks", check: "rule:default", description: "List tasks." },
    PolicyDefault { name: "add_task", check: "rule:default", description: "Create a task." },
    PolicyDefault { name: "modify_task", check: "rule:default", description: "Update a task." },
    PolicyDefault { name: "metadef_admin", check: "role:admin", description: "Change metadata definitions." },
    // Which namespaces a reader sees (public ones, and private ones of the project) is
    // decided in code, as for images.
    PolicyDefault {
        name: "get_metadef_namespace",
        check: "role:admin or role:reader",
        description: "Show a namespace and its definitions.",
    },
    PolicyDefault { name: "get_metadef_namespaces", check: ADMIN_OR_PROJECT_READER, description: "List namespaces." },
    PolicyDefault { name: "add_metadef_namespace", check: "rule:metadef_admin", description: "Create a namespace." },
    PolicyDefault {
        name: "modify_metadef_namespace",
        check: "rule:metadef_admin",
        description: "Update a namespace and its definitions.",
    },
    PolicyDefault {
        name: "delete_metadef_namespace",
        check: "rule:metadef_admin",
        description: "Delete a namespace or its definitions.",
    },
];
