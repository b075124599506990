//! The in-process compute agent of `stratus up`, and the `[compute]` section it shares
//! with the compute service.
//!
//! The controller crate (`stratus-compute`) never links an agent: it reaches agents over
//! the bus, in the messages of `stratus-compute-proto`. Starting the local one is the
//! binary's assembly, like the network agent in [`crate::netagent`]. Its keys stay where
//! they always were, in `[compute]` (`local_agent`, `virt_driver`, `host_netns`) and its
//! sub-tables `[compute.agent]`, `[compute.qemu]`, `[compute.fake]`: [`ComputeSection`]
//! splits the one TOML section into the service's [`ComputeConfig`] and this module's
//! [`LocalAgentConfig`], each refusing keys it does not know.

use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use stratus_compute::ComputeConfig;
use stratus_compute_agent::virt::fake::{FakeDriver, FakeDriverConfig};
use stratus_compute_agent::virt::qemu::{images::InternalImageSource, qemu_available, QemuDriver, QemuDriverConfig};
use stratus_compute_agent::virt::VirtDriver;
use stratus_compute_agent::{Agent, AgentConfig};
use stratus_core::Platform;

/// The local agent's keys of `[compute]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalAgentConfig {
    /// Run a compute agent inside `stratus up` for this host (default true).
    pub local_agent: bool,
    /// Virt driver of the local agent: `auto` (default: `qemu` when
    /// `qemu-system-x86_64` is installed, `fake` otherwise; the choice is logged), `qemu`
    /// or `fake`.
    pub virt_driver: String,
    /// Named network namespace the `qemu` driver starts QEMU in, so that the taps it
    /// creates (`tap<port id[..11]>`) appear there for the network agent (default none:
    /// the host's namespace).
    pub host_netns: Option<String>,
    /// Settings of the qemu driver (`[compute.qemu]`).
    pub qemu: QemuDriverConfig,
    /// Settings of the local agent (host, allocation ratios, reserved resources).
    pub agent: AgentConfig,
    /// Settings of the fake driver.
    pub fake: FakeDriverConfig,
}

impl LocalAgentConfig {
    /// The keys of `[compute]` that belong to the local agent.
    const KEYS: &'static [&'static str] = &["local_agent", "virt_driver", "host_netns", "qemu", "agent", "fake"];
}

impl Default for LocalAgentConfig {
    fn default() -> Self {
        LocalAgentConfig {
            local_agent: true,
            virt_driver: "auto".into(),
            host_netns: None,
            qemu: Default::default(),
            agent: Default::default(),
            fake: Default::default(),
        }
    }
}

/// `[compute]`: the compute service's keys and the local agent's, in one TOML section.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ComputeSection {
    /// What the compute service reads.
    #[serde(flatten)]
    pub service: ComputeConfig,
    /// What the in-process agent reads.
    #[serde(flatten)]
    pub local: LocalAgentConfig,
}

impl<'de> Deserialize<'de> for ComputeSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut service = toml::Table::deserialize(d)?;
        let mut local = toml::Table::new();
        for k in LocalAgentConfig::KEYS {
            if let Some(v) = service.remove(*k) {
                local.insert((*k).to_string(), v);
            }
        }
        Ok(ComputeSection {
            service: toml::Value::Table(service).try_into().map_err(D::Error::custom)?,
            local: toml::Value::Table(local).try_into().map_err(D::Error::custom)?,
        })
    }
}

/// Which driver `virt_driver` means on this machine.
fn driver_choice(cfg: &LocalAgentConfig) -> anyhow::Result<&'static str> {
    match cfg.virt_driver.as_str() {
        "auto" => {
            let found = qemu_available(&cfg.qemu);
            let pick = if found { "qemu" } else { "fake" };
            tracing::info!(
                driver = pick,
                "virt_driver auto: {}",
                if found { "QEMU found" } else { "no qemu-system-x86_64 on PATH" }
            );
            Ok(pick)
        }
        "qemu" => Ok("qemu"),
        "fake" => Ok("fake"),
        other => anyhow::bail!("[compute] virt_driver {other:?} is not a driver: use \"auto\", \"qemu\" or \"fake\""),
    }
}

/// Starts the in-process compute agent for this host, with the driver named by
/// `virt_driver`. The driver is made here, before the cloud serves: a driver that cannot
/// start (QEMU missing when asked for, a data directory guests cannot reach) stops the
/// start with the reason, never a cloud that answers but fails every boot with "No valid
/// host". The agent then registers in the background, retrying until the conductor (and
/// placement) answer. Returns what runs, in words for the start banner.
pub async fn start(platform: &Platform, cfg: &LocalAgentConfig) -> anyhow::Result<String> {
    if !cfg.local_agent {
        return Ok("no local compute agent ([compute] local_agent = false)".into());
    }
    let mut acfg = cfg.agent.clone();
    if acfg.host.is_empty() {
        acfg.host = platform.host.clone();
    }
    let choice = driver_choice(cfg)?;
    let mut what = "fake driver (no real guests)".to_string();
    let driver: Arc<dyn VirtDriver> = if choice == "qemu" {
        let source = Arc::new(InternalImageSource::new(platform.internal.clone()));
        let d = QemuDriver::new(cfg.qemu.clone(), &platform.data_dir, cfg.host_netns.clone(), source).await.map_err(
            |e| {
                anyhow::anyhow!(
                    "the QEMU driver cannot start: {e:#}. Fix that, or set [compute] virt_driver = \"fake\" \
                     (STRATUS_COMPUTE_VIRT_DRIVER=fake) for a cloud without real guests"
                )
            },
        )?;
        what = if d.accel().to_string() == "kvm" {
            "QEMU with KVM (hardware virtualization)".into()
        } else {
            "QEMU with TCG: no hardware KVM here, guests are emulated (several times slower)".into()
        };
        Arc::new(d)
    } else {
        Arc::new(FakeDriver::new(cfg.fake.clone()))
    };
    let bus = platform.bus.clone();
    tokio::spawn(async move {
        match Agent::start(acfg, bus, driver).await {
            // The agent's tasks run until the process exits.
            Ok(handle) => std::mem::forget(handle),
            Err(e) => tracing::error!(error = %e, "the local compute agent could not start"),
        }
    });
    Ok(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_section_two_owners_and_unknown_keys_fail() {
        let t: toml::Value = toml::from_str(
            "max_attempts = 5\nvirt_driver = \"fake\"\nhost_netns = \"lab\"\n[agent]\nhost = \"h1\"\n[vnc]\ntoken_ttl_secs = 9\n",
        )
        .unwrap();
        let c: ComputeSection = t.try_into().unwrap();
        assert_eq!(c.service.max_attempts, 5);
        assert_eq!(c.service.vnc.token_ttl_secs, 9);
        assert_eq!(c.local.virt_driver, "fake");
        assert_eq!(c.local.host_netns.as_deref(), Some("lab"));
        assert_eq!(c.local.agent.host, "h1");
        let back = toml::Value::try_from(&c).unwrap();
        assert_eq!(back["max_attempts"].as_integer(), Some(5));
        assert_eq!(back["agent"]["host"].as_str(), Some("h1"));
        for bad in ["max_atempts = 1", "[agent]\nhots = \"x\""] {
            let t: toml::Value = toml::from_str(bad).unwrap();
            assert!(t.try_into::<ComputeSection>().is_err(), "{bad} is refused");
        }
    }
}
