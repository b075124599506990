//! Image service: the Glance v2 API.
//!
//! Mounted under `/image`. Each resource has its module with routes, policy checks and
//! SQL: [`images`] (metadata, list, patch, tags, actions), [`data`] (upload, download,
//! stage and import, all streamed), [`members`] (sharing), [`schemas`] and [`info`].
//! Image bytes live in a [`store::Store`]; [`inspect`] decides whether they are what the
//! image claims to be and safe to hand to a hypervisor.

mod data;
mod error;
mod images;
mod info;
pub mod inspect;
mod members;
pub mod policy;
mod schemas;
pub mod store;
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
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "init", sql: include_str!("../migrations/0001_init.sql") }];

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

/// Shared state of the image handlers.
pub(crate) struct State {
    pub platform: Platform,
    pub policy: Policy,
    pub cfg: ImageConfig,
    /// Bytes per project (0 = unlimited), parsed from the config.
    pub storage_quota: u64,
    pub store: Arc<dyn store::Store>,
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
        let store = Arc::new(store::FsStore::new(&root)?);
        let staging = Arc::new(store::FsStore::new(root.join("staging"))?);
        let state = Arc::new(State { platform, policy, cfg, storage_quota, store, staging });
        data::recover(&state).await?;
        Ok(Arc::new(ImageService { state, auth }))
    }

    /// Routes, mounted under `/image`.
    pub fn router(self: &Arc<Self>) -> Router {
        let base = self.state.platform.service_url("/image");
        let protected = Router::new()
            .merge(images::routes())
            .merge(data::routes())
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
