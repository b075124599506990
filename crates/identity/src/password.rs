//! Password and secret hashing: argon2id with configurable cost, verified in constant
//! time, always off the async runtime (hashing is deliberately slow).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{IdentityError, Result};

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

impl Cost {
    fn hasher(self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib.max(8), self.iterations.max(1), 1, None)
            .map_err(|e| IdentityError::Internal(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes `password` into a PHC string (`$argon2id$v=19$m=...`).
pub fn hash_blocking(cost: Cost, password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    cost.hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Internal(format!("hashing failed: {e}")))
}

/// Verifies `password` against a stored PHC `hash` (the parameters come from the hash,
/// so a cost change affects new hashes only). `None` means "no such user": a dummy hash
/// is verified anyway so that the answer takes as long as for a real user.
pub fn verify_blocking(cost: Cost, password: &str, hash: Option<&str>) -> bool {
    match hash.and_then(|h| PasswordHash::new(h).ok()) {
        Some(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        None => {
            let _ = hash_blocking(cost, password);
            false
        }
    }
}

/// [`hash_blocking`] on the blocking pool.
pub async fn hash(cost: Cost, password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(cost, &password))
        .await
        .map_err(|e| IdentityError::Internal(format!("hash task: {e}")))?
}

/// [`verify_blocking`] on the blocking pool.
pub async fn verify(cost: Cost, password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || verify_blocking(cost, &password, hash.as_deref())).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_encode_cost() {
        let cost = Cost { memory_kib: 8, iterations: 1 };
        let h = hash_blocking(cost, "s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=8,t=1"), "{h}");
        assert!(verify_blocking(cost, "s3cret", Some(&h)));
        assert!(!verify_blocking(cost, "wrong", Some(&h)));
        assert!(!verify_blocking(cost, "s3cret", None));
        assert!(!verify_blocking(cost, "s3cret", Some("garbage")));
    }
}
