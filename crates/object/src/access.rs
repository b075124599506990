//! Who may do what: Swift's keystoneauth rules and container ACLs.
//!
//! The account `AUTH_<project_id>` belongs to that project. A token scoped to it with an
//! operator role (`member`, `admin` by default) is its owner; with a reader role
//! (`reader`) it may only read. The reseller admin role (`ResellerAdmin`) and `admin`
//! own every account, and only the reseller admin may set account quotas. Everyone else
//! gets in through a container ACL: `X-Container-Read` (`.r:*` for anyone, `.r:<host>`
//! by referrer, `.rlistings` to also list, `<project>:<user>` with ids or names and `*`
//! wildcards) and `X-Container-Write` (`<project>:<user>` only). Without a token and
//! without an ACL that lets anonymous callers in, the answer is 401; with a token that
//! grants nothing, 403.

use stratus_core::RequestContext;

use crate::error::SwiftError;
use crate::meta::Meta;

/// Role configuration (Swift's keystoneauth options).
#[derive(Debug, Clone)]
pub struct Roles {
    /// Roles that own their project's account (`operator_roles`).
    pub operator: Vec<String>,
    /// Roles that may read their project's account (`project_reader_roles`).
    pub reader: Vec<String>,
    /// The role that owns every account (`reseller_admin_role`).
    pub reseller_admin: String,
    /// Account name prefix (`AUTH_`).
    pub reseller_prefix: String,
}

/// What the caller may do in the target account, before ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Reseller admin: everything, including account quotas.
    ResellerAdmin,
    /// The account's owner (operator role in its project, or admin).
    Owner,
    /// Read-only member of the account's project.
    Reader,
    /// Nothing beyond what ACLs give.
    None,
}

impl Grant {
    /// Owner or reseller admin.
    pub fn owns(self) -> bool {
        matches!(self, Grant::Owner | Grant::ResellerAdmin)
    }
    /// May read anything in the account.
    pub fn reads(self) -> bool {
        self != Grant::None
    }
}

/// The caller's grant on `account`.
pub fn grant(roles: &Roles, ctx: Option<&RequestContext>, account: &str) -> Grant {
    let Some(ctx) = ctx else { return Grant::None };
    if ctx.has_role(&roles.reseller_admin) {
        return Grant::ResellerAdmin;
    }
    if ctx.is_admin() {
        return Grant::Owner;
    }
    let own = ctx.project_id.as_deref().is_some_and(|p| account == format!("{}{p}", roles.reseller_prefix));
    if !own {
        return Grant::None;
    }
    if roles.operator.iter().any(|r| ctx.has_role(r)) {
        Grant::Owner
    } else if roles.reader.iter().any(|r| ctx.has_role(r)) {
        Grant::Reader
    } else {
        Grant::None
    }
}

/// The refusal for a caller without rights: 401 anonymous, 403 authenticated.
pub fn deny(ctx: Option<&RequestContext>) -> SwiftError {
    if ctx.is_some() {
        SwiftError::Forbidden
    } else {
        SwiftError::Unauthorized
    }
}

/// Parsed container ACL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// `.r:` referrer rules (`*`, a host, `-host` to exclude).
    pub referrers: Vec<String>,
    /// `.rlistings`: referrer-admitted callers may list.
    pub listings: bool,
    /// `<project>:<user>` entries.
    pub users: Vec<(String, String)>,
}

/// Parses `X-Container-Read`/`-Write` values; 400 text for malformed entries, as Swift.
pub fn parse_acl(value: &str) -> Result<Acl, String> {
    let mut acl = Acl::default();
    for raw in value.split(',') {
        let item = raw.trim();
        if item.is_empty() {
            continue;
        }
        if let Some(r) = item
            .strip_prefix(".r:")
            .or_else(|| item.strip_prefix(".ref:"))
            .or_else(|| item.strip_prefix(".referer:").or_else(|| item.strip_prefix(".referrer:")))
        {
            if r.is_empty() {
                return Err(format!("No host/domain value after referrer designation in ACL: {item:?}"));
            }
            acl.referrers.push(r.to_string());
        } else if item == ".rlistings" {
            acl.listings = true;
        } else if item.starts_with('.') {
            return Err(format!("Unknown designator {item:?} in ACL"));
        } else {
            let (p, u) = item.split_once(':').unwrap_or((item, "*"));
            acl.users.push((p.to_string(), u.to_string()));
        }
    }
    Ok(acl)
}

fn referrer_allowed(rules: &[String], referer: Option<&str>) -> bool {
    let host = referer
        .and_then(|r| r.split("://").nth(1))
        .map(|r| r.split(['/', ':']).next().unwrap_or("").to_ascii_lowercase());
    let mut allowed = false;
    for rule in rules {
        let (neg, pat) = match rule.strip_prefix('-') {
            Some(p) => (true, p),
            None => (false, rule.as_str()),
        };
        let hit = pat == "*"
            || host.as_deref().is_some_and(|h| {
                let p = pat.to_ascii_lowercase();
                if let Some(suffix) = p.strip_prefix('.') {
                    h.ends_with(&format!(".{suffix}"))
                } else {
                    h == p
                }
            });
        if hit {
            allowed = !neg;
        }
    }
    allowed
}

fn user_matches(acl: &Acl, ctx: Option<&RequestContext>) -> bool {
    let Some(ctx) = ctx else { return false };
    acl.users.iter().any(|(p, u)| {
        let pm = p == "*"
            || ctx.project_id.as_deref() == Some(p.as_str())
            || ctx.project_name.as_deref() == Some(p.as_str());
        let um = u == "*" || ctx.user_id == *u || ctx.user_name == *u;
        pm && um
    })
}

/// What a container's ACLs allow the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct AclGrant {
    /// May read objects.
    pub read: bool,
    /// May list the container.
    pub list: bool,
    /// May write objects.
    pub write: bool,
}

/// Evaluates the container's ACLs for the caller.
pub fn acl_grant(meta: &Meta, ctx: Option<&RequestContext>, referer: Option<&str>) -> AclGrant {
    let read = meta.get("x-container-read").and_then(|v| parse_acl(v).ok()).unwrap_or_default();
    let write = meta.get("x-container-write").and_then(|v| parse_acl(v).ok()).unwrap_or_default();
    let user_read = user_matches(&read, ctx);
    let ref_read = referrer_allowed(&read.referrers, referer);
    AclGrant {
        read: user_read || ref_read,
        list: user_read || (ref_read && read.listings),
        write: user_matches(&write, ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(project: &str, roles: &[&str]) -> RequestContext {
        RequestContext {
            user_id: "u1".into(),
            user_name: "alice".into(),
            project_id: Some(project.into()),
            project_name: Some("demo".into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    fn roles() -> Roles {
        Roles {
            operator: vec!["admin".into(), "member".into()],
            reader: vec!["reader".into()],
            reseller_admin: "ResellerAdmin".into(),
            reseller_prefix: "AUTH_".into(),
        }
    }

    #[test]
    fn grants() {
        let r = roles();
        assert_eq!(grant(&r, Some(&ctx("p1", &["member"])), "AUTH_p1"), Grant::Owner);
        assert_eq!(grant(&r, Some(&ctx("p1", &["member"])), "AUTH_p2"), Grant::None);
        assert_eq!(grant(&r, Some(&ctx("p1", &["reader"])), "AUTH_p1"), Grant::Reader);
        assert_eq!(grant(&r, Some(&ctx("p1", &["ResellerAdmin"])), "AUTH_p9"), Grant::ResellerAdmin);
        assert_eq!(grant(&r, Some(&ctx("p1", &["admin"])), "AUTH_p9"), Grant::Owner);
        assert_eq!(grant(&r, None, "AUTH_p1"), Grant::None);
        assert!(matches!(deny(None), SwiftError::Unauthorized));
    }

    #[test]
    fn acls() {
        let mut m = Meta::new();
        m.insert("x-container-read".into(), ".r:*".into());
        let g = acl_grant(&m, None, None);
        assert!(g.read && !g.list && !g.write);
        m.insert("x-container-read".into(), ".r:*,.rlistings".into());
        assert!(acl_grant(&m, None, None).list);
        m.insert("x-container-read".into(), "demo:alice".into());
        m.insert("x-container-write".into(), "p1:*".into());
        let c = ctx("p1", &["member"]);
        let g = acl_grant(&m, Some(&c), None);
        assert!(g.read && g.list && g.write);
        assert!(!acl_grant(&m, None, None).read);
        m.insert("x-container-read".into(), ".r:.example.com,.r:-bad.example.com".into());
        assert!(acl_grant(&m, None, Some("http://www.example.com/x")).read);
        assert!(!acl_grant(&m, None, Some("http://bad.example.com/x")).read);
        assert!(parse_acl(".r:").is_err() && parse_acl(".bogus").is_err());
    }
}
