//! `POST /servers/{id}/action`: each action checks the state machine, records an
//! instance action and its task_state in one transaction, then hands the work to the
//! conductor. Synchronous actions (lock, resetState, console output) answer directly.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_compute_proto::rpc::GuestOp;
use stratus_core::{ApiError, ApiVersion, OsJson, RequestContext, RequestId};

use super::store::{self, Instance, Update};
use super::{authorized, check_lock, events, request_id};
use crate::error::{ComputeError, Result};
use crate::state::{self, Transition};
use crate::AppState;

/// Starts `t` on `inst`: CAS to the task state + instance action, then dispatch `op`.
pub(super) async fn begin(
    st: &AppState,
    ctx: &RequestContext,
    inst: &Instance,
    t: Transition,
    op: GuestOp,
    rid: &str,
    extra: Update,
) -> Result<()> {
    t.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
    if inst.host.is_none() {
        return Err(ComputeError::Conflict(format!("Instance {} is not on a compute host", inst.uuid)));
    }
    let (uuid, user, project, rid2) =
        (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone(), rid.to_string());
    let mut u = extra;
    if let Some(task) = t.task {
        u = u.set("task_state", task);
    }
    let u = u.expect_task(None).expect_vm(t.from);
    let ok = st
        .platform
        .db
        .transaction(|tx| {
            let (uuid, user, project, rid, u) = (uuid.clone(), user.clone(), project.clone(), rid2.clone(), u.clone());
            Box::pin(async move {
                if !u.apply_tx(tx, &uuid).await? {
                    return Ok(false);
                }
                events::start_action(tx, &uuid, t.action, &rid, &user, &project).await?;
                Ok::<_, ComputeError>(true)
            })
        })
        .await?;
    if !ok {
        // Somebody else changed the server between our read and the update.
        let now = store::must_load(&st.platform.db, &inst.uuid).await?;
        t.check(&now.uuid, &now.vm_state, now.task_state.as_deref())?;
        return Err(ComputeError::Conflict(format!("Instance {} changed state concurrently; retry", inst.uuid)));
    }
    let fresh = store::must_load(&st.platform.db, &inst.uuid).await?;
    st.conductor.dispatch(&fresh, op, rid, t.action).await;
    Ok(())
}

/// The action dispatcher.
pub async fn action(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    rid: Option<Extension<RequestId>>,
    Path(id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Response, ApiError> {
    let obj = body.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        ComputeError::BadRequest("The action body must have exactly one key naming the action".into())
    })?;
    let (name, args) = obj.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap_or_default();
    let rid = request_id(&rid);
    let accepted = || Ok(StatusCode::ACCEPTED.into_response());
    macro_rules! simple {
        ($rule:expr, $t:expr, $op:expr) => {{
            let inst = authorized(&st, &ctx, &id, $rule).await?;
            check_lock(&st, &ctx, &inst)?;
            begin(&st, &ctx, &inst, $t, $op, &rid, Update::new()).await?;
            accepted()
        }};
    }
    match name.as_str() {
        "os-stop" => simple!("os_compute_api:servers:stop", state::STOP, GuestOp::PowerOff { timeout_secs: 60 }),
        "os-start" => simple!("os_compute_api:servers:start", state::START, GuestOp::PowerOn),
        "pause" => simple!("os_compute_api:os-pause-server:pause", state::PAUSE, GuestOp::Pause),
        "unpause" => simple!("os_compute_api:os-pause-server:unpause", state::UNPAUSE, GuestOp::Unpause),
        "suspend" => simple!("os_compute_api:os-suspend-server:suspend", state::SUSPEND, GuestOp::Suspend),
        "resume" => simple!("os_compute_api:os-suspend-server:resume", state::RESUME, GuestOp::Resume),
        "unrescue" => simple!("os_compute_api:os-unrescue", state::UNRESCUE, GuestOp::Unrescue),
        "trigger_crash_dump" => {
            if !v.at_least(2, 17) {
                return Err(ComputeError::BadRequest("trigger_crash_dump requires microversion 2.17".into()).into());
            }
            let inst = authorized(&st, &ctx, &id, "os_compute_api:servers:trigger_crash_dump").await?;
            check_lock(&st, &ctx, &inst)?;
            state::CRASH_DUMP.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
            st.conductor.dispatch(&inst, GuestOp::TriggerCrashDump, &rid, "trigger_crash_dump").await;
            accepted()
        }
        "reboot" => {
            let hard = match args["type"].as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("HARD") => true,
                Some("SOFT") => false,
                _ => {
                    return Err(ComputeError::BadRequest(
                        "Invalid input for field/attribute reboot.type: must be SOFT or HARD".into(),
                    )
                    .into())
                }
            };
            let t = if hard { state::REBOOT_HARD } else { state::REBOOT_SOFT };
            simple!("os_compute_api:servers:reboot", t, GuestOp::Reboot { hard })
        }
        "rescue" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:os-rescue").await?;
            check_lock(&st, &ctx, &inst)?;
            let image = match args["rescue_image_ref"].as_str() {
                Some(r) => Some(
                    st.backends
                        .images
                        .get(&ctx, r)
                        .await
                        .map_err(|e| ComputeError::Unavailable(e.0))?
                        .ok_or_else(|| ComputeError::BadRequest(format!("Image {r} could not be found.")))?,
                ),
                None => None,
            };
            let pass = args["adminPass"].as_str().map(str::to_string).unwrap_or_else(super::generate_password);
            begin(
                &st,
                &ctx,
                &inst,
                state::RESCUE,
                GuestOp::Rescue { image, admin_pass: Some(pass.clone()) },
                &rid,
                Update::new(),
            )
            .await?;
            Ok((StatusCode::OK, Json(json!({"adminPass": pass}))).into_response())
        }
        "lock" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:os-lock-server:lock").await?;
            let reason = if v.at_least(2, 73) { args["locked_reason"].as_str().map(str::to_string) } else { None };
            if reason.as_ref().is_some_and(|r| r.len() > 255) {
                return Err(ComputeError::BadRequest("locked_reason is longer than 255 characters".into()).into());
            }
            let by = if ctx.is_admin() && ctx.project_id.as_deref() != Some(inst.project_id.as_str()) {
                "admin"
            } else {
                "owner"
            };
            Update::new()
                .set("locked", true)
                .set("locked_by", by)
                .set("locked_reason", reason)
                .apply(&st.platform.db, &inst.uuid)
                .await?;
            record_sync(&st, &ctx, &inst, "lock", &rid).await?;
            accepted()
        }
        "unlock" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:os-lock-server:unlock").await?;
            // An owner cannot remove an admin's lock.
            if inst.locked
                && inst.locked_by.as_deref() == Some("admin")
                && !st.policy.check("os_compute_api:os-lock-server:unlock:unlock_override", &ctx, &inst.target())
            {
                return Err(ApiError::forbidden(
                    "Policy doesn't allow os_compute_api:os-lock-server:unlock:unlock_override to be performed.",
                ));
            }
            Update::new()
                .set("locked", false)
                .set("locked_by", Option::<String>::None)
                .set("locked_reason", Option::<String>::None)
                .apply(&st.platform.db, &inst.uuid)
                .await?;
            record_sync(&st, &ctx, &inst, "unlock", &rid).await?;
            accepted()
        }
        "injectNetworkInfo" => {
            // Nova re-sends the network configuration to the hypervisor. Guests here learn
            // it from DHCP and the metadata service, which always serve the ports' current
            // state, so there is nothing to push: the action is checked and recorded.
            let inst = authorized(&st, &ctx, &id, "os_compute_api:os-admin-actions:inject_network_info").await?;
            record_sync(&st, &ctx, &inst, "injectNetworkInfo", &rid).await?;
            accepted()
        }
        "os-resetState" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:os-admin-actions:reset_state").await?;
            let to = match args["state"].as_str() {
                Some("active") => state::vm::ACTIVE,
                Some("error") => state::vm::ERROR,
                _ => return Err(ComputeError::BadRequest("Invalid state: use active or error".into()).into()),
            };
            Update::new()
                .set("vm_state", to)
                .set("task_state", Option::<String>::None)
                .apply(&st.platform.db, &inst.uuid)
                .await?;
            record_sync(&st, &ctx, &inst, "resetState", &rid).await?;
            accepted()
        }
        "os-getConsoleOutput" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:os-console-output").await?;
            // Nova's schema: an integer (or integer string) >= -1; -1 means everything.
            let n = match &args["length"] {
                Value::Null => None,
                Value::Number(n) => Some(n.as_i64()),
                Value::String(s) => Some(s.trim().parse::<i64>().ok()),
                _ => Some(None),
            };
            let length = match n {
                None => None,
                Some(Some(n)) if n >= -1 => Some(if n < 0 { usize::MAX } else { n as usize }),
                Some(_) => {
                    return Err(ComputeError::BadRequest(format!(
                        "Invalid length {}: an integer of at least -1 (-1 for the whole log)",
                        args["length"]
                    ))
                    .into())
                }
            };
            let out = st.conductor.console_output(&inst, length.filter(|l| *l != usize::MAX)).await?;
            Ok(Json(json!({"output": out})).into_response())
        }
        "createImage" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:servers:create_image").await?;
            check_lock(&st, &ctx, &inst)?;
            state::SNAPSHOT.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
            let name = args["name"]
                .as_str()
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| ComputeError::BadRequest("createImage requires a name".into()))?;
            if name.chars().count() > 255 || name.trim() != name {
                return Err(ComputeError::BadRequest(
                    "Invalid image name: 1 to 255 characters, without leading or trailing spaces".into(),
                )
                .into());
            }
            // The snapshot's own properties, then the caller's metadata over them (as Nova
            // merges them: `{"image_type": "test"}` is kept as given).
            let mut props = json!({
                "image_type": "snapshot",
                "instance_uuid": inst.uuid,
                "base_image_ref": inst.image_ref,
                "owner_user_name": ctx.user_name,
            });
            snapshot_minimums(&mut props, &inst);
            if !args["metadata"].is_null() {
                check_image_metadata(&args["metadata"])?;
                for (k, v) in args["metadata"].as_object().into_iter().flatten() {
                    props[k] = v.clone();
                }
            }
            if super::volumes::snapshot::volume_backed(&inst) {
                let image_id = super::volumes::snapshot::create_image(&st, &ctx, &inst, name, props)
                    .await
                    .map_err(super::interfaces::refused)?;
                let loc = format!("{}/image/v2/images/{image_id}", st.platform.public_url);
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    h.insert("location", v);
                }
                return if v.at_least(2, 45) {
                    Ok((StatusCode::ACCEPTED, h, Json(json!({"image_id": image_id}))).into_response())
                } else {
                    Ok((StatusCode::ACCEPTED, h).into_response())
                };
            }
            let image_id =
                st.backends.images.create_snapshot(&ctx, name, &props).await.map_err(super::interfaces::refused)?;
            begin(
                &st,
                &ctx,
                &inst,
                state::SNAPSHOT,
                GuestOp::Snapshot { image_id: image_id.clone() },
                &rid,
                Update::new(),
            )
            .await?;
            let loc = format!("{}/image/v2/images/{image_id}", st.platform.public_url);
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                h.insert("location", v);
            }
            if v.at_least(2, 45) {
                Ok((StatusCode::ACCEPTED, h, Json(json!({"image_id": image_id}))).into_response())
            } else {
                Ok((StatusCode::ACCEPTED, h).into_response())
            }
        }
        "createBackup" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:os-create-backup").await?;
            check_lock(&st, &ctx, &inst)?;
            state::SNAPSHOT.check(&inst.uuid, &inst.vm_state, inst.task_state.as_deref())?;
            let b = super::backups::parse(&args)?;
            let mut props = match &args["metadata"] {
                Value::Null => json!({}),
                m => {
                    check_image_metadata(m)?;
                    m.clone()
                }
            };
            snapshot_minimums(&mut props, &inst);
            props["image_type"] = json!("backup");
            props["backup_type"] = json!(b.backup_type);
            props["instance_uuid"] = json!(inst.uuid);
            props["base_image_ref"] = json!(inst.image_ref);
            props["owner_user_name"] = json!(ctx.user_name);
            let image_id =
                st.backends.images.create_snapshot(&ctx, &b.name, &props).await.map_err(super::interfaces::refused)?;
            super::backups::remember(&st.platform.db, &rid, &inst.uuid, &image_id, &b).await?;
            let started = begin(
                &st,
                &ctx,
                &inst,
                state::SNAPSHOT,
                GuestOp::Snapshot { image_id: image_id.clone() },
                &rid,
                Update::new(),
            )
            .await;
            if let Err(e) = started {
                super::backups::forget(&st.platform.db, &rid).await?;
                return Err(e.into());
            }
            let mut h = HeaderMap::new();
            // No location when rotation 0: the rotation deletes the new backup too.
            if b.rotation > 0 && !v.at_least(2, 45) {
                let loc = format!("{}/v2.1/images/{image_id}", st.platform.service_url("/compute"));
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    h.insert("location", v);
                }
            }
            if v.at_least(2, 45) {
                Ok((StatusCode::ACCEPTED, h, Json(json!({"image_id": image_id}))).into_response())
            } else {
                Ok((StatusCode::ACCEPTED, h).into_response())
            }
        }
        "rebuild" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:servers:rebuild").await?;
            check_lock(&st, &ctx, &inst)?;
            if !matches!(args["adminPass"], Value::Null | Value::String(_)) {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid adminPass {}: a string is required",
                    args["adminPass"]
                ))
                .into());
            }
            if v.at_least(2, 57) && !args["personality"].is_null() {
                return Err(ComputeError::BadRequest(
                    "personality was removed at microversion 2.57: pass files in user_data instead".into(),
                )
                .into());
            }
            let image_ref = args["imageRef"]
                .as_str()
                .map(|i| i.rsplit('/').next().unwrap_or(i).to_string())
                .ok_or_else(|| ComputeError::BadRequest("rebuild requires imageRef".into()))?;
            let image = st
                .backends
                .images
                .get(&ctx, &image_ref)
                .await
                .map_err(|e| ComputeError::Unavailable(e.0))?
                .ok_or_else(|| ComputeError::BadRequest(format!("Image {image_ref} could not be found.")))?;
            super::check_flavor_fits_image(&inst.flavor, &image)?;
            let mut u = Update::new().set("image_ref", image_ref.clone()).set("image_json", json!(image).to_string());
            if let Some(auto) = super::disk_config(&args["OS-DCF:diskConfig"])? {
                u = u.set("auto_disk_config", auto);
            }
            if let Some(n) = args["name"].as_str() {
                u = u.set("name", n);
            }
            begin(&st, &ctx, &inst, state::REBUILD, GuestOp::Rebuild, &rid, u).await?;
            let i = store::must_load(&st.platform.db, &id).await?;
            let base = st.platform.service_url("/compute");
            let mut b = [super::view::detail(&i, &base, v, super::is_admin_view(&st, &ctx))];
            super::interfaces::decorate(&st, std::slice::from_ref(&i), &mut b).await;
            let [mut body] = b;
            if v.at_least(2, 71) {
                body["server_groups"] = json!(crate::server_groups::of_instance(&st.platform.db, &i.uuid).await?);
            }
            super::view::shape(&mut body, &i, v, super::view::Shape::Rebuild);
            body["adminPass"] = json!(i.admin_pass);
            Ok((StatusCode::ACCEPTED, Json(json!({"server": body}))).into_response())
        }
        "resize" => super::moves::resize(&st, &ctx, &id, &args, &rid).await,
        "confirmResize" => super::moves::confirm_resize(&st, &ctx, &id, &rid).await,
        "revertResize" => super::moves::revert_resize(&st, &ctx, &id, &rid).await,
        "migrate" => super::moves::migrate(&st, &ctx, v, &id, &args, &rid).await,
        "os-migrateLive" => super::moves::live_migrate(&st, &ctx, v, &id, &args, &rid).await,
        "evacuate" => super::moves::evacuate(&st, &ctx, v, &id, &args, &rid).await,
        "shelve" => super::shelve::shelve(&st, &ctx, &id, &rid).await,
        "shelveOffload" => super::shelve::shelve_offload(&st, &ctx, &id, &rid).await,
        "unshelve" => super::shelve::unshelve(&st, &ctx, v, &id, &args, &rid).await,
        "addFloatingIp" | "removeFloatingIp" => {
            let inst = authorized(&st, &ctx, &id, "os_compute_api:servers:show").await?;
            if name == "addFloatingIp" {
                crate::floating_ip_proxy::add(&st, &ctx, v, &inst, &args).await?;
            } else {
                crate::floating_ip_proxy::remove_from(&st, &ctx, v, &inst, &args).await?;
            }
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "addSecurityGroup" => super::security_groups::change(&st, &ctx, &id, &args, &rid, true).await,
        "removeSecurityGroup" => super::security_groups::change(&st, &ctx, &id, &args, &rid, false).await,
        "restore" | "forceDelete" => super::deferred::action(&st, &ctx, &id, &name, &rid).await,
        "changePassword" => super::deferred::change_password(&st, &ctx, &id, &args).await,
        "os-getVNCConsole" | "os-getSPICEConsole" | "os-getRDPConsole" | "os-getSerialConsole" => {
            legacy_console(&st, &ctx, v, &id, &name, &args).await
        }
        other => Err(ComputeError::BadRequest(format!("There is no such action: {other}")).into()),
    }
}

/// Records an action that completes inside the API call.
async fn record_sync(st: &AppState, ctx: &RequestContext, inst: &Instance, action: &str, rid: &str) -> Result<()> {
    let (uuid, user, project, rid2, action2) =
        (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone(), rid.to_string(), action.to_string());
    st.platform
        .db
        .transaction(|tx| {
            let (uuid, user, project, rid, action) =
                (uuid.clone(), user.clone(), project.clone(), rid2.clone(), action2.clone());
            Box::pin(async move { events::start_action(tx, &uuid, &action, &rid, &user, &project).await })
        })
        .await?;
    events::finish_event(&st.platform.db, &inst.uuid, rid, &format!("api_{action}"), None, true).await
}

/// `POST /servers/{id}/remote-consoles` (microversion 2.6+).
pub async fn remote_console(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let rc = b.get("remote_console").filter(|r| r.is_object()).ok_or_else(|| {
        ComputeError::BadRequest("Invalid input for field/attribute remote_console: it is a required object".into())
    })?;
    let field = |k: &str| {
        rc[k].as_str().map(str::to_string).ok_or_else(|| {
            ComputeError::BadRequest(format!("Invalid input for field/attribute {k}: it is a required string"))
        })
    };
    let (protocol, kind) = (field("protocol")?, field("type")?);
    let (mut protocols, mut kinds) =
        (vec!["vnc", "spice", "rdp", "serial"], vec!["novnc", "xvpvnc", "rdp-html5", "spice-html5", "serial"]);
    if v.at_least(2, 8) {
        protocols.push("mks");
        kinds.push("webmks");
    }
    for (name, value, allowed) in [("protocol", &protocol, &protocols), ("type", &kind, &kinds)] {
        if !allowed.contains(&value.as_str()) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {name}. Value: {value}. '{value}' is not one of {allowed:?}"
            ))
            .into());
        }
    }
    let inst = authorized(&st, &ctx, &id, "os_compute_api:os-remote-consoles").await?;
    let url = novnc_url(&st, &inst, &protocol, &kind).await?;
    Ok(Json(json!({"remote_console": {"protocol": protocol, "type": kind, "url": url}})))
}

/// The legacy console actions (`os-getVNCConsole` & co., microversions 2.1–2.5; older
/// SDKs use them when the cloud does not advertise 2.6).
async fn legacy_console(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    id: &str,
    name: &str,
    args: &Value,
) -> Result<Response, ApiError> {
    if v.at_least(2, 6) {
        return Err(ComputeError::NotFound(format!(
            "There is no such action: {name} (removed in microversion 2.6; use POST /servers/{{id}}/remote-consoles)"
        ))
        .into());
    }
    let kind = args["type"].as_str().ok_or_else(|| {
        ComputeError::BadRequest(format!("Invalid input for field/attribute {name}: 'type' is a required property"))
    })?;
    let protocol = match name {
        "os-getVNCConsole" => "vnc",
        "os-getSPICEConsole" => "spice",
        "os-getRDPConsole" => "rdp",
        _ => "serial",
    };
    let inst = authorized(st, ctx, id, "os_compute_api:os-remote-consoles").await?;
    let url = novnc_url(st, &inst, protocol, kind).await?;
    Ok(Json(json!({"console": {"type": kind, "url": url}})).into_response())
}

/// A noVNC console URL for `inst`, or Nova's answer for console types this cloud lacks
/// (400 "Unavailable console type": no SPICE, RDP, serial or MKS proxy runs here).
async fn novnc_url(st: &AppState, inst: &Instance, protocol: &str, kind: &str) -> Result<String> {
    match (protocol, kind) {
        ("vnc", "novnc") => {}
        ("vnc", other) => return Err(ComputeError::BadRequest(format!("Invalid console type {other}"))),
        (_, other) => {
            return Err(ComputeError::BadRequest(format!(
                "Unavailable console type {other}. This cloud offers protocol vnc, type novnc"
            )))
        }
    }
    if !crate::consoles::console_ready(&inst.vm_state) {
        return Err(ComputeError::Conflict(format!(
            "Instance {} is not ready for a console (vm_state {})",
            inst.uuid, inst.vm_state
        )));
    }
    let token = st.conductor.vnc_console_token(inst).await?;
    Ok(crate::consoles::console_url(&st.platform.public_url, &st.cfg.vnc, &token))
}

/// Nova's checks of `createImage` metadata: an object of at most 128 items (its image
/// metadata quota, 403), keys of 1–255 characters from `[a-zA-Z0-9-_:. ]`, string values
/// of at most 255 characters (400).
fn check_image_metadata(m: &Value) -> Result<()> {
    let obj = m.as_object().ok_or_else(|| ComputeError::BadRequest("createImage metadata must be an object".into()))?;
    for (k, v) in obj {
        let key_ok = (1..=255).contains(&k.chars().count())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c));
        if !key_ok {
            return Err(ComputeError::BadRequest(format!(
                "Invalid metadata key {k:?}: 1 to 255 characters of letters, digits, '-', '_', ':', '.' and spaces"
            )));
        }
        if v.as_str().is_none_or(|s| s.chars().count() > 255) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid metadata value for {k}: a string of at most 255 characters"
            )));
        }
    }
    if obj.len() > 128 {
        return Err(ComputeError::Forbidden(format!(
            "Image metadata limit exceeded: at most 128 items, {} given",
            obj.len()
        )));
    }
    Ok(())
}

/// A snapshot needs what its server's image needed: the base image's `min_ram`, and a
/// `min_disk` of at least the server's root disk (Nova copies them the same way).
fn snapshot_minimums(props: &mut Value, inst: &Instance) {
    let (ram, disk) = inst.image.as_ref().map(|i| (i.min_ram, i.min_disk)).unwrap_or((0, 0));
    props["min_ram"] = json!(ram);
    props["min_disk"] = json!(disk.max(u64::try_from(inst.flavor.disk).unwrap_or(0)));
}
