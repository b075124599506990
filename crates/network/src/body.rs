//! Typed request bodies: each resource module declares one serde struct per operation
//! (`NetworkCreate`, `PortUpdate`...), read through [`parse_create`] / [`parse_update`],
//! which apply Neutron's checks in Neutron's order and with its messages:
//! 1. an attribute the resource does not have → "Unrecognized attribute(s) 'x'";
//! 2. one the operation cannot set → "Attribute 'x' not allowed in POST" /
//!    "Cannot update read-only attribute x";
//! 3. each attribute's conversion and validation →
//!    "Invalid input for x. Reason: 'v' exceeds maximum length of 255.".
//!
//! Neutron converts loosely (booleans from `"true"`/`"1"`, integers from numeric strings),
//! so the scalar types here do too, and it tells absent, null and set apart (a subnet's
//! `gateway_ip: null` means "no gateway", its absence "the default one"), hence [`Field`].
//! The resource envelope (`{"network": {...}}` or, for bulk creation, `{"networks": [...]}`)
//! is read by [`envelope`].

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{NetError, NetResult};

/// Neutron's `NAME_MAX_LEN` and `DESCRIPTION_FIELD_SIZE`.
pub const NAME_MAX: usize = 255;
/// Longest project id Neutron accepts.
pub const PROJECT_ID_MAX: usize = 255;

/// An attribute that may be absent, explicitly `null`, or set.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Field<T> {
    /// Not in the request.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A value.
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Field::Null,
            Some(v) => Field::Set(v),
        })
    }
}

impl<T> Field<T> {
    /// The value when set (null and absent both give `None`).
    pub fn set(self) -> Option<T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    /// A reference to the value when set.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }

    /// True when the request names the attribute (null included).
    pub fn present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// `Absent` → `None`; `Null` → `Some(None)`; `Set(v)` → `Some(Some(v))`.
    pub fn change(self) -> Option<Option<T>> {
        match self {
            Field::Absent => None,
            Field::Null => Some(None),
            Field::Set(v) => Some(Some(v)),
        }
    }

    /// Maps the value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(f(v)),
        }
    }
}

/// An attribute that may be absent but, when given, may not be `null` (Neutron's booleans,
/// integers, names and descriptions: `"name": null` is refused, not read as "no name").
#[derive(Debug, Clone, PartialEq)]
pub struct Opt<T>(pub Option<T>);

impl<T> Default for Opt<T> {
    fn default() -> Self {
        Opt(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Opt<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|v| Opt(Some(v)))
    }
}

impl<T> Opt<T> {
    /// True when the request names the attribute.
    pub fn present(&self) -> bool {
        self.0.is_some()
    }
}

impl<T> From<T> for Opt<T> {
    fn from(v: T) -> Self {
        Opt(Some(v))
    }
}

impl Opt<Bool> {
    /// The flag when given.
    pub fn opt(&self) -> Option<bool> {
        self.0.map(|b| b.0)
    }

    /// The flag, or `default` when absent.
    pub fn or(&self, default: bool) -> bool {
        self.opt().unwrap_or(default)
    }
}

impl Opt<Int> {
    /// The number when given.
    pub fn opt(&self) -> Option<i64> {
        self.0.map(|n| n.0)
    }
}

impl<const MAX: usize> Opt<Text<MAX>> {
    /// The text when given.
    pub fn opt(&self) -> Option<String> {
        self.0.as_ref().map(|t| t.0.clone())
    }

    /// The text, or "" when absent (Neutron's default for names and descriptions).
    pub fn or_empty(&self) -> String {
        self.opt().unwrap_or_default()
    }
}

impl Opt<Uuid> {
    /// The id when given.
    pub fn opt(&self) -> Option<String> {
        self.0.as_ref().map(|u| u.0.clone())
    }
}

impl<const MAX: usize> Field<Text<MAX>> {
    /// The text when set.
    pub fn opt(&self) -> Option<String> {
        self.get().map(|t| t.0.clone())
    }
}

impl Field<Uuid> {
    /// The id when set.
    pub fn opt(&self) -> Option<String> {
        self.get().map(|u| u.0.clone())
    }
}

impl Field<Int> {
    /// The number when set.
    pub fn opt(&self) -> Option<i64> {
        self.get().map(|n| n.0)
    }
}

impl<const MAX: usize> From<&str> for Text<MAX> {
    fn from(s: &str) -> Self {
        Text(s.to_string())
    }
}

impl From<&str> for Uuid {
    fn from(s: &str) -> Self {
        Uuid(s.to_string())
    }
}

/// How Neutron quotes a value in its messages (Python's `%s`: strings bare).
pub fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    };
    // A 100 KB name is quoted back by Neutron in full; a prefix identifies it as well.
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Value::deserialize(d)
}

/// Neutron's `convert_to_boolean`: JSON booleans, `"true"`/`"false"`/`"1"`/`"0"`/`"yes"`...
/// and the integers 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bool(pub bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = value(d)?;
        let b = match &v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => stratus_core::query::parse_bool(s),
            Value::Number(n) => match n.as_i64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            _ => None,
        };
        b.map(Bool).ok_or_else(|| de::Error::custom(format!("'{}' cannot be converted to boolean", show(&v))))
    }
}

/// Neutron's `convert_to_int`: JSON integers and numeric strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = value(d)?;
        let n = match &v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.map(Int).ok_or_else(|| de::Error::custom(format!("'{}' is not an integer", show(&v))))
    }
}

/// A string of at most `MAX` characters (`type:string` with a length).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text<const MAX: usize>(pub String);

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = value(d)?;
        match v {
            Value::String(s) if s.chars().count() <= MAX => Ok(Text(s)),
            Value::String(_) => Err(de::Error::custom(format!("'{}' exceeds maximum length of {MAX}", show(&v)))),
            other => Err(de::Error::custom(format!("'{}' is not a valid string", show(&other)))),
        }
    }
}

/// Names and descriptions (at most 255 characters).
pub type Name = Text<NAME_MAX>;

/// A project id (`tenant_id`/`project_id`).
pub type ProjectId = Text<PROJECT_ID_MAX>;

/// A UUID (`type:uuid`), kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uuid(pub String);

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = value(d)?;
        match &v {
            Value::String(s) if uuid::Uuid::try_parse(s).is_ok() => Ok(Uuid(s.clone())),
            _ => Err(de::Error::custom(format!("'{}' is not a valid UUID", show(&v)))),
        }
    }
}

/// A list (`type:list`), each element read as `T`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct List<T>(pub Vec<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match value(d)? {
            Value::Array(items) => items
                .into_iter()
                .map(|i| T::deserialize(i).map_err(|e| de::Error::custom(e.to_string())))
                .collect::<Result<Vec<T>, D::Error>>()
                .map(List),
            other => Err(de::Error::custom(format!("'{}' is not a list", show(&other)))),
        }
    }
}

/// An object (`type:dict`) kept as JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict(pub Map<String, Value>);

impl<'de> Deserialize<'de> for Dict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match value(d)? {
            Value::Object(m) => Ok(Dict(m)),
            other => Err(de::Error::custom(format!("'{}' is not a dictionary", show(&other)))),
        }
    }
}

/// Tags given on creation or update: strings of 1 to 255 characters; duplicates are
/// dropped, order kept.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tags(pub Vec<String>);

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = value(d)?;
        let Value::Array(items) = &v else {
            return Err(de::Error::custom(format!("'{}' is not a list", show(&v))));
        };
        let mut out: Vec<String> = Vec::new();
        for t in items {
            match t.as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= NAME_MAX => {
                    if !out.iter().any(|o| o == s) {
                        out.push(s.to_string());
                    }
                }
                _ => return Err(de::Error::custom(format!("'{}' is not a valid tag", show(t)))),
            }
        }
        Ok(Tags(out))
    }
}

/// Any JSON value, validated later by the resource (address lists and the like whose
/// checks need the rest of the request).
pub type Raw = Value;

/// The attribute names a body struct declares (serde's own list, renames applied).
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut p = Probe(None);
    let _ = T::deserialize(&mut p);
    p.0.unwrap_or(&[])
}

fn unrecognized(obj: &Map<String, Value>, known: &[&str]) -> NetResult<()> {
    let extra: Vec<&str> = obj.keys().map(String::as_str).filter(|k| !known.contains(k)).collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(NetError::BadRequest("HTTPBadRequest", format!("Unrecognized attribute(s) '{}'", extra.join(", "))))
    }
}

fn convert<T: DeserializeOwned>(obj: Map<String, Value>) -> NetResult<T> {
    serde_path_to_error::deserialize(Value::Object(obj)).map_err(|e| {
        let attr = e.path().iter().next().map(|s| s.to_string()).unwrap_or_default();
        let reason = e.into_inner().to_string();
        NetError::BadRequest("HTTPBadRequest", format!("Invalid input for {attr}. Reason: {reason}."))
    })
}

/// Reads a POST body object: `all` lists every attribute of the resource (so one that
/// exists but cannot be set on creation gets Neutron's own message).
pub fn parse_create<T: DeserializeOwned>(obj: Map<String, Value>, all: &[&str]) -> NetResult<T> {
    let fields = fields_of::<T>();
    let known: Vec<&str> = all.iter().chain(fields.iter()).copied().collect();
    unrecognized(&obj, &known)?;
    if let Some(k) = obj.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(NetError::BadRequest("HTTPBadRequest", format!("Attribute '{k}' not allowed in POST")));
    }
    convert(obj)
}

/// Reads a PUT body object; attributes of `all` that `T` does not declare are read-only.
pub fn parse_update<T: DeserializeOwned>(obj: Map<String, Value>, all: &[&str]) -> NetResult<T> {
    let fields = fields_of::<T>();
    let known: Vec<&str> = all.iter().chain(fields.iter()).copied().collect();
    unrecognized(&obj, &known)?;
    if let Some(k) = obj.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(NetError::BadRequest("HTTPBadRequest", format!("Cannot update read-only attribute {k}")));
    }
    convert(obj)
}

/// Reads a body with no read-only attributes to tell apart (actions, sub-resources).
pub fn parse<T: DeserializeOwned>(obj: Map<String, Value>) -> NetResult<T> {
    unrecognized(&obj, fields_of::<T>())?;
    convert(obj)
}

/// The resource objects of a request: `{"<resource>": {...}}`, or when `bulk` names the
/// collection, `{"<collection>": [{...}, ...]}` (each item may also be wrapped as
/// `{"<resource>": {...}}`). Returns the objects and whether the request was a bulk one.
pub fn envelope(req: Value, resource: &str, bulk: Option<&str>) -> NetResult<(Vec<Map<String, Value>>, bool)> {
    let bad = |m: String| NetError::BadRequest("HTTPBadRequest", m);
    let Value::Object(mut top) = req else {
        return Err(bad("Body contains invalid data".into()));
    };
    if top.is_empty() {
        return Err(bad("Resource body required".into()));
    }
    if let Some(coll) = bulk {
        if let Some(items) = top.remove(coll) {
            let Value::Array(items) = items else { return Err(bad("Body contains invalid data".into())) };
            if items.is_empty() {
                return Err(bad("Resources required".into()));
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let inner = match item {
                    Value::Object(mut m) if m.len() == 1 && m.get(resource).is_some_and(Value::is_object) => {
                        m.remove(resource).unwrap_or_default()
                    }
                    other => other,
                };
                match inner {
                    Value::Object(m) => out.push(m),
                    _ => return Err(bad(format!("Object '{resource}' contains invalid data"))),
                }
            }
            return Ok((out, true));
        }
    }
    match top.remove(resource) {
        Some(Value::Object(m)) => Ok((vec![m], false)),
        Some(_) => Err(bad(format!("Object '{resource}' contains invalid data"))),
        None => Err(bad(format!("Unable to find '{resource}' in request body"))),
    }
}

/// The single resource object of a request (no bulk form).
pub fn one(req: Value, resource: &str) -> NetResult<Map<String, Value>> {
    Ok(envelope(req, resource, None)?.0.pop().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Thing {
        #[serde(default)]
        name: Field<Name>,
        #[serde(default, rename = "router:external")]
        external: Field<Bool>,
        #[serde(default)]
        mtu: Field<Int>,
        #[serde(default)]
        policy: Field<Uuid>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct ThingUpdate {
        #[serde(default)]
        name: Field<Name>,
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn msg(e: NetError) -> String {
        e.to_string()
    }

    #[test]
    fn fields_come_from_serde() {
        assert_eq!(fields_of::<Thing>(), ["name", "router:external", "mtu", "policy"]);
    }

    #[test]
    fn neutron_conversions_and_messages() {
        let t: Thing =
            parse(obj(json!({"name": "a", "router:external": "True", "mtu": "1400", "policy": null}))).unwrap();
        assert_eq!(t.name, Field::Set(Text("a".into())));
        assert_eq!(t.external, Field::Set(Bool(true)));
        assert_eq!(t.mtu, Field::Set(Int(1400)));
        assert_eq!(t.policy, Field::Null);
        let long = "x".repeat(256);
        let e = msg(parse::<Thing>(obj(json!({"name": long}))).unwrap_err());
        assert!(
            e.starts_with("Invalid input for name. Reason: 'xxx") && e.ends_with("exceeds maximum length of 255."),
            "{e}"
        );
        let e = msg(parse::<Thing>(obj(json!({"router:external": {}}))).unwrap_err());
        assert_eq!(e, "Invalid input for router:external. Reason: '{}' cannot be converted to boolean.");
        let e = msg(parse::<Thing>(obj(json!({"policy": "nope"}))).unwrap_err());
        assert_eq!(e, "Invalid input for policy. Reason: 'nope' is not a valid UUID.");
        let e = msg(parse::<Thing>(obj(json!({"nope": 1, "name": "x"}))).unwrap_err());
        assert_eq!(e, "Unrecognized attribute(s) 'nope'");
    }

    #[test]
    fn create_and_update_know_the_whole_resource() {
        let e = msg(parse_update::<ThingUpdate>(obj(json!({"mtu": 1})), &["mtu", "id"]).unwrap_err());
        assert_eq!(e, "Cannot update read-only attribute mtu");
        let e = msg(parse_create::<ThingUpdate>(obj(json!({"id": "x"})), &["id"]).unwrap_err());
        assert_eq!(e, "Attribute 'id' not allowed in POST");
    }

    #[test]
    fn envelopes_single_and_bulk() {
        let (one, bulk) = envelope(json!({"network": {"name": "a"}}), "network", Some("networks")).unwrap();
        assert_eq!((one.len(), bulk), (1, false));
        let (many, bulk) =
            envelope(json!({"networks": [{"name": "a"}, {"network": {"name": "b"}}]}), "network", Some("networks"))
                .unwrap();
        assert_eq!((many.len(), bulk), (2, true));
        assert_eq!(many[1]["name"], "b");
        assert!(envelope(json!({"networks": []}), "network", Some("networks")).is_err());
        assert!(envelope(json!({"networks": [{"name": "a"}]}), "network", None).is_err());
        assert!(envelope(json!({"network": 5}), "network", None).is_err());
        assert!(envelope(json!({}), "network", None).is_err());
    }
}
