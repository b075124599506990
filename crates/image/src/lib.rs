//! Image service: the Glance v2 API.
//!
//! Mounted under `/image`. Each resource has its module with routes, policy checks and
//! SQL: [`images`] (metadata, list, patch, tags, actions), [`data`] (upload, download,
//! stage, all streamed), [`import`] (the import methods and multiple stores),
//! [`tasks`], [`members`] (sharing), [`metadefs`] (metadata definitions), [`schemas`]
//! and [`info`].
//! Image bytes live in a [`store::Store`]; [`inspect`] decides whether they are what the
//! image claims to be and safe to hand to a hypervisor.

mod data;
mod error;
mod images;
mod import;
mod info;
pub mod inspect;
mod members;
mod metadefs;
pub mod policy;
mod schemas;
pub mod store;
mod tasks;
mod versions;

/// This service's entry in the identity catalog (the binary registers it while it serves it).
pub const CATALOG: &[stratus_core::CatalogEntry] = &[stratus_core::CatalogEntry {
    service_type: "image",
    name: "glance",
    description: "Image Service",
    path: "/image",
}];

use std::path::PathBuf;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::Router;
use serde::{Deserialize, Serialize};
use stratus_auth::{require_auth, AuthState, Policy};
use stratus_core::fault::FaultFormat;
use stratus_core::stack::service_stack;
use stratus_core::Platform;
use stratus_db::Migration;

pub use error::ImageError;

/// The image service's schema.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") },
    Migration { version: 2, name: "tasks_metadefs", sql: include_str!("../migrations/0002_tasks_metadefs.sql") },
];

/// `[image]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Policy override file (YAML or JSON, `rule: check`), e.g. to let members publicize
    /// images. Default: none (Glance's defaults).
    pub policy_file: Option<PathBuf>,
    /// Largest image accepted, in bytes. Default 1099511627776 (1 TiB, as Glance).
    pub image_size_cap: u64,
    /// Total bytes of image data a project may store (`0` = unlimited). Accepts a
    /// number of bytes or a size with unit (`10GB`, `500MB`), as Glance's
    /// `user_storage_quota`. Default `"0"`.
    pub user_storage_quota: String,
    /// Images a project may own (`-1` = unlimited). Default -1.
    pub image_count_quota: i64,
    /// Members an image may have. Default 128 (Glance's `image_member_quota`).
    pub image_member_quota: i64,
    /// Tags an image may have. Default 128 (Glance's `image_tag_quota`).
    pub image_tag_quota: i64,
    /// Default page size of image lists. Default 25 (Glance's `limit_param_default`).
    pub limit_param_default: usize,
    /// Largest page of image lists. Default 1000 (Glance's `api_limit_max`).
    pub api_limit_max: usize,
    /// URL prefixes `web-download` may fetch from (e.g. `https://download.cirros-cloud.net/`).
    /// Empty (the default) disables `web-download`, so the cloud never fetches URLs
    /// a user chose.
    pub web_download_allowed_urls: Vec<String>,
    /// Where image data is kept. Default `<data_dir>/images`.
    pub filesystem_store_datadir: Option<PathBuf>,
    /// Run `qemu-img info` as a second opinion on uploaded data when it is installed.
    /// Default true.
    pub qemu_img_check: bool,
    /// The image stores (Glance's `enabled_backends`), the default first. Each entry is
    /// a filesystem store, `id` or `id=/path`: the store `file` lives in
    /// `filesystem_store_datadir`, any other in `<data_dir>/image-stores/<id>`. With
    /// two or more, imports may name their stores and `copy-image` is offered.
    /// Default `["file"]`.
    pub stores: Vec<String>,
    /// Import methods offered (Glance's `enabled_import_methods`): `glance-direct`,
    /// `web-download` (only with `web_download_allowed_urls`), `copy-image` (only with
    /// two or more stores), `glance-download` (from the image service of a region in
    /// the catalog). Default `["glance-direct", "web-download", "copy-image"]`, as Glance.
    pub enabled_import_methods: Vec<String>,
    /// Custom properties an image may have. Default 128 (Glance's `image_property_quota`).
    pub image_property_quota: i64,
    /// Property name prefixes `glance-download` copies from the source image
    /// (Glance's `[glance_download_properties] extra_properties`).
    pub glance_download_properties: Vec<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            policy_file: None,
            image_size_cap: 1 << 40,
            user_storage_quota: "0".into(),
            image_count_quota: -1,
            image_member_quota: 128,
            image_tag_quota: 128,
            limit_param_default: 25,
            api_limit_max: 1000,
            web_download_allowed_urls: Vec::new(),
            filesystem_store_datadir: None,
            qemu_img_check: true,
            stores: vec!["file".into()],
            enabled_import_methods: vec!["glance-direct".into(), "web-download".into(), "copy-image".into()],
            image_property_quota: 128,
            glance_download_properties: ["hw_", "trait:", "os_distro", "os_secure_boot", "os_type"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Parses Glance-style sizes: `1073741824`, `10GB`, `500 MB`, `2TB`, `1024KB`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" | "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Opens the configured stores (see [`ImageConfig::stores`]).
fn open_stores(
    entries: &[String],
    file_root: &std::path::Path,
    data_dir: &std::path::Path,
) -> anyhow::Result<store::Stores> {
    if entries.is_empty() {
        anyhow::bail!("[image] stores is empty: at least one store is needed (e.g. [\"file\"])");
    }
    let mut list: Vec<Arc<dyn store::Store>> = Vec::new();
    for e in entries {
        let (id, path) = match e.split_once('=') {
            Some((id, path)) => (id.trim(), Some(PathBuf::from(path.trim()))),
            None => (e.trim(), None),
        };
        let valid =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            anyhow::bail!("[image] stores: {id:?} is not a store id (letters, digits, '-' and '_', at most 64)");
        }
        if list.iter().any(|s| s.id() == id) {
            anyhow::bail!("[image] stores: {id:?} is listed twice");
        }
        let path = path.unwrap_or_else(|| {
            if id == "file" {
                file_root.to_path_buf()
            } else {
                data_dir.join("image-stores").join(id)
            }
        });
        list.push(Arc::new(store::FsStore::with_id(id, path)?));
    }
    Ok(store::Stores::new(list))
}

/// Shared state of the image handlers.
pub(crate) struct State {
    pub platform: Platform,
    pub policy: Policy,
    pub cfg: ImageConfig,
    /// Bytes per project (0 = unlimited), parsed from the config.
    pub storage_quota: u64,
    pub stores: store::Stores,
    /// glance-direct staging area.
    pub staging: Arc<dyn store::Store>,
}

pub(crate) type St = Arc<State>;

/// The running service.
pub struct ImageService {
    state: St,
    auth: AuthState,
}

impl ImageService {
    /// Starts the service: migrates its tables, opens the store and kills uploads a
    /// previous run left half done.
    pub async fn start(platform: Platform, auth: AuthState, cfg: ImageConfig) -> anyhow::Result<Arc<Self>> {
        platform.db.migrate("image", MIGRATIONS).await?;
        let policy = Policy::load("image", policy::DEFAULTS, cfg.policy_file.as_deref())?;
        let storage_quota = parse_size(&cfg.user_storage_quota).ok_or_else(|| {
            anyhow::anyhow!("[image] user_storage_quota {:?} is not a size (e.g. 0, 10GB)", cfg.user_storage_quota)
        })?;
        let root = cfg.filesystem_store_datadir.clone().unwrap_or_else(|| platform.data_dir.join("images"));
        let stores = open_stores(&cfg.stores, &root, &platform.data_dir)?;
        let staging = Arc::new(store::FsStore::with_id("staging", root.join("staging"))?);
        let state = Arc::new(State { platform, policy, cfg, storage_quota, stores, staging });
        data::recover(&state).await?;
        import::recover(&state).await?;
        Ok(Arc::new(ImageService { state, auth }))
    }

    /// Routes, mounted under `/image`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.state.platform.service_url("/image");
        let protected = Router::new()
            .merge(images::routes())
            .merge(data::routes())
            .merge(import::routes())
            .merge(tasks::routes())
            .merge(metadefs::routes())
            .merge(members::routes())
            .merge(schemas::routes())
            .merge(info::routes())
            .with_state(self.state.clone())
            .layer(from_fn_with_state(self.auth.clone(), require_auth));
        let routes = versions::routes().with_state(base).merge(protected);
        service_stack(routes, FaultFormat::Glance, None)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("0"), Some(0));
        assert_eq!(super::parse_size("10GB"), Some(10 << 30));
        assert_eq!(super::parse_size("500 MB"), Some(500 << 20));
        assert_eq!(super::parse_size("lots"), None);
    }
}
