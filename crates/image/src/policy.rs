//! Glance's policy rules and their defaults (the secure-RBAC defaults of recent Glance).
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
    PolicyDefault { name: "deactivate", check: "role:admin", description: "Deactivate an image." },
    PolicyDefault { name: "reactivate", check: "role:admin", description: "Reactivate an image." },
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
    PolicyDefault { name: "get_image_location", check: "role:admin", description: "See image locations." },
    PolicyDefault { name: "set_image_location", check: "!", description: "Set image locations (never)." },
    PolicyDefault { name: "stores_info_detail", check: "role:admin", description: "Store details." },
];
