//! Namespaces: `/v2/metadefs/namespaces` (list, create with everything in it) and
//! `/v2/metadefs/namespaces/{ns}` (show with everything in it, update, delete).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sqlx::Row;
use stratus_auth::Ctx;
use stratus_core::pagination::{split_page, PageSpec, SortDir};
use stratus_core::query::encode;
use stratus_core::{time, OsJson, QueryPairs};
use stratus_db::{sqlx, Arg, Query};

use super::definitions::{self, Object};
use super::{load, ns_rows, ns_view, validate, Namespace, NS_COLUMNS};
use crate::error::{ImageError, Result};
use crate::St;

/// Routes of this module.
pub fn routes() -> Router<St> {
    Router::new()
        .route("/v2/metadefs/namespaces", get(list).post(create))
        .route("/v2/metadefs/namespaces/{ns}", get(show).put(update).delete(delete))
}

const KEYS: &[&str] = &[
    "namespace",
    "display_name",
    "description",
    "visibility",
    "protected",
    "owner",
    "resource_type_associations",
    "properties",
    "objects",
    "tags",
];

fn visibility(obj: &Map<String, Value>) -> Result<Option<String>> {
    match validate::opt_text(obj, "visibility", 16)? {
        None => Ok(None),
        Some(v) if v == "public" || v == "private" => Ok(Some(v)),
        Some(v) => Err(ImageError::BadRequest(format!("'{v}' is not one of ['public', 'private'] for 'visibility'"))),
    }
}

fn exists(name: &str) -> String {
    format!("A metadata definition namespace with name={name} already exists.")
}

/// `POST /v2/metadefs/namespaces` (admin): the namespace and, in the same transaction,
/// the associations, properties, objects and tags the body carries.
async fn create(State(st): State<St>, Ctx(ctx): Ctx, OsJson(body): OsJson<Value>) -> Result<Response> {
    let obj = validate::object(&body, "namespace", KEYS)?;
    let name = validate::name(obj.get("namespace"), "namespace", 80)?;
    let owner = match validate::opt_text(obj, "owner", 255)? {
        Some(o) => o,
        None => ctx.project_id.clone().unwrap_or_default(),
    };
    let now = time::now();
    let ns = Namespace {
        id: uuid::Uuid::new_v4().to_string(),
        namespace: name.clone(),
        display_name: validate::opt_text(obj, "display_name", 80)?,
        description: validate::opt_text(obj, "description", 500)?,
        visibility: visibility(obj)?.unwrap_or_else(|| "private".into()),
        protected: validate::opt_bool(obj, "protected")?.unwrap_or(false),
        owner,
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    st.policy.enforce("add_metadef_namespace", &ctx, &super::target(&ns))?;
    let mut associations = Vec::new();
    for a in obj.get("resource_type_associations").and_then(Value::as_array).into_iter().flatten() {
        associations.push(validate::association(a)?);
    }
    if obj.get("resource_type_associations").is_some_and(|v| !v.is_array() && !v.is_null()) {
        return Err(ImageError::BadRequest("'resource_type_associations' must be a list".into()));
    }
    let properties = match obj.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(p) => validate::properties(p)?,
    };
    let mut objects = Vec::new();
    match obj.get("objects") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for o in list {
                let validate::ObjectDef { name, description, required, properties: props } = validate::object_def(o)?;
                objects.push(Object {
                    name,
                    description,
                    required,
                    properties: props,
                    created_at: now.clone(),
                    updated_at: now.clone(),
                });
            }
        }
        Some(_) => return Err(ImageError::BadRequest("'objects' must be a list".into())),
    }
    let mut tags = Vec::new();
    match obj.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for t in list {
                tags.push(validate::tag(t)?);
            }
        }
        Some(_) => return Err(ImageError::BadRequest("'tags' must be a list".into())),
    }

    let mut qs = vec![insert_namespace(&ns)];
    for (rt, prefix, target) in &associations {
        qs.extend(super::resource_types::associate_queries(&ns.id, rt, prefix.as_deref(), target.as_deref(), &now));
    }
    for (pname, def) in &properties {
        qs.push(definitions::insert_property(&ns.id, pname, def, &now));
    }
    for o in &objects {
        qs.push(definitions::insert_object(&ns.id, o));
    }
    for t in &tags {
        qs.push(definitions::insert_tag(&ns.id, t, &now));
    }
    super::write(&st.platform.db, qs, &exists(&name)).await?;
    tracing::info!(namespace = %name, "metadef namespace created");
    let body = full_view(&st, &ns, None).await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn insert_namespace(ns: &Namespace) -> Query {
    let mut q = Query::new(format!("INSERT INTO image_metadef_namespaces ({NS_COLUMNS}) VALUES ("));
    q.bind(ns.id.clone())
        .push_bind(", ", ns.namespace.clone())
        .push_bind(", ", ns.display_name.clone())
        .push_bind(", ", ns.description.clone())
        .push_bind(", ", ns.visibility.clone())
        .push_bind(", ", ns.protected)
        .push_bind(", ", ns.owner.clone())
        .push_bind(", ", ns.created_at.clone())
        .push_bind(", ", ns.updated_at.clone())
        .push(")");
    q
}

/// The namespace with its associations, properties (names prefixed for
/// `resource_type`, as Glance), objects and tags, each only when there are some.
async fn full_view(st: &St, ns: &Namespace, resource_type: Option<&str>) -> Result<Value> {
    let db = &st.platform.db;
    let mut v = ns_view(ns);
    let assocs = super::resource_types::associations(db, &ns.id).await?;
    let mut prefix = String::new();
    if let Some(rt) = resource_type {
        if let Some(a) = assocs.iter().find(|a| a.name == rt) {
            prefix = a.prefix.clone().unwrap_or_default();
        }
    }
    if !assocs.is_empty() {
        v["resource_type_associations"] = json!(assocs.iter().map(|a| a.view()).collect::<Vec<_>>());
    }
    let props = definitions::properties(db, &ns.id).await?;
    if !props.is_empty() {
        let m: Map<String, Value> = props.into_iter().map(|(k, d)| (format!("{prefix}{k}"), d)).collect();
        v["properties"] = Value::Object(m);
    }
    let objects = definitions::objects(db, &ns.id).await?;
    if !objects.is_empty() {
        v["objects"] = json!(objects.iter().map(|o| o.view(&ns.namespace)).collect::<Vec<_>>());
    }
    let tags = definitions::tags(db, &ns.id).await?;
    if !tags.is_empty() {
        v["tags"] = json!(tags.iter().map(|(n, _, _)| json!({"name": n})).collect::<Vec<_>>());
    }
    Ok(v)
}

/// `GET /v2/metadefs/namespaces/{ns}` (`?resource_type=` prefixes property names).
async fn show(State(st): State<St>, Ctx(ctx): Ctx, Path(name): Path<String>, q: QueryPairs) -> Result<Json<Value>> {
    let ns = load(&st, &ctx, &name, "get_metadef_namespace").await?;
    Ok(Json(full_view(&st, &ns, q.get("resource_type")).await?))
}

/// `PUT /v2/metadefs/namespaces/{ns}` (admin): the namespace's own attributes (the
/// definitions in it have their own calls); it may be renamed.
async fn update(
    State(st): State<St>,
    Ctx(ctx): Ctx,
    Path(name): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>> {
    let old = load(&st, &ctx, &name, "modify_metadef_namespace").await?;
    let obj = validate::object(&body, "namespace", KEYS)?;
    let mut ns = old.clone();
    ns.namespace = validate::name(obj.get("namespace"), "namespace", 80)?;
    if obj.contains_key("display_name") {
        ns.display_name = validate::opt_text(obj, "display_name", 80)?;
    }
    if obj.contains_key("description") {
        ns.description = validate::opt_text(obj, "description", 500)?;
    }
    if let Some(v) = visibility(obj)? {
        ns.visibility = v;
    }
    if let Some(p) = validate::opt_bool(obj, "protected")? {
        ns.protected = p;
    }
    if let Some(o) = validate::opt_text(obj, "owner", 255)? {
        ns.owner = o;
    }
    ns.updated_at = time::now();
    let mut q = Query::new("UPDATE image_metadef_namespaces SET namespace = ");
    q.bind(ns.namespace.clone())
        .push_bind(", display_name = ", ns.display_name.clone())
        .push_bind(", description = ", ns.description.clone())
        .push_bind(", visibility = ", ns.visibility.clone())
        .push_bind(", protected = ", ns.protected)
        .push_bind(", owner = ", ns.owner.clone())
        .push_bind(", updated_at = ", ns.updated_at.clone())
        .push_bind(" WHERE id = ", ns.id.clone());
    super::write(&st.platform.db, vec![q], &exists(&ns.namespace)).await?;
    Ok(Json(ns_view(&ns)))
}

/// `DELETE /v2/metadefs/namespaces/{ns}` (admin): the namespace and everything in it,
/// unless it is protected.
async fn delete(State(st): State<St>, Ctx(ctx): Ctx, Path(name): Path<String>) -> Result<StatusCode> {
    let ns = load(&st, &ctx, &name, "delete_metadef_namespace").await?;
    if ns.protected {
        return Err(ImageError::Forbidden(format!("Namespace {name} is protected and cannot be deleted.")));
    }
    let mut qs = Vec::new();
    for t in ["image_metadef_associations", "image_metadef_properties", "image_metadef_objects", "image_metadef_tags"] {
        let mut q = Query::new(format!("DELETE FROM {t} WHERE namespace_id = "));
        q.bind(ns.id.clone());
        qs.push(q);
    }
    let mut q = Query::new("DELETE FROM image_metadef_namespaces WHERE id = ");
    q.bind(ns.id.clone());
    qs.push(q);
    super::write(&st.platform.db, qs, "").await?;
    tracing::info!(namespace = %name, "metadef namespace deleted");
    Ok(StatusCode::NO_CONTENT)
}

const SORT_KEYS: &[(&str, &str)] = &[
    ("created_at", "n.created_at"),
    ("updated_at", "n.updated_at"),
    ("namespace", "n.namespace"),
    ("display_name", "COALESCE(n.display_name, '')"),
    ("visibility", "n.visibility"),
];

/// `GET /v2/metadefs/namespaces`: the namespaces the caller sees, filtered by
/// `visibility` and `resource_types` (any of a comma-separated list), paged by name.
async fn list(State(st): State<St>, Ctx(ctx): Ctx, q: QueryPairs) -> Result<Json<Value>> {
    let project = ctx.project_id.clone().unwrap_or_default();
    st.policy.enforce("get_metadef_namespaces", &ctx, &json!({"project_id": project}))?;
    let spec = PageSpec {
        sort_keys: SORT_KEYS,
        default_sort: &[("created_at", SortDir::Desc)],
        default_limit: st.cfg.limit_param_default,
        max_limit: st.cfg.api_limit_max,
    };
    let page = spec.parse(&q)?;
    let cols: Vec<String> = NS_COLUMNS.split(", ").map(|c| format!("n.{c}")).collect();
    let mut sql = Query::new(format!("SELECT {} FROM image_metadef_namespaces n WHERE 1 = 1", cols.join(", ")));
    if !ctx.is_admin() {
        sql.push_bind(" AND (n.visibility = 'public' OR n.owner = ", project.clone()).push(")");
    }
    match q.get("visibility") {
        None => {}
        Some(v @ ("public" | "private")) => {
            sql.push_bind(" AND n.visibility = ", v.to_string());
        }
        Some(v) => return Err(ImageError::BadRequest(format!("Invalid visibility value: {v}"))),
    }
    if let Some(rts) = q.get("resource_types") {
        let names: Vec<String> = rts.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if !names.is_empty() {
            sql.push(" AND EXISTS (SELECT 1 FROM image_metadef_associations a WHERE a.namespace_id = n.id AND ");
            sql.push_in("a.resource_type", names).push(")");
        }
    }
    if let Some(marker) = &page.marker {
        let exprs: Vec<&str> = page.sort.iter().map(|k| k.column).collect();
        let mut mq = Query::new(format!(
            "SELECT {}, n.namespace FROM image_metadef_namespaces n WHERE n.namespace = ",
            exprs.join(", ")
        ));
        mq.bind(marker.clone());
        let row = mq
            .fetch_optional(st.platform.db.reader())
            .await?
            .ok_or_else(|| ImageError::BadRequest(format!("Invalid marker: namespace {marker} could not be found.")))?;
        let mut values: Vec<Arg> = Vec::new();
        for i in 0..=exprs.len() {
            values.push(row.try_get::<String, _>(i).map_err(stratus_db::DbError::from)?.into());
        }
        page.push_after_marker(&mut sql, "n.namespace", &values);
    }
    page.push_order_by(&mut sql, "n.namespace");
    page.push_limit_plus_one(&mut sql);
    let rows = sql.fetch_all(st.platform.db.reader()).await?;
    let (rows, more) = split_page(rows, page.limit);
    let namespaces = ns_rows(&rows)?;
    let mut items = Vec::with_capacity(namespaces.len());
    for ns in &namespaces {
        let mut v = ns_view(ns);
        let assocs = super::resource_types::associations(&st.platform.db, &ns.id).await?;
        if !assocs.is_empty() {
            v["resource_type_associations"] = json!(assocs.iter().map(|a| a.view()).collect::<Vec<_>>());
        }
        items.push(v);
    }
    let query: Vec<String> =
        q.0.iter().filter(|(k, _)| k != "marker").map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    let first = if query.is_empty() {
        "/v2/metadefs/namespaces".to_string()
    } else {
        format!("/v2/metadefs/namespaces?{}", query.join("&"))
    };
    let mut body = json!({"namespaces": items, "first": first, "schema": "/v2/schemas/metadefs/namespaces"});
    if more {
        if let Some(last) = namespaces.last() {
            let mut next = query.clone();
            next.push(format!("marker={}", encode(&last.namespace)));
            body["next"] = json!(format!("/v2/metadefs/namespaces?{}", next.join("&")));
        }
    }
    Ok(Json(body))
}
