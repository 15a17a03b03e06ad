//! argon2id password hashing, run off the async runtime because each hash takes tens of ms.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Hashes and verifies passwords with argon2id at (at least) the OWASP minimum cost.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A real hash of a random password, verified against when the user does not exist, so
    /// "unknown user" costs as much time as "wrong password" and the two cannot be told apart.
    decoy_hash: String,
}

impl PasswordHasher {
    /// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
    pub fn owasp_minimum() -> Self {
        let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
        let decoy_hash = hash_with(&params, &uuid::Uuid::new_v4().to_string()).expect("hashing a decoy");
        Self { params, decoy_hash }
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, &password)).await?
    }

    /// `true` only when `hash` is present and matches. With `None`, verifies against the decoy.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let (hash, real) = match hash {
            Some(hash) => (hash, true),
            None => (self.decoy_hash.clone(), false),
        };
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored hash unreadable: {e}"))?;
            // Verification takes its parameters from the stored PHC string, so raising the cost
            // later does not lock out users with older hashes.
            Ok::<_, anyhow::Error>(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await??;
        Ok(real && matches)
    }
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
}
