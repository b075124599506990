//! Neutron's version discovery document.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Version routes.
pub fn routes() -> Router<String> {
    Router::new().route("/", get(root))
}

/// `GET /network/`.
pub async fn root(State(base): State<String>) -> Json<Value> {
    Json(json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"href": format!("{base}/v2.0/"), "rel": "self"}],
    }]}))
}
