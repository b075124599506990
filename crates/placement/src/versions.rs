//! Placement's root document with its microversion range.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_core::{ApiVersion, MicroversionSpec};

/// Microversions served.
pub const MICROVERSIONS: MicroversionSpec = MicroversionSpec {
    service_type: "placement",
    legacy_header: None,
    min: ApiVersion::new(1, 0),
    max: ApiVersion::new(1, 39),
};

/// Version routes.
pub fn routes() -> Router<String> {
    Router::new().route("/", get(root))
}

/// `GET /placement/`.
pub async fn root(State(_base): State<String>) -> Json<Value> {
    Json(json!({"versions": [{
        "id": "v1.0",
        "min_version": MICROVERSIONS.min.to_string(),
        "max_version": MICROVERSIONS.max.to_string(),
        "status": "CURRENT",
        "links": [{"rel": "self", "href": ""}],
    }]}))
}
