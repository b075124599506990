//! `GET /object/info` (Swift's capabilities document), `/object/healthcheck` and
//! `/object/crossdomain.xml`.
//!
//! `/info` lists exactly the middleware this service implements, with their limits, so
//! clients and Tempest (`discoverable_apis`) see what they can use. [`SECTIONS`] is the
//! single list; the service's tests check each listed feature works.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::proxy::{finish, respond, set, trans_id};
use crate::Svc;

/// The middleware sections `/info` lists besides `swift` (Tempest's extension names).
pub const SECTIONS: &[&str] = &[
    "account_quotas",
    "bulk_delete",
    "bulk_upload",
    "container_quotas",
    "crossdomain",
    "dlo",
    "keystoneauth",
    "slo",
    "symlink",
    "tempurl",
    "versioned_writes",
];

/// The capabilities document.
pub fn document(svc: &Svc) -> Value {
    let c = &svc.cfg;
    json!({
        "swift": {
            "version": "2.35.0",
            "max_file_size": c.max_file_size,
            "max_meta_name_length": crate::meta::MAX_META_NAME_LENGTH,
            "max_meta_value_length": crate::meta::MAX_META_VALUE_LENGTH,
            "max_meta_count": crate::meta::MAX_META_COUNT,
            "max_meta_overall_size": crate::meta::MAX_META_OVERALL_SIZE,
            "max_header_size": 8192,
            "max_object_name_length": crate::names::MAX_OBJECT_NAME,
            "max_account_name_length": crate::names::MAX_ACCOUNT_NAME,
            "max_container_name_length": crate::names::MAX_CONTAINER_NAME,
            "container_listing_limit": c.container_listing_limit,
            "account_listing_limit": c.account_listing_limit,
            "extra_header_count": 0,
            "valid_api_versions": ["v1", "v1.0"],
            "strict_cors_mode": true,
            "allow_account_management": false,
            "account_autocreate": true,
            "policies": [{"name": crate::POLICY_NAME, "aliases": crate::POLICY_NAME, "default": true}],
        },
        "account_quotas": {},
        "bulk_delete": {
            "max_deletes_per_request": crate::bulk::MAX_DELETES_PER_REQUEST,
            "max_failed_deletes": crate::bulk::MAX_FAILED_DELETES,
        },
        "bulk_upload": {
            "max_containers_per_extraction": crate::bulk::MAX_CONTAINERS_PER_EXTRACTION,
            "max_failed_extractions": crate::bulk::MAX_FAILED_EXTRACTIONS,
        },
        "container_quotas": {},
        "crossdomain": {},
        "dlo": {"max_segments": crate::dlo::MAX_SEGMENTS},
        "keystoneauth": {},
        "slo": {
            "max_manifest_segments": crate::slo::MAX_MANIFEST_SEGMENTS,
            "max_manifest_size": crate::slo::MAX_MANIFEST_SIZE,
            "min_segment_size": crate::slo::MIN_SEGMENT_SIZE,
            "yield_frequency": 10,
            "allow_async_delete": false,
        },
        "symlink": {"symloop_max": crate::object::SYMLOOP_MAX, "static_links": false},
        "tempurl": {
            "methods": crate::tempurl::METHODS,
            "allowed_digests": crate::tempurl::DIGESTS,
            "incoming_remove_headers": ["x-timestamp"],
            "incoming_allow_headers": [],
            "outgoing_remove_headers": ["x-object-meta-*"],
            "outgoing_allow_headers": ["x-object-meta-public-*"],
        },
        "versioned_writes": {"allowed_flags": ["x-versions-location", "x-history-location"]},
    })
}

/// `GET /object/info`.
pub async fn info(State(svc): State<Arc<Svc>>) -> Response {
    let body = document(&svc).to_string();
    let mut r = respond(StatusCode::OK, "application/json; charset=UTF-8", body);
    finish(&mut r, &trans_id());
    r
}

/// `GET /object/healthcheck`: `OK` while the database answers.
pub async fn healthcheck(State(svc): State<Arc<Svc>>) -> Response {
    let ok = sqlx_ping(&svc).await;
    let mut r = if ok {
        respond(StatusCode::OK, "text/plain", "OK")
    } else {
        respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "DISABLED BY FILE")
    };
    finish(&mut r, &trans_id());
    r
}

async fn sqlx_ping(svc: &Svc) -> bool {
    stratus_db::Query::new("SELECT 1 AS x").fetch_optional(svc.platform.db.reader()).await.is_ok()
}

/// `GET /object/crossdomain.xml`: the Flash/Silverlight cross-domain policy Swift serves.
pub async fn crossdomain() -> Response {
    let body = "<?xml version=\"1.0\"?>\n<!DOCTYPE cross-domain-policy SYSTEM \
                \"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd\" >\n<cross-domain-policy>\n\
                <allow-access-from domain=\"*\" secure=\"false\" />\n</cross-domain-policy>";
    let mut r = respond(StatusCode::OK, "application/xml; charset=utf-8", body);
    set(&mut r, "content-length", body.len().to_string());
    finish(&mut r, &trans_id());
    r
}
