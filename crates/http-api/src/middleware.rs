//! The request pipeline both APIs wrap their routes in, so both behave alike at the edges.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use service_runtime::operations::{OperationsState, ReadinessCheck};
use service_runtime::telemetry;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config, SwaggerUi};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::problem::ApiError;

const REQUEST_ID: &str = "x-request-id";

/// Where the interactive documentation (Swagger UI, shipped inside the binary) is served.
pub const DOCS_PATH: &str = "/docs";

/// What [`service`] assembles into one API.
pub struct Service<S> {
    /// The API's own routes, each registered with `routes!` (so each has its spec operation),
    /// and the document they extend (title, description: [`crate::openapi::base`]).
    pub api: OpenApiRouter<S>,
    pub state: S,
    /// After this a request is answered 503 with `Retry-After` instead of hanging.
    pub timeout: Duration,
    /// API requests served at once; more are answered 503 with `Retry-After` (load shedding).
    pub max_concurrent_requests: usize,
    /// What `/ready` asks about.
    pub checks: Vec<ReadinessCheck>,
    pub metrics: PrometheusHandle,
    pub cors: CorsLayer,
}

/// The routers an API serves and the OpenAPI document built from those same routers: the
/// API's routes, and the operational ones (`/health`, `/ready`, `/metrics`, `/openapi.json`).
pub fn document<S: Clone + Send + Sync + 'static>(
    api: OpenApiRouter<S>,
) -> (Router<S>, Router<OperationsState>, OpenApi) {
    let (api, mut spec) = api.split_for_parts();
    let (operations, operations_spec) = crate::openapi::operational_routes().split_for_parts();
    spec.merge(operations_spec);
    (api, operations, spec)
}

/// The OpenAPI document of an API whose routes are `api` (what its `/openapi.json` serves).
pub fn spec<S: Clone + Send + Sync + 'static>(api: OpenApiRouter<S>) -> OpenApi {
    document(api).2
}

/// The whole HTTP surface of an API: its routes (with the time limit), the operational routes,
/// `/openapi.json` and `/docs`, problem+json for unknown routes (404) and methods (405), and
/// the [`edge_layers`].
pub fn service<S: Clone + Send + Sync + 'static>(service: Service<S>) -> Router {
    let Service { api, state, timeout, max_concurrent_requests, checks, metrics, cors } = service;
    let (api, operations, spec) = document(api);
    let breaker = crate::resilience::DatabaseBreaker::default();
    let api = crate::resilience::protect(api, timeout, max_concurrent_requests, breaker).with_state(state);
    let operations = operations.with_state(OperationsState::new(checks, metrics));
    // No validator badge: Swagger UI would send the document to an outside validator service.
    let docs: Router = SwaggerUi::new(DOCS_PATH).config(Config::new(["/openapi.json"]).validator_url("none")).into();
    let router = api
        .merge(operations)
        .merge(docs)
        .layer(crate::openapi::spec_layer(&spec))
        .fallback(|| async { ApiError::NotFound("resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    edge_layers(router, cors)
}

/// The outer layers: a request id (kept from the client or made up, and echoed back), one
/// trace span per request carrying it, CORS, and the HTTP metrics.
pub fn edge_layers(router: Router, cors: CorsLayer) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID);
    router
        .layer(middleware::from_fn(service_runtime::operations::track_http_metrics))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            let span = tracing::info_span!(
                "request",
                method = %request.method(),
                uri = %request.uri(),
                request_id = %id,
                trace_id = tracing::field::Empty,
            );
            // A W3C traceparent from the caller makes this request part of the caller's trace.
            let traceparent = request.headers().get(telemetry::TRACEPARENT).and_then(|v| v.to_str().ok());
            telemetry::continue_trace(&span, traceparent);
            span
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// CORS for `origins` (none: browsers on other origins are refused), with the methods and
/// headers an API uses.
pub fn cors(
    origins: &[String],
    methods: impl Into<Vec<Method>>,
    headers: impl Into<Vec<HeaderName>>,
    expose: impl Into<Vec<HeaderName>>,
) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods(methods.into())
        .allow_headers(headers.into())
        .expose_headers(expose.into())
}
