//! oslo.policy's rule language and enforcement.
//!
//! Rules read as in OpenStack's `policy.yaml`: `role:admin or (role:member and
//! project_id:%(project_id)s)`, `rule:admin_or_owner`, `@` (always), `!` (never),
//! `not ...`, `is_admin:True`, `system_scope:all`. Each service ships its defaults in
//! code; an operator file (YAML or JSON, `name: rule`) overrides any of them, e.g.
//! `"publicize_image": "role:admin"` as the Glance guides do.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use stratus_core::{ApiError, RequestContext};

/// A policy rule shipped in code.
#[derive(Debug, Clone, Copy)]
pub struct PolicyDefault {
    /// Rule name (`os_compute_api:servers:create`, `identity:list_users`).
    pub name: &'static str,
    /// Default check string.
    pub check: &'static str,
    /// What the rule protects.
    pub description: &'static str,
}

/// Errors loading or parsing policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A rule does not parse.
    #[error("policy rule {name:?} does not parse: {reason} (in {text:?})")]
    Parse {
        /// Rule name.
        name: String,
        /// Its text.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// The override file cannot be read.
    #[error("cannot read policy file {path}: {reason}")]
    File {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Always,
    Never,
    Not(Box<Rule>),
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Named(String),
    Role(String),
    Generic { kind: String, value: String },
}

/// Effective policy of one service.
#[derive(Debug, Clone)]
pub struct Policy {
    service: String,
    rules: HashMap<String, Rule>,
    texts: Vec<(String, String)>,
}

impl Policy {
    /// Builds the policy of `service` from its defaults and an optional override file.
    pub fn load(service: &str, defaults: &[PolicyDefault], overrides: Option<&Path>) -> Result<Policy, PolicyError> {
        let mut texts: Vec<(String, String)> =
            defaults.iter().map(|d| (d.name.to_string(), d.check.to_string())).collect();
        if let Some(path) = overrides {
            let raw = std::fs::read_to_string(path)
                .map_err(|e| PolicyError::File { path: path.display().to_string(), reason: e.to_string() })?;
            let map: HashMap<String, String> = serde_yaml::from_str(&raw)
                .map_err(|e| PolicyError::File { path: path.display().to_string(), reason: e.to_string() })?;
            for (k, v) in map {
                match texts.iter_mut().find(|(n, _)| *n == k) {
                    Some(slot) => slot.1 = v,
                    None => texts.push((k, v)),
                }
            }
        }
        let mut rules = HashMap::new();
        for (name, text) in &texts {
            let rule =
                parse(text).map_err(|reason| PolicyError::Parse { name: name.clone(), text: text.clone(), reason })?;
            rules.insert(name.clone(), rule);
        }
        Ok(Policy { service: service.to_string(), rules, texts })
    }

    /// The effective rules, in definition order, for `stratus policy show`.
    pub fn rules(&self) -> &[(String, String)] {
        &self.texts
    }

    /// True when `ctx` may do `action` on `target`.
    pub fn check(&self, action: &str, ctx: &RequestContext, target: &Value) -> bool {
        match self.rules.get(action) {
            Some(rule) => self.eval(rule, ctx, target, 0),
            None => {
                tracing::error!(service = %self.service, action, "no policy rule defined; denying");
                false
            }
        }
    }

    /// Like [`Policy::check`], but a denial is a 403 in OpenStack's words.
    pub fn enforce(&self, action: &str, ctx: &RequestContext, target: &Value) -> Result<(), ApiError> {
        if self.check(action, ctx, target) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("Policy doesn't allow {action} to be performed.")))
        }
    }

    fn eval(&self, rule: &Rule, ctx: &RequestContext, target: &Value, depth: usize) -> bool {
        if depth > 32 {
            tracing::error!(service = %self.service, "policy rules recurse too deeply; denying");
            return false;
        }
        match rule {
            Rule::Always => true,
            Rule::Never => false,
            Rule::Not(r) => !self.eval(r, ctx, target, depth + 1),
            Rule::And(rs) => rs.iter().all(|r| self.eval(r, ctx, target, depth + 1)),
            Rule::Or(rs) => rs.iter().any(|r| self.eval(r, ctx, target, depth + 1)),
            Rule::Named(name) => match self.rules.get(name) {
                Some(r) => self.eval(r, ctx, target, depth + 1),
                None => false,
            },
            Rule::Role(role) => match substitute(role, target) {
                Some(role) => ctx.has_role(&role),
                None => false,
            },
            Rule::Generic { kind, value } => {
                let Some(expected) = substitute(value, target) else { return false };
                let actual = credential(ctx, kind);
                match actual {
                    Some(a) => a.eq_ignore_ascii_case(&expected) && !(a.is_empty() && expected.is_empty()),
                    None => false,
                }
            }
        }
    }
}

/// The caller's value of credential `kind`.
fn credential(ctx: &RequestContext, kind: &str) -> Option<String> {
    match kind {
        "user_id" => Some(ctx.user_id.clone()),
        "user_name" | "username" => Some(ctx.user_name.clone()),
        "user_domain_id" => Some(ctx.user_domain_id.clone()),
        "project_id" | "tenant" | "tenant_id" => ctx.project_id.clone(),
        "project_domain_id" => ctx.project_domain_id.clone(),
        "domain_id" => ctx.domain_id.clone(),
        "system_scope" => ctx.system_scope.then(|| "all".to_string()),
        "is_admin" => Some(if ctx.is_admin() { "true".into() } else { "false".into() }),
        _ => None,
    }
}

/// Expands `%(name)s` from `target`; `None` when the key is missing. Literals pass as-is
/// (quotes stripped).
fn substitute(value: &str, target: &Value) -> Option<String> {
    if let Some(inner) = value.strip_prefix("%(").and_then(|v| v.strip_suffix(")s")) {
        let v = lookup(target, inner)?;
        return match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
    }
    let v = value.trim_matches(|c| c == '\'' || c == '"');
    Some(v.to_string())
}

fn lookup<'a>(target: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = target.get(key) {
        return Some(v);
    }
    // Dotted paths (`target.user.domain_id`) into nested objects.
    let mut cur = target;
    for part in key.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

// --- parser -----------------------------------------------------------------------

/// Splits like oslo.policy: on whitespace, then peels parentheses off the ends of each
/// word, so `%(project_id)s` inside a check stays whole.
fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let mut w = word;
        while let Some(rest) = w.strip_prefix('(') {
            out.push("(".to_string());
            w = rest;
        }
        let mut closing = 0;
        // Peel only unbalanced closing parens: `%(name)s)` keeps its own pair.
        while w.matches(')').count() > w.matches('(').count() {
            let Some(rest) = w.strip_suffix(')') else { break };
            closing += 1;
            w = rest;
        }
        if !w.is_empty() {
            out.push(w.to_string());
        }
        out.extend(std::iter::repeat_n(")".to_string(), closing));
    }
    out
}

fn parse(text: &str) -> Result<Rule, String> {
    let toks = tokenize(text);
    if toks.is_empty() {
        return Ok(Rule::Always);
    }
    let mut pos = 0;
    let r = parse_or(&toks, &mut pos)?;
    if pos != toks.len() {
        return Err(format!("unexpected {:?}", toks[pos]));
    }
    Ok(r)
}

fn parse_or(t: &[String], pos: &mut usize) -> Result<Rule, String> {
    let mut items = vec![parse_and(t, pos)?];
    while t.get(*pos).is_some_and(|s| s.eq_ignore_ascii_case("or")) {
        *pos += 1;
        items.push(parse_and(t, pos)?);
    }
    Ok(if items.len() == 1 { items.pop().unwrap_or(Rule::Never) } else { Rule::Or(items) })
}

fn parse_and(t: &[String], pos: &mut usize) -> Result<Rule, String> {
    let mut items = vec![parse_not(t, pos)?];
    while t.get(*pos).is_some_and(|s| s.eq_ignore_ascii_case("and")) {
        *pos += 1;
        items.push(parse_not(t, pos)?);
    }
    Ok(if items.len() == 1 { items.pop().unwrap_or(Rule::Never) } else { Rule::And(items) })
}

fn parse_not(t: &[String], pos: &mut usize) -> Result<Rule, String> {
    if t.get(*pos).is_some_and(|s| s.eq_ignore_ascii_case("not")) {
        *pos += 1;
        return Ok(Rule::Not(Box::new(parse_not(t, pos)?)));
    }
    parse_atom(t, pos)
}

fn parse_atom(t: &[String], pos: &mut usize) -> Result<Rule, String> {
    let tok = t.get(*pos).ok_or("unexpected end of rule")?.clone();
    *pos += 1;
    match tok.as_str() {
        "(" => {
            let r = parse_or(t, pos)?;
            if t.get(*pos).map(String::as_str) != Some(")") {
                return Err("missing ')'".into());
            }
            *pos += 1;
            Ok(r)
        }
        ")" => Err("unexpected ')'".into()),
        "@" => Ok(Rule::Always),
        "!" => Ok(Rule::Never),
        _ => {
            let (kind, value) = tok.split_once(':').ok_or_else(|| format!("{tok:?} is not a check (kind:value)"))?;
            Ok(match kind {
                "rule" => Rule::Named(value.to_string()),
                "role" => Rule::Role(value.to_string()),
                _ => Rule::Generic { kind: kind.to_string(), value: value.to_string() },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFAULTS: &[PolicyDefault] = &[
        PolicyDefault { name: "admin_required", check: "role:admin", description: "" },
        PolicyDefault { name: "owner", check: "project_id:%(project_id)s", description: "" },
        PolicyDefault { name: "admin_or_owner", check: "rule:admin_required or rule:owner", description: "" },
        PolicyDefault { name: "member_in_project", check: "role:member and (rule:owner)", description: "" },
        PolicyDefault { name: "not_reader", check: "not role:reader", description: "" },
        PolicyDefault { name: "publicize_image", check: "role:admin", description: "" },
        PolicyDefault { name: "anyone", check: "@", description: "" },
        PolicyDefault { name: "nobody", check: "!", description: "" },
        PolicyDefault { name: "empty", check: "", description: "" },
        PolicyDefault { name: "system", check: "role:reader and system_scope:all", description: "" },
        PolicyDefault { name: "is_admin", check: "is_admin:True", description: "" },
    ];

    fn ctx(project: &str, roles: &[&str]) -> RequestContext {
        RequestContext {
            user_id: "u1".into(),
            project_id: Some(project.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn evaluates_oslo_rules() {
        let p = Policy::load("test", DEFAULTS, None).unwrap();
        let member_a = ctx("A", &["member", "reader"]);
        let admin = ctx("X", &["admin"]);
        let tgt_a = json!({"project_id": "A"});
        let tgt_b = json!({"project_id": "B"});
        assert!(p.check("admin_or_owner", &member_a, &tgt_a));
        assert!(!p.check("admin_or_owner", &member_a, &tgt_b));
        assert!(p.check("admin_or_owner", &admin, &tgt_b));
        assert!(p.check("member_in_project", &member_a, &tgt_a));
        assert!(!p.check("not_reader", &member_a, &tgt_a));
        assert!(p.check("anyone", &member_a, &tgt_a) && p.check("empty", &member_a, &tgt_a));
        assert!(!p.check("nobody", &admin, &tgt_a));
        assert!(!p.check("owner", &member_a, &json!({})), "missing target key denies");
        assert!(!p.check("undefined_rule", &admin, &tgt_a), "unknown rule denies");
        assert!(p.check("is_admin", &admin, &tgt_a) && !p.check("is_admin", &member_a, &tgt_a));
        let mut sys = ctx("A", &["reader"]);
        assert!(!p.check("system", &sys, &tgt_a));
        sys.system_scope = true;
        assert!(p.check("system", &sys, &tgt_a));
        let e = p.enforce("publicize_image", &member_a, &tgt_a).unwrap_err();
        assert_eq!(e.status.as_u16(), 403);
        assert!(e.message.contains("publicize_image"));
    }

    #[test]
    fn override_file_replaces_defaults_and_bad_rules_fail_loudly() {
        let dir = std::env::temp_dir().join(format!("stratus-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("policy.yaml");
        std::fs::write(&f, "\"publicize_image\": \"role:member\"\n").unwrap();
        let p = Policy::load("image", DEFAULTS, Some(&f)).unwrap();
        assert!(p.check("publicize_image", &ctx("A", &["member"]), &json!({})));
        assert!(p.rules().iter().any(|(n, t)| n == "publicize_image" && t == "role:member"));
        std::fs::write(&f, "\"x\": \"role:admin or (\"\n").unwrap();
        let e = Policy::load("image", DEFAULTS, Some(&f)).unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
