//! The S3 backend: blobs as objects in one bucket of any S3-compatible store (tested
//! against Ceph's RADOS Gateway).
//!
//! Requests are signed with `rusty-s3` (SigV4 presigned URLs, no I/O of its own) and sent
//! with the workspace's `reqwest`, so the backend adds two small crates to the build
//! instead of the AWS SDK's dozens. A blob of up to one part (`part_size`, 8 MiB by
//! default) goes up as one `PutObject` once complete; a larger one as a multipart
//! upload, one part at a time from a buffer of `part_size` bytes, so memory per upload is
//! bounded whatever the object's size. The object appears under its key only when
//! `PutObject` or `CompleteMultipartUpload` returns, which is after the store made it
//! durable. An abandoned multipart upload is aborted by the writer; one left by a crash
//! is recorded in `object_pending_uploads` and aborted on the next start.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rusty_s3::actions::{CompleteMultipartUpload, CreateMultipartUpload, ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

use super::{valid_key, Backend, BackendError, BlobWriter, ByteStream};

/// How long a presigned request stays valid (only until it is sent).
const SIGN_FOR: Duration = Duration::from_secs(3600);

/// S3 connection settings.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http://127.0.0.1:7480`.
    pub endpoint: String,
    /// Region used in signatures.
    pub region: String,
    /// Bucket (created at start when missing).
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Multipart part size in bytes (at least 5 MiB, S3's minimum).
    pub part_size: usize,
}

/// Records multipart uploads in flight so a crashed run's can be aborted.
#[async_trait::async_trait]
pub trait PendingLog: Send + Sync + 'static {
    /// A multipart upload of `key` started with `upload_id`.
    async fn started(&self, key: &str, upload_id: &str);
    /// It completed or was aborted.
    async fn finished(&self, key: &str);
    /// Uploads recorded by earlier runs: (key, upload id).
    async fn leftovers(&self) -> Vec<(String, String)>;
}

/// Blobs in an S3 bucket.
pub struct S3Backend {
    bucket: Bucket,
    creds: Credentials,
    http: reqwest::Client,
    part_size: usize,
    pending: std::sync::Arc<dyn PendingLog>,
}

fn other(e: impl std::fmt::Display) -> BackendError {
    BackendError::Other(e.to_string())
}

async fn expect_ok(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, BackendError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    if status.as_u16() == 404 {
        return Err(BackendError::NotFound);
    }
    if body.contains("QuotaExceeded") || body.contains("EntityTooLarge") && status.as_u16() == 507 {
        return Err(BackendError::Full);
    }
    Err(BackendError::Other(format!("S3 {what} failed: {status} {}", body.chars().take(300).collect::<String>())))
}

impl S3Backend {
    /// Connects and makes sure the bucket exists.
    pub async fn connect(s: &S3Settings, pending: std::sync::Arc<dyn PendingLog>) -> Result<S3Backend, BackendError> {
        let url = s.endpoint.parse().map_err(|e| other(format!("S3 endpoint {:?}: {e}", s.endpoint)))?;
        let bucket = Bucket::new(url, UrlStyle::Path, s.bucket.clone(), s.region.clone()).map_err(other)?;
        let creds = Credentials::new(s.access_key.clone(), s.secret_key.clone());
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().map_err(other)?;
        let b = S3Backend { bucket, creds, http, part_size: s.part_size.max(5 << 20), pending };
        let url = b.bucket.create_bucket(&b.creds).sign(SIGN_FOR);
        let resp = b.http.put(url).send().await.map_err(|e| other(format!("S3 endpoint unreachable: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let already_ours = status.as_u16() == 409 && body.contains("BucketAlreadyOwnedByYou");
            if !already_ours && !body.contains("BucketAlreadyExists") {
                return Err(other(format!("creating bucket {}: {status} {body}", s.bucket)));
            }
        }
        Ok(b)
    }

    async fn put_whole(&self, key: &str, body: Bytes) -> Result<(), BackendError> {
        let url = self.bucket.put_object(Some(&self.creds), key).sign(SIGN_FOR);
        // The length is always sent: for an empty body (a DLO manifest, an empty object)
        // the HTTP client leaves it out, and radosgw then answers 411 Length Required.
        let len = body.len();
        let resp =
            self.http.put(url).header(reqwest::header::CONTENT_LENGTH, len).body(body).send().await.map_err(other)?;
        expect_ok(resp, "PutObject").await.map(|_| ())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) {
        let url = self.bucket.abort_multipart_upload(Some(&self.creds), key, upload_id).sign(SIGN_FOR);
        if let Err(e) = self.http.delete(url).send().await {
            tracing::warn!(key, error = %e, "could not abort an S3 multipart upload");
        }
        self.pending.finished(key).await;
    }
}

struct S3Writer {
    backend: std::sync::Arc<S3Backend>,
    key: String,
    buf: BytesMut,
    upload_id: Option<String>,
    etags: Vec<String>,
}

impl S3Writer {
    async fn flush_part(&mut self) -> Result<(), BackendError> {
        let b = self.backend.clone();
        if self.upload_id.is_none() {
            let url = b.bucket.create_multipart_upload(Some(&b.creds), &self.key).sign(SIGN_FOR);
            let resp = expect_ok(b.http.post(url).send().await.map_err(other)?, "CreateMultipartUpload").await?;
            let text = resp.text().await.map_err(other)?;
            let parsed = CreateMultipartUpload::parse_response(&text).map_err(other)?;
            let id = parsed.upload_id().to_string();
            b.pending.started(&self.key, &id).await;
            self.upload_id = Some(id);
        }
        let id = self.upload_id.clone().unwrap_or_default();
        let part = self.etags.len() as u16 + 1;
        let body = self.buf.split().freeze();
        let url = b.bucket.upload_part(Some(&b.creds), &self.key, part, &id).sign(SIGN_FOR);
        let resp = expect_ok(b.http.put(url).body(body).send().await.map_err(other)?, "UploadPart").await?;
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        self.etags.push(etag);
        Ok(())
    }
}

#[async_trait::async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<(), BackendError> {
        self.buf.extend_from_slice(&data);
        while self.buf.len() >= self.backend.part_size {
            let rest = self.buf.split_off(self.backend.part_size);
            let r = self.flush_part().await;
            self.buf.unsplit(rest);
            r?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        let b = self.backend.clone();
        match self.upload_id.clone() {
            None => {
                let body = self.buf.split().freeze();
                b.put_whole(&self.key, body).await
            }
            Some(id) => {
                let r = async {
                    if !self.buf.is_empty() {
                        self.flush_part().await?;
                    }
                    let etags: Vec<&str> = self.etags.iter().map(String::as_str).collect();
                    let action: CompleteMultipartUpload<'_, _> =
                        b.bucket.complete_multipart_upload(Some(&b.creds), &self.key, &id, etags.into_iter());
                    let url = action.sign(SIGN_FOR);
                    let body = action.body();
                    let resp =
                        expect_ok(b.http.post(url).body(body).send().await.map_err(other)?, "CompleteMultipartUpload")
                            .await?;
                    // S3 may report a failure inside a 200 response.
                    let text = resp.text().await.map_err(other)?;
                    if text.contains("<Error>") {
                        return Err(other(format!("CompleteMultipartUpload failed: {text}")));
                    }
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => {
                        b.pending.finished(&self.key).await;
                        Ok(())
                    }
                    Err(e) => {
                        b.abort_upload(&self.key, &id).await;
                        Err(e)
                    }
                }
            }
        }
    }

    async fn abort(self: Box<Self>) {
        if let Some(id) = &self.upload_id {
            self.backend.abort_upload(&self.key, id).await;
        }
    }
}

/// A handle that can create writers (which need an `Arc` of the backend).
pub struct S3Handle(pub std::sync::Arc<S3Backend>);

#[async_trait::async_trait]
impl Backend for S3Handle {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BackendError> {
        if !valid_key(key) {
            return Err(other(format!("invalid blob key {key:?}")));
        }
        Ok(Box::new(S3Writer {
            backend: self.0.clone(),
            key: key.to_string(),
            buf: BytesMut::with_capacity(64 * 1024),
            upload_id: None,
            etags: Vec::new(),
        }))
    }

    async fn read(&self, key: &str, offset: u64, len: u64) -> Result<ByteStream, BackendError> {
        if len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let b = &self.0;
        let url = b.bucket.get_object(Some(&b.creds), key).sign(SIGN_FOR);
        let end = offset.saturating_add(len - 1);
        let req = b.http.get(url).header("range", format!("bytes={offset}-{end}"));
        let resp = expect_ok(req.send().await.map_err(other)?, "GetObject").await?;
        Ok(resp.bytes_stream().map(|r| r.map_err(std::io::Error::other)).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let b = &self.0;
        let url = b.bucket.delete_object(Some(&b.creds), key).sign(SIGN_FOR);
        match expect_ok(b.http.delete(url).send().await.map_err(other)?, "DeleteObject").await {
            Ok(_) | Err(BackendError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_before(&self, before: SystemTime) -> Result<Vec<String>, BackendError> {
        let b = &self.0;
        let cutoff: chrono::DateTime<chrono::Utc> = before.into();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = b.bucket.list_objects_v2(Some(&b.creds));
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGN_FOR);
            let resp = expect_ok(b.http.get(url).send().await.map_err(other)?, "ListObjectsV2").await?;
            let text = resp.text().await.map_err(other)?;
            let page = ListObjectsV2::parse_response(&text).map_err(other)?;
            for c in page.contents {
                let old = chrono::DateTime::parse_from_rfc3339(&c.last_modified).map(|t| t < cutoff).unwrap_or(false);
                if old && valid_key(&c.key) {
                    out.push(c.key);
                }
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    async fn remove_partials(&self) -> Result<usize, BackendError> {
        let b = &self.0;
        let left = b.pending.leftovers().await;
        for (key, id) in &left {
            b.abort_upload(key, id).await;
        }
        Ok(left.len())
    }
}
