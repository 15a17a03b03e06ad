use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::accounts;
use crate::app::AppState;
use crate::commands::metadata;
use crate::extract::{ApiJson, IdempotencyKey, RequestContext};
use crate::idempotency;
use crate::problem::ApiError;

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    username: String,
    email: String,
    password: String,
}

#[derive(Serialize)]
pub struct Registered {
    id: Uuid,
}

/// `POST /api/v1/users`: open registration; every new account is a `customer`.
pub async fn register(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    context: RequestContext,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let hash = idempotency::fingerprint(&request);
    idempotency::run_once(&state.pool, key.as_deref(), "POST /api/v1/users", &hash, || async {
        let RegisterRequest { username, email, password } = request;
        let id = accounts::register(
            &state.commands,
            &state.hasher,
            &username,
            &email,
            password,
            &[],
            metadata("anonymous", &context),
        )
        .await?;
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/users/{id}"))],
            Json(Registered { id }),
        )
            .into_response())
    })
    .await
}
