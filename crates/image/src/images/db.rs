//! SQL of images: rows, properties, tags, and the visibility condition shared by show
//! and list.

use std::collections::BTreeMap;

use sqlx::Row;
use stratus_core::RequestContext;
use stratus_db::{sqlx, Arg, Db, Query, Tx};

use crate::error::{image_not_found, ImageError, Result};

/// An image as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Image {
    /// UUID.
    pub id: String,
    /// Name (may be null).
    pub name: Option<String>,
    /// queued, saving, uploading, importing, active, killed, deactivated.
    pub status: String,
    /// public, community, shared, private.
    pub visibility: String,
    /// Owning project.
    pub owner: Option<String>,
    /// Declared disk format.
    pub disk_format: Option<String>,
    /// Declared container format.
    pub container_format: Option<String>,
    /// Data size in bytes.
    pub size: Option<i64>,
    /// Disk size the data represents.
    pub virtual_size: Option<i64>,
    /// MD5 of the data (hex).
    pub checksum: Option<String>,
    /// Secure hash algorithm (sha512).
    pub os_hash_algo: Option<String>,
    /// Secure hash (hex).
    pub os_hash_value: Option<String>,
    /// Minimum disk (GB).
    pub min_disk: i64,
    /// Minimum RAM (MB).
    pub min_ram: i64,
    /// Blocks deletion.
    pub protected: bool,
    /// Hidden from default lists.
    pub os_hidden: bool,
    /// Store holding the data.
    pub store: Option<String>,
    /// Created (storage format).
    pub created_at: String,
    /// Updated (storage format).
    pub updated_at: String,
    /// Custom properties.
    pub properties: BTreeMap<String, String>,
    /// Tags, sorted.
    pub tags: Vec<String>,
}

/// Columns selected for an image, in [`from_row`]'s order (flags are 0/1 BIGINTs).
pub const COLUMNS: &str = "i.id, i.name, i.status, i.visibility, i.owner, i.disk_format, i.container_format, \
     i.size, i.virtual_size, i.checksum, i.os_hash_algo, i.os_hash_value, i.min_disk, i.min_ram, \
     i.protected, i.os_hidden, i.store, i.created_at, i.updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Image, sqlx::Error> {
    Ok(Image {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        status: r.try_get(2)?,
        visibility: r.try_get(3)?,
        owner: r.try_get(4)?,
        disk_format: r.try_get(5)?,
        container_format: r.try_get(6)?,
        size: r.try_get(7)?,
        virtual_size: r.try_get(8)?,
        checksum: r.try_get(9)?,
        os_hash_algo: r.try_get(10)?,
        os_hash_value: r.try_get(11)?,
        min_disk: r.try_get(12)?,
        min_ram: r.try_get(13)?,
        protected: r.try_get::<i64, _>(14)? != 0,
        os_hidden: r.try_get::<i64, _>(15)? != 0,
        store: r.try_get(16)?,
        created_at: r.try_get(17)?,
        updated_at: r.try_get(18)?,
        properties: BTreeMap::new(),
        tags: Vec::new(),
    })
}

/// Turns rows into images with their properties and tags loaded (two extra queries).
pub async fn load_rows(db: &Db, rows: &[sqlx::any::AnyRow]) -> Result<Vec<Image>> {
    let mut images = Vec::with_capacity(rows.len());
    for r in rows {
        images.push(from_row(r).map_err(stratus_db::DbError::from)?);
    }
    if images.is_empty() {
        return Ok(images);
    }
    let ids: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
    let mut q = Query::new("SELECT image_id, name, value FROM image_properties WHERE ");
    q.push_in("image_id", ids.iter().map(String::as_str));
    let props = q.fetch_all(db.reader()).await?;
    let mut q = Query::new("SELECT image_id, tag FROM image_tags WHERE ");
    q.push_in("image_id", ids.iter().map(String::as_str));
    q.push(" ORDER BY tag");
    let tags = q.fetch_all(db.reader()).await?;
    let index: std::collections::HashMap<String, usize> =
        images.iter().enumerate().map(|(i, im)| (im.id.clone(), i)).collect();
    for r in props {
        let id: String = r.try_get(0).map_err(stratus_db::DbError::from)?;
        if let Some(&i) = index.get(&id) {
            let (n, v): (String, String) =
                (r.try_get(1).map_err(stratus_db::DbError::from)?, r.try_get(2).map_err(stratus_db::DbError::from)?);
            images[i].properties.insert(n, v);
        }
    }
    for r in tags {
        let id: String = r.try_get(0).map_err(stratus_db::DbError::from)?;
        if let Some(&i) = index.get(&id) {
            images[i].tags.push(r.try_get(1).map_err(stratus_db::DbError::from)?);
        }
    }
    Ok(images)
}

/// Loads an image by id, whoever may see it (callers check visibility).
pub async fn get_any(db: &Db, id: &str) -> Result<Option<Image>> {
    let mut q = Query::new(format!("SELECT {COLUMNS} FROM image_images i WHERE i.id = "));
    q.bind(id);
    let rows = q.fetch_all(db.reader()).await?;
    Ok(load_rows(db, &rows).await?.pop())
}

/// Loads an image the caller may see, or 404.
pub async fn get_visible(db: &Db, ctx: &RequestContext, id: &str) -> Result<Image> {
    let mut q = Query::new(format!("SELECT {COLUMNS} FROM image_images i WHERE i.id = "));
    q.bind(id);
    push_can_see(&mut q, ctx);
    let rows = q.fetch_all(db.reader()).await?;
    load_rows(db, &rows).await?.pop().ok_or_else(|| image_not_found(id))
}

/// ` AND (<the caller may see the image>)`: admins see everything; others see their own,
/// public and community images, and images shared with their project (any member
/// status: a pending member may look before accepting).
pub fn push_can_see(q: &mut Query, ctx: &RequestContext) {
    if ctx.is_admin() {
        return;
    }
    let project = ctx.project_id.clone().unwrap_or_default();
    q.push(" AND (i.visibility IN ('public', 'community') OR i.owner = ");
    q.bind(project.clone());
    q.push(" OR (i.visibility = 'shared' AND EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = i.id AND m.member_id = ");
    q.bind(project);
    q.push(")))");
}

/// Inserts a new image with its properties and tags.
pub async fn insert(tx: &mut Tx, im: &Image) -> Result<()> {
    let mut q = Query::new(
        "INSERT INTO image_images (id, name, status, visibility, owner, disk_format, container_format, min_disk, \
         min_ram, protected, os_hidden, created_at, updated_at) VALUES (",
    );
    let args: Vec<Arg> = vec![
        im.id.clone().into(),
        im.name.clone().into(),
        im.status.clone().into(),
        im.visibility.clone().into(),
        im.owner.clone().into(),
        im.disk_format.clone().into(),
        im.container_format.clone().into(),
        im.min_disk.into(),
        im.min_ram.into(),
        im.protected.into(),
        im.os_hidden.into(),
        im.created_at.clone().into(),
        im.updated_at.clone().into(),
    ];
    for (i, a) in args.into_iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(a);
    }
    q.push(")");
    q.execute(&mut **tx).await.map_err(|e| {
        if e.is_unique_violation() {
            ImageError::Conflict(format!("An image with identifier {} already exists", im.id))
        } else {
            e.into()
        }
    })?;
    write_props_tags(tx, im).await
}

async fn write_props_tags(tx: &mut Tx, im: &Image) -> Result<()> {
    for (k, v) in &im.properties {
        let mut q = Query::new("INSERT INTO image_properties (image_id, name, value) VALUES (");
        q.bind(&im.id).push(", ").bind(k).push(", ").bind(v).push(")");
        q.execute(&mut **tx).await?;
    }
    for t in &im.tags {
        let mut q = Query::new("INSERT INTO image_tags (image_id, tag) VALUES (");
        q.bind(&im.id).push(", ").bind(t).push(") ON CONFLICT DO NOTHING");
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Writes the user-editable fields of `im` (metadata update), only if the row still
/// has `expected_updated_at` (optimistic concurrency: a concurrent change gives 409).
pub async fn update_metadata(db: &Db, im: &Image, expected_updated_at: &str) -> Result<()> {
    let im = im.clone();
    let expected = expected_updated_at.to_string();
    db.transaction(move |tx| {
        let im = im.clone();
        let expected = expected.clone();
        Box::pin(async move {
            let mut q = Query::new("UPDATE image_images SET name = ");
            q.bind(im.name.clone())
                .push_bind(", visibility = ", im.visibility.clone())
                .push_bind(", owner = ", im.owner.clone())
                .push_bind(", disk_format = ", im.disk_format.clone())
                .push_bind(", container_format = ", im.container_format.clone())
                .push_bind(", min_disk = ", im.min_disk)
                .push_bind(", min_ram = ", im.min_ram)
                .push_bind(", protected = ", im.protected)
                .push_bind(", os_hidden = ", im.os_hidden)
                .push_bind(", updated_at = ", im.updated_at.clone())
                .push_bind(" WHERE id = ", im.id.clone())
                .push_bind(" AND updated_at = ", expected);
            if q.execute(&mut **tx).await? == 0 {
                return Err(ImageError::Conflict(format!(
                    "Image {} was changed or deleted by another request; retry",
                    im.id
                )));
            }
            Query::new("DELETE FROM image_properties WHERE image_id = ").bind(&im.id).execute(&mut **tx).await?;
            Query::new("DELETE FROM image_tags WHERE image_id = ").bind(&im.id).execute(&mut **tx).await?;
            write_props_tags(tx, &im).await?;
            Ok(())
        })
    })
    .await
}

/// Moves an image from one of `from` to `to`; false when it was in no such state.
pub async fn transition(db: &Db, id: &str, from: &[&str], to: &str, reason: Option<&str>) -> Result<bool> {
    let id = id.to_string();
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let to = to.to_string();
    let reason = reason.map(str::to_string);
    db.transaction(move |tx| {
        let (id, from, to, reason) = (id.clone(), from.clone(), to.clone(), reason.clone());
        Box::pin(async move {
            let mut q = Query::new("UPDATE image_images SET status = ");
            q.bind(to).push_bind(", status_reason = ", reason).push_bind(", updated_at = ", stratus_core::time::now());
            q.push_bind(" WHERE id = ", id).push(" AND ").push_in("status", from);
            Ok::<_, ImageError>(q.execute(&mut **tx).await? == 1)
        })
    })
    .await
}

/// Facts about stored data, recorded when an upload completes.
#[derive(Debug, Clone)]
pub struct DataFacts {
    /// Bytes.
    pub size: i64,
    /// From the header.
    pub virtual_size: Option<i64>,
    /// MD5 hex.
    pub checksum: String,
    /// sha512 hex.
    pub os_hash_value: String,
    /// Store id.
    pub store: String,
}

/// `saving`/`importing` → `active` with the data's facts; false if the image left that
/// state meanwhile (deleted during the upload).
pub async fn activate(db: &Db, id: &str, from: &str, f: &DataFacts) -> Result<bool> {
    let (id, from, f) = (id.to_string(), from.to_string(), f.clone());
    db.transaction(move |tx| {
        let (id, from, f) = (id.clone(), from.clone(), f.clone());
        Box::pin(async move {
            let mut q = Query::new("UPDATE image_images SET status = 'active', size = ");
            q.bind(f.size)
                .push_bind(", virtual_size = ", f.virtual_size)
                .push_bind(", checksum = ", f.checksum)
                .push(", os_hash_algo = 'sha512'")
                .push_bind(", os_hash_value = ", f.os_hash_value)
                .push_bind(", store = ", f.store)
                .push(", status_reason = NULL")
                .push_bind(", updated_at = ", stratus_core::time::now())
                .push_bind(" WHERE id = ", id)
                .push_bind(" AND status = ", from);
            Ok::<_, ImageError>(q.execute(&mut **tx).await? == 1)
        })
    })
    .await
}

/// Deletes the image rows (properties, tags and members cascade).
pub async fn delete(db: &Db, id: &str) -> Result<()> {
    let id = id.to_string();
    db.transaction(move |tx| {
        let id = id.clone();
        Box::pin(async move {
            for t in ["image_properties", "image_tags", "image_members"] {
                Query::new(format!("DELETE FROM {t} WHERE image_id = ")).bind(&id).execute(&mut **tx).await?;
            }
            Query::new("DELETE FROM image_images WHERE id = ").bind(&id).execute(&mut **tx).await?;
            Ok::<_, ImageError>(())
        })
    })
    .await
}

/// Images of `owner` and the bytes they hold (active images plus declared uploads in flight).
pub async fn usage(db: &Db, owner: &str) -> Result<(i64, i64)> {
    let r = Query::new("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM image_images WHERE owner = ")
        .bind(owner)
        .fetch_optional(db.reader())
        .await?;
    match r {
        Some(r) => Ok((
            r.try_get::<i64, _>(0).map_err(stratus_db::DbError::from)?,
            r.try_get::<i64, _>(1).map_err(stratus_db::DbError::from)?,
        )),
        None => Ok((0, 0)),
    }
}

/// Ids of images left mid-upload by a previous run.
pub async fn stale_uploads(db: &Db) -> Result<Vec<String>> {
    let rows = Query::new("SELECT id FROM image_images WHERE status IN ('saving', 'importing')")
        .fetch_all(db.reader())
        .await?;
    rows.iter().map(|r| r.try_get::<String, _>(0).map_err(|e| stratus_db::DbError::from(e).into())).collect()
}

/// Runs the statements `qs` in one write transaction; returns the rows each changed.
pub async fn write(db: &Db, qs: Vec<Query>) -> Result<Vec<u64>> {
    db.transaction(move |tx| {
        let qs = qs.clone();
        Box::pin(async move {
            let mut n = Vec::with_capacity(qs.len());
            for q in &qs {
                n.push(q.execute(&mut **tx).await?);
            }
            Ok::<_, ImageError>(n)
        })
    })
    .await
}

/// Sets (`Some`) or removes (`None`) custom properties of image `id` directly: the
/// service's own bookkeeping (`os_glance_*` import progress, `glance-download`'s copied
/// properties), which the API refuses to clients. Bumps `updated_at`, so that a
/// client's PATCH read before this change fails with 409 instead of undoing it.
pub async fn set_properties(db: &Db, id: &str, props: &[(&str, Option<String>)]) -> Result<()> {
    let mut qs = Vec::new();
    for (k, v) in props {
        let q = match v {
            // Only while the image exists: a deleted image gets no orphan properties.
            Some(v) => {
                let mut q = Query::new("INSERT INTO image_properties (image_id, name, value) SELECT id, ");
                q.bind(*k).push(", ").bind(v.clone()).push_bind(" FROM image_images WHERE id = ", id);
                q.push(" ON CONFLICT (image_id, name) DO UPDATE SET value = excluded.value");
                q
            }
            None => {
                let mut q = Query::new("DELETE FROM image_properties WHERE image_id = ");
                q.bind(id).push_bind(" AND name = ", *k);
                q
            }
        };
        qs.push(q);
    }
    let mut touch = Query::new("UPDATE image_images SET updated_at = ");
    touch.bind(stratus_core::time::now()).push_bind(" WHERE id = ", id);
    qs.push(touch);
    write(db, qs).await?;
    Ok(())
}

/// Takes image `id`'s import lock for `task_id` (the `os_glance_import_task` property,
/// as Glance): false when another task holds it or the image is gone.
pub async fn take_import_lock(db: &Db, id: &str, task_id: &str) -> Result<bool> {
    let mut q = Query::new("INSERT INTO image_properties (image_id, name, value) SELECT id, 'os_glance_import_task', ");
    q.bind(task_id).push_bind(" FROM image_images WHERE id = ", id);
    match write(db, vec![q]).await {
        Ok(n) => Ok(n[0] == 1),
        Err(ImageError::Db(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases the import lock of `task_id` (a lock another task took meanwhile stays).
pub async fn release_import_lock(db: &Db, id: &str, task_id: &str) -> Result<()> {
    let mut q = Query::new("DELETE FROM image_properties WHERE image_id = ");
    q.bind(id).push(" AND name = 'os_glance_import_task' AND value = ").bind(task_id);
    write(db, vec![q]).await?;
    Ok(())
}

/// Replaces the list of stores holding image `id`'s data (comma-separated, as the API shows it).
pub async fn set_stores(db: &Db, id: &str, stores: &str) -> Result<()> {
    let mut q = Query::new("UPDATE image_images SET store = ");
    q.bind(stores.to_string()).push_bind(", updated_at = ", stratus_core::time::now()).push_bind(" WHERE id = ", id);
    write(db, vec![q]).await?;
    Ok(())
}

/// Sets the formats of a queued image (`glance-download` takes them from the source).
pub async fn set_formats(db: &Db, id: &str, disk: Option<&str>, container: Option<&str>) -> Result<()> {
    let mut q = Query::new("UPDATE image_images SET disk_format = ");
    q.bind(disk.map(str::to_string))
        .push_bind(", container_format = ", container.map(str::to_string))
        .push_bind(", updated_at = ", stratus_core::time::now())
        .push_bind(" WHERE id = ", id);
    write(db, vec![q]).await?;
    Ok(())
}
