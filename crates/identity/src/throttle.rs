//! Failed-login rate limiting, in front of password hashing.
//!
//! Every password check costs an argon2id hash (tens of milliseconds and 19 MiB), also
//! for users that do not exist. A client that keeps failing therefore gets token buckets
//! of its own — one per source address and one per user name it tries — and once either
//! is empty it is refused with 429 *before* any hash runs. Only failures take tokens, so
//! a user who logs in correctly is never slowed down; Keystone's per-user lockout
//! (`lockout_failure_attempts`) stays as it is, behind this.
//!
//! Keys are hashed with a per-process random key (attacker-chosen names cannot collide
//! on purpose) and the table is bounded: buckets that have refilled completely are
//! forgotten, and when the table is still full a new key is let through unthrottled
//! (the hashing admission limit still bounds memory and CPU then).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

/// Configuration of one bucket family.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Failures allowed in a burst.
    pub burst: u32,
    /// Failures forgiven per minute.
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by a hash of the key.
#[derive(Debug)]
struct Buckets {
    rate: Rate,
    max_keys: usize,
    hasher: std::collections::hash_map::RandomState,
    map: Mutex<HashMap<u64, Bucket>>,
}

impl Buckets {
    fn new(rate: Rate, max_keys: usize) -> Self {
        Buckets { rate, max_keys, hasher: Default::default(), map: Mutex::new(HashMap::new()) }
    }

    fn key(&self, k: impl Hash) -> u64 {
        self.hasher.hash_one(k)
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let per_sec = f64::from(self.rate.per_minute) / 60.0;
        let gained = now.saturating_duration_since(b.at).as_secs_f64() * per_sec;
        b.tokens = (b.tokens + gained).min(f64::from(self.rate.burst));
        b.at = now;
    }

    /// Seconds until the key may fail again, or `None` when it may now.
    fn blocked_for(&self, key: u64, now: Instant) -> Option<u32> {
        if self.rate.burst == 0 {
            return None;
        }
        let mut map = self.map.lock();
        let b = map.get_mut(&key)?;
        self.refill(b, now);
        if b.tokens >= 1.0 {
            return None;
        }
        let per_sec = f64::from(self.rate.per_minute.max(1)) / 60.0;
        Some(((1.0 - b.tokens) / per_sec).ceil().clamp(1.0, 3600.0) as u32)
    }

    fn charge(&self, key: u64, now: Instant) {
        if self.rate.burst == 0 {
            return;
        }
        let mut map = self.map.lock();
        if !map.contains_key(&key) && map.len() >= self.max_keys {
            let full = f64::from(self.rate.burst);
            map.retain(|_, b| {
                self.refill(b, now);
                b.tokens < full
            });
            if map.len() >= self.max_keys {
                return;
            }
        }
        let b = map.entry(key).or_insert(Bucket { tokens: f64::from(self.rate.burst), at: now });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Per-source and per-user failed-login buckets.
#[derive(Debug)]
pub struct LoginThrottle {
    sources: Buckets,
    users: Buckets,
}

/// Who is trying: where from, and which account (user id, or domain + name when the
/// name does not resolve).
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The peer address; `None` for in-process calls.
    pub source: Option<IpAddr>,
    /// The account named.
    pub account: &'a str,
}

impl LoginThrottle {
    /// Buckets of `per_source` and `per_user` rates, each table holding at most `max_keys`.
    pub fn new(per_source: Rate, per_user: Rate, max_keys: usize) -> Self {
        LoginThrottle { sources: Buckets::new(per_source, max_keys), users: Buckets::new(per_user, max_keys) }
    }

    /// Seconds to wait when this attempt must be refused before hashing.
    pub fn check(&self, a: Attempt<'_>) -> Option<u32> {
        let now = Instant::now();
        let src = a.source.and_then(|s| self.sources.blocked_for(self.sources.key(s), now));
        let usr = self.users.blocked_for(self.users.key(a.account), now);
        src.max(usr)
    }

    /// Records a failed attempt.
    pub fn failed(&self, a: Attempt<'_>) {
        let now = Instant::now();
        if let Some(s) = a.source {
            self.sources.charge(self.sources.key(s), now);
        }
        self.users.charge(self.users.key(a.account), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_source_that_keeps_failing_is_refused_and_forgiven_over_time() {
        let t = LoginThrottle::new(Rate { burst: 3, per_minute: 60 }, Rate { burst: 100, per_minute: 60 }, 100);
        for i in 0..3 {
            let a = Attempt { source: ip("192.0.2.1"), account: &format!("nobody{i}") };
            assert_eq!(t.check(a), None, "attempt {i} is within the burst");
            t.failed(a);
        }
        let next = Attempt { source: ip("192.0.2.1"), account: "someone-else" };
        assert_eq!(t.check(next), Some(1), "a fourth failure from the same address waits a second");
        assert_eq!(t.check(Attempt { source: ip("192.0.2.2"), account: "x" }), None, "other sources are not affected");
        // One token per second comes back.
        let b = &t.sources;
        b.map.lock().values_mut().for_each(|x| x.at -= Duration::from_millis(1100));
        assert_eq!(t.check(next), None);
    }

    #[test]
    fn one_user_attacked_from_many_sources_is_refused() {
        let t = LoginThrottle::new(Rate { burst: 100, per_minute: 60 }, Rate { burst: 2, per_minute: 6 }, 100);
        for i in 0..2 {
            let a = Attempt { source: ip(&format!("198.51.100.{i}")), account: "alice" };
            t.failed(a);
        }
        assert_eq!(t.check(Attempt { source: ip("198.51.100.9"), account: "alice" }), Some(10));
        assert_eq!(t.check(Attempt { source: ip("198.51.100.9"), account: "bob" }), None);
    }

    #[test]
    fn the_table_stays_bounded_under_many_names() {
        let t = LoginThrottle::new(Rate { burst: 5, per_minute: 60 }, Rate { burst: 5, per_minute: 60 }, 50);
        for i in 0..10_000 {
            t.failed(Attempt { source: None, account: &format!("u{i}") });
        }
        assert!(t.users.len() <= 50, "{}", t.users.len());
    }

    #[test]
    fn a_zero_burst_disables_the_family() {
        let t = LoginThrottle::new(Rate { burst: 0, per_minute: 0 }, Rate { burst: 0, per_minute: 0 }, 10);
        for _ in 0..100 {
            t.failed(Attempt { source: ip("192.0.2.1"), account: "a" });
        }
        assert_eq!(t.check(Attempt { source: ip("192.0.2.1"), account: "a" }), None);
    }
}
