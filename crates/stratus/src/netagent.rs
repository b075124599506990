//! The in-process network agent of `stratus up` (`[network_agent]`), beside the compute
//! agent: same host name (so `binding:host_id` matches what compute binds), state under the
//! data directory, the metadata proxy forwarding to the compute metadata API in-process.
//!
//! It starts when `enabled = "true"`, or with `enabled = "auto"` when the process runs as
//! root with `ip`, `nft` and `dnsmasq` installed (default `"false"`, see `AgentConfig`). Tests set `enabled` and a `host_netns` they
//! created: the agent must never build bridges in a test machine's root namespace.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use stratus_core::Platform;
use stratus_network_agent::metadata::{MetadataBackend, MetadataReply};
use stratus_network_agent::{AgentConfig, BusStateSource, NetworkAgent};
use tokio::sync::watch;

use crate::config::Config;

fn tools_present() -> bool {
    ["ip", "nft", "dnsmasq"]
        .iter()
        .all(|t| ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| std::path::Path::new(d).join(t).exists()))
}

fn is_root() -> bool {
    uid() == 0
}

fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()))
        .unwrap_or(u32::MAX)
}

/// The agent configuration with `stratus up`'s defaults filled in.
pub fn resolve(config: &Config, platform: &Platform, secret: &str) -> AgentConfig {
    let mut cfg = config.network_agent.clone();
    if cfg.host.is_empty() {
        cfg.host = if config.compute.local.agent.host.is_empty() {
            platform.host.clone()
        } else {
            config.compute.local.agent.host.clone()
        };
    }
    // One place for the hypervisor's namespace: QEMU makes its taps in `[compute]
    // host_netns`, so the agent plugs them there unless told otherwise.
    if cfg.host_netns.is_none() {
        cfg.host_netns = config.compute.local.host_netns.clone();
    }
    if cfg.state_dir.as_os_str().is_empty() {
        cfg.state_dir = config.data_dir.join("network-agent");
    }
    if cfg.metadata_proxy_shared_secret.is_empty() {
        cfg.metadata_proxy_shared_secret = secret.to_string();
    }
    cfg
}

/// Whether the agent runs in this process.
pub fn wanted(cfg: &AgentConfig) -> anyhow::Result<bool> {
    match cfg.enabled.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        "auto" => Ok(is_root() && tools_present()),
        other => anyhow::bail!("network_agent.enabled must be \"true\", \"false\" or \"auto\", not {other:?}"),
    }
}

/// Why the data plane is off, and how to turn it on (for the start banner).
pub fn off_reason(cfg: &AgentConfig) -> String {
    let why = match cfg.enabled.as_str() {
        "false" => "off ([network_agent] enabled = \"false\")".to_string(),
        _ if !is_root() => "off (not root)".to_string(),
        _ => "off (ip, nft or dnsmasq missing: scripts/install-host-packages.sh)".to_string(),
    };
    format!(
        "{why}: servers get addresses that no DHCP server, router or NAT serves; \
         run as root with the host packages, or set [network_agent] enabled = \"true\""
    )
}

/// Forwards the proxy's signed requests to `/metadata` through the in-process router.
struct InProcessMetadata(Platform);

#[async_trait]
impl MetadataBackend for InProcessMetadata {
    async fn get(&self, path_and_query: &str, headers: &[(String, String)]) -> anyhow::Result<MetadataReply> {
        let mut b = Request::builder().method("GET").uri(format!("/metadata{path_and_query}"));
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Body::empty()).context("metadata request")?;
        // Nothing in the metadata API looks at the caller's context: the signature is the proof.
        let ctx = stratus_core::RequestContext::default();
        let resp = self.0.internal.call_streaming(&ctx, req).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/plain")
            .to_string();
        let body = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024).await?.to_vec();
        Ok(MetadataReply { status, content_type, body })
    }
}

/// Starts the agent loop (and its metadata proxy) until `shutdown` turns true.
pub fn spawn(cfg: AgentConfig, platform: &Platform, shutdown: watch::Receiver<bool>) {
    let agent = Arc::new(NetworkAgent::new(cfg));
    agent.enable_metadata(Arc::new(InProcessMetadata(platform.clone())));
    let bus = platform.bus.clone();
    let source = Arc::new(BusStateSource::new(bus.clone()));
    tokio::spawn(async move {
        tracing::info!(host = %agent.config().host, netns = ?agent.config().host_netns, "network agent starting");
        if let Err(e) = agent.run(bus, source, shutdown).await {
            tracing::error!("network agent stopped: {e:#}");
        }
    });
}
