use std::time::Duration;

use event_store::reads;
use projector::publisher::produce;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::support::{eventually, stderr, stdout, System};

#[tokio::test]
async fn events_prints_one_stream_or_a_position_range_as_json_lines() {
    let system = System::new().await;
    let id = system.create_product("Lamp").await;
    system.rename_product(id, "Desk lamp").await;
    system.create_product("Chair").await;

    let stream = system.catalogctl(&["events", "--aggregate-id", &id.to_string()]).await;
    assert!(stream.status.success(), "{}", stderr(&stream));
    let events: Vec<serde_json::Value> = stdout(&stream).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(events[1]["payload"]["ProductUpdated"]["name"], "Desk lamp");

    let range = stdout(&system.catalogctl(&["events", "--from-position", "2", "--limit", "1"]).await);
    let lines: Vec<&str> = range.lines().collect();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("\"global_position\":2"), "{}", lines[0]);

    let neither = system.catalogctl(&["events"]).await;
    assert_eq!(neither.status.code(), Some(2), "missing arguments are a usage error");
}

#[tokio::test]
async fn status_reports_positions_lag_dead_letters_and_row_counts() {
    let mut system = System::new().await;
    system.start_projector().await;
    system.create_product("Lamp").await;
    system.create_product("Chair").await;
    system.wait_until_projected().await;

    eventually("status shows everything published and consumed", Duration::from_secs(60), || async {
        let output = system.catalogctl(&["status", "--json"]).await;
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        status["event_store_head_position"] == 2
            && status["publishers"][0]["position"] == 2
            && status["publishers"][0]["lag_events"] == 0
            && status["consumer_lag_total"] == 0
            && status["read_models"]["products"] == 2
            && status["read_models"]["product_history"] == 2
            && status["read_models"]["categories"] == 0
            && status["dead_letters"] == 0
    })
    .await;
    let text = system.catalogctl(&["status"]).await;
    assert!(text.status.success());
    assert!(stdout(&text).contains("event store head position  2"), "{}", stdout(&text));
    assert!(stdout(&text).contains("reservation sagas          none in flight"), "{}", stdout(&text));

    // Two sagas the process manager has not settled (one overdue) and one it has.
    let (old, due, done) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    sqlx::query(
        "INSERT INTO reservation_sagas (id, due_at, started_at, updated_at, version) VALUES
           ($1, now() + interval '10 minutes', now() - interval '1 hour', now(), 5),
           ($2, now() - interval '1 minute', now() - interval '1 minute', now(), 1),
           ($3, NULL, now() - interval '2 hours', now(), 7)",
    )
    .bind(old)
    .bind(due)
    .bind(done)
    .execute(&system.pool)
    .await
    .unwrap();
    let output = system.catalogctl(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["reservation_sagas"]["in_flight"], 2, "{status}");
    assert_eq!(status["reservation_sagas"]["overdue"], 1);
    assert_eq!(status["reservation_sagas"]["oldest_id"], old.to_string());
    let text = stdout(&system.catalogctl(&["status"]).await);
    assert!(text.contains(&format!("reservation sagas          2 in flight (1 due now), oldest {old}")), "{text}");
}

#[tokio::test]
async fn dead_letters_can_be_listed_and_retried() {
    let mut system = System::new().await;
    system.start_projector().await;
    system.create_product("Lamp").await;
    system.wait_until_projected().await;
    let mut poison = reads::by_position(&system.pool, &Default::default(), 0, 1).await.unwrap().remove(0);
    poison.aggregate_id = uuid::Uuid::new_v4().to_string();
    poison.event_id = uuid::Uuid::new_v4();
    poison.payload = serde_json::json!({"ProductUpdated": {"price": "not a price"}});
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", test_support::kafka_brokers()).create().unwrap();
    produce(&producer, &system.db.topic(), &poison).await.unwrap();

    eventually("the poison event is a dead letter", Duration::from_secs(60), || async {
        !stdout(&system.catalogctl(&["dlq", "list"]).await).is_empty()
    })
    .await;
    let listed: Vec<serde_json::Value> =
        stdout(&system.catalogctl(&["dlq", "list"]).await).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed[0]["event_id"], poison.event_id.to_string());
    assert!(listed[0]["reason"].as_str().unwrap().contains("not a product event"), "{listed:?}");

    let retried = system.catalogctl(&["dlq", "retry", "--id", &poison.event_id.to_string()]).await;
    assert!(retried.status.success(), "{}", stderr(&retried));
    assert!(stdout(&retried).contains("re-produced 1 dead letters"), "{}", stdout(&retried));
    // Still poison: it comes back to the dead-letter topic, proving it went through the projector.
    eventually("the retried letter is dead-lettered again", Duration::from_secs(60), || async {
        stdout(&system.catalogctl(&["dlq", "list"]).await).lines().count() == 2
    })
    .await;
    let unknown = system.catalogctl(&["dlq", "retry", "--id", "no-such-letter"]).await;
    assert_eq!(unknown.status.code(), Some(1));
}

#[tokio::test]
async fn unreachable_postgres_or_broker_is_a_clear_error() {
    let system = System::new().await;
    let no_postgres = system
        .catalogctl_command(&["status"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/catalog")
        .output()
        .await
        .unwrap();
    assert_eq!(no_postgres.status.code(), Some(1));
    assert!(stderr(&no_postgres).contains("cannot reach Postgres"), "{}", stderr(&no_postgres));

    let no_broker = system.catalogctl_command(&["status"]).env("KAFKA_BROKERS", "127.0.0.1:1").output().await.unwrap();
    assert_eq!(no_broker.status.code(), Some(1));
    assert!(stderr(&no_broker).contains("cannot reach Kafka"), "{}", stderr(&no_broker));
}
