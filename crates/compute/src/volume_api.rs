//! The block storage service as compute uses it: through its REST API (Cinder v3),
//! in-process, the way compute reaches images and networks ([`crate::clients`]).
//!
//! Attaching follows Cinder's attachments flow, as Nova does: create (reserve: the
//! volume becomes `reserved`) → update with this host's connector (the volume's agent
//! makes it reachable and answers the connection info) → `os-complete` (`in-use`) →
//! delete (`available` once no attachment is left). Calls made for a user carry the
//! user's context, so the volume service's visibility and policy rules stay its own;
//! clean-ups a user did not ask for (a server deleted) use the service's own authority.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use stratus_core::internal::{plausible_id, InternalClient, InternalUri};
use stratus_core::RequestContext;

use crate::clients::NetRefusal;

/// The microversion compute speaks to the volume service (attachments with
/// `os-complete` and attach modes).
const VERSION: (&str, &str) = ("OpenStack-API-Version", "volume 3.54");

/// What compute needs to know of a volume.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    /// Id.
    pub id: String,
    /// Cinder status (`available`, `in-use`, `error`...).
    pub status: String,
    /// Size in GiB.
    pub size: u64,
    /// May be attached to several servers.
    pub multiattach: bool,
    /// Servers it is attached to.
    pub servers: Vec<String>,
}

/// The block storage service.
#[async_trait]
pub trait VolumeApi: Send + Sync + 'static {
    /// Volume `id` as `ctx` sees it; None when it does not exist or is not visible.
    async fn get(&self, ctx: &RequestContext, id: &str) -> Result<Option<VolumeInfo>, NetRefusal>;
    /// Reserves volume `id` for server `instance`: the new attachment's id. A volume that
    /// cannot be reserved (attached already, in error) is refused with the service's 400.
    async fn reserve(&self, ctx: &RequestContext, id: &str, instance: &str) -> Result<String, NetRefusal>;
    /// Connects attachment `attachment` to the host `connector` describes: the
    /// connection info (Cinder's `connection_info`).
    async fn connect(&self, ctx: &RequestContext, attachment: &str, connector: &Value) -> Result<Value, NetRefusal>;
    /// Marks attachment `attachment` complete (the volume becomes `in-use`).
    async fn complete(&self, ctx: &RequestContext, attachment: &str) -> Result<(), NetRefusal>;
    /// Deletes attachment `attachment` (one already gone is not an error).
    async fn delete_attachment(&self, ctx: &RequestContext, attachment: &str) -> Result<(), NetRefusal>;
    /// Marks volume `id` `detaching` (`begin` true) or back `in-use` (false).
    async fn detaching(&self, ctx: &RequestContext, id: &str, begin: bool) -> Result<(), NetRefusal>;
    /// Creates a volume of `size_gb` (from image `image`, if any) named `name`: its id.
    async fn create(
        &self,
        ctx: &RequestContext,
        size_gb: u64,
        image: Option<&str>,
        name: &str,
    ) -> Result<String, NetRefusal>;
    /// Deletes volume `id` (one already gone is not an error).
    async fn delete(&self, ctx: &RequestContext, id: &str) -> Result<(), NetRefusal>;
    /// Snapshots volume `id` (attached or not) as `name`: the snapshot's id.
    async fn snapshot(&self, ctx: &RequestContext, id: &str, name: &str) -> Result<String, NetRefusal>;

    /// Waits until volume `id` is `available` (an `error` status or `within` passing
    /// is a refusal with the reason).
    async fn wait_available(&self, ctx: &RequestContext, id: &str, within: Duration) -> Result<(), NetRefusal> {
        let deadline = Instant::now() + within;
        let mut pause = Duration::from_millis(50);
        loop {
            let v = self.get(ctx, id).await?.ok_or_else(|| NetRefusal {
                status: StatusCode::NOT_FOUND,
                message: format!("Volume {id} could not be found."),
            })?;
            match v.status.as_str() {
                "available" => return Ok(()),
                "error" | "error_deleting" => {
                    return Err(NetRefusal {
                        status: StatusCode::BAD_REQUEST,
                        message: format!("Volume {id} went to status {} while it was being created", v.status),
                    })
                }
                _ if Instant::now() >= deadline => {
                    return Err(NetRefusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        message: format!("Volume {id} is still {} after {within:?}", v.status),
                    })
                }
                _ => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// The message of a volume service fault (`{"badRequest": {"message": ...}}`).
fn fault_message(body: &Value) -> String {
    body.as_object()
        .and_then(|o| o.values().find_map(|v| v["message"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string())
}

/// The block storage service over REST.
pub struct RestVolumes(pub InternalClient);

impl RestVolumes {
    async fn call(
        &self,
        ctx: &RequestContext,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), NetRefusal> {
        let r = self.0.call(ctx, method, uri, body, &[VERSION]).await.map_err(|e| NetRefusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the block storage service could not be reached: {}", e.message),
        })?;
        Ok((r.status, r.body))
    }

    /// `uri` must succeed: a 4xx comes back as that refusal, anything else as 503.
    async fn must(
        &self,
        ctx: &RequestContext,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<Value, NetRefusal> {
        let (status, body) = self.call(ctx, method, uri, body).await?;
        if status.is_success() {
            return Ok(body);
        }
        let status = if status.is_client_error() { status } else { StatusCode::SERVICE_UNAVAILABLE };
        Err(NetRefusal { status, message: fault_message(&body) })
    }
}

#[async_trait]
impl VolumeApi for RestVolumes {
    async fn get(&self, ctx: &RequestContext, id: &str) -> Result<Option<VolumeInfo>, NetRefusal> {
        if !plausible_id(id) {
            return Ok(None);
        }
        let uri = InternalUri::new("/volume/v3/volumes").seg(id);
        let (status, body) = self.call(ctx, Method::GET, uri.as_str(), None).await?;
        match status {
            s if s.is_success() => {
                let v = &body["volume"];
                Ok(Some(VolumeInfo {
                    id: v["id"].as_str().unwrap_or(id).to_string(),
                    status: v["status"].as_str().unwrap_or_default().to_string(),
                    size: v["size"].as_u64().unwrap_or(0),
                    multiattach: v["multiattach"].as_bool().unwrap_or(false),
                    servers: v["attachments"]
                        .as_array()
                        .map(|l| l.iter().filter_map(|a| a["server_id"].as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                }))
            }
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(None),
            s => Err(NetRefusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!("the block storage service answered {s} for volume {id}"),
            }),
        }
    }

    async fn reserve(&self, ctx: &RequestContext, id: &str, instance: &str) -> Result<String, NetRefusal> {
        let body = json!({"attachment": {"volume_uuid": id, "instance_uuid": instance}});
        let r = self.must(ctx, Method::POST, "/volume/v3/attachments", Some(&body)).await?;
        Ok(r["attachment"]["id"].as_str().unwrap_or_default().to_string())
    }

    async fn connect(&self, ctx: &RequestContext, attachment: &str, connector: &Value) -> Result<Value, NetRefusal> {
        let uri = InternalUri::new("/volume/v3/attachments").seg(attachment);
        let body = json!({"attachment": {"connector": connector}});
        let r = self.must(ctx, Method::PUT, uri.as_str(), Some(&body)).await?;
        Ok(r["attachment"]["connection_info"].clone())
    }

    async fn complete(&self, ctx: &RequestContext, attachment: &str) -> Result<(), NetRefusal> {
        let uri = InternalUri::new("/volume/v3/attachments").seg(attachment).seg("action");
        self.must(ctx, Method::POST, uri.as_str(), Some(&json!({"os-complete": null}))).await.map(drop)
    }

    async fn delete_attachment(&self, ctx: &RequestContext, attachment: &str) -> Result<(), NetRefusal> {
        if !plausible_id(attachment) {
            return Ok(());
        }
        let uri = InternalUri::new("/volume/v3/attachments").seg(attachment);
        match self.must(ctx, Method::DELETE, uri.as_str(), None).await {
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(()),
            r => r.map(drop),
        }
    }

    async fn detaching(&self, ctx: &RequestContext, id: &str, begin: bool) -> Result<(), NetRefusal> {
        let uri = InternalUri::new("/volume/v3/volumes").seg(id).seg("action");
        let action = if begin { "os-begin_detaching" } else { "os-roll_detaching" };
        self.must(ctx, Method::POST, uri.as_str(), Some(&json!({action: {}}))).await.map(drop)
    }

    async fn create(
        &self,
        ctx: &RequestContext,
        size_gb: u64,
        image: Option<&str>,
        name: &str,
    ) -> Result<String, NetRefusal> {
        let mut v = json!({"size": size_gb, "name": name});
        if let Some(i) = image {
            v["imageRef"] = json!(i);
        }
        let r = self.must(ctx, Method::POST, "/volume/v3/volumes", Some(&json!({"volume": v}))).await?;
        Ok(r["volume"]["id"].as_str().unwrap_or_default().to_string())
    }

    async fn snapshot(&self, ctx: &RequestContext, id: &str, name: &str) -> Result<String, NetRefusal> {
        let body = json!({"snapshot": {"volume_id": id, "force": true, "name": name}});
        let r = self.must(ctx, Method::POST, "/volume/v3/snapshots", Some(&body)).await?;
        Ok(r["snapshot"]["id"].as_str().unwrap_or_default().to_string())
    }

    async fn delete(&self, ctx: &RequestContext, id: &str) -> Result<(), NetRefusal> {
        if !plausible_id(id) {
            return Ok(());
        }
        let uri = InternalUri::new("/volume/v3/volumes").seg(id);
        match self.must(ctx, Method::DELETE, uri.as_str(), None).await {
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(()),
            r => r.map(drop),
        }
    }
}

/// No block storage service (tests of compute alone): every call is refused.
pub struct NoVolumes;

fn disabled() -> NetRefusal {
    NetRefusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "the block storage (volume) service is not enabled in this cloud".into(),
    }
}

#[async_trait]
impl VolumeApi for NoVolumes {
    async fn get(&self, _ctx: &RequestContext, _id: &str) -> Result<Option<VolumeInfo>, NetRefusal> {
        Err(disabled())
    }
    async fn reserve(&self, _ctx: &RequestContext, _id: &str, _instance: &str) -> Result<String, NetRefusal> {
        Err(disabled())
    }
    async fn connect(&self, _ctx: &RequestContext, _a: &str, _connector: &Value) -> Result<Value, NetRefusal> {
        Err(disabled())
    }
    async fn complete(&self, _ctx: &RequestContext, _a: &str) -> Result<(), NetRefusal> {
        Err(disabled())
    }
    async fn delete_attachment(&self, _ctx: &RequestContext, _a: &str) -> Result<(), NetRefusal> {
        Ok(())
    }
    async fn detaching(&self, _ctx: &RequestContext, _id: &str, _begin: bool) -> Result<(), NetRefusal> {
        Err(disabled())
    }
    async fn create(
        &self,
        _ctx: &RequestContext,
        _size_gb: u64,
        _image: Option<&str>,
        _name: &str,
    ) -> Result<String, NetRefusal> {
        Err(disabled())
    }
    async fn delete(&self, _ctx: &RequestContext, _id: &str) -> Result<(), NetRefusal> {
        Ok(())
    }
    async fn snapshot(&self, _ctx: &RequestContext, _id: &str, _name: &str) -> Result<String, NetRefusal> {
        Err(disabled())
    }
}
