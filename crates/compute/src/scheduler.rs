//! The scheduler: placement's allocation candidates → filters → weighers → atomic claim.
//!
//! Placement answers "which providers have room"; the filters apply what placement does
//! not know (service enabled and up, availability zone, retry and affinity hints, image
//! properties, instances per host), the weighers rank what is left (free RAM by default,
//! as Nova), and the claim in placement is the commit point: if a concurrent boot took
//! the room first, placement refuses the claim and the next host is tried. Nothing is
//! overcommitted, whatever the concurrency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;
use serde_json::Value;
use stratus_core::Platform;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::placement::{Candidate, CandidateQuery, PlacementApi};
use crate::servers::store::Instance;
use crate::ComputeConfig;

/// A host as the filters and weighers see it.
#[derive(Debug, Clone)]
pub struct HostState {
    /// Compute node id (= resource provider uuid).
    pub node: String,
    /// Host name.
    pub host: String,
    /// Availability zone.
    pub az: String,
    /// Service disabled by an operator.
    pub disabled: bool,
    /// Heartbeat recent and not forced down.
    pub up: bool,
    /// `hypervisor_type` of the node.
    pub hypervisor_type: String,
    /// Instances on it now.
    pub num_instances: i64,
    /// The candidate placement offered.
    pub candidate: Candidate,
}

impl HostState {
    fn free(&self, rc: &str) -> f64 {
        self.candidate.summary.get(rc).map(|(cap, used)| (cap - used) as f64).unwrap_or(0.0)
    }
}

/// Why no host could be found: a summary for users, per-filter counts for admins.
#[derive(Debug, Clone, thiserror::Error)]
#[error("No valid host was found. {reason}")]
pub struct NoValidHost {
    /// Short reason.
    pub reason: String,
    /// Which filter removed how many hosts.
    pub details: String,
}

/// Host selection.
pub struct Scheduler {
    platform: Platform,
    cfg: ComputeConfig,
    placement: Arc<dyn PlacementApi>,
    hosts: Mutex<Option<HostCache>>,
    /// Resources of claims this scheduler is making right now, per node: concurrent
    /// boots weigh hosts with each other's pending claims counted, so a burst spreads
    /// over hosts instead of all racing for the one with the most free RAM.
    inflight: Mutex<HashMap<String, BTreeMap<String, i64>>>,
    /// When this scheduler started (see [`Scheduler::select_and_claim_for_build`]).
    started: std::time::Instant,
}

/// One compute node as the filters need it.
#[derive(Debug, Clone)]
struct NodeRow {
    host: String,
    az: Option<String>,
    disabled: bool,
    forced_down: bool,
    last_seen_up: Option<String>,
    hypervisor_type: String,
}

/// Compute nodes and instance counts per host, read at most every [`HOST_CACHE_TTL`]
/// and sooner when an operator changed a service (its `updated_at` moves), as Nova's
/// host manager caches host states. Per boot that replaces reading every node and
/// counting every instance (O(hosts + instances) per boot) by one aggregate.
struct HostCache {
    read_at: std::time::Instant,
    /// `MAX(updated_at)` and `COUNT(*)` of services when read.
    stamp: (Option<String>, i64),
    /// When the stamp was last compared with the database's.
    stamp_checked_at: std::time::Instant,
    /// [`SERVICES_CHANGED`] when read.
    generation: u64,
    nodes: Arc<HashMap<String, NodeRow>>,
    /// Instances per host when read, plus the ones this scheduler placed since.
    counts: HashMap<String, i64>,
}

const HOST_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the services stamp is compared with the database: a change made through
/// this process is seen at once (see [`services_changed`]); one made by another
/// controller sharing the database, within this delay. Checking it on every boot was
/// one query per boot.
const STAMP_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Bumped by every change of a compute service or node made in this process.
static SERVICES_CHANGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Says that services or nodes changed (enabled, disabled, forced down, deleted,
/// registered, moved between zones): the next boot re-reads them.
pub fn services_changed() {
    SERVICES_CHANGED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Removes a pending claim from [`Scheduler::inflight`] however the claim ends.
struct Inflight<'a> {
    s: &'a Scheduler,
    node: String,
    res: BTreeMap<String, i64>,
}

impl<'a> Inflight<'a> {
    fn new(s: &'a Scheduler, node: &str, res: &BTreeMap<String, i64>) -> Self {
        let mut m = s.inflight.lock();
        let e = m.entry(node.to_string()).or_default();
        for (rc, n) in res {
            *e.entry(rc.clone()).or_default() += n;
        }
        Inflight { s, node: node.to_string(), res: res.clone() }
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut m = self.s.inflight.lock();
        if let Some(e) = m.get_mut(&self.node) {
            for (rc, n) in &self.res {
                if let Some(v) = e.get_mut(rc) {
                    *v -= n;
                }
            }
            e.retain(|_, v| *v != 0);
            if e.is_empty() {
                m.remove(&self.node);
            }
        }
    }
}

/// A named host filter.
pub(crate) type Filter = (&'static str, Box<dyn Fn(&HostState) -> bool + Send + Sync>);

impl Scheduler {
    /// A scheduler.
    pub fn new(platform: Platform, cfg: ComputeConfig, placement: Arc<dyn PlacementApi>) -> Self {
        Scheduler {
            platform,
            cfg,
            placement,
            hosts: Default::default(),
            inflight: Default::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Reads the services stamp.
    async fn read_stamp(&self) -> Result<(Option<String>, i64), stratus_db::DbError> {
        let r = Query::new("SELECT MAX(updated_at) AS m, COUNT(*) AS n FROM compute_services")
            .fetch_optional(self.platform.db.reader())
            .await?;
        Ok(r.map(|r| (r.try_get::<Option<String>, _>("m").unwrap_or(None), r.try_get::<i64, _>("n").unwrap_or(0)))
            .unwrap_or_default())
    }

    /// Makes sure the cache holds nodes and counts that are still valid.
    async fn refresh_hosts(&self) -> Result<(), stratus_db::DbError> {
        let generation = SERVICES_CHANGED.load(std::sync::atomic::Ordering::SeqCst);
        let stamp_to_check = {
            let mut cache = self.hosts.lock();
            match cache.as_mut() {
                Some(c) if c.generation == generation && c.read_at.elapsed() < HOST_CACHE_TTL => {
                    if c.stamp_checked_at.elapsed() < STAMP_CHECK_EVERY {
                        return Ok(());
                    }
                    // One caller checks; the others go on with the cache meanwhile.
                    c.stamp_checked_at = std::time::Instant::now();
                    Some(c.stamp.clone())
                }
                _ => None,
            }
        };
        let stamp = self.read_stamp().await?;
        if stamp_to_check.as_ref() == Some(&stamp) {
            return Ok(());
        }
        let db = self.platform.db.reader();
        let rows = Query::new(
            "SELECT n.id, n.host, n.hypervisor_type, s.disabled, s.forced_down, s.last_seen_up, s.availability_zone \
             FROM compute_nodes n JOIN compute_services s ON s.id = n.service_id",
        )
        .fetch_all(db)
        .await?;
        let mut nodes = HashMap::new();
        for r in rows {
            nodes.insert(
                r.try_get::<String, _>("id").unwrap_or_default(),
                NodeRow {
                    host: r.try_get("host").unwrap_or_default(),
                    az: r.try_get("availability_zone").unwrap_or(None),
                    disabled: stratus_db::flag(&r, "disabled"),
                    forced_down: stratus_db::flag(&r, "forced_down"),
                    last_seen_up: r.try_get("last_seen_up").unwrap_or(None),
                    hypervisor_type: r.try_get("hypervisor_type").unwrap_or_default(),
                },
            );
        }
        let mut counts: HashMap<String, i64> = HashMap::new();
        for r in Query::new("SELECT host, COUNT(*) AS n FROM compute_instances WHERE deleted = ")
            .bind(false)
            .push(" AND host IS NOT NULL GROUP BY host")
            .fetch_all(db)
            .await?
        {
            counts.insert(r.try_get("host").unwrap_or_default(), r.try_get("n").unwrap_or(0));
        }
        let now = std::time::Instant::now();
        *self.hosts.lock() =
            Some(HostCache { read_at: now, stamp, stamp_checked_at: now, generation, nodes: Arc::new(nodes), counts });
        Ok(())
    }

    /// Counts a server this scheduler just placed on `host` until the next cache read.
    fn placed_on(&self, host: &str) {
        if let Some(c) = self.hosts.lock().as_mut() {
            *c.counts.entry(host.to_string()).or_default() += 1;
        }
    }

    /// The availability zone of compute node `node` as last read (None: not known here).
    pub fn cached_az(&self, node: &str) -> Option<String> {
        let cache = self.hosts.lock();
        let n = cache.as_ref()?.nodes.get(node)?;
        Some(n.az.clone().unwrap_or_else(|| self.cfg.default_availability_zone.clone()))
    }

    async fn host_states(&self, cands: Vec<Candidate>) -> Result<Vec<HostState>, NoValidHost> {
        self.refresh_hosts().await.map_err(|e| NoValidHost {
            reason: "The scheduler could not read host records.".into(),
            details: e.to_string(),
        })?;
        let horizon = chrono_horizon(self.cfg.service_down_time_secs);
        let inflight = self.inflight.lock();
        let cache = self.hosts.lock();
        let Some(c) = cache.as_ref() else { return Ok(vec![]) };
        Ok(cands
            .into_iter()
            .filter_map(|mut cand| {
                let n = c.nodes.get(&cand.provider)?;
                // Claims other boots are making on this node count as used.
                if let Some(pending) = inflight.get(&cand.provider) {
                    for (rc, amt) in pending {
                        if let Some((_, used)) = cand.summary.get_mut(rc) {
                            *used += amt;
                        }
                    }
                }
                Some(HostState {
                    node: cand.provider.clone(),
                    host: n.host.clone(),
                    az: n.az.clone().unwrap_or_else(|| self.cfg.default_availability_zone.clone()),
                    disabled: n.disabled,
                    up: !n.forced_down && n.last_seen_up.as_ref().is_some_and(|l| *l >= horizon),
                    hypervisor_type: n.hypervisor_type.clone(),
                    num_instances: c.counts.get(&n.host).copied().unwrap_or(0),
                    candidate: cand,
                })
            })
            .collect())
    }

    async fn hosts_of(&self, uuids: &[String]) -> HashSet<String> {
        if uuids.is_empty() {
            return HashSet::new();
        }
        let mut q = Query::new("SELECT host FROM compute_instances WHERE host IS NOT NULL AND ");
        q.push_in("uuid", uuids.to_vec());
        q.fetch_all(self.platform.db.reader())
            .await
            .map(|rows| rows.iter().filter_map(|r| r.try_get::<String, _>("host").ok()).collect())
            .unwrap_or_default()
    }

    /// Picks a host for a new server and claims its resources there, as
    /// [`Scheduler::select_and_claim`] does, waiting for a host to come up first when none
    /// is yet.
    ///
    /// A cloud that has just started may have no compute host up: its agents register
    /// over the bus a moment after the APIs answer (the local one too). A boot accepted in
    /// that window failed at once with "No valid host". While no host is up (and none was
    /// forced down by the operator) and the scheduler is younger than the service-down
    /// time, the choice is retried until one is; then, or when hosts are up but none fits,
    /// the answer stands. Moves never wait: their hosts are known and their answer is due.
    pub async fn select_and_claim_for_build(&self, inst: &Instance) -> Result<(String, String), NoValidHost> {
        let grace = std::time::Duration::from_secs(self.cfg.service_down_time_secs);
        loop {
            let r = self.select_and_claim(inst).await;
            if r.is_ok() || self.started.elapsed() >= grace || !self.no_host_up_yet().await {
                return r;
            }
            tracing::info!(instance = %inst.uuid, "no compute host is up yet after the start: waiting for one");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// True when no compute node's service is up (reporting within the service-down time)
    /// and none is forced down (an operator's "down" is an answer, not a wait).
    async fn no_host_up_yet(&self) -> bool {
        // Read fresh: the cache may predate the registration being waited for.
        *self.hosts.lock() = None;
        if self.refresh_hosts().await.is_err() {
            return false;
        }
        let horizon = chrono_horizon(self.cfg.service_down_time_secs);
        let cache = self.hosts.lock();
        cache.as_ref().is_none_or(|c| {
            !c.nodes.values().any(|n| n.forced_down || n.last_seen_up.as_ref().is_some_and(|l| *l >= horizon))
        })
    }

    /// Picks a host for `inst` and claims its resources there. Returns (host, node).
    pub async fn select_and_claim(&self, inst: &Instance) -> Result<(String, String), NoValidHost> {
        let resources = inst.flavor.resources();
        let hints = &inst.scheduler_hints;
        let list = |k: &str| -> Vec<String> {
            match &hints[k] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                _ => vec![],
            }
        };
        let same = self.hosts_of(&list("same_host")).await;
        let different = self.hosts_of(&list("different_host")).await;
        let wants_same = !list("same_host").is_empty();
        let force_host = hints["force_host"].as_str().map(str::to_string);
        let az = inst.requested_az.clone();
        let retry: HashSet<String> = inst.retry_hosts.iter().cloned().collect();
        let want_ht = inst
            .image
            .as_ref()
            .and_then(|i| i.properties.get("hypervisor_type"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);

        // Aggregates (zone → placement member_of, aggregate extra specs) and server
        // groups add their filters and weigher to the core set.
        let extra = crate::filters::for_instance(&self.platform.db, self.placement.as_ref(), inst, &self.cfg)
            .await
            .map_err(|e| NoValidHost {
                reason: "The scheduler could not read aggregates or server groups.".into(),
                details: e.to_string(),
            })?;
        let mut last_log = String::new();
        for round in 0..3 {
            let q = CandidateQuery {
                resources: resources.clone(),
                limit: self.cfg.max_placement_results,
                member_of: extra.member_of.clone(),
                ..Default::default()
            };
            let cands = self.placement.candidates(&q).await.map_err(|e| NoValidHost {
                reason: "Placement could not be consulted.".into(),
                details: e.to_string(),
            })?;
            let n_cands = cands.len();
            let mut hosts = self.host_states(cands).await?;
            let filters: Vec<Filter> = vec![
                ("ComputeFilter", Box::new(|h: &HostState| h.up && !h.disabled)),
                (
                    "RetryFilter",
                    Box::new({
                        let retry = retry.clone();
                        move |h: &HostState| !retry.contains(&h.host)
                    }),
                ),
                (
                    "AvailabilityZoneFilter",
                    Box::new({
                        let az = az.clone();
                        move |h: &HostState| az.as_ref().is_none_or(|z| *z == h.az)
                    }),
                ),
                (
                    "ForceHostFilter",
                    Box::new({
                        let f = force_host.clone();
                        move |h: &HostState| f.as_ref().is_none_or(|f| *f == h.host)
                    }),
                ),
                (
                    "SameHostFilter",
                    Box::new({
                        let same = same.clone();
                        move |h: &HostState| !wants_same || same.contains(&h.host)
                    }),
                ),
                (
                    "DifferentHostFilter",
                    Box::new({
                        let d = different.clone();
                        move |h: &HostState| !d.contains(&h.host)
                    }),
                ),
                (
                    "ImagePropertiesFilter",
                    Box::new({
                        let w = want_ht.clone();
                        move |h: &HostState| w.as_ref().is_none_or(|w| *w == h.hypervisor_type.to_ascii_lowercase())
                    }),
                ),
                (
                    "NumInstancesFilter",
                    Box::new({
                        let max = self.cfg.max_instances_per_host;
                        move |h: &HostState| h.num_instances < max
                    }),
                ),
            ];
            let mut log = vec![format!("placement: {n_cands} candidates, {} known hosts", hosts.len())];
            for (name, f) in filters.iter().chain(extra.filters.iter()) {
                let before = hosts.len();
                hosts.retain(|h| f(h));
                log.push(format!("{name}: (start: {before}, end: {})", hosts.len()));
            }
            last_log = log.join(", ");
            if hosts.is_empty() {
                tracing::info!(instance = %inst.uuid, filters = %last_log, "no valid host");
                break;
            }
            self.weigh(&mut hosts);
            extra.reorder(&mut hosts);
            // host_subset_size: pick the first host at random among the best N.
            let n = self.cfg.host_subset_size.clamp(1, hosts.len());
            if n > 1 {
                let i = rand::thread_rng().gen_range(0..n);
                hosts.swap(0, i);
            }
            for h in &hosts {
                let _pending = Inflight::new(self, &h.node, &resources);
                match self.placement.claim(&inst.uuid, &h.candidate.allocations, &inst.project_id, &inst.user_id).await
                {
                    Ok(true) => {
                        self.placed_on(&h.host);
                        return Ok((h.host.clone(), h.node.clone()));
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(instance = %inst.uuid, host = %h.host, error = %e, "claim failed");
                        continue;
                    }
                }
            }
            tracing::debug!(instance = %inst.uuid, round, "every claim lost a race; asking placement again");
        }
        Err(NoValidHost {
            reason: "There are not enough hosts available.".into(),
            details: format!("Filter results: {last_log}"),
        })
    }

    fn weigh(&self, hosts: &mut Vec<HostState>) {
        let metrics: [(&str, f64); 3] = [
            ("MEMORY_MB", self.cfg.ram_weight_multiplier),
            ("VCPU", self.cfg.cpu_weight_multiplier),
            ("DISK_GB", self.cfg.disk_weight_multiplier),
        ];
        let mut score = vec![0.0f64; hosts.len()];
        for (rc, mult) in metrics {
            if mult == 0.0 {
                continue;
            }
            let vals: Vec<f64> = hosts.iter().map(|h| h.free(rc)).collect();
            let (min, max) = vals.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
            for (s, v) in score.iter_mut().zip(vals) {
                *s += if max > min { mult * (v - min) / (max - min) } else { 0.0 };
            }
        }
        let mut ranked: Vec<(f64, HostState)> = score.into_iter().zip(hosts.drain(..)).collect();
        ranked.sort_by(|(sa, a), (sb, b)| {
            sb.partial_cmp(sa).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.host.cmp(&b.host))
        });
        hosts.extend(ranked.into_iter().map(|(_, h)| h));
    }
}

/// The oldest heartbeat timestamp that still counts as `up`.
pub fn chrono_horizon(down_secs: u64) -> String {
    let t = chrono::Utc::now() - chrono::TimeDelta::seconds(down_secs as i64);
    stratus_core::time::to_storage(t)
}
