//! Container requests: `PUT` (create or update), `POST` (metadata, ACLs, quotas,
//! versioning), `HEAD`, `GET` (object listing) and `DELETE` (409 unless empty).
//!
//! Values are validated before anything is stored: ACLs must parse, quota values must be
//! integers, a versions location must be a container name, and only one of
//! `X-Versions-Location` / `X-History-Location` may be set.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::access;
use crate::db;
use crate::error::{Result, SwiftError};
use crate::listing::{self, Format};
use crate::meta::{self, Kind};
use crate::proxy::{empty, respond, set, Call};
use crate::Svc;

/// Container metadata only the owner sees (ACLs, secrets).
const OWNER_ONLY: &[&str] = &[
    "x-container-read",
    "x-container-write",
    "x-container-sync-key",
    "x-container-sync-to",
    "x-container-meta-temp-url-key",
    "x-container-meta-temp-url-key-2",
];

/// Dispatches a container request.
pub async fn handle(svc: &std::sync::Arc<Svc>, call: &Call, _body: Body) -> Result<Response> {
    match call.method {
        Method::PUT if call.query.contains_key("extract-archive") => crate::bulk::extract(svc, call, _body).await,
        Method::PUT => {
            require_owner(call)?;
            put(svc, call).await
        }
        Method::POST => {
            if crate::formpost::is_form(call) {
                return crate::formpost::handle(svc, call, _body).await;
            }
            require_owner(call)?;
            post(svc, call).await
        }
        Method::DELETE => {
            require_owner(call)?;
            db::delete_container(&svc.platform.db, &call.t.account, call.container()).await.map(|blobs| {
                svc.release_blobs(blobs);
                empty(StatusCode::NO_CONTENT)
            })
        }
        Method::HEAD | Method::GET => read(svc, call).await,
        _ => Err(SwiftError::MethodNotAllowed),
    }
}

fn require_owner(call: &Call) -> Result<()> {
    if call.grant.owns() {
        Ok(())
    } else {
        Err(access::deny(call.ctx.as_ref()))
    }
}

/// Validates the container headers a PUT or POST brings.
fn validate(call: &Call, changes: &[(String, Option<String>)]) -> Result<()> {
    let mut versions = false;
    let mut history = false;
    for (k, v) in changes {
        let Some(v) = v else { continue };
        match k.as_str() {
            "x-container-read" | "x-container-write" => {
                let acl = access::parse_acl(v).map_err(SwiftError::BadRequest)?;
                if k == "x-container-write" && (!acl.referrers.is_empty() || acl.listings) {
                    return Err(SwiftError::BadRequest("Referrers not allowed in write ACL: ".to_string() + v));
                }
            }
            "x-container-meta-quota-bytes" | "x-container-meta-quota-count" if v.parse::<u64>().is_err() => {
                return Err(SwiftError::BadRequest(format!("Invalid {}", title(k))));
            }
            "x-versions-location" | "x-history-location" => {
                let name = crate::names::percent_decode(v).unwrap_or_default();
                if name.is_empty() || name.contains('/') {
                    return Err(SwiftError::PreconditionMsg(format!(
                        "{} must be a container name (no \"/\")",
                        title(k)
                    )));
                }
                if k == "x-versions-location" {
                    versions = true;
                } else {
                    history = true;
                }
            }
            _ => {}
        }
    }
    if versions && (history || call.header("x-history-location").is_some()) {
        return Err(SwiftError::BadRequest(
            "Only one of X-Versions-Location or X-History-Location may be specified".into(),
        ));
    }
    if let Some(p) = call.header("x-storage-policy") {
        if call.method == Method::PUT && !p.eq_ignore_ascii_case(&call_policy_name()) {
            return Err(SwiftError::BadRequest(format!("Invalid X-Storage-Policy {p:?}")));
        }
    }
    Ok(())
}

fn call_policy_name() -> String {
    crate::POLICY_NAME.to_string()
}

/// `x-container-meta-quota-bytes` → `X-Container-Meta-Quota-Bytes`.
pub fn title(h: &str) -> String {
    h.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// When a new versioning header is set, the other mode's header is dropped (Swift keeps one).
fn exclusive(mut changes: Vec<(String, Option<String>)>) -> Vec<(String, Option<String>)> {
    let sets = |k: &str, c: &Vec<(String, Option<String>)>| c.iter().any(|(n, v)| n == k && v.is_some());
    if sets("x-versions-location", &changes) {
        changes.push(("x-history-location".into(), None));
    } else if sets("x-history-location", &changes) {
        changes.push(("x-versions-location".into(), None));
    }
    changes
}

async fn put(svc: &Svc, call: &Call) -> Result<Response> {
    let changes = meta::updates(&call.headers, Kind::Container)?;
    validate(call, &changes)?;
    let created =
        db::put_container(&svc.platform.db, &call.t.account, call.container(), crate::POLICY_NAME, exclusive(changes))
            .await?;
    Ok(empty(if created { StatusCode::CREATED } else { StatusCode::ACCEPTED }))
}

async fn post(svc: &Svc, call: &Call) -> Result<Response> {
    let changes = meta::updates(&call.headers, Kind::Container)?;
    validate(call, &changes)?;
    db::update_container_meta(&svc.platform.db, &call.t.account, call.container(), exclusive(changes)).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn read(svc: &Svc, call: &Call) -> Result<Response> {
    let c = db::container(&svc.platform.db, &call.t.account, call.container()).await?;
    let referer = call.header("referer");
    let Some(c) = c else {
        return Err(if call.grant.reads() { SwiftError::NotFound } else { access::deny(call.ctx.as_ref()) });
    };
    let acl = access::acl_grant(&c.meta, call.ctx.as_ref(), referer);
    if !call.grant.reads() && !acl.list {
        if call.method == Method::GET {
            if let Some(r) = crate::staticweb::serve_container(svc, call, &c).await? {
                return Ok(r);
            }
        }
        return Err(access::deny(call.ctx.as_ref()));
    }
    if call.method == Method::GET && (call.header_true("x-web-mode") || call.ctx.is_none()) {
        if let Some(r) = crate::staticweb::serve_container(svc, call, &c).await? {
            return Ok(r);
        }
    }
    let mut resp = if call.method == Method::GET {
        let f = Format::of(&call.query, &call.headers)?;
        let p = listing::params(&call.query, svc.cfg.container_listing_limit)?;
        let entries = db::list_objects(&svc.platform.db, &call.t.account, call.container(), &p).await?;
        let (status, text) = listing::render_objects(call.container(), &entries, f);
        respond(status, f.content_type(), text)
    } else {
        empty(StatusCode::NO_CONTENT)
    };
    set(&mut resp, "x-container-object-count", c.object_count.to_string());
    set(&mut resp, "x-container-bytes-used", c.bytes_used.to_string());
    set(&mut resp, "x-timestamp", db::x_timestamp(&c.created_at));
    set(&mut resp, "x-put-timestamp", db::x_timestamp(&c.created_at));
    set(&mut resp, "last-modified", db::http_date(&c.modified_at));
    set(&mut resp, "x-storage-policy", &c.policy);
    set(&mut resp, "accept-ranges", "bytes");
    for (k, v) in &c.meta {
        if OWNER_ONLY.contains(&k.as_str()) && !call.grant.owns() {
            continue;
        }
        set(&mut resp, k, v);
    }
    Ok(resp)
}
