use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_without_database};

#[tokio::test]
async fn health_and_ready_report_ok_with_a_live_database() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
    let ready = app.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["dependencies"]["postgres"]["status"], "up");
}

#[tokio::test]
async fn responses_carry_a_request_id_and_metrics_count_them() {
    let app = spawn_app().await;
    let response = app.get("/health").send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
    let echoed = app.get("/health").header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"}"), "{metrics}");
}

/// With Postgres unreachable the service still starts, `/ready` names the database, and
/// writes answer 503 with `Retry-After`: never 500, never a hang.
#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after() {
    let server = spawn_app_without_database().await;

    let ready = server.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["dependencies"]["postgres"], json!({"status": "down"}), "no driver error for callers");
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");

    let register = server
        .post("/api/v1/users")
        .json(&json!({"username": "ivan", "email": "i@example.com", "password": "ivan-password"}))
        .send()
        .await
        .unwrap();
    assert!(register.headers().contains_key("retry-after"));
    assert_problem(register, 503).await;
    let login = server
        .post("/api/v1/auth/token")
        .json(&json!({"username": "ivan", "password": "ivan-password"}))
        .send()
        .await
        .unwrap();
    assert_problem(login, 503).await;
}

#[tokio::test]
async fn graceful_shutdown_returns_ok_and_stops_serving() {
    let mut app = spawn_app().await;
    let token = app.admin_token().await;
    assert_eq!(app.create_product(&token, json!({"name": "Last", "price": 1})).await.status(), 201);
    app.stop().await.expect("server stops cleanly");
    assert!(app.get("/health").send().await.is_err(), "no longer accepting connections");
}
