//! Instance rows: load, insert, and the compare-and-set state updates every actor uses.
//!
//! State changes are conditional UPDATEs (`... WHERE uuid = $ AND task_state IS NULL AND
//! vm_state IN (...)`): the row itself is the lock, so an API action racing another
//! action, or a late agent report racing a delete, loses cleanly instead of overwriting.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stratus_compute_proto::spec::{GuestSpec, ImageSpec, PortSpec, VolumeSpec};

use super::volumes::store::Bdm;
use stratus_db::sqlx::any::AnyRow;
use stratus_db::sqlx::Row;
use stratus_db::{Arg, Db, Query, Tx};

use crate::error::{ComputeError, Result};
use crate::flavors::Flavor;

/// A server.
#[derive(Debug, Clone)]
pub struct Instance {
    pub uuid: String,
    pub name: String,
    pub description: Option<String>,
    pub hostname: String,
    pub project_id: String,
    pub user_id: String,
    pub flavor: Flavor,
    pub image_ref: String,
    pub image: Option<ImageSpec>,
    pub key_name: Option<String>,
    pub key_data: Option<String>,
    pub user_data: Option<String>,
    pub availability_zone: Option<String>,
    pub requested_az: Option<String>,
    pub host: Option<String>,
    pub node: Option<String>,
    pub vm_state: String,
    pub task_state: Option<String>,
    pub power_state: i64,
    pub locked: bool,
    pub locked_by: Option<String>,
    pub locked_reason: Option<String>,
    pub config_drive: bool,
    /// `OS-DCF:diskConfig` AUTO (true) or MANUAL.
    pub auto_disk_config: bool,
    pub access_ipv4: Option<String>,
    pub access_ipv6: Option<String>,
    pub progress: i64,
    pub reservation_id: String,
    pub launch_index: i64,
    pub security_groups: Vec<String>,
    pub requested_networks: Value,
    pub ports: Vec<PortSpec>,
    pub scheduler_hints: Value,
    pub retry_hosts: Vec<String>,
    pub fault: Option<Value>,
    pub admin_pass: Option<String>,
    pub launched_at: Option<String>,
    pub terminated_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted: bool,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// Block device mappings (its volumes), oldest first.
    pub bdms: Vec<Bdm>,
}

fn json_col(r: &AnyRow, c: &str) -> Result<Value> {
    let s: Option<String> = r.try_get(c)?;
    Ok(s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null))
}

impl Instance {
    /// Decodes a row (metadata and tags are loaded separately).
    pub fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Instance {
            uuid: r.try_get("uuid")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            hostname: r.try_get("hostname")?,
            project_id: r.try_get("project_id")?,
            user_id: r.try_get("user_id")?,
            flavor: Flavor::from_json(&json_col(r, "flavor_json")?),
            image_ref: r.try_get("image_ref")?,
            image: serde_json::from_value(json_col(r, "image_json")?).ok(),
            key_name: r.try_get("key_name")?,
            key_data: r.try_get("key_data")?,
            user_data: r.try_get("user_data")?,
            availability_zone: r.try_get("availability_zone")?,
            requested_az: r.try_get("requested_az")?,
            host: r.try_get("host")?,
            node: r.try_get("node")?,
            vm_state: r.try_get("vm_state")?,
            task_state: r.try_get("task_state")?,
            power_state: r.try_get("power_state")?,
            locked: stratus_db::flag(r, "locked"),
            locked_by: r.try_get("locked_by")?,
            locked_reason: r.try_get("locked_reason")?,
            config_drive: stratus_db::flag(r, "config_drive"),
            auto_disk_config: stratus_db::flag(r, "auto_disk_config"),
            access_ipv4: r.try_get("access_ipv4")?,
            access_ipv6: r.try_get("access_ipv6")?,
            progress: r.try_get("progress")?,
            reservation_id: r.try_get("reservation_id")?,
            launch_index: r.try_get("launch_index")?,
            security_groups: serde_json::from_value(json_col(r, "security_groups_json")?).unwrap_or_default(),
            requested_networks: json_col(r, "requested_networks_json")?,
            ports: serde_json::from_value(json_col(r, "ports_json")?).unwrap_or_default(),
            scheduler_hints: json_col(r, "scheduler_hints_json")?,
            retry_hosts: serde_json::from_value(json_col(r, "retry_hosts_json")?).unwrap_or_default(),
            fault: match json_col(r, "fault_json")? {
                Value::Null => None,
                v => Some(v),
            },
            admin_pass: r.try_get("admin_pass")?,
            launched_at: r.try_get("launched_at")?,
            terminated_at: r.try_get("terminated_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            deleted: stratus_db::flag(r, "deleted"),
            metadata: BTreeMap::new(),
            tags: Vec::new(),
            bdms: Vec::new(),
        })
    }

    /// What the agent needs to run an operation on this guest.
    pub fn guest_spec(&self) -> GuestSpec {
        GuestSpec {
            uuid: self.uuid.clone(),
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            project_id: self.project_id.clone(),
            user_id: self.user_id.clone(),
            flavor: self.flavor.spec(),
            image: self.image.clone(),
            ports: self.ports.clone(),
            key_data: self.key_data.clone(),
            user_data: self.user_data.clone(),
            metadata: self.metadata.clone(),
            config_drive: self.config_drive,
            admin_pass: self.admin_pass.clone(),
            volumes: self.volumes(),
        }
    }

    /// The connected volumes, root first: part of the guest's definition.
    pub fn volumes(&self) -> Vec<VolumeSpec> {
        let mut v: Vec<VolumeSpec> = self.bdms.iter().filter_map(Bdm::spec).collect();
        v.sort_by_key(|s| !s.is_root());
        v
    }

    /// The policy target.
    pub fn target(&self) -> Value {
        json!({"project_id": self.project_id, "user_id": self.user_id})
    }
}

/// Loads metadata and tags of `insts`.
pub async fn load_extras(db: &Db, insts: &mut [Instance]) -> Result<()> {
    if insts.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = insts.iter().map(|i| i.uuid.clone()).collect();
    let mut q = Query::new("SELECT instance_uuid, meta_key, meta_value FROM compute_instance_metadata WHERE ");
    q.push_in("instance_uuid", ids.clone());
    let mut meta: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in q.fetch_all(db.reader()).await? {
        meta.entry(r.try_get("instance_uuid")?).or_default().insert(r.try_get("meta_key")?, r.try_get("meta_value")?);
    }
    let mut bdms = super::volumes::store::of_instances(db, &ids).await?;
    let mut q = Query::new("SELECT instance_uuid, tag FROM compute_instance_tags WHERE ");
    q.push_in("instance_uuid", ids).push(" ORDER BY tag");
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in q.fetch_all(db.reader()).await? {
        tags.entry(r.try_get("instance_uuid")?).or_default().push(r.try_get("tag")?);
    }
    for i in insts {
        i.metadata = meta.remove(&i.uuid).unwrap_or_default();
        i.tags = tags.remove(&i.uuid).unwrap_or_default();
        i.bdms = bdms.remove(&i.uuid).unwrap_or_default();
    }
    Ok(())
}

/// Loads one live (not deleted) instance with metadata and tags.
pub async fn load(db: &Db, uuid: &str) -> Result<Option<Instance>> {
    let row = Query::new("SELECT * FROM compute_instances WHERE deleted = ")
        .bind(false)
        .push_bind(" AND uuid = ", uuid)
        .fetch_optional(db.reader())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut v = vec![Instance::from_row(&row)?];
    load_extras(db, &mut v).await?;
    Ok(v.pop())
}

/// Loads an instance or 404s in Nova's words.
pub async fn must_load(db: &Db, uuid: &str) -> Result<Instance> {
    load(db, uuid).await?.ok_or_else(|| ComputeError::NotFound(format!("Instance {uuid} could not be found.")))
}

/// Inserts a new instance with its metadata and tags.
pub async fn insert(tx: &mut Tx, i: &Instance) -> Result<()> {
    let mut q = Query::new(
        "INSERT INTO compute_instances (uuid, name, description, hostname, project_id, user_id, flavor_id, flavor_json, \
         image_ref, image_json, key_name, key_data, user_data, availability_zone, requested_az, vm_state, task_state, \
         power_state, config_drive, access_ipv4, access_ipv6, reservation_id, launch_index, security_groups_json, \
         requested_networks_json, scheduler_hints_json, admin_pass, created_at, updated_at, vcpus, memory_mb, auto_disk_config) VALUES (",
    );
    let vals: Vec<Arg> = vec![
        i.uuid.clone().into(),
        i.name.clone().into(),
        i.description.clone().into(),
        i.hostname.clone().into(),
        i.project_id.clone().into(),
        i.user_id.clone().into(),
        i.flavor.id.clone().into(),
        i.flavor.to_json().to_string().into(),
        i.image_ref.clone().into(),
        i.image.as_ref().map(|im| json!(im).to_string()).into(),
        i.key_name.clone().into(),
        i.key_data.clone().into(),
        i.user_data.clone().into(),
        i.availability_zone.clone().into(),
        i.requested_az.clone().into(),
        i.vm_state.clone().into(),
        i.task_state.clone().into(),
        i.power_state.into(),
        i.config_drive.into(),
        i.access_ipv4.clone().into(),
        i.access_ipv6.clone().into(),
        i.reservation_id.clone().into(),
        i.launch_index.into(),
        json!(i.security_groups).to_string().into(),
        i.requested_networks.to_string().into(),
        i.scheduler_hints.to_string().into(),
        i.admin_pass.clone().into(),
        i.created_at.clone().into(),
        i.updated_at.clone().into(),
        i.flavor.vcpus.into(),
        i.flavor.ram.into(),
        i.auto_disk_config.into(),
    ];
    for (n, v) in vals.into_iter().enumerate() {
        if n > 0 {
            q.push(", ");
        }
        q.bind(v);
    }
    q.push(")");
    q.execute(&mut **tx).await?;
    for (k, v) in &i.metadata {
        let mut q = Query::new("INSERT INTO compute_instance_metadata (instance_uuid, meta_key, meta_value) VALUES (");
        q.bind(&i.uuid).push(", ").bind(k).push(", ").bind(v).push(")");
        q.execute(&mut **tx).await?;
    }
    for t in &i.tags {
        let mut q = Query::new("INSERT INTO compute_instance_tags (instance_uuid, tag) VALUES (");
        q.bind(&i.uuid).push(", ").bind(t).push(") ON CONFLICT DO NOTHING");
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A conditional update of an instance row.
#[derive(Debug, Clone, Default)]
pub struct Update {
    sets: Vec<(&'static str, Arg)>,
    expect_task: Option<Option<String>>,
    expect_vm: Option<Vec<String>>,
    expect_host: Option<Option<String>>,
}

impl Update {
    /// An update.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `col` to `v`.
    pub fn set(mut self, col: &'static str, v: impl Into<Arg>) -> Self {
        self.sets.push((col, v.into()));
        self
    }
    /// Only if task_state is currently `t` (None: no task).
    pub fn expect_task(mut self, t: Option<&str>) -> Self {
        self.expect_task = Some(t.map(str::to_string));
        self
    }
    /// Only if vm_state is one of `vms`.
    pub fn expect_vm(mut self, vms: &[&str]) -> Self {
        self.expect_vm = Some(vms.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Only if host is `h`.
    pub fn expect_host(mut self, h: Option<&str>) -> Self {
        self.expect_host = Some(h.map(str::to_string));
        self
    }

    fn query(&self, uuid: &str) -> Query {
        let mut q = Query::new("UPDATE compute_instances SET updated_at = ");
        q.bind(stratus_core::time::now());
        for (c, v) in &self.sets {
            q.push(", ").push(c).push(" = ").bind(v.clone());
        }
        q.push_bind(" WHERE uuid = ", uuid).push_bind(" AND deleted = ", false);
        match &self.expect_task {
            Some(None) => {
                q.push(" AND task_state IS NULL");
            }
            Some(Some(t)) => {
                q.push_bind(" AND task_state = ", t);
            }
            None => {}
        }
        if let Some(vms) = &self.expect_vm {
            q.push(" AND ").push_in("vm_state", vms.clone());
        }
        match &self.expect_host {
            Some(None) => {
                q.push(" AND host IS NULL");
            }
            Some(Some(h)) => {
                q.push_bind(" AND host = ", h);
            }
            None => {}
        }
        q
    }

    /// What the update means for the server's console tokens: `Some(host)` when it
    /// records a (possibly new) host, `Some(None)` when it deletes the server or leaves it
    /// without a host; None when it does neither.
    fn console_revocation(&self) -> Option<Option<String>> {
        if self.sets.iter().any(|(c, v)| *c == "deleted" && *v == Arg::Bool(true)) {
            return Some(None);
        }
        self.sets.iter().find(|(c, _)| *c == "host").map(|(_, v)| match v {
            Arg::Text(h) => Some(h.clone()),
            _ => None,
        })
    }

    /// Runs the update in `tx` and, when it moved or deleted the server, revokes the
    /// console tokens that no longer fit it. Every write of `host` or `deleted` goes
    /// through here, so this is the one place tokens follow the server.
    async fn run(q: &Query, revoke: Option<Option<String>>, tx: &mut Tx, uuid: &str) -> Result<bool> {
        let matched = q.execute(&mut **tx).await? == 1;
        if let (true, Some(host)) = (matched, revoke) {
            crate::consoles::revoke_off_host(tx, uuid, host.as_deref()).await?;
        }
        Ok(matched)
    }

    /// Applies the update in `tx`; true when the row matched the expectations.
    pub async fn apply_tx(&self, tx: &mut Tx, uuid: &str) -> Result<bool> {
        Self::run(&self.query(uuid), self.console_revocation(), tx, uuid).await
    }

    /// Applies the update in its own transaction.
    pub async fn apply(&self, db: &Db, uuid: &str) -> Result<bool> {
        let (q, revoke, uuid) = (self.query(uuid), self.console_revocation(), uuid.to_string());
        db.transaction(|tx| {
            let (q, revoke, uuid) = (q.clone(), revoke.clone(), uuid.clone());
            Box::pin(async move { Self::run(&q, revoke, tx, &uuid).await })
        })
        .await
    }
}

/// A fault as stored and shown (`fault` in the server view).
pub fn fault(code: u16, message: &str, details: &str) -> Value {
    json!({"code": code, "message": message, "details": details, "created": stratus_core::time::now()})
}
