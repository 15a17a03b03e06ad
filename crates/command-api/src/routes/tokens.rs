use axum::extract::State;
use axum::http::{header, StatusCode};
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

use crate::accounts::{self, SessionTokens};
use crate::app::AppState;
use crate::extract::ApiJson;
use http_api::client::ClientAddr;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "admin", "password": "a-long-password"}))]
pub struct TokenRequest {
    username: String,
    #[schema(format = "password")]
    password: String,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"access_token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl", "token_type": "Bearer",
    "expires_in": 300, "refresh_token": "q3N8c0dW1m5b7sQeXkA9rT2yJv4LhP6uZf0GdCwYxE8"}))]
pub struct TokenResponse {
    /// An EdDSA-signed JWT, valid for `expires_in` seconds: send it as
    /// `Authorization: Bearer <token>` to either API. It cannot be revoked before it expires.
    access_token: String,
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: &'static str,
    /// Seconds until the access token expires (at most 3600).
    #[schema(minimum = 0, maximum = 3600)]
    expires_in: u64,
    /// An opaque token for `POST /api/v1/auth/refresh`: it can be used once (each refresh
    /// returns the next one), and using it twice ends the session.
    refresh_token: String,
}

impl TokenResponse {
    fn answer(state: &AppState, tokens: SessionTokens) -> impl IntoResponse {
        (
            // Tokens are credentials: no cache may keep them.
            [(header::CACHE_CONTROL, "no-store")],
            Json(TokenResponse {
                access_token: tokens.access_token,
                token_type: "Bearer",
                expires_in: state.tokens.ttl().as_secs(),
                refresh_token: tokens.refresh_token,
            }),
        )
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"refresh_token": "q3N8c0dW1m5b7sQeXkA9rT2yJv4LhP6uZf0GdCwYxE8"}))]
pub struct RefreshRequest {
    #[schema(max_length = 64)]
    refresh_token: String,
}

/// Get a bearer token.
///
/// Exchanges a username and password for a bearer token and the refresh token of a new
/// session. Unknown user, wrong password and
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
    let tokens = accounts::login(
        &state.commands,
        &state.hasher,
        &state.login_limiter,
        &state.tokens,
        &state.sessions,
        &request.username,
        request.password,
        client,
    )
    .await?;
    Ok(TokenResponse::answer(&state, tokens))
}

/// Renew a bearer token.
///
/// Exchanges a refresh token for a new access token and the next refresh token; the one sent
/// is used up. Sending a used-up token again ends the session (someone else holds a copy), as
/// does a password change, a role change or a deactivation of the user since login: all
/// answered 401, like an unknown or expired token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    operation_id = "refreshToken",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A new bearer token and refresh token", body = TokenResponse,
         headers(("Cache-Control" = String, description = "`no-store`: tokens are credentials"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let refreshed = state.sessions.refresh(&state.commands, &request.refresh_token).await?;
    let access_token = state.tokens.issue(refreshed.user_id, refreshed.role)?;
    Ok(TokenResponse::answer(&state, SessionTokens { access_token, refresh_token: refreshed.refresh_token }))
}

/// End a session.
///
/// Ends the session the refresh token belongs to: none of its refresh tokens works any more.
/// Access tokens already issued stay valid until they expire (`expires_in`). Always 204, also
/// for a token that is unknown or already ended.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    operation_id = "logout",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "The session has ended"),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    state.sessions.end(&request.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
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
