//! HOT templates: parsing the sections, and validating a template with its parameters
//! before anything is created (every error names where in the template it is).
//!
//! - [`params`]: parameter declarations and values;
//! - [`functions`]: intrinsic functions, checked and evaluated;
//! - [`graph`]: the resources' dependency graph.

pub mod functions;
pub mod graph;
pub mod params;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::error::{invalid, HeatError, HeatResult};
use crate::resources::Registry;
use functions::{Lookup, Scope};
use params::ParamDef;

/// The HOT versions accepted (`heat_template_version`), with their release names.
pub const VERSIONS: &[(&str, Option<&str>)] = &[
    ("2013-05-23", None),
    ("2014-10-16", None),
    ("2015-04-30", None),
    ("2015-10-15", None),
    ("2016-04-08", None),
    ("2016-10-14", Some("newton")),
    ("2017-02-24", Some("ocata")),
    ("2017-09-01", Some("pike")),
    ("2018-03-02", Some("queens")),
    ("2018-08-31", Some("rocky")),
    ("2021-04-16", Some("wallaby")),
];

/// Pseudo parameters every stack has.
pub const PSEUDO_PARAMS: &[&str] = &["OS::stack_name", "OS::stack_id", "OS::project_id"];

/// `deletion_policy` of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Deleted with the stack (default).
    Delete,
    /// Left in place when the stack is deleted.
    Retain,
}

/// A resource's definition.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// `type`.
    pub type_name: String,
    /// `properties` (with functions unevaluated).
    pub properties: Map<String, Value>,
    /// `depends_on`.
    pub depends_on: Vec<String>,
    /// `deletion_policy`.
    pub deletion_policy: DeletionPolicy,
    /// `condition`.
    pub condition: Option<Value>,
}

/// An output's definition.
#[derive(Debug, Clone)]
pub struct OutputDef {
    /// `description`.
    pub description: String,
    /// `value` (with functions unevaluated).
    pub value: Value,
    /// `condition`.
    pub condition: Option<Value>,
}

/// A parsed HOT template.
#[derive(Debug, Clone)]
pub struct Template {
    /// `heat_template_version` as written.
    pub version: String,
    /// `description`.
    pub description: String,
    /// `parameters`.
    pub parameters: BTreeMap<String, ParamDef>,
    /// `parameter_groups` (returned by validate).
    pub parameter_groups: Value,
    /// `resources`.
    pub resources: BTreeMap<String, ResourceDef>,
    /// `outputs`.
    pub outputs: BTreeMap<String, OutputDef>,
    /// `conditions`.
    pub conditions: BTreeMap<String, Value>,
}

/// Reads the `template` of a request: a map (what heatclient sends) or a YAML/JSON text.
pub fn load(raw: &Value) -> HeatResult<Value> {
    match raw {
        Value::Object(_) => Ok(raw.clone()),
        Value::String(s) => {
            let v: Value = serde_yaml::from_str(s).map_err(|e| invalid(format!("Error parsing template: {e}")))?;
            if v.is_object() {
                Ok(v)
            } else {
                Err(invalid("Error parsing template: the template is not a YAML or JSON map"))
            }
        }
        Value::Null => Err(crate::error::bad("No template specified")),
        _ => Err(invalid("The template must be a map or a YAML/JSON text")),
    }
}

fn string_list(v: &Value, path: &str) -> HeatResult<Vec<String>> {
    match v {
        Value::Null => Ok(vec![]),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| invalid(format!("{path}: {x} is not a resource name")))
            })
            .collect(),
        other => Err(invalid(format!("{path}: {other} is not a resource name or a list of them"))),
    }
}

impl Template {
    /// Parses the sections of `v` (checking their shape; references are checked by
    /// [`Template::check`]).
    pub fn parse(v: &Value) -> HeatResult<Template> {
        let m = v.as_object().ok_or_else(|| invalid("The template is not a map"))?;
        let version = match m.get("heat_template_version") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                if m.contains_key("AWSTemplateFormatVersion") || m.contains_key("HeatTemplateFormatVersion") {
                    return Err(invalid("CloudFormation (CFN) templates are not supported: use a HOT template"));
                }
                return Err(invalid("Template format version not found: heat_template_version is missing"));
            }
        };
        if !VERSIONS.iter().any(|(d, n)| *d == version || *n == Some(version.as_str())) {
            let known: Vec<String> = VERSIONS
                .iter()
                .flat_map(|(d, n)| {
                    std::iter::once(format!("heat_template_version.{d}"))
                        .chain(n.map(|n| format!("heat_template_version.{n}")))
                })
                .collect();
            return Err(invalid(format!(
                "The template version is invalid: \"heat_template_version: {version}\". \"heat_template_version\" should be one of: {}",
                known.join(", ")
            )));
        }
        for k in m.keys() {
            if ![
                "heat_template_version",
                "description",
                "parameter_groups",
                "parameters",
                "resources",
                "outputs",
                "conditions",
            ]
            .contains(&k.as_str())
            {
                return Err(invalid(format!("The template section is invalid: {k}")));
            }
        }
        let section = |k: &str| -> HeatResult<Map<String, Value>> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(s)) => Ok(s.clone()),
                Some(_) => Err(invalid(format!("The template section \"{k}\" must be a map"))),
            }
        };
        let mut parameters = BTreeMap::new();
        for (name, d) in section("parameters")? {
            parameters.insert(name.clone(), ParamDef::parse(&name, &d)?);
        }
        let mut resources = BTreeMap::new();
        for (name, d) in section("resources")? {
            let path = format!("resources.{name}");
            let r = d.as_object().ok_or_else(|| invalid(format!("{path}: a resource must be a map with a type")))?;
            for k in r.keys() {
                if ![
                    "type",
                    "properties",
                    "metadata",
                    "depends_on",
                    "deletion_policy",
                    "update_policy",
                    "condition",
                    "external_id",
                    "description",
                ]
                .contains(&k.as_str())
                {
                    return Err(invalid(format!(
                        "\"{k}\" is not a valid keyword inside a resource definition ({path})"
                    )));
                }
            }
            let type_name = match r.get("type") {
                Some(Value::String(t)) => t.clone(),
                _ => return Err(invalid(format!("{path}: \"type\" must be a string"))),
            };
            let properties = match r.get("properties") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => p.clone(),
                Some(_) => return Err(invalid(format!("{path}.properties: \"properties\" must be a map"))),
            };
            let depends_on = string_list(r.get("depends_on").unwrap_or(&Value::Null), &format!("{path}.depends_on"))?;
            let deletion_policy = match r.get("deletion_policy").and_then(Value::as_str) {
                None | Some("Delete") | Some("delete") => DeletionPolicy::Delete,
                Some("Retain") | Some("retain") => DeletionPolicy::Retain,
                Some(other) => {
                    return Err(invalid(format!(
                        "{path}.deletion_policy: Invalid deletion policy \"{other}\" (Delete or Retain)"
                    )))
                }
            };
            resources.insert(
                name.clone(),
                ResourceDef {
                    type_name,
                    properties,
                    depends_on,
                    deletion_policy,
                    condition: r.get("condition").cloned(),
                },
            );
        }
        let mut outputs = BTreeMap::new();
        for (name, d) in section("outputs")? {
            let o = d.as_object().ok_or_else(|| invalid(format!("outputs.{name}: an output must be a map")))?;
            let value = o
                .get("value")
                .cloned()
                .ok_or_else(|| invalid(format!("Each output definition must contain a value key (outputs.{name})")))?;
            outputs.insert(
                name.clone(),
                OutputDef {
                    description: o
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("No description given")
                        .to_string(),
                    value,
                    condition: o.get("condition").cloned(),
                },
            );
        }
        Ok(Template {
            version,
            description: m.get("description").and_then(Value::as_str).unwrap_or("").to_string(),
            parameters,
            parameter_groups: m.get("parameter_groups").cloned().unwrap_or(Value::Array(vec![])),
            resources,
            outputs,
            conditions: section("conditions")?.into_iter().collect(),
        })
    }

    /// Validates the template with the parameter values given (environment parameters
    /// merged under the request's): types, constraints, resource types and properties,
    /// every function and reference, and the dependency graph.
    pub fn check(
        &self,
        given: &Map<String, Value>,
        files: &Map<String, Value>,
        reg: &Registry,
        pseudo: &Pseudo,
    ) -> HeatResult<Checked> {
        let mut params = BTreeMap::new();
        for k in given.keys() {
            if !self.parameters.contains_key(k) {
                return Err(invalid(format!("The Parameter ({k}) was not defined in template.")));
            }
        }
        for (name, def) in &self.parameters {
            let raw = given.get(name).filter(|v| !v.is_null()).or(def.default.as_ref());
            let Some(raw) = raw else { return Err(HeatError::ParameterMissing(name.clone())) };
            let v = def.coerce(name, raw).map_err(|e| params::value_error(name, &e))?;
            params.insert(name.clone(), v);
        }
        params.insert("OS::stack_name".into(), Value::String(pseudo.stack_name.clone()));
        params.insert("OS::stack_id".into(), Value::String(pseudo.stack_id.clone()));
        params.insert("OS::project_id".into(), Value::String(pseudo.project_id.clone()));
        let scope = TemplateScope { tpl: self, reg, files };
        // Conditions first: they decide which resources exist.
        let mut sink = BTreeSet::new();
        for (name, c) in &self.conditions {
            functions::scan_condition(c, &format!("conditions.{name}"), &scope, &mut sink)?;
        }
        let mut conditions = BTreeMap::new();
        for name in self.conditions.keys() {
            let v = eval_condition(self, name, &params, files, &mut Vec::new())?;
            conditions.insert(name.clone(), v);
        }
        let base = Values { params: &params, files, conditions: &conditions };
        let mut deps: graph::Deps = BTreeMap::new();
        let mut enabled = BTreeSet::new();
        for (name, r) in &self.resources {
            let path = format!("resources.{name}");
            let ty = reg.get(&r.type_name).ok_or_else(|| {
                invalid(format!("The Resource Type ({}) could not be found (in {path}).", r.type_name))
            })?;
            if let Some(c) = &r.condition {
                functions::scan_condition(c, &format!("{path}.condition"), &scope, &mut sink)?;
                let on = functions::resolve(&serde_json::json!({"if": [c, true, false]}), &base)
                    .map_err(|e| invalid(format!("{path}.condition: {e}")))?;
                if on != Value::Bool(true) {
                    continue;
                }
            }
            enabled.insert(name.clone());
            let mut d = BTreeSet::new();
            if let Some(schema) = ty.props() {
                for k in r.properties.keys() {
                    if !schema.iter().any(|p| p.name == k) {
                        return Err(invalid(format!("Property error: {path}.properties: Unknown Property {k}")));
                    }
                }
                for p in schema.iter().filter(|p| p.required) {
                    if !r.properties.contains_key(p.name) {
                        return Err(invalid(format!(
                            "Property error: {path}.properties: Property {} not assigned",
                            p.name
                        )));
                    }
                }
                for (k, v) in &r.properties {
                    if functions::as_function(v).is_none() {
                        let p = schema.iter().find(|p| p.name == k).expect("checked above");
                        p.kind
                            .check_literal(v)
                            .map_err(|e| invalid(format!("Property error: {path}.properties.{k}: {e}")))?;
                    }
                }
            }
            for (k, v) in &r.properties {
                functions::scan(v, &format!("{path}.properties.{k}"), &scope, &mut d)?;
            }
            // A group's members are made later (in its nested stack); an unknown member
            // type written as it is is refused now, by name.
            if let Some(member) = r.properties.get("resource_def").and_then(|d| d.get("type")).and_then(Value::as_str) {
                if r.type_name == "OS::Heat::ResourceGroup" && reg.get(member).is_none() {
                    return Err(invalid(format!(
                        "The Resource Type ({member}) could not be found (in {path}.properties.resource_def.type)."
                    )));
                }
            }
            for dep in &r.depends_on {
                if !self.resources.contains_key(dep) {
                    return Err(invalid(format!(
                        "The specified reference \"{dep}\" (in {path}.depends_on) is incorrect."
                    )));
                }
                d.insert(dep.clone());
            }
            if d.contains(name) {
                return Err(invalid(format!("Circular Dependency Found: {name} depends on itself")));
            }
            deps.insert(name.clone(), d);
        }
        // References to resources switched off by their condition resolve to null.
        for d in deps.values_mut() {
            d.retain(|x| enabled.contains(x));
        }
        let order = graph::order(&deps).map_err(|cycle| {
            invalid(format!("Circular Dependency Found: {} depend on each other", cycle.join(", ")))
        })?;
        for (name, o) in &self.outputs {
            let path = format!("outputs.{name}");
            if let Some(c) = &o.condition {
                functions::scan_condition(c, &format!("{path}.condition"), &scope, &mut sink)?;
            }
            functions::scan(&o.value, &format!("{path}.value"), &scope, &mut sink)?;
        }
        Ok(Checked { params, conditions, deps, order, enabled })
    }
}

/// The pseudo parameters' values for one stack.
#[derive(Debug, Clone, Default)]
pub struct Pseudo {
    /// `OS::stack_name`.
    pub stack_name: String,
    /// `OS::stack_id`.
    pub stack_id: String,
    /// `OS::project_id`.
    pub project_id: String,
}

/// A validated template's derived facts.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Typed parameter values, pseudo parameters included.
    pub params: BTreeMap<String, Value>,
    /// Condition values.
    pub conditions: BTreeMap<String, bool>,
    /// Dependencies between enabled resources.
    pub deps: graph::Deps,
    /// A creation order.
    pub order: Vec<String>,
    /// Resources whose condition holds (all, without conditions).
    pub enabled: BTreeSet<String>,
}

fn eval_condition(
    tpl: &Template,
    name: &str,
    params: &BTreeMap<String, Value>,
    files: &Map<String, Value>,
    stack: &mut Vec<String>,
) -> HeatResult<bool> {
    if stack.iter().any(|s| s == name) {
        return Err(invalid(format!("Circular definition of condition \"{name}\"")));
    }
    stack.push(name.to_string());
    // Named conditions a condition refers to, evaluated first.
    let mut refs = BTreeMap::new();
    collect_condition_refs(&tpl.conditions[name], &mut |n| {
        if tpl.conditions.contains_key(n) && !refs.contains_key(n) {
            refs.insert(n.to_string(), false);
        }
    });
    let keys: Vec<String> = refs.keys().cloned().collect();
    for k in keys {
        let v = eval_condition(tpl, &k, params, files, stack)?;
        refs.insert(k, v);
    }
    stack.pop();
    let vals = Values { params, files, conditions: &refs };
    let v = functions::resolve(&serde_json::json!({"if": [tpl.conditions[name].clone(), true, false]}), &vals)
        .map_err(|e| invalid(format!("conditions.{name}: {e}")))?;
    Ok(v == Value::Bool(true))
}

fn collect_condition_refs(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        _ => {
            if let Some((name, arg)) = functions::as_function(v) {
                match (name, arg) {
                    ("not", a) => collect_condition_refs(a, f),
                    ("and" | "or", Value::Array(items)) => items.iter().for_each(|x| collect_condition_refs(x, f)),
                    _ => {}
                }
            }
        }
    }
}

struct TemplateScope<'a> {
    tpl: &'a Template,
    reg: &'a Registry,
    files: &'a Map<String, Value>,
}

impl Scope for TemplateScope<'_> {
    fn has_param(&self, name: &str) -> bool {
        self.tpl.parameters.contains_key(name) || PSEUDO_PARAMS.contains(&name)
    }
    fn resource_type(&self, name: &str) -> Option<&str> {
        self.tpl.resources.get(name).map(|r| r.type_name.as_str())
    }
    fn has_attr(&self, ty: &str, attr: &str) -> bool {
        attr == "show" || self.reg.get(ty).is_some_and(|t| t.has_attr(attr))
    }
    fn has_file(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }
    fn has_condition(&self, name: &str) -> bool {
        self.tpl.conditions.contains_key(name)
    }
}

/// Values known before any resource exists (parameters, files, conditions).
pub struct Values<'a> {
    /// Typed parameters.
    pub params: &'a BTreeMap<String, Value>,
    /// Files.
    pub files: &'a Map<String, Value>,
    /// Conditions.
    pub conditions: &'a BTreeMap<String, bool>,
}

impl Lookup for Values<'_> {
    fn param(&self, name: &str) -> Option<Value> {
        self.params.get(name).cloned()
    }
    fn resource_ref(&self, _name: &str) -> Value {
        Value::Null
    }
    fn attr(&self, _name: &str, _attr: &str) -> Value {
        Value::Null
    }
    fn file(&self, name: &str) -> Option<String> {
        self.files.get(name).map(functions::text)
    }
    fn condition(&self, name: &str) -> Option<bool> {
        self.conditions.get(name).copied()
    }
}

#[cfg(test)]
mod tests;
