//! Contract versions: which messages a controller and an agent can exchange.
//!
//! Every message carries the sender's version ([`CONTRACT`]) in its arguments, under the
//! key [`VERSION_KEY`]; a message without one comes from a peer that predates versioning,
//! contract 1.0. A minor version adds to the previous one (new optional fields, a richer
//! encoding of an existing field) in a way the new side can still read from the old one;
//! a major version may break anything. A side accepts its own version and the previous
//! minor version of the same major, so during an upgrade (controllers first, then one
//! host at a time, as with Nova's RPC version pins) every pair that meets can talk; any
//! other pair is refused with a message that says which side to upgrade.
//!
//! History:
//! - 1.0: the unversioned protocol (agent errors as text, `Build aborted: ` prefix and
//!   the live migration cancellation text told apart by content).
//! - 1.1: a version on every message; agent errors typed ([`crate::AgentError`]).
//!   Later added within 1.1 (no bump, so 1.0 agents stay accepted): `GuestSpec::volumes`
//!   (optional, absent when empty) and the `attach_volume`/`detach_volume` calls, which
//!   an agent that predates them refuses as an unknown method (the attach then fails
//!   and is undone). The next bump should make them 1.2.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The key under which a message's arguments carry the sender's contract version.
pub const VERSION_KEY: &str = "contract";

/// A contract version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

/// The version this build speaks.
pub const CONTRACT: Version = Version { major: 1, minor: 1 };

/// What a message without a version is: the protocol before versions existed.
pub const UNVERSIONED: Version = Version { major: 1, minor: 0 };

impl Version {
    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> Self {
        Version { major, minor }
    }

    /// Whether a side speaking `self` can talk to a peer speaking `peer`: same major, and
    /// the peer is at most one minor version behind (never ahead: controllers upgrade
    /// before agents, and a side cannot read what it does not know yet).
    pub fn accepts(self, peer: Version) -> bool {
        peer.major == self.major && peer.minor <= self.minor && self.minor - peer.minor <= 1
    }

    /// The oldest version `self` accepts.
    pub fn oldest_accepted(self) -> Version {
        Version { major: self.major, minor: self.minor.saturating_sub(1) }
    }

    /// Checks a peer's version, explaining a refusal.
    pub fn check(self, peer: Version) -> Result<(), ContractError> {
        if self.accepts(peer) {
            Ok(())
        } else {
            Err(ContractError { ours: self, theirs: peer })
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a contract version (major.minor)");
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        Ok(Version { major: a.parse().map_err(|_| bad())?, minor: b.parse().map_err(|_| bad())? })
    }
}

/// Two sides whose contract versions cannot talk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "compute contract {theirs} is not supported here: this side speaks {ours} and accepts {}–{ours}; {}",
    .ours.oldest_accepted(),
    if .theirs > .ours { "upgrade this side (controllers before agents)" } else { "upgrade the peer" }
)]
pub struct ContractError {
    /// What this side speaks.
    pub ours: Version,
    /// What the peer sent.
    pub theirs: Version,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_accepts_itself_and_the_previous_minor() {
        let v = Version::new(1, 1);
        assert!(v.accepts(Version::new(1, 1)));
        assert!(v.accepts(Version::new(1, 0)));
        assert!(!v.accepts(Version::new(1, 2)), "a newer peer is refused");
        assert!(!v.accepts(Version::new(2, 1)));
        assert!(!Version::new(1, 3).accepts(Version::new(1, 1)), "two minors behind is refused");
        let e = v.check(Version::new(2, 0)).unwrap_err().to_string();
        assert_eq!(
            e,
            "compute contract 2.0 is not supported here: this side speaks 1.1 and accepts 1.0–1.1; \
             upgrade this side (controllers before agents)"
        );
        let e = Version::new(1, 5).check(Version::new(1, 1)).unwrap_err().to_string();
        assert!(e.ends_with("upgrade the peer"), "{e}");
        assert_eq!("1.1".parse::<Version>().unwrap(), v);
        assert!("1".parse::<Version>().is_err());
    }
}
