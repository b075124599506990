//! Where object bytes live: the [`Backend`] trait and its two engines, [`fs::FsBackend`]
//! (files under `<data_dir>/objects/`, the all-in-one default) and [`s3::S3Backend`] (any
//! S3-compatible store, e.g. Ceph's RADOS Gateway).
//!
//! A blob is written once under a fresh random key and never modified: a new PUT of the
//! same object name writes a new blob, and the metadata row switches to it in one
//! transaction. So a reader never sees a half-written object, and a crash leaves at
//! worst a blob no row references, which the sweeper ([`crate::sweeper`]) removes.
//! A writer makes its bytes visible under the key only in [`BlobWriter::commit`], after
//! they are durable; before that they are in a temporary file or an unfinished multipart
//! upload, removed by [`BlobWriter::abort`] or the start-up clean-up.

pub mod fs;
pub mod s3;

use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;

/// Backend failures.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No blob under that key.
    #[error("blob not found")]
    NotFound,
    /// Out of space.
    #[error("no space left in the object store")]
    Full,
    /// Anything else (I/O, HTTP, the remote store's error).
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound,
            std::io::ErrorKind::StorageFull => BackendError::Full,
            _ if matches!(e.raw_os_error(), Some(28) | Some(122)) => BackendError::Full,
            _ => BackendError::Other(e.to_string()),
        }
    }
}

impl From<BackendError> for crate::error::SwiftError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound => {
                crate::error::SwiftError::Internal("object bytes missing from the backend".into())
            }
            BackendError::Full => crate::error::SwiftError::InsufficientStorage,
            BackendError::Other(m) => crate::error::SwiftError::Unavailable(format!("object backend: {m}")),
        }
    }
}

/// A stream of object bytes.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Receives one blob's bytes, in order.
#[async_trait::async_trait]
pub trait BlobWriter: Send {
    /// Appends `data`.
    async fn write(&mut self, data: Bytes) -> Result<(), BackendError>;
    /// Makes the bytes durable and readable under the key.
    async fn commit(self: Box<Self>) -> Result<(), BackendError>;
    /// Discards everything written.
    async fn abort(self: Box<Self>);
}

/// A store of immutable blobs addressed by key.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `fs` or `s3`.
    fn name(&self) -> &'static str;
    /// Starts a new blob under `key` (a fresh random key; never reused).
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BackendError>;
    /// Streams `len` bytes from `offset`.
    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, BackendError>;
    /// Removes a blob; a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;
    /// Keys of committed blobs last written before `before` (sweeper input).
    async fn list_before(&self, before: SystemTime) -> Result<Vec<String>, BackendError>;
    /// Removes what interrupted writes of earlier runs left (temporary files, unfinished
    /// multipart uploads); returns how many.
    async fn remove_partials(&self) -> Result<usize, BackendError>;
}

/// A fresh blob key: 32 hex digits, never a client-supplied string.
pub fn new_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// True for keys [`new_key`] makes (so nothing else ever becomes a path or S3 key).
pub fn valid_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit())
}
