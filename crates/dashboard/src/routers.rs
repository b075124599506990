//! Project > Routers: the list with each router's gateway and interfaces, creating a
//! router (with a gateway on an external network when one is chosen), adding an
//! interface on a subnet, and deleting (its interfaces are removed first, as Horizon does).

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

fn router_url(d: &Dash, id: &str, what: &str) -> String {
    d.url(&format!("/project/routers/{}/{what}", stratus_core::query::encode(id)))
}

/// `GET /project/routers`.
pub async fn page(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let api = sess.api(&d);
    let (routers, nets, subnets, ports) = futures::try_join!(
        api.get(InternalUri::new("/network/v2.0/routers")),
        api.get(InternalUri::new("/network/v2.0/networks")),
        api.get(InternalUri::new("/network/v2.0/subnets")),
        api.get(InternalUri::new("/network/v2.0/ports").query("device_owner", "network:router_interface")),
    )?;
    let net_names: HashMap<&str, &str> = list(&nets, "networks").iter().map(|n| (s(n, "id"), s(n, "name"))).collect();
    let externals: Vec<&Value> = list(&nets, "networks")
        .iter()
        .filter(|n| n.get("router:external").and_then(Value::as_bool) == Some(true))
        .collect();
    let project = sess.ctx.project_id.as_deref().unwrap_or("");
    let own_subnets: Vec<&Value> =
        list(&subnets, "subnets").iter().filter(|sn| s(sn, "project_id") == project).collect();
    let subnet_label: HashMap<&str, String> = list(&subnets, "subnets")
        .iter()
        .map(|sn| (s(sn, "id"), format!("{} {}", s(sn, "name"), s(sn, "cidr"))))
        .collect();
    let body = html! {
        table #routers {
            thead { tr { th { "Name" } th { "Status" } th { "External Network" } th { "Interfaces" } th { "Actions" } } }
            tbody {
                @if list(&routers, "routers").is_empty() { tr { td colspan="5" .muted { "No routers." } } }
                @for r in list(&routers, "routers") {
                    @let id = s(r, "id");
                    tr {
                        td.name { (s(r, "name")) }
                        td { (s(r, "status")) }
                        td { @if let Some(g) = r.get("external_gateway_info").filter(|g| !g.is_null()) {
                            (net_names.get(s(g, "network_id")).copied().unwrap_or(s(g, "network_id"))) } @else { "-" } }
                        td {
                            @for p in list(&ports, "ports").iter().filter(|p| s(p, "device_id") == id) {
                                @for ip in list(p, "fixed_ips") {
                                    div { (ip.get("subnet_id").and_then(Value::as_str).and_then(|sid| subnet_label.get(sid)).cloned().unwrap_or_default())
                                          " (" (s(ip, "ip_address")) ")" }
                                }
                            }
                        }
                        td {
                            @if !own_subnets.is_empty() {
                                form.inline method="post" action=(router_url(&d, id, "interface")) {
                                    (csrf(&sess))
                                    select name="subnet_id" { @for sn in &own_subnets { option value=(s(sn, "id")) { (s(sn, "name")) " " (s(sn, "cidr")) } } }
                                    button type="submit" { "Add Interface" }
                                }
                            }
                            (action_button(&sess, &router_url(&d, id, "delete"), None, "Delete Router", true))
                        }
                    }
                }
            }
        }
        h2 { "Create Router" }
        form method="post" action=(d.url("/project/routers")) {
            (csrf(&sess))
            fieldset {
                label { "Router Name" input name="name" required maxlength="255"; }
                label { "External Network"
                    select name="external_network_id" {
                        option value="" { "None" }
                        @for n in &externals { option value=(s(n, "id")) { (s(n, "name")) } }
                    }
                }
                button type="submit" { "Create Router" }
            }
        }
    };
    Ok(layout::page(&d, &sess, "routers", "Routers", body))
}

/// The create form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    external_network_id: String,
}

/// `POST /project/routers`.
pub async fn create(State(d): State<Arc<Dash>>, sess: Sess, Form(f): Form<CreateForm>) -> Result<Redirect> {
    let name = f.name.trim();
    if name.is_empty() {
        return Err(DashError::BadInput("A router needs a name.".into()));
    }
    let mut router = json!({"name": name});
    if !f.external_network_id.is_empty() {
        router["external_gateway_info"] = json!({"network_id": f.external_network_id});
    }
    sess.api(&d).post(InternalUri::new("/network/v2.0/routers"), &json!({ "router": router })).await?;
    sess.flash(&d, false, format!("Created router {name}."));
    Ok(Redirect::to(&d.url("/project/routers")))
}

/// The add-interface form.
#[derive(Debug, Deserialize)]
pub struct InterfaceForm {
    #[serde(default)]
    subnet_id: String,
}

/// `POST /project/routers/{id}/interface`.
pub async fn add_interface(
    State(d): State<Arc<Dash>>,
    sess: Sess,
    Path(id): Path<String>,
    Form(f): Form<InterfaceForm>,
) -> Result<Redirect> {
    if f.subnet_id.is_empty() {
        return Err(DashError::BadInput("Choose the subnet to connect.".into()));
    }
    let uri = InternalUri::new("/network/v2.0/routers").seg(&id).seg("add_router_interface");
    sess.api(&d).put(uri, &json!({"subnet_id": f.subnet_id})).await?;
    sess.flash(&d, false, "Added the interface.");
    Ok(Redirect::to(&d.url("/project/routers")))
}

/// `POST /project/routers/{id}/delete`: removes the router's interfaces, then the router.
pub async fn delete(State(d): State<Arc<Dash>>, sess: Sess, Path(id): Path<String>) -> Result<Redirect> {
    let api = sess.api(&d);
    let ports = api
        .get(
            InternalUri::new("/network/v2.0/ports")
                .query("device_id", &id)
                .query("device_owner", "network:router_interface"),
        )
        .await?;
    for p in list(&ports, "ports") {
        let uri = InternalUri::new("/network/v2.0/routers").seg(&id).seg("remove_router_interface");
        api.put(uri, &json!({"port_id": s(p, "id")})).await?;
    }
    api.delete(InternalUri::new("/network/v2.0/routers").seg(&id)).await?;
    sess.flash(&d, false, "Deleted the router.");
    Ok(Redirect::to(&d.url("/project/routers")))
}
