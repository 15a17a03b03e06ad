//! Phase 1 of `bench pipeline`: the publisher (event store → Kafka) over a store pre-filled
//! by SQL, against a raw rdkafka producer sending messages of the same shape.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use sqlx::PgPool;

use super::{
    create_topic, publisher_like_producer, start_projector, watch_progress, Throughput, DESCRIPTION, EVENTS, NAME,
    PRICE,
};
use crate::proc::step;
use crate::system::{Service, System};

/// The publisher's batch sizes: its default and a larger one. A round has a fixed cost
/// (reading the batch, linger.ms and the acknowledgements, the checkpoint commit) that larger
/// batches amortise.
pub(super) const BATCH_SIZES: [u32; 2] = [super::DEFAULT_PUBLISH_BATCH_SIZE, 1000];
/// The store is filled by this many transactions.
const FILL_TRANSACTIONS: i64 = 4;

/// Writes `EVENTS` `ProductCreated` events, each its own new aggregate, in
/// `FILL_TRANSACTIONS` statements (one transaction each).
pub(super) async fn fill_event_store(pool: &PgPool) -> Result<()> {
    step(format!("filling the event store with {EVENTS} events"));
    for _ in 0..FILL_TRANSACTIONS {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'Product', id::text, 1, 'ProductCreated', '1.0.0',
                    json_build_object('ProductCreated', json_build_object(
                        'id', id::text, 'name', $2::text, 'description', $3::text, 'price', $4::text)),
                    '{}'
               FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $1::bigint)) AS fresh",
        )
        .bind(EVENTS / FILL_TRANSACTIONS)
        .bind(NAME)
        .bind(DESCRIPTION)
        .bind(PRICE)
        .execute(pool)
        .await?;
    }
    // What autovacuum would soon do anyway; the publisher's reads get a stable plan.
    sqlx::query("ANALYZE events").execute(pool).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(pool).await?;
    anyhow::ensure!(stored == EVENTS, "the event store holds {stored} events, expected {EVENTS}");
    Ok(())
}

/// Phase 1: `projector --role publish` from the pre-filled store to a new topic.
pub(super) async fn publisher_throughput(
    system: &mut System,
    pool: &PgPool,
    topic: &str,
    batch_size: u32,
) -> Result<Throughput> {
    step(format!("phase 1: publisher, batches of {batch_size}, {EVENTS} events to {topic}"));
    start_projector(system, "publish", topic, "unused-by-publish", batch_size)?;
    let published = move || async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce((SELECT published_total FROM publisher_checkpoints WHERE topic = $1), 0)",
        )
        .bind(topic)
        .fetch_one(pool)
        .await
    };
    let throughput = watch_progress("published events", system, Duration::from_millis(20), published).await?;
    system.stop(Service::Projector.binary());
    Ok(throughput)
}

/// Phase 1 baseline: the same number of messages, of the same shape, straight from an
/// rdkafka producer configured like the publisher's, all in flight at once.
pub(super) async fn raw_producer_throughput(brokers: &str, topic: &str) -> Result<Throughput> {
    step(format!("phase 1 baseline: raw producer, {EVENTS} messages to {topic}"));
    create_topic(brokers, topic).await?;
    let producer: FutureProducer = publisher_like_producer(brokers)
        .set("client.id", "bench-raw-producer")
        .set("message.timeout.ms", "30000")
        .create()?;
    let messages: Vec<SampleMessage> = (1..=EVENTS).map(SampleMessage::new).collect();

    let started = Instant::now();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    for message in &messages {
        let mut record = message.record(topic);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    match in_flight.pop_front() {
                        Some(delivery) => acknowledged(delivery).await?,
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((error, _)) => bail!("raw producer: {error}"),
            }
        }
    }
    for delivery in in_flight {
        acknowledged(delivery).await?;
    }
    Ok(Throughput { startup: Duration::ZERO, per_sec: EVENTS as f64 / started.elapsed().as_secs_f64() })
}

async fn acknowledged(delivery: DeliveryFuture) -> Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => bail!("raw producer: delivery failed: {error}"),
        Err(_) => bail!("raw producer: delivery cancelled"),
    }
}

/// A message shaped like the publisher's for a `ProductCreated`: the aggregate id as key, the
/// JSON payload as value, and the same CloudEvents and catalog headers with values of the
/// same length.
struct SampleMessage {
    id: String,
    value: Vec<u8>,
    position: String,
}

impl SampleMessage {
    fn new(position: i64) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let payload =
            serde_json::json!({"ProductCreated": {"id": id, "name": NAME, "description": DESCRIPTION, "price": PRICE}});
        Self { value: serde_json::to_vec(&payload).expect("JSON"), id, position: position.to_string() }
    }

    fn record<'a>(&'a self, topic: &'a str) -> FutureRecord<'a, str, [u8]> {
        let headers = [
            ("ce_specversion", "1.0"),
            ("ce_id", self.id.as_str()),
            ("ce_type", "catalog.product.created.v1"),
            ("ce_source", "/catalog/products"),
            ("ce_subject", self.id.as_str()),
            ("ce_time", "2026-11-25T10:00:00.123456Z"),
            ("content-type", "application/json"),
            ("catalog_aggregate_type", "Product"),
            ("catalog_sequence", "1"),
            ("catalog_position", self.position.as_str()),
            ("catalog_event_type", "ProductCreated"),
            ("catalog_event_version", "1.0.0"),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value) }));
        FutureRecord::to(topic).key(self.id.as_str()).payload(self.value.as_slice()).headers(headers)
    }
}
