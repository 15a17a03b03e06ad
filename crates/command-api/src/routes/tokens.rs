use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::accounts;
use crate::app::AppState;
use crate::extract::{ApiJson, ClientAddr};
use crate::problem::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    username: String,
    password: String,
}

#[derive(Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// `POST /api/v1/auth/token`: exchanges a username and password for a bearer token.
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
