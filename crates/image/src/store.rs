//! Where image data lives: a [`Store`] trait and the filesystem store.
//!
//! Objects are addressed by image id only (validated as a UUID before it gets here), so
//! no client-supplied text ever becomes a host path. Writes go to `<id>.partial` and
//! become `<id>` only on [`Store::commit`], after the data was hashed and inspected; an
//! aborted or crashed upload leaves at most a `.partial` that [`Store::remove_partials`]
//! sweeps on start-up. A cloud has one or more stores ([`Stores`], Glance's
//! `enabled_backends`): an image's data may be in several of them (import to several
//! stores, `copy-image`), and the image row lists which. Writers are synchronous because they run on a blocking thread
//! beside the hashers, off the async runtime; a network store (the object service) can
//! implement them with `Handle::block_on`.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("image data not found in the store")]
    NotFound,
    /// Out of space.
    #[error("no space left in the image store")]
    Full,
    /// Any other I/O failure.
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound,
            ErrorKind::StorageFull => StoreError::Full,
            _ if e.raw_os_error() == Some(28) || e.raw_os_error() == Some(122) => StoreError::Full,
            _ => StoreError::Io(e),
        }
    }
}

/// A stream of image bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Receives an object's bytes on a blocking thread.
pub trait StoreWriter: Send {
    /// Appends `data`.
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    /// Flushes everything durably; the object is still partial until committed.
    fn finish(&mut self) -> Result<(), StoreError>;
}

/// A place to keep image data.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Store id as `/v2/info/stores` lists it (`file`).
    fn id(&self) -> &str;
    /// Starts writing the partial object `key`, replacing any previous partial.
    fn create(&self, key: &str) -> Result<Box<dyn StoreWriter>, StoreError>;
    /// Turns the partial object into the real one.
    async fn commit(&self, key: &str) -> Result<(), StoreError>;
    /// Removes the partial object, if any.
    async fn abort(&self, key: &str);
    /// Removes the object (and any partial); missing objects are not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Streams `len` bytes of the object from `offset`.
    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, StoreError>;
    /// A local file holding the partial object, for `qemu-img info`; `None` for remote stores.
    fn partial_path(&self, key: &str) -> Option<PathBuf>;
    /// Removes every partial object (start-up sweep); returns how many.
    async fn remove_partials(&self) -> Result<usize, StoreError>;
    /// Where the store keeps data, for the admin's store details (a directory, a URL).
    fn location(&self) -> String {
        String::new()
    }
}

/// Filesystem store under `<data_dir>/images/` (or any directory).
#[derive(Debug, Clone)]
pub struct FsStore {
    id: String,
    root: PathBuf,
}

/// Read buffer for downloads: large enough for throughput, small enough for RSS.
const READ_CHUNK: usize = 256 * 1024;

impl FsStore {
    /// The store `file` rooted at `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<FsStore> {
        Self::with_id("file", root)
    }

    /// A store named `id` rooted at `root`, created if missing.
    pub fn with_id(id: &str, root: impl Into<PathBuf>) -> std::io::Result<FsStore> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FsStore { id: id.to_string(), root })
    }

    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(valid_key(key), "store keys are image ids");
        self.root.join(key)
    }

    fn partial(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.partial"))
    }

    /// Path of the committed object (the file store's own business; tests use it).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.path(key)
    }

    /// Root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Keys are image ids: hex and dashes only, so they can never escape the root.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

struct FsWriter {
    file: Option<File>,
}

impl StoreWriter for FsWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match self.file.as_mut() {
            Some(f) => Ok(f.write_all(data)?),
            None => Err(StoreError::Io(std::io::Error::other("writer already finished"))),
        }
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FsStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn create(&self, key: &str) -> Result<Box<dyn StoreWriter>, StoreError> {
        if !valid_key(key) {
            return Err(StoreError::Io(std::io::Error::other("invalid store key")));
        }
        let file = File::create(self.partial(key))?;
        Ok(Box::new(FsWriter { file: Some(file) }))
    }

    async fn commit(&self, key: &str) -> Result<(), StoreError> {
        tokio::fs::rename(self.partial(key), self.path(key)).await?;
        Ok(())
    }

    async fn abort(&self, key: &str) {
        let _ = tokio::fs::remove_file(self.partial(key)).await;
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.abort(key).await;
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, StoreError> {
        let mut f = tokio::fs::File::open(self.path(key)).await?;
        if offset > 0 {
            f.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        Ok(ReaderStream::with_capacity(f.take(len), READ_CHUNK).boxed())
    }

    fn partial_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.partial(key))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn remove_partials(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut dir = tokio::fs::read_dir(&self.root).await?;
        while let Some(e) = dir.next_entry().await? {
            if e.file_name().to_string_lossy().ends_with(".partial") {
                let _ = tokio::fs::remove_file(e.path()).await;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The stores of a cloud, the default one first.
#[derive(Clone)]
pub struct Stores {
    list: Vec<std::sync::Arc<dyn Store>>,
}

impl Stores {
    /// `list` must not be empty; its first store is the default.
    pub fn new(list: Vec<std::sync::Arc<dyn Store>>) -> Stores {
        assert!(!list.is_empty(), "a cloud has at least one image store");
        Stores { list }
    }

    /// The default store (uploads and imports that name none).
    pub fn default_store(&self) -> &std::sync::Arc<dyn Store> {
        &self.list[0]
    }

    /// Every store, the default first.
    pub fn all(&self) -> &[std::sync::Arc<dyn Store>] {
        &self.list
    }

    /// The store named `id`.
    pub fn get(&self, id: &str) -> Option<&std::sync::Arc<dyn Store>> {
        self.list.iter().find(|s| s.id() == id)
    }

    /// The ids of every store, in configuration order.
    pub fn ids(&self) -> Vec<String> {
        self.list.iter().map(|s| s.id().to_string()).collect()
    }

    /// `listed` (an image's comma-separated `stores`) in configuration order, unknown ids dropped.
    pub fn ordered(&self, listed: &str) -> Vec<String> {
        let have: Vec<&str> = listed.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        self.list.iter().map(|s| s.id().to_string()).filter(|id| have.contains(&id.as_str())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partial_commit_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path().join("images")).unwrap();
        let key = "0b5c2f7e-1111-4222-8333-444455556666";
        let mut w = s.create(key).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        w.finish().unwrap();
        assert!(s.partial_path(key).unwrap().exists());
        assert!(matches!(s.read(key, 0, 5).await, Err(StoreError::NotFound)), "partial data is not readable");
        s.commit(key).await.unwrap();
        let read = |off, len| {
            let s = s.clone();
            async move {
                let mut out = Vec::new();
                let mut st = s.read(key, off, len).await.unwrap();
                while let Some(c) = st.next().await {
                    out.extend_from_slice(&c.unwrap());
                }
                out
            }
        };
        assert_eq!(read(0, u64::MAX).await, b"hello world");
        assert_eq!(read(6, 3).await, b"wor");
        // A crashed upload leaves a partial; the start-up sweep removes it.
        let mut w2 = s.create("aaaa").unwrap();
        w2.write(b"x").unwrap();
        drop(w2);
        assert_eq!(s.remove_partials().await.unwrap(), 1);
        s.delete(key).await.unwrap();
        s.delete(key).await.unwrap();
        assert!(!s.object_path(key).exists());
        assert!(!valid_key("../etc/passwd") && !valid_key("a/b") && valid_key(key));
    }
}
