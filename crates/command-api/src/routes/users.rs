use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_api::client::ClientAddr;
use http_api::openapi::{
    BadRequest, Conflict, PayloadTooLarge, ServiceUnavailable, TooManyRequests, UnprocessableEntity,
    UnsupportedMediaType,
};
use http_api::problem::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::accounts;
use crate::app::AppState;
use crate::extract::{ApiJson, IdempotencyKey, RequestContext};

/// A new account. Every field is checked and all problems are reported together (422).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"}))]
pub struct RegisterRequest {
    /// 3 to 32 characters of `a-z 0-9 . _ -`, case-insensitive and unique.
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9._-]+$")]
    username: String,
    /// Checked for shape only; stored lower-cased.
    #[schema(max_length = 254, format = "email")]
    email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128, format = "password")]
    password: String,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "3f0c6c5e-8a48-5d7e-9d6c-2f1e0c1b7a42"}))]
pub struct Registered {
    /// The user's id (derived from the normalised username).
    id: Uuid,
}

/// Register a customer account.
///
/// Open registration: every new account is a `customer`. With an `Idempotency-Key`, a retry
/// with the same body from the same client address gets the first response back
/// (`Idempotent-Replayed: true`). Registrations are limited per client address (429 with
/// `Retry-After`); when too many passwords are being hashed at once the answer is 503 with
/// `Retry-After`.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    operation_id = "registerUser",
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
         description = "Makes a retry safe: 1 to 255 visible ASCII characters, unique per request", example = "7d9f6f1e-register-alice"),
    ),
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = Registered,
         headers(
            ("Location" = String, description = "The user's profile on the read API: `/api/v1/users/{id}`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same key"),
         )),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 429, response = TooManyRequests),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    IdempotencyKey(key): IdempotencyKey,
    context: RequestContext,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    state.registration_limiter.check(client)?;
    // Anonymous: the key belongs to the client address, so nobody else can replay or block it.
    let scope = format!("POST /api/v1/users {}", client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()));
    let hash = state.idempotency.fingerprint(&request);
    state
        .idempotency
        .run_once(&state.pool, key.as_deref(), &scope, &hash, || async {
            let RegisterRequest { username, email, password } = request;
            let id = accounts::register(
                &state.commands,
                &state.hasher,
                &username,
                &email,
                password,
                &[],
                context.metadata("anonymous"),
            )
            .await?;
            Ok((StatusCode::CREATED, [(header::LOCATION, format!("/api/v1/users/{id}"))], Json(Registered { id }))
                .into_response())
        })
        .await
}
