//! Project > Overview: the project's quota use, from the compute limits API and the
//! network quota details API.

use std::sync::Arc;

use axum::extract::State;
use maud::{html, Markup};
use serde_json::Value;
use stratus_core::internal::InternalUri;

use crate::error::Result;
use crate::layout::{self, mib};
use crate::login::Sess;
use crate::Dash;

fn card(title: &str, used: i64, max: i64, fmt: fn(i64) -> String) -> Markup {
    html! {
        div.card {
            h3 { (title) }
            @if max < 0 {
                p { "Used " (fmt(used)) " (no limit)" }
            } @else {
                meter min="0" max=(max) value=(used.min(max)) high=(max * 8 / 10) {}
                p { "Used " (fmt(used)) " of " (fmt(max)) }
            }
        }
    }
}

fn num(n: i64) -> String {
    n.to_string()
}

fn int(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// `GET /project/overview`.
pub async fn page(State(d): State<Arc<Dash>>, sess: Sess) -> Result<Markup> {
    let api = sess.api(&d);
    let limits = api.get(InternalUri::new("/compute/v2.1/limits")).await?;
    let abs = limits.get("limits").and_then(|l| l.get("absolute")).cloned().unwrap_or(Value::Null);
    let project = sess.ctx.project_id.clone().unwrap_or_default();
    // Network quotas are shown when the API lets this caller read them.
    let net = api
        .get(InternalUri::new("/network/v2.0/quotas").seg(&project).seg("details"))
        .await
        .ok()
        .and_then(|v| v.get("quota").cloned());
    let net_card = |title: &str, key: &str| -> Markup {
        match net.as_ref().and_then(|q| q.get(key)) {
            Some(q) => card(title, int(q, "used"), int(q, "limit"), num),
            None => html! {},
        }
    };
    let body = html! {
        h2 { "Limit summary" }
        div.cards {
            (card("Instances", int(&abs, "totalInstancesUsed"), int(&abs, "maxTotalInstances"), num))
            (card("VCPUs", int(&abs, "totalCoresUsed"), int(&abs, "maxTotalCores"), num))
            (card("RAM", int(&abs, "totalRAMUsed"), int(&abs, "maxTotalRAMSize"), mib))
            (net_card("Networks", "network"))
            (net_card("Ports", "port"))
            (net_card("Floating IPs", "floatingip"))
            (net_card("Security groups", "security_group"))
        }
    };
    Ok(layout::page(&d, &sess, "overview", "Overview", body))
}
