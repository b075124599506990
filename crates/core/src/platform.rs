//! What every service is started with: the database, the bus, where the cloud is
//! reachable, and where it keeps its files.

use std::path::PathBuf;
use std::sync::Arc;

use stratus_bus::Bus;
use stratus_db::Db;

use crate::internal::InternalClient;

/// Shared infrastructure handed to each service at start-up.
#[derive(Clone)]
pub struct Platform {
    /// The database (each service owns its tables).
    pub db: Db,
    /// The message bus.
    pub bus: Arc<dyn Bus>,
    /// Base URL clients use to reach this cloud, e.g. `http://127.0.0.1:5080`.
    pub public_url: String,
    /// Directory for the cloud's files (database, keys, images, instances).
    pub data_dir: PathBuf,
    /// Name of this host (agents register under it).
    pub host: String,
    /// In-process client for one service to call another's API.
    pub internal: InternalClient,
    /// Region name (`RegionOne`).
    pub region: String,
}

impl Platform {
    /// Public URL of the service mounted at `prefix` (e.g. `/compute`).
    pub fn service_url(&self, prefix: &str) -> String {
        format!("{}{}", self.public_url.trim_end_matches('/'), prefix)
    }
}

/// A service's entry in the identity catalog: each service declares its own, and the
/// binary hands identity the entries of the services it actually serves, so the catalog
/// never advertises an API that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Service type clients look up (`compute`, `volumev3`, `object-store`...).
    pub service_type: &'static str,
    /// Service name (`nova`, `cinderv3`...).
    pub name: &'static str,
    /// Human description.
    pub description: &'static str,
    /// Endpoint path under the public URL, may hold `$(project_id)s`.
    pub path: &'static str,
}
