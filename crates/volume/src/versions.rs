//! Cinder's version discovery document. The block storage API itself is not built yet;
//! its routes answer 404 in Cinder's fault format rather than pretending.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Version routes.
pub fn routes() -> Router<String> {
    Router::new().route("/", get(root))
}

/// `GET /volume/`.
pub async fn root(State(base): State<String>) -> (StatusCode, Json<Value>) {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [{
            "id": "v3.0",
            "status": "CURRENT",
            "version": "3.71",
            "min_version": "3.0",
            "updated": "2023-08-31T00:00:00Z",
            "links": [{"rel": "self", "href": format!("{base}/v3/")}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
        }]})),
    )
}
