//! Address groups (`/address-groups`): named sets of CIDRs that security group rules
//! reference with `remote_address_group_id`. CRUD plus `add_addresses` /
//! `remove_addresses`; a group that rules still use cannot be deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::{OsJson, QueryPairs};

use crate::body::{self, Name, Opt, ProjectId, Raw};
use crate::error::{invalid, NetError, NetResult};
use crate::ip::{parse_ip, Cidr};
use crate::policy::enforce;
use crate::store::{self, Links};
use crate::{owner, quotas, S};

/// Every attribute of an address group: a request naming anything else is refused.
const ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "addresses",
    "tenant_id",
    "project_id",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `POST /v2.0/address-groups`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GroupCreate {
    name: Opt<Name>,
    description: Opt<Name>,
    addresses: Opt<Raw>,
    tenant_id: Opt<ProjectId>,
    project_id: Opt<ProjectId>,
}

/// `PUT /v2.0/address-groups/{id}` (addresses change through the two actions).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GroupUpdate {
    name: Opt<Name>,
    description: Opt<Name>,
}

/// The body of `add_addresses` / `remove_addresses`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AddressesBody {
    addresses: Opt<Raw>,
}

/// Row kind.
pub const KIND: &str = "address_group";

/// Routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.0/address-groups", get(list).post(create))
        .route("/v2.0/address-groups/{id}", get(show).put(update).delete(remove))
        .route("/v2.0/address-groups/{id}/add_addresses", put(add_addresses))
        .route("/v2.0/address-groups/{id}/remove_addresses", put(remove_addresses))
}

fn not_found(id: &str) -> NetError {
    NetError::NotFoundTyped("AddressGroupNotFound", format!("Address group {id} could not be found."))
}

/// An address group the caller can see, or 404.
pub(crate) async fn find(st: &S, ctx: &RequestContext, id: &str) -> NetResult<Value> {
    store::visible(st.db.reader(), ctx, KIND, Some(id)).await?.pop().ok_or_else(|| not_found(id))
}

/// `10.0.0.1` → `10.0.0.1/32`; CIDRs normalized to their network.
fn normalize(v: &Value) -> NetResult<Vec<String>> {
    let arr = v.as_array().ok_or_else(|| invalid(format!("'{v}' is not a list of addresses")))?;
    let mut out: Vec<String> = Vec::new();
    for a in arr {
        let s = a.as_str().ok_or_else(|| invalid(format!("'{a}' is not a valid IP subnet")))?;
        let c = if s.contains('/') {
            Cidr::parse(s, false).map_err(invalid)?.to_string()
        } else {
            let (v, _) = parse_ip(s).ok_or_else(|| invalid(format!("'{s}' is not a valid IP subnet")))?;
            Cidr::parse(&format!("{s}/{}", if v == 4 { 32 } else { 128 }), false).map_err(invalid)?.to_string()
        };
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

async fn save(st: &S, body: &Value, insert: bool) -> NetResult<()> {
    let b = body.clone();
    let cfg = st.cfg.clone();
    st.db
        .transaction(|tx| {
            let (b, cfg) = (b.clone(), cfg.clone());
            Box::pin(async move {
                if insert {
                    quotas::check(tx, &cfg, store::s(&b, "project_id"), "address_group", 1).await?;
                    store::insert(&mut **tx, KIND, &b, &Links::default()).await?;
                } else {
                    store::update_body(&mut **tx, KIND, &b).await?;
                }
                Ok::<_, NetError>(())
            })
        })
        .await
}

async fn list(State(st): State<S>, Ctx(ctx): Ctx, q: QueryPairs) -> NetResult<Json<Value>> {
    let items = store::visible(st.db.reader(), &ctx, KIND, None).await?;
    Ok(Json(crate::listing::respond("address_groups", items, &q, &format!("{}/v2.0/address-groups", st.base))?))
}

async fn show(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>, q: QueryPairs) -> NetResult<Json<Value>> {
    Ok(Json(json!({"address_group": crate::listing::select_fields(find(&st, &ctx, &id).await?, &q)})))
}

async fn create(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    OsJson(req): OsJson<Value>,
) -> NetResult<(StatusCode, Json<Value>)> {
    let req: GroupCreate = body::parse_create(body::one(req, "address_group")?, ATTRS)?;
    let project = owner(&ctx, &req.project_id, &req.tenant_id)?;
    enforce(&st.policy, "create_address_group", &ctx, &json!({"project_id": project, "tenant_id": project}))?;
    let mut body: Map<String, Value> = store::new_body(&project);
    body.insert("name".into(), json!(req.name.or_empty()));
    body.insert("description".into(), json!(req.description.or_empty()));
    body.insert("addresses".into(), json!(normalize(req.addresses.0.as_ref().unwrap_or(&json!([])))?));
    body.remove("tags");
    let body = Value::Object(body);
    save(&st, &body, true).await?;
    Ok((StatusCode::CREATED, Json(json!({"address_group": body}))))
}

async fn update(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    let req: GroupUpdate = body::parse_update(body::one(req, "address_group")?, ATTRS)?;
    let mut g = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "update_address_group", &ctx, &g)?;
    if let Some(v) = req.name.opt() {
        g["name"] = json!(v);
    }
    if let Some(v) = req.description.opt() {
        g["description"] = json!(v);
    }
    store::touch(&mut g);
    save(&st, &g, false).await?;
    Ok(Json(json!({"address_group": g})))
}

/// Rules that reference group `id`.
async fn users(st: &S, id: &str) -> NetResult<Vec<Value>> {
    Ok(store::all(st.db.reader(), store::kind::SECURITY_GROUP_RULE)
        .await?
        .into_iter()
        .filter(|r| r["remote_address_group_id"].as_str() == Some(id))
        .collect())
}

async fn remove(State(st): State<S>, Ctx(ctx): Ctx, Path(id): Path<String>) -> NetResult<StatusCode> {
    let g = find(&st, &ctx, &id).await?;
    enforce(&st.policy, "delete_address_group", &ctx, &g)?;
    if !users(&st, &id).await?.is_empty() {
        return Err(NetError::Conflict(
            "AddressGroupInUse",
            format!("Address group {id} is in use on one or more security group rules."),
        ));
    }
    st.db
        .transaction(|tx| {
            let id = id.clone();
            Box::pin(async move { store::delete(&mut **tx, KIND, &id).await.map(|_| ()).map_err(NetError::from) })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change(st: &S, ctx: &RequestContext, id: &str, req: Value, add: bool) -> NetResult<Json<Value>> {
    let Value::Object(obj) = req else { return Err(invalid("'addresses' is required")) };
    let req: AddressesBody = body::parse(obj)?;
    let mut g = find(st, ctx, id).await?;
    enforce(&st.policy, "update_address_group", ctx, &g)?;
    let wanted = normalize(req.addresses.0.as_ref().ok_or_else(|| invalid("'addresses' is required"))?)?;
    let mut cur: Vec<String> =
        g["addresses"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
    if add {
        let dup: Vec<&String> = wanted.iter().filter(|a| cur.contains(a)).collect();
        if !dup.is_empty() {
            return Err(NetError::BadRequest(
                "AddressesAlreadyExist",
                format!("Addresses {dup:?} already exist in the address group {id}."),
            ));
        }
        cur.extend(wanted);
    } else {
        let missing: Vec<&String> = wanted.iter().filter(|a| !cur.contains(a)).collect();
        if !missing.is_empty() {
            return Err(NetError::NotFoundTyped(
                "AddressesNotFound",
                format!("Addresses {missing:?} not found in the address group {id}."),
            ));
        }
        cur.retain(|a| !wanted.contains(a));
    }
    g["addresses"] = json!(cur);
    store::touch(&mut g);
    save(st, &g, false).await?;
    Ok(Json(json!({"address_group": g})))
}

async fn add_addresses(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    change(&st, &ctx, &id, req, true).await
}

async fn remove_addresses(
    State(st): State<S>,
    Ctx(ctx): Ctx,
    Path(id): Path<String>,
    OsJson(req): OsJson<Value>,
) -> NetResult<Json<Value>> {
    change(&st, &ctx, &id, req, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized() {
        let n = normalize(&json!(["10.0.0.1", "10.1.2.3/16", "10.0.0.1/32", "2001:db8::1"])).unwrap();
        assert_eq!(n, vec!["10.0.0.1/32", "10.1.0.0/16", "2001:db8::1/128"]);
        assert!(normalize(&json!(["nope"])).is_err());
    }

    /// Agents get a rule naming an address group as one rule per CIDR of its ethertype.
    #[tokio::test]
    async fn agents_see_address_groups_as_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let db = stratus_db::Db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.unwrap();
        db.migrate("network", crate::MIGRATIONS).await.unwrap();
        let net = std::sync::Arc::new(crate::Net {
            db: db.clone(),
            policy: stratus_auth::Policy::load("network", crate::policy::DEFAULTS, None).unwrap(),
            cfg: Default::default(),
            base: "http://test/network".into(),
            bus: std::sync::Arc::new(stratus_bus::InProcBus::new()),
            generation: Default::default(),
            schedule_lock: Default::default(),
            internal: Default::default(),
            ip_locks: Default::default(),
        });
        let ag = json!({"id": "ag", "project_id": "p", "addresses": ["10.0.0.0/24", "192.0.2.1/32", "2001:db8::/64"]});
        let sg = json!({"id": "sg", "project_id": "p", "name": "web", "stateful": true});
        let rule = json!({"id": "r", "project_id": "p", "security_group_id": "sg", "direction": "ingress",
            "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": null, "remote_group_id": null, "remote_address_group_id": "ag"});
        let mut tx = db.begin().await.unwrap();
        store::insert(&mut *tx, KIND, &ag, &Links::default()).await.unwrap();
        store::insert(&mut *tx, store::kind::SECURITY_GROUP, &sg, &Links::default()).await.unwrap();
        store::insert(
            &mut *tx,
            store::kind::SECURITY_GROUP_RULE,
            &rule,
            &Links { parent: Some("sg".into()), ..Default::default() },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let state = crate::agent_rpc::desired_state(&net).await.unwrap();
        let g = state.security_groups.iter().find(|g| g.id == "sg").unwrap();
        let mut prefixes: Vec<String> = g.rules.iter().filter_map(|r| r.remote_ip_prefix.clone()).collect();
        prefixes.sort();
        assert_eq!(prefixes, ["10.0.0.0/24", "192.0.2.1/32"], "IPv4 rule, IPv4 members only");
        assert!(g.rules.iter().all(|r| r.port_range_min == Some(22)));
    }
}
