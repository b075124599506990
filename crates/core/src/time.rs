//! Timestamps in the formats the OpenStack APIs use.
//!
//! Stored timestamps are RFC 3339 UTC with microseconds (`2026-01-02T03:04:05.123456Z`),
//! whose text order is time order, so SQL can compare and sort them as strings on both
//! SQLite and PostgreSQL.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, in storage format.
pub fn now() -> String {
    to_storage(Utc::now())
}

/// `dt` in storage format.
pub fn to_storage(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a stored or client-supplied RFC 3339 / ISO 8601 timestamp.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    // Naive forms the clients send: `2026-01-02T03:04:05` and with fractions.
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(n.and_utc());
        }
    }
    None
}

/// Second precision with `Z` (Nova, Glance, Neutron): `2026-01-02T03:04:05Z`.
pub fn seconds_z(stored: &str) -> String {
    parse(stored).map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_else(|| stored.to_string())
}

/// Microseconds with `Z` (Keystone token times): `2026-01-02T03:04:05.000000Z`.
pub fn micros_z(stored: &str) -> String {
    parse(stored).map(|d| d.to_rfc3339_opts(SecondsFormat::Micros, true)).unwrap_or_else(|| stored.to_string())
}

/// Nova's server timestamps without zone suffix for some fields: `2026-01-02T03:04:05.000000`.
pub fn micros_naive(stored: &str) -> String {
    parse(stored).map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()).unwrap_or_else(|| stored.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        let s = "2026-01-02T03:04:05.123456Z";
        assert_eq!(seconds_z(s), "2026-01-02T03:04:05Z");
        assert_eq!(micros_z(s), s);
        assert_eq!(micros_naive(s), "2026-01-02T03:04:05.123456");
        assert!(parse("2026-01-02T03:04:05").is_some());
        assert!(parse("yesterday").is_none());
        assert!(now().as_str() > "2020");
    }
}
