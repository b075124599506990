//! `OS::Heat::ResourceGroup`: `count` copies of one resource definition, as Heat
//! makes them: in a nested stack ([`super::nested`]) whose resources are named
//! `0`..`count-1`, each with `%index%` (or the group's `index_var`) replaced by its
//! index. Changing `count` or the definition updates the nested stack (members added,
//! removed from the highest index down, updated in place or replaced), and deleting
//! the group deletes it.
//!
//! Attributes: `refs` (the members' references in index order), `refs_map`,
//! `attributes` (`{attribute: {index: value}}` for the member type's attributes),
//! `resource.<n>` (member n's reference), `resource.<n>.<attribute>`, and any member
//! attribute by name (the list of every member's).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{opt, req, Change, Created, Cx, Kind, Prop, Registry, ResourceType};
use crate::engine;
use crate::store::{self, Definition, StackRow};

pub(super) fn register(r: &mut Registry) {
    r.add(Arc::new(ResourceGroup));
}

struct ResourceGroup;

/// Replaces `var` by `index` in every string of `v`.
fn substitute(v: &Value, var: &str, index: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace(var, index)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, var, index)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), substitute(x, var, index))).collect()),
        other => other.clone(),
    }
}

/// The nested stack's template for the group's properties.
fn nested_template(resource: &str, props: &Map<String, Value>) -> Result<Value, String> {
    let bad = |what: &str| format!("Property error: resources.{resource}.properties.{what}");
    let count = props.get("count").and_then(Value::as_i64).unwrap_or(1);
    if count < 0 {
        return Err(bad(&format!("count: {count} must be at least 0")));
    }
    let def =
        props.get("resource_def").and_then(Value::as_object).ok_or_else(|| bad("resource_def: a map is required"))?;
    let type_name =
        def.get("type").and_then(Value::as_str).ok_or_else(|| bad("resource_def.type: a type is required"))?;
    for k in def.keys() {
        if !["type", "properties", "metadata"].contains(&k.as_str()) {
            return Err(bad(&format!("resource_def: unknown key \"{k}\" (type, properties, metadata)")));
        }
    }
    let var = props.get("index_var").and_then(Value::as_str).unwrap_or("%index%");
    let properties = def.get("properties").cloned().unwrap_or(json!({}));
    let mut resources = Map::new();
    for i in 0..count {
        let index = i.to_string();
        resources.insert(index.clone(), json!({"type": type_name, "properties": substitute(&properties, var, &index)}));
    }
    Ok(json!({"heat_template_version": "2015-04-30", "resources": resources}))
}

fn definition(template: Value) -> Definition {
    Definition { template, files: json!({}), environment: json!({}), parameters: json!({}) }
}

fn index_of(name: &str) -> u64 {
    name.parse().unwrap_or(u64::MAX)
}

/// The group's attributes from its nested stack's resources.
async fn attributes(cx: &Cx, nested: &StackRow) -> Result<Value, String> {
    let mut rows = store::resources(&cx.db, &nested.id).await.map_err(|e| e.to_string())?;
    rows.sort_by_key(|r| index_of(&r.name));
    let member_attrs: Vec<&str> =
        rows.first().and_then(|r| cx.orch.registry.get(&r.type_name)).map(|t| t.attrs().to_vec()).unwrap_or_default();
    let mut refs = Vec::new();
    let mut refs_map = Map::new();
    let mut by_attr: Map<String, Value> = member_attrs.iter().map(|a| ((*a).to_string(), json!({}))).collect();
    let mut members = Vec::new();
    for r in &rows {
        let (reference, attrs) = engine::done_entry(r);
        refs.push(reference.clone());
        refs_map.insert(r.name.clone(), reference.clone());
        for a in &member_attrs {
            by_attr[*a][&r.name] = attrs.get(*a).cloned().unwrap_or(Value::Null);
        }
        members.push(json!({"name": r.name, "ref": reference, "attributes": attrs}));
    }
    Ok(json!({
        "refs": refs,
        "refs_map": refs_map,
        "attributes": by_attr,
        "removed_rsrc_list": [],
        "members": members,
    }))
}

/// A member attribute the group's stored attributes do not hold under its name:
/// `resource.<n>`, `resource.<n>.<attribute>`, or `<attribute>` of every member.
pub(crate) fn member_attr(attrs: &Value, attr: &str) -> Option<Value> {
    let members = attrs.get("members")?.as_array()?;
    if let Some(rest) = attr.strip_prefix("resource.") {
        let (index, sub) = match rest.split_once('.') {
            Some((i, s)) => (i, Some(s)),
            None => (rest, None),
        };
        let m = members.iter().find(|m| m["name"] == index)?;
        return Some(match sub {
            None => m["ref"].clone(),
            Some(a) => m["attributes"].get(a).cloned().unwrap_or(Value::Null),
        });
    }
    Some(Value::Array(members.iter().map(|m| m["attributes"].get(attr).cloned().unwrap_or(Value::Null)).collect()))
}

#[async_trait]
impl ResourceType for ResourceGroup {
    fn name(&self) -> &'static str {
        "OS::Heat::ResourceGroup"
    }
    fn description(&self) -> &'static str {
        "count copies of a resource definition, in a nested stack."
    }
    fn props(&self) -> Option<&'static [Prop]> {
        const P: &[Prop] = &[
            opt("count", Kind::Int, "How many (default 1)."),
            req("resource_def", Kind::Map, "The members' definition: {type, properties, metadata}."),
            opt("index_var", Kind::Str, "What the index replaces in the definition (default %index%)."),
            opt("removal_policies", Kind::List, "Accepted; members are removed from the highest index."),
            opt("removal_policies_mode", Kind::Str, "Accepted (append or update)."),
        ];
        Some(P)
    }
    fn attrs(&self) -> &'static [&'static str] {
        &["refs", "refs_map", "attributes", "removed_rsrc_list"]
    }
    fn has_attr(&self, _attr: &str) -> bool {
        true
    }
    async fn create(&self, cx: &Cx, props: &Map<String, Value>) -> Result<Created, String> {
        let template = nested_template(&cx.resource_name, props)?;
        let nested = super::nested::create(cx, definition(template), "resource_def").await?;
        Ok(Created { physical_id: nested.id.clone(), ref_id: None, attributes: attributes(cx, &nested).await? })
    }
    async fn delete(&self, cx: &Cx, id: &str, _a: &Value) -> Result<(), String> {
        super::nested::delete(cx, id).await
    }
    fn updatable(&self) -> &'static [&'static str] {
        &["count", "resource_def", "index_var", "removal_policies", "removal_policies_mode"]
    }
    /// Updates the nested stack to the new count and definition.
    async fn update(&self, cx: &Cx, change: &Change<'_>) -> Result<Created, String> {
        let template = nested_template(&cx.resource_name, change.new)?;
        let nested = super::nested::update(cx, change.physical_id, definition(template)).await?;
        Ok(Created { physical_id: nested.id.clone(), ref_id: None, attributes: attributes(cx, &nested).await? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nested_template_has_count_members_with_their_index() {
        let props = json!({"count": 3, "resource_def": {"type": "OS::Heat::Value", "properties": {"value": "m-%index%", "l": ["%index%"]}}});
        let t = nested_template("g", props.as_object().unwrap()).unwrap();
        assert_eq!(t["resources"].as_object().unwrap().len(), 3);
        assert_eq!(t["resources"]["2"]["properties"]["value"], "m-2");
        assert_eq!(t["resources"]["1"]["properties"]["l"][0], "1");
        let props = json!({"count": 2, "index_var": "$i", "resource_def": {"type": "T", "properties": {"v": "$i"}}});
        assert_eq!(nested_template("g", props.as_object().unwrap()).unwrap()["resources"]["1"]["properties"]["v"], "1");
        let props = json!({"count": -1, "resource_def": {"type": "T"}});
        assert!(nested_template("g", props.as_object().unwrap()).unwrap_err().contains("count"));
        let props = json!({"resource_def": {"properties": {}}});
        assert!(nested_template("g", props.as_object().unwrap()).unwrap_err().contains("resource_def.type"));
    }

    #[test]
    fn member_attributes_by_index_and_by_name() {
        let attrs = json!({"members": [
            {"name": "0", "ref": "r0", "attributes": {"ip": "10.0.0.1"}},
            {"name": "1", "ref": "r1", "attributes": {"ip": "10.0.0.2"}},
        ]});
        assert_eq!(member_attr(&attrs, "resource.1"), Some(json!("r1")));
        assert_eq!(member_attr(&attrs, "resource.0.ip"), Some(json!("10.0.0.1")));
        assert_eq!(member_attr(&attrs, "ip"), Some(json!(["10.0.0.1", "10.0.0.2"])));
        assert_eq!(member_attr(&attrs, "resource.7"), None);
    }
}
