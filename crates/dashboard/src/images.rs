//! Project > Images: the list, creating an image with its data uploaded from the
//! browser (streamed to the image API, never buffered here; the page shows progress),
//! and deleting.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_core::internal::InternalUri;

use crate::api::{list, s};
use crate::error::{DashError, Result};
use crate::layout::{self, action_button, bytes, csrf};
use crate::login::Sess;
use crate::Dash;

/// Disk formats offered (Glance's defaults).
const DISK_FORMATS: &[&str] = &["qcow2", "raw", "iso", "vmdk", "vdi", "vhd", "vhdx", "ami", "ari", "aki"];

/// `GET /project/images`.
pub async fn page(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let v = sess.api(&d).get(InternalUri::new("/image/v2/images").query("limit", "500")).await?;
    let project = sess.ctx.project_id.as_deref().unwrap_or("");
    let body = html! {
        table #images {
            thead { tr { th { "Name" } th { "Status" } th { "Visibility" } th { "Disk Format" } th { "Size" } th { "Actions" } } }
            tbody {
                @for i in list(&v, "images") {
                    tr {
                        td.name { (s(i, "name")) }
                        td { (s(i, "status")) }
                        td { (s(i, "visibility")) }
                        td { (s(i, "disk_format")) }
                        td { (i.get("size").and_then(Value::as_i64).map(bytes).unwrap_or_default()) }
                        td {
                            @if s(i, "owner") == project && !i.get("protected").and_then(Value::as_bool).unwrap_or(false) {
                                (action_button(&sess, &d.url(&format!("/project/images/{}/delete",
                                    stratus_core::query::encode(s(i, "id")))), None, "Delete Image", true))
                            }
                        }
                    }
                }
            }
        }
        h2 { "Create Image" }
        form method="post" action=(d.url("/project/images")) data-upload {
            (csrf(&sess))
            fieldset {
                label { "Image Name" input name="name" required maxlength="255"; }
                label { "File" input type="file" name="file" required; }
                label { "Format"
                    select name="disk_format" { @for f in DISK_FORMATS { option value=(f) { (f) } } }
                }
                label { "Visibility"
                    select name="visibility" { option value="private" { "Private" } option value="shared" { "Shared" }
                        option value="community" { "Community" } }
                }
                progress value="0" max="1" {}
                p.upload-status {}
                button type="submit" { "Create Image" }
            }
        }
    };
    Ok(layout::page(&d, &sess, "images", "Images", body))
}

/// The create form (the file itself follows in a `PUT`).
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    disk_format: String,
    #[serde(default)]
    visibility: String,
}

/// `POST /project/images`: creates the image record; answers JSON with where to `PUT`
/// the data when the page's script asked, else returns to the list.
pub async fn create(
    State(d): State<Arc<Dash>>,
    sess: Sess,
    headers: HeaderMap,
    Form(f): Form<CreateForm>,
) -> Result<Response> {
    let name = f.name.trim();
    if name.is_empty() {
        return Err(DashError::BadInput("An image needs a name.".into()));
    }
    let visibility = if f.visibility.is_empty() { "private" } else { f.visibility.as_str() };
    let body =
        json!({"name": name, "disk_format": f.disk_format, "container_format": "bare", "visibility": visibility});
    let wants_json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/json"));
    let image = match sess.api(&d).post(InternalUri::new("/image/v2/images"), &body).await {
        Ok(v) => v,
        Err(e) if wants_json => {
            return Ok((e.status(), Json(json!({"message": e.to_string()}))).into_response());
        }
        Err(e) => return Err(e),
    };
    let id = s(&image, "id");
    if wants_json {
        let enc = stratus_core::query::encode(id);
        return Ok(Json(json!({
            "id": id,
            "upload_url": d.url(&format!("/project/images/{enc}/data")),
            "done_url": d.url("/project/images"),
        }))
        .into_response());
    }
    sess.flash(&d, false, format!("Created image {name}; it is queued until its data is uploaded."));
    Ok(Redirect::to(&d.url("/project/images")).into_response())
}

/// `PUT /project/images/{id}/data`: the request body is passed on to
/// `PUT /image/v2/images/{id}/file` as it arrives.
pub async fn upload(
    State(d): State<Arc<Dash>>,
    sess: Sess,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let len = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let uri = InternalUri::new("/image/v2/images").seg(&id).seg("file");
    match sess.api(&d).put_stream(uri, "application/octet-stream", len, body).await {
        Ok(()) => {
            sess.flash(&d, false, "Image data uploaded.");
            Ok(axum::http::StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => Ok((e.status(), Json(json!({"message": e.to_string()}))).into_response()),
    }
}

/// `POST /project/images/{id}/delete`.
pub async fn delete(State(d): State<Arc<Dash>>, sess: Sess, Path(id): Path<String>) -> Result<Redirect> {
    sess.api(&d).delete(InternalUri::new("/image/v2/images").seg(&id)).await?;
    sess.flash(&d, false, "Deleted the image.");
    Ok(Redirect::to(&d.url("/project/images")))
}
