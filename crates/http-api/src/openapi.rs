//! The OpenAPI 3.1 pieces both APIs share: the `Problem` schema, one reusable response per
//! error status (all `application/problem+json`), the `bearer` security scheme, and the
//! operational routes (`/health`, `/ready`, `/metrics`, `/openapi.json`) with their operations.
//!
//! Every route either API serves is registered through `utoipa_axum`'s `routes!`, which takes
//! the path and methods from the handler's `#[utoipa::path]`: the spec and the router are built
//! from the same list, so a route cannot be served without a spec operation (see
//! [`crate::middleware::service`]). `/docs` (Swagger UI, a static bundle) is the one exception.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use service_runtime::operations::{self, OperationsState};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, InfoBuilder, Object, OpenApi, Ref, RefOr, ResponseBuilder, Type};
use utoipa::{OpenApi as _, ToResponse, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::{ApiError, PROBLEM_JSON};

/// The name of the bearer-token security scheme; protected operations list it.
pub const BEARER: &str = "bearer";

/// One invalid field of a 422 problem (documents `domain::FieldViolation`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"field": "price", "code": "not_positive", "message": "price must be greater than 0"}))]
pub struct FieldViolation {
    /// The JSON field as the client sent it (`body` when the body's shape is wrong).
    pub field: String,
    /// A stable code clients may switch on (`required`, `too_long`, `length`, ...).
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

/// A problem response: `description`, the `Problem` schema as `application/problem+json`, an
/// example rendered from a real `ApiError`, and the given headers.
fn problem_response(
    description: &str,
    example: ApiError,
    headers: &[(&str, &str, Type)],
) -> RefOr<utoipa::openapi::Response> {
    let example = serde_json::to_value(example.problem()).ok();
    let mut response = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).example(example).build(),
    );
    for (name, description, kind) in headers {
        response = response.header(
            *name,
            HeaderBuilder::new().schema(Object::with_type(kind.clone())).description(Some(*description)).build(),
        );
    }
    response.build().into()
}

const RETRY_AFTER: (&str, &str, Type) = ("Retry-After", "Seconds to wait before retrying", Type::Integer);

/// Declares a reusable problem response, referenced from operations as `response = Name`.
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => ($description:literal, $example:expr $(, $header:expr)*);)+) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                    (stringify!($name), problem_response($description, $example, &[$($header),*]))
                }
            }
        )+
    };
}

problem_responses! {
    /// 400.
    BadRequest => ("The request is malformed: a body that is not JSON, or an invalid header or query parameter",
        ApiError::MalformedBody("expected value at line 1 column 1".into()));
    /// 401, with `WWW-Authenticate: Bearer`.
    Unauthorized => ("A valid bearer token is required (missing, malformed, expired or badly signed)",
        ApiError::Unauthorized,
        ("WWW-Authenticate", "Always `Bearer`", Type::String));
    /// 403.
    Forbidden => ("The token is valid but its role may not do this", ApiError::Forbidden("admin"));
    /// 404.
    NotFound => ("No such resource (unknown, deleted or malformed id)", ApiError::NotFound("product"));
    /// 409.
    Conflict => ("The request conflicts with the current state; `detail` says how: a username, SKU or slug \
        another account, product or category has, a status change or stock adjustment the rules refuse, a category \
        move under its own descendants or the deletion of one with children, concurrent writes, or a request with \
        this Idempotency-Key still running",
        ApiError::Conflict("username is already taken".into()));
    /// 412.
    PreconditionFailed => ("`If-Match` does not name the current version", ApiError::PreconditionFailed);
    /// 413.
    PayloadTooLarge => ("The body is larger than 64 KiB", ApiError::PayloadTooLarge { limit: crate::BODY_LIMIT_BYTES });
    /// 415.
    UnsupportedMediaType => ("The body is not sent as `application/json`",
        ApiError::UnsupportedMediaType("expected a body with Content-Type: application/json".into()));
    /// 422.
    UnprocessableEntity => ("Invalid fields (every one is listed in `errors`, categories that do not exist too), unknown \
        fields, or an Idempotency-Key reused with another body",
        ApiError::Invalid(domain::Violations(vec![domain::FieldViolation::new("price", "not_positive", "price must be greater than 0")])));
    /// 429, with `Retry-After`.
    TooManyRequests => ("Too many attempts from this client (or, for logins, for this username)", ApiError::TooManyRequests { retry_after_secs: 42 }, RETRY_AFTER);
    /// 503, with `Retry-After`.
    ServiceUnavailable => ("A dependency is unavailable or the request took too long; retry after `Retry-After` seconds",
        ApiError::Unavailable { reason: "the database is unavailable".into(), retry_after_secs: 2 }, RETRY_AFTER);
}

/// The shared components, so `$ref`s from either API resolve.
#[derive(utoipa::OpenApi)]
#[openapi(
    components(
        schemas(crate::problem::Problem, FieldViolation),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PreconditionFailed, PayloadTooLarge,
            UnsupportedMediaType, UnprocessableEntity, TooManyRequests, ServiceUnavailable
        )
    ),
    modifiers(&BearerScheme),
    tags((name = "operations", description = "Liveness, readiness, metrics and this document"))
)]
struct Shared;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An HS256 token from `POST /api/v1/auth/token` on the write API"))
                    .build(),
            ),
        );
    }
}

/// The document an API starts from: its title and description, plus the shared components.
pub fn base(title: &str, description: &str) -> OpenApi {
    let mut openapi = Shared::openapi();
    openapi.info = InfoBuilder::new()
        .title(title)
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .license(Some(utoipa::openapi::LicenseBuilder::new().name("Apache-2.0").identifier(Some("Apache-2.0")).build()))
        .build();
    openapi
}

/// `GET /health` body.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// One dependency in a readiness report.
#[derive(Serialize, ToSchema)]
pub struct DependencyStatus {
    /// Only `up` or `down`: why a dependency is down is logged, not told to callers.
    #[schema(pattern = "^(up|down)$")]
    pub status: String,
}

/// `GET /ready` body: every dependency by name.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "dependencies": {"postgres": {"status": "up"}}}))]
pub struct ReadinessReport {
    #[schema(pattern = "^(ready|unavailable)$")]
    pub status: String,
    pub dependencies: std::collections::BTreeMap<String, DependencyStatus>,
}

/// Liveness.
#[utoipa::path(
    get, path = "/health", tag = "operations", operation_id = "health",
    responses((status = 200, description = "The process is serving", body = Health))
)]
async fn health() -> Response {
    operations::health().await.into_response()
}

/// Readiness: 503 names each dependency that is down.
#[utoipa::path(
    get, path = "/ready", tag = "operations", operation_id = "ready",
    responses(
        (status = 200, description = "Every dependency answers", body = ReadinessReport),
        (status = 503, description = "A dependency is down (a readiness report, not a problem)", body = ReadinessReport,
         example = json!({"status": "unavailable", "dependencies": {"postgres": {"status": "down"}}})),
    )
)]
async fn ready(state: State<OperationsState>) -> Response {
    operations::ready(state).await
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format (0.0.4)", content_type = "text/plain", body = String,
               example = "# TYPE http_requests_total counter\nhttp_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1\n"))
)]
async fn metrics(state: State<OperationsState>) -> Response {
    operations::render_metrics(state).await
}

/// This API's OpenAPI document, serialised once at start.
#[derive(Clone)]
pub(crate) struct SpecJson(Arc<Vec<u8>>);

/// This OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object))
)]
async fn openapi_json(Extension(SpecJson(json)): Extension<SpecJson>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json.as_ref().clone()).into_response()
}

/// The operational routes, documented: `/health`, `/ready`, `/metrics`, `/openapi.json`.
pub(crate) fn operational_routes() -> OpenApiRouter<OperationsState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// What `/openapi.json` needs at run time: the document, serialised.
pub(crate) fn spec_layer(spec: &OpenApi) -> Extension<SpecJson> {
    Extension(SpecJson(Arc::new(serde_json::to_vec(spec).expect("an OpenAPI document serialises"))))
}
