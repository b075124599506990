//! Server-side sessions: what a logged-in browser is, bounded in number.
//!
//! The browser holds only a random id in an `HttpOnly`, `SameSite=Strict` cookie (and
//! `Secure` when the cloud is served over TLS). The store maps it to the user's Keystone
//! token, the projects they may switch to, the session's CSRF token and a one-shot
//! message. The token stays the authority: every request validates it with identity, so
//! a revoked or expired token ends the session at once. The store holds at most
//! `max_sessions`; when full, sessions idle longer than `idle` go first, then the least
//! recently used, so a flood of logins cannot grow memory without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "stratus_session";
/// Name of the cookie carrying the login form's CSRF token (before there is a session).
pub const LOGIN_CSRF_COOKIE: &str = "stratus_login_csrf";

/// A project the user may switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRef {
    /// Project id.
    pub id: String,
    /// Project name.
    pub name: String,
}

/// A message shown once on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// True for a failure.
    pub error: bool,
    /// The text (escaped when rendered).
    pub text: String,
}

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The project-scoped Keystone token calls are made with.
    pub token: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// Projects the user has a role on.
    pub projects: Vec<ProjectRef>,
    /// The next page's message.
    pub flash: Option<Flash>,
    last_used: Instant,
}

impl Session {
    /// A new session for `token`.
    pub fn new(token: String, projects: Vec<ProjectRef>) -> Self {
        Session { token, csrf: random_token(), projects, flash: None, last_used: Instant::now() }
    }
}

/// The bounded store.
pub struct SessionStore {
    inner: Mutex<HashMap<String, Session>>,
    max: usize,
    idle: Duration,
}

impl SessionStore {
    /// A store of at most `max` sessions, each dropped after `idle` without a request.
    pub fn new(max: usize, idle: Duration) -> Self {
        SessionStore { inner: Mutex::new(HashMap::new()), max: max.max(1), idle }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave a half-written session (every
        // update is one insert or field write), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `s` and returns its new id, making room first when the store is full.
    pub fn insert(&self, s: Session) -> String {
        let id = random_token();
        let mut m = self.lock();
        if m.len() >= self.max {
            let idle = self.idle;
            m.retain(|_, v| v.last_used.elapsed() < idle);
        }
        while m.len() >= self.max {
            let oldest = m.iter().min_by_key(|(_, v)| v.last_used).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => m.remove(&k),
                None => break,
            };
        }
        m.insert(id.clone(), s);
        id
    }

    /// The session `id` (marking it used), unless absent or idle too long.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut m = self.lock();
        let s = m.get_mut(id)?;
        if s.last_used.elapsed() >= self.idle {
            m.remove(id);
            return None;
        }
        s.last_used = Instant::now();
        Some(s.clone())
    }

    /// Applies `f` to session `id` when it exists.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.lock().get_mut(id) {
            f(s);
        }
    }

    /// Takes the session's one-shot message.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 32 random bytes, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Compares two tokens in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_bounded_and_evicts_the_least_recently_used() {
        let store = SessionStore::new(2, Duration::from_secs(3600));
        let a = store.insert(Session::new("ta".into(), vec![]));
        std::thread::sleep(Duration::from_millis(2));
        let b = store.insert(Session::new("tb".into(), vec![]));
        std::thread::sleep(Duration::from_millis(2));
        assert!(store.get(&a).is_some(), "a is now the most recently used");
        let c = store.insert(Session::new("tc".into(), vec![]));
        assert_eq!(store.len(), 2);
        assert!(store.get(&b).is_none(), "b was the least recently used");
        assert_eq!(store.get(&a).map(|s| s.token), Some("ta".into()));
        assert_eq!(store.get(&c).map(|s| s.token), Some("tc".into()));
    }

    #[test]
    fn idle_sessions_end() {
        let store = SessionStore::new(10, Duration::from_millis(1));
        let a = store.insert(Session::new("ta".into(), vec![]));
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.get(&a).is_none());
        assert!(store.is_empty());
    }

    #[test]
    fn tokens_and_cookies() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert!(tokens_match(&t, &t.clone()));
        assert!(!tokens_match(&t, &random_token()));
        assert!(!tokens_match("", ""));
        assert_eq!(cookie("a=1; stratus_session=xyz; b=2", SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie("a=1", SESSION_COOKIE), None);
    }
}
