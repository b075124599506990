//! Storage of Neutron resources: one row per resource in `network_resources`, carrying the
//! columns that visibility and lookups need (project, parent, a secondary reference,
//! shared flag) and the API body as JSON.
//!
//! Keeping the body whole means every attribute Neutron defines round-trips exactly and
//! filters, sorting and `fields=` work uniformly on the API names. The invariants that
//! must hold under concurrency (one owner per IP, MAC, segmentation id, default group)
//! are not in the JSON: they have their own keyed tables (see `ipam`, `networks`).

use serde_json::{json, Map, Value};
use stratus_auth::RequestContext;
use stratus_db::sqlx::{self, Any, Row};
use stratus_db::{DbError, Query};

/// Resource kinds (the `kind` column).
pub mod kind {
    /// Networks.
    pub const NETWORK: &str = "network";
    /// Subnets (parent: network).
    pub const SUBNET: &str = "subnet";
    /// Subnet pools.
    pub const SUBNETPOOL: &str = "subnetpool";
    /// Ports (parent: network, ref: device_id).
    pub const PORT: &str = "port";
    /// Security groups.
    pub const SECURITY_GROUP: &str = "security_group";
    /// Security group rules (parent: group).
    pub const SECURITY_GROUP_RULE: &str = "security_group_rule";
    /// Routers (ref: external network).
    pub const ROUTER: &str = "router";
    /// Floating IPs (parent: floating network, ref: port).
    pub const FLOATINGIP: &str = "floatingip";
    /// Port forwardings (parent: floating IP).
    pub const PORT_FORWARDING: &str = "port_forwarding";
    /// RBAC policies (parent: object, ref: target project).
    pub const RBAC_POLICY: &str = "rbac_policy";
}

/// Where a row hangs: the indexed columns besides id and project.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// Parent resource id (network of a subnet or port, group of a rule...).
    pub parent: Option<String>,
    /// Secondary reference (device_id of a port, target project of an RBAC policy...).
    pub reference: Option<String>,
    /// Visible to every project.
    pub shared: bool,
}

/// A fresh body with the attributes every Neutron resource has.
pub fn new_body(project_id: &str) -> Map<String, Value> {
    let now = stratus_core::time::seconds_z(&stratus_core::time::now());
    let mut m = Map::new();
    m.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("project_id".into(), json!(project_id));
    m.insert("tenant_id".into(), json!(project_id));
    m.insert("created_at".into(), json!(now));
    m.insert("updated_at".into(), json!(now));
    m.insert("revision_number".into(), json!(0));
    m.insert("tags".into(), json!([]));
    m
}

/// Bumps `revision_number` and `updated_at` after a change.
pub fn touch(body: &mut Value) {
    let rev = body.get("revision_number").and_then(Value::as_i64).unwrap_or(0);
    body["revision_number"] = json!(rev + 1);
    body["updated_at"] = json!(stratus_core::time::seconds_z(&stratus_core::time::now()));
}

/// Text of a string attribute.
pub fn s<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Inserts a resource.
pub async fn insert<'e, E>(ex: E, kind: &str, body: &Value, links: &Links) -> Result<(), DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new(
        "INSERT INTO network_resources (kind, id, project_id, parent_id, ref_id, shared, created_at, body) VALUES (",
    );
    q.bind(kind).push(", ").bind(s(body, "id")).push(", ").bind(s(body, "project_id")).push(", ");
    q.bind(links.parent.clone()).push(", ").bind(links.reference.clone()).push(", ").bind(links.shared);
    // The row keeps microsecond creation time so lists come back in creation order even
    // when the API's second-precision `created_at` ties.
    q.push(", ").bind(stratus_core::time::now()).push(", ").bind(body.to_string()).push(")");
    q.execute(ex).await?;
    Ok(())
}

/// Replaces a resource's body and links.
pub async fn update<'e, E>(ex: E, kind: &str, body: &Value, links: &Links) -> Result<(), DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("UPDATE network_resources SET body = ");
    q.bind(body.to_string()).push(", parent_id = ").bind(links.parent.clone());
    q.push(", ref_id = ").bind(links.reference.clone()).push(", shared = ").bind(links.shared);
    q.push(", project_id = ").bind(s(body, "project_id"));
    q.push(" WHERE kind = ").bind(kind).push(" AND id = ").bind(s(body, "id"));
    q.execute(ex).await?;
    Ok(())
}

/// Replaces only a resource's body (tags, status), keeping its links.
pub async fn update_body<'e, E>(ex: E, kind: &str, body: &Value) -> Result<(), DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("UPDATE network_resources SET body = ");
    q.bind(body.to_string()).push(" WHERE kind = ").bind(kind).push(" AND id = ").bind(s(body, "id"));
    q.execute(ex).await?;
    Ok(())
}

/// Deletes a resource; returns whether it existed.
pub async fn delete<'e, E>(ex: E, kind: &str, id: &str) -> Result<bool, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("DELETE FROM network_resources WHERE kind = ");
    q.bind(kind).push(" AND id = ").bind(id);
    Ok(q.execute(ex).await? > 0)
}

fn decode(rows: Vec<sqlx::any::AnyRow>) -> Vec<Value> {
    rows.iter()
        .filter_map(|r| r.try_get::<String, _>("body").ok())
        .filter_map(|b| serde_json::from_str(&b).ok())
        .collect()
}

/// One resource by id, whoever owns it.
pub async fn get<'e, E>(ex: E, kind: &str, id: &str) -> Result<Option<Value>, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("SELECT body FROM network_resources WHERE kind = ");
    q.bind(kind).push(" AND id = ").bind(id);
    Ok(decode(q.fetch_all(ex).await?).pop())
}

/// Resources of `kind` under `parent`.
pub async fn children<'e, E>(ex: E, kind: &str, parent: &str) -> Result<Vec<Value>, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("SELECT body FROM network_resources WHERE kind = ");
    q.bind(kind).push(" AND parent_id = ").bind(parent).push(" ORDER BY created_at, id");
    Ok(decode(q.fetch_all(ex).await?))
}

/// Resources of `kind` whose secondary reference is `reference`.
pub async fn by_ref<'e, E>(ex: E, kind: &str, reference: &str) -> Result<Vec<Value>, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("SELECT body FROM network_resources WHERE kind = ");
    q.bind(kind).push(" AND ref_id = ").bind(reference).push(" ORDER BY created_at, id");
    Ok(decode(q.fetch_all(ex).await?))
}

/// Every resource of `kind`.
pub async fn all<'e, E>(ex: E, kind: &str) -> Result<Vec<Value>, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("SELECT body FROM network_resources WHERE kind = ");
    q.bind(kind).push(" ORDER BY created_at, id");
    Ok(decode(q.fetch_all(ex).await?))
}

/// How many resources of `kind` `project` owns (quota usage).
pub async fn count<'e, E>(ex: E, kind: &str, project: &str) -> Result<i64, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("SELECT COUNT(*) AS n FROM network_resources WHERE kind = ");
    q.bind(kind).push(" AND project_id = ").bind(project);
    let row = q.fetch_optional(ex).await?;
    Ok(row.and_then(|r| r.try_get::<i64, _>("n").ok()).unwrap_or(0))
}

/// SQL condition: network ids shared with `project` (shared flag or an RBAC grant).
fn push_shared_networks(q: &mut Query, project: &str) {
    q.push("(SELECT n.id FROM network_resources n WHERE n.kind = 'network' AND (n.shared = 1 OR n.id IN (");
    q.push("SELECT r.parent_id FROM network_resources r WHERE r.kind = 'rbac_policy' AND r.ref_id IN (");
    q.bind(project).push(", '*'))))");
}

/// Resources of `kind` the caller may see, optionally only `id`.
///
/// Admins see everything. Others see what their project owns; networks shared globally
/// or by RBAC with them and the subnets of those networks; shared subnet pools.
pub async fn visible<'e, E>(ex: E, ctx: &RequestContext, kind: &str, id: Option<&str>) -> Result<Vec<Value>, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let mut q = Query::new("SELECT body FROM network_resources WHERE kind = ");
    q.bind(kind);
    if let Some(id) = id {
        q.push(" AND id = ").bind(id);
    }
    if !ctx.is_admin() {
        let project = ctx.project_id.clone().unwrap_or_default();
        q.push(" AND (project_id = ").bind(&project);
        match kind {
            kind::NETWORK => {
                q.push(" OR id IN ");
                push_shared_networks(&mut q, &project);
            }
            kind::SUBNET => {
                q.push(" OR parent_id IN ");
                push_shared_networks(&mut q, &project);
            }
            kind::SUBNETPOOL | kind::SECURITY_GROUP => {
                q.push(" OR shared = 1");
            }
            kind::RBAC_POLICY => {
                q.push(" OR ref_id = ").bind(&project);
            }
            _ => {}
        }
        q.push(")");
    }
    q.push(" ORDER BY created_at, id");
    Ok(decode(q.fetch_all(ex).await?))
}
