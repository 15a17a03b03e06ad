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
//! - **Time limit**: a request that takes longer than the API's request timeout is answered
//!   503 with `Retry-After`.
//!
//! All apply to the API routes only: `/health`, `/ready` and `/metrics` stay reachable.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use failsafe::failure_policy::{success_rate_over_time_window, SuccessRateOverTimeWindow};
use failsafe::{backoff, Instrument, StateMachine};
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tower::layer::layer_fn;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{Service, ServiceBuilder};

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

/// Wraps `api` in, from the outside in: load shedding over the global concurrency limit, then
/// the database breaker and the request time limit ([`Guard`]).
///
/// One `Router::layer` call: each call wraps every route in one more boxed service, cloned and
/// boxed again on every request, so the whole stack goes in at once.
pub fn protect<S: Clone + Send + Sync + 'static>(
    api: Router<S>,
    timeout: Duration,
    max_concurrent_requests: usize,
    breaker: DatabaseBreaker,
) -> Router<S> {
    api.layer(
        ServiceBuilder::new()
            .layer(layer_fn(|inner| Shed { inner, not_ready: false }))
            .load_shed()
            // Global: `Router::layer` applies a layer to each route, and a plain concurrency
            // limit would then be one per route.
            .layer(GlobalConcurrencyLimitLayer::new(max_concurrent_requests.max(1)))
            .layer(layer_fn(move |inner| Guard { inner, timeout, breaker: breaker.clone() })),
    )
}

fn overloaded() -> Response {
    metrics::counter!("http_requests_shed_total").increment(1);
    ApiError::Unavailable { reason: "the service is at its limit of concurrent requests".into(), retry_after_secs: 1 }
        .into_response()
}

fn timed_out() -> Response {
    ApiError::Unavailable { reason: "the request timed out".into(), retry_after_secs: 1 }.into_response()
}

fn breaker_open() -> Response {
    ApiError::Unavailable {
        reason: "the database is unavailable (circuit breaker open)".into(),
        retry_after_secs: FIRST_OPEN.as_secs().max(1),
    }
    .into_response()
}

/// Answers what tower's load shedding refuses (its `Overloaded` error) with 503 problem+json,
/// since a router's services answer every request with a response. axum's `HandleError` does
/// the same but clones the services below and boxes a future on every request.
struct Shed<S> {
    inner: S,
    /// The service below failed to get ready. (A full limit is not that: `LoadShed` is always
    /// ready and fails the call instead.)
    not_ready: bool,
}

impl<S: Clone> Clone for Shed<S> {
    fn clone(&self) -> Self {
        // Readiness belongs to the instance that was polled.
        Shed { inner: self.inner.clone(), not_ready: false }
    }
}

impl<S> Service<Request> for Shed<S>
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.not_ready = ready!(self.inner.poll_ready(cx)).is_err();
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if std::mem::take(&mut self.not_ready) {
            return ShedFuture::Refused;
        }
        ShedFuture::Called { future: self.inner.call(request) }
    }
}

pin_project! {
    #[project = ShedProjection]
    enum ShedFuture<F> {
        Called { #[pin] future: F },
        Refused,
    }
}

impl<F: Future<Output = Result<Response, BoxError>>> Future for ShedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match self.project() {
            ShedProjection::Called { future } => ready!(future.poll(cx)).unwrap_or_else(|_| overloaded()),
            ShedProjection::Refused => overloaded(),
        }))
    }
}

/// The database breaker and the request time limit, one service: an open breaker answers 503
/// at once; otherwise the request gets `timeout` (then 503), and its response, a timeout's
/// included, tells the breaker how the database fared.
#[derive(Clone)]
struct Guard<S> {
    inner: S,
    timeout: Duration,
    breaker: DatabaseBreaker,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !self.breaker.0.is_call_permitted() {
            return GuardFuture::Open { response: Some(breaker_open()) };
        }
        GuardFuture::Running {
            future: tokio::time::timeout(self.timeout, self.inner.call(request)),
            breaker: self.breaker.clone(),
        }
    }
}

pin_project! {
    #[project = GuardProjection]
    enum GuardFuture<F> {
        Open { response: Option<Response> },
        Running { #[pin] future: Timeout<F>, breaker: DatabaseBreaker },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for GuardFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProjection::Open { response } => Poll::Ready(Ok(response.take().expect("polled after completion"))),
            GuardProjection::Running { future, breaker } => {
                let response = match ready!(future.poll(cx)) {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_elapsed) => timed_out(),
                };
                if response.extensions().get::<DatabaseOutage>().is_some() {
                    breaker.0.on_error();
                } else if !response.status().is_server_error() {
                    breaker.0.on_success();
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;
    use crate::problem::DATABASE_UNAVAILABLE;

    async fn send(router: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(headers["content-type"], "application/problem+json");
            assert!(headers.contains_key("retry-after"));
        }
        let kind = headers.get("content-type").map(|v| v.to_str().unwrap().to_owned());
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_request_over_the_time_limit_is_answered_503() {
        let api = Router::new()
            .route("/slow", get(|| tokio::time::sleep(Duration::from_secs(30))))
            .route("/fast", get(|| async { "ok" }));
        let router = protect(api, Duration::from_millis(50), 8, DatabaseBreaker::default());
        let (status, _, body) = send(&router, "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("timed out"), "{body}");
        assert_eq!(send(&router, "/fast").await.0, StatusCode::OK);
    }

    /// One limit for all routes: a request held on one route sheds a request to another.
    #[tokio::test]
    async fn the_concurrency_limit_is_global_and_sheds_at_once() {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (e, r) = (entered.clone(), release.clone());
        let api = Router::new()
            .route(
                "/hold",
                get(move || async move {
                    e.notify_one();
                    r.notified().await;
                    "held"
                }),
            )
            .route("/other", get(|| async { "ok" }));
        let router = protect(api, Duration::from_secs(30), 1, DatabaseBreaker::default());
        let held = tokio::spawn({
            let router = router.clone();
            async move { send(&router, "/hold").await }
        });
        entered.notified().await;
        let (status, _, body) = send(&router, "/other").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("concurrent requests"), "{body}");
        release.notify_one();
        assert_eq!(held.await.unwrap().0, StatusCode::OK);
        // The permit is back.
        assert_eq!(send(&router, "/other").await.0, StatusCode::OK);
    }

    /// Database outages (and only those) open the breaker, which then answers without calling
    /// the route. Takes [`WINDOW`]: the policy judges no earlier.
    #[tokio::test]
    async fn database_outages_open_the_breaker() {
        let api = Router::new()
            .route(
                "/down",
                get(|| async {
                    ApiError::Unavailable { reason: DATABASE_UNAVAILABLE.into(), retry_after_secs: 2 }.into_response()
                }),
            )
            .route("/busy", get(|| async { ApiError::Unavailable { reason: "busy".into(), retry_after_secs: 1 } }));
        let router = protect(api, Duration::from_secs(30), 8, DatabaseBreaker::default());
        tokio::time::sleep(WINDOW).await;
        // Other 503s say nothing about the database.
        for _ in 0..MIN_REQUESTS * 2 {
            let (_, _, body) = send(&router, "/busy").await;
            assert!(body.contains("busy"), "{body}");
        }
        let mut open = false;
        for _ in 0..MIN_REQUESTS * 2 {
            let (status, _, body) = send(&router, "/down").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            open |= body.contains("circuit breaker open");
        }
        assert!(open, "the breaker never opened");
        let (_, _, body) = send(&router, "/busy").await;
        assert!(body.contains("circuit breaker open"), "{body}");
    }
}
