//! `stratus backup` / `stratus restore`: the control plane in one file, taken while the
//! cloud runs.
//!
//! A backup is a gzipped tar holding:
//! - `stratus.db`: a consistent copy of the SQLite database made with `VACUUM INTO`
//!   (a read transaction: writers go on while it is taken), or `stratus.pgdump` from
//!   `pg_dump --format=custom` on PostgreSQL;
//! - the data directory's small state: token keys (`identity/`), the metadata proxy secret,
//!   `admin-openrc` and any other file the services keep there;
//! - the image store (`images/`) unless `--without-images`: image data is the control
//!   plane's to serve (Glance's store), and a restored catalogue without it lists images
//!   nobody can boot;
//! - the configuration file given with `--config`, as `stratus.toml`;
//! - `BACKUP.json`: what is inside and when it was taken.
//!
//! Left out, and said so in `BACKUP.json`: guests' disks (`instances/`), volumes,
//! objects and the agents' scratch state. They belong to the hosts, which keep them; a
//! restored controller re-adopts the guests that still run.
//!
//! Restore unpacks into an empty data directory (never over a cloud's) and puts the
//! database back; `stratus up` on that directory migrates it if it is older.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Top-level entries of the data directory a backup leaves out, with why.
const LEFT_OUT: [(&str, &str); 7] = [
    ("instances", "guests' disks: kept by the hosts"),
    ("volumes", "volume data: kept by the storage backend"),
    ("objects", "object data: kept by the object storage backend"),
    ("network-agent", "the network agent's scratch state: rebuilt from the database"),
    ("volume-agent", "the volume agent's scratch state"),
    ("stratus.db-wal", "part of the live database (copied consistently as stratus.db)"),
    ("stratus.db-shm", "part of the live database"),
];

/// `BACKUP.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Format version of the backup.
    pub format: u32,
    /// Stratus version that took it.
    pub stratus_version: String,
    /// When (RFC 3339, UTC).
    pub taken_at: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Whether `images/` is inside.
    pub images: bool,
    /// Whether `stratus.toml` is inside.
    pub config: bool,
    /// What is left out, and why.
    pub left_out: Vec<String>,
}

/// What to back up.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Leave the image store out.
    pub without_images: bool,
    /// The configuration file to include.
    pub config_file: Option<PathBuf>,
}

/// Writes a backup of the cloud that `config` describes to `out` (created; never
/// overwritten). Returns the manifest.
pub async fn create(config: &Config, out: &Path, opts: &BackupOptions) -> anyhow::Result<Manifest> {
    let data = &config.data_dir;
    if !data.is_dir() {
        bail!("{} is not a data directory (use --data-dir)", data.display());
    }
    let scratch = tempfile::Builder::new()
        .prefix(".stratus-backup-")
        .tempdir_in(out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
        .context("a scratch directory beside the backup file")?;
    let url = config.database_url();
    let (db_name, database) = if url.starts_with("sqlite:") {
        let copy = scratch.path().join("stratus.db");
        let db = stratus_db::Db::connect(&url).await.context("opening the database")?;
        let sql = format!("VACUUM INTO '{}'", copy.display().to_string().replace('\'', "''"));
        stratus_db::sqlx::query(&sql).execute(db.reader()).await.context("copying the database (VACUUM INTO)")?;
        db.close().await;
        ("stratus.db", "sqlite")
    } else {
        let dump = scratch.path().join("stratus.pgdump");
        run("pg_dump", &["--format=custom", "--no-owner", "--file", &dump.display().to_string(), "--dbname", &url])?;
        ("stratus.pgdump", "postgres")
    };
    let manifest = Manifest {
        format: 1,
        stratus_version: env!("CARGO_PKG_VERSION").into(),
        taken_at: chrono_now(),
        database: database.into(),
        images: !opts.without_images,
        config: opts.config_file.is_some(),
        left_out: LEFT_OUT.iter().map(|(p, why)| format!("{p}: {why}")).collect(),
    };
    std::fs::write(scratch.path().join("BACKUP.json"), serde_json::to_vec_pretty(&manifest)?)?;

    // The backup holds the token keys and the admin password: readable by its owner only.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {} (an existing file is never overwritten)", out.display()))?;
    let result = (|| -> anyhow::Result<()> {
        let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.append_path_with_name(scratch.path().join("BACKUP.json"), "BACKUP.json")?;
        tar.append_path_with_name(scratch.path().join(db_name), db_name)?;
        if let Some(cfg) = &opts.config_file {
            tar.append_path_with_name(cfg, "stratus.toml").with_context(|| format!("adding {}", cfg.display()))?;
        }
        for entry in std::fs::read_dir(data)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let skip = LEFT_OUT.iter().any(|(p, _)| *p == name)
                || name == "stratus.db"
                || name.starts_with(".stratus-backup-")
                || (name == "images" && opts.without_images);
            if skip {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                tar.append_dir_all(format!("data/{name}"), &path)
                    .with_context(|| format!("adding {}", path.display()))?;
            } else if entry.file_type()?.is_file() {
                tar.append_path_with_name(&path, format!("data/{name}"))
                    .with_context(|| format!("adding {}", path.display()))?;
            }
        }
        tar.into_inner()?.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        // Never leave half a backup that looks whole.
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok(manifest)
}

/// Unpacks the backup `file` into the empty (or missing) data directory of `config`.
/// A PostgreSQL backup is restored into `config`'s database URL with `pg_restore`.
pub async fn restore(config: &Config, file: &Path) -> anyhow::Result<Manifest> {
    let data = &config.data_dir;
    if data.exists() && std::fs::read_dir(data)?.next().is_some() {
        bail!("{} is not empty: restore into a new data directory (--data-dir), never over a cloud", data.display());
    }
    std::fs::create_dir_all(data)?;
    let scratch = tempfile::Builder::new().prefix(".stratus-restore-").tempdir_in(data)?;
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(f)));
    archive.set_preserve_permissions(true);
    archive
        .unpack(scratch.path())
        .with_context(|| format!("{} is not a Stratus backup (gzipped tar)", file.display()))?;
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(scratch.path().join("BACKUP.json"))
            .with_context(|| format!("{} has no BACKUP.json: not a Stratus backup", file.display()))?,
    )
    .context("BACKUP.json")?;
    if manifest.format != 1 {
        bail!("backup format {} is newer than this Stratus understands (1)", manifest.format);
    }
    let url = config.database_url();
    match (manifest.database.as_str(), url.starts_with("sqlite:")) {
        ("sqlite", true) => {
            let target = url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default().to_string();
            std::fs::rename(scratch.path().join("stratus.db"), &target)
                .with_context(|| format!("putting the database at {target}"))?;
        }
        ("postgres", false) => {
            let dump = scratch.path().join("stratus.pgdump").display().to_string();
            run("pg_restore", &["--no-owner", "--clean", "--if-exists", "--dbname", &url, &dump])?;
        }
        (taken, _) => bail!(
            "the backup holds a {taken} database but this configuration uses {}: restore with the same kind",
            if url.starts_with("sqlite:") { "SQLite" } else { "PostgreSQL" }
        ),
    }
    let unpacked = scratch.path().join("data");
    if unpacked.is_dir() {
        for entry in std::fs::read_dir(&unpacked)? {
            let entry = entry?;
            std::fs::rename(entry.path(), data.join(entry.file_name()))?;
        }
    }
    if manifest.config {
        std::fs::rename(scratch.path().join("stratus.toml"), data.join("stratus.toml.restored"))?;
    }
    Ok(manifest)
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (install PostgreSQL's client tools)"))?;
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn chrono_now() -> String {
    stratus_core::time::seconds_z(&stratus_core::time::now())
}
