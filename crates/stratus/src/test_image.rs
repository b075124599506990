//! The project's CirrOS-like test image (tools/build-test-image.sh), uploaded by
//! `stratus up` as the public image `cirros` when a build is present, so that a fresh
//! cloud can boot a real guest at once (`openstack server create --image cirros
//! --flavor m1.nano`). Idempotent: an existing `cirros` image is left alone.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::json;
use stratus_core::{Platform, RequestContext};

/// Name of the uploaded image.
pub const IMAGE_NAME: &str = "cirros";

/// `$STRATUS_TEST_IMAGE_DIR`, else `<repo>/build/test-image` when it holds `disk.qcow2`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("STRATUS_TEST_IMAGE_DIR") {
        return Some(PathBuf::from(d));
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/test-image");
    d.join("disk.qcow2").exists().then_some(d)
}

/// Uploads `<dir>/disk.qcow2` as the public image `cirros` unless one exists.
/// Returns the new image's id, or None when it was already there.
pub async fn upload(platform: &Platform, dir: &Path) -> anyhow::Result<Option<String>> {
    let file = dir.join("disk.qcow2");
    if !file.exists() {
        bail!("{} does not exist (build it with tools/build-test-image.sh build/test-image)", file.display());
    }
    let ctx = RequestContext::internal_admin();
    let list = platform
        .internal
        .call(&ctx, Method::GET, &format!("/image/v2/images?name={IMAGE_NAME}"), None, &[])
        .await
        .map_err(|e| anyhow::anyhow!("listing images: {}", e.message))?;
    if list.body["images"].as_array().is_some_and(|a| !a.is_empty()) {
        return Ok(None);
    }
    let body = json!({
        "name": IMAGE_NAME,
        "disk_format": "qcow2",
        "container_format": "bare",
        "visibility": "public",
        "min_ram": 96,
        "os_distro": "cirros",
        "description": "Stratus test guest (tools/build-test-image.sh): login cirros/gocubsgo",
    });
    let created = platform
        .internal
        .call(&ctx, Method::POST, "/image/v2/images", Some(&body), &[])
        .await
        .map_err(|e| anyhow::anyhow!("creating the image: {}", e.message))?;
    if !created.status.is_success() {
        bail!("creating the image: {} {}", created.status, created.body);
    }
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    let data = tokio::fs::read(&file).await.with_context(|| format!("reading {}", file.display()))?;
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/image/v2/images/{id}/file"))
        .header("content-type", "application/octet-stream")
        .body(Body::from(data))?;
    let resp = platform
        .internal
        .call_streaming(&ctx, req)
        .await
        .map_err(|e| anyhow::anyhow!("uploading the image: {}", e.message))?;
    if !resp.status().is_success() {
        bail!("uploading the image: {}", resp.status());
    }
    tracing::info!(image = %id, dir = %dir.display(), "uploaded the test image as {IMAGE_NAME:?}");
    Ok(Some(id))
}
