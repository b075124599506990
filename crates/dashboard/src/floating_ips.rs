//! Project > Floating IPs: the project's floating IPs, allocating one from an external
//! network, associating it with a port of one of the project's instances,
//! disassociating and releasing.

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

fn fip_url(d: &Dash, id: &str, what: &str) -> String {
    d.url(&format!("/project/floating_ips/{}/{what}", stratus_core::query::encode(id)))
}

/// `GET /project/floating_ips`.
pub async fn page(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let api = sess.api(&d);
    let (fips, nets, ports, servers) = futures::try_join!(
        api.get(InternalUri::new("/network/v2.0/floatingips")),
        api.get(InternalUri::new("/network/v2.0/networks").query("router:external", "true")),
        api.get(InternalUri::new("/network/v2.0/ports")),
        api.get(InternalUri::new("/compute/v2.1/servers")),
    )?;
    let server_names: HashMap<&str, &str> =
        list(&servers, "servers").iter().map(|v| (s(v, "id"), s(v, "name"))).collect();
    let net_names: HashMap<&str, &str> = list(&nets, "networks").iter().map(|n| (s(n, "id"), s(n, "name"))).collect();
    // Ports of this project's instances, labelled "instance: address".
    let targets: Vec<(String, String)> = list(&ports, "ports")
        .iter()
        .filter(|p| s(p, "device_owner").starts_with("compute:"))
        .map(|p| {
            let ip = list(p, "fixed_ips").first().map(|f| s(f, "ip_address")).unwrap_or("");
            let server = server_names.get(s(p, "device_id")).copied().unwrap_or(s(p, "device_id"));
            (s(p, "id").to_string(), format!("{server}: {ip}"))
        })
        .collect();
    let port_label: HashMap<&str, &str> = targets.iter().map(|(id, l)| (id.as_str(), l.as_str())).collect();
    let body = html! {
        table #floating-ips {
            thead { tr { th { "IP Address" } th { "Mapped Fixed IP Address" } th { "Pool" } th { "Status" } th { "Actions" } } }
            tbody {
                @if list(&fips, "floatingips").is_empty() { tr { td colspan="5" .muted { "No floating IPs." } } }
                @for f in list(&fips, "floatingips") {
                    @let id = s(f, "id");
                    tr {
                        td.address { (s(f, "floating_ip_address")) }
                        td { @if let Some(p) = f.get("port_id").and_then(Value::as_str) {
                                (port_label.get(p).copied().unwrap_or(s(f, "fixed_ip_address"))) } @else { "-" } }
                        td { (net_names.get(s(f, "floating_network_id")).copied().unwrap_or(s(f, "floating_network_id"))) }
                        td { (s(f, "status")) }
                        td {
                            @if f.get("port_id").is_some_and(|p| !p.is_null()) {
                                (action_button(&sess, &fip_url(&d, id, "disassociate"), None, "Disassociate", false))
                            } @else if !targets.is_empty() {
                                form.inline method="post" action=(fip_url(&d, id, "associate")) {
                                    (csrf(&sess))
                                    select name="port_id" { @for (pid, label) in &targets { option value=(pid) { (label) } } }
                                    button type="submit" { "Associate" }
                                }
                            }
                            (action_button(&sess, &fip_url(&d, id, "release"), None, "Release Floating IP", true))
                        }
                    }
                }
            }
        }
        h2 { "Allocate IP To Project" }
        @if net_names.is_empty() {
            p.muted { "No external network to allocate from." }
        } @else {
            form method="post" action=(d.url("/project/floating_ips")) {
                (csrf(&sess))
                fieldset {
                    label { "Pool"
                        select name="network_id" { @for n in list(&nets, "networks") { option value=(s(n, "id")) { (s(n, "name")) } } }
                    }
                    button type="submit" { "Allocate IP" }
                }
            }
        }
    };
    Ok(layout::page(&d, &sess, "floating_ips", "Floating IPs", body))
}

/// The allocate form.
#[derive(Debug, Deserialize)]
pub struct AllocateForm {
    #[serde(default)]
    network_id: String,
}

/// `POST /project/floating_ips`.
pub async fn allocate(State(d): State<Arc<Dash>>, sess: Sess, Form(f): Form<AllocateForm>) -> Result<Redirect> {
    if f.network_id.is_empty() {
        return Err(DashError::BadInput("Choose the pool (external network) to allocate from.".into()));
    }
    let body = json!({"floatingip": {"floating_network_id": f.network_id}});
    let v = sess.api(&d).post(InternalUri::new("/network/v2.0/floatingips"), &body).await?;
    let addr = v.get("floatingip").map(|f| s(f, "floating_ip_address")).unwrap_or("");
    sess.flash(&d, false, format!("Allocated floating IP {addr}."));
    Ok(Redirect::to(&d.url("/project/floating_ips")))
}

/// The associate form.
#[derive(Debug, Deserialize)]
pub struct AssociateForm {
    #[serde(default)]
    port_id: String,
}

/// `POST /project/floating_ips/{id}/associate`.
pub async fn associate(
    State(d): State<Arc<Dash>>,
    sess: Sess,
    Path(id): Path<String>,
    Form(f): Form<AssociateForm>,
) -> Result<Redirect> {
    if f.port_id.is_empty() {
        return Err(DashError::BadInput("Choose the instance port to associate with.".into()));
    }
    let uri = InternalUri::new("/network/v2.0/floatingips").seg(&id);
    sess.api(&d).put(uri, &json!({"floatingip": {"port_id": f.port_id}})).await?;
    sess.flash(&d, false, "Associated the floating IP.");
    Ok(Redirect::to(&d.url("/project/floating_ips")))
}

/// `POST /project/floating_ips/{id}/disassociate`.
pub async fn disassociate(State(d): State<Arc<Dash>>, sess: Sess, Path(id): Path<String>) -> Result<Redirect> {
    let uri = InternalUri::new("/network/v2.0/floatingips").seg(&id);
    sess.api(&d).put(uri, &json!({"floatingip": {"port_id": null}})).await?;
    sess.flash(&d, false, "Disassociated the floating IP.");
    Ok(Redirect::to(&d.url("/project/floating_ips")))
}

/// `POST /project/floating_ips/{id}/release`.
pub async fn release(State(d): State<Arc<Dash>>, sess: Sess, Path(id): Path<String>) -> Result<Redirect> {
    sess.api(&d).delete(InternalUri::new("/network/v2.0/floatingips").seg(&id)).await?;
    sess.flash(&d, false, "Released the floating IP.");
    Ok(Redirect::to(&d.url("/project/floating_ips")))
}
