//! HS256 bearer tokens. The algorithm is pinned: a token whose header names any other
//! algorithm (including `none`) is rejected before its signature is even looked at.

use std::time::Duration;

use domain::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Tokens may live at most this long, whatever the configuration says.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);

const ISSUER: &str = "catalog";

/// Shortest signing secret either API accepts.
pub const MIN_SECRET_BYTES: usize = 32;

/// Only for local development; refused when `CATALOG_ENV=production`. Both APIs fall back to
/// the same one, so a token issued by a local command-api verifies at a local query-api.
pub const DEV_JWT_SECRET: &str = "catalog-dev-secret-do-not-use-in-production";

/// The signing secret from `JWT_SECRET` (`secret`) and `CATALOG_ENV` (`environment`): a given
/// secret must be at least [`MIN_SECRET_BYTES`]; none at all is refused in `production` and
/// otherwise falls back to [`DEV_JWT_SECRET`] with a loud warning.
pub fn resolve_secret(secret: Option<&str>, environment: &str) -> anyhow::Result<Vec<u8>> {
    match secret {
        Some(secret) if secret.len() >= MIN_SECRET_BYTES => Ok(secret.as_bytes().to_vec()),
        Some(_) => anyhow::bail!("JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"),
        None if environment == "production" => {
            anyhow::bail!("JWT_SECRET is required when CATALOG_ENV=production")
        }
        None => {
            tracing::warn!(
                "!!! JWT_SECRET is not set: using a PUBLIC DEVELOPMENT SECRET for bearer tokens. \
                 Anyone can forge tokens. Never run like this in production. !!!"
            );
            Ok(DEV_JWT_SECRET.as_bytes().to_vec())
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// The most privileged role the user held when the token was issued.
    pub role: Role,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: ttl.min(MAX_TOKEN_TTL),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: Uuid, role: Role) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims { sub: user_id, role, iss: ISSUER.into(), iat: now, exp: now + self.ttl.as_secs() };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(600))
    }

    fn b64(json: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn secrets_are_resolved_by_length_and_environment() {
        let long = "x".repeat(MIN_SECRET_BYTES);
        assert_eq!(resolve_secret(Some(&long), "production").unwrap(), long.as_bytes());
        assert!(resolve_secret(Some("short"), "development").is_err());
        assert!(resolve_secret(None, "production").is_err());
        assert_eq!(resolve_secret(None, "development").unwrap(), DEV_JWT_SECRET.as_bytes());
    }

    #[test]
    fn an_issued_token_verifies_and_carries_subject_and_role() {
        let keys = keys();
        let id = Uuid::new_v4();
        let claims = keys.verify(&keys.issue(id, Role::Admin).unwrap()).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Admin);
        assert!(claims.exp - claims.iat <= 3600);
    }

    #[test]
    fn ttl_is_capped_at_one_hour() {
        assert_eq!(TokenKeys::new(b"k", Duration::from_secs(86_400)).ttl(), MAX_TOKEN_TTL);
    }

    #[test]
    fn alg_none_is_rejected() {
        let now = jsonwebtoken::get_current_timestamp();
        let payload =
            format!(r#"{{"sub":"{}","role":"admin","iss":"catalog","iat":{now},"exp":{}}}"#, Uuid::new_v4(), now + 60);
        let token = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&payload));
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn another_algorithm_or_key_is_rejected() {
        let claims = Claims { sub: Uuid::new_v4(), role: Role::Admin, iss: ISSUER.into(), iat: 0, exp: u64::MAX / 2 };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(keys().verify(&hs512).is_err());
        let other_key = TokenKeys::new(b"another-secret-another-secret-xx", Duration::from_secs(60));
        assert!(keys().verify(&other_key.issue(Uuid::new_v4(), Role::Admin).unwrap()).is_err());
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let claims = Claims { sub: Uuid::new_v4(), role: Role::Admin, iss: ISSUER.into(), iat: 0, exp: 1_000 };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(keys().verify(&token).is_err());
    }
}
