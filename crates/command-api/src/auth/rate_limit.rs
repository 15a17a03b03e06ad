//! Throttling of the endpoints that cost a password hash (login and registration), keyed on the
//! client address `http_api::client` resolves (behind trusted proxies, the real client).
//!
//! Login lockout scheme, chosen so nobody can lock a chosen user out:
//! - every client address has its own budget of attempts per minute, and after
//!   [`FREE_FAILURES`] failed logins in a row an exponential penalty (2 s, 4 s, ... up to
//!   [`MAX_PENALTY`]) during which it may not try at all; a success clears it;
//! - every username has a budget of attempts per minute from clients it does not know; a client
//!   address the account logged in from successfully in the last [`KNOWN_FOR`] is known, and
//!   passes the username budget (only its own per-client limits apply).
//!
//! So a flood of guesses against one username spends that username's budget for strangers only;
//! the owner, logging in from where they did before, still gets in. IPv6 clients are keyed by
//! their /64, which one host usually controls whole.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use http_api::problem::ApiError;

/// Failed logins in a row a client may make before penalties start.
pub const FREE_FAILURES: u32 = 5;
/// The longest penalty one client address can earn.
pub const MAX_PENALTY: Duration = Duration::from_secs(15 * 60);
/// How long a successful login makes its client address known to the account.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Client addresses remembered per account (the oldest is forgotten first).
const KNOWN_PER_USER: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts per minute for one username from clients it does not know (burst of the same size).
    pub per_username_per_minute: NonZeroU32,
    /// Attempts per minute from one client address.
    pub per_client_per_minute: NonZeroU32,
}

#[derive(Debug, Clone, Copy)]
struct Penalty {
    failures: u32,
    last_failure: Instant,
}

impl Penalty {
    fn until(&self) -> Instant {
        let excess = self.failures.saturating_sub(FREE_FAILURES);
        let wait =
            if excess == 0 { Duration::ZERO } else { Duration::from_secs(1u64 << excess.min(20)).min(MAX_PENALTY) };
        self.last_failure + wait
    }
}

/// Per normalised username, the client addresses it logged in from and when last.
type KnownClients = HashMap<String, Vec<(IpAddr, Instant)>>;

#[derive(Clone)]
pub struct LoginLimiter {
    by_username: Arc<DefaultKeyedRateLimiter<String>>,
    by_client: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    penalties: Arc<Mutex<HashMap<IpAddr, Penalty>>>,
    known: Arc<Mutex<KnownClients>>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            by_username: Arc::new(RateLimiter::keyed(Quota::per_minute(limits.per_username_per_minute))),
            by_client: Arc::new(RateLimiter::keyed(Quota::per_minute(limits.per_client_per_minute))),
            penalties: Arc::default(),
            known: Arc::default(),
        }
    }

    /// Counts one attempt; 429 with the wait in `Retry-After` while the client is penalised, or
    /// once its budget, or (for a client the account does not know) the username's, is spent.
    pub fn check(&self, username: &str, client: Option<IpAddr>) -> Result<(), ApiError> {
        let now = DefaultClock::default().now();
        let too_many = |not_until: governor::NotUntil<_>| ApiError::TooManyRequests {
            retry_after_secs: not_until.wait_time_from(now).as_secs().max(1),
        };
        let client = client.map(client_key);
        if let Some(client) = client {
            let penalty = self.penalties.lock().expect("penalties lock").get(&client).copied();
            if let Some(wait) = penalty.and_then(|p| p.until().checked_duration_since(Instant::now())) {
                return Err(ApiError::TooManyRequests { retry_after_secs: wait.as_secs().max(1) });
            }
            self.by_client.check_key(&client).map_err(too_many)?;
        }
        let username = normalise(username);
        if !client.is_some_and(|client| self.is_known(&username, client)) {
            self.by_username.check_key(&username).map_err(too_many)?;
        }
        Ok(())
    }

    /// Records how an attempt ended: a success clears the client's penalty and makes the client
    /// known to the account; a failure adds to the client's penalty.
    pub fn record(&self, username: &str, client: Option<IpAddr>, succeeded: bool) {
        let Some(client) = client.map(client_key) else { return };
        let now = Instant::now();
        if succeeded {
            self.penalties.lock().expect("penalties lock").remove(&client);
            let mut known = self.known.lock().expect("known lock");
            let addresses = known.entry(normalise(username)).or_default();
            addresses.retain(|(address, _)| *address != client);
            if addresses.len() >= KNOWN_PER_USER {
                addresses.remove(0);
            }
            addresses.push((client, now));
        } else {
            let mut penalties = self.penalties.lock().expect("penalties lock");
            let penalty = penalties.entry(client).or_insert(Penalty { failures: 0, last_failure: now });
            penalty.failures = penalty.failures.saturating_add(1);
            penalty.last_failure = now;
        }
    }

    fn is_known(&self, username: &str, client: IpAddr) -> bool {
        let known = self.known.lock().expect("known lock");
        known.get(username).is_some_and(|addresses| {
            addresses.iter().any(|(address, at)| *address == client && at.elapsed() < KNOWN_FOR)
        })
    }

    /// Forgets keys whose budget is full again, penalties an hour past their last failure (and
    /// past their wait) and known addresses older than [`KNOWN_FOR`], so the maps stay bounded.
    pub fn forget_idle(&self) {
        self.by_username.retain_recent();
        self.by_client.retain_recent();
        let now = Instant::now();
        self.penalties
            .lock()
            .expect("penalties lock")
            .retain(|_, p| now.duration_since(p.last_failure) < Duration::from_secs(3600) || p.until() > now);
        self.known.lock().expect("known lock").retain(|_, addresses| {
            addresses.retain(|(_, at)| at.elapsed() < KNOWN_FOR);
            !addresses.is_empty()
        });
    }
}

/// A budget of requests per minute for each key (a client address, a user); 429 with
/// `Retry-After` once a key's budget is spent.
#[derive(Clone)]
pub struct PerMinuteLimiter<K: Clone + Eq + std::hash::Hash> {
    by_key: Arc<DefaultKeyedRateLimiter<K>>,
}

impl<K: Clone + Eq + std::hash::Hash> PerMinuteLimiter<K> {
    pub fn new(per_minute: NonZeroU32) -> Self {
        Self { by_key: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))) }
    }

    /// Counts one request of `key`.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        let now = DefaultClock::default().now();
        self.by_key.check_key(key).map_err(|not_until| ApiError::TooManyRequests {
            retry_after_secs: not_until.wait_time_from(now).as_secs().max(1),
        })
    }

    pub fn forget_idle(&self) {
        self.by_key.retain_recent();
    }
}

/// Registrations per client address (each costs a password hash and an account).
#[derive(Clone)]
pub struct RegistrationLimiter(PerMinuteLimiter<IpAddr>);

impl RegistrationLimiter {
    pub fn new(per_client_per_minute: NonZeroU32) -> Self {
        Self(PerMinuteLimiter::new(per_client_per_minute))
    }

    /// Counts one registration; 429 with `Retry-After` once the client's budget is spent.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        client.map_or(Ok(()), |client| self.0.check(&client_key(client)))
    }

    pub fn forget_idle(&self) {
        self.0.forget_idle();
    }
}

/// Reservations a customer may place per minute: each holds stock every shopper competes for,
/// so one account must not be able to hold a catalog's stock in a flood of small baskets.
pub type ReservationLimiter = PerMinuteLimiter<uuid::Uuid>;

fn normalise(username: &str) -> String {
    username.trim().to_lowercase()
}

/// The rate-limit key of a client address: IPv4 as is, IPv6 by its /64.
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_username: u32, per_client: u32) -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            per_username_per_minute: NonZeroU32::new(per_username).unwrap(),
            per_client_per_minute: NonZeroU32::new(per_client).unwrap(),
        })
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_username_budget_runs_out_and_says_when_to_retry() {
        let limiter = limiter(2, 100);
        assert!(limiter.check("alice", None).is_ok());
        assert!(limiter.check("Alice", None).is_ok());
        match limiter.check("alice", None) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => assert!((1..=60).contains(&retry_after_secs)),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check("bob", None).is_ok(), "other usernames keep their own budget");
    }

    #[test]
    fn a_flood_against_a_username_does_not_lock_out_its_known_client() {
        let limiter = limiter(3, 1000);
        // The owner logged in before from 192.0.2.1.
        limiter.check("alice", ip("192.0.2.1")).unwrap();
        limiter.record("alice", ip("192.0.2.1"), true);
        // Attackers from many addresses spend alice's budget for strangers.
        for n in 0..10 {
            let attacker = ip(&format!("198.51.100.{n}"));
            if limiter.check("alice", attacker).is_ok() {
                limiter.record("alice", attacker, false);
            }
        }
        assert!(limiter.check("alice", ip("198.51.100.200")).is_err(), "strangers are throttled");
        assert!(limiter.check("alice", ip("192.0.2.1")).is_ok(), "the known client still passes");
    }

    #[test]
    fn failures_from_one_client_earn_a_growing_penalty_that_a_success_clears() {
        let limiter = limiter(1000, 1000);
        let attacker = ip("203.0.113.7");
        for _ in 0..FREE_FAILURES {
            limiter.check("bob", attacker).unwrap();
            limiter.record("bob", attacker, false);
        }
        assert!(limiter.check("bob", attacker).is_ok(), "the free failures cost nothing");
        limiter.record("bob", attacker, false);
        let first = match limiter.check("carol", attacker) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => retry_after_secs,
            other => panic!("expected 429, got {other:?}"),
        };
        limiter.penalties.lock().unwrap().get_mut(&attacker.unwrap()).unwrap().failures += 3;
        match limiter.check("carol", attacker) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => assert!(retry_after_secs > first),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check("bob", ip("203.0.113.8")).is_ok(), "other clients are not penalised");
        limiter.record("bob", attacker, true);
        assert!(limiter.check("bob", attacker).is_ok());
    }

    #[test]
    fn the_penalty_is_capped() {
        let now = Instant::now();
        let penalty = Penalty { failures: 1000, last_failure: now };
        assert_eq!(penalty.until() - now, MAX_PENALTY);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = client_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn registrations_run_out_per_client() {
        let limiter = RegistrationLimiter::new(NonZeroU32::new(2).unwrap());
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        assert!(matches!(limiter.check(ip("192.0.2.1")), Err(ApiError::TooManyRequests { .. })));
        assert!(limiter.check(ip("192.0.2.2")).is_ok());
    }
}
