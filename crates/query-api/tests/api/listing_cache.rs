//! The listing cache: shoppers' first pages are answered from memory until a change is
//! announced (or a read-your-writes read finds one first); admins, cursor pages and a
//! disabled cache always read the read model.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::freshness::{self, apply_silently};
use crate::helpers::{admin_token, eventually, product_created, product_updated, spawn_app, spawn_app_with, TestApp};

/// The names on `GET /api/v1/products?<query>` (200), read as `token` or anonymously.
async fn names(app: &TestApp, query: &str, token: Option<&str>) -> Vec<String> {
    let (status, body) = app.read(&format!("/api/v1/products?{query}"), token).await;
    assert_eq!(status, 200, "?{query}: {body}");
    body["items"].as_array().unwrap().iter().map(|item| item["name"].as_str().unwrap().to_owned()).collect()
}

/// `name`'s value on the `/metrics` page (0 before it is first counted).
async fn counter(app: &TestApp, name: &str) -> u64 {
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    freshness::counter(&metrics, name)
}

/// A product created without an announcement (none can arrive late and make a test's cached
/// listing stale), and renamed the same way to `renamed`: the cache cannot know of the rename.
async fn a_silently_renamed_product(app: &TestApp, listing: &str, renamed: &str) -> Uuid {
    let id = Uuid::new_v4();
    apply_silently(app, &[product_created(id, "Lamp", "19.99", chrono::Utc::now())]).await;
    assert_eq!(names(app, listing, None).await, ["Lamp"]);
    apply_silently(app, &[product_updated(id, 2, json!({"name": renamed}))]).await;
    id
}

#[tokio::test]
async fn a_shoppers_listing_is_served_from_the_cache_until_a_change_is_announced() {
    let app = spawn_app().await;
    let (hits, misses) =
        (counter(&app, "query_list_cache_hits_total").await, counter(&app, "query_list_cache_misses_total").await);
    a_silently_renamed_product(&app, "limit=10", "Unannounced").await;
    assert_eq!(names(&app, "limit=10", None).await, ["Lamp"], "the cached page");
    assert_eq!(names(&app, "limit=10&unknown=1", None).await, ["Lamp"], "unknown parameters are not part of it");
    assert_eq!(
        (
            counter(&app, "query_list_cache_hits_total").await - hits,
            counter(&app, "query_list_cache_misses_total").await - misses
        ),
        (2, 1)
    );
    // Any other listing is read now: another page size, offset, filter or text.
    for other in ["limit=9", "limit=10&offset=0&sort=name", "limit=10&currency=EUR", "q=unannounced"] {
        assert_eq!(names(&app, other, None).await, ["Unannounced"], "?{other}");
    }
    // Admins are never served from it.
    assert_eq!(names(&app, "limit=10", Some(&admin_token())).await, ["Unannounced"]);

    // An announced change of any product makes every cached listing stale.
    app.apply(&[product_created(Uuid::new_v4(), "Another", "5.00", chrono::Utc::now())]).await;
    eventually("the listing is read again", Duration::from_secs(1), || async {
        names(&app, "limit=10&sort=name", None).await == ["Another", "Unannounced"]
            && names(&app, "limit=10", None).await.contains(&"Unannounced".to_owned())
    })
    .await;
}

#[tokio::test]
async fn a_read_your_writes_read_makes_cached_listings_stale() {
    let app = spawn_app().await;
    let id = a_silently_renamed_product(&app, "limit=10", "Renamed").await;
    assert_eq!(names(&app, "limit=10", None).await, ["Lamp"], "the cached page");
    // The client that made the change waits for it: found (never announced), and from then
    // on no listing cached before it is served.
    let (status, body) = app.read(&format!("/api/v1/products/{id}?min_version=2"), None).await;
    assert_eq!((status, body["name"].clone()), (200, json!("Renamed")));
    assert_eq!(names(&app, "limit=10", None).await, ["Renamed"]);
}

#[tokio::test]
async fn cursor_pages_are_always_read_from_the_read_model() {
    let app = spawn_app().await;
    apply_silently(&app, &[product_created(Uuid::new_v4(), "Alpha", "1.00", chrono::Utc::now())]).await;
    apply_silently(&app, &[product_created(Uuid::new_v4(), "Beta", "2.00", chrono::Utc::now())]).await;
    let (_, page) = app.read("/api/v1/products?limit=1&sort=name", None).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = format!("limit=1&sort=name&cursor={cursor}");
    assert_eq!(names(&app, &next, None).await, ["Beta"]);
    let second: Value = app.read(&format!("/api/v1/products?{next}"), None).await.1;
    let second_id: Uuid = second["items"][0]["id"].as_str().unwrap().parse().unwrap();
    apply_silently(&app, &[product_updated(second_id, 2, json!({"description": "changed"}))]).await;
    let (_, again) = app.read(&format!("/api/v1/products?{next}"), None).await;
    assert_eq!(again["items"][0]["description"], "changed", "read again, not cached");
}

#[tokio::test]
async fn list_cache_mib_0_turns_it_off() {
    let app = spawn_app_with(&["--list-cache-mib", "0"]).await;
    a_silently_renamed_product(&app, "limit=10", "Renamed").await;
    assert_eq!(names(&app, "limit=10", None).await, ["Renamed"]);
    assert_eq!(counter(&app, "query_list_cache_hits_total").await, 0);
}
