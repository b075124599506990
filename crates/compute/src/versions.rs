//! Nova's version discovery documents: `GET /compute/` lists v2.0 (the legacy v2 API,
//! SUPPORTED, without microversions) and v2.1 (CURRENT) in that order, as Nova does; each
//! one's self link answers with its own document. Only the v2.1 API is served behind them:
//! v2.0 exists here for discovery.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_core::{ApiVersion, MicroversionSpec};

/// Microversions served by `/compute/v2.1`.
pub const MICROVERSIONS: MicroversionSpec = MicroversionSpec {
    service_type: "compute",
    legacy_header: Some("x-openstack-nova-api-version"),
    min: ApiVersion::new(2, 1),
    max: ApiVersion::new(2, 96),
};

fn v21(base: &str) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": MICROVERSIONS.max.to_string(),
        "min_version": MICROVERSIONS.min.to_string(),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{base}/v2.1/")}],
    })
}

fn v20(base: &str) -> Value {
    json!({
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{base}/v2/")}],
    })
}

/// Version routes (the `/v2.1` document is served here, the API under it by the caller).
pub fn routes() -> Router<String> {
    Router::new().route("/", get(root)).route("/v2.1", get(v21_doc)).route("/v2", get(v20_doc))
}

/// `GET /compute/`.
pub async fn root(State(base): State<String>) -> Json<Value> {
    Json(json!({"versions": [v20(&base), v21(&base)]}))
}

/// `GET /compute/v2.1`.
pub async fn v21_doc(State(base): State<String>) -> Json<Value> {
    let mut v = v21(&base);
    v["media-types"] =
        json!([{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]);
    Json(json!({"version": v}))
}

/// `GET /compute/v2`: the legacy v2 API's document.
pub async fn v20_doc(State(base): State<String>) -> Json<Value> {
    let mut v = v20(&base);
    v["media-types"] =
        json!([{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]);
    Json(json!({"version": v}))
}
