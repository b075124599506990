//! Get-me-a-network (`/auto-allocated-topology/{project_id}`): on first request, a
//! project gets a network, an IPv4 subnet and a router whose gateway is the cloud's
//! default external network (`router:external` and `is_default`); later requests return
//! the same network. Compute uses it for servers created with `networks: "auto"`.
//!
//! The topology is built through this service's own API (in-process, as the project) so
//! quotas, IPAM and policy apply exactly as if the user had made it. A row keyed by the
//! project is claimed first, so concurrent first requests build one topology: the
//! others wait for it. The subnet comes from the default IPv4 subnet pool when there is
//! one, else it is `10.0.0.0/24` (tenant networks may overlap).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::QueryPairs;

use crate::error::{NetError, NetResult};
use crate::policy::enforce;
use crate::store;
use crate::S;

/// Row kind of a project's topology (id: the project; body: network, router, subnet).
pub const KIND: &str = "auto_allocated_topology";

/// Routes.
pub fn routes() -> Router<S> {
    Router::new().route("/v2.0/auto-allocated-topology/{project}", get(show).delete(remove))
}

fn failure(msg: impl Into<String>) -> NetError {
    NetError::Conflict("AutoAllocationFailure", format!("Deployment error: {}", msg.into()))
}

async fn default_external(st: &S) -> NetResult<String> {
    let nets = store::all(st.db.reader(), store::kind::NETWORK).await?;
    nets.iter()
        .find(|n| n["router:external"] == json!(true) && n["is_default"] == json!(true))
        .map(|n| store::s(n, "id").to_string())
        .ok_or_else(|| failure("No default router:external network."))
}

async fn default_pool(st: &S) -> NetResult<Option<String>> {
    let pools = store::all(st.db.reader(), store::kind::SUBNETPOOL).await?;
    Ok(pools
        .iter()
        .find(|p| p["is_default"] == json!(true) && p["ip_version"] == json!(4))
        .map(|p| store::s(p, "id").to_string()))
}

fn answer(project: &str, network_id: &str) -> Json<Value> {
    Json(json!({"auto_allocated_topology": {"id": network_id, "project_id": project, "tenant_id": project}}))
}

/// The project's context for building its topology.
fn as_project(ctx: &RequestContext, project: &str) -> RequestContext {
    RequestContext {
        user_id: ctx.user_id.clone(),
        project_id: Some(project.to_string()),
        roles: vec!["member".into(), "reader".into()],
        ..Default::default()
    }
}

async fn call(st: &S, ctx: &RequestContext, m: Method, path: &str, body: Option<Value>) -> NetResult<Value> {
    let r = st.internal.call(ctx, m, &format!("/network/v2.0{path}"), body.as_ref(), &[]).await?;
    if !r.status.is_success() {
        let msg = r.body["NeutronError"]["message"].as_str().unwrap_or("").to_string();
        return Err(failure(format!("{path}: {msg}")));
    }
    Ok(r.body)
}

/// Builds network, subnet and router; on failure removes what it made.
async fn build(st: &S, ctx: &RequestContext, project: &str, ext: &str) -> NetResult<Value> {
    let pctx = as_project(ctx, project);
    let mut made = json!({});
    let r: NetResult<()> = async {
        let n =
            call(st, &pctx, Method::POST, "/networks", Some(json!({"network": {"name": "auto_allocated_network"}})))
                .await?;
        made["network_id"] = n["network"]["id"].clone();
        let mut sub = json!({"name": "auto_allocated_subnet_v4", "network_id": made["network_id"], "ip_version": 4});
        match default_pool(st).await? {
            Some(_) => sub["use_default_subnet_pool"] = json!(true),
            None => sub["cidr"] = json!("10.0.0.0/24"),
        }
        let s = call(st, &pctx, Method::POST, "/subnets", Some(json!({"subnet": sub}))).await?;
        made["subnet_id"] = s["subnet"]["id"].clone();
        let rt = call(
            st,
            &pctx,
            Method::POST,
            "/routers",
            Some(json!({"router": {"name": "auto_allocated_router", "external_gateway_info": {"network_id": ext}}})),
        )
        .await?;
        made["router_id"] = rt["router"]["id"].clone();
        let rid = store::s(&made, "router_id").to_string();
        call(
            st,
            &pctx,
            Method::PUT,
            &format!("/routers/{rid}/add_router_interface"),
            Some(json!({"subnet_id": made["subnet_id"]})),
        )
        .await?;
        made["interface"] = json!(true);
        Ok(())
    }
    .await;
    match r {
        Ok(()) => Ok(made),
        Err(e) => {
            teardown(st, &made).await;
            Err(e)
        }
    }
}

/// Removes a topology's pieces (best effort, in dependency order).
async fn teardown(st: &S, t: &Value) {
    let admin = RequestContext::internal_admin();
    let (net, sub, router) = (store::s(t, "network_id"), store::s(t, "subnet_id"), store::s(t, "router_id"));
    if !router.is_empty() {
        if !sub.is_empty() {
            let _ = call(
                st,
                &admin,
                Method::PUT,
                &format!("/routers/{router}/remove_router_interface"),
                Some(json!({"subnet_id": sub})),
            )
            .await;
        }
        let _ = call(st, &admin, Method::DELETE, &format!("/routers/{router}"), None).await;
    }
    if !net.is_empty() {
        let _ = call(st, &admin, Method::DELETE, &format!("/networks/{net}"), None).await;
    }
}

async fn claim(st: &S, project: &str) -> NetResult<bool> {
    let p = project.to_string();
    st.db
        .transaction(|tx| {
            let p = p.clone();
            Box::pin(async move {
                let body = json!({"id": p, "project_id": p});
                let mut q = stratus_db::Query::new(
                    "INSERT INTO network_resources (kind, id, project_id, shared, created_at, body) VALUES (",
                );
                q.bind(KIND).push(", ").bind(&p).push(", ").bind(&p).push(", ").bind(false).push(", ");
                q.bind(stratus_core::time::now()).push(", ").bind(body.to_string()).push(") ON CONFLICT DO NOTHING");
                Ok::<_, NetError>(q.execute(&mut **tx).await? == 1)
            })
        })
        .await
}

async fn save(st: &S, project: &str, body: Option<Value>) -> NetResult<()> {
    let p = project.to_string();
    st.db
        .transaction(|tx| {
            let (p, body) = (p.clone(), body.clone());
            Box::pin(async move {
                match body {
                    Some(b) => store::update_body(&mut **tx, KIND, &b).await?,
                    None => {
                        store::delete(&mut **tx, KIND, &p).await?;
                    }
                }
                Ok::<_, NetError>(())
            })
        })
        .await
}

async fn show(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(project): Path<String>,
    q: QueryPairs,
) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_auto_allocated_topology", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    if q.all("fields").contains(&"dry-run") {
        default_external(&st).await?;
        return Ok(Json(json!({"auto_allocated_topology": {"dry-run": "dry-run=pass"}})));
    }
    // Up to ~10 s for a concurrent first request to finish building.
    for _ in 0..100 {
        if let Some(t) = store::get(st.db.reader(), KIND, &project).await? {
            if let Some(net) = t["network_id"].as_str() {
                return Ok(answer(&project, net));
            }
        } else {
            let ext = default_external(&st).await?;
            if claim(&st, &project).await? {
                return match build(&st, &ctx, &project, &ext).await {
                    Ok(mut made) => {
                        made["id"] = json!(project);
                        made["project_id"] = json!(project);
                        save(&st, &project, Some(made.clone())).await?;
                        Ok(answer(&project, store::s(&made, "network_id")))
                    }
                    Err(e) => {
                        save(&st, &project, None).await?;
                        Err(e)
                    }
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(failure("the project's topology is still being built; retry"))
}

async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(project): Path<String>) -> NetResult<StatusCode> {
    enforce(&st.policy, "delete_auto_allocated_topology", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    let t =
        store::get(st.db.reader(), KIND, &project).await?.filter(|t| t["network_id"].is_string()).ok_or_else(|| {
            NetError::NotFoundTyped(
                "AutoAllocatedTopologyNotFound",
                format!("No auto-allocated topology found for project {project}."),
            )
        })?;
    let net = store::s(&t, "network_id").to_string();
    let ports = store::children(st.db.reader(), store::kind::PORT, &net).await?;
    if ports.iter().any(|p| store::s(p, "device_owner").starts_with("compute:")) {
        return Err(NetError::Conflict(
            "NetworkInUse",
            format!("Unable to complete operation on network {net}. There are one or more ports still in use on the network."),
        ));
    }
    teardown(&st, &t).await;
    save(&st, &project, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
