//! The image service as a volume agent sees it: download an image's data into a file,
//! upload a file as an image's data.
//!
//! An agent reaches the image service through its REST API (service HTTP is allowed to
//! agents; the database is not). In `stratus up` the request is dispatched into the
//! composed router in-process ([`InternalImages`]).

use std::path::Path;

use async_trait::async_trait;
use axum::body::Body;
use futures::StreamExt;
use stratus_core::internal::InternalClient;
use stratus_core::RequestContext;
use stratus_volume_contract::AgentError;
use tokio::io::AsyncWriteExt;

/// Image data in and out.
#[async_trait]
pub trait ImageStore: Send + Sync + 'static {
    /// Writes image `id`'s data to `dst`; answers the bytes written.
    async fn download(&self, id: &str, dst: &Path) -> Result<u64, AgentError>;
    /// Uploads `src` as the data of the queued image `id`.
    async fn upload(&self, id: &str, src: &Path) -> Result<(), AgentError>;
}

/// The image service in this process.
#[derive(Clone)]
pub struct InternalImages {
    client: InternalClient,
}

impl InternalImages {
    /// Over the platform's in-process client.
    pub fn new(client: InternalClient) -> Self {
        InternalImages { client }
    }

    async fn send(&self, req: http::Request<Body>, what: &str) -> Result<axum::response::Response, AgentError> {
        let ctx = RequestContext::internal_admin();
        let resp =
            self.client.call_streaming(&ctx, req).await.map_err(|e| AgentError::Failed(format!("{what}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        let e = format!("{what}: the image service answered {status}: {text}");
        Err(if status.as_u16() == 404 { AgentError::NotFound(e) } else { AgentError::Failed(e) })
    }
}

fn request(method: http::Method, uri: String, body: Body) -> Result<http::Request<Body>, AgentError> {
    let mut b = http::Request::builder().method(method).uri(uri);
    if matches!(*b.method_ref().unwrap_or(&http::Method::GET), http::Method::PUT) {
        b = b.header(http::header::CONTENT_TYPE, "application/octet-stream");
    }
    b.body(body).map_err(|e| AgentError::Failed(format!("building an image request: {e}")))
}

#[async_trait]
impl ImageStore for InternalImages {
    async fn download(&self, id: &str, dst: &Path) -> Result<u64, AgentError> {
        let what = format!("downloading image {id}");
        let req = request(http::Method::GET, format!("/image/v2/images/{id}/file"), Body::empty())?;
        let resp = self.send(req, &what).await?;
        let mut f = tokio::fs::File::create(dst).await.map_err(|e| AgentError::Failed(format!("{what}: {e}")))?;
        let mut stream = resp.into_body().into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| AgentError::Failed(format!("{what}: {e}")))?;
            n += chunk.len() as u64;
            f.write_all(&chunk).await.map_err(|e| AgentError::Failed(format!("{what}: {e}")))?;
        }
        f.sync_all().await.map_err(|e| AgentError::Failed(format!("{what}: {e}")))?;
        Ok(n)
    }

    async fn upload(&self, id: &str, src: &Path) -> Result<(), AgentError> {
        let what = format!("uploading image {id}");
        let f = tokio::fs::File::open(src).await.map_err(|e| AgentError::Failed(format!("{what}: {e}")))?;
        let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
        let req = request(http::Method::PUT, format!("/image/v2/images/{id}/file"), body)?;
        self.send(req, &what).await.map(drop)
    }
}
