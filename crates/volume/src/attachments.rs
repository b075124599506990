//! Attachments (`/attachments`, 3.27+): how a host gets at a volume, Nova's way.
//!
//! create (reserve: the volume becomes `reserved`) → update with the host's connector
//! (the volume's agent makes the volume reachable from that host and answers the
//! connection info; `attaching`) → `os-complete` (3.44; `in-use`) → delete (the agent
//! takes the connection back; `available` once no attachment is left). A create with
//! a connector does the first two at once. Every transition is a conditional update of
//! the volume row, so of two attachments racing for a volume that is not multiattach
//! exactly one wins. The legacy attach actions of the volume API (`os-attach`,
//! `os-detach`...) use the same rows.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{self, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::pagination::{PageSpec, SortDir};
use stratus_core::{ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::{Arg, Query, Tx};
use stratus_volume_contract::{AgentRequest, AttachMode, Connection, Connector};

use crate::body::{self, ts};
use crate::error::{bad, invalid_volume, not_found, VolError, VolResult};
use crate::manager;
use crate::policy::enforce;
use crate::sql::{self, Listing};
use crate::types::need;
use crate::volumes::store::{self, Volume};
use crate::{both, Vol, S};

/// An attachment row.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    /// Id.
    pub id: String,
    /// Volume.
    pub volume_id: String,
    /// Owner project (the volume's).
    pub project_id: String,
    /// Server.
    pub instance_uuid: Option<String>,
    /// Device in the guest.
    pub mountpoint: Option<String>,
    /// `reserved`, `attaching`, `attached`, `detaching`, `error_attaching`...
    pub attach_status: String,
    /// `rw` / `ro`.
    pub attach_mode: String,
    /// What the agent answered (JSON).
    pub connection_info: Option<String>,
    /// Attached.
    pub attach_time: Option<String>,
    /// Detached.
    pub detach_time: Option<String>,
}

impl Attachment {
    fn from_row(r: &AnyRow) -> Attachment {
        Attachment {
            id: sql::s(r, "id"),
            volume_id: sql::s(r, "volume_id"),
            project_id: sql::s(r, "project_id"),
            instance_uuid: sql::os(r, "instance_uuid"),
            mountpoint: sql::os(r, "mountpoint"),
            attach_status: sql::s(r, "attach_status"),
            attach_mode: sql::s(r, "attach_mode"),
            connection_info: sql::os(r, "connection_info"),
            attach_time: sql::os(r, "attach_time"),
            detach_time: sql::os(r, "detach_time"),
        }
    }
}

/// Attachment `id` (not deleted).
pub async fn get(vol: &Vol, id: &str) -> VolResult<Option<Attachment>> {
    let mut q = Query::new("SELECT * FROM volume_attachments WHERE deleted = 0 AND id = ");
    q.bind(id);
    Ok(q.fetch_optional(vol.db.reader()).await?.as_ref().map(Attachment::from_row))
}

/// The attachments (not deleted) of volume `volume_id`.
pub async fn of_volume<'e, E>(ex: E, volume_id: &str) -> VolResult<Vec<Attachment>>
where
    E: stratus_db::sqlx::Executor<'e, Database = stratus_db::sqlx::Any>,
{
    let mut q = Query::new("SELECT * FROM volume_attachments WHERE deleted = 0 AND volume_id = ");
    q.bind(volume_id).push(" ORDER BY created_at");
    Ok(q.fetch_all(ex).await?.iter().map(Attachment::from_row).collect())
}

fn view(a: &Attachment, detail: bool) -> Value {
    let mut v = json!({
        "id": a.id,
        "status": a.attach_status,
        "instance": a.instance_uuid,
        "volume_id": a.volume_id,
    });
    if detail {
        v["attached_at"] = ts(&a.attach_time);
        v["detached_at"] = ts(&a.detach_time);
        v["attach_mode"] = json!(a.attach_mode);
        v["connection_info"] =
            a.connection_info.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or(Value::Null);
    }
    v
}

/// What a new attachment row records (see [`insert`]).
pub(crate) struct NewAttachment<'a> {
    /// Attachment id.
    pub id: &'a str,
    /// Server the volume is attached to, if any.
    pub instance: Option<&'a str>,
    /// `attach_status` (`reserved`, `attaching`, `attached`...).
    pub status: &'a str,
    /// `rw` or `ro`.
    pub mode: &'a str,
    /// Device path in the guest.
    pub mountpoint: Option<&'a str>,
    /// Host the volume is attached on.
    pub host: Option<&'a str>,
}

/// Inserts an attachment of `v`.
pub(crate) async fn insert(tx: &mut Tx, v: &Volume, a: NewAttachment<'_>) -> VolResult<()> {
    let NewAttachment { id, instance, status, mode, mountpoint, host } = a;
    let now = stratus_core::time::now();
    let mut q = Query::new(
        "INSERT INTO volume_attachments (id, volume_id, project_id, instance_uuid, attached_host, mountpoint, attach_status, attach_mode, attach_time, created_at, updated_at) VALUES (",
    );
    q.bind(id).push(", ").bind(&v.id).push(", ").bind(&v.project_id).push(", ").bind(instance.map(str::to_string));
    q.push(", ").bind(host.map(str::to_string)).push(", ").bind(mountpoint.map(str::to_string)).push(", ").bind(status);
    q.push(", ").bind(mode).push(", ");
    q.bind(if status == "attached" { Some(now.clone()) } else { None })
        .push(", ")
        .bind(&now)
        .push(", ")
        .bind(&now)
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Sets columns of attachment `id`.
pub(crate) async fn set(tx: &mut Tx, id: &str, cols: &[(&str, Arg)]) -> VolResult<()> {
    let mut q = Query::new("UPDATE volume_attachments SET updated_at = ");
    q.bind(stratus_core::time::now());
    for (c, v) in cols {
        q.push(&format!(", {c} = ")).bind(v.clone());
    }
    q.push(" WHERE id = ").bind(id);
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Makes volume `v` reachable from `connector`'s host for attachment `att`; answers
/// the connection info (with `access_mode`, `qos_specs` and the ids added, as Cinder's).
pub(crate) async fn connect(vol: &S, v: &Volume, att: &str, connector: &Connector, mode: &str) -> VolResult<Value> {
    let backend = v.backend().ok_or_else(|| invalid_volume(format!("volume {} is not on any backend", v.id)))?;
    let mode_t = if mode == "ro" { AttachMode::Ro } else { AttachMode::Rw };
    let req = AgentRequest::InitializeConnection {
        volume: v.as_ref(),
        attachment_id: att.to_string(),
        connector: connector.clone(),
        mode: mode_t,
    };
    let c: Connection = manager::call(vol, &backend, &req, false)
        .await
        .map_err(|e| VolError::Unavailable(format!("the volume's backend could not connect it: {e}")))?;
    let mut info = serde_json::to_value(&c).unwrap_or(Value::Null);
    info["data"]["access_mode"] = json!(mode);
    info["data"]["volume_id"] = json!(v.id);
    info["data"]["attachment_id"] = json!(att);
    info["data"]["encrypted"] = json!(false);
    info["data"]["qos_specs"] = match crate::qos::front_end_of_type(vol, &v.volume_type_id).await? {
        Some(q) => body::map_json(&q),
        None => Value::Null,
    };
    info["attachment_id"] = json!(att);
    Ok(info)
}

/// Takes back the connection of attachment `a` (best effort when the agent is gone:
/// its reconciliation stops exports nobody expects).
pub(crate) async fn disconnect(vol: &S, v: &Volume, a: &Attachment) {
    if a.connection_info.is_none() {
        return;
    }
    let Some(backend) = v.backend() else { return };
    let req = AgentRequest::TerminateConnection { volume: v.as_ref(), attachment_id: a.id.clone() };
    if let Err(e) = manager::call::<Value>(vol, &backend, &req, false).await {
        tracing::warn!(attachment = %a.id, error = %e, "terminate_connection failed; the agent's reconciliation will stop the export");
    }
}

/// Removes attachment `a` of volume `v`; the volume becomes `available` when it was the
/// last (`in-use` otherwise).
pub(crate) async fn remove(vol: &S, v: &Volume, a: &Attachment) -> VolResult<()> {
    disconnect(vol, v, a).await;
    let (aid, vid) = (a.id.clone(), v.id.clone());
    vol.db
        .transaction(|tx| {
            let (aid, vid) = (aid.clone(), vid.clone());
            Box::pin(async move {
                let now = stratus_core::time::now();
                set(
                    tx,
                    &aid,
                    &[
                        ("deleted", Arg::from(true)),
                        ("deleted_at", Arg::from(now.clone())),
                        ("attach_status", Arg::from("detached")),
                        ("detach_time", Arg::from(now)),
                    ],
                )
                .await?;
                settle_volume(tx, &vid).await
            })
        })
        .await
}

/// The volume's status and attach status from its remaining attachments.
pub(crate) async fn settle_volume(tx: &mut Tx, vid: &str) -> VolResult<()> {
    let left = of_volume(&mut **tx, vid).await?;
    let attached = left.iter().any(|a| a.attach_status == "attached");
    let (status, attach) = if attached {
        ("in-use", "attached")
    } else if let Some(a) = left.first() {
        (if a.attach_status == "reserved" { "reserved" } else { "attaching" }, "attaching")
    } else {
        ("available", "detached")
    };
    let v = store::get_tx(tx, vid).await?;
    // A volume an admin reset to another status keeps it.
    if v.is_some_and(|v| ["in-use", "available", "reserved", "attaching", "detaching"].contains(&v.status.as_str())) {
        store::set(tx, vid, &[("status", Arg::from(status)), ("attach_status", Arg::from(attach))]).await?;
    } else {
        store::set(tx, vid, &[("attach_status", Arg::from(attach))]).await?;
    }
    Ok(())
}

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/attachments", routing::get(list).post(create));
    r = both(r, "/attachments/detail", routing::get(list_detail));
    r = both(r, "/attachments/{id}", routing::get(show).put(update).delete(delete));
    r = both(r, "/attachments/{id}/action", post(action));
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

const PAGES: PageSpec = PageSpec {
    sort_keys: &[
        ("id", "id"),
        ("created_at", "created_at"),
        ("volume_id", "volume_id"),
        ("instance_uuid", "instance_uuid"),
    ],
    default_sort: &[("created_at", SortDir::Desc)],
    default_limit: 1000,
    max_limit: 1000,
};

async fn listing(
    vol: S,
    ctx: RequestContext,
    ver: ApiVersion,
    uri: Uri,
    q: QueryPairs,
    detail: bool,
) -> VolResult<Json<Value>> {
    need(ver, 3, 27)?;
    enforce(&vol.policy, "volume:attachment_get", &ctx, None)?;
    let listing = Listing::parse(&PAGES, &q)?;
    let mut sq = Query::new("SELECT * FROM volume_attachments WHERE deleted = 0");
    crate::volumes::scope(&ctx, &q, "project_id", &mut sq)?;
    for (k, col) in [("volume_id", "volume_id"), ("instance_id", "instance_uuid"), ("status", "attach_status")] {
        if let Some(v) = q.get(k) {
            sq.push(&format!(" AND {col} = ")).bind(v.to_string());
        }
    }
    listing.finish(&mut sq, vol.db.reader(), "volume_attachments", "id", "attachment").await?;
    let rows: Vec<Attachment> = sq.fetch_all(vol.db.reader()).await?.iter().map(Attachment::from_row).collect();
    let (rows, links) = listing.links(rows, |a| a.id.clone(), &vol.base, uri.path(), &q);
    let mut out = json!({"attachments": rows.iter().map(|a| view(a, detail)).collect::<Vec<_>>()});
    if let Some(l) = links {
        out["attachments_links"] = l;
    }
    Ok(Json(out))
}

async fn list(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, uri: Uri, q: QueryPairs) -> VolResult<Json<Value>> {
    listing(vol, ctx, ver, uri, q, false).await
}

async fn list_detail(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    uri: Uri,
    q: QueryPairs,
) -> VolResult<Json<Value>> {
    listing(vol, ctx, ver, uri, q, true).await
}

async fn visible(vol: &Vol, ctx: &RequestContext, id: &str) -> VolResult<Attachment> {
    match get(vol, id).await? {
        Some(a) if ctx.is_admin() || ctx.project_id.as_deref() == Some(a.project_id.as_str()) => Ok(a),
        _ => Err(VolError::NotFound(format!("VolumeAttachment {id} could not be found."))),
    }
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    need(ver, 3, 27)?;
    let a = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:attachment_get", &ctx, Some(&a.project_id))?;
    Ok(Json(json!({"attachment": view(&a, true)})))
}

fn connector_of(v: Option<&Value>) -> VolResult<Option<Connector>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(c @ Value::Object(_)) => {
            serde_json::from_value(c.clone()).map(Some).map_err(|e| bad(format!("Invalid connector: {e}")))
        }
        Some(_) => Err(bad("Invalid connector: it must be an object")),
    }
}

async fn create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    need(ver, 3, 27)?;
    enforce(&vol.policy, "volume:attachment_create", &ctx, None)?;
    let m = body::obj(&b, "attachment")?;
    let vid = body::opt_str(m, "volume_uuid")?.ok_or_else(|| bad("Missing required element 'volume_uuid'"))?;
    let instance = body::opt_str(m, "instance_uuid")?;
    let connector = connector_of(m.get("connector"))?;
    let mode =
        if ver.at_least(3, 54) { body::opt_str(m, "mode")?.unwrap_or_else(|| "null".into()) } else { "null".into() };
    let v = store::visible(&vol, &ctx, &vid).await?;
    let mode = match mode.as_str() {
        "rw" | "ro" => mode,
        "null" => {
            if v.readonly == Some(true) {
                "ro".into()
            } else {
                "rw".into()
            }
        }
        other => return Err(bad(format!("Invalid attachment mode {other:?}: use rw or ro"))),
    };
    if mode == "rw" && v.readonly == Some(true) {
        return Err(invalid_volume(format!("Volume {} is read-only; attach it with mode ro", v.id)));
    }
    let id = body::new_id();
    let from: &[&str] = if v.multiattach { &["available", "in-use", "reserved"] } else { &["available"] };
    let to = if connector.is_some() { "attaching" } else { "reserved" };
    {
        let (vid, id, instance, mode) = (v.id.clone(), id.clone(), instance.clone(), mode.clone());
        vol.db
            .transaction(|tx| {
                let (vid, id, instance, mode) = (vid.clone(), id.clone(), instance.clone(), mode.clone());
                Box::pin(async move {
                    let cur = store::get_tx(tx, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
                    let target = if cur.status == "in-use" { "in-use" } else { to };
                    let v = store::transition(tx, &vid, from, target, &[]).await.map_err(|_| {
                        invalid_volume(format!(
                            "Volume {vid} status must be available{} to reserve, but the current status is {}.",
                            if cur.multiattach { " or in-use" } else { "" },
                            cur.status
                        ))
                    })?;
                    if instance.is_some() && v.multiattach {
                        let dup = of_volume(&mut **tx, &vid).await?.into_iter().any(|a| a.instance_uuid == instance);
                        if dup {
                            return Err(invalid_volume(format!("Volume {vid} is already attached to this server")));
                        }
                    }
                    let row = NewAttachment {
                        id: &id,
                        instance: instance.as_deref(),
                        status: "reserved",
                        mode: &mode,
                        mountpoint: None,
                        host: None,
                    };
                    insert(tx, &v, row).await
                })
            })
            .await?;
    }
    if let Some(c) = connector {
        if let Err(e) = update_connector(&vol, &id, &c).await {
            // A failed connection leaves no reservation behind.
            if let (Ok(Some(a)), Ok(Some(v))) = (get(&vol, &id).await, store::get(&vol, &v.id).await) {
                let _ = remove(&vol, &v, &a).await;
            }
            return Err(e);
        }
    }
    let a = get(&vol, &id).await?.ok_or_else(|| not_found("Attachment", &id))?;
    Ok(Json(json!({"attachment": view(&a, true)})))
}

/// Connects attachment `id` to the host `connector` describes.
async fn update_connector(vol: &S, id: &str, connector: &Connector) -> VolResult<()> {
    let a =
        get(vol, id).await?.ok_or_else(|| VolError::NotFound(format!("VolumeAttachment {id} could not be found.")))?;
    let v = store::get(vol, &a.volume_id).await?.ok_or_else(|| not_found("Volume", &a.volume_id))?;
    let info = connect(vol, &v, id, connector, &a.attach_mode).await?;
    let mut tx = vol.db.begin().await?;
    let mountpoint = connector.extra.get("mountpoint").and_then(Value::as_str).map(str::to_string);
    set(
        &mut tx,
        id,
        &[
            ("connector", Arg::from(serde_json::to_string(connector).unwrap_or_default())),
            ("connection_info", Arg::from(info.to_string())),
            ("attached_host", Arg::from(connector.host.clone())),
            ("mountpoint", Arg::from(mountpoint.or(a.mountpoint.clone()))),
            ("attach_status", Arg::from("attaching")),
        ],
    )
    .await?;
    if v.status == "reserved" {
        store::set(&mut tx, &v.id, &[("status", Arg::from("attaching")), ("attach_status", Arg::from("attaching"))])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    need(ver, 3, 27)?;
    let a = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:attachment_update", &ctx, Some(&a.project_id))?;
    let m = body::obj(&b, "attachment")?;
    let connector = connector_of(m.get("connector"))?.ok_or_else(|| bad("Missing required element 'connector'"))?;
    if !["reserved", "attaching", "attached"].contains(&a.attach_status.as_str()) {
        return Err(invalid_volume(format!("Attachment {} is {}; it cannot be connected", a.id, a.attach_status)));
    }
    update_connector(&vol, &a.id, &connector).await?;
    let a = visible(&vol, &ctx, &p.id).await?;
    Ok(Json(json!({"attachment": view(&a, true)})))
}

async fn action(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<StatusCode> {
    need(ver, 3, 44)?;
    if b.get("os-complete").is_none() {
        return Err(bad("There is no such action: attachments take os-complete"));
    }
    let a = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:attachment_complete", &ctx, Some(&a.project_id))?;
    complete(&vol, &a).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks attachment `a` attached and its volume `in-use`.
pub(crate) async fn complete(vol: &S, a: &Attachment) -> VolResult<()> {
    let mut tx = vol.db.begin().await?;
    set(
        &mut tx,
        &a.id,
        &[("attach_status", Arg::from("attached")), ("attach_time", Arg::from(stratus_core::time::now()))],
    )
    .await?;
    store::set(&mut tx, &a.volume_id, &[("status", Arg::from("in-use")), ("attach_status", Arg::from("attached"))])
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn delete(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    need(ver, 3, 27)?;
    let a = visible(&vol, &ctx, &p.id).await?;
    enforce(&vol.policy, "volume:attachment_delete", &ctx, Some(&a.project_id))?;
    let v = store::get(&vol, &a.volume_id).await?.ok_or_else(|| not_found("Volume", &a.volume_id))?;
    remove(&vol, &v, &a).await?;
    let left = of_volume(vol.db.reader(), &v.id).await?;
    Ok(Json(json!({"attachments": left.iter().map(|a| view(a, false)).collect::<Vec<_>>()})))
}
