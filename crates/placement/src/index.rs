//! The in-memory read model of every provider: inventories, usages, traits, aggregates
//! and tree shape, kept beside the database so that allocation candidates and filtered
//! provider lists are answered without SQL.
//!
//! Why in memory: a candidate query must look at every provider's capacity per class,
//! which in SQL means aggregating all allocations per (provider, class) on every query;
//! with 10,000 providers that costs tens of milliseconds on SQLite. A scan of this index
//! costs microseconds per provider, and with `limit` it stops early.
//!
//! Consistency: the database stays the only authority. Every claim re-checks capacity
//! and provider generations inside its own transaction, so a stale index can at worst
//! offer a candidate whose claim then fails with 409 — never over-commit a provider.
//! After each write commits, the writer pushes what it changed here. Every change to a
//! provider's inventories, usages, traits or aggregates bumps its generation, so each
//! component of an entry carries the generation it was read at and an update only
//! replaces a component with one at least as new: out-of-order updates from concurrent
//! writers converge on the newest state. Deleted providers leave a tombstone so a late
//! update cannot resurrect them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::catalog::SHARES_VIA_AGGREGATE;

/// One inventory record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inv {
    /// Total amount.
    pub total: i64,
    /// Amount not available for allocation.
    pub reserved: i64,
    /// Smallest single allocation.
    pub min_unit: i64,
    /// Largest single allocation.
    pub max_unit: i64,
    /// Allocations must be multiples of this.
    pub step_size: i64,
    /// Overcommit ratio.
    pub allocation_ratio: f64,
}

impl Inv {
    /// Usable amount: `(total - reserved) * allocation_ratio`, rounded down as Placement does.
    pub fn capacity(&self) -> i64 {
        ((self.total - self.reserved) as f64 * self.allocation_ratio) as i64
    }

    /// True when one allocation of `amount` respects the unit constraints.
    pub fn unit_ok(&self, amount: i64) -> bool {
        amount >= self.min_unit && amount <= self.max_unit && self.step_size > 0 && amount % self.step_size == 0
    }

    /// True when `amount` more fits beside `used`.
    pub fn fits(&self, used: i64, amount: i64) -> bool {
        self.unit_ok(amount) && used + amount <= self.capacity()
    }
}

/// A provider as the index knows it.
#[derive(Debug, Clone, Default)]
pub struct Provider {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Generation.
    pub generation: i64,
    /// Parent, for nested providers.
    pub parent: Option<String>,
    /// Root of its tree (itself for a root).
    pub root: String,
    /// Inventory per resource class.
    pub inventories: BTreeMap<String, Inv>,
    /// Usage per resource class.
    pub usages: BTreeMap<String, i64>,
    /// Traits.
    pub traits: BTreeSet<String>,
    /// Aggregate UUIDs.
    pub aggregates: BTreeSet<String>,
    tag_res: i64,
    tag_traits: i64,
    tag_aggs: i64,
}

impl Provider {
    /// A provider entry read at `generation` with all components.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        uuid: String,
        name: String,
        generation: i64,
        parent: Option<String>,
        root: String,
        inventories: BTreeMap<String, Inv>,
        usages: BTreeMap<String, i64>,
        traits: BTreeSet<String>,
        aggregates: BTreeSet<String>,
    ) -> Self {
        Provider {
            uuid,
            name,
            generation,
            parent,
            root,
            inventories,
            usages,
            traits,
            aggregates,
            tag_res: generation,
            tag_traits: generation,
            tag_aggs: generation,
        }
    }

    /// Usage of `rc`.
    pub fn used(&self, rc: &str) -> i64 {
        self.usages.get(rc).copied().unwrap_or(0)
    }

    /// True when `amount` of `rc` fits.
    pub fn fits(&self, rc: &str, amount: i64) -> bool {
        self.inventories.get(rc).is_some_and(|i| i.fits(self.used(rc), amount))
    }
}

/// The whole read model.
#[derive(Debug, Default)]
pub struct Index {
    providers: HashMap<String, Provider>,
    trees: BTreeMap<String, BTreeSet<String>>,
    tombstones: HashSet<String>,
    sharing: BTreeSet<String>,
}

impl Index {
    /// Number of providers.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// A provider by UUID.
    pub fn get(&self, uuid: &str) -> Option<&Provider> {
        self.providers.get(uuid)
    }

    /// Roots in order with their members.
    pub fn trees(&self) -> impl Iterator<Item = (&String, &BTreeSet<String>)> {
        self.trees.iter()
    }

    /// Members of the tree rooted at `root`.
    pub fn tree(&self, root: &str) -> Option<&BTreeSet<String>> {
        self.trees.get(root)
    }

    /// Providers with `MISC_SHARES_VIA_AGGREGATE`.
    pub fn sharing(&self) -> &BTreeSet<String> {
        &self.sharing
    }

    /// Applies a provider read from the database after a write committed. `created`
    /// clears a tombstone left by an earlier provider with the same UUID.
    pub fn apply(&mut self, p: Provider, created: bool) {
        if created {
            self.tombstones.remove(&p.uuid);
        } else if self.tombstones.contains(&p.uuid) {
            return;
        }
        let uuid = p.uuid.clone();
        match self.providers.get_mut(&uuid) {
            Some(cur) => {
                if cur.root != p.root {
                    if let Some(t) = self.trees.get_mut(&cur.root) {
                        t.remove(&uuid);
                        if t.is_empty() {
                            self.trees.remove(&cur.root);
                        }
                    }
                    self.trees.entry(p.root.clone()).or_default().insert(uuid.clone());
                }
                cur.name = p.name;
                cur.parent = p.parent;
                cur.root = p.root;
                cur.generation = cur.generation.max(p.generation);
                if p.tag_res >= cur.tag_res {
                    cur.inventories = p.inventories;
                    cur.usages = p.usages;
                    cur.tag_res = p.tag_res;
                }
                if p.tag_traits >= cur.tag_traits {
                    cur.traits = p.traits;
                    cur.tag_traits = p.tag_traits;
                }
                if p.tag_aggs >= cur.tag_aggs {
                    cur.aggregates = p.aggregates;
                    cur.tag_aggs = p.tag_aggs;
                }
            }
            None => {
                self.trees.entry(p.root.clone()).or_default().insert(uuid.clone());
                self.providers.insert(uuid.clone(), p);
            }
        }
        let shares = self.providers.get(&uuid).is_some_and(|p| p.traits.contains(SHARES_VIA_AGGREGATE));
        if shares {
            self.sharing.insert(uuid);
        } else {
            self.sharing.remove(&uuid);
        }
    }

    /// Applies the inventories and usages a claim read and wrote at `generation`.
    pub fn apply_resources(
        &mut self,
        uuid: &str,
        generation: i64,
        inventories: BTreeMap<String, Inv>,
        usages: BTreeMap<String, i64>,
    ) {
        if let Some(cur) = self.providers.get_mut(uuid) {
            cur.generation = cur.generation.max(generation);
            if generation >= cur.tag_res {
                cur.inventories = inventories;
                cur.usages = usages;
                cur.tag_res = generation;
            }
        }
    }

    /// Forgets a deleted provider.
    pub fn remove(&mut self, uuid: &str) {
        self.tombstones.insert(uuid.to_string());
        self.sharing.remove(uuid);
        if let Some(p) = self.providers.remove(uuid) {
            if let Some(t) = self.trees.get_mut(&p.root) {
                t.remove(uuid);
                if t.is_empty() {
                    self.trees.remove(&p.root);
                }
            }
        }
    }

    /// Drops providers not in `present` (deleted by another process).
    pub fn retain(&mut self, present: &HashSet<String>) {
        let gone: Vec<String> = self.providers.keys().filter(|u| !present.contains(*u)).cloned().collect();
        for u in gone {
            self.remove(&u);
        }
    }

    /// True when `anc` is `p` or one of its ancestors.
    pub fn is_ancestor_or_self(&self, anc: &str, p: &str) -> bool {
        let mut cur = Some(p);
        let mut hops = 0;
        while let Some(c) = cur {
            if c == anc {
                return true;
            }
            hops += 1;
            if hops > 64 {
                return false;
            }
            cur = self.providers.get(c).and_then(|x| x.parent.as_deref());
        }
        false
    }
}

/// A trait expression: all of `required` (each an any-of list) and none of `forbidden`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraitFilter {
    /// Each inner list is satisfied by any one of its traits.
    pub required: Vec<Vec<String>>,
    /// None of these may be present.
    pub forbidden: Vec<String>,
}

impl TraitFilter {
    /// True when nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.required.is_empty() && self.forbidden.is_empty()
    }

    /// True when `traits` satisfy the filter.
    pub fn matches(&self, traits: &BTreeSet<String>) -> bool {
        self.required.iter().all(|any| any.iter().any(|t| traits.contains(t)))
            && !self.forbidden.iter().any(|t| traits.contains(t))
    }
}

/// An aggregate expression: member of one of each `any_of` list, and of none of `forbidden`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggFilter {
    /// Each list is satisfied by membership in any one of its aggregates.
    pub any_of: Vec<Vec<String>>,
    /// The provider may be in none of these.
    pub forbidden: Vec<String>,
}

impl AggFilter {
    /// True when nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.any_of.is_empty() && self.forbidden.is_empty()
    }

    /// True when the provider (whose own and root's aggregates are given) passes.
    /// Providers inherit their root's aggregates, as in Placement.
    pub fn matches(&self, own: &BTreeSet<String>, root: &BTreeSet<String>) -> bool {
        self.any_of.iter().all(|any| any.iter().any(|a| own.contains(a) || root.contains(a)))
            && !self.forbidden.iter().any(|a| own.contains(a) || root.contains(a))
    }
}

/// One request group of an allocation candidates query.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Suffix (`""` for the unsuffixed group, `"1"`, `"_NET"`...).
    pub suffix: String,
    /// Resources and amounts.
    pub resources: Vec<(String, i64)>,
    /// Traits.
    pub traits: TraitFilter,
    /// Aggregates.
    pub aggs: AggFilter,
    /// Restrict to the tree of this provider.
    pub in_tree: Option<String>,
}

/// A whole allocation candidates query.
#[derive(Debug, Clone, Default)]
pub struct CandidateQuery {
    /// Unsuffixed group first (always present, possibly empty), then suffixed groups.
    pub groups: Vec<Group>,
    /// `group_policy=isolate`.
    pub isolate: bool,
    /// Most allocation requests to return.
    pub limit: Option<usize>,
    /// Traits of the root provider.
    pub root_required: TraitFilter,
    /// Lists of group suffixes whose providers must share a subtree.
    pub same_subtree: Vec<Vec<String>>,
}

/// One allocation request found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Provider → class → amount.
    pub allocations: BTreeMap<String, BTreeMap<String, i64>>,
    /// Group suffix → providers that satisfied it.
    pub mappings: BTreeMap<String, Vec<String>>,
}

/// Most combinations examined in one tree, so that a large tree with many groups cannot
/// make one query run away.
const MAX_COMBINATIONS_PER_TREE: usize = 10_000;

/// A provider chosen for part of a group.
type Pick<'a> = Vec<(&'a Provider, Vec<(String, i64)>)>;

impl Index {
    /// Finds allocation requests for `q`, in tree order, stopping at `q.limit`.
    pub fn candidates(&self, q: &CandidateQuery) -> Vec<Candidate> {
        let mut out = Vec::new();
        let mut seen: HashSet<Candidate> = HashSet::new();
        let empty = BTreeSet::new();
        // Sharing providers by aggregate: they lend their inventory to trees in the same aggregate.
        let mut sharing_by_agg: HashMap<&str, Vec<&Provider>> = HashMap::new();
        for s in &self.sharing {
            if let Some(p) = self.providers.get(s) {
                for a in &p.aggregates {
                    sharing_by_agg.entry(a.as_str()).or_default().push(p);
                }
            }
        }
        let in_tree_roots: Vec<Option<Option<&str>>> = q
            .groups
            .iter()
            .map(|g| g.in_tree.as_ref().map(|t| self.providers.get(t).map(|p| p.root.as_str())))
            .collect();
        for (root_uuid, members) in &self.trees {
            let Some(root) = self.providers.get(root_uuid) else { continue };
            if !q.root_required.is_empty() && !q.root_required.matches(&root.traits) {
                continue;
            }
            let mut provs: Vec<&Provider> = members.iter().filter_map(|m| self.providers.get(m)).collect();
            if !sharing_by_agg.is_empty() {
                let mut extra: BTreeMap<&str, &Provider> = BTreeMap::new();
                for p in &provs {
                    for a in &p.aggregates {
                        if let Some(ss) = sharing_by_agg.get(a.as_str()) {
                            for s in ss {
                                if s.root != *root_uuid {
                                    extra.insert(s.uuid.as_str(), s);
                                }
                            }
                        }
                    }
                }
                provs.extend(extra.into_values());
            }
            let root_aggs = |p: &Provider| -> &BTreeSet<String> {
                if p.root == p.uuid {
                    &empty
                } else {
                    self.providers.get(&p.root).map(|r| &r.aggregates).unwrap_or(&empty)
                }
            };
            // Options per group: each option is a set of (provider, resources) picks.
            let mut per_group: Vec<Vec<Pick<'_>>> = Vec::with_capacity(q.groups.len());
            let mut dead = false;
            for (gi, g) in q.groups.iter().enumerate() {
                let tree_ok = |p: &Provider| match &in_tree_roots[gi] {
                    None => true,
                    Some(None) => false,
                    Some(Some(r)) => p.root == *r,
                };
                let passes =
                    |p: &Provider| tree_ok(p) && (g.aggs.is_empty() || g.aggs.matches(&p.aggregates, root_aggs(p)));
                let opts: Vec<Pick<'_>> = if g.suffix.is_empty() {
                    if g.resources.is_empty() {
                        vec![Vec::new()]
                    } else {
                        // Each class may come from a different provider of the tree.
                        let mut per_rc: Vec<Vec<&Provider>> = Vec::with_capacity(g.resources.len());
                        for (rc, amt) in &g.resources {
                            let c: Vec<&Provider> =
                                provs.iter().copied().filter(|p| p.fits(rc, *amt) && passes(p)).collect();
                            if c.is_empty() {
                                dead = true;
                                break;
                            }
                            per_rc.push(c);
                        }
                        if dead {
                            break;
                        }
                        let mut opts = Vec::new();
                        product(&per_rc, &mut |choice: &[&Provider]| {
                            let mut pick: Pick<'_> = Vec::new();
                            for (i, p) in choice.iter().enumerate() {
                                let r = g.resources[i].clone();
                                match pick.iter_mut().find(|(x, _)| x.uuid == p.uuid) {
                                    Some((_, v)) => v.push(r),
                                    None => pick.push((p, vec![r])),
                                }
                            }
                            if !g.traits.is_empty() {
                                let mut union = BTreeSet::new();
                                for (p, _) in &pick {
                                    union.extend(p.traits.iter().cloned());
                                }
                                if !g.traits.matches(&union) {
                                    return opts.len() < MAX_COMBINATIONS_PER_TREE;
                                }
                            }
                            opts.push(pick);
                            opts.len() < MAX_COMBINATIONS_PER_TREE
                        });
                        opts
                    }
                } else {
                    provs
                        .iter()
                        .copied()
                        .filter(|p| {
                            g.resources.iter().all(|(rc, amt)| p.fits(rc, *amt))
                                && passes(p)
                                && (g.traits.is_empty() || g.traits.matches(&p.traits))
                                && (!g.resources.is_empty() || p.root == *root_uuid)
                        })
                        .map(|p| vec![(p, g.resources.clone())])
                        .collect()
                };
                if opts.is_empty() {
                    dead = true;
                    break;
                }
                per_group.push(opts);
            }
            if dead {
                continue;
            }
            let mut combos = 0usize;
            let limit = q.limit.unwrap_or(usize::MAX);
            // A single-provider tree without sharing providers yields at most one
            // candidate per group choice and cannot repeat another tree's: no dedup needed.
            let dedup = provs.len() > 1 || !self.sharing.is_empty();
            let mut full = false;
            product(&per_group, &mut |choice: &[Pick<'_>]| {
                combos += 1;
                if let Some(c) = self.combine(q, choice) {
                    if !dedup || seen.insert(c.clone()) {
                        out.push(c);
                        if out.len() >= limit {
                            full = true;
                            return false;
                        }
                    }
                }
                combos < MAX_COMBINATIONS_PER_TREE
            });
            if full {
                break;
            }
        }
        out
    }

    /// Checks one choice of picks per group against the cross-group rules and merges it.
    fn combine(&self, q: &CandidateQuery, choice: &[Pick<'_>]) -> Option<Candidate> {
        let mut allocations: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        let mut mappings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut group_provs: Vec<Vec<&str>> = Vec::with_capacity(choice.len());
        for (gi, pick) in choice.iter().enumerate() {
            let g = &q.groups[gi];
            let mut ps = Vec::new();
            for (p, res) in pick {
                ps.push(p.uuid.as_str());
                for (rc, amt) in res {
                    *allocations.entry(p.uuid.clone()).or_default().entry(rc.clone()).or_insert(0) += amt;
                }
            }
            if !(g.suffix.is_empty() && g.resources.is_empty() && pick.is_empty()) {
                let m = mappings.entry(g.suffix.clone()).or_default();
                for p in &ps {
                    if !m.iter().any(|x| x == p) {
                        m.push(p.to_string());
                    }
                }
            }
            group_provs.push(ps);
        }
        // Several groups on one provider: the sum must fit.
        for (p, res) in &allocations {
            let prov = self.providers.get(p)?;
            for (rc, amt) in res {
                let inv = prov.inventories.get(rc)?;
                if prov.used(rc) + amt > inv.capacity() {
                    return None;
                }
            }
        }
        if q.isolate {
            let mut used: HashSet<&str> = HashSet::new();
            for (gi, ps) in group_provs.iter().enumerate() {
                if q.groups[gi].suffix.is_empty() || q.groups[gi].resources.is_empty() {
                    continue;
                }
                for p in ps {
                    if !used.insert(p) {
                        return None;
                    }
                }
            }
        }
        for subtree in &q.same_subtree {
            let mut members: Vec<&str> = Vec::new();
            for s in subtree {
                if let Some(gi) = q.groups.iter().position(|g| &g.suffix == s) {
                    members.extend(group_provs[gi].iter().copied());
                }
            }
            if !members.is_empty() && !members.iter().any(|a| members.iter().all(|m| self.is_ancestor_or_self(a, m))) {
                return None;
            }
        }
        // Unsuffixed traits and aggregates without unsuffixed resources apply to the whole request.
        if let Some(g0) = q.groups.first() {
            if g0.suffix.is_empty() && g0.resources.is_empty() && !g0.traits.is_empty() {
                let mut involved: BTreeSet<&str> = allocations.keys().map(String::as_str).collect();
                involved.extend(group_provs.iter().flatten().copied());
                let mut union = BTreeSet::new();
                for p in involved {
                    if let Some(prov) = self.providers.get(p) {
                        union.extend(prov.traits.iter().cloned());
                    }
                }
                if !g0.traits.matches(&union) {
                    return None;
                }
            }
        }
        Some(Candidate { allocations, mappings })
    }
}

/// Calls `f` with each element of the cartesian product of `lists` until it returns false.
fn product<T: Clone>(lists: &[Vec<T>], f: &mut dyn FnMut(&[T]) -> bool) {
    if lists.iter().any(|l| l.is_empty()) {
        return;
    }
    let mut idx = vec![0usize; lists.len()];
    let mut cur: Vec<T> = lists.iter().map(|l| l[0].clone()).collect();
    loop {
        if !f(&cur) {
            return;
        }
        let mut i = lists.len();
        loop {
            if i == 0 {
                return;
            }
            i -= 1;
            idx[i] += 1;
            if idx[i] < lists[i].len() {
                cur[i] = lists[i][idx[i]].clone();
                break;
            }
            idx[i] = 0;
            cur[i] = lists[i][0].clone();
        }
    }
}
