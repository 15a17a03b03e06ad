//! Phase 2 of `bench pipeline`: the projector (Kafka → read model) over the topic phase 1
//! filled, against a raw consumer that reads the same messages and applies nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use sqlx::PgPool;

use super::{
    projector_like_consumer, start_projector, watch_progress, Names, Throughput, DEFAULT_PUBLISH_BATCH_SIZE, EVENTS,
    FETCH_WAIT_MAX_MS, STALL_TIMEOUT,
};
use crate::proc::step;
use crate::system::{Service, System};

/// Phase 2: `projector --role project` with a new group, over the topic phase 1 filled.
pub(super) async fn projector_throughput(
    system: &mut System,
    pool: &PgPool,
    topic: &str,
    names: &Names,
) -> Result<Throughput> {
    step(format!("phase 2: projector, {EVENTS} events from {topic} into products"));
    start_projector(system, "project", topic, &names.group("project"), DEFAULT_PUBLISH_BATCH_SIZE)?;
    let projected =
        move || async move { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM products").fetch_one(pool).await };
    let throughput = watch_progress("projected products", system, Duration::from_millis(50), projected).await?;
    system.stop(Service::Projector.binary());
    Ok(throughput)
}

/// Phase 2 baseline: the same messages read by a consumer with the projector's settings
/// (new group, from the earliest offset, no auto-commit), counted and dropped.
pub(super) async fn raw_consumer_throughput(brokers: &str, topic: &str, group: &str) -> Result<Throughput> {
    step(format!("phase 2 baseline: raw consumer, {EVENTS} messages from {topic}"));
    let consumer: StreamConsumer = projector_like_consumer(brokers, group)
        .set("client.id", "bench-raw-consumer")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3333")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string())
        .create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut received = 0i64;
    let mut bytes = 0usize;
    while received < EVENTS {
        let message = tokio::time::timeout(STALL_TIMEOUT, consumer.recv())
            .await
            .with_context(|| format!("raw consumer stalled at {received} of {EVENTS} messages"))??;
        bytes += message.payload().map_or(0, <[u8]>::len);
        received += 1;
        first.get_or_insert_with(Instant::now);
    }
    let first = first.expect("at least one message");
    anyhow::ensure!(bytes > 0, "the messages had no payload");
    consumer.unsubscribe();
    Ok(Throughput { startup: first - started, per_sec: (EVENTS - 1) as f64 / first.elapsed().as_secs_f64() })
}
