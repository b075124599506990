//! Typed in-process access to the two placement calls on a scheduler's hot path: the
//! allocation candidates of one request group, and the claim that creates a consumer.
//!
//! Why: in one process, compute's scheduler asked for candidates over the internal REST
//! client, so every boot serialized up to `max_placement_results` candidates with their
//! provider summaries to JSON and parsed them back, and sent its claim through the whole
//! middleware stack: about a fifth of a boot's CPU. These functions answer from the same
//! read model and write through the same (group-committed) claim path as `GET
//! /allocation_candidates` and `PUT /allocations/{consumer}`, with the same validation,
//! so the answers are the ones the REST API would give. A placement in another process
//! is still reached over REST (this type is only found in-process, see
//! [`stratus_core::internal::InternalClient::provide`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::allocation_candidates::validate_traits;
use crate::allocations::ConsumerWrite;
use crate::error::{PlacementError, Result};
use crate::index::{AggFilter, CandidateQuery, Group, TraitFilter};
use crate::{store, AppState};

/// One candidate: what to claim, and the usage of its root provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Root provider of the tree the candidate lies in.
    pub root: String,
    /// Provider → class → amount.
    pub allocations: BTreeMap<String, BTreeMap<String, i64>>,
    /// Class → (capacity, used) of the root provider.
    pub summary: BTreeMap<String, (i64, i64)>,
}

/// The in-process API (registered by [`crate::PlacementService::start`]).
pub struct Direct {
    st: Arc<AppState>,
}

impl Direct {
    /// Over the service's state.
    pub fn new(st: Arc<AppState>) -> Self {
        Direct { st }
    }

    /// `GET /allocation_candidates?resources=…&required=…&member_of=in:…&limit=…`.
    pub async fn candidates(
        &self,
        resources: &[(String, i64)],
        required: &[String],
        member_of: &[String],
        limit: usize,
    ) -> Result<Vec<Candidate>> {
        let resources: Vec<(String, i64)> = resources.iter().filter(|(_, n)| *n > 0).cloned().collect();
        if resources.is_empty() {
            return Err(PlacementError::BadRequest(
                "At least one of resources or resources[$S] must be specified.".into(),
            ));
        }
        for (rc, _) in &resources {
            if !store::class_exists(self.st.db.reader(), rc).await? {
                return Err(PlacementError::BadRequest(format!(
                    "Invalid resource class in resources parameter: No such resource class {rc}."
                )));
            }
        }
        let traits = TraitFilter { required: required.iter().map(|t| vec![t.clone()]).collect(), forbidden: vec![] };
        validate_traits(&self.st, &traits).await?;
        let aggs = if member_of.is_empty() {
            AggFilter::default()
        } else {
            AggFilter { any_of: vec![member_of.to_vec()], forbidden: vec![] }
        };
        let q = CandidateQuery {
            groups: vec![Group { suffix: String::new(), resources, traits, aggs, in_tree: None }],
            limit: Some(limit.max(1)),
            ..Default::default()
        };
        let idx = self.st.index.read();
        let found = idx.candidates(&q);
        let mut out = Vec::with_capacity(found.len());
        for c in found {
            let Some(first) = c.allocations.keys().next() else { continue };
            let root = idx.get(first).map(|p| p.root.clone()).unwrap_or_else(|| first.clone());
            let summary = idx
                .get(&root)
                .map(|p| p.inventories.iter().map(|(rc, inv)| (rc.clone(), (inv.capacity(), p.used(rc)))).collect())
                .unwrap_or_default();
            out.push(Candidate { root, allocations: c.allocations, summary });
        }
        Ok(out)
    }

    /// `PUT /allocations/{consumer}` with `consumer_generation: null` (a new consumer):
    /// `Ok(false)` when placement answers 409 (capacity taken, or the consumer exists).
    pub async fn claim_new(
        &self,
        consumer: &str,
        allocations: &BTreeMap<String, BTreeMap<String, i64>>,
        project_id: &str,
        user_id: &str,
        consumer_type: &str,
    ) -> Result<bool> {
        let w = ConsumerWrite {
            consumer: consumer.to_string(),
            allocations: allocations
                .iter()
                .flat_map(|(rp, res)| res.iter().map(move |(rc, n)| (rp.clone(), rc.clone(), *n)))
                .collect(),
            project_id: project_id.to_string(),
            user_id: user_id.to_string(),
            consumer_generation: Some(None),
            consumer_type: Some(consumer_type.to_string()),
        };
        match crate::allocations::claim_new_consumer(&self.st, w).await {
            Ok(()) => Ok(true),
            Err(PlacementError::Conflict(_) | PlacementError::ConcurrentUpdate(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
