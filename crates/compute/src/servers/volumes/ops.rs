//! Attaching and detaching volumes: the operations behind `os-volume_attachments`,
//! declared as step tables with their undo (`stratus_volume_contract::steps`, the
//! runner the volume service uses too).
//!
//! Attach is two tables, like Nova's API and compute manager: [`RESERVE`] runs in the
//! request (the volume service reserves the volume, the mapping row is written) so the
//! caller learns at once whether the volume can be attached; [`CONNECT`] runs after the
//! answer (the volume is connected to the server's host, the agent plugs it into the
//! guest, the attachment is completed). When a step of [`CONNECT`] fails, its undos run
//! and then those of [`RESERVE`]: a failed attach leaves no attachment, no mapping and
//! no disk in the guest behind. Detach is [`DETACH_BEGIN`] in the request (the mapping
//! and the volume become `detaching`) and [`DETACH`] after it (the agent unplugs the
//! disk and waits for the guest to release it; the attachment and the mapping go).
//! A detach that fails puts both back to attached.
//!
//! Mappings a crash left `attaching` are unwound and those left `detaching` finished
//! when compute starts ([`recover`]).

use std::time::Duration;

use axum::http::StatusCode;
use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_compute_proto::rpc::{agent_topic, to_message, AgentRequest, CallError};
use stratus_compute_proto::spec::{VolumeConnection, VolumeSpec};
use stratus_core::RequestContext;
use stratus_db::Arg;
use stratus_volume_contract::steps::{
    run, unwind_from, Faults, InjectedFailure, NoProgress, Outcome, Performer, Step, StepTable,
};

use super::store::{self as bdms, status, Bdm};
use crate::clients::NetRefusal;
use crate::servers::events;
use crate::servers::store::Instance;
use crate::volume_api::VolumeApi;
use crate::AppState;

impl From<InjectedFailure> for NetRefusal {
    fn from(f: InjectedFailure) -> Self {
        NetRefusal { status: StatusCode::SERVICE_UNAVAILABLE, message: f.to_string() }
    }
}

/// How long a detach waits for the agent: the guest's release of the device (the
/// agent waits up to a minute) and some margin.
const DETACH_TIMEOUT: Duration = Duration::from_secs(90);

/// One attach or detach in progress.
pub struct VolumeOp {
    st: AppState,
    /// Who asked (the volume service's rules apply to them).
    ctx: RequestContext,
    /// The server (its host).
    inst: Instance,
    /// The mapping, as it is being built.
    bdm: Mutex<Bdm>,
    /// Request id of the instance action.
    rid: String,
}

impl VolumeOp {
    /// An operation on `bdm` of `inst` for `ctx`.
    pub fn new(st: AppState, ctx: RequestContext, inst: Instance, bdm: Bdm, rid: String) -> Self {
        VolumeOp { st, ctx, inst, bdm: Mutex::new(bdm), rid }
    }

    /// The mapping now.
    pub fn bdm(&self) -> Bdm {
        self.bdm.lock().clone()
    }

    fn db(&self) -> &stratus_db::Db {
        &self.st.platform.db
    }

    fn attachment(&self) -> Option<String> {
        self.bdm.lock().attachment_id.clone()
    }

    /// The volume as the agent needs it (None: never connected).
    fn spec(&self) -> Option<VolumeSpec> {
        self.bdm.lock().spec()
    }
}

fn db_err(e: crate::error::ComputeError) -> NetRefusal {
    NetRefusal { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }
}

/// Sends `req` to the agent of the server's host and waits for its answer.
async fn agent_call(op: &VolumeOp, req: AgentRequest, timeout: Duration) -> Result<(), NetRefusal> {
    let Some(host) = op.inst.host.clone() else {
        return Err(NetRefusal {
            status: StatusCode::CONFLICT,
            message: format!("Instance {} is not on a compute host", op.inst.uuid),
        });
    };
    op.st.platform.bus.call(&agent_topic(&host), to_message(&req), timeout).await.map(drop).map_err(|e| NetRefusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("the compute host {host} could not do it: {}", CallError::from(e)),
    })
}

// --- attach ---------------------------------------------------------------------------

/// Attach, in the request: reserve the volume, record the mapping.
pub static RESERVE: StepTable<VolumeOp, NetRefusal> = StepTable {
    name: "attach_volume_reserve",
    steps: &[
        Step {
            name: "reserve",
            performer: Performer::Controller,
            run: |c| Box::pin(reserve(c)),
            undo: Some(|c| Box::pin(unreserve(c))),
        },
        Step {
            name: "record",
            performer: Performer::Controller,
            run: |c| Box::pin(record(c)),
            undo: Some(|c| Box::pin(forget(c))),
        },
    ],
};

/// Attach, after the answer: connect, plug into the guest, complete.
pub static CONNECT: StepTable<VolumeOp, NetRefusal> = StepTable {
    name: "attach_volume",
    steps: &[
        Step {
            name: "connect",
            performer: Performer::Controller,
            run: |c| Box::pin(connect(c)),
            undo: Some(|c| Box::pin(disconnect(c))),
        },
        Step {
            name: "plug",
            performer: Performer::Agent,
            run: |c| Box::pin(plug(c)),
            undo: Some(|c| Box::pin(unplug(c))),
        },
        Step { name: "complete", performer: Performer::Controller, run: |c| Box::pin(complete(c)), undo: None },
    ],
};

async fn reserve(c: &VolumeOp) -> Result<(), NetRefusal> {
    let vid = c.bdm.lock().volume_id.clone();
    let id = c.st.backends.volumes.reserve(&c.ctx, &vid, &c.inst.uuid).await?;
    c.bdm.lock().attachment_id = Some(id);
    Ok(())
}

async fn unreserve(c: &VolumeOp) -> Result<(), NetRefusal> {
    match c.attachment() {
        Some(a) => c.st.backends.volumes.delete_attachment(&RequestContext::internal_admin(), &a).await,
        None => Ok(()),
    }
}

async fn record(c: &VolumeOp) -> Result<(), NetRefusal> {
    let b = c.bdm();
    bdms::insert(c.db(), &b).await.map_err(db_err)
}

async fn forget(c: &VolumeOp) -> Result<(), NetRefusal> {
    let uuid = c.bdm.lock().uuid.clone();
    bdms::delete(c.db(), &uuid).await.map_err(db_err)
}

/// The connector of the server's host (what os-brick would report for it).
fn connector(c: &VolumeOp) -> Value {
    json!({
        "host": c.inst.host.clone().unwrap_or_default(),
        "platform": "x86_64",
        "os_type": "linux",
        "multipath": false,
        "mountpoint": c.bdm.lock().device_name.clone(),
    })
}

async fn connect(c: &VolumeOp) -> Result<(), NetRefusal> {
    let a = c.attachment().unwrap_or_default();
    let info = c.st.backends.volumes.connect(&c.ctx, &a, &connector(c)).await?;
    if serde_json::from_value::<VolumeConnection>(info.clone()).is_err() {
        return Err(NetRefusal {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "the volume's connection type {} is not one compute hosts can attach",
                info["driver_volume_type"]
            ),
        });
    }
    let uuid = {
        let mut b = c.bdm.lock();
        b.connection_info = Some(info.to_string());
        b.uuid.clone()
    };
    bdms::set(c.db(), &uuid, &[("connection_info", Arg::from(info.to_string()))]).await.map_err(db_err).map(drop)
}

async fn disconnect(c: &VolumeOp) -> Result<(), NetRefusal> {
    let uuid = c.bdm.lock().uuid.clone();
    bdms::set(c.db(), &uuid, &[("connection_info", Arg::from(Option::<String>::None))]).await.map_err(db_err)?;
    c.bdm.lock().connection_info = None;
    Ok(())
}

async fn plug(c: &VolumeOp) -> Result<(), NetRefusal> {
    let volume = c.spec().ok_or_else(|| NetRefusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "the volume has no connection".into(),
    })?;
    let req = AgentRequest::AttachVolume { uuid: c.inst.uuid.clone(), volume };
    agent_call(c, req, c.st.conductor.rpc_timeout()).await
}

async fn unplug(c: &VolumeOp) -> Result<(), NetRefusal> {
    let Some(volume) = c.spec() else { return Ok(()) };
    let req = AgentRequest::DetachVolume { uuid: c.inst.uuid.clone(), volume };
    agent_call(c, req, DETACH_TIMEOUT).await
}

async fn complete(c: &VolumeOp) -> Result<(), NetRefusal> {
    let a = c.attachment().unwrap_or_default();
    c.st.backends.volumes.complete(&c.ctx, &a).await?;
    let uuid = c.bdm.lock().uuid.clone();
    bdms::transition(c.db(), &uuid, status::ATTACHING, status::ATTACHED).await.map_err(db_err).map(drop)
}

/// Runs [`RESERVE`] for `op`: Ok once the volume is reserved and the mapping recorded.
pub async fn reserve_and_record(op: &VolumeOp, faults: &Faults) -> Result<(), NetRefusal> {
    match run(&RESERVE, op, &NoProgress, faults).await {
        Outcome::Done => Ok(()),
        Outcome::Failed { error, .. } => Err(error),
        Outcome::Crashed { step } => Err(NetRefusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("attach interrupted at {step}"),
        }),
    }
}

/// Runs [`CONNECT`] for `op` (reserved and recorded), unwinding everything on failure;
/// records the outcome as the action's event.
pub async fn connect_and_plug(op: &VolumeOp, faults: &Faults) -> Outcome<NetRefusal> {
    let (db, uuid, rid) = (op.db(), op.inst.uuid.clone(), op.rid.clone());
    let _ = events::start_event(db, &uuid, &rid, "compute_attach_volume", op.inst.host.as_deref()).await;
    let out = run(&CONNECT, op, &NoProgress, faults).await;
    let error = match &out {
        Outcome::Done => None,
        Outcome::Failed { error, step, .. } => {
            tracing::warn!(instance = %uuid, volume = %op.bdm().volume_id, step, %error, "attach failed; undone");
            unwind_from(&RESERVE, op, "record").await;
            Some(error.message.clone())
        }
        Outcome::Crashed { .. } => return out,
    };
    let _ = events::finish_event(db, &uuid, &rid, "compute_attach_volume", error.as_deref(), true).await;
    out
}

// --- detach ---------------------------------------------------------------------------

/// Detach, in the request: the mapping and the volume become `detaching`.
pub static DETACH_BEGIN: StepTable<VolumeOp, NetRefusal> = StepTable {
    name: "detach_volume_begin",
    steps: &[Step {
        name: "begin",
        performer: Performer::Controller,
        run: |c| Box::pin(begin_detach(c)),
        undo: Some(|c| Box::pin(roll_detach(c))),
    }],
};

/// Detach, after the answer: unplug from the guest, end the attachment, drop the mapping.
pub static DETACH: StepTable<VolumeOp, NetRefusal> = StepTable {
    name: "detach_volume",
    steps: &[
        Step { name: "unplug", performer: Performer::Agent, run: |c| Box::pin(unplug(c)), undo: None },
        Step { name: "release", performer: Performer::Controller, run: |c| Box::pin(unreserve(c)), undo: None },
        Step { name: "forget", performer: Performer::Controller, run: |c| Box::pin(forget(c)), undo: None },
    ],
};

async fn begin_detach(c: &VolumeOp) -> Result<(), NetRefusal> {
    let b = c.bdm();
    if !bdms::transition(c.db(), &b.uuid, status::ATTACHED, status::DETACHING).await.map_err(db_err)? {
        return Err(NetRefusal {
            status: StatusCode::BAD_REQUEST,
            message: format!("Invalid volume: Volume {} is {}, not attached", b.volume_id, b.status),
        });
    }
    if let Err(e) = c.st.backends.volumes.detaching(&c.ctx, &b.volume_id, true).await {
        // An admin may have reset the volume's status: the detach goes on.
        tracing::info!(volume = %b.volume_id, error = %e, "volume not marked detaching");
    }
    Ok(())
}

async fn roll_detach(c: &VolumeOp) -> Result<(), NetRefusal> {
    let b = c.bdm();
    bdms::transition(c.db(), &b.uuid, status::DETACHING, status::ATTACHED).await.map_err(db_err)?;
    let _ = c.st.backends.volumes.detaching(&RequestContext::internal_admin(), &b.volume_id, false).await;
    Ok(())
}

/// Runs [`DETACH_BEGIN`].
pub async fn begin(op: &VolumeOp, faults: &Faults) -> Result<(), NetRefusal> {
    match run(&DETACH_BEGIN, op, &NoProgress, faults).await {
        Outcome::Done => Ok(()),
        Outcome::Failed { error, .. } => Err(error),
        Outcome::Crashed { step } => Err(NetRefusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("detach interrupted at {step}"),
        }),
    }
}

/// Runs [`DETACH`]; on failure the volume stays attached (mapping and volume back).
pub async fn finish_detach(op: &VolumeOp, faults: &Faults) -> Outcome<NetRefusal> {
    let (db, uuid, rid) = (op.db(), op.inst.uuid.clone(), op.rid.clone());
    let _ = events::start_event(db, &uuid, &rid, "compute_detach_volume", op.inst.host.as_deref()).await;
    let out = run(&DETACH, op, &NoProgress, faults).await;
    let error = match &out {
        Outcome::Done => None,
        Outcome::Failed { error, step, .. } => {
            tracing::warn!(instance = %uuid, volume = %op.bdm().volume_id, step, %error, "detach failed; the volume stays attached");
            unwind_from(&DETACH_BEGIN, op, "begin").await;
            Some(error.message.clone())
        }
        Outcome::Crashed { .. } => return out,
    };
    let _ = events::finish_event(db, &uuid, &rid, "compute_detach_volume", error.as_deref(), true).await;
    out
}

// --- server delete and recovery -------------------------------------------------------------

/// The volumes of a deleted server: attachments ended, volumes with
/// `delete_on_termination` deleted, mappings dropped. Best effort per volume (a volume
/// service that fails leaves a warning, never a server that cannot be deleted).
pub async fn release_all(db: &stratus_db::Db, volumes: &dyn VolumeApi, instance: &str) {
    let admin = RequestContext::internal_admin();
    let list = match bdms::of_instance(db, instance).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(instance, error = %e, "volumes of a deleted server not listed");
            return;
        }
    };
    for b in list {
        if let Some(a) = &b.attachment_id {
            if let Err(e) = volumes.delete_attachment(&admin, a).await {
                tracing::warn!(instance, volume = %b.volume_id, error = %e, "attachment of a deleted server not ended");
                continue;
            }
        }
        if b.delete_on_termination {
            if let Err(e) = volumes.delete(&admin, &b.volume_id).await {
                tracing::warn!(instance, volume = %b.volume_id, error = %e, "volume of a deleted server not deleted");
            }
        }
        let _ = bdms::delete(db, &b.uuid).await;
    }
}

/// Settles mappings a crash left mid-way: an attach is unwound, a detach finished.
pub async fn recover(st: AppState) {
    let list = match bdms::unfinished(&st.platform.db).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "unfinished volume attachments not listed");
            return;
        }
    };
    for b in list {
        let Ok(Some(inst)) = crate::servers::store::load(&st.platform.db, &b.instance_uuid).await else {
            release_all(&st.platform.db, st.backends.volumes.as_ref(), &b.instance_uuid).await;
            continue;
        };
        let rid = format!("req-{}", uuid::Uuid::new_v4());
        let attaching = b.status == status::ATTACHING;
        let op = VolumeOp::new(st.clone(), RequestContext::internal_admin(), inst, b, rid);
        if attaching {
            tracing::info!(volume = %op.bdm().volume_id, "unwinding an attach a restart interrupted");
            unwind_from(&CONNECT, &op, "complete").await;
            unwind_from(&RESERVE, &op, "record").await;
        } else {
            tracing::info!(volume = %op.bdm().volume_id, "finishing a detach a restart interrupted");
            finish_detach(&op, &Faults::default()).await;
        }
    }
}
