//! argon2id password hashing, run off the async runtime because each hash takes tens of ms, and
//! bounded by a memory budget because each one also works in 19 MiB.
//!
//! Limiting how many hashes run at once is not enough on its own: glibc keeps freed 19 MiB
//! blocks in per-thread arenas, so six hashes at a time on ever-changing blocking threads still
//! grew the process past 600 MiB under a registration flood. Each slot therefore owns its
//! working memory, allocated once and reused by every hash that takes the slot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use http_api::problem::ApiError;
use tokio::sync::Semaphore;

/// argon2id memory cost in KiB (OWASP minimum: 19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;

/// What all hashes running at once may take together, by default.
pub const HASHING_MEMORY_BUDGET_MIB: usize = 128;

/// `PASSWORD_HASH_CONCURRENCY`'s default: as many hashes as fit in the budget (6 × 19 MiB).
pub const DEFAULT_HASH_CONCURRENCY: usize = HASHING_MEMORY_BUDGET_MIB * 1024 / MEMORY_KIB as usize;

/// How long a hash waits for a slot by default before the request is answered 503.
pub const DEFAULT_HASH_QUEUE: Duration = Duration::from_secs(2);

/// Why a hash or a verification did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every slot stayed taken for the whole queueing time: the caller should retry shortly.
    #[error("too many passwords are being hashed; retry shortly")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => ApiError::Unavailable { reason: error.to_string(), retry_after_secs: 1 },
            HashError::Failed(cause) => ApiError::Internal(cause),
        }
    }
}

/// Hashes and verifies passwords with argon2id at (at least) the OWASP minimum cost. Every
/// hash and verification (registration, login, password change) takes one of a fixed number of
/// slots, so their memory stays within `slots × 19 MiB` however many requests arrive.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A real hash of a random password, verified against when the user does not exist, so
    /// "unknown user" costs as much time as "wrong password" and the two cannot be told apart.
    decoy_hash: String,
    slots: Arc<Semaphore>,
    /// The working memory of the slots not in use (allocated on first use, then reused).
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    queue: Duration,
}

impl PasswordHasher {
    /// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1; with the default
    /// number of slots and queueing time.
    pub fn owasp_minimum() -> Self {
        let params = Params::new(MEMORY_KIB, 2, 1, None).expect("valid argon2 parameters");
        let decoy_hash = hash_with(&params, &uuid::Uuid::new_v4().to_string()).expect("hashing a decoy");
        Self {
            params,
            decoy_hash,
            slots: Arc::new(Semaphore::new(DEFAULT_HASH_CONCURRENCY)),
            memory: Arc::default(),
            queue: DEFAULT_HASH_QUEUE,
        }
    }

    /// At most `concurrency` (at least 1) hashes at once; a hash waits up to `queue` for a slot.
    pub fn with_limits(mut self, concurrency: usize, queue: Duration) -> Self {
        self.slots = Arc::new(Semaphore::new(concurrency.max(1)));
        self.queue = queue;
        self
    }

    /// Runs `work` on a blocking thread, with a slot's working memory, once a slot is free. The
    /// slot moves into the blocking task, so it is held until the hash is done even if the
    /// request is dropped meanwhile.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let slot = match tokio::time::timeout(self.queue, self.slots.clone().acquire_owned()).await {
            Ok(slot) => slot.expect("the semaphore is never closed"),
            Err(_) => {
                metrics::counter!("password_hash_rejections_total").increment(1);
                return Err(HashError::Busy);
            }
        };
        metrics::counter!("password_hashes_total").increment(1);
        metrics::gauge!("password_hash_slots_in_use").increment(1.0);
        let pool = self.memory.clone();
        let blocks = self.params.block_count();
        let result = tokio::task::spawn_blocking(move || {
            let mut memory =
                pool.lock().expect("memory pool lock").pop().unwrap_or_else(|| vec![Block::default(); blocks]);
            let result = work(&mut memory);
            pool.lock().expect("memory pool lock").push(memory);
            metrics::gauge!("password_hash_slots_in_use").decrement(1.0);
            drop(slot);
            result
        })
        .await
        .map_err(|e| HashError::Failed(e.into()))?;
        Ok(result?)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move |memory| hash_in(&params, &password, memory)).await
    }

    /// `true` only when `hash` is present and matches. With `None`, verifies against the decoy.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let (hash, real) = match hash {
            Some(hash) => (hash, true),
            None => (self.decoy_hash.clone(), false),
        };
        let matches = self.run(move |memory| verify_in(&password, &hash, memory)).await?;
        Ok(real && matches)
    }
}

/// A PHC-string argon2id hash of `password` under `params`, computed in `memory`.
fn hash_in(params: &Params, password: &str, memory: &mut [Block]) -> anyhow::Result<String> {
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("hashing failed: {e}");
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = Output::init_with(params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN), |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *memory)
            .map_err(argon2::password_hash::Error::from)
    })
    .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory`. The parameters
/// come from the stored string, so raising the cost later does not lock out older hashes (one
/// that needs more memory than a slot has gets its own, once).
fn verify_in(password: &str, stored: &str, memory: &mut [Block]) -> anyhow::Result<bool> {
    let unreadable = |e: &dyn std::fmt::Display| anyhow::anyhow!("stored hash unreadable: {e}");
    let parsed = PasswordHash::new(stored).map_err(|e| unreadable(&e))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| unreadable(&e))?;
    let version = parsed.version.map(Version::try_from).transpose().map_err(|e| unreadable(&e))?.unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        anyhow::bail!("stored hash unreadable: no salt or no hash");
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| unreadable(&e))?;
    let mut larger;
    let memory = if params.block_count() <= memory.len() {
        memory
    } else {
        larger = vec![Block::default(); params.block_count()];
        &mut larger[..]
    };
    let mut actual = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut actual, memory)
        .map_err(|e| anyhow::anyhow!("verifying failed: {e}"))?;
    // `Output` compares in constant time.
    Ok(Output::new(&actual).map_err(|e| unreadable(&e))? == expected)
}

fn hash_with(params: &Params, password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_at_owasp_cost_and_verify() {
        let hasher = PasswordHasher::owasp_minimum();
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(hasher.verify("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!hasher.verify("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }

    /// Hashes made in a slot's memory are standard PHC strings, and hashes stored before
    /// (made by argon2's own allocating path) still verify.
    #[test]
    fn slot_hashes_and_library_hashes_verify_each_other() {
        use argon2::password_hash::PasswordVerifier as _;

        let params = Params::new(MEMORY_KIB, 2, 1, None).unwrap();
        let mut memory = vec![Block::default(); params.block_count()];
        let ours = hash_in(&params, "correct horse", &mut memory).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
        let theirs = hash_with(&params, "correct horse").unwrap();
        assert!(verify_in("correct horse", &theirs, &mut memory).unwrap());
        assert!(!verify_in("wrong horse", &theirs, &mut memory).unwrap());
        // A stored hash that needs more memory than a slot has still verifies.
        let costlier = hash_with(&Params::new(2 * MEMORY_KIB, 1, 1, None).unwrap(), "correct horse").unwrap();
        assert!(verify_in("correct horse", &costlier, &mut memory).unwrap());
    }

    #[test]
    fn the_default_slots_fit_the_memory_budget() {
        assert_eq!(DEFAULT_HASH_CONCURRENCY, 6);
        assert!(DEFAULT_HASH_CONCURRENCY * MEMORY_KIB as usize <= HASHING_MEMORY_BUDGET_MIB * 1024);
    }

    #[tokio::test]
    async fn a_hash_that_cannot_get_a_slot_in_time_is_busy() {
        let hasher = PasswordHasher::owasp_minimum().with_limits(1, Duration::from_millis(10));
        let _taken = hasher.slots.clone().acquire_owned().await.unwrap();
        assert!(matches!(hasher.hash("correct horse".into()).await, Err(HashError::Busy)));
        assert!(matches!(hasher.verify("correct horse".into(), None).await, Err(HashError::Busy)));
    }
}
