//! Multi-step operations as typed step tables.
//!
//! An operation (create a volume, take a snapshot, back up) is a [`StepTable`]: an
//! ordered list of [`Step`]s, each declared next to its undo and to who performs it.
//! [`run`] executes a table against an operation context: before each step it records
//! the step as the operation's progress (the controller writes it on the resource row
//! with a conditional update; an agent keeps it in memory), runs it, and on failure
//! runs the undos of that step and every earlier one, newest first. Steps and undos
//! are idempotent, so after a crash the operation is resumed from the recorded step
//! ([`run_from`]) or unwound from it ([`unwind_from`]).
//!
//! [`Faults`] lets tests inject, at any step of any table, a failure (the step errs:
//! the undos must leave a clean slate) or a crash before or after the step (nothing
//! more runs, not even undos: recovery must settle what is left). Tests iterate over
//! a table's steps, so a step added later is tested without anyone remembering to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

/// A step's future.
pub type StepFuture<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'a>>;

/// A step (or undo) body: borrows the operation's context.
pub type StepFn<C, E> = for<'a> fn(&'a C) -> StepFuture<'a, E>;

/// Who performs a step (documentation, logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Performer {
    /// The controller, in the database.
    Controller,
    /// The agent of the resource's backend, over the bus.
    Agent,
}

/// One step of an operation.
pub struct Step<C, E> {
    /// Name, recorded as progress (`task`) and used to inject faults.
    pub name: &'static str,
    /// Who does it.
    pub performer: Performer,
    /// The step.
    pub run: StepFn<C, E>,
    /// What takes its effect back (None: nothing to take back).
    pub undo: Option<StepFn<C, E>>,
}

/// An operation: a name and its steps in order.
pub struct StepTable<C: 'static, E: 'static> {
    /// Operation name (`create_volume`).
    pub name: &'static str,
    /// The steps.
    pub steps: &'static [Step<C, E>],
}

impl<C, E> StepTable<C, E> {
    /// Position of step `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// Step names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name).collect()
    }
}

/// How an injected fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The step fails (its undo and all earlier undos run).
    Fail,
    /// The process dies right before the step (after recording it as progress).
    CrashBefore,
    /// The process dies right after the step did its work, before anything else.
    CrashAfter,
}

/// A fault armed at one step of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Table name.
    pub table: &'static str,
    /// Step name.
    pub step: &'static str,
    /// What happens.
    pub kind: FaultKind,
}

/// Armed faults, shared by everything that runs tables in one component. Empty (and
/// free) outside tests.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<Vec<Fault>>>);

impl Faults {
    /// Arms `kind` at `table`/`step`; it strikes once.
    pub fn arm(&self, table: &'static str, step: &'static str, kind: FaultKind) {
        self.0.lock().push(Fault { table, step, kind });
    }

    /// Disarms everything.
    pub fn clear(&self) {
        self.0.lock().clear();
    }

    /// True when nothing is armed (every armed fault struck).
    pub fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }

    fn take(&self, table: &str, step: &str, kinds: &[FaultKind]) -> Option<FaultKind> {
        let mut armed = self.0.lock();
        let i = armed.iter().position(|f| f.table == table && f.step == step && kinds.contains(&f.kind))?;
        Some(armed.remove(i).kind)
    }
}

/// Where an operation keeps its progress.
pub trait Progress<E>: Send + Sync {
    /// Records that `step` of `table` is about to run. An error stops the operation
    /// (as a failure of that step).
    fn record<'a>(&'a self, table: &'static str, step: &'static str) -> StepFuture<'a, E>;
}

/// Progress kept nowhere (agents: their operations are re-sent whole by the controller).
pub struct NoProgress;

impl<E> Progress<E> for NoProgress {
    fn record<'a>(&'a self, _table: &'static str, _step: &'static str) -> StepFuture<'a, E> {
        Box::pin(async { Ok(()) })
    }
}

/// Error raised by an injected [`FaultKind::Fail`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected failure at {table}/{step}")]
pub struct InjectedFailure {
    /// Table.
    pub table: &'static str,
    /// Step.
    pub step: &'static str,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome<E> {
    /// Every step ran.
    Done,
    /// `step` failed with `error`; the undos ran (`undo_errors` lists those that failed,
    /// which recovery or reconciliation must finish).
    Failed {
        /// The failing step.
        step: &'static str,
        /// Why.
        error: E,
        /// Undos that failed, with their errors.
        undo_errors: Vec<(&'static str, E)>,
    },
    /// An injected crash stopped the run at `step`: nothing else ran.
    Crashed {
        /// Where.
        step: &'static str,
    },
}

impl<E> Outcome<E> {
    /// True for [`Outcome::Done`].
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done)
    }
}

/// Runs every step of `table`.
pub async fn run<C, E>(table: &StepTable<C, E>, ctx: &C, progress: &dyn Progress<E>, faults: &Faults) -> Outcome<E>
where
    E: From<InjectedFailure> + std::fmt::Display,
{
    run_at(table, ctx, progress, faults, 0).await
}

/// Runs `table` from step `from` on (resuming an interrupted run; earlier steps are done).
pub async fn run_from<C, E>(
    table: &StepTable<C, E>,
    ctx: &C,
    progress: &dyn Progress<E>,
    faults: &Faults,
    from: &str,
) -> Outcome<E>
where
    E: From<InjectedFailure> + std::fmt::Display,
{
    run_at(table, ctx, progress, faults, table.position(from).unwrap_or(0)).await
}

async fn run_at<C, E>(
    table: &StepTable<C, E>,
    ctx: &C,
    progress: &dyn Progress<E>,
    faults: &Faults,
    start: usize,
) -> Outcome<E>
where
    E: From<InjectedFailure> + std::fmt::Display,
{
    for (i, step) in table.steps.iter().enumerate().skip(start) {
        if let Err(error) = progress.record(table.name, step.name).await {
            return fail(table, ctx, i, error).await;
        }
        match faults.take(table.name, step.name, &[FaultKind::CrashBefore, FaultKind::Fail]) {
            Some(FaultKind::CrashBefore) => return Outcome::Crashed { step: step.name },
            Some(_) => {
                let error = E::from(InjectedFailure { table: table.name, step: step.name });
                return fail(table, ctx, i, error).await;
            }
            None => {}
        }
        if let Err(error) = (step.run)(ctx).await {
            tracing::warn!(operation = table.name, step = step.name, %error, "step failed; undoing");
            return fail(table, ctx, i, error).await;
        }
        if faults.take(table.name, step.name, &[FaultKind::CrashAfter]).is_some() {
            return Outcome::Crashed { step: step.name };
        }
    }
    Outcome::Done
}

async fn fail<C, E>(table: &StepTable<C, E>, ctx: &C, failed: usize, error: E) -> Outcome<E>
where
    E: std::fmt::Display,
{
    let undo_errors = undo(table, ctx, failed).await;
    Outcome::Failed { step: table.steps[failed].name, error, undo_errors }
}

/// Runs the undos of step `from` and every step before it, newest first (unwinding an
/// interrupted run). Returns the undos that failed.
pub async fn unwind_from<C, E: std::fmt::Display>(
    table: &StepTable<C, E>,
    ctx: &C,
    from: &str,
) -> Vec<(&'static str, E)> {
    undo(table, ctx, table.position(from).unwrap_or(0)).await
}

async fn undo<C, E: std::fmt::Display>(table: &StepTable<C, E>, ctx: &C, last: usize) -> Vec<(&'static str, E)> {
    let mut errors = Vec::new();
    for step in table.steps[..=last.min(table.steps.len().saturating_sub(1))].iter().rev() {
        if let Some(u) = step.undo {
            if let Err(e) = u(ctx).await {
                tracing::warn!(operation = table.name, step = step.name, error = %e, "undo failed");
                errors.push((step.name, e));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Ctx {
        log: Mutex<Vec<String>>,
        fail_b: bool,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(String);

    impl From<InjectedFailure> for E {
        fn from(f: InjectedFailure) -> Self {
            E(f.to_string())
        }
    }

    fn push<'a>(c: &'a Ctx, what: &'static str) -> StepFuture<'a, E> {
        Box::pin(async move {
            c.log.lock().push(what.to_string());
            Ok(())
        })
    }

    static TABLE: StepTable<Ctx, E> = StepTable {
        name: "t",
        steps: &[
            Step { name: "a", performer: Performer::Controller, run: |c| push(c, "+a"), undo: Some(|c| push(c, "-a")) },
            Step {
                name: "b",
                performer: Performer::Agent,
                run: |c| {
                    Box::pin(async move {
                        c.log.lock().push("+b".into());
                        if c.fail_b {
                            Err(E("b broke".into()))
                        } else {
                            Ok(())
                        }
                    })
                },
                undo: Some(|c| push(c, "-b")),
            },
            Step { name: "c", performer: Performer::Controller, run: |c| push(c, "+c"), undo: None },
        ],
    };

    struct Recorder(Mutex<Vec<&'static str>>);
    impl Progress<E> for Recorder {
        fn record<'a>(&'a self, _t: &'static str, step: &'static str) -> StepFuture<'a, E> {
            Box::pin(async move {
                self.0.lock().push(step);
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn runs_records_and_undoes_newest_first() {
        let c = Ctx::default();
        let p = Recorder(Mutex::default());
        assert!(run(&TABLE, &c, &p, &Faults::default()).await.is_done());
        assert_eq!(*c.log.lock(), ["+a", "+b", "+c"]);
        assert_eq!(*p.0.lock(), ["a", "b", "c"]);

        let c = Ctx { fail_b: true, ..Default::default() };
        let out = run(&TABLE, &c, &NoProgress, &Faults::default()).await;
        assert!(matches!(out, Outcome::Failed { step: "b", .. }));
        assert_eq!(*c.log.lock(), ["+a", "+b", "-b", "-a"]);
    }

    #[tokio::test]
    async fn faults_strike_once_at_their_step() {
        let faults = Faults::default();
        for step in TABLE.names() {
            faults.arm("t", step, FaultKind::Fail);
            let c = Ctx::default();
            let out = run(&TABLE, &c, &NoProgress, &faults).await;
            assert!(matches!(out, Outcome::Failed { step: s, .. } if s == step));
            assert!(faults.is_empty());
            // Whatever ran was undone.
            let log = c.log.lock();
            for plus in log.iter().filter(|l| l.starts_with('+')) {
                let minus = format!("-{}", &plus[1..]);
                let undoable = plus != "+c";
                assert_eq!(log.contains(&minus), undoable, "{log:?}");
            }
        }
        faults.arm("t", "b", FaultKind::CrashAfter);
        let c = Ctx::default();
        assert!(matches!(run(&TABLE, &c, &NoProgress, &faults).await, Outcome::Crashed { step: "b" }));
        assert_eq!(*c.log.lock(), ["+a", "+b"]);
        // Resume from the recorded step, or unwind from it.
        assert!(run_from(&TABLE, &c, &NoProgress, &faults, "c").await.is_done());
        let c = Ctx::default();
        faults.arm("t", "b", FaultKind::CrashBefore);
        assert!(matches!(run(&TABLE, &c, &NoProgress, &faults).await, Outcome::Crashed { step: "b" }));
        assert!(unwind_from(&TABLE, &c, "b").await.is_empty());
        assert_eq!(*c.log.lock(), ["+a", "-b", "-a"]);
    }
}
