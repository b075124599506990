//! Boot from volume: `block_device_mapping_v2` entries with `destination_type: volume`.
//!
//! The API validates the entries and records them as `pending` mappings with the server
//! ([`requested`]); the build, once it has a host and before the guest is spawned,
//! makes each one real ([`prepare`]): a volume is created from the image (or blank) and
//! waited for, reserved for the server, connected to its host and completed. Every
//! step's result is written on the mapping before the next one, so a build resumed
//! after a crash picks up where it stopped (a volume is never created twice). The guest
//! then boots with the `boot_index` 0 volume as its root disk.

use std::time::Duration;

use serde_json::Value;
use stratus_compute_proto::spec::VolumeConnection;
use stratus_core::RequestContext;
use stratus_db::{Arg, Db};

use super::store::{self, Bdm};
use crate::clients::NetRefusal;
use crate::error::{ComputeError, Result};
use crate::servers::store::Instance;
use crate::volume_api::VolumeApi;

use super::store::status::PENDING;

/// How long a build waits for a volume created from an image.
const CREATE_WAIT: Duration = Duration::from_secs(600);

/// One volume a server asks for at create.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    /// `volume`, `image` or `blank`.
    pub source_type: String,
    /// The volume (source `volume`) or image (source `image`) id.
    pub uuid: Option<String>,
    /// Size in GiB of a volume to create.
    pub volume_size: Option<u64>,
    /// `Some(0)`: the root disk.
    pub boot_index: Option<i64>,
    /// Delete the volume with the server.
    pub delete_on_termination: bool,
    /// Device tag.
    pub tag: Option<String>,
}

fn bad(msg: impl Into<String>) -> ComputeError {
    ComputeError::BadRequest(format!("Block Device Mapping is Invalid: {}", msg.into()))
}

/// The volume entries of a `block_device_mapping_v2` (already checked for Nova's
/// schema), in order.
pub fn requested(list: &Value) -> Result<Vec<Requested>> {
    let mut out = Vec::new();
    for b in list.as_array().into_iter().flatten() {
        if b["destination_type"].as_str() != Some("volume") {
            continue;
        }
        let source_type = b["source_type"].as_str().unwrap_or("volume").to_string();
        let boot_index = match &b["boot_index"] {
            Value::Null => None,
            Value::Number(n) => n.as_i64(),
            Value::String(s) => Some(s.parse().map_err(|_| bad(format!("boot_index {s:?} is not a number")))?),
            other => return Err(bad(format!("boot_index {other} is not a number"))),
        };
        let volume_size = match &b["volume_size"] {
            Value::Null => None,
            Value::Number(n) => n.as_u64(),
            Value::String(s) => Some(s.parse().map_err(|_| bad(format!("volume_size {s:?} is not a number")))?),
            other => return Err(bad(format!("volume_size {other} is not a number"))),
        };
        let uuid = b["uuid"].as_str().map(str::to_string);
        match source_type.as_str() {
            "volume" | "image" if uuid.is_none() => {
                return Err(bad(format!("a {source_type} source needs its uuid")));
            }
            "image" | "blank" if volume_size.unwrap_or(0) == 0 => {
                return Err(bad(format!(
                    "Images with destination_type 'volume' need to have a non-zero size specified ({source_type})"
                )));
            }
            "snapshot" => return Err(bad("booting from a volume snapshot is not supported by this cloud yet")),
            _ => {}
        }
        let delete_on_termination = match &b["delete_on_termination"] {
            Value::Bool(d) => *d,
            Value::String(s) => stratus_core::query::parse_bool(s).unwrap_or(false),
            _ => false,
        };
        out.push(Requested {
            source_type,
            uuid,
            volume_size,
            boot_index,
            delete_on_termination,
            tag: b["tag"].as_str().map(str::to_string),
        });
    }
    if out.iter().filter(|r| r.boot_index == Some(0)).count() > 1 {
        return Err(bad("more than one device has boot_index 0"));
    }
    Ok(out)
}

/// Checks what the volumes of `req` name before anything is made: existing volumes are
/// visible to the caller and available.
pub async fn check(volumes: &dyn VolumeApi, ctx: &RequestContext, req: &[Requested]) -> Result<()> {
    for r in req.iter().filter(|r| r.source_type == "volume") {
        let id = r.uuid.clone().unwrap_or_default();
        let v = volumes
            .get(ctx, &id)
            .await
            .map_err(|e| ComputeError::Unavailable(e.message))?
            .ok_or_else(|| bad(format!("failed to get volume {id}.")))?;
        if v.status != "available" {
            return Err(ComputeError::BadRequest(format!(
                "Invalid volume: volume {id} status must be available, but it is {}",
                v.status
            )));
        }
    }
    Ok(())
}

/// Records the requested volumes of server `inst` as pending mappings: the mappings.
pub async fn record(db: &Db, inst: &Instance, req: &[Requested]) -> Result<Vec<Bdm>> {
    let mut devices: Vec<Bdm> = Vec::new();
    for (n, r) in req.iter().enumerate() {
        let device = if r.boot_index == Some(0) { "/dev/vda".to_string() } else { store::next_device(&devices, 1) };
        let b = Bdm {
            uuid: uuid::Uuid::new_v4().to_string(),
            instance_uuid: inst.uuid.clone(),
            volume_id: if r.source_type == "volume" { r.uuid.clone().unwrap_or_default() } else { String::new() },
            attachment_id: None,
            source_type: r.source_type.clone(),
            boot_index: r.boot_index,
            device_name: Some(device),
            tag: r.tag.clone(),
            delete_on_termination: r.delete_on_termination,
            status: PENDING.into(),
            connection_info: None,
            // Ordered as requested.
            created_at: format!("{}.{n:03}", inst.created_at),
        };
        store::insert(db, &b).await?;
        store::set(
            db,
            &b.uuid,
            &[
                ("image_id", Arg::from(if r.source_type == "image" { r.uuid.clone() } else { None })),
                ("volume_size", Arg::from(r.volume_size.map(|s| s as i64))),
            ],
        )
        .await?;
        devices.push(b);
    }
    Ok(devices)
}

/// The server's owner, as the volume service sees a request made on their behalf.
fn owner(inst: &Instance) -> RequestContext {
    RequestContext {
        user_id: inst.user_id.clone(),
        project_id: Some(inst.project_id.clone()),
        roles: vec!["member".into(), "reader".into()],
        ..Default::default()
    }
}

fn failed(e: NetRefusal) -> String {
    e.message
}

/// Makes the pending mappings of `inst` (which has a host) real; Err: why the build
/// cannot go on.
pub async fn prepare(db: &Db, volumes: &dyn VolumeApi, inst: &Instance) -> std::result::Result<(), String> {
    let host = inst.host.clone().unwrap_or_default();
    let ctx = owner(inst);
    let pending: Vec<Bdm> = store::of_instance(db, &inst.uuid)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|b| b.status == PENDING)
        .collect();
    for mut b in pending {
        let db_err = |e: ComputeError| e.to_string();
        if b.volume_id.is_empty() {
            let (image, size) = store::source_of(db, &b.uuid).await.map_err(db_err)?;
            let name = format!("{}-{}", inst.name, if b.is_root() { "boot" } else { "volume" });
            let id = volumes.create(&ctx, size.unwrap_or(1), image.as_deref(), &name).await.map_err(failed)?;
            store::set(db, &b.uuid, &[("volume_id", Arg::from(id.clone()))]).await.map_err(db_err)?;
            b.volume_id = id;
        }
        if b.attachment_id.is_none() {
            volumes.wait_available(&ctx, &b.volume_id, CREATE_WAIT).await.map_err(failed)?;
            let a = volumes.reserve(&ctx, &b.volume_id, &inst.uuid).await.map_err(failed)?;
            store::set(db, &b.uuid, &[("attachment_id", Arg::from(a.clone()))]).await.map_err(db_err)?;
            b.attachment_id = Some(a);
        }
        let attachment = b.attachment_id.clone().unwrap_or_default();
        if b.connection_info.is_none() {
            let connector = serde_json::json!({"host": host, "platform": "x86_64", "os_type": "linux",
                "multipath": false, "mountpoint": b.device_name});
            let info = volumes.connect(&ctx, &attachment, &connector).await.map_err(failed)?;
            if serde_json::from_value::<VolumeConnection>(info.clone()).is_err() {
                return Err(format!(
                    "volume {} has connection type {}, which compute hosts cannot attach",
                    b.volume_id, info["driver_volume_type"]
                ));
            }
            store::set(db, &b.uuid, &[("connection_info", Arg::from(info.to_string()))]).await.map_err(db_err)?;
        }
        volumes.complete(&ctx, &attachment).await.map_err(failed)?;
        store::set(db, &b.uuid, &[("status", Arg::from(store::status::ATTACHED))]).await.map_err(db_err)?;
    }
    Ok(())
}
