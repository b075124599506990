//! `POST /reshaper` (1.30): replaces inventories of several providers and allocations of
//! several consumers in one atomic step, as when a driver moves VGPU inventory from a
//! root provider to new child providers together with the allocations against it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use stratus_auth::Ctx;
use stratus_core::{ApiVersion, OsJson};

use crate::allocations::{claim_in_tx, parse_consumer};
use crate::common::{authorize, generation, object, only_keys, parse_uuid, required, route_since};
use crate::error::{PlacementError, Result};
use crate::inventories::{check_in_use, parse_inv, replace_in_tx};
use crate::store;
use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/reshaper", post(reshape))
}

/// `POST /reshaper`.
async fn reshape(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(body): OsJson<Value>,
) -> Result<StatusCode> {
    route_since(v, 1, 30)?;
    authorize(&st, &ctx, "placement:reshaper:reshape")?;
    let obj = object(&body, "body")?;
    only_keys(obj, &["inventories", "allocations"])?;
    let mut invs = Vec::new();
    for (rp, e) in object(required(obj, "inventories")?, "inventories")? {
        let rp = parse_uuid(rp, "resource provider uuid")?;
        let eo = object(e, "inventories entry")?;
        only_keys(eo, &["inventories", "resource_provider_generation"])?;
        let gen = generation(eo, "resource_provider_generation")?;
        let mut m = BTreeMap::new();
        for (rc, i) in object(required(eo, "inventories")?, "inventories")? {
            m.insert(rc.clone(), parse_inv(object(i, "inventory")?, v)?);
        }
        invs.push((rp, gen, m));
    }
    let mut writes = Vec::new();
    for (c, cv) in object(required(obj, "allocations")?, "allocations")? {
        writes.push(parse_consumer(&parse_uuid(c, "consumer uuid")?, cv, v)?);
    }
    let touched: Vec<String> = invs.iter().map(|(rp, _, _)| rp.clone()).collect();
    let (invs, writes) = (Arc::new(invs), Arc::new(writes));
    let patches = st
        .db
        .transaction(move |tx| {
            let (invs, writes) = (invs.clone(), writes.clone());
            Box::pin(async move {
                for (rp, gen, m) in invs.iter() {
                    replace_in_tx(tx, rp, *gen, m.clone()).await?;
                }
                let patches = claim_in_tx(tx, &writes).await?;
                // Only now, with allocations moved, must every provider's usage fit.
                let ids: Vec<String> = invs.iter().map(|(rp, _, _)| rp.clone()).collect();
                if !ids.is_empty() {
                    let cur = store::inventories(&mut **tx, Some(&ids)).await?;
                    let uses = store::usages(&mut **tx, Some(&ids)).await?;
                    for rp in &ids {
                        check_in_use(
                            rp,
                            &cur.get(rp).cloned().unwrap_or_default(),
                            &uses.get(rp).cloned().unwrap_or_default(),
                        )?;
                    }
                }
                Ok::<_, PlacementError>(patches)
            })
        })
        .await?;
    {
        let mut idx = st.index.write();
        for p in patches {
            idx.apply_resources(&p.uuid, p.generation, p.inventories, p.usages);
        }
    }
    store::refresh(&st, &touched, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
