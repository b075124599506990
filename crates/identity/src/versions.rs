//! Keystone's version discovery documents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

fn v3_doc(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    })
}

/// `GET /identity/`: 300 Multiple Choices, as Keystone answers.
pub async fn root(State(base): State<String>) -> (StatusCode, Json<Value>) {
    (StatusCode::MULTIPLE_CHOICES, Json(json!({"versions": {"values": [v3_doc(&base)]}})))
}

/// `GET /identity/v3`.
pub async fn v3(State(base): State<String>) -> Json<Value> {
    Json(json!({"version": v3_doc(&base)}))
}
