//! Volume transfers (`/os-volume-transfer`, and `/volume-transfers` from 3.55): the
//! owner offers a volume with a secret key; whoever presents the id and the key takes
//! it into their project (quota checked there), snapshots included unless the offer
//! said `no_snapshots`. Only a salted hash of the key is kept.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stratus_auth::{Ctx, RequestContext};
use stratus_core::pagination::{PageSpec, SortDir};
use stratus_core::{ApiVersion, OsJson, QueryPairs};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::{Arg, Query};

use crate::body::{self, ts};
use crate::error::{bad, invalid_volume, not_found, VolError, VolResult};
use crate::policy::enforce;
use crate::quotas::{self, Deltas};
use crate::sql::{self, Listing};
use crate::volumes::store as volumes;
use crate::{both, Vol, S};

/// Routes.
pub fn routes() -> Router<S> {
    let mut r = Router::new();
    for base in ["/os-volume-transfer", "/volume-transfers"] {
        r = both(r, base, get(list).post(create));
        r = both(r, &format!("{base}/detail"), get(list_detail));
        r = both(r, &format!("{base}/{{id}}"), get(show).delete(delete));
        r = both(r, &format!("{base}/{{id}}/accept"), post(accept));
    }
    r
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

fn hash(salt: &str, key: &str) -> String {
    hex::encode(Sha256::digest(format!("{salt}{key}").as_bytes()))
}

fn collection(uri: &Uri) -> &'static str {
    if uri.path().contains("/volume-transfers") {
        "volume-transfers"
    } else {
        "os-volume-transfer"
    }
}

fn view(vol: &Vol, ver: ApiVersion, r: &AnyRow, coll: &str, detail: bool) -> Value {
    let id = sql::s(r, "id");
    let mut v = json!({
        "id": id,
        "name": sql::os(r, "name"),
        "volume_id": sql::s(r, "volume_id"),
        "links": body::links(&vol.base, &sql::s(r, "source_project_id"), coll, &id),
    });
    if detail {
        v["created_at"] = ts(&sql::os(r, "created_at"));
        if ver.at_least(3, 57) {
            v["source_project_id"] = json!(sql::s(r, "source_project_id"));
            v["destination_project_id"] = json!(sql::os(r, "destination_project_id"));
            v["accepted"] = json!(sql::b(r, "accepted"));
        }
    }
    v
}

const PAGES: PageSpec = PageSpec {
    sort_keys: &[("id", "id"), ("name", "name"), ("created_at", "created_at"), ("volume_id", "volume_id")],
    default_sort: &[("created_at", SortDir::Desc)],
    default_limit: 1000,
    max_limit: 1000,
};

async fn listing(
    vol: S,
    ctx: RequestContext,
    ver: ApiVersion,
    uri: Uri,
    q: QueryPairs,
    detail: bool,
) -> VolResult<Json<Value>> {
    enforce(&vol.policy, "volume:get_all_transfers", &ctx, None)?;
    let listing = Listing::parse(&PAGES, &q)?;
    let mut sq = Query::new("SELECT * FROM volume_transfers WHERE deleted = 0");
    crate::volumes::scope(&ctx, &q, "source_project_id", &mut sq)?;
    if let Some(v) = q.get("volume_id") {
        sq.push(" AND volume_id = ").bind(v.to_string());
    }
    if let Some(v) = q.get("name") {
        sq.push(" AND name = ").bind(v.to_string());
    }
    listing.finish(&mut sq, vol.db.reader(), "volume_transfers", "id", "transfer").await?;
    let rows = sq.fetch_all(vol.db.reader()).await?;
    let (rows, links) = listing.links(rows, |r| sql::s(r, "id"), &vol.base, uri.path(), &q);
    let coll = collection(&uri);
    let mut out = json!({"transfers": rows.iter().map(|r| view(&vol, ver, r, coll, detail)).collect::<Vec<_>>()});
    if let Some(l) = links {
        out["transfers_links"] = l;
    }
    Ok(Json(out))
}

async fn list(State(vol): State<S>, Ctx(ctx): Ctx, ver: ApiVersion, uri: Uri, q: QueryPairs) -> VolResult<Json<Value>> {
    listing(vol, ctx, ver, uri, q, false).await
}

async fn list_detail(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    uri: Uri,
    q: QueryPairs,
) -> VolResult<Json<Value>> {
    listing(vol, ctx, ver, uri, q, true).await
}

async fn fetch(vol: &Vol, id: &str) -> VolResult<AnyRow> {
    let mut q = Query::new("SELECT * FROM volume_transfers WHERE deleted = 0 AND id = ");
    q.bind(id);
    q.fetch_optional(vol.db.reader())
        .await?
        .ok_or_else(|| VolError::NotFound(format!("Transfer {id} could not be found.")))
}

async fn show(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    uri: Uri,
    Path(p): Path<IdPath>,
) -> VolResult<Json<Value>> {
    let r = fetch(&vol, &p.id).await?;
    let owner = sql::s(&r, "source_project_id");
    if !ctx.is_admin() && ctx.project_id.as_deref() != Some(owner.as_str()) {
        return Err(VolError::NotFound(format!("Transfer {} could not be found.", p.id)));
    }
    enforce(&vol.policy, "volume:get_transfer", &ctx, Some(&owner))?;
    Ok(Json(json!({"transfer": view(&vol, ver, &r, collection(&uri), true)})))
}

async fn create(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    uri: Uri,
    OsJson(b): OsJson<Value>,
) -> VolResult<(StatusCode, Json<Value>)> {
    let m = body::obj(&b, "transfer")?;
    let vid =
        body::opt_str(m, "volume_id")?.ok_or_else(|| bad("Incorrect request body format: volume_id is required"))?;
    let name = body::opt_text(m, "name", 255)?.map(|n| n.trim().to_string());
    let no_snapshots = if ver.at_least(3, 55) { body::opt_bool(m, "no_snapshots")?.unwrap_or(false) } else { false };
    let v = volumes::visible(&vol, &ctx, &vid).await?;
    enforce(&vol.policy, "volume:create_transfer", &ctx, Some(&v.project_id))?;
    if no_snapshots && !crate::snapshots::store::of_volume(&vol, &v.id).await?.is_empty() {
        return Err(invalid_volume(format!("Volume {} has snapshots: transfer it with its snapshots", v.id)));
    }
    let key: String = {
        let mut rng = rand::thread_rng();
        (0..16).map(|_| format!("{:x}", rng.gen_range(0..16u8))).collect()
    };
    let salt: String = {
        let mut rng = rand::thread_rng();
        (0..8).map(|_| format!("{:x}", rng.gen_range(0..16u8))).collect()
    };
    let id = body::new_id();
    let now = stratus_core::time::now();
    {
        let (id, vid, name, salt, crypt, project, now) = (
            id.clone(),
            v.id.clone(),
            name.clone(),
            salt.clone(),
            hash(&salt, &key),
            v.project_id.clone(),
            now.clone(),
        );
        vol.db
            .transaction(|tx| {
                let (id, vid, name, salt, crypt, project, now) =
                    (id.clone(), vid.clone(), name.clone(), salt.clone(), crypt.clone(), project.clone(), now.clone());
                Box::pin(async move {
                    volumes::transition(tx, &vid, &["available"], "awaiting-transfer", &[]).await?;
                    let mut q = Query::new(
                        "INSERT INTO volume_transfers (id, volume_id, name, salt, crypt_hash, source_project_id, no_snapshots, created_at) VALUES (",
                    );
                    q.bind(&id).push(", ").bind(&vid).push(", ").bind(name).push(", ").bind(salt).push(", ").bind(crypt);
                    q.push(", ").bind(project).push(", ").bind(no_snapshots).push(", ").bind(now).push(")");
                    q.execute(&mut **tx).await?;
                    Ok::<(), VolError>(())
                })
            })
            .await?;
    }
    let r = fetch(&vol, &id).await?;
    let mut t = view(&vol, ver, &r, collection(&uri), true);
    t["auth_key"] = json!(key);
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": t}))))
}

async fn delete(State(vol): State<S>, Ctx(ctx): Ctx, Path(p): Path<IdPath>) -> VolResult<StatusCode> {
    let r = fetch(&vol, &p.id).await?;
    let owner = sql::s(&r, "source_project_id");
    if !ctx.is_admin() && ctx.project_id.as_deref() != Some(owner.as_str()) {
        return Err(VolError::NotFound(format!("Transfer {} could not be found.", p.id)));
    }
    enforce(&vol.policy, "volume:delete_transfer", &ctx, Some(&owner))?;
    let (tid, vid) = (p.id.clone(), sql::s(&r, "volume_id"));
    vol.db
        .transaction(|tx| {
            let (tid, vid) = (tid.clone(), vid.clone());
            Box::pin(async move {
                let mut q = Query::new("UPDATE volume_transfers SET deleted = 1, deleted_at = ");
                q.bind(stratus_core::time::now()).push(" WHERE id = ").bind(&tid);
                q.execute(&mut **tx).await?;
                let mut q = Query::new(
                    "UPDATE volume_volumes SET status = 'available' WHERE status = 'awaiting-transfer' AND id = ",
                );
                q.bind(&vid);
                q.execute(&mut **tx).await?;
                Ok::<(), VolError>(())
            })
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn accept(
    State(vol): State<S>,
    Ctx(ctx): Ctx,
    ver: ApiVersion,
    uri: Uri,
    Path(p): Path<IdPath>,
    OsJson(b): OsJson<Value>,
) -> VolResult<(StatusCode, Json<Value>)> {
    enforce(&vol.policy, "volume:accept_transfer", &ctx, None)?;
    let m = body::obj(&b, "accept")?;
    let key =
        body::opt_str(m, "auth_key")?.ok_or_else(|| bad("Incorrect request body format: auth_key is required"))?;
    let r = fetch(&vol, &p.id).await?;
    if hash(&sql::s(&r, "salt"), &key) != sql::s(&r, "crypt_hash") {
        return Err(bad(format!("Invalid auth key: Attempt to transfer {} with invalid auth key.", p.id)));
    }
    let dest =
        ctx.project_id.clone().ok_or_else(|| VolError::Forbidden("A project-scoped token is required".into()))?;
    let (tid, vid, user) = (p.id.clone(), sql::s(&r, "volume_id"), ctx.user_id.clone());
    vol.db
        .transaction(|tx| {
            let (vol2, tid, vid, dest, user) = (vol.clone(), tid.clone(), vid.clone(), dest.clone(), user.clone());
            Box::pin(async move {
                let v = volumes::get_tx(tx, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
                if v.status != "awaiting-transfer" {
                    return Err(invalid_volume(format!("Volume {vid} is {}, not awaiting-transfer", v.status)));
                }
                let mut q = Query::new("SELECT COUNT(*) AS n, CAST(COALESCE(SUM(volume_size), 0) AS BIGINT) AS s FROM volume_snapshots WHERE deleted = 0 AND volume_id = ");
                q.bind(&vid);
                let (snaps, snap_gb) = q.fetch_optional(&mut **tx).await?.map(|r| (sql::i(&r, "n"), sql::i(&r, "s"))).unwrap_or((0, 0));
                let t = crate::types::find(&vol2, &v.volume_type_id, false).await?;
                let d = Deltas {
                    volumes: 1,
                    gigabytes: v.size + snap_gb,
                    snapshots: snaps,
                    volume_type: t.map(|t| (t.id, t.name)),
                    per_volume: Some(v.size),
                    ..Default::default()
                };
                quotas::check(&vol2, tx, &dest, &d).await?;
                volumes::set(tx, &vid, &[("status", Arg::from("available")), ("project_id", Arg::from(dest.clone())), ("user_id", Arg::from(user.clone()))])
                    .await?;
                let mut q = Query::new("UPDATE volume_snapshots SET project_id = ");
                q.bind(&dest).push(", user_id = ").bind(&user).push(" WHERE deleted = 0 AND volume_id = ").bind(&vid);
                q.execute(&mut **tx).await?;
                let mut q = Query::new("UPDATE volume_attachments SET project_id = ");
                q.bind(&dest).push(" WHERE volume_id = ").bind(&vid);
                q.execute(&mut **tx).await?;
                let mut q = Query::new("UPDATE volume_transfers SET deleted = 1, accepted = 1, deleted_at = ");
                q.bind(stratus_core::time::now()).push(", destination_project_id = ").bind(&dest).push(" WHERE id = ").bind(&tid);
                q.execute(&mut **tx).await?;
                Ok(())
            })
        })
        .await?;
    let mut q = Query::new("SELECT * FROM volume_transfers WHERE id = ");
    q.bind(&p.id);
    let r = q.fetch_optional(vol.db.reader()).await?.ok_or_else(|| not_found("Transfer", &p.id))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": view(&vol, ver, &r, collection(&uri), false)}))))
}
