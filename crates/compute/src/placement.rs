//! Placement, as the scheduler and conductor use it.
//!
//! Nova talks to placement through its REST API; so does Stratus, in-process
//! ([`RestPlacement`], microversion 1.39). Claims are atomic in placement: a `PUT
//! /allocations/{consumer}` that would exceed capacity fails with 409, and the scheduler
//! moves on to the next candidate, so concurrent boots never overcommit a host.
//! [`MemoryPlacement`] implements the same contract in memory for unit tests and
//! benchmarks that run without the placement service.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_compute_proto::virt::Inventory;
use stratus_core::internal::{InternalClient, InternalUri};
use stratus_core::RequestContext;

/// Resource class → amount.
pub type Resources = BTreeMap<String, i64>;
/// Provider uuid → resources.
pub type Allocations = BTreeMap<String, Resources>;

/// A failure talking to placement.
#[derive(Debug, Clone, thiserror::Error)]
#[error("placement: {0}")]
pub struct PlacementError(pub String);

/// One allocation candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Root provider (the compute node).
    pub provider: String,
    /// What to claim.
    pub allocations: Allocations,
    /// Capacity and usage of the provider, per resource class: (capacity, used).
    pub summary: BTreeMap<String, (i64, i64)>,
}

/// What the scheduler asks for.
#[derive(Debug, Clone, Default)]
pub struct CandidateQuery {
    /// Resources of one instance.
    pub resources: Resources,
    /// Required traits.
    pub required: Vec<String>,
    /// Aggregate uuids the provider must be in (any of).
    pub member_of: Vec<String>,
    /// Most candidates wanted.
    pub limit: usize,
}

/// The placement operations compute needs.
#[async_trait]
pub trait PlacementApi: Send + Sync + 'static {
    /// Creates the provider if it does not exist.
    async fn ensure_provider(&self, uuid: &str, name: &str) -> Result<(), PlacementError>;
    /// Replaces the provider's inventories.
    async fn set_inventories(&self, uuid: &str, inv: &BTreeMap<String, Inventory>) -> Result<(), PlacementError>;
    /// Allocation candidates.
    async fn candidates(&self, q: &CandidateQuery) -> Result<Vec<Candidate>, PlacementError>;
    /// Claims `alloc` for `consumer` atomically; `Ok(false)` when capacity (or a concurrent
    /// writer) refused it.
    async fn claim(
        &self,
        consumer: &str,
        alloc: &Allocations,
        project: &str,
        user: &str,
    ) -> Result<bool, PlacementError>;
    /// Removes every allocation of `consumer` (idempotent).
    async fn release(&self, consumer: &str) -> Result<(), PlacementError>;
    /// Allocations of `consumer`.
    async fn allocations(&self, consumer: &str) -> Result<Allocations, PlacementError>;
    /// Usages of a provider.
    async fn provider_usages(&self, uuid: &str) -> Result<Resources, PlacementError>;
    /// Usages of a project (for quotas).
    async fn project_usages(&self, project: &str) -> Result<Resources, PlacementError>;
    /// Atomically gives `to` the allocations of `from` (replacing what `to` held) and
    /// empties `from`, as Nova moves an instance's source allocation to its migration
    /// record and back (one `POST /allocations`). Ok(false) when `from` held nothing.
    async fn move_allocations(
        &self,
        from: &str,
        to: &str,
        project: &str,
        user: &str,
        to_type: &str,
    ) -> Result<bool, PlacementError>;
    /// Aggregates of a provider.
    async fn provider_aggregates(&self, uuid: &str) -> Result<Vec<String>, PlacementError>;
    /// Replaces the aggregates of a provider.
    async fn set_provider_aggregates(&self, uuid: &str, aggs: &[String]) -> Result<(), PlacementError>;
}

const PLACEMENT_VERSION: &str = "placement 1.39";

/// Placement through its REST API, in-process; candidates and new claims go through
/// placement's typed in-process API when this process runs placement
/// ([`stratus_placement::direct`]: the same answers without the JSON round trip).
pub struct RestPlacement {
    client: InternalClient,
    ctx: RequestContext,
    /// Use the typed API when offered.
    direct: bool,
}

impl RestPlacement {
    /// Calls placement through `client` as the cloud itself.
    pub fn new(client: InternalClient) -> Self {
        RestPlacement { client, ctx: RequestContext::internal_admin(), direct: true }
    }

    /// Like [`RestPlacement::new`], always over REST (tests of the REST contract).
    pub fn rest_only(client: InternalClient) -> Self {
        RestPlacement { client, ctx: RequestContext::internal_admin(), direct: false }
    }

    fn direct(&self) -> Option<Arc<stratus_placement::direct::Direct>> {
        self.direct.then(|| self.client.typed::<stratus_placement::direct::Direct>()).flatten()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), PlacementError> {
        let r = self
            .client
            .call(
                &self.ctx,
                method,
                &format!("/placement{path}"),
                body,
                &[("OpenStack-API-Version", PLACEMENT_VERSION)],
            )
            .await
            .map_err(|e| PlacementError(e.message))?;
        Ok((r.status, r.body))
    }
}

/// `GET /allocation_candidates` as the scheduler reads it, decoded straight from the
/// bytes: building a `serde_json::Value` tree of up to `max_placement_results`
/// candidates, then copying it into [`Candidate`]s, was most of a boot's JSON cost.
mod wire {
    use std::collections::{BTreeMap, HashMap};

    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Body {
        pub allocation_requests: Vec<Request>,
        pub provider_summaries: HashMap<String, Summary>,
    }

    #[derive(Deserialize)]
    pub struct Request {
        pub allocations: BTreeMap<String, Resources>,
    }

    #[derive(Deserialize)]
    pub struct Resources {
        pub resources: BTreeMap<String, i64>,
    }

    #[derive(Deserialize)]
    pub struct Summary {
        pub resources: BTreeMap<String, Usage>,
        pub root_provider_uuid: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Usage {
        pub capacity: i64,
        pub used: i64,
    }
}

fn err(what: &str, status: StatusCode, body: &Value) -> PlacementError {
    let detail = body["errors"][0]["detail"].as_str().unwrap_or("");
    PlacementError(format!("{what} failed with {status}: {detail}"))
}

fn parse_resources(v: &Value) -> Resources {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, n)| n.as_i64().map(|n| (k.clone(), n))).collect())
        .unwrap_or_default()
}

fn parse_allocations(v: &Value) -> Allocations {
    v.as_object()
        .map(|m| m.iter().map(|(rp, a)| (rp.clone(), parse_resources(&a["resources"]))).collect())
        .unwrap_or_default()
}

fn alloc_body(alloc: &Allocations) -> Value {
    let mut m = serde_json::Map::new();
    for (rp, res) in alloc {
        m.insert(rp.clone(), json!({"resources": res}));
    }
    Value::Object(m)
}

#[async_trait]
impl PlacementApi for RestPlacement {
    async fn ensure_provider(&self, uuid: &str, name: &str) -> Result<(), PlacementError> {
        let (s, b) = self.call(Method::GET, &format!("/resource_providers/{uuid}"), None).await?;
        if s.is_success() {
            return Ok(());
        }
        let (s, b2) =
            self.call(Method::POST, "/resource_providers", Some(&json!({"uuid": uuid, "name": name}))).await?;
        if s.is_success() || s == StatusCode::CONFLICT {
            return Ok(());
        }
        let _ = b;
        Err(err("creating resource provider", s, &b2))
    }

    async fn set_inventories(&self, uuid: &str, inv: &BTreeMap<String, Inventory>) -> Result<(), PlacementError> {
        for _ in 0..5 {
            let (s, b) = self.call(Method::GET, &format!("/resource_providers/{uuid}"), None).await?;
            if !s.is_success() {
                return Err(err("reading resource provider", s, &b));
            }
            let generation = b["generation"].as_i64().unwrap_or(0);
            let body = json!({"resource_provider_generation": generation, "inventories": inv});
            let (s, b) =
                self.call(Method::PUT, &format!("/resource_providers/{uuid}/inventories"), Some(&body)).await?;
            if s.is_success() {
                return Ok(());
            }
            if s != StatusCode::CONFLICT {
                return Err(err("setting inventories", s, &b));
            }
        }
        Err(PlacementError("inventories kept changing under us".into()))
    }

    async fn candidates(&self, q: &CandidateQuery) -> Result<Vec<Candidate>, PlacementError> {
        if let Some(d) = self.direct() {
            let res: Vec<(String, i64)> = q.resources.iter().map(|(k, n)| (k.clone(), *n)).collect();
            let found = d
                .candidates(&res, &q.required, &q.member_of, q.limit)
                .await
                .map_err(|e| PlacementError(format!("allocation candidates failed: {e}")))?;
            return Ok(found
                .into_iter()
                .map(|c| Candidate { provider: c.root, allocations: c.allocations, summary: c.summary })
                .collect());
        }
        let res: Vec<String> = q.resources.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}:{n}")).collect();
        // Traits and aggregates come from flavor extra specs and hints: encoded, so that
        // no value can break the URI.
        let mut path = InternalUri::new("/placement/allocation_candidates")
            .query("resources", &res.join(","))
            .query("limit", &q.limit.max(1).to_string());
        if !q.required.is_empty() {
            path = path.query("required", &q.required.join(","));
        }
        if !q.member_of.is_empty() {
            path = path.query("member_of", &format!("in:{}", q.member_of.join(",")));
        }
        let path = path.check().map_err(|e| PlacementError(e.message))?;
        let req = axum::http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("OpenStack-API-Version", PLACEMENT_VERSION)
            .body(axum::body::Body::empty())
            .map_err(|e| PlacementError(e.to_string()))?;
        let resp = self.client.call_streaming(&self.ctx, req).await.map_err(|e| PlacementError(e.message))?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 256 * 1024 * 1024)
            .await
            .map_err(|e| PlacementError(format!("allocation candidates: {e}")))?;
        if !status.is_success() {
            return Err(err("allocation candidates", status, &serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
        }
        let b: wire::Body = serde_json::from_slice(&bytes)
            .map_err(|e| PlacementError(format!("allocation candidates: unexpected answer: {e}")))?;
        let mut summaries = b.provider_summaries;
        let mut taken: HashMap<String, BTreeMap<String, (i64, i64)>> = HashMap::new();
        let mut out = Vec::with_capacity(b.allocation_requests.len());
        for ar in b.allocation_requests {
            let allocations: Allocations = ar.allocations.into_iter().map(|(rp, r)| (rp, r.resources)).collect();
            // The compute node is the root of the tree; with one provider per node it is
            // the only one.
            let Some(first) = allocations.keys().next() else { continue };
            let root = summaries.get(first).and_then(|s| s.root_provider_uuid.clone()).unwrap_or_else(|| first.clone());
            // Usually one candidate per root: its summary is moved, not copied.
            let summary = match summaries.remove(&root) {
                Some(s) => {
                    let m: BTreeMap<String, (i64, i64)> =
                        s.resources.into_iter().map(|(rc, u)| (rc, (u.capacity, u.used))).collect();
                    taken.insert(root.clone(), m.clone());
                    m
                }
                None => taken.get(&root).cloned().unwrap_or_default(),
            };
            out.push(Candidate { provider: root, allocations, summary });
        }
        Ok(out)
    }

    async fn claim(
        &self,
        consumer: &str,
        alloc: &Allocations,
        project: &str,
        user: &str,
    ) -> Result<bool, PlacementError> {
        if let Some(d) = self.direct() {
            return d
                .claim_new(consumer, alloc, project, user, "INSTANCE")
                .await
                .map_err(|e| PlacementError(format!("claiming resources failed: {e}")));
        }
        let body = json!({
            "allocations": alloc_body(alloc),
            "project_id": project,
            "user_id": user,
            "consumer_generation": null,
            "consumer_type": "INSTANCE",
        });
        let (s, b) = self.call(Method::PUT, &format!("/allocations/{consumer}"), Some(&body)).await?;
        match s {
            s if s.is_success() => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            s => Err(err("claiming resources", s, &b)),
        }
    }

    async fn release(&self, consumer: &str) -> Result<(), PlacementError> {
        let (s, b) = self.call(Method::DELETE, &format!("/allocations/{consumer}"), None).await?;
        if s.is_success() || s == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(err("releasing resources", s, &b))
        }
    }

    async fn allocations(&self, consumer: &str) -> Result<Allocations, PlacementError> {
        let (s, b) = self.call(Method::GET, &format!("/allocations/{consumer}"), None).await?;
        if !s.is_success() {
            return Err(err("reading allocations", s, &b));
        }
        Ok(parse_allocations(&b["allocations"]))
    }

    async fn provider_usages(&self, uuid: &str) -> Result<Resources, PlacementError> {
        let (s, b) = self.call(Method::GET, &format!("/resource_providers/{uuid}/usages"), None).await?;
        if !s.is_success() {
            return Err(err("reading provider usages", s, &b));
        }
        Ok(parse_resources(&b["usages"]))
    }

    async fn project_usages(&self, project: &str) -> Result<Resources, PlacementError> {
        let (s, b) = self.call(Method::GET, &format!("/usages?project_id={project}"), None).await?;
        if !s.is_success() {
            return Err(err("reading project usages", s, &b));
        }
        // From 1.38 usages are grouped by consumer type, with the total under `all`.
        let u = &b["usages"];
        Ok(parse_resources(if u.get("all").is_some() { &u["all"] } else { u }))
    }

    async fn move_allocations(
        &self,
        from: &str,
        to: &str,
        project: &str,
        user: &str,
        to_type: &str,
    ) -> Result<bool, PlacementError> {
        for _ in 0..5 {
            let (s, src) = self.call(Method::GET, &format!("/allocations/{from}"), None).await?;
            if !s.is_success() {
                return Err(err("reading allocations", s, &src));
            }
            let alloc = parse_allocations(&src["allocations"]);
            if alloc.is_empty() {
                return Ok(false);
            }
            let (s, dst) = self.call(Method::GET, &format!("/allocations/{to}"), None).await?;
            if !s.is_success() {
                return Err(err("reading allocations", s, &dst));
            }
            let body = json!({
                from: {
                    "allocations": {},
                    "project_id": src["project_id"].as_str().unwrap_or(project),
                    "user_id": src["user_id"].as_str().unwrap_or(user),
                    "consumer_generation": src["consumer_generation"],
                    "consumer_type": src["consumer_type"].as_str().unwrap_or("INSTANCE"),
                },
                to: {
                    "allocations": alloc_body(&alloc),
                    "project_id": project,
                    "user_id": user,
                    "consumer_generation": dst.get("consumer_generation").cloned().unwrap_or(Value::Null),
                    "consumer_type": to_type,
                },
            });
            let (s, b) = self.call(Method::POST, "/allocations", Some(&body)).await?;
            if s.is_success() {
                return Ok(true);
            }
            if s != StatusCode::CONFLICT {
                return Err(err("moving allocations", s, &b));
            }
        }
        Err(PlacementError("allocations kept changing while being moved".into()))
    }

    async fn provider_aggregates(&self, uuid: &str) -> Result<Vec<String>, PlacementError> {
        let (s, b) = self.call(Method::GET, &format!("/resource_providers/{uuid}/aggregates"), None).await?;
        if !s.is_success() {
            return Err(err("reading provider aggregates", s, &b));
        }
        Ok(b["aggregates"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect())
    }

    async fn set_provider_aggregates(&self, uuid: &str, aggs: &[String]) -> Result<(), PlacementError> {
        for _ in 0..5 {
            let (s, b) = self.call(Method::GET, &format!("/resource_providers/{uuid}/aggregates"), None).await?;
            if !s.is_success() {
                return Err(err("reading provider aggregates", s, &b));
            }
            let body = json!({"aggregates": aggs, "resource_provider_generation": b["resource_provider_generation"]});
            let (s, b) = self.call(Method::PUT, &format!("/resource_providers/{uuid}/aggregates"), Some(&body)).await?;
            if s.is_success() {
                return Ok(());
            }
            if s != StatusCode::CONFLICT {
                return Err(err("setting provider aggregates", s, &b));
            }
        }
        Err(PlacementError("provider aggregates kept changing under us".into()))
    }
}

#[derive(Default)]
struct MemState {
    providers: BTreeMap<String, BTreeMap<String, Inventory>>,
    consumers: HashMap<String, (Allocations, String)>,
    /// Usage per provider, kept in step with `consumers`.
    usage: HashMap<String, Resources>,
    /// Aggregates per provider.
    aggregates: HashMap<String, Vec<String>>,
    /// Releases still to fail (see [`MemoryPlacement::fail_next_releases`]).
    failing_releases: u32,
}

/// Placement's contract in memory (tests and benchmarks without the placement service).
#[derive(Clone, Default)]
pub struct MemoryPlacement {
    st: Arc<Mutex<MemState>>,
}

impl MemoryPlacement {
    fn used(st: &MemState, rp: &str) -> Resources {
        st.usage.get(rp).cloned().unwrap_or_default()
    }

    fn account(st: &mut MemState, alloc: &Allocations, sign: i64) {
        for (rp, res) in alloc {
            let u = st.usage.entry(rp.clone()).or_default();
            for (rc, n) in res {
                *u.entry(rc.clone()).or_default() += sign * n;
            }
        }
    }

    fn capacity(inv: &Inventory) -> i64 {
        ((inv.total - inv.reserved) as f64 * inv.allocation_ratio) as i64
    }

    /// Makes the next `n` releases fail, as an unreachable placement would (tests of undo).
    pub fn fail_next_releases(&self, n: u32) {
        self.st.lock().failing_releases = n;
    }

    /// Every consumer with allocations (leak checks in tests).
    pub fn consumers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.st.lock().consumers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Checks that no provider is over capacity.
    pub fn overcommitted(&self) -> Vec<String> {
        let st = self.st.lock();
        let mut bad = Vec::new();
        for (rp, invs) in &st.providers {
            let used = Self::used(&st, rp);
            for (rc, inv) in invs {
                if used.get(rc).copied().unwrap_or(0) > Self::capacity(inv) {
                    bad.push(format!("{rp}/{rc}"));
                }
            }
        }
        bad
    }
}

#[async_trait]
impl PlacementApi for MemoryPlacement {
    async fn ensure_provider(&self, uuid: &str, _name: &str) -> Result<(), PlacementError> {
        self.st.lock().providers.entry(uuid.to_string()).or_default();
        Ok(())
    }

    async fn set_inventories(&self, uuid: &str, inv: &BTreeMap<String, Inventory>) -> Result<(), PlacementError> {
        self.st.lock().providers.insert(uuid.to_string(), inv.clone());
        Ok(())
    }

    async fn candidates(&self, q: &CandidateQuery) -> Result<Vec<Candidate>, PlacementError> {
        let st = self.st.lock();
        let mut out = Vec::new();
        for (rp, invs) in &st.providers {
            if !q.member_of.is_empty()
                && !st.aggregates.get(rp).is_some_and(|a| a.iter().any(|x| q.member_of.contains(x)))
            {
                continue;
            }
            let used = Self::used(&st, rp);
            let fits = q.resources.iter().all(|(rc, n)| {
                *n == 0
                    || invs.get(rc).is_some_and(|inv| {
                        *n <= inv.max_unit && used.get(rc).copied().unwrap_or(0) + n <= Self::capacity(inv)
                    })
            });
            if !fits {
                continue;
            }
            let summary = invs
                .iter()
                .map(|(rc, inv)| (rc.clone(), (Self::capacity(inv), used.get(rc).copied().unwrap_or(0))))
                .collect();
            let res: Resources = q.resources.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)).collect();
            out.push(Candidate { provider: rp.clone(), allocations: [(rp.clone(), res)].into(), summary });
            if out.len() >= q.limit.max(1) {
                break;
            }
        }
        Ok(out)
    }

    async fn claim(
        &self,
        consumer: &str,
        alloc: &Allocations,
        project: &str,
        _user: &str,
    ) -> Result<bool, PlacementError> {
        let mut st = self.st.lock();
        if st.consumers.contains_key(consumer) {
            // consumer_generation null on an existing consumer: placement says 409.
            return Ok(false);
        }
        for (rp, res) in alloc {
            let Some(invs) = st.providers.get(rp) else { return Ok(false) };
            let used = Self::used(&st, rp);
            for (rc, n) in res {
                let Some(inv) = invs.get(rc) else { return Ok(false) };
                if used.get(rc).copied().unwrap_or(0) + n > Self::capacity(inv) {
                    return Ok(false);
                }
            }
        }
        Self::account(&mut st, alloc, 1);
        st.consumers.insert(consumer.to_string(), (alloc.clone(), project.to_string()));
        Ok(true)
    }

    async fn release(&self, consumer: &str) -> Result<(), PlacementError> {
        let mut st = self.st.lock();
        if st.failing_releases > 0 {
            st.failing_releases -= 1;
            return Err(PlacementError("placement is unreachable (injected)".into()));
        }
        if let Some((a, _)) = st.consumers.remove(consumer) {
            Self::account(&mut st, &a, -1);
        }
        Ok(())
    }

    async fn allocations(&self, consumer: &str) -> Result<Allocations, PlacementError> {
        Ok(self.st.lock().consumers.get(consumer).map(|(a, _)| a.clone()).unwrap_or_default())
    }

    async fn provider_usages(&self, uuid: &str) -> Result<Resources, PlacementError> {
        Ok(Self::used(&self.st.lock(), uuid))
    }

    async fn project_usages(&self, project: &str) -> Result<Resources, PlacementError> {
        let st = self.st.lock();
        let mut u = Resources::new();
        for (a, p) in st.consumers.values() {
            if p == project {
                for r in a.values() {
                    for (rc, n) in r {
                        *u.entry(rc.clone()).or_default() += n;
                    }
                }
            }
        }
        Ok(u)
    }
    async fn move_allocations(
        &self,
        from: &str,
        to: &str,
        project: &str,
        _user: &str,
        _to_type: &str,
    ) -> Result<bool, PlacementError> {
        let mut st = self.st.lock();
        let Some((a, _)) = st.consumers.remove(from) else { return Ok(false) };
        if let Some((old, _)) = st.consumers.remove(to) {
            Self::account(&mut st, &old, -1);
        }
        st.consumers.insert(to.to_string(), (a, project.to_string()));
        Ok(true)
    }

    async fn provider_aggregates(&self, uuid: &str) -> Result<Vec<String>, PlacementError> {
        Ok(self.st.lock().aggregates.get(uuid).cloned().unwrap_or_default())
    }

    async fn set_provider_aggregates(&self, uuid: &str, aggs: &[String]) -> Result<(), PlacementError> {
        self.st.lock().aggregates.insert(uuid.to_string(), aggs.to_vec());
        Ok(())
    }
}
