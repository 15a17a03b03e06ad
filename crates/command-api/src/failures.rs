//! How a command that did not commit is answered: the one place that maps the event store's
//! and the aggregates' errors to problem responses.

use cqrs_es::AggregateError;
use domain::{CategoryError, FieldViolation, ProductError, UserError};
use event_store::CommandError;
use http_api::problem::ApiError;
use sqlx::postgres::PgDatabaseError;

use crate::accounts::RegistrationError;

/// SQLSTATE of a catalog rule that another aggregate stands in the way of (a taken SKU or slug, a
/// category cycle, a category that still has children): raised by the event store's trigger
/// (migration `catalog_rules`) in the appending transaction, so nothing was stored.
const CATALOG_CONFLICT: &str = "CT409";

/// SQLSTATE of a command that refers to a category that does not exist (or no longer does).
const CATALOG_UNKNOWN_REFERENCE: &str = "CT422";

/// SQLSTATEs `serialization_failure` and `deadlock_detected`: the append lost to a concurrent one
/// (two products swapping SKUs at once, say) and was rolled back; the same request may succeed now.
const TRANSACTION_ROLLBACKS: [&str; 2] = ["40001", "40P01"];

/// SQLSTATE `untranslatable_character`: text with a NUL character (`\u0000`), which Postgres
/// cannot hold in `text` or `jsonb` (the catalog rules read events as `jsonb`).
const UNTRANSLATABLE_CHARACTER: &str = "22P05";

/// The event store failed: a catalog rule it enforces is a 409 or a 422, unreachable Postgres is
/// a 503, anything else an internal error.
///
/// A catalog rule arrives here (as a database error), not as [`CommandError::Conflict`], so it is
/// never retried: another attempt would meet the same rule. (postgres-es reserves SQLSTATE 23505
/// for its optimistic lock, which is why the rules raise codes of their own.)
pub fn store_failure<E: std::error::Error>(error: AggregateError<E>) -> ApiError {
    match error {
        AggregateError::DatabaseConnectionError(_) => ApiError::database_unavailable(),
        AggregateError::UnexpectedError(cause) => match cause.downcast::<sqlx::Error>() {
            Ok(sqlx_error) => refusal(&sqlx_error).unwrap_or_else(|| ApiError::from_database(*sqlx_error)),
            Err(other) => ApiError::Internal(anyhow::anyhow!(other)),
        },
        other => ApiError::Internal(anyhow::anyhow!(other.to_string())),
    }
}

/// The answer to a catalog rule the event store refused the append for: the database error's
/// message is a sentence for people, its DETAIL the request field and its HINT a stable code.
/// Also text Postgres cannot store, which the routes reject first where they know the field
/// (see [`crate::routes`]); this is the answer for any they do not. And a transaction Postgres
/// rolled back to resolve a deadlock: nothing was stored, the client may retry.
fn refusal(error: &sqlx::Error) -> Option<ApiError> {
    let raised = error.as_database_error()?.try_downcast_ref::<PgDatabaseError>()?;
    match raised.code() {
        UNTRANSLATABLE_CHARACTER => Some(ApiError::invalid_field(nul_violation("body"))),
        code if TRANSACTION_ROLLBACKS.contains(&code) => {
            Some(ApiError::Conflict("the request collided with a concurrent change; retry it".into()))
        }
        CATALOG_CONFLICT => Some(ApiError::Conflict(raised.message().to_owned())),
        CATALOG_UNKNOWN_REFERENCE => Some(ApiError::invalid_field(FieldViolation::new(
            raised.detail().unwrap_or("body"),
            raised.hint().unwrap_or("unknown"),
            raised.message(),
        ))),
        _ => None,
    }
}

/// A catalog rule the event store refused an append for (a taken SKU, a category that does not
/// exist), as the field it concerns: the database error's DETAIL names the request field, its
/// HINT is a stable code, its message a sentence. `None` for every other failure.
pub fn rule_violation<E: std::error::Error>(error: &AggregateError<E>) -> Option<FieldViolation> {
    let raised = raised(error)?;
    [CATALOG_CONFLICT, CATALOG_UNKNOWN_REFERENCE].contains(&raised.code()).then(|| {
        FieldViolation::new(raised.detail().unwrap_or("body"), raised.hint().unwrap_or("conflict"), raised.message())
    })
}

/// The append was refused because another product holds the SKU, perhaps only since a moment
/// ago (a concurrent create of the same new SKU): CT409 on the field `sku`.
pub fn is_sku_taken<E: std::error::Error>(error: &AggregateError<E>) -> bool {
    raised(error).is_some_and(|raised| raised.code() == CATALOG_CONFLICT && raised.detail() == Some("sku"))
}

/// A transaction Postgres rolled back to resolve a deadlock or a serialization failure.
pub fn is_rolled_back<E: std::error::Error>(error: &AggregateError<E>) -> bool {
    raised(error).is_some_and(|raised| TRANSACTION_ROLLBACKS.contains(&raised.code()))
}

/// The Postgres error an append failed with, if that is what it failed with.
fn raised<E: std::error::Error>(error: &AggregateError<E>) -> Option<&PgDatabaseError> {
    let AggregateError::UnexpectedError(cause) = error else { return None };
    cause.downcast_ref::<sqlx::Error>()?.as_database_error()?.try_downcast_ref::<PgDatabaseError>()
}

/// A text field with a NUL character (`\u0000`), which nothing can store.
pub fn nul_violation(field: &str) -> FieldViolation {
    FieldViolation::new(field, "invalid", format!("{field} must not contain the NUL character (\\u0000)"))
}

/// A product command that did not commit. `version_pinned`: the client sent `If-Match`.
pub fn product_failure(error: CommandError<ProductError>, version_pinned: bool) -> ApiError {
    match error {
        CommandError::Rejected(ProductError::Invalid(violations)) => ApiError::Invalid(violations),
        CommandError::Rejected(ProductError::AlreadyExists(_)) => ApiError::Conflict("product already exists".into()),
        CommandError::Rejected(ProductError::NotFound | ProductError::Deleted) => ApiError::NotFound("product"),
        CommandError::Rejected(ProductError::VersionMismatch { .. }) => ApiError::PreconditionFailed,
        // The rule itself is the detail: which transitions there are, how much stock there is.
        // The reservation rules come only from the process manager's steps, never a request;
        // were one to arrive here, it is a conflict with the stock as it stands all the same.
        CommandError::Rejected(
            rule @ (ProductError::InvalidTransition { .. }
            | ProductError::InsufficientStock { .. }
            | ProductError::StockReserved { .. }
            | ProductError::NotEnoughAvailable { .. }
            | ProductError::NotForSale(_)
            | ProductError::ReservationSettled(_)
            | ProductError::NotHeld(_)),
        ) => ApiError::Conflict(rule.to_string()),
        // With If-Match, losing the race means the version the client saw is gone.
        CommandError::Conflict if version_pinned => ApiError::PreconditionFailed,
        CommandError::Conflict => {
            ApiError::Conflict("the product kept changing concurrently; retry the request".into())
        }
        CommandError::Store(e) => store_failure(e),
    }
}

/// A category command that did not commit. `version_pinned`: the client sent `If-Match`.
/// Taken slugs, cycles and children come from the event store ([`store_failure`]).
pub fn category_failure(error: CommandError<CategoryError>, version_pinned: bool) -> ApiError {
    match error {
        CommandError::Rejected(CategoryError::Invalid(violations)) => ApiError::Invalid(violations),
        CommandError::Rejected(CategoryError::AlreadyExists(_)) => ApiError::Conflict("category already exists".into()),
        CommandError::Rejected(CategoryError::NotFound | CategoryError::Deleted) => ApiError::NotFound("category"),
        CommandError::Rejected(CategoryError::VersionMismatch { .. }) => ApiError::PreconditionFailed,
        CommandError::Conflict if version_pinned => ApiError::PreconditionFailed,
        CommandError::Conflict => {
            ApiError::Conflict("the category kept changing concurrently; retry the request".into())
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
            RegistrationError::Hashing(cause) => cause.into(),
            RegistrationError::Command(error) => user_failure(error),
        }
    }
}
