//! Keypairs: per-user SSH (or x509) public keys, generated server-side (ed25519, private
//! key returned once and never stored) or imported.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, ApiVersion, OsJson, QueryPairs, RequestContext};
use stratus_db::sqlx::Row;
use stratus_db::{Db, Query};

use crate::error::{ComputeError, Result};
use crate::AppState;

/// Routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-keypairs", get(list).post(create))
        .route("/v2.1/os-keypairs/{name}", get(show).delete(delete))
}

/// A stored keypair.
#[derive(Debug, Clone)]
pub struct Keypair {
    pub user_id: String,
    pub name: String,
    pub key_type: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: String,
}

impl Keypair {
    fn from_row(r: &stratus_db::sqlx::any::AnyRow) -> Result<Self> {
        Ok(Keypair {
            user_id: r.try_get("user_id")?,
            name: r.try_get("name")?,
            key_type: r.try_get("key_type")?,
            public_key: r.try_get("public_key")?,
            fingerprint: r.try_get("fingerprint")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// Nova's fingerprint: MD5 of the key blob, colon-separated hex.
pub fn fingerprint(key_type: &str, public_key: &str) -> Result<String> {
    let invalid = || ComputeError::BadRequest("Keypair data is invalid: failed to generate fingerprint".into());
    let blob = if key_type == "x509" {
        let body: String = public_key.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().concat();
        base64::engine::general_purpose::STANDARD.decode(body.trim()).map_err(|_| invalid())?
    } else {
        let mut parts = public_key.split_whitespace();
        let algo = parts.next().ok_or_else(invalid)?;
        if !(algo.starts_with("ssh-") || algo.starts_with("ecdsa-sha2-") || algo.starts_with("sk-")) {
            return Err(invalid());
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(parts.next().ok_or_else(invalid)?)
            .map_err(|_| invalid())?;
        // The blob starts with the algorithm name as an SSH string.
        if blob.len() < 4 {
            return Err(invalid());
        }
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if blob.get(4..4 + n) != Some(algo.as_bytes()) {
            return Err(invalid());
        }
        blob
    };
    if blob.is_empty() {
        return Err(invalid());
    }
    let d = Md5::digest(&blob);
    Ok(d.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// Generates an ed25519 keypair with OpenSSH's own tool (its private key format is the
/// one every SSH client reads). Returns (private, public).
async fn generate(name: &str) -> Result<(String, String)> {
    let dir = std::env::temp_dir().join(format!("stratus-keygen-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| ComputeError::Unavailable(format!("cannot generate a key: {e}")))?;
    let path = dir.join("key");
    let out = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("Generated-by-Stratus {name}"))
        .arg("-f")
        .arg(&path)
        .output()
        .await;
    let result = match out {
        Ok(o) if o.status.success() => {
            let private = std::fs::read_to_string(&path);
            let public = std::fs::read_to_string(path.with_extension("pub"));
            match (private, public) {
                (Ok(a), Ok(b)) => Ok((a, b.trim().to_string())),
                _ => Err(ComputeError::Unavailable("ssh-keygen produced no key".into())),
            }
        }
        Ok(o) => Err(ComputeError::Unavailable(format!("ssh-keygen failed: {}", String::from_utf8_lossy(&o.stderr)))),
        Err(e) => Err(ComputeError::Unavailable(format!(
            "cannot generate a key (is ssh-keygen installed?): {e}; import a public key instead"
        ))),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Generates an RSA key and a self-signed X.509 certificate for it with the `openssl`
/// tool (as Nova does for `type: x509` without a public key). Returns (private key PEM,
/// certificate PEM).
async fn generate_x509(user: &str) -> Result<(String, String)> {
    let dir = std::env::temp_dir().join(format!("stratus-x509-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ComputeError::Unavailable(format!("cannot generate a certificate: {e}")))?;
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    // The subject names the user; anything but [A-Za-z0-9-] would need escaping.
    let cn: String = user.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    let out = tokio::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj"])
        .arg(format!("/O=Stratus/OU=Keypairs/CN={}", if cn.is_empty() { "keypair" } else { &cn }))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await;
    let result = match out {
        Ok(o) if o.status.success() => match (std::fs::read_to_string(&key), std::fs::read_to_string(&cert)) {
            (Ok(k), Ok(c)) => Ok((k, c.trim().to_string())),
            _ => Err(ComputeError::Unavailable("openssl produced no certificate".into())),
        },
        Ok(o) => Err(ComputeError::Unavailable(format!("openssl failed: {}", String::from_utf8_lossy(&o.stderr)))),
        Err(e) => Err(ComputeError::Unavailable(format!(
            "cannot generate a certificate (is openssl installed?): {e}; import one as public_key instead"
        ))),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn view(k: &Keypair, v: ApiVersion, full: bool) -> Value {
    let mut o = json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint});
    if v.at_least(2, 2) {
        o["type"] = json!(k.key_type);
    }
    if full {
        o["user_id"] = json!(k.user_id);
        o["created_at"] = json!(stratus_core::time::seconds_z(&k.created_at));
        o["deleted"] = json!(false);
        o["deleted_at"] = Value::Null;
        o["updated_at"] = Value::Null;
        o["id"] = json!(0);
    }
    o
}

/// The user whose keypairs a request concerns (`user_id` is admin-only, 2.10+).
fn target_user(ctx: &RequestContext, v: ApiVersion, requested: Option<&str>) -> String {
    match requested {
        Some(u) if v.at_least(2, 10) => u.to_string(),
        _ => ctx.user_id.clone(),
    }
}

/// Looks a keypair up for server create (owned by `user_id`).
pub async fn get_keypair(db: &Db, user_id: &str, name: &str) -> Result<Option<Keypair>> {
    let r = Query::new("SELECT * FROM compute_keypairs WHERE user_id = ")
        .bind(user_id)
        .push_bind(" AND name = ", name)
        .fetch_optional(db.reader())
        .await?;
    r.map(|r| Keypair::from_row(&r)).transpose()
}

async fn list(State(st): State<AppState>, ctx: Ctx, v: ApiVersion, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let user = target_user(&ctx, v, q.get("user_id"));
    st.policy.enforce("os_compute_api:os-keypairs:index", &ctx, &json!({"user_id": user}))?;
    let mut sql = Query::new("SELECT * FROM compute_keypairs WHERE user_id = ");
    sql.bind(&user);
    if v.at_least(2, 35) {
        if let Some(m) = q.get("marker") {
            if get_keypair(&st.platform.db, &user, m).await?.is_none() {
                return Err(ComputeError::BadRequest(format!("marker [{m}] not found")).into());
            }
            sql.push_bind(" AND name > ", m);
        }
    }
    sql.push(" ORDER BY name");
    let limit = if v.at_least(2, 35) { q.int("limit")? } else { None };
    if let Some(l) = limit {
        if l < 0 {
            return Err(ComputeError::BadRequest("limit must be >= 0".into()).into());
        }
        sql.push_bind(" LIMIT ", l + 1);
    }
    let rows = sql.fetch_all(st.platform.db.reader()).await?;
    let mut kps = Vec::new();
    for r in &rows {
        kps.push(Keypair::from_row(r)?);
    }
    let more = limit.is_some_and(|l| kps.len() as i64 > l);
    if let Some(l) = limit {
        kps.truncate(l as usize);
    }
    let mut body = json!({"keypairs": kps.iter().map(|k| json!({"keypair": view(k, v, false)})).collect::<Vec<_>>()});
    if let (true, Some(last)) = (more, kps.last()) {
        let base = st.platform.service_url("/compute");
        body["keypairs_links"] = json!([{"rel": "next", "href": stratus_core::pagination::next_href(&base, "/v2.1/os-keypairs", &q, &last.name)}]);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
struct CreateBody {
    keypair: CreateKeypair,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeypair {
    name: String,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default, rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

/// Most keypairs per user (Nova's default `key_pairs` quota).
const KEYPAIR_QUOTA: i64 = 100;

async fn create(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    OsJson(b): OsJson<CreateBody>,
) -> Result<Response, ApiError> {
    let c = b.keypair;
    let user = target_user(&ctx, v, c.user_id.as_deref());
    st.policy.enforce("os_compute_api:os-keypairs:create", &ctx, &json!({"user_id": user}))?;
    let name = c.name.trim().to_string();
    let valid_chars = |n: &str| n.chars().all(|ch| ch.is_ascii_alphanumeric() || " _-.@".contains(ch));
    if name.is_empty() || name.len() > 255 || (!v.at_least(2, 92) && !valid_chars(&name)) {
        return Err(ComputeError::BadRequest(
            "Keypair data is invalid: Keypair name contains unsafe characters or is not 1-255 characters".into(),
        )
        .into());
    }
    let key_type = match c.key_type.as_deref() {
        None => "ssh".to_string(),
        Some(t @ ("ssh" | "x509")) if v.at_least(2, 2) => t.to_string(),
        Some(t) => return Err(ComputeError::BadRequest(format!("Invalid keypair type {t:?}: use ssh or x509")).into()),
    };
    let (public_key, private_key) = match c.public_key {
        Some(p) => (p.trim().to_string(), None),
        None if v.at_least(2, 92) => {
            return Err(ComputeError::BadRequest("public_key is required from microversion 2.92".into()).into())
        }
        None if key_type == "x509" => {
            let (private, cert) = generate_x509(&user).await?;
            (cert, Some(private))
        }
        None => {
            let (private, public) = generate(&name).await?;
            (public, Some(private))
        }
    };
    let fp = fingerprint(&key_type, &public_key)?;
    let kp = Keypair {
        user_id: user.clone(),
        name: name.clone(),
        key_type,
        public_key,
        fingerprint: fp,
        created_at: stratus_core::time::now(),
    };
    let k2 = kp.clone();
    st.platform
        .db
        .transaction(|tx| {
            let k = k2.clone();
            Box::pin(async move {
                let count: i64 = Query::new("SELECT COUNT(*) AS n FROM compute_keypairs WHERE user_id = ")
                    .bind(&k.user_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.try_get::<i64, _>("n"))
                    .transpose()?
                    .unwrap_or(0);
                if count >= KEYPAIR_QUOTA {
                    return Err(ComputeError::QuotaExceeded {
                        resource: "key_pairs".into(),
                        requested: 1,
                        used: count,
                        allowed: KEYPAIR_QUOTA,
                    });
                }
                let exists = Query::new("SELECT 1 FROM compute_keypairs WHERE user_id = ")
                    .bind(&k.user_id)
                    .push_bind(" AND name = ", &k.name)
                    .fetch_optional(&mut **tx)
                    .await?;
                if exists.is_some() {
                    return Err(ComputeError::Conflict(format!("Key pair '{}' already exists.", k.name)));
                }
                let mut q = Query::new(
                    "INSERT INTO compute_keypairs (user_id, name, key_type, public_key, fingerprint, created_at) VALUES (",
                );
                q.bind(&k.user_id).push(", ").bind(&k.name).push(", ").bind(&k.key_type).push(", ");
                q.bind(&k.public_key).push(", ").bind(&k.fingerprint).push(", ").bind(&k.created_at).push(")");
                q.execute(&mut **tx).await?;
                Ok(())
            })
        })
        .await?;
    let mut o = view(&kp, v, false);
    o["user_id"] = json!(kp.user_id);
    if let Some(p) = private_key {
        o["private_key"] = json!(p);
    }
    let status = if v.at_least(2, 2) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"keypair": o}))).into_response())
}

async fn show(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(&ctx, v, q.get("user_id"));
    st.policy.enforce("os_compute_api:os-keypairs:show", &ctx, &json!({"user_id": user}))?;
    let k = get_keypair(&st.platform.db, &user, &name)
        .await?
        .ok_or_else(|| ComputeError::NotFound(format!("Keypair {name} not found for user {user}")))?;
    Ok(Json(json!({"keypair": view(&k, v, true)})))
}

async fn delete(
    State(st): State<AppState>,
    ctx: Ctx,
    v: ApiVersion,
    q: QueryPairs,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = target_user(&ctx, v, q.get("user_id"));
    st.policy.enforce("os_compute_api:os-keypairs:delete", &ctx, &json!({"user_id": user}))?;
    let n = st
        .platform
        .db
        .transaction(|tx| {
            let (u, n) = (user.clone(), name.clone());
            Box::pin(async move {
                Query::new("DELETE FROM compute_keypairs WHERE user_id = ")
                    .bind(&u)
                    .push_bind(" AND name = ", &n)
                    .execute(&mut **tx)
                    .await
            })
        })
        .await?;
    if n == 0 {
        return Err(ComputeError::NotFound(format!("Keypair {name} not found for user {user}")).into());
    }
    Ok(if v.at_least(2, 2) { StatusCode::NO_CONTENT } else { StatusCode::ACCEPTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_keys_have_nova_fingerprints() {
        let (private, public) = generate("t").await.unwrap();
        assert!(private.contains("BEGIN OPENSSH PRIVATE KEY"));
        assert!(public.starts_with("ssh-ed25519 "));
        let fp = fingerprint("ssh", &public).unwrap();
        assert_eq!(fp.len(), 47);
        assert!(fingerprint("ssh", "ssh-rsa not-base64!").is_err());
        assert!(fingerprint("ssh", "hello world").is_err());
    }
}
