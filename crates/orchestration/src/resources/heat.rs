//! The types that live only in the stack: `OS::Heat::RandomString` (a secret generated
//! once and kept), `OS::Heat::Value` (a computed value with a type) and
//! `OS::Heat::None` (a placeholder that accepts anything and makes nothing).

use std::sync::Arc;

use async_trait::async_trait;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{opt, Change, Created, Cx, Kind, Prop, Registry, ResourceType};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(RandomString));
    r.add(Arc::new(HeatValue));
    r.add(Arc::new(NoneResource));
}

struct RandomString;

const SEQUENCES: &[(&str, &str)] = &[
    ("lettersdigits", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
    ("letters", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    ("lowercase", "abcdefghijklmnopqrstuvwxyz"),
    ("uppercase", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("digits", "0123456789"),
    ("hexdigits", "0123456789abcdef"),
    ("octdigits", "01234567"),
];

/// The characters of a `character_classes` entry's class.
fn class_chars(class: &str) -> Option<&'static str> {
    SEQUENCES.iter().find(|(n, _)| *n == class).map(|(_, c)| *c)
}

/// Generates the string: each `character_classes` / `character_sequences` entry's
/// `min` characters first, the rest from the union of all of them, then shuffled.
pub(crate) fn generate(props: &Map<String, Value>) -> Result<String, String> {
    let length = props.get("length").and_then(Value::as_i64).unwrap_or(32);
    if !(1..=512).contains(&length) {
        return Err(format!("length {length} must be between 1 and 512"));
    }
    let mut pools: Vec<(Vec<char>, i64)> = Vec::new();
    if let Some(Value::Array(classes)) = props.get("character_classes") {
        for c in classes {
            let name = c["class"].as_str().unwrap_or("lettersdigits");
            let chars = class_chars(name).ok_or_else(|| format!("unknown character class \"{name}\""))?;
            pools.push((chars.chars().collect(), c["min"].as_i64().unwrap_or(1)));
        }
    }
    if let Some(Value::Array(seqs)) = props.get("character_sequences") {
        for s in seqs {
            let chars: Vec<char> = s["sequence"].as_str().unwrap_or_default().chars().collect();
            if chars.is_empty() {
                return Err("a character sequence must not be empty".into());
            }
            pools.push((chars, s["min"].as_i64().unwrap_or(1)));
        }
    }
    if pools.is_empty() {
        let seq = props.get("sequence").and_then(Value::as_str).unwrap_or("lettersdigits");
        let chars = class_chars(seq).ok_or_else(|| format!("unknown sequence \"{seq}\""))?;
        pools.push((chars.chars().collect(), 0));
    }
    let mins: i64 = pools.iter().map(|(_, m)| *m).sum();
    if mins > length {
        return Err(format!("length {length} is shorter than the sum of the minimums ({mins})"));
    }
    let mut rng = rand::thread_rng();
    let mut out: Vec<char> = Vec::new();
    for (chars, min) in &pools {
        for _ in 0..*min {
            out.push(chars[rng.gen_range(0..chars.len())]);
        }
    }
    let all: Vec<char> = pools.iter().flat_map(|(c, _)| c.iter().copied()).collect();
    while (out.len() as i64) < length {
        out.push(all[rng.gen_range(0..all.len())]);
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.gen_range(0..=i));
    }
    Ok(out.into_iter().collect())
}

#[async_trait]
impl ResourceType for RandomString {
    fn name(&self) -> &'static str {
        "OS::Heat::RandomString"
    }
    fn description(&self) -> &'static str {
        "A random string, generated once (e.g. a password) and kept with the stack."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("length", Kind::Int, "Length of the string (default 32)."),
            opt(
                "sequence",
                Kind::Str,
                "Characters to use (lettersdigits, letters, lowercase, uppercase, digits, hexdigits, octdigits).",
            ),
            opt("character_classes", Kind::List, "Classes with a minimum count each ({class, min})."),
            opt("character_sequences", Kind::List, "Sequences with a minimum count each ({sequence, min})."),
            opt("salt", Kind::Str, "A value whose change regenerates the string."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["value"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let value =
            generate(props).map_err(|e| format!("Property error: resources.{}.properties: {e}", cx.resource_name))?;
        let physical_id = cx.physical_name();
        Ok(Created { physical_id, ref_id: Some(value.clone()), attributes: json!({"value": value}) })
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _attributes: &Value) -> Result<(), String> {
        Ok(())
    }
}

struct HeatValue;

#[async_trait]
impl ResourceType for HeatValue {
    fn name(&self) -> &'static str {
        "OS::Heat::Value"
    }
    fn description(&self) -> &'static str {
        "A value computed from the template (functions of parameters and other resources), with a type."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            super::req("value", Kind::Any, "The value."),
            opt("type", Kind::Str, "string, number, json, comma_delimited_list or boolean."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["value"]
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let raw = props.get("value").cloned().unwrap_or(Value::Null);
        let value = match props.get("type").and_then(Value::as_str) {
            None => raw,
            Some(t) => {
                let def = crate::template::params::ParamDef::parse(cx.resource_name.as_str(), &json!({"type": t}))
                    .map_err(|e| format!("Property error: resources.{}.properties.type: {e}", cx.resource_name))?;
                def.coerce(&cx.resource_name, &raw)
                    .map_err(|e| format!("Property error: resources.{}.properties.value: {e}", cx.resource_name))?
            }
        };
        Ok(Created { physical_id: cx.physical_name(), ref_id: None, attributes: json!({"value": value}) })
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _attributes: &Value) -> Result<(), String> {
        Ok(())
    }
    fn updatable(&self) -> &'static [&'static str] {
        &["value", "type"]
    }
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        let again = self.create(cx, change.new).await?;
        Ok(Created { physical_id: change.physical_id.to_string(), ..again })
    }
}

struct NoneResource;

#[async_trait]
impl ResourceType for NoneResource {
    fn name(&self) -> &'static str {
        "OS::Heat::None"
    }
    fn description(&self) -> &'static str {
        "Accepts any properties and makes nothing (a placeholder in the resource registry)."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        None
    }
    fn attrs(&self) -> &'static [&'static str] {
        &[]
    }
    async fn create(&self, cx: &Cx, _props: &Map<String, Value>) -> Result<Created, String> {
        Ok(Created { physical_id: cx.physical_name(), ref_id: None, attributes: json!({}) })
    }
    async fn delete(&self, _cx: &Cx, _id: &str, _attributes: &Value) -> Result<(), String> {
        Ok(())
    }
    fn update_allowed(&self, _name: &str) -> bool {
        true
    }
    async fn update(&self, _cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        Ok(Created { physical_id: change.physical_id.to_string(), ref_id: None, attributes: json!({}) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_string_respects_length_and_classes() {
        let s = generate(&Map::new()).unwrap();
        assert_eq!(s.len(), 32);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        let p = json!({"length": 12, "character_classes": [{"class": "digits", "min": 5}, {"class": "uppercase", "min": 7}]});
        let s = generate(p.as_object().unwrap()).unwrap();
        assert_eq!(s.len(), 12);
        assert_eq!(s.chars().filter(char::is_ascii_digit).count(), 5);
        assert_eq!(s.chars().filter(char::is_ascii_uppercase).count(), 7);
        let p = json!({"length": 3, "character_classes": [{"class": "digits", "min": 5}]});
        assert!(generate(p.as_object().unwrap()).unwrap_err().contains("shorter"));
        let p = json!({"sequence": "octdigits", "length": 40});
        assert!(generate(p.as_object().unwrap()).unwrap().chars().all(|c| ('0'..='7').contains(&c)));
    }
}
