//! Group commit of claims for new consumers: the scheduler's hot path.
//!
//! Why: a claim costs a handful of statements plus a transaction, and on SQLite every
//! write goes through one connection, so claims queue on the writer; on PostgreSQL
//! (SERIALIZABLE) concurrent claims on one provider abort each other and retry. Here the
//! claims that arrive while a batch is being written wait and are then written together
//! in ONE transaction with set-based statements (one read of consumers, one read of
//! providers + inventories + usages, one generation bump, one insert of consumers, one
//! of allocations), whatever the batch size. At concurrency 8 that is ~8 claims per
//! transaction instead of one, and on PostgreSQL one writer per process instead of eight
//! colliding ones.
//!
//! Semantics stay per claim: claims are checked one after another against the usage left
//! by the claims accepted before them in the same batch, so each one is all-or-nothing
//! and a refused claim gets exactly the error (409 capacity, 409 consumer generation, 400
//! unknown provider/class) it would get alone, and changes nothing. Only claims that
//! create a consumer come here (consumer_generation null, or pre-1.28 bodies whose
//! consumer turns out not to exist): replacing or deleting allocations takes the
//! single-claim path, which the batch hands a claim back to when it is not simple after
//! all. If the batch transaction itself fails (a database error, or a uniqueness
//! violation caused by another process), every claim of it is re-run on its own, so one
//! bad claim cannot fail its neighbours.
//!
//! Durability is the database's: the batch commits once, and every claim of it is
//! answered only after that commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use stratus_db::sqlx::Row;
use stratus_db::{Query, Tx};
use tokio::sync::oneshot;

use super::{capacity_error, claim, ConsumerWrite, ProviderPatch};
use crate::error::{PlacementError, Result};
use crate::index::Inv;
use crate::{store, AppState};

/// Most claims written in one transaction (bounds statement size: ~25 bound values per
/// claim, far below SQLite's and PostgreSQL's parameter limits).
const MAX_BATCH: usize = 128;

/// What the batch decided for one claim.
enum Verdict {
    /// Written.
    Accepted,
    /// Refused, with the error the client gets.
    Refused(PlacementError),
    /// Not a simple new-consumer claim after all: run it on the single-claim path.
    Alone,
}

struct Pending {
    write: ConsumerWrite,
    done: oneshot::Sender<Outcome>,
}

enum Outcome {
    Done(Result<()>),
    Alone(Box<ConsumerWrite>),
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A drain task is running; new claims only need to queue.
    draining: bool,
}

/// The queue of claims waiting for the next batch. One per process and backend: on
/// SQLite there is one writer anyway; on PostgreSQL, measured, one pipeline of batches
/// beats several (parallel batches get small and collide on shared index pages under
/// SERIALIZABLE), while the transactions of other processes still serialize correctly
/// against it.
#[derive(Default)]
pub struct Batcher {
    queue: Mutex<Queue>,
}

/// True when `w` may go through the batch: it allocates something and either creates a
/// consumer or (before 1.28) does not say.
pub(crate) fn batchable(w: &ConsumerWrite) -> bool {
    !w.allocations.is_empty() && matches!(w.consumer_generation, None | Some(None))
}

/// Claims `w` as part of the next batch and returns its own result.
pub(crate) async fn submit(st: &Arc<AppState>, w: ConsumerWrite) -> Result<()> {
    let (tx, rx) = oneshot::channel();
    let start = {
        let mut q = st.batcher.queue.lock();
        q.pending.push(Pending { write: w, done: tx });
        !std::mem::replace(&mut q.draining, true)
    };
    if start {
        // A task, not this request's future: a client that disconnects must not stop
        // the batch the other claims wait on.
        tokio::spawn(drain(st.clone()));
    }
    match rx.await {
        Ok(Outcome::Done(r)) => r,
        Ok(Outcome::Alone(w)) => claim(st, vec![*w]).await,
        Err(_) => Err(PlacementError::Conflict("The claim was interrupted; please retry.".into())),
    }
}

async fn drain(st: Arc<AppState>) {
    loop {
        let batch: Vec<Pending> = {
            let mut q = st.batcher.queue.lock();
            if q.pending.is_empty() {
                q.draining = false;
                return;
            }
            let n = q.pending.len().min(MAX_BATCH);
            q.pending.drain(..n).collect()
        };
        run(&st, batch).await;
    }
}

async fn run(st: &AppState, batch: Vec<Pending>) {
    let writes: Arc<Vec<ConsumerWrite>> = Arc::new(batch.iter().map(|p| p.write.clone()).collect());
    let r = st
        .db
        .transaction(|tx| {
            let writes = writes.clone();
            Box::pin(async move { batch_in_tx(tx, &writes).await })
        })
        .await;
    match r {
        Ok((verdicts, patches)) => {
            {
                let mut idx = st.index.write();
                for p in patches {
                    idx.apply_resources(&p.uuid, p.generation, p.inventories, p.usages);
                }
            }
            for (p, v) in batch.into_iter().zip(verdicts) {
                let out = match v {
                    Verdict::Accepted => Outcome::Done(Ok(())),
                    Verdict::Refused(e) => Outcome::Done(Err(e)),
                    Verdict::Alone => Outcome::Alone(Box::new(p.write)),
                };
                let _ = p.done.send(out);
            }
        }
        Err(e) if batch.len() == 1 => {
            let _ = batch.into_iter().next().map(|p| p.done.send(Outcome::Done(Err(e))));
        }
        Err(e) => {
            tracing::debug!(error = %e, claims = batch.len(), "claim batch failed; running its claims one by one");
            for p in batch {
                let _ = p.done.send(Outcome::Alone(Box::new(p.write)));
            }
        }
    }
}

/// One provider as the batch reads it.
struct Prov {
    generation: i64,
    inventories: BTreeMap<String, Inv>,
    usages: BTreeMap<String, i64>,
}

/// The batch transaction: decides every claim in order, then writes the accepted ones.
async fn batch_in_tx(tx: &mut Tx, writes: &[ConsumerWrite]) -> Result<(Vec<Verdict>, Vec<ProviderPatch>)> {
    let now = stratus_core::time::now();
    let consumers: BTreeSet<&str> = writes.iter().map(|w| w.consumer.as_str()).collect();
    let mut existing: HashMap<String, i64> = HashMap::new();
    let mut q = Query::new("SELECT uuid, generation FROM placement_consumers WHERE ");
    q.push_in("uuid", consumers.iter().copied());
    for r in q.fetch_all(&mut **tx).await? {
        existing.insert(r.get(0), r.get(1));
    }
    let wanted: BTreeSet<&str> = writes.iter().flat_map(|w| w.allocations.iter().map(|a| a.0.as_str())).collect();
    // Providers and their generations, then inventories with current usage (two
    // statements, each driven by a primary key: robust to missing planner statistics).
    let mut q = Query::new("SELECT uuid, generation FROM placement_resource_providers WHERE ");
    q.push_in("uuid", wanted.iter().copied());
    let mut provs: HashMap<String, Prov> = HashMap::new();
    for r in q.fetch_all(&mut **tx).await? {
        provs.insert(r.get(0), Prov { generation: r.get(1), inventories: BTreeMap::new(), usages: BTreeMap::new() });
    }
    if !provs.is_empty() {
        let ids: Vec<String> = provs.keys().cloned().collect();
        let (invs, uses) = store::inventories_with_usage(&mut **tx, &ids).await?;
        for (rp, inv) in invs {
            if let Some(p) = provs.get_mut(&rp) {
                p.inventories = inv;
            }
        }
        for (rp, u) in uses {
            if let Some(p) = provs.get_mut(&rp) {
                p.usages = u;
            }
        }
    }
    let mut verdicts = Vec::with_capacity(writes.len());
    let mut created: BTreeSet<&str> = BTreeSet::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for w in writes {
        let known = existing.get(&w.consumer).copied().or(created.contains(w.consumer.as_str()).then_some(0));
        if let Some(g) = known {
            verdicts.push(match w.consumer_generation {
                // A new consumer was asked for and one exists: the client's view is stale.
                Some(None) => Verdict::Refused(PlacementError::ConcurrentUpdate(format!(
                    "consumer generation conflict - expected None but got {g}"
                ))),
                // Pre-1.28 replace of an existing consumer's allocations.
                _ => Verdict::Alone,
            });
            continue;
        }
        match check(tx, &provs, w).await? {
            Ok(adds) => {
                for ((rp, rc), amt) in adds {
                    if let Some(p) = provs.get_mut(rp) {
                        *p.usages.entry(rc.to_string()).or_insert(0) += amt;
                    }
                    touched.insert(rp.to_string());
                }
                created.insert(&w.consumer);
                verdicts.push(Verdict::Accepted);
            }
            Err(e) => verdicts.push(Verdict::Refused(e)),
        }
    }
    if touched.is_empty() {
        return Ok((verdicts, Vec::new()));
    }

    // Every provider that gains allocations gets a new generation. On PostgreSQL this
    // row write is also what makes a concurrent claim on the same provider (from another
    // process, or the single-claim path) fail serialization instead of over-committing.
    let mut u = Query::new("UPDATE placement_resource_providers SET generation = generation + 1, updated_at = ");
    u.bind(&now).push(" WHERE ").push_in("uuid", touched.iter().map(String::as_str));
    u.execute(&mut **tx).await?;

    let accepted: Vec<&ConsumerWrite> =
        writes.iter().zip(&verdicts).filter(|(_, v)| matches!(v, Verdict::Accepted)).map(|(w, _)| w).collect();
    let mut c = Query::new(
        "INSERT INTO placement_consumers (uuid, project_id, user_id, consumer_type, generation, created_at, updated_at) VALUES ",
    );
    let mut a = Query::new(
        "INSERT INTO placement_allocations (consumer_uuid, provider_uuid, resource_class, used, created_at) VALUES ",
    );
    let mut first_alloc = true;
    for (i, w) in accepted.iter().enumerate() {
        c.push(if i == 0 { "(" } else { ", (" });
        c.bind(&w.consumer).push(", ").bind(&w.project_id).push(", ").bind(&w.user_id).push(", ");
        c.bind(w.consumer_type.clone()).push(", 0, ").bind(&now).push(", ").bind(&now).push(")");
        for ((rp, rc), amt) in merged(w) {
            a.push(if first_alloc { "(" } else { ", (" });
            first_alloc = false;
            a.bind(&w.consumer).push(", ").bind(rp).push(", ").bind(rc).push(", ").bind(amt);
            a.push(", ").bind(&now).push(")");
        }
    }
    c.execute(&mut **tx).await?;
    a.execute(&mut **tx).await?;

    let patches = touched
        .into_iter()
        .filter_map(|rp| {
            let p = provs.remove(&rp)?;
            Some(ProviderPatch { uuid: rp, generation: p.generation + 1, inventories: p.inventories, usages: p.usages })
        })
        .collect();
    Ok((verdicts, patches))
}

/// Amounts per (provider, class), duplicates in one body added up.
fn merged(w: &ConsumerWrite) -> BTreeMap<(&str, &str), i64> {
    let mut m = BTreeMap::new();
    for (rp, rc, amt) in &w.allocations {
        *m.entry((rp.as_str(), rc.as_str())).or_insert(0) += amt;
    }
    m
}

/// Checks one claim against the usage so far. The outer error is a database failure;
/// the inner one the claim's own refusal.
async fn check<'w>(
    tx: &mut Tx,
    provs: &HashMap<String, Prov>,
    w: &'w ConsumerWrite,
) -> Result<std::result::Result<BTreeMap<(&'w str, &'w str), i64>, PlacementError>> {
    for (rp, _, _) in &w.allocations {
        if !provs.contains_key(rp) {
            return Ok(Err(PlacementError::BadRequest(format!(
                "Allocation for resource provider '{rp}' that does not exist."
            ))));
        }
    }
    for (rp, rc, amt) in &w.allocations {
        let Some(inv) = provs.get(rp).and_then(|p| p.inventories.get(rc)) else {
            if !store::class_exists(&mut **tx, rc).await? {
                return Ok(Err(PlacementError::BadRequest(format!(
                    "Unable to allocate inventory: No such resource class {rc}."
                ))));
            }
            return Ok(Err(PlacementError::Conflict(format!(
                "Unable to allocate inventory: Inventory for '{rc}' on resource provider '{rp}' invalid."
            ))));
        };
        if !inv.unit_ok(*amt) {
            return Ok(Err(PlacementError::Conflict(format!(
                "Unable to allocate inventory: Unable to create allocation for '{rc}' on resource provider '{rp}'. \
                 The requested amount {amt} violates min_unit {}, max_unit {} or step_size {}.",
                inv.min_unit, inv.max_unit, inv.step_size
            ))));
        }
    }
    let adds = merged(w);
    for ((rp, rc), amt) in &adds {
        let p = &provs[*rp];
        let used = p.usages.get(*rc).copied().unwrap_or(0);
        if used + amt > p.inventories[*rc].capacity() {
            return Ok(Err(capacity_error(rc, rp)));
        }
    }
    Ok(Ok(adds))
}
