use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use http_api::openapi::{
    BadRequest, PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized, UnprocessableEntity,
    UnsupportedMediaType,
};
use http_api::problem::ApiError;
use http_api::tokens::JwkSet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts;
use crate::app::AppState;
use crate::extract::{ApiJson, ClientAddr};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "admin", "password": "a-long-password"}))]
pub struct TokenRequest {
    username: String,
    #[schema(format = "password")]
    password: String,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"access_token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl", "token_type": "Bearer", "expires_in": 300}))]
pub struct TokenResponse {
    /// An EdDSA-signed JWT, valid for `expires_in` seconds: send it as `Authorization: Bearer <token>` to either API.
    access_token: String,
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: &'static str,
    /// Seconds until the token expires (at most 3600).
    #[schema(minimum = 0, maximum = 3600)]
    expires_in: u64,
}

/// Get a bearer token.
///
/// Exchanges a username and password for a bearer token. Unknown user, wrong password and
/// deactivated account all get the same 401. Attempts are throttled per username and per
/// client address (429 with `Retry-After`).
#[utoipa::path(
    post,
    path = "/api/v1/auth/token",
    tag = "auth",
    operation_id = "issueToken",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A bearer token", body = TokenResponse,
         headers(("Cache-Control" = String, description = "`no-store`: tokens are credentials"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 429, response = TooManyRequests),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn issue(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let token = accounts::login(
        &state.commands,
        &state.hasher,
        &state.login_limiter,
        &state.tokens,
        &request.username,
        request.password,
        client,
    )
    .await?;
    Ok((
        // Tokens are credentials: no cache may keep them.
        [(header::CACHE_CONTROL, "no-store")],
        Json(TokenResponse { access_token: token, token_type: "Bearer", expires_in: state.tokens.ttl().as_secs() }),
    ))
}

/// The public keys tokens are verified with.
///
/// The Ed25519 keys (JWK Set, RFC 7517/8037) access tokens are signed with, by `kid`: during a
/// key rotation, both the new and the old. Public keys only; what a verifier such as query-api
/// is configured with (`TOKEN_VERIFY_KEYS`).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    operation_id = "tokenKeys",
    responses(
        (status = 200, description = "The accepted public keys", body = JwkSet,
         headers(("Cache-Control" = String, description = "Cacheable for 5 minutes"))),
    )
)]
pub async fn keys(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(state.tokens.verifier().jwks()))
}
