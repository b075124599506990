//! Resource types (`GET /v2/metadefs/resource_types`) and the associations of a
//! namespace with them (`/v2/metadefs/namespaces/{ns}/resource_types[/{name}]`), which
//! say to what a namespace's definitions apply and with which property prefix
//! (`hw_` for flavors' extra specs...). Associating with a type the cloud does not
//! know yet creates it, as Glance does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::Row;
use stratus_auth::Ctx;
use stratus_core::{time, OsJson};
use stratus_db::{sqlx, Db, Query};

use super::{load, touch, validate};
use crate::error::{ImageError, Result};
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/metadefs/resource_types", get(list))
        .route("/v2/metadefs/namespaces/{ns}/resource_types", get(list_associations).post(associate))
        .route("/v2/metadefs/namespaces/{ns}/resource_types/{name}", delete(dissociate))
}

/// A namespace's association with a resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct Association {
    /// Resource type name (`OS::Glance::Image`).
    pub name: String,
    /// Prefix of the properties on resources of that type.
    pub prefix: Option<String>,
    /// Where on the resource the properties go (`image`, `volume`...).
    pub properties_target: Option<String>,
    /// Storage format.
    pub created_at: String,
    /// Storage format.
    pub updated_at: String,
}

impl Association {
    /// As the API shows it.
    pub fn view(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "created_at": time::seconds_z(&self.created_at),
            "updated_at": time::seconds_z(&self.updated_at),
        });
        if let Some(p) = &self.prefix {
            v["prefix"] = json!(p);
        }
        if let Some(t) = &self.properties_target {
            v["properties_target"] = json!(t);
        }
        v
    }
}

/// The associations of namespace `ns_id`, by type name.
pub async fn associations(db: &Db, ns_id: &str) -> Result<Vec<Association>> {
    let rows = Query::new(
        "SELECT resource_type, prefix, properties_target, created_at, updated_at FROM image_metadef_associations \
         WHERE namespace_id = ",
    )
    .bind(ns_id)
    .push(" ORDER BY resource_type")
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            let e = |e| ImageError::from(stratus_db::DbError::from(e));
            Ok(Association {
                name: r.try_get(0).map_err(e)?,
                prefix: r.try_get(1).map_err(e)?,
                properties_target: r.try_get(2).map_err(e)?,
                created_at: r.try_get(3).map_err(e)?,
                updated_at: r.try_get(4).map_err(e)?,
            })
        })
        .collect()
}

/// The statements associating namespace `ns_id` with type `rt`, creating the type if
/// the cloud does not know it.
pub fn associate_queries(ns_id: &str, rt: &str, prefix: Option<&str>, target: Option<&str>, now: &str) -> Vec<Query> {
    let mut ty =
        Query::new("INSERT INTO image_metadef_resource_types (name, protected, created_at, updated_at) VALUES (");
    ty.bind(rt).push(", 0, ").bind(now).push(", ").bind(now).push(") ON CONFLICT (name) DO NOTHING");
    let mut a = Query::new(
        "INSERT INTO image_metadef_associations (namespace_id, resource_type, prefix, properties_target, created_at, \
         updated_at) VALUES (",
    );
    a.bind(ns_id)
        .push_bind(", ", rt)
        .push_bind(", ", prefix.map(str::to_string))
        .push_bind(", ", target.map(str::to_string))
        .push_bind(", ", now)
        .push_bind(", ", now)
        .push(")");
    vec![ty, a]
}

/// `GET /v2/metadefs/resource_types`: every type the cloud knows.
async fn list(State(st): State<St>, Ctx(ctx): Ctx) -> Result<Json<Value>> {
    let project = ctx.project_id.clone().unwrap_or_default();
    st.policy.enforce("get_metadef_namespaces", &ctx, &json!({"project_id": project}))?;
    let rows = Query::new("SELECT name, created_at, updated_at FROM image_metadef_resource_types ORDER BY name")
        .fetch_all(st.platform.db.reader())
        .await?;
    let mut list = Vec::with_capacity(rows.len());
    for r in rows {
        let g = |i| r.try_get::<String, _>(i).map_err(|e| ImageError::from(stratus_db::DbError::from(e)));
        list.push(json!({"name": g(0)?, "created_at": time::seconds_z(&g(1)?), "updated_at": time::seconds_z(&g(2)?)}));
    }
    Ok(Json(json!({ "resource_types": list })))
}

async fn list_associations(State(st): State<St>, Ctx(ctx): Ctx, Path(ns): Path<String>) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "get_metadef_namespace").await?;
    let list: Vec<Value> = associations(&st.platform.db, &ns.id).await?.iter().map(Association::view).collect();
    Ok(Json(json!({ "resource_type_associations": list })))
}

/// `POST .../resource_types` (admin) with `{name, prefix, properties_target}`.
async fn associate(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path(ns): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    let (name, prefix, target) = validate::association(&body)?;
    let now = time::now();
    let mut qs = associate_queries(&ns.id, &name, prefix.as_deref(), target.as_deref(), &now);
    qs.push(touch(&ns.id));
    let conflict = format!(
        "The metadata definition resource-type association of resource-type={name} to namespace={} already exists.",
        ns.namespace
    );
    super::write(&st.platform.db, qs, &conflict).await?;
    let a = Association { name, prefix, properties_target: target, created_at: now.clone(), updated_at: now };
    Ok((StatusCode::CREATED, Json(a.view())).into_response())
}

/// `DELETE .../resource_types/{name}` (admin).
async fn dissociate(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &ns, "delete_metadef_namespace").await?;
    let mut q = Query::new("DELETE FROM image_metadef_associations WHERE namespace_id = ");
    q.bind(ns.id.clone()).push_bind(" AND resource_type = ", name.clone());
    let n = super::write(&st.platform.db, vec![q, touch(&ns.id)], "").await?;
    if n[0] == 0 {
        return Err(ImageError::NotFound(format!(
            "Metadata definition resource-type-association not found for resource-type={name} and namespace={}",
            ns.namespace
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
