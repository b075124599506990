//! The small resources: the v2.0 resource list, extensions (only what is implemented),
//! availability zones, network IP availability, RBAC policies and the `/tags`
//! sub-resource of every taggable collection.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};

use crate::body::{self, Opt, ProjectId, Text, Uuid};
use crate::error::{invalid, not_found, NetError, NetResult};
use crate::policy::enforce;
use crate::store::{self, kind, Links};
use crate::{owner, quotas, S};

/// Every attribute of an RBAC policy: a request naming anything else is refused.
const RBAC_ATTRS: &[&str] =
    &["id", "object_type", "object_id", "action", "target_tenant", "target_project", "tenant_id", "project_id"];

/// `POST /v2.0/rbac-policies`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RbacCreate {
    object_type: Opt<Text<255>>,
    object_id: Opt<Uuid>,
    action: Opt<Text<255>>,
    target_tenant: Opt<ProjectId>,
    target_project: Opt<ProjectId>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
}

/// `PUT /v2.0/rbac-policies/{id}` (only the target may change).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RbacUpdate {
    target_tenant: Opt<ProjectId>,
    target_project: Opt<ProjectId>,
}

/// `PUT /v2.0/<collection>/{id}/tags`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TagsBody {
    tags: Opt<body::Tags>,
}

/// Collections with a `/tags` sub-resource: (path, kind, Neutron resource word).
const TAGGABLE: &[(&str, &str, &str)] = &[
    ("networks", kind::NETWORK, "Network"),
    ("subnets", kind::SUBNET, "Subnet"),
    ("ports", kind::PORT, "Port"),
    ("routers", kind::ROUTER, "Router"),
    ("floatingips", kind::FLOATINGIP, "Floating IP"),
    ("security-groups", kind::SECURITY_GROUP, "Security group"),
    ("security-group-rules", kind::SECURITY_GROUP_RULE, "Security group rule"),
    ("subnetpools", kind::SUBNETPOOL, "Subnet pool"),
];

/// Routes of this module.
pub fn routes() -> Router<S> {
    let mut r = Router::new()
        .route("/v2.0", get(resources))
        .route("/v2.0/", get(resources))
        .route("/v2.0/extensions", get(extensions))
        .route("/v2.0/extensions/{alias}", get(extension))
        .route("/v2.0/availability_zones", get(availability_zones))
        .route("/v2.0/network-ip-availabilities", get(ip_availabilities))
        .route("/v2.0/network-ip-availabilities/{id}", get(ip_availability))
        .route("/v2.0/rbac-policies", get(list_rbac).post(create_rbac))
        .route("/v2.0/rbac-policies/{id}", get(show_rbac).put(update_rbac).delete(remove_rbac));
    for (path, k, word) in TAGGABLE {
        let (k, word) = (*k, *word);
        r = r
            .route(
                &format!("/v2.0/{path}/{{id}}/tags"),
                get(move |st: State<S>, ctx: Ctx, id: Path<String>| tags_get(st, ctx, id, k, word))
                    .put(move |st: State<S>, ctx: Ctx, id: Path<String>, req: OsJson<Value>| {
                        tags_replace(st, ctx, id, req, k, word)
                    })
                    .delete(move |st: State<S>, ctx: Ctx, id: Path<String>| tags_clear(st, ctx, id, k, word)),
            )
            .route(
                &format!("/v2.0/{path}/{{id}}/tags/{{tag}}"),
                get(move |st: State<S>, ctx: Ctx, p: Path<(String, String)>| tag_check(st, ctx, p, k, word))
                    .put(move |st: State<S>, ctx: Ctx, p: Path<(String, String)>| tag_add(st, ctx, p, k, word))
                    .delete(move |st: State<S>, ctx: Ctx, p: Path<(String, String)>| tag_remove(st, ctx, p, k, word)),
            );
    }
    r
}

const RESOURCES: &[(&str, &str)] = &[
    ("network", "networks"),
    ("subnet", "subnets"),
    ("subnetpool", "subnetpools"),
    ("port", "ports"),
    ("router", "routers"),
    ("floatingip", "floatingips"),
    ("security_group", "security-groups"),
    ("security_group_rule", "security-group-rules"),
    ("rbac_policy", "rbac-policies"),
    ("agent", "agents"),
    ("address_group", "address-groups"),
    ("quota", "quotas"),
    ("availability_zone", "availability_zones"),
    ("network_ip_availability", "network-ip-availabilities"),
];

async fn resources(State(st): State<S>) -> Json<Value> {
    let items: Vec<Value> = RESOURCES
        .iter()
        .map(|(name, coll)| json!({"name": name, "collection": coll, "links": [{"href": format!("{}/v2.0/{coll}", st.base), "rel": "self"}]}))
        .collect();
    Json(json!({"resources": items}))
}

/// Extensions this service really implements: (alias, name, description).
pub const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("address-group", "Address group", "Support address group"),
    ("agent", "agent", "The agent management extension."),
    ("auto-allocated-topology", "Auto Allocated Topology Services", "Auto Allocated Topology Services."),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "Extra options configuration for DHCP. For example PXE boot options to DHCP clients can be specified (e.g. tftp-server, server-ip-address, bootfile-name)"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for network."),
    ("router_availability_zone", "Router Availability Zone", "Availability zone support for router."),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("default-subnetpools", "Default Subnetpools", "Provides ability to mark and use a subnetpool as the default."),
    ("dhcp_agent_scheduler", "DHCP Agent Scheduler", "Schedule networks among dhcp agents"),
    ("dns-integration", "DNS Integration", "Provides integration with DNS."),
    ("dns-domain-ports", "dns_domain for ports", "Allows the DNS domain to be specified for a network port."),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway"),
    ("fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to Floating IP resource"),
    ("floating-ip-port-forwarding", "Floating IP Port Forwarding", "Provides floating IP port forwarding support"),
    ("ip-substring-filtering", "IP address substring filtering", "Provides IP address substring filtering when listing ports"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("network-ip-availability", "Network IP Availability", "Provides IP availability data for each network and subnet."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("port-security", "Port Security", "Provides port security"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project"),
    ("rbac-policies", "RBAC Policies", "Allows creation and modification of policies that control tenant access to resources."),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway."),
    ("security-group", "security-group", "The security groups extension."),
    ("stateful-security-group", "Stateful security group", "Indicates if the security group is stateful or not"),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: network, subnet, port, subnetpool, router, floatingip, security_group, security_group_rule", "Enables to set tag on resources with standard attribute."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("subnet_allocation", "Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
    ("subnet-external-network", "Subnet belongs to an external network", "Informs if the subnet belongs to an external network"),
    ("tag", "Tag support", "Enables to set tag on resources."),
    ("tag-creation", "Tag creation extension", "Allow to set tags on a resource creation."),
];

fn ext_json(e: &(&str, &str, &str)) -> Value {
    json!({"alias": e.0, "name": e.1, "description": e.2, "updated": "2013-01-01T00:00:00-00:00", "links": []})
}

async fn extensions(_ctx: Ctx) -> Json<Value> {
    Json(json!({"extensions": EXTENSIONS.iter().map(ext_json).collect::<Vec<_>>()}))
}

async fn extension(_ctx: Ctx, Path(alias): Path<String>) -> NetResult<Json<Value>> {
    EXTENSIONS
        .iter()
        .find(|e| e.0 == alias)
        .map(|e| Json(json!({"extension": ext_json(e)})))
        .ok_or_else(|| NetError::NotFoundTyped("HTTPNotFound", format!("Extension with alias {alias} does not exist")))
}

async fn availability_zones(State(st): State<S>, _ctx: Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let az = &st.cfg.availability_zone;
    let items = vec![
        json!({"name": az, "resource": "network", "state": "available"}),
        json!({"name": az, "resource": "router", "state": "available"}),
    ];
    Ok(Json(crate::listing::respond("availability_zones", items, &q, &format!("{}/v2.0/availability_zones", st.base))?))
}

async fn availability(st: &S, network: &Value) -> NetResult<Value> {
    let mut subs = Vec::new();
    let (mut total, mut used) = (0u64, 0i64);
    for s in store::children(st.db.reader(), kind::SUBNET, store::s(network, "id")).await? {
        let info = crate::subnets::info(&s)?;
        let t: u128 = info.pools.iter().map(|(a, b)| b - a + 1).sum();
        let t = u64::try_from(t).unwrap_or(u64::MAX);
        let u = crate::ipam::used_count(st.db.reader(), store::s(&s, "id")).await?;
        total = total.saturating_add(t);
        used += u;
        subs.push(json!({
            "subnet_id": s["id"], "subnet_name": s["name"], "cidr": s["cidr"], "ip_version": s["ip_version"],
            "total_ips": t, "used_ips": u,
        }));
    }
    Ok(json!({
        "network_id": network["id"], "network_name": network["name"], "project_id": network["project_id"],
        "tenant_id": network["project_id"], "total_ips": total, "used_ips": used, "subnet_ip_availability": subs,
    }))
}

async fn ip_availabilities(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_network_ip_availability", &ctx, &json!({}))?;
    let mut items = Vec::new();
    for n in store::visible(st.db.reader(), &ctx, kind::NETWORK, None).await? {
        items.push(availability(&st, &n).await?);
    }
    if let Some(v) = q.get("ip_version") {
        for i in items.iter_mut() {
            let subs: Vec<Value> = i["subnet_ip_availability"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s["ip_version"].as_i64().map(|n| n.to_string()).as_deref() == Some(v))
                .collect();
            i["subnet_ip_availability"] = json!(subs);
        }
    }
    let q2 = stratus_core::QueryPairs(q.0.iter().filter(|(k, _)| k != "ip_version").cloned().collect());
    Ok(Json(crate::listing::respond(
        "network_ip_availabilities",
        items,
        &q2,
        &format!("{}/v2.0/network-ip-availabilities", st.base),
    )?))
}

async fn ip_availability(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<Json<Value>> {
    enforce(&st.policy, "get_network_ip_availability", &ctx, &json!({}))?;
    let n = crate::networks::find(&st, &ctx, &id).await?;
    Ok(Json(json!({"network_ip_availability": availability(&st, &n).await?})))
}

// --- RBAC ------------------------------------------------------------------------------

async fn find_rbac(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, kind::RBAC_POLICY, Some(id))
        .await?
        .pop()
        .ok_or_else(|| not_found("RBAC policy", id))
}

async fn list_rbac(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let items = store::visible(st.db.reader(), &ctx, kind::RBAC_POLICY, None).await?;
    Ok(Json(crate::listing::respond("rbac_policies", items, &q, &format!("{}/v2.0/rbac-policies", st.base))?))
}

async fn show_rbac(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    q: QueryPairs,
) -> NetResult<Json<Value>> {
    Ok(Json(json!({"rbac_policy": crate::listing::select_fields(find_rbac(&st, &ctx, &id).await?, &q)})))
}

async fn create_rbac(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let req: RbacCreate = body::parse_create(body::one(req, "rbac_policy")?, RBAC_ATTRS)?;
    let project = owner(&ctx, &req.project_id, &req.tenant_id)?;
    enforce(&st.policy, "create_rbac_policy", &ctx, &json!({"tenant_id": project, "project_id": project}))?;
    let object_type = req.object_type.opt().ok_or_else(|| invalid("object_type is required"))?;
    if object_type != "network" {
        return Err(invalid(format!("'{object_type}' is not in ['network']")));
    }
    let action = req.action.opt().ok_or_else(|| invalid("action is required"))?;
    if action != "access_as_shared" && action != "access_as_external" {
        return Err(invalid(format!("'{action}' is not in ['access_as_external', 'access_as_shared']")));
    }
    let target =
        req.target_tenant.opt().or(req.target_project.opt()).ok_or_else(|| invalid("target_tenant is required"))?;
    if target == "*" {
        enforce(&st.policy, "create_rbac_policy:target_tenant_wildcard", &ctx, &json!({}))?;
    }
    let object_id = req.object_id.opt().ok_or_else(|| invalid("object_id is required"))?;
    let net = crate::networks::find(&st, &ctx, &object_id).await?;
    if !ctx.is_admin() && ctx.project_id.as_deref() != Some(store::s(&net, "project_id")) {
        return Err(not_found("Network", &object_id));
    }
    let mut body = store::new_body(&project);
    body.remove("tags");
    body.remove("created_at");
    body.remove("updated_at");
    body.remove("revision_number");
    body.insert("object_type".into(), json!("network"));
    body.insert("object_id".into(), json!(object_id));
    body.insert("action".into(), json!(action));
    body.insert("target_tenant".into(), json!(target));
    body.insert("target_project".into(), json!(target));
    let body = serde_json::Value::Object(body);
    let cfg = st.cfg.clone();
    let b = body.clone();
    st.db
        .transaction(|tx| {
            let (b, cfg, project) = (b.clone(), cfg.clone(), project.clone());
            Box::pin(async move {
                for other in store::children(&mut **tx, kind::RBAC_POLICY, store::s(&b, "object_id")).await? {
                    if other["action"] == b["action"] && other["target_tenant"] == b["target_tenant"] {
                        return Err(NetError::Conflict(
                            "DuplicateRbacPolicy",
                            "An RBAC policy already exists with those values.".into(),
                        ));
                    }
                }
                quotas::check(tx, &cfg, &project, "rbac_policy", 1).await?;
                let links = Links {
                    parent: Some(store::s(&b, "object_id").into()),
                    reference: Some(store::s(&b, "target_tenant").into()),
                    shared: false,
                };
                store::insert(&mut **tx, kind::RBAC_POLICY, &b, &links).await?;
                Ok::<_, NetError>(())
            })
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"rbac_policy": body}))))
}

async fn rbac_in_use(st: &S, policy: &Value) -> NetResult<bool> {
    let target = store::s(policy, "target_tenant");
    let ports = store::children(st.db.reader(), kind::PORT, store::s(policy, "object_id")).await?;
    Ok(ports.iter().any(|p| {
        target == "*" && store::s(p, "project_id") != store::s(policy, "project_id")
            || store::s(p, "project_id") == target
    }))
}

async fn update_rbac(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let req: RbacUpdate = body::parse_update(body::one(req, "rbac_policy")?, RBAC_ATTRS)?;
    let mut p = find_rbac(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_rbac_policy", &ctx, &p)?;
    let target =
        req.target_tenant.opt().or(req.target_project.opt()).ok_or_else(|| invalid("target_tenant is required"))?;
    if target == "*" {
        enforce(&st.policy, "create_rbac_policy:target_tenant_wildcard", &ctx, &json!({}))?;
    }
    if target != store::s(&p, "target_tenant") && rbac_in_use(&st, &p).await? {
        return Err(NetError::Conflict(
            "RbacPolicyInUse",
            format!(
                "RBAC policy on object {} cannot be removed because other objects depend on it.",
                store::s(&p, "object_id")
            ),
        ));
    }
    p["target_tenant"] = json!(target);
    p["target_project"] = json!(target);
    let b = p.clone();
    st.db
        .transaction(|tx| {
            let b = b.clone();
            Box::pin(async move {
                let links = Links {
                    parent: Some(store::s(&b, "object_id").into()),
                    reference: Some(store::s(&b, "target_tenant").into()),
                    shared: false,
                };
                store::update(&mut **tx, kind::RBAC_POLICY, &b, &links).await.map_err(NetError::from)
            })
        })
        .await?;
    Ok(Json(json!({"rbac_policy": p})))
}

async fn remove_rbac(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let p = find_rbac(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_rbac_policy", &ctx, &p)?;
    if rbac_in_use(&st, &p).await? {
        return Err(NetError::Conflict(
            "RbacPolicyInUse",
            format!(
                "RBAC policy on object {} cannot be removed because other objects depend on it.",
                store::s(&p, "object_id")
            ),
        ));
    }
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move {
                store::delete(&mut **tx, kind::RBAC_POLICY, &id).await.map(|_| ()).map_err(NetError::from)
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- tags ------------------------------------------------------------------------------

async fn taggable(
    st: &S,
    ctx: &RequestContext,
    id: &str,
    k: &'static str,
    word: &'static str,
    write: bool,
) -> NetResult<Value> {
    let r = store::visible(st.db.reader(), ctx, k, Some(id)).await?.pop().ok_or_else(|| not_found(word, id))?;
    if write && !ctx.is_admin() && ctx.project_id.as_deref() != Some(store::s(&r, "project_id")) {
        return Err(NetError::Forbidden(format!("(rule:update_{k}) is disallowed by policy")));
    }
    Ok(r)
}

async fn save_tags(st: &S, k: &'static str, mut r: Value, tags: Vec<String>) -> NetResult<Value> {
    r["tags"] = json!(tags);
    store::touch(&mut r);
    let b = r.clone();
    st.db
        .transaction(|tx| {
            let b = b.clone();
            Box::pin(async move { store::update_body(&mut **tx, k, &b).await.map_err(NetError::from) })
        })
        .await?;
    Ok(r)
}

fn tags_of(r: &Value) -> Vec<String> {
    r["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect()
}

fn check_tag(t: &str) -> NetResult<()> {
    if t.is_empty() || t.len() > 255 || t.contains(',') {
        return Err(invalid(format!("'{t}' is not a valid tag")));
    }
    Ok(())
}

async fn tags_get(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    k: &'static str,
    word: &'static str,
) -> NetResult<Json<Value>> {
    let r = taggable(&st, &ctx, &id, k, word, false).await?;
    Ok(Json(json!({"tags": tags_of(&r)})))
}

async fn tags_replace(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
    k: &'static str,
    word: &'static str,
) -> NetResult<Json<Value>> {
    let Value::Object(obj) = req else { return Err(invalid("body must be {\"tags\": [...]}")) };
    let parsed: TagsBody = body::parse(obj)?;
    let tags = parsed.tags.0.ok_or_else(|| invalid("body must be {\"tags\": [...]}"))?.0;
    for t in &tags {
        check_tag(t)?;
    }
    let r = taggable(&st, &ctx, &id, k, word, true).await?;
    let r = save_tags(&st, k, r, tags).await?;
    Ok(Json(json!({"tags": tags_of(&r)})))
}

async fn tags_clear(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    k: &'static str,
    word: &'static str,
) -> NetResult<StatusCode> {
    let r = taggable(&st, &ctx, &id, k, word, true).await?;
    save_tags(&st, k, r, vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tag_check(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path((id, tag)): Path<(String, String)>,
    k: &'static str,
    word: &'static str,
) -> NetResult<StatusCode> {
    let r = taggable(&st, &ctx, &id, k, word, false).await?;
    if tags_of(&r).contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(NetError::NotFoundTyped("TagNotFound", format!("Tag {tag} could not be found for {k} {id}.")))
    }
}

async fn tag_add(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path((id, tag)): Path<(String, String)>,
    k: &'static str,
    word: &'static str,
) -> NetResult<StatusCode> {
    check_tag(&tag)?;
    let r = taggable(&st, &ctx, &id, k, word, true).await?;
    let mut tags = tags_of(&r);
    if !tags.contains(&tag) {
        tags.push(tag);
        save_tags(&st, k, r, tags).await?;
    }
    Ok(StatusCode::CREATED)
}

async fn tag_remove(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path((id, tag)): Path<(String, String)>,
    k: &'static str,
    word: &'static str,
) -> NetResult<StatusCode> {
    let r = taggable(&st, &ctx, &id, k, word, true).await?;
    let mut tags = tags_of(&r);
    if !tags.contains(&tag) {
        return Err(NetError::NotFoundTyped("TagNotFound", format!("Tag {tag} could not be found for {k} {id}.")));
    }
    tags.retain(|t| *t != tag);
    save_tags(&st, k, r, tags).await?;
    Ok(StatusCode::NO_CONTENT)
}
