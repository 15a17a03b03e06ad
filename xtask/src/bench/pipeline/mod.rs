//! `cargo xtask bench pipeline`: the event pipeline stage by stage, each stage next to a
//! baseline measured in the same run, on the same broker, database and machine.
//!
//! 1. **Publisher** (event store → Kafka): `projector --role publish` on a new topic, over an
//!    event store pre-filled with 100,000 `ProductCreated` events by SQL; timed by its
//!    checkpoint's `published_total`; at the default batch size and a larger one. Baseline: a raw rdkafka producer in this process sending
//!    100,000 messages of the same key, value and headers, configured like
//!    `KafkaSettings::producer` (idempotent, acks=all, linger.ms=5), with every message in
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

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::bench_harness::{self, percentile, Service};
use crate::proc::{self, step};
use crate::Backends;

const DB_NAME: &str = "catalog_bench_pipeline";
// Not `bench write`'s port, so the two benchmarks can't meet.
const COMMAND_ADDR: &str = "127.0.0.1:18180";
const QUERY_ADDR: &str = "127.0.0.1:18181";
const PROJECTOR_ADDR: &str = "127.0.0.1:18182";

/// Events in the store for phases 1 and 2, written by this many transactions.
const EVENTS: i64 = 100_000;
const FILL_TRANSACTIONS: i64 = 4;
/// As many partitions as the projector creates its topics with (its default).
const PARTITIONS: i32 = 6;
/// A throughput phase fails when its counter stops moving for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Projector tuning, passed explicitly so the report can state it. The publisher is measured
/// at its default batch size and at a larger one: a round has a fixed cost (reading the batch,
/// linger.ms and the acknowledgements, the checkpoint commit) that larger batches amortise.
const DEFAULT_PUBLISH_BATCH_SIZE: u32 = 5000;
const PUBLISH_BATCH_SIZES: [u32; 2] = [DEFAULT_PUBLISH_BATCH_SIZE, 1000];
const PROJECT_BATCH_SIZE: u32 = 500;
const PROJECT_LANES: u32 = 4;
const FETCH_WAIT_MAX_MS: u32 = 20;

const LAG_RATES: [u32; 2] = [50, 500];
/// Consumer `fetch.wait.max.ms` values of the broker-hop baseline: the projector's, and
/// librdkafka's default (None, 500 ms), to show how much the broker's fetch wait matters.
const BROKER_HOP_FETCH_WAITS: [Option<u32>; 2] = [Some(FETCH_WAIT_MAX_MS), None];
const BROKER_HOP_MESSAGES: u32 = 100;
const LAG_DURATION: Duration = Duration::from_secs(10);
const HTTP_DURATION: Duration = Duration::from_secs(10);
const HTTP_CONNECTIONS: u32 = 32;
const WRK_THREADS: u32 = 2;

/// The product every generated event and command describes.
const NAME: &str = "Bench lamp";
const DESCRIPTION: &str = "pipeline benchmark";
const PRICE: &str = "19.99";

const PUBLISH_TARGET: f64 = 20_000.0;
const PROJECT_TARGET: f64 = 5_000.0;
const LAG_P50_TARGET_MS: f64 = 25.0;
const LAG_P99_TARGET_MS: f64 = 100.0;
const READ_RATIO_TARGET: f64 = 0.6;

pub fn run(backends: &Backends) -> Result<()> {
    let wrk = ensure_wrk()?;
    let names = Names::new();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let url = bench_harness::fresh_database(backends, DB_NAME).await?;
        let pool = PgPoolOptions::new().max_connections(4).connect(&url).await?;
        let brokers = backends.kafka_brokers.as_str();
        fill_event_store(&pool).await?;

        let mut publishers = Vec::new();
        for batch_size in PUBLISH_BATCH_SIZES {
            let topic = names.topic(&format!("publish-{batch_size}"));
            publishers.push((batch_size, publisher_throughput(&pool, &url, brokers, &topic, batch_size).await?));
        }
        let raw_producer = raw_producer_throughput(brokers, &names.topic("raw-produce")).await?;
        // Any of the publishers' topics holds the same events.
        let publish_topic = names.topic(&format!("publish-{}", PUBLISH_BATCH_SIZES[0]));
        let projector = projector_throughput(&pool, &url, brokers, &publish_topic, &names).await?;
        let raw_consumer = raw_consumer_throughput(brokers, &publish_topic, &names.group("raw-consume")).await?;
        let (lags, round_trip) = end_to_end_lag(&pool, &url, brokers, &names).await?;
        let mut hops = Vec::new();
        for fetch_wait_ms in BROKER_HOP_FETCH_WAITS {
            let phase = format!("hop-{}", fetch_wait_ms.map_or("default".to_owned(), |ms| ms.to_string()));
            hops.push(broker_hop(brokers, &names.topic(&phase), &names.group(&phase), fetch_wait_ms).await?);
        }
        let reads = cached_read_vs_trivial(&pool, &url, &wrk).await?;
        pool.close().await;

        report(&Results { publishers, raw_producer, projector, raw_consumer, lags, round_trip, hops, reads })
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

/// Lag from a command's 201 to the product's 200 on query-api, at one rate.
struct Lag {
    rate: u32,
    achieved_per_sec: f64,
    measured: usize,
    failures: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Produce → consume through the broker alone, one message at a time.
struct BrokerHop {
    /// `fetch.wait.max.ms` of the consumer; None is librdkafka's default (500 ms).
    fetch_wait_ms: Option<u32>,
    p50_ms: f64,
    p99_ms: f64,
}

/// One `wrk` run.
struct HttpLoad {
    per_sec: f64,
    p50: String,
    p99: String,
}

struct Reads {
    product: HttpLoad,
    health: HttpLoad,
}

struct Results {
    /// By publish batch size.
    publishers: Vec<(u32, Throughput)>,
    raw_producer: Throughput,
    projector: Throughput,
    raw_consumer: Throughput,
    lags: Vec<Lag>,
    /// p50 of a `min_version=1` GET of an already visible product, ms.
    round_trip: f64,
    hops: Vec<BrokerHop>,
    reads: Reads,
}

/// Writes `EVENTS` `ProductCreated` events, each its own new aggregate, in
/// `FILL_TRANSACTIONS` statements (one transaction each).
async fn fill_event_store(pool: &PgPool) -> Result<()> {
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
async fn publisher_throughput(pool: &PgPool, url: &str, brokers: &str, topic: &str, batch_size: u32) -> Result<Throughput> {
    step(format!("phase 1: publisher, batches of {batch_size}, {EVENTS} events to {topic}"));
    let mut projector = start_projector(url, brokers, "publish", topic, "unused-by-publish", batch_size)?;
    let published = move || async move {
        sqlx::query_scalar::<_, i64>("SELECT coalesce((SELECT published_total FROM publisher_checkpoints WHERE topic = $1), 0)")
            .bind(topic)
            .fetch_one(pool)
            .await
    };
    let throughput = watch_progress("published events", &mut projector, Duration::from_millis(20), published).await?;
    projector.stop();
    Ok(throughput)
}

/// Phase 1 baseline: the same number of messages, of the same shape, straight from an
/// rdkafka producer configured like the publisher's, all in flight at once.
async fn raw_producer_throughput(brokers: &str, topic: &str) -> Result<Throughput> {
    step(format!("phase 1 baseline: raw producer, {EVENTS} messages to {topic}"));
    create_topic(brokers, topic).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "bench-raw-producer")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
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
        let payload = serde_json::json!({"ProductCreated": {"id": id, "name": NAME, "description": DESCRIPTION, "price": PRICE}});
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

/// Phase 2: `projector --role project` with a new group, over the topic phase 1 filled.
async fn projector_throughput(pool: &PgPool, url: &str, brokers: &str, topic: &str, names: &Names) -> Result<Throughput> {
    step(format!("phase 2: projector, {EVENTS} events from {topic} into products"));
    let mut projector =
        start_projector(url, brokers, "project", topic, &names.group("project"), DEFAULT_PUBLISH_BATCH_SIZE)?;
    let projected = move || async move { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM products").fetch_one(pool).await };
    let throughput = watch_progress("projected products", &mut projector, Duration::from_millis(50), projected).await?;
    projector.stop();
    Ok(throughput)
}

/// Phase 2 baseline: the same messages read by a consumer with the projector's settings
/// (new group, from the earliest offset, no auto-commit), counted and dropped.
async fn raw_consumer_throughput(brokers: &str, topic: &str, group: &str) -> Result<Throughput> {
    step(format!("phase 2 baseline: raw consumer, {EVENTS} messages from {topic}"));
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "bench-raw-consumer")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3333")
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string())
        .set("enable.partition.eof", "false")
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
    Ok(Throughput {
        startup: first - started,
        per_sec: (EVENTS - 1) as f64 / first.elapsed().as_secs_f64(),
    })
}

/// Phase 3: lag from a command's 201 to the product's visibility in query-api, at each of
/// `LAG_RATES`, with command-api, query-api and `projector --role all` on a new topic.
async fn end_to_end_lag(pool: &PgPool, url: &str, brokers: &str, names: &Names) -> Result<(Vec<Lag>, f64)> {
    let topic = names.topic("e2e");
    step(format!("phase 3: end-to-end lag through {topic}"));
    bench_harness::create_admin(url)?;
    start_publisher_at_store_head(pool, &topic).await?;
    let mut command_api = Service::start_listening("command-api", COMMAND_ADDR, |c| {
        c.env("COMMAND_API_ADDR", COMMAND_ADDR).env("DATABASE_URL", url).env("DATABASE_MAX_CONNECTIONS", "20")
    })?;
    let mut query_api = start_query_api(url)?;
    let mut projector = start_projector(url, brokers, "all", &topic, &names.group("e2e"), DEFAULT_PUBLISH_BATCH_SIZE)?;
    let token = bench_harness::login(COMMAND_ADDR).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;

    step("waiting for the first command to become visible (consumer group join)");
    let visible_id = first_visible_command(&client, &token).await?;
    // Warm the connection pools and the services before anything is recorded.
    lag_at_rate(&client, &token, 50, Duration::from_secs(2)).await?;

    let mut lags = Vec::new();
    for rate in LAG_RATES {
        step(format!("{rate} commands/s for {LAG_DURATION:?}"));
        lags.push(lag_at_rate(&client, &token, rate, LAG_DURATION).await?);
        for service in [&mut command_api, &mut query_api, &mut projector] {
            service.ensure_running()?;
        }
    }
    let round_trip = read_round_trip(&client, &visible_id).await?;
    projector.stop();
    query_api.stop();
    command_api.stop();
    Ok((lags, round_trip))
}

/// Phase 3 baseline: the broker hop alone. A producer configured like the publisher's sends
/// one message at a time at the lowest lag rate, and a consumer with the projector's settings
/// but `fetch_wait_ms` (None: librdkafka's default) receives it; latency from the send to the
/// receipt.
async fn broker_hop(brokers: &str, topic: &str, group: &str, fetch_wait_ms: Option<u32>) -> Result<BrokerHop> {
    let setting = fetch_wait_ms.map_or("librdkafka's default".to_owned(), |ms| format!("{ms} ms"));
    step(format!("phase 3 baseline: broker hop, fetch.wait.max.ms {setting}, {BROKER_HOP_MESSAGES} messages"));
    create_topic(brokers, topic).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    if let Some(ms) = fetch_wait_ms {
        config.set("fetch.wait.max.ms", ms.to_string());
    }
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;

    let send_and_receive = |key: String, timeout: Duration| {
        let (producer, consumer) = (&producer, &consumer);
        async move {
            let sent = Instant::now();
            producer
                .send(FutureRecord::to(topic).key(&key).payload(PRICE), Duration::from_secs(5))
                .await
                .map_err(|(error, _)| anyhow::anyhow!("broker hop: produce failed: {error}"))?;
            let message = tokio::time::timeout(timeout, consumer.recv()).await.context("broker hop: nothing received")??;
            anyhow::ensure!(message.key() == Some(key.as_bytes()), "broker hop: received an unexpected message");
            anyhow::Ok(sent.elapsed().as_secs_f64() * 1000.0)
        }
    };
    // The first message also waits for the group join; it is not counted.
    send_and_receive("join".to_owned(), Duration::from_secs(60)).await?;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(LAG_RATES[0])));
    let mut latencies = Vec::new();
    for i in 0..BROKER_HOP_MESSAGES {
        ticks.tick().await;
        latencies.push(send_and_receive(i.to_string(), Duration::from_secs(5)).await?);
    }
    consumer.unsubscribe();
    latencies.sort_unstable_by(f64::total_cmp);
    Ok(BrokerHop { fetch_wait_ms, p50_ms: percentile(&latencies, 0.5), p99_ms: percentile(&latencies, 0.99) })
}

/// Sets the new topic's publisher checkpoint to the newest stored event, so phase 3 starts as
/// a caught-up deployment would instead of re-publishing the 100,000 events of phase 1.
async fn start_publisher_at_store_head(pool: &PgPool, topic: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO publisher_checkpoints (topic, transaction_id, global_position, published_total)
         SELECT $1, transaction_id, global_position, 0
           FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .bind(topic)
    .execute(pool)
    .await?;
    Ok(())
}

/// Creates products until one becomes visible in query-api: by then the projector has joined
/// its group. Returns that product's id.
async fn first_visible_command(client: &reqwest::Client, token: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let id = create_product(client, token).await?.0;
        if get_product(client, &id, true).await?.is_some() {
            return Ok(id);
        }
        if Instant::now() >= deadline {
            bail!("no created product became visible in query-api within 60 s");
        }
    }
}

/// Issues `rate` commands per second for `duration`, each in its own task, and collects the
/// lag of each from its 201 to the 200 of its `min_version=1` read.
async fn lag_at_rate(client: &reqwest::Client, token: &str, rate: u32, duration: Duration) -> Result<Lag> {
    let count = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut ticks = tokio::time::interval(period);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for _ in 0..count {
        ticks.tick().await;
        let (client, token) = (client.clone(), token.to_owned());
        tasks.spawn(async move {
            let (id, at_201) = create_product(&client, &token).await?;
            let at_200 = get_product(&client, &id, true).await?.context("not visible within query-api's wait")?;
            anyhow::Ok((at_200 - at_201).as_secs_f64() * 1000.0)
        });
    }
    let issued_for = started.elapsed() + period;
    let mut lags = Vec::with_capacity(count);
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok(lag) => lags.push(lag),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    if !failures.is_empty() {
        let mut kinds: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for failure in &failures {
            *kinds.entry(failure.as_str()).or_default() += 1;
        }
        eprintln!("warning: {} of {count} commands failed: {kinds:?}", failures.len());
    }
    lags.sort_unstable_by(f64::total_cmp);
    Ok(Lag {
        rate,
        achieved_per_sec: lags.len() as f64 / issued_for.as_secs_f64(),
        measured: lags.len(),
        failures: failures.len(),
        p50_ms: percentile(&lags, 0.50),
        p99_ms: percentile(&lags, 0.99),
        max_ms: lags.last().copied().unwrap_or(f64::NAN),
    })
}

/// POSTs a new product; its id and when the 201 arrived.
async fn create_product(client: &reqwest::Client, token: &str) -> Result<(String, Instant)> {
    let response = client
        .post(format!("http://{COMMAND_ADDR}/api/v1/products"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": NAME, "description": DESCRIPTION, "price": PRICE}))
        .send()
        .await?;
    let at_201 = Instant::now();
    let status = response.status();
    if status != 201 {
        let detail = response.json::<serde_json::Value>().await.ok().and_then(|b| b["detail"].as_str().map(str::to_owned));
        anyhow::bail!("create returned {status}: {}", detail.unwrap_or_default());
    }
    let body: serde_json::Value = response.json().await?;
    let id = body["id"].as_str().context("the 201 has no id")?.to_owned();
    Ok((id, at_201))
}

/// GETs a product from query-api (`min_version=1` when `wait`); when its 200 arrived, or None
/// on 503 (not visible within the server's wait).
async fn get_product(client: &reqwest::Client, id: &str, wait: bool) -> Result<Option<Instant>> {
    let query = if wait { "?min_version=1" } else { "" };
    let response = client.get(format!("http://{QUERY_ADDR}/api/v1/products/{id}{query}")).send().await?;
    let at_200 = Instant::now();
    let status = response.status();
    response.bytes().await?; // drained, so the connection is reused
    match status.as_u16() {
        200 => Ok(Some(at_200)),
        503 => Ok(None),
        other => bail!("GET product returned {other}"),
    }
}

/// p50 of a `min_version=1` GET of a product that is already visible: the part of every lag
/// figure that is the read's own HTTP round trip.
async fn read_round_trip(client: &reqwest::Client, id: &str) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..200 {
        let sent = Instant::now();
        let at_200 = get_product(client, id, true).await?.context("a visible product was not visible")?;
        times.push((at_200 - sent).as_secs_f64() * 1000.0);
    }
    times.sort_unstable_by(f64::total_cmp);
    Ok(percentile(&times, 0.5))
}

/// Phase 4: one query-api process, `wrk` on a cached product and then on `/health`.
async fn cached_read_vs_trivial(pool: &PgPool, url: &str, wrk: &Path) -> Result<Reads> {
    step(format!("phase 4: cached product GET vs /health, wrk {HTTP_CONNECTIONS} connections, {HTTP_DURATION:?} each"));
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM products WHERE NOT deleted ORDER BY created_at, id LIMIT 1")
        .fetch_one(pool)
        .await?;
    let mut query_api = start_query_api(url)?;
    let client = reqwest::Client::new();
    get_product(&client, &id.to_string(), false).await?.context("the product to cache is not visible")?;
    let product = run_wrk(wrk, &format!("http://{QUERY_ADDR}/api/v1/products/{id}"))?;
    query_api.ensure_running()?;
    let health = run_wrk(wrk, &format!("http://{QUERY_ADDR}/health"))?;
    query_api.stop();
    Ok(Reads { product, health })
}

/// Runs `wrk` against `url`; fails on errors or non-2xx answers, which would make the
/// requests/s meaningless.
fn run_wrk(wrk: &Path, url: &str) -> Result<HttpLoad> {
    step(format!("wrk {url}"));
    let output = proc::output(Command::new(wrk).args([
        &format!("-t{WRK_THREADS}"),
        &format!("-c{HTTP_CONNECTIONS}"),
        &format!("-d{}s", HTTP_DURATION.as_secs()),
        "--latency",
        url,
    ]))?;
    if let Some(line) = output.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")) {
        bail!("wrk {url}: {}", line.trim());
    }
    let field = |label: &str| {
        output
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .with_context(|| format!("no `{label}` in wrk's output:\n{output}"))
    };
    Ok(HttpLoad { per_sec: field("Requests/sec:")?.parse()?, p50: field("50%")?, p99: field("99%")? })
}

fn start_projector(url: &str, brokers: &str, role: &str, topic: &str, group: &str, publish_batch_size: u32) -> Result<Service> {
    Service::start_listening("projector", PROJECTOR_ADDR, |c| {
        c.args(["--role", role, "--kafka-topic", topic, "--kafka-dlq-topic", &format!("{topic}.dlq"), "--group", group])
            .args(["--publish-batch-size", &publish_batch_size.to_string()])
            .args(["--project-batch-size", &PROJECT_BATCH_SIZE.to_string()])
            .args(["--project-lanes", &PROJECT_LANES.to_string()])
            .args(["--fetch-wait-max-ms", &FETCH_WAIT_MAX_MS.to_string()])
            .env("PROJECTOR_ADDR", PROJECTOR_ADDR)
            .env("DATABASE_URL", url)
            .env("KAFKA_BROKERS", brokers)
    })
}

fn start_query_api(url: &str) -> Result<Service> {
    Service::start_listening("query-api", QUERY_ADDR, |c| c.env("QUERY_API_ADDR", QUERY_ADDR).env("DATABASE_URL", url))
}

async fn create_topic(brokers: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))], &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create topic {topic}: {code}"))?;
    }
    Ok(())
}

/// Polls `current` every `interval` until it reaches `EVENTS`, failing if `service` exits or
/// the count stops moving for `STALL_TIMEOUT`.
async fn watch_progress<F, Fut>(what: &str, service: &mut Service, interval: Duration, mut current: F) -> Result<Throughput>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<i64, sqlx::Error>>,
{
    let started = Instant::now();
    let mut first: Option<(Instant, i64)> = None;
    let (mut last, mut last_change) = (0, started);
    loop {
        service.ensure_running()?;
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

/// The `wrk` load generator: from PATH, or installed with apt-get when running as root.
fn ensure_wrk() -> Result<PathBuf> {
    if let Some(path) = proc::find_in_path("wrk") {
        return Ok(path);
    }
    let uid = proc::output(Command::new("id").arg("-u")).unwrap_or_default();
    if uid != "0" {
        bail!("the pipeline benchmark needs the `wrk` load generator; install it (e.g. `sudo apt-get install -y wrk`) and run again");
    }
    step("installing wrk (apt-get install -y wrk)");
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends", "wrk"]).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if proc::run(&mut install()).is_err() {
        proc::run(Command::new("apt-get").arg("update"))?;
        proc::run(&mut install())?;
    }
    proc::find_in_path("wrk").context("apt-get installed wrk, but it is not in PATH")
}

fn report(results: &Results) -> Result<()> {
    let throughput = throughput_table(results);
    let lag = lag_table(&results.lags);
    let read = read_table(&results.reads);
    let hops = hop_table(&results.hops);
    let round_trip = results.round_trip;
    println!(
        "\n{throughput}\n{lag}\nmin_version GET round trip on a visible product: p50 {round_trip:.2} ms\n\n{hops}\n{read}"
    );
    let section = format!(
        "## pipeline\n\n\
         `cargo xtask bench pipeline`, release builds, on {cores} cores shared by everything: Postgres, tansu\n\
         (in-memory storage) and the services all run on this machine, next to the load generators.\n\
         The projector runs with its defaults (`--publish-batch-size {DEFAULT_PUBLISH_BATCH_SIZE} --project-batch-size \
         {PROJECT_BATCH_SIZE}\n\
         --project-lanes {PROJECT_LANES} --fetch-wait-max-ms {FETCH_WAIT_MAX_MS}`) except where a row names another publish \
         batch size.\n\n\
         **Throughput.** {EVENTS} `ProductCreated` events are written to the store with SQL; `projector --role publish`\n\
         publishes them to a new topic (timed by its checkpoint's `published_total`), then `projector --role project`\n\
         with a new group applies that topic to `products` (timed by `count(*)`). Rates are counted from the first\n\
         progress seen; start-up (process start, topic creation, group join) is shown apart. Baselines, same run:\n\
         the raw producer is an rdkafka producer in the bench process configured like the publisher's (idempotent,\n\
         acks=all, linger.ms=5) sending {EVENTS} messages with the same key, value and headers, all in flight at once:\n\
         the ceiling of client and broker. The raw consumer reads the same {EVENTS} messages with the projector's\n\
         consumer settings and a new group, applying nothing: the cost of consuming alone.\n\n{throughput}\n\
         **End-to-end lag**, command-api, query-api and `projector --role all` on a new topic (its publisher starts\n\
         at the store's head). At a fixed rate, each command in its own task, `POST /api/v1/products` (201), then\n\
         `GET /api/v1/products/{{id}}?min_version=1` on query-api, which waits server-side until the read model\n\
         has the version; the lag is from the 201 to that GET's 200, {secs} s per rate. It includes the GET's own\n\
         HTTP round trip: p50 {round_trip:.2} ms on a product already visible.\n\n{lag}\n\
         Baseline for the Kafka hop of that path: a producer configured like the publisher's sends one message at a\n\
         time, {rate} per second, to a consumer with the projector's settings (`fetch.wait.max.ms` \
         {FETCH_WAIT_MAX_MS}), and to one\n\
         with librdkafka's default (500 ms). Latency from the send to the receipt; it includes linger.ms=5. tansu\n\
         answers a fetch that finds nothing by re-reading its storage after sleeps, up to that wait, instead of as\n\
         soon as data arrives as Kafka does; the difference between the rows is that wait.\n\n{hops}\n\
         **Cached read vs a trivial handler**: `wrk -t{WRK_THREADS} -c{HTTP_CONNECTIONS} -d{http}s` against one query-api\n\
         process, a product read once before (so cached) and `/health` (a bare 200 behind the same middleware).\n\
         wrk shares the {cores} cores with query-api.\n\n{read}",
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        secs = LAG_DURATION.as_secs(),
        rate = LAG_RATES[0],
        http = HTTP_DURATION.as_secs(),
    );
    bench_harness::write_section("pipeline", &section)
}

fn throughput_table(results: &Results) -> String {
    let mut table = String::from(
        "| stage | pipeline events/s | start-up s | baseline | baseline events/s | ratio | target | met |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let publishers = results.publishers.iter().map(|(batch_size, throughput)| {
        let stage = format!("publish: store → Kafka, batches of {batch_size}");
        (stage, throughput, "raw producer", &results.raw_producer, PUBLISH_TARGET)
    });
    let projector = ("project: Kafka → read model".to_owned(), &results.projector, "raw consumer", &results.raw_consumer, PROJECT_TARGET);
    for (stage, pipeline, baseline_name, baseline, target) in publishers.chain([projector]) {
        table.push_str(&format!(
            "| {stage} | {:.0} | {:.1} | {baseline_name} | {:.0} | {:.2} | ≥ {target:.0}/s | {} |\n",
            pipeline.per_sec,
            pipeline.startup.as_secs_f64(),
            baseline.per_sec,
            pipeline.per_sec / baseline.per_sec,
            verdict(pipeline.per_sec >= target, || format!("{:.0} % of it", 100.0 * pipeline.per_sec / target)),
        ));
    }
    table
}

fn lag_table(lags: &[Lag]) -> String {
    let mut table = String::from(
        "| commands/s asked | achieved/s | measured | failed | p50 ms | p99 ms | max ms | target | met |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for l in lags {
        let (target, met) = if l.rate == LAG_RATES[0] {
            let met = l.failures == 0 && l.p50_ms <= LAG_P50_TARGET_MS && l.p99_ms <= LAG_P99_TARGET_MS;
            let by = || {
                format!(
                    "p50 {:.1}×, p99 {:.1}× the targets",
                    l.p50_ms / LAG_P50_TARGET_MS,
                    l.p99_ms / LAG_P99_TARGET_MS
                )
            };
            (format!("p50 ≤ {LAG_P50_TARGET_MS:.0}, p99 ≤ {LAG_P99_TARGET_MS:.0}"), verdict(met, by))
        } else {
            ("—".to_owned(), "—".to_owned())
        };
        table.push_str(&format!(
            "| {} | {:.1} | {} | {} | {:.1} | {:.1} | {:.1} | {target} | {met} |\n",
            l.rate, l.achieved_per_sec, l.measured, l.failures, l.p50_ms, l.p99_ms, l.max_ms
        ));
    }
    table
}

fn hop_table(hops: &[BrokerHop]) -> String {
    let mut table = String::from("| consumer fetch.wait.max.ms | send → receive p50 ms | p99 ms |\n|---|---|---|\n");
    for hop in hops {
        let setting = hop.fetch_wait_ms.map_or("librdkafka's default (500)".to_owned(), |ms| format!("{ms}, as the projector"));
        table.push_str(&format!("| {setting} | {:.1} | {:.1} |\n", hop.p50_ms, hop.p99_ms));
    }
    table
}

fn read_table(reads: &Reads) -> String {
    let ratio = reads.product.per_sec / reads.health.per_sec;
    format!(
        "| route | requests/s | p50 | p99 |\n|---|---|---|---|\n\
         | `GET /api/v1/products/{{id}}` (cached) | {:.0} | {} | {} |\n\
         | `GET /health` | {:.0} | {} | {} |\n\n\
         Ratio {ratio:.2}; target ≥ {READ_RATIO_TARGET}: {}.\n",
        reads.product.per_sec,
        reads.product.p50,
        reads.product.p99,
        reads.health.per_sec,
        reads.health.p50,
        reads.health.p99,
        verdict(ratio >= READ_RATIO_TARGET, || format!("{:.0} % of it", 100.0 * ratio / READ_RATIO_TARGET)),
    )
}

fn verdict(met: bool, by: impl FnOnce() -> String) -> String {
    if met {
        "yes".to_owned()
    } else {
        format!("no: {}", by())
    }
}
