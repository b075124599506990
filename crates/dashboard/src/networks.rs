//! Project > Networks: the list with each network's subnets, creating a network with
//! its subnet (the network is deleted again when the subnet is refused, so a failed
//! create leaves nothing behind), and deleting.

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

fn flag(v: &Value, key: &str) -> &'static str {
    if v.get(key).and_then(Value::as_bool).unwrap_or(false) {
        "Yes"
    } else {
        "No"
    }
}

/// `GET /project/networks`.
pub async fn page(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let api = sess.api(&d);
    let (nets, subnets) = futures::try_join!(
        api.get(InternalUri::new("/network/v2.0/networks")),
        api.get(InternalUri::new("/network/v2.0/subnets")),
    )?;
    let subnets: HashMap<&str, &Value> = list(&subnets, "subnets").iter().map(|sn| (s(sn, "id"), sn)).collect();
    let project = sess.ctx.project_id.as_deref().unwrap_or("");
    let body = html! {
        table #networks {
            thead { tr { th { "Name" } th { "Subnets Associated" } th { "Shared" } th { "External" } th { "Status" }
                         th { "Admin State" } th { "Actions" } } }
            tbody {
                @for n in list(&nets, "networks") {
                    tr {
                        td.name { (s(n, "name")) }
                        td {
                            @for sid in list(n, "subnets") {
                                @if let Some(sn) = sid.as_str().and_then(|id| subnets.get(id)) {
                                    div { (s(sn, "name")) " " (s(sn, "cidr")) }
                                }
                            }
                        }
                        td { (flag(n, "shared")) }
                        td { (flag(n, "router:external")) }
                        td { (s(n, "status")) }
                        td { (if flag(n, "admin_state_up") == "Yes" { "UP" } else { "DOWN" }) }
                        td {
                            @if s(n, "project_id") == project {
                                (action_button(&sess, &d.url(&format!("/project/networks/{}/delete",
                                    stratus_core::query::encode(s(n, "id")))), None, "Delete Network", true))
                            }
                        }
                    }
                }
            }
        }
        h2 { "Create Network" }
        form method="post" action=(d.url("/project/networks")) {
            (csrf(&sess))
            fieldset {
                label { "Network Name" input name="name" required maxlength="255"; }
                label { "Subnet Name" input name="subnet_name" maxlength="255"; }
                label { "Network Address (CIDR; empty for no subnet)" input name="cidr" placeholder="192.168.0.0/24"; }
                label { "Gateway IP (empty for the first address)" input name="gateway_ip"; }
                label { input type="checkbox" name="enable_dhcp" value="on" checked; " Enable DHCP" }
                button type="submit" { "Create" }
            }
        }
    };
    Ok(layout::page(&d, &sess, "networks", "Networks", body))
}

/// The create form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    subnet_name: String,
    #[serde(default)]
    cidr: String,
    #[serde(default)]
    gateway_ip: String,
    #[serde(default)]
    enable_dhcp: Option<String>,
}

/// `POST /project/networks`: the network, then its subnet; the network is removed
/// again when the subnet is refused.
pub async fn create(State(d): State<Arc<Dash>>, sess: Sess, Form(f): Form<CreateForm>) -> Result<Redirect> {
    let name = f.name.trim();
    if name.is_empty() {
        return Err(DashError::BadInput("A network needs a name.".into()));
    }
    let api = sess.api(&d);
    let net = api.post(InternalUri::new("/network/v2.0/networks"), &json!({"network": {"name": name}})).await?;
    let net_id = net.get("network").map(|n| s(n, "id")).unwrap_or("").to_string();
    let cidr = f.cidr.trim();
    if !cidr.is_empty() {
        let version = if cidr.contains(':') { 6 } else { 4 };
        let mut subnet = json!({
            "network_id": net_id, "name": f.subnet_name.trim(), "cidr": cidr, "ip_version": version,
            "enable_dhcp": f.enable_dhcp.is_some(),
        });
        if !f.gateway_ip.trim().is_empty() {
            subnet["gateway_ip"] = json!(f.gateway_ip.trim());
        }
        if let Err(e) = api.post(InternalUri::new("/network/v2.0/subnets"), &json!({ "subnet": subnet })).await {
            if let Err(undo) = api.delete(InternalUri::new("/network/v2.0/networks").seg(&net_id)).await {
                tracing::warn!(network = %net_id, error = %undo, "removing the network of a refused subnet failed");
            }
            return Err(e);
        }
    }
    sess.flash(&d, false, format!("Created network {name}."));
    Ok(Redirect::to(&d.url("/project/networks")))
}

/// `POST /project/networks/{id}/delete`.
pub async fn delete(State(d): State<Arc<Dash>>, sess: Sess, Path(id): Path<String>) -> Result<Redirect> {
    sess.api(&d).delete(InternalUri::new("/network/v2.0/networks").seg(&id)).await?;
    sess.flash(&d, false, "Deleted the network.");
    Ok(Redirect::to(&d.url("/project/networks")))
}
