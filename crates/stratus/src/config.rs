//! Configuration: one TOML file, every key overridable by environment.
//!
//! Precedence, lowest first: built-in defaults, the `--config` file, `STRATUS_<SECTION>_<KEY>`
//! environment variables (e.g. `STRATUS_SERVER_LISTEN=0.0.0.0:5080`,
//! `STRATUS_DATABASE_URL=postgres://...`), then command-line flags. The set of
//! environment variables is derived from the defaults, so every key has one and
//! `stratus config show` lists them all.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The default listen address: one port for every API, like devstack's single Apache.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5080";

/// Whole-process configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the cloud keeps its database, keys, images and instances.
    pub data_dir: PathBuf,
    /// Region name registered in the catalog.
    pub region: String,
    /// HTTP server.
    pub server: ServerConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// Logging.
    pub log: LogConfig,
    /// `[identity]`: see the identity service's documentation.
    pub identity: stratus_identity::IdentityConfig,
    /// `[image]`: see the image service's documentation.
    pub image: stratus_image::ImageConfig,
    /// `[placement]`: see the placement service's documentation.
    pub placement: stratus_placement::PlacementConfig,
    /// `[compute]`: the compute service's keys (see its documentation) and the
    /// in-process compute agent's (see [`crate::computeagent`]).
    pub compute: crate::computeagent::ComputeSection,
    /// `[network]`: see the network service's documentation.
    pub network: stratus_network::NetworkConfig,
    /// `[network_agent]`: the in-process network agent (see `stratus_network_agent::AgentConfig`).
    pub network_agent: stratus_network_agent::AgentConfig,
    /// `[public_network]`: devstack's public and private networks and the host link that
    /// `stratus up` makes when the data plane runs (see [`crate::default_networks`]).
    pub public_network: crate::default_networks::PublicNetworkConfig,
    /// `[volume]`: see the volume service's documentation.
    pub volume: stratus_volume::VolumeConfig,
    /// `[volume_agent]`: the in-process volume agent (see `stratus_volume_agent::AgentConfig`).
    pub volume_agent: stratus_volume_agent::AgentConfig,
    /// `[object]`: see the object service's documentation.
    pub object: stratus_object::ObjectConfig,
    /// `[dashboard]`: see the dashboard service's documentation.
    pub dashboard: stratus_dashboard::DashboardConfig,
    /// `[orchestration]`: see the orchestration service's documentation.
    pub orchestration: stratus_orchestration::OrchestrationConfig,
    /// `[metrics]`: the Prometheus endpoint (see [`crate::metrics`]).
    pub metrics: crate::metrics::MetricsConfig,
    /// `[record]`: the opt-in response recorder (see [`crate::recorder`]).
    pub record: crate::recorder::RecordConfig,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port of the single API listener.
    pub listen: String,
    /// URL clients use to reach the APIs; empty means `http://<listen>`.
    pub public_url: String,
    /// Largest request body accepted by JSON APIs, in bytes (image uploads stream and
    /// are limited by image quotas instead).
    pub max_body_bytes: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds a request's headers may take to arrive whole; also how long a keep-alive
    /// connection may stay idle between requests. Default 30.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may go without sending any data before the request fails
    /// (a slow upload that keeps moving is fine). Default 60.
    pub body_idle_timeout_secs: u64,
    /// Client connections served at once; one more is answered 503 with `Retry-After`
    /// and closed. Lowered at start to fit the open-file limit. Default 10000.
    pub max_connections: usize,
    /// Requests in progress at once across every API; more get 503 with `Retry-After`.
    /// Default 1024.
    pub max_in_flight: usize,
    /// PEM certificate chain for TLS on the listener (see [`crate::tls`]); with
    /// `tls_key`, the APIs are served over HTTPS only and advertised as `https://`.
    /// Default empty: plain HTTP.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
}

impl ServerConfig {
    /// The listener's limits.
    pub fn limits(&self) -> crate::listener::Limits {
        crate::listener::Limits {
            header_read_timeout_secs: self.header_read_timeout_secs,
            body_idle_timeout_secs: self.body_idle_timeout_secs,
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`; empty means
    /// `sqlite://<data_dir>/stratus.db`.
    pub url: String,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (human-readable) or `json` (one object per line).
    pub format: String,
    /// Filter in `RUST_LOG` syntax, e.g. `info,stratus_compute=debug`.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            region: "RegionOne".into(),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            identity: Default::default(),
            image: Default::default(),
            placement: Default::default(),
            compute: Default::default(),
            network: Default::default(),
            network_agent: Default::default(),
            public_network: Default::default(),
            volume: Default::default(),
            volume_agent: Default::default(),
            object: Default::default(),
            dashboard: Default::default(),
            orchestration: Default::default(),
            metrics: Default::default(),
            record: Default::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let limits = crate::listener::Limits::default();
        ServerConfig {
            listen: DEFAULT_LISTEN.into(),
            public_url: String::new(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: limits.header_read_timeout_secs,
            body_idle_timeout_secs: limits.body_idle_timeout_secs,
            max_connections: limits.max_connections,
            max_in_flight: limits.max_in_flight,
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: "text".into(), level: "info".into() }
    }
}

/// `/var/lib/stratus` for root, `$XDG_DATA_HOME/stratus` (or `~/.local/share/stratus`) otherwise.
pub fn default_data_dir() -> PathBuf {
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::env::var("HOME").map(|h| h == "/root").unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/stratus");
    }
    if let Ok(x) = std::env::var("XDG_DATA_HOME") {
        if !x.is_empty() {
            return PathBuf::from(x).join("stratus");
        }
    }
    match std::env::var("HOME") {
        Ok(h) => PathBuf::from(h).join(".local/share/stratus"),
        Err(_) => PathBuf::from("./stratus-data"),
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut value = toml::Value::try_from(Config::default()).context("serializing defaults")?;
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading config file {}", f.display()))?;
            let file_value: toml::Value =
                toml::from_str(&text).with_context(|| format!("parsing config file {}", f.display()))?;
            merge(&mut value, file_value);
        }
        apply_env(&mut value, &|k| std::env::var(k).ok())?;
        apply_env_unset(&mut value, &unset_keys(&Config::default())?, &|k| std::env::var(k).ok())?;
        let cfg: Config = value.try_into().context("invalid configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            bail!("server.tls_cert and server.tls_key go together: set both for TLS, or neither");
        }
        self.public_network.validate()?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bail!("log.format must be \"text\" or \"json\", not {:?}", self.log.format);
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!("server.listen must be ADDRESS:PORT, not {:?}", self.server.listen);
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("stratus.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The public URL in effect for a listener bound to `bound`.
    pub fn public_url(&self, bound: std::net::SocketAddr) -> String {
        if self.server.public_url.is_empty() {
            let scheme = if self.server.tls_cert.is_empty() { "http" } else { "https" };
            format!("{scheme}://{bound}")
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }

    /// Every environment variable that overrides a key, with the key's effective value,
    /// secrets masked.
    pub fn show(&self) -> anyhow::Result<String> {
        let mut v = toml::Value::try_from(self)?;
        // TOML has no null, so unset keys vanish on serialization; put them back as a
        // marker so that they are listed with their variable like every other key.
        for path in unset_keys(self)? {
            set_path(&mut v, &path, toml::Value::String(UNSET.into()));
        }
        mask_secrets(&mut v);
        let mut out = String::from("# Effective Stratus configuration (secrets masked).\n");
        out.push_str("# Every key can be overridden by the environment variable named beside it.\n\n");
        let mut lines = Vec::new();
        walk(&v, "", &mut |path, val| lines.push((path.to_string(), val.clone())));
        let mut section = String::new();
        for (path, val) in lines {
            let (sec, key) = match path.rsplit_once('.') {
                Some((s, k)) => (s.to_string(), k.to_string()),
                None => (String::new(), path.clone()),
            };
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec;
            }
            if val.as_str() == Some(UNSET) {
                out.push_str(&format!("# {key} is unset    # {}\n", env_name(&path)));
            } else {
                out.push_str(&format!("{key} = {val}    # {}\n", env_name(&path)));
            }
        }
        Ok(out)
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `server.listen` → `STRATUS_SERVER_LISTEN`.
pub fn env_name(path: &str) -> String {
    format!("STRATUS_{}", path.replace(['.', '-'], "_").to_ascii_uppercase())
}

fn walk(v: &toml::Value, prefix: &str, f: &mut dyn FnMut(&str, &toml::Value)) {
    if let toml::Value::Table(t) = v {
        // Plain keys first, then sections, so top-level keys print before any [section].
        for (k, child) in t.iter().filter(|(_, c)| !c.is_table()) {
            let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            f(&p, child);
        }
        for (k, child) in t.iter().filter(|(_, c)| c.is_table()) {
            let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            walk(child, &p, f);
        }
    }
}

fn apply_env(v: &mut toml::Value, get: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    walk(v, "", &mut |p, val| paths.push((p.to_string(), val.clone())));
    for (path, current) in paths {
        let name = env_name(&path);
        let Some(raw) = get(&name) else { continue };
        let parsed = match current {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.trim().parse().with_context(|| format!("{name}={raw:?} must be an integer"))?)
            }
            toml::Value::Float(_) => {
                toml::Value::Float(raw.trim().parse().with_context(|| format!("{name}={raw:?} must be a number"))?)
            }
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => bail!("{name}={raw:?} must be true or false"),
            }),
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.into()))
                    .collect(),
            ),
            _ => continue,
        };
        set_path(v, &path, parsed);
    }
    Ok(())
}

/// Marks an unset key inside `show` (a string no real value can contain).
const UNSET: &str = "\u{0}unset";

/// Dotted paths of the keys whose value is unset (`None`) in `cfg`. TOML drops them, so
/// they are found through JSON, where they survive as `null`.
fn unset_keys(cfg: &Config) -> anyhow::Result<Vec<String>> {
    fn walk_json(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, child) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match child {
                    serde_json::Value::Null => out.push(p),
                    serde_json::Value::Object(_) => walk_json(child, &p, out),
                    _ => {}
                }
            }
        }
    }
    let mut out = Vec::new();
    walk_json(&serde_json::to_value(cfg).context("serializing configuration")?, "", &mut out);
    Ok(out)
}

/// Environment overrides for keys that are unset by default. Their type is not visible
/// in the serialized defaults (they are `null`), so the raw value is tried as a number or
/// flag first and as a string otherwise, keeping the first the configuration accepts;
/// an empty variable leaves the key unset.
fn apply_env_unset(v: &mut toml::Value, unset: &[String], get: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    for path in unset {
        let name = env_name(path);
        let Some(raw) = get(&name).filter(|r| !r.is_empty()) else { continue };
        let t = raw.trim();
        let mut candidates = Vec::new();
        if let Ok(i) = t.parse::<i64>() {
            candidates.push(toml::Value::Integer(i));
        }
        if let Ok(f) = t.parse::<f64>() {
            candidates.push(toml::Value::Float(f));
        }
        if let Ok(b) = t.parse::<bool>() {
            candidates.push(toml::Value::Boolean(b));
        }
        candidates.push(toml::Value::String(raw.clone()));
        let mut last_err = None;
        let mut accepted = false;
        for c in candidates {
            let mut trial = v.clone();
            set_path(&mut trial, path, c);
            match trial.clone().try_into::<Config>() {
                Ok(_) => {
                    *v = trial;
                    accepted = true;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if !accepted {
            let e = last_err.map(|e| e.to_string()).unwrap_or_default();
            bail!("{name}={raw:?} is not a valid value: {e}");
        }
    }
    Ok(())
}

fn set_path(v: &mut toml::Value, path: &str, new: toml::Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        match cur.get_mut(*p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let toml::Value::Table(t) = cur {
        t.insert(parts[parts.len() - 1].to_string(), new);
    }
}

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"].iter().any(|s| k.contains(s))
        && !k.ends_with("_dir")
        && !k.ends_with("_file")
}

fn mask_secrets(v: &mut toml::Value) {
    if let toml::Value::Table(t) = v {
        for (k, child) in t.iter_mut() {
            match child {
                toml::Value::Table(_) => mask_secrets(child),
                toml::Value::String(s) if is_secret(k) && !s.is_empty() && s != UNSET => *s = "****".into(),
                toml::Value::String(s) if k == "url" && s.contains('@') => {
                    // postgres://user:password@host/db
                    if let Some((scheme_user, rest)) = s.split_once('@') {
                        if let Some((before, _pw)) = scheme_user.rsplit_once(':') {
                            if before.contains("://") {
                                *s = format!("{before}:****@{rest}");
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_typed_keys() {
        let mut v = toml::Value::try_from(Config::default()).unwrap();
        let env = |k: &str| match k {
            "STRATUS_SERVER_LISTEN" => Some("0.0.0.0:9999".to_string()),
            "STRATUS_SERVER_MAX_BODY_BYTES" => Some("42".to_string()),
            "STRATUS_REGION" => Some("RegionTwo".to_string()),
            _ => None,
        };
        apply_env(&mut v, &env).unwrap();
        let c: Config = v.try_into().unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:9999");
        assert_eq!(c.server.max_body_bytes, 42);
        assert_eq!(c.region, "RegionTwo");

        let mut v = toml::Value::try_from(Config::default()).unwrap();
        let bad = |k: &str| (k == "STRATUS_SERVER_MAX_BODY_BYTES").then(|| "lots".to_string());
        assert!(apply_env(&mut v, &bad).unwrap_err().to_string().contains("must be an integer"));
    }

    #[test]
    fn keys_unset_by_default_have_variables_too() {
        let unset = unset_keys(&Config::default()).unwrap();
        assert!(unset.iter().any(|k| k == "compute.host_netns"), "{unset:?}");
        let mut v = toml::Value::try_from(Config::default()).unwrap();
        let env = |k: &str| match k {
            "STRATUS_COMPUTE_HOST_NETNS" => Some("lab1".to_string()),
            "STRATUS_COMPUTE_POLICY_FILE" => Some(String::new()),
            "STRATUS_COMPUTE_FAKE_VCPUS" => Some("12".to_string()),
            _ => None,
        };
        apply_env_unset(&mut v, &unset, &env).unwrap();
        let c: Config = v.try_into().unwrap();
        assert_eq!(c.compute.local.host_netns.as_deref(), Some("lab1"));
        assert_eq!(c.compute.local.fake.vcpus, Some(12));
        let mut v = toml::Value::try_from(Config::default()).unwrap();
        let bad = |k: &str| (k == "STRATUS_COMPUTE_FAKE_VCPUS").then(|| "many".to_string());
        let e = apply_env_unset(&mut v, &unset, &bad).unwrap_err().to_string();
        assert!(e.contains("STRATUS_COMPUTE_FAKE_VCPUS"), "{e}");
        assert_eq!(c.compute.service.policy_file, None, "an empty variable leaves the key unset");

        let s = Config::default().show().unwrap();
        assert!(s.contains("# host_netns is unset    # STRATUS_COMPUTE_HOST_NETNS"), "{s}");
        assert!(!s.contains('\u{0}'));
        let s = c.show().unwrap();
        assert!(s.contains("host_netns = \"lab1\"    # STRATUS_COMPUTE_HOST_NETNS"), "{s}");
    }

    #[test]
    fn show_masks_secrets_and_names_env_vars() {
        let mut c = Config::default();
        c.database.url = "postgres://stratus:hunter2@db/stratus".into();
        let s = c.show().unwrap();
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("postgres://stratus:****@db/stratus"));
        assert!(s.contains("STRATUS_SERVER_LISTEN"));
        assert!(s.contains("STRATUS_DATABASE_URL"));
    }

    #[test]
    fn file_values_merge_over_defaults_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:7000\"\n").unwrap();
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7000");
        assert_eq!(c.server.shutdown_grace_secs, 30);
        std::fs::write(&f, "[server]\nlisten_typo = 1\n").unwrap();
        assert!(Config::load(Some(&f)).is_err());
    }
}
