//! The operational endpoints every service serves, and the HTTP metrics middleware.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One dependency `/ready` asks about, e.g. `postgres`.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    check: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
    /// Sets the dependency's gauges; run on every `/metrics` scrape, so they are current.
    observe: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl ReadinessCheck {
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { name, check: Arc::new(move || Box::pin(check())), observe: None }
    }

    /// Readiness of the Postgres pool; its connection gauges come with it.
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        let observed = pool.clone();
        let mut check = Self::new("postgres", move || {
            let pool = pool.clone();
            async move { crate::database::ping(&pool).await }
        });
        check.observe = Some(Arc::new(move || crate::database::record_pool_gauges(&observed)));
        check
    }
}

/// A readiness probe must answer quickly even when a dependency hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the operational handlers need. Public so an API can mount [`health`], [`ready`] and
/// [`render_metrics`] on a router of its own (with their OpenAPI descriptions).
#[derive(Clone)]
pub struct OperationsState {
    checks: Arc<Vec<ReadinessCheck>>,
    metrics: PrometheusHandle,
}

impl OperationsState {
    pub fn new(checks: Vec<ReadinessCheck>, metrics: PrometheusHandle) -> Self {
        Self { checks: Arc::new(checks), metrics }
    }
}

/// A dependency's state as callers see it: `up` or `down`, never the driver's error, which can
/// name hosts, users and databases (it is logged instead).
#[derive(Serialize)]
struct DependencyStatus {
    status: &'static str,
}

#[derive(Serialize)]
struct ReadinessReport {
    status: &'static str,
    dependencies: BTreeMap<&'static str, DependencyStatus>,
}

/// `/health` (always 200 while the process serves), `/ready` (200, or 503 naming the dependency
/// that is down) and `/metrics` (Prometheus text format).
pub fn router(checks: Vec<ReadinessCheck>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(OperationsState::new(checks, metrics))
}

/// `GET /health`: `{"status": "ok"}` while the process serves.
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /ready`: 200 when every dependency answers, else 503; the body names each one.
pub async fn ready(State(state): State<OperationsState>) -> Response {
    let mut dependencies = BTreeMap::new();
    for check in state.checks.iter() {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.check)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        let status = match outcome {
            Ok(()) => DependencyStatus { status: "up" },
            Err(error) => {
                tracing::warn!(dependency = check.name, %error, "readiness check failed");
                DependencyStatus { status: "down" }
            }
        };
        dependencies.insert(check.name, status);
    }
    let all_up = dependencies.values().all(|d| d.status == "up");
    let report = ReadinessReport { status: if all_up { "ready" } else { "unavailable" }, dependencies };
    let code = if all_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(report)).into_response()
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render_metrics(State(state): State<OperationsState>) -> Response {
    for observe in state.checks.iter().filter_map(|c| c.observe.as_ref()) {
        observe();
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Counts requests and records their latency by method, route template and status.
/// The route template (not the raw path) keeps label cardinality bounded.
pub async fn track_http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Serves `router` on `addr` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    addr: std::net::SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router.layer(axum::middleware::from_fn(track_http_metrics)))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
