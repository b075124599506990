//! Revocation events, kept in memory for the validation hot path.
//!
//! Keystone does not remember tokens, so it cannot delete one; instead it records an
//! event ("tokens of user U issued before T are void", "the token with audit id A is
//! void") and checks each token against the events. Events are written to the
//! database (so restarts and other nodes see them) and indexed here by the fields a
//! token always has, so a check is a few hash lookups however many events exist.
//! Events older than the longest token lifetime can no longer match and are pruned.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::fernet::{audit_text, Payload, Scope};

/// One revocation event; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// Event id (database key).
    pub id: String,
    /// Tokens of this user.
    pub user_id: Option<String>,
    /// Tokens scoped to this project.
    pub project_id: Option<String>,
    /// Tokens scoped to this domain.
    pub domain_id: Option<String>,
    /// The token with this audit id.
    pub audit_id: Option<String>,
    /// Tokens of this audit chain (a token and every token made from it).
    pub audit_chain_id: Option<String>,
    /// Tokens made with this application credential.
    pub app_cred_id: Option<String>,
    /// Tokens issued at or before this time (µs since the epoch) are revoked.
    pub issued_before: i64,
}

/// The token's view the events are matched against.
struct TokenFacts<'a> {
    user_id: &'a str,
    project_id: Option<&'a str>,
    domain_id: Option<&'a str>,
    audit_id: String,
    chain_id: String,
    app_cred_id: Option<&'a str>,
    issued_at: i64,
}

impl Event {
    fn matches(&self, t: &TokenFacts<'_>) -> bool {
        fn eq(want: &Option<String>, have: Option<&str>) -> bool {
            match want {
                None => true,
                Some(w) => have == Some(w.as_str()),
            }
        }
        t.issued_at <= self.issued_before
            && eq(&self.user_id, Some(t.user_id))
            && eq(&self.project_id, t.project_id)
            && eq(&self.domain_id, t.domain_id)
            && eq(&self.audit_id, Some(&t.audit_id))
            && eq(&self.audit_chain_id, Some(&t.chain_id))
            && eq(&self.app_cred_id, t.app_cred_id)
    }

    /// The index key this event is filed under (its most selective field).
    fn key(&self) -> Key {
        if let Some(a) = &self.audit_id {
            Key::Audit(a.clone())
        } else if let Some(a) = &self.audit_chain_id {
            Key::Audit(a.clone())
        } else if let Some(u) = &self.user_id {
            Key::User(u.clone())
        } else if let Some(p) = &self.project_id {
            Key::Project(p.clone())
        } else if let Some(a) = &self.app_cred_id {
            Key::AppCred(a.clone())
        } else {
            Key::Other
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Audit(String),
    User(String),
    Project(String),
    AppCred(String),
    Other,
}

/// The in-memory event index.
#[derive(Debug, Default)]
pub struct Revocations {
    inner: RwLock<HashMap<Key, Vec<Event>>>,
}

impl Revocations {
    /// Adds events (duplicates by id are ignored).
    pub fn add(&self, events: impl IntoIterator<Item = Event>) {
        let mut map = self.inner.write();
        for e in events {
            let slot = map.entry(e.key()).or_default();
            if !slot.iter().any(|x| x.id == e.id) {
                slot.push(e);
            }
        }
    }

    /// Drops events no live token can be older than.
    pub fn prune(&self, older_than: i64) {
        let mut map = self.inner.write();
        map.retain(|_, v| {
            v.retain(|e| e.issued_before >= older_than);
            !v.is_empty()
        });
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.inner.read().values().map(Vec::len).sum()
    }

    /// True when no events are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when some event revokes the token with `payload`.
    pub fn is_revoked(&self, p: &Payload) -> bool {
        let map = self.inner.read();
        if map.is_empty() {
            return false;
        }
        let audit_id = audit_text(&p.audit_id);
        let chain_id = p.parent_audit_id.as_ref().map(audit_text).unwrap_or_else(|| audit_id.clone());
        let (project_id, domain_id) = match &p.scope {
            Scope::Project(x) => (Some(x.as_str()), None),
            Scope::Domain(x) => (None, Some(x.as_str())),
            _ => (None, None),
        };
        let facts = TokenFacts {
            user_id: &p.user_id,
            project_id,
            domain_id,
            audit_id: audit_id.clone(),
            chain_id: chain_id.clone(),
            app_cred_id: p.app_cred_id.as_deref(),
            issued_at: p.issued_at,
        };
        let mut keys = vec![Key::Audit(audit_id), Key::User(p.user_id.clone()), Key::Other];
        if chain_id != facts.audit_id {
            keys.push(Key::Audit(chain_id));
        }
        if let Some(pr) = project_id {
            keys.push(Key::Project(pr.to_string()));
        }
        if let Some(a) = &p.app_cred_id {
            keys.push(Key::AppCred(a.clone()));
        }
        keys.iter().filter_map(|k| map.get(k)).flatten().any(|e| e.matches(&facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(user: &str, project: &str, issued_at: i64) -> Payload {
        Payload {
            methods: 1,
            user_id: user.into(),
            scope: Scope::Project(project.into()),
            issued_at,
            expires_at: issued_at + 1000,
            audit_id: [issued_at as u8; 16],
            parent_audit_id: None,
            app_cred_id: None,
            trust_id: None,
        }
    }

    #[test]
    fn events_match_on_every_set_field_and_time() {
        let r = Revocations::default();
        let t1 = token("u1", "p1", 10);
        let t2 = token("u1", "p2", 20);
        assert!(!r.is_revoked(&t1));
        r.add([Event {
            id: "e1".into(),
            user_id: Some("u1".into()),
            project_id: Some("p1".into()),
            issued_before: 15,
            ..Default::default()
        }]);
        assert!(r.is_revoked(&t1));
        assert!(!r.is_revoked(&t2), "other project");
        assert!(!r.is_revoked(&token("u1", "p1", 16)), "issued after the event");
        r.add([Event {
            id: "e2".into(),
            audit_id: Some(audit_text(&t2.audit_id)),
            issued_before: 100,
            ..Default::default()
        }]);
        assert!(r.is_revoked(&t2));
        let mut child = token("u1", "p3", 30);
        child.parent_audit_id = Some(t2.audit_id);
        assert!(!r.is_revoked(&child), "audit_id event does not void the chain");
        r.add([Event {
            id: "e3".into(),
            audit_chain_id: Some(audit_text(&t2.audit_id)),
            issued_before: 100,
            ..Default::default()
        }]);
        assert!(r.is_revoked(&child));
        r.prune(50);
        assert_eq!(r.len(), 2);
    }
}
