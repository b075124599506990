//! `/v3/domains/{id}/config`: a domain's own settings for the `identity` and `ldap`
//! groups (Keystone's domain-specific configuration API), and `/v3/domains/config/default`
//! with the defaults of every option that may be set. Only the options Keystone allows
//! per domain are accepted (others: 403, as Keystone's `InvalidDomainConfig`); sensitive
//! options (`ldap.password`) are stored but never shown. Stratus keeps its users in SQL,
//! so a stored LDAP configuration is not acted on (docs/conformance.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, OsJson};
use stratus_db::sqlx::Row;
use stratus_db::Query;

use crate::error::{IdentityError, Result};
use crate::state::Identity;

/// Routes.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/domains/config/default", get(show_default))
        .route("/v3/domains/config/{group}/default", get(show_default_group))
        .route("/v3/domains/config/{group}/{option}/default", get(show_default_option))
        .route("/v3/domains/{domain_id}/config", get(show).put(create).patch(update).delete(delete))
        .route("/v3/domains/{domain_id}/config/{group}", get(show_group).patch(update_group).delete(delete_group))
        .route(
            "/v3/domains/{domain_id}/config/{group}/{option}",
            get(show_option).patch(update_option).delete(delete_option),
        )
}

/// The options a domain may set, with Keystone's defaults (null: no default).
fn defaults() -> BTreeMap<&'static str, Vec<(&'static str, Value)>> {
    let mut m = BTreeMap::new();
    m.insert("identity", vec![("driver", json!("sql")), ("list_limit", Value::Null)]);
    m.insert(
        "ldap",
        vec![
            ("url", json!("ldap://localhost")),
            ("user", Value::Null),
            ("suffix", json!("cn=example,cn=com")),
            ("query_scope", json!("one")),
            ("page_size", json!(0)),
            ("alias_dereferencing", json!("default")),
            ("debug_level", Value::Null),
            ("chase_referrals", Value::Null),
            ("user_tree_dn", Value::Null),
            ("user_filter", Value::Null),
            ("user_objectclass", json!("inetOrgPerson")),
            ("user_id_attribute", json!("cn")),
            ("user_name_attribute", json!("sn")),
            ("user_description_attribute", json!("description")),
            ("user_mail_attribute", json!("mail")),
            ("user_pass_attribute", json!("userPassword")),
            ("user_enabled_attribute", json!("enabled")),
            ("user_enabled_invert", json!(false)),
            ("user_enabled_mask", json!(0)),
            ("user_enabled_default", json!("True")),
            ("user_attribute_ignore", json!(["default_project_id"])),
            ("user_default_project_id_attribute", Value::Null),
            ("user_enabled_emulation", json!(false)),
            ("user_enabled_emulation_dn", Value::Null),
            ("user_enabled_emulation_use_group_config", json!(false)),
            ("user_additional_attribute_mapping", json!([])),
            ("group_tree_dn", Value::Null),
            ("group_filter", Value::Null),
            ("group_objectclass", json!("groupOfNames")),
            ("group_id_attribute", json!("cn")),
            ("group_name_attribute", json!("ou")),
            ("group_member_attribute", json!("member")),
            ("group_members_are_ids", json!(false)),
            ("group_desc_attribute", json!("description")),
            ("group_attribute_ignore", json!([])),
            ("group_additional_attribute_mapping", json!([])),
            ("tls_cacertfile", Value::Null),
            ("tls_cacertdir", Value::Null),
            ("use_tls", json!(false)),
            ("tls_req_cert", json!("demand")),
            ("use_pool", json!(true)),
            ("pool_size", json!(10)),
            ("pool_retry_max", json!(3)),
            ("pool_retry_delay", json!(0.1)),
            ("pool_connection_timeout", json!(-1)),
            ("pool_connection_lifetime", json!(600)),
            ("use_auth_pool", json!(true)),
            ("auth_pool_size", json!(100)),
            ("auth_pool_connection_lifetime", json!(60)),
        ],
    );
    m
}

/// Options stored but never shown.
const SENSITIVE: &[(&str, &str)] = &[("ldap", "password")];

fn allowed(group: &str, option: &str) -> bool {
    SENSITIVE.contains(&(group, option)) || defaults().get(group).is_some_and(|o| o.iter().any(|(n, _)| *n == option))
}

fn invalid(msg: String) -> IdentityError {
    IdentityError::Forbidden(format!("Invalid domain specific configuration: {msg}"))
}

fn check_group(group: &str) -> Result<()> {
    if defaults().contains_key(group) {
        Ok(())
    } else {
        Err(invalid(format!("group {group} is not supported for domain specific configurations")))
    }
}

fn check_option(group: &str, option: &str) -> Result<()> {
    check_group(group)?;
    if allowed(group, option) {
        Ok(())
    } else {
        Err(invalid(format!("option {option} in group {group} is not supported for domain specific configurations")))
    }
}

fn enforce(id: &Identity, ctx: &Ctx, action: &str, domain_id: Option<&str>) -> Result<(), ApiError> {
    let t = match domain_id {
        Some(d) => json!({"target": {"domain": {"id": d}}, "domain_id": d}),
        None => json!({}),
    };
    id.policy.enforce(action, ctx, &t)?;
    Ok(())
}

async fn show_default(State(id): State<Arc<Identity>>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:get_domain_config_default", None)?;
    let mut out = Map::new();
    for (g, opts) in defaults() {
        out.insert(g.into(), Value::Object(opts.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    }
    Ok(Json(json!({"config": out})))
}

async fn show_default_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:get_domain_config_default", None)?;
    check_group(&group)?;
    let opts: Map<String, Value> =
        defaults().remove(group.as_str()).unwrap_or_default().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(Json(json!({"config": {group: opts}})))
}

async fn show_default_option(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((group, option)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:get_domain_config_default", None)?;
    check_option(&group, &option)?;
    let v = defaults()
        .remove(group.as_str())
        .and_then(|o| o.into_iter().find(|(n, _)| *n == option).map(|(_, v)| v))
        .ok_or_else(|| IdentityError::not_found("default configuration option", format!("{group}.{option}")))?;
    Ok(Json(json!({"config": {option: v}})))
}

/// The stored configuration of a domain: group → option → value (sensitive ones left out
/// unless `sensitive`).
async fn load(id: &Identity, domain_id: &str, sensitive: bool) -> Result<Map<String, Value>> {
    let rows = stratus_db::sqlx::query(
        "SELECT config_group, option_name, value FROM identity_domain_configs WHERE domain_id = $1 \
         ORDER BY config_group, option_name",
    )
    .bind(domain_id)
    .fetch_all(id.platform.db.reader())
    .await?;
    let mut out = Map::new();
    for r in rows {
        let (g, o, v): (String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if !sensitive && SENSITIVE.contains(&(g.as_str(), o.as_str())) {
            continue;
        }
        let v = serde_json::from_str(&v).unwrap_or(Value::String(v));
        out.entry(g).or_insert_with(|| json!({})).as_object_mut().map(|m| m.insert(o, v));
    }
    Ok(out)
}

/// A `{"config": {group: {option: value}}}` body, every option checked.
fn parse(body: &Value) -> Result<Vec<(String, String, Value)>> {
    let cfg = body
        .get("config")
        .and_then(Value::as_object)
        .ok_or_else(|| IdentityError::invalid("'config' is a required property"))?;
    if cfg.is_empty() {
        return Err(IdentityError::invalid("Invalid input for field 'config': it must not be empty"));
    }
    let mut out = Vec::new();
    for (g, opts) in cfg {
        check_group(g)?;
        let opts = opts.as_object().ok_or_else(|| {
            IdentityError::invalid(format!("Invalid input for field 'config.{g}': expected an object"))
        })?;
        for (o, v) in opts {
            check_option(g, o)?;
            out.push((g.clone(), o.clone(), v.clone()));
        }
    }
    Ok(out)
}

fn upserts(domain_id: &str, items: &[(String, String, Value)]) -> Vec<Query> {
    let mut qs = Vec::new();
    for (g, o, v) in items {
        let mut d = Query::new("DELETE FROM identity_domain_configs WHERE domain_id = ");
        d.bind(domain_id).push_bind(" AND config_group = ", g).push_bind(" AND option_name = ", o);
        qs.push(d);
        let mut q =
            Query::new("INSERT INTO identity_domain_configs (domain_id, config_group, option_name, value) VALUES (");
        q.bind(domain_id).push(", ").bind(g).push(", ").bind(o).push(", ").bind(v.to_string()).push(")");
        qs.push(q);
    }
    qs
}

async fn must_config(id: &Identity, domain_id: &str) -> Result<Map<String, Value>> {
    crate::domains::must_domain(id, domain_id).await?;
    let cfg = load(id, domain_id, false).await?;
    if cfg.is_empty() && load(id, domain_id, true).await?.is_empty() {
        return Err(IdentityError::not_found("domain config", domain_id));
    }
    Ok(cfg)
}

async fn create(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(domain_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    enforce(&id, &ctx, "identity:create_domain_config", Some(&domain_id))?;
    crate::domains::must_domain(&id, &domain_id).await?;
    let items = parse(&body)?;
    let existed = !load(&id, &domain_id, true).await?.is_empty();
    let mut qs = vec![{
        let mut d = Query::new("DELETE FROM identity_domain_configs WHERE domain_id = ");
        d.bind(&domain_id);
        d
    }];
    qs.extend(upserts(&domain_id, &items));
    id.exec(qs).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({"config": load(&id, &domain_id, false).await?}))))
}

async fn show(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(domain_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:get_domain_config", Some(&domain_id))?;
    Ok(Json(json!({"config": must_config(&id, &domain_id).await?})))
}

async fn update(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(domain_id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:update_domain_config", Some(&domain_id))?;
    must_config(&id, &domain_id).await?;
    let items = parse(&body)?;
    id.exec(upserts(&domain_id, &items)).await?;
    Ok(Json(json!({"config": load(&id, &domain_id, false).await?})))
}

async fn delete(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path(domain_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    enforce(&id, &ctx, "identity:delete_domain_config", Some(&domain_id))?;
    must_config(&id, &domain_id).await?;
    let mut d = Query::new("DELETE FROM identity_domain_configs WHERE domain_id = ");
    d.bind(&domain_id);
    id.exec(vec![d]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn show_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((domain_id, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:get_domain_config", Some(&domain_id))?;
    check_group(&group)?;
    let cfg = must_config(&id, &domain_id).await?;
    let g = cfg.get(&group).cloned().ok_or_else(|| IdentityError::not_found("domain config group", &group))?;
    Ok(Json(json!({"config": {group: g}})))
}

async fn update_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((domain_id, group)): Path<(String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:update_domain_config", Some(&domain_id))?;
    check_group(&group)?;
    must_config(&id, &domain_id).await?;
    let items = parse(&body)?;
    if items.iter().any(|(g, _, _)| *g != group) {
        return Err(invalid(format!("the body may only configure group {group}")).into());
    }
    id.exec(upserts(&domain_id, &items)).await?;
    Ok(Json(json!({"config": load(&id, &domain_id, false).await?})))
}

async fn delete_group(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((domain_id, group)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    enforce(&id, &ctx, "identity:delete_domain_config", Some(&domain_id))?;
    check_group(&group)?;
    must_config(&id, &domain_id).await?;
    let mut d = Query::new("DELETE FROM identity_domain_configs WHERE domain_id = ");
    d.bind(&domain_id).push_bind(" AND config_group = ", &group);
    if id.exec(vec![d]).await? == 0 {
        return Err(IdentityError::not_found("domain config group", &group).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn show_option(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((domain_id, group, option)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:get_domain_config", Some(&domain_id))?;
    check_option(&group, &option)?;
    let cfg = must_config(&id, &domain_id).await?;
    let v = cfg
        .get(&group)
        .and_then(|g| g.get(&option))
        .cloned()
        .ok_or_else(|| IdentityError::not_found("domain config option", format!("{group}.{option}")))?;
    Ok(Json(json!({"config": {option: v}})))
}

async fn update_option(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((domain_id, group, option)): Path<(String, String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    enforce(&id, &ctx, "identity:update_domain_config", Some(&domain_id))?;
    check_option(&group, &option)?;
    must_config(&id, &domain_id).await?;
    let v =
        body.get("config").and_then(|c| c.get(&option)).cloned().ok_or_else(|| {
            IdentityError::invalid(format!("The body must be {{\"config\": {{\"{option}\": value}}}}"))
        })?;
    id.exec(upserts(&domain_id, &[(group.clone(), option.clone(), v)])).await?;
    Ok(Json(json!({"config": load(&id, &domain_id, false).await?})))
}

async fn delete_option(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    Path((domain_id, group, option)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    enforce(&id, &ctx, "identity:delete_domain_config", Some(&domain_id))?;
    check_option(&group, &option)?;
    must_config(&id, &domain_id).await?;
    let mut d = Query::new("DELETE FROM identity_domain_configs WHERE domain_id = ");
    d.bind(&domain_id).push_bind(" AND config_group = ", &group).push_bind(" AND option_name = ", &option);
    if id.exec(vec![d]).await? == 0 {
        return Err(IdentityError::not_found("domain config option", format!("{group}.{option}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}
