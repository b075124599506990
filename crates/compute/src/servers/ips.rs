//! `GET /servers/{id}/ips` and `/ips/{network}`: a server's addresses by network, fixed
//! and floating, in Nova's plain form (`version` and `addr` only, without the
//! OS-EXT-IPS attributes of the server view).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion};

use super::{authorized, interfaces, is_admin_view, view};
use crate::error::ComputeError;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v2.1/servers/{id}/ips", get(index)).route("/v2.1/servers/{id}/ips/{network}", get(show))
}

/// The server's addresses (floating ones included), each as `{version, addr}`.
async fn addresses(
    st: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    rule: &str,
) -> Result<Map<String, Value>, ApiError> {
    let i = authorized(st, ctx, id, rule).await?;
    let base = st.platform.service_url("/compute");
    let mut b = [view::detail(&i, &base, v, is_admin_view(st, ctx))];
    interfaces::decorate(st, std::slice::from_ref(&i), &mut b).await;
    let [b] = b;
    let mut out = Map::new();
    for (net, list) in b["addresses"].as_object().into_iter().flatten() {
        let plain: Vec<Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| json!({"version": a["version"], "addr": a["addr"]}))
            .collect();
        out.insert(net.clone(), json!(plain));
    }
    Ok(out)
}

async fn index(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = addresses(&st, &ctx, v, &id, "os_compute_api:ips:index").await?;
    Ok(Json(json!({"addresses": a})))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, network)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut a = addresses(&st, &ctx, v, &id, "os_compute_api:ips:show").await?;
    let list = a
        .remove(&network)
        .ok_or_else(|| ComputeError::NotFound(format!("Server {id} has no addresses on a network named {network}.")))?;
    Ok(Json(json!({ network: list })))
}
