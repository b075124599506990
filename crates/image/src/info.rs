//! Discovery documents: `/v2/info/import` (interoperable import methods),
//! `/v2/info/stores` and, for admins, `/v2/info/stores/detail`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;

use crate::error::Result;
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/info/import", get(import_info))
        .route("/v2/info/stores", get(stores))
        .route("/v2/info/stores/detail", get(stores_detail))
}

/// Import methods this cloud offers, in the order of `[image] enabled_import_methods`:
/// web-download only with an allow-list, copy-image only with a second store.
pub fn import_methods(st: &St) -> Vec<String> {
    st.cfg
        .enabled_import_methods
        .iter()
        .filter(|m| match m.as_str() {
            "glance-direct" | "glance-download" => true,
            "web-download" => !st.cfg.web_download_allowed_urls.is_empty(),
            "copy-image" => st.stores.all().len() > 1,
            _ => false,
        })
        .cloned()
        .collect()
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

fn describe(id: &str) -> String {
    format!("Filesystem store {id}")
}

async fn stores(State(st): State<St>) -> Json<Value> {
    let list: Vec<Value> = st
        .stores
        .all()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = json!({"id": s.id(), "description": describe(s.id())});
            if i == 0 {
                v["default"] = json!(true);
            }
            v
        })
        .collect();
    Json(json!({ "stores": list }))
}

/// `GET /v2/info/stores/detail` (admin): the stores with their type and where they keep data.
async fn stores_detail(State(st): State<St>, Ctx(ctx): Ctx) -> Result<Json<Value>> {
    st.policy.enforce("stores_info_detail", &ctx, &json!({}))?;
    let list: Vec<Value> = st
        .stores
        .all()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = json!({
                "id": s.id(),
                "description": describe(s.id()),
                "type": "file",
                "weight": 0,
                "properties": {"datadir": s.location()},
            });
            if i == 0 {
                v["default"] = json!(true);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "stores": list })))
}
