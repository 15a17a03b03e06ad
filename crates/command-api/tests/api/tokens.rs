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

async fn login_from(app: &crate::helpers::TestApp, client: &str, username: &str, password: &str) -> reqwest::Response {
    app.post("/api/v1/auth/token")
        .header("x-forwarded-for", client)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Behind a trusted proxy each client has its own budget; without `TRUSTED_PROXIES` the header
/// is the client's own word and is ignored (everyone behind that peer shares one budget).
#[tokio::test]
async fn the_client_budget_follows_x_forwarded_for_only_from_trusted_proxies() {
    let proxied = spawn_app_with(&["--login-attempts-per-client", "2", "--trusted-proxies", "127.0.0.0/8"]).await;
    for _ in 0..2 {
        assert_eq!(login_from(&proxied, "198.51.100.1", "nobody", "wrong-password").await.status(), 401);
    }
    assert_problem(login_from(&proxied, "198.51.100.1", "nobody", "wrong-password").await, 429).await;
    // A forged left-most entry does not buy a fresh budget: the proxy appended the real client.
    let forged = login_from(&proxied, "203.0.113.5, 198.51.100.1", "nobody", "wrong-password").await;
    assert_problem(forged, 429).await;
    let other = login_from(&proxied, "198.51.100.2", "nobody", "wrong-password").await;
    assert_eq!(other.status(), 401, "another client behind the proxy has its own budget");

    let direct = spawn_app_with(&["--login-attempts-per-client", "2"]).await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(login_from(&direct, client, "nobody", "wrong-password").await.status(), 401);
    }
    assert_problem(login_from(&direct, "198.51.100.3", "nobody", "wrong-password").await, 429).await;
}

/// Guessing from many addresses spends a username's budget for strangers only: its owner, from
/// an address they logged in from before, still gets in; the guessers are throttled.
#[tokio::test]
async fn a_flood_of_guesses_cannot_lock_the_owner_out() {
    let app = spawn_app_with(&["--login-attempts-per-username", "3", "--trusted-proxies", "127.0.0.1"]).await;
    app.create_user("gina", "gina-password", &[]).await;
    assert_eq!(login_from(&app, "192.0.2.10", "gina", "gina-password").await.status(), 200);
    for n in 0..6 {
        let _ = login_from(&app, &format!("198.51.100.{n}"), "gina", "wrong-password").await;
    }
    assert_problem(login_from(&app, "198.51.100.99", "gina", "gina-password").await, 429).await;
    assert_eq!(login_from(&app, "192.0.2.10", "gina", "gina-password").await.status(), 200);
}

/// One client failing again and again waits longer and longer, whatever usernames it tries.
#[tokio::test]
async fn repeated_failures_from_one_client_earn_a_penalty() {
    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.1"]).await;
    for n in 0..6 {
        let response = login_from(&app, "203.0.113.7", &format!("user{n}"), "wrong-password").await;
        assert_eq!(response.status(), 401);
    }
    let penalised = login_from(&app, "203.0.113.7", "someone", "wrong-password").await;
    assert!(penalised.headers().contains_key("retry-after"));
    assert_problem(penalised, 429).await;
    assert_eq!(login_from(&app, "203.0.113.8", "someone", "wrong-password").await.status(), 401);
}
