//! `/v3/auth/*`: issuing, validating and revoking tokens, and what a token may see.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stratus_auth::Ctx;
use stratus_core::{ApiError, QueryPairs};
use stratus_db::sqlx::Row;

use crate::error::{IdentityError, Result};
use crate::fernet::{new_audit_id, Payload, Scope, METHODS};
use crate::model::User;
use crate::revocation::Event;
use crate::state::{now_micros, text_to_micros, Identity, Validated};
use crate::throttle::Attempt;

/// `POST /v3/auth/tokens` (no token needed).
pub fn public_routes() -> Router<Arc<Identity>> {
    Router::new().route("/v3/auth/tokens", post(issue))
}

/// Routes that need a token.
pub fn routes() -> Router<Arc<Identity>> {
    Router::new()
        .route("/v3/auth/tokens", get(validate).head(check).delete(revoke))
        .route("/v3/auth/catalog", get(auth_catalog))
        .route("/v3/auth/projects", get(auth_projects))
        .route("/v3/auth/domains", get(auth_domains))
        .route("/v3/auth/system", get(auth_system))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// The result of the identity part of an auth request.
struct Authenticated {
    user_id: String,
    methods: u8,
    parent_audit_id: Option<[u8; 16]>,
    expires_cap: Option<i64>,
    app_cred: Option<(String, String)>,
    /// Scope of the token used with the `token` method (re-used when none is asked).
    token_scope: Option<Scope>,
}

async fn issue(
    State(id): State<Arc<Identity>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    q: QueryPairs,
    stratus_core::OsJson(body): stratus_core::OsJson<Value>,
) -> Result<Response, ApiError> {
    let auth = body.get("auth").ok_or_else(|| IdentityError::invalid("'auth' is a required property"))?;
    let ident = auth.get("identity").ok_or_else(|| IdentityError::invalid("'identity' is a required property"))?;
    let methods: Vec<String> = ident
        .get("methods")
        .and_then(Value::as_array)
        .ok_or_else(|| IdentityError::invalid("'methods' is a required property"))?
        .iter()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    if methods.is_empty() {
        return Err(IdentityError::invalid("'methods' must name at least one method").into());
    }
    let source = peer.map(|axum::Extension(axum::extract::ConnectInfo(addr))| addr.ip());
    let mut a: Option<Authenticated> = None;
    for m in &methods {
        let next = match m.as_str() {
            "password" => password_method(&id, source, ident.get("password")).await?,
            "token" => token_method(&id, ident.get("token")).await?,
            "application_credential" => app_cred_method(&id, source, ident.get("application_credential")).await?,
            other => {
                return Err(IdentityError::Unauthorized(format!(
                    "Attempted to authenticate with an unsupported method: {other}"
                ))
                .into())
            }
        };
        if let Some(prev) = &a {
            if prev.user_id != next.user_id {
                return Err(IdentityError::Unauthorized("Methods authenticated different users.".into()).into());
            }
        }
        a = Some(match a {
            None => next,
            Some(prev) => Authenticated { methods: prev.methods | next.methods, ..next },
        });
    }
    let a = a.ok_or_else(IdentityError::auth_failed)?;

    // Scope: a trust (OS-TRUST) or a project, domain or the system.
    let trust_ref = auth.get("scope").and_then(|s| s.get("OS-TRUST:trust"));
    let (scope, user_id, trust_id) = match (trust_ref, auth.get("scope")) {
        (Some(tr), _) => {
            let (scope, user) = trust_scope(&id, &a, tr).await?;
            (scope, user, tr.get("id").and_then(Value::as_str).map(str::to_string))
        }
        (None, Some(s)) => (parse_scope(&id, s).await?, a.user_id.clone(), None),
        (None, None) => {
            let scope = match (&a.app_cred, &a.token_scope) {
                (Some((_, project)), _) => Scope::Project(project.clone()),
                (None, Some(ts)) => ts.clone(),
                (None, None) => default_scope(&id, &a.user_id).await?,
            };
            (scope, a.user_id.clone(), None)
        }
    };
    if let Some((_, project)) = &a.app_cred {
        if scope != Scope::Project(project.clone()) {
            return Err(IdentityError::Unauthorized("Application credentials cannot request a scope.".into()).into());
        }
    }
    let view = id
        .view(&user_id, &scope, a.app_cred.as_ref().map(|x| x.0.as_str()), trust_id.as_deref())
        .await
        .map_err(|_| IdentityError::auth_failed())?;
    if scope != Scope::Unscoped && view.roles.is_empty() {
        let what = match &scope {
            Scope::Project(p) => format!("project {p}"),
            Scope::Domain(d) => format!("domain {d}"),
            _ => "the system".into(),
        };
        return Err(IdentityError::Unauthorized(format!("User {} has no access to {what}.", a.user_id)).into());
    }
    if let Some(t) = &view.trust {
        crate::trusts::consume(&id, t).await?;
    }
    let now = now_micros();
    let mut expires = now + id.cfg.token_expiration_secs as i64 * 1_000_000;
    if let Some(cap) = a.expires_cap {
        expires = expires.min(cap);
    }
    let payload = Payload {
        methods: a.methods,
        user_id,
        scope,
        issued_at: now,
        expires_at: expires,
        audit_id: new_audit_id(),
        parent_audit_id: a.parent_audit_id,
        app_cred_id: a.app_cred.map(|x| x.0),
        trust_id,
    };
    let token = id.encrypt(&payload);
    let v = Validated { token: token.clone(), payload, view };
    let nocatalog = q.has("nocatalog");
    let body = id.token_response(&v, !nocatalog).await?;
    Ok(with_subject(StatusCode::CREATED, &token, Some(body.into())))
}

fn with_subject(status: StatusCode, token: &str, body: Option<bytes::Bytes>) -> Response {
    let mut r = match body {
        Some(b) => (status, [(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response(),
        None => status.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(token) {
        r.headers_mut().insert("x-subject-token", v);
    }
    r
}

async fn resolve_user(id: &Identity, u: &Value) -> Result<Option<User>> {
    if let Some(uid) = u.get("id").and_then(Value::as_str) {
        return id.get_user(uid).await;
    }
    let name =
        u.get("name").and_then(Value::as_str).ok_or_else(|| IdentityError::invalid("User requires an id or a name"))?;
    let d = u.get("domain").ok_or_else(|| IdentityError::invalid("A user name requires a domain"))?;
    let domain = if let Some(did) = d.get("id").and_then(Value::as_str) {
        id.get_domain(did).await?
    } else if let Some(dn) = d.get("name").and_then(Value::as_str) {
        id.find_domain(dn).await?
    } else {
        return Err(IdentityError::invalid("A domain requires an id or a name"));
    };
    match domain {
        Some(d) => id.find_user(&d.id, name).await,
        None => Ok(None),
    }
}

/// The account a failed attempt is charged to: the user's id when it resolved, else the
/// name and domain as given (so guessing names is throttled too).
fn account_key(user: Option<&User>, given: &Value) -> String {
    match user {
        Some(u) => u.id.clone(),
        None => {
            format!("{}@{}", given.get("name").unwrap_or(&Value::Null), given.get("domain").unwrap_or(&Value::Null))
        }
    }
}

/// Refuses the attempt with 429 when its source or account has failed too often.
fn admit(id: &Identity, attempt: Attempt<'_>) -> Result<()> {
    match id.throttle.check(attempt) {
        Some(retry_after_secs) => Err(IdentityError::TooManyAttempts { retry_after_secs }),
        None => Ok(()),
    }
}

async fn password_method(
    id: &Identity,
    source: Option<std::net::IpAddr>,
    section: Option<&Value>,
) -> Result<Authenticated> {
    let u =
        section.and_then(|s| s.get("user")).ok_or_else(|| IdentityError::invalid("'user' is a required property"))?;
    let pw = u
        .get("password")
        .and_then(Value::as_str)
        .ok_or_else(|| IdentityError::invalid("'password' is a required property"))?;
    let user = resolve_user(id, u).await?;
    let account = account_key(user.as_ref(), u);
    let attempt = Attempt { source, account: &account };
    admit(id, attempt)?;
    let Some(user) = user else {
        id.hasher.verify(pw.to_string(), None).await?;
        id.throttle.failed(attempt);
        return Err(IdentityError::auth_failed());
    };
    let lockout = id.cfg.lockout_failure_attempts > 0 && !user.option("ignore_lockout_failure_attempts");
    if lockout && user.failed_auth_count >= id.cfg.lockout_failure_attempts as i64 {
        let last = user.last_failed_auth.as_deref().and_then(text_to_micros).unwrap_or(0);
        let until = last.saturating_add(id.cfg.lockout_duration_secs as i64 * 1_000_000);
        if id.cfg.lockout_duration_secs == 0 || now_micros() < until {
            return Err(IdentityError::Unauthorized(format!("The account is locked for user: {}.", user.id)));
        }
    }
    let ok = id.hasher.verify(pw.to_string(), user.password_hash.clone()).await?;
    if !ok {
        id.throttle.failed(attempt);
        if lockout {
            let mut q = stratus_db::Query::new(
                "UPDATE identity_users SET failed_auth_count = failed_auth_count + 1, last_failed_auth = ",
            );
            q.bind(stratus_core::time::now()).push_bind(" WHERE id = ", &user.id);
            id.exec(vec![q]).await?;
        }
        return Err(IdentityError::auth_failed());
    }
    if !user.enabled {
        return Err(IdentityError::auth_failed());
    }
    let mut writes: Vec<stratus_db::Query> = crate::compliance::check_login(id, &user).await?.into_iter().collect();
    if user.failed_auth_count > 0 {
        let mut q = stratus_db::Query::new(
            "UPDATE identity_users SET failed_auth_count = 0, last_failed_auth = NULL WHERE id = ",
        );
        q.bind(&user.id);
        writes.push(q);
    }
    if !writes.is_empty() {
        id.exec(writes).await?;
    }
    Ok(Authenticated {
        user_id: user.id,
        methods: 1,
        parent_audit_id: None,
        expires_cap: None,
        app_cred: None,
        token_scope: None,
    })
}

async fn token_method(id: &Identity, section: Option<&Value>) -> Result<Authenticated> {
    let t = section
        .and_then(|s| s.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| IdentityError::invalid("'id' is a required property"))?;
    // As Keystone: a token that no longer validates (revoked, expired, its user's
    // password changed) is not found (404), not an authentication failure.
    let v = id.validate(t).await.map_err(|e| match e {
        IdentityError::Db(d) => IdentityError::Db(d),
        _ => IdentityError::not_found("token", "the token given to the token method"),
    })?;
    if v.payload.app_cred_id.is_some() {
        return Err(IdentityError::Forbidden(
            "A token created with an application credential cannot be rescoped.".into(),
        ));
    }
    if v.payload.trust_id.is_some() {
        return Err(IdentityError::Forbidden("A trust-scoped token cannot be rescoped.".into()));
    }
    Ok(Authenticated {
        user_id: v.payload.user_id.clone(),
        methods: v.payload.methods | METHODS[1].1,
        parent_audit_id: Some(v.payload.parent_audit_id.unwrap_or(v.payload.audit_id)),
        expires_cap: Some(v.payload.expires_at),
        app_cred: None,
        token_scope: Some(v.payload.scope.clone()),
    })
}

async fn app_cred_method(
    id: &Identity,
    source: Option<std::net::IpAddr>,
    section: Option<&Value>,
) -> Result<Authenticated> {
    let s = section.ok_or_else(|| IdentityError::invalid("'application_credential' is a required property"))?;
    let secret = s
        .get("secret")
        .and_then(Value::as_str)
        .ok_or_else(|| IdentityError::invalid("'secret' is a required property"))?;
    let row = if let Some(acid) = s.get("id").and_then(Value::as_str) {
        stratus_db::sqlx::query(
            "SELECT id, user_id, secret_hash, project_id, expires_at FROM identity_app_creds WHERE id = $1",
        )
        .bind(acid)
        .fetch_optional(id.platform.db.reader())
        .await?
    } else {
        let name = s
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| IdentityError::invalid("An application credential requires an id or a name"))?;
        let u =
            s.get("user").ok_or_else(|| IdentityError::invalid("An application credential name requires a user"))?;
        match resolve_user(id, u).await? {
            Some(user) => {
                stratus_db::sqlx::query("SELECT id, user_id, secret_hash, project_id, expires_at FROM identity_app_creds WHERE user_id = $1 AND name = $2")
                    .bind(&user.id)
                    .bind(name)
                    .fetch_optional(id.platform.db.reader())
                    .await?
            }
            None => None,
        }
    };
    let account = match &row {
        Some(r) => r.try_get::<String, _>("id")?,
        None => format!("app-cred:{}", s.get("id").or_else(|| s.get("name")).unwrap_or(&Value::Null)),
    };
    let attempt = Attempt { source, account: &account };
    admit(id, attempt)?;
    let Some(row) = row else {
        id.hasher.verify(secret.to_string(), None).await?;
        id.throttle.failed(attempt);
        return Err(IdentityError::auth_failed());
    };
    let hash: String = row.try_get("secret_hash")?;
    if !id.hasher.verify(secret.to_string(), Some(hash)).await? {
        id.throttle.failed(attempt);
        return Err(IdentityError::auth_failed());
    }
    let expires: Option<String> = row.try_get("expires_at")?;
    let cap = expires.as_deref().and_then(text_to_micros);
    if cap.is_some_and(|c| c <= now_micros()) {
        return Err(IdentityError::auth_failed());
    }
    Ok(Authenticated {
        user_id: row.try_get("user_id")?,
        methods: METHODS[2].1,
        parent_audit_id: None,
        expires_cap: cap,
        app_cred: Some((row.try_get("id")?, row.try_get("project_id")?)),
        token_scope: None,
    })
}

async fn parse_scope(id: &Identity, s: &Value) -> Result<Scope> {
    if s.as_str() == Some("unscoped") || s.get("unscoped").is_some() {
        return Ok(Scope::Unscoped);
    }
    if let Some(p) = s.get("project") {
        if let Some(pid) = p.get("id").and_then(Value::as_str) {
            return match id.get_project(pid).await? {
                Some(p) => Ok(Scope::Project(p.id)),
                None => Err(IdentityError::auth_failed()),
            };
        }
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| IdentityError::invalid("A project scope requires an id or a name"))?;
        let d = p.get("domain").ok_or_else(|| IdentityError::invalid("A project name requires a domain"))?;
        let domain = if let Some(did) = str_at(d, &["id"]) {
            id.get_domain(did).await?
        } else if let Some(dn) = str_at(d, &["name"]) {
            id.find_domain(dn).await?
        } else {
            return Err(IdentityError::invalid("A domain requires an id or a name"));
        };
        let Some(domain) = domain else { return Err(IdentityError::auth_failed()) };
        return match id.find_project(&domain.id, name).await? {
            Some(p) => Ok(Scope::Project(p.id)),
            None => Err(IdentityError::auth_failed()),
        };
    }
    if let Some(d) = s.get("domain") {
        let domain = if let Some(did) = str_at(d, &["id"]) {
            id.get_domain(did).await?
        } else if let Some(dn) = str_at(d, &["name"]) {
            id.find_domain(dn).await?
        } else {
            return Err(IdentityError::invalid("A domain requires an id or a name"));
        };
        return domain.map(|d| Scope::Domain(d.id)).ok_or_else(IdentityError::auth_failed);
    }
    if let Some(sys) = s.get("system") {
        if sys.get("all").and_then(Value::as_bool) == Some(true) {
            return Ok(Scope::System);
        }
        return Err(IdentityError::invalid("Only system scope {\"all\": true} exists"));
    }
    Err(IdentityError::invalid("Unknown scope"))
}

/// A trust scope: the authenticated user must be the trust's trustee; the token acts on
/// the trust's project as the trustor (impersonation) or the trustee. Returns the scope
/// and the token's user.
async fn trust_scope(id: &Identity, a: &Authenticated, tr: &Value) -> Result<(Scope, String)> {
    if a.app_cred.is_some() {
        return Err(IdentityError::Forbidden("An application credential cannot use a trust.".into()));
    }
    let tid =
        tr.get("id").and_then(Value::as_str).ok_or_else(|| IdentityError::invalid("A trust scope needs an id"))?;
    let t = crate::trusts::get_trust(id, tid).await?.ok_or_else(|| IdentityError::not_found("trust", tid))?;
    if t.trustee_user_id != a.user_id {
        return Err(IdentityError::Forbidden("The authenticated user is not the trust's trustee.".into()));
    }
    let project = t
        .project_id
        .clone()
        .ok_or_else(|| IdentityError::Forbidden("This trust delegates no project to scope to.".into()))?;
    let user = if t.impersonation { t.trustor_user_id.clone() } else { t.trustee_user_id.clone() };
    Ok((Scope::Project(project), user))
}

/// No scope asked: the user's default project if they have a role there, else unscoped.
async fn default_scope(id: &Identity, user_id: &str) -> Result<Scope> {
    let Some(user) = id.get_user(user_id).await? else { return Ok(Scope::Unscoped) };
    if let Some(p) = user.default_project_id {
        let scope = Scope::Project(p.clone());
        if let Ok(v) = id.view(user_id, &scope, None, None).await {
            if !v.roles.is_empty() {
                return Ok(scope);
            }
        }
    }
    Ok(Scope::Unscoped)
}

fn subject(headers: &HeaderMap) -> Result<&str> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IdentityError::invalid("X-Subject-Token header is required"))
}

async fn subject_token(id: &Identity, ctx: &Ctx, headers: &HeaderMap, action: &str) -> Result<Validated, ApiError> {
    let t = subject(headers)?;
    let v = id.validate(t).await.map_err(|_| IdentityError::not_found("token", "the subject token"))?;
    id.policy.enforce(action, ctx, &json!({"target": {"token": {"user_id": v.payload.user_id}}}))?;
    Ok(v)
}

async fn validate(
    State(id): State<Arc<Identity>>,
    ctx: Ctx,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let v = subject_token(&id, &ctx, &headers, "identity:validate_token").await?;
    let body = id.cached_response(&v, !q.has("nocatalog")).await?;
    Ok(with_subject(StatusCode::OK, &v.token, Some(body)))
}

async fn check(State(id): State<Arc<Identity>>, ctx: Ctx, headers: HeaderMap) -> Result<Response, ApiError> {
    let v = subject_token(&id, &ctx, &headers, "identity:check_token").await?;
    Ok(with_subject(StatusCode::OK, &v.token, None))
}

async fn revoke(State(id): State<Arc<Identity>>, ctx: Ctx, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let v = subject_token(&id, &ctx, &headers, "identity:revoke_token").await?;
    id.revoke(Event {
        audit_id: Some(crate::fernet::audit_text(&v.payload.audit_id)),
        issued_before: v.payload.issued_at,
        ..Default::default()
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn auth_catalog(State(id): State<Arc<Identity>>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_auth_catalog", &ctx, &json!({}))?;
    if ctx.project_id.is_none() && ctx.domain_id.is_none() && !ctx.system_scope {
        return Err(IdentityError::Forbidden("An unscoped token has no catalog.".into()).into());
    }
    let catalog = id.catalog_json(ctx.project_id.as_deref()).await?;
    Ok(Json(
        json!({"catalog": catalog, "links": {"self": format!("{}/v3/auth/catalog", id.base), "previous": null, "next": null}}),
    ))
}

async fn auth_projects(State(id): State<Arc<Identity>>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_auth_projects", &ctx, &json!({}))?;
    let projects = crate::projects::projects_of_user(&id, &ctx.user_id).await?;
    let list: Vec<Value> = projects.iter().filter(|p| p.enabled).map(|p| p.json(&id.base)).collect();
    Ok(Json(
        json!({"projects": list, "links": {"self": format!("{}/v3/auth/projects", id.base), "previous": null, "next": null}}),
    ))
}

async fn auth_domains(State(id): State<Arc<Identity>>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_auth_domains", &ctx, &json!({}))?;
    let groups = id.user_group_ids(&ctx.user_id).await?;
    let mut q = stratus_db::Query::new("SELECT DISTINCT target_id FROM identity_assignments WHERE target_type = 'domain' AND inherited = 0 AND ((actor_type = 'user' AND actor_id = ");
    q.bind(&ctx.user_id).push(")");
    if !groups.is_empty() {
        q.push(" OR (actor_type = 'group' AND ").push_in("actor_id", groups.iter()).push(")");
    }
    q.push(")");
    let rows = q.fetch_all(id.platform.db.reader()).await.map_err(IdentityError::from)?;
    let mut list = Vec::new();
    for r in rows {
        let did: String = r.try_get("target_id").map_err(IdentityError::from)?;
        if let Some(d) = id.get_domain(&did).await? {
            if d.enabled {
                list.push(d.json(&id.base));
            }
        }
    }
    Ok(Json(
        json!({"domains": list, "links": {"self": format!("{}/v3/auth/domains", id.base), "previous": null, "next": null}}),
    ))
}

async fn auth_system(State(id): State<Arc<Identity>>, ctx: Ctx) -> Result<Json<Value>, ApiError> {
    id.policy.enforce("identity:get_auth_system", &ctx, &json!({}))?;
    let roles = id.effective_roles(&ctx.user_id, &Scope::System, None).await?;
    let system: Vec<Value> = if roles.is_empty() { vec![] } else { vec![json!({"all": true})] };
    Ok(Json(
        json!({"system": system, "links": {"self": format!("{}/v3/auth/system", id.base), "previous": null, "next": null}}),
    ))
}
