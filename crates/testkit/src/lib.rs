//! Test harness for whole-cloud tests.
//!
//! [`TestCloud::start`] runs a complete all-in-one Stratus inside the test process on an
//! ephemeral port with a temporary data directory, and [`TestCloud::openstack`] runs the
//! real `openstack` CLI (python-openstackclient from the repository's `.venv`, installed
//! by `scripts/setup-clients.sh`) against it with the usual `OS_*` variables, returning
//! its `-f json` output parsed. Compatibility is proven by the real client, not by our
//! own HTTP calls.

pub mod ceph;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use stratus::app::StartOptions;
use stratus::{Cloud, CloudHandle, Config};

/// The admin password every test cloud is bootstrapped with.
pub const ADMIN_PASSWORD: &str = "stratus-test-admin";

/// Credentials for the CLI.
#[derive(Debug, Clone)]
pub struct Creds {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Project to scope to (`None`: unscoped / system scope via extra args).
    pub project: Option<String>,
}

impl Creds {
    /// `username`/`password` scoped to `project`.
    pub fn new(username: &str, password: &str, project: &str) -> Self {
        Creds { username: username.into(), password: password.into(), project: Some(project.into()) }
    }
}

/// A CLI invocation that exited non-zero.
#[derive(Debug, Clone)]
pub struct CliError {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error (the CLI's message).
    pub stderr: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "openstack exited with {:?}: {}{}", self.code, self.stderr, self.stdout)
    }
}

impl std::error::Error for CliError {}

/// A running in-process cloud.
pub struct TestCloud {
    handle: Option<CloudHandle>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The data directory (removed on drop).
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    client: reqwest::Client,
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Path of the `openstack` executable: `$STRATUS_OPENSTACK_CLI` or `<repo>/.venv/bin/openstack`.
pub fn openstack_cli() -> PathBuf {
    if let Ok(p) = std::env::var("STRATUS_OPENSTACK_CLI") {
        return PathBuf::from(p);
    }
    repo_root().join(".venv/bin/openstack")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

impl TestCloud {
    /// Starts a cloud with default test configuration.
    pub async fn start() -> TestCloud {
        Self::start_with(|_| {}).await
    }

    /// Starts a cloud after `customize` adjusts the configuration.
    pub async fn start_with(customize: impl FnOnce(&mut Config)) -> TestCloud {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut t = Self::start_in(data_dir, customize).await;
        t._dir = Some(dir);
        t
    }

    /// Starts a cloud on an existing data directory (restart tests); the caller owns it.
    pub async fn start_in(data_dir: PathBuf, customize: impl FnOnce(&mut Config)) -> TestCloud {
        init_logging();
        let mut config = Config { data_dir: data_dir.clone(), ..Config::default() };
        config.server.listen = "127.0.0.1:0".into();
        config.server.shutdown_grace_secs = 5;
        // The cheapest argon2 parameters: tests log in hundreds of times, and the hash
        // cost is configuration, not behaviour (identity's own tests cover both).
        config.identity.password_hash_memory_kib = 8;
        config.identity.password_hash_iterations = 1;
        // Tests get real guests only when they ask for them (`virt_driver = "qemu"`).
        config.compute.local.virt_driver = "fake".into();
        // Never a network agent in the machine's root namespace: a test that wants one
        // enables it with a `host_netns` it created (see tests/cloud/dataplane.rs).
        config.network_agent.enabled = "false".into();
        // Nor devstack's networks: tests make the networks they count on.
        config.public_network.enabled = false;
        customize(&mut config);
        let handle = Cloud::start(config, StartOptions { admin_password: Some(ADMIN_PASSWORD.into()) })
            .await
            .expect("test cloud starts");
        TestCloud {
            url: handle.public_url.clone(),
            handle: Some(handle),
            data_dir,
            _dir: None,
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client"),
        }
    }

    /// The cloud's handle (platform, database).
    pub fn handle(&self) -> &CloudHandle {
        self.handle.as_ref().expect("cloud running")
    }

    /// An HTTP client with a 60 s timeout.
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Admin credentials.
    pub fn admin(&self) -> Creds {
        Creds::new("admin", ADMIN_PASSWORD, "admin")
    }

    /// Issues a project-scoped token for `creds` through the identity API.
    pub async fn token(&self, creds: &Creds) -> anyhow::Result<String> {
        let mut body = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": creds.username, "domain": {"id": "default"}, "password": creds.password}}}}});
        if let Some(p) = &creds.project {
            body["auth"]["scope"] = serde_json::json!({"project": {"name": p, "domain": {"id": "default"}}});
        }
        let r = self.client.post(self.at("/identity/v3/auth/tokens")).json(&body).send().await?;
        anyhow::ensure!(r.status().as_u16() == 201, "token issue failed: {} {}", r.status(), r.text().await?);
        Ok(r.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string())
    }

    /// An admin token.
    pub async fn admin_token(&self) -> String {
        self.token(&self.admin()).await.expect("admin token")
    }

    /// The `OS_*` environment for `creds`.
    pub fn os_env(&self, creds: &Creds) -> Vec<(String, String)> {
        let mut env = vec![
            ("OS_AUTH_URL".to_string(), format!("{}/identity/v3", self.url)),
            ("OS_IDENTITY_API_VERSION".to_string(), "3".to_string()),
            ("OS_IMAGE_API_VERSION".to_string(), "2".to_string()),
            ("OS_USERNAME".to_string(), creds.username.clone()),
            ("OS_PASSWORD".to_string(), creds.password.clone()),
            ("OS_USER_DOMAIN_NAME".to_string(), "Default".to_string()),
            ("OS_REGION_NAME".to_string(), "RegionOne".to_string()),
            ("OS_INTERFACE".to_string(), "public".to_string()),
        ];
        if let Some(p) = &creds.project {
            env.push(("OS_PROJECT_NAME".to_string(), p.clone()));
            env.push(("OS_PROJECT_DOMAIN_NAME".to_string(), "Default".to_string()));
        }
        env
    }

    /// Runs `openstack <args> -f json` as admin and parses the output (`Null` when the
    /// command prints nothing, e.g. `delete`).
    pub async fn openstack(&self, args: &[&str]) -> Result<Value, CliError> {
        self.openstack_as(&self.admin(), args).await
    }

    /// Uploads, as admin through the CLI, the public 1 MiB raw image `tiny` that fake-driver
    /// servers boot from, and returns `image create`'s output.
    pub async fn create_tiny_image(&self) -> Value {
        let img = self.data_dir.join("tiny.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).expect("write tiny.img");
        let path = img.to_str().expect("utf-8 data dir");
        let args = [
            "image",
            "create",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--public",
            "--file",
            path,
            "tiny",
        ];
        self.openstack(&args).await.expect("image create")
    }

    /// Like [`TestCloud::openstack`] with other credentials.
    pub async fn openstack_as(&self, creds: &Creds, args: &[&str]) -> Result<Value, CliError> {
        // Commands that print nothing reject `-f`; those are retried without it. `delete`
        // never prints, so it skips the first attempt.
        let wants_json = !args.iter().any(|a| *a == "-f" || a.starts_with("--format")) && !args.contains(&"delete");
        let mut full: Vec<&str> = args.to_vec();
        if wants_json {
            full.extend(["-f", "json"]);
        }
        let (mut code, mut stdout, mut stderr) = self.openstack_raw(creds, &full).await;
        if wants_json && code == Some(2) && stderr.contains("unrecognized arguments: -f json") {
            // Commands without output formatting (e.g. `resource class create`).
            (code, stdout, stderr) = self.openstack_raw(creds, args).await;
        }
        if code != Some(0) {
            return Err(CliError { code, stdout, stderr });
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)))
    }

    /// Runs the CLI with exactly `args`; returns (exit code, stdout, stderr).
    pub async fn openstack_raw(&self, creds: &Creds, args: &[&str]) -> (Option<i32>, String, String) {
        let cli = openstack_cli();
        assert!(
            cli.exists(),
            "the openstack CLI is not installed at {}: run scripts/setup-clients.sh (scripts/test.sh does)",
            cli.display()
        );
        let mut cmd = tokio::process::Command::new(&cli);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        for (k, _) in std::env::vars() {
            if k.starts_with("OS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.os_env(creds));
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("openstack CLI finished within 120 s")
            .expect("openstack CLI runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts one more compute agent with the fake driver, registered over this cloud's
    /// bus as host `host` (a separate hypervisor, service and resource provider), and
    /// waits until it is registered. Heartbeats every second; `stop` it to simulate the
    /// host dying.
    pub async fn start_fake_agent(
        &self,
        host: &str,
        fake: stratus_compute_agent::virt::fake::FakeDriverConfig,
    ) -> (stratus_compute_agent::AgentHandle, stratus_compute_agent::virt::fake::FakeDriver) {
        let driver = stratus_compute_agent::virt::fake::FakeDriver::new(fake);
        let cfg = stratus_compute_agent::AgentConfig {
            host: host.into(),
            heartbeat_interval_secs: 1,
            sync_interval_secs: 3600,
            ..Default::default()
        };
        let bus = self.handle().platform.bus.clone();
        let h = stratus_compute_agent::Agent::start(cfg, bus, std::sync::Arc::new(driver.clone()))
            .await
            .expect("fake compute agent starts");
        (h, driver)
    }

    /// Stops the cloud gracefully.
    pub async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("clean shutdown");
        }
    }
}
