//! The metadata store: accounts, containers and object rows in SQL.
//!
//! An object row is what makes an object visible; it is written only after its bytes are
//! durable in the backend, in the same transaction that updates its container's object
//! count and bytes used, so listings, counters and reads always agree. Listings are range
//! scans on the primary key (`prefix` becomes `name >= prefix AND name < next(prefix)`),
//! with `delimiter` handled by skipping past each common prefix, so a page of 1,000 out
//! of millions costs one index range read, not a scan. Expired rows (`delete_at` in the
//! past) are invisible to every query here and reaped in the background.

use std::collections::BTreeMap;

use stratus_db::sqlx::Row;
use stratus_db::{Arg, Db, Query, Tx};

use crate::error::{Result, SwiftError};
use crate::meta::{self, Meta};

/// Current time as Swift's listing timestamp (`2026-12-07T06:40:00.123456`, UTC).
pub fn now_stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `X-Timestamp` (`1765089600.12345`) of a listing timestamp.
pub fn x_timestamp(stamp: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.f") {
        Ok(t) => {
            let t = t.and_utc();
            format!("{}.{:05}", t.timestamp(), t.timestamp_subsec_micros() / 10)
        }
        Err(_) => "0.00000".into(),
    }
}

/// HTTP date (`Last-Modified`) of a listing timestamp, rounded up to the next second as
/// Swift does (so `If-Modified-Since: <Last-Modified>` matches).
pub fn http_date(stamp: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.f") {
        Ok(t) => {
            let t = t.and_utc();
            let secs = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
            chrono::DateTime::from_timestamp(secs, 0)
                .map(|d| d.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                .unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// An account's row plus its totals.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// `AUTH_<project>`.
    pub name: String,
    /// Creation time (listing format).
    pub created_at: String,
    /// Metadata.
    pub meta: Meta,
    /// Containers.
    pub containers: i64,
    /// Objects in all containers.
    pub objects: i64,
    /// Bytes in all containers.
    pub bytes: i64,
}

/// A container row.
#[derive(Debug, Clone, Default)]
pub struct Container {
    /// Account.
    pub account: String,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_at: String,
    /// Last change of the container or its objects.
    pub modified_at: String,
    /// Storage policy name.
    pub policy: String,
    /// Metadata, ACLs, versioning locations.
    pub meta: Meta,
    /// Objects.
    pub object_count: i64,
    /// Bytes.
    pub bytes_used: i64,
}

/// What an object row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjKind {
    /// Bytes of its own.
    #[default]
    Plain,
    /// Static large object: the blob holds the JSON manifest.
    Slo,
    /// Dynamic large object: `X-Object-Manifest` names the segments' prefix.
    Dlo,
    /// Symlink: `x-symlink-target` in the metadata, no bytes.
    Symlink,
}

impl ObjKind {
    fn as_str(self) -> &'static str {
        match self {
            ObjKind::Plain => "plain",
            ObjKind::Slo => "slo",
            ObjKind::Dlo => "dlo",
            ObjKind::Symlink => "symlink",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "slo" => ObjKind::Slo,
            "dlo" => ObjKind::Dlo,
            "symlink" => ObjKind::Symlink,
            _ => ObjKind::Plain,
        }
    }
}

/// An object row.
#[derive(Debug, Clone, Default)]
pub struct Object {
    /// Account.
    pub account: String,
    /// Container.
    pub container: String,
    /// Name.
    pub name: String,
    /// Size clients see (for an SLO, the sum of its segments).
    pub size: i64,
    /// ETag clients see (MD5 of the bytes; for an SLO, MD5 of the segments' ETags).
    pub etag: String,
    /// Content type.
    pub content_type: String,
    /// Last modification (listing format).
    pub modified_at: String,
    /// Metadata and the stored system headers.
    pub meta: Meta,
    /// What the row stands for.
    pub kind: ObjKind,
    /// Backend key of the bytes.
    pub blob: Option<String>,
    /// Size of the blob itself (an SLO's manifest).
    pub blob_size: i64,
    /// Expiry (seconds since the epoch).
    pub delete_at: Option<i64>,
}

/// Listing parameters shared by account and container `GET`.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Only names starting with this.
    pub prefix: String,
    /// Roll names up to the first delimiter after the prefix (`subdir` entries).
    pub delimiter: Option<String>,
    /// Only names after this (before, with `reverse`).
    pub marker: String,
    /// Only names before this (after, with `reverse`).
    pub end_marker: String,
    /// Most entries.
    pub limit: usize,
    /// Descending order.
    pub reverse: bool,
    /// `path=`: direct children only, no subdir entries.
    pub path_mode: bool,
}

/// One listing entry.
#[derive(Debug, Clone)]
pub enum Entry<T> {
    /// A row.
    Item(T),
    /// A common prefix under `delimiter`.
    Subdir(String),
}

/// The smallest string greater than every string starting with `s`.
fn bump(s: &str) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(c) = chars.pop() {
        let mut n = c as u32 + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(nc) = char::from_u32(n) {
            chars.push(nc);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Runs a paged, delimiter-aware listing over `base` (a `SELECT ... WHERE ...` without
/// name bounds or ordering), mapping rows with `map`.
async fn list_names<T, F>(db: &Db, base: Query, p: &ListParams, map: F) -> Result<Vec<Entry<T>>>
where
    F: Fn(&stratus_db::sqlx::any::AnyRow) -> (String, T),
{
    // Bounds as (value, inclusive).
    let mut lower: Vec<(String, bool)> = Vec::new();
    let mut upper: Vec<(String, bool)> = Vec::new();
    if !p.prefix.is_empty() {
        lower.push((p.prefix.clone(), true));
        if let Some(b) = bump(&p.prefix) {
            upper.push((b, false));
        }
    }
    let (after, before) = if p.reverse { (&p.end_marker, &p.marker) } else { (&p.marker, &p.end_marker) };
    if !after.is_empty() {
        lower.push((after.clone(), false));
    }
    if !before.is_empty() {
        upper.push((before.clone(), false));
    }
    let mut out = Vec::new();
    let mut guard = 0;
    while out.len() < p.limit {
        guard += 1;
        if guard > p.limit + 2 {
            break;
        }
        let want = p.limit - out.len();
        let mut q = base.clone();
        for (v, inc) in &lower {
            q.push(if *inc { " AND name >= " } else { " AND name > " }).bind(v.as_str());
        }
        for (v, inc) in &upper {
            q.push(if *inc { " AND name <= " } else { " AND name < " }).bind(v.as_str());
        }
        q.push(if p.reverse { " ORDER BY name DESC" } else { " ORDER BY name" });
        q.push_bind(" LIMIT ", want as i64);
        let rows = q.fetch_all(db.reader()).await?;
        let n = rows.len();
        let mut rolled = None;
        for row in &rows {
            let (name, item) = map(row);
            if let Some(d) = p.delimiter.as_deref().filter(|d| !d.is_empty()) {
                let rest = name.get(p.prefix.len()..).unwrap_or("");
                if let Some(i) = rest.find(d) {
                    let sub = name[..p.prefix.len() + i + d.len()].to_string();
                    rolled = Some(sub);
                    break;
                }
            }
            out.push(Entry::Item(item));
        }
        match rolled {
            Some(sub) => {
                // Skip every name under `sub`, then go on.
                if p.reverse {
                    upper.push((sub.clone(), false));
                } else {
                    match bump(&sub) {
                        Some(b) => lower.push((b, true)),
                        None => break,
                    }
                }
                if !p.path_mode {
                    out.push(Entry::Subdir(sub));
                }
            }
            None if n < want => break,
            None => {}
        }
        // Keep the bound list short: only the tightest one matters.
        tighten(&mut lower, true);
        tighten(&mut upper, false);
    }
    Ok(out)
}

fn tighten(bounds: &mut Vec<(String, bool)>, lower: bool) {
    if bounds.len() <= 1 {
        return;
    }
    let best = bounds
        .iter()
        .cloned()
        .reduce(|a, b| {
            let a_wins = if lower { a.0 > b.0 || (a.0 == b.0 && !a.1) } else { a.0 < b.0 || (a.0 == b.0 && !a.1) };
            if a_wins {
                a
            } else {
                b
            }
        })
        .unwrap_or_default();
    *bounds = vec![best];
}

// ---- accounts ----

/// Loads `account` with its totals, creating its row first (Swift's account
/// auto-creation: the owner's first request makes it exist).
pub async fn account(db: &Db, name: &str) -> Result<Account> {
    let row = Query::new("SELECT created_at, meta FROM object_accounts WHERE account = ")
        .bind(name)
        .fetch_optional(db.reader())
        .await?;
    let (created_at, meta) = match row {
        Some(r) => (r.get::<String, _>("created_at"), meta::from_json(&r.get::<String, _>("meta"))),
        None => {
            let now = now_stamp();
            let (n, t) = (name.to_string(), now.clone());
            db.transaction(|tx| {
                let (n, t) = (n.clone(), t.clone());
                Box::pin(async move {
                    Query::new("INSERT INTO object_accounts (account, created_at, meta) VALUES (")
                        .bind(n)
                        .push(", ")
                        .bind(t)
                        .push(", '{}') ON CONFLICT (account) DO NOTHING")
                        .execute(&mut **tx)
                        .await
                })
            })
            .await?;
            (now, Meta::new())
        }
    };
    let totals = Query::new(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(object_count), 0) AS BIGINT) AS o, \
         CAST(COALESCE(SUM(bytes_used), 0) AS BIGINT) AS b FROM object_containers WHERE account = ",
    )
    .bind(name)
    .fetch_optional(db.reader())
    .await?
    .ok_or_else(|| SwiftError::Internal("account totals query returned no row".into()))?;
    Ok(Account {
        name: name.to_string(),
        created_at,
        meta,
        containers: totals.get("n"),
        objects: totals.get("o"),
        bytes: totals.get("b"),
    })
}

/// Applies metadata changes to `account` (created if missing).
pub async fn update_account_meta(db: &Db, name: &str, changes: Vec<(String, Option<String>)>) -> Result<()> {
    account(db, name).await?;
    let name = name.to_string();
    db.transaction(|tx| {
        let changes = changes.clone();
        let name = name.clone();
        Box::pin(async move {
            let row = Query::new("SELECT meta FROM object_accounts WHERE account = ")
                .bind(name.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            let mut m = row.map(|r| meta::from_json(&r.get::<String, _>("meta"))).unwrap_or_default();
            meta::apply(&mut m, changes);
            meta::check_limits(&m, meta::Kind::Account)?;
            Query::new("UPDATE object_accounts SET meta = ")
                .bind(meta::to_json(&m))
                .push_bind(" WHERE account = ", name.as_str())
                .execute(&mut **tx)
                .await?;
            Ok::<_, SwiftError>(())
        })
    })
    .await
}

// ---- containers ----

fn container_of(r: &stratus_db::sqlx::any::AnyRow) -> Container {
    Container {
        account: r.get("account"),
        name: r.get("name"),
        created_at: r.get("created_at"),
        modified_at: r.get("modified_at"),
        policy: r.get("policy"),
        meta: meta::from_json(&r.get::<String, _>("meta")),
        object_count: r.get("object_count"),
        bytes_used: r.get("bytes_used"),
    }
}

const CONTAINER_COLS: &str =
    "SELECT account, name, created_at, modified_at, policy, meta, object_count, bytes_used FROM object_containers";

/// The container, if it exists.
pub async fn container(db: &Db, account: &str, name: &str) -> Result<Option<Container>> {
    let mut q = Query::new(CONTAINER_COLS);
    q.push_bind(" WHERE account = ", account).push_bind(" AND name = ", name);
    Ok(q.fetch_optional(db.reader()).await?.as_ref().map(container_of))
}

/// Lists containers of `account`.
pub async fn list_containers(db: &Db, account: &str, p: &ListParams) -> Result<Vec<Entry<Container>>> {
    let mut q = Query::new(CONTAINER_COLS);
    q.push_bind(" WHERE account = ", account);
    list_names(db, q, p, |r| {
        let c = container_of(r);
        (c.name.clone(), c)
    })
    .await
}

/// Creates the container, or applies `changes` to the existing one. Returns true when
/// it was created.
pub async fn put_container(
    db: &Db,
    account: &str,
    name: &str,
    policy: &str,
    changes: Vec<(String, Option<String>)>,
) -> Result<bool> {
    let (account, name, policy) = (account.to_string(), name.to_string(), policy.to_string());
    db.transaction(|tx| {
        let (account, name, policy, changes) = (account.clone(), name.clone(), policy.clone(), changes.clone());
        Box::pin(async move {
            let existing = Query::new("SELECT meta FROM object_containers WHERE account = ")
                .bind(account.as_str())
                .push_bind(" AND name = ", name.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            let now = now_stamp();
            match existing {
                Some(r) => {
                    let mut m = meta::from_json(&r.get::<String, _>("meta"));
                    meta::apply(&mut m, changes);
                    meta::check_limits(&m, meta::Kind::Container)?;
                    Query::new("UPDATE object_containers SET meta = ")
                        .bind(meta::to_json(&m))
                        .push_bind(" WHERE account = ", account.as_str())
                        .push_bind(" AND name = ", name.as_str())
                        .execute(&mut **tx)
                        .await?;
                    Ok(false)
                }
                None => {
                    let mut m = Meta::new();
                    meta::apply(&mut m, changes);
                    meta::check_limits(&m, meta::Kind::Container)?;
                    Query::new(
                        "INSERT INTO object_containers (account, name, created_at, modified_at, policy, meta) VALUES (",
                    )
                    .bind(account.as_str())
                    .push(", ")
                    .bind(name.as_str())
                    .push(", ")
                    .bind(now.as_str())
                    .push(", ")
                    .bind(now.as_str())
                    .push(", ")
                    .bind(policy.as_str())
                    .push(", ")
                    .bind(meta::to_json(&m))
                    .push(")")
                    .execute(&mut **tx)
                    .await?;
                    Ok(true)
                }
            }
        })
    })
    .await
}

/// Applies metadata changes to an existing container (404 when missing).
pub async fn update_container_meta(
    db: &Db,
    account: &str,
    name: &str,
    changes: Vec<(String, Option<String>)>,
) -> Result<()> {
    let (account, name) = (account.to_string(), name.to_string());
    db.transaction(|tx| {
        let (account, name, changes) = (account.clone(), name.clone(), changes.clone());
        Box::pin(async move {
            let r = Query::new("SELECT meta FROM object_containers WHERE account = ")
                .bind(account.as_str())
                .push_bind(" AND name = ", name.as_str())
                .fetch_optional(&mut **tx)
                .await?
                .ok_or(SwiftError::NotFound)?;
            let mut m = meta::from_json(&r.get::<String, _>("meta"));
            meta::apply(&mut m, changes);
            meta::check_limits(&m, meta::Kind::Container)?;
            Query::new("UPDATE object_containers SET meta = ")
                .bind(meta::to_json(&m))
                .push_bind(" WHERE account = ", account.as_str())
                .push_bind(" AND name = ", name.as_str())
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    })
    .await
}

/// Deletes an empty container: 404 when missing, 409 when it holds objects (expired
/// objects not yet reaped are reaped here first, as they are invisible).
pub async fn delete_container(db: &Db, account: &str, name: &str) -> Result<Vec<String>> {
    let (account, name) = (account.to_string(), name.to_string());
    let now = now_secs();
    db.transaction(|tx| {
        let (account, name) = (account.clone(), name.clone());
        Box::pin(async move {
            let exists = Query::new("SELECT 1 AS x FROM object_containers WHERE account = ")
                .bind(account.as_str())
                .push_bind(" AND name = ", name.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            if exists.is_none() {
                return Err(SwiftError::NotFound);
            }
            let live = Query::new("SELECT 1 AS x FROM object_objects WHERE account = ")
                .bind(account.as_str())
                .push_bind(" AND container = ", name.as_str())
                .push_bind(" AND (delete_at IS NULL OR delete_at > ", now)
                .push(") LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
            if live.is_some() {
                return Err(SwiftError::Conflict);
            }
            let blobs: Vec<String> = Query::new("SELECT blob FROM object_objects WHERE account = ")
                .bind(account.as_str())
                .push_bind(" AND container = ", name.as_str())
                .push(" AND blob IS NOT NULL")
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| r.get::<String, _>("blob"))
                .collect();
            Query::new("DELETE FROM object_objects WHERE account = ")
                .bind(account.as_str())
                .push_bind(" AND container = ", name.as_str())
                .execute(&mut **tx)
                .await?;
            Query::new("DELETE FROM object_containers WHERE account = ")
                .bind(account.as_str())
                .push_bind(" AND name = ", name.as_str())
                .execute(&mut **tx)
                .await?;
            Ok(blobs)
        })
    })
    .await
}

// ---- objects ----

const OBJECT_COLS: &str = "SELECT account, container, name, size, etag, content_type, modified_at, meta, kind, \
                           blob, blob_size, delete_at FROM object_objects";

fn object_of(r: &stratus_db::sqlx::any::AnyRow) -> Object {
    Object {
        account: r.get("account"),
        container: r.get("container"),
        name: r.get("name"),
        size: r.get("size"),
        etag: r.get("etag"),
        content_type: r.get("content_type"),
        modified_at: r.get("modified_at"),
        meta: meta::from_json(&r.get::<String, _>("meta")),
        kind: ObjKind::parse(&r.get::<String, _>("kind")),
        blob: r.try_get::<Option<String>, _>("blob").ok().flatten(),
        blob_size: r.get("blob_size"),
        delete_at: r.try_get::<Option<i64>, _>("delete_at").ok().flatten(),
    }
}

fn live(q: &mut Query, now: i64) {
    q.push_bind(" AND (delete_at IS NULL OR delete_at > ", now).push(")");
}

/// The object, if it exists and has not expired.
pub async fn object(db: &Db, account: &str, container: &str, name: &str) -> Result<Option<Object>> {
    let mut q = Query::new(OBJECT_COLS);
    q.push_bind(" WHERE account = ", account).push_bind(" AND container = ", container).push_bind(" AND name = ", name);
    live(&mut q, now_secs());
    Ok(q.fetch_optional(db.reader()).await?.as_ref().map(object_of))
}

/// Lists a container's live objects.
pub async fn list_objects(db: &Db, account: &str, container: &str, p: &ListParams) -> Result<Vec<Entry<Object>>> {
    let mut q = Query::new(OBJECT_COLS);
    q.push_bind(" WHERE account = ", account).push_bind(" AND container = ", container);
    live(&mut q, now_secs());
    list_names(db, q, p, |r| {
        let o = object_of(r);
        (o.name.clone(), o)
    })
    .await
}

async fn remove_row(tx: &mut Tx, o: &Object) -> Result<()> {
    Query::new("DELETE FROM object_objects WHERE account = ")
        .bind(o.account.as_str())
        .push_bind(" AND container = ", o.container.as_str())
        .push_bind(" AND name = ", o.name.as_str())
        .execute(&mut **tx)
        .await?;
    Query::new("UPDATE object_containers SET object_count = object_count - 1, bytes_used = bytes_used - ")
        .bind(o.size)
        .push_bind(", modified_at = ", now_stamp())
        .push_bind(" WHERE account = ", o.account.as_str())
        .push_bind(" AND name = ", o.container.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn get_row(tx: &mut Tx, account: &str, container: &str, name: &str) -> Result<Option<Object>> {
    let mut q = Query::new(OBJECT_COLS);
    q.push_bind(" WHERE account = ", account).push_bind(" AND container = ", container).push_bind(" AND name = ", name);
    Ok(q.fetch_optional(&mut **tx).await?.as_ref().map(object_of))
}

async fn insert_row(tx: &mut Tx, o: &Object) -> Result<()> {
    Query::new(
        "INSERT INTO object_objects (account, container, name, size, etag, content_type, modified_at, meta, kind, \
         blob, blob_size, delete_at) VALUES (",
    )
    .bind(o.account.as_str())
    .push(", ")
    .bind(o.container.as_str())
    .push(", ")
    .bind(o.name.as_str())
    .push(", ")
    .bind(o.size)
    .push(", ")
    .bind(o.etag.as_str())
    .push(", ")
    .bind(o.content_type.as_str())
    .push(", ")
    .bind(o.modified_at.as_str())
    .push(", ")
    .bind(meta::to_json(&o.meta))
    .push(", ")
    .bind(o.kind.as_str())
    .push(", ")
    .bind(o.blob.clone())
    .push(", ")
    .bind(o.blob_size)
    .push(", ")
    .bind(Arg::from(o.delete_at))
    .push(")")
    .execute(&mut **tx)
    .await?;
    Query::new("UPDATE object_containers SET object_count = object_count + 1, bytes_used = bytes_used + ")
        .bind(o.size)
        .push_bind(", modified_at = ", o.modified_at.as_str())
        .push_bind(" WHERE account = ", o.account.as_str())
        .push_bind(" AND name = ", o.container.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What a write replaced.
#[derive(Debug, Default)]
pub struct Replaced {
    /// The previous row (live or expired), if any.
    pub old: Option<Object>,
}

/// How a write treats the row it replaces.
#[derive(Debug, Clone)]
pub enum OnReplace {
    /// Drop it.
    Drop,
    /// Move it to `container` under `name` (versioning keeps the old bytes).
    MoveTo {
        /// Archive container.
        container: String,
        /// Archive name.
        name: String,
    },
}

/// Writes `o` (replacing any row of the same name) in one transaction with the container
/// counters. `if_none_match`: fail with 412 when a live row exists. `archive` decides
/// where a replaced live row goes; `check` may veto from inside the transaction (quotas).
pub async fn put_object<F>(db: &Db, o: &Object, if_none_match: bool, archive: F) -> Result<Replaced>
where
    F: Fn(&Object) -> OnReplace + Send + Sync + Clone + 'static,
{
    let now = now_secs();
    db.transaction(|tx| {
        let o = o.clone();
        let archive = archive.clone();
        Box::pin(async move {
            let exists = Query::new("SELECT 1 AS x FROM object_containers WHERE account = ")
                .bind(o.account.as_str())
                .push_bind(" AND name = ", o.container.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            if exists.is_none() {
                return Err(SwiftError::NotFound);
            }
            let old = get_row(tx, &o.account, &o.container, &o.name).await?;
            if let Some(old) = &old {
                let is_live = old.delete_at.is_none_or(|d| d > now);
                if if_none_match && is_live {
                    return Err(SwiftError::PreconditionFailed);
                }
                remove_row(tx, old).await?;
                if is_live {
                    if let OnReplace::MoveTo { container, name } = archive(old) {
                        let mut moved = old.clone();
                        moved.container = container;
                        moved.name = name;
                        if let Some(prev) = get_row(tx, &moved.account, &moved.container, &moved.name).await? {
                            remove_row(tx, &prev).await?;
                        }
                        insert_row(tx, &moved).await?;
                        insert_row(tx, &o).await?;
                        return Ok(Replaced { old: None });
                    }
                }
            }
            insert_row(tx, &o).await?;
            Ok(Replaced { old })
        })
    })
    .await
}

/// Deletes the object's row; returns it (404 when there is no live row).
pub async fn delete_object(db: &Db, account: &str, container: &str, name: &str) -> Result<Object> {
    let now = now_secs();
    let (a, c, n) = (account.to_string(), container.to_string(), name.to_string());
    db.transaction(|tx| {
        let (a, c, n) = (a.clone(), c.clone(), n.clone());
        Box::pin(async move {
            let row = get_row(tx, &a, &c, &n).await?.ok_or(SwiftError::NotFound)?;
            remove_row(tx, &row).await?;
            if row.delete_at.is_some_and(|d| d <= now) {
                // Expired: gone already as far as clients are concerned.
                return Err(SwiftError::NotFound);
            }
            Ok(row)
        })
    })
    .await
}

/// Moves a row to another name (versioning restores), replacing what is there.
pub async fn move_object(db: &Db, from: &Object, to_container: &str, to_name: &str) -> Result<()> {
    let (from, tc, tn) = (from.clone(), to_container.to_string(), to_name.to_string());
    db.transaction(|tx| {
        let (from, tc, tn) = (from.clone(), tc.clone(), tn.clone());
        Box::pin(async move {
            let cur = get_row(tx, &from.account, &from.container, &from.name).await?.ok_or(SwiftError::Conflict)?;
            remove_row(tx, &cur).await?;
            if let Some(prev) = get_row(tx, &cur.account, &tc, &tn).await? {
                remove_row(tx, &prev).await?;
            }
            let mut moved = cur;
            moved.container = tc;
            moved.name = tn;
            insert_row(tx, &moved).await
        })
    })
    .await
}

/// Replaces an object's metadata, content type and expiry (`POST`).
pub async fn update_object_meta(db: &Db, o: &Object) -> Result<()> {
    let o = o.clone();
    db.transaction(|tx| {
        let o = o.clone();
        Box::pin(async move {
            let n = Query::new("UPDATE object_objects SET meta = ")
                .bind(meta::to_json(&o.meta))
                .push_bind(", content_type = ", o.content_type.as_str())
                .push_bind(", delete_at = ", Arg::from(o.delete_at))
                .push_bind(", kind = ", o.kind.as_str())
                .push_bind(" WHERE account = ", o.account.as_str())
                .push_bind(" AND container = ", o.container.as_str())
                .push_bind(" AND name = ", o.name.as_str())
                .execute(&mut **tx)
                .await?;
            if n == 0 {
                return Err(SwiftError::NotFound);
            }
            Ok(())
        })
    })
    .await
}

/// True when some row still points at `blob`.
pub async fn blob_referenced(db: &Db, blob: &str) -> Result<bool> {
    Ok(Query::new("SELECT 1 AS x FROM object_objects WHERE blob = ")
        .bind(blob)
        .push(" LIMIT 1")
        .fetch_optional(db.reader())
        .await?
        .is_some())
}

/// Up to `limit` expired rows.
pub async fn expired(db: &Db, limit: i64) -> Result<Vec<Object>> {
    let mut q = Query::new(OBJECT_COLS);
    q.push_bind(" WHERE delete_at IS NOT NULL AND delete_at <= ", now_secs()).push_bind(" LIMIT ", limit);
    Ok(q.fetch_all(db.reader()).await?.iter().map(object_of).collect())
}

/// Removes an expired row if it is still the same expired row; returns its blob when removed.
pub async fn reap(db: &Db, o: &Object) -> Result<Option<String>> {
    let o = o.clone();
    let now = now_secs();
    db.transaction(|tx| {
        let o = o.clone();
        Box::pin(async move {
            match get_row(tx, &o.account, &o.container, &o.name).await? {
                Some(cur) if cur.delete_at.is_some_and(|d| d <= now) && cur.blob == o.blob => {
                    remove_row(tx, &cur).await?;
                    Ok(cur.blob)
                }
                _ => Ok(None),
            }
        })
    })
    .await
}

/// Every blob key referenced by some row among `keys`.
pub async fn referenced_among(db: &Db, keys: &[String]) -> Result<std::collections::HashSet<String>> {
    let mut found = std::collections::HashSet::new();
    for chunk in keys.chunks(500) {
        let mut q = Query::new("SELECT DISTINCT blob FROM object_objects WHERE ");
        q.push_in("blob", chunk.iter().map(|s| s.as_str()));
        for r in q.fetch_all(db.reader()).await? {
            found.insert(r.get::<String, _>("blob"));
        }
    }
    Ok(found)
}

/// Per-policy totals of an account (`X-Account-Storage-Policy-*` headers).
pub async fn policy_totals(db: &Db, account: &str) -> Result<BTreeMap<String, (i64, i64, i64)>> {
    let rows = Query::new(
        "SELECT policy, COUNT(*) AS n, CAST(COALESCE(SUM(object_count), 0) AS BIGINT) AS o, \
         CAST(COALESCE(SUM(bytes_used), 0) AS BIGINT) AS b FROM object_containers WHERE account = ",
    )
    .bind(account)
    .push(" GROUP BY policy")
    .fetch_all(db.reader())
    .await?;
    Ok(rows.iter().map(|r| (r.get("policy"), (r.get("n"), r.get("o"), r.get("b")))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_and_times() {
        assert_eq!(bump("ab").as_deref(), Some("ac"));
        assert_eq!(bump("a/").as_deref(), Some("a0"));
        assert_eq!(x_timestamp("2026-12-07T06:40:00.123456"), "1796625600.12345");
        assert_eq!(http_date("2026-12-07T06:40:00.123456"), "Mon, 07 Dec 2026 06:40:01 GMT");
        assert_eq!(http_date("2026-12-07T06:40:00.000000"), "Mon, 07 Dec 2026 06:40:00 GMT");
    }
}
