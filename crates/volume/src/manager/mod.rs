//! Operations that involve a backend, declared as step tables and run against the
//! resource's row.
//!
//! Every such operation (create, delete, extend, revert, upload a volume; create and
//! delete a snapshot; create, restore and delete a backup) is a
//! [`StepTable`](stratus_volume_contract::steps::StepTable) in [`volume_ops`],
//! [`snapshot_ops`] or [`backup_ops`]. Its progress is the row's `task`
//! (`create_volume/create_on_backend`) with its arguments in `task_args`, written before
//! each step; the steps read everything else from the database. So an operation a crash
//! interrupted is resumed from its recorded step by [`recovery`] when the controller
//! starts again (every step is idempotent: agents treat a re-sent request as the same
//! operation), and an operation whose step fails is unwound step by step and ends in an
//! error status with a user message saying why. The API only validates, moves the row
//! into its transitional status and starts the operation.

pub mod backup_ops;
pub mod recovery;
pub mod scheduler;
pub mod snapshot_ops;
pub mod volume_ops;

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::Value;
use stratus_db::Query;
use stratus_volume_contract::steps::{self, InjectedFailure, Outcome, Progress, StepFuture, StepTable};
use stratus_volume_contract::{agent_topic, AgentError, AgentRequest, CallError};

use crate::error::VolError;
use crate::S;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The agent refused or could not be reached.
    #[error("{0}")]
    Agent(#[from] CallError),
    /// The database or a check failed.
    #[error("{0}")]
    Vol(#[from] VolError),
    /// No backend can take the volume (the reason says why).
    #[error("No valid backend was found. {0}")]
    NoValidBackend(String),
    /// Anything else, in words.
    #[error("{0}")]
    Failed(String),
    /// A fault a test injected.
    #[error(transparent)]
    Injected(#[from] InjectedFailure),
}

impl From<stratus_db::DbError> for OpError {
    fn from(e: stratus_db::DbError) -> Self {
        OpError::Vol(e.into())
    }
}

impl OpError {
    /// True when the backend refused cleanly (so it changed nothing).
    pub fn refused(&self) -> bool {
        matches!(
            self,
            OpError::Agent(CallError::Agent(
                AgentError::InvalidState(_)
                    | AgentError::NoSpace(_)
                    | AgentError::Unsupported(_)
                    | AgentError::NotFound(_)
            ))
        ) || matches!(self, OpError::Agent(e) if e.unreachable())
    }
}

/// The table whose row records an operation's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `volume_volumes`.
    Volume,
    /// `volume_snapshots`.
    Snapshot,
    /// `volume_backups`.
    Backup,
}

impl Resource {
    fn table(self) -> &'static str {
        match self {
            Resource::Volume => "volume_volumes",
            Resource::Snapshot => "volume_snapshots",
            Resource::Backup => "volume_backups",
        }
    }
}

/// One running operation: which row it runs on and its arguments.
pub struct OpCtx {
    /// The service.
    pub vol: S,
    /// Table of the row.
    pub resource: Resource,
    /// The row's id.
    pub id: String,
    /// Arguments (persisted with the progress).
    pub args: Mutex<Value>,
    /// Resumed after a restart: an agent without a consumer yet (it is registering
    /// again) is waited for until then instead of failing the step.
    pub patient_until: Option<std::time::Instant>,
}

impl OpCtx {
    /// A context for `resource` `id` with `args`.
    pub fn new(vol: &S, resource: Resource, id: &str, args: Value) -> OpCtx {
        OpCtx { vol: vol.clone(), resource, id: id.to_string(), args: Mutex::new(args), patient_until: None }
    }

    /// Calls the agent of `backend` with `req` (see [`call`]), waiting for the agent to
    /// come back when the operation was resumed after a restart.
    pub async fn call<R: DeserializeOwned>(&self, backend: &str, req: &AgentRequest, slow: bool) -> Result<R, OpError> {
        loop {
            match call(&self.vol, backend, req, slow).await {
                Err(OpError::Agent(e))
                    if e.unreachable() && self.patient_until.is_some_and(|t| std::time::Instant::now() < t) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }

    /// A context for an operation resumed after a restart (patient with agents that are
    /// registering again).
    pub fn resumed(vol: &S, resource: Resource, id: &str, args: Value) -> OpCtx {
        let mut c = OpCtx::new(vol, resource, id, args);
        c.patient_until = Some(std::time::Instant::now() + Duration::from_secs(vol.cfg.service_down_time_secs.max(1)));
        c
    }

    /// Argument `key` as a string.
    pub fn arg(&self, key: &str) -> Option<String> {
        self.args.lock().get(key).and_then(Value::as_str).map(str::to_string)
    }

    /// Argument `key` as an integer.
    pub fn arg_i(&self, key: &str) -> Option<i64> {
        self.args.lock().get(key).and_then(Value::as_i64)
    }

    /// Sets argument `key` (persisted with the next recorded step).
    pub fn set_arg(&self, key: &str, v: Value) {
        let mut a = self.args.lock();
        if !a.is_object() {
            *a = Value::Object(Default::default());
        }
        a[key] = v;
    }
}

impl Progress<OpError> for OpCtx {
    fn record<'a>(&'a self, table: &'static str, step: &'static str) -> StepFuture<'a, OpError> {
        Box::pin(async move {
            let args = serde_json::to_string(&*self.args.lock()).unwrap_or_default();
            let mut q = Query::new(format!("UPDATE {} SET task = ", self.resource.table()));
            q.bind(format!("{table}/{step}")).push(", task_args = ").bind(args);
            q.push(", updated_at = ").bind(stratus_core::time::now()).push(" WHERE id = ").bind(&self.id);
            let mut tx = self.vol.db.begin().await?;
            q.execute(&mut *tx).await?;
            tx.commit().await.map_err(stratus_db::DbError::from)?;
            Ok(())
        })
    }
}

/// Runs `table` (from `from`, when resuming) for `ctx`, then `settle` with the outcome.
/// A crash injected by a test ends the run right there, as a real one would.
pub async fn drive<F, Fut>(table: &'static StepTable<OpCtx, OpError>, ctx: OpCtx, from: Option<String>, settle: F)
where
    F: FnOnce(OpCtx, Result<(), (String, OpError)>) -> Fut,
    Fut: Future<Output = ()>,
{
    let faults = ctx.vol.faults.clone();
    let outcome = match &from {
        Some(step) => steps::run_from(table, &ctx, &ctx, &faults, step).await,
        None => steps::run(table, &ctx, &ctx, &faults).await,
    };
    match outcome {
        Outcome::Done => settle(ctx, Ok(())).await,
        Outcome::Failed { step, error, undo_errors } => {
            for (s, e) in &undo_errors {
                tracing::warn!(operation = table.name, id = %ctx.id, step = s, error = %e, "undo failed; reconciliation will finish it");
            }
            settle(ctx, Err((step.to_string(), error))).await
        }
        Outcome::Crashed { step } => {
            tracing::warn!(operation = table.name, id = %ctx.id, step, "operation stopped by an injected crash");
        }
    }
}

/// Runs `fut` in the background as one of this service's operations.
pub fn spawn(vol: &S, fut: impl Future<Output = ()> + Send + 'static) {
    let h = tokio::spawn(fut);
    let mut tasks = vol.tasks.lock();
    tasks.retain(|t| !t.is_finished());
    tasks.push(h);
}

/// Calls the agent of `backend` (`host@backend`) with `req`.
pub async fn call<R: DeserializeOwned>(vol: &S, backend: &str, req: &AgentRequest, slow: bool) -> Result<R, OpError> {
    let secs = if slow { vol.cfg.data_timeout_secs } else { vol.cfg.rpc_timeout_secs };
    let topic = agent_topic(backend);
    stratus_volume_contract::call(vol.platform.bus.as_ref(), &topic, req, Duration::from_secs(secs.max(1)))
        .await
        .map_err(OpError::from)
}

/// Clears the operation on a row (it ended, one way or the other).
pub async fn clear_task(vol: &S, resource: Resource, id: &str) -> Result<(), OpError> {
    let mut q = Query::new(format!("UPDATE {} SET task = NULL, task_args = NULL WHERE id = ", resource.table()));
    q.bind(id);
    let mut tx = vol.db.begin().await?;
    q.execute(&mut *tx).await?;
    tx.commit().await.map_err(stratus_db::DbError::from)?;
    Ok(())
}
