use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_returns_the_first_response_and_appends_once() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let before = app.event_count().await;
    let send = |body: Value| {
        app.post("/api/v1/products").bearer_auth(&token).header("idempotency-key", "key-1").json(&body).send()
    };
    let first = send(json!({"name": "Lamp", "price": "19.99"})).await.unwrap();
    assert_eq!(first.status(), 201);
    let first_location = first.headers()["location"].clone();
    let first_body: Value = first.json().await.unwrap();

    // Same body, spelled differently (number instead of string, other key order).
    let retry = send(json!({"price": 19.99, "name": "Lamp"})).await.unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["location"], first_location);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry_body: Value = retry.json().await.unwrap();
    assert_eq!(retry_body, first_body);
    assert_eq!(app.event_count().await, before + 1);

    let other_body = send(json!({"name": "Other", "price": "1.00"})).await.unwrap();
    assert_problem(other_body, 422).await;
    assert_eq!(app.event_count().await, before + 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_append_once() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let before = app.event_count().await;
    let requests = (0..8).map(|_| {
        app.post("/api/v1/products")
            .bearer_auth(&token)
            .header("idempotency-key", "burst")
            .json(&json!({"name": "Lamp", "price": "19.99"}))
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            201 => {
                let body: Value = response.json().await.unwrap();
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => {} // the first was still in flight
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "every successful answer names the same product");
    assert_eq!(app.event_count().await, before + 1);
}

#[tokio::test]
async fn a_failed_request_releases_its_key_for_a_corrected_retry() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let send = |body: Value| {
        app.post("/api/v1/products").bearer_auth(&token).header("idempotency-key", "fix-me").json(&body).send()
    };
    assert_problem(send(json!({"name": "", "price": "1"})).await.unwrap(), 422).await;
    assert_eq!(send(json!({"name": "Fixed", "price": "1"})).await.unwrap().status(), 201);
}

#[tokio::test]
async fn registration_honours_idempotency_keys() {
    let app = spawn_app().await;
    let register = || {
        app.post("/api/v1/users")
            .header("idempotency-key", "signup-1")
            .json(&json!({"username": "henry", "email": "h@example.com", "password": "henry-password"}))
            .send()
    };
    let first = register().await.unwrap();
    assert_eq!(first.status(), 201);
    let retry = register().await.unwrap();
    assert_eq!(retry.status(), 201, "a retry gets the first answer, not 409");
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_400() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let response = app
        .post("/api/v1/products")
        .bearer_auth(&token)
        .header("idempotency-key", "x".repeat(300))
        .json(&json!({"name": "Lamp", "price": "1"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400).await;
}

/// At rest, a registration's fingerprint is keyed (an attacker reading the table cannot test
/// password guesses with one SHA-256 each), the key belongs to the client address that sent it,
/// and an expired record no longer counts.
#[tokio::test]
async fn registration_fingerprints_are_keyed_scoped_to_the_client_and_expire() {
    use sha2::Digest as _;

    let app = spawn_app_with(&["--trusted-proxies", "127.0.0.1"]).await;
    let body = json!({"username": "ines", "email": "ines@example.com", "password": "ines-password"});
    let register = |client: &'static str, body: Value| {
        app.post("/api/v1/users")
            .header("x-forwarded-for", client)
            .header("idempotency-key", "signup")
            .json(&body)
            .send()
    };
    assert_eq!(register("198.51.100.1", body.clone()).await.unwrap().status(), 201);

    let (scope, stored): (String, Vec<u8>) =
        sqlx::query_as("SELECT scope, request_hash FROM idempotency_keys").fetch_one(&app.pool).await.unwrap();
    assert_eq!(scope, "POST /api/v1/users 198.51.100.1");
    let canonical = json!({"username": "ines", "email": "ines@example.com", "password": "ines-password"});
    let unkeyed = sha2::Sha256::digest(serde_json::to_vec(&canonical).unwrap()).to_vec();
    assert_ne!(stored, unkeyed, "the stored fingerprint is not a plain hash of the body");
    assert_eq!(stored.len(), 32);

    // Another client with the same key is not given the first client's answer.
    let other = register("198.51.100.2", body.clone()).await.unwrap();
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_problem(other, 409).await;

    // Once the record is past its time to live, the key is free again: another body is taken
    // as a new request instead of 422 "key reused".
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let later = json!({"username": "ines2", "email": "ines2@example.com", "password": "ines-password"});
    let response = register("198.51.100.1", later).await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn expired_idempotency_records_are_purged() {
    use command_api::idempotency::Idempotency;

    let app = spawn_app().await;
    let token = app.admin_token().await;
    for key in ["old", "new"] {
        let response = app
            .post("/api/v1/products")
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&json!({"name": key, "price": "1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
        .execute(&app.pool)
        .await
        .unwrap();
    let idempotency = Idempotency::new(None, true, std::time::Duration::from_secs(24 * 3600)).unwrap();
    assert_eq!(idempotency.purge_expired(&app.pool).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys").fetch_all(&app.pool).await.unwrap();
    assert_eq!(left, ["new"]);
}
