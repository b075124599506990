//! Cinder's version discovery documents, with the microversions this service really
//! serves: clients (openstacksdk, Nova) send `min(their max, ours)`, so `version` must
//! never claim more than the API implements.

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_core::{ApiVersion, MicroversionSpec};

/// Microversions served by `/volume/v3`.
pub const MICROVERSIONS: MicroversionSpec = MicroversionSpec {
    service_type: "volume",
    legacy_header: None,
    min: ApiVersion::new(3, 0),
    max: ApiVersion::new(3, 70),
};

fn v3(base: &str) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": MICROVERSIONS.max.to_string(),
        "min_version": MICROVERSIONS.min.to_string(),
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base}/v3/")},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

/// `GET /volume/` (300 Multiple Choices, as Cinder) and `GET /volume/v3`.
pub fn routes<S: Clone + Send + Sync + 'static>(base: &str) -> Router<S> {
    let (b1, b2) = (base.to_string(), base.to_string());
    Router::new()
        .route("/", get(move || async move { (StatusCode::MULTIPLE_CHOICES, Json(json!({"versions": [v3(&b1)]}))) }))
        .route("/v3", get(move || async move { Json(json!({"versions": [v3(&b2)]})) }))
}
