//! `catalogctl status`: where the pipeline stands, from the event store to the read models.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_store::reads;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use service_runtime::kafka::KafkaSettings;
use sqlx::PgPool;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Status {
    event_store_head_position: i64,
    publishers: Vec<PublisherStatus>,
    consumer_group: String,
    consumer_lag: Vec<PartitionLag>,
    consumer_lag_total: i64,
    /// Messages in the dead-letter topic (copies, kept for inspection).
    dead_letters: i64,
    /// Aggregates parked behind a dead letter, and the events queued for them (`dlq list`).
    parked_aggregates: i64,
    parked_events: i64,
    read_models: ReadModelCounts,
    /// The oldest transaction open in the database server, if any: while it runs, events
    /// committed after it began wait to be published (the commit-safe horizon).
    oldest_open_transaction: Option<OpenTransaction>,
    /// Reservation sagas the process manager has not settled yet.
    reservation_sagas: SagaStatus,
}

#[derive(Serialize, sqlx::FromRow)]
struct SagaStatus {
    in_flight: i64,
    /// Of those, the one started longest ago.
    oldest_id: Option<String>,
    oldest_started_at: Option<DateTime<Utc>>,
    /// Of those, due for a step now (a deadline passed, or a step to retry).
    overdue: i64,
}

#[derive(Serialize, sqlx::FromRow)]
struct OpenTransaction {
    pid: i32,
    seconds: f64,
    state: Option<String>,
    database: Option<String>,
}

#[derive(Serialize, sqlx::FromRow)]
struct PublisherStatus {
    topic: String,
    position: i64,
    published_total: i64,
    /// Committed events not yet published (transactions still open are not counted).
    lag_events: i64,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct PartitionLag {
    partition: i32,
    committed_offset: Option<i64>,
    end_offset: i64,
    lag: i64,
}

#[derive(Serialize)]
struct ReadModelCounts {
    products: i64,
    products_deleted: i64,
    categories: i64,
    /// Rows of the product history: one per product event.
    product_history: i64,
    users: i64,
    reservations: i64,
}

pub async fn print(pool: &PgPool, kafka: &KafkaSettings, group: &str, json: bool) -> anyhow::Result<()> {
    let _reachable = crate::check_broker(kafka).await?;
    let publishers: Vec<PublisherStatus> = sqlx::query_as(
        "SELECT c.topic, c.global_position AS position, c.published_total, c.updated_at,
                (SELECT count(*) FROM events e
                  WHERE (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)) AS lag_events
           FROM publisher_checkpoints c ORDER BY c.topic",
    )
    .fetch_all(pool)
    .await?;
    let consumer_lag = consumer_lag(kafka, group).await?;
    let (parked_aggregates, parked_events): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT aggregate_id), count(*) FROM parked_events").fetch_one(pool).await?;
    let status = Status {
        parked_aggregates,
        parked_events,
        event_store_head_position: reads::head_position(pool).await?,
        publishers,
        consumer_group: group.to_owned(),
        consumer_lag_total: consumer_lag.iter().map(|p| p.lag).sum(),
        consumer_lag,
        dead_letters: dead_letter_count(kafka).await?,
        oldest_open_transaction: sqlx::query_as(
            "SELECT pid, extract(epoch FROM now() - xact_start)::float8 AS seconds, state, datname::text AS database
               FROM pg_stat_activity
              WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
              ORDER BY xact_start LIMIT 1",
        )
        .fetch_optional(pool)
        .await?,
        reservation_sagas: sqlx::query_as(
            "SELECT (SELECT count(*) FROM reservation_sagas WHERE due_at IS NOT NULL) AS in_flight,
                    (SELECT count(*) FROM reservation_sagas WHERE due_at <= now()) AS overdue,
                    oldest.id::text AS oldest_id, oldest.started_at AS oldest_started_at
               FROM (SELECT 1) one
               LEFT JOIN (SELECT id, started_at FROM reservation_sagas WHERE due_at IS NOT NULL
                           ORDER BY started_at LIMIT 1) oldest ON true",
        )
        .fetch_one(pool)
        .await?,
        read_models: ReadModelCounts {
            products: sqlx::query_scalar("SELECT count(*) FROM products WHERE NOT deleted").fetch_one(pool).await?,
            products_deleted: sqlx::query_scalar("SELECT count(*) FROM products WHERE deleted").fetch_one(pool).await?,
            categories: sqlx::query_scalar("SELECT count(*) FROM categories WHERE NOT deleted").fetch_one(pool).await?,
            product_history: crate::row_count(pool, "product_history").await?,
            users: crate::row_count(pool, "users").await?,
            reservations: crate::row_count(pool, "reservations").await?,
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("event store head position  {}", status.event_store_head_position);
    for p in &status.publishers {
        println!(
            "publisher {:<16} position {} ({} published), lag {} events, last moved {}",
            p.topic, p.position, p.published_total, p.lag_events, p.updated_at
        );
    }
    if status.publishers.is_empty() {
        println!("publisher                  has not published yet");
    }
    println!("consumer group {:<11} lag {} messages", status.consumer_group, status.consumer_lag_total);
    for p in &status.consumer_lag {
        let committed = p.committed_offset.map_or("-".to_owned(), |o| o.to_string());
        println!("  partition {:<3} committed {committed:>8}  end {:>8}  lag {}", p.partition, p.end_offset, p.lag);
    }
    println!("dead letters               {}", status.dead_letters);
    println!(
        "parked                     {} aggregates, {} events (catalogctl dlq list)",
        status.parked_aggregates, status.parked_events
    );
    if let Some(t) = &status.oldest_open_transaction {
        println!(
            "oldest open transaction    {:.1} s (pid {}, {}, database {}): later commits wait for it to be published",
            t.seconds,
            t.pid,
            t.state.as_deref().unwrap_or("?"),
            t.database.as_deref().unwrap_or("?")
        );
    }
    let sagas = &status.reservation_sagas;
    match (&sagas.oldest_id, sagas.oldest_started_at) {
        (Some(id), Some(started)) => println!(
            "reservation sagas          {} in flight ({} due now), oldest {id} started {started}",
            sagas.in_flight, sagas.overdue
        ),
        _ => println!("reservation sagas          none in flight"),
    }
    println!(
        "read models                products {} (+{} deleted), categories {}, product history {} events, users {}, \
         reservations {}",
        status.read_models.products,
        status.read_models.products_deleted,
        status.read_models.categories,
        status.read_models.product_history,
        status.read_models.users,
        status.read_models.reservations
    );
    Ok(())
}

/// Committed offset and end offset of every partition of the events topic, for `group`.
/// The consumer never subscribes, so it does not join (or disturb) the group.
async fn consumer_lag(kafka: &KafkaSettings, group: &str) -> anyhow::Result<Vec<PartitionLag>> {
    let kafka = kafka.clone();
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            kafka.client_config("catalogctl").set("group.id", &group).set("enable.auto.commit", "false").create()?;
        let topic = kafka.kafka_topic.as_str();
        let partitions = partitions_of(&consumer, topic)?;
        let mut list = TopicPartitionList::new();
        for partition in &partitions {
            list.add_partition(topic, *partition);
        }
        let committed = consumer.committed_offsets(list, TIMEOUT)?;
        partitions
            .into_iter()
            .map(|partition| {
                let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
                let committed_offset = committed.find_partition(topic, partition).and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
                // Never negative: some brokers (tansu) report the last batch's base offset as
                // the end, which can be below an up-to-date committed offset.
                let lag = (high - committed_offset.unwrap_or(low)).max(0);
                Ok(PartitionLag { partition, committed_offset, end_offset: high, lag })
            })
            .collect()
    })
    .await?
}

/// Messages in the dead-letter topic (it is append-only: retried letters stay listed).
async fn dead_letter_count(kafka: &KafkaSettings) -> anyhow::Result<i64> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka.client_config("catalogctl").create()?;
        let topic = kafka.kafka_dlq_topic.as_str();
        let mut total = 0;
        for partition in partitions_of(&consumer, topic)? {
            let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
            total += high - low;
        }
        Ok(total)
    })
    .await?
}

pub fn partitions_of(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let topic_metadata = metadata.topics().first().ok_or_else(|| anyhow::anyhow!("no metadata for topic {topic}"))?;
    if let Some(error) = topic_metadata.error() {
        anyhow::bail!("topic {topic}: {error:?}");
    }
    Ok(topic_metadata.partitions().iter().map(|p| p.id()).collect())
}
