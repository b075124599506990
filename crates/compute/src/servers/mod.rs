//! Servers: create/list/show/update/delete, server actions, metadata and console output.
//!
//! Handlers validate, authorize and record intent (the instance row, an instance action,
//! the task_state, all in one transaction); the conductor does the rest asynchronously
//! and is the one that ends every task.

mod actions;
pub(crate) mod backups;
mod deferred;
pub mod events;
mod interfaces;
mod ips;
pub mod moves;
mod security_groups;
pub mod shelve;
pub mod store;
mod tags;
pub mod view;
pub mod volumes;

use std::collections::BTreeMap;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::pagination::{next_href, PageSpec, SortDir};
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs, RequestContext, RequestId};
use stratus_db::sqlx::Row;
use stratus_db::{Arg, Query};

use crate::clients::{RequestedNetwork, RequestedNetworks};
use crate::error::{ComputeError, Result};
use crate::flavors;
use crate::state::{self, task, vm};
use crate::AppState;
use store::{Instance, Update};

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers", get(list).post(create))
        .route("/v2.1/servers/detail", get(list_detail))
        .route("/v2.1/servers/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/servers/{id}/action", axum::routing::post(actions::action))
        .route("/v2.1/servers/{id}/metadata", get(meta_list).post(meta_merge).put(meta_replace))
        .route("/v2.1/servers/{id}/metadata/{key}", get(meta_show).put(meta_put).delete(meta_delete))
        .route("/v2.1/servers/{id}/remote-consoles", axum::routing::post(actions::remote_console))
        .merge(events::routes())
        .merge(interfaces::routes())
        .merge(ips::routes())
        .merge(security_groups::routes())
        .merge(tags::routes())
        .merge(deferred::routes())
        .merge(volumes::routes())
}

/// The request id of this request (generated when the request arrived).
pub fn request_id(r: &Option<Extension<RequestId>>) -> String {
    r.as_ref().map(|Extension(r)| r.0.clone()).unwrap_or_else(|| RequestId::generate().0)
}

/// Loads a server `ctx` may act on under `rule` (404 when it may not even see it, as
/// Nova hides other projects' servers).
pub async fn authorized(st: &AppState, ctx: &RequestContext, uuid: &str, rule: &str) -> Result<Instance, ApiError> {
    let inst = store::must_load(&st.platform.db, uuid).await?;
    if !st.policy.check(rule, ctx, &inst.target()) {
        if st.policy.check("os_compute_api:servers:show", ctx, &inst.target()) {
            return Err(ApiError::forbidden(format!("Policy doesn't allow {rule} to be performed.")));
        }
        return Err(ComputeError::NotFound(format!("Instance {uuid} could not be found.")).into());
    }
    Ok(inst)
}

pub(crate) fn is_admin_view(st: &AppState, ctx: &RequestContext) -> bool {
    st.policy.check("os_compute_api:os-extended-server-attributes", ctx, &json!({}))
}

const PAGE: PageSpec = PageSpec {
    sort_keys: &[
        ("created_at", "created_at"),
        ("updated_at", "updated_at"),
        ("display_name", "name"),
        ("name", "name"),
        ("uuid", "uuid"),
        ("vm_state", "vm_state"),
        ("task_state", "task_state"),
        ("power_state", "power_state"),
        ("launched_at", "launched_at"),
        ("terminated_at", "terminated_at"),
        ("host", "host"),
        ("node", "node"),
        ("hostname", "hostname"),
        ("availability_zone", "availability_zone"),
        ("key_name", "key_name"),
        ("project_id", "project_id"),
        ("user_id", "user_id"),
        ("image_ref", "image_ref"),
        ("instance_type_id", "flavor_id"),
        ("locked", "locked"),
        ("display_description", "description"),
    ],
    default_sort: &[("created_at", SortDir::Desc)],
    default_limit: 1000,
    max_limit: 1000,
};

async fn list_impl(
    st: &AppState,
    ctx: &RequestContext,
    v: ApiVersion,
    q: &QueryPairs,
    detail: bool,
) -> Result<Value, ApiError> {
    let target = json!({"project_id": ctx.project_id.clone().unwrap_or_default()});
    st.policy.enforce(
        if detail { "os_compute_api:servers:detail" } else { "os_compute_api:servers:index" },
        ctx,
        &target,
    )?;
    let admin = st.policy.check("os_compute_api:servers:allow_all_filters", ctx, &json!({}));
    let page = PAGE.parse(q).map_err(|e| ComputeError::BadRequest(e.message))?;
    let mut sql = Query::new("SELECT * FROM compute_instances WHERE 1 = 1");
    let all_tenants = q.has("all_tenants")
        && q.get("all_tenants").map(|v| stratus_core::query::parse_bool(v).unwrap_or(true)).unwrap_or(false);
    if all_tenants || (admin && q.has("all_tenants") && q.get("all_tenants") == Some("")) {
        st.policy.enforce("os_compute_api:servers:index:get_all_tenants", ctx, &json!({}))?;
        if let Some(p) = q.get("project_id").or(q.get("tenant_id")) {
            sql.push_bind(" AND project_id = ", p);
        }
    } else {
        // Without all_tenants a project filter is ignored, even for admins: the caller's
        // own project is listed (Nova's v2 behaviour, which Tempest checks).
        sql.push_bind(" AND project_id = ", ctx.project_id.clone().unwrap_or_default());
    }
    let deleted = admin && q.bool("deleted")?.unwrap_or(false);
    let changes_since = q
        .get("changes-since")
        .map(|s| {
            stratus_core::time::parse(s)
                .map(stratus_core::time::to_storage)
                .ok_or_else(|| ComputeError::BadRequest(format!("Invalid changes-since value {s:?}")))
        })
        .transpose()?;
    if let Some(cs) = &changes_since {
        sql.push_bind(" AND updated_at >= ", cs);
    } else {
        sql.push_bind(" AND deleted = ", deleted);
    }
    if v.at_least(2, 66) {
        if let Some(cb) = q.get("changes-before") {
            let t = stratus_core::time::parse(cb)
                .map(stratus_core::time::to_storage)
                .ok_or_else(|| ComputeError::BadRequest(format!("Invalid changes-before value {cb:?}")))?;
            sql.push_bind(" AND updated_at <= ", t);
        }
    }
    if let Some(s) = q.get("status") {
        let vms = state::vm_states_for_status(s);
        if vms.is_empty() {
            return Ok(json!({"servers": []}));
        }
        sql.push(" AND ").push_in("vm_state", vms);
    }
    if let Some(f) = q.get("flavor") {
        sql.push_bind(" AND flavor_id = ", f.rsplit('/').next().unwrap_or(f));
    }
    if let Some(i) = q.get("image") {
        sql.push_bind(" AND image_ref = ", i.rsplit('/').next().unwrap_or(i));
    }
    if let Some(r) = q.get("reservation_id") {
        sql.push_bind(" AND reservation_id = ", r);
    }
    if let Some(k) = q.get("key_name") {
        sql.push_bind(" AND key_name = ", k);
    }
    if let Some(l) = q.bool("locked")? {
        if v.at_least(2, 73) {
            sql.push_bind(" AND locked = ", l);
        }
    }
    if admin {
        for (param, col) in [
            ("host", "host"),
            ("node", "node"),
            ("user_id", "user_id"),
            ("availability_zone", "availability_zone"),
            ("vm_state", "vm_state"),
            ("task_state", "task_state"),
            ("hostname", "hostname"),
        ] {
            if let Some(x) = q.get(param) {
                sql.push(" AND ").push(col).push_bind(" = ", x);
            }
        }
    }
    let tags: Vec<String> = q.get("tags").map(|t| t.split(',').map(str::to_string).collect()).unwrap_or_default();
    for t in &tags {
        sql.push_bind(" AND uuid IN (SELECT instance_uuid FROM compute_instance_tags WHERE tag = ", t).push(")");
    }
    if let Some(t) = q.get("tags-any") {
        sql.push(" AND uuid IN (SELECT instance_uuid FROM compute_instance_tags WHERE ")
            .push_in("tag", t.split(',').map(str::to_string).collect::<Vec<_>>())
            .push(")");
    }
    if let Some(t) = q.get("not-tags") {
        let ts: Vec<String> = t.split(',').map(str::to_string).collect();
        let n = ts.len() as i64;
        sql.push(" AND uuid NOT IN (SELECT instance_uuid FROM compute_instance_tags WHERE ")
            .push_in("tag", ts)
            .push_bind(" GROUP BY instance_uuid HAVING COUNT(*) = ", n)
            .push(")");
    }
    if let Some(t) = q.get("not-tags-any") {
        sql.push(" AND uuid NOT IN (SELECT instance_uuid FROM compute_instance_tags WHERE ")
            .push_in("tag", t.split(',').map(str::to_string).collect::<Vec<_>>())
            .push(")");
    }
    let name_re = q
        .get("name")
        .map(|n| {
            regex::RegexBuilder::new(n)
                .case_insensitive(false)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ComputeError::BadRequest(format!("Invalid name filter: {e}")))
        })
        .transpose()?;
    let ip_re = q
        .get("ip")
        .map(|n| regex::Regex::new(n).map_err(|e| ComputeError::BadRequest(format!("Invalid ip filter: {e}"))))
        .transpose()?;
    // `ip` matches IPv4 addresses, `ip6` (2.5+) IPv6 ones, as in Nova.
    let ip6_re = q
        .get("ip6")
        .filter(|_| v.at_least(2, 5))
        .map(|n| regex::Regex::new(n).map_err(|e| ComputeError::BadRequest(format!("Invalid ip6 filter: {e}"))))
        .transpose()?;
    if let Some(m) = &page.marker {
        let row = Query::new("SELECT * FROM compute_instances WHERE uuid = ")
            .bind(m)
            .fetch_optional(st.platform.db.reader())
            .await
            .map_err(ComputeError::from)?;
        let row = row.ok_or_else(|| ComputeError::BadRequest(format!("marker [{m}] not found")))?;
        let mut vals: Vec<Arg> = page.sort.iter().map(|k| flavors::col_arg(&row, k.column)).collect();
        vals.push(Arg::Text(row.try_get("uuid").map_err(ComputeError::from)?));
        page.push_after_marker(&mut sql, "uuid", &vals);
    }
    page.push_order_by(&mut sql, "uuid");
    let in_memory = name_re.is_some() || ip_re.is_some() || ip6_re.is_some();
    if !in_memory {
        page.push_limit_plus_one(&mut sql);
    }
    let rows = sql.fetch_all(st.platform.db.reader()).await.map_err(ComputeError::from)?;
    let mut insts = Vec::new();
    for r in &rows {
        let i = Instance::from_row(r)?;
        if let Some(re) = &name_re {
            if !re.is_match(&i.name) {
                continue;
            }
        }
        if let Some(re) = &ip_re {
            if !i.ports.iter().flat_map(|p| p.fixed_ips.iter()).any(|ip| !ip.contains(':') && re.is_match(ip)) {
                continue;
            }
        }
        if let Some(re) = &ip6_re {
            if !i.ports.iter().flat_map(|p| p.fixed_ips.iter()).any(|ip| ip.contains(':') && re.is_match(ip)) {
                continue;
            }
        }
        insts.push(i);
        if insts.len() > page.limit {
            break;
        }
    }
    let more = insts.len() > page.limit;
    insts.truncate(page.limit);
    let base = st.platform.service_url("/compute");
    let body: Vec<Value> = if detail {
        store::load_extras(&st.platform.db, &mut insts).await?;
        let admin_view = is_admin_view(st, ctx);
        let mut b: Vec<Value> = insts.iter().map(|i| view::detail(i, &base, v, admin_view)).collect();
        interfaces::decorate(st, &insts, &mut b).await;
        for (body, i) in b.iter_mut().zip(&insts) {
            view::shape(body, i, v, view::Shape::List);
        }
        b
    } else {
        insts.iter().map(|i| view::summary(i, &base)).collect()
    };
    let mut out = json!({"servers": body});
    if let (true, Some(last)) = (more, insts.last()) {
        let path = if detail { "/v2.1/servers/detail" } else { "/v2.1/servers" };
        out["servers_links"] = json!([{"rel": "next", "href": next_href(&base, path, q, &last.uuid)}]);
    }
    Ok(out)
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
    let i = authorized(&st, &ctx, &id, "os_compute_api:servers:show").await?;
    let base = st.platform.service_url("/compute");
    let mut b = [view::detail(&i, &base, v, is_admin_view(&st, &ctx))];
    interfaces::decorate(&st, std::slice::from_ref(&i), &mut b).await;
    let [mut b] = b;
    if v.at_least(2, 71) {
        b["server_groups"] = json!(crate::server_groups::of_instance(&st.platform.db, &i.uuid).await?);
    }
    Ok(Json(json!({"server": b})))
}

/// `name` → a valid hostname label (Nova's sanitize_hostname).
pub fn sanitize_hostname(name: &str) -> String {
    let mut h: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else if c == ' ' || c == '_' || c == '.' {
                '-'
            } else {
                '\0'
            }
        })
        .filter(|c| *c != '\0')
        .collect();
    h.truncate(63);
    let h = h.trim_matches('-').to_string();
    if h.is_empty() {
        "server".into()
    } else {
        h
    }
}

const GIB: u64 = 1 << 30;

/// Nova's flavor/image checks for a local root disk (`_validate_flavor_image_nostatus`),
/// run at create, rebuild and resize: the image's `min_ram`, its size and its
/// `min_disk` against the flavor. A 0 GB root disk means "the image's size" and is not
/// checked (the driver still refuses to make a disk smaller than the image's virtual size).
pub(crate) fn check_flavor_fits_image(
    flavor: &flavors::Flavor,
    image: &stratus_compute_proto::spec::ImageSpec,
) -> Result<()> {
    if image.min_ram > flavor.ram.max(0) as u64 {
        return Err(ComputeError::BadRequest("Flavor's memory is too small for requested image.".into()));
    }
    let dest = flavor.disk.max(0) as u64 * GIB;
    if dest == 0 {
        return Ok(());
    }
    let size = image.size.unwrap_or(0);
    if size > dest {
        return Err(ComputeError::BadRequest(format!(
            "Flavor's disk is too small for requested image. Flavor disk is {dest} bytes, image is {size} bytes."
        )));
    }
    let min_disk = image.min_disk.saturating_mul(GIB);
    if min_disk > dest {
        return Err(ComputeError::BadRequest(format!(
            "Flavor's disk is smaller than the minimum size specified in image metadata. Flavor disk is {dest} bytes, \
             minimum size is {min_disk} bytes."
        )));
    }
    Ok(())
}

/// `OS-DCF:diskConfig`: `AUTO` (true) or `MANUAL`; absent is None.
pub(crate) fn disk_config(v: &Value) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s == "AUTO" => Ok(Some(true)),
        Value::String(s) if s == "MANUAL" => Ok(Some(false)),
        other => Err(ComputeError::BadRequest(format!("Invalid OS-DCF:diskConfig {other}: use AUTO or MANUAL"))),
    }
}

/// Nova's schema for `block_device_mapping_v2`: a list of objects whose `source_type`
/// and `destination_type` are among Nova's values (refused with 400 before anything is
/// made, rather than a server built without them).
fn check_block_device_mapping(v: &Value) -> Result<()> {
    let list = match v {
        Value::Null => return Ok(()),
        Value::Array(l) => l,
        other => {
            return Err(ComputeError::BadRequest(format!(
                "Invalid block_device_mapping_v2 {other}: a list of block device mappings is required"
            )))
        }
    };
    for b in list {
        let o = b.as_object().ok_or_else(|| {
            ComputeError::BadRequest(format!("Invalid block device mapping {b}: an object is required"))
        })?;
        let one_of = |key: &str, allowed: &[&str]| -> Result<()> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
                Some(other) => Err(ComputeError::BadRequest(format!(
                    "Invalid {key} {other} in block_device_mapping_v2: use one of {}",
                    allowed.join(", ")
                ))),
            }
        };
        one_of("source_type", &["volume", "image", "snapshot", "blank"])?;
        one_of("destination_type", &["local", "volume"])?;
    }
    Ok(())
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.as_str())),
        other => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {other}. is not of type 'string'"
        ))),
    }
}

fn count_field(v: &Value, key: &str) -> Result<Option<i64>> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| ComputeError::BadRequest(format!("Invalid {key}: must be an integer >= 1"))),
        Value::String(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| ComputeError::BadRequest(format!("Invalid {key}: must be an integer >= 1"))),
        other => Err(ComputeError::BadRequest(format!("Invalid {key}: {other}"))),
    }
}

fn validate_metadata(m: &Value) -> Result<BTreeMap<String, String>> {
    let Some(obj) = m.as_object() else {
        if m.is_null() {
            return Ok(BTreeMap::new());
        }
        return Err(ComputeError::BadRequest("metadata must be an object".into()));
    };
    if obj.len() > 128 {
        return Err(ComputeError::QuotaExceeded {
            resource: "metadata_items".into(),
            requested: obj.len() as i64,
            used: 0,
            allowed: 128,
        });
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let Value::String(s) = v else {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute metadata.{k}: must be a string"
            )));
        };
        if k.is_empty() || k.len() > 255 || s.len() > 255 {
            return Err(ComputeError::BadRequest("Metadata keys and values must be 1-255 characters".into()));
        }
        out.insert(k.clone(), s.clone());
    }
    Ok(out)
}

/// Quota limits in effect for a project (project override, else class default).
pub async fn quota_limit(st: &AppState, project: &str, resource: &str) -> Result<i64> {
    let r = Query::new("SELECT hard_limit FROM compute_quotas WHERE project_id = ")
        .bind(project)
        .push_bind(" AND resource = ", resource)
        .fetch_optional(st.platform.db.reader())
        .await?;
    if let Some(r) = r {
        return Ok(r.try_get("hard_limit")?);
    }
    crate::limits::default_limit(&st.platform.db, resource).await
}

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    rid: Option<Extension<RequestId>>,
    OsJson(body): OsJson<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let s = body
        .get("server")
        .filter(|s| s.is_object())
        .ok_or_else(|| ComputeError::BadRequest("Invalid request body: 'server' is required".into()))?;
    let project = ctx
        .project_id
        .clone()
        .ok_or_else(|| ComputeError::Forbidden("A project-scoped token is required to create servers".into()))?;
    st.policy.enforce(
        "os_compute_api:servers:create",
        &ctx,
        &json!({"project_id": project, "user_id": ctx.user_id}),
    )?;
    let name = str_field(s, "name")?.ok_or_else(|| {
        ComputeError::BadRequest("Invalid input for field/attribute server: 'name' is a required property".into())
    })?;
    if v.at_least(2, 57) && !s["personality"].is_null() {
        return Err(ComputeError::BadRequest(
            "personality was removed at microversion 2.57: pass files in user_data instead".into(),
        )
        .into());
    }
    if name.trim().is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(ComputeError::BadRequest(
            "Invalid server name: must be 1-255 characters and not only spaces".into(),
        )
        .into());
    }
    let flavor_ref = match &s["flavorRef"] {
        Value::String(f) => f.rsplit('/').next().unwrap_or(f).to_string(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute server: 'flavorRef' is a required property".into(),
            )
            .into())
        }
    };
    let flavor = match flavors::get_flavor(&st.platform.db, &ctx, &flavor_ref).await {
        Ok(f) if !f.disabled => f,
        Ok(_) | Err(ComputeError::NotFound(_)) => {
            return Err(ComputeError::BadRequest(format!("Flavor {flavor_ref} could not be found.")).into())
        }
        Err(e) => return Err(e.into()),
    };
    let image_ref =
        str_field(s, "imageRef")?.map(|i| i.rsplit('/').next().unwrap_or(i).to_string()).unwrap_or_default();
    check_block_device_mapping(&s["block_device_mapping_v2"])?;
    let boot_volumes = volumes::boot::requested(&s["block_device_mapping_v2"])?;
    let boot_volume = boot_volumes.iter().find(|r| r.boot_index == Some(0)).cloned();
    let get_image = |id: String| {
        let st = st.clone();
        let ctx = ctx.0.clone();
        async move {
            st.backends
                .images
                .get(&ctx, &id)
                .await
                .map_err(|e| ComputeError::Unavailable(e.0))?
                .ok_or_else(|| ComputeError::BadRequest(format!("Image {id} could not be found.")))
        }
    };
    let (image_ref, image) = match &boot_volume {
        // Volume-backed: the server has no image of its own (Nova shows ""); an image the
        // root volume is made from still describes the hardware (hw_* properties).
        Some(b) => {
            let image = match (b.source_type.as_str(), &b.uuid) {
                ("image", Some(id)) => Some(get_image(id.clone()).await?),
                _ => None,
            };
            (String::new(), image)
        }
        None => {
            if image_ref.is_empty() {
                return Err(ComputeError::BadRequest(
                    "Block Device Mapping is Invalid: imageRef is required unless a volume with boot_index 0 is given"
                        .into(),
                )
                .into());
            }
            let image = get_image(image_ref.clone()).await?;
            check_flavor_fits_image(&flavor, &image)?;
            (image_ref, Some(image))
        }
    };
    if !boot_volumes.is_empty() {
        volumes::boot::check(st.backends.volumes.as_ref(), &ctx, &boot_volumes).await?;
    }
    let key_name = str_field(s, "key_name")?.map(str::to_string);
    let key_data = match &key_name {
        Some(k) => Some(
            crate::keypairs::get_keypair(&st.platform.db, &ctx.user_id, k)
                .await?
                .ok_or_else(|| ComputeError::BadRequest("Invalid key_name provided.".into()))?
                .public_key,
        ),
        None => None,
    };
    let user_data = str_field(s, "user_data")?.map(str::to_string);
    if let Some(u) = &user_data {
        if u.len() > 65535 || base64::engine::general_purpose::STANDARD.decode(u.trim()).is_err() {
            return Err(
                ComputeError::BadRequest("User data needs to be valid base 64 of at most 65535 bytes.".into()).into()
            );
        }
    }
    let metadata = validate_metadata(&s["metadata"])?;
    let auto_disk_config = disk_config(&s["OS-DCF:diskConfig"])?.unwrap_or(false);
    let networks = match &s["networks"] {
        Value::Null if v.at_least(2, 37) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute server: 'networks' is a required property".into(),
            )
            .into())
        }
        Value::Null => RequestedNetworks::Auto,
        Value::String(n) if n == "auto" => {
            interfaces::check_auto(&st, &ctx).await?;
            RequestedNetworks::Auto
        }
        Value::String(n) if n == "none" => RequestedNetworks::None,
        Value::Array(list) => {
            let mut out = Vec::new();
            for n in list {
                let rn = RequestedNetwork {
                    uuid: str_field(n, "uuid")?.map(str::to_string),
                    port: str_field(n, "port")?.map(str::to_string),
                    fixed_ip: str_field(n, "fixed_ip")?.map(str::to_string),
                    tag: str_field(n, "tag")?.map(str::to_string),
                };
                if rn.uuid.is_none() && rn.port.is_none() {
                    return Err(ComputeError::BadRequest("Each network needs a uuid or a port".into()).into());
                }
                // Checked here, as Nova does, rather than by a build that then fails.
                for (what, id) in [("network uuid", &rn.uuid), ("port id", &rn.port)] {
                    if let Some(id) = id.as_deref().filter(|i| uuid::Uuid::parse_str(i).is_err()) {
                        return Err(ComputeError::BadRequest(format!(
                            "Bad networks format: {what} is not in proper format ({id})"
                        ))
                        .into());
                    }
                }
                if let Some(ip) = rn.fixed_ip.as_deref().filter(|ip| ip.parse::<std::net::IpAddr>().is_err()) {
                    return Err(ComputeError::BadRequest(format!("Invalid fixed IP address ({ip})")).into());
                }
                out.push(rn);
            }
            RequestedNetworks::List(out)
        }
        other => return Err(ComputeError::BadRequest(format!("Invalid networks value {other}")).into()),
    };
    let security_groups: Vec<String> = match &s["security_groups"] {
        Value::Array(a) => a.iter().filter_map(|g| g["name"].as_str().map(str::to_string)).collect(),
        _ => vec!["default".into()],
    };
    // A group that does not exist is the caller's mistake, answered now (Nova: 400), not
    // a server recorded with it. `default` is the project's own, made on first use.
    for g in security_groups.iter().filter(|g| g.as_str() != "default") {
        if st.backends.network.find_security_group(&ctx, g).await.map_err(interfaces::refused)?.is_none() {
            return Err(ComputeError::BadRequest(format!(
                "Security group {g} not found for project {}.",
                ctx.project_id.as_deref().unwrap_or_default()
            ))
            .into());
        }
    }
    let access_ipv4 =
        str_field(s, "accessIPv4")?.map(crate::params::access_ipv4).transpose().map_err(ComputeError::BadRequest)?;
    let access_ipv6 =
        str_field(s, "accessIPv6")?.map(crate::params::access_ipv6).transpose().map_err(ComputeError::BadRequest)?;
    let description = str_field(s, "description")?.map(str::to_string);
    if description.is_some() && !v.at_least(2, 19) {
        return Err(ComputeError::BadRequest("description requires microversion 2.19".into()).into());
    }
    let tags: Vec<String> = match &s["tags"] {
        Value::Array(a) if v.at_least(2, 52) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        Value::Null => vec![],
        _ => {
            return Err(ComputeError::BadRequest(
                "tags requires microversion 2.52 and must be a list of strings".into(),
            )
            .into())
        }
    };
    let hostname_req = str_field(s, "hostname")?
        .map(|h| crate::params::hostname(h, v.at_least(2, 94)))
        .transpose()
        .map_err(ComputeError::BadRequest)?;
    if hostname_req.is_some() && !v.at_least(2, 90) {
        return Err(ComputeError::BadRequest("hostname requires microversion 2.90".into()).into());
    }
    // availability_zone, with `az:host` (admins) forcing a host.
    let (az, forced_host) = match str_field(s, "availability_zone")? {
        None | Some("") => (None, None),
        Some(z) => match z.split_once(':') {
            Some((zone, host)) => {
                st.policy.enforce(
                    "os_compute_api:servers:create:forced_host",
                    &ctx,
                    &json!({"project_id": project}),
                )?;
                ((!zone.is_empty()).then(|| zone.to_string()), (!host.is_empty()).then(|| host.to_string()))
            }
            None => (Some(z.to_string()), None),
        },
    };
    if let Some(z) = &az {
        if !crate::hosts::zone_exists(&st, z).await? {
            return Err(
                ComputeError::BadRequest(format!("The requested availability zone is not available: {z}")).into()
            );
        }
    }
    let min_count = count_field(s, "min_count")?.unwrap_or(1);
    let max_count = count_field(s, "max_count")?.unwrap_or(min_count);
    if max_count < min_count {
        return Err(ComputeError::BadRequest("min_count must be <= max_count".into()).into());
    }
    if max_count > 1 && boot_volumes.iter().any(|r| r.source_type == "volume") {
        return Err(ComputeError::BadRequest(
            "Block Device Mapping is Invalid: one volume cannot be attached to several servers".into(),
        )
        .into());
    }
    if hostname_req.is_some() && max_count > 1 {
        return Err(ComputeError::BadRequest("hostname cannot be set when creating more than one server".into()).into());
    }
    let config_drive = match &s["config_drive"] {
        Value::Bool(b) => *b,
        Value::String(x) => stratus_core::query::parse_bool(x).unwrap_or(false),
        _ => false,
    };
    let mut hints =
        body.get("os:scheduler_hints").or(body.get("OS-SCH-HNT:scheduler_hints")).cloned().unwrap_or(json!({}));
    if let Some(h) = forced_host {
        hints["force_host"] = json!(h);
    }
    let admin_pass = str_field(s, "adminPass")?.map(str::to_string).unwrap_or_else(generate_password);
    let request_id = request_id(&rid);
    let group = crate::server_groups::check_hint(&st, &ctx, &hints, max_count).await?;
    let reservation_id = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let now = stratus_core::time::now();

    // Quota: how many of [min_count, max_count] fit, counted from live rows in the same
    // transaction that inserts them (the single writer serializes concurrent creates).
    let limits = (
        quota_limit(&st, &project, "instances").await?,
        quota_limit(&st, &project, "cores").await?,
        quota_limit(&st, &project, "ram").await?,
    );
    let mut insts = Vec::new();
    for n in 0..max_count {
        let display = if max_count > 1 { format!("{name}-{}", n + 1) } else { name.to_string() };
        let hostname = match &hostname_req {
            Some(h) => h.clone(),
            None => sanitize_hostname(&display),
        };
        insts.push(Instance {
            uuid: uuid::Uuid::new_v4().to_string(),
            name: display,
            description: description.clone(),
            hostname,
            project_id: project.clone(),
            user_id: ctx.user_id.clone(),
            flavor: flavor.clone(),
            image_ref: image_ref.clone(),
            image: image.clone(),
            key_name: key_name.clone(),
            key_data: key_data.clone(),
            user_data: user_data.clone(),
            availability_zone: az.clone(),
            requested_az: az.clone(),
            host: None,
            node: None,
            vm_state: vm::BUILDING.into(),
            task_state: Some(task::SCHEDULING.into()),
            power_state: 0,
            locked: false,
            locked_by: None,
            locked_reason: None,
            config_drive,
            auto_disk_config,
            access_ipv4: access_ipv4.clone(),
            access_ipv6: access_ipv6.clone(),
            progress: 0,
            reservation_id: reservation_id.clone(),
            launch_index: n,
            security_groups: security_groups.clone(),
            requested_networks: json!(networks),
            ports: vec![],
            scheduler_hints: hints.clone(),
            retry_hosts: vec![],
            fault: None,
            admin_pass: Some(admin_pass.clone()),
            launched_at: None,
            terminated_at: None,
            created_at: now.clone(),
            updated_at: now.clone(),
            deleted: false,
            metadata: metadata.clone(),
            tags: tags.clone(),
            bdms: Vec::new(),
        });
    }
    let to_insert = insts.clone();
    let (ctx_user, rid2, group2) = (ctx.user_id.clone(), request_id.clone(), group.clone());
    let created: Vec<(Instance, String)> = st
        .platform
        .db
        .transaction(|tx| {
            let insts = to_insert.clone();
            let (project, user, rid, group) = (project.clone(), ctx_user.clone(), rid2.clone(), group2.clone());
            Box::pin(async move {
                // Unlimited quotas need no count (Nova skips it too): with thousands of
                // servers in a project the count is the costliest part of a create.
                let used = if limits.0 < 0 && limits.1 < 0 && limits.2 < 0 {
                    (0, 0, 0)
                } else {
                    used_counts(tx, &project).await?
                };
                let one = &insts[0].flavor;
                let fits = |n: i64| {
                    (limits.0 < 0 || used.0 + n <= limits.0)
                        && (limits.1 < 0 || used.1 + n * one.vcpus <= limits.1)
                        && (limits.2 < 0 || used.2 + n * one.ram <= limits.2)
                };
                let mut n = insts.len() as i64;
                while n > 0 && !fits(n) {
                    n -= 1;
                }
                if n < min_count {
                    let (res, req, u, a) = if limits.0 >= 0 && used.0 + min_count > limits.0 {
                        ("instances", min_count, used.0, limits.0)
                    } else if limits.1 >= 0 && used.1 + min_count * one.vcpus > limits.1 {
                        ("cores", min_count * one.vcpus, used.1, limits.1)
                    } else {
                        ("ram", min_count * one.ram, used.2, limits.2)
                    };
                    return Err(ComputeError::QuotaExceeded {
                        resource: res.into(),
                        requested: req,
                        used: u,
                        allowed: a,
                    });
                }
                let mut out = Vec::new();
                for i in insts.into_iter().take(n as usize) {
                    store::insert(tx, &i).await?;
                    let aid = events::start_action_id(tx, &i.uuid, "create", &rid, &user, &project).await?;
                    out.push((i, aid));
                }
                // Members before the builds start (the scheduler reads them), counted
                // against the group's quota in this transaction.
                if let Some(g) = &group {
                    let ids: Vec<String> = out.iter().map(|(i, _)| i.uuid.clone()).collect();
                    crate::server_groups::add_members_tx(tx, g, &ids).await?;
                }
                Ok(out)
            })
        })
        .await?;
    let first = created[0].0.clone();
    let mut created = created;
    for (i, _) in created.iter_mut() {
        // The build's first pass works from this copy: it must see the pending mappings.
        i.bdms = volumes::boot::record(&st.platform.db, i, &boot_volumes).await?;
    }
    for (i, aid) in created {
        st.conductor.clone().spawn_new_build(i, request_id.clone(), aid);
    }
    let first = &first;
    if s["return_reservation_id"].as_bool() == Some(true) {
        return Ok((StatusCode::ACCEPTED, Json(json!({"reservation_id": reservation_id}))));
    }
    let base = st.platform.service_url("/compute");
    let mut out = json!({
        "id": first.uuid,
        "links": view::summary(first, &base)["links"],
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": security_groups.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
    });
    out["adminPass"] = json!(admin_pass);
    Ok((StatusCode::ACCEPTED, Json(json!({"server": out}))))
}

/// (instances, cores, ram) used by a project's live servers.
pub async fn used_counts(tx: &mut stratus_db::Tx, project: &str) -> Result<(i64, i64, i64)> {
    let row = Query::new(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS c, \
         CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS r FROM compute_instances WHERE deleted = ",
    )
    .bind(false)
    .push_bind(" AND project_id = ", project)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(r) => Ok((r.try_get("n")?, r.try_get("c")?, r.try_get("r")?)),
        None => Ok((0, 0, 0)),
    }
}

pub(crate) fn generate_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..12).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect()
}

async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    Path(id): Path<String>,
    OsJson(body): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:servers:update").await?;
    let s = body
        .get("server")
        .and_then(Value::as_object)
        .ok_or_else(|| ComputeError::BadRequest("Invalid request body: 'server' is required".into()))?;
    let mut u = Update::new();
    for (k, val) in s {
        match k.as_str() {
            "name" => {
                let n = val.as_str().filter(|n| !n.trim().is_empty() && n.chars().count() <= 255 && !n.chars().any(char::is_control)).ok_or_else(|| ComputeError::BadRequest("Invalid server name".into()))?;
                u = u.set("name", n);
            }
            "description" if v.at_least(2, 19) => {
                let d = match val {
                    Value::Null => None,
                    Value::String(d) if d.len() <= 255 => Some(d.clone()),
                    _ => return Err(ComputeError::BadRequest("Invalid description".into()).into()),
                };
                u = u.set("description", d);
            }
            "hostname" if v.at_least(2, 90) => {
                let h = val.as_str().ok_or_else(|| ComputeError::BadRequest("Invalid hostname: a string is required".into()))?;
                let h = crate::params::hostname(h, v.at_least(2, 94)).map_err(ComputeError::BadRequest)?;
                u = u.set("hostname", h);
            }
            "accessIPv4" => {
                let a = str_field(&body["server"], k)?.map(crate::params::access_ipv4).transpose().map_err(ComputeError::BadRequest)?;
                u = u.set("access_ipv4", a);
            }
            "accessIPv6" => {
                let a = str_field(&body["server"], k)?.map(crate::params::access_ipv6).transpose().map_err(ComputeError::BadRequest)?;
                u = u.set("access_ipv6", a);
            }
            "OS-DCF:diskConfig" => {
                if let Some(auto) = disk_config(val)? {
                    u = u.set("auto_disk_config", auto);
                }
            }
            other => return Err(ComputeError::BadRequest(format!("Invalid input for field/attribute server. Additional properties are not allowed ('{other}' was unexpected)")).into()),
        }
    }
    u.apply(&st.platform.db, &inst.uuid).await?;
    let i = store::must_load(&st.platform.db, &id).await?;
    let base = st.platform.service_url("/compute");
    let mut b = [view::detail(&i, &base, v, is_admin_view(&st, &ctx))];
    interfaces::decorate(&st, std::slice::from_ref(&i), &mut b).await;
    let [mut b] = b;
    if v.at_least(2, 71) {
        b["server_groups"] = json!(crate::server_groups::of_instance(&st.platform.db, &i.uuid).await?);
    }
    view::shape(&mut b, &i, v, view::Shape::Update);
    Ok(Json(json!({"server": b})))
}

/// Fails with 409 when a non-admin acts on a locked server.
pub fn check_lock(st: &AppState, ctx: &RequestContext, i: &Instance) -> Result<()> {
    if i.locked && !st.policy.check("os_compute_api:os-lock-server:unlock:unlock_override", ctx, &i.target()) {
        return Err(ComputeError::Locked(i.uuid.clone()));
    }
    Ok(())
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    rid: Option<Extension<RequestId>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let inst = authorized(&st, &ctx, &id, "os_compute_api:servers:delete").await?;
    check_lock(&st, &ctx, &inst)?;
    if inst.task_state.as_deref() == Some(task::DELETING) {
        return Ok(StatusCode::NO_CONTENT);
    }
    let rid = request_id(&rid);
    if deferred::deferred(&st, &inst) {
        deferred::soft_delete(&st, &ctx, &inst, &rid).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let (uuid, user, project) = (inst.uuid.clone(), ctx.user_id.clone(), inst.project_id.clone());
    let ok = st
        .platform
        .db
        .transaction(|tx| {
            let (uuid, user, project, rid) = (uuid.clone(), user.clone(), project.clone(), rid.clone());
            Box::pin(async move {
                let ok = Update::new().set("task_state", task::DELETING).apply_tx(tx, &uuid).await?;
                if ok {
                    events::start_action(tx, &uuid, "delete", &rid, &user, &project).await?;
                }
                Ok::<_, ComputeError>(ok)
            })
        })
        .await?;
    if !ok {
        return Err(ComputeError::NotFound(format!("Instance {id} could not be found.")).into());
    }
    st.conductor.clone().spawn_delete(inst.uuid.clone(), rid);
    Ok(StatusCode::NO_CONTENT)
}

// --- metadata ---------------------------------------------------------------------

async fn meta_list(State(st): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let i = authorized(&st, &ctx, &id, "os_compute_api:server-metadata:index").await?;
    Ok(Json(json!({"metadata": i.metadata})))
}

async fn meta_show(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let i = authorized(&st, &ctx, &id, "os_compute_api:server-metadata:show").await?;
    let v = i.metadata.get(&key).ok_or_else(|| ComputeError::NotFound("Metadata item was not found".into()))?;
    Ok(Json(json!({"meta": {key: v}})))
}

async fn write_meta(
    st: &AppState,
    uuid: &str,
    set: BTreeMap<String, String>,
    replace: bool,
    remove: Option<String>,
) -> Result<BTreeMap<String, String>> {
    let u = uuid.to_string();
    st.platform
        .db
        .transaction(|tx| {
            let (u, set, remove) = (u.clone(), set.clone(), remove.clone());
            Box::pin(async move {
                if replace {
                    Query::new("DELETE FROM compute_instance_metadata WHERE instance_uuid = ")
                        .bind(&u)
                        .execute(&mut **tx)
                        .await?;
                }
                if let Some(k) = remove {
                    let n = Query::new("DELETE FROM compute_instance_metadata WHERE instance_uuid = ")
                        .bind(&u)
                        .push_bind(" AND meta_key = ", &k)
                        .execute(&mut **tx)
                        .await?;
                    if n == 0 {
                        return Err(ComputeError::NotFound("Metadata item was not found".into()));
                    }
                }
                for (k, v) in &set {
                    Query::new("DELETE FROM compute_instance_metadata WHERE instance_uuid = ")
                        .bind(&u)
                        .push_bind(" AND meta_key = ", k)
                        .execute(&mut **tx)
                        .await?;
                    let mut q = Query::new(
                        "INSERT INTO compute_instance_metadata (instance_uuid, meta_key, meta_value) VALUES (",
                    );
                    q.bind(&u).push(", ").bind(k).push(", ").bind(v).push(")");
                    q.execute(&mut **tx).await?;
                }
                let count: i64 =
                    Query::new("SELECT COUNT(*) AS n FROM compute_instance_metadata WHERE instance_uuid = ")
                        .bind(&u)
                        .fetch_optional(&mut **tx)
                        .await?
                        .map(|r| r.try_get("n"))
                        .transpose()?
                        .unwrap_or(0);
                if count > 128 {
                    return Err(ComputeError::QuotaExceeded {
                        resource: "metadata_items".into(),
                        requested: count,
                        used: 0,
                        allowed: 128,
                    });
                }
                Ok(())
            })
        })
        .await?;
    Ok(store::must_load(&st.platform.db, uuid).await?.metadata)
}

async fn meta_merge(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let i = authorized(&st, &ctx, &id, "os_compute_api:server-metadata:create").await?;
    check_lock(&st, &ctx, &i)?;
    let m =
        validate_metadata(b.get("metadata").ok_or_else(|| ComputeError::BadRequest("'metadata' is required".into()))?)?;
    Ok(Json(json!({"metadata": write_meta(&st, &id, m, false, None).await?})))
}

async fn meta_replace(
    State(st): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let i = authorized(&st, &ctx, &id, "os_compute_api:server-metadata:update_all").await?;
    check_lock(&st, &ctx, &i)?;
    let m =
        validate_metadata(b.get("metadata").ok_or_else(|| ComputeError::BadRequest("'metadata' is required".into()))?)?;
    Ok(Json(json!({"metadata": write_meta(&st, &id, m, true, None).await?})))
}

async fn meta_put(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
    OsJson(b): OsJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let i = authorized(&st, &ctx, &id, "os_compute_api:server-metadata:update").await?;
    check_lock(&st, &ctx, &i)?;
    let m = validate_metadata(b.get("meta").ok_or_else(|| ComputeError::BadRequest("'meta' is required".into()))?)?;
    if m.len() != 1 || !m.contains_key(&key) {
        return Err(ComputeError::BadRequest("Request body and URI mismatch".into()).into());
    }
    write_meta(&st, &id, m.clone(), false, None).await?;
    Ok(Json(json!({"meta": m})))
}

async fn meta_delete(
    State(st): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let i = authorized(&st, &ctx, &id, "os_compute_api:server-metadata:delete").await?;
    check_lock(&st, &ctx, &i)?;
    write_meta(&st, &id, BTreeMap::new(), false, Some(key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The deferred-delete reclaim loop (None when deferred delete is off).
pub fn spawn_reclaimer(st: AppState) -> Option<tokio::task::JoinHandle<()>> {
    deferred::spawn_reclaimer(st)
}

#[cfg(test)]
mod fit_tests {
    use stratus_compute_proto::spec::ImageSpec;

    use super::*;

    fn flavor(ram: i64, disk: i64) -> flavors::Flavor {
        flavors::Flavor {
            id: "f".into(),
            name: "f".into(),
            vcpus: 1,
            ram,
            disk,
            ephemeral: 0,
            swap: 0,
            rxtx_factor: 1.0,
            is_public: true,
            disabled: false,
            description: None,
            extra_specs: BTreeMap::new(),
        }
    }

    fn msg(r: Result<()>) -> String {
        match r {
            Err(ComputeError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn flavor_must_fit_the_image_like_nova() {
        let image = ImageSpec { min_ram: 256, min_disk: 2, size: Some(3 * GIB), ..Default::default() };
        assert_eq!(
            msg(check_flavor_fits_image(&flavor(128, 10), &image)),
            "Flavor's memory is too small for requested image."
        );
        assert_eq!(
            msg(check_flavor_fits_image(&flavor(256, 1), &image)),
            "Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, image is 3221225472 bytes."
        );
        let small = ImageSpec { size: Some(1), ..image.clone() };
        assert_eq!(
            msg(check_flavor_fits_image(&flavor(256, 1), &small)),
            "Flavor's disk is smaller than the minimum size specified in image metadata. Flavor disk is 1073741824 \
             bytes, minimum size is 2147483648 bytes."
        );
        assert!(check_flavor_fits_image(&flavor(256, 3), &image).is_ok());
        assert!(check_flavor_fits_image(&flavor(256, 0), &image).is_ok(), "a 0 GB root disk is the image's size");
    }
}
