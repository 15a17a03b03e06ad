//! The write API's routes, one module per resource.

mod products;
mod tokens;
mod users;

use axum::routing::{patch, post};
use axum::Router;
use cqrs_es::AggregateError;

use crate::app::AppState;
use crate::problem::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", post(users::register))
        .route("/api/v1/auth/token", post(tokens::issue))
        .route("/api/v1/products", post(products::create))
        .route("/api/v1/products/{id}", patch(products::update).delete(products::delete))
}

/// The event store failed: unreachable Postgres is a 503, anything else an internal error.
pub fn store_failure<E: std::error::Error>(error: AggregateError<E>) -> ApiError {
    let unavailable = || ApiError::Unavailable { reason: "the event store is unavailable".into(), retry_after_secs: 2 };
    match error {
        AggregateError::DatabaseConnectionError(_) => unavailable(),
        AggregateError::UnexpectedError(cause) => match cause.downcast::<sqlx::Error>() {
            Ok(sqlx_error) => ApiError::from_database(*sqlx_error),
            Err(other) => ApiError::Internal(anyhow::anyhow!(other)),
        },
        other => ApiError::Internal(anyhow::anyhow!(other.to_string())),
    }
}
