//! Account requests: `HEAD` (totals, metadata, quota), `GET` (container listing) and
//! `POST` (metadata, temp-URL keys, and `X-Account-Meta-Quota-Bytes` for the reseller
//! admin only, as Swift's account_quotas middleware).

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

/// Quota headers outside `X-Account-Meta-*` (Swift 2.34's account_quotas).
const QUOTA_HEADERS: &[&str] = &["x-account-quota-bytes", "x-account-quota-count"];

/// Account metadata only the owner sees (secrets).
const OWNER_ONLY: &[&str] = &["x-account-meta-temp-url-key", "x-account-meta-temp-url-key-2"];

/// Dispatches an account request.
pub async fn handle(svc: &std::sync::Arc<Svc>, call: &Call, body: Body) -> Result<Response> {
    match call.method {
        Method::HEAD | Method::GET => {
            if !call.grant.reads() {
                return Err(access::deny(call.ctx.as_ref()));
            }
            read(svc, call).await
        }
        Method::POST | Method::DELETE if call.flag("bulk-delete") => crate::bulk::delete(svc, call, body).await,
        Method::PUT if call.query.contains_key("extract-archive") => crate::bulk::extract(svc, call, body).await,
        Method::POST => {
            if !call.grant.owns() {
                return Err(access::deny(call.ctx.as_ref()));
            }
            post(svc, call).await
        }
        Method::PUT | Method::DELETE => Err(SwiftError::MethodNotAllowed),
        _ => Err(SwiftError::MethodNotAllowed),
    }
}

async fn read(svc: &Svc, call: &Call) -> Result<Response> {
    let acct = db::account(&svc.platform.db, &call.t.account).await?;
    let mut resp = if call.method == Method::GET {
        let f = Format::of(&call.query, &call.headers)?;
        let p = listing::params(&call.query, svc.cfg.account_listing_limit)?;
        let entries = db::list_containers(&svc.platform.db, &call.t.account, &p).await?;
        let (status, text) = listing::render_containers(&call.t.account, &entries, f);
        respond(status, f.content_type(), text)
    } else {
        let mut r = empty(StatusCode::NO_CONTENT);
        set(&mut r, "content-type", "text/plain; charset=utf-8");
        r
    };
    set(&mut resp, "x-account-container-count", acct.containers.to_string());
    set(&mut resp, "x-account-object-count", acct.objects.to_string());
    set(&mut resp, "x-account-bytes-used", acct.bytes.to_string());
    set(&mut resp, "x-timestamp", db::x_timestamp(&acct.created_at));
    set(&mut resp, "x-put-timestamp", db::x_timestamp(&acct.created_at));
    for (policy, (n, o, b)) in db::policy_totals(&svc.platform.db, &call.t.account).await? {
        let p = policy.to_ascii_lowercase();
        set(&mut resp, &format!("x-account-storage-policy-{p}-container-count"), n.to_string());
        set(&mut resp, &format!("x-account-storage-policy-{p}-object-count"), o.to_string());
        set(&mut resp, &format!("x-account-storage-policy-{p}-bytes-used"), b.to_string());
    }
    for (k, v) in &acct.meta {
        if OWNER_ONLY.contains(&k.as_str()) && !call.grant.owns() {
            continue;
        }
        set(&mut resp, k, v);
    }
    Ok(resp)
}

async fn post(svc: &Svc, call: &Call) -> Result<Response> {
    let mut changes = meta::updates(&call.headers, Kind::Account)?;
    // Swift >= 2.34 quota headers (object count, and bytes without `Meta`).
    for q in QUOTA_HEADERS {
        if let Some(v) = call.header(q) {
            changes.push((q.to_string(), Some(v.to_string()).filter(|v| !v.is_empty())));
        }
        if call.headers.contains_key(format!("x-remove-{}", &q[2..]).as_str()) {
            changes.push((q.to_string(), None));
        }
    }
    for (k, v) in &changes {
        if k == "x-account-meta-quota-bytes" || QUOTA_HEADERS.contains(&k.as_str()) {
            if call.grant != access::Grant::ResellerAdmin {
                return Err(SwiftError::Forbidden);
            }
            if let Some(v) = v {
                if v.parse::<u64>().is_err() {
                    return Err(SwiftError::BadRequest(format!("Invalid quota value {v:?}: a number of bytes")));
                }
            }
        }
    }
    db::update_account_meta(&svc.platform.db, &call.t.account, changes).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
