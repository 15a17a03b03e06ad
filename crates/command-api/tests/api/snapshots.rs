//! Aggregate snapshots: a product loaded from its snapshot plus the events after it is the
//! product its whole history folds to, and a snapshot that no longer reads is replaced.

use domain::Product;
use event_store::CommandBus;
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};

/// The stored snapshots of `id`: (last_sequence, current_snapshot).
async fn snapshots_of(pool: &sqlx::PgPool, id: &str) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT last_sequence, current_snapshot FROM snapshots WHERE aggregate_id = $1 ORDER BY last_sequence",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn change_price(app: &TestApp, token: &str, id: &str, cents: u32) -> String {
    let response = app
        .patch(&format!("/api/v1/products/{id}"))
        .bearer_auth(token)
        .json(&json!({"price": format!("{}.{:02}", 1 + cents / 100, cents % 100)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["etag"].to_str().unwrap().to_owned()
}

/// A server snapshotting every `every` events, an admin token, and a product whose price was
/// then changed `changes` times (to 1.01, 1.02, ...).
async fn product_with_price_changes(every: usize, changes: u32) -> (TestApp, String, String) {
    let app = spawn_app_with(&["--snapshot-every", &every.to_string()]).await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    for cents in 1..=changes {
        change_price(&app, &token, &id, cents).await;
    }
    (app, token, id)
}

/// Product `id` loaded through snapshots taken every `every` events, after checking that it
/// equals the fold of all its events.
async fn load_checked_against_replay(app: &TestApp, id: &str, every: usize) -> Product {
    let from_snapshot = CommandBus::new(app.pool.clone()).with_snapshot_every(every).load::<Product>(id).await.unwrap();
    let replayed = CommandBus::new(app.pool.clone()).with_snapshot_every(0).load::<Product>(id).await.unwrap();
    assert_eq!(from_snapshot, replayed);
    from_snapshot
}

#[tokio::test]
async fn a_product_loaded_from_its_snapshot_equals_the_fold_of_all_its_events() {
    let (app, _, id) = product_with_price_changes(3, 7).await;
    // Eight events: snapshots were taken at 3 and 6, and only the latest is kept.
    assert_eq!(snapshots_of(&app.pool, &id).await, vec![(6, 2)]);

    let replayed = load_checked_against_replay(&app, &id, 3).await;
    assert_eq!(replayed.version, 8);
    assert_eq!(replayed.price.to_string(), "1.07");
}

#[tokio::test]
async fn a_snapshot_that_no_longer_deserialises_is_ignored_and_replaced() {
    let (app, token, id) = product_with_price_changes(2, 1).await;
    assert_eq!(snapshots_of(&app.pool, &id).await, vec![(2, 1)]);
    // As after a change to the aggregate's fields: the stored form no longer reads.
    sqlx::query("UPDATE snapshots SET payload = '\"not a product\"' WHERE aggregate_id = $1")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();

    // The next commands replay the events, answer with the right version, and write a fresh
    // snapshot in place of the unreadable one (one row, not two).
    assert_eq!(change_price(&app, &token, &id, 2).await, "\"3\"");
    assert_eq!(change_price(&app, &token, &id, 3).await, "\"4\"");
    assert_eq!(snapshots_of(&app.pool, &id).await, vec![(4, 1)]);
    let replayed = load_checked_against_replay(&app, &id, 2).await;
    assert_eq!(replayed.price.to_string(), "1.03");
    assert_eq!(app.events_of(&id).await.len(), 4);
}

/// postgres-es checks its snapshot update only after committing; the migration's trigger makes
/// a vanished snapshot fail the append instead, so nothing is stored and the caller may retry.
#[tokio::test]
async fn an_append_whose_snapshot_vanished_since_the_load_stores_nothing() {
    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::{AggregateError, EventStore};
    use domain::ProductEvent;
    use postgres_es::PostgresEventRepository;

    let (app, _, id) = product_with_price_changes(2, 2).await;
    assert_eq!(snapshots_of(&app.pool, &id).await, vec![(2, 1)]);

    let store: PersistedEventStore<PostgresEventRepository, Product> =
        PersistedEventStore::new_snapshot_store(PostgresEventRepository::new(app.pool.clone()), 2);
    let loaded = store.load_aggregate(&id).await.unwrap();
    sqlx::query("DELETE FROM snapshots WHERE aggregate_id = $1").bind(&id).execute(&app.pool).await.unwrap();
    // The fourth event completes the next snapshot, so this append updates the (gone) row.
    let event = ProductEvent::ProductUpdated {
        name: None,
        description: None,
        price: Some("9.99".parse().unwrap()),
        currency: None,
        sku: None,
        status: None,
        category_ids: None,
        attributes: None,
        images: None,
    };
    let result = store.commit(vec![event], loaded, Default::default()).await;

    assert!(matches!(result, Err(AggregateError::AggregateConflict)), "{result:?}");
    assert_eq!(app.events_of(&id).await.len(), 3, "the rejected append left no event behind");
}
