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
