//! Streaming an upload into a new blob: the request body is read chunk by chunk, counted
//! against the size limit, hashed (MD5, Swift's ETag) on a blocking thread, and written
//! to the backend in batches of up to 1 MiB. Nothing holds the object whole.
//!
//! The result is a committed blob, or nothing: on any failure (limit exceeded, client
//! gone, ETag mismatch, backend error) the partial blob is aborted before the error is
//! returned. Callers run this in a task of its own so that a client hanging up cannot
//! cancel the clean-up halfway.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};

use crate::backend::{new_key, Backend};
use crate::error::{Result, SwiftError};

/// Bytes per batch handed to the hasher and the backend.
const BATCH: usize = 1024 * 1024;
/// Batches in flight to the hasher.
const PIPE_DEPTH: usize = 4;

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// MD5 of `data`, hex.
pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

/// How many bytes an upload may bring, and the 413 text when it brings more.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Most bytes.
    pub max: u64,
    /// What to say.
    pub message: String,
}

/// A stored blob.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Backend key.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// MD5, hex.
    pub etag: String,
}

/// Streams `body` into a new blob of `backend`; see the module doc.
pub async fn ingest<S, E>(
    backend: Arc<dyn Backend>,
    mut body: S,
    limit: Limit,
    expected_etag: Option<String>,
) -> Result<Stored>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let key = new_key();
    let mut writer = backend.create(&key).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(PIPE_DEPTH);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut md5 = Md5::new();
        while let Some(chunk) = rx.blocking_recv() {
            md5.update(&chunk);
        }
        hex(&md5.finalize())
    });
    let mut total: u64 = 0;
    let mut batch = BytesMut::with_capacity(BATCH);
    let streamed: Result<()> = async {
        loop {
            let next = body.next().await;
            let done = next.is_none();
            match next {
                Some(Err(e)) => {
                    tracing::info!(error = %e, "object upload interrupted");
                    return Err(SwiftError::ClientDisconnect);
                }
                Some(Ok(chunk)) => {
                    total += chunk.len() as u64;
                    if total > limit.max {
                        return Err(SwiftError::TooLarge(limit.message.clone()));
                    }
                    batch.extend_from_slice(&chunk);
                }
                None => {}
            }
            if batch.len() >= BATCH || (done && !batch.is_empty()) {
                let full = batch.split().freeze();
                batch.reserve(BATCH);
                if tx.send(full.clone()).await.is_err() {
                    return Err(SwiftError::Internal("object hasher stopped".into()));
                }
                writer.write(full).await?;
            }
            if done {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let etag = hasher.await.map_err(|e| SwiftError::Internal(format!("hasher failed: {e}")));
    let checked = streamed.and(etag).and_then(|etag| match &expected_etag {
        Some(want) if !want.trim_matches('"').eq_ignore_ascii_case(&etag) => Err(SwiftError::Unprocessable),
        _ => Ok(etag),
    });
    match checked {
        Ok(etag) => {
            writer.commit().await?;
            Ok(Stored { key, size: total, etag })
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// Stores `data` (small, already in memory: manifests) as a new blob.
pub async fn store_bytes(backend: Arc<dyn Backend>, data: Bytes) -> Result<Stored> {
    let limit = Limit { max: u64::MAX, message: String::new() };
    ingest(backend, futures::stream::iter([Ok::<_, std::io::Error>(data)]), limit, None).await
}

/// Reads a whole (small) blob into memory: manifests only, bounded by `max`.
pub async fn read_small(backend: &dyn Backend, key: &str, size: u64, max: u64) -> Result<Bytes> {
    if size > max {
        return Err(SwiftError::Internal(format!("manifest of {size} bytes exceeds {max}")));
    }
    let mut s = backend.read(key, 0, size).await?;
    let mut out = BytesMut::with_capacity(size as usize);
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| SwiftError::Internal(format!("reading manifest: {e}")))?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fs::FsBackend;

    fn chunks(n: usize) -> impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Unpin + Send {
        futures::stream::iter((0..n).map(|i| Ok(Bytes::from(vec![i as u8; 300_000]))))
    }

    #[tokio::test]
    async fn etag_mismatch_and_limit_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path()).unwrap();
        let b: Arc<dyn Backend> = Arc::new(fs.clone());
        let ok = ingest(b.clone(), chunks(10), Limit { max: u64::MAX, message: String::new() }, None).await.unwrap();
        assert_eq!(ok.size, 3_000_000);
        let mut all = Vec::new();
        for i in 0..10u8 {
            all.extend(std::iter::repeat_n(i, 300_000));
        }
        assert_eq!(ok.etag, md5_hex(&all));
        let bad = ingest(b.clone(), chunks(10), Limit { max: u64::MAX, message: String::new() }, Some("0".repeat(32)))
            .await
            .unwrap_err();
        assert!(matches!(bad, SwiftError::Unprocessable));
        let big =
            ingest(b.clone(), chunks(10), Limit { max: 1_000_000, message: "too big".into() }, None).await.unwrap_err();
        assert!(matches!(big, SwiftError::TooLarge(_)));
        let gone = futures::stream::iter(vec![Ok(Bytes::from_static(b"abc")), Err(std::io::Error::other("reset"))]);
        let e = ingest(b.clone(), gone, Limit { max: u64::MAX, message: String::new() }, None).await.unwrap_err();
        assert!(matches!(e, SwiftError::ClientDisconnect));
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        assert_eq!(b.list_before(later).await.unwrap(), vec![ok.key], "only the good upload left bytes");
        assert_eq!(std::fs::read_dir(fs.root().join("tmp")).unwrap().count(), 0);
    }
}
