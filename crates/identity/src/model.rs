//! Identity's rows and their Keystone JSON shapes, shared by the resource modules and
//! the token code.

use serde_json::{json, Value};
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;

use crate::error::Result;

fn opt(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

/// A JSON-object column (`extra`, `options`); anything else reads as empty.
fn object(row: &AnyRow, col: &str) -> Result<serde_json::Map<String, Value>> {
    let text: String = row.try_get(col)?;
    Ok(match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    })
}

/// Merges `extra` attributes under the known ones (known ones win).
fn with_extra(mut v: Value, extra: &serde_json::Map<String, Value>) -> Value {
    if let Some(o) = v.as_object_mut() {
        for (k, x) in extra {
            o.entry(k.clone()).or_insert_with(|| x.clone());
        }
    }
    v
}

/// A domain.
#[derive(Debug, Clone)]
pub struct Domain {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
}

impl Domain {
    pub const COLS: &'static str = "id, name, description, enabled";
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Domain {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            enabled: stratus_db::flag(r, "enabled"),
        })
    }
    pub fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id, "name": self.name, "description": self.description, "enabled": self.enabled,
            "tags": [], "options": {}, "links": {"self": format!("{base}/v3/domains/{}", self.id)}
        })
    }
}

/// A project.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub parent_id: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub is_domain: bool,
    pub tags: Vec<String>,
    /// Attributes Keystone keeps beside the known ones.
    pub extra: serde_json::Map<String, Value>,
}

impl Project {
    pub const COLS: &'static str = "id, name, domain_id, parent_id, description, enabled, is_domain, extra";
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Project {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            domain_id: r.try_get("domain_id")?,
            parent_id: opt(r, "parent_id")?,
            description: r.try_get("description")?,
            enabled: stratus_db::flag(r, "enabled"),
            is_domain: stratus_db::flag(r, "is_domain"),
            tags: Vec::new(),
            extra: object(r, "extra")?,
        })
    }
    pub fn json(&self, base: &str) -> Value {
        // Keystone reports a top-level project's parent as its domain, and a project
        // acting as a domain has no parent and no domain.
        let (domain_id, parent_id) = if self.is_domain {
            (Value::Null, Value::Null)
        } else {
            (json!(self.domain_id), json!(self.parent_id.clone().unwrap_or_else(|| self.domain_id.clone())))
        };
        with_extra(
            json!({
                "id": self.id, "name": self.name, "domain_id": domain_id, "parent_id": parent_id,
                "description": self.description, "enabled": self.enabled, "is_domain": self.is_domain,
                "tags": self.tags, "options": {},
                "links": {"self": format!("{base}/v3/projects/{}", self.id)}
            }),
            &self.extra,
        )
    }
}

/// A user (the password hash never leaves this crate).
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub description: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub password_expires_at: Option<String>,
    pub failed_auth_count: i64,
    pub last_failed_auth: Option<String>,
    /// When the current password was set.
    pub password_created_at: Option<String>,
    /// Attributes Keystone keeps beside the known ones.
    pub extra: serde_json::Map<String, Value>,
    /// User options (`ignore_password_expiry`, `lock_password`...).
    pub options: serde_json::Map<String, Value>,
    /// Day of the last successful login.
    pub last_active_at: Option<String>,
}

impl User {
    pub const COLS: &'static str = "id, name, domain_id, enabled, default_project_id, description, email, \
        password_hash, password_expires_at, failed_auth_count, last_failed_auth, password_created_at, extra, \
        options, last_active_at";

    /// Whether user option `name` is set to true.
    pub fn option(&self, name: &str) -> bool {
        self.options.get(name).and_then(Value::as_bool).unwrap_or(false)
    }
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(User {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            domain_id: r.try_get("domain_id")?,
            enabled: stratus_db::flag(r, "enabled"),
            default_project_id: opt(r, "default_project_id")?,
            description: opt(r, "description")?,
            email: opt(r, "email")?,
            password_hash: opt(r, "password_hash")?,
            password_expires_at: opt(r, "password_expires_at")?,
            failed_auth_count: r.try_get("failed_auth_count")?,
            last_failed_auth: opt(r, "last_failed_auth")?,
            password_created_at: opt(r, "password_created_at")?,
            extra: object(r, "extra")?,
            options: object(r, "options")?,
            last_active_at: opt(r, "last_active_at")?,
        })
    }
    pub fn json(&self, base: &str) -> Value {
        let mut v = json!({
            "id": self.id, "name": self.name, "domain_id": self.domain_id, "enabled": self.enabled,
            "password_expires_at": self.password_expires_at.as_deref().map(stratus_core::time::micros_z),
            "options": self.options, "links": {"self": format!("{base}/v3/users/{}", self.id)}
        });
        if let Some(p) = &self.default_project_id {
            v["default_project_id"] = json!(p);
        }
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        if let Some(e) = &self.email {
            v["email"] = json!(e);
        }
        with_extra(v, &self.extra)
    }
}

/// A group.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
}

impl Group {
    pub const COLS: &'static str = "id, name, domain_id, description";
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Group {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            domain_id: r.try_get("domain_id")?,
            description: r.try_get("description")?,
        })
    }
    pub fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id, "name": self.name, "domain_id": self.domain_id, "description": self.description,
            "links": {"self": format!("{base}/v3/groups/{}", self.id)}
        })
    }
}

/// A role; `domain_id` is `None` for global roles.
#[derive(Debug, Clone)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub domain_id: Option<String>,
    pub description: String,
    /// Role options (`immutable`).
    pub options: serde_json::Map<String, Value>,
}

impl Role {
    pub const COLS: &'static str = "id, name, domain_id, description, options";
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        let d: String = r.try_get("domain_id")?;
        Ok(Role {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            domain_id: (!d.is_empty()).then_some(d),
            description: r.try_get("description")?,
            options: object(r, "options")?,
        })
    }
    pub fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id, "name": self.name, "domain_id": self.domain_id,
            "description": if self.description.is_empty() { Value::Null } else { json!(self.description) },
            "options": self.options, "links": {"self": format!("{base}/v3/roles/{}", self.id)}
        })
    }
    pub fn brief(&self, base: &str) -> Value {
        json!({"id": self.id, "name": self.name, "links": {"self": format!("{base}/v3/roles/{}", self.id)}})
    }
}

/// A catalog service.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub service_type: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
}

impl Service {
    pub const COLS: &'static str = "id, type, name, description, enabled";
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Service {
            id: r.try_get("id")?,
            service_type: r.try_get("type")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            enabled: stratus_db::flag(r, "enabled"),
        })
    }
    pub fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id, "type": self.service_type, "name": self.name, "description": self.description,
            "enabled": self.enabled, "links": {"self": format!("{base}/v3/services/{}", self.id)}
        })
    }
}

/// A catalog endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    pub region_id: Option<String>,
    pub url: String,
    pub enabled: bool,
}

impl Endpoint {
    pub const COLS: &'static str = "id, service_id, interface, region_id, url, enabled";
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Endpoint {
            id: r.try_get("id")?,
            service_id: r.try_get("service_id")?,
            interface: r.try_get("interface")?,
            region_id: opt(r, "region_id")?,
            url: r.try_get("url")?,
            enabled: stratus_db::flag(r, "enabled"),
        })
    }
    pub fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id, "service_id": self.service_id, "interface": self.interface,
            "region_id": self.region_id, "region": self.region_id, "url": self.url, "enabled": self.enabled,
            "links": {"self": format!("{base}/v3/endpoints/{}", self.id)}
        })
    }
}

/// A region.
#[derive(Debug, Clone)]
pub struct Region {
    pub id: String,
    pub description: String,
    pub parent_region_id: Option<String>,
}

impl Region {
    pub const COLS: &'static str = "id, description, parent_region_id";
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Region {
            id: r.try_get("id")?,
            description: r.try_get("description")?,
            parent_region_id: opt(r, "parent_region_id")?,
        })
    }
    pub fn json(&self, base: &str) -> Value {
        json!({
            "id": self.id, "description": self.description, "parent_region_id": self.parent_region_id,
            "links": {"self": format!("{base}/v3/regions/{}", self.id)}
        })
    }
}

/// A new random id in Keystone's format (32 hex characters).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
