//! The identity core shared by every handler and by the in-process validator: keys,
//! revocation events, caches, and the lookups tokens are built from.
//!
//! Validation is on the path of every API call in the cloud, so it never touches the
//! database while caches are warm: a token is decrypted (µs), checked against the
//! in-memory revocation index, and joined with a cached "scope view" (user, project or
//! domain, effective roles) keyed by (user, scope, application credential). Any write
//! to identity bumps a generation counter that voids every cached view at once; a short
//! TTL bounds staleness from writes made by other nodes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::RwLock;
use serde_json::{json, Value};
use stratus_auth::Policy;
use stratus_core::{Platform, RequestContext};
use stratus_db::sqlx::{self, Row};
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::fernet::{audit_text, KeyRepository, KeyRing, Payload, Scope};
use crate::model::{Domain, Endpoint, Project, Role, Service, User};
use crate::password::{Cost, Hasher};
use crate::revocation::{Event, Revocations};
use crate::throttle::{LoginThrottle, Rate};
use crate::IdentityConfig;

/// What a token resolves to beyond its payload (cached).
#[derive(Debug, Clone)]
pub struct ScopeView {
    pub user: User,
    pub user_domain: Domain,
    pub project: Option<Project>,
    pub project_domain: Option<Domain>,
    pub domain: Option<Domain>,
    pub system: bool,
    /// Effective roles (implied expanded; restricted by the application credential).
    pub roles: Vec<(String, String)>,
    /// Application credential: (id, name, unrestricted).
    pub app_cred: Option<(String, String, bool)>,
    /// The trust a trust-scoped token acts under.
    pub trust: Option<crate::trusts::Trust>,
    /// The application credential's access rules (`None`: unrestricted).
    pub access_rules: Option<Vec<stratus_core::AccessRule>>,
}

/// A validated token.
#[derive(Debug, Clone)]
pub struct Validated {
    pub token: String,
    pub payload: Payload,
    pub view: Arc<ScopeView>,
}

/// (user, scope, application credential, trust).
type ViewKey = (String, Scope, Option<String>, Option<String>);

/// The catalog, when it was loaded, and the generation it belongs to.
type CachedCatalog = (Arc<Vec<CatalogService>>, Instant, u64);

/// Catalog entry as tokens show it.
#[derive(Debug, Clone)]
pub struct CatalogService {
    pub service: Service,
    pub endpoints: Vec<Endpoint>,
}

/// The identity core.
pub struct Identity {
    pub platform: Platform,
    pub cfg: IdentityConfig,
    /// Identity's public base URL (`http://host:port/identity`).
    pub base: String,
    pub policy: Policy,
    pub key_repo: KeyRepository,
    /// Bounded password hashing (admission + reused work areas).
    pub hasher: Hasher,
    /// Failed-login buckets per source and per account, checked before hashing.
    pub throttle: LoginThrottle,
    keys: RwLock<Arc<KeyRing>>,
    pub revocations: Revocations,
    generation: AtomicU64,
    views: DashMap<ViewKey, (Arc<ScopeView>, Instant, u64)>,
    catalog: RwLock<Option<CachedCatalog>>,
    /// Serialized token catalogs by project id ("" for none), with their generation.
    catalog_text: DashMap<String, (Arc<str>, u64, Instant)>,
    /// Validation response bodies by (token, with catalog): a token's body only changes
    /// with an identity write, and services validate the same tokens over and over.
    responses: DashMap<(String, bool), (bytes::Bytes, u64, Instant)>,
    last_event_sync: RwLock<String>,
}

/// Microseconds since the epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Storage text of a µs timestamp.
pub fn micros_to_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(stratus_core::time::to_storage)
        .unwrap_or_else(stratus_core::time::now)
}

/// µs timestamp of storage text.
pub fn text_to_micros(s: &str) -> Option<i64> {
    stratus_core::time::parse(s).map(|d| d.timestamp_micros())
}

impl Identity {
    /// Builds the core; keys must exist (see [`KeyRepository::setup`]).
    pub fn new(platform: Platform, cfg: IdentityConfig, policy: Policy, key_repo: KeyRepository) -> Result<Self> {
        let ring = key_repo.load().map_err(|e| IdentityError::Internal(format!("loading Fernet keys: {e:#}")))?;
        let cost = Cost { memory_kib: cfg.password_hash_memory_kib, iterations: cfg.password_hash_iterations };
        let hasher = Hasher::new(
            cost,
            cfg.password_hash_memory_budget_mib.saturating_mul(1024),
            Duration::from_millis(cfg.password_hash_queue_ms),
        );
        let throttle = LoginThrottle::new(
            Rate { burst: cfg.failed_login_source_burst, per_minute: cfg.failed_login_source_per_minute },
            Rate { burst: cfg.failed_login_user_burst, per_minute: cfg.failed_login_user_per_minute },
            65_536,
        );
        Ok(Identity {
            hasher,
            throttle,
            base: platform.service_url("/identity"),
            platform,
            cfg,
            policy,
            key_repo,
            keys: RwLock::new(Arc::new(ring)),
            revocations: Revocations::default(),
            generation: AtomicU64::new(1),
            views: DashMap::new(),
            catalog: RwLock::new(None),
            catalog_text: DashMap::new(),
            responses: DashMap::new(),
            last_event_sync: RwLock::new(String::new()),
        })
    }

    /// Voids every cached view (call after any identity write).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.views.clear();
        self.catalog_text.clear();
        self.responses.clear();
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.cfg.cache_ttl_ms)
    }

    /// Reloads keys from disk and revocation events written since the last sync
    /// (by this node or another), and prunes events no token can predate.
    pub async fn refresh(&self) -> Result<()> {
        match self.key_repo.load() {
            Ok(ring) => *self.keys.write() = Arc::new(ring),
            Err(e) => tracing::warn!(error = %e, "could not reload Fernet keys; keeping the loaded ones"),
        }
        let since = self.last_event_sync.read().clone();
        let now = stratus_core::time::now();
        let rows = sqlx::query(
            "SELECT id, user_id, project_id, domain_id, audit_id, audit_chain_id, app_cred_id, issued_before \
             FROM identity_revocation_events WHERE revoked_at >= $1",
        )
        .bind(&since)
        .fetch_all(self.platform.db.reader())
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in rows {
            let ib: String = r.try_get("issued_before")?;
            events.push(Event {
                id: r.try_get("id")?,
                user_id: r.try_get("user_id")?,
                project_id: r.try_get("project_id")?,
                domain_id: r.try_get("domain_id")?,
                audit_id: r.try_get("audit_id")?,
                audit_chain_id: r.try_get("audit_chain_id")?,
                app_cred_id: r.try_get("app_cred_id")?,
                issued_before: text_to_micros(&ib).unwrap_or(i64::MAX),
            });
        }
        if !events.is_empty() {
            self.revocations.add(events);
            self.invalidate();
        }
        // A little overlap: events committed with an earlier timestamp than a concurrent read.
        *self.last_event_sync.write() = micros_to_text(text_to_micros(&now).unwrap_or(0) - 5_000_000);
        let horizon = now_micros() - (self.cfg.token_expiration_secs as i64 + 3600) * 1_000_000;
        self.revocations.prune(horizon);
        Ok(())
    }

    /// Records a revocation event (database and memory) and voids caches.
    pub async fn revoke(&self, mut e: Event) -> Result<()> {
        if e.id.is_empty() {
            e.id = crate::model::new_id();
        }
        if e.issued_before == 0 {
            e.issued_before = now_micros();
        }
        let mut q = Query::new(
            "INSERT INTO identity_revocation_events (id, user_id, project_id, domain_id, audit_id, audit_chain_id, \
             app_cred_id, issued_before, revoked_at) VALUES (",
        );
        q.bind(&e.id).push(", ").bind(e.user_id.clone()).push(", ").bind(e.project_id.clone()).push(", ");
        q.bind(e.domain_id.clone()).push(", ").bind(e.audit_id.clone()).push(", ").bind(e.audit_chain_id.clone());
        q.push(", ").bind(e.app_cred_id.clone()).push(", ").bind(micros_to_text(e.issued_before)).push(", ");
        q.bind(stratus_core::time::now()).push(")");
        self.exec(vec![q]).await?;
        self.revocations.add([e]);
        self.invalidate();
        Ok(())
    }

    /// Runs write statements in one transaction (retried on contention) and voids caches.
    pub async fn exec(&self, qs: Vec<Query>) -> Result<u64> {
        let n = self
            .platform
            .db
            .transaction(|tx| {
                let qs = qs.clone();
                Box::pin(async move {
                    let mut n = 0;
                    for q in &qs {
                        n += q.execute(&mut **tx).await?;
                    }
                    Ok::<_, IdentityError>(n)
                })
            })
            .await?;
        self.invalidate();
        Ok(n)
    }

    // --- tokens ---------------------------------------------------------------------

    /// Encrypts `payload` into a token.
    pub fn encrypt(&self, payload: &Payload) -> String {
        let ring = self.keys.read().clone();
        ring.encrypt(&payload.encode())
    }

    /// Decrypts and checks a token: signature, expiry, revocation, and that its user,
    /// scope and roles still stand. No database access while caches are warm.
    pub async fn validate(&self, token: &str) -> Result<Validated> {
        let ring = self.keys.read().clone();
        let payload = ring
            .decrypt(token)
            .and_then(|b| Payload::decode(&b))
            .ok_or_else(|| IdentityError::Unauthorized("The token is invalid.".into()))?;
        if payload.expires_at <= now_micros() {
            return Err(IdentityError::Unauthorized("The token has expired.".into()));
        }
        if self.revocations.is_revoked(&payload) {
            return Err(IdentityError::Unauthorized("The token has been revoked.".into()));
        }
        let view = self
            .view(&payload.user_id, &payload.scope, payload.app_cred_id.as_deref(), payload.trust_id.as_deref())
            .await?;
        if payload.scope != Scope::Unscoped && view.roles.is_empty() {
            return Err(IdentityError::Unauthorized("The token's user no longer has a role in its scope.".into()));
        }
        Ok(Validated { token: token.to_string(), payload, view })
    }

    /// The cached scope view of (user, scope, app cred), loading it on a miss.
    pub async fn view(
        &self,
        user_id: &str,
        scope: &Scope,
        app_cred: Option<&str>,
        trust: Option<&str>,
    ) -> Result<Arc<ScopeView>> {
        let gen = self.generation.load(Ordering::Acquire);
        let key: ViewKey =
            (user_id.to_string(), scope.clone(), app_cred.map(str::to_string), trust.map(str::to_string));
        if let Some(e) = self.views.get(&key) {
            let (v, at, g) = e.value();
            if *g == gen && at.elapsed() < self.ttl() {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(self.load_view(user_id, scope, app_cred, trust).await?);
        if self.generation.load(Ordering::Acquire) == gen {
            self.views.insert(key, (v.clone(), Instant::now(), gen));
        }
        Ok(v)
    }

    async fn load_view(
        &self,
        user_id: &str,
        scope: &Scope,
        app_cred: Option<&str>,
        trust: Option<&str>,
    ) -> Result<ScopeView> {
        let invalid = || IdentityError::Unauthorized("The token's user or scope is no longer valid.".into());
        let user = self.get_user(user_id).await?.ok_or_else(invalid)?;
        let user_domain = self.get_domain(&user.domain_id).await?.ok_or_else(invalid)?;
        if !user.enabled || !user_domain.enabled {
            return Err(invalid());
        }
        let mut view = ScopeView {
            user,
            user_domain,
            project: None,
            project_domain: None,
            domain: None,
            system: false,
            roles: Vec::new(),
            app_cred: None,
            trust: None,
            access_rules: None,
        };
        match scope {
            Scope::Unscoped => {}
            Scope::Project(pid) => {
                let p = self.get_project(pid).await?.ok_or_else(invalid)?;
                let d = self.get_domain(&p.domain_id).await?.ok_or_else(invalid)?;
                if !p.enabled || !d.enabled || !self.ancestors_enabled(&p).await? {
                    return Err(invalid());
                }
                view.roles = self.effective_roles(user_id, scope, Some(&p)).await?;
                view.project = Some(p);
                view.project_domain = Some(d);
            }
            Scope::Domain(did) => {
                let d = self.get_domain(did).await?.ok_or_else(invalid)?;
                if !d.enabled {
                    return Err(invalid());
                }
                view.roles = self.effective_roles(user_id, scope, None).await?;
                view.domain = Some(d);
            }
            Scope::System => {
                view.system = true;
                view.roles = self.effective_roles(user_id, scope, None).await?;
            }
        }
        if let Some(tid) = trust {
            // A trust token: the trust must still stand, and its roles are the delegated
            // ones (with what they imply) the trustor still has on the project.
            let t = crate::trusts::get_live_trust(self, tid).await?.ok_or_else(invalid)?;
            let token_user_ok =
                if t.impersonation { user_id == t.trustor_user_id } else { user_id == t.trustee_user_id };
            if !token_user_ok || *scope != Scope::Project(t.project_id.clone().unwrap_or_default()) {
                return Err(invalid());
            }
            let trustor = self.get_user(&t.trustor_user_id).await?.ok_or_else(invalid)?;
            if !trustor.enabled {
                return Err(invalid());
            }
            let held = self.effective_roles(&t.trustor_user_id, scope, view.project.as_ref()).await?;
            let delegated = self.expand_roles(t.role_ids.clone()).await?;
            view.roles = held.into_iter().filter(|r| delegated.iter().any(|d| d.0 == r.0)).collect();
            view.trust = Some(t);
        }
        if let Some(ac) = app_cred {
            let row = sqlx::query(
                "SELECT id, name, unrestricted, roles, expires_at, user_id FROM identity_app_creds WHERE id = $1",
            )
            .bind(ac)
            .fetch_optional(self.platform.db.reader())
            .await?
            .ok_or_else(invalid)?;
            let owner: String = row.try_get("user_id")?;
            if owner != user_id {
                return Err(invalid());
            }
            let allowed: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("roles")?).unwrap_or_default();
            view.roles.retain(|(id, _)| allowed.contains(id));
            view.app_cred = Some((row.try_get("id")?, row.try_get("name")?, stratus_db::flag(&row, "unrestricted")));
            let rules = sqlx::query(
                "SELECT r.service, r.method, r.path FROM identity_access_rules r \
                 JOIN identity_app_cred_access_rules a ON a.access_rule_id = r.id WHERE a.app_cred_id = $1",
            )
            .bind(ac)
            .fetch_all(self.platform.db.reader())
            .await?;
            if !rules.is_empty() {
                let rules = rules
                    .iter()
                    .map(|r| {
                        Ok(stratus_core::AccessRule {
                            service: r.try_get("service")?,
                            method: r.try_get("method")?,
                            path: r.try_get("path")?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                view.access_rules = Some(rules);
            }
        }
        Ok(view)
    }

    async fn ancestors_enabled(&self, p: &Project) -> Result<bool> {
        let mut cur = p.parent_id.clone();
        let mut guard = 0;
        while let Some(id) = cur {
            guard += 1;
            if guard > 64 {
                break;
            }
            match self.get_project(&id).await? {
                Some(pp) if pp.enabled => cur = pp.parent_id,
                Some(_) => return Ok(false),
                None => break,
            }
        }
        Ok(true)
    }

    /// Project ids from `p`'s parent up to the root.
    pub async fn ancestor_ids(&self, p: &Project) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cur = p.parent_id.clone();
        while let Some(id) = cur {
            if out.len() > 64 || out.contains(&id) {
                break;
            }
            out.push(id.clone());
            cur = self.get_project(&id).await?.and_then(|pp| pp.parent_id);
        }
        Ok(out)
    }

    /// Group ids of a user.
    pub async fn user_group_ids(&self, user_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT group_id FROM identity_group_members WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(self.platform.db.reader())
            .await?;
        rows.iter().map(|r| r.try_get::<String, _>("group_id").map_err(Into::into)).collect()
    }

    /// Role ids assigned directly or through groups (and inherited from the domain or
    /// parent projects) on the scope, before implied-role expansion.
    pub async fn assigned_role_ids(
        &self,
        user_id: &str,
        scope: &Scope,
        project: Option<&Project>,
    ) -> Result<Vec<String>> {
        let groups = self.user_group_ids(user_id).await?;
        let mut q =
            Query::new("SELECT DISTINCT role_id FROM identity_assignments WHERE ((actor_type = 'user' AND actor_id = ");
        q.bind(user_id).push(")");
        if !groups.is_empty() {
            q.push(" OR (actor_type = 'group' AND ").push_in("actor_id", groups.iter()).push(")");
        }
        q.push(") AND (");
        match scope {
            Scope::Project(pid) => {
                q.push_bind("(target_type = 'project' AND inherited = 0 AND target_id = ", pid).push(")");
                if let Some(p) = project {
                    q.push_bind(" OR (target_type = 'domain' AND inherited = 1 AND target_id = ", &p.domain_id)
                        .push(")");
                    let anc = self.ancestor_ids(p).await?;
                    if !anc.is_empty() {
                        q.push(" OR (target_type = 'project' AND inherited = 1 AND ")
                            .push_in("target_id", anc.iter())
                            .push(")");
                    }
                }
            }
            Scope::Domain(did) => {
                q.push_bind("target_type = 'domain' AND inherited = 0 AND target_id = ", did);
            }
            Scope::System => {
                q.push("target_type = 'system' AND target_id = 'all'");
            }
            Scope::Unscoped => {
                q.push("1 = 0");
            }
        }
        q.push(")");
        let rows = q.fetch_all(self.platform.db.reader()).await?;
        rows.iter().map(|r| r.try_get::<String, _>("role_id").map_err(Into::into)).collect()
    }

    /// Expands implied roles transitively; returns (id, name) sorted by name.
    pub async fn expand_roles(&self, ids: Vec<String>) -> Result<Vec<(String, String)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rules = sqlx::query("SELECT prior_role_id, implied_role_id FROM identity_implied_roles")
            .fetch_all(self.platform.db.reader())
            .await?;
        let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in rules {
            edges.entry(r.try_get("prior_role_id")?).or_default().push(r.try_get("implied_role_id")?);
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack = ids;
        while let Some(id) = stack.pop() {
            if seen.insert(id.clone()) {
                if let Some(next) = edges.get(&id) {
                    stack.extend(next.iter().cloned());
                }
            }
        }
        let mut q = Query::new("SELECT id, name FROM identity_roles WHERE ");
        q.push_in("id", seen.iter());
        let rows = q.fetch_all(self.platform.db.reader()).await?;
        let mut out: Vec<(String, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("id")?, r.try_get::<String, _>("name")?)))
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Effective roles of a user on a scope.
    pub async fn effective_roles(
        &self,
        user_id: &str,
        scope: &Scope,
        project: Option<&Project>,
    ) -> Result<Vec<(String, String)>> {
        let ids = self.assigned_role_ids(user_id, scope, project).await?;
        let roles = self.expand_roles(ids).await?;
        if roles.is_empty() {
            return Ok(roles);
        }
        // Domain-specific roles only act through the global roles they imply.
        let mut q = Query::new("SELECT id FROM identity_roles WHERE domain_id <> '' AND ");
        q.push_in("id", roles.iter().map(|(i, _)| i.as_str()));
        let domain_roles: HashSet<String> = q
            .fetch_all(self.platform.db.reader())
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        Ok(roles.into_iter().filter(|(i, _)| !domain_roles.contains(i)).collect())
    }

    // --- lookups ----------------------------------------------------------------------

    pub async fn get_user(&self, id: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {} FROM identity_users WHERE id = $1", User::COLS);
        let row = sqlx::query(&sql).bind(id).fetch_optional(self.platform.db.reader()).await?;
        row.as_ref().map(User::from_row).transpose()
    }

    pub async fn find_user(&self, domain_id: &str, name: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {} FROM identity_users WHERE domain_id = $1 AND name = $2", User::COLS);
        let row = sqlx::query(&sql).bind(domain_id).bind(name).fetch_optional(self.platform.db.reader()).await?;
        row.as_ref().map(User::from_row).transpose()
    }

    pub async fn get_domain(&self, id: &str) -> Result<Option<Domain>> {
        let sql = format!("SELECT {} FROM identity_domains WHERE id = $1", Domain::COLS);
        let row = sqlx::query(&sql).bind(id).fetch_optional(self.platform.db.reader()).await?;
        row.as_ref().map(Domain::from_row).transpose()
    }

    pub async fn find_domain(&self, name: &str) -> Result<Option<Domain>> {
        let sql = format!("SELECT {} FROM identity_domains WHERE name = $1", Domain::COLS);
        let row = sqlx::query(&sql).bind(name).fetch_optional(self.platform.db.reader()).await?;
        row.as_ref().map(Domain::from_row).transpose()
    }

    /// Domain by id, else by name.
    pub async fn domain_by_ref(&self, id_or_name: &str) -> Result<Option<Domain>> {
        match self.get_domain(id_or_name).await? {
            Some(d) => Ok(Some(d)),
            None => self.find_domain(id_or_name).await,
        }
    }

    pub async fn get_project(&self, id: &str) -> Result<Option<Project>> {
        let sql = format!("SELECT {} FROM identity_projects WHERE id = $1", Project::COLS);
        let row = sqlx::query(&sql).bind(id).fetch_optional(self.platform.db.reader()).await?;
        match row {
            Some(r) => {
                let mut p = Project::from_row(&r)?;
                p.tags = self.project_tags(&p.id).await?;
                Ok(Some(p))
            }
            None => Ok(None),
        }
    }

    pub async fn project_tags(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT tag FROM identity_project_tags WHERE project_id = $1 ORDER BY tag")
            .bind(id)
            .fetch_all(self.platform.db.reader())
            .await?;
        rows.iter().map(|r| r.try_get::<String, _>("tag").map_err(Into::into)).collect()
    }

    pub async fn find_project(&self, domain_id: &str, name: &str) -> Result<Option<Project>> {
        let sql = "SELECT id FROM identity_projects WHERE domain_id = $1 AND name = $2";
        let row = sqlx::query(sql).bind(domain_id).bind(name).fetch_optional(self.platform.db.reader()).await?;
        match row {
            Some(r) => self.get_project(&r.try_get::<String, _>("id")?).await,
            None => Ok(None),
        }
    }

    pub async fn get_role(&self, id: &str) -> Result<Option<Role>> {
        let sql = format!("SELECT {} FROM identity_roles WHERE id = $1", Role::COLS);
        let row = sqlx::query(&sql).bind(id).fetch_optional(self.platform.db.reader()).await?;
        row.as_ref().map(Role::from_row).transpose()
    }

    // --- catalog ----------------------------------------------------------------------

    /// The enabled services and endpoints (cached like scope views).
    pub async fn catalog(&self) -> Result<Arc<Vec<CatalogService>>> {
        let gen = self.generation.load(Ordering::Acquire);
        if let Some((c, at, g)) = self.catalog.read().as_ref() {
            if *g == gen && at.elapsed() < self.ttl() {
                return Ok(c.clone());
            }
        }
        let sql = format!("SELECT {} FROM identity_services WHERE enabled = 1 ORDER BY type, id", Service::COLS);
        let services = sqlx::query(&sql).fetch_all(self.platform.db.reader()).await?;
        let sql = format!("SELECT {} FROM identity_endpoints WHERE enabled = 1 ORDER BY interface, id", Endpoint::COLS);
        let endpoints = sqlx::query(&sql).fetch_all(self.platform.db.reader()).await?;
        let endpoints: Vec<Endpoint> = endpoints.iter().map(Endpoint::from_row).collect::<Result<_>>()?;
        let mut out = Vec::new();
        for s in services.iter().map(Service::from_row) {
            let s = s?;
            let eps = endpoints.iter().filter(|e| e.service_id == s.id).cloned().collect();
            out.push(CatalogService { service: s, endpoints: eps });
        }
        let c = Arc::new(out);
        *self.catalog.write() = Some((c.clone(), Instant::now(), gen));
        Ok(c)
    }

    /// The catalog as a token shows it; URLs needing a project id are substituted, or
    /// left out when the token has no project (as Keystone does).
    pub async fn catalog_json(&self, project_id: Option<&str>) -> Result<Value> {
        let cat = self.catalog().await?;
        // OS-EP-FILTER: a project with associated endpoints sees only those.
        let only = match project_id {
            Some(p) => crate::endpoint_filter::project_endpoint_filter(self, p).await?,
            None => None,
        };
        let mut out = Vec::with_capacity(cat.len());
        for s in cat.iter() {
            let mut eps = Vec::with_capacity(s.endpoints.len());
            for e in &s.endpoints {
                if only.as_ref().is_some_and(|o| !o.contains(&e.id)) {
                    continue;
                }
                let Some(url) = substitute_url(&e.url, project_id) else { continue };
                eps.push(json!({
                    "id": e.id, "interface": e.interface, "region_id": e.region_id,
                    "region": e.region_id, "url": url
                }));
            }
            if only.is_some() && eps.is_empty() {
                continue;
            }
            out.push(
                json!({"id": s.service.id, "type": s.service.service_type, "name": s.service.name, "endpoints": eps}),
            );
        }
        Ok(Value::Array(out))
    }

    /// [`Identity::catalog_json`] serialized, cached per project: the catalog is most of
    /// a token body, and validation answers it on every call.
    pub async fn catalog_text(&self, project_id: Option<&str>) -> Result<Arc<str>> {
        let gen = self.generation.load(Ordering::Acquire);
        let key = project_id.unwrap_or_default();
        if let Some(e) = self.catalog_text.get(key) {
            if e.1 == gen && e.2.elapsed() < self.ttl() {
                return Ok(e.0.clone());
            }
        }
        let text: Arc<str> = serde_json::to_string(&self.catalog_json(project_id).await?)
            .map_err(|e| IdentityError::Internal(e.to_string()))?
            .into();
        if self.generation.load(Ordering::Acquire) == gen {
            self.catalog_text.insert(key.to_string(), (text.clone(), gen, Instant::now()));
        }
        Ok(text)
    }

    /// The serialized token response body (`{"token": {...}}`), with the cached catalog
    /// spliced in rather than rebuilt.
    pub async fn token_response(&self, v: &Validated, with_catalog: bool) -> Result<String> {
        let body = self.token_body(v, false).await?;
        let mut s = serde_json::to_string(&body).map_err(|e| IdentityError::Internal(e.to_string()))?;
        if with_catalog && v.payload.scope != Scope::Unscoped && s.ends_with("}}") {
            let cat = self.catalog_text(v.view.project.as_ref().map(|p| p.id.as_str())).await?;
            s.truncate(s.len() - 2);
            s.push_str(",\"catalog\":");
            s.push_str(&cat);
            s.push_str("}}");
        }
        Ok(s)
    }

    /// [`Identity::token_response`] of an already validated token, cached (validation
    /// itself, with its expiry and revocation checks, still runs on every call).
    pub async fn cached_response(&self, v: &Validated, with_catalog: bool) -> Result<bytes::Bytes> {
        let gen = self.generation.load(Ordering::Acquire);
        let key = (v.token.clone(), with_catalog);
        if let Some(e) = self.responses.get(&key) {
            if e.1 == gen && e.2.elapsed() < self.ttl() {
                return Ok(e.0.clone());
            }
        }
        let body = bytes::Bytes::from(self.token_response(v, with_catalog).await?);
        if self.generation.load(Ordering::Acquire) == gen {
            // Bounded: a burst of distinct tokens just starts the cache over.
            if self.responses.len() >= 10_000 {
                self.responses.clear();
            }
            self.responses.insert(key, (body.clone(), gen, Instant::now()));
        }
        Ok(body)
    }

    // --- token views ------------------------------------------------------------------

    /// Keystone's token body.
    pub async fn token_body(&self, v: &Validated, with_catalog: bool) -> Result<Value> {
        let p = &v.payload;
        let view = &v.view;
        let mut audit = vec![audit_text(&p.audit_id)];
        if let Some(parent) = &p.parent_audit_id {
            audit.push(audit_text(parent));
        }
        let mut t = json!({
            "methods": p.method_names(),
            "user": {
                "id": view.user.id, "name": view.user.name,
                "domain": {"id": view.user_domain.id, "name": view.user_domain.name},
                "password_expires_at": view.user.password_expires_at.as_deref().map(stratus_core::time::micros_z),
            },
            "audit_ids": audit,
            "expires_at": micros_z(p.expires_at),
            "issued_at": micros_z(p.issued_at),
        });
        if p.scope != Scope::Unscoped {
            t["roles"] = Value::Array(view.roles.iter().map(|(id, name)| json!({"id": id, "name": name})).collect());
        }
        if let (Some(pr), Some(d)) = (&view.project, &view.project_domain) {
            t["project"] = json!({"id": pr.id, "name": pr.name, "domain": {"id": d.id, "name": d.name}});
            t["is_domain"] = json!(pr.is_domain);
        }
        if let Some(d) = &view.domain {
            t["domain"] = json!({"id": d.id, "name": d.name});
        }
        if view.system {
            t["system"] = json!({"all": true});
        }
        if let Some((id, name, unrestricted)) = &view.app_cred {
            t["application_credential"] = json!({"id": id, "name": name, "restricted": !unrestricted});
        }
        if let Some(tr) = &view.trust {
            t["OS-TRUST:trust"] = json!({
                "id": tr.id, "impersonation": tr.impersonation,
                "trustee_user": {"id": tr.trustee_user_id}, "trustor_user": {"id": tr.trustor_user_id}
            });
        }
        if with_catalog && p.scope != Scope::Unscoped {
            t["catalog"] = self.catalog_json(view.project.as_ref().map(|p| p.id.as_str())).await?;
        }
        Ok(json!({"token": t}))
    }

    /// The request context services see.
    pub fn context(&self, v: &Validated) -> RequestContext {
        let view = &v.view;
        let p = &v.payload;
        let mut audit = vec![audit_text(&p.audit_id)];
        if let Some(parent) = &p.parent_audit_id {
            audit.push(audit_text(parent));
        }
        RequestContext {
            user_id: view.user.id.clone(),
            user_name: view.user.name.clone(),
            user_domain_id: view.user_domain.id.clone(),
            user_domain_name: view.user_domain.name.clone(),
            project_id: view.project.as_ref().map(|p| p.id.clone()),
            project_name: view.project.as_ref().map(|p| p.name.clone()),
            project_domain_id: view.project_domain.as_ref().map(|d| d.id.clone()),
            project_domain_name: view.project_domain.as_ref().map(|d| d.name.clone()),
            domain_id: view.domain.as_ref().map(|d| d.id.clone()),
            domain_name: view.domain.as_ref().map(|d| d.name.clone()),
            system_scope: view.system,
            roles: view.roles.iter().map(|(_, n)| n.clone()).collect(),
            role_ids: view.roles.iter().map(|(i, _)| i.clone()).collect(),
            token: v.token.clone(),
            audit_ids: audit,
            expires_at: micros_z(p.expires_at),
            application_credential_id: view.app_cred.as_ref().map(|a| a.0.clone()),
            access_rules: view.access_rules.clone(),
        }
    }
}

/// Keystone's token time format.
pub fn micros_z(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

/// Substitutes `$(project_id)s`-style templates; `None` when a template needs a
/// project and there is none.
pub fn substitute_url(url: &str, project_id: Option<&str>) -> Option<String> {
    const KEYS: [&str; 4] = ["$(project_id)s", "%(project_id)s", "$(tenant_id)s", "%(tenant_id)s"];
    if !KEYS.iter().any(|k| url.contains(k)) {
        return Some(url.to_string());
    }
    let p = project_id?;
    let mut u = url.to_string();
    for k in KEYS {
        u = u.replace(k, p);
    }
    Some(u)
}

/// `{"self": ..., "previous": null, "next": null}` for a collection.
pub fn list_links(base: &str, path: &str) -> Value {
    json!({"self": format!("{base}/v3/{path}"), "previous": null, "next": null})
}

/// The object under `key` of a request body (`{"user": {...}}`), or a 400.
pub fn body_object<'a>(body: &'a Value, key: &str) -> Result<&'a serde_json::Map<String, Value>> {
    body.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| IdentityError::invalid(format!("'{key}' is a required property")))
}

/// A string field of a request object: `Ok(None)` when absent or null, 400 when not a string.
pub fn opt_str(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(IdentityError::invalid(format!("Invalid input for field '{key}': expected a string"))),
    }
}

/// A boolean field of a request object.
pub fn opt_bool(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(IdentityError::invalid(format!("Invalid input for field '{key}': expected a boolean"))),
    }
}

/// A required, non-empty name field (at most 255 characters, as Keystone's schema).
pub fn req_name(obj: &serde_json::Map<String, Value>, key: &str) -> Result<String> {
    req_name_max(obj, key, 255)
}

/// A required name field of 1 to `max` characters with something besides white space
/// (projects and domains: 64, as Keystone's schema).
pub fn req_name_max(obj: &serde_json::Map<String, Value>, key: &str, max: usize) -> Result<String> {
    let n = opt_str(obj, key)?.ok_or_else(|| IdentityError::invalid(format!("'{key}' is a required property")))?;
    if n.trim().is_empty() || n.chars().count() > max {
        return Err(IdentityError::invalid(format!(
            "Invalid input for field '{key}': must be 1 to {max} characters, not only white space"
        )));
    }
    Ok(n)
}
