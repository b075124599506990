//! What a Swift URL names: `/v1/<account>[/<container>[/<object>]]`, decoded and
//! checked against Swift's constraints (name lengths, UTF-8, no NUL).
//!
//! The path is taken raw from the request and percent-decoded here (not by the router),
//! because object names may contain `/`, `%2F`, `?`-free anything, and only the first two
//! `/` after the account separate the parts.

use crate::error::{Result, SwiftError};

/// Longest container name (bytes), as Swift's `MAX_CONTAINER_NAME_LENGTH`.
pub const MAX_CONTAINER_NAME: usize = 256;
/// Longest object name (bytes), as Swift's `MAX_OBJECT_NAME_LENGTH`.
pub const MAX_OBJECT_NAME: usize = 1024;
/// Longest account name (bytes).
pub const MAX_ACCOUNT_NAME: usize = 256;

/// A parsed Swift path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `AUTH_<project_id>`.
    pub account: String,
    /// Container, if named.
    pub container: Option<String>,
    /// Object (may contain `/`), if named.
    pub object: Option<String>,
}

impl Target {
    /// `/v1/<account>/<container>/<object>` as Swift shows it (`X-Copied-From` etc. use
    /// `<container>/<object>`).
    pub fn level(&self) -> Level {
        match (&self.container, &self.object) {
            (None, _) => Level::Account,
            (Some(_), None) => Level::Container,
            (Some(_), Some(_)) => Level::Object,
        }
    }
}

/// Which kind of resource a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `/v1/<account>`
    Account,
    /// `/v1/<account>/<container>`
    Container,
    /// `/v1/<account>/<container>/<object>`
    Object,
}

/// Percent-decodes `s` into UTF-8; `None` when the bytes are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters and `/` (for `Location` and
/// listing links).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn invalid_utf8() -> SwiftError {
    SwiftError::BadRequest("Invalid UTF8 or contains NULL".into())
}

/// Parses the path after the `/v1/` version segment (`AUTH_x/c/o...`).
pub fn parse(rest: &str) -> Result<Target> {
    let (acct_raw, after) = match rest.split_once('/') {
        Some((a, r)) => (a, Some(r)),
        None => (rest, None),
    };
    let account = percent_decode(acct_raw).ok_or_else(invalid_utf8)?;
    if account.is_empty() {
        return Err(SwiftError::NotFound);
    }
    if account.contains('\0') || account.len() > MAX_ACCOUNT_NAME {
        return Err(invalid_utf8());
    }
    let (container, object) = match after {
        None | Some("") => (None, None),
        Some(r) => {
            let (c_raw, o_raw) = match r.split_once('/') {
                Some((c, o)) => (c, Some(o)),
                None => (r, None),
            };
            let c = percent_decode(c_raw).ok_or_else(invalid_utf8)?;
            let o = match o_raw {
                None | Some("") => None,
                Some(o) => Some(percent_decode(o).ok_or_else(invalid_utf8)?),
            };
            if c.is_empty() {
                return Err(SwiftError::NotFound);
            }
            (Some(c), o)
        }
    };
    let t = Target { account, container, object };
    check(&t)?;
    Ok(t)
}

/// Swift's name constraints.
pub fn check(t: &Target) -> Result<()> {
    if let Some(c) = &t.container {
        if c.contains('\0') {
            return Err(invalid_utf8());
        }
        if c.len() > MAX_CONTAINER_NAME {
            return Err(SwiftError::BadRequest(format!(
                "Container name length of {} longer than {MAX_CONTAINER_NAME}",
                c.len()
            )));
        }
    }
    if let Some(o) = &t.object {
        if o.contains('\0') {
            return Err(invalid_utf8());
        }
        if o.len() > MAX_OBJECT_NAME {
            return Err(SwiftError::BadRequest(format!(
                "Object name length of {} longer than {MAX_OBJECT_NAME}",
                o.len()
            )));
        }
    }
    Ok(())
}

/// Splits `container/object` (as in `X-Copy-From`, `X-Object-Manifest`, SLO segment
/// paths, `X-Symlink-Target`), with or without a leading `/`, decoding percent escapes.
pub fn split_container_object(v: &str) -> Option<(String, String)> {
    let v = percent_decode(v)?;
    let v = v.strip_prefix('/').unwrap_or(&v);
    let (c, o) = v.split_once('/')?;
    if c.is_empty() || o.is_empty() {
        return None;
    }
    Some((c.to_string(), o.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse("AUTH_p/c/a/b%20c").unwrap();
        assert_eq!(t.account, "AUTH_p");
        assert_eq!(t.container.as_deref(), Some("c"));
        assert_eq!(t.object.as_deref(), Some("a/b c"));
        assert_eq!(parse("AUTH_p").unwrap().level(), Level::Account);
        assert_eq!(parse("AUTH_p/c").unwrap().level(), Level::Container);
        assert_eq!(parse("AUTH_p/c/").unwrap().level(), Level::Container);
        assert!(matches!(parse("AUTH_p/%FF"), Err(SwiftError::BadRequest(_))));
        assert!(matches!(parse(&format!("AUTH_p/{}", "c".repeat(257))), Err(SwiftError::BadRequest(_))));
        assert!(matches!(parse(&format!("AUTH_p/c/{}", "o".repeat(1025))), Err(SwiftError::BadRequest(_))));
        assert_eq!(split_container_object("/c/o/x").unwrap(), ("c".to_string(), "o/x".to_string()));
        assert!(split_container_object("c").is_none());
        assert_eq!(percent_decode("100%"), Some("100%".into()));
        assert_eq!(quote("a b/ü"), "a%20b/%C3%BC");
    }
}
