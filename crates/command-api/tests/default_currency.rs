//! `CATALOG_DEFAULT_CURRENCY` other than EUR. A test binary of its own: the default currency is
//! set once per process (it is also what old events are read in), so this server cannot share a
//! process with servers on the EUR default.

use serde_json::{json, Value};
use test_support::http::assert_problem;

test_support::test_app! {
    /// A write API server on a database of its own.
    TestApp: command_api as "command-api"
}

#[tokio::test]
async fn a_product_without_a_currency_is_priced_in_the_configured_default() {
    let app = spawn_app_with(&["--default-currency", "JPY"]).await;
    let admin = "admin";
    command_api::accounts::register(
        &event_store::CommandBus::new(app.pool.clone()),
        &command_api::auth::PasswordHasher::owasp_minimum(),
        admin,
        "admin@example.com",
        "admin-password-123".into(),
        &[domain::Role::Admin],
        event_store::EventMetadata::new("test"),
    )
    .await
    .unwrap();
    let login = app.post("/api/v1/auth/token").json(&json!({"username": admin, "password": "admin-password-123"}));
    let token: Value = login.send().await.unwrap().json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let create = |body: Value| app.post("/api/v1/products").bearer_auth(token).json(&body).send();

    let created: Value = create(json!({"name": "Tea bowl", "price": "1999"})).await.unwrap().json().await.unwrap();
    let payload: Value = sqlx::query_scalar("SELECT payload::jsonb FROM events WHERE aggregate_id = $1")
        .bind(created["id"].as_str().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(payload["ProductCreated"]["price"], "1999");
    assert_eq!(payload["ProductCreated"]["currency"], "JPY");

    let problem = assert_problem(create(json!({"name": "Tea bowl", "price": "19.99"})).await.unwrap(), 422).await;
    assert_eq!(problem["errors"][0]["code"], "too_precise", "yen have no fraction digits");
    let euros = create(json!({"name": "Tea bowl", "price": "19.99", "currency": "EUR"})).await.unwrap();
    assert_eq!(euros.status(), 201, "a named currency overrides the default");
}
