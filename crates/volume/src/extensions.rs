//! `/extensions` (the API extensions Cinder lists, for clients that still look) and
//! `/resource_filters` (3.33: which filters each listing takes).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, QueryPairs};

use crate::error::VolResult;
use crate::types::need;
use crate::{both, S};

/// (name, alias, description) of every extension this API implements.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("AdminActions", "os-admin-actions", "Enable admin actions."),
    ("AvailabilityZones", "os-availability-zone", "Describe Availability Zones."),
    ("Backups", "backups", "Backups support."),
    ("Capabilities", "capabilities", "Capabilities support."),
    ("ExtendedServices", "os-extended-services", "Extended services support."),
    ("ExtendedSnapshotAttributes", "os-extended-snapshot-attributes", "Extended SnapshotAttributes support."),
    ("Hosts", "os-hosts", "Admin-only host administration."),
    ("QoSSpecs", "qos-specs", "QoS specs support."),
    ("QuotaClasses", "os-quota-class-sets", "Quota classes management support."),
    ("Quotas", "os-quota-sets", "Quota management support."),
    ("SchedulerHints", "OS-SCH-HNT", "Pass arbitrary key/value pairs to the scheduler."),
    ("SchedulerStats", "scheduler-stats", "Scheduler stats support."),
    ("Services", "os-services", "Services support."),
    ("SnapshotActions", "os-snapshot-actions", "Enable snapshot manager actions."),
    ("TypesExtraSpecs", "os-types-extra-specs", "Type extra specs support."),
    ("TypesManage", "os-types-manage", "Types manage support."),
    ("UsedLimits", "os-used-limits", "Provide data on limited resources that are being used."),
    ("VolumeActions", "os-volume-actions", "Enable volume actions."),
    ("VolumeHostAttribute", "os-vol-host-attr", "Expose host as an attribute of a volume."),
    ("VolumeImageMetadata", "os-vol-image-meta", "Show image metadata associated with the volume."),
    ("VolumeMigStatusAttribute", "os-vol-mig-status-attr", "Expose migration_status as an attribute of a volume."),
    ("VolumeTenantAttribute", "os-vol-tenant-attr", "Expose the internal project_id as an attribute of a volume."),
    ("VolumeTransfer", "os-volume-transfer", "Volume transfer management support."),
    ("VolumeTypeAccess", "os-volume-type-access", "Volume type access support."),
];

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/extensions", get(list));
    r = both(r, "/resource_filters", get(filters));
    r
}

async fn list(State(_vol): State<S>, Ctx(_ctx): Ctx) -> VolResult<Json<Value>> {
    let all: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(name, alias, description)| {
            json!({"name": name, "alias": alias, "description": description, "links": [], "updated": "2023-08-31T00:00:00+00:00"})
        })
        .collect();
    Ok(Json(json!({"extensions": all})))
}

async fn filters(State(_vol): State<S>, Ctx(_ctx): Ctx, ver: ApiVersion, q: QueryPairs) -> VolResult<Json<Value>> {
    need(ver, 3, 33)?;
    let all = [
        (
            "volume",
            &[
                "name",
                "status",
                "metadata",
                "bootable",
                "migration_status",
                "availability_zone",
                "group_id",
                "size",
                "created_at",
                "updated_at",
            ][..],
        ),
        ("backup", &["name", "status", "volume_id"][..]),
        ("snapshot", &["name", "status", "volume_id", "metadata", "user_id"][..]),
        ("attachment", &["volume_id", "status", "instance_id"][..]),
        ("message", &["resource_uuid", "resource_type", "event_id", "request_id", "message_level"][..]),
        ("pool", &["name", "volume_backend_name"][..]),
        ("volume_type", &["is_public", "extra_specs"][..]),
    ];
    let want = q.get("resource");
    let out: Vec<Value> = all
        .iter()
        .filter(|(r, _)| want.is_none_or(|w| w == *r))
        .map(|(r, f)| json!({"resource": r, "filters": f}))
        .collect();
    Ok(Json(json!({"resource_filters": out})))
}
