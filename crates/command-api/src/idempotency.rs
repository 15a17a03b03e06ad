//! `Idempotency-Key` support for POST: a retry with the same key and body gets the first
//! response back and appends nothing.
//!
//! The key is claimed in Postgres before the command runs (`INSERT ... ON CONFLICT DO NOTHING`),
//! so of two concurrent requests with one key only one executes; the other is told the first is
//! still in flight (409). A successful response is stored with the key; a failed command releases
//! the key, because it appended nothing and the client may fix the request and retry.
//!
//! What is kept at rest is chosen for an attacker who reads the table: the request is stored
//! only as an HMAC-SHA256 under `IDEMPOTENCY_KEY_SECRET`, which is not in the database (a plain
//! hash of a registration body would be a fast hash of the password, next to the public
//! username). A key is scoped to its route and caller (the user id, or the client address for
//! anonymous calls), so one caller can neither replay nor block another's key. Records live
//! `IDEMPOTENCY_KEY_TTL_HOURS` (24 by default): an older key counts as unused, and the
//! housekeeping task deletes them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::PgPool;

use http_api::problem::ApiError;

/// A claim older than this with no response is taken to be from a crashed request.
const ABANDONED_AFTER_SECS: i32 = 60;

/// Response headers worth replaying.
const REPLAYED_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// The fingerprint key used when none is configured, only with `CATALOG_ENV=development`.
pub const DEVELOPMENT_SECRET: &str = "development-only-idempotency-key-secret";

/// The shortest `IDEMPOTENCY_KEY_SECRET` accepted.
pub const MIN_SECRET_BYTES: usize = 32;

/// `IDEMPOTENCY_KEY_TTL_HOURS`' default.
pub const DEFAULT_TTL_HOURS: u64 = 24;

/// Rows one purge statement deletes, so a large backlog does not hold one long transaction.
const PURGE_BATCH: i64 = 10_000;

pub enum Claim {
    /// This request owns the key: run the command, then [`complete`] or [`release`].
    Owned(KeyScope),
    /// The key was used before with the same body: here is the first response.
    Replay(Response),
}

/// Which key, for whom, for what request.
pub struct KeyScope {
    scope: String,
    key: String,
}

/// The fingerprint key and how long records are kept: what every POST route needs.
#[derive(Clone)]
pub struct Idempotency {
    secret: Arc<Vec<u8>>,
    ttl: Duration,
}

impl Idempotency {
    /// `secret` is `IDEMPOTENCY_KEY_SECRET`: required (at least [`MIN_SECRET_BYTES`]) unless
    /// `development`, which falls back to [`DEVELOPMENT_SECRET`].
    pub fn new(secret: Option<&str>, development: bool, ttl: Duration) -> anyhow::Result<Self> {
        let secret = match secret {
            // The placeholder of deploy/k8s/secret.example.yaml is public.
            Some(secret) if secret.contains("REPLACE-ME") => {
                anyhow::bail!("IDEMPOTENCY_KEY_SECRET is the example value; generate a real one")
            }
            Some(secret) if secret.len() >= MIN_SECRET_BYTES => secret,
            Some(_) => anyhow::bail!("IDEMPOTENCY_KEY_SECRET must be at least {MIN_SECRET_BYTES} bytes"),
            None if development => DEVELOPMENT_SECRET,
            None => anyhow::bail!(
                "IDEMPOTENCY_KEY_SECRET is required (the development default is used only with CATALOG_ENV=development)"
            ),
        };
        anyhow::ensure!(!ttl.is_zero(), "IDEMPOTENCY_KEY_TTL_HOURS must be at least 1");
        Ok(Self { secret: Arc::new(secret.as_bytes().to_vec()), ttl })
    }

    /// Keyed fingerprint of the request, over a canonical serialisation of the parsed request,
    /// so whitespace or key order do not make a retry look like a different request.
    pub fn fingerprint(&self, request: &impl Serialize) -> Vec<u8> {
        let canonical = serde_json::to_vec(request).unwrap_or_default();
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(&canonical);
        mac.finalize().into_bytes().to_vec()
    }

    fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// Runs `handler` at most once per key: the whole protocol in one place for every POST route.
    /// `scope` names the route and the caller.
    pub async fn run_once<F, Fut>(
        &self,
        pool: &PgPool,
        key: Option<&str>,
        scope: &str,
        hash: &[u8],
        handler: F,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Response, ApiError>>,
    {
        let Some(key) = key else {
            return handler().await;
        };
        match claim(pool, scope, key, hash, self.ttl_secs()).await? {
            Claim::Replay(response) => Ok(response),
            Claim::Owned(owned) => match handler().await {
                Ok(response) => owned.finish(pool, response).await,
                Err(error) => {
                    owned.release(pool).await;
                    Err(error)
                }
            },
        }
    }

    /// Deletes the records older than the time to live; returns how many.
    pub async fn purge_expired(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        let mut purged = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1) LIMIT $2))",
            )
            .bind(self.ttl_secs())
            .bind(PURGE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}

/// A stored key: request hash, status (NULL while in flight), headers, body, and whether the
/// claim is old enough to count as abandoned.
type StoredKey = (Vec<u8>, Option<i16>, Option<serde_json::Value>, Option<Vec<u8>>, bool);

/// Claims `key` within `scope` (route and caller) for a request with `hash`. A record older
/// than `ttl_secs` is taken over as if the key were new.
pub async fn claim(pool: &PgPool, scope: &str, key: &str, hash: &[u8], ttl_secs: f64) -> Result<Claim, ApiError> {
    let owned = || Claim::Owned(KeyScope { scope: scope.to_owned(), key: key.to_owned() });
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3)
         ON CONFLICT (scope, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, status = NULL, headers = NULL, body = NULL, created_at = now()
          WHERE idempotency_keys.created_at < now() - make_interval(secs => $4)",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(ttl_secs)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(owned());
    }
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT request_hash, status, headers, body, created_at < now() - make_interval(secs => $3)
           FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(ABANDONED_AFTER_SECS)
    .fetch_optional(pool)
    .await?;
    let Some((stored_hash, status, headers, body, abandoned)) = row else {
        // Released between our insert and select: the first request failed; try once more.
        return Box::pin(claim(pool, scope, key, hash, ttl_secs)).await;
    };
    if stored_hash != hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    match status {
        Some(status) => Ok(Claim::Replay(replay(status, headers, body.unwrap_or_default()))),
        None if abandoned && take_over(pool, scope, key).await? => Ok(owned()),
        None => Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still being processed; retry shortly".into(),
        )),
    }
}

async fn take_over(pool: &PgPool, scope: &str, key: &str) -> Result<bool, ApiError> {
    let taken = sqlx::query(
        "UPDATE idempotency_keys SET created_at = now()
          WHERE scope = $1 AND key = $2 AND status IS NULL AND created_at < now() - make_interval(secs => $3)",
    )
    .bind(scope)
    .bind(key)
    .bind(ABANDONED_AFTER_SECS)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(taken == 1)
}

fn replay(status: i16, headers: Option<serde_json::Value>, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(body)).into_response();
    if let Some(serde_json::Value::Object(stored)) = headers {
        for (name, value) in stored {
            if let (Ok(name), Some(Ok(value))) =
                (HeaderName::try_from(name.as_str()), value.as_str().map(HeaderValue::from_str))
            {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

impl KeyScope {
    /// Stores a successful response for later retries. Errors are not stored: the key is released.
    pub async fn finish(self, pool: &PgPool, response: Response) -> Result<Response, ApiError> {
        if !response.status().is_success() {
            self.release(pool).await;
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| ApiError::Internal(e.into()))?;
        sqlx::query("UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE scope = $1 AND key = $2")
            .bind(&self.scope)
            .bind(&self.key)
            .bind(parts.status.as_u16() as i16)
            .bind(headers_json(&parts.headers))
            .bind(bytes.as_ref())
            .execute(pool)
            .await?;
        Ok(Response::from_parts(parts, Body::from(bytes)))
    }

    /// Gives the key back after a failed command, so a corrected retry can run.
    pub async fn release(self, pool: &PgPool) {
        let result = sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL")
            .bind(&self.scope)
            .bind(&self.key)
            .execute(pool)
            .await;
        if let Err(error) = result {
            // The claim then expires after ABANDONED_AFTER_SECS.
            tracing::warn!(%error, "could not release an idempotency key");
        }
    }
}

fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let stored = REPLAYED_HEADERS
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()).map(|v| ((*name).to_owned(), v.into())))
        .collect();
    serde_json::Value::Object(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed() {
        let ttl = Duration::from_secs(3600);
        let one = Idempotency::new(Some(&"a".repeat(32)), false, ttl).unwrap();
        let other = Idempotency::new(Some(&"b".repeat(32)), false, ttl).unwrap();
        let body = serde_json::json!({"username": "alice", "password": "correct horse"});
        assert_eq!(one.fingerprint(&body), one.fingerprint(&body));
        assert_ne!(one.fingerprint(&body), other.fingerprint(&body));
        let plain: Vec<u8> = <Sha256 as sha2::Digest>::digest(serde_json::to_vec(&body).unwrap()).to_vec();
        assert_ne!(one.fingerprint(&body), plain, "not the unkeyed hash an attacker could compute");
    }

    #[test]
    fn the_secret_is_required_outside_development_and_must_be_long() {
        let ttl = Duration::from_secs(3600);
        assert!(Idempotency::new(None, false, ttl).is_err());
        assert!(Idempotency::new(None, true, ttl).is_ok());
        assert!(Idempotency::new(Some("short"), true, ttl).is_err());
        assert!(Idempotency::new(Some("REPLACE-ME-with-at-least-32-random-bytes"), false, ttl).is_err());
        assert!(Idempotency::new(Some(&"a".repeat(32)), false, Duration::ZERO).is_err());
    }
}
