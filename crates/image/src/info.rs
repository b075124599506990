//! Discovery documents: `/v2/info/import` (interoperable import methods) and
//! `/v2/info/stores`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new().route("/v2/info/import", get(import_info)).route("/v2/info/stores", get(stores))
}

/// Import methods this cloud offers: glance-direct always, web-download only with an allow-list.
pub fn import_methods(st: &St) -> Vec<&'static str> {
    let mut m = vec!["glance-direct"];
    if !st.cfg.web_download_allowed_urls.is_empty() {
        m.push("web-download");
    }
    m
}

async fn import_info(State(st): State<St>) -> Json<Value> {
    Json(json!({
        "import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": import_methods(&st),
        }
    }))
}

async fn stores(State(st): State<St>) -> Json<Value> {
    Json(json!({
        "stores": [{"id": st.store.id(), "description": "Filesystem store in the cloud's data directory", "default": true}]
    }))
}
