//! Locating the QEMU system emulator and probing its features.
//!
//! Probing runs `qemu-system-x86_64 -version` and `-help` once, without
//! starting a guest: the help text only lists `-sandbox` when QEMU was built
//! with seccomp, which is how we decide whether `-sandbox on` can be used.

use std::path::{Path, PathBuf};

/// Errors while locating or probing QEMU.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// Not on `PATH` and no explicit path was given.
    #[error("{0} not found on PATH; install it with scripts/install-host-packages.sh")]
    NotFound(String),
    /// Running the binary failed.
    #[error("running {path}: {source}")]
    Run {
        /// The binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The version line could not be parsed.
    #[error("cannot parse QEMU version from {0:?}")]
    Version(String),
}

/// A probed `qemu-system-*` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBinary {
    /// Absolute path.
    pub path: PathBuf,
    /// `(major, minor, micro)`.
    pub version: (u32, u32, u32),
    /// Built with seccomp: `-sandbox` is accepted.
    pub sandbox: bool,
}

/// Find an executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

impl QemuBinary {
    /// The default name of the x86-64 system emulator.
    pub const DEFAULT_NAME: &'static str = "qemu-system-x86_64";

    /// Locate `qemu-system-x86_64` on `PATH` and probe it.
    pub async fn detect() -> Result<Self, BinaryError> {
        let path = which(Self::DEFAULT_NAME).ok_or_else(|| BinaryError::NotFound(Self::DEFAULT_NAME.into()))?;
        Self::probe(&path).await
    }

    /// Probe a given binary.
    pub async fn probe(path: &Path) -> Result<Self, BinaryError> {
        let run = |arg: &'static str| {
            let path = path.to_owned();
            async move {
                tokio::process::Command::new(&path)
                    .arg(arg)
                    .output()
                    .await
                    .map_err(|source| BinaryError::Run { path, source })
            }
        };
        let version_out = run("-version").await?;
        let text = String::from_utf8_lossy(&version_out.stdout).into_owned();
        let version = parse_version(&text).ok_or(BinaryError::Version(text))?;
        let help = run("-help").await?;
        let sandbox = String::from_utf8_lossy(&help.stdout).lines().any(|l| l.starts_with("-sandbox"));
        Ok(QemuBinary { path: path.to_owned(), version, sandbox })
    }
}

/// Parse "QEMU emulator version 10.0.2 (Debian ...)".
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let v = rest.split_whitespace().next()?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().flatten().unwrap_or(0);
    let micro = it.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        assert_eq!(parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright"), Some((10, 0, 2)));
        assert_eq!(parse_version("QEMU emulator version 7.2"), Some((7, 2, 0)));
        assert_eq!(parse_version("nonsense"), None);
    }
}
