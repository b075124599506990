//! Bulk operations (Swift's `bulk` middleware): `POST ?bulk-delete` with a body of
//! newline-separated `/container/object` or `/container` paths (URL-encoded), deleting
//! each and reporting counts and per-path errors in the format Swift uses (plain text,
//! or JSON/XML by `Accept`). Archive extraction (`PUT ?extract-archive=`) is not built
//! yet: it answers 501 and `/info` does not list `bulk_upload`.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;

use crate::db;
use crate::error::{Result, SwiftError};
use crate::names;
use crate::proxy::{respond, Call};
use crate::Svc;

/// Most paths in one bulk delete (Swift's default).
pub const MAX_DELETES_PER_REQUEST: usize = 10_000;
/// Most failures before a bulk delete gives up (Swift's default).
pub const MAX_FAILED_DELETES: usize = 1_000;
/// Largest bulk-delete body.
const MAX_BODY: usize = MAX_DELETES_PER_REQUEST * (names::MAX_CONTAINER_NAME + names::MAX_OBJECT_NAME * 3 + 2);

/// Swift's bulk-delete style report: `Number Deleted`, `Number Not Found`, `Errors`...
pub fn report(call: &Call, deleted: usize, not_found: usize, errors: &[(String, String)]) -> Response {
    let status = if errors.is_empty() { "200 OK" } else { "400 Bad Request" };
    let accept = call.header("accept").unwrap_or("").to_ascii_lowercase();
    if accept.contains("json") {
        let v = serde_json::json!({
            "Number Deleted": deleted,
            "Number Not Found": not_found,
            "Response Body": "",
            "Response Status": status,
            "Errors": errors.iter().map(|(p, e)| vec![p.clone(), e.clone()]).collect::<Vec<_>>(),
        });
        respond(StatusCode::OK, "application/json; charset=utf-8", v.to_string())
    } else {
        let mut s = format!(
            "Number Deleted: {deleted}\nNumber Not Found: {not_found}\nResponse Body: \nResponse Status: {status}\nErrors:\n"
        );
        for (p, e) in errors {
            s.push_str(&format!("{p}, {e}\n"));
        }
        respond(StatusCode::OK, "text/plain; charset=utf-8", s)
    }
}

/// `POST /v1/<account>?bulk-delete`.
pub async fn delete(svc: &Svc, call: &Call, body: Body) -> Result<Response> {
    if !call.grant.owns() {
        return Err(crate::access::deny(call.ctx.as_ref()));
    }
    let raw = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| SwiftError::TooLarge(format!("Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request")))?;
    let text = String::from_utf8_lossy(&raw);
    let paths: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if paths.len() > MAX_DELETES_PER_REQUEST {
        return Err(SwiftError::TooLarge(format!("Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request")));
    }
    let (mut deleted, mut not_found) = (0, 0);
    let mut errors = Vec::new();
    // Objects first, so that containers emptied by this request can go too.
    let mut items: Vec<(String, Option<String>, String)> = Vec::new();
    for p in paths {
        let decoded = names::percent_decode(p).unwrap_or_else(|| p.to_string());
        let trimmed = decoded.trim_start_matches('/');
        match trimmed.split_once('/') {
            Some((c, o)) if !o.is_empty() => items.push((c.to_string(), Some(o.to_string()), p.to_string())),
            _ => items.push((trimmed.trim_end_matches('/').to_string(), None, p.to_string())),
        }
    }
    items.sort_by_key(|(_, o, _)| o.is_none());
    for (c, o, raw_path) in items {
        if errors.len() >= MAX_FAILED_DELETES {
            break;
        }
        let r = match &o {
            Some(o) => db::delete_object(&svc.platform.db, &call.t.account, &c, o).await.map(|row| {
                svc.release_blobs(row.blob.into_iter().collect());
            }),
            None => db::delete_container(&svc.platform.db, &call.t.account, &c).await.map(|b| svc.release_blobs(b)),
        };
        match r {
            Ok(()) => deleted += 1,
            Err(SwiftError::NotFound) => not_found += 1,
            Err(SwiftError::Conflict) => errors.push((raw_path, "409 Conflict".to_string())),
            Err(e) => errors
                .push((raw_path, format!("{} {}", e.status().as_u16(), e.status().canonical_reason().unwrap_or("")))),
        }
    }
    Ok(report(call, deleted, not_found, &errors))
}

/// `PUT /v1/<account>[/<container>]?extract-archive=<format>`: not built yet (501).
pub async fn extract(_svc: &Svc, _call: &Call, _body: Body) -> Result<Response> {
    Err(SwiftError::NotImplemented("Archive extraction (extract-archive) is not supported by this cloud".into()))
}
