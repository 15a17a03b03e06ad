use serde_json::{json, Value};

use crate::helpers::{assert_problem, error_fields, spawn_app, spawn_app_with};

#[tokio::test]
async fn registering_a_user_returns_its_id_and_location_and_stores_no_plaintext() {
    let app = spawn_app().await;
    let response = app
        .post("/api/v1/users")
        .json(&json!({"username": "Alice", "email": "alice@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/users/{id}"));
    assert_eq!(body.as_object().unwrap().len(), 1, "the response carries only the id");

    let events = app.events_of(id).await;
    assert_eq!(events.len(), 1);
    let (event_type, payload, _) = &events[0];
    assert_eq!(event_type, "UserRegistered");
    assert_eq!(payload["UserRegistered"]["username"], "alice");
    let stored = serde_json::to_string(&events).unwrap();
    assert!(!stored.contains("correct horse battery"), "plaintext password stored");
    assert!(payload["UserRegistered"]["password_hash"].as_str().unwrap().starts_with("$argon2id$"));
}

#[tokio::test]
async fn a_taken_username_is_409_even_with_other_case() {
    let app = spawn_app().await;
    let register = |username: &'static str| {
        app.post("/api/v1/users")
            .json(&json!({"username": username, "email": "a@example.com", "password": "long enough pw"}))
    };
    assert_eq!(register("alice").send().await.unwrap().status(), 201);
    let before = app.event_count().await;
    assert_problem(register("ALICE").send().await.unwrap(), 409).await;
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn invalid_registration_reports_every_field_and_writes_nothing() {
    let app = spawn_app().await;
    let response = app
        .post("/api/v1/users")
        .json(&json!({"username": "a!", "email": "not-an-email", "password": "short"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422).await;
    assert_eq!(error_fields(&problem), ["username", "email", "password"]);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn registrations_are_limited_per_client() {
    let app = spawn_app_with(&["--registrations-per-client", "2", "--trusted-proxies", "127.0.0.1"]).await;
    let register = |client: &'static str, name: &'static str| {
        app.post("/api/v1/users")
            .header("x-forwarded-for", client)
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "long-password"}))
            .send()
    };
    assert_eq!(register("198.51.100.1", "reg1").await.unwrap().status(), 201);
    assert_eq!(register("198.51.100.1", "reg2").await.unwrap().status(), 201);
    let limited = register("198.51.100.1", "reg3").await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    assert_problem(limited, 429).await;
    assert_eq!(register("198.51.100.2", "reg3").await.unwrap().status(), 201, "other clients are unaffected");
}
