//! `createImage` of a volume-backed server, as Nova does it: each of its volumes is
//! snapshotted by the volume service, and the image records those snapshots in its
//! `block_device_mapping` property (with `bdm_v2` and `root_device_name`) and holds no
//! data of its own (zero bytes, so it is `active` at once). Booting that image boots
//! from new volumes made from the snapshots.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use stratus_core::internal::InternalUri;
use stratus_core::RequestContext;

use super::store::status;
use crate::clients::NetRefusal;
use crate::servers::store::Instance;
use crate::AppState;

/// Whether `inst` boots from a volume.
pub fn volume_backed(inst: &Instance) -> bool {
    inst.bdms.iter().any(|b| b.is_root())
}

/// Snapshots the volumes of `inst` and creates the image `name` (with the caller's
/// `props`) that records them: the image's id.
pub async fn create_image(
    st: &AppState,
    ctx: &RequestContext,
    inst: &Instance,
    name: &str,
    mut props: Value,
) -> Result<String, NetRefusal> {
    let mut mappings = Vec::new();
    for b in inst.bdms.iter().filter(|b| b.status == status::ATTACHED) {
        let snap = st.backends.volumes.snapshot(ctx, &b.volume_id, &format!("snapshot for {name}")).await?;
        let size = st.backends.volumes.get(ctx, &b.volume_id).await?.map(|v| v.size);
        mappings.push(json!({
            "source_type": "snapshot", "destination_type": "volume", "snapshot_id": snap,
            "volume_id": null, "image_id": null, "boot_index": b.boot_index,
            "delete_on_termination": b.delete_on_termination, "device_name": b.device_name,
            "volume_size": size, "tag": b.tag, "guest_format": null, "disk_bus": "virtio",
            "device_type": "disk", "no_device": null,
        }));
    }
    props["block_device_mapping"] = json!(Value::Array(mappings).to_string());
    props["bdm_v2"] = json!("True");
    props["root_device_name"] = json!("/dev/vda");
    props["disk_format"] = json!("raw");
    props["container_format"] = json!("bare");
    let id = st.backends.images.create_snapshot(ctx, name, &props).await?;
    // Zero bytes: the image is active at once and carries only its mappings.
    let uri = InternalUri::new("/image/v2/images").seg(&id).seg("file");
    let (code, body) = st
        .backends
        .images
        .request(ctx, Method::PUT, uri.as_str(), None, &[("Content-Type", "application/octet-stream")])
        .await?;
    if !code.is_success() {
        return Err(NetRefusal {
            status: if code.is_client_error() { code } else { StatusCode::SERVICE_UNAVAILABLE },
            message: format!("the image service refused the snapshot image's (empty) data: {body}"),
        });
    }
    Ok(id)
}
