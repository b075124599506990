//! HOT parameters: their declarations (type, default, hidden, constraints) and the
//! conversion of the values a client sends (mostly strings, from `--parameter k=v`)
//! into typed values that the intrinsic functions hand out.

use serde_json::{Map, Value};

use crate::error::{invalid, HeatError, HeatResult};

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `string`.
    String,
    /// `number` (integer or float).
    Number,
    /// `json` (a map or list, or a string holding one).
    Json,
    /// `comma_delimited_list`.
    CommaDelimitedList,
    /// `boolean`.
    Boolean,
}

impl ParamType {
    fn parse(s: &str) -> Option<ParamType> {
        Some(match s {
            "string" => ParamType::String,
            "number" => ParamType::Number,
            "json" => ParamType::Json,
            "comma_delimited_list" => ParamType::CommaDelimitedList,
            "boolean" => ParamType::Boolean,
            _ => return None,
        })
    }

    /// The name in templates and in `validate` answers (`String`, `Number`...).
    pub fn api_name(self) -> &'static str {
        match self {
            ParamType::String => "String",
            ParamType::Number => "Number",
            ParamType::Json => "Json",
            ParamType::CommaDelimitedList => "CommaDelimitedList",
            ParamType::Boolean => "Boolean",
        }
    }
}

/// One constraint of a parameter, with the message to give when it fails.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// `length: {min, max}` of a string or list.
    Length(Option<f64>, Option<f64>, Option<String>),
    /// `range: {min, max}` of a number.
    Range(Option<f64>, Option<f64>, Option<String>),
    /// `allowed_values: [...]`.
    AllowedValues(Vec<Value>, Option<String>),
    /// `allowed_pattern: regex` (anchored at both ends, as Heat matches it).
    AllowedPattern(regex::Regex, String, Option<String>),
    /// `custom_constraint: name`: accepted and recorded, not yet checked against the
    /// services (the resource creation that uses the value fails instead).
    Custom(String),
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct ParamDef {
    /// Its type.
    pub ty: ParamType,
    /// The default, when declared.
    pub default: Option<Value>,
    /// `hidden: true`: shown as `******`.
    pub hidden: bool,
    /// `label`.
    pub label: Option<String>,
    /// `description`.
    pub description: String,
    /// Constraints, checked in order.
    pub constraints: Vec<Constraint>,
    /// `immutable`.
    pub immutable: bool,
}

fn num(v: Option<&Value>, path: &str) -> HeatResult<Option<f64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| invalid(format!("{path}: \"{s}\" is not a number")))
        }
        Some(o) => Err(invalid(format!("{path}: {o} is not a number"))),
    }
}

impl ParamDef {
    /// Parses the declaration at `parameters.<name>`.
    pub fn parse(name: &str, v: &Value) -> HeatResult<ParamDef> {
        let path = format!("parameters.{name}");
        let m = v.as_object().ok_or_else(|| invalid(format!("{path}: a parameter must be a map with a type")))?;
        for k in m.keys() {
            if !["type", "default", "hidden", "label", "description", "constraints", "immutable", "tags"]
                .contains(&k.as_str())
            {
                return Err(invalid(format!("Invalid key '{k}' for parameter ({name})")));
            }
        }
        let ty = match m.get("type") {
            Some(Value::String(t)) => ParamType::parse(t).ok_or_else(|| {
                invalid(format!(
                    "Invalid type ({t}) for parameter ({name}): it must be one of string, number, json, comma_delimited_list, boolean"
                ))
            })?,
            _ => return Err(invalid(format!("Missing parameter type for parameter: {name}"))),
        };
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let flag = |k: &str| match m.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => stratus_core::query::parse_bool(s).unwrap_or(false),
            _ => false,
        };
        let mut constraints = Vec::new();
        match m.get("constraints") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, c) in list.iter().enumerate() {
                    constraints.push(parse_constraint(c, &format!("{path}.constraints[{i}]"))?);
                }
            }
            Some(_) => return Err(invalid(format!("{path}.constraints: constraints must be a list"))),
        }
        let def = ParamDef {
            ty,
            default: m.get("default").filter(|d| !d.is_null()).cloned(),
            hidden: flag("hidden"),
            label: text("label"),
            description: text("description").unwrap_or_default(),
            constraints,
            immutable: flag("immutable"),
        };
        if let Some(d) = &def.default {
            def.coerce(name, d).map_err(|e| invalid(format!("Parameter '{name}' is invalid: default: {e}")))?;
        }
        Ok(def)
    }

    /// Converts `raw` to this parameter's type and checks the constraints. The error
    /// says what is wrong with the value (the caller adds which parameter).
    pub fn coerce(&self, name: &str, raw: &Value) -> Result<Value, String> {
        let v = match self.ty {
            ParamType::String => match raw {
                Value::String(s) => Value::String(s.clone()),
                Value::Number(n) => Value::String(n.to_string()),
                Value::Bool(b) => Value::String(b.to_string()),
                other => return Err(format!("Value must be a string; got {other}")),
            },
            ParamType::Number => match raw {
                Value::Number(n) => Value::Number(n.clone()),
                Value::String(s) => {
                    let t = s.trim();
                    if let Ok(i) = t.parse::<i64>() {
                        Value::from(i)
                    } else if let Some(n) = t.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                        Value::Number(n)
                    } else {
                        return Err(format!("Value '{s}' is not a number"));
                    }
                }
                other => return Err(format!("Value {other} is not a number")),
            },
            ParamType::Json => match raw {
                Value::Object(_) | Value::Array(_) => raw.clone(),
                Value::String(s) if s.trim().is_empty() => Value::Object(Map::new()),
                Value::String(s) => match serde_json::from_str::<Value>(s) {
                    Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
                    _ => return Err(format!("Value '{s}' is not a JSON map or list")),
                },
                other => return Err(format!("Value {other} is not a JSON map or list")),
            },
            ParamType::CommaDelimitedList => match raw {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => Value::String(s.clone()),
                            o => Value::String(o.to_string()),
                        })
                        .collect(),
                ),
                Value::String(s) if s.is_empty() => Value::Array(vec![]),
                Value::String(s) => Value::Array(s.split(',').map(|p| Value::String(p.trim().to_string())).collect()),
                other => return Err(format!("Value {other} is not a comma-delimited list")),
            },
            ParamType::Boolean => match raw {
                Value::Bool(b) => Value::Bool(*b),
                Value::String(s) => Value::Bool(
                    stratus_core::query::parse_bool(s)
                        .ok_or_else(|| format!("Unrecognized value \"{s}\", acceptable values are: true, false"))?,
                ),
                Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                    Value::Bool(n.as_i64() == Some(1))
                }
                other => return Err(format!("Unrecognized value {other}, acceptable values are: true, false")),
            },
        };
        for c in &self.constraints {
            check_constraint(c, &v)?;
        }
        let _ = name;
        Ok(v)
    }

    /// The value shown in stack details (`******` when hidden).
    pub fn shown(&self, v: &Value) -> Value {
        if self.hidden {
            return Value::String("******".into());
        }
        match v {
            Value::String(_) => v.clone(),
            Value::Array(items) if self.ty == ParamType::CommaDelimitedList => Value::String(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            other => Value::String(other.to_string()),
        }
    }
}

fn parse_constraint(c: &Value, path: &str) -> HeatResult<Constraint> {
    let m = c.as_object().ok_or_else(|| invalid(format!("{path}: a constraint must be a map")))?;
    let desc = m.get("description").and_then(Value::as_str).map(str::to_string);
    let kind: Vec<&String> = m.keys().filter(|k| k.as_str() != "description").collect();
    let [k] = kind.as_slice() else {
        return Err(invalid(format!("{path}: a constraint must have exactly one type besides its description")));
    };
    let v = &m[k.as_str()];
    let bounds = |v: &Value| -> HeatResult<(Option<f64>, Option<f64>)> {
        let o = v.as_object().ok_or_else(|| invalid(format!("{path}.{k}: must be a map with min and/or max")))?;
        let (min, max) =
            (num(o.get("min"), &format!("{path}.{k}.min"))?, num(o.get("max"), &format!("{path}.{k}.max"))?);
        if min.is_none() && max.is_none() {
            return Err(invalid(format!("{path}.{k}: needs min and/or max")));
        }
        Ok((min, max))
    };
    Ok(match k.as_str() {
        "length" => {
            let (a, b) = bounds(v)?;
            Constraint::Length(a, b, desc)
        }
        "range" => {
            let (a, b) = bounds(v)?;
            Constraint::Range(a, b, desc)
        }
        "allowed_values" => match v {
            Value::Array(list) => Constraint::AllowedValues(list.clone(), desc),
            _ => return Err(invalid(format!("{path}.allowed_values: must be a list"))),
        },
        "allowed_pattern" => match v {
            Value::String(p) => {
                let re = regex::Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| invalid(format!("{path}.allowed_pattern: invalid pattern: {e}")))?;
                Constraint::AllowedPattern(re, p.clone(), desc)
            }
            _ => return Err(invalid(format!("{path}.allowed_pattern: must be a string"))),
        },
        "custom_constraint" => Constraint::Custom(v.as_str().unwrap_or_default().to_string()),
        other => return Err(invalid(format!("{path}: unknown constraint type \"{other}\""))),
    })
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn check_constraint(c: &Constraint, v: &Value) -> Result<(), String> {
    let or = |desc: &Option<String>, default: String| desc.clone().unwrap_or(default);
    match c {
        Constraint::Length(min, max, desc) => {
            let len = match v {
                Value::String(s) => s.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                _ => return Ok(()),
            } as f64;
            if min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m) {
                let want = match (min, max) {
                    (Some(a), Some(b)) => format!("between {} and {}", fmt_num(*a), fmt_num(*b)),
                    (Some(a), None) => format!("at least {}", fmt_num(*a)),
                    (None, Some(b)) => format!("no more than {}", fmt_num(*b)),
                    (None, None) => String::new(),
                };
                return Err(or(desc, format!("length must be {want}")));
            }
        }
        Constraint::Range(min, max, desc) => {
            let Some(n) = v.as_f64() else { return Ok(()) };
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                let want = match (min, max) {
                    (Some(a), Some(b)) => format!("between {} and {}", fmt_num(*a), fmt_num(*b)),
                    (Some(a), None) => format!("at least {}", fmt_num(*a)),
                    (None, Some(b)) => format!("no more than {}", fmt_num(*b)),
                    (None, None) => String::new(),
                };
                return Err(or(desc, format!("{} must be {want}", fmt_num(n))));
            }
        }
        Constraint::AllowedValues(list, desc) => {
            let same = |a: &Value| match (a, v) {
                (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
                (Value::String(x), Value::Number(y)) | (Value::Number(y), Value::String(x)) => {
                    x.parse::<f64>().ok() == y.as_f64()
                }
                (x, y) => x == y,
            };
            let ok = match v {
                Value::Array(items) => items.iter().all(|i| list.iter().any(|a| a == i)),
                _ => list.iter().any(same),
            };
            if !ok {
                let shown: Vec<String> = list
                    .iter()
                    .map(|a| a.as_str().map(|s| format!("'{s}'")).unwrap_or_else(|| a.to_string()))
                    .collect();
                let got = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                return Err(or(desc, format!("\"{got}\" is not an allowed value [{}]", shown.join(", "))));
            }
        }
        Constraint::AllowedPattern(re, pattern, desc) => {
            if let Value::String(s) = v {
                if !re.is_match(s) {
                    return Err(or(desc, format!("\"{s}\" does not match pattern \"{pattern}\"")));
                }
            }
        }
        Constraint::Custom(_) => {}
    }
    Ok(())
}

/// Turns a value error of parameter `name` into Heat's message.
pub fn value_error(name: &str, why: &str) -> HeatError {
    invalid(format!("Parameter '{name}' is invalid: {why}"))
}
