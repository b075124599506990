//! Password and secret hashing: argon2id with configurable cost, verified in constant
//! time, always off the async runtime (hashing is deliberately slow) and **bounded in
//! memory whatever the load**.
//!
//! Each argon2id hash needs `memory_kib` of working memory (19 MiB by default). Left
//! alone, every login arriving at once ran its own hash in its own blocking thread with a
//! fresh 19 MiB allocation: 256 concurrent failed logins for a user that does not exist
//! took the process to 4.7 GB, and glibc kept the freed blocks in per-thread arenas (its
//! mmap threshold rises to the size of the last freed mapping, so later 19 MiB blocks come
//! from arenas that are never trimmed). Two mechanisms bound this:
//!
//! - **Admission**: at most `slots` hashes run at once (a semaphore sized from the
//!   configured memory budget). A request waits at most `queue_wait` for a slot, then
//!   gets [`HashError::Busy`] — a 503 with `Retry-After` — instead of queueing forever.
//! - **Reused work areas**: each slot owns one block buffer, allocated once and handed
//!   from hash to hash, so memory is `slots × memory_kib` for the life of the process
//!   and nothing is returned to (or fragmented in) the allocator.
//!
//! Stored hashes carry their own parameters; a hash made with a bigger cost than the
//! configured one grows the slot's buffer up to [`MAX_WORK_AREA_KIB`].

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::error::{IdentityError, Result};

/// The largest argon2 memory cost a stored hash may ask for (1 GiB). Anything above is
/// not ours and is treated as "does not verify" rather than allocated.
pub const MAX_WORK_AREA_KIB: u32 = 1024 * 1024;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

impl Cost {
    fn params(self) -> Result<Params> {
        Params::new(self.memory_kib.max(8), self.iterations.max(1), 1, None)
            .map_err(|e| IdentityError::Internal(format!("argon2 parameters: {e}")))
    }
}

/// Why a hash could not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashError {
    /// Every slot stayed busy for the whole wait: try again after this many seconds.
    Busy {
        /// Suggested `Retry-After`.
        retry_after_secs: u32,
    },
}

/// One slot's reusable argon2 working memory.
type WorkArea = Vec<Block>;

/// The bounded password hasher shared by every login and password change.
#[derive(Debug)]
pub struct Hasher {
    cost: Cost,
    permits: Arc<Semaphore>,
    /// Free work areas; a task holding a permit takes one (or makes one, lazily).
    areas: Mutex<Vec<WorkArea>>,
    queue_wait: Duration,
    slots: usize,
}

impl Hasher {
    /// A hasher for `cost` with as many slots as `budget_kib` holds (at least one).
    pub fn new(cost: Cost, budget_kib: u64, queue_wait: Duration) -> Self {
        let per = u64::from(cost.memory_kib.max(8));
        let slots = usize::try_from((budget_kib / per).max(1)).unwrap_or(1);
        Hasher { cost, permits: Arc::new(Semaphore::new(slots)), areas: Mutex::new(Vec::new()), queue_wait, slots }
    }

    /// How many hashes may run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The configured cost of new hashes.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// Hashes `password` into a PHC string (`$argon2id$v=19$m=...`).
    pub async fn hash(&self, password: String) -> Result<String> {
        let cost = self.cost;
        self.run(move |area| hash_with(cost, &password, area)).await.map_err(IdentityError::from)?
    }

    /// Verifies `password` against a stored PHC `hash`. `None` means "no such user": a
    /// dummy hash is computed anyway so that the answer takes as long as for a real user.
    pub async fn verify(&self, password: String, hash: Option<String>) -> std::result::Result<bool, HashError> {
        let cost = self.cost;
        self.run(move |area| match hash {
            Some(h) => verify_with(&password, &h, area),
            None => {
                let _ = hash_with(cost, &password, area);
                false
            }
        })
        .await
    }

    /// Runs `f` on the blocking pool with a slot's work area, after waiting at most
    /// `queue_wait` for the slot.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WorkArea) -> T + Send + 'static,
    ) -> std::result::Result<T, HashError> {
        let permit = match tokio::time::timeout(self.queue_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                // One hash takes a fraction of a second; a whole queue of them clears in
                // about queue_wait again.
                let retry_after_secs = u32::try_from(self.queue_wait.as_secs().max(1)).unwrap_or(1);
                return Err(HashError::Busy { retry_after_secs });
            }
        };
        let mut area = self.areas.lock().pop().unwrap_or_default();
        let (out, area) = tokio::task::spawn_blocking(move || {
            let out = f(&mut area);
            (out, area)
        })
        .await
        .expect("password hashing panicked");
        self.areas.lock().push(area);
        drop(permit);
        Ok(out)
    }
}

impl From<HashError> for IdentityError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy { retry_after_secs } => IdentityError::Busy { retry_after_secs },
        }
    }
}

/// Grows `area` to `blocks` (never shrinks: the slot keeps its high-water mark).
fn ensure_blocks(area: &mut WorkArea, blocks: usize) {
    if area.len() < blocks {
        area.resize(blocks, Block::default());
    }
}

fn hash_with(cost: Cost, password: &str, area: &mut WorkArea) -> Result<String> {
    let params = cost.params()?;
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_raw = [0u8; 64];
    let salt_bytes =
        salt.decode_b64(&mut salt_raw).map_err(|e| IdentityError::Internal(format!("argon2 salt: {e}")))?;
    ensure_blocks(area, params.block_count());
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = Output::init_with(params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN), |out| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut area[..]).map_err(Into::into)
    })
    .map_err(|e| IdentityError::Internal(format!("hashing failed: {e}")))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(|e| IdentityError::Internal(format!("argon2 parameters: {e}")))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Recomputes the hash with the stored parameters in `area` and compares in constant
/// time (`Output`'s equality is constant-time).
fn verify_with(password: &str, stored: &str, area: &mut WorkArea) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    let (Ok(algorithm), Some(expected), Some(salt)) = (Algorithm::try_from(parsed.algorithm), parsed.hash, parsed.salt)
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    if params.m_cost() > MAX_WORK_AREA_KIB {
        tracing::error!(m_cost = params.m_cost(), "a stored password hash asks for more memory than allowed");
        return false;
    }
    let mut salt_raw = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_raw) else { return false };
    ensure_blocks(area, params.block_count());
    let argon = Argon2::new(algorithm, version, params);
    let computed = Output::init_with(expected.len(), |out| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut area[..]).map_err(Into::into)
    });
    computed.is_ok_and(|c| c == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher;

    fn small() -> Hasher {
        Hasher::new(Cost { memory_kib: 8, iterations: 1 }, 64, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn hashes_verify_and_encode_cost() {
        let h = small();
        let phc = h.hash("s3cret".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1"), "{phc}");
        assert_eq!(h.verify("s3cret".into(), Some(phc.clone())).await, Ok(true));
        assert_eq!(h.verify("wrong".into(), Some(phc)).await, Ok(false));
        assert_eq!(h.verify("s3cret".into(), None).await, Ok(false));
        assert_eq!(h.verify("s3cret".into(), Some("garbage".into())).await, Ok(false));
    }

    #[tokio::test]
    async fn verifies_hashes_made_by_the_argon2_crate_with_other_parameters() {
        // Hashes stored by earlier releases (argon2's own PasswordHasher, other costs).
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let params = Params::new(64, 3, 1, None).unwrap();
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"legacy", &salt)
            .unwrap()
            .to_string();
        let h = small();
        assert_eq!(h.verify("legacy".into(), Some(old.clone())).await, Ok(true));
        assert_eq!(h.verify("Legacy".into(), Some(old)).await, Ok(false));
    }

    #[tokio::test]
    async fn a_hash_asking_for_absurd_memory_does_not_verify() {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let real = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8, 1, 1, None).unwrap())
            .hash_password(b"x", &salt)
            .unwrap()
            .to_string();
        let forged = real.replace("m=8,", &format!("m={},", MAX_WORK_AREA_KIB + 1));
        assert_eq!(small().verify("x".into(), Some(forged)).await, Ok(false));
    }

    #[test]
    fn slots_follow_the_budget() {
        let c = Cost { memory_kib: 19456, iterations: 2 };
        assert_eq!(Hasher::new(c, 64 * 1024, Duration::ZERO).slots(), 3);
        assert_eq!(Hasher::new(c, 1, Duration::ZERO).slots(), 1, "never zero");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_slots_hashes_run_and_the_rest_wait_then_get_busy() {
        // One slot, a 100 ms wait, and hashes that take far longer than that: of 6 at
        // once, the first runs and every other one is refused with Busy (no queue
        // growing without bound), and only one work area was ever made.
        let h = Arc::new(Hasher::new(
            Cost { memory_kib: 64 * 1024, iterations: 16 },
            64 * 1024,
            Duration::from_millis(100),
        ));
        assert_eq!(h.slots(), 1);
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.verify("pw".into(), None).await })
            })
            .collect();
        let mut ok = 0;
        let mut busy = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(HashError::Busy { retry_after_secs }) => {
                    assert_eq!(retry_after_secs, 1);
                    busy += 1
                }
            }
        }
        assert!(ok >= 1 && busy >= 1, "ok {ok} busy {busy}");
        assert_eq!(h.areas.lock().len(), 1, "one slot, one work area, reused");
    }
}
