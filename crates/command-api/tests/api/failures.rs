//! `failures::store_failure` against errors Postgres really raises: what the event store's
//! catalog rules raise (as its trigger does, with DETAIL and HINT), NUL characters, and
//! transactions rolled back to end a deadlock.

use cqrs_es::AggregateError;
use domain::ProductError;
use http_api::problem::ApiError;
use test_support::TestDatabase;

/// The answer to the error that `statement` raises, as if an append had failed with it.
async fn answer_to(database: &TestDatabase, statement: &str) -> ApiError {
    let error = sqlx::query(statement).execute(&database.pool).await.expect_err("the statement fails");
    command_api::failures::store_failure(AggregateError::<ProductError>::UnexpectedError(Box::new(error)))
}

fn raise(message: &str, options: &str) -> String {
    format!("DO $$ BEGIN RAISE EXCEPTION '{message}' USING {options}; END $$")
}

#[tokio::test]
async fn database_errors_become_the_answers_their_codes_stand_for() {
    let database = TestDatabase::new().await;

    let taken =
        raise("sku \"A-1\" is already used by another product", "ERRCODE = 'CT409', DETAIL = 'sku', HINT = 'taken'");
    match answer_to(&database, &taken).await {
        ApiError::Conflict(detail) => assert_eq!(detail, "sku \"A-1\" is already used by another product"),
        other => panic!("expected 409, got {other:?}"),
    }

    let unknown =
        raise("no such category: 42", "ERRCODE = 'CT422', DETAIL = 'category_ids', HINT = 'unknown_category'");
    match answer_to(&database, &unknown).await {
        ApiError::Invalid(violations) => {
            let violation = &violations.0[0];
            assert_eq!(violations.0.len(), 1);
            assert_eq!(
                (violation.field.as_str(), violation.code.as_str(), violation.message.as_str()),
                ("category_ids", "unknown_category", "no such category: 42")
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }

    for code in ["40P01", "40001"] {
        let rolled_back = raise("deadlock detected", &format!("ERRCODE = '{code}'"));
        assert!(matches!(answer_to(&database, &rolled_back).await, ApiError::Conflict(_)), "{code}");
    }

    let nul = "SELECT '{\"a\": \"\\u0000\"}'::json::jsonb";
    match answer_to(&database, nul).await {
        ApiError::Invalid(violations) => assert_eq!(violations.0[0].field, "body"),
        other => panic!("expected 422, got {other:?}"),
    }

    let other = raise("something else", "ERRCODE = 'P0001'");
    assert!(matches!(answer_to(&database, &other).await, ApiError::Internal(_)));
}
