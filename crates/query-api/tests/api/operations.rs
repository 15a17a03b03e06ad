use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use query_api::Settings;
use serde_json::Value;

use crate::helpers::{assert_problem, eventually, spawn_app, spawn_app_with, spawn_app_without_database};

#[tokio::test]
async fn health_and_ready_report_ok_with_a_live_database() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
    let ready = app.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["dependencies"]["postgres"]["status"], "up");
    assert_eq!(body["dependencies"]["change_notifications"]["status"], "up");
    assert_eq!(app.get("/metrics").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/products").send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
    let echoed = app.get("/health").header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
}

/// With Postgres unreachable the service still starts, `/ready` names what is down, and
/// reads answer 503 with `Retry-After`: never 500, never a hang.
#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after() {
    let server = spawn_app_without_database().await;

    let ready = server.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["dependencies"]["postgres"]["status"], "down");
    assert_eq!(body["dependencies"]["change_notifications"]["status"], "down");

    let product = format!("/api/v1/products/{}", uuid::Uuid::new_v4());
    for path in ["/api/v1/products", &product, &format!("{product}?version=1"), "/api/v1/categories"] {
        let started = Instant::now();
        let response = server.get(path).send().await.unwrap();
        assert!(response.headers().contains_key("retry-after"), "{path}");
        assert_problem(response, 503).await;
        assert!(started.elapsed() < Duration::from_secs(8), "{path}");
    }
}

#[tokio::test]
async fn graceful_shutdown_returns_ok_and_stops_serving() {
    let mut app = spawn_app().await;
    app.a_product("Last", "1.00").await;
    assert_eq!(app.get("/api/v1/products").send().await.unwrap().status(), 200);
    app.stop().await.expect("server stops cleanly");
    assert!(app.get("/health").send().await.is_err(), "no longer accepting connections");
}

#[test]
fn settings_have_their_documented_defaults() {
    // Read from the definitions, not parsed, so the caller's environment does not matter.
    let command = Settings::command();
    let default = |id: &str| {
        let arg = command.get_arguments().find(|arg| arg.get_id() == id).unwrap();
        (arg.get_env().unwrap().to_str().unwrap().to_owned(), arg.get_default_values()[0].to_str().unwrap().to_owned())
    };
    assert_eq!(default("addr"), ("QUERY_API_ADDR".into(), "127.0.0.1:8081".into()));
    assert_eq!(default("min_version_wait_ms"), ("MIN_VERSION_WAIT_MS".into(), "5000".into()));
    assert_eq!(default("product_cache_max_entries"), ("PRODUCT_CACHE_MAX_ENTRIES".into(), "10000".into()));
    assert_eq!(default("product_cache_ttl_seconds"), ("PRODUCT_CACHE_TTL_SECONDS".into(), "60".into()));
    assert!(Settings::try_parse_from(["query-api", "--product-cache-ttl-seconds", "0"]).is_err());
}

#[tokio::test]
async fn cache_hits_misses_and_size_are_exported() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    // The row's own change notification may arrive after the first read and drop its entry,
    // so read until a hit has been counted (twice is enough once it has arrived).
    let metrics = eventually("a cache hit is counted", Duration::from_secs(5), || async {
        assert_eq!(app.get(&format!("/api/v1/products/{id}")).send().await.unwrap().status(), 200);
        let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
        metrics.lines().any(|line| line.starts_with("query_cache_hits_total")).then_some(metrics)
    })
    .await;
    for name in ["query_cache_hits_total", "query_cache_misses_total", "query_cache_entries"] {
        assert!(metrics.lines().any(|line| line.starts_with(name)), "{name} missing from:\n{metrics}");
    }
}

/// Beyond `--max-concurrent-requests` a request is refused at once with 503 and `Retry-After`
/// (not queued); the operational routes stay reachable.
#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_with_503() {
    let app = spawn_app_with(&["--max-concurrent-requests", "1", "--min-version-wait-ms", "3000"]).await;
    // Holds the only slot for 3 s: a read of a version the read model never reaches.
    let waiting = app.get(&format!("/api/v1/products/{}?min_version=1", uuid::Uuid::new_v4())).send();
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let shed = app.get("/api/v1/products").send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "answered at once, not queued");
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem = assert_problem(shed, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("concurrent requests"), "{problem}");
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);

    // Once the slot is free, requests are served again.
    assert_eq!(waiting.await.unwrap().unwrap().status(), 503);
    assert_eq!(app.get("/api/v1/products").send().await.unwrap().status(), 200);
}

/// When most requests of the breaker's window found Postgres unreachable, the breaker opens:
/// requests are answered 503 at once without waiting for the pool, and `/metrics` shows it.
#[tokio::test]
async fn an_unreachable_database_opens_the_circuit_breaker() {
    use http_api::resilience::{MIN_REQUESTS, WINDOW};
    let server = spawn_app_without_database().await;

    // Rounds of concurrent requests, each failing after the pool's acquire timeout, until the
    // breaker has seen a full window of them.
    let started = Instant::now();
    let mut open = false;
    while !open {
        assert!(started.elapsed() < WINDOW * 3, "the breaker never opened");
        let failures = (0..MIN_REQUESTS).map(|_| server.get("/api/v1/products").send());
        for response in futures::future::join_all(failures).await {
            let problem = assert_problem(response.unwrap(), 503).await;
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.starts_with("the database is unavailable"), "{problem}");
            open |= detail.contains("circuit breaker open");
        }
    }
    assert!(started.elapsed() >= WINDOW, "not before a full window of failures");
    let started = Instant::now();
    let rejected = server.get("/api/v1/products").send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "no wait for the pool: {:?}", started.elapsed());
    assert!(rejected.headers().contains_key("retry-after"));
    let problem = assert_problem(rejected, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("circuit breaker open"), "{problem}");
    let metrics = server.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "db_circuit_state 2"), "{metrics}");
}
