//! `extra_dhcp_opts` of ports: DHCP options the DHCP agent hands this port
//! (`{"opt_name", "opt_value", "ip_version"}`). On update, options merge by
//! (`opt_name`, `ip_version`): a new value replaces the old one, a null value removes it.

use serde_json::{json, Value};

use crate::error::{invalid, NetResult};

fn parse_one(o: &Value, allow_null: bool) -> NetResult<(String, i64, Option<String>)> {
    let name = o["opt_name"]
        .as_str()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(format!("'{o}' has no valid opt_name")))?;
    if name.len() > 64 {
        return Err(invalid(format!("opt_name '{name}' is longer than 64 characters")));
    }
    let version = match &o["ip_version"] {
        Value::Null => 4,
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    };
    if version != 4 && version != 6 {
        return Err(invalid(format!("'{}' is not in [4, 6]", o["ip_version"])));
    }
    let value = match &o["opt_value"] {
        Value::String(s) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        Value::Null if allow_null => None,
        other => return Err(invalid(format!("'{other}' is not a valid opt_value for {name}"))),
    };
    Ok((name.to_string(), version, value))
}

fn entry(name: &str, version: i64, value: &str) -> Value {
    json!({"opt_name": name, "opt_value": value, "ip_version": version})
}

/// The options of a new port.
pub fn validate(v: Option<&Value>) -> NetResult<Value> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(json!([])) };
    let arr = v.as_array().ok_or_else(|| invalid(format!("'{v}' is not a list")))?;
    let mut out: Vec<Value> = Vec::new();
    for o in arr {
        let (n, ver, val) = parse_one(o, false)?;
        out.retain(|e| !(e["opt_name"] == json!(n) && e["ip_version"] == json!(ver)));
        out.push(entry(&n, ver, val.as_deref().unwrap_or_default()));
    }
    Ok(Value::Array(out))
}

/// `cur` updated with the request `req`.
pub fn merge(cur: &Value, req: &Value) -> NetResult<Value> {
    if req.is_null() {
        return Ok(json!([]));
    }
    let arr = req.as_array().ok_or_else(|| invalid(format!("'{req}' is not a list")))?;
    let mut out: Vec<Value> = cur.as_array().cloned().unwrap_or_default();
    for o in arr {
        let (n, ver, val) = parse_one(o, true)?;
        out.retain(|e| !(e["opt_name"] == json!(n) && e["ip_version"] == json!(ver)));
        if let Some(val) = val {
            out.push(entry(&n, ver, &val));
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_validate_and_merge() {
        let v = validate(Some(&json!([{"opt_name": "mtu", "opt_value": "1400"}]))).unwrap();
        assert_eq!(v, json!([{"opt_name": "mtu", "opt_value": "1400", "ip_version": 4}]));
        assert!(validate(Some(&json!([{"opt_name": "", "opt_value": "x"}]))).is_err());
        assert!(validate(Some(&json!([{"opt_name": "a", "opt_value": "x", "ip_version": 5}]))).is_err());
        let m = merge(
            &v,
            &json!([{"opt_name": "mtu", "opt_value": null}, {"opt_name": "ntp-server", "opt_value": "10.0.0.9"}]),
        )
        .unwrap();
        assert_eq!(m, json!([{"opt_name": "ntp-server", "opt_value": "10.0.0.9", "ip_version": 4}]));
    }
}
