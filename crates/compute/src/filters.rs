//! Scheduler filters and weighers beyond the core set in [`crate::scheduler`]: the
//! ones host aggregates (availability zones as placement `member_of`,
//! AggregateInstanceExtraSpecsFilter) and server groups ((anti-)affinity filters, soft
//! weighers) contribute for one instance.

use stratus_db::Db;

use crate::error::Result;
use crate::placement::PlacementApi;
use crate::scheduler::{Filter, HostState};
use crate::server_groups::{GroupGuard, Weigher};
use crate::servers::store::Instance;
use crate::ComputeConfig;

/// What aggregates and groups add to one scheduling request.
pub(crate) struct Extra {
    /// Placement `member_of` (any of).
    pub member_of: Vec<String>,
    /// Hard filters.
    pub filters: Vec<Filter>,
    /// Soft (anti-)affinity.
    weigher: Option<Weigher>,
    /// Held until the claim is made (dropped with this value).
    _group: Option<GroupGuard>,
}

impl Extra {
    /// Applies the soft weigher on top of the core weights (stable: equal scores keep
    /// the core order).
    pub fn reorder(&self, hosts: &mut [HostState]) {
        if let Some(w) = &self.weigher {
            hosts.sort_by(|a, b| w(b).partial_cmp(&w(a)).unwrap_or(std::cmp::Ordering::Equal));
        }
    }
}

/// The extra filters and weigher for `inst`.
pub(crate) async fn for_instance(
    db: &Db,
    placement: &dyn PlacementApi,
    inst: &Instance,
    cfg: &ComputeConfig,
) -> Result<Extra> {
    let (member_of, mut filters) = crate::aggregates::scheduling(db, inst, &cfg.default_availability_zone).await?;
    let g = crate::server_groups::scheduling(db, placement, inst).await?;
    filters.extend(g.filters);
    Ok(Extra { member_of, filters, weigher: g.weigher, _group: g.guard })
}
