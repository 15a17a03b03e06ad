//! Phase 2 of `bench pipeline`: the projector (Kafka → read model) over the topic phase 1
//! filled, against a raw consumer that reads the same messages and applies nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::future::join_all;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use read_model::products::{ProductView, Products};
use read_model::projection::ReadModel;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    projector_like_consumer, start_projector, watch_progress, Names, Throughput, DEFAULT_PUBLISH_BATCH_SIZE, EVENTS,
    FETCH_WAIT_MAX_MS, PROJECT_BATCH_SIZE, PROJECT_LANES, STALL_TIMEOUT,
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

/// Phase 2's second baseline: the projector's own write of the product rows
/// (`Products::save`, one upsert statement per batch of `PROJECT_BATCH_SIZE`, `PROJECT_LANES`
/// batches at a time, each its own transaction), sent straight to Postgres into an empty copy
/// of `products` with the same indexes and generated search columns, but no triggers. The rows
/// are the ones phase 2 projected, loaded before the clock starts. What writing the read model
/// costs Postgres alone, without Kafka, decoding, the version rule or the history rows.
pub(super) async fn sql_write_ceiling(pool: &PgPool) -> Result<Throughput> {
    step(format!("phase 2 baseline: the projector's products upsert straight to Postgres, {EVENTS} rows"));
    sqlx::query("DROP TABLE IF EXISTS bench_products_ceiling").execute(pool).await?;
    sqlx::query("CREATE TABLE bench_products_ceiling (LIKE products INCLUDING ALL)").execute(pool).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM products ORDER BY id").fetch_all(pool).await?;
    let mut batches: Vec<Vec<ProductView>> = Vec::new();
    for chunk in ids.chunks(PROJECT_BATCH_SIZE as usize) {
        batches.push(Products::load(pool, chunk).await?.into_values().collect());
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let lanes = (0..PROJECT_LANES).map(|_| async {
        while let Some(views) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
            let rows: Vec<&ProductView> = views.iter().collect();
            let mut transaction = pool.begin().await?;
            Products::save(&mut transaction, "bench_products_ceiling", &rows).await?;
            transaction.commit().await?;
        }
        anyhow::Ok(())
    });
    for lane in join_all(lanes).await {
        lane?;
    }
    let per_sec = ids.len() as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_products_ceiling").execute(pool).await?;
    Ok(Throughput { startup: Duration::ZERO, per_sec })
}
