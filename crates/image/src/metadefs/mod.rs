//! Metadata definitions (metadefs): a catalog of the properties that resources
//! (images, volumes, flavors...) may carry, grouped in namespaces, so that UIs and
//! operators share one vocabulary (`/v2/metadefs/*`, Glance's API).
//!
//! A namespace ([`namespaces`]) holds property definitions, objects (named groups of
//! property definitions) and tags ([`definitions`]), and is associated with resource
//! types ([`resource_types`]). Public namespaces are visible to everyone, private ones
//! to their owner's project and admins; anything else answers 404 as if absent. Only
//! admins change definitions (Glance's `metadef_admin`). Definitions are validated
//! against the same rules the `/v2/schemas/metadefs/*` documents publish ([`validate`]).

pub mod definitions;
pub mod namespaces;
pub mod resource_types;
pub mod schemas;
pub mod validate;

use axum::Router;
use serde_json::{json, Value};
use sqlx::Row;
use stratus_core::{time, RequestContext};
use stratus_db::{sqlx, Db, Query};

use crate::error::{ImageError, Result};
use crate::St;

/// Routes of the metadefs API and its schemas.
pub fn routes() -> Router<St> {
    Router::new()
        .merge(namespaces::routes())
        .merge(definitions::routes())
        .merge(resource_types::routes())
        .merge(schemas::routes())
}

/// A namespace as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    /// Internal id (definitions refer to it, so a rename moves them along).
    pub id: String,
    /// The name clients use.
    pub namespace: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// public or private.
    pub visibility: String,
    /// Protected namespaces cannot be deleted.
    pub protected: bool,
    /// Owning project.
    pub owner: String,
    /// Storage format.
    pub created_at: String,
    /// Storage format.
    pub updated_at: String,
}

const NS_COLUMNS: &str =
    "id, namespace, display_name, description, visibility, protected, owner, created_at, updated_at";

fn ns_from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Namespace, sqlx::Error> {
    Ok(Namespace {
        id: r.try_get(0)?,
        namespace: r.try_get(1)?,
        display_name: r.try_get(2)?,
        description: r.try_get(3)?,
        visibility: r.try_get(4)?,
        protected: r.try_get::<i64, _>(5)? != 0,
        owner: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// Rows to namespaces.
pub fn ns_rows(rows: &[sqlx::any::AnyRow]) -> Result<Vec<Namespace>> {
    rows.iter().map(|r| ns_from_row(r).map_err(|e| stratus_db::DbError::from(e).into())).collect()
}

/// The 404 for a namespace the caller may not see.
pub fn ns_not_found(name: &str) -> ImageError {
    ImageError::NotFound(format!("Metadata definition namespace={name} was not found."))
}

/// True when `ctx` may see `ns`: admins all, others public ones and their project's.
pub fn can_see(ctx: &RequestContext, ns: &Namespace) -> bool {
    ctx.is_admin() || ns.visibility == "public" || ctx.project_id.as_deref() == Some(ns.owner.as_str())
}

/// The policy target of a namespace.
pub fn target(ns: &Namespace) -> Value {
    json!({"project_id": ns.owner, "owner": ns.owner, "visibility": ns.visibility, "namespace": ns.namespace})
}

/// Loads namespace `name` if the caller may see it (else 404) and may do `rule` on it.
pub async fn load(st: &St, ctx: &RequestContext, name: &str, rule: &str) -> Result<Namespace> {
    let rows = Query::new(format!("SELECT {NS_COLUMNS} FROM image_metadef_namespaces WHERE namespace = "))
        .bind(name)
        .fetch_all(st.platform.db.reader())
        .await?;
    let ns = ns_rows(&rows)?.pop().filter(|ns| can_see(ctx, ns)).ok_or_else(|| ns_not_found(name))?;
    st.policy.enforce("get_metadef_namespace", ctx, &target(&ns)).map_err(|_| ns_not_found(name))?;
    if rule != "get_metadef_namespace" {
        st.policy.enforce(rule, ctx, &target(&ns))?;
    }
    Ok(ns)
}

/// `/v2/metadefs/namespaces/{ns}`.
pub fn ns_href(ns: &str) -> String {
    format!("/v2/metadefs/namespaces/{ns}")
}

/// The namespace's own attributes as the API shows them.
pub fn ns_view(ns: &Namespace) -> Value {
    let mut v = json!({
        "namespace": ns.namespace,
        "visibility": ns.visibility,
        "protected": ns.protected,
        "owner": ns.owner,
        "created_at": time::seconds_z(&ns.created_at),
        "updated_at": time::seconds_z(&ns.updated_at),
        "self": ns_href(&ns.namespace),
        "schema": "/v2/schemas/metadefs/namespace",
    });
    if let Some(d) = &ns.display_name {
        v["display_name"] = json!(d);
    }
    if let Some(d) = &ns.description {
        v["description"] = json!(d);
    }
    v
}

/// Bumps the namespace's `updated_at` (a definition in it changed).
pub fn touch(ns_id: &str) -> Query {
    let mut q = Query::new("UPDATE image_metadef_namespaces SET updated_at = ");
    q.bind(time::now()).push_bind(" WHERE id = ", ns_id);
    q
}

/// Runs `qs` in one write transaction, mapping a unique violation to 409 `conflict`.
pub async fn write(db: &Db, qs: Vec<Query>, conflict: &str) -> Result<Vec<u64>> {
    match crate::images::db::write(db, qs).await {
        Err(ImageError::Db(e)) if e.is_unique_violation() => Err(ImageError::Conflict(conflict.to_string())),
        other => other,
    }
}
