//! `stratus status`: a running cloud's health at a glance, through its own APIs (so it
//! says what a client would see): the APIs answering, compute, network and volume
//! services and agents up or down, hypervisors with their free resources, and servers by
//! status with guests running against guests expected. Text for people, `--json` for
//! scripts; the exit code is non-zero when something is down.
//!
//! Credentials come from the `OS_*` variables as the `openstack` CLI reads them, or else
//! from `<data_dir>/admin-openrc`, which `stratus up` writes on its first start.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};

/// Who to ask, and as whom.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Identity endpoint, e.g. `http://127.0.0.1:5080/identity/v3`.
    pub auth_url: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Project name.
    pub project: String,
    /// User and project domain name.
    pub domain: String,
    /// CA certificate to trust (`OS_CACERT`), for a cloud serving TLS.
    pub cacert: Option<std::path::PathBuf>,
}

impl Credentials {
    /// From `OS_*` variables (looked up with `env`), else from `openrc`'s `export` lines.
    pub fn find(env: &dyn Fn(&str) -> Option<String>, openrc: &Path) -> anyhow::Result<Credentials> {
        let file: BTreeMap<String, String> = match std::fs::read_to_string(openrc) {
            Ok(text) => parse_openrc(&text),
            Err(_) => BTreeMap::new(),
        };
        let get = |k: &str| env(k).or_else(|| file.get(k).cloned());
        let (Some(auth_url), Some(username), Some(password)) =
            (get("OS_AUTH_URL"), get("OS_USERNAME"), get("OS_PASSWORD"))
        else {
            bail!(
                "no credentials: set OS_AUTH_URL, OS_USERNAME and OS_PASSWORD (source an openrc), \
                 or point --data-dir at the cloud's data directory ({} does not hold an admin-openrc)",
                openrc.parent().map(|p| p.display().to_string()).unwrap_or_default()
            );
        };
        Ok(Credentials {
            auth_url: auth_url.trim_end_matches('/').to_string(),
            username,
            password,
            project: get("OS_PROJECT_NAME").unwrap_or_else(|| "admin".into()),
            domain: get("OS_USER_DOMAIN_NAME").unwrap_or_else(|| "Default".into()),
            cacert: get("OS_CACERT").filter(|c| !c.is_empty()).map(Into::into),
        })
    }
}

/// `export K=V` lines of an openrc, with the shell's single quotes undone.
fn parse_openrc(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.trim().strip_prefix("export ").and_then(|l| l.split_once('=')) else { continue };
        let v = if let Some(inner) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.replace("'\\''", "'")
        } else {
            v.trim_matches('"').to_string()
        };
        out.insert(k.trim().to_string(), v);
    }
    out
}

/// One service or agent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agent {
    /// `nova-compute`, `Linux bridge agent`, `cinder-volume`...
    pub binary: String,
    /// Host.
    pub host: String,
    /// Reporting in time.
    pub up: bool,
    /// Enabled by the operator.
    pub enabled: bool,
}

/// A hypervisor's resources.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Host {
    /// Host name.
    pub name: String,
    /// up / down.
    pub state: String,
    /// vCPUs, used vCPUs.
    pub vcpus: i64,
    /// Used vCPUs.
    pub vcpus_used: i64,
    /// Memory MiB.
    pub memory_mb: i64,
    /// Used memory MiB.
    pub memory_mb_used: i64,
    /// Servers on it.
    pub servers: i64,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Base URL asked.
    pub url: String,
    /// Each API's version document answered (service → ms).
    pub apis: BTreeMap<String, Option<u64>>,
    /// Compute, network and volume services and agents.
    pub agents: Vec<Agent>,
    /// Hypervisors.
    pub hosts: Vec<Host>,
    /// Servers by status (`ACTIVE`, `ERROR`...).
    pub servers: BTreeMap<String, i64>,
    /// ACTIVE servers whose guest is not running (power state other than 1).
    pub active_not_running: Vec<String>,
    /// Whether a network agent reports: without one, nothing serves DHCP, routers or NAT.
    pub data_plane: bool,
    /// Everything up and every ACTIVE guest running.
    pub healthy: bool,
}

/// Gathers the status of the cloud that `creds` reach.
pub async fn gather(creds: &Credentials) -> anyhow::Result<Status> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(20));
    if let Some(ca) = &creds.cacert {
        let pem = std::fs::read(ca).with_context(|| format!("OS_CACERT {}", ca.display()))?;
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).with_context(|| format!("OS_CACERT {}", ca.display()))?,
        );
    }
    let http = builder.build()?;
    let base = creds
        .auth_url
        .trim_end_matches("/v3")
        .strip_suffix("/identity")
        .with_context(|| format!("OS_AUTH_URL {} does not end in /identity/v3 (not a Stratus cloud?)", creds.auth_url))?
        .to_string();
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": creds.username, "domain": {"name": creds.domain}, "password": creds.password}}},
        "scope": {"project": {"name": creds.project, "domain": {"name": creds.domain}}}}});
    let resp = http
        .post(format!("{}/auth/tokens", creds.auth_url.trim_end_matches('/')))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("the identity API at {} does not answer", creds.auth_url))?;
    if !resp.status().is_success() {
        bail!("logging in as {} at {}: {}", creds.username, creds.auth_url, resp.status());
    }
    let token = resp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).context("no token")?.to_string();
    let get = |path: String| {
        let (http, token, url) = (http.clone(), token.clone(), format!("{base}{path}"));
        async move {
            let r = http.get(&url).header("x-auth-token", token).send().await.with_context(|| format!("GET {url}"))?;
            if !r.status().is_success() {
                bail!("GET {url}: {}", r.status());
            }
            r.json::<Value>().await.with_context(|| format!("GET {url}: not JSON"))
        }
    };

    let mut apis = BTreeMap::new();
    for svc in ["identity", "image", "placement", "compute", "network", "volume", "object", "orchestration"] {
        let t0 = Instant::now();
        let ok = http.get(format!("{base}/{svc}/")).send().await.is_ok_and(|r| r.status().as_u16() < 500);
        apis.insert(svc.to_string(), ok.then(|| t0.elapsed().as_millis() as u64));
    }

    // Compute and volume services share Nova's/Cinder's shape; network agents have their own.
    let services = |list: &Value, key: &str| -> Vec<Agent> {
        list[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| Agent {
                        binary: s["binary"].as_str().or(s["agent_type"].as_str()).unwrap_or_default().into(),
                        host: s["host"].as_str().unwrap_or_default().into(),
                        up: s["state"] == "up" || s["alive"] == true,
                        enabled: s["status"] == "enabled" || (key == "agents" && s["admin_state_up"] != false),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut agents = services(&get("/compute/v2.1/os-services".into()).await?, "services");
    let net = get("/network/v2.0/agents".into()).await?;
    let net_agents = services(&net, "agents");
    agents.extend(net_agents.iter().cloned());
    // A cloud may serve no block storage service list; its absence is not a failure.
    if let Ok(v) = get("/volume/v3/os-services".into()).await {
        agents.extend(services(&v, "services"));
    }

    let mut hosts = Vec::new();
    let hv = get("/compute/v2.1/os-hypervisors/detail".into()).await?;
    for h in hv["hypervisors"].as_array().cloned().unwrap_or_default() {
        let n = |k: &str| h[k].as_i64().unwrap_or(0);
        hosts.push(Host {
            name: h["hypervisor_hostname"].as_str().unwrap_or_default().into(),
            state: h["state"].as_str().unwrap_or_default().into(),
            vcpus: n("vcpus"),
            vcpus_used: n("vcpus_used"),
            memory_mb: n("memory_mb"),
            memory_mb_used: n("memory_mb_used"),
            servers: n("running_vms"),
        });
    }

    let mut servers = BTreeMap::new();
    let mut active_not_running = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = match &marker {
            Some(m) => format!("/compute/v2.1/servers/detail?all_tenants=1&limit=1000&marker={m}"),
            None => "/compute/v2.1/servers/detail?all_tenants=1&limit=1000".to_string(),
        };
        let list = get(page).await?["servers"].as_array().cloned().unwrap_or_default();
        for s in &list {
            let status = s["status"].as_str().unwrap_or("UNKNOWN").to_string();
            if status == "ACTIVE" && s["OS-EXT-STS:power_state"].as_i64() != Some(1) {
                active_not_running.push(s["id"].as_str().unwrap_or_default().to_string());
            }
            *servers.entry(status).or_default() += 1;
        }
        match list.last().and_then(|s| s["id"].as_str()) {
            Some(id) if list.len() == 1000 => marker = Some(id.to_string()),
            _ => break,
        }
    }
    let data_plane = net_agents.iter().any(|a| a.up);
    let healthy = apis.values().all(Option::is_some)
        && agents.iter().all(|a| a.up || !a.enabled)
        && active_not_running.is_empty()
        && hosts.iter().all(|h| h.state == "up");
    Ok(Status { url: base, apis, agents, hosts, servers, active_not_running, data_plane, healthy })
}

impl Status {
    /// The text `stratus status` prints.
    pub fn render(&self) -> String {
        let mut out = format!("Stratus at {}: {}\n", self.url, if self.healthy { "healthy" } else { "NOT healthy" });
        out.push_str("APIs:\n");
        for (svc, ms) in &self.apis {
            match ms {
                Some(ms) => out.push_str(&format!("  {svc:<14} up ({ms} ms)\n")),
                None => out.push_str(&format!("  {svc:<14} DOWN\n")),
            }
        }
        out.push_str("Services and agents:\n");
        for a in &self.agents {
            let state = match (a.up, a.enabled) {
                (true, true) => "up",
                (true, false) => "up, disabled",
                (false, true) => "DOWN",
                (false, false) => "down, disabled",
            };
            out.push_str(&format!("  {:<22} {:<24} {state}\n", a.binary, a.host));
        }
        out.push_str("Hosts:\n");
        for h in &self.hosts {
            out.push_str(&format!(
                "  {:<24} {:<5} vCPU {}/{} used, RAM {}/{} MiB used, {} servers\n",
                h.name, h.state, h.vcpus_used, h.vcpus, h.memory_mb_used, h.memory_mb, h.servers
            ));
        }
        let counts: Vec<String> = self.servers.iter().map(|(s, n)| format!("{n} {s}")).collect();
        out.push_str(&format!("Servers: {}\n", if counts.is_empty() { "none".to_string() } else { counts.join(", ") }));
        if !self.active_not_running.is_empty() {
            out.push_str(&format!("  ACTIVE but not running: {}\n", self.active_not_running.join(", ")));
        }
        out.push_str(&format!(
            "Network data plane: {}\n",
            if self.data_plane {
                "on (a network agent reports)"
            } else {
                "OFF: no network agent reports; servers get addresses that no DHCP server, router or NAT serves"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openrc_values_are_unquoted_as_the_shell_would() {
        let m = parse_openrc("export OS_PASSWORD='it'\\''s'\nexport OS_USERNAME=admin\n# comment\nexport OS_AUTH_URL=http://x/identity/v3\n");
        assert_eq!(m["OS_PASSWORD"], "it's");
        assert_eq!(m["OS_USERNAME"], "admin");
        assert_eq!(m["OS_AUTH_URL"], "http://x/identity/v3");
    }

    #[test]
    fn the_environment_wins_over_the_openrc_and_missing_credentials_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("admin-openrc");
        std::fs::write(
            &rc,
            "export OS_USERNAME=admin\nexport OS_PASSWORD=p\nexport OS_AUTH_URL=http://a/identity/v3\n",
        )
        .unwrap();
        let env = |k: &str| (k == "OS_PASSWORD").then(|| "from-env".to_string());
        let c = Credentials::find(&env, &rc).unwrap();
        assert_eq!((c.password.as_str(), c.username.as_str(), c.project.as_str()), ("from-env", "admin", "admin"));
        let e = Credentials::find(&|_| None, &dir.path().join("none")).unwrap_err().to_string();
        assert!(e.contains("OS_AUTH_URL") && e.contains("--data-dir"), "{e}");
    }
}
