//! `qemu-img` wrappers: overlays, info, convert, resize.
//!
//! Why a subprocess and not a library: `qemu-img` is the reference
//! implementation of every format QEMU reads, ships with QEMU, and its JSON
//! output is stable. Formats are always passed explicitly (`-f`, `-F`):
//! letting QEMU probe a guest-writable image is a known way to let a guest
//! turn a raw disk into a qcow2 header that points at host files.
//!
//! [`ImageInfo::check_safe_upload`] rejects images with a backing file or an
//! external data file, which an uploaded image must never have (the
//! CVE-2022-47951 class Nova and Glance guard against).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::process::Command;

use crate::cmdline::DiskFormat;

/// Errors from `qemu-img`.
#[derive(Debug, thiserror::Error)]
pub enum ImgError {
    /// Spawning failed (most often: not installed).
    #[error("running {binary}: {source} (install qemu-utils with scripts/install-host-packages.sh)")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img` exited non-zero.
    #[error("qemu-img {args} failed ({status}): {stderr}")]
    Failed {
        /// Arguments, for the log.
        args: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Its stderr.
        stderr: String,
    },
    /// `info --output=json` could not be parsed.
    #[error("parsing qemu-img info output: {0}")]
    Json(#[from] serde_json::Error),
    /// The image is not acceptable (backing file, data file, unexpected format).
    #[error("unsafe image {path}: {reason}")]
    Unsafe {
        /// The image.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

type Result<T, E = ImgError> = std::result::Result<T, E>;

/// Parsed `qemu-img info --output=json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// Path as given.
    pub filename: String,
    /// Format, e.g. `qcow2`, `raw`.
    pub format: String,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Bytes used on the host.
    pub actual_size: Option<u64>,
    /// qcow2 cluster size.
    pub cluster_size: Option<u64>,
    /// Backing file as recorded in the image.
    pub backing_filename: Option<String>,
    /// Backing file resolved to an absolute path.
    pub full_backing_filename: Option<String>,
    /// Recorded format of the backing file.
    pub backing_filename_format: Option<String>,
    /// The image was not closed cleanly.
    pub dirty_flag: Option<bool>,
    /// Format-specific details (qcow2: `data-file`, `compat`, ...).
    pub format_specific: Option<FormatSpecific>,
}

/// `format-specific` of `qemu-img info`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FormatSpecific {
    /// e.g. `qcow2`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The per-format object.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl ImageInfo {
    /// An external data file (qcow2 `data-file`), if any.
    pub fn data_file(&self) -> Option<&str> {
        self.format_specific.as_ref().and_then(|f| f.data.get("data-file")).and_then(|v| v.as_str())
    }

    /// Refuse images that reference other host files or are not of the expected format.
    pub fn check_safe_upload(&self, expected_format: Option<&str>) -> Result<()> {
        let unsafe_ = |reason: String| ImgError::Unsafe { path: PathBuf::from(&self.filename), reason };
        if let Some(b) = &self.backing_filename {
            return Err(unsafe_(format!("has a backing file {b:?}")));
        }
        if let Some(d) = self.data_file() {
            return Err(unsafe_(format!("has an external data file {d:?}")));
        }
        if let Some(f) = expected_format {
            if f != self.format {
                return Err(unsafe_(format!("is {} but {} was declared", self.format, f)));
            }
        }
        Ok(())
    }
}

/// The `qemu-img` tool.
#[derive(Debug, Clone)]
pub struct QemuImg {
    binary: PathBuf,
}

impl Default for QemuImg {
    fn default() -> Self {
        QemuImg { binary: PathBuf::from("qemu-img") }
    }
}

impl QemuImg {
    /// Use a specific binary.
    pub fn with_binary(binary: impl Into<PathBuf>) -> Self {
        QemuImg { binary: binary.into() }
    }

    async fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = Command::new(&self.binary)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| ImgError::Spawn { binary: self.binary.clone(), source })?;
        if !out.status.success() {
            return Err(ImgError::Failed {
                args: args.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// Create an empty image of `size` bytes.
    pub async fn create(&self, path: &Path, format: DiskFormat, size: u64) -> Result<()> {
        let fmt = format.to_string();
        let p = path.to_string_lossy();
        let size = size.to_string();
        self.run(&["create", "-q", "-f", &fmt, &p, &size]).await.map(drop)
    }

    /// Create a qcow2 overlay on top of `backing` (Nova's image cache layout).
    /// `size` grows the overlay beyond the backing image (flavor root disk).
    pub async fn create_overlay(
        &self,
        backing: &Path,
        backing_format: DiskFormat,
        path: &Path,
        size: Option<u64>,
    ) -> Result<()> {
        let b = backing.to_string_lossy();
        let bf = backing_format.to_string();
        let p = path.to_string_lossy();
        let mut args = vec!["create", "-q", "-f", "qcow2", "-b", &b, "-F", &bf, &p];
        let s;
        if let Some(size) = size {
            s = size.to_string();
            args.push(&s);
        }
        self.run(&args).await.map(drop)
    }

    /// `qemu-img info --output=json`. `-U` (force share) makes it work on
    /// images a running QEMU holds locked.
    pub async fn info(&self, path: &Path, format: Option<DiskFormat>) -> Result<ImageInfo> {
        let p = path.to_string_lossy();
        let f = format.map(|f| f.to_string());
        let mut args = vec!["info", "--output=json", "-U"];
        if let Some(f) = &f {
            args.extend(["-f", f.as_str()]);
        }
        args.push(&p);
        let out = self.run(&args).await?;
        Ok(serde_json::from_slice(&out)?)
    }

    /// Convert between formats (e.g. snapshot an overlay into a standalone image).
    pub async fn convert(
        &self,
        src: &Path,
        src_format: DiskFormat,
        dst: &Path,
        dst_format: DiskFormat,
        compress: bool,
    ) -> Result<()> {
        let (sf, df) = (src_format.to_string(), dst_format.to_string());
        let (s, d) = (src.to_string_lossy(), dst.to_string_lossy());
        let mut args = vec!["convert", "-q", "-f", &sf, "-O", &df];
        if compress {
            args.push("-c");
        }
        args.extend([&*s, &*d]);
        self.run(&args).await.map(drop)
    }

    /// Convert an image a running (paused) QEMU holds open: `-U` skips the
    /// image lock. Only consistent while the guest's vCPUs are stopped (QEMU
    /// flushes its caches on `stop`) or QEMU is not running.
    pub async fn convert_shared(
        &self,
        src: &Path,
        src_format: DiskFormat,
        dst: &Path,
        dst_format: DiskFormat,
    ) -> Result<()> {
        let (sf, df) = (src_format.to_string(), dst_format.to_string());
        let (s, d) = (src.to_string_lossy(), dst.to_string_lossy());
        self.run(&["convert", "-q", "-U", "-f", &sf, "-O", &df, &s, &d]).await.map(drop)
    }

    /// Write the guest view of `src` into `target` (an existing image or an `nbd://`
    /// export known to read as zeroes), which takes raw bytes: a flattened copy
    /// across machines.
    pub async fn copy_into(&self, src: &Path, src_format: DiskFormat, target: &str) -> Result<()> {
        let sf = src_format.to_string();
        let s = src.to_string_lossy();
        self.run(&["convert", "-q", "-n", "--target-is-zero", "-f", &sf, "-O", "raw", &s, target]).await.map(drop)
    }

    /// `qemu-img compare`: fails unless `src` and `target` (raw bytes, e.g. an
    /// `nbd://` export) show the guest the same contents.
    pub async fn compare(&self, src: &Path, src_format: DiskFormat, target: &str) -> Result<()> {
        let sf = src_format.to_string();
        let s = src.to_string_lossy();
        self.run(&["compare", "-q", "-f", &sf, "-F", "raw", &s, target]).await.map(drop)
    }

    /// Grow (or with `shrink`, shrink) an image to `size` bytes.
    pub async fn resize(&self, path: &Path, format: DiskFormat, size: u64, shrink: bool) -> Result<()> {
        let f = format.to_string();
        let p = path.to_string_lossy();
        let s = size.to_string();
        let mut args = vec!["resize", "-q", "-f", &f];
        if shrink {
            args.push("--shrink");
        }
        args.extend([&*p, &*s]);
        self.run(&args).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overlay_info_and_flags_backing_and_data_file() {
        let j = r#"{
            "children": [],
            "virtual-size": 23068672,
            "filename": "/i/disk",
            "cluster-size": 65536,
            "format": "qcow2",
            "actual-size": 200704,
            "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "compression-type": "zlib",
                "lazy-refcounts": false, "refcount-bits": 16, "corrupt": false, "extended-l2": false,
                "data-file": "/etc/shadow"}},
            "full-backing-filename": "/cache/base.qcow2",
            "backing-filename": "/cache/base.qcow2",
            "backing-filename-format": "qcow2",
            "dirty-flag": false
        }"#;
        let i: ImageInfo = serde_json::from_str(j).unwrap();
        assert_eq!(i.virtual_size, 23068672);
        assert_eq!(i.backing_filename.as_deref(), Some("/cache/base.qcow2"));
        assert_eq!(i.backing_filename_format.as_deref(), Some("qcow2"));
        assert_eq!(i.data_file(), Some("/etc/shadow"));
        let e = i.check_safe_upload(None).unwrap_err().to_string();
        assert!(e.contains("backing file"), "{e}");

        let raw: ImageInfo = serde_json::from_str(
            r#"{"virtual-size": 1048576, "filename": "x.img", "format": "raw", "actual-size": 4096, "dirty-flag": false}"#,
        )
        .unwrap();
        raw.check_safe_upload(Some("raw")).unwrap();
        assert!(raw.check_safe_upload(Some("qcow2")).is_err());
    }
}
