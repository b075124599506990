//! The image and network services, as compute uses them: through their REST APIs,
//! in-process, on behalf of the caller (so image visibility and network ownership rules
//! are theirs to enforce, not ours).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_compute_proto::spec::{ImageSpec, PortSpec};
use stratus_core::internal::{plausible_id, InternalClient, InternalUri};
use stratus_core::RequestContext;

/// A failure of another service.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// Images.
#[async_trait]
pub trait ImageApi: Send + Sync + 'static {
    /// The image `id` as `ctx` sees it; `None` when it does not exist or is not visible.
    async fn get(&self, ctx: &RequestContext, id: &str) -> Result<Option<ImageSpec>, ClientError>;
    /// Creates a queued image record for a snapshot; returns its id. The image service's
    /// 4xx (a name too long, a reserved property) comes back with its status.
    async fn create_snapshot(&self, ctx: &RequestContext, name: &str, props: &Value) -> Result<String, NetRefusal>;
    /// Deletes image `id` with the service's own authority (the shelved snapshot of a
    /// server, when it is no longer needed); an image already gone is not an error.
    async fn delete(&self, id: &str) -> Result<(), ClientError>;
    /// One request to the image API on behalf of `ctx`, with extra `headers` (the
    /// `images` proxy API translates Nova's bodies and leaves visibility and ownership to
    /// the image service): its status and JSON body.
    async fn request(
        &self,
        _ctx: &RequestContext,
        _method: Method,
        _uri: &str,
        _body: Option<&Value>,
        _headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Value), ClientError> {
        Err(ClientError("the image service is not available in this cloud".into()))
    }
}

/// What a server asked for on `networks`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestedNetworks {
    /// `"auto"` (or nothing): the project's network, if there is exactly one.
    Auto,
    /// `"none"`: no ports.
    None,
    /// Explicit list.
    List(Vec<RequestedNetwork>),
}

/// One entry of `networks`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RequestedNetwork {
    /// Network id.
    pub uuid: Option<String>,
    /// Existing port.
    pub port: Option<String>,
    /// Fixed IP wanted.
    pub fixed_ip: Option<String>,
    /// Device tag (2.42+).
    pub tag: Option<String>,
}

/// A refusal by the network or image service, with the status it answered (so compute
/// can pass a user's mistake on as a 4xx instead of a 503).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct NetRefusal {
    /// HTTP status of the network service (503 when it could not be reached).
    pub status: StatusCode,
    /// Its message.
    pub message: String,
}

impl From<ClientError> for NetRefusal {
    fn from(e: ClientError) -> Self {
        NetRefusal { status: StatusCode::SERVICE_UNAVAILABLE, message: e.0 }
    }
}

/// A floating IP associated with one of a server's ports.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatingAddress {
    /// The port.
    pub port_id: String,
    /// The fixed IP it translates to.
    pub fixed_ip: String,
    /// The floating address.
    pub floating_ip: String,
}

/// Ports.
#[async_trait]
pub trait NetworkApi: Send + Sync + 'static {
    /// Creates or binds the ports of instance `uuid`, with the security groups (names or
    /// ids) on the ports it creates. When the network service is absent the server boots
    /// with no ports.
    async fn allocate(
        &self,
        ctx: &RequestContext,
        uuid: &str,
        host: &str,
        req: &RequestedNetworks,
        groups: &[String],
    ) -> Result<Vec<PortSpec>, ClientError>;
    /// Deletes ports we created and unbinds the others (idempotent).
    async fn deallocate(&self, uuid: &str, ports: &[PortSpec]) -> Result<(), ClientError>;
    /// Re-binds the server's ports to `host` after a move (empty: unbound, as a shelved
    /// offloaded server's ports are).
    async fn bind_host(&self, _ports: &[PortSpec], _host: &str) -> Result<(), ClientError> {
        Ok(())
    }
    /// Floating IPs associated with any of `ports` (for the server's `addresses`).
    async fn floating_ips(&self, _ports: &[String]) -> Result<Vec<FloatingAddress>, ClientError> {
        Ok(vec![])
    }
    /// Creates (or claims) and binds one more port for a running server (os-interface).
    async fn attach(
        &self,
        _ctx: &RequestContext,
        _uuid: &str,
        _host: &str,
        _req: &RequestedNetwork,
        _groups: &[String],
    ) -> Result<PortSpec, NetRefusal> {
        Err(NetRefusal {
            status: StatusCode::NOT_IMPLEMENTED,
            message: "The network service is not enabled in this cloud".into(),
        })
    }
    /// The ports whose device is server `uuid`, as the network service has them.
    async fn ports_of(&self, _uuid: &str) -> Result<Vec<Value>, ClientError> {
        Ok(vec![])
    }
    /// A security group `ctx` can use, by id or (unique) name.
    async fn find_security_group(&self, _ctx: &RequestContext, _name_or_id: &str) -> Result<Option<Value>, NetRefusal> {
        Ok(None)
    }
    /// Security groups by id (for `os-security-groups` of a server).
    async fn security_group(&self, _id: &str) -> Result<Option<Value>, ClientError> {
        Ok(None)
    }
    /// Replaces the security groups (ids) of a port.
    async fn set_port_security_groups(&self, _port_id: &str, _groups: &[String]) -> Result<(), NetRefusal> {
        Ok(())
    }
    /// One request to the network API on behalf of `ctx` (the compute proxy APIs, such as
    /// `os-security-groups`, translate Nova's bodies and leave the rules to the network
    /// service): its status and JSON body.
    async fn request(
        &self,
        _ctx: &RequestContext,
        _method: Method,
        _uri: &str,
        _body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        Err(ClientError("the network service is not available in this cloud".into()))
    }
    /// How many networks a server asking for `auto` could land on.
    async fn auto_candidates(&self, _ctx: &RequestContext) -> Result<usize, ClientError> {
        Ok(0)
    }
    /// The project's network made by get-me-a-network (`networks: "auto"` with no
    /// network available): Neutron's auto-allocated topology.
    async fn auto_allocate(&self, _ctx: &RequestContext) -> Result<Option<String>, NetRefusal> {
        Ok(None)
    }
}

fn refusal(what: &str, r: &stratus_core::internal::InternalResponse) -> NetRefusal {
    let msg = r.body["NeutronError"]["message"].as_str().unwrap_or("").to_string();
    NetRefusal { status: r.status, message: format!("{what}: {msg}") }
}

/// Image service over REST.
pub struct RestImages(pub InternalClient);

fn image_from_json(v: &Value) -> ImageSpec {
    const CORE: &[&str] = &[
        "id",
        "name",
        "disk_format",
        "container_format",
        "size",
        "min_disk",
        "min_ram",
        "status",
        "visibility",
        "owner",
        "checksum",
        "created_at",
        "updated_at",
        "tags",
        "self",
        "file",
        "schema",
        "protected",
        "virtual_size",
        "os_hash_algo",
        "os_hash_value",
        "os_hidden",
        "stores",
        "locations",
        "direct_url",
    ];
    let properties: BTreeMap<String, Value> = v
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| !CORE.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    ImageSpec {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        name: v["name"].as_str().unwrap_or_default().to_string(),
        disk_format: v["disk_format"].as_str().map(str::to_string),
        container_format: v["container_format"].as_str().map(str::to_string),
        size: v["size"].as_u64(),
        min_disk: v["min_disk"].as_u64().unwrap_or(0),
        min_ram: v["min_ram"].as_u64().unwrap_or(0),
        properties,
    }
}

#[async_trait]
impl ImageApi for RestImages {
    async fn get(&self, ctx: &RequestContext, id: &str) -> Result<Option<ImageSpec>, ClientError> {
        // Nothing that is not a plausible id can name an image.
        if !plausible_id(id) {
            return Ok(None);
        }
        let uri = InternalUri::new("/image/v2/images").seg(id);
        let r = self.0.call(ctx, Method::GET, uri.as_str(), None, &[]).await.map_err(|e| ClientError(e.message))?;
        match r.status {
            s if s.is_success() => Ok(Some(image_from_json(&r.body))),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(None),
            s => Err(ClientError(format!("image service answered {s} for image {id}"))),
        }
    }

    async fn create_snapshot(&self, ctx: &RequestContext, name: &str, props: &Value) -> Result<String, NetRefusal> {
        let mut body = json!({"name": name, "disk_format": "qcow2", "container_format": "bare"});
        if let (Some(b), Some(p)) = (body.as_object_mut(), props.as_object()) {
            for (k, v) in p {
                b.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .0
            .call(ctx, Method::POST, "/image/v2/images", Some(&body), &[])
            .await
            .map_err(|e| ClientError(e.message))?;
        if !r.status.is_success() {
            // Glance's fault body: {"code": "400 Bad Request", "title": ..., "message": ...}.
            let why = r.body["message"].as_str().map(str::to_string).unwrap_or_else(|| r.body.to_string());
            return Err(NetRefusal {
                status: r.status,
                message: format!("The image service refused the snapshot image: {why}"),
            });
        }
        Ok(r.body["id"].as_str().unwrap_or_default().to_string())
    }

    async fn delete(&self, id: &str) -> Result<(), ClientError> {
        if !plausible_id(id) {
            return Ok(());
        }
        let ctx = RequestContext::internal_admin();
        let uri = InternalUri::new("/image/v2/images").seg(id);
        let r = self.0.call(&ctx, Method::DELETE, uri.as_str(), None, &[]).await.map_err(|e| ClientError(e.message))?;
        match r.status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(ClientError(format!("image service answered {s} deleting image {id}: {}", r.body))),
        }
    }

    async fn request(
        &self,
        ctx: &RequestContext,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Value), ClientError> {
        let r = self.0.call(ctx, method, uri, body, headers).await.map_err(|e| ClientError(e.message))?;
        Ok((r.status, r.body))
    }
}

/// Network service over REST.
pub struct RestNetwork(pub InternalClient);

impl RestNetwork {
    async fn present(&self) -> bool {
        let ctx = RequestContext::internal_admin();
        match self.0.call(&ctx, Method::GET, "/network/v2.0/networks?limit=1", None, &[]).await {
            Ok(r) => r.status.is_success(),
            Err(_) => false,
        }
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<stratus_core::internal::InternalResponse, ClientError> {
        self.0.call(ctx, method, path, body, &[]).await.map_err(|e| ClientError(e.message))
    }

    /// Security group names or ids → ids, as the project sees them.
    async fn group_ids(&self, ctx: &RequestContext, groups: &[String]) -> Result<Option<Vec<String>>, NetRefusal> {
        // The project's `default` group is what Neutron gives a port anyway.
        if groups.is_empty() || groups == ["default"] {
            return Ok(None);
        }
        let mut ids = Vec::new();
        for g in groups {
            let sg = self.find_security_group(ctx, g).await?.ok_or_else(|| NetRefusal {
                status: StatusCode::BAD_REQUEST,
                message: format!(
                    "Security group {g} not found for project {}.",
                    ctx.project_id.clone().unwrap_or_default()
                ),
            })?;
            ids.push(sg["id"].as_str().unwrap_or_default().to_string());
        }
        Ok(Some(ids))
    }

    async fn create_port(
        &self,
        ctx: &RequestContext,
        uuid: &str,
        host: &str,
        net: &RequestedNetwork,
        groups: &[String],
    ) -> Result<PortSpec, NetRefusal> {
        // As Nova does: the port is created (or claimed) as the user, so it belongs to the
        // user's project and obeys its policy; binding it to a host is an admin-only
        // attribute, set afterwards with the service's own authority.
        let mut port = json!({"device_id": uuid, "device_owner": "compute:nova"});
        if let Some(n) = &net.uuid {
            port["network_id"] = json!(n);
        }
        if let Some(ip) = &net.fixed_ip {
            port["fixed_ips"] = json!([{"ip_address": ip}]);
        }
        let r = match &net.port {
            Some(p) => {
                let not_found =
                    || NetRefusal { status: StatusCode::NOT_FOUND, message: format!("Port {p} could not be found.") };
                if !plausible_id(p) {
                    return Err(not_found());
                }
                let port_uri = InternalUri::new("/network/v2.0/ports").seg(p);
                let cur = self.call(ctx, Method::GET, port_uri.as_str(), None).await?;
                if !cur.status.is_success() {
                    return Err(NetRefusal {
                        status: StatusCode::NOT_FOUND,
                        message: format!("Port {p} could not be found."),
                    });
                }
                let dev = cur.body["port"]["device_id"].as_str().unwrap_or_default();
                if !dev.is_empty() && dev != uuid {
                    return Err(NetRefusal {
                        status: StatusCode::CONFLICT,
                        message: format!("Port {p} is still in use."),
                    });
                }
                self.call(ctx, Method::PUT, port_uri.as_str(), Some(&json!({"port": port}))).await?
            }
            None => {
                if let Some(ids) = self.group_ids(ctx, groups).await? {
                    port["security_groups"] = json!(ids);
                }
                self.call(ctx, Method::POST, "/network/v2.0/ports", Some(&json!({"port": port}))).await?
            }
        };
        if !r.status.is_success() {
            return Err(refusal("network service refused the port", &r));
        }
        let port_id = r.body["port"]["id"].as_str().unwrap_or_default().to_string();
        let admin = RequestContext::internal_admin();
        let bind = json!({"port": {"binding:host_id": host}});
        let port_uri = InternalUri::new("/network/v2.0/ports").seg(&port_id);
        let r = self.call(&admin, Method::PUT, port_uri.as_str(), Some(&bind)).await?;
        if !r.status.is_success() {
            if net.port.is_none() {
                // Do not leak the port this call created.
                let _ = self.call(&admin, Method::DELETE, port_uri.as_str(), None).await;
            }
            return Err(refusal(&format!("network service refused to bind the port to {host}"), &r));
        }
        let p = &r.body["port"];
        let network_id = p["network_id"].as_str().unwrap_or_default().to_string();
        // Server `addresses` are keyed by network name, as Nova shows them.
        let network_name = match self
            .call(&admin, Method::GET, InternalUri::new("/network/v2.0/networks").seg(&network_id).as_str(), None)
            .await
        {
            Ok(n) if n.status.is_success() => n.body["network"]["name"].as_str().unwrap_or_default().to_string(),
            _ => String::new(),
        };
        Ok(PortSpec {
            id: p["id"].as_str().unwrap_or_default().into(),
            network_id,
            network_name,
            mac_address: p["mac_address"].as_str().unwrap_or_default().into(),
            fixed_ips: p["fixed_ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["ip_address"].as_str().map(str::to_string))
                .collect(),
            mtu: None,
            preserve_on_delete: net.port.is_some(),
        })
    }

    /// Networks a server asking for `auto` may land on: the project's own and shared
    /// ones, external networks excluded.
    async fn candidate_networks(&self, ctx: &RequestContext) -> Result<Vec<String>, ClientError> {
        let r = self.call(ctx, Method::GET, "/network/v2.0/networks", None).await?;
        Ok(r.body["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["router:external"].as_bool() != Some(true))
            .filter_map(|n| n["id"].as_str().map(str::to_string))
            .collect())
    }
}

#[async_trait]
impl NetworkApi for RestNetwork {
    async fn allocate(
        &self,
        ctx: &RequestContext,
        uuid: &str,
        host: &str,
        req: &RequestedNetworks,
        groups: &[String],
    ) -> Result<Vec<PortSpec>, ClientError> {
        if *req == RequestedNetworks::None || !self.present().await {
            return Ok(vec![]);
        }
        let wanted: Vec<RequestedNetwork> = match req {
            RequestedNetworks::List(l) => l.clone(),
            _ => {
                let nets = self.candidate_networks(ctx).await?;
                match nets.as_slice() {
                    [one] => vec![RequestedNetwork { uuid: Some(one.clone()), ..Default::default() }],
                    [] => match self.auto_allocate(ctx).await {
                        Ok(Some(net)) => vec![RequestedNetwork { uuid: Some(net), ..Default::default() }],
                        Ok(None) => vec![],
                        // Explicit `auto` was checked at the API; a server that asked
                        // for nothing (before 2.37) boots without ports, as in Nova.
                        Err(e) => {
                            tracing::warn!(error = %e, "no network for the server and none could be allocated");
                            vec![]
                        }
                    },
                    _ => {
                        return Err(ClientError(
                            "Multiple possible networks found, use a Network ID to be more specific.".into(),
                        ))
                    }
                }
            }
        };
        let mut ports = Vec::new();
        for w in &wanted {
            match self.create_port(ctx, uuid, host, w, groups).await {
                Ok(p) => ports.push(p),
                Err(e) => {
                    // A boot that fails half-way gives back what it took.
                    let _ = self.deallocate(uuid, &ports).await;
                    return Err(ClientError(e.message));
                }
            }
        }
        Ok(ports)
    }

    async fn bind_host(&self, ports: &[PortSpec], host: &str) -> Result<(), ClientError> {
        let admin = RequestContext::internal_admin();
        for p in ports {
            let bind = json!({"port": {"binding:host_id": host}});
            let uri = InternalUri::new("/network/v2.0/ports").seg(&p.id);
            let r = self
                .0
                .call(&admin, Method::PUT, uri.as_str(), Some(&bind), &[])
                .await
                .map_err(|e| ClientError(e.message))?;
            if !r.status.is_success() && r.status != StatusCode::NOT_FOUND {
                return Err(ClientError(format!(
                    "network service refused to bind port {} to {host}: {}",
                    p.id, r.status
                )));
            }
        }
        Ok(())
    }

    async fn deallocate(&self, _uuid: &str, ports: &[PortSpec]) -> Result<(), ClientError> {
        let ctx = RequestContext::internal_admin();
        for p in ports {
            let path = InternalUri::new("/network/v2.0/ports").seg(&p.id);
            let r = if p.preserve_on_delete {
                // The user's port outlives the server: unbind it, as Nova does.
                let unbind = json!({"port": {"device_id": "", "device_owner": "", "binding:host_id": ""}});
                self.call(&ctx, Method::PUT, path.as_str(), Some(&unbind)).await?
            } else {
                self.call(&ctx, Method::DELETE, path.as_str(), None).await?
            };
            if !r.status.is_success() && r.status != StatusCode::NOT_FOUND {
                return Err(ClientError(format!("could not release port {}: {}", p.id, r.status)));
            }
        }
        Ok(())
    }

    async fn floating_ips(&self, ports: &[String]) -> Result<Vec<FloatingAddress>, ClientError> {
        if ports.is_empty() {
            return Ok(vec![]);
        }
        let ctx = RequestContext::internal_admin();
        let mut out = Vec::new();
        // A page of servers asks once: by port for a few, else every floating IP
        // (there are far fewer of those than ports), filtered here.
        let wanted: std::collections::HashSet<&str> = ports.iter().map(String::as_str).collect();
        let path = if ports.len() <= 40 {
            ports.iter().fold(InternalUri::new("/network/v2.0/floatingips"), |u, p| u.query("port_id", p))
        } else {
            ["port_id", "fixed_ip_address", "floating_ip_address"]
                .iter()
                .fold(InternalUri::new("/network/v2.0/floatingips"), |u, f| u.query("fields", f))
        };
        let r = self.call(&ctx, Method::GET, path.as_str(), None).await?;
        if !r.status.is_success() {
            return Err(ClientError(format!("network service answered {} listing floating IPs", r.status)));
        }
        for f in r.body["floatingips"].as_array().into_iter().flatten() {
            if let (Some(port), Some(fixed), Some(fip)) =
                (f["port_id"].as_str(), f["fixed_ip_address"].as_str(), f["floating_ip_address"].as_str())
            {
                if wanted.contains(port) {
                    out.push(FloatingAddress { port_id: port.into(), fixed_ip: fixed.into(), floating_ip: fip.into() });
                }
            }
        }
        Ok(out)
    }

    async fn attach(
        &self,
        ctx: &RequestContext,
        uuid: &str,
        host: &str,
        req: &RequestedNetwork,
        groups: &[String],
    ) -> Result<PortSpec, NetRefusal> {
        if let Some(n) = &req.uuid {
            let found = plausible_id(n)
                && self
                    .call(ctx, Method::GET, InternalUri::new("/network/v2.0/networks").seg(n).as_str(), None)
                    .await?
                    .status
                    .is_success();
            if !found {
                return Err(NetRefusal {
                    status: StatusCode::NOT_FOUND,
                    message: format!("Network {n} could not be found."),
                });
            }
        }
        self.create_port(ctx, uuid, host, req, groups).await
    }

    async fn ports_of(&self, uuid: &str) -> Result<Vec<Value>, ClientError> {
        let ctx = RequestContext::internal_admin();
        let uri = InternalUri::new("/network/v2.0/ports").query("device_id", uuid);
        let r = self.call(&ctx, Method::GET, uri.as_str(), None).await?;
        if !r.status.is_success() {
            return Err(ClientError(format!("network service answered {} listing ports", r.status)));
        }
        Ok(r.body["ports"].as_array().cloned().unwrap_or_default())
    }

    async fn find_security_group(&self, ctx: &RequestContext, name_or_id: &str) -> Result<Option<Value>, NetRefusal> {
        // Names and ids are at most 255 characters: anything else names no group.
        if !plausible_id(name_or_id) {
            return Ok(None);
        }
        let uri = InternalUri::new("/network/v2.0/security-groups").seg(name_or_id);
        let r = self.call(ctx, Method::GET, uri.as_str(), None).await?;
        if r.status.is_success() {
            return Ok(Some(r.body["security_group"].clone()));
        }
        let project = ctx.project_id.clone().unwrap_or_default();
        let uri =
            InternalUri::new("/network/v2.0/security-groups").query("name", name_or_id).query("project_id", &project);
        let r = self.call(ctx, Method::GET, uri.as_str(), None).await?;
        let found = r.body["security_groups"].as_array().cloned().unwrap_or_default();
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.into_iter().next()),
            _ => Err(NetRefusal {
                status: StatusCode::CONFLICT,
                message: format!("Multiple security groups named {name_or_id} were found; use its id"),
            }),
        }
    }

    async fn security_group(&self, id: &str) -> Result<Option<Value>, ClientError> {
        if !plausible_id(id) {
            return Ok(None);
        }
        let ctx = RequestContext::internal_admin();
        let uri = InternalUri::new("/network/v2.0/security-groups").seg(id);
        let r = self.call(&ctx, Method::GET, uri.as_str(), None).await?;
        Ok(r.status.is_success().then(|| r.body["security_group"].clone()))
    }

    async fn set_port_security_groups(&self, port_id: &str, groups: &[String]) -> Result<(), NetRefusal> {
        let ctx = RequestContext::internal_admin();
        let body = json!({"port": {"security_groups": groups}});
        let uri = InternalUri::new("/network/v2.0/ports").seg(port_id);
        let r = self.call(&ctx, Method::PUT, uri.as_str(), Some(&body)).await?;
        if !r.status.is_success() {
            return Err(refusal(&format!("network service refused the security groups of port {port_id}"), &r));
        }
        Ok(())
    }

    async fn request(
        &self,
        ctx: &RequestContext,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ClientError> {
        let r = self.call(ctx, method, uri, body).await?;
        Ok((r.status, r.body))
    }

    async fn auto_candidates(&self, ctx: &RequestContext) -> Result<usize, ClientError> {
        if !self.present().await {
            return Ok(0);
        }
        Ok(self.candidate_networks(ctx).await?.len())
    }

    async fn auto_allocate(&self, ctx: &RequestContext) -> Result<Option<String>, NetRefusal> {
        let project = ctx.project_id.clone().unwrap_or_default();
        let uri = InternalUri::new("/network/v2.0/auto-allocated-topology").seg(&project);
        let r = self.call(ctx, Method::GET, uri.as_str(), None).await?;
        if !r.status.is_success() {
            return Err(refusal("Unable to automatically allocate a network for the project", &r));
        }
        Ok(r.body["auto_allocated_topology"]["id"].as_str().map(str::to_string))
    }
}

/// Images in memory (tests and benchmarks without the image service).
#[derive(Clone, Default)]
pub struct MemoryImages(pub Arc<Mutex<BTreeMap<String, ImageSpec>>>);

impl MemoryImages {
    /// Adds an image.
    pub fn add(&self, id: &str, name: &str) {
        self.0.lock().insert(
            id.into(),
            ImageSpec { id: id.into(), name: name.into(), disk_format: Some("qcow2".into()), ..Default::default() },
        );
    }
}

#[async_trait]
impl ImageApi for MemoryImages {
    async fn get(&self, _ctx: &RequestContext, id: &str) -> Result<Option<ImageSpec>, ClientError> {
        Ok(self.0.lock().get(id).cloned())
    }
    async fn create_snapshot(&self, _ctx: &RequestContext, name: &str, _props: &Value) -> Result<String, NetRefusal> {
        let id = uuid::Uuid::new_v4().to_string();
        self.add(&id, name);
        Ok(id)
    }
    async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.0.lock().remove(id);
        Ok(())
    }
}

/// No network service: every server boots without ports.
pub struct NoNetwork;

#[async_trait]
impl NetworkApi for NoNetwork {
    async fn allocate(
        &self,
        _: &RequestContext,
        _: &str,
        _: &str,
        _: &RequestedNetworks,
        _: &[String],
    ) -> Result<Vec<PortSpec>, ClientError> {
        Ok(vec![])
    }
    async fn deallocate(&self, _: &str, _: &[PortSpec]) -> Result<(), ClientError> {
        Ok(())
    }
}
