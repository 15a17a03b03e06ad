use std::collections::HashMap;
use std::time::Duration;

use command_api::accounts;
use command_api::auth::PasswordHasher;
use event_store::EventMetadata;
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

use crate::support::{eventually, Pipeline};

#[tokio::test]
async fn every_event_reaches_kafka_with_cloudevents_headers_and_without_credentials() {
    let pipeline = Pipeline::new().await;
    let _publisher = pipeline.projector("publish", &[]);
    accounts::register(
        &pipeline.commands(),
        &PasswordHasher::owasp_minimum(),
        "ann",
        "ann@example.com",
        "a-long-password".into(),
        &[domain::Role::Admin],
        EventMetadata::new("test"),
    )
    .await
    .unwrap();
    let product = pipeline.create_product("Lamp", "19.99").await;
    pipeline.rename_product(product, "Desk lamp").await;
    let stored = pipeline.stored_events().await;
    assert_eq!(stored.len(), 4, "register, grant admin, create, update");

    let reader = pipeline.reader(&pipeline.topic);
    let mut received = Vec::new();
    while received.len() < stored.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), reader.recv())
            .await
            .expect("every event is published")
            .unwrap();
        let headers: HashMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| (header.key.to_owned(), String::from_utf8(header.value.unwrap().to_vec()).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        received.push((key, headers, value));
    }

    for event in &stored {
        let (key, headers, value) = received
            .iter()
            .find(|(_, h, _)| h["ce_id"] == event.event_id.to_string())
            .unwrap_or_else(|| panic!("event {} not published", event.event_id));
        assert_eq!(key, &event.aggregate_id, "key is the aggregate id");
        assert_eq!(headers["ce_specversion"], "1.0");
        assert_eq!(headers["ce_type"], event.cloud_event_type());
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["catalog_aggregate_type"], event.aggregate_type);
        assert_eq!(headers["catalog_sequence"], event.sequence.to_string());
        assert_eq!(headers["catalog_position"], event.global_position.to_string());
        assert!(headers.contains_key("ce_source") && headers.contains_key("ce_time"));
        assert_eq!(headers["catalog_actor"], "test", "who caused it, for the product history");
        assert!(!value.contains("password"), "credential material left the event store: {value}");
    }
    let types: Vec<&str> = received.iter().map(|(_, h, _)| h["ce_type"].as_str()).collect();
    assert!(
        types.contains(&"catalog.product.created.v2") && types.contains(&"catalog.user.registered.v2"),
        "{types:?}"
    );

    let published: i64 = sqlx::query_scalar("SELECT published_total FROM publisher_checkpoints WHERE topic = $1")
        .bind(&pipeline.topic)
        .fetch_one(&pipeline.pool)
        .await
        .unwrap();
    assert_eq!(published, 4, "the checkpoint moved past every acknowledged event, once");
}

/// The bug a plain `ORDER BY global_position` tail has: transaction A takes position 1, B
/// takes 2 and commits first; a reader that saw 2 and moved its cursor past 1 never sees A.
#[tokio::test]
async fn a_late_commit_with_a_lower_position_is_still_published_and_projected() {
    let pipeline = Pipeline::new().await;
    let _projector = pipeline.projector("all", &[]);

    let late = Uuid::new_v4();
    let mut transaction_a = pipeline.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Product', $1, 1, 'ProductCreated', '1.0.0', $2, '{}')",
    )
    .bind(late.to_string())
    .bind(sqlx::types::Json(
        serde_json::json!({"ProductCreated": {"id": late, "name": "Late", "description": "", "price": "1.00"}}),
    ))
    .execute(&mut *transaction_a)
    .await
    .unwrap();

    let early = pipeline.create_product("Early", "2.00").await; // B: commits first
    let position = |id: Uuid| {
        let pool = pipeline.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT global_position FROM events WHERE aggregate_id = $1")
                .bind(id.to_string())
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    };
    let b_position = position(early).await.unwrap();

    // While A is open, B waits: publishing it now and moving the cursor past A would skip A.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(pipeline.product_version(early).await, 0, "B must wait for the older transaction A");

    transaction_a.commit().await.unwrap();
    let a_position = position(late).await.unwrap();
    assert!(a_position < b_position, "A took the lower position ({a_position} vs {b_position})");

    eventually("both products are projected", Duration::from_secs(30), || async {
        pipeline.product_version(early).await == 1 && pipeline.product_version(late).await == 1
    })
    .await;
    assert_eq!(pipeline.product_row(late).await.unwrap().0, "Late");
}

#[tokio::test]
async fn a_long_open_transaction_stalls_publishing_visibly_and_publishing_catches_up_when_it_ends() {
    let pipeline = Pipeline::new().await;
    let publisher = pipeline.projector("all", &[]);
    let mut long = pipeline.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *long).await.unwrap(); // takes an xid

    let held = pipeline.create_product("Held back", "3.00").await;
    eventually("the stall shows as publisher lag", Duration::from_secs(30), || async {
        publisher.metric("publisher_lag_events").await >= 1.0
    })
    .await;
    assert_eq!(pipeline.product_version(held).await, 0, "not published while the older transaction is open");

    long.commit().await.unwrap();
    eventually("publishing catches up", Duration::from_secs(30), || async {
        pipeline.product_version(held).await == 1
    })
    .await;
    eventually("the lag is gone", Duration::from_secs(10), || async {
        publisher.metric("publisher_lag_events").await == 0.0
    })
    .await;
}

/// Rows of `events` this transaction has read so far (sequential and through indexes).
async fn rows_read(connection: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read + coalesce(idx_tup_fetch, 0), 0)::bigint
           FROM pg_stat_xact_user_tables WHERE relname = 'events'",
    )
    .fetch_one(connection)
    .await
    .unwrap()
}

#[tokio::test]
async fn measuring_the_lag_reads_a_bounded_number_of_rows_whatever_the_backlog() {
    let pipeline = Pipeline::new().await;
    pipeline.create_product("First", "1.00").await;
    let first = pipeline.stored_events().await.remove(0);
    // The lag does not read payloads.
    write_backlog(&pipeline.pool, "LagProbe", 20_000).await;
    let checkpoint: (i64, i64) =
        sqlx::query_as("SELECT transaction_id::text::bigint, global_position FROM events WHERE event_id = $1")
            .bind(first.event_id)
            .fetch_one(&pipeline.pool)
            .await
            .unwrap();
    let checkpoint = event_store::reads::CommitPosition { transaction_id: checkpoint.0, global_position: checkpoint.1 };

    let mut tx = pipeline.pool.begin().await.unwrap();
    let before = rows_read(&mut tx).await;
    let lag = projector::publisher::measure_lag(&mut tx, checkpoint, checkpoint.global_position).await.unwrap();
    let read = rows_read(&mut tx).await - before;
    tx.commit().await.unwrap();
    assert_eq!(lag.events, 20_000);
    assert!(lag.oldest_seconds >= 0.0);
    assert!(read <= 10, "measuring a lag of 20,000 read {read} rows");

    // Nothing after the last event: no lag.
    let head = event_store::reads::head_position(&pipeline.pool).await.unwrap();
    let last: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(&pipeline.pool)
    .await
    .unwrap();
    let mut connection = pipeline.pool.acquire().await.unwrap();
    let at_head = event_store::reads::CommitPosition { transaction_id: last.0, global_position: last.1 };
    let lag = projector::publisher::measure_lag(&mut connection, at_head, head).await.unwrap();
    assert_eq!((lag.events, lag.oldest_seconds), (0, 0.0));
}

#[tokio::test]
async fn reading_a_batch_reads_a_bounded_number_of_rows_whatever_the_backlog() {
    let pipeline = Pipeline::new().await;
    write_backlog(&pipeline.pool, "BatchProbe", 20_000).await;
    sqlx::query("ANALYZE events").execute(&pipeline.pool).await.unwrap();

    let mut tx = pipeline.pool.begin().await.unwrap();
    // Parallel workers' reads would not show in this transaction's statistics.
    sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0").execute(&mut *tx).await.unwrap();
    let before = rows_read(&mut tx).await;
    let start = event_store::reads::CommitPosition::default();
    let batch = event_store::reads::committed_after(&mut *tx, start, 100).await.unwrap();
    let read = rows_read(&mut tx).await - before;
    tx.commit().await.unwrap();
    assert_eq!(batch.len(), 100);
    assert!(batch.windows(2).all(|pair| pair[0].0 < pair[1].0), "not in commit order");
    // Sorting the whole backlog for each batch made catching up quadratic.
    assert!(read <= 200, "reading a batch of 100 from a backlog of 20,000 read {read} rows");
}

/// Appends `count` unpublished events of `aggregate_type`, one aggregate each, straight to the
/// store: a backlog whose content the reads under test do not look at.
async fn write_backlog(pool: &sqlx::PgPool, aggregate_type: &str, count: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $1, g::text, 1, 'Probed', '1.0', '{}', '{}' FROM generate_series(1, $2::bigint) AS g",
    )
    .bind(aggregate_type)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}
