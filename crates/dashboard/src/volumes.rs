//! Project > Volumes: the project's volumes (refreshed without reloading while one is
//! being created, attached, detached or deleted), creating, attaching to an instance
//! (through the compute API, as Horizon does), detaching and deleting.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_core::internal::InternalUri;

use crate::api::{list, s};
use crate::error::{DashError, Result};
use crate::layout::{self, action_button, csrf};
use crate::login::Sess;
use crate::Dash;

fn volumes_uri(sess: &Sess) -> InternalUri {
    InternalUri::new("/volume/v3").seg(sess.ctx.project_id.as_deref().unwrap_or("")).seg("volumes")
}

fn vol_url(d: &Dash, id: &str, what: &str) -> String {
    d.url(&format!("/project/volumes/{}/{what}", stratus_core::query::encode(id)))
}

/// True while the volume is changing.
fn busy(v: &Value) -> bool {
    matches!(
        s(v, "status"),
        "creating" | "attaching" | "detaching" | "deleting" | "extending" | "reserved" | "downloading" | "backing-up"
    )
}

async fn fetch(d: &Dash, sess: &Sess) -> Result<(Vec<Value>, Vec<(String, String)>)> {
    let api = sess.api(d);
    let (vols, servers) = futures::try_join!(
        api.get(volumes_uri(sess).seg("detail")),
        api.get(InternalUri::new("/compute/v2.1/servers")),
    )?;
    let servers =
        list(&servers, "servers").iter().map(|v| (s(v, "id").to_string(), s(v, "name").to_string())).collect();
    Ok((list(&vols, "volumes").to_vec(), servers))
}

fn table(d: &Dash, sess: &Sess, vols: &[Value], servers: &[(String, String)]) -> Markup {
    let names: HashMap<&str, &str> = servers.iter().map(|(i, n)| (i.as_str(), n.as_str())).collect();
    html! {
        table #volumes data-busy[vols.iter().any(busy)] {
            thead { tr { th { "Name" } th { "Size" } th { "Status" } th { "Type" } th { "Attached To" } th { "Actions" } } }
            tbody {
                @if vols.is_empty() { tr { td colspan="6" .muted { "No volumes." } } }
                @for v in vols {
                    @let id = s(v, "id");
                    tr {
                        td.name { (s(v, "name")) }
                        td { (v.get("size").and_then(Value::as_i64).unwrap_or(0)) " GiB" }
                        td.status { (s(v, "status")) }
                        td { (s(v, "volume_type")) }
                        td {
                            @for a in list(v, "attachments") {
                                div { (names.get(s(a, "server_id")).copied().unwrap_or(s(a, "server_id"))) " on " (s(a, "device")) }
                            }
                        }
                        td {
                            @if s(v, "status") == "available" {
                                @if !servers.is_empty() {
                                    form.inline method="post" action=(vol_url(d, id, "attach")) {
                                        (csrf(sess))
                                        select name="server_id" { @for (sid, name) in servers { option value=(sid) { (name) } } }
                                        button type="submit" { "Attach" }
                                    }
                                }
                                (action_button(sess, &vol_url(d, id, "delete"), None, "Delete Volume", true))
                            }
                            @if s(v, "status") == "in-use" {
                                @for a in list(v, "attachments") {
                                    (action_button(sess, &vol_url(d, id, "detach"), Some(("server_id", s(a, "server_id"))), "Detach", true))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /project/volumes`.
pub async fn page(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let (vols, servers) = fetch(&d, &sess).await?;
    let body = html! {
        div #volume-list data-poll=(d.url("/project/volumes/rows")) { (table(&d, &sess, &vols, &servers)) }
        h2 { "Create Volume" }
        form method="post" action=(d.url("/project/volumes")) {
            (csrf(&sess))
            fieldset {
                label { "Volume Name" input name="name" required maxlength="255"; }
                label { "Size (GiB)" input type="number" name="size" min="1" value="1" required; }
                button type="submit" { "Create Volume" }
            }
        }
    };
    Ok(layout::page(&d, &sess, "volumes", "Volumes", body))
}

/// `GET /project/volumes/rows`: the table alone, for polling.
pub async fn rows(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let (vols, servers) = fetch(&d, &sess).await?;
    Ok(table(&d, &sess, &vols, &servers))
}

/// The create form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    size: String,
}

/// `POST /project/volumes`.
pub async fn create(State(d): State<Arc<Dash>>, sess: Sess, Form(f): Form<CreateForm>) -> Result<Redirect> {
    let name = f.name.trim();
    let size: i64 = f
        .size
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| DashError::BadInput("The size must be a whole number of GiB, at least 1.".into()))?;
    if name.is_empty() {
        return Err(DashError::BadInput("A volume needs a name.".into()));
    }
    sess.api(&d).post(volumes_uri(&sess), &json!({"volume": {"name": name, "size": size}})).await?;
    sess.flash(&d, false, format!("Creating volume {name}."));
    Ok(Redirect::to(&d.url("/project/volumes")))
}

/// The attach and detach forms.
#[derive(Debug, Deserialize)]
pub struct ServerForm {
    #[serde(default)]
    server_id: String,
}

/// `POST /project/volumes/{id}/attach`: `POST /servers/{server}/os-volume_attachments`.
pub async fn attach(
    State(d): State<Arc<Dash>>,
    sess: Sess,
    Path(id): Path<String>,
    Form(f): Form<ServerForm>,
) -> Result<Redirect> {
    if f.server_id.is_empty() {
        return Err(DashError::BadInput("Choose the instance to attach to.".into()));
    }
    let uri = InternalUri::new("/compute/v2.1/servers").seg(&f.server_id).seg("os-volume_attachments");
    sess.api(&d).post(uri, &json!({"volumeAttachment": {"volumeId": id}})).await?;
    sess.flash(&d, false, "Attaching the volume.");
    Ok(Redirect::to(&d.url("/project/volumes")))
}

/// `POST /project/volumes/{id}/detach`.
pub async fn detach(
    State(d): State<Arc<Dash>>,
    sess: Sess,
    Path(id): Path<String>,
    Form(f): Form<ServerForm>,
) -> Result<Redirect> {
    let uri = InternalUri::new("/compute/v2.1/servers").seg(&f.server_id).seg("os-volume_attachments").seg(&id);
    sess.api(&d).delete(uri).await?;
    sess.flash(&d, false, "Detaching the volume.");
    Ok(Redirect::to(&d.url("/project/volumes")))
}

/// `POST /project/volumes/{id}/delete`.
pub async fn delete(State(d): State<Arc<Dash>>, sess: Sess, Path(id): Path<String>) -> Result<Redirect> {
    sess.api(&d).delete(volumes_uri(&sess).seg(&id)).await?;
    sess.flash(&d, false, "Deleting the volume.");
    Ok(Redirect::to(&d.url("/project/volumes")))
}
