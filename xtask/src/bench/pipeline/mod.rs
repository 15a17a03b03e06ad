//! `cargo xtask bench pipeline`: the event pipeline stage by stage, each stage next to a
//! baseline measured in the same run, on the same broker, database and machine.
//!
//! 1. **Publisher** (event store → Kafka): `projector --role publish` on a new topic, over an
//!    event store pre-filled with 100,000 `ProductCreated` events by SQL; timed by its
//!    checkpoint's `published_total`; at the default batch size and a larger one. Baseline: a raw rdkafka producer in this process sending
//!    100,000 messages of the same key, value and headers, configured like
//!    `KafkaSettings::producer` (idempotent, acks=all, the same linger.ms), with every message in
//!    flight at once. That is what the broker and client can take; the publisher additionally
//!    reads the store, waits for each batch's acknowledgements and writes its checkpoint.
//! 2. **Projector** (Kafka → read model): `projector --role project` with a new consumer group
//!    on the topic of phase 1, timed by `count(*)` of `products`. Baseline: a raw rdkafka
//!    consumer with the projector's consumer settings reading the same 100,000 messages and
//!    applying nothing: the cost of consuming alone, so the ratio is the share left after
//!    decoding and the read-store transactions.
//! 3. **End-to-end lag**: command-api, query-api and `projector --role all` on a new topic. At
//!    a fixed rate, each command in its own task (a slow one doesn't lower the rate), POST a
//!    product, note the time of the 201, then `GET /api/v1/products/{id}?min_version=1` on
//!    query-api (it waits server-side until the read model has the version) and note the time
//!    of its 200. The lag therefore includes that GET's HTTP round trip; its floor is measured
//!    separately on an already visible product. Baseline for the Kafka hop inside that path: one
//!    message at a time from a producer like the publisher's to a consumer like the projector's
//!    (`fetch.wait.max.ms` 20 ms), and to one with librdkafka's default (500 ms): tansu, unlike
//!    Kafka, only notices new data when it re-reads its storage during a fetch's wait.
//! 4. **Cached read vs a trivial handler**: `wrk` at the same concurrency against one
//!    query-api process, `GET /api/v1/products/{id}` (read once before, so cached) and
//!    `GET /health` (a bare 200 behind the same middleware). The ratio is what the product
//!    route costs beyond the HTTP stack itself.
//!
//! Throughputs are counted from the first progress seen, so process start, topic creation and
//! the consumer group join are reported separately as start-up. Each phase uses fresh topic
//! and group names (tansu keeps topics for as long as it runs), and stops its child processes
//! however it ends.
//!
//! One file per phase (`publish.rs`, `project.rs`, `lag.rs`, `reads.rs`), each with its
//! baseline; `report.rs` turns the results into the tables. What several phases share (the
//! product, the projector's tuning, topics, progress counting) is here.

mod lag;
mod project;
mod publish;
mod reads;
mod report;

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use sqlx::postgres::PgPoolOptions;

use crate::dev::Backends;
use crate::proc::step;
use crate::system::{Ports, Service, System};

const DB_NAME: &str = "catalog_bench_pipeline";

/// Events in the store for phases 1 and 2.
const EVENTS: i64 = 100_000;
/// As many partitions as the projector creates its topics with (its default).
const PARTITIONS: i32 = 6;
/// A throughput phase fails when its counter stops moving for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Projector tuning, passed explicitly so the report can state it. The publisher is measured
/// at its default batch size and at a larger one (see `publish.rs`).
const DEFAULT_PUBLISH_BATCH_SIZE: u32 = 5000;
const PROJECT_BATCH_SIZE: u32 = 500;
const PROJECT_LANES: u32 = 4;
const FETCH_WAIT_MAX_MS: u32 = 20;
/// The producers' `linger.ms`: the services' default (`KAFKA_LINGER_MS`).
const LINGER_MS: u32 = service_runtime::kafka::DEFAULT_LINGER_MS;

/// The product every generated event and command describes.
const NAME: &str = "Bench lamp";
const DESCRIPTION: &str = "pipeline benchmark";
const PRICE: &str = "19.99";

pub async fn run(backends: &Backends) -> Result<()> {
    let wrk = reads::ensure_wrk()?;
    let names = Names::new();
    let mut system = System::fresh(backends, DB_NAME, Ports::BENCH_PIPELINE).await?;
    let pool = PgPoolOptions::new().max_connections(4).connect(&system.url).await?;
    let brokers = backends.kafka_brokers.as_str();
    publish::fill_event_store(&pool).await?;

    let mut publishers = Vec::new();
    for batch_size in publish::BATCH_SIZES {
        let topic = names.topic(&format!("publish-{batch_size}"));
        publishers.push((batch_size, publish::publisher_throughput(&mut system, &pool, &topic, batch_size).await?));
    }
    let raw_producer = publish::raw_producer_throughput(brokers, &names.topic("raw-produce")).await?;
    // Any of the publishers' topics holds the same events.
    let publish_topic = names.topic(&format!("publish-{}", publish::BATCH_SIZES[0]));
    let projector = project::projector_throughput(&mut system, &pool, &publish_topic, &names).await?;
    let raw_consumer = project::raw_consumer_throughput(brokers, &publish_topic, &names.group("raw-consume")).await?;
    let write_ceiling = project::sql_write_ceiling(&pool).await?;
    // Phases 1 and 2 wrote 100,000 events, products and history rows: what autovacuum would
    // do about them (and the search indexes' pending lists) is done now, not during phase 3.
    step("vacuuming what phases 1 and 2 wrote");
    sqlx::raw_sql("VACUUM (ANALYZE) events, products, product_history").execute(&pool).await?;
    let (lags, round_trip) = lag::end_to_end_lag(&mut system, &pool, &names).await?;
    let mut hops = Vec::new();
    for (fetch_wait_ms, linger_ms) in lag::BROKER_HOPS {
        let phase = format!("hop-{}-{linger_ms}", fetch_wait_ms.map_or("default".to_owned(), |ms| ms.to_string()));
        let (topic, group) = (names.topic(&phase), names.group(&phase));
        hops.push(lag::broker_hop(brokers, &topic, &group, fetch_wait_ms, linger_ms).await?);
    }
    let reads = reads::cached_read_vs_trivial(&mut system, &pool, &wrk).await?;
    pool.close().await;

    report::report(&report::Results {
        publishers,
        raw_producer,
        projector,
        raw_consumer,
        write_ceiling,
        lags,
        round_trip,
        hops,
        reads,
    })
}

/// Topic and group names unique to this run: tansu keeps topics while it runs, and a reused
/// group would resume from its committed offsets.
struct Names {
    run: u64,
}

impl Names {
    fn new() -> Self {
        Self { run: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) }
    }

    fn topic(&self, phase: &str) -> String {
        format!("bench.pipeline.{}.{phase}", self.run)
    }

    fn group(&self, phase: &str) -> String {
        format!("bench-pipeline-{}-{phase}", self.run)
    }
}

/// A counter's progress to its target.
#[derive(Debug, Clone, Copy)]
struct Throughput {
    /// From starting (the process, or the client) to the first progress seen.
    startup: Duration,
    /// Per second, from the first progress seen to the target.
    per_sec: f64,
}

/// Starts `projector --role ROLE` on the run's database and broker, with the benchmark's
/// tuning.
fn start_projector(system: &mut System, role: &str, topic: &str, group: &str, publish_batch_size: u32) -> Result<()> {
    system.start(Service::Projector, |c| {
        c.args(["--role", role, "--kafka-topic", topic, "--kafka-dlq-topic", &format!("{topic}.dlq"), "--group", group])
            .args(["--publish-batch-size", &publish_batch_size.to_string()])
            .args(["--project-batch-size", &PROJECT_BATCH_SIZE.to_string()])
            .args(["--project-lanes", &PROJECT_LANES.to_string()])
            .args(["--fetch-wait-max-ms", &FETCH_WAIT_MAX_MS.to_string()])
    })
}

async fn create_topic(brokers: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))], &options).await?
    {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create topic {topic}: {code}"))?;
    }
    Ok(())
}

/// A producer configured like the publisher's (`KafkaSettings::producer`): idempotent,
/// acks=all, the default linger.
fn publisher_like_producer(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", LINGER_MS.to_string());
    config
}

/// A consumer in `group` as the projector runs one: from the earliest offset, committing
/// nothing by itself, no end-of-partition events.
fn projector_like_consumer(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    config
}

/// Polls `current` every `interval` until it reaches `EVENTS`, failing if a process of
/// `system` exits or the count stops moving for `STALL_TIMEOUT`.
async fn watch_progress<F, Fut>(
    what: &str,
    system: &mut System,
    interval: Duration,
    mut current: F,
) -> Result<Throughput>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<i64, sqlx::Error>>,
{
    let started = Instant::now();
    let mut first: Option<(Instant, i64)> = None;
    let (mut last, mut last_change) = (0, started);
    loop {
        system.ensure_running()?;
        let count = current().await?;
        let now = Instant::now();
        if count > 0 && first.is_none() {
            first = Some((now, count));
        }
        if count >= EVENTS {
            let (at, from) = first.expect("set when count > 0");
            // Everything arrived between two polls: count the whole run, start-up included.
            let per_sec = if from >= EVENTS {
                EVENTS as f64 / (now - started).as_secs_f64()
            } else {
                (EVENTS - from) as f64 / (now - at).as_secs_f64()
            };
            return Ok(Throughput { startup: at - started, per_sec });
        }
        if count != last {
            (last, last_change) = (count, now);
        } else if now - last_change > STALL_TIMEOUT {
            bail!("{what} stalled at {count} of {EVENTS} for {STALL_TIMEOUT:?}");
        }
        tokio::time::sleep(interval).await;
    }
}
