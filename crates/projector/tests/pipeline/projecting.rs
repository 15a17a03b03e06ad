use std::time::Duration;

use rdkafka::message::{Headers, Message};
use uuid::Uuid;

use crate::support::{eventually, Pipeline};

#[tokio::test]
async fn a_duplicate_is_applied_once_and_an_event_ahead_of_its_predecessor_heals_the_gap() {
    let pipeline = Pipeline::new().await;
    // Only the project loop: this test is the publisher, and chooses the delivery order.
    let projector = pipeline.projector("project", &[]);
    let id = pipeline.create_product("Lamp", "19.99").await;
    pipeline.rename_product(id, "Desk lamp").await;
    pipeline.rename_product(id, "Floor lamp").await;
    let events = pipeline.stored_events().await;
    let [first, second, third] = &events[..] else { panic!("three events expected") };

    projector.wait_until_assigned().await;
    let producer = pipeline.producer();
    for event in [first, first, third, second] {
        pipeline.produce(&producer, event).await;
    }

    eventually("all four deliveries are handled", Duration::from_secs(60), || async {
        projector.metric("projector_events_applied_total").await
            + projector.metric("projector_events_skipped_total").await
            + projector.metric("projector_events_healed_total").await
            >= 5.0
    })
    .await;
    assert_eq!(pipeline.product_row(id).await.unwrap(), ("Floor lamp".into(), "19.99".into(), 3, false));
    assert_eq!(projector.metric("projector_events_applied_total").await, 2.0, "the first event and the third");
    assert_eq!(projector.metric("projector_events_healed_total").await, 1.0, "the second, read from the store");
    assert_eq!(projector.metric("projector_events_skipped_total").await, 2.0, "the duplicate and the late second");
}

/// One batch, in one transaction, holding every event of a product twice and out of order: each
/// is applied once, older or equal versions never overwrite newer ones, the history gets one row
/// per event, and the row's change is announced once, at commit, with its final version.
#[tokio::test]
async fn a_batch_with_duplicates_and_older_versions_of_one_product_applies_each_event_once() {
    let pipeline = Pipeline::new().await;
    let id = pipeline.create_product("Lamp", "19.99").await;
    pipeline.rename_product(id, "Desk lamp").await;
    pipeline.rename_product(id, "Floor lamp").await;
    let events = pipeline.stored_events().await;
    let [first, second, third] = &events[..] else { panic!("three events expected") };
    let mut listener = sqlx::postgres::PgListener::connect_with(&pipeline.pool).await.unwrap();
    listener.listen("catalog_read_model_changed").await.unwrap();

    let batch = [first, second, first, third, second, third];
    let mut transaction = pipeline.pool.begin().await.unwrap();
    let outcome = read_model::apply_events(&mut transaction, &batch).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.recv()).await.is_err(),
        "nothing is announced before the commit"
    );
    transaction.commit().await.unwrap();
    assert_eq!((outcome.applied, outcome.skipped, outcome.healed), (3, 3, 0));
    assert_eq!(pipeline.product_row(id).await.unwrap(), ("Floor lamp".into(), "19.99".into(), 3, false));
    let history: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM product_history WHERE product_id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(&pipeline.pool)
            .await
            .unwrap();
    assert_eq!(history, [1, 2, 3]);
    let announced = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.expect("announced").unwrap();
    assert_eq!(announced.payload(), format!("products {id} 3"));

    // Delivered again, alone or with the rest: nothing changes, nothing is announced.
    let mut transaction = pipeline.pool.begin().await.unwrap();
    let again = read_model::apply_events(&mut transaction, &[first, third, second]).await.unwrap();
    transaction.commit().await.unwrap();
    assert_eq!((again.applied, again.skipped), (0, 3));
    assert_eq!(pipeline.product_row(id).await.unwrap(), ("Floor lamp".into(), "19.99".into(), 3, false));
    assert!(tokio::time::timeout(Duration::from_millis(300), listener.recv()).await.is_err());
}

#[tokio::test]
async fn a_poison_event_goes_to_the_dead_letter_topic_and_later_events_are_still_projected() {
    let pipeline = Pipeline::new().await;
    // One partition, so the good event queues behind the poison one.
    let projector = pipeline.projector("project", &["--kafka-topic-partitions", "1", "--project-max-attempts", "2"]);
    let good = pipeline.create_product("Good", "1.00").await;
    let mut poison = pipeline.stored_events().await.remove(0);
    poison.aggregate_id = Uuid::new_v4().to_string();
    poison.event_id = Uuid::new_v4();
    poison.payload = serde_json::json!({"ProductCreated": {"name": 42}});
    let good_event = pipeline.stored_events().await.remove(0);

    projector.wait_until_assigned().await;
    let producer = pipeline.producer();
    pipeline.produce(&producer, &poison).await;
    pipeline.produce(&producer, &good_event).await;

    eventually("the event after the poison one is projected", Duration::from_secs(60), || async {
        pipeline.product_version(good).await == 1
    })
    .await;
    assert_eq!(projector.metric("projector_dead_letters_total").await, 1.0);

    let reader = pipeline.reader(&pipeline.dlq_topic);
    let letter = tokio::time::timeout(Duration::from_secs(30), reader.recv()).await.expect("a dead letter").unwrap();
    assert_eq!(letter.key(), Some(poison.aggregate_id.as_bytes()));
    let header = |name: &str| {
        letter
            .headers()
            .and_then(|h| h.iter().find(|x| x.key == name))
            .map(|x| String::from_utf8_lossy(x.value.unwrap()).into_owned())
    };
    assert_eq!(header("ce_id"), Some(poison.event_id.to_string()), "the original headers are kept");
    let reason = header("catalog_dlq_reason").expect("a reason");
    assert!(reason.contains("not a product event"), "{reason}");
}

/// Makes every write to `products` fail with SQLSTATE `code` (as the server would under that
/// condition) until [`heal`] is called.
async fn fail_product_writes(pipeline: &Pipeline, code: &str) {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS test_failure (code text NOT NULL);
         CREATE OR REPLACE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
         DECLARE injected text;
         BEGIN
             SELECT code INTO injected FROM test_failure LIMIT 1;
             IF injected IS NOT NULL THEN
                 RAISE EXCEPTION 'injected failure %', injected USING ERRCODE = injected;
             END IF;
             RETURN NEW;
         END $$;
         CREATE OR REPLACE TRIGGER test_fail BEFORE INSERT OR UPDATE ON products
             FOR EACH ROW EXECUTE FUNCTION test_fail();
         DELETE FROM test_failure;",
    )
    .execute(&pipeline.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO test_failure VALUES ($1)").bind(code).execute(&pipeline.pool).await.unwrap();
}

async fn heal(pipeline: &Pipeline) {
    sqlx::query("DELETE FROM test_failure").execute(&pipeline.pool).await.unwrap();
}

#[tokio::test]
async fn transient_database_errors_are_retried_with_the_consumer_paused_and_never_dead_lettered() {
    let pipeline = Pipeline::new().await;
    let projector = pipeline.projector("project", &["--kafka-topic-partitions", "1", "--project-max-attempts", "2"]);
    let id = pipeline.create_product("Lamp", "19.99").await;
    let event = pipeline.stored_events().await.remove(0);
    projector.wait_until_assigned().await;
    fail_product_writes(&pipeline, "53300").await;
    pipeline.produce(&pipeline.producer(), &event).await;

    // Each SQLSTATE the APIs treat as passing with time: too many connections, statement
    // timeout, program limit, serialization failure, deadlock, admin shutdown, connection failure.
    // The first is retried past `--project-max-attempts`; each further one at least once.
    // (The backoff grows to 10 s between tries, so more would make the test slow.)
    for (code, tries) in
        [("53300", 3.0), ("57014", 1.0), ("54000", 1.0), ("40001", 1.0), ("40P01", 1.0), ("57P01", 1.0), ("08006", 1.0)]
    {
        sqlx::query("UPDATE test_failure SET code = $1").bind(code).execute(&pipeline.pool).await.unwrap();
        let seen = projector.metric("projector_transient_failures_total").await;
        eventually(&format!("{code} is retried"), Duration::from_secs(60), || async {
            projector.metric("projector_transient_failures_total").await >= seen + tries
        })
        .await;
        assert_eq!(projector.metric("projector_paused").await, 1.0, "the consumer pauses while {code} lasts");
        assert_eq!(projector.metric("projector_dead_letters_total").await, 0.0, "{code} dead-lettered");
        assert_eq!(pipeline.product_version(id).await, 0);
    }
    heal(&pipeline).await;
    eventually("the event is applied once the database recovers", Duration::from_secs(60), || async {
        pipeline.product_version(id).await == 1
    })
    .await;
    eventually("the consumer resumes", Duration::from_secs(10), || async {
        projector.metric("projector_paused").await == 0.0
    })
    .await;
    assert_eq!(projector.metric("projector_dead_letters_total").await, 0.0);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_events").fetch_one(&pipeline.pool).await.unwrap();
    assert_eq!(parked, 0);

    // And it still consumes: a later event arrives.
    pipeline.rename_product(id, "Desk lamp").await;
    let renamed = pipeline.stored_events().await.remove(1);
    pipeline.produce(&pipeline.producer(), &renamed).await;
    eventually("a later event is applied", Duration::from_secs(60), || async {
        pipeline.product_version(id).await == 2
    })
    .await;
}

#[tokio::test]
async fn every_counter_the_alert_rules_use_exists_at_zero_from_start_up() {
    let pipeline = Pipeline::new().await;
    let projector = pipeline.projector("all", &[]);
    projector.wait_until_assigned().await;
    let text = reqwest::get(projector.metrics_url()).await.unwrap().text().await.unwrap();
    for counter in ["projector_dead_letters_total", "publisher_failures_total", "publisher_events_published_total"] {
        assert!(text.lines().any(|line| line == format!("{counter} 0")), "{counter} missing at start-up:\n{text}");
    }
    for counter in projector::consumer::COUNTERS.iter().chain(projector::publisher::COUNTERS) {
        assert!(text.lines().any(|line| line.starts_with(&format!("{counter} "))), "{counter} missing:\n{text}");
    }
}

#[tokio::test]
async fn a_parked_aggregate_stays_parked_across_a_projector_restart() {
    let pipeline = Pipeline::new().await;
    let args = ["--kafka-topic-partitions", "1", "--project-max-attempts", "1"];
    let mut projector = pipeline.projector("project", &args);
    let id = pipeline.create_product("Lamp", "19.99").await;
    pipeline.rename_product(id, "Desk lamp").await;
    pipeline.rename_product(id, "Floor lamp").await;
    let events = pipeline.stored_events().await;
    let [first, second, third] = &events[..] else { panic!("three events expected") };
    let mut poison = second.clone();
    poison.payload = serde_json::json!({"ProductUpdated": {"price": "not a price"}});
    projector.wait_until_assigned().await;
    let producer = pipeline.producer();
    pipeline.produce(&producer, first).await;
    pipeline.produce(&producer, &poison).await;
    eventually("the poison event is dead-lettered", Duration::from_secs(60), || async {
        projector.metric("projector_dead_letters_total").await == 1.0
    })
    .await;
    projector.kill_hard().await;

    // A new process: the aggregate is still parked, so its next event queues instead of
    // healing past the dead letter from the event store.
    let projector = pipeline.projector("project", &args);
    projector.wait_until_assigned().await;
    pipeline.produce(&producer, third).await;
    eventually("the later event is parked behind the dead letter", Duration::from_secs(60), || async {
        projector.metric("projector_events_parked_total").await == 1.0
    })
    .await;
    assert_eq!(pipeline.product_version(id).await, 1);
    let queue: Vec<(Option<i64>, bool)> =
        sqlx::query_as("SELECT sequence, reason IS NOT NULL FROM parked_events WHERE aggregate_id = $1 ORDER BY id")
            .bind(id.to_string())
            .fetch_all(&pipeline.pool)
            .await
            .unwrap();
    assert_eq!(queue, vec![(Some(2), true), (Some(3), false)]);

    // The fix: retrying reads the events from the store (where the second is fine).
    let outcome = projector::parking::retry(&pipeline.pool, &id.to_string()).await.unwrap();
    assert_eq!(outcome, projector::parking::RetryOutcome::Applied { events: 2 });
    assert_eq!(pipeline.product_row(id).await.unwrap().0, "Floor lamp");
}
