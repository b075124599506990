//! How a volume is rendered, per microversion and per caller, exactly as Cinder does:
//! `bootable` as the string `"true"`/`"false"`, attachments only once attached,
//! `os-vol-*` attributes only on show and detail listings and only for those the
//! policy lets see them, fields added by later microversions only from those on.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};
use stratus_auth::RequestContext;
use stratus_core::ApiVersion;
use stratus_db::Query;

use super::store::Volume;
use crate::body::{self, ts};
use crate::error::VolResult;
use crate::policy::allowed;
use crate::sql::{self, IMAGE_META, VOLUME_META};
use crate::Vol;

/// What a volume's view needs beyond its row, loaded for a page of volumes at once.
#[derive(Default)]
pub struct Extras {
    meta: HashMap<String, BTreeMap<String, String>>,
    image_meta: HashMap<String, BTreeMap<String, String>>,
    attachments: HashMap<String, Vec<Value>>,
    type_names: HashMap<String, String>,
    service_uuids: HashMap<String, String>,
    attached_modes: HashMap<String, String>,
}

impl Extras {
    /// Loads the extras of `vols`.
    pub async fn load(vol: &Vol, ctx: &RequestContext, vols: &[Volume]) -> VolResult<Extras> {
        let ids: Vec<String> = vols.iter().map(|v| v.id.clone()).collect();
        let mut e = Extras {
            meta: VOLUME_META.load_many(vol.db.reader(), &ids).await?,
            image_meta: IMAGE_META.load_many(vol.db.reader(), &ids).await?,
            ..Default::default()
        };
        if !ids.is_empty() {
            let mut q =
                Query::new("SELECT * FROM volume_attachments WHERE deleted = 0 AND attach_status = 'attached' AND ");
            q.push_in("volume_id", ids.iter().cloned()).push(" ORDER BY created_at");
            let host_visible = ctx.is_admin() || ctx.has_role("service");
            for r in q.fetch_all(vol.db.reader()).await? {
                let vid = sql::s(&r, "volume_id");
                e.attached_modes.insert(vid.clone(), sql::s(&r, "attach_mode"));
                e.attachments.entry(vid.clone()).or_default().push(json!({
                    "id": vid,
                    "attachment_id": sql::s(&r, "id"),
                    "volume_id": vid,
                    "server_id": sql::os(&r, "instance_uuid"),
                    "host_name": if host_visible { json!(sql::os(&r, "attached_host")) } else { Value::Null },
                    "device": sql::os(&r, "mountpoint"),
                    "attached_at": ts(&sql::os(&r, "attach_time")),
                }));
            }
        }
        let types = Query::new("SELECT id, name FROM volume_types").fetch_all(vol.db.reader()).await?;
        e.type_names = types.iter().map(|r| (sql::s(r, "id"), sql::s(r, "name"))).collect();
        let svcs = Query::new("SELECT host, uuid FROM volume_services WHERE service_binary = 'cinder-volume'")
            .fetch_all(vol.db.reader())
            .await?;
        e.service_uuids = svcs.iter().map(|r| (sql::s(r, "host"), sql::s(r, "uuid"))).collect();
        Ok(e)
    }

    /// The volume's metadata, with the admin metadata Cinder shows in it (`readonly`
    /// once set, `attached_mode` while attached).
    pub fn metadata(&self, v: &Volume) -> BTreeMap<String, String> {
        let mut m = self.meta.get(&v.id).cloned().unwrap_or_default();
        if let Some(ro) = v.readonly {
            m.insert("readonly".into(), if ro { "True" } else { "False" }.into());
        }
        if let Some(mode) = self.attached_modes.get(&v.id) {
            m.insert("attached_mode".into(), mode.clone());
        }
        m
    }
}

/// Cinder's status names for internal states.
fn status(v: &Volume) -> &str {
    match v.status.as_str() {
        "managing" => "creating",
        "error_managing" => "error",
        other => other,
    }
}

/// `{id, name, links}` (the non-detailed listing).
pub fn summary(vol: &Vol, v: &Volume) -> Value {
    json!({"id": v.id, "name": v.name, "links": body::links(&vol.base, &v.project_id, "volumes", &v.id)})
}

/// The detailed view. `extended` adds the `os-vol-*` attributes and image metadata
/// (show and detail listings; not create and update responses).
pub fn detail(vol: &Vol, ctx: &RequestContext, ver: ApiVersion, v: &Volume, x: &Extras, extended: bool) -> Value {
    let type_name = x.type_names.get(&v.volume_type_id).cloned();
    let mut out = json!({
        "id": v.id,
        "status": status(v),
        "size": v.size,
        "availability_zone": v.availability_zone,
        "created_at": ts(&v.created_at),
        "updated_at": ts(&v.updated_at),
        "name": v.name,
        "description": v.description,
        "volume_type": type_name.clone().or_else(|| (!ver.at_least(3, 63)).then(|| v.volume_type_id.clone())),
        "snapshot_id": v.snapshot_id,
        "source_volid": v.source_volid,
        "metadata": body::map_json(&x.metadata(v)),
        "links": body::links(&vol.base, &v.project_id, "volumes", &v.id),
        "user_id": v.user_id,
        "bootable": if v.bootable { "true" } else { "false" },
        "encrypted": false,
        "replication_status": "disabled",
        "consistencygroup_id": null,
        "multiattach": v.multiattach,
        "attachments": x.attachments.get(&v.id).cloned().unwrap_or_default(),
    });
    let admin = ctx.is_admin();
    if admin {
        out["migration_status"] = json!(v.migration_status);
    }
    if ver.at_least(3, 13) {
        out["group_id"] = json!(v.group_id);
    }
    if admin && ver.at_least(3, 21) {
        out["provider_id"] = Value::Null;
    }
    if ver.at_least(3, 48) {
        out["shared_targets"] = json!(false);
        out["service_uuid"] = json!(v.backend().and_then(|b| x.service_uuids.get(&b).cloned()));
    }
    if admin && ver.at_least(3, 61) {
        out["cluster_name"] = Value::Null;
    }
    if ver.at_least(3, 63) {
        out["volume_type_id"] = json!(v.volume_type_id);
    }
    if ver.at_least(3, 65) {
        out["consumes_quota"] = json!(v.use_quota);
    }
    if extended {
        if allowed(&vol.policy, "volume_extension:volume_host_attribute", ctx, Some(&v.project_id)) {
            out["os-vol-host-attr:host"] = json!(v.host);
        }
        if allowed(&vol.policy, "volume_extension:volume_tenant_attribute", ctx, Some(&v.project_id)) {
            out["os-vol-tenant-attr:tenant_id"] = json!(v.project_id);
        }
        if allowed(&vol.policy, "volume_extension:volume_mig_status_attribute", ctx, Some(&v.project_id)) {
            out["os-vol-mig-status-attr:migstat"] = json!(v.migration_status);
            out["os-vol-mig-status-attr:name_id"] = Value::Null;
        }
        if let Some(im) = x.image_meta.get(&v.id).filter(|m| !m.is_empty()) {
            if allowed(&vol.policy, "volume_extension:volume_image_metadata:show", ctx, Some(&v.project_id)) {
                out["volume_image_metadata"] = body::map_json(im);
            }
        }
    }
    out
}
