//! Block storage types, made through the volume API (Cinder v3) as the stack's owner:
//! `OS::Cinder::Volume` (empty, from an image, a snapshot or another volume), waited
//! for until `available`; its name, description and metadata change in place and its
//! size grows in place (`os-extend`), as in Heat.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use serde_json::{json, Map, Value};
use stratus_core::internal::InternalUri;

use super::{copy, opt, prop_str, Change, Created, Cx, Kind, Prop, Registry, ResourceType};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(Volume));
}

/// How long a volume may take to become available or to disappear.
const VOLUME_WAIT: Duration = Duration::from_secs(1800);

fn volumes(cx: &Cx) -> InternalUri {
    InternalUri::new("/volume/v3").seg(cx.ctx.project_id.as_deref().unwrap_or_default()).seg("volumes")
}

/// The volume's attributes: its representation with Heat's older names.
fn attributes(v: &Value) -> Value {
    let mut a = v.clone();
    a["display_name"] = v["name"].clone();
    a["display_description"] = v["description"].clone();
    a["attachments_list"] = v["attachments"].clone();
    a
}

/// Polls the volume until its status is `available`; `error` statuses fail.
async fn wait_available(cx: &Cx, id: &str) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + VOLUME_WAIT;
    let mut delay = Duration::from_millis(100);
    loop {
        let v = cx.call(Method::GET, &volumes(cx).seg(id), None).await?["volume"].clone();
        match v["status"].as_str().unwrap_or_default() {
            "available" => return Ok(v),
            s if s.starts_with("error") => {
                return Err(format!("ResourceInError: resources.{}: Went to status {s}", cx.resource_name))
            }
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("resources.{}: the volume did not become available in time", cx.resource_name));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

struct Volume;

#[async_trait]
impl ResourceType for Volume {
    fn name(&self) -> &'static str {
        "OS::Cinder::Volume"
    }
    fn description(&self) -> &'static str {
        "A block storage volume, waited for until available."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("size", Kind::Int, "Size in GiB (needed unless made from a snapshot or volume)."),
            opt("name", Kind::Str, "Name (default: <stack>-<resource>-<random>)."),
            opt("description", Kind::Str, "Description."),
            opt("volume_type", Kind::Str, "Volume type (name or id)."),
            opt("image", Kind::Str, "Image to fill it from (name or id)."),
            opt("snapshot_id", Kind::Str, "Snapshot to make it from."),
            opt("source_volid", Kind::Str, "Volume to clone."),
            opt("metadata", Kind::Map, "Metadata."),
            opt("availability_zone", Kind::Str, "Availability zone."),
            opt("multiattach", Kind::Bool, "Whether it may be attached to several servers."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[
            "size",
            "status",
            "display_name",
            "display_description",
            "volume_type",
            "metadata",
            "source_volid",
            "snapshot_id",
            "availability_zone",
            "bootable",
            "created_at",
            "encrypted",
            "attachments",
            "attachments_list",
        ]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let mut body = Map::new();
        let name = prop_str(props, "name").map(str::to_string).unwrap_or_else(|| cx.physical_name());
        body.insert("name".into(), json!(name));
        copy(
            props,
            &mut body,
            &[
                ("size", "size"),
                ("description", "description"),
                ("volume_type", "volume_type"),
                ("snapshot_id", "snapshot_id"),
                ("source_volid", "source_volid"),
                ("metadata", "metadata"),
                ("availability_zone", "availability_zone"),
                ("multiattach", "multiattach"),
            ],
        );
        if let Some(i) = prop_str(props, "image") {
            body.insert("imageRef".into(), json!(super::nova::image_id(cx, i).await?));
        }
        let r = cx.call(Method::POST, &volumes(cx), Some(json!({"volume": body}))).await?;
        let id = r["volume"]["id"]
            .as_str()
            .ok_or_else(|| format!("resources.{}: the volume API returned no id", cx.resource_name))?
            .to_string();
        cx.started(&id).await?;
        let v = wait_available(cx, &id).await?;
        Ok(Created { physical_id: id, ref_id: None, attributes: attributes(&v) })
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        cx.delete(&volumes(cx).seg(id)).await?;
        let deadline = tokio::time::Instant::now() + VOLUME_WAIT;
        let mut delay = Duration::from_millis(100);
        loop {
            let path = volumes(cx).seg(id);
            let r = cx
                .internal
                .call(&cx.ctx, Method::GET, path.check().map_err(|e| e.message.clone())?, None, &[])
                .await
                .map_err(|e| e.message)?;
            if r.status.as_u16() == 404 {
                return Ok(());
            }
            if r.body["volume"]["status"] == "error_deleting" {
                return Err(format!(
                    "resources.{}: the volume could not be deleted (error_deleting)",
                    cx.resource_name
                ));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("resources.{}: the volume was not deleted in time", cx.resource_name));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
    fn updatable(&self) -> &'static [&'static str] {
        &["name", "description", "metadata", "size"]
    }
    /// Name, description and metadata with one `PUT`; a larger size with `os-extend`
    /// (volumes do not shrink: a smaller size fails the update, as in Heat).
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        let uri = volumes(cx).seg(change.physical_id);
        let mut body = Map::new();
        for (p, v) in change.changed_values() {
            match (p, v) {
                ("name", Value::Null) => {
                    body.insert("name".into(), json!(cx.physical_name()));
                }
                ("metadata", Value::Null) => {
                    body.insert("metadata".into(), json!({}));
                }
                ("name" | "description" | "metadata", v) => {
                    body.insert(p.to_string(), v);
                }
                _ => {}
            }
        }
        if !body.is_empty() {
            cx.call(Method::PUT, &uri, Some(json!({"volume": body}))).await?;
        }
        if change.changed.iter().any(|c| c == "size") {
            let old = change.old.get("size").and_then(Value::as_i64).unwrap_or(0);
            let new = change.new.get("size").and_then(Value::as_i64).unwrap_or(old);
            if new < old {
                return Err(format!(
                    "NotSupported: resources.{}: the size of a volume can only grow ({old} GiB to {new} GiB)",
                    cx.resource_name
                ));
            }
            if new > old {
                cx.call(Method::POST, &uri.clone().seg("action"), Some(json!({"os-extend": {"new_size": new}})))
                    .await?;
            }
        }
        let v = wait_available(cx, change.physical_id).await?;
        Ok(Created { physical_id: change.physical_id.to_string(), ref_id: None, attributes: attributes(&v) })
    }
}
