//! HOT intrinsic functions: checking their use in a template (shape, references to
//! parameters, resources, attributes and files, which gives the dependency graph) and
//! evaluating them against a stack's parameters and its created resources.
//!
//! A function is a map with exactly one key naming it (`{get_param: name}`); any other
//! map is data. Both passes walk the same tree so what validation accepts, evaluation
//! can compute.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{invalid, HeatResult};

/// Names of the functions this engine knows.
pub const FUNCTIONS: &[&str] = &[
    "get_param",
    "get_resource",
    "get_attr",
    "str_replace",
    "list_join",
    "str_split",
    "get_file",
    "map_merge",
    "repeat",
    "equals",
    "not",
    "and",
    "or",
    "if",
];

/// What validation needs to know about the template around a function.
pub trait Scope {
    /// True when `name` is a parameter (declared or pseudo).
    fn has_param(&self, name: &str) -> bool;
    /// The type of resource `name`, when it exists.
    fn resource_type(&self, name: &str) -> Option<&str>;
    /// True when a resource of type `ty` has attribute `attr`.
    fn has_attr(&self, ty: &str, attr: &str) -> bool;
    /// True when the client sent file `name`.
    fn has_file(&self, name: &str) -> bool;
    /// True when `name` is a declared condition.
    fn has_condition(&self, name: &str) -> bool;
}

/// What evaluation reads.
pub trait Lookup {
    /// A parameter's typed value.
    fn param(&self, name: &str) -> Option<Value>;
    /// `get_resource`: the resource's reference id (null before it is created).
    fn resource_ref(&self, name: &str) -> Value;
    /// `get_attr`: the resource's attribute (null when unknown yet).
    fn attr(&self, name: &str, attr: &str) -> Value;
    /// A file the client sent.
    fn file(&self, name: &str) -> Option<String>;
    /// A condition's value.
    fn condition(&self, name: &str) -> Option<bool>;
}

/// The function a value calls, with its argument.
pub fn as_function(v: &Value) -> Option<(&str, &Value)> {
    match v {
        Value::Object(m) if m.len() == 1 => {
            let (k, a) = m.iter().next()?;
            FUNCTIONS.contains(&k.as_str()).then_some((k.as_str(), a))
        }
        _ => None,
    }
}

fn reference_error(name: &str, path: &str) -> crate::error::HeatError {
    invalid(format!("The specified reference \"{name}\" (in {path}) is incorrect."))
}

fn arg_error(f: &str, path: &str, want: &str) -> crate::error::HeatError {
    invalid(format!("{path}: Arguments to \"{f}\" must be of the form {want}"))
}

/// Checks every function in `v` (found at `path`), adding the resources it references
/// to `deps`.
pub fn scan(v: &Value, path: &str, scope: &dyn Scope, deps: &mut BTreeSet<String>) -> HeatResult<()> {
    if let Some((f, arg)) = as_function(v) {
        return scan_function(f, arg, path, scope, deps);
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                scan(x, &format!("{path}.{k}"), scope, deps)?;
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                scan(x, &format!("{path}[{i}]"), scope, deps)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn scan_function(f: &str, arg: &Value, path: &str, scope: &dyn Scope, deps: &mut BTreeSet<String>) -> HeatResult<()> {
    match f {
        "get_param" => {
            let name = match arg {
                Value::String(s) => s.as_str(),
                Value::Array(a) if !a.is_empty() => match &a[0] {
                    Value::String(s) => {
                        for x in &a[1..] {
                            scan(x, path, scope, deps)?;
                        }
                        s.as_str()
                    }
                    _ => return Err(arg_error(f, path, "[parameter_name, path...]")),
                },
                _ => return Err(arg_error(f, path, "parameter_name or [parameter_name, path...]")),
            };
            if !scope.has_param(name) {
                return Err(invalid(format!("The Parameter ({name}) was not defined in template (in {path}).")));
            }
        }
        "get_resource" => {
            let Value::String(name) = arg else { return Err(arg_error(f, path, "resource_name")) };
            if scope.resource_type(name).is_none() {
                return Err(reference_error(name, path));
            }
            deps.insert(name.clone());
        }
        "get_attr" => {
            let Value::Array(a) = arg else {
                return Err(arg_error(f, path, "[resource_name, attribute, (path), ...]"));
            };
            if a.len() < 2 {
                return Err(arg_error(f, path, "[resource_name, attribute, (path), ...]"));
            }
            let Value::String(name) = &a[0] else {
                return Err(arg_error(f, path, "[resource_name, attribute, (path), ...]"));
            };
            let Some(ty) = scope.resource_type(name) else { return Err(reference_error(name, path)) };
            match &a[1] {
                Value::String(attr) => {
                    if !scope.has_attr(ty, attr) {
                        return Err(invalid(format!(
                            "The Referenced Attribute ({name} {attr}) is incorrect (in {path})."
                        )));
                    }
                }
                other => scan(other, path, scope, deps)?,
            }
            for x in &a[2..] {
                scan(x, path, scope, deps)?;
            }
            deps.insert(name.clone());
        }
        "str_replace" => {
            let Value::Object(m) = arg else { return Err(arg_error(f, path, "{template: ..., params: {...}}")) };
            let (Some(t), Some(p)) = (m.get("template"), m.get("params")) else {
                return Err(arg_error(f, path, "{template: ..., params: {...}}"));
            };
            if m.keys().any(|k| k != "template" && k != "params") {
                return Err(arg_error(f, path, "{template: ..., params: {...}}"));
            }
            scan(t, path, scope, deps)?;
            if !p.is_object() && as_function(p).is_none() {
                return Err(arg_error(f, path, "{template: ..., params: {...}}"));
            }
            scan(p, path, scope, deps)?;
        }
        "list_join" => {
            let Value::Array(a) = arg else { return Err(arg_error(f, path, "[delimiter, [list, ...], ...]")) };
            if a.is_empty() {
                return Err(arg_error(f, path, "[delimiter, [list, ...], ...]"));
            }
            for x in a {
                scan(x, path, scope, deps)?;
            }
        }
        "str_split" => {
            let Value::Array(a) = arg else { return Err(arg_error(f, path, "[delimiter, string, (index)]")) };
            if a.len() < 2 || a.len() > 3 {
                return Err(arg_error(f, path, "[delimiter, string, (index)]"));
            }
            for x in a {
                scan(x, path, scope, deps)?;
            }
        }
        "get_file" => {
            let Value::String(name) = arg else { return Err(arg_error(f, path, "file_name")) };
            if !scope.has_file(name) {
                return Err(invalid(format!(
                    "Could not fetch remote template \"{name}\" (in {path}): the client did not send this file."
                )));
            }
        }
        "map_merge" => {
            let Value::Array(a) = arg else { return Err(arg_error(f, path, "[{...}, {...}]")) };
            for x in a {
                scan(x, path, scope, deps)?;
            }
        }
        "repeat" => {
            let Value::Object(m) = arg else {
                return Err(arg_error(f, path, "{for_each: {var: list}, template: ...}"));
            };
            let (Some(fe), Some(t)) = (m.get("for_each"), m.get("template")) else {
                return Err(arg_error(f, path, "{for_each: {var: list}, template: ...}"));
            };
            if !fe.is_object() {
                return Err(arg_error(f, path, "{for_each: {var: list}, template: ...}"));
            }
            scan(fe, path, scope, deps)?;
            scan(t, path, scope, deps)?;
        }
        "equals" => {
            let Value::Array(a) = arg else { return Err(arg_error(f, path, "[value_1, value_2]")) };
            if a.len() != 2 {
                return Err(arg_error(f, path, "[value_1, value_2]"));
            }
            for x in a {
                scan(x, path, scope, deps)?;
            }
        }
        "not" => scan_condition(arg, path, scope, deps)?,
        "and" | "or" => {
            let Value::Array(a) = arg else { return Err(arg_error(f, path, "[condition_1, condition_2, ...]")) };
            if a.len() < 2 {
                return Err(arg_error(f, path, "[condition_1, condition_2, ...]"));
            }
            for x in a {
                scan_condition(x, path, scope, deps)?;
            }
        }
        "if" => {
            let Value::Array(a) = arg else {
                return Err(arg_error(f, path, "[condition, value_if_true, value_if_false]"));
            };
            if a.len() != 3 {
                return Err(arg_error(f, path, "[condition, value_if_true, value_if_false]"));
            }
            scan_condition(&a[0], path, scope, deps)?;
            scan(&a[1], path, scope, deps)?;
            scan(&a[2], path, scope, deps)?;
        }
        _ => {}
    }
    Ok(())
}

/// A condition: a boolean, a condition's name, or a condition function.
pub fn scan_condition(v: &Value, path: &str, scope: &dyn Scope, deps: &mut BTreeSet<String>) -> HeatResult<()> {
    match v {
        Value::Bool(_) => Ok(()),
        Value::String(name) => {
            if scope.has_condition(name) {
                Ok(())
            } else {
                Err(invalid(format!("Invalid condition \"{name}\" (in {path}): no such condition is defined.")))
            }
        }
        _ => match as_function(v) {
            Some((f @ ("equals" | "not" | "and" | "or" | "get_param"), arg)) => {
                scan_function(f, arg, path, scope, deps)
            }
            _ => {
                Err(invalid(format!("{path}: a condition must be true/false, a condition name, or equals/not/and/or")))
            }
        },
    }
}

/// Evaluates every function in `v`.
pub fn resolve(v: &Value, cx: &dyn Lookup) -> Result<Value, String> {
    if let Some((f, arg)) = as_function(v) {
        return call(f, arg, cx);
    }
    Ok(match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                out.insert(k.clone(), resolve(x, cx)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|x| resolve(x, cx)).collect::<Result<_, _>>()?),
        other => other.clone(),
    })
}

/// Follows `path` (keys of maps, indexes of lists) into `v`; null where it leads nowhere.
fn follow(mut v: Value, path: &[Value]) -> Result<Value, String> {
    for p in path {
        v = match (&v, p) {
            (Value::Object(m), Value::String(k)) => m.get(k).cloned().unwrap_or(Value::Null),
            (Value::Array(a), Value::Number(n)) => {
                n.as_u64().and_then(|i| a.get(i as usize)).cloned().unwrap_or(Value::Null)
            }
            (Value::Array(a), Value::String(s)) => {
                s.parse::<usize>().ok().and_then(|i| a.get(i)).cloned().unwrap_or(Value::Null)
            }
            (Value::Null, _) => Value::Null,
            (other, key) => return Err(format!("cannot look up {key} in {other}")),
        };
    }
    Ok(v)
}

/// A value as text in a string function: strings as they are, others as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn condition(v: &Value, cx: &dyn Lookup) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(name) => cx.condition(name).ok_or_else(|| format!("Invalid condition \"{name}\"")),
        other => match resolve(other, cx)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) => stratus_core::query::parse_bool(&s).ok_or_else(|| format!("\"{s}\" is not a boolean")),
            o => Err(format!("{o} is not a boolean")),
        },
    }
}

fn call(f: &str, arg: &Value, cx: &dyn Lookup) -> Result<Value, String> {
    match f {
        "get_param" => {
            let (name, path) = match arg {
                Value::String(s) => (s.clone(), vec![]),
                Value::Array(a) => {
                    let path = a[1..].iter().map(|x| resolve(x, cx)).collect::<Result<Vec<_>, _>>()?;
                    (text(&a[0]), path)
                }
                _ => return Err("invalid get_param".into()),
            };
            let v = cx.param(&name).ok_or_else(|| format!("The Parameter ({name}) was not provided."))?;
            follow(v, &path)
        }
        "get_resource" => Ok(cx.resource_ref(arg.as_str().unwrap_or_default())),
        "get_attr" => {
            let a = arg.as_array().ok_or("invalid get_attr")?;
            let name = text(&a[0]);
            let attr = text(&resolve(&a[1], cx)?);
            let path = a[2..].iter().map(|x| resolve(x, cx)).collect::<Result<Vec<_>, _>>()?;
            follow(cx.attr(&name, &attr), &path)
        }
        "str_replace" => {
            let t = resolve(&arg["template"], cx)?;
            let Value::String(mut s) = t else { return Err(format!("str_replace: template {t} is not a string")) };
            let params = resolve(&arg["params"], cx)?;
            let Value::Object(p) = params else { return Err("str_replace: params must be a map".into()) };
            // Longest keys first, as Heat does, so `$var_long` is not clobbered by `$var`.
            let mut keys: Vec<(&String, &Value)> = p.iter().collect();
            keys.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
            for (k, v) in keys {
                if v.is_object() || v.is_array() && !k.is_empty() {
                    s = s.replace(k.as_str(), &v.to_string());
                } else if !k.is_empty() {
                    s = s.replace(k.as_str(), &text(v));
                }
            }
            Ok(Value::String(s))
        }
        "list_join" => {
            let a = arg.as_array().ok_or("invalid list_join")?;
            let delim = text(&resolve(&a[0], cx)?);
            let mut parts = Vec::new();
            for x in &a[1..] {
                match resolve(x, cx)? {
                    Value::Array(items) => parts.extend(items.iter().map(|i| match i {
                        Value::Object(_) | Value::Array(_) => i.to_string(),
                        other => text(other),
                    })),
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    o => return Err(format!("list_join: {o} is not a list")),
                }
            }
            Ok(Value::String(parts.join(&delim)))
        }
        "str_split" => {
            let a = arg.as_array().ok_or("invalid str_split")?;
            let delim = text(&resolve(&a[0], cx)?);
            let s = text(&resolve(&a[1], cx)?);
            let parts: Vec<Value> = s.split(delim.as_str()).map(|p| Value::String(p.to_string())).collect();
            match a.get(2) {
                None => Ok(Value::Array(parts)),
                Some(i) => {
                    let i = resolve(i, cx)?;
                    let n =
                        i.as_u64().or_else(|| i.as_str().and_then(|s| s.parse().ok())).ok_or("str_split: bad index")?;
                    parts.get(n as usize).cloned().ok_or_else(|| format!("str_split: index {n} out of range"))
                }
            }
        }
        "get_file" => {
            let name = arg.as_str().unwrap_or_default();
            cx.file(name).map(Value::String).ok_or_else(|| format!("No content found for file \"{name}\""))
        }
        "map_merge" => {
            let a = arg.as_array().ok_or("invalid map_merge")?;
            let mut out = Map::new();
            for x in a {
                match resolve(x, cx)? {
                    Value::Object(m) => out.extend(m),
                    Value::Null => {}
                    o => return Err(format!("map_merge: {o} is not a map")),
                }
            }
            Ok(Value::Object(out))
        }
        "repeat" => {
            let fe = resolve(&arg["for_each"], cx)?;
            let Value::Object(vars) = fe else { return Err("repeat: for_each must be a map".into()) };
            let mut combos: Vec<Vec<(String, Value)>> = vec![vec![]];
            for (var, list) in &vars {
                let Value::Array(items) = list else { return Err(format!("repeat: {var} must be a list")) };
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        items.iter().map(move |i| {
                            let mut c = c.clone();
                            c.push((var.clone(), i.clone()));
                            c
                        })
                    })
                    .collect();
            }
            let template = resolve(&arg["template"], cx)?;
            Ok(Value::Array(combos.iter().map(|c| substitute(&template, c)).collect()))
        }
        "equals" => {
            let a = arg.as_array().ok_or("invalid equals")?;
            Ok(Value::Bool(resolve(&a[0], cx)? == resolve(&a[1], cx)?))
        }
        "not" => Ok(Value::Bool(!condition(arg, cx)?)),
        "and" | "or" => {
            let a = arg.as_array().ok_or("invalid and/or")?;
            let vals = a.iter().map(|x| condition(x, cx)).collect::<Result<Vec<_>, _>>()?;
            Ok(Value::Bool(if f == "and" { vals.iter().all(|b| *b) } else { vals.iter().any(|b| *b) }))
        }
        "if" => {
            let a = arg.as_array().ok_or("invalid if")?;
            if condition(&a[0], cx)? {
                resolve(&a[1], cx)
            } else {
                resolve(&a[2], cx)
            }
        }
        other => Err(format!("Unknown function {other}")),
    }
}

/// `repeat`'s substitution of loop variables in keys and string values.
fn substitute(v: &Value, vars: &[(String, Value)]) -> Value {
    match v {
        Value::String(s) => {
            if let Some((_, val)) = vars.iter().find(|(k, _)| k == s) {
                return val.clone();
            }
            let mut s = s.clone();
            for (k, val) in vars {
                s = s.replace(k.as_str(), &text(val));
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let mut k = k.clone();
                    for (var, val) in vars {
                        k = k.replace(var.as_str(), &text(val));
                    }
                    (k, substitute(x, vars))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}
