//! The image and network services, as compute uses them: through their REST APIs,
//! in-process, on behalf of the caller (so image visibility and network ownership rules
//! are theirs to enforce, not ours).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_compute_agent::rpc::{ImageSpec, PortSpec};
use stratus_core::internal::InternalClient;
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
    /// Creates a queued image record for a snapshot; returns its id.
    async fn create_snapshot(&self, ctx: &RequestContext, name: &str, props: &Value) -> Result<String, ClientError>;
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

/// Ports.
#[async_trait]
pub trait NetworkApi: Send + Sync + 'static {
    /// Creates or binds the ports of instance `uuid`. When the network service is absent
    /// the server boots with no ports.
    async fn allocate(
        &self,
        ctx: &RequestContext,
        uuid: &str,
        host: &str,
        req: &RequestedNetworks,
    ) -> Result<Vec<PortSpec>, ClientError>;
    /// Deletes ports we created and unbinds the others (idempotent).
    async fn deallocate(&self, uuid: &str, ports: &[PortSpec]) -> Result<(), ClientError>;
    /// Re-binds the server's ports to `host` after a move (empty: unbound, as a shelved
    /// offloaded server's ports are).
    async fn bind_host(&self, _ports: &[PortSpec], _host: &str) -> Result<(), ClientError> {
        Ok(())
    }
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
        if id.is_empty() || id.contains('/') || id.contains('?') {
            return Ok(None);
        }
        let r = self
            .0
            .call(ctx, Method::GET, &format!("/image/v2/images/{id}"), None, &[])
            .await
            .map_err(|e| ClientError(e.message))?;
        match r.status {
            s if s.is_success() => Ok(Some(image_from_json(&r.body))),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(None),
            s => Err(ClientError(format!("image service answered {s} for image {id}"))),
        }
    }

    async fn create_snapshot(&self, ctx: &RequestContext, name: &str, props: &Value) -> Result<String, ClientError> {
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
            return Err(ClientError(format!("image service refused the snapshot image: {} {}", r.status, r.body)));
        }
        Ok(r.body["id"].as_str().unwrap_or_default().to_string())
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

    async fn create_port(
        &self,
        ctx: &RequestContext,
        uuid: &str,
        host: &str,
        net: &RequestedNetwork,
    ) -> Result<PortSpec, ClientError> {
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
                self.0
                    .call(ctx, Method::PUT, &format!("/network/v2.0/ports/{p}"), Some(&json!({"port": port})), &[])
                    .await
            }
            None => self.0.call(ctx, Method::POST, "/network/v2.0/ports", Some(&json!({"port": port})), &[]).await,
        }
        .map_err(|e| ClientError(e.message))?;
        if !r.status.is_success() {
            let msg = r.body["NeutronError"]["message"].as_str().unwrap_or("").to_string();
            return Err(ClientError(format!("network service refused the port: {} {msg}", r.status)));
        }
        let port_id = r.body["port"]["id"].as_str().unwrap_or_default().to_string();
        let admin = RequestContext::internal_admin();
        let bind = json!({"port": {"binding:host_id": host}});
        let r = self
            .0
            .call(&admin, Method::PUT, &format!("/network/v2.0/ports/{port_id}"), Some(&bind), &[])
            .await
            .map_err(|e| ClientError(e.message))?;
        if !r.status.is_success() {
            if net.port.is_none() {
                // Do not leak the port this call created.
                let _ = self.0.call(&admin, Method::DELETE, &format!("/network/v2.0/ports/{port_id}"), None, &[]).await;
            }
            let msg = r.body["NeutronError"]["message"].as_str().unwrap_or("").to_string();
            return Err(ClientError(format!("network service refused to bind the port to {host}: {} {msg}", r.status)));
        }
        let p = &r.body["port"];
        let network_id = p["network_id"].as_str().unwrap_or_default().to_string();
        // Server `addresses` are keyed by network name, as Nova shows them.
        let network_name =
            match self.0.call(&admin, Method::GET, &format!("/network/v2.0/networks/{network_id}"), None, &[]).await {
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
        })
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
    ) -> Result<Vec<PortSpec>, ClientError> {
        if *req == RequestedNetworks::None || !self.present().await {
            return Ok(vec![]);
        }
        let wanted: Vec<RequestedNetwork> = match req {
            RequestedNetworks::List(l) => l.clone(),
            _ => {
                let r = self
                    .0
                    .call(ctx, Method::GET, "/network/v2.0/networks", None, &[])
                    .await
                    .map_err(|e| ClientError(e.message))?;
                let nets: Vec<&Value> = r.body["networks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| n["router:external"].as_bool() != Some(true))
                    .collect();
                match nets.as_slice() {
                    [one] => {
                        vec![RequestedNetwork { uuid: one["id"].as_str().map(str::to_string), ..Default::default() }]
                    }
                    _ => vec![],
                }
            }
        };
        let mut ports = Vec::new();
        for w in &wanted {
            match self.create_port(ctx, uuid, host, w).await {
                Ok(p) => ports.push(p),
                Err(e) => {
                    let _ = self.deallocate(uuid, &ports).await;
                    return Err(e);
                }
            }
        }
        Ok(ports)
    }

    async fn bind_host(&self, ports: &[PortSpec], host: &str) -> Result<(), ClientError> {
        let admin = RequestContext::internal_admin();
        for p in ports {
            let bind = json!({"port": {"binding:host_id": host}});
            let r = self
                .0
                .call(&admin, Method::PUT, &format!("/network/v2.0/ports/{}", p.id), Some(&bind), &[])
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
            let r = self
                .0
                .call(&ctx, Method::DELETE, &format!("/network/v2.0/ports/{}", p.id), None, &[])
                .await
                .map_err(|e| ClientError(e.message))?;
            if !r.status.is_success() && r.status != StatusCode::NOT_FOUND {
                return Err(ClientError(format!("could not delete port {}: {}", p.id, r.status)));
            }
        }
        Ok(())
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
    async fn create_snapshot(&self, _ctx: &RequestContext, name: &str, _props: &Value) -> Result<String, ClientError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.add(&id, name);
        Ok(id)
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
    ) -> Result<Vec<PortSpec>, ClientError> {
        Ok(vec![])
    }
    async fn deallocate(&self, _: &str, _: &[PortSpec]) -> Result<(), ClientError> {
        Ok(())
    }
}
