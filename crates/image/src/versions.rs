//! Glance's version discovery: a 300 Multiple Choices list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Version routes.
pub fn routes() -> Router<String> {
    Router::new().route("/", get(root)).route("/versions", get(root)).route("/v2", get(root))
}

/// `GET /image/`.
pub async fn root(State(base): State<String>) -> (StatusCode, Json<Value>) {
    let mut values = Vec::new();
    for (i, minor) in (0..=16).rev().enumerate() {
        values.push(json!({
            "id": format!("v2.{minor}"),
            "status": if i == 0 { "CURRENT" } else { "SUPPORTED" },
            "links": [{"rel": "self", "href": format!("{base}/v2/")}],
        }));
    }
    (StatusCode::MULTIPLE_CHOICES, Json(json!({"versions": values})))
}
