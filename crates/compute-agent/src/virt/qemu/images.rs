//! Where guest disks come from: the image service behind [`ImageSource`], and the
//! per-host base image cache (`<instances>/_base/<image-id>`).
//!
//! Why a trait: the agent never touches the database and, in the all-in-one process,
//! reaches the image service in-process ([`InternalImageSource`]); a standalone agent
//! will use the same REST calls over HTTP. Why a cache of bases: every server of an
//! image shares one read-only base and gets its own qcow2 overlay, as Nova's image
//! cache does, so a second boot of an image downloads nothing.
//!
//! A base is trusted only after three checks: the bytes match the image's
//! `os_hash_value` (or `checksum`), `qemu-img info` with the *declared* format agrees
//! with that format, and the image has no backing file or external data file (a qcow2
//! pointing at `/etc/shadow` would otherwise hand host files to the guest). Downloads
//! go to `<id>.part` and are renamed only when all checks passed, so a crash never
//! leaves a half-written base that looks complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use stratus_qemu::cmdline::DiskFormat;
use stratus_qemu::img::QemuImg;
use tokio::io::AsyncWriteExt;

use crate::virt::VirtError;

/// Image data as a stream of chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes, String>>;

/// What the driver needs to know about an image before trusting its bytes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ImageMeta {
    /// Image id.
    pub id: String,
    /// `active`, `queued`, ...
    #[serde(default)]
    pub status: String,
    /// `qcow2`, `raw`, `aki`, ...
    pub disk_format: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// MD5 hex digest (legacy Glance checksum).
    pub checksum: Option<String>,
    /// `sha512` (Glance's default multihash), `sha256`, ...
    pub os_hash_algo: Option<String>,
    /// Hex digest of `os_hash_algo`.
    pub os_hash_value: Option<String>,
}

/// The image service as the driver sees it.
#[async_trait]
pub trait ImageSource: Send + Sync + 'static {
    /// The image record.
    async fn metadata(&self, id: &str) -> Result<ImageMeta, VirtError>;
    /// Streams the image's data.
    async fn download(&self, id: &str) -> Result<ByteStream, VirtError>;
    /// Uploads `path` as the data of the (queued) image `id`.
    async fn upload(&self, id: &str, path: &Path) -> Result<(), VirtError>;
}

/// The image service reached through the in-process router (`stratus up`).
#[derive(Clone)]
pub struct InternalImageSource {
    client: stratus_core::internal::InternalClient,
}

impl InternalImageSource {
    /// Over `client` (the platform's `internal`).
    pub fn new(client: stratus_core::internal::InternalClient) -> Self {
        InternalImageSource { client }
    }

    async fn send(
        &self,
        req: http::Request<axum::body::Body>,
        what: &str,
    ) -> Result<axum::response::Response, VirtError> {
        let ctx = stratus_core::RequestContext::internal_admin();
        let resp = self
            .client
            .call_streaming(&ctx, req)
            .await
            .map_err(|e| VirtError::Failed(format!("{what}: {}", e.message)))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 64 * 1024).await.unwrap_or_default();
            return Err(VirtError::Failed(format!(
                "{what}: image service answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(resp)
    }
}

fn request(
    method: http::Method,
    uri: String,
    body: axum::body::Body,
) -> Result<http::Request<axum::body::Body>, VirtError> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .map_err(|e| VirtError::Failed(format!("building an image request: {e}")))
}

#[async_trait]
impl ImageSource for InternalImageSource {
    async fn metadata(&self, id: &str) -> Result<ImageMeta, VirtError> {
        let req = request(http::Method::GET, format!("/image/v2/images/{id}"), axum::body::Body::empty())?;
        let resp = self.send(req, &format!("reading image {id}")).await?;
        let body = axum::body::to_bytes(resp.into_body(), 1024 * 1024)
            .await
            .map_err(|e| VirtError::Failed(format!("reading image {id}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| VirtError::Failed(format!("image {id}: unexpected record: {e}")))
    }

    async fn download(&self, id: &str) -> Result<ByteStream, VirtError> {
        let req = request(http::Method::GET, format!("/image/v2/images/{id}/file"), axum::body::Body::empty())?;
        let resp = self.send(req, &format!("downloading image {id}")).await?;
        Ok(resp.into_body().into_data_stream().map(|r| r.map_err(|e| e.to_string())).boxed())
    }

    async fn upload(&self, id: &str, path: &Path) -> Result<(), VirtError> {
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| VirtError::Failed(format!("opening {}: {e}", path.display())))?;
        let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
        let req = request(http::Method::PUT, format!("/image/v2/images/{id}/file"), body)?;
        self.send(req, &format!("uploading image {id}")).await.map(drop)
    }
}

/// A verified image in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseImage {
    /// `_base/<image-id>`.
    pub path: PathBuf,
    /// Format of the file as cached.
    pub format: String,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
}

impl BaseImage {
    /// The cached format as QEMU's enum.
    pub fn disk_format(&self) -> DiskFormat {
        if self.format == "raw" {
            DiskFormat::Raw
        } else {
            DiskFormat::Qcow2
        }
    }
}

/// What an image is used for: kernels and ramdisks are loaded by QEMU itself and are
/// not disk images, so they are not inspected by `qemu-img`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageUse {
    /// A disk (qcow2 or raw).
    Disk,
    /// A kernel or initrd for direct kernel boot.
    Blob,
}

/// The per-host cache of base images.
pub struct ImageCache {
    dir: PathBuf,
    source: Arc<dyn ImageSource>,
    img: QemuImg,
    /// `raw`: convert qcow2 bases to raw (Nova's `force_raw_images`); `qcow2`: keep.
    force_raw: bool,
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn failed(what: impl std::fmt::Display) -> VirtError {
    VirtError::Failed(what.to_string())
}

enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The digest to verify a download against: the multihash when its algorithm is
/// known, else the MD5 checksum, else nothing (logged).
fn expected_digest(meta: &ImageMeta) -> Option<(Hasher, String, &'static str)> {
    match (meta.os_hash_algo.as_deref(), meta.os_hash_value.as_deref()) {
        (Some("sha512"), Some(v)) => return Some((Hasher::Sha512(Sha512::new()), v.to_ascii_lowercase(), "sha512")),
        (Some("sha256"), Some(v)) => return Some((Hasher::Sha256(Sha256::new()), v.to_ascii_lowercase(), "sha256")),
        _ => {}
    }
    meta.checksum.as_deref().map(|c| (Hasher::Md5(Md5::new()), c.to_ascii_lowercase(), "md5"))
}

impl ImageCache {
    /// A cache in `dir` (created on first use).
    pub fn new(dir: PathBuf, source: Arc<dyn ImageSource>, img: QemuImg, force_raw: bool) -> Self {
        ImageCache { dir, source, img, force_raw, locks: Default::default() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image service.
    pub fn source(&self) -> &Arc<dyn ImageSource> {
        &self.source
    }

    /// Runs `f` holding the lock [`ImageCache::fetch`] takes for image `id`.
    pub async fn with_lock<T>(&self, id: &str, f: impl FnOnce() -> T) -> T {
        let lock = self.locks.lock().entry(id.to_string()).or_default().clone();
        let _g = lock.lock().await;
        f()
    }

    /// Removes partial downloads a crash left behind.
    pub async fn clean_partials(&self) {
        let Ok(mut rd) = tokio::fs::read_dir(&self.dir).await else { return };
        while let Ok(Some(e)) = rd.next_entry().await {
            if e.file_name().to_string_lossy().ends_with(".part") {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }

    /// The verified base of image `id`, downloading it once per host.
    pub async fn fetch(&self, id: &str, usage: ImageUse) -> Result<BaseImage, VirtError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(failed(format!("invalid image id {id:?}")));
        }
        let lock = self.locks.lock().entry(id.to_string()).or_default().clone();
        let _g = lock.lock().await;
        let path = self.dir.join(id);
        let info_path = self.dir.join(format!("{id}.json"));
        if let Ok(raw) = tokio::fs::read(&info_path).await {
            if let Ok(b) = serde_json::from_slice::<BaseImage>(&raw) {
                if path.exists() {
                    // Its age (see `aging`) restarts with every use.
                    super::aging::touch(&path, std::time::SystemTime::now());
                    share_read_only(&path)?;
                    return Ok(b);
                }
            }
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| failed(format!("creating {}: {e}", self.dir.display())))?;
        let meta = self.source.metadata(id).await?;
        if meta.status != "active" {
            return Err(failed(format!("image {id} is {}, not active", meta.status)));
        }
        let started = std::time::Instant::now();
        let part = self.dir.join(format!("{id}.part"));
        let result = self.download_verified(&meta, &part, usage).await;
        let base = match result {
            Ok(b) => b,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                let _ = tokio::fs::remove_file(self.dir.join(format!("{id}.raw.part"))).await;
                return Err(e);
            }
        };
        let base = BaseImage { path: path.clone(), ..base };
        share_read_only(&path)?;
        let json = serde_json::to_vec(&base).unwrap_or_default();
        tokio::fs::write(&info_path, json)
            .await
            .map_err(|e| failed(format!("writing {}: {e}", info_path.display())))?;
        tracing::info!(image = id, format = %base.format, ms = started.elapsed().as_millis() as u64, "image cached");
        Ok(base)
    }

    async fn download_verified(&self, meta: &ImageMeta, part: &Path, usage: ImageUse) -> Result<BaseImage, VirtError> {
        let id = &meta.id;
        let mut stream = self.source.download(id).await?;
        let mut f =
            tokio::fs::File::create(part).await.map_err(|e| failed(format!("creating {}: {e}", part.display())))?;
        let mut digest = expected_digest(meta);
        let mut n: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| failed(format!("downloading image {id}: {e}")))?;
            if let Some((h, _, _)) = &mut digest {
                h.update(&chunk);
            }
            n += chunk.len() as u64;
            f.write_all(&chunk).await.map_err(|e| failed(format!("writing {}: {e}", part.display())))?;
        }
        f.sync_all().await.map_err(|e| failed(format!("syncing {}: {e}", part.display())))?;
        drop(f);
        if let Some(size) = meta.size {
            if size != n {
                return Err(failed(format!("image {id}: got {n} bytes, the image service says {size}")));
            }
        }
        match digest {
            Some((h, want, algo)) => {
                let got = h.hex();
                if got != want {
                    return Err(failed(format!("image {id}: {algo} mismatch (got {got}, expected {want})")));
                }
            }
            None => tracing::warn!(image = %id, "image has no checksum; cached without verification"),
        }
        let declared = meta.disk_format.as_deref().unwrap_or("raw");
        let final_path = self.dir.join(id);
        if usage == ImageUse::Blob {
            tokio::fs::rename(part, &final_path)
                .await
                .map_err(|e| failed(format!("renaming {}: {e}", part.display())))?;
            return Ok(BaseImage { path: final_path, format: "raw".into(), virtual_size: n });
        }
        let fmt = match declared {
            "qcow2" => DiskFormat::Qcow2,
            "raw" | "iso" => DiskFormat::Raw,
            other => {
                return Err(failed(format!(
                    "image {id}: disk_format {other} is not supported by the qemu driver (qcow2 or raw)"
                )))
            }
        };
        let info = self.img.info(part, Some(fmt)).await.map_err(failed)?;
        info.check_safe_upload(Some(&fmt.to_string())).map_err(failed)?;
        if self.force_raw && fmt == DiskFormat::Qcow2 {
            let raw = self.dir.join(format!("{id}.raw.part"));
            self.img.convert(part, DiskFormat::Qcow2, &raw, DiskFormat::Raw, false).await.map_err(failed)?;
            let _ = tokio::fs::remove_file(part).await;
            tokio::fs::rename(&raw, &final_path)
                .await
                .map_err(|e| failed(format!("renaming {}: {e}", raw.display())))?;
            return Ok(BaseImage { path: final_path, format: "raw".into(), virtual_size: info.virtual_size });
        }
        tokio::fs::rename(part, &final_path).await.map_err(|e| failed(format!("renaming {}: {e}", part.display())))?;
        Ok(BaseImage { path: final_path, format: fmt.to_string(), virtual_size: info.virtual_size })
    }
}

/// Bases are shared by every guest of the image, which run as different users:
/// readable by all, writable by none of them (see `stratus_qemu::guest_user`).
fn share_read_only(path: &Path) -> Result<(), VirtError> {
    stratus_qemu::guest_user::share_read_only(path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_prefers_multihash_then_md5() {
        let m = ImageMeta {
            checksum: Some("ABC".into()),
            os_hash_algo: Some("sha512".into()),
            os_hash_value: Some("DEF".into()),
            ..Default::default()
        };
        let (_, v, algo) = expected_digest(&m).unwrap();
        assert_eq!((v.as_str(), algo), ("def", "sha512"));
        let m = ImageMeta { checksum: Some("ABC".into()), os_hash_algo: Some("blake3".into()), ..Default::default() };
        let (h, v, algo) = expected_digest(&m).unwrap();
        assert_eq!((v.as_str(), algo), ("abc", "md5"));
        let mut h = h;
        h.update(b"");
        assert_eq!(h.hex(), "d41d8cd98f00b204e9800998ecf8427e");
        assert!(expected_digest(&ImageMeta::default()).is_none());
    }
}

#[cfg(test)]
mod cache_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Serves images from files, counting downloads.
    struct Files {
        images: HashMap<String, (PathBuf, ImageMeta)>,
        downloads: AtomicUsize,
    }

    #[async_trait]
    impl ImageSource for Files {
        async fn metadata(&self, id: &str) -> Result<ImageMeta, VirtError> {
            self.images.get(id).map(|(_, m)| m.clone()).ok_or_else(|| VirtError::NotFound(id.into()))
        }
        async fn download(&self, id: &str) -> Result<ByteStream, VirtError> {
            self.downloads.fetch_add(1, Ordering::SeqCst);
            let data = std::fs::read(&self.images[id].0).unwrap();
            Ok(futures::stream::iter(vec![Ok(Bytes::from(data))]).boxed())
        }
        async fn upload(&self, _id: &str, _path: &Path) -> Result<(), VirtError> {
            Ok(())
        }
    }

    fn md5_hex(path: &Path) -> String {
        let mut h = Hasher::Md5(Md5::new());
        h.update(&std::fs::read(path).unwrap());
        h.hex()
    }

    fn meta(id: &str, path: &Path, fmt: &str, checksum: Option<String>) -> ImageMeta {
        ImageMeta {
            id: id.into(),
            status: "active".into(),
            disk_format: Some(fmt.into()),
            size: Some(std::fs::metadata(path).unwrap().len()),
            checksum,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn bases_are_fetched_once_verified_and_inspected() {
        let tmp = tempfile::tempdir().unwrap();
        let img = QemuImg::default();
        let good = tmp.path().join("good.qcow2");
        img.create(&good, DiskFormat::Qcow2, 1 << 20).await.expect("qemu-img (scripts/install-host-packages.sh)");
        let tricky = tmp.path().join("tricky.qcow2");
        img.create_overlay(&good, DiskFormat::Qcow2, &tricky, None).await.unwrap();
        let mut images = HashMap::new();
        let ok = md5_hex(&good);
        images.insert("good".to_string(), (good.clone(), meta("good", &good, "qcow2", Some(ok))));
        images.insert("corrupt".to_string(), (good.clone(), meta("corrupt", &good, "qcow2", Some("00".repeat(16)))));
        let tricky_sum = md5_hex(&tricky);
        images.insert("tricky".to_string(), (tricky.clone(), meta("tricky", &tricky, "qcow2", Some(tricky_sum))));
        let src = Arc::new(Files { images, downloads: AtomicUsize::new(0) });
        let cache = ImageCache::new(tmp.path().join("_base"), src.clone(), img.clone(), false);

        let b = cache.fetch("good", ImageUse::Disk).await.unwrap();
        assert_eq!((b.format.as_str(), b.virtual_size), ("qcow2", 1 << 20));
        assert!(b.path.ends_with("_base/good"));
        cache.fetch("good", ImageUse::Disk).await.unwrap();
        assert_eq!(src.downloads.load(Ordering::SeqCst), 1, "a cached base is not downloaded again");

        let e = cache.fetch("corrupt", ImageUse::Disk).await.unwrap_err().to_string();
        assert!(e.contains("md5 mismatch"), "{e}");
        assert!(!tmp.path().join("_base/corrupt").exists() && !tmp.path().join("_base/corrupt.part").exists());

        let e = cache.fetch("tricky", ImageUse::Disk).await.unwrap_err().to_string();
        assert!(e.contains("backing file"), "{e}");
        assert!(!tmp.path().join("_base/tricky").exists());

        assert!(cache.fetch("../etc", ImageUse::Disk).await.is_err(), "ids never become paths outside the cache");

        let raw_cache = ImageCache::new(tmp.path().join("_raw"), src.clone(), img, true);
        let b = raw_cache.fetch("good", ImageUse::Disk).await.unwrap();
        assert_eq!(b.format, "raw", "image_cache_format = raw converts qcow2 bases");
        assert_eq!(std::fs::metadata(&b.path).unwrap().len(), 1 << 20);
    }
}
