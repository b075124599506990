//! Instance actions and their events (`os-instance-actions`): every action on a server
//! is recorded with its request id, user, start/finish, and one event per step with its
//! result, so "what happened to my server" has an answer even after a crash.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::time::micros_naive;
use stratus_core::{ApiError, ApiVersion};
use stratus_db::sqlx::Row;
use stratus_db::{Db, Query, Tx};

use super::store;
use crate::error::{ComputeError, Result};
use crate::AppState;

/// Records the start of `action` on `uuid` (inside the transaction that starts it).
pub async fn start_action(
    tx: &mut Tx,
    uuid: &str,
    action: &str,
    request_id: &str,
    user_id: &str,
    project_id: &str,
) -> Result<()> {
    start_action_id(tx, uuid, action, request_id, user_id, project_id).await.map(|_| ())
}

/// [`start_action`], returning the new action's id.
pub async fn start_action_id(
    tx: &mut Tx,
    uuid: &str,
    action: &str,
    request_id: &str,
    user_id: &str,
    project_id: &str,
) -> Result<String> {
    let now = stratus_core::time::now();
    let id = uuid::Uuid::new_v4().to_string();
    let mut q = Query::new("INSERT INTO compute_instance_actions (id, instance_uuid, action, request_id, user_id, project_id, start_time, updated_at) VALUES (");
    q.bind(&id).push(", ").bind(uuid).push(", ").bind(action).push(", ");
    q.bind(request_id)
        .push(", ")
        .bind(user_id)
        .push(", ")
        .bind(project_id)
        .push(", ")
        .bind(&now)
        .push(", ")
        .bind(&now)
        .push(")");
    q.execute(&mut **tx).await?;
    Ok(id)
}

/// Inserts an event of a known action (one that cannot exist yet): started, or with
/// `finished` = `Some(error)` already finished. The build saga's hot path, which
/// knows the action it created and skips [`start_event_tx`]'s lookups.
pub async fn insert_event_tx(
    tx: &mut Tx,
    action_id: &str,
    event: &str,
    host: Option<&str>,
    finished: Option<Option<&str>>,
) -> Result<()> {
    let now = stratus_core::time::now();
    let mut q = Query::new(
        "INSERT INTO compute_instance_action_events (id, action_id, event, start_time, finish_time, result, details, host) VALUES (",
    );
    q.bind(uuid::Uuid::new_v4().to_string()).push(", ").bind(action_id).push(", ").bind(event).push(", ").bind(&now);
    match finished {
        Some(err) => {
            let result = if err.is_some() { "Error" } else { "Success" };
            q.push(", ").bind(&now).push(", ").bind(result).push(", ").bind(err.map(str::to_string));
        }
        None => {
            q.push(", NULL, NULL, NULL");
        }
    }
    q.push(", ").bind(host.map(str::to_string)).push(")");
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Finishes the open `event` of the action `request_id` successfully (and the action,
/// when `finish_action`), addressing the action by (instance, request id) inside each
/// statement instead of looking it up first; falls back to [`finish_event_tx`] when the
/// event was never started.
pub async fn finish_open_event_tx(
    tx: &mut Tx,
    uuid: &str,
    request_id: &str,
    event: &str,
    finish_action: bool,
) -> Result<()> {
    let now = stratus_core::time::now();
    let n = Query::new("UPDATE compute_instance_action_events SET finish_time = ")
        .bind(&now)
        .push_bind(", result = ", "Success")
        .push(" WHERE action_id IN (SELECT id FROM compute_instance_actions WHERE instance_uuid = ")
        .bind(uuid)
        .push_bind(" AND request_id = ", request_id)
        .push_bind(") AND event = ", event)
        .push(" AND finish_time IS NULL")
        .execute(&mut **tx)
        .await?;
    if n == 0 {
        return finish_event_tx(tx, uuid, request_id, event, None, finish_action).await;
    }
    if finish_action {
        Query::new("UPDATE compute_instance_actions SET finish_time = ")
            .bind(&now)
            .push_bind(", updated_at = ", &now)
            .push_bind(" WHERE instance_uuid = ", uuid)
            .push_bind(" AND request_id = ", request_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn action_id(tx: &mut Tx, uuid: &str, request_id: &str) -> Result<Option<String>> {
    let r = Query::new("SELECT id FROM compute_instance_actions WHERE instance_uuid = ")
        .bind(uuid)
        .push_bind(" AND request_id = ", request_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(r.map(|r| r.try_get("id")).transpose()?)
}

/// Records the start of `event` of the action `request_id`, inside `tx` (no-op if
/// there is no such action or the event is already open).
pub async fn start_event_tx(tx: &mut Tx, uuid: &str, request_id: &str, event: &str, host: Option<&str>) -> Result<()> {
    let Some(aid) = action_id(tx, uuid, request_id).await? else { return Ok(()) };
    let open = Query::new("SELECT 1 FROM compute_instance_action_events WHERE action_id = ")
        .bind(&aid)
        .push_bind(" AND event = ", event)
        .push(" AND finish_time IS NULL")
        .fetch_optional(&mut **tx)
        .await?;
    if open.is_none() {
        let mut q =
            Query::new("INSERT INTO compute_instance_action_events (id, action_id, event, start_time, host) VALUES (");
        q.bind(uuid::Uuid::new_v4().to_string()).push(", ").bind(&aid).push(", ").bind(event).push(", ");
        q.bind(stratus_core::time::now()).push(", ").bind(host.map(str::to_string)).push(")");
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Finishes `event` (and the action, when `finish_action`) with `error` or success,
/// inside `tx`.
pub async fn finish_event_tx(
    tx: &mut Tx,
    uuid: &str,
    request_id: &str,
    event: &str,
    error: Option<&str>,
    finish_action: bool,
) -> Result<()> {
    let Some(aid) = action_id(tx, uuid, request_id).await? else { return Ok(()) };
    let now = stratus_core::time::now();
    let result = if error.is_some() { "Error" } else { "Success" };
    let n = Query::new("UPDATE compute_instance_action_events SET finish_time = ")
        .bind(&now)
        .push_bind(", result = ", result)
        .push_bind(", details = ", error.map(str::to_string))
        .push_bind(" WHERE action_id = ", &aid)
        .push_bind(" AND event = ", event)
        .push(" AND finish_time IS NULL")
        .execute(&mut **tx)
        .await?;
    if n == 0 {
        let mut q = Query::new(
            "INSERT INTO compute_instance_action_events (id, action_id, event, start_time, finish_time, result, details) VALUES (",
        );
        q.bind(uuid::Uuid::new_v4().to_string()).push(", ").bind(&aid).push(", ").bind(event).push(", ");
        q.bind(&now).push(", ").bind(&now).push(", ").bind(result).push(", ").bind(error.map(str::to_string)).push(")");
        q.execute(&mut **tx).await?;
    }
    if error.is_some() {
        Query::new("UPDATE compute_instance_actions SET message = ")
            .bind("Error")
            .push_bind(", updated_at = ", &now)
            .push_bind(" WHERE id = ", &aid)
            .execute(&mut **tx)
            .await?;
    }
    if finish_action {
        Query::new("UPDATE compute_instance_actions SET finish_time = ")
            .bind(&now)
            .push_bind(", updated_at = ", &now)
            .push_bind(" WHERE id = ", &aid)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// [`start_event_tx`] in its own transaction.
pub async fn start_event(db: &Db, uuid: &str, request_id: &str, event: &str, host: Option<&str>) -> Result<()> {
    let (u, r, e, h) = (uuid.to_string(), request_id.to_string(), event.to_string(), host.map(str::to_string));
    db.transaction(|tx| {
        let (u, r, e, h) = (u.clone(), r.clone(), e.clone(), h.clone());
        Box::pin(async move { start_event_tx(tx, &u, &r, &e, h.as_deref()).await })
    })
    .await
}

/// [`finish_event_tx`] in its own transaction.
pub async fn finish_event(
    db: &Db,
    uuid: &str,
    request_id: &str,
    event: &str,
    error: Option<&str>,
    finish_action: bool,
) -> Result<()> {
    let (u, r, e, err) = (uuid.to_string(), request_id.to_string(), event.to_string(), error.map(str::to_string));
    db.transaction(|tx| {
        let (u, r, e, err) = (u.clone(), r.clone(), e.clone(), err.clone());
        Box::pin(async move { finish_event_tx(tx, &u, &r, &e, err.as_deref(), finish_action).await })
    })
    .await
}

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers/{id}/os-instance-actions", get(list))
        .route("/v2.1/servers/{id}/os-instance-actions/{req}", get(show))
}

fn action_view(r: &stratus_db::sqlx::any::AnyRow, v: ApiVersion) -> Result<Value> {
    let start: String = r.try_get("start_time")?;
    let updated: String = r.try_get("updated_at")?;
    let mut o = json!({
        "action": r.try_get::<String, _>("action")?,
        "instance_uuid": r.try_get::<String, _>("instance_uuid")?,
        "message": r.try_get::<Option<String>, _>("message")?,
        "project_id": r.try_get::<Option<String>, _>("project_id")?,
        "request_id": r.try_get::<String, _>("request_id")?,
        "start_time": micros_naive(&start),
        "user_id": r.try_get::<Option<String>, _>("user_id")?,
    });
    if v.at_least(2, 58) {
        o["updated_at"] = json!(micros_naive(&updated));
    }
    Ok(o)
}

/// Loads the server the way instance-action routes need it (deleted servers included,
/// as Nova lets you read the actions of a deleted server with 2.21+).
async fn server_target(st: &AppState, ctx: &Ctx, uuid: &str, rule: &str) -> Result<(), ApiError> {
    let row = Query::new("SELECT * FROM compute_instances WHERE uuid = ")
        .bind(uuid)
        .fetch_optional(st.platform.db.reader())
        .await
        .map_err(ComputeError::from)?;
    let inst = row
        .map(|r| store::Instance::from_row(&r))
        .transpose()?
        .ok_or_else(|| ComputeError::NotFound(format!("Instance {uuid} could not be found.")))?;
    if st.policy.enforce(rule, ctx, &inst.target()).is_err() {
        return Err(ComputeError::NotFound(format!("Instance {uuid} could not be found.")).into());
    }
    Ok(())
}

async fn list(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    server_target(&st, &ctx, &id, "os_compute_api:os-instance-actions:list").await?;
    let rows = Query::new("SELECT * FROM compute_instance_actions WHERE instance_uuid = ")
        .bind(&id)
        .push(" ORDER BY start_time DESC, id DESC")
        .fetch_all(st.platform.db.reader())
        .await
        .map_err(ComputeError::from)?;
    let mut out = Vec::new();
    for r in &rows {
        out.push(action_view(r, v)?);
    }
    Ok(Json(json!({"instanceActions": out})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, req)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    server_target(&st, &ctx, &id, "os_compute_api:os-instance-actions:show").await?;
    let row = Query::new("SELECT * FROM compute_instance_actions WHERE instance_uuid = ")
        .bind(&id)
        .push_bind(" AND request_id = ", &req)
        .fetch_optional(st.platform.db.reader())
        .await
        .map_err(ComputeError::from)?
        .ok_or_else(|| ComputeError::NotFound(format!("Action for request_id {req} on instance {id} not found")))?;
    let mut o = action_view(&row, v)?;
    let admin = st.policy.check("os_compute_api:os-instance-actions:events", &ctx, &json!({}));
    if admin || v.at_least(2, 51) {
        let aid: String = row.try_get("id").map_err(ComputeError::from)?;
        let evs = Query::new("SELECT * FROM compute_instance_action_events WHERE action_id = ")
            .bind(&aid)
            .push(" ORDER BY start_time, id")
            .fetch_all(st.platform.db.reader())
            .await
            .map_err(ComputeError::from)?;
        let mut events = Vec::new();
        for e in &evs {
            let start: String = e.try_get("start_time").map_err(ComputeError::from)?;
            let finish: Option<String> = e.try_get("finish_time").map_err(ComputeError::from)?;
            let mut ev = json!({
                "event": e.try_get::<String, _>("event").map_err(ComputeError::from)?,
                "start_time": micros_naive(&start),
                "finish_time": finish.map(|f| micros_naive(&f)),
                "result": e.try_get::<Option<String>, _>("result").map_err(ComputeError::from)?,
            });
            if admin {
                ev["traceback"] = json!(e.try_get::<Option<String>, _>("traceback").map_err(ComputeError::from)?);
            }
            if v.at_least(2, 62) {
                let host: Option<String> = e.try_get("host").map_err(ComputeError::from)?;
                ev["hostId"] = json!(host
                    .as_deref()
                    .map(|h| super::view::host_id(&ctx.project_id.clone().unwrap_or_default(), h))
                    .unwrap_or_default());
                if admin {
                    ev["host"] = json!(host);
                }
            }
            if v.at_least(2, 84) && admin {
                ev["details"] = json!(e.try_get::<Option<String>, _>("details").map_err(ComputeError::from)?);
            }
            events.push(ev);
        }
        o["events"] = json!(events);
    }
    Ok(Json(json!({"instanceAction": o})))
}
