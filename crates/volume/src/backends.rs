//! The controller's side of the volume agents' conversation (topic
//! `volume.controller`): registrations, heartbeats, and the lists reconciliation
//! removes everything else by.
//!
//! A backend's `cinder-volume` service row (`host@backend`) carries its last report
//! (pools and capacity), which the scheduler reads; its `updated_at` is the heartbeat
//! that makes it `up`. An agent that also stores backups gets a `cinder-backup` row on
//! its host.

use std::collections::HashSet;

use serde_json::Value;
use stratus_bus::Delivery;
use stratus_db::Query;
use stratus_volume_contract::wire::decode;
use stratus_volume_contract::{AgentError, BackendReport, ControllerRequest, Expected, SnapshotRef, CONTROLLER_TOPIC};

use crate::snapshots::store::Snapshot;
use crate::sql;
use crate::volumes::store::Volume;
use crate::S;

/// Starts consuming the agents' requests.
pub async fn spawn(vol: S) -> anyhow::Result<()> {
    let mut sub = vol.platform.bus.consume(CONTROLLER_TOPIC).await?;
    let v = vol.clone();
    let h = tokio::spawn(async move {
        while let Some(d) = sub.recv().await {
            let v = v.clone();
            tokio::spawn(async move { handle(v, d).await });
        }
    });
    vol.tasks.lock().push(h);
    Ok(())
}

async fn handle(vol: S, d: Delivery) {
    let req: ControllerRequest = match decode(&d.message) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "undecodable volume agent request");
            d.reply(Err(e.to_wire()));
            return;
        }
    };
    let r = match req {
        ControllerRequest::Register { report } => register(&vol, &report).await.map(|_| Value::Null),
        ControllerRequest::Heartbeat { report } => register(&vol, &report).await.map(|_| Value::Null),
        ControllerRequest::Expected { backend } => {
            expected(&vol, &backend).await.map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        }
    };
    d.reply(r.map_err(|e| AgentError::Failed(e.to_string()).to_wire()));
}

/// Records `report` as the backend's service and heartbeat.
pub async fn register(vol: &S, report: &BackendReport) -> Result<(), stratus_db::DbError> {
    let name = report.name();
    let body = serde_json::to_string(report).unwrap_or_default();
    upsert(vol, &name, "cinder-volume", &report.availability_zone, &report.backend_state, Some(&body)).await?;
    if report.backup {
        upsert(vol, &report.host, "cinder-backup", &report.availability_zone, "up", None).await?;
    }
    Ok(())
}

/// Creates or refreshes a service row.
pub async fn upsert(
    vol: &S,
    host: &str,
    binary: &str,
    zone: &str,
    state: &str,
    report: Option<&str>,
) -> Result<(), stratus_db::DbError> {
    let now = stratus_core::time::now();
    vol.db
        .transaction(|tx| {
            let (host, binary, zone, state, report, now) = (
                host.to_string(),
                binary.to_string(),
                zone.to_string(),
                state.to_string(),
                report.map(str::to_string),
                now.clone(),
            );
            Box::pin(async move {
                let mut q = Query::new("UPDATE volume_services SET updated_at = ");
                q.bind(&now).push(", availability_zone = ").bind(&zone).push(", backend_state = ").bind(&state);
                if let Some(r) = &report {
                    q.push(", report = ").bind(r);
                }
                q.push(" WHERE host = ").bind(&host).push(" AND service_binary = ").bind(&binary);
                if q.execute(&mut **tx).await? > 0 {
                    return Ok(());
                }
                let next = Query::new("SELECT COALESCE(MAX(id), 0) + 1 AS n FROM volume_services")
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| sql::i(&r, "n"))
                    .unwrap_or(1);
                let mut q = Query::new(
                    "INSERT INTO volume_services (id, host, service_binary, availability_zone, backend_state, report, uuid, created_at, updated_at) VALUES (",
                );
                q.bind(next).push(", ").bind(&host).push(", ").bind(&binary).push(", ").bind(&zone).push(", ");
                q.bind(&state).push(", ").bind(report).push(", ").bind(crate::body::new_id()).push(", ");
                q.bind(&now).push(", ").bind(&now).push(")");
                q.execute(&mut **tx).await?;
                tracing::info!(%host, %binary, "volume service registered");
                Ok::<(), stratus_db::DbError>(())
            })
        })
        .await
}

/// What backend `backend` (`host@backend`) should hold: the volumes scheduled to it
/// (except those whose creation failed: their data, if any, is garbage), their
/// snapshots, and the attachments with a connection.
pub async fn expected(vol: &S, backend: &str) -> Result<Expected, stratus_db::DbError> {
    // `host@backend#pool` for any pool: the range ['backend#', 'backend$') ('$' follows '#').
    let mut q = Query::new("SELECT * FROM volume_volumes WHERE deleted = 0 AND host >= ");
    q.bind(format!("{backend}#")).push(" AND host < ").bind(format!("{backend}$"));
    q.push(" AND NOT (status = 'error' AND provider_location IS NULL)");
    let vols: Vec<Volume> = q.fetch_all(vol.db.reader()).await?.iter().map(Volume::from_row).collect();
    let ids: HashSet<String> = vols.iter().map(|v| v.id.clone()).collect();
    let mut snaps: Vec<SnapshotRef> = Vec::new();
    let mut atts: Vec<String> = Vec::new();
    if !ids.is_empty() {
        let mut q = Query::new("SELECT * FROM volume_snapshots WHERE deleted = 0 AND NOT (status = 'error' AND provider_location IS NULL) AND ");
        q.push_in("volume_id", ids.iter().cloned());
        snaps = q.fetch_all(vol.db.reader()).await?.iter().map(|r| Snapshot::from_row(r).as_ref()).collect();
        let mut q =
            Query::new("SELECT id FROM volume_attachments WHERE deleted = 0 AND connection_info IS NOT NULL AND ");
        q.push_in("volume_id", ids.iter().cloned());
        atts = q.fetch_all(vol.db.reader()).await?.iter().map(|r| sql::s(r, "id")).collect();
    }
    Ok(Expected { volumes: vols.iter().map(Volume::as_ref).collect(), snapshots: snaps, attachments: atts })
}
