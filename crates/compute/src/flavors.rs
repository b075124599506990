//! Flavors, flavor access (private flavors) and extra specs.
//!
//! `GET/POST /flavors`, `/flavors/detail`, `GET/PUT/DELETE /flavors/{id}`,
//! `/flavors/{id}/os-flavor-access`, `POST /flavors/{id}/action` (add/removeTenantAccess),
//! `/flavors/{id}/os-extra_specs[/{key}]`. Bootstrap creates OpenStack's default m1.*
//! sizes and `m1.nano` (128 MB), which fits the test image.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_compute_proto::spec::FlavorSpec;
use stratus_core::pagination::{next_href, split_page, PageSpec, SortDir};
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs, RequestContext};
use stratus_db::sqlx::Row;
use stratus_db::{Arg, Db, Query};

use crate::error::{ComputeError, Result};
use crate::AppState;

/// A flavor row.
#[derive(Debug, Clone, PartialEq)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: i64,
    pub ram: i64,
    pub disk: i64,
    pub ephemeral: i64,
    pub swap: i64,
    pub rxtx_factor: f64,
    pub is_public: bool,
    pub disabled: bool,
    pub description: Option<String>,
    pub extra_specs: BTreeMap<String, String>,
}

impl Flavor {
    fn from_row(r: &stratus_db::sqlx::any::AnyRow) -> Result<Self> {
        Ok(Flavor {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            vcpus: r.try_get("vcpus")?,
            ram: r.try_get("ram")?,
            disk: r.try_get("disk")?,
            ephemeral: r.try_get("ephemeral")?,
            swap: r.try_get("swap")?,
            rxtx_factor: r.try_get("rxtx_factor")?,
            is_public: stratus_db::flag(r, "is_public"),
            disabled: stratus_db::flag(r, "disabled"),
            description: r.try_get("description")?,
            extra_specs: BTreeMap::new(),
        })
    }

    /// What the agent needs.
    pub fn spec(&self) -> FlavorSpec {
        FlavorSpec {
            id: self.id.clone(),
            name: self.name.clone(),
            vcpus: self.vcpus as u32,
            memory_mb: self.ram as u64,
            root_gb: self.disk as u64,
            ephemeral_gb: self.ephemeral as u64,
            swap_mb: self.swap as u64,
            extra_specs: self.extra_specs.clone(),
        }
    }

    /// Placement resources one instance of this flavor consumes.
    pub fn resources(&self) -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        m.insert("VCPU".into(), self.vcpus);
        m.insert("MEMORY_MB".into(), self.ram);
        let disk = self.disk + self.ephemeral + (self.swap + 1023) / 1024;
        if disk > 0 {
            m.insert("DISK_GB".into(), disk);
        }
        m
    }

    /// The stored snapshot embedded in instances (so deleting a flavor never breaks a server).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "vcpus": self.vcpus, "ram": self.ram, "disk": self.disk,
            "ephemeral": self.ephemeral, "swap": self.swap, "rxtx_factor": self.rxtx_factor,
            "is_public": self.is_public, "disabled": self.disabled, "description": self.description,
            "extra_specs": self.extra_specs,
        })
    }

    /// Reads a snapshot written by [`Flavor::to_json`].
    pub fn from_json(v: &Value) -> Flavor {
        Flavor {
            id: v["id"].as_str().unwrap_or_default().into(),
            name: v["name"].as_str().unwrap_or_default().into(),
            vcpus: v["vcpus"].as_i64().unwrap_or(0),
            ram: v["ram"].as_i64().unwrap_or(0),
            disk: v["disk"].as_i64().unwrap_or(0),
            ephemeral: v["ephemeral"].as_i64().unwrap_or(0),
            swap: v["swap"].as_i64().unwrap_or(0),
            rxtx_factor: v["rxtx_factor"].as_f64().unwrap_or(1.0),
            is_public: v["is_public"].as_bool().unwrap_or(true),
            disabled: v["disabled"].as_bool().unwrap_or(false),
            description: v["description"].as_str().map(str::to_string),
            extra_specs: serde_json::from_value(v["extra_specs"].clone()).unwrap_or_default(),
        }
    }

    /// The API view (`detail` for `GET /flavors/detail` and show).
    pub fn view(&self, base: &str, v: ApiVersion, detail: bool) -> Value {
        let href = format!("{base}/v2.1/flavors/{}", self.id);
        let mut o = json!({
            "id": self.id,
            "name": self.name,
            "links": [{"rel": "self", "href": href}, {"rel": "bookmark", "href": href.replace("/v2.1", "")}],
        });
        if v.at_least(2, 55) {
            o["description"] = json!(self.description);
        }
        if !detail {
            return o;
        }
        o["vcpus"] = json!(self.vcpus);
        o["ram"] = json!(self.ram);
        o["disk"] = json!(self.disk);
        o["OS-FLV-EXT-DATA:ephemeral"] = json!(self.ephemeral);
        o["OS-FLV-DISABLED:disabled"] = json!(self.disabled);
        o["swap"] = if self.swap == 0 && !v.at_least(2, 75) { json!("") } else { json!(self.swap) };
        o["rxtx_factor"] = json!(self.rxtx_factor);
        o["os-flavor-access:is_public"] = json!(self.is_public);
        if v.at_least(2, 61) {
            o["extra_specs"] = json!(self.extra_specs);
        }
        o
    }
}

const DEFAULTS: &[(&str, &str, i64, i64, i64)] = &[
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
    ("42", "m1.nano", 1, 128, 1),
];

/// Creates the default flavors once (names or ids already taken are left alone).
pub async fn bootstrap(db: &Db) -> anyhow::Result<()> {
    let now = stratus_core::time::now();
    db.transaction(|tx| {
        let now = now.clone();
        Box::pin(async move {
            for (id, name, vcpus, ram, disk) in DEFAULTS {
                let exists = Query::new("SELECT 1 FROM compute_flavors WHERE id = ")
                    .bind(*id)
                    .push(" OR name = ")
                    .bind(*name)
                    .fetch_optional(&mut **tx)
                    .await?;
                if exists.is_none() {
                    Query::new("INSERT INTO compute_flavors (id, name, vcpus, ram, disk, created_at) VALUES (")
                        .bind(*id)
                        .push(", ")
                        .bind(*name)
                        .push(", ")
                        .bind(*vcpus)
                        .push(", ")
                        .bind(*ram)
                        .push(", ")
                        .bind(*disk)
                        .push(", ")
                        .bind(now.clone())
                        .push(")")
                        .execute(&mut **tx)
                        .await?;
                }
            }
            Ok::<_, stratus_db::DbError>(())
        })
    })
    .await?;
    Ok(())
}

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/flavors", get(list).post(create))
        .route("/v2.1/flavors/detail", get(list_detail))
        .route("/v2.1/flavors/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/flavors/{id}/os-flavor-access", get(access_list))
        .route("/v2.1/flavors/{id}/action", axum::routing::post(action))
        .route("/v2.1/flavors/{id}/os-extra_specs", get(specs_list).post(specs_create))
        .route("/v2.1/flavors/{id}/os-extra_specs/{key}", get(spec_show).put(spec_update).delete(spec_delete))
}

async fn extra_specs(db: &Db, id: &str) -> Result<BTreeMap<String, String>> {
    let rows = Query::new("SELECT spec_key, spec_value FROM compute_flavor_extra_specs WHERE flavor_id = ")
        .bind(id)
        .fetch_all(db.reader())
        .await?;
    let mut m = BTreeMap::new();
    for r in rows {
        m.insert(r.try_get("spec_key")?, r.try_get("spec_value")?);
    }
    Ok(m)
}

/// True when the caller may use a flavor (public, admin, or granted to its project).
async fn accessible(db: &Db, ctx: &RequestContext, f: &Flavor) -> Result<bool> {
    if f.is_public || ctx.is_admin() {
        return Ok(true);
    }
    let Some(p) = &ctx.project_id else { return Ok(false) };
    let r = Query::new("SELECT 1 FROM compute_flavor_projects WHERE flavor_id = ")
        .bind(&f.id)
        .push(" AND project_id = ")
        .bind(p)
        .fetch_optional(db.reader())
        .await?;
    Ok(r.is_some())
}

/// The flavor `id` as `ctx` may see it (404 otherwise).
pub async fn get_flavor(db: &Db, ctx: &RequestContext, id: &str) -> Result<Flavor> {
    let nf = || ComputeError::NotFound(format!("Flavor {id} could not be found."));
    let row = Query::new("SELECT * FROM compute_flavors WHERE id = ").bind(id).fetch_optional(db.reader()).await?;
    let mut f = Flavor::from_row(&row.ok_or_else(nf)?)?;
    if !accessible(db, ctx, &f).await? {
        return Err(nf());
    }
    f.extra_specs = extra_specs(db, &f.id).await?;
    Ok(f)
}

const PAGE: PageSpec = PageSpec {
    sort_keys: &[
        ("flavorid", "id"),
        ("id", "id"),
        ("name", "name"),
        ("memory_mb", "ram"),
        ("vcpus", "vcpus"),
        ("root_gb", "disk"),
        ("ephemeral_gb", "ephemeral"),
        ("swap", "swap"),
        ("rxtx_factor", "rxtx_factor"),
        ("disabled", "disabled"),
        ("is_public", "is_public"),
        ("created_at", "created_at"),
    ],
    default_sort: &[("flavorid", SortDir::Asc)],
    default_limit: 1000,
    max_limit: 1000,
};

async fn list_impl(st: &AppState, ctx: &RequestContext, v: ApiVersion, q: &QueryPairs, detail: bool) -> Result<Value> {
    let page = PAGE.parse(q).map_err(|e| ComputeError::BadRequest(e.message))?;
    let mut sql = Query::new("SELECT * FROM compute_flavors f WHERE disabled = ");
    sql.bind(false);
    // is_public: non-admins always see public + their own; admins choose (default public only).
    let is_public = match q.get("is_public") {
        None => Some(true),
        Some(s) if s.eq_ignore_ascii_case("none") => None,
        Some(s) => Some(
            stratus_core::query::parse_bool(s)
                .ok_or_else(|| ComputeError::BadRequest(format!("Invalid is_public filter [{s}]")))?,
        ),
    };
    if ctx.is_admin() {
        if let Some(p) = is_public {
            sql.push_bind(" AND is_public = ", p);
        }
    } else {
        let project = ctx.project_id.clone().unwrap_or_default();
        sql.push_bind(" AND (is_public = ", true);
        sql.push_bind(" OR id IN (SELECT flavor_id FROM compute_flavor_projects WHERE project_id = ", project);
        sql.push("))");
    }
    if let Some(n) = q.get("minRam") {
        let n: i64 = n.parse().map_err(|_| ComputeError::BadRequest(format!("Invalid minRam filter [{n}]")))?;
        sql.push_bind(" AND ram >= ", n);
    }
    if let Some(n) = q.get("minDisk") {
        let n: i64 = n.parse().map_err(|_| ComputeError::BadRequest(format!("Invalid minDisk filter [{n}]")))?;
        sql.push_bind(" AND disk >= ", n);
    }
    if let Some(m) = &page.marker {
        let row = Query::new("SELECT * FROM compute_flavors WHERE id = ")
            .bind(m)
            .fetch_optional(st.platform.db.reader())
            .await?;
        let row = row.ok_or_else(|| ComputeError::BadRequest(format!("marker [{m}] not found")))?;
        let mut vals = Vec::new();
        for k in &page.sort {
            vals.push(col_arg(&row, k.column));
        }
        vals.push(Arg::Text(row.try_get("id")?));
        page.push_after_marker(&mut sql, "id", &vals);
    }
    page.push_order_by(&mut sql, "id");
    page.push_limit_plus_one(&mut sql);
    let rows = sql.fetch_all(st.platform.db.reader()).await?;
    let (rows, more) = split_page(rows, page.limit);
    let base = st.platform.service_url("/compute");
    let mut out = Vec::new();
    let mut last = None;
    for r in &rows {
        let mut f = Flavor::from_row(r)?;
        if detail && v.at_least(2, 61) {
            f.extra_specs = extra_specs(&st.platform.db, &f.id).await?;
        }
        last = Some(f.id.clone());
        out.push(f.view(&base, v, detail));
    }
    let mut body = json!({"flavors": out});
    if let (true, Some(m)) = (more, last) {
        let path = if detail { "/v2.1/flavors/detail" } else { "/v2.1/flavors" };
        body["flavors_links"] = json!([{"rel": "next", "href": next_href(&base, path, q, &m)}]);
    }
    Ok(body)
}

/// Reads a column of any type as a bind argument (marker values).
pub fn col_arg(row: &stratus_db::sqlx::any::AnyRow, col: &str) -> Arg {
    if let Ok(v) = row.try_get::<String, _>(col) {
        return Arg::Text(v);
    }
    if let Ok(v) = row.try_get::<i64, _>(col) {
        return Arg::Int(v);
    }
    if let Ok(v) = row.try_get::<f64, _>(col) {
        return Arg::Float(v);
    }
    if let Ok(v) = row.try_get::<bool, _>(col) {
        return Arg::Bool(v);
    }
    Arg::Null
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    Ok(Json(list_impl(&st, &ctx, v, &q, false).await?))
}

async fn list_detail(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(list_impl(&st, &ctx, v, &q, true).await?))
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let f = get_flavor(&st.platform.db, &ctx, &id).await?;
    Ok(Json(json!({"flavor": f.view(&st.platform.service_url("/compute"), v, true)})))
}

#[derive(Deserialize)]
struct CreateBody {
    flavor: CreateFlavor,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateFlavor {
    name: String,
    ram: Value,
    vcpus: Value,
    disk: Value,
    #[serde(default)]
    id: Option<Value>,
    #[serde(rename = "OS-FLV-EXT-DATA:ephemeral", default)]
    ephemeral: Option<Value>,
    #[serde(default)]
    swap: Option<Value>,
    #[serde(default)]
    rxtx_factor: Option<f64>,
    /// Nova's boolean: `true` or strings such as `"True"`/`"false"`.
    #[serde(rename = "os-flavor-access:is_public", default, deserialize_with = "crate::params::opt_nova_bool")]
    is_public: Option<bool>,
    #[serde(default)]
    description: Option<String>,
}

/// Nova accepts integers and integer strings for flavor sizes.
fn int_field(v: &Value, name: &str, min: i64) -> Result<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= min && n <= i32::MAX as i64 => Ok(n),
        _ => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {name}. Value: {v}. must be an integer >= {min}"
        ))),
    }
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(b): OsJson<CreateBody>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-manage:create", &ctx, &json!({}))?;
    let c = b.flavor;
    let name = c.name.trim().to_string();
    if name.is_empty() || name.len() > 255 {
        return Err(ComputeError::BadRequest("Flavor name must be 1-255 characters".into()).into());
    }
    if c.description.is_some() && !v.at_least(2, 55) {
        return Err(ComputeError::BadRequest("description is not allowed before microversion 2.55".into()).into());
    }
    let id = match &c.id {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s)) if s == "auto" => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 && !s.contains('/') => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(ComputeError::BadRequest(format!("Invalid flavor id {other}")).into()),
    };
    let f = Flavor {
        id,
        name,
        vcpus: int_field(&c.vcpus, "vcpus", 1)?,
        ram: int_field(&c.ram, "ram", 1)?,
        disk: int_field(&c.disk, "disk", 0)?,
        ephemeral: c.ephemeral.as_ref().map(|e| int_field(e, "OS-FLV-EXT-DATA:ephemeral", 0)).transpose()?.unwrap_or(0),
        swap: match &c.swap {
            None | Some(Value::Null) => 0,
            Some(Value::String(s)) if s.is_empty() => 0,
            Some(s) => int_field(s, "swap", 0)?,
        },
        rxtx_factor: c.rxtx_factor.unwrap_or(1.0),
        is_public: c.is_public.unwrap_or(true),
        disabled: false,
        description: c.description,
        extra_specs: BTreeMap::new(),
    };
    let f2 = f.clone();
    let now = stratus_core::time::now();
    st.platform
        .db
        .transaction(|tx| {
            let f = f2.clone();
            let now = now.clone();
            Box::pin(async move {
                let dup = Query::new("SELECT id, name FROM compute_flavors WHERE id = ")
                    .bind(&f.id)
                    .push(" OR name = ")
                    .bind(&f.name)
                    .fetch_optional(&mut **tx)
                    .await?;
                if let Some(d) = dup {
                    let did: String = d.try_get("id")?;
                    return Err(ComputeError::Conflict(if did == f.id {
                        format!("Flavor with ID {} already exists.", f.id)
                    } else {
                        format!("Flavor with name {} already exists.", f.name)
                    }));
                }
                let mut q = Query::new("INSERT INTO compute_flavors (id, name, vcpus, ram, disk, ephemeral, swap, rxtx_factor, is_public, disabled, description, created_at) VALUES (");
                q.bind(&f.id).push(", ").bind(&f.name).push(", ").bind(f.vcpus).push(", ").bind(f.ram).push(", ");
                q.bind(f.disk).push(", ").bind(f.ephemeral).push(", ").bind(f.swap).push(", ").bind(f.rxtx_factor);
                q.push(", ").bind(f.is_public).push(", ").bind(false).push(", ").bind(f.description.clone()).push(", ").bind(now).push(")");
                q.execute(&mut **tx).await?;
                Ok(())
            })
        })
        .await?;
    Ok(Json(json!({"flavor": f.view(&st.platform.service_url("/compute"), v, true)})))
}

#[derive(Deserialize)]
struct UpdateBody {
    flavor: UpdateFlavor,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateFlavor {
    description: Option<String>,
}

async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    if !v.at_least(2, 55) {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Updating a flavor requires microversion 2.55"));
    }
    st.policy.enforce("os_compute_api:os-flavor-manage:update", &ctx, &json!({}))?;
    let mut f = get_flavor(&st.platform.db, &ctx, &id).await?;
    f.description = b.flavor.description;
    let mut q = Query::new("UPDATE compute_flavors SET description = ");
    q.bind(f.description.clone()).push_bind(" WHERE id = ", &f.id);
    exec(&st.platform.db, q).await?;
    Ok(Json(json!({"flavor": f.view(&st.platform.service_url("/compute"), v, true)})))
}

async fn exec(db: &Db, q: Query) -> Result<u64> {
    let n = db
        .transaction(|tx| {
            let q = q.clone();
            Box::pin(async move { q.execute(&mut **tx).await })
        })
        .await?;
    Ok(n)
}

async fn delete(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-manage:delete", &ctx, &json!({}))?;
    let n = exec(&st.platform.db, Query::new("DELETE FROM compute_flavors WHERE id = ").bind(&id).clone()).await?;
    if n == 0 {
        return Err(ComputeError::NotFound(format!("Flavor {id} could not be found.")).into());
    }
    Ok(StatusCode::ACCEPTED)
}

async fn access_json(db: &Db, id: &str) -> Result<Value> {
    let rows = Query::new("SELECT project_id FROM compute_flavor_projects WHERE flavor_id = ")
        .bind(id)
        .push(" ORDER BY project_id")
        .fetch_all(db.reader())
        .await?;
    let mut v = Vec::new();
    for r in rows {
        let p: String = r.try_get("project_id")?;
        v.push(json!({"flavor_id": id, "tenant_id": p}));
    }
    Ok(json!({"flavor_access": v}))
}

async fn access_list(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-access", &ctx, &json!({}))?;
    let f = get_flavor(&st.platform.db, &ctx, &id).await?;
    if f.is_public {
        return Err(ComputeError::NotFound("Access list not available for public flavors.".into()).into());
    }
    Ok(Json(access_json(&st.platform.db, &id).await?))
}

async fn action(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    // Policy first, as Nova: a non-admin is refused (403) before the flavor is looked up,
    // whether or not a private flavor is visible to them.
    if b.get("addTenantAccess").is_some() {
        st.policy.enforce("os_compute_api:os-flavor-access:add_tenant_access", &ctx, &json!({}))?;
    } else if b.get("removeTenantAccess").is_some() {
        st.policy.enforce("os_compute_api:os-flavor-access:remove_tenant_access", &ctx, &json!({}))?;
    }
    let f = get_flavor(&st.platform.db, &ctx, &id).await?;
    let tenant = |key: &str| -> Result<String> {
        b[key]["tenant"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ComputeError::BadRequest(format!("{key} requires a tenant")))
    };
    if b.get("addTenantAccess").is_some() {
        st.policy.enforce("os_compute_api:os-flavor-access:add_tenant_access", &ctx, &json!({}))?;
        let t = tenant("addTenantAccess")?;
        if f.is_public {
            return Err(ComputeError::Conflict("Can not add access to a public flavor.".into()).into());
        }
        let exists = Query::new("SELECT 1 FROM compute_flavor_projects WHERE flavor_id = ")
            .bind(&id)
            .push_bind(" AND project_id = ", &t)
            .fetch_optional(st.platform.db.reader())
            .await?;
        if exists.is_some() {
            return Err(ComputeError::Conflict(format!(
                "Flavor access already exists for flavor {id} and project {t} combination."
            ))
            .into());
        }
        let mut q = Query::new("INSERT INTO compute_flavor_projects (flavor_id, project_id) VALUES (");
        q.bind(&id).push(", ").bind(&t).push(") ON CONFLICT DO NOTHING");
        exec(&st.platform.db, q).await?;
    } else if b.get("removeTenantAccess").is_some() {
        st.policy.enforce("os_compute_api:os-flavor-access:remove_tenant_access", &ctx, &json!({}))?;
        let t = tenant("removeTenantAccess")?;
        let mut q = Query::new("DELETE FROM compute_flavor_projects WHERE flavor_id = ");
        q.bind(&id).push_bind(" AND project_id = ", &t);
        if exec(&st.platform.db, q).await? == 0 {
            return Err(ComputeError::NotFound(format!("Flavor access not found for {id} / {t} combination.")).into());
        }
    } else {
        return Err(ComputeError::BadRequest(
            "Unknown flavor action; use addTenantAccess or removeTenantAccess".into(),
        )
        .into());
    }
    Ok(Json(access_json(&st.platform.db, &id).await?))
}

/// From 2.86 Nova checks the values of the extra specs it knows. These are the common
/// ones (CPU, NUMA, memory pages, watchdog); a key not listed here is taken as given, as a
/// key of a namespace Nova does not own is.
fn check_known_spec(k: &str, v: &str) -> Result<()> {
    let positive = |v: &str| v.parse::<u32>().is_ok_and(|n| n >= 1);
    let one_of = |opts: &[&str]| opts.contains(&v);
    let ok = match k {
        "hw:numa_nodes" | "hw:cpu_sockets" | "hw:cpu_cores" | "hw:cpu_threads" | "hw:cpu_max_sockets"
        | "hw:cpu_max_cores" | "hw:cpu_max_threads" => positive(v),
        "hw:cpu_policy" => one_of(&["shared", "dedicated", "mixed"]),
        "hw:cpu_thread_policy" => one_of(&["prefer", "isolate", "require"]),
        "hw:emulator_threads_policy" => one_of(&["share", "isolate"]),
        "hw:mem_page_size" => {
            one_of(&["small", "large", "any"])
                || v.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse::<u64>().is_ok_and(|n| n > 0)
        }
        "hw:watchdog_action" => one_of(&["none", "pause", "poweroff", "reset", "disabled"]),
        _ => true,
    };
    if !ok {
        return Err(ComputeError::BadRequest(format!(
            "Validation failed; {v} is not a valid value for extra spec {k}"
        )));
    }
    Ok(())
}

fn check_spec(k: &str, v: &Value) -> Result<String> {
    if k.is_empty() || k.len() > 255 || !k.chars().all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c)) {
        return Err(ComputeError::BadRequest(format!("Invalid extra spec key {k:?}")));
    }
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return Err(ComputeError::BadRequest(format!("Invalid value for extra spec {k}: must be a string"))),
    };
    if s.len() > 255 {
        return Err(ComputeError::BadRequest(format!("Extra spec {k} is longer than 255 characters")));
    }
    Ok(s)
}

async fn specs_list(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-extra-specs:index", &ctx, &json!({}))?;
    let f = get_flavor(&st.platform.db, &ctx, &id).await?;
    Ok(Json(json!({"extra_specs": f.extra_specs})))
}

async fn put_specs(db: &Db, id: &str, specs: BTreeMap<String, String>) -> Result<()> {
    let id = id.to_string();
    db.transaction(|tx| {
        let specs = specs.clone();
        let id = id.clone();
        Box::pin(async move {
            for (k, v) in specs {
                Query::new("DELETE FROM compute_flavor_extra_specs WHERE flavor_id = ")
                    .bind(&id)
                    .push_bind(" AND spec_key = ", &k)
                    .execute(&mut **tx)
                    .await?;
                let mut q =
                    Query::new("INSERT INTO compute_flavor_extra_specs (flavor_id, spec_key, spec_value) VALUES (");
                q.bind(&id).push(", ").bind(&k).push(", ").bind(&v).push(")");
                q.execute(&mut **tx).await?;
            }
            Ok::<_, stratus_db::DbError>(())
        })
    })
    .await?;
    Ok(())
}

async fn specs_create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-extra-specs:create", &ctx, &json!({}))?;
    get_flavor(&st.platform.db, &ctx, &id).await?;
    let m =
        b["extra_specs"].as_object().ok_or_else(|| ComputeError::BadRequest("extra_specs must be an object".into()))?;
    let mut specs = BTreeMap::new();
    for (k, val) in m {
        let s = check_spec(k, val)?;
        if v.at_least(2, 86) {
            check_known_spec(k, &s)?;
        }
        specs.insert(k.clone(), s);
    }
    put_specs(&st.platform.db, &id, specs.clone()).await?;
    Ok(Json(json!({"extra_specs": specs})))
}

async fn spec_show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-extra-specs:show", &ctx, &json!({}))?;
    let f = get_flavor(&st.platform.db, &ctx, &id).await?;
    let v = f
        .extra_specs
        .get(&key)
        .ok_or_else(|| ComputeError::NotFound(format!("Flavor {id} has no extra specs with key {key}.")))?;
    Ok(Json(json!({ key: v })))
}

async fn spec_update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path((id, key)): Path<(String, String)>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-extra-specs:update", &ctx, &json!({}))?;
    get_flavor(&st.platform.db, &ctx, &id).await?;
    let m = b.as_object().ok_or_else(|| ComputeError::BadRequest("body must be an object".into()))?;
    if m.len() != 1 || !m.contains_key(&key) {
        return Err(ComputeError::BadRequest("Request body and URI mismatch".into()).into());
    }
    let val = check_spec(&key, &m[&key])?;
    if v.at_least(2, 86) {
        check_known_spec(&key, &val)?;
    }
    put_specs(&st.platform.db, &id, [(key.clone(), val.clone())].into()).await?;
    Ok(Json(json!({ key: val })))
}

async fn spec_delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    st.policy.enforce("os_compute_api:os-flavor-extra-specs:delete", &ctx, &json!({}))?;
    get_flavor(&st.platform.db, &ctx, &id).await?;
    let mut q = Query::new("DELETE FROM compute_flavor_extra_specs WHERE flavor_id = ");
    q.bind(&id).push_bind(" AND spec_key = ", &key);
    if exec(&st.platform.db, q).await? == 0 {
        return Err(ComputeError::NotFound(format!("Flavor {id} has no extra specs with key {key}.")).into());
    }
    // Nova answers 200 with no body here (not 202).
    Ok(StatusCode::OK)
}
