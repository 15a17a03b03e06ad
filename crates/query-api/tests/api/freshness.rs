//! The product cache and `min_version`: an answer is never older than what the client asked
//! for, nor (beyond the notification delay) older than the read store.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    assert_problem, eventually, product_created, product_deleted, product_updated, spawn_app, spawn_app_with, TestApp,
};

async fn version_of(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Writes `events` with the triggers off, so nothing is announced: the change is invisible
/// to the cache (what a missed notification would look like). Products these tests cache are
/// created this way too, so that no announcement still on its way can invalidate the entry.
pub async fn apply_silently(app: &TestApp, events: &[event_store::CatalogEvent]) {
    let mut transaction = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *transaction).await.unwrap();
    read_model::apply_events(&mut transaction, events).await.unwrap();
    transaction.commit().await.unwrap();
}

#[tokio::test]
async fn an_update_shows_on_the_next_read_of_a_cached_product() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    let path = format!("/api/v1/products/{id}");
    assert_eq!(version_of(&app, &path).await.1["version"], 1);
    assert_eq!(version_of(&app, &path).await.1["version"], 1, "now cached");

    let written = Instant::now();
    app.apply(&[product_updated(id, 2, json!({"name": "Desk lamp", "price": "5.00"}))]).await;
    let body = eventually("the update is served", Duration::from_secs(1), || async {
        let (_, body) = version_of(&app, &path).await;
        (body["version"] == 2).then_some(body)
    })
    .await;
    assert_eq!((body["name"].as_str(), body["price"].as_str()), (Some("Desk lamp"), Some("5.00")));
    assert!(written.elapsed() < Duration::from_secs(1));

    app.apply(&[product_deleted(id, 3)]).await;
    eventually("the delete is served", Duration::from_secs(1), || async { version_of(&app, &path).await.0 == 404 })
        .await;
}

#[tokio::test]
async fn reads_are_served_from_the_cache_until_a_change_is_announced() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    apply_silently(&app, &[product_created(id, "Lamp", "19.99", chrono::Utc::now())]).await;
    let path = format!("/api/v1/products/{id}");
    assert_eq!(version_of(&app, &path).await.1["name"], "Lamp");

    apply_silently(&app, &[product_updated(id, 2, json!({"name": "Unannounced"}))]).await;
    assert_eq!(version_of(&app, &path).await.1["name"], "Lamp", "the cached copy is served");

    app.apply(&[product_updated(id, 3, json!({"price": "7.00"}))]).await;
    let body = eventually("the announced change is served", Duration::from_secs(1), || async {
        let (_, body) = version_of(&app, &path).await;
        (body["version"] == 3).then_some(body)
    })
    .await;
    assert_eq!((body["name"].as_str(), body["price"].as_str()), (Some("Unannounced"), Some("7.00")));
}

#[tokio::test]
async fn min_version_already_reached_is_answered_at_once() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    app.apply(&[product_updated(id, 2, json!({"price": "5.00"}))]).await;
    let started = Instant::now();
    for n in [1, 2] {
        let response = app.get(&format!("/api/v1/products/{id}?min_version={n}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["etag"], "\"2\"");
        assert_eq!(response.json::<Value>().await.unwrap()["version"], 2);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn min_version_waits_for_the_version_to_arrive() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    let path = format!("/api/v1/products/{id}");
    assert_eq!(version_of(&app, &path).await.1["version"], 1, "version 1 is cached");

    let pool = app.pool.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut transaction = pool.begin().await.unwrap();
        read_model::apply_events(&mut transaction, &[product_updated(id, 2, json!({"price": "5.00"}))]).await.unwrap();
        transaction.commit().await.unwrap();
    });
    let started = Instant::now();
    let response = app.get(&format!("{path}?min_version=2")).send().await.unwrap();
    let waited = started.elapsed();
    writer.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(response.json::<Value>().await.unwrap()["price"], "5.00");
    assert!(waited >= Duration::from_millis(150), "answered before the write: {waited:?}");
    assert!(waited < Duration::from_secs(2), "woken by the notification, well before the 5 s bound: {waited:?}");
}

#[tokio::test]
async fn min_version_reads_a_product_whose_creation_is_not_projected_yet() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    let pool = app.pool.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut transaction = pool.begin().await.unwrap();
        read_model::apply_events(&mut transaction, &[product_created(id, "New", "3.00", chrono::Utc::now())])
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    });
    let response = app.get(&format!("/api/v1/products/{id}?min_version=1")).send().await.unwrap();
    writer.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["name"], "New");
}

#[tokio::test]
async fn min_version_never_reached_is_503_with_retry_after_after_the_wait() {
    let app = spawn_app_with(&["--min-version-wait-ms", "300"]).await;
    let id = app.a_product("Lamp", "19.99").await;
    let started = Instant::now();
    let response = app.get(&format!("/api/v1/products/{id}?min_version=2")).send().await.unwrap();
    let waited = started.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503).await;
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    // Unrelated changes do not end the wait early, nor satisfy it.
    let other = app.a_product("Other", "1.00").await;
    let request = app.get(&format!("/api/v1/products/{id}?min_version=2")).send();
    let (response, ()) = tokio::join!(request, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.apply(&[product_updated(other, 2, json!({"name": "Changed"}))]).await;
    });
    assert_problem(response.unwrap(), 503).await;
}

#[tokio::test]
async fn min_version_is_never_answered_from_an_older_cached_copy() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    apply_silently(&app, &[product_created(id, "Lamp", "19.99", chrono::Utc::now())]).await;
    let path = format!("/api/v1/products/{id}");
    assert_eq!(version_of(&app, &path).await.1["version"], 1);
    // Version 2 reaches the read store but its announcement is "lost".
    apply_silently(&app, &[product_updated(id, 2, json!({"name": "Two"}))]).await;
    assert_eq!(version_of(&app, &path).await.1["version"], 1, "still cached");
    let (status, body) = version_of(&app, &format!("{path}?min_version=2")).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Two")));
}

#[tokio::test]
async fn a_product_deleted_at_the_awaited_version_is_404() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    app.apply(&[product_deleted(id, 2)]).await;
    let response = app.get(&format!("/api/v1/products/{id}?min_version=2")).send().await.unwrap();
    assert_problem(response, 404).await;
}

#[tokio::test]
async fn a_bad_min_version_is_400() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    for bad in ["0", "-1", "x", "", "1.5"] {
        let response = app.get(&format!("/api/v1/products/{id}?min_version={bad}")).send().await.unwrap();
        let body = assert_problem(response, 400).await;
        assert!(body["detail"].as_str().unwrap().contains("`min_version`"), "{bad}: {body}");
    }
}

#[tokio::test]
async fn concurrent_reads_of_one_product_all_succeed() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    let path = format!("/api/v1/products/{id}");
    // All in flight at once: concurrent misses share one load.
    let reads = futures::future::join_all((0..32).map(|_| version_of(&app, &path))).await;
    for (status, body) in reads {
        assert_eq!((status, body["version"].clone()), (200, json!(1)));
    }
}

#[tokio::test]
async fn a_lost_listener_drops_the_cache_and_comes_back() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    apply_silently(&app, &[product_created(id, "Lamp", "19.99", chrono::Utc::now())]).await;
    let path = format!("/api/v1/products/{id}");
    let name = |app: &TestApp| {
        let request = app.get(&path);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["name"].as_str().unwrap().to_owned() }
    };
    assert_eq!(name(&app).await, "Lamp");
    apply_silently(&app, &[product_updated(id, 2, json!({"name": "Missed"}))]).await;
    assert_eq!(name(&app).await, "Lamp", "cached");

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "one listener connection");
    // Announcements may have been missed while it was gone: nothing cached before is trusted.
    eventually("the cache is dropped", Duration::from_secs(2), || async { name(&app).await == "Missed" }).await;
    eventually("listening again", Duration::from_secs(5), || async {
        app.get("/ready").send().await.unwrap().status() == 200
    })
    .await;

    // Back to normal: cached, and invalidated by the next announcement.
    assert_eq!(name(&app).await, "Missed");
    apply_silently(&app, &[product_updated(id, 3, json!({"name": "Silent"}))]).await;
    assert_eq!(name(&app).await, "Missed", "cached again");
    app.apply(&[product_updated(id, 4, json!({"price": "1.00"}))]).await;
    eventually("announcements arrive again", Duration::from_secs(1), || async { name(&app).await == "Silent" }).await;
}

/// `name`'s value on a `/metrics` page (0 before it is first counted).
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.split(' ').next() == Some(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_unknown_id_is_answered_from_the_cache_until_its_creation_is_announced() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    let path = format!("/api/v1/products/{id}");
    let before = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    for _ in 0..50 {
        assert_eq!(version_of(&app, &path).await.0, 404);
    }
    let after = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    let misses = counter(&after, "query_cache_misses_total") - counter(&before, "query_cache_misses_total");
    let hits = counter(&after, "query_cache_hits_total") - counter(&before, "query_cache_hits_total");
    assert_eq!((misses, hits), (1, 49), "one read of Postgres for fifty requests of an unknown id");

    // Created without an announcement: the cached "absent" is still served, so the requests
    // above really were answered without asking Postgres.
    apply_silently(&app, &[product_created(id, "Lamp", "19.99", chrono::Utc::now())]).await;
    assert_eq!(version_of(&app, &path).await.0, 404);

    // Any announced change of the id ends it.
    app.apply(&[product_updated(id, 2, json!({"price": "5.00"}))]).await;
    let body = eventually("the product is served", Duration::from_secs(1), || async {
        let (status, body) = version_of(&app, &path).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!((body["version"].as_i64(), body["price"].as_str()), (Some(2), Some("5.00")));
}

#[tokio::test]
async fn a_product_created_after_its_id_was_asked_for_is_served_once_announced() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    let path = format!("/api/v1/products/{id}");
    assert_eq!(version_of(&app, &path).await.0, 404);
    app.apply(&[product_created(id, "Lamp", "19.99", chrono::Utc::now())]).await;
    eventually("the creation is served", Duration::from_secs(1), || async { version_of(&app, &path).await.0 == 200 })
        .await;
    // And read-your-writes does not settle for the cached "absent" either.
    let other = Uuid::new_v4();
    assert_eq!(version_of(&app, &format!("/api/v1/products/{other}")).await.0, 404);
    apply_silently(&app, &[product_created(other, "Desk", "9.00", chrono::Utc::now())]).await;
    let (status, body) = version_of(&app, &format!("/api/v1/products/{other}?min_version=1")).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Desk")));
}
