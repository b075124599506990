//! Swift's `/info` capabilities document. Accounts, containers and objects are not
//! built yet.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Version routes.
pub fn routes() -> Router<String> {
    Router::new().route("/info", get(root))
}

/// `GET /object/info`.
pub async fn root(State(_base): State<String>) -> Json<Value> {
    Json(json!({"swift": {"version": "2.35.0", "max_file_size": 5368709122u64, "account_listing_limit": 10000}}))
}
