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
            && status["parked_aggregates"] == 0
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

async fn set_second_payload(system: &System, id: uuid::Uuid, payload: serde_json::Value) {
    sqlx::query("UPDATE events SET payload = $2::jsonb::json WHERE aggregate_id = $1 AND sequence = 2")
        .bind(id.to_string())
        .bind(payload)
        .execute(&system.pool)
        .await
        .unwrap();
}

async fn version(system: &System, id: uuid::Uuid) -> Option<i64> {
    sqlx::query_scalar("SELECT version FROM products WHERE id = $1")
        .bind(id)
        .fetch_optional(&system.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dead_letter_parks_its_aggregate_in_order_until_retried_or_discarded() {
    let mut system = System::new().await;
    let lamp = system.create_product("Lamp").await;
    system.rename_product(lamp, "Desk lamp").await;
    system.rename_product(lamp, "Floor lamp").await;
    let chair = system.create_product("Chair").await;
    // The lamp's second event is one today's code cannot apply (as a bug in an old version
    // could have stored it).
    let original: serde_json::Value =
        sqlx::query_scalar("SELECT payload::jsonb FROM events WHERE aggregate_id = $1 AND sequence = 2")
            .bind(lamp.to_string())
            .fetch_one(&system.pool)
            .await
            .unwrap();
    set_second_payload(&system, lamp, serde_json::json!({"ProductUpdated": {"price": "not a price"}})).await;
    system.start_projector().await;

    let list = || async {
        let output = system.catalogctl(&["dlq", "list"]).await;
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<serde_json::Value>>()
    };
    eventually("the lamp is parked behind its bad event", Duration::from_secs(60), || async {
        list().await.first().is_some_and(|parked| parked["queued"] == 2)
    })
    .await;
    let parked = list().await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["aggregate_id"], lamp.to_string());
    assert_eq!(parked[0]["sequence"], 2, "the dead letter heads the queue");
    assert!(parked[0]["reason"].as_str().unwrap().contains("not a product event"), "{parked:?}");
    eventually("the other aggregate is projected", Duration::from_secs(30), || async {
        version(&system, chair).await == Some(1)
    })
    .await;
    assert_eq!(version(&system, lamp).await, Some(1), "the lamp stops before its bad event; the third waits");
    let status = system.catalogctl(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!((status["parked_aggregates"].as_i64(), status["parked_events"].as_i64()), (Some(1), Some(2)));
    let dead_lettered: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_events WHERE reason IS NOT NULL")
        .fetch_one(&system.pool)
        .await
        .unwrap();
    assert_eq!(dead_lettered, 1, "one dead letter; the event behind it is parked, not dead-lettered on its own");

    // verify and rebuild report the event with its position instead of aborting.
    let verified = system.catalogctl(&["verify", "--settle-seconds", "0"]).await;
    assert_eq!(verified.status.code(), Some(1), "{}", stderr(&verified));
    let differences: Vec<serde_json::Value> =
        stdout(&verified).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let event = differences.iter().find(|d| d["field"] == "event" && d["table"] == "products").expect("reported");
    assert_eq!(event["aggregate_id"], lamp.to_string());
    assert_eq!(event["expected"]["sequence"], 2);
    assert!(event["expected"]["position"].as_i64().is_some_and(|p| p >= 2), "{event}");
    assert!(
        !differences.iter().any(|d| d["field"] != "event"),
        "the lamp's row matches the fold up to the bad event: {differences:?}"
    );
    let rebuilt = system.catalogctl(&["rebuild", "products"]).await;
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    assert!(stdout(&rebuilt).contains("event 2 of"), "{}", stdout(&rebuilt));
    assert_eq!(version(&system, lamp).await, Some(1));

    // While the event is still bad, a retry changes nothing.
    let retried = system.catalogctl(&["dlq", "retry", "--aggregate", &lamp.to_string()]).await;
    assert_eq!(retried.status.code(), Some(1), "{}", stdout(&retried));
    assert!(stdout(&retried).contains("still failing"), "{}", stdout(&retried));
    assert_eq!(list().await[0]["queued"], 2);

    // After the fix, the queue is applied in order and gone.
    set_second_payload(&system, lamp, original).await;
    let retried = system.catalogctl(&["dlq", "retry", "--aggregate", &lamp.to_string()]).await;
    assert!(retried.status.success(), "{}{}", stdout(&retried), stderr(&retried));
    assert!(stdout(&retried).contains("applied 2 parked events"), "{}", stdout(&retried));
    assert_eq!(version(&system, lamp).await, Some(3));
    assert!(list().await.is_empty());

    // A message that is not an event at all: discarded, with the reason on record.
    let mut poison = reads::by_position(&system.pool, &Default::default(), 0, 1).await.unwrap().remove(0);
    poison.aggregate_id = uuid::Uuid::new_v4().to_string();
    poison.event_id = uuid::Uuid::new_v4();
    poison.payload = serde_json::json!({"ProductUpdated": {"price": "not a price"}});
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", test_support::kafka_brokers()).create().unwrap();
    produce(&producer, &system.db.topic(), &poison).await.unwrap();
    eventually("the poison event is parked", Duration::from_secs(60), || async { list().await.len() == 1 }).await;
    let missing = system.catalogctl(&["dlq", "discard", "--aggregate", "no-such-aggregate", "--reason", "x"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let no_reason = system.catalogctl(&["dlq", "discard", "--aggregate", &poison.aggregate_id]).await;
    assert_eq!(no_reason.status.code(), Some(2), "a reason is required");
    let discarded =
        system.catalogctl(&["dlq", "discard", "--aggregate", &poison.aggregate_id, "--reason", "test poison"]).await;
    assert!(discarded.status.success(), "{}", stderr(&discarded));
    assert!(list().await.is_empty());
    let logged: (i32, String) =
        sqlx::query_as("SELECT events, reason FROM dead_letter_discards WHERE aggregate_id = $1")
            .bind(&poison.aggregate_id)
            .fetch_one(&system.pool)
            .await
            .unwrap();
    assert_eq!(logged, (1, "test poison".to_owned()));
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
