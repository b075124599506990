//! Backups: a volume's guest view cut into fixed-size objects in a store.
//!
//! As Cinder's chunked backup drivers do, a backup is a set of objects under
//! `<container>/<backup id>/`: `chunk-<n>` for every chunk holding data (all-zero
//! chunks are not stored) and `metadata.json` naming every chunk with its SHA-256 and
//! the backup that stores it. An incremental backup compares each chunk's hash with its
//! parent's and stores only the chunks that changed; the others point into the parent
//! (or further up the chain). `metadata.json` is written last: a backup without it is
//! unfinished (a crash) and is written again from scratch or removed.
//!
//! The store is a trait: a directory now ([`DirStore`]); the object storage service's
//! `volumebackups` container is another implementation of the same four calls.

use std::io::{SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stratus_volume_contract::{AgentError, BackupCreated, BackupSpec};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Where backup objects are kept.
#[async_trait]
pub trait BackupStore: Send + Sync + 'static {
    /// Puts an object (whole).
    async fn put(&self, container: &str, name: &str, data: Vec<u8>) -> Result<(), AgentError>;
    /// Gets an object (`NotFound` when absent).
    async fn get(&self, container: &str, name: &str) -> Result<Vec<u8>, AgentError>;
    /// Removes every object under `prefix` (idempotent).
    async fn delete_prefix(&self, container: &str, prefix: &str) -> Result<(), AgentError>;
    /// Where the store is, as a backup's `service` shows it.
    fn describe(&self) -> String;
}

/// A directory per container (Cinder's posix backup driver).
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// Containers under `root`.
    pub fn new(root: &Path) -> DirStore {
        DirStore { root: root.to_path_buf() }
    }

    fn path(&self, container: &str, name: &str) -> Result<PathBuf, AgentError> {
        for part in [container].into_iter().chain(name.split('/')) {
            if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
                return Err(AgentError::Incompatible(format!("{container}/{name} is not a valid object name")));
            }
        }
        Ok(self.root.join(container).join(name))
    }
}

#[async_trait]
impl BackupStore for DirStore {
    async fn put(&self, container: &str, name: &str, data: Vec<u8>) -> Result<(), AgentError> {
        let path = self.path(container, name)?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let part = path.with_extension("part");
            let mut f = std::fs::File::create(&part)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&part, &path)
        })
        .await
        .map_err(|e| AgentError::Failed(format!("backup write task: {e}")))?
        .map_err(|e| AgentError::Failed(format!("writing backup object {container}/{name}: {e}")))
    }

    async fn get(&self, container: &str, name: &str) -> Result<Vec<u8>, AgentError> {
        let path = self.path(container, name)?;
        match tokio::fs::read(&path).await {
            Ok(d) => Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(AgentError::NotFound(format!("backup object {container}/{name} does not exist")))
            }
            Err(e) => Err(AgentError::Failed(format!("reading backup object {container}/{name}: {e}"))),
        }
    }

    async fn delete_prefix(&self, container: &str, prefix: &str) -> Result<(), AgentError> {
        let path = self.path(container, prefix)?;
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::Failed(format!("removing backup {container}/{prefix}: {e}"))),
        }
    }

    fn describe(&self) -> String {
        format!("posix:{}", self.root.display())
    }
}

/// One chunk of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// SHA-256 of the chunk's bytes; `None` for a chunk of zeroes (not stored).
    pub sha256: Option<String>,
    /// The backup whose `chunk-<n>` holds the bytes.
    pub stored_in: Option<String>,
}

/// `metadata.json` of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The backup.
    pub backup_id: String,
    /// The volume backed up.
    pub volume_id: String,
    /// Bytes of the guest view backed up.
    pub size_bytes: u64,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// The backup this one is an increment of.
    pub parent_id: Option<String>,
    /// Chunk `n` covers bytes `n * chunk_size ..`.
    pub chunks: Vec<Chunk>,
}

fn chunk_name(backup_id: &str, n: usize) -> String {
    format!("{backup_id}/chunk-{n:08}")
}

fn manifest_name(backup_id: &str) -> String {
    format!("{backup_id}/metadata.json")
}

/// Reads a backup's manifest.
pub async fn manifest(store: &dyn BackupStore, spec: &BackupSpec) -> Result<Manifest, AgentError> {
    let raw = store.get(&spec.container, &manifest_name(&spec.id)).await.map_err(|e| match e {
        AgentError::NotFound(_) => AgentError::NotFound(format!("backup {} has no data in the store", spec.id)),
        e => e,
    })?;
    serde_json::from_slice(&raw)
        .map_err(|e| AgentError::Failed(format!("backup {} has a damaged manifest: {e}", spec.id)))
}

/// Writes the raw guest view in `raw` (a file of `size_bytes`) as backup `spec`
/// (an increment of `spec.parent` when set). `progress` is called with the share done.
pub async fn write(
    store: &dyn BackupStore,
    spec: &BackupSpec,
    raw: &Path,
    chunk_size: u64,
    progress: &(dyn Fn(u32) + Send + Sync),
) -> Result<BackupCreated, AgentError> {
    // An earlier, unfinished attempt (a crash) starts over.
    store.delete_prefix(&spec.container, &spec.id).await?;
    let parent = match &spec.parent {
        Some(p) => Some(manifest(store, p).await?),
        None => None,
    };
    let size_bytes =
        std::fs::metadata(raw).map_err(|e| AgentError::Failed(format!("reading {}: {e}", raw.display())))?.len();
    let chunk_size = parent.as_ref().map(|p| p.chunk_size).unwrap_or(chunk_size).max(4096);
    let count = size_bytes.div_ceil(chunk_size) as usize;
    let mut chunks = Vec::with_capacity(count);
    let mut file =
        tokio::fs::File::open(raw).await.map_err(|e| AgentError::Failed(format!("opening {}: {e}", raw.display())))?;
    let mut stored = 0u64;
    let mut objects = 0u64;
    let mut last_pct = 0;
    for n in 0..count {
        let len = (size_bytes - n as u64 * chunk_size).min(chunk_size) as usize;
        let mut data = vec![0u8; len];
        file.seek(SeekFrom::Start(n as u64 * chunk_size))
            .await
            .map_err(|e| AgentError::Failed(format!("reading the volume's data: {e}")))?;
        file.read_exact(&mut data).await.map_err(|e| AgentError::Failed(format!("reading the volume's data: {e}")))?;
        // Hashing 32 MiB is CPU work: off the async workers.
        let (data, sha) = tokio::task::spawn_blocking(move || {
            let sha = (!data.iter().all(|b| *b == 0)).then(|| hex::encode(Sha256::digest(&data)));
            (data, sha)
        })
        .await
        .map_err(|e| AgentError::Failed(format!("hashing a chunk: {e}")))?;
        let chunk = match sha {
            None => Chunk { sha256: None, stored_in: None },
            Some(sha) => {
                let inherited =
                    parent.as_ref().and_then(|p| p.chunks.get(n)).filter(|c| c.sha256.as_deref() == Some(&sha));
                match inherited {
                    Some(c) => c.clone(),
                    None => {
                        store.put(&spec.container, &chunk_name(&spec.id, n), data).await?;
                        stored += len as u64;
                        objects += 1;
                        Chunk { sha256: Some(sha), stored_in: Some(spec.id.clone()) }
                    }
                }
            }
        };
        chunks.push(chunk);
        let pct = ((n + 1) * 100 / count.max(1)) as u32;
        if pct / 10 > last_pct / 10 {
            progress(pct);
            last_pct = pct;
        }
    }
    let m = Manifest {
        version: 1,
        backup_id: spec.id.clone(),
        volume_id: spec.volume_id.clone(),
        size_bytes,
        chunk_size,
        parent_id: spec.parent.as_ref().map(|p| p.id.clone()),
        chunks,
    };
    let body = serde_json::to_vec_pretty(&m).map_err(|e| AgentError::Failed(format!("encoding the manifest: {e}")))?;
    store.put(&spec.container, &manifest_name(&spec.id), body).await?;
    Ok(BackupCreated { object_count: objects + 1, stored_bytes: stored, service: store.describe() })
}

/// Writes backup `spec`'s guest view into the new file `raw` (sparse where zero).
pub async fn read(store: &dyn BackupStore, spec: &BackupSpec, raw: &Path) -> Result<u64, AgentError> {
    let m = manifest(store, spec).await?;
    let fail = |e: std::io::Error| AgentError::Failed(format!("writing {}: {e}", raw.display()));
    let mut f = tokio::fs::File::create(raw).await.map_err(fail)?;
    f.set_len(m.size_bytes).await.map_err(fail)?;
    for (n, c) in m.chunks.iter().enumerate() {
        let (Some(sha), Some(from)) = (&c.sha256, &c.stored_in) else { continue };
        let data = store.get(&spec.container, &chunk_name(from, n)).await?;
        if hex::encode(Sha256::digest(&data)) != *sha {
            return Err(AgentError::Failed(format!("backup {} chunk {n} (in {from}) is corrupt", spec.id)));
        }
        f.seek(SeekFrom::Start(n as u64 * m.chunk_size)).await.map_err(fail)?;
        f.write_all(&data).await.map_err(fail)?;
    }
    f.sync_all().await.map_err(fail)?;
    Ok(m.size_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, parent: Option<BackupSpec>) -> BackupSpec {
        BackupSpec {
            id: id.into(),
            volume_id: "v".into(),
            container: "volumebackups".into(),
            size_gb: 1,
            parent: parent.map(Box::new),
        }
    }

    #[tokio::test]
    async fn incremental_stores_only_changed_chunks_and_restores_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(&dir.path().join("store"));
        let raw = dir.path().join("raw");
        let mut data = vec![0u8; 64 * 1024];
        data[5000] = 1;
        data[40000] = 2;
        std::fs::write(&raw, &data).unwrap();
        let full = write(&store, &spec("b1", None), &raw, 16 * 1024, &|_| {}).await.unwrap();
        assert_eq!(full.object_count, 3, "two data chunks + the manifest; zero chunks are not stored");

        data[40001] = 3;
        std::fs::write(&raw, &data).unwrap();
        let inc = write(&store, &spec("b2", Some(spec("b1", None))), &raw, 16 * 1024, &|_| {}).await.unwrap();
        assert_eq!(inc.object_count, 2, "only the changed chunk + the manifest");
        let m = manifest(&store, &spec("b2", None)).await.unwrap();
        assert_eq!(m.chunks[0].stored_in.as_deref(), Some("b1"));
        assert_eq!(m.chunks[2].stored_in.as_deref(), Some("b2"));

        let out = dir.path().join("out");
        read(&store, &spec("b2", None), &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        let out1 = dir.path().join("out1");
        read(&store, &spec("b1", None), &out1).await.unwrap();
        assert_eq!(std::fs::read(&out1).unwrap()[40001], 0);

        // A damaged chunk is refused, not restored.
        std::fs::write(dir.path().join("store/volumebackups/b2/chunk-00000002"), b"garbage").unwrap();
        assert!(read(&store, &spec("b2", None), &out).await.is_err());
        store.delete_prefix("volumebackups", "b2").await.unwrap();
        assert!(matches!(manifest(&store, &spec("b2", None)).await, Err(AgentError::NotFound(_))));
        assert!(store.get("volumebackups", "../x").await.is_err());
    }
}
