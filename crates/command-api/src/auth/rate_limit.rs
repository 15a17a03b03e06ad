//! Login throttling, per username and per client address, so neither one account nor one
//! client can be used to guess passwords quickly.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use http_api::problem::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts per minute for one username (burst of the same size).
    pub per_username_per_minute: NonZeroU32,
    /// Attempts per minute from one client address.
    pub per_client_per_minute: NonZeroU32,
}

#[derive(Clone)]
pub struct LoginLimiter {
    by_username: Arc<DefaultKeyedRateLimiter<String>>,
    by_client: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            by_username: Arc::new(RateLimiter::keyed(Quota::per_minute(limits.per_username_per_minute))),
            by_client: Arc::new(RateLimiter::keyed(Quota::per_minute(limits.per_client_per_minute))),
        }
    }

    /// Counts one attempt; 429 with the wait in `Retry-After` once either budget is spent.
    pub fn check(&self, username: &str, client: Option<IpAddr>) -> Result<(), ApiError> {
        let now = DefaultClock::default().now();
        let too_many = |not_until: governor::NotUntil<_>| ApiError::TooManyRequests {
            retry_after_secs: not_until.wait_time_from(now).as_secs().max(1),
        };
        if let Some(client) = client {
            self.by_client.check_key(&client).map_err(too_many)?;
        }
        self.by_username.check_key(&username.trim().to_lowercase()).map_err(too_many)?;
        Ok(())
    }

    /// Forgets keys whose budget is full again, so the maps do not grow without bound.
    pub fn forget_idle(&self) {
        self.by_username.retain_recent();
        self.by_client.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_username_budget_runs_out_and_says_when_to_retry() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_username_per_minute: NonZeroU32::new(2).unwrap(),
            per_client_per_minute: NonZeroU32::new(100).unwrap(),
        });
        assert!(limiter.check("alice", None).is_ok());
        assert!(limiter.check("Alice", None).is_ok());
        match limiter.check("alice", None) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => assert!((1..=60).contains(&retry_after_secs)),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check("bob", None).is_ok(), "other usernames keep their own budget");
    }
}
