//! Every error response the API sends, as `application/problem+json` (RFC 9457).
//!
//! Error policy: handlers return [`ApiError`]; anything that becomes a response is a typed
//! variant here. Unexpected failures (`Internal`) are logged once, here, with their cause, and the
//! client only sees a generic sentence. Database unavailability is a 503 with `Retry-After`,
//! never a 500: the client did nothing wrong and should try again.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::{FieldViolation, Violations};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Invalid(Violations),
    #[error("{0}")]
    MalformedBody(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("this operation requires the {0} role")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the resource has changed since the version named in If-Match")]
    PreconditionFailed,
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("too many attempts; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{reason}")]
    Unavailable { reason: String, retry_after_secs: u64 },
    #[error("an unexpected error occurred")]
    Internal(#[from] anyhow::Error),
}

/// The RFC 9457 body. `type` is a relative URI naming the problem kind; clients may switch on it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "/problems/validation-error",
    "title": "Your request has invalid fields",
    "status": 422,
    "detail": "the request has invalid fields",
    "errors": [{"field": "price", "code": "not_positive", "message": "price must be greater than 0"}]
}))]
pub struct Problem {
    /// The problem kind, `/problems/<kind>`: stable, clients may switch on it.
    #[serde(rename = "type")]
    #[schema(pattern = "^/problems/[a-z-]+$", example = "/problems/not-found")]
    pub kind: String,
    /// A short summary of the problem kind.
    #[schema(value_type = String, example = "Not found")]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599, example = 404)]
    pub status: u16,
    /// What went wrong with this request.
    #[schema(example = "product not found")]
    pub detail: String,
    /// Validation errors (422 only): every bad field, not just the first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::openapi::FieldViolation>, required = false)]
    pub errors: Vec<FieldViolation>,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation-error", "Your request has invalid fields"),
            MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed-body", "The request body is not valid JSON"),
            UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large"),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            PreconditionFailed => (StatusCode::PRECONDITION_FAILED, "precondition-failed", "Precondition failed"),
            IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused")
            }
            TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "Service temporarily unavailable")
            }
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal-error", "Internal server error"),
        }
    }

    /// A request was rejected because a single field is wrong.
    pub fn invalid_field(violation: FieldViolation) -> Self {
        ApiError::Invalid(Violations(vec![violation]))
    }

    /// Database errors: a pool that cannot reach Postgres is a 503; anything else is internal.
    pub fn from_database(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::database_unavailable(),
            // The server is shutting down or restarting (57P01-57P03), a connection failed
            // (class 08), or it has no connection slot free (53300): all pass with time.
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| {
                    ["57P01", "57P02", "57P03", "53300"].contains(&&*code) || code.starts_with("08")
                }) =>
            {
                Self::database_unavailable()
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

/// The reason of [`ApiError::database_unavailable`]; the circuit breaker counts such answers.
pub const DATABASE_UNAVAILABLE: &str = "the database is unavailable";

impl ApiError {
    /// Postgres could not be reached (503, retry in 2 s).
    pub fn database_unavailable() -> Self {
        ApiError::Unavailable { reason: DATABASE_UNAVAILABLE.into(), retry_after_secs: 2 }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from_database(error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected a body with Content-Type: application/json".into())
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::MalformedBody(e.body_text()),
            JsonRejection::JsonDataError(e) => {
                ApiError::Invalid(Violations(vec![FieldViolation::new("body", "schema", e.body_text())]))
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge { limit: crate::BODY_LIMIT_BYTES }
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl ApiError {
    /// The RFC 9457 body of this error, as the client sees it.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let detail = match self {
            ApiError::Internal(_) => "an unexpected error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Invalid(Violations(list)) => list.clone(),
            _ => Vec::new(),
        };
        Problem { kind: format!("/problems/{slug}"), title, status: status.as_u16(), detail, errors }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Unavailable { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        };
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed unexpectedly"),
            ApiError::Unavailable { reason, .. } => tracing::warn!(%reason, "answering 503"),
            _ => {}
        }
        let mut response = (status, serde_json::to_vec(&problem).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(&self, ApiError::Unavailable { reason, .. } if reason == DATABASE_UNAVAILABLE) {
            response.extensions_mut().insert(crate::resilience::DatabaseOutage);
        }
        response
    }
}
