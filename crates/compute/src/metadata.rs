//! The metadata API (Nova's `nova-api-metadata` behind Neutron's metadata proxy).
//!
//! Mounted by `stratus up` under `/metadata` on the main listener, outside Keystone auth:
//! `GET /metadata/<path>` where `<path>` is what the guest asked `http://169.254.169.254`
//! for (`/openstack/latest/meta_data.json`, `/latest/meta-data/public-keys/0/openssh-key`...).
//! The caller is a metadata proxy (crate `stratus-network-agent`, module `metadata`), which
//! identifies the instance from the guest's source address and sends, as Nova expects:
//! - `X-Instance-ID`: the server UUID (400 when missing);
//! - `X-Instance-ID-Signature`: hex HMAC-SHA256 of that UUID keyed with
//!   `[compute] metadata_proxy_shared_secret` (403 when wrong, compared in constant time).
//!
//! The secret is generated at first start when not configured and kept in
//! `<data_dir>/metadata_proxy_shared_secret` (mode 0600), so the in-process network agent
//! and any remote proxy configured with the same value agree.
//!
//! The content comes from `stratus_compute_proto::metadata` (the same builder a config
//! drive uses) fed with the instance row and its ports, subnets and floating IPs from the
//! network API.

use std::path::Path as FsPath;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use stratus_auth::RequestContext;
use stratus_compute_proto::metadata::{Entry, InstanceFacts, IpFacts, NicFacts};
use stratus_core::Platform;
use stratus_db::sqlx::Row;
use stratus_db::Query;

/// File name of the generated secret under the data directory.
pub const SECRET_FILE: &str = "metadata_proxy_shared_secret";

/// The secret in effect: the configured one, else the one generated at first start.
pub fn shared_secret(configured: &str, data_dir: &FsPath) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = data_dir.join(SECRET_FILE);
    if let Ok(s) = std::fs::read_to_string(&path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    f.write_all(secret.as_bytes())?;
    Ok(secret)
}

fn signature_ok(secret: &str, instance_id: &str, given: &str) -> bool {
    let Some(given) = (0..given.len() / 2)
        .map(|i| given.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .filter(|g| g.len() * 2 == given.len())
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(instance_id.as_bytes());
    mac.verify_slice(&given).is_ok()
}

#[derive(Clone)]
struct Meta {
    platform: Platform,
    secret: String,
}

/// The metadata routes (mount under `/metadata`).
pub fn router(platform: Platform, secret: String) -> Router {
    Router::new().fallback(serve).with_state(Meta { platform, secret })
}

fn text(status: StatusCode, body: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body.to_string()).into_response()
}

async fn serve(State(m): State<Meta>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(id) = headers.get("x-instance-id").and_then(|v| v.to_str().ok()).map(str::to_string) else {
        return text(StatusCode::BAD_REQUEST, "X-Instance-ID header is missing from request.");
    };
    let sig = headers.get("x-instance-id-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !signature_ok(&m.secret, &id, sig) {
        tracing::warn!(instance = %id, "metadata request with a bad signature");
        return text(StatusCode::FORBIDDEN, "Invalid proxy request signature.");
    }
    let facts = match facts(&m.platform, &id).await {
        Ok(Some(f)) => f,
        Ok(None) => return text(StatusCode::NOT_FOUND, "Instance not found."),
        Err(e) => {
            tracing::error!(instance = %id, "metadata: {e:#}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "An unknown error has occurred.");
        }
    };
    let path = uri.path().trim_start_matches("/metadata");
    match facts.tree().lookup(path) {
        Some(Entry::File(body)) => {
            let ct = if path.ends_with(".json") { "application/json" } else { "text/plain; charset=UTF-8" };
            (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
        }
        Some(Entry::Dir(names)) => text(StatusCode::OK, &names.join("\n")),
        None => text(StatusCode::NOT_FOUND, "The resource could not be found."),
    }
}

async fn get_json(platform: &Platform, path: &str) -> anyhow::Result<Value> {
    let r = platform.internal.call(&RequestContext::internal_admin(), axum::http::Method::GET, path, None, &[]).await?;
    anyhow::ensure!(r.status.is_success(), "GET {path}: {}", r.status);
    Ok(r.body)
}

/// Reads what the metadata is made of; `None` when the server does not exist (or is deleted).
async fn facts(platform: &Platform, id: &str) -> anyhow::Result<Option<InstanceFacts>> {
    let mut q = Query::new(
        "SELECT uuid, name, hostname, project_id, availability_zone, launch_index, reservation_id, flavor_json, \
         image_ref, key_name, key_data, user_data, security_groups_json FROM compute_instances WHERE deleted = 0 AND uuid = ",
    );
    q.bind(id);
    let Some(r) = q.fetch_optional(platform.db.reader()).await? else { return Ok(None) };
    let s = |c: &str| r.try_get::<Option<String>, _>(c).ok().flatten().unwrap_or_default();
    let flavor: Value = serde_json::from_str(&s("flavor_json")).unwrap_or_default();
    let sgs: Value = serde_json::from_str(&s("security_groups_json")).unwrap_or_default();
    let mut f = InstanceFacts {
        uuid: s("uuid"),
        name: s("name"),
        hostname: s("hostname"),
        project_id: s("project_id"),
        availability_zone: s("availability_zone"),
        launch_index: r.try_get::<i64, _>("launch_index").unwrap_or(0),
        reservation_id: s("reservation_id"),
        flavor_name: flavor["name"].as_str().unwrap_or_default().to_string(),
        image_id: s("image_ref"),
        key: (!s("key_data").is_empty()).then(|| (s("key_name"), s("key_data"))),
        user_data: Some(s("user_data"))
            .filter(|u| !u.is_empty())
            .and_then(|u| base64::engine::general_purpose::STANDARD.decode(u.trim()).ok()),
        security_groups: sgs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().or_else(|| g["name"].as_str()).map(str::to_string))
            .collect(),
        ..Default::default()
    };
    let mut mq = Query::new("SELECT meta_key, meta_value FROM compute_instance_metadata WHERE instance_uuid = ");
    mq.bind(id);
    for row in mq.fetch_all(platform.db.reader()).await? {
        if let (Ok(k), Ok(v)) = (row.try_get::<String, _>("meta_key"), row.try_get::<String, _>("meta_value")) {
            f.meta.insert(k, v);
        }
    }
    let ports = get_json(platform, &format!("/network/v2.0/ports?device_id={id}")).await?;
    for p in ports["ports"].as_array().into_iter().flatten() {
        let net_id = p["network_id"].as_str().unwrap_or_default();
        let net = get_json(platform, &format!("/network/v2.0/networks/{net_id}")).await.unwrap_or_default();
        let mut nic = NicFacts {
            port_id: p["id"].as_str().unwrap_or_default().into(),
            network_id: net_id.into(),
            mac: p["mac_address"].as_str().unwrap_or_default().into(),
            mtu: net["network"]["mtu"].as_u64().map(|m| m as u32),
            ips: vec![],
        };
        for ip in p["fixed_ips"].as_array().into_iter().flatten() {
            let sid = ip["subnet_id"].as_str().unwrap_or_default();
            let sub = get_json(platform, &format!("/network/v2.0/subnets/{sid}")).await.unwrap_or_default();
            let sub = &sub["subnet"];
            nic.ips.push(IpFacts {
                address: ip["ip_address"].as_str().unwrap_or_default().into(),
                cidr: sub["cidr"].as_str().unwrap_or_default().into(),
                gateway: sub["gateway_ip"].as_str().map(str::to_string),
                dhcp: sub["enable_dhcp"].as_bool().unwrap_or(false),
                dns_nameservers: sub["dns_nameservers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect(),
                routes: sub["host_routes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| Some((r["destination"].as_str()?.to_string(), r["nexthop"].as_str()?.to_string())))
                    .collect(),
            });
        }
        if f.public_ipv4.is_none() {
            let fips = get_json(platform, &format!("/network/v2.0/floatingips?port_id={}", nic.port_id)).await;
            f.public_ipv4 =
                fips.ok().and_then(|v| v["floatingips"][0]["floating_ip_address"].as_str().map(str::to_string));
        }
        f.nics.push(nic);
    }
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_check() {
        // RFC 4231 test case 2.
        let good = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(signature_ok("Jefe", "what do ya want for nothing?", good));
        assert!(!signature_ok("Jefe", "what do ya want for nothing!", good));
        assert!(!signature_ok("Jefe", "what do ya want for nothing?", &good[1..]));
        assert!(!signature_ok("Jefe", "what do ya want for nothing?", ""));
    }

    #[test]
    fn secret_is_generated_once() {
        let d = tempfile::tempdir().unwrap();
        let a = shared_secret("", d.path()).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(shared_secret("", d.path()).unwrap(), a);
        assert_eq!(shared_secret("set", d.path()).unwrap(), "set");
    }
}
