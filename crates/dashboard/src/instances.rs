//! Project > Instances: the list (status refreshed without reloading while anything is
//! in progress), the launch form, start/stop/reboot/delete and the VNC console link.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_core::internal::InternalUri;

use crate::api::{list, s};
use crate::error::{DashError, Result};
use crate::layout::{self, action_button, csrf, mib};
use crate::login::Sess;
use crate::Dash;

/// Servers per page (the compute API pages with `limit`/`marker`).
const PAGE: usize = 100;

/// Paging parameters of the list.
#[derive(Debug, Default, Deserialize)]
pub struct Paging {
    #[serde(default)]
    marker: Option<String>,
}

/// True while the server is changing: its row keeps being refreshed.
fn busy(server: &Value) -> bool {
    let task = server.get("OS-EXT-STS:task_state").is_some_and(|t| !t.is_null());
    task || matches!(s(server, "status"), "BUILD" | "REBOOT" | "HARD_REBOOT" | "MIGRATING" | "RESIZE" | "REBUILD")
}

fn addresses(server: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(nets) = server.get("addresses").and_then(Value::as_object) {
        for (net, addrs) in nets {
            for a in addrs.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                out.push(format!("{} ({net})", s(a, "addr")));
            }
        }
    }
    out
}

async fn fetch(d: &Dash, sess: &Sess, marker: Option<&str>) -> Result<Vec<Value>> {
    let mut uri = InternalUri::new("/compute/v2.1/servers/detail").query("limit", &PAGE.to_string());
    if let Some(m) = marker {
        uri = uri.query("marker", m);
    }
    let v = sess.api(d).get(uri).await?;
    Ok(list(&v, "servers").to_vec())
}

/// The table (also served alone for polling).
fn table(d: &Dash, sess: &Sess, servers: &[Value]) -> Markup {
    let any_busy = servers.iter().any(busy);
    html! {
        table #servers data-busy[any_busy] {
            thead { tr { th { "Instance Name" } th { "IP Address" } th { "Flavor" } th { "Key Pair" }
                         th { "Status" } th { "Task" } th { "Actions" } } }
            tbody {
                @if servers.is_empty() { tr { td colspan="7" .muted { "No instances." } } }
                @for sv in servers {
                    @let id = s(sv, "id");
                    @let status = s(sv, "status");
                    @let act = d.url(&format!("/project/instances/{}/action", stratus_core::query::encode(id)));
                    tr data-id=(id) {
                        td.name { (s(sv, "name")) }
                        td { @for a in addresses(sv) { div { (a) } } }
                        td { (sv.get("flavor").map(|f| s(f, "original_name")).unwrap_or("")) }
                        td { (s(sv, "key_name")) }
                        td { span class=(format!("status-{status}")) { (status) } }
                        td { (sv.get("OS-EXT-STS:task_state").and_then(Value::as_str).unwrap_or("None")) }
                        td {
                            @if status == "SHUTOFF" { (action_button(sess, &act, Some(("action", "start")), "Start", false)) }
                            @if status == "ACTIVE" {
                                (action_button(sess, &act, Some(("action", "stop")), "Shut Off", false))
                                (action_button(sess, &act, Some(("action", "reboot")), "Reboot", false))
                                form.inline method="post" target="_blank"
                                    action=(d.url(&format!("/project/instances/{}/console", stratus_core::query::encode(id)))) {
                                    (csrf(sess)) button type="submit" { "Console" }
                                }
                            }
                            (action_button(sess, &act, Some(("action", "delete")), "Delete", true))
                        }
                    }
                }
            }
        }
    }
}

/// `GET /project/instances`.
pub async fn page(State(d): State<Arc<Dash>>, sess: Sess, Query(p): Query<Paging>) -> Result<Markup> {
    let servers = fetch(&d, &sess, p.marker.as_deref()).await?;
    let next = (servers.len() == PAGE).then(|| servers.last().map(|v| s(v, "id").to_string())).flatten();
    let rows_url = match &p.marker {
        Some(m) => format!("{}?marker={}", d.url("/project/instances/rows"), stratus_core::query::encode(m)),
        None => d.url("/project/instances/rows"),
    };
    let body = html! {
        div.toolbar { a.button href=(d.url("/project/instances/launch")) { "Launch Instance" } }
        div #instances data-poll=(rows_url) { (table(&d, &sess, &servers)) }
        @if let Some(m) = next {
            p { a href=(format!("{}?marker={}", d.url("/project/instances"), stratus_core::query::encode(&m))) { "Next page" } }
        }
    };
    Ok(layout::page(&d, &sess, "instances", "Instances", body))
}

/// `GET /project/instances/rows`: the table alone, for the page's polling.
pub async fn rows(State(d): State<Arc<Dash>>, sess: Sess, Query(p): Query<Paging>) -> Result<Markup> {
    let servers = fetch(&d, &sess, p.marker.as_deref()).await?;
    Ok(table(&d, &sess, &servers))
}

/// `GET /project/instances/launch`: the launch form, with the images, flavors,
/// networks and key pairs this user may use.
pub async fn launch_form(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let api = sess.api(&d);
    let (images, flavors, networks, keypairs) = futures::try_join!(
        api.get(InternalUri::new("/image/v2/images").query("status", "active")),
        api.get(InternalUri::new("/compute/v2.1/flavors/detail")),
        api.get(InternalUri::new("/network/v2.0/networks")),
        api.get(InternalUri::new("/compute/v2.1/os-keypairs")),
    )?;
    let mut flavors = list(&flavors, "flavors").to_vec();
    flavors.sort_by_key(|f| (f.get("ram").and_then(Value::as_i64), f.get("vcpus").and_then(Value::as_i64)));
    let body = html! {
        form method="post" action=(d.url("/project/instances/launch")) {
            (csrf(&sess))
            fieldset {
                legend { "Details" }
                label { "Instance Name" input name="name" required maxlength="255"; }
                label { "Image"
                    select name="image_id" required {
                        @for i in list(&images, "images") { option value=(s(i, "id")) { (s(i, "name")) } }
                    }
                }
                label { "Flavor"
                    select name="flavor_id" required {
                        @for f in &flavors {
                            option value=(s(f, "id")) {
                                (s(f, "name")) " (" (f.get("vcpus").and_then(Value::as_i64).unwrap_or(0)) " VCPU, "
                                (mib(f.get("ram").and_then(Value::as_i64).unwrap_or(0))) " RAM, "
                                (f.get("disk").and_then(Value::as_i64).unwrap_or(0)) " GiB disk)"
                            }
                        }
                    }
                }
                label { "Network"
                    select name="network_id" {
                        @for n in list(&networks, "networks") {
                            @if !n.get("router:external").and_then(Value::as_bool).unwrap_or(false) {
                                option value=(s(n, "id")) { (s(n, "name")) }
                            }
                        }
                        option value="" { "No network" }
                    }
                }
                label { "Key Pair"
                    select name="key_name" {
                        option value="" { "None" }
                        @for k in list(&keypairs, "keypairs") {
                            @let name = k.get("keypair").map(|k| s(k, "name")).unwrap_or("");
                            option value=(name) { (name) }
                        }
                    }
                }
                button type="submit" { "Launch Instance" }
            }
        }
    };
    Ok(layout::page(&d, &sess, "instances", "Launch Instance", body))
}

/// The launch form's fields.
#[derive(Debug, Deserialize)]
pub struct LaunchForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image_id: String,
    #[serde(default)]
    flavor_id: String,
    #[serde(default)]
    network_id: String,
    #[serde(default)]
    key_name: String,
}

/// `POST /project/instances/launch`: `POST /compute/v2.1/servers`.
pub async fn launch(State(d): State<Arc<Dash>>, sess: Sess, Form(f): Form<LaunchForm>) -> Result<Redirect> {
    let name = f.name.trim();
    if name.is_empty() || f.image_id.is_empty() || f.flavor_id.is_empty() {
        return Err(DashError::BadInput("An instance needs a name, an image and a flavor.".into()));
    }
    let mut server = json!({
        "name": name,
        "imageRef": f.image_id,
        "flavorRef": f.flavor_id,
        "networks": if f.network_id.is_empty() { json!("none") } else { json!([{"uuid": f.network_id}]) },
    });
    if !f.key_name.is_empty() {
        server["key_name"] = json!(f.key_name);
    }
    sess.api(&d).post(InternalUri::new("/compute/v2.1/servers"), &json!({ "server": server })).await?;
    sess.flash(&d, false, format!("Launched instance {name}."));
    Ok(Redirect::to(&d.url("/project/instances")))
}

/// An action button's form.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    action: String,
}

/// `POST /project/instances/{id}/action`.
pub async fn action(
    State(d): State<Arc<Dash>>,
    sess: Sess,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect> {
    let server = InternalUri::new("/compute/v2.1/servers").seg(&id);
    let api = sess.api(&d);
    let (body, done) = match f.action.as_str() {
        "start" => (json!({"os-start": null}), "Starting"),
        "stop" => (json!({"os-stop": null}), "Shutting off"),
        "reboot" => (json!({"reboot": {"type": "SOFT"}}), "Rebooting"),
        "delete" => {
            api.delete(server).await?;
            sess.flash(&d, false, "Deleting the instance.");
            return Ok(Redirect::to(&d.url("/project/instances")));
        }
        other => return Err(DashError::BadInput(format!("Unknown instance action '{other}'."))),
    };
    api.post(InternalUri::new("/compute/v2.1/servers").seg(&id).seg("action"), &body).await?;
    sess.flash(&d, false, format!("{done} the instance."));
    Ok(Redirect::to(&d.url("/project/instances")))
}

/// `POST /project/instances/{id}/console`: asks compute for a noVNC console URL and
/// sends the browser there.
pub async fn console(State(d): State<Arc<Dash>>, sess: Sess, Path(id): Path<String>) -> Result<Response> {
    let body = json!({"remote_console": {"protocol": "vnc", "type": "novnc"}});
    let v = sess.api(&d).post(InternalUri::new("/compute/v2.1/servers").seg(&id).seg("remote-consoles"), &body).await?;
    let url = v.get("remote_console").map(|c| s(c, "url")).unwrap_or("");
    if url.is_empty() {
        return Err(DashError::Api {
            status: StatusCode::BAD_GATEWAY,
            message: "The compute API gave no console URL.".into(),
        });
    }
    Ok(Redirect::to(url).into_response())
}
