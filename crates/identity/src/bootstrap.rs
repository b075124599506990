//! `keystone-manage bootstrap` done by the service itself on every start, idempotently:
//! the `Default` domain, `admin` and `service` projects, Keystone's default roles
//! (admin ⇒ manager ⇒ member ⇒ reader, plus `service`), the admin user with admin on the
//! admin project and the system, the region, a catalog entry for every service the
//! binary serves (and none for one it stopped serving), and `<data_dir>/admin-openrc`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use rand::Rng;
use stratus_db::sqlx::Row;
use stratus_db::Query;

use stratus_core::CatalogEntry;

use crate::error::Result;
use crate::model::new_id;
use crate::state::Identity;

/// Fixed id of the default domain, as Keystone's.
pub const DEFAULT_DOMAIN: &str = "default";

async fn scalar(id: &Identity, q: Query) -> Result<Option<String>> {
    let row = q.fetch_optional(id.platform.db.reader()).await?;
    Ok(match row {
        Some(r) => Some(r.try_get::<String, _>(0)?),
        None => None,
    })
}

async fn ensure_project(id: &Identity, name: &str, description: &str) -> Result<String> {
    let mut q = Query::new("SELECT id FROM identity_projects WHERE domain_id = 'default' AND name = ");
    q.bind(name);
    if let Some(pid) = scalar(id, q).await? {
        return Ok(pid);
    }
    let pid = new_id();
    let mut q = Query::new(
        "INSERT INTO identity_projects (id, name, domain_id, description, enabled, is_domain, created_at) VALUES (",
    );
    q.bind(&pid).push(", ").bind(name).push(", 'default', ").bind(description).push(", 1, 0, ");
    q.bind(stratus_core::time::now()).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok(pid)
}

async fn ensure_role(id: &Identity, name: &str) -> Result<String> {
    let mut q = Query::new("SELECT id FROM identity_roles WHERE domain_id = '' AND name = ");
    q.bind(name);
    if let Some(rid) = scalar(id, q).await? {
        return Ok(rid);
    }
    let rid = new_id();
    let mut q = Query::new("INSERT INTO identity_roles (id, name, domain_id, description, created_at) VALUES (");
    q.bind(&rid)
        .push(", ")
        .bind(name)
        .push(", '', '', ")
        .bind(stratus_core::time::now())
        .push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    Ok(rid)
}

fn grant(actor: &str, target_type: &str, target: &str, role: &str) -> Query {
    let mut q = Query::new("INSERT INTO identity_assignments (actor_type, actor_id, target_type, target_id, role_id, inherited) VALUES ('user', ");
    q.bind(actor).push(", ").bind(target_type).push(", ").bind(target).push(", ").bind(role);
    q.push(", 0) ON CONFLICT DO NOTHING");
    q
}

fn generate_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..20).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect()
}

/// Runs the bootstrap with the catalog entries of the services being served. Returns
/// the admin password when it was set in this run.
pub async fn run(id: &Identity, admin_password: Option<String>, catalog: &[CatalogEntry]) -> Result<Option<String>> {
    let now = stratus_core::time::now();
    let mut q = Query::new("INSERT INTO identity_domains (id, name, description, enabled, created_at) VALUES ('default', 'Default', 'The default domain', 1, ");
    q.bind(&now).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    let admin_project = ensure_project(id, "admin", "Bootstrap project for initializing the cloud.").await?;
    ensure_project(id, "service", "Service Project").await?;
    let admin = ensure_role(id, "admin").await?;
    let manager = ensure_role(id, "manager").await?;
    let member = ensure_role(id, "member").await?;
    let reader = ensure_role(id, "reader").await?;
    ensure_role(id, "service").await?;
    let mut imply = Vec::new();
    for (a, b) in [(&admin, &manager), (&manager, &member), (&member, &reader)] {
        let mut q = Query::new("INSERT INTO identity_implied_roles (prior_role_id, implied_role_id) VALUES (");
        q.bind(a).push(", ").bind(b).push(") ON CONFLICT DO NOTHING");
        imply.push(q);
    }
    id.exec(imply).await?;

    // The admin user.
    let mut set_password = None;
    let existing = id.find_user(DEFAULT_DOMAIN, "admin").await?;
    let admin_user = match existing {
        Some(u) => {
            if let Some(pw) = &admin_password {
                let ok = id.hasher.verify(pw.clone(), u.password_hash.clone()).await?;
                if !ok {
                    let hash = id.hasher.hash(pw.clone()).await?;
                    let mut q = Query::new("UPDATE identity_users SET password_hash = ");
                    q.bind(hash).push_bind(", password_created_at = ", stratus_core::time::now());
                    q.push_bind(" WHERE id = ", &u.id);
                    id.exec(vec![q]).await?;
                    set_password = Some(pw.clone());
                    tracing::info!("bootstrap: admin password reset to the one given");
                }
            }
            u.id
        }
        None => {
            let pw = admin_password.unwrap_or_else(generate_password);
            let hash = id.hasher.hash(pw.clone()).await?;
            let uid = new_id();
            let mut q = Query::new("INSERT INTO identity_users (id, name, domain_id, enabled, password_hash, password_created_at, created_at) VALUES (");
            q.bind(&uid)
                .push(", 'admin', 'default', 1, ")
                .bind(hash)
                .push(", ")
                .bind(&now)
                .push(", ")
                .bind(&now)
                .push(")");
            id.exec(vec![q]).await?;
            set_password = Some(pw);
            uid
        }
    };
    id.exec(vec![grant(&admin_user, "project", &admin_project, &admin), grant(&admin_user, "system", "all", &admin)])
        .await?;

    // Region and catalog. Endpoint URLs follow the configured public address, so a
    // changed address is picked up on restart.
    let region = id.platform.region.clone();
    let mut q = Query::new("INSERT INTO identity_regions (id, description, created_at) VALUES (");
    q.bind(&region).push(", '', ").bind(&now).push(") ON CONFLICT DO NOTHING");
    id.exec(vec![q]).await?;
    sync_catalog(id, catalog, &region, &now).await?;

    if let Some(pw) = &set_password {
        write_openrc(id, pw)?;
    }
    Ok(set_password)
}

/// Registers `catalog` (services and their public, internal and admin endpoints in
/// `region`, URLs following the public address) and removes the services an earlier
/// bootstrap registered that are no longer served, so the catalog only lists APIs that
/// answer. Services created through the API are never touched.
async fn sync_catalog(id: &Identity, catalog: &[CatalogEntry], region: &str, now: &str) -> Result<()> {
    for entry in catalog {
        let mut q = Query::new("SELECT id FROM identity_services WHERE type = ");
        q.bind(entry.service_type).push(" ORDER BY bootstrap DESC, created_at LIMIT 1");
        let sid = match scalar(id, q).await? {
            Some(s) => s,
            None => {
                let sid = new_id();
                let mut q = Query::new(
                    "INSERT INTO identity_services (id, type, name, description, enabled, bootstrap, created_at) VALUES (",
                );
                q.bind(&sid).push(", ").bind(entry.service_type).push(", ").bind(entry.name).push(", ");
                q.bind(entry.description).push(", 1, 1, ").bind(now).push(")");
                id.exec(vec![q]).await?;
                sid
            }
        };
        let url = id.platform.service_url(entry.path);
        for iface in ["public", "internal", "admin"] {
            let mut q = Query::new("SELECT id FROM identity_endpoints WHERE service_id = ");
            q.bind(&sid).push_bind(" AND interface = ", iface).push_bind(" AND region_id = ", region);
            match scalar(id, q).await? {
                Some(eid) => {
                    let mut q = Query::new("UPDATE identity_endpoints SET url = ");
                    q.bind(&url).push_bind(" WHERE id = ", eid);
                    id.exec(vec![q]).await?;
                }
                None => {
                    let mut q = Query::new("INSERT INTO identity_endpoints (id, service_id, interface, region_id, url, enabled, created_at) VALUES (");
                    q.bind(new_id()).push(", ").bind(&sid).push(", ").bind(iface).push(", ").bind(region);
                    q.push(", ").bind(&url).push(", 1, ").bind(now).push(")");
                    id.exec(vec![q]).await?;
                }
            }
        }
    }
    // Stale entries: bootstrap-made services whose type is no longer served.
    let mut q = Query::new("SELECT id FROM identity_services WHERE bootstrap = 1");
    if !catalog.is_empty() {
        q.push(" AND NOT ").push_in("type", catalog.iter().map(|e| e.service_type));
    }
    let rows = q.fetch_all(id.platform.db.reader()).await?;
    for r in rows {
        let sid: String = r.try_get(0)?;
        let mut pe = Query::new(
            "DELETE FROM identity_project_endpoints WHERE endpoint_id IN (SELECT id FROM identity_endpoints WHERE service_id = ",
        );
        pe.bind(&sid).push(")");
        let mut e = Query::new("DELETE FROM identity_endpoints WHERE service_id = ");
        e.bind(&sid);
        let mut s = Query::new("DELETE FROM identity_services WHERE id = ");
        s.bind(&sid);
        id.exec(vec![pe, e, s]).await?;
        tracing::info!(service_id = %sid, "bootstrap: removed a catalog service that is no longer served");
    }
    Ok(())
}

/// Single-quotes `s` for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,:/@%+=".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Writes `<data_dir>/admin-openrc` (mode 0600) with the variables the install guides use.
pub fn write_openrc(id: &Identity, password: &str) -> Result<()> {
    let path = id.platform.data_dir.join("admin-openrc");
    let text = format!(
        "export OS_PROJECT_DOMAIN_NAME=Default\n\
         export OS_USER_DOMAIN_NAME=Default\n\
         export OS_PROJECT_NAME=admin\n\
         export OS_USERNAME=admin\n\
         export OS_PASSWORD={}\n\
         export OS_AUTH_URL={}/v3\n\
         export OS_IDENTITY_API_VERSION=3\n\
         export OS_IMAGE_API_VERSION=2\n",
        shell_quote(password),
        id.base
    );
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
        f.write_all(text.as_bytes())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
    };
    write().map_err(|e| crate::error::IdentityError::Internal(format!("writing {}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "wrote admin credentials");
    Ok(())
}
