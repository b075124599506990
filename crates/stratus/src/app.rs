//! Assembling the cloud: every service in one process behind one listener.
//!
//! Start-up order matters only where services depend on each other: the database and
//! bus first, identity next (everyone validates tokens through it), then the rest. All
//! routers are mounted under their devstack-style prefixes; a trailing slash is trimmed
//! before routing so `/compute/v2.1/` and `/compute/v2.1` are the same resource.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::response::IntoResponse;
use axum::Router;
use stratus_auth::AuthState;
use stratus_bus::InProcBus;
use stratus_core::fault::{ApiError, FaultFormat};
use stratus_core::internal::InternalClient;
use stratus_core::{request_id, Platform};
use stratus_db::Db;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Layer;

use crate::config::Config;

/// Options that are not configuration (they only matter on the first start).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Admin password to bootstrap with; generated when absent.
    pub admin_password: Option<String>,
}

/// Entry point for starting a cloud.
pub struct Cloud;

/// A running cloud.
pub struct CloudHandle {
    /// Address the listener is bound to.
    pub addr: SocketAddr,
    /// Base URL of the APIs.
    pub public_url: String,
    /// Shared infrastructure (tests use it to reach the database).
    pub platform: Platform,
    /// What the network data plane does in this process, in words for the start banner.
    pub data_plane: String,
    /// What the local compute agent runs guests with, in words for the start banner.
    pub compute: String,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Cloud {
    /// Binds the listener, migrates and bootstraps every service, and starts serving.
    pub async fn start(config: Config, opts: StartOptions) -> anyhow::Result<CloudHandle> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let listener = TcpListener::bind(&config.server.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another stratus up running? choose another with --listen)",
                config.server.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let public_url = config.public_url(addr);
        // Before anything starts: a certificate that does not load stops the start.
        let tls = if config.server.tls_cert.is_empty() {
            None
        } else {
            Some(crate::tls::acceptor(
                std::path::Path::new(&config.server.tls_cert),
                std::path::Path::new(&config.server.tls_key),
            )?)
        };

        let db = Db::connect(&config.database_url()).await.context("opening the database")?;
        let platform = Platform {
            db,
            bus: Arc::new(InProcBus::new()),
            public_url: public_url.clone(),
            data_dir: config.data_dir.clone(),
            host: hostname(),
            internal: InternalClient::default(),
            region: config.region.clone(),
        };

        let catalog = catalog();
        let identity = stratus_identity::IdentityService::start(
            platform.clone(),
            config.identity.clone(),
            opts.admin_password.clone(),
            catalog,
        )
        .await?;
        let auth = AuthState { validator: identity.validator(), identity_uri: platform.service_url("/identity") };
        let image = stratus_image::ImageService::start(platform.clone(), auth.clone(), config.image.clone()).await?;
        let placement =
            stratus_placement::PlacementService::start(platform.clone(), auth.clone(), config.placement.clone())
                .await?;
        let compute =
            stratus_compute::ComputeService::start(platform.clone(), auth.clone(), config.compute.service.clone())
                .await?;
        let network =
            stratus_network::NetworkService::start(platform.clone(), auth.clone(), config.network.clone()).await?;
        let volume =
            stratus_volume::VolumeService::start(platform.clone(), auth.clone(), config.volume.clone()).await?;
        let object =
            stratus_object::ObjectService::start(platform.clone(), auth.clone(), config.object.clone()).await?;
        let orchestration = stratus_orchestration::OrchestrationService::start(
            platform.clone(),
            auth.clone(),
            config.orchestration.clone(),
        )
        .await?;
        let dashboard =
            stratus_dashboard::DashboardService::start(platform.clone(), auth.clone(), config.dashboard.clone())
                .await?;

        let metadata_secret = stratus_compute::metadata::shared_secret(
            &config.compute.service.metadata_proxy_shared_secret,
            &config.data_dir,
        )
        .context("metadata proxy shared secret")?;
        let router = Router::new()
            .nest("/identity", identity.router())
            .nest("/image", image.router())
            .nest("/placement", placement.router())
            .nest("/compute", compute.router())
            .nest("/network", network.router())
            .nest("/volume", volume.router())
            .nest("/object", object.router())
            .nest("/orchestration", orchestration.router())
            .nest("/dashboard", dashboard.router())
            .nest("/metadata", stratus_compute::metadata::router(platform.clone(), metadata_secret.clone()))
            .fallback(unknown_service)
            .layer(middleware::map_response_with_state(public_url.clone(), absolute_location))
            .layer(DefaultBodyLimit::max(config.server.max_body_bytes as usize))
            .layer(middleware::from_fn(request_id::assign));
        platform.internal.install(router.clone());
        // Recorded after the internal client took its copy: only what clients see is recorded.
        let router = match crate::recorder::Recorder::start(&config.record)? {
            Some(rec) => router.layer(middleware::from_fn_with_state(rec, crate::recorder::record)),
            None => router,
        };
        // Counted likewise: client requests only (see `metrics`).
        let metrics = crate::metrics::Metrics::new();
        let endpoint = crate::metrics::Endpoint { metrics: metrics.clone(), platform: platform.clone() };
        let metrics_route =
            Router::new().route("/metrics", axum::routing::get(crate::metrics::serve)).with_state(endpoint);
        let router = if !config.metrics.enabled {
            router
        } else if config.metrics.listen.is_empty() {
            router.merge(metrics_route)
        } else {
            let l = TcpListener::bind(&config.metrics.listen)
                .await
                .with_context(|| format!("binding the metrics listener {}", config.metrics.listen))?;
            tracing::info!(addr = %l.local_addr()?, "metrics on a listener of their own");
            tokio::spawn(async move { axum::serve(l, metrics_route).await });
            router
        };
        // The local compute agent registers through the bus once the APIs answer.
        let compute_driver = crate::computeagent::start(&platform, &config.compute.local).await?;
        // So does the local volume agent (the storage host role of this machine).
        if config.volume_agent.enabled {
            crate::volagent::spawn(crate::volagent::resolve(&config, &platform), &platform);
        }

        let app = tower::util::MapRequestLayer::new(trim_trailing_slash).layer(router);
        // Outermost, so every answer is counted, the fallback's and merged routes' too.
        let app = middleware::from_fn_with_state(metrics, crate::metrics::count).layer(app);
        let (shutdown, rx) = watch::channel(false);
        // The local network agent (beside the compute agent, same host name).
        let mut agent_cfg = crate::netagent::resolve(&config, &platform, &metadata_secret);
        let data_plane = if crate::netagent::wanted(&agent_cfg)? {
            // devstack's host link first, so the agent starts with `public` mapped.
            let public = if config.public_network.enabled {
                match crate::default_networks::prepare_host(&config.public_network, &mut agent_cfg).await {
                    Ok(what) => Some(what),
                    Err(e) => {
                        tracing::error!(
                            "{e:#}: the data plane runs, but without devstack's public network and its host link"
                        );
                        None
                    }
                }
            } else {
                None
            };
            crate::netagent::spawn(agent_cfg, &platform, shutdown.subscribe());
            match public {
                Some(what) => match crate::default_networks::create_networks(&platform, &config.public_network).await {
                    Ok(_) => format!("on; {what}"),
                    Err(e) => {
                        tracing::error!("making devstack's networks: {e:#}");
                        format!("on; {what}, but making the networks failed: {e:#}")
                    }
                },
                None => "on (no public network: see the log)".to_string(),
            }
        } else {
            crate::netagent::off_reason(&agent_cfg)
        };
        let mut rx2 = shutdown.subscribe();
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let db = platform.db.clone();
        let limits = config.server.limits();
        let server = tokio::spawn(async move {
            let app = tower::util::BoxCloneSyncService::new(app);
            let serve = crate::listener::serve(listener, app, limits, tls, rx.clone());
            let mut serve = std::pin::pin!(serve);
            // Once shutdown is requested, in-flight requests get `grace` to finish.
            tokio::select! {
                () = &mut serve => {}
                _ = async {
                    let _ = rx2.wait_for(|s| *s).await;
                    tokio::time::sleep(grace).await;
                } => tracing::warn!("in-flight requests did not finish within the shutdown grace period"),
            }
            db.close().await;
            Ok(())
        });
        tracing::info!(%addr, %public_url, "Stratus is serving");
        Ok(CloudHandle { addr, public_url, platform, data_plane, compute: compute_driver, shutdown, server })
    }
}

impl CloudHandle {
    /// Stops accepting connections, lets in-flight requests finish, closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await.context("server task")?
    }
}

async fn unknown_service(uri: axum::http::Uri) -> axum::response::Response {
    let err = ApiError::not_found(format!(
        "No service at {}: services are under /identity, /image, /placement, /compute, /network, /volume, /object, /orchestration, /dashboard",
        uri.path()
    ));
    let (body, _) = err.render(FaultFormat::Keystone, "");
    (err.status, axum::Json(body)).into_response()
}

/// Makes a relative `Location` header absolute, as webob does for the Python services:
/// clients (keystoneauth) append a relative path to the service endpoint, which would
/// double the service prefix.
async fn absolute_location(
    axum::extract::State(public_url): axum::extract::State<String>,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    let loc = resp.headers().get(axum::http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(loc) = loc.filter(|l| l.starts_with('/')) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{}{loc}", public_url.trim_end_matches('/'))) {
            resp.headers_mut().insert(axum::http::header::LOCATION, v);
        }
    }
    resp
}

/// Trims one trailing slash (except on the root) so `/x/` routes like `/x`. Kept on
/// object paths and on `/image/v2/images/`, an image with an empty id (Glance: 404,
/// not the image list).
fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    // Cinder routes `/volumes/` as a volume with an empty id (404), not as the list, and
    // Tempest checks it: project-scoped block storage resource paths keep their slash.
    let volume_item = path.starts_with("/volume/v3/") && path.trim_end_matches('/').split('/').count() > 4;
    // Nova reads `/os-simple-tenant-usage/` as the usage of a project with an empty id
    // (404), not as the list of all projects' usage; Tempest checks it.
    let empty_tenant_usage = path == "/compute/v2.1/os-simple-tenant-usage/";
    if path.len() > 1
        && path.ends_with('/')
        && !path.starts_with("/object/v1/")
        && path != "/image/v2/images/"
        && !volume_item
        && !empty_tenant_usage
    {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let new = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = new.parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The catalog: exactly the services this binary serves, each declaring its own entries
/// (so a service that is not served is never advertised).
pub fn catalog() -> Vec<stratus_core::CatalogEntry> {
    [
        stratus_identity::CATALOG,
        stratus_image::CATALOG,
        stratus_placement::CATALOG,
        stratus_compute::CATALOG,
        stratus_network::CATALOG,
        stratus_volume::CATALOG,
        stratus_object::CATALOG,
        stratus_orchestration::CATALOG,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trimmed(path: &str) -> String {
        let req = Request::builder().uri(path).body(axum::body::Body::empty()).unwrap();
        trim_trailing_slash(req).uri().to_string()
    }

    #[test]
    fn one_trailing_slash_is_trimmed_except_where_it_names_an_empty_id() {
        assert_eq!(trimmed("/compute/v2.1/servers/?limit=1"), "/compute/v2.1/servers?limit=1");
        assert_eq!(
            trimmed("/compute/v2.1/os-simple-tenant-usage/?start=x"),
            "/compute/v2.1/os-simple-tenant-usage/?start=x"
        );
        assert_eq!(trimmed("/image/v2/images/"), "/image/v2/images/");
        assert_eq!(trimmed("/"), "/");
    }
}
