//! `stratus`: an OpenStack-compatible cloud in one binary.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stratus::app::StartOptions;
use stratus::{Cloud, Config};

/// Stratus: an OpenStack-compatible IaaS cloud (identity, image, placement, compute,
/// network) in one binary. `stratus up` starts an all-in-one cloud; the `openstack`
/// CLI works against it unchanged.
#[derive(Parser, Debug)]
#[command(name = "stratus", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Every key can also be set as STRATUS_<SECTION>_<KEY>.
    #[arg(long, global = true, value_name = "FILE", env = "STRATUS_CONFIG")]
    config: Option<PathBuf>,
    /// Log output format.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the all-in-one cloud: every API, an embedded database and an in-process bus.
    /// The first start on an empty data directory bootstraps everything and writes an
    /// admin-openrc.
    Up {
        /// Data directory (database, keys, images, instances).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Listen address (default 127.0.0.1:5080).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
        /// Admin password for the first bootstrap (generated when not given).
        #[arg(long, env = "STRATUS_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: Option<String>,
        /// Serve HTTPS with a CA and certificate made once under <data_dir>/tls (for a
        /// first try; clients trust tls/ca.pem, written as OS_CACERT into admin-openrc).
        #[arg(long)]
        self_signed: bool,
    },
    /// The running cloud's health at a glance: APIs, services and agents, hosts with their
    /// free resources, servers by status, the data plane. Credentials from OS_* variables,
    /// else from the data directory's admin-openrc. Exits non-zero when something is down.
    Status {
        /// Data directory whose admin-openrc to use when OS_* variables are not set.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Back up the control plane while the cloud runs: the database (a consistent copy),
    /// token keys and secrets, the image store and the --config file, in one gzipped tar.
    /// Guests' disks, volumes and objects stay with their hosts (listed in BACKUP.json).
    Backup {
        /// The backup file to write (never overwritten).
        file: PathBuf,
        /// Data directory of the cloud.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Leave the image store out.
        #[arg(long)]
        without_images: bool,
    },
    /// Restore a backup into a new, empty data directory; `stratus up` on it then starts
    /// the same cloud (migrating an older database).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Data directory to restore into (must be empty or missing).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Policy commands.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Identity administration (keystone-manage's jobs).
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Print a service's effective policy rules (shipped defaults with the configured
    /// policy file applied), as `policy.yaml` lines.
    Show {
        /// Service name (`identity`).
        service: String,
    },
}

#[derive(Subcommand, Debug)]
enum IdentityCommand {
    /// Rotate the Fernet token keys (keystone-manage fernet_rotate): the staged key
    /// becomes primary, a new staged key is made, the oldest beyond max_active_keys is
    /// removed. Running servers pick the new keys up within `identity.refresh_secs`.
    RotateKeys {
        /// Data directory holding `identity/fernet-keys`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the effective configuration, secrets masked, with each key's variable.
    Show,
}

fn main() -> std::process::ExitCode {
    // Errors are for the operator: the message and its causes, never a backtrace.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(f) = &cli.log_format {
        config.log.format = f.clone();
    }
    match cli.command {
        Command::Status { data_dir, json } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            let creds =
                stratus::status::Credentials::find(&|k| std::env::var(k).ok(), &config.data_dir.join("admin-openrc"))?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let status = rt.block_on(stratus::status::gather(&creds))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            if !status.healthy {
                anyhow::bail!("the cloud is not healthy (see above)");
            }
            Ok(())
        }
        Command::Backup { file, data_dir, without_images } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            let opts = stratus::backup::BackupOptions { without_images, config_file: cli.config.clone() };
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let m = rt.block_on(stratus::backup::create(&config, &file, &opts))?;
            println!(
                "Backed up {} ({} database{}) to {}",
                config.data_dir.display(),
                m.database,
                if m.images { ", images" } else { "" },
                file.display()
            );
            Ok(())
        }
        Command::Restore { file, data_dir } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let m = rt.block_on(stratus::backup::restore(&config, &file))?;
            println!(
                "Restored the backup of {} into {}; start it with: stratus up --data-dir {}{}",
                m.taken_at,
                config.data_dir.display(),
                config.data_dir.display(),
                if m.config { " (its configuration is in stratus.toml.restored there)" } else { "" }
            );
            Ok(())
        }
        Command::Version => {
            println!("stratus {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Config { command: ConfigCommand::Show } => {
            print!("{}", config.show()?);
            Ok(())
        }
        Command::Policy { command: PolicyCommand::Show { service } } => {
            let path = |p: &Option<PathBuf>| p.clone();
            let (defaults, file) = match service.as_str() {
                "identity" => (
                    stratus_identity::policy::DEFAULTS,
                    (!config.identity.policy_file.is_empty()).then(|| PathBuf::from(&config.identity.policy_file)),
                ),
                "image" => (stratus_image::policy::DEFAULTS, path(&config.image.policy_file)),
                "placement" => (stratus_placement::policy::DEFAULTS, path(&config.placement.policy_file)),
                "compute" => (stratus_compute::policy::DEFAULTS, path(&config.compute.service.policy_file)),
                "network" => (stratus_network::policy::DEFAULTS, path(&config.network.policy_file)),
                other => anyhow::bail!(
                    "no policy rules are defined for service {other:?}; try identity, image, placement, compute or network"
                ),
            };
            let policy = stratus_auth::Policy::load(&service, defaults, file.as_deref())?;
            for (name, rule) in policy.rules() {
                println!("{name:?}: {rule:?}");
            }
            Ok(())
        }
        Command::Identity { command: IdentityCommand::RotateKeys { data_dir } } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            let primary = stratus_identity::rotate_keys(&config.data_dir, &config.identity)?;
            println!(
                "Rotated Fernet keys in {}: key {primary} is now primary",
                stratus_identity::key_dir(&config.data_dir).display()
            );
            Ok(())
        }
        Command::Up { data_dir, listen, admin_password, self_signed } => {
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            if let Some(l) = listen {
                config.server.listen = l;
            }
            if self_signed {
                let host = config.server.listen.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or("");
                let host = if host == "0.0.0.0" || host == "::" { stratus::tls::host_name() } else { host.to_string() };
                let set = stratus::tls::self_signed(&config.data_dir, &host)?;
                config.server.tls_cert = set.cert.display().to_string();
                config.server.tls_key = set.key.display().to_string();
            }
            stratus::logging::init(&config.log.format, &config.log.level);
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(up(config, StartOptions { admin_password }))
        }
    }
}

async fn up(config: Config, opts: StartOptions) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let cloud = Cloud::start(config, opts).await?;
    println!("Stratus is up at {}", cloud.public_url);
    if let Some(dir) = stratus::test_image::default_dir() {
        match stratus::test_image::upload(&cloud.platform, &dir).await {
            Ok(Some(id)) => {
                println!("  test image:     {} ({id}) from {}", stratus::test_image::IMAGE_NAME, dir.display())
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not upload the test image"),
        }
    }
    println!("  data directory: {}", data_dir.display());
    println!("  compute:        {}", cloud.compute);
    println!("  data plane:     {}", cloud.data_plane);
    let openrc = data_dir.join("admin-openrc");
    let ca = data_dir.join("tls/ca.pem");
    if cloud.public_url.starts_with("https://") && ca.exists() {
        stratus::tls::add_cacert_to_openrc(&data_dir, &ca)?;
        println!("  CA certificate: {} (OS_CACERT)", ca.display());
    }
    if openrc.exists() {
        println!("  credentials:    source {}", openrc.display());
    }
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    cloud.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
