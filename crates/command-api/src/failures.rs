//! How a command that did not commit is answered: the one place that maps the event store's
//! and the aggregates' errors to problem responses.

use cqrs_es::AggregateError;
use domain::{ProductError, UserError};
use event_store::CommandError;
use http_api::problem::ApiError;

use crate::accounts::RegistrationError;

/// The event store failed: unreachable Postgres is a 503, anything else an internal error.
pub fn store_failure<E: std::error::Error>(error: AggregateError<E>) -> ApiError {
    match error {
        AggregateError::DatabaseConnectionError(_) => ApiError::database_unavailable(),
        AggregateError::UnexpectedError(cause) => match cause.downcast::<sqlx::Error>() {
            Ok(sqlx_error) => ApiError::from_database(*sqlx_error),
            Err(other) => ApiError::Internal(anyhow::anyhow!(other)),
        },
        other => ApiError::Internal(anyhow::anyhow!(other.to_string())),
    }
}

/// A product command that did not commit. `version_pinned`: the client sent `If-Match`.
pub fn product_failure(error: CommandError<ProductError>, version_pinned: bool) -> ApiError {
    match error {
        CommandError::Rejected(ProductError::Invalid(violations)) => ApiError::Invalid(violations),
        CommandError::Rejected(ProductError::AlreadyExists(_)) => ApiError::Conflict("product already exists".into()),
        CommandError::Rejected(ProductError::NotFound | ProductError::Deleted) => ApiError::NotFound("product"),
        CommandError::Rejected(ProductError::VersionMismatch { .. }) => ApiError::PreconditionFailed,
        CommandError::Rejected(
            rule @ (ProductError::InvalidTransition { .. } | ProductError::InsufficientStock { .. }),
        ) => ApiError::Conflict(rule.to_string()),
        // With If-Match, losing the race means the version the client saw is gone.
        CommandError::Conflict if version_pinned => ApiError::PreconditionFailed,
        CommandError::Conflict => {
            ApiError::Conflict("the product kept changing concurrently; retry the request".into())
        }
        CommandError::Store(e) => store_failure(e),
    }
}

/// A user command that did not commit.
pub fn user_failure(error: CommandError<UserError>) -> ApiError {
    match error {
        CommandError::Rejected(UserError::Invalid(violations)) => ApiError::Invalid(violations),
        CommandError::Rejected(UserError::UsernameTaken) | CommandError::Conflict => {
            ApiError::Conflict("username is already taken".into())
        }
        CommandError::Rejected(UserError::NotFound) => ApiError::NotFound("user"),
        CommandError::Rejected(UserError::Deactivated) => ApiError::Conflict("user is deactivated".into()),
        CommandError::Store(e) => store_failure(e),
    }
}

impl From<RegistrationError> for ApiError {
    fn from(error: RegistrationError) -> Self {
        match error {
            RegistrationError::Invalid(violations) => ApiError::Invalid(violations),
            RegistrationError::Hashing(cause) => ApiError::Internal(cause),
            RegistrationError::Command(error) => user_failure(error),
        }
    }
}
