//! Waiting for something that happens asynchronously (a projection, a cache invalidation, a
//! consumer group settling): [`eventually`] polls a check until it holds or time runs out.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a check of [`eventually`] returns: `true`, or `Some(value)`, once it holds.
pub trait Outcome {
    /// What [`eventually`] returns once the check holds.
    type Value;
    fn into_value(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn into_value(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_value(self) -> Option<T> {
        self
    }
}

/// Waits until `check` returns `true` (or `Some(value)`: then returns the value), or fails the
/// test naming `what` after `within`. It checks about a hundred times within `within`, every
/// 10 to 50 ms.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> <Fut::Output as Outcome>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Outcome,
{
    let interval = (within / 100).clamp(Duration::from_millis(10), Duration::from_millis(50));
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await.into_value() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        tokio::time::sleep(interval).await;
    }
}
