//! The request pipeline both APIs wrap their routes in, so both behave alike at the edges.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::problem::ApiError;

const REQUEST_ID: &str = "x-request-id";

/// API routes with problem+json for unknown routes (404) and methods (405), and a time limit
/// after which a request is answered 503 with `Retry-After` instead of hanging.
pub fn api_routes<S: Clone + Send + Sync + 'static>(routes: Router<S>, state: S, timeout: Duration) -> Router {
    routes
        .fallback(|| async { ApiError::NotFound("resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(move |request: Request, next: Next| with_timeout(timeout, request, next)))
        .with_state(state)
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
            tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// CORS for `origins` (none: browsers on other origins are refused), with the methods and
/// headers an API uses.
pub fn cors(origins: &[String], methods: impl Into<Vec<Method>>, headers: impl Into<Vec<HeaderName>>, expose: impl Into<Vec<HeaderName>>) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods(methods.into())
        .allow_headers(headers.into())
        .expose_headers(expose.into())
}

async fn with_timeout(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable { reason: "the request timed out".into(), retry_after_secs: 1 }.into_response(),
    }
}
