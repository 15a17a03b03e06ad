//! What keeps an API answering quickly when it is overloaded or its database is down.
//!
//! - **Load shedding**: at most `max_concurrent_requests` API requests run at once (tower's
//!   concurrency limit); one more is answered 503 with `Retry-After` at once, never queued.
//! - **Circuit breaker** (failsafe) in front of Postgres: when, over the last [`WINDOW`] and at
//!   least [`MIN_REQUESTS`] requests, fewer than half succeeded because the database was
//!   unreachable, requests are answered 503 with `Retry-After` without touching the pool
//!   (instead of each waiting for its acquire timeout), for a jittered, growing pause; then
//!   requests are let through again and the first success closes it. A success rate rather
//!   than a run of failures, so that a busy but working database (a few pool timeouts among
//!   many successes) does not trip it.
//!
//! Both apply to the API routes only: `/health`, `/ready` and `/metrics` stay reachable.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use failsafe::failure_policy::{success_rate_over_time_window, SuccessRateOverTimeWindow};
use failsafe::{backoff, Instrument, StateMachine};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;

use crate::problem::ApiError;

/// The breaker opens when less than this share of recent requests succeeded...
const REQUIRED_SUCCESS_RATE: f64 = 0.5;
/// ...over at least this many requests...
pub const MIN_REQUESTS: u32 = 10;
/// ...in a moving window this long (and not before the process has run this long).
pub const WINDOW: Duration = Duration::from_secs(5);
/// The first pause of an open breaker, doubling up to [`MAX_OPEN`]; each pause is jittered
/// between half and all of it (failsafe counts whole seconds, so 2 s is the least that is
/// never zero).
const FIRST_OPEN: Duration = Duration::from_secs(2);
const MAX_OPEN: Duration = Duration::from_secs(30);

/// Marks a response whose failure was the database's (set by [`ApiError`]'s response).
#[derive(Clone, Copy, Debug)]
pub struct DatabaseOutage;

type Breaker = StateMachine<SuccessRateOverTimeWindow<backoff::EqualJittered>, BreakerMetrics>;

/// The database circuit breaker one API process shares across its requests.
#[derive(Clone)]
pub struct DatabaseBreaker(Breaker);

impl Default for DatabaseBreaker {
    fn default() -> Self {
        let pauses = backoff::equal_jittered(FIRST_OPEN, MAX_OPEN);
        let policy = success_rate_over_time_window(REQUIRED_SUCCESS_RATE, MIN_REQUESTS, WINDOW, pauses);
        Self(failsafe::Config::new().failure_policy(policy).instrument(BreakerMetrics).build())
    }
}

/// `db_circuit_state` (0 closed, 1 half-open, 2 open) and `db_circuit_rejected_total`.
#[derive(Clone, Copy)]
pub struct BreakerMetrics;

impl Instrument for BreakerMetrics {
    fn on_call_rejected(&self) {
        metrics::counter!("db_circuit_rejected_total").increment(1);
    }
    fn on_open(&self) {
        tracing::warn!("database circuit breaker open: answering 503 without trying the database");
        metrics::gauge!("db_circuit_state").set(2.0);
    }
    fn on_half_open(&self) {
        metrics::gauge!("db_circuit_state").set(1.0);
    }
    fn on_closed(&self) {
        metrics::gauge!("db_circuit_state").set(0.0);
    }
}

/// Wraps `api` in the breaker and, outside it, the concurrency limit with load shedding.
pub fn protect<S: Clone + Send + Sync + 'static>(
    api: Router<S>,
    max_concurrent_requests: usize,
    breaker: DatabaseBreaker,
) -> Router<S> {
    api.layer(middleware::from_fn_with_state(breaker, guard_database)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: BoxError| async { overloaded() }))
            .load_shed()
            // Global: `Router::layer` applies a layer to each route, and a plain concurrency
            // limit would then be one per route.
            .layer(GlobalConcurrencyLimitLayer::new(max_concurrent_requests.max(1))),
    )
}

fn overloaded() -> Response {
    metrics::counter!("http_requests_shed_total").increment(1);
    ApiError::Unavailable { reason: "the service is at its limit of concurrent requests".into(), retry_after_secs: 1 }
        .into_response()
}

async fn guard_database(State(breaker): State<DatabaseBreaker>, request: Request, next: Next) -> Response {
    if !breaker.0.is_call_permitted() {
        return ApiError::Unavailable {
            reason: "the database is unavailable (circuit breaker open)".into(),
            retry_after_secs: FIRST_OPEN.as_secs().max(1),
        }
        .into_response();
    }
    let response = next.run(request).await;
    if response.extensions().get::<DatabaseOutage>().is_some() {
        breaker.0.on_error();
    } else if !response.status().is_server_error() {
        breaker.0.on_success();
    }
    response
}
