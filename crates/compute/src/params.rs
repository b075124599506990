//! Nova's request parameter types that a plain serde type does not express: values Nova's
//! JSON schemas accept in more than one JSON kind.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The spellings Nova's `parameter_types.boolean` accepts besides JSON `true`/`false`.
const TRUE_WORDS: &[&str] = &["True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes"];
const FALSE_WORDS: &[&str] = &["False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no"];

/// Nova's boolean: JSON `true`/`false` or one of the strings Nova lists ("True", "yes",
/// "0", ...). Anything else is refused with a message naming the accepted values.
pub fn nova_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if TRUE_WORDS.contains(&s.as_str()) => Ok(true),
        Value::String(s) if FALSE_WORDS.contains(&s.as_str()) => Ok(false),
        other => Err(format!(
            "{other} is not a boolean: use true or false (or one of the strings {})",
            TRUE_WORDS.iter().chain(FALSE_WORDS).copied().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// serde `deserialize_with` for an optional field typed as Nova's boolean.
pub fn opt_nova_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => nova_bool(&v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Nova's `accessIPv4`: a dotted-quad IPv4 address.
pub fn access_ipv4(s: &str) -> Result<String, String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("Invalid input for field/attribute accessIPv4: {s:?} is not an IPv4 address"))
}

/// Nova's `accessIPv6`: an IPv6 address, kept in its canonical (compressed) form as Nova
/// shows it (`0000:…:babe:220.12.22.2` → `::babe:dc0c:1602`).
pub fn access_ipv6(s: &str) -> Result<String, String> {
    s.parse::<std::net::Ipv6Addr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("Invalid input for field/attribute accessIPv6: {s:?} is not an IPv6 address"))
}

/// A requested server `hostname` (2.90+): Nova's hostname (2–63 of `[A-Za-z0-9-._]`)
/// before 2.94, a fully qualified name (at most 255 characters, labels of at most 63)
/// from 2.94.
pub fn hostname(s: &str, fqdn: bool) -> Result<String, String> {
    let chars_ok = s.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    let ok = if fqdn {
        chars_ok && (1..=255).contains(&s.len()) && s.split('.').all(|l| l.len() <= 63)
    } else {
        chars_ok && (2..=63).contains(&s.len())
    };
    if ok {
        Ok(s.to_string())
    } else if fqdn {
        Err(format!("Invalid hostname {s:?}: a name of at most 255 characters (labels of at most 63) of letters, digits, '-', '.' and '_'"))
    } else {
        Err(format!("Invalid hostname {s:?}: 2 to 63 letters, digits, '-', '.' or '_'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nova_bool_takes_json_booleans_and_nova_strings_only() {
        assert_eq!(nova_bool(&json!(true)), Ok(true));
        assert_eq!(nova_bool(&json!("True")), Ok(true));
        assert_eq!(nova_bool(&json!("off")), Ok(false));
        assert_eq!(nova_bool(&json!("False")), Ok(false));
        assert!(nova_bool(&json!("maybe")).is_err());
        assert!(nova_bool(&json!(1)).is_err());
        assert!(nova_bool(&json!("tRuE")).is_err(), "Nova's enum is case-exact");
    }

    #[test]
    fn hostnames_are_checked_by_microversion() {
        assert!(hostname("web-1", false).is_ok());
        assert!(hostname(&"a".repeat(64), false).is_err());
        assert!(hostname(&"a".repeat(300), true).is_err());
        assert!(hostname("a.example.org", true).is_ok());
        assert!(hostname("bad name", true).is_err());
    }

    #[test]
    fn access_ips_are_checked_and_ipv6_made_canonical() {
        assert_eq!(access_ipv6("0000:0000:0000:0000:0000:babe:220.12.22.2").unwrap(), "::babe:dc0c:1602");
        assert!(access_ipv6("notvalid").is_err());
        assert_eq!(access_ipv4("1.2.3.4").unwrap(), "1.2.3.4");
        assert!(access_ipv4("1.1.1.1.1.1").is_err());
        assert!(access_ipv4("not-an-ip").is_err());
    }
}
