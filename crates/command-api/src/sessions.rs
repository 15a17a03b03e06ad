//! Refresh-token sessions: a login starts one, `POST /api/v1/auth/refresh` exchanges its
//! current refresh token for a new one (and a new access token), logout ends it.
//!
//! - Refresh tokens are 256 random bits, opaque, and stored only as their SHA-256.
//! - Every refresh rotates the token. Presenting an already exchanged token again means two
//!   parties hold it (one stole it): the whole session ends, the thief's and the owner's.
//! - A session ends by itself when the user's credentials change: each session remembers the
//!   User aggregate's `credentials_version` at login, and a refresh checks the aggregate, so a
//!   password change, a role change or a deactivation voids every session whichever way the
//!   change was made (API, `catalogctl`, an admin), without anyone having to revoke them.
//! - Floods: a user holds at most `REFRESH_SESSIONS_PER_USER` sessions (a new login ends the
//!   oldest), a session keeps the last [`USED_TOKENS_KEPT`] exchanged tokens for reuse
//!   detection, and expired sessions are purged every minute.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::{Role, User};
use event_store::CommandBus;
use http_api::problem::ApiError;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::failures::store_failure;

/// Exchanged tokens a session keeps, so that a replay of any of them is recognised as reuse;
/// older ones are simply unknown (401) after that.
pub const USED_TOKENS_KEPT: i64 = 16;

/// Length of a refresh token: 32 bytes, base64url.
const TOKEN_CHARS: usize = 43;

/// The access token role for `user`: the most privileged role held.
pub fn token_role(user: &User) -> Role {
    if user.roles.contains(&Role::Admin) {
        Role::Admin
    } else {
        Role::Customer
    }
}

#[derive(Clone)]
pub struct Sessions {
    pool: PgPool,
    ttl: Duration,
    per_user: i64,
    random: SystemRandom,
}

/// What a successful refresh yields: who, with which role, and the next refresh token.
pub struct Refreshed {
    pub user_id: Uuid,
    pub role: Role,
    pub refresh_token: String,
}

impl Sessions {
    /// Sessions lasting `ttl` from login, at most `per_user` per user.
    pub fn new(pool: PgPool, ttl: Duration, per_user: u32) -> Self {
        Self { pool, ttl, per_user: i64::from(per_user.max(1)), random: SystemRandom::new() }
    }

    /// How long a session lasts from login.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn new_token(&self) -> Result<(String, Vec<u8>), ApiError> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).map_err(|_| ApiError::Internal(anyhow::anyhow!("no system randomness")))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash(&token);
        Ok((token, hash))
    }

    /// Starts a session for `user` (just authenticated) and returns its first refresh token.
    /// Beyond the per-user cap, the user's oldest sessions end.
    pub async fn start(&self, user: &User) -> Result<String, ApiError> {
        let user_id = user.id.expect("a registered user");
        let (token, token_hash) = self.new_token()?;
        let session = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO refresh_sessions (id, user_id, credentials_version, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        )
        .bind(session)
        .bind(user_id)
        .bind(user.credentials_version as i64)
        .bind(self.ttl.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
            .bind(&token_hash)
            .bind(session)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM refresh_sessions WHERE user_id = $1 AND id NOT IN \
             (SELECT id FROM refresh_sessions WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2)",
        )
        .bind(user_id)
        .bind(self.per_user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// Exchanges `token` for a new one, if it is the current token of a live session whose
    /// user is still active with unchanged credentials. Every refusal is the same 401; a
    /// reused token, or a user whose credentials changed, also ends the session.
    pub async fn refresh(&self, bus: &CommandBus, token: &str) -> Result<Refreshed, ApiError> {
        if token.len() != TOKEN_CHARS {
            return Err(ApiError::Unauthorized);
        }
        let token_hash = hash(token);
        let mut tx = self.pool.begin().await?;
        // Locks the token row: a concurrent refresh with the same token waits, then sees it used.
        let found: Option<(Uuid, bool, Uuid, i64, bool)> = sqlx::query_as(
            "SELECT s.id, t.used_at IS NOT NULL, s.user_id, s.credentials_version, s.expires_at > now() \
             FROM refresh_tokens t JOIN refresh_sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1 FOR UPDATE OF t",
        )
        .bind(&token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((session, used, user_id, credentials_version, live)) = found else {
            return Err(ApiError::Unauthorized);
        };
        let user = bus.load::<User>(&user_id.to_string()).await.map_err(store_failure)?;
        let valid = user.id.is_some() && user.active && user.credentials_version as i64 == credentials_version;
        if used || !live || !valid {
            if used {
                tracing::warn!(%user_id, %session, "a rotated refresh token was presented again; ending its session");
            }
            sqlx::query("DELETE FROM refresh_sessions WHERE id = $1").bind(session).execute(&mut *tx).await?;
            tx.commit().await?;
            return Err(ApiError::Unauthorized);
        }
        let (next, next_hash) = self.new_token()?;
        sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
            .bind(&token_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id) VALUES ($1, $2)")
            .bind(&next_hash)
            .bind(session)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM refresh_tokens WHERE session_id = $1 AND used_at IS NOT NULL AND token_hash NOT IN \
             (SELECT token_hash FROM refresh_tokens WHERE session_id = $1 AND used_at IS NOT NULL \
              ORDER BY used_at DESC LIMIT $2)",
        )
        .bind(session)
        .bind(USED_TOKENS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Refreshed { user_id, role: token_role(&user), refresh_token: next })
    }

    /// Ends the session `token` belongs to (current or already exchanged); an unknown token
    /// changes nothing.
    pub async fn end(&self, token: &str) -> Result<(), ApiError> {
        if token.len() != TOKEN_CHARS {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM refresh_sessions WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)",
        )
        .bind(hash(token))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes expired sessions (with their tokens); returns how many.
    pub async fn purge_expired(&self) -> Result<u64, sqlx::Error> {
        let result = sqlx::query("DELETE FROM refresh_sessions WHERE expires_at < now()").execute(&self.pool).await?;
        Ok(result.rows_affected())
    }
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
