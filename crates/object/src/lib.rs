//! Object storage service: the Swift v1 API at `/object/v1/AUTH_<project>`.
//!
//! Metadata (accounts, containers, object rows, ACLs, quotas, versions) lives in the
//! Stratus database ([`db`]); object bytes live in a [`backend`] (`fs` files, or an S3
//! store). Requests go through [`proxy`] (transaction ids, names, authentication by
//! token, [`tempurl`] signature or ACL) to [`account`], [`container`] or [`object`];
//! large objects are [`slo`] and [`dlo`]; uploads stream through [`ingest`]; [`sweeper`]
//! removes orphaned bytes and expired objects. [`info`] serves `/info`, listing exactly
//! what is implemented.

/// This service's entry in the identity catalog (the binary registers it while it serves it).
pub const CATALOG: &[stratus_core::CatalogEntry] = &[stratus_core::CatalogEntry {
    service_type: "object-store",
    name: "swift",
    description: "Object Storage Service",
    path: "/object/v1/AUTH_$(project_id)s",
}];

pub mod access;
mod account;
pub mod backend;
mod body;
mod bulk;
mod container;
pub mod db;
mod dlo;
pub mod error;
mod formpost;
mod info;
pub mod ingest;
mod listing;
pub mod meta;
pub mod names;
mod object;
mod proxy;
mod slo;
mod staticweb;
pub mod sweeper;
mod tempurl;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::AuthState;
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;
use stratus_db::{Backend as DbBackend, Migration, Query};

use crate::backend::Backend;
pub use info::SECTIONS as INFO_SECTIONS;

/// The one storage policy, as containers and `/info` report it.
pub const POLICY_NAME: &str = "Policy-0";

/// Schema on SQLite.
pub const MIGRATIONS_SQLITE: &[Migration] =
    &[Migration { version: 1, name: "init", sql: include_str!("../migrations/sqlite/0001_init.sql") }];
/// Schema on PostgreSQL (same tables; names collate bytewise).
pub const MIGRATIONS_POSTGRES: &[Migration] =
    &[Migration { version: 1, name: "init", sql: include_str!("../migrations/postgres/0001_init.sql") }];

/// `[object]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectConfig {
    /// Where object bytes go: `fs` (files under `fs_root`) or `s3`. Default `fs`.
    pub backend: String,
    /// Root of the `fs` backend. Default `<data_dir>/objects`.
    pub fs_root: Option<PathBuf>,
    /// S3 endpoint for the `s3` backend, e.g. `http://127.0.0.1:7480` (radosgw).
    pub s3_endpoint: String,
    /// Region used in S3 signatures. Default `us-east-1`.
    pub s3_region: String,
    /// Bucket holding all object bytes (created when missing). Default `stratus-objects`.
    pub s3_bucket: String,
    /// S3 access key id.
    pub s3_access_key: String,
    /// S3 secret key.
    pub s3_secret_key: String,
    /// Multipart part size in MiB (objects larger than one part go up as multipart
    /// uploads; memory per upload is about one part). Default 8.
    pub s3_part_size_mib: usize,
    /// Roles that own their project's account (Swift's `operator_roles`). Default
    /// `["admin", "member"]`.
    pub operator_roles: Vec<String>,
    /// Roles that may only read their project's account. Default `["reader"]`.
    pub reader_roles: Vec<String>,
    /// Role that owns every account and may set account quotas. Default `ResellerAdmin`.
    pub reseller_admin_role: String,
    /// Largest single object in bytes. Default 5368709122 (Swift's).
    pub max_file_size: u64,
    /// Most entries per container listing. Default 10000.
    pub container_listing_limit: usize,
    /// Most entries per account listing. Default 10000.
    pub account_listing_limit: usize,
    /// Seconds between expirer passes. Default 10.
    pub expirer_interval_secs: u64,
    /// Seconds between orphan sweeps. Default 3600.
    pub sweep_interval_secs: u64,
    /// Only blobs older than this many seconds are swept (after start-up). Default 3600.
    pub sweep_grace_secs: u64,
}

impl Default for ObjectConfig {
    fn default() -> Self {
        ObjectConfig {
            backend: "fs".into(),
            fs_root: None,
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
            s3_bucket: "stratus-objects".into(),
            s3_access_key: String::new(),
            s3_secret_key: String::new(),
            s3_part_size_mib: 8,
            operator_roles: vec!["admin".into(), "member".into()],
            reader_roles: vec!["reader".into()],
            reseller_admin_role: "ResellerAdmin".into(),
            max_file_size: 5_368_709_122,
            container_listing_limit: 10_000,
            account_listing_limit: 10_000,
            expirer_interval_secs: 10,
            sweep_interval_secs: 3600,
            sweep_grace_secs: 3600,
        }
    }
}

/// Shared state of the handlers.
pub struct Svc {
    pub(crate) platform: Platform,
    pub(crate) auth: AuthState,
    pub(crate) cfg: ObjectConfig,
    pub(crate) roles: access::Roles,
    pub(crate) backend: Arc<dyn Backend>,
}

impl Svc {
    /// Deletes these blobs in the background once no row references them.
    pub(crate) fn release_blobs(&self, blobs: Vec<String>) {
        if blobs.is_empty() {
            return;
        }
        let db = self.platform.db.clone();
        let backend = self.backend.clone();
        tokio::spawn(async move {
            for b in blobs {
                match db::blob_referenced(&db, &b).await {
                    Ok(false) => {
                        if let Err(e) = backend.delete(&b).await {
                            tracing::warn!(blob = %b, error = %e, "could not delete released bytes; the sweeper will");
                        }
                    }
                    Ok(true) => {}
                    Err(e) => tracing::warn!(blob = %b, error = %e, "could not check released bytes; the sweeper will"),
                }
            }
        });
    }
}

/// Records S3 multipart uploads in `object_pending_uploads`.
struct PendingTable {
    db: stratus_db::Db,
    host: String,
}

#[async_trait::async_trait]
impl backend::s3::PendingLog for PendingTable {
    async fn started(&self, key: &str, upload_id: &str) {
        let r = self
            .db
            .transaction(|tx| {
                let (key, id, host) = (key.to_string(), upload_id.to_string(), self.host.clone());
                Box::pin(async move {
                    Query::new("INSERT INTO object_pending_uploads (blob, upload_id, host, started_at) VALUES (")
                        .bind(key)
                        .push(", ")
                        .bind(id)
                        .push(", ")
                        .bind(host)
                        .push(", ")
                        .bind(db::now_stamp())
                        .push(")")
                        .execute(&mut **tx)
                        .await
                })
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record a multipart upload");
        }
    }
    async fn finished(&self, key: &str) {
        let r = self
            .db
            .transaction(|tx| {
                let key = key.to_string();
                Box::pin(async move {
                    Query::new("DELETE FROM object_pending_uploads WHERE blob = ").bind(key).execute(&mut **tx).await
                })
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not clear a multipart upload record");
        }
    }
    async fn leftovers(&self) -> Vec<(String, String)> {
        use stratus_db::sqlx::Row;
        Query::new("SELECT blob, upload_id FROM object_pending_uploads WHERE host = ")
            .bind(self.host.as_str())
            .fetch_all(self.db.reader())
            .await
            .map(|rows| rows.iter().map(|r| (r.get("blob"), r.get("upload_id"))).collect())
            .unwrap_or_default()
    }
}

/// Makes sure the reseller admin role exists in identity, as devstack's Swift setup
/// does (Tempest's account-quota tests and operators assign it by name). Runs once the
/// cloud is assembled (internal calls need the composed router), retrying briefly.
fn ensure_reseller_role(svc: &Arc<Svc>) {
    let svc = svc.clone();
    tokio::spawn(async move {
        let ctx = stratus_core::RequestContext::internal_admin();
        let role = svc.cfg.reseller_admin_role.clone();
        let client = svc.platform.internal.clone();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let path = format!("/identity/v3/roles?name={}", names::quote(&role));
            let Ok(found) = client.call(&ctx, axum::http::Method::GET, &path, None, &[]).await else { continue };
            if !found.status.is_success() {
                continue;
            }
            if found.body["roles"].as_array().is_some_and(|r| !r.is_empty()) {
                return;
            }
            let body = serde_json::json!({"role": {"name": role}});
            match client.call(&ctx, axum::http::Method::POST, "/identity/v3/roles", Some(&body), &[]).await {
                Ok(r) if r.status.is_success() || r.status.as_u16() == 409 => {
                    tracing::info!(role = %role, "created the object storage reseller admin role");
                    return;
                }
                _ => continue,
            }
        }
        tracing::warn!(role = %role, "could not make sure the reseller admin role exists");
    });
}

/// The running service.
pub struct ObjectService {
    svc: Arc<Svc>,
}

impl ObjectService {
    /// Migrates its tables, opens the backend, removes what an interrupted earlier run
    /// left (partial writes, orphaned bytes) and starts the expirer and sweeper.
    pub async fn start(platform: Platform, auth: AuthState, cfg: ObjectConfig) -> anyhow::Result<Arc<Self>> {
        let migrations = match platform.db.backend() {
            DbBackend::Sqlite => MIGRATIONS_SQLITE,
            DbBackend::Postgres => MIGRATIONS_POSTGRES,
        };
        platform.db.migrate("object", migrations).await?;
        let started = SystemTime::now();
        let backend: Arc<dyn Backend> = match cfg.backend.as_str() {
            "fs" => {
                let root = cfg.fs_root.clone().unwrap_or_else(|| platform.data_dir.join("objects"));
                Arc::new(backend::fs::FsBackend::new(root)?)
            }
            "s3" => {
                anyhow::ensure!(
                    !cfg.s3_endpoint.is_empty() && !cfg.s3_access_key.is_empty(),
                    "[object] backend = \"s3\" needs s3_endpoint, s3_access_key and s3_secret_key"
                );
                let settings = backend::s3::S3Settings {
                    endpoint: cfg.s3_endpoint.clone(),
                    region: cfg.s3_region.clone(),
                    bucket: cfg.s3_bucket.clone(),
                    access_key: cfg.s3_access_key.clone(),
                    secret_key: cfg.s3_secret_key.clone(),
                    part_size: cfg.s3_part_size_mib.max(5) << 20,
                };
                let pending = Arc::new(PendingTable { db: platform.db.clone(), host: platform.host.clone() });
                let s3 = backend::s3::S3Backend::connect(&settings, pending)
                    .await
                    .map_err(|e| anyhow::anyhow!("[object] s3 backend at {}: {e}", cfg.s3_endpoint))?;
                Arc::new(backend::s3::S3Handle(Arc::new(s3)))
            }
            other => anyhow::bail!("[object] backend {other:?} is not one of fs, s3"),
        };
        let roles = access::Roles {
            operator: cfg.operator_roles.clone(),
            reader: cfg.reader_roles.clone(),
            reseller_admin: cfg.reseller_admin_role.clone(),
            reseller_prefix: "AUTH_".into(),
        };
        let svc = Arc::new(Svc { platform, auth, cfg, roles, backend });
        let partials = svc.backend.remove_partials().await?;
        // fs: nothing of an earlier run can still be in flight, so every unreferenced
        // blob older than this start is an orphan. s3: other controllers may be writing.
        let cutoff = if svc.backend.name() == "fs" {
            started
        } else {
            started - std::time::Duration::from_secs(svc.cfg.sweep_grace_secs)
        };
        let swept = sweeper::sweep_orphans(&svc, cutoff).await?;
        if partials + swept.deleted > 0 {
            tracing::warn!(partials, orphans = swept.deleted, "removed object bytes left by an interrupted run");
        }
        sweeper::spawn(&svc);
        ensure_reseller_role(&svc);
        Ok(Arc::new(ObjectService { svc }))
    }

    /// Runs one orphan sweep now with the given cut-off (operators' and tests' hook).
    pub async fn sweep_orphans(&self, before: SystemTime) -> anyhow::Result<sweeper::SweepReport> {
        sweeper::sweep_orphans(&self.svc, before).await
    }

    /// Runs one expirer pass now.
    pub async fn reap_expired(&self) -> anyhow::Result<usize> {
        sweeper::reap_expired(&self.svc).await
    }

    /// The backend's name (`fs` or `s3`).
    pub fn backend_name(&self) -> &'static str {
        self.svc.backend.name()
    }

    /// Routes, mounted under `/object`.
    pub fn router(self: &Arc<Self>) -> Router {
        let routes = Router::new()
            .route("/info", get(info::info))
            .route("/healthcheck", get(info::healthcheck))
            .route("/crossdomain.xml", get(info::crossdomain))
            .route("/v1/{*rest}", any(proxy::handle))
            .route("/v1.0/{*rest}", any(proxy::handle))
            .with_state(self.svc.clone())
            // Uploads stream; the cloud-wide JSON body limit does not apply.
            .layer(DefaultBodyLimit::disable());
        service_stack(routes, FaultFormat::Swift, None)
    }
}
