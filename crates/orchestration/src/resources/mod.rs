//! Resource types: what each `OS::...` type accepts, which attributes it offers, and
//! how it is created and deleted through the other services' public APIs (in-process,
//! as the stack's owner: [`Cx::call`]). Unknown types are refused at validation, by
//! name, because only the types registered in [`Registry`] exist.

mod cinder;
mod config;
pub(crate) mod group;
mod heat;
mod nested;
mod neutron;
mod nova;
pub(crate) mod wait;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::Method;
use serde_json::{Map, Value};
use stratus_core::internal::{InternalClient, InternalUri};
use stratus_core::RequestContext;
use stratus_db::Db;

/// The type of a property's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (numbers are accepted and turned into text).
    Str,
    /// An integer (digits in a string are accepted).
    Int,
    /// A boolean (`"true"`/`"false"` accepted).
    Bool,
    /// A list.
    List,
    /// A map.
    Map,
    /// Anything.
    Any,
}

impl Kind {
    /// Checks a literal value written in a template (functions are checked once evaluated).
    pub fn check_literal(self, v: &Value) -> Result<(), String> {
        self.coerce(v).map(|_| ())
    }

    /// The value converted to this kind, or why it cannot be.
    pub fn coerce(self, v: &Value) -> Result<Value, String> {
        match (self, v) {
            (_, Value::Null) | (Kind::Any, _) => Ok(v.clone()),
            (Kind::Str, Value::String(_)) => Ok(v.clone()),
            (Kind::Str, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (Kind::Str, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (Kind::Int, Value::Number(n)) if n.is_i64() => Ok(v.clone()),
            (Kind::Int, Value::String(s)) => {
                s.trim().parse::<i64>().map(Value::from).map_err(|_| format!("Value '{s}' is not an integer"))
            }
            (Kind::Bool, Value::Bool(_)) => Ok(v.clone()),
            (Kind::Bool, Value::String(s)) => stratus_core::query::parse_bool(s)
                .map(Value::Bool)
                .ok_or_else(|| format!("Unrecognized value \"{s}\", acceptable values are: true, false")),
            (Kind::List, Value::Array(_)) => Ok(v.clone()),
            (Kind::List, Value::String(s)) => Ok(Value::Array(
                s.split(',').filter(|p| !p.is_empty()).map(|p| Value::String(p.trim().into())).collect(),
            )),
            (Kind::Map, Value::Object(_)) => Ok(v.clone()),
            (k, other) => Err(format!("Value {other} is not a valid {}", k.name())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Int => "integer",
            Kind::Bool => "boolean",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::Any => "value",
        }
    }

    /// The type name shown by `resource type show`.
    pub fn api_name(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Int => "integer",
            Kind::Bool => "boolean",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::Any => "any",
        }
    }
}

/// A property a type accepts.
#[derive(Debug, Clone, Copy)]
pub struct Prop {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether the template must set it.
    pub required: bool,
    /// What it is for.
    pub description: &'static str,
}

/// Shorthand for an optional property.
pub const fn opt(name: &'static str, kind: Kind, description: &'static str) -> Prop {
    Prop { name, kind, required: false, description }
}

/// Shorthand for a required property.
pub const fn req(name: &'static str, kind: Kind, description: &'static str) -> Prop {
    Prop { name, kind, required: true, description }
}

/// What a created resource leaves behind.
#[derive(Debug, Clone, Default)]
pub struct Created {
    /// The id of the thing made (a network id, a key pair name...).
    pub physical_id: String,
    /// What `get_resource` answers, when not the physical id (RandomString: the value).
    pub ref_id: Option<String>,
    /// Attributes for `get_attr` (the service's representation, plus computed ones).
    pub attributes: Value,
}

/// One resource type.
#[async_trait]
pub trait ResourceType: Send + Sync {
    /// `OS::Neutron::Net`...
    fn name(&self) -> &'static str;
    /// What it makes.
    fn description(&self) -> &'static str;
    /// Its properties; `None` accepts any (OS::Heat::None).
    fn props(&self) -> Option<&'static [Prop]>;
    /// Its attributes (`show` is always offered).
    fn attrs(&self) -> &'static [&'static str];
    /// Whether `get_attr` may name `attr` (types with computed names say so here).
    fn has_attr(&self, attr: &str) -> bool {
        self.attrs().contains(&attr)
    }
    /// Creates it with evaluated `props`. Calls [`Cx::started`] with the physical id as
    /// soon as the thing exists, before waiting for it to become ready, so that a crash
    /// or a failure while waiting still leaves it tracked for deletion.
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String>;
    /// Deletes what [`ResourceType::create`] made; something already gone is success.
    async fn delete(&self, cx: &Cx, physical_id: &str, attributes: &Value) -> Result<(), String>;
    /// The properties a stack update may change in place (Heat's `update_allowed`);
    /// a change to any other replaces the resource (a new one made, then the old one
    /// deleted).
    fn updatable(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether property `name` may change in place (types that accept any property
    /// say so here).
    fn update_allowed(&self, name: &str) -> bool {
        self.updatable().contains(&name)
    }
    /// Changes the thing in place from `old` to `new` properties (only properties
    /// [`ResourceType::updatable`] lists differ); answers what it is now. Must be safe
    /// to run again after a crash (a rollback runs it back to `old`).
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        Err(format!(
            "resources.{}: {} cannot be updated in place ({:?})",
            cx.resource_name,
            self.name(),
            change.changed
        ))
    }
}

/// What an in-place update changes.
pub struct Change<'a> {
    /// What the resource made.
    pub physical_id: &'a str,
    /// Its attributes now.
    pub attributes: &'a Value,
    /// The properties it has.
    pub old: &'a Map<String, Value>,
    /// The properties it is to have.
    pub new: &'a Map<String, Value>,
    /// The names of the properties that differ.
    pub changed: Vec<String>,
}

impl Change<'_> {
    /// The changed properties, as `(property, new value or null when unset)`.
    pub fn changed_values(&self) -> impl Iterator<Item = (&str, Value)> + '_ {
        self.changed.iter().map(|k| (k.as_str(), self.new.get(k).cloned().unwrap_or(Value::Null)))
    }
}

/// The names of the properties that differ between `old` and `new` (set, unset or
/// changed), sorted.
pub fn changed_properties(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = old.keys().chain(new.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| old.get(k) != new.get(k));
    keys
}

/// The resource types this cloud offers.
#[derive(Clone, Default)]
pub struct Registry {
    types: BTreeMap<&'static str, Arc<dyn ResourceType>>,
}

impl Registry {
    /// Every type Stratus implements.
    pub fn standard() -> Registry {
        let mut r = Registry::default();
        heat::register(&mut r);
        group::register(&mut r);
        nested::register(&mut r);
        cinder::register(&mut r);
        wait::register(&mut r);
        config::register(&mut r);
        neutron::register(&mut r);
        nova::register(&mut r);
        r
    }

    /// Adds (or replaces) a type.
    pub fn add(&mut self, t: Arc<dyn ResourceType>) {
        self.types.insert(t.name(), t);
    }

    /// The type named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ResourceType>> {
        self.types.get(name)
    }

    /// All types, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn ResourceType>> {
        self.types.values()
    }
}

/// What a resource operation runs with: the caller's identity (calls go to the other
/// services as the stack's owner), the stack and the resource.
pub struct Cx {
    /// In-process client for the other services.
    pub internal: InternalClient,
    /// The stack owner's context.
    pub ctx: RequestContext,
    /// The database (to record the physical id as soon as it exists).
    pub db: Db,
    /// The stack's id.
    pub stack_id: String,
    /// The stack's name.
    pub stack_name: String,
    /// The resource's name in the template.
    pub resource_name: String,
    /// The engine (types that make nested stacks drive them with it).
    pub orch: crate::S,
}

/// Error text of a failed service call: `<Class>: resources.<name>: <the service's message>`.
fn failure(resource: &str, status: u16, body: &Value) -> String {
    let class = match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        413 | 429 => "OverLimit",
        _ => "InternalServerError",
    };
    format!("{class}: resources.{resource}: {}", service_message(body))
}

/// The message of any service's fault body.
pub fn service_message(body: &Value) -> String {
    if let Some(m) = body["NeutronError"]["message"].as_str() {
        return m.to_string();
    }
    if let Some(m) = body["error"]["message"].as_str() {
        return m.to_string();
    }
    if let Some(m) = body["message"].as_str() {
        return m.to_string();
    }
    if let Value::Object(o) = body {
        if o.len() == 1 {
            if let Some(m) = o.values().next().and_then(|v| v["message"].as_str()) {
                return m.to_string();
            }
        }
    }
    match body {
        Value::Null => "no details given".to_string(),
        other => other.to_string(),
    }
}

impl Cx {
    /// A name for what this resource makes when the template gives none: Heat's
    /// `<stack>-<resource>-<random>`, so a person can tell which stack owns it.
    pub fn physical_name(&self) -> String {
        use rand::Rng;
        let suffix: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(12)
            .map(|c| (c as char).to_ascii_lowercase())
            .collect();
        let mut base = format!("{}-{}", self.stack_name, self.resource_name);
        base.truncate(255 - 13);
        format!("{base}-{suffix}")
    }

    /// Records `physical_id` on the resource's row right away.
    pub async fn started(&self, physical_id: &str) -> Result<(), String> {
        crate::store::set_physical_id(&self.db, &self.stack_id, &self.resource_name, physical_id)
            .await
            .map_err(|e| format!("recording the resource id failed: {e}"))
    }

    /// Calls `method uri` as the stack's owner; a non-2xx answer is an error carrying
    /// the service's message.
    pub async fn call(&self, method: Method, uri: &InternalUri, body: Option<Value>) -> Result<Value, String> {
        let path = uri.check().map_err(|e| format!("BadRequest: resources.{}: {}", self.resource_name, e.message))?;
        let r = self
            .internal
            .call(&self.ctx, method, path, body.as_ref(), &[])
            .await
            .map_err(|e| format!("resources.{}: {}", self.resource_name, e.message))?;
        if r.status.is_success() {
            Ok(r.body)
        } else {
            Err(failure(&self.resource_name, r.status.as_u16(), &r.body))
        }
    }

    /// `DELETE uri`, where "already gone" (404) is success.
    pub async fn delete(&self, uri: &InternalUri) -> Result<(), String> {
        let path = uri.check().map_err(|e| e.message.clone())?;
        let r = self
            .internal
            .call(&self.ctx, Method::DELETE, path, None, &[])
            .await
            .map_err(|e| format!("resources.{}: {}", self.resource_name, e.message))?;
        if r.status.is_success() || r.status.as_u16() == 404 {
            Ok(())
        } else {
            Err(failure(&self.resource_name, r.status.as_u16(), &r.body))
        }
    }

    /// The id of the `kind` (`networks`, `subnets`, `security-groups`...) named
    /// `name_or_id` in the network API: an id as is when it exists, else the one
    /// resource with that name (Heat's `find_resourceid_by_name_or_id`).
    pub async fn neutron_id(&self, collection: &str, singular: &str, name_or_id: &str) -> Result<String, String> {
        let base = format!("/network/v2.0/{collection}");
        let by_id = InternalUri::new(&base).seg(name_or_id);
        let path = by_id.check().map_err(|e| e.message.clone())?;
        if let Ok(r) = self.internal.call(&self.ctx, Method::GET, path, None, &[]).await {
            if r.status.is_success() {
                return Ok(name_or_id.to_string());
            }
        }
        let list = self.call(Method::GET, &InternalUri::new(&base).query("name", name_or_id), None).await?;
        let items = list[collection].as_array().cloned().unwrap_or_default();
        match items.as_slice() {
            [one] => Ok(one["id"].as_str().unwrap_or_default().to_string()),
            [] => Err(format!("NotFound: resources.{}: Unable to find {singular} with name or id '{name_or_id}'", self.resource_name)),
            _ => Err(format!(
                "Conflict: resources.{}: Multiple {singular} matches found for name '{name_or_id}', use an ID to be more specific.",
                self.resource_name
            )),
        }
    }
}

/// Copies the listed properties that are set into `body`, renamed where the API's
/// field differs (`(property, field)`).
pub fn copy(props: &Map<String, Value>, body: &mut Map<String, Value>, names: &[(&str, &str)]) {
    for (p, f) in names {
        if let Some(v) = props.get(*p).filter(|v| !v.is_null()) {
            body.insert((*f).to_string(), v.clone());
        }
    }
}

/// A string property, when set.
pub fn prop_str<'a>(props: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    props.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}
