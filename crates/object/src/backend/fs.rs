//! The filesystem backend: blobs as files under `<root>/data/<first two hex digits>/<key>`.
//!
//! A write goes to `<root>/tmp/<key>`; commit fsyncs the file, renames it into place and
//! fsyncs the directory, so after commit the bytes survive a crash and before it nothing
//! is visible under the key. Start-up removes everything left in `tmp/` (no write of this
//! process can be in flight yet). Files are written on the blocking pool in batches of
//! up to 1 MiB (the ingest pipeline batches), so the async runtime never waits on disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{valid_key, Backend, BackendError, BlobWriter, ByteStream};

/// Read buffer of downloads.
const READ_CHUNK: usize = 256 * 1024;

/// Blobs as files.
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    /// A backend rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<FsBackend> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join("data"))?;
        Ok(FsBackend { root })
    }

    /// Path of a committed blob (tests look at it).
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join("data").join(&key[..2]).join(key)
    }

    fn tmp(&self, key: &str) -> PathBuf {
        self.root.join("tmp").join(key)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn check(key: &str) -> Result<(), BackendError> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(BackendError::Other(format!("invalid blob key {key:?}")))
    }
}

struct FsWriter {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BackendError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(BackendError::from),
        Err(e) => Err(BackendError::Other(format!("blocking task failed: {e}"))),
    }
}

#[async_trait::async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), BackendError> {
        let mut f = self.file.take().ok_or_else(|| BackendError::Other("writer already finished".into()))?;
        let f = blocking(move || f.write_all(&data).map(|_| f)).await?;
        self.file = Some(f);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        let f = self.file.take().ok_or_else(|| BackendError::Other("writer already finished".into()))?;
        let (tmp, dest) = (self.tmp.clone(), self.dest.clone());
        let r = blocking(move || {
            f.sync_all()?;
            let dir = dest.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&tmp, &dest)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await;
        if r.is_err() {
            let _ = tokio::fs::remove_file(&self.tmp).await;
        }
        r
    }

    async fn abort(mut self: Box<Self>) {
        self.file = None;
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

#[async_trait::async_trait]
impl Backend for FsBackend {
    fn name(&self) -> &'static str {
        "fs"
    }

    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BackendError> {
        check(key)?;
        let tmp = self.tmp(key);
        let t2 = tmp.clone();
        let file = blocking(move || std::fs::File::create(t2)).await?;
        Ok(Box::new(FsWriter { file: Some(file), tmp, dest: self.path(key) }))
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, BackendError> {
        check(key)?;
        let mut f = tokio::fs::File::open(self.path(key)).await?;
        if offset > 0 {
            f.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        Ok(ReaderStream::with_capacity(f.take(len), READ_CHUNK).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        check(key)?;
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_before(&self, before: SystemTime) -> Result<Vec<String>, BackendError> {
        let data = self.root.join("data");
        blocking(move || {
            let mut out = Vec::new();
            for d in std::fs::read_dir(&data)? {
                let d = d?;
                if !d.file_type()?.is_dir() {
                    continue;
                }
                for f in std::fs::read_dir(d.path())? {
                    let f = f?;
                    let name = f.file_name().to_string_lossy().into_owned();
                    if !valid_key(&name) {
                        continue;
                    }
                    if f.metadata()?.modified()? < before {
                        out.push(name);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn remove_partials(&self) -> Result<usize, BackendError> {
        let tmp = self.root.join("tmp");
        blocking(move || {
            let mut n = 0;
            for e in std::fs::read_dir(&tmp)? {
                let e = e?;
                if std::fs::remove_file(e.path()).is_ok() {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_commit_read_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path()).unwrap();
        let key = super::super::new_key();
        let mut w = b.create(&key).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(matches!(b.read(&key, 0, 5).await, Err(BackendError::NotFound)), "not visible before commit");
        w.commit().await.unwrap();
        let mut out = Vec::new();
        let mut s = b.read(&key, 6, 3).await.unwrap();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        assert_eq!(out, b"wor");
        // An interrupted write leaves a temporary file: removed by the start-up clean-up.
        let k2 = super::super::new_key();
        let mut w2 = b.create(&k2).await.unwrap();
        w2.write(Bytes::from_static(b"x")).await.unwrap();
        drop(w2);
        assert_eq!(b.remove_partials().await.unwrap(), 1);
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(b.list_before(later).await.unwrap(), vec![key.clone()]);
        assert!(b.list_before(SystemTime::UNIX_EPOCH).await.unwrap().is_empty());
        b.delete(&key).await.unwrap();
        b.delete(&key).await.unwrap();
        assert!(b.create("../etc").await.is_err());
    }
}
