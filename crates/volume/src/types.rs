//! Volume types: `/types` with extra specs, private types and their project access,
//! and per-project default types (`/default-types`, 3.62).
//!
//! A type selects a backend through its `volume_backend_name` extra spec, may carry a
//! QoS spec, and decides the availability zones (`RESKEY:availability_zones`) and
//! multiattach of its volumes. `__DEFAULT__` is created at first start, as Cinder does,
//! and cannot be deleted while it is the configured default.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::pagination::{PageSpec, SortDir};
use stratus_core::{ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::Query;

use crate::body::{self, bad_value};
use crate::error::{bad, not_found, VolError, VolResult};
use crate::policy::{allowed, enforce};
use crate::sql::{self, Listing, EXTRA_SPECS};
use crate::{both, Vol, S};

/// Extra specs every reader of a type may see (Cinder's user-visible specs).
const USER_VISIBLE_SPECS: &[&str] = &["RESKEY:availability_zones", "multiattach", "replication_enabled"];

/// A volume type as stored.
#[derive(Debug, Clone)]
pub struct VolumeType {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Public (everyone sees it) or private (projects with access).
    pub is_public: bool,
    /// Associated QoS spec.
    pub qos_specs_id: Option<String>,
    /// Extra specs.
    pub extra_specs: BTreeMap<String, String>,
}

impl VolumeType {
    /// The backend name it asks for, if any.
    pub fn backend_name(&self) -> Option<&str> {
        self.extra_specs.get("volume_backend_name").map(String::as_str)
    }

    /// The backend capabilities it asks for (Cinder's CapabilitiesFilter): the extra specs
    /// `storage_protocol`, `vendor_name` and `driver_version`, bare or with the
    /// `capabilities:` scope, as a JSON object for the operation's arguments.
    pub fn capabilities(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in &self.extra_specs {
            let key = k.strip_prefix("capabilities:").unwrap_or(k);
            if crate::manager::scheduler::CAPABILITIES.contains(&key) {
                out.insert(key.to_string(), Value::String(v.clone()));
            }
        }
        out
    }

    /// Availability zones it restricts its volumes to (`RESKEY:availability_zones`).
    pub fn zones(&self) -> Option<Vec<String>> {
        self.extra_specs
            .get("RESKEY:availability_zones")
            .map(|z| z.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
    }

    /// Its volumes may attach to several servers (`multiattach="<is> True"`).
    pub fn multiattach(&self) -> bool {
        self.extra_specs.get("multiattach").is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> True"))
    }
}

fn from_row(r: &AnyRow) -> VolumeType {
    VolumeType {
        id: sql::s(r, "id"),
        name: sql::s(r, "name"),
        description: sql::os(r, "description"),
        is_public: sql::b(r, "is_public"),
        qos_specs_id: sql::os(r, "qos_specs_id"),
        extra_specs: BTreeMap::new(),
    }
}

/// The type with id (or, with `by_name`, name) `key`, not deleted.
pub async fn find(vol: &Vol, key: &str, by_name: bool) -> VolResult<Option<VolumeType>> {
    let mut q = Query::new("SELECT * FROM volume_types WHERE deleted = 0 AND (id = ");
    q.bind(key);
    if by_name {
        q.push(" OR name = ").bind(key);
    }
    q.push(") ORDER BY CASE WHEN id = ").bind(key).push(" THEN 0 ELSE 1 END LIMIT 1");
    let Some(r) = q.fetch_optional(vol.db.reader()).await? else { return Ok(None) };
    let mut t = from_row(&r);
    t.extra_specs = EXTRA_SPECS.load(vol.db.reader(), &t.id).await?;
    Ok(Some(t))
}

/// True when `ctx` may see (and use) type `t`.
pub async fn visible(vol: &Vol, ctx: &RequestContext, t: &VolumeType) -> VolResult<bool> {
    if t.is_public || ctx.is_admin() {
        return Ok(true);
    }
    let Some(p) = &ctx.project_id else { return Ok(false) };
    let mut q = Query::new("SELECT 1 FROM volume_type_projects WHERE type_id = ");
    q.bind(&t.id).push(" AND project_id = ").bind(p);
    Ok(q.fetch_optional(vol.db.reader()).await?.is_some())
}

/// The type a volume is created with: the one named (id or name), else the project's
/// default, else the configured default.
pub async fn resolve(vol: &Vol, ctx: &RequestContext, project_id: &str, named: Option<&str>) -> VolResult<VolumeType> {
    if let Some(n) = named {
        let t = find(vol, n, true).await?.ok_or_else(|| not_found("Volume type", n))?;
        if !visible(vol, ctx, &t).await? {
            return Err(not_found("Volume type", n));
        }
        return Ok(t);
    }
    default_for(vol, project_id).await
}

/// The default type of `project_id`.
pub async fn default_for(vol: &Vol, project_id: &str) -> VolResult<VolumeType> {
    let mut q = Query::new("SELECT type_id FROM volume_default_types WHERE project_id = ");
    q.bind(project_id);
    if let Some(r) = q.fetch_optional(vol.db.reader()).await? {
        if let Some(t) = find(vol, &sql::s(&r, "type_id"), false).await? {
            return Ok(t);
        }
    }
    find(vol, &vol.cfg.default_volume_type, true).await?.ok_or_else(|| {
        VolError::NotFound(format!(
            "Default volume type {} could not be found; create it or set [volume] default_volume_type",
            vol.cfg.default_volume_type
        ))
    })
}

/// Creates the configured default type when it does not exist (Cinder's `__DEFAULT__`).
pub async fn bootstrap(vol: &Vol) -> anyhow::Result<()> {
    if find(vol, &vol.cfg.default_volume_type, true).await?.is_some() {
        return Ok(());
    }
    let mut q = Query::new("INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES (");
    q.bind(body::new_id()).push(", ").bind(&vol.cfg.default_volume_type).push(", 'Default Volume Type', 1, ");
    q.bind(stratus_core::time::now()).push(")");
    let mut tx = vol.db.begin().await?;
    match q.execute(&mut *tx).await {
        Ok(_) => tx.commit().await?,
        // Another controller created it first.
        Err(e) if e.is_unique_violation() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The type as `ctx` sees it (`brief`: without the `volume_type` wrapper).
fn view(vol: &Vol, ctx: &RequestContext, t: &VolumeType) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "is_public": t.is_public,
        "description": t.description,
        "os-volume-type-access:is_public": t.is_public,
    });
    if allowed(&vol.policy, "volume_extension:access_types_extra_specs", ctx, None) {
        let specs: Map<String, Value> =
            if allowed(&vol.policy, "volume_extension:types_extra_specs:read_sensitive", ctx, None) {
                t.extra_specs.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
            } else {
                t.extra_specs
                    .iter()
                    .filter(|(k, _)| USER_VISIBLE_SPECS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect()
            };
        v["extra_specs"] = Value::Object(specs);
    }
    if allowed(&vol.policy, "volume_extension:access_types_qos_specs_id", ctx, None) {
        v["qos_specs_id"] = json!(t.qos_specs_id);
    }
    v
}

/// The type as a create answers it: Cinder's create view has no `qos_specs_id` (Tempest's
/// `create_volume_type` schema forbids it).
fn create_view(vol: &Vol, ctx: &RequestContext, t: &VolumeType) -> Value {
    let mut v = view(vol, ctx, t);
    if let Some(o) = v.as_object_mut() {
        o.remove("qos_specs_id");
    }
    v
}

/// The type as an update answers it: neither `qos_specs_id` nor the type-access
/// extension's `os-volume-type-access:is_public` (Tempest's `update_volume_types` schema).
fn update_view(vol: &Vol, ctx: &RequestContext, t: &VolumeType) -> Value {
    let mut v = create_view(vol, ctx, t);
    if let Some(o) = v.as_object_mut() {
        o.remove("os-volume-type-access:is_public");
    }
    v
}

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    r = both(r, "/types", get(list).post(create));
    r = both(r, "/types/{id}", get(show).put(update).delete(delete));
    r = both(r, "/types/{id}/action", post(action));
    r = both(r, "/types/{id}/os-volume-type-access", get(access_list));
    r = both(r, "/types/{id}/extra_specs", get(specs_list).post(specs_create));
    r = both(r, "/types/{id}/extra_specs/{key}", get(spec_show).put(spec_update).delete(spec_delete));
    r = both(r, "/types/{id}/encryption", get(encryption_show).post(encryption_refuse));
    r = both(r, "/types/{id}/encryption/{key}", get(encryption_show).put(encryption_refuse).delete(encryption_refuse));
    r = both(r, "/default-types", get(defaults_list));
    r = both(r, "/default-types/{id}", get(default_show).put(default_set).delete(default_unset));
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

#[derive(Deserialize)]
struct KeyPath {
    id: String,
    key: String,
}

const TYPE_PAGES: PageSpec = PageSpec {
    sort_keys: &[
        ("id", "id"),
        ("name", "name"),
        ("description", "description"),
        ("is_public", "is_public"),
        ("created_at", "created_at"),
    ],
    default_sort: &[("created_at", SortDir::Desc)],
    default_limit: 1000,
    max_limit: 1000,
};

async fn list(State(vol): State<S>, Ctx(ctx): Ctx, uri: Uri, q: QueryPairs) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:type_get_all", &ctx, None)?;
    let listing = Listing::parse(&TYPE_PAGES, &q)?;
    let mut sqlq = Query::new("SELECT * FROM volume_types WHERE deleted = 0");
    let is_public = match q.get("is_public") {
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) => {
            Some(stratus_core::query::parse_bool(v).ok_or_else(|| bad(format!("Invalid is_public filter {v:?}")))?)
        }
        None => Some(true),
    };
    if ctx.is_admin() {
        if let Some(p) = is_public {
            sqlq.push_bind(" AND is_public = ", p);
        }
    } else {
        // Public types, and the private ones this project was given.
        sqlq.push(" AND (is_public = 1 OR id IN (SELECT type_id FROM volume_type_projects WHERE project_id = ");
        sqlq.bind(ctx.project_id.clone().unwrap_or_default()).push("))");
    }
    if let Some(spec_filter) = q.get("extra_specs") {
        let want = parse_spec_filter(spec_filter)?;
        if !allowed(&vol.policy, "volume_extension:types_extra_specs:read_sensitive", &ctx, None)
            && want.keys().any(|k| !USER_VISIBLE_SPECS.contains(&k.as_str()))
        {
            return Ok(Json(json!({"volume_types": []})));
        }
        sql::push_meta_filter(&mut sqlq, EXTRA_SPECS, "id", &want);
    }
    listing.finish(&mut sqlq, vol.db.reader(), "volume_types", "id", "volume type").await?;
    let rows = sqlq.fetch_all(vol.db.reader()).await?;
    let mut types: Vec<VolumeType> = rows.iter().map(from_row).collect();
    let ids: Vec<String> = types.iter().map(|t| t.id.clone()).collect();
    let mut specs = EXTRA_SPECS.load_many(vol.db.reader(), &ids).await?;
    for t in &mut types {
        t.extra_specs = specs.remove(&t.id).unwrap_or_default();
    }
    let (types, links) = listing.links(types, |t| t.id.clone(), &vol.base, uri.path(), &q);
    let mut out = json!({"volume_types": types.iter().map(|t| view(&vol, &ctx, t)).collect::<Vec<_>>()});
    if let Some(l) = links {
        out["volume_type_links"] = l;
    }
    Ok(Json(out))
}

/// `extra_specs` filter: a Python-dict-like `{'k': 'v'}` or JSON.
fn parse_spec_filter(s: &str) -> VolResult<BTreeMap<String, String>> {
    let json_like = s.replace('\'', "\"");
    let v: Value = serde_json::from_str(&json_like).map_err(|_| bad(format!("Invalid extra_specs filter {s:?}")))?;
    body::metadata(Some(&v), "extra_specs filter").map(Option::unwrap_or_default)
}

async fn get_visible(vol: &Vol, ctx: &RequestContext, id: &str) -> VolResult<VolumeType> {
    let t = if id == "default" {
        default_for(vol, ctx.project_id.as_deref().unwrap_or_default()).await?
    } else {
        find(vol, id, false).await?.ok_or_else(|| not_found("Volume type", id))?
    };
    if !visible(vol, ctx, &t).await? {
        return Err(not_found("Volume type", id));
    }
    Ok(t)
}

async fn show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:type_get", &ctx, None)?;
    let t = get_visible(&vol, &ctx, &p.id).await?;
    Ok(Json(json!({"volume_type": view(&vol, &ctx, &t)})))
}

async fn create(State(vol): State<S>, Ctx(ctx): Ctx, OsJson(b): OsJson<Value>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:type_create", &ctx, None)?;
    let m = body::obj(&b, "volume_type")?;
    let name = body::opt_text(m, "name", 255)?.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| bad("Volume type name can not be empty."))?;
    let description = body::opt_text(m, "description", 255)?;
    let is_public =
        body::opt_bool(m, "os-volume-type-access:is_public")?.or(body::opt_bool(m, "is_public")?).unwrap_or(true);
    let specs = body::metadata(m.get("extra_specs"), "extra_specs")?.unwrap_or_default();
    check_specs(&specs)?;
    let id = body::new_id();
    let now = stratus_core::time::now();
    vol.db
        .transaction(|tx| {
            let (id, name, description, specs, now) =
                (id.clone(), name.clone(), description.clone(), specs.clone(), now.clone());
            Box::pin(async move {
                let mut q =
                    Query::new("INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES (");
                q.bind(&id).push(", ").bind(&name).push(", ").bind(description).push(", ").bind(is_public);
                q.push(", ").bind(now).push(")");
                q.execute(&mut **tx).await.map_err(|e| {
                    if e.is_unique_violation() {
                        VolError::Conflict(format!("Volume Type {name} already exists."))
                    } else {
                        e.into()
                    }
                })?;
                EXTRA_SPECS.merge(tx, &id, &specs).await
            })
        })
        .await?;
    let t = find(&vol, &id, false).await?.ok_or_else(|| not_found("Volume type", &id))?;
    Ok(Json(json!({"volume_type": create_view(&vol, &ctx, &t)})))
}

/// Extra spec keys and values Cinder would refuse.
fn check_specs(specs: &BTreeMap<String, String>) -> VolResult<()> {
    for (k, v) in specs {
        if k.trim().is_empty() {
            return Err(bad("Extra spec keys cannot be empty"));
        }
        if v.trim().is_empty() && k == "volume_backend_name" {
            return Err(bad("volume_backend_name cannot be empty"));
        }
    }
    Ok(())
}

async fn update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:type_update", &ctx, None)?;
    let m = body::obj(&b, "volume_type")?;
    let name = body::opt_text(m, "name", 255)?;
    let description = body::opt_text(m, "description", 255)?;
    let is_public = body::opt_bool(m, "is_public")?;
    if name.is_none() && description.is_none() && is_public.is_none() && !m.contains_key("description") {
        return Err(bad("Specify volume type name, description, is_public or a combination thereof."));
    }
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(bad("Volume type name can not be empty."));
    }
    let t = find(&vol, &p.id, false).await?.ok_or_else(|| not_found("Volume type", &p.id))?;
    if name.is_some() && t.name == vol.cfg.default_volume_type && name.as_deref() != Some(t.name.as_str()) {
        return Err(bad(format!("The default volume type {} cannot be renamed", t.name)));
    }
    let mut q = Query::new("UPDATE volume_types SET updated_at = ");
    q.bind(stratus_core::time::now());
    if let Some(n) = &name {
        q.push_bind(", name = ", n.trim().to_string());
    }
    if m.contains_key("description") {
        q.push_bind(", description = ", description);
    }
    if let Some(p) = is_public {
        q.push_bind(", is_public = ", p);
    }
    q.push_bind(" WHERE id = ", t.id.clone());
    let mut tx = vol.db.begin().await?;
    q.execute(&mut *tx).await.map_err(|e| {
        if e.is_unique_violation() {
            VolError::Conflict(format!("Volume Type {} already exists.", name.clone().unwrap_or_default()))
        } else {
            e.into()
        }
    })?;
    tx.commit().await?;
    let t = find(&vol, &t.id, false).await?.ok_or_else(|| not_found("Volume type", &p.id))?;
    Ok(Json(json!({"volume_type": update_view(&vol, &ctx, &t)})))
}

async fn delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<StatusCode> {
    enforce(&vol.policy, "volume_extension:type_delete", &ctx, None)?;
    let t = find(&vol, &p.id, false).await?.ok_or_else(|| not_found("Volume type", &p.id))?;
    if t.name == vol.cfg.default_volume_type {
        return Err(bad(format!("Default volume type {} can not be deleted.", t.name)));
    }
    let now = stratus_core::time::now();
    vol.db
        .transaction(|tx| {
            let (id, now) = (t.id.clone(), now.clone());
            Box::pin(async move {
                let mut q =
                    Query::new("SELECT COUNT(*) AS n FROM volume_volumes WHERE deleted = 0 AND volume_type_id = ");
                q.bind(&id);
                let n = q.fetch_optional(&mut **tx).await?.map(|r| sql::i(&r, "n")).unwrap_or(0);
                if n > 0 {
                    return Err(bad(format!("Target volume type {id} is still in use by {n} volume(s).")));
                }
                let mut q = Query::new("SELECT COUNT(*) AS n FROM volume_default_types WHERE type_id = ");
                q.bind(&id);
                if q.fetch_optional(&mut **tx).await?.map(|r| sql::i(&r, "n")).unwrap_or(0) > 0 {
                    return Err(bad(format!("Volume type {id} is a project's default type; unset it first.")));
                }
                let mut q = Query::new("UPDATE volume_types SET deleted = 1, deleted_at = ");
                q.bind(now).push(" WHERE id = ").bind(&id);
                q.execute(&mut **tx).await?;
                let mut q = Query::new("DELETE FROM volume_type_projects WHERE type_id = ");
                q.bind(&id);
                q.execute(&mut **tx).await?;
                Ok(())
            })
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn action(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<StatusCode> {
    let (name, arg) = b
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or_else(|| bad("An action body names one action: addProjectAccess or removeProjectAccess"))?;
    let add = match name.as_str() {
        "addProjectAccess" => true,
        "removeProjectAccess" => false,
        other => return Err(bad(format!("There is no such action: {other}"))),
    };
    let rule = if add { "addProjectAccess" } else { "removeProjectAccess" };
    enforce(&vol.policy, &format!("volume_extension:volume_type_access:{rule}"), &ctx, None)?;
    let project = arg
        .get("project")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("Missing required element 'project' in request body."))?
        .to_string();
    let t = find(&vol, &p.id, false).await?.ok_or_else(|| not_found("Volume type", &p.id))?;
    if t.is_public {
        return Err(bad("Invalid volume type: Type access modification is not applicable to public volume type."));
    }
    let mut tx = vol.db.begin().await?;
    if add {
        let mut q = Query::new("INSERT INTO volume_type_projects (type_id, project_id) VALUES (");
        q.bind(&t.id).push(", ").bind(&project).push(")");
        q.execute(&mut *tx).await.map_err(|e| {
            if e.is_unique_violation() {
                VolError::Conflict(format!("Volume type access for {} / {project} combination already exists.", t.id))
            } else {
                e.into()
            }
        })?;
    } else {
        let mut q = Query::new("DELETE FROM volume_type_projects WHERE type_id = ");
        q.bind(&t.id).push(" AND project_id = ").bind(&project);
        if q.execute(&mut *tx).await? == 0 {
            return Err(VolError::NotFound(format!(
                "Volume type access not found for {} / {project} combination.",
                t.id
            )));
        }
    }
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

async fn access_list(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:volume_type_access", &ctx, None)?;
    let t = find(&vol, &p.id, false).await?.ok_or_else(|| not_found("Volume type", &p.id))?;
    if t.is_public {
        return Err(VolError::NotFound("Access list not available for public volume types.".into()));
    }
    if !ctx.is_admin() {
        return Err(VolError::Forbidden(
            "Policy doesn't allow volume_extension:volume_type_access to be performed.".into(),
        ));
    }
    let mut q = Query::new("SELECT project_id FROM volume_type_projects WHERE type_id = ");
    q.bind(&t.id).push(" ORDER BY project_id");
    let rows = q.fetch_all(vol.db.reader()).await?;
    let access: Vec<Value> =
        rows.iter().map(|r| json!({"volume_type_id": t.id, "project_id": sql::s(r, "project_id")})).collect();
    Ok(Json(json!({"volume_type_access": access})))
}

async fn specs_type(vol: &Vol, ctx: &RequestContext, id: &str, action: &str) -> VolResult<VolumeType> {
    enforce(&vol.policy, &format!("volume_extension:types_extra_specs:{action}"), ctx, None)?;
    let t = find(vol, id, false).await?.ok_or_else(|| not_found("Volume type", id))?;
    if !visible(vol, ctx, &t).await? {
        return Err(not_found("Volume type", id));
    }
    Ok(t)
}

fn visible_specs(vol: &Vol, ctx: &RequestContext, specs: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if allowed(&vol.policy, "volume_extension:types_extra_specs:read_sensitive", ctx, None) {
        specs
    } else {
        specs.into_iter().filter(|(k, _)| USER_VISIBLE_SPECS.contains(&k.as_str())).collect()
    }
}

async fn specs_list(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let t = specs_type(&vol, &ctx, &p.id, "index").await?;
    Ok(Json(json!({"extra_specs": body::map_json(&visible_specs(&vol, &ctx, t.extra_specs))})))
}

async fn specs_create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let t = specs_type(&vol, &ctx, &p.id, "create").await?;
    let specs = body::metadata(b.get("extra_specs"), "extra_specs")?
        .ok_or_else(|| bad("Missing required element 'extra_specs' in request body."))?;
    check_specs(&specs)?;
    let mut tx = vol.db.begin().await?;
    EXTRA_SPECS.merge(&mut tx, &t.id, &specs).await?;
    tx.commit().await?;
    Ok(Json(json!({"extra_specs": body::map_json(&specs)})))
}

async fn spec_show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<KeyPath>) -> VolResult<Json<Value>> {
    let t = specs_type(&vol, &ctx, &p.id, "show").await?;
    let specs = visible_specs(&vol, &ctx, t.extra_specs);
    let v = specs
        .get(&p.key)
        .ok_or_else(|| VolError::NotFound(format!("Volume Type {} has no extra specs with key {}.", t.id, p.key)))?;
    Ok(Json(json!({ p.key.clone(): v })))
}

async fn spec_update(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    Path(p): Path<KeyPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    let t = specs_type(&vol, &ctx, &p.id, "update").await?;
    let m = b.as_object().ok_or_else(|| bad("The request body must be an object"))?;
    if m.len() != 1 || !m.contains_key(&p.key) {
        return Err(bad("Request body and URI mismatch"));
    }
    let specs = body::metadata(Some(&b), "extra_specs")?.unwrap_or_default();
    check_specs(&specs)?;
    let mut tx = vol.db.begin().await?;
    EXTRA_SPECS.merge(&mut tx, &t.id, &specs).await?;
    tx.commit().await?;
    Ok(Json(b))
}

async fn spec_delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<KeyPath>) -> VolResult<StatusCode> {
    let t = specs_type(&vol, &ctx, &p.id, "delete").await?;
    let mut tx = vol.db.begin().await?;
    if !EXTRA_SPECS.remove(&mut tx, &t.id, &p.key).await? {
        return Err(VolError::NotFound(format!("Volume Type {} has no extra specs with key {}.", t.id, p.key)));
    }
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

/// Stratus does not encrypt volumes: every type reports no encryption.
async fn encryption_show(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<Json<Value>> {
    let _ = get_visible(&vol, &ctx, &p.id).await?;
    Ok(Json(json!({})))
}

/// Encryption specs (create/update/delete): refused, since the backends cannot encrypt
/// (no dm-crypt on this kernel; QEMU's LUKS is not wired yet). A type that does not exist
/// is still a 404 first, as in Cinder.
async fn encryption_refuse(State(vol): State<S>, Ctx(ctx): Ctx, uri: Uri) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume_extension:volume_type_encryption", &ctx, None)?;
    let id = uri
        .path()
        .split('/')
        .skip_while(|s| *s != "types")
        .nth(1)
        .ok_or_else(|| bad("The URL names no volume type"))?
        .to_string();
    find(&vol, &id, false).await?.ok_or_else(|| not_found("Volume type", &id))?;
    Err(bad("Volume encryption is not supported by this cloud's backends (see docs/conformance.md)"))
}

fn default_view(project_id: &str, type_id: &str) -> Value {
    json!({"project_id": project_id, "volume_type_id": type_id})
}

async fn defaults_list(State(vol): State<S>, Ctx(ctx): Ctx, v: ApiVersion) -> VolResult<Json<Value>> {
    need(v, 3, 62)?;
    enforce(&vol.policy, "volume_extension:default_get_all", &ctx, None)?;
    let rows = Query::new("SELECT * FROM volume_default_types ORDER BY project_id").fetch_all(vol.db.reader()).await?;
    let all: Vec<Value> = rows.iter().map(|r| default_view(&sql::s(r, "project_id"), &sql::s(r, "type_id"))).collect();
    Ok(Json(json!({"default_types": all})))
}

async fn default_show(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    v: ApiVersion,
    Path(p): Path<IdPath>,
) -> VolResult<Json<Value>> {
    need(v, 3, 62)?;
    enforce(&vol.policy, "volume_extension:default_get", &ctx, Some(&p.id))?;
    let mut q = Query::new("SELECT type_id FROM volume_default_types WHERE project_id = ");
    q.bind(&p.id);
    let r = q
        .fetch_optional(vol.db.reader())
        .await?
        .ok_or_else(|| VolError::NotFound(format!("Default type for project {} could not be found.", p.id)))?;
    Ok(Json(json!({"default_type": default_view(&p.id, &sql::s(&r, "type_id"))})))
}

async fn default_set(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    v: ApiVersion,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<Json<Value>> {
    need(v, 3, 62)?;
    enforce(&vol.policy, "volume_extension:default_set_or_update", &ctx, Some(&p.id))?;
    let m = body::obj(&b, "default_type")?;
    let named = body::opt_str(m, "volume_type")?.ok_or_else(|| bad_value("volume_type", "is required"))?;
    let t = find(&vol, &named, true).await?.ok_or_else(|| not_found("Volume type", &named))?;
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("DELETE FROM volume_default_types WHERE project_id = ");
    q.bind(&p.id);
    q.execute(&mut *tx).await?;
    let mut q = Query::new("INSERT INTO volume_default_types (project_id, type_id) VALUES (");
    q.bind(&p.id).push(", ").bind(&t.id).push(")");
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Json(json!({"default_type": default_view(&p.id, &t.id)})))
}

async fn default_unset(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    v: ApiVersion,
    Path(p): Path<IdPath>,
) -> VolResult<StatusCode> {
    need(v, 3, 62)?;
    enforce(&vol.policy, "volume_extension:default_unset", &ctx, Some(&p.id))?;
    let mut tx = vol.db.begin().await?;
    let mut q = Query::new("DELETE FROM volume_default_types WHERE project_id = ");
    q.bind(&p.id);
    if q.execute(&mut *tx).await? == 0 {
        return Err(VolError::NotFound(format!("Default type for project {} could not be found.", p.id)));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 404 below the microversion that introduced a route (Cinder's "not found" for it).
pub fn need(v: ApiVersion, major: u32, minor: u32) -> VolResult<()> {
    if v.at_least(major, minor) {
        Ok(())
    } else {
        Err(VolError::NotFound(format!("The resource could not be found (it needs microversion {major}.{minor})")))
    }
}
