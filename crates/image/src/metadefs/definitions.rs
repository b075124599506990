//! What a namespace defines: properties (`.../properties[/{name}]`), objects
//! (`.../objects[/{name}]`) and tags (`.../tags[/{name}]`). Each collection can be
//! listed, added to, and emptied at once (`DELETE` on the collection); each item shown,
//! replaced (renames included) and deleted.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sqlx::Row;
use stratus_auth::Ctx;
use stratus_core::{time, OsJson, QueryPairs};
use stratus_db::{sqlx, Db, Query};

use super::{load, touch, validate};
use crate::error::{ImageError, Result};
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    let base = "/v2/metadefs/namespaces/{ns}";
    Router::new()
        .route(&format!("{base}/properties"), get(list_properties).post(create_property).delete(delete_properties))
        .route(&format!("{base}/properties/{{name}}"), get(show_property).put(update_property).delete(delete_property))
        .route(&format!("{base}/objects"), get(list_objects).post(create_object).delete(delete_objects))
        .route(&format!("{base}/objects/{{name}}"), get(show_object).put(update_object).delete(delete_object))
        .route(&format!("{base}/tags"), get(list_tags).post(create_tags).delete(delete_tags))
        .route(&format!("{base}/tags/{{name}}"), get(show_tag).post(create_tag).put(update_tag).delete(delete_tag))
}

fn not_found(kind: &str, name: &str, ns: &str) -> ImageError {
    ImageError::NotFound(format!("Metadata definition {kind} not found for namespace={ns}: name={name}"))
}

fn exists(kind: &str, name: &str, ns: &str) -> String {
    format!("A metadata definition {kind} with name={name} already exists in namespace={ns}.")
}

fn delete_all(table: &str, ns_id: &str) -> Query {
    let mut q = Query::new(format!("DELETE FROM {table} WHERE namespace_id = "));
    q.bind(ns_id);
    q
}

fn delete_one(table: &str, ns_id: &str, name: &str) -> Query {
    let mut q = delete_all(table, ns_id);
    q.push_bind(" AND name = ", name);
    q
}

// --- properties ------------------------------------------------------------------

/// The INSERT of property `name` with definition `def`.
pub fn insert_property(ns_id: &str, name: &str, def: &Value, now: &str) -> Query {
    let mut q = Query::new(
        "INSERT INTO image_metadef_properties (namespace_id, name, json_schema, created_at, updated_at) VALUES (",
    );
    q.bind(ns_id)
        .push_bind(", ", name)
        .push_bind(", ", def.to_string())
        .push_bind(", ", now)
        .push_bind(", ", now)
        .push(")");
    q
}

/// Every property of a namespace: name → definition.
pub async fn properties(db: &Db, ns_id: &str) -> Result<Vec<(String, Value)>> {
    let rows = Query::new("SELECT name, json_schema FROM image_metadef_properties WHERE namespace_id = ")
        .bind(ns_id)
        .push(" ORDER BY name")
        .fetch_all(db.reader())
        .await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(0).map_err(stratus_db::DbError::from)?;
            let def: String = r.try_get(1).map_err(stratus_db::DbError::from)?;
            Ok((name, serde_json::from_str(&def).unwrap_or(Value::Null)))
        })
        .collect()
}

fn property_view(name: &str, def: &Value) -> Value {
    let mut v = def.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("name".into(), json!(name));
    }
    v
}

async fn list_properties(State(st): State<St>, Ctx(ctx): Ctx, Path(ns): Path<String>) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "get_metadef_namespace").await?;
    let props: Map<String, Value> = properties(&st.platform.db, &ns.id).await?.into_iter().collect();
    Ok(Json(json!({"properties": props})))
}

async fn create_property(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path(ns): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    let (name, def) = validate::property(&body, true)?;
    let name = name.unwrap_or_default();
    let def = Value::Object(def);
    let now = time::now();
    super::write(
        &st.platform.db,
        vec![insert_property(&ns.id, &name, &def, &now), touch(&ns.id)],
        &exists("property", &name, &ns.namespace),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(property_view(&name, &def))).into_response())
}

/// The stored name of `name` shown for `resource_type`: its prefix removed (404 when
/// the name does not carry it).
async fn unprefixed(st: &St, ns_id: &str, ns: &str, name: &str, q: &QueryPairs) -> Result<String> {
    let Some(rt) = q.get("resource_type") else { return Ok(name.to_string()) };
    let assocs = super::resource_types::associations(&st.platform.db, ns_id).await?;
    let prefix = assocs.iter().find(|a| a.name == rt).and_then(|a| a.prefix.clone()).unwrap_or_default();
    name.strip_prefix(prefix.as_str()).map(str::to_string).ok_or_else(|| not_found("property", name, ns))
}

async fn load_property(db: &Db, ns_id: &str, name: &str) -> Result<Option<Value>> {
    let r = Query::new("SELECT json_schema FROM image_metadef_properties WHERE namespace_id = ")
        .bind(ns_id)
        .push_bind(" AND name = ", name)
        .fetch_optional(db.reader())
        .await?;
    match r {
        Some(r) => {
            let s: String = r.try_get(0).map_err(stratus_db::DbError::from)?;
            Ok(Some(serde_json::from_str(&s).unwrap_or(Value::Null)))
        }
        None => Ok(None),
    }
}

async fn show_property(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    q: QueryPairs,
) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "get_metadef_namespace").await?;
    let stored = unprefixed(&st, &ns.id, &ns.namespace, &name, &q).await?;
    let def = load_property(&st.platform.db, &ns.id, &stored)
        .await?
        .ok_or_else(|| not_found("property", &name, &ns.namespace))?;
    Ok(Json(property_view(&name, &def)))
}

async fn update_property(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    load_property(&st.platform.db, &ns.id, &name).await?.ok_or_else(|| not_found("property", &name, &ns.namespace))?;
    let (new_name, def) = validate::property(&body, true)?;
    let new_name = new_name.unwrap_or_default();
    let def = Value::Object(def);
    let mut q = Query::new("UPDATE image_metadef_properties SET name = ");
    q.bind(new_name.clone())
        .push_bind(", json_schema = ", def.to_string())
        .push_bind(", updated_at = ", time::now())
        .push_bind(" WHERE namespace_id = ", ns.id.clone())
        .push_bind(" AND name = ", name.clone());
    super::write(&st.platform.db, vec![q, touch(&ns.id)], &exists("property", &new_name, &ns.namespace)).await?;
    Ok(Json(property_view(&new_name, &def)))
}

async fn delete_property(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &ns, "delete_metadef_namespace").await?;
    let n =
        super::write(&st.platform.db, vec![delete_one("image_metadef_properties", &ns.id, &name), touch(&ns.id)], "")
            .await?;
    if n[0] == 0 {
        return Err(not_found("property", &name, &ns.namespace));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_properties(State(st): State<St>, Ctx(ctx): Ctx, Path(ns): Path<String>) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &ns, "delete_metadef_namespace").await?;
    super::write(&st.platform.db, vec![delete_all("image_metadef_properties", &ns.id), touch(&ns.id)], "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- objects ----------------------------------------------------------------------

/// An object: a named group of property definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Name, unique in the namespace.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Names of the properties a resource must have.
    pub required: Vec<String>,
    /// Property definitions.
    pub properties: Map<String, Value>,
    /// Storage format.
    pub created_at: String,
    /// Storage format.
    pub updated_at: String,
}

impl Object {
    /// The object as the API shows it.
    pub fn view(&self, ns: &str) -> Value {
        let mut v = json!({
            "name": self.name,
            "schema": "/v2/schemas/metadefs/object",
            "self": format!("/v2/metadefs/namespaces/{ns}/objects/{}", self.name),
            "created_at": time::seconds_z(&self.created_at),
            "updated_at": time::seconds_z(&self.updated_at),
        });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        if !self.required.is_empty() {
            v["required"] = json!(self.required);
        }
        if !self.properties.is_empty() {
            v["properties"] = Value::Object(self.properties.clone());
        }
        v
    }
}

/// The INSERT of object `o`.
pub fn insert_object(ns_id: &str, o: &Object) -> Query {
    let mut q = Query::new(
        "INSERT INTO image_metadef_objects (namespace_id, name, description, required, json_schema, created_at, updated_at) VALUES (",
    );
    q.bind(ns_id)
        .push_bind(", ", o.name.clone())
        .push_bind(", ", o.description.clone())
        .push_bind(", ", json!(o.required).to_string())
        .push_bind(", ", Value::Object(o.properties.clone()).to_string())
        .push_bind(", ", o.created_at.clone())
        .push_bind(", ", o.updated_at.clone())
        .push(")");
    q
}

fn object_from_row(r: &sqlx::any::AnyRow) -> Result<Object> {
    let get = |i: usize| -> Result<Option<String>> { Ok(r.try_get(i).map_err(stratus_db::DbError::from)?) };
    let required: Vec<String> = serde_json::from_str(&get(2)?.unwrap_or_default()).unwrap_or_default();
    let properties: Map<String, Value> = serde_json::from_str(&get(3)?.unwrap_or_default()).unwrap_or_default();
    Ok(Object {
        name: get(0)?.unwrap_or_default(),
        description: get(1)?,
        required,
        properties,
        created_at: get(4)?.unwrap_or_default(),
        updated_at: get(5)?.unwrap_or_default(),
    })
}

const OBJECT_COLUMNS: &str = "name, description, required, json_schema, created_at, updated_at";

/// Every object of a namespace, by name.
pub async fn objects(db: &Db, ns_id: &str) -> Result<Vec<Object>> {
    let rows = Query::new(format!("SELECT {OBJECT_COLUMNS} FROM image_metadef_objects WHERE namespace_id = "))
        .bind(ns_id)
        .push(" ORDER BY name")
        .fetch_all(db.reader())
        .await?;
    rows.iter().map(object_from_row).collect()
}

async fn load_object(db: &Db, ns_id: &str, name: &str) -> Result<Option<Object>> {
    let r = Query::new(format!("SELECT {OBJECT_COLUMNS} FROM image_metadef_objects WHERE namespace_id = "))
        .bind(ns_id)
        .push_bind(" AND name = ", name)
        .fetch_optional(db.reader())
        .await?;
    r.as_ref().map(object_from_row).transpose()
}

async fn list_objects(State(st): State<St>, Ctx(ctx): Ctx, Path(ns): Path<String>) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "get_metadef_namespace").await?;
    let list: Vec<Value> = objects(&st.platform.db, &ns.id).await?.iter().map(|o| o.view(&ns.namespace)).collect();
    Ok(Json(json!({"objects": list, "schema": "/v2/schemas/metadefs/objects"})))
}

async fn create_object(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path(ns): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    let validate::ObjectDef { name, description, required, properties } = validate::object_def(&body)?;
    let now = time::now();
    let o = Object { name, description, required, properties, created_at: now.clone(), updated_at: now };
    super::write(
        &st.platform.db,
        vec![insert_object(&ns.id, &o), touch(&ns.id)],
        &exists("object", &o.name, &ns.namespace),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(o.view(&ns.namespace))).into_response())
}

async fn show_object(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "get_metadef_namespace").await?;
    let o =
        load_object(&st.platform.db, &ns.id, &name).await?.ok_or_else(|| not_found("object", &name, &ns.namespace))?;
    Ok(Json(o.view(&ns.namespace)))
}

async fn update_object(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    let old =
        load_object(&st.platform.db, &ns.id, &name).await?.ok_or_else(|| not_found("object", &name, &ns.namespace))?;
    let validate::ObjectDef { name: new_name, description, required, properties } = validate::object_def(&body)?;
    let o = Object {
        name: new_name,
        description,
        required,
        properties,
        created_at: old.created_at,
        updated_at: time::now(),
    };
    let mut q = Query::new("UPDATE image_metadef_objects SET name = ");
    q.bind(o.name.clone())
        .push_bind(", description = ", o.description.clone())
        .push_bind(", required = ", json!(o.required).to_string())
        .push_bind(", json_schema = ", Value::Object(o.properties.clone()).to_string())
        .push_bind(", updated_at = ", o.updated_at.clone())
        .push_bind(" WHERE namespace_id = ", ns.id.clone())
        .push_bind(" AND name = ", name.clone());
    super::write(&st.platform.db, vec![q, touch(&ns.id)], &exists("object", &o.name, &ns.namespace)).await?;
    Ok(Json(o.view(&ns.namespace)))
}

async fn delete_object(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &ns, "delete_metadef_namespace").await?;
    let n = super::write(&st.platform.db, vec![delete_one("image_metadef_objects", &ns.id, &name), touch(&ns.id)], "")
        .await?;
    if n[0] == 0 {
        return Err(not_found("object", &name, &ns.namespace));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_objects(State(st): State<St>, Ctx(ctx): Ctx, Path(ns): Path<String>) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &ns, "delete_metadef_namespace").await?;
    super::write(&st.platform.db, vec![delete_all("image_metadef_objects", &ns.id), touch(&ns.id)], "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- tags -------------------------------------------------------------------------

/// The INSERT of tag `name`.
pub fn insert_tag(ns_id: &str, name: &str, now: &str) -> Query {
    let mut q = Query::new("INSERT INTO image_metadef_tags (namespace_id, name, created_at, updated_at) VALUES (");
    q.bind(ns_id).push_bind(", ", name).push_bind(", ", now).push_bind(", ", now).push(")");
    q
}

/// Every tag of a namespace: (name, created_at, updated_at), by name.
pub async fn tags(db: &Db, ns_id: &str) -> Result<Vec<(String, String, String)>> {
    let rows = Query::new("SELECT name, created_at, updated_at FROM image_metadef_tags WHERE namespace_id = ")
        .bind(ns_id)
        .push(" ORDER BY name")
        .fetch_all(db.reader())
        .await?;
    rows.iter()
        .map(|r| {
            let g = |i| r.try_get::<String, _>(i).map_err(|e| ImageError::from(stratus_db::DbError::from(e)));
            Ok((g(0)?, g(1)?, g(2)?))
        })
        .collect()
}

fn tag_view(name: &str, created: &str, updated: &str) -> Value {
    json!({"name": name, "created_at": time::seconds_z(created), "updated_at": time::seconds_z(updated)})
}

async fn list_tags(State(st): State<St>, Ctx(ctx): Ctx, Path(ns): Path<String>) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "get_metadef_namespace").await?;
    let list: Vec<Value> = tags(&st.platform.db, &ns.id).await?.iter().map(|(n, c, u)| tag_view(n, c, u)).collect();
    Ok(Json(json!({"tags": list})))
}

/// `POST .../tags` with `{"tags": [{"name": ...}]}`: replaces the namespace's tags, or
/// adds to them with `X-Openstack-Append: true`.
async fn create_tags(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path(ns): Path<String>,
    headers: HeaderMap,
    OsJson(body): OsJson<Value>,
) -> Result<Response> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    let obj = validate::object(&body, "tags request", &["tags"])?;
    let list = obj
        .get("tags")
        .and_then(Value::as_array)
        .ok_or_else(|| ImageError::BadRequest("The request needs 'tags': a list of {\"name\": ...}".into()))?;
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for t in list {
        let n = validate::tag(t)?;
        if names.contains(&n) {
            return Err(ImageError::Conflict(format!("Duplicate tag name {n} in the request")));
        }
        names.push(n);
    }
    let append = headers
        .get("x-openstack-append")
        .and_then(|v| v.to_str().ok())
        .and_then(stratus_core::query::parse_bool)
        .unwrap_or(false);
    let now = time::now();
    let mut qs = Vec::new();
    if !append {
        qs.push(delete_all("image_metadef_tags", &ns.id));
    }
    qs.extend(names.iter().map(|n| insert_tag(&ns.id, n, &now)));
    qs.push(touch(&ns.id));
    super::write(&st.platform.db, qs, &format!("A tag in the request already exists in namespace={}.", ns.namespace))
        .await?;
    let out: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
    Ok((StatusCode::CREATED, Json(json!({"tags": out}))).into_response())
}

async fn load_tag(db: &Db, ns_id: &str, name: &str) -> Result<Option<(String, String)>> {
    let r = Query::new("SELECT created_at, updated_at FROM image_metadef_tags WHERE namespace_id = ")
        .bind(ns_id)
        .push_bind(" AND name = ", name)
        .fetch_optional(db.reader())
        .await?;
    match r {
        Some(r) => Ok(Some((
            r.try_get(0).map_err(stratus_db::DbError::from)?,
            r.try_get(1).map_err(stratus_db::DbError::from)?,
        ))),
        None => Ok(None),
    }
}

async fn show_tag(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "get_metadef_namespace").await?;
    let (c, u) =
        load_tag(&st.platform.db, &ns.id, &name).await?.ok_or_else(|| not_found("tag", &name, &ns.namespace))?;
    Ok(Json(tag_view(&name, &c, &u)))
}

/// `POST .../tags/{name}`: one more tag (no body needed).
async fn create_tag(State(st): State<St>, Ctx(ctx): Ctx, Path((ns, name)): Path<(String, String)>) -> Result<Response> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    let name = validate::name(Some(&Value::String(name)), "name", 80)?;
    let now = time::now();
    super::write(
        &st.platform.db,
        vec![insert_tag(&ns.id, &name, &now), touch(&ns.id)],
        &exists("tag", &name, &ns.namespace),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tag_view(&name, &now, &now))).into_response())
}

/// `PUT .../tags/{name}` with `{"name": new}`: renames the tag.
async fn update_tag(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &ns, "modify_metadef_namespace").await?;
    let (created, _) =
        load_tag(&st.platform.db, &ns.id, &name).await?.ok_or_else(|| not_found("tag", &name, &ns.namespace))?;
    let new_name = validate::tag(&body)?;
    let now = time::now();
    let mut q = Query::new("UPDATE image_metadef_tags SET name = ");
    q.bind(new_name.clone())
        .push_bind(", updated_at = ", now.clone())
        .push_bind(" WHERE namespace_id = ", ns.id.clone())
        .push_bind(" AND name = ", name);
    super::write(&st.platform.db, vec![q, touch(&ns.id)], &exists("tag", &new_name, &ns.namespace)).await?;
    Ok(Json(tag_view(&new_name, &created, &now)))
}

async fn delete_tag(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &ns, "delete_metadef_namespace").await?;
    let n =
        super::write(&st.platform.db, vec![delete_one("image_metadef_tags", &ns.id, &name), touch(&ns.id)], "").await?;
    if n[0] == 0 {
        return Err(not_found("tag", &name, &ns.namespace));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_tags(State(st): State<St>, Ctx(ctx): Ctx, Path(ns): Path<String>) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &ns, "delete_metadef_namespace").await?;
    super::write(&st.platform.db, vec![delete_all("image_metadef_tags", &ns.id), touch(&ns.id)], "").await?;
    Ok(StatusCode::NO_CONTENT)
}
