use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, ADMIN_PASSWORD, TEST_PUBLIC_KEY};

#[tokio::test]
async fn a_user_gets_a_bearer_token_with_subject_and_role() {
    let app = spawn_app().await;
    let id = app.create_user("bob", "bob-password-1", &[]).await;
    let response = app.login("Bob", "bob-password-1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(expires_in > 0 && expires_in <= 3600);

    let claims = jsonwebtoken::decode::<Value>(
        body["access_token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_ed_pem(TEST_PUBLIC_KEY.as_bytes()).unwrap(),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA),
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], id.to_string());
    assert_eq!(claims["role"], "customer");
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 3600);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = spawn_app().await;
    app.create_user("carol", "carol-password", &[]).await;
    let wrong = assert_problem(app.login("carol", "not-her-password").await, 401).await;
    let unknown = assert_problem(app.login("nobody", "whatever-password").await, 401).await;
    let invalid_name = assert_problem(app.login("!", "whatever-password").await, 401).await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, invalid_name);
}

#[tokio::test]
async fn repeated_logins_for_one_username_are_rate_limited_with_retry_after() {
    let app = spawn_app_with(&["--login-attempts-per-username", "3"]).await;
    app.create_user("dave", "dave-password", &[]).await;
    for _ in 0..3 {
        assert_eq!(app.login("dave", "wrong-password").await.status(), 401);
    }
    let limited = app.login("dave", "dave-password").await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_problem(limited, 429).await;
    app.create_user("erin", "erin-password", &[]).await;
    assert_eq!(app.login("erin", "erin-password").await.status(), 200, "other usernames are unaffected");
}

#[tokio::test]
async fn repeated_logins_from_one_client_are_rate_limited() {
    let app = spawn_app_with(&["--login-attempts-per-client", "4"]).await;
    for i in 0..4 {
        assert_eq!(app.login(&format!("user{i}"), "wrong-password").await.status(), 401);
    }
    assert_problem(app.login("someone-else", "wrong-password").await, 429).await;
}

#[tokio::test]
async fn a_deactivated_user_cannot_log_in() {
    use domain::{User, UserCommand};
    use event_store::{CommandBus, EventMetadata};
    let app = spawn_app().await;
    let id = app.create_user("frank", ADMIN_PASSWORD, &[]).await;
    CommandBus::new(app.pool.clone())
        .execute::<User>(&id.to_string(), || UserCommand::Deactivate, EventMetadata::new("test"), true)
        .await
        .unwrap();
    assert_problem(app.login("frank", ADMIN_PASSWORD).await, 401).await;
}

#[tokio::test]
async fn a_login_body_of_the_wrong_shape_is_422() {
    let app = spawn_app().await;
    let response = app.post("/api/v1/auth/token").json(&json!({"username": "x"})).send().await.unwrap();
    assert_problem(response, 422).await;
}
