//! Retry delays: exponential backoff with jitter (backon), so processes that failed together do
//! not retry together.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The pause before retry number `attempt` (1 for the first retry): `first`, doubling on every
/// attempt up to `max`, each with up to as much again added at random.
pub fn delay(attempt: u32, first: Duration, max: Duration) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        // Past 32 doublings every delay is `max` anyway.
        .nth(attempt.clamp(1, 32) as usize - 1)
        .unwrap_or(max)
}

/// The pause after `failures` failures in a row of a dependency that is down (the broker,
/// Postgres): 100 ms doubling to 10 s, jittered.
pub fn outage_backoff(failures: u32) -> Duration {
    delay(failures, Duration::from_millis(100), Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_first_to_max_with_jitter() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let first_delays: Vec<Duration> = (0..50).map(|_| delay(1, first, max)).collect();
        assert!(first_delays.iter().all(|d| *d >= first && *d <= first * 2), "{first_delays:?}");
        assert!(first_delays.iter().any(|d| *d != first_delays[0]), "jittered: {first_delays:?}");
        let fourth = delay(4, first, max);
        assert!(fourth >= Duration::from_millis(800) && fourth <= Duration::from_millis(1600), "{fourth:?}");
        assert!(delay(30, first, max) <= max * 2);
        assert!(delay(u32::MAX, first, max) >= max);
    }
}
