//! Test-only fail-points, compiled only with the `fault-injection` feature (the fault suite's
//! build). `PROJECTOR_FAIL_POINT=NAME:N` makes the N-th pass through fail-point NAME (N
//! defaults to 1) log `fail-point NAME reached` and then stop that loop for good: the fault
//! suite waits for the line and kills the process with `kill -9` while it sits inside the
//! window the name describes. Without the variable every fail-point is a no-op.
//!
//! - `publish-after-ack`: the broker acknowledged a batch, its checkpoint is not committed.
//! - `project-after-commit`: the read-model transactions committed, the offsets are not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const VARIABLE: &str = "PROJECTOR_FAIL_POINT";

/// The armed fail-point and the pass it fires on, parsed once.
fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let raw = std::env::var(VARIABLE).ok()?;
            let (name, nth) = raw.split_once(':').unwrap_or((raw.as_str(), "1"));
            Some((name.to_owned(), nth.parse().unwrap_or(1).max(1)))
        })
        .as_ref()
}

/// Passes fail-point `name`; never returns if it is the armed one and this is its N-th pass.
pub async fn hit(name: &str) {
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Some((armed, nth)) = armed() else { return };
    if armed != name || PASSES.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
        return;
    }
    tracing::error!("fail-point {name} reached; this loop stops here until the process is killed");
    std::future::pending::<()>().await;
}
