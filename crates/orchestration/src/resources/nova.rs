//! Compute types, made through the compute API (Nova v2.1) as the stack's owner:
//! `OS::Nova::KeyPair` and `OS::Nova::Server`. A server is created, recorded, then
//! waited for until ACTIVE (ERROR fails the resource with Nova's fault message); its
//! deletion waits until the compute API no longer knows it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Method;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use stratus_core::internal::InternalUri;

use super::{opt, prop_str, req, Change, Created, Cx, Kind, Prop, Registry, ResourceType};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(KeyPair));
    r.add(Arc::new(Server));
}

fn compute(path: &str) -> InternalUri {
    InternalUri::new("/compute/v2.1").seg(path)
}

struct KeyPair;

#[async_trait]
impl ResourceType for KeyPair {
    fn name(&self) -> &'static str {
        "OS::Nova::KeyPair"
    }
    fn description(&self) -> &'static str {
        "An SSH key pair, imported or generated."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            req("name", Kind::Str, "Name of the key pair."),
            opt("public_key", Kind::Str, "Public key to import; a key is generated when absent."),
            opt("save_private_key", Kind::Bool, "Keep a generated private key in the private_key attribute."),
            opt("type", Kind::Str, "ssh (default) or x509."),
            opt("user", Kind::Str, "Owner (admin)."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["public_key", "private_key"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let name = prop_str(props, "name").unwrap_or_default().to_string();
        let mut kp = Map::new();
        kp.insert("name".into(), json!(name));
        if let Some(k) = prop_str(props, "public_key") {
            kp.insert("public_key".into(), json!(k));
        }
        let r = cx.call(Method::POST, &compute("os-keypairs"), Some(json!({"keypair": kp}))).await?;
        cx.started(&name).await?;
        let mut attrs = json!({"public_key": r["keypair"]["public_key"], "name": name});
        let save = props.get("save_private_key").and_then(Value::as_bool).unwrap_or(false);
        attrs["private_key"] = if save { r["keypair"]["private_key"].clone() } else { json!("") };
        Ok(Created { physical_id: name, ref_id: None, attributes: attrs })
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        cx.delete(&compute("os-keypairs").seg(id)).await
    }
}

struct Server;

/// Resolves an image name to its id through the image API (ids pass as they are).
pub(super) async fn image_id(cx: &Cx, image: &str) -> Result<String, String> {
    if uuid::Uuid::parse_str(image).is_ok() {
        return Ok(image.to_string());
    }
    let r = cx.call(Method::GET, &InternalUri::new("/image/v2/images").query("name", image), None).await?;
    match r["images"].as_array().map(Vec::as_slice).unwrap_or_default() {
        [one] => Ok(one["id"].as_str().unwrap_or_default().to_string()),
        [] => Err(format!("NotFound: resources.{}: Image {image} could not be found.", cx.resource_name)),
        _ => Err(format!("Conflict: resources.{}: Multiple images are named {image}: use an id.", cx.resource_name)),
    }
}

/// Resolves a flavor name to its id through the compute API.
async fn flavor_id(cx: &Cx, flavor: &str) -> Result<String, String> {
    if let Ok(path) = compute("flavors").seg(flavor).check() {
        if let Ok(r) = cx.internal.call(&cx.ctx, Method::GET, path, None, &[]).await {
            if r.status.is_success() {
                return Ok(flavor.to_string());
            }
        }
    }
    let r = cx.call(Method::GET, &compute("flavors").query("is_public", "None"), None).await?;
    let matches: Vec<&Value> =
        r["flavors"].as_array().map(|a| a.iter().filter(|f| f["name"] == flavor).collect()).unwrap_or_default();
    match matches.as_slice() {
        [one] => Ok(one["id"].as_str().unwrap_or_default().to_string()),
        [] => Err(format!("NotFound: resources.{}: Flavor {flavor} could not be found.", cx.resource_name)),
        _ => Err(format!("Conflict: resources.{}: Multiple flavors are named {flavor}: use an id.", cx.resource_name)),
    }
}

/// Heat's `networks` attribute (`{network name: [addresses]}`) and `first_address`.
fn address_attrs(server: &Value) -> (Value, Value) {
    let mut nets = Map::new();
    let mut first = Value::String(String::new());
    if let Some(addrs) = server["addresses"].as_object() {
        for (net, list) in addrs {
            let ips: Vec<Value> =
                list.as_array().map(|a| a.iter().map(|x| x["addr"].clone()).collect()).unwrap_or_default();
            if first.as_str() == Some("") {
                if let Some(ip) = ips.first() {
                    first = ip.clone();
                }
            }
            nets.insert(net.clone(), Value::Array(ips));
        }
    }
    (Value::Object(nets), first)
}

/// How long a server may take to become ACTIVE or to disappear (the stack's own
/// timeout, when set, is shorter).
const SERVER_WAIT: Duration = Duration::from_secs(3600);

#[async_trait]
impl ResourceType for Server {
    fn name(&self) -> &'static str {
        "OS::Nova::Server"
    }
    fn description(&self) -> &'static str {
        "A server (an instance), waited for until ACTIVE."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("name", Kind::Str, "Name (default: <stack>-<resource>-<random>)."),
            opt("image", Kind::Str, "Image (name or id)."),
            req("flavor", Kind::Str, "Flavor (name or id)."),
            opt("key_name", Kind::Str, "Key pair name."),
            opt("networks", Kind::List, "Networks: {network, port, fixed_ip} each."),
            opt("security_groups", Kind::List, "Security groups of ports the server gets."),
            opt("user_data", Kind::Str, "User data."),
            opt("user_data_format", Kind::Str, "RAW, or SOFTWARE_CONFIG: user_data names a config."),
            opt("metadata", Kind::Map, "Metadata."),
            opt("availability_zone", Kind::Str, "Availability zone."),
            opt("config_drive", Kind::Bool, "Attach a config drive."),
            opt("admin_pass", Kind::Str, "Administrator password."),
            opt("scheduler_hints", Kind::Map, "Scheduler hints."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["first_address", "networks", "addresses", "name", "accessIPv4", "accessIPv6", "instance_name", "id", "status"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let mut s = Map::new();
        s.insert(
            "name".into(),
            json!(prop_str(props, "name").map(str::to_string).unwrap_or_else(|| cx.physical_name())),
        );
        s.insert("flavorRef".into(), json!(flavor_id(cx, prop_str(props, "flavor").unwrap_or_default()).await?));
        if let Some(i) = prop_str(props, "image") {
            s.insert("imageRef".into(), json!(image_id(cx, i).await?));
        }
        for (p, f) in
            [("key_name", "key_name"), ("availability_zone", "availability_zone"), ("admin_pass", "adminPass")]
        {
            if let Some(v) = prop_str(props, p) {
                s.insert(f.into(), json!(v));
            }
        }
        if let Some(m) = props.get("metadata").filter(|m| m.is_object()) {
            s.insert("metadata".into(), m.clone());
        }
        if let Some(b) = props.get("config_drive").and_then(Value::as_bool) {
            s.insert("config_drive".into(), json!(b));
        }
        let user_data = match (prop_str(props, "user_data_format"), props.get("user_data").and_then(Value::as_str)) {
            (_, None) => None,
            // HEAT_CFNTOOLS (Heat's default) is passed as it is: cloud-init runs it.
            (None | Some("RAW") | Some("HEAT_CFNTOOLS"), Some(u)) => Some(u.to_string()),
            // The text of the config (SoftwareConfig, CloudConfig, MultipartMime) named.
            (Some("SOFTWARE_CONFIG"), Some(id)) => Some(super::config::config_text(cx, id).await?),
            (Some(other), Some(_)) => {
                return Err(format!(
                    "Property error: resources.{}.properties.user_data_format: \"{other}\" is not supported (RAW, HEAT_CFNTOOLS or SOFTWARE_CONFIG)",
                    cx.resource_name
                ))
            }
        };
        if let Some(u) = user_data {
            s.insert("user_data".into(), json!(base64::engine::general_purpose::STANDARD.encode(u)));
        }
        if let Some(Value::Array(sgs)) = props.get("security_groups") {
            s.insert("security_groups".into(), Value::Array(sgs.iter().map(|g| json!({"name": g})).collect()));
        }
        if let Some(Value::Array(nets)) = props.get("networks") {
            let mut out = Vec::new();
            for (i, n) in nets.iter().enumerate() {
                let mut e = Map::new();
                if let Some(p) = n["port"].as_str() {
                    e.insert("port".into(), json!(cx.neutron_id("ports", "port", p).await?));
                } else if let Some(net) = n["network"].as_str().or_else(|| n["uuid"].as_str()) {
                    e.insert("uuid".into(), json!(cx.neutron_id("networks", "network", net).await?));
                } else {
                    return Err(format!(
                        "Property error: resources.{}.properties.networks[{i}]: one of network or port is required",
                        cx.resource_name
                    ));
                }
                if let Some(ip) = n["fixed_ip"].as_str() {
                    e.insert("fixed_ip".into(), json!(ip));
                }
                out.push(Value::Object(e));
            }
            s.insert("networks".into(), Value::Array(out));
        }
        let mut body = json!({"server": s});
        if let Some(h) = props.get("scheduler_hints").filter(|h| h.is_object()) {
            body["os:scheduler_hints"] = h.clone();
        }
        let r = cx.call(Method::POST, &compute("servers"), Some(body)).await?;
        let id = r["server"]["id"]
            .as_str()
            .ok_or_else(|| format!("resources.{}: no server id", cx.resource_name))?
            .to_string();
        cx.started(&id).await?;
        let deadline = tokio::time::Instant::now() + SERVER_WAIT;
        let mut delay = Duration::from_millis(200);
        loop {
            let r = cx.call(Method::GET, &compute("servers").seg(&id), None).await?;
            let server = r["server"].clone();
            match server["status"].as_str() {
                Some("ACTIVE") => {
                    return Ok(Created { physical_id: id, ref_id: None, attributes: server_attributes(&server) });
                }
                Some("ERROR") => {
                    let why = server["fault"]["message"].as_str().unwrap_or("no fault recorded");
                    return Err(format!(
                        "ResourceInError: resources.{}: Went to status ERROR due to \"{why}\"",
                        cx.resource_name
                    ));
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("resources.{}: the server did not become ACTIVE in time", cx.resource_name));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        cx.delete(&compute("servers").seg(id)).await?;
        let deadline = tokio::time::Instant::now() + SERVER_WAIT;
        let mut delay = Duration::from_millis(200);
        loop {
            let path = compute("servers").seg(id);
            let r = cx
                .internal
                .call(&cx.ctx, Method::GET, path.check().map_err(|e| e.message.clone())?, None, &[])
                .await
                .map_err(|e| e.message)?;
            if r.status.as_u16() == 404 || r.body["server"]["status"] == "DELETED" {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("resources.{}: the server was not deleted in time", cx.resource_name));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
    fn updatable(&self) -> &'static [&'static str] {
        &["name", "metadata"]
    }
    /// A new name (`PUT /servers/{id}`), new metadata (`PUT /servers/{id}/metadata`,
    /// which replaces it all).
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        let uri = compute("servers").seg(change.physical_id);
        if change.changed.iter().any(|c| c == "name") {
            let name = prop_str(change.new, "name").map(str::to_string).unwrap_or_else(|| cx.physical_name());
            cx.call(Method::PUT, &uri, Some(json!({"server": {"name": name}}))).await?;
        }
        if change.changed.iter().any(|c| c == "metadata") {
            let meta = change.new.get("metadata").filter(|m| m.is_object()).cloned().unwrap_or(json!({}));
            cx.call(Method::PUT, &uri.clone().seg("metadata"), Some(json!({"metadata": meta}))).await?;
        }
        let server = cx.call(Method::GET, &uri, None).await?["server"].clone();
        Ok(Created {
            physical_id: change.physical_id.to_string(),
            ref_id: None,
            attributes: server_attributes(&server),
        })
    }
}

/// A server's attributes: its representation with Heat's computed `networks`,
/// `first_address` and `instance_name`.
fn server_attributes(server: &Value) -> Value {
    let (networks, first) = address_attrs(server);
    let mut attrs = server.clone();
    attrs["networks"] = networks;
    attrs["first_address"] = first;
    attrs["instance_name"] = server["OS-EXT-SRV-ATTR:instance_name"].clone();
    attrs
}
