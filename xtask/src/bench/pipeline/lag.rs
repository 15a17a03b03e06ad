//! Phase 3 of `bench pipeline`: end-to-end lag from a command's 201 to the product's
//! visibility in query-api, against the broker hop alone.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use sqlx::PgPool;
use tokio::task::JoinSet;

use super::{
    create_topic, projector_like_consumer, publisher_like_producer, start_projector, Names, DEFAULT_PUBLISH_BATCH_SIZE,
    DESCRIPTION, FETCH_WAIT_MAX_MS, LINGER_MS, NAME, PRICE,
};
use crate::bench::harness::percentile;
use crate::proc::step;
use crate::system::{Ports, Service, System};

const COMMAND_ADDR: &str = Ports::BENCH_PIPELINE.command_api;
const QUERY_ADDR: &str = Ports::BENCH_PIPELINE.query_api;
const PROJECTOR_ADDR: &str = Ports::BENCH_PIPELINE.projector;

/// Commands per second; the targets apply to [`TARGET_RATE`].
pub(super) const LAG_RATES: [u32; 3] = [50, 500, 1000];
pub(super) const TARGET_RATE: u32 = 500;
/// The broker-hop baseline's settings, (consumer `fetch.wait.max.ms`, producer `linger.ms`):
/// the projector's; librdkafka's default fetch wait (None, 500 ms), to show how much the
/// broker's fetch wait matters; and the linger of 5 ms the producers had before `KAFKA_LINGER_MS`.
pub(super) const BROKER_HOPS: [(Option<u32>, u32); 3] =
    [(Some(FETCH_WAIT_MAX_MS), LINGER_MS), (None, LINGER_MS), (Some(FETCH_WAIT_MAX_MS), 5)];
const BROKER_HOP_MESSAGES: u32 = 100;
pub(super) const LAG_DURATION: Duration = Duration::from_secs(10);

/// Lag from a command's 201 to the product's 200 on query-api, at one rate.
pub(super) struct Lag {
    pub(super) rate: u32,
    pub(super) achieved_per_sec: f64,
    pub(super) measured: usize,
    pub(super) failures: usize,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
    /// Where the time went while this rate ran.
    pub(super) inside: Inside,
}

/// What `projector --role all` did while one rate ran, from its own metrics (deltas), and how
/// busy the machine was: whether the lag is rounds (their number, size and length) or CPU.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Inside {
    pub(super) publish_rounds: f64,
    pub(super) published: f64,
    pub(super) publish_round_ms: f64,
    pub(super) project_rounds: f64,
    pub(super) projected: f64,
    pub(super) project_round_ms: f64,
    /// The projector process's CPU, in cores.
    pub(super) projector_cores: f64,
    /// All of the machine's CPU time in use (everything, not only this system), 0..1.
    pub(super) machine_busy: f64,
    /// Of that, time the hypervisor gave to others (`steal`), 0..1.
    pub(super) machine_steal: f64,
    /// Cores used by each process group ([`CPU_GROUPS`]) while the rate ran.
    pub(super) cores: [f64; CPU_GROUPS.len()],
}

/// The processes whose CPU the lag phase reports: the system's, and the bench's own load
/// generator (this process), which shares the cores.
pub(super) const CPU_GROUPS: [&str; 6] =
    ["command-api", "query-api", "projector", "postgres", "broker", "load generator"];

/// Produce → consume through the broker alone, one message at a time.
pub(super) struct BrokerHop {
    /// `fetch.wait.max.ms` of the consumer; None is librdkafka's default (500 ms).
    pub(super) fetch_wait_ms: Option<u32>,
    /// `linger.ms` of the producer.
    pub(super) linger_ms: u32,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
}

/// Phase 3: lag from a command's 201 to the product's visibility in query-api, at each of
/// `LAG_RATES`, with command-api, query-api and `projector --role all` on a new topic.
pub(super) async fn end_to_end_lag(system: &mut System, pool: &PgPool, names: &Names) -> Result<(Vec<Lag>, f64)> {
    let topic = names.topic("e2e");
    step(format!("phase 3: end-to-end lag through {topic}"));
    start_publisher_at_store_head(pool, &topic).await?;
    system.start(Service::CommandApi, |c| c.env("DATABASE_MAX_CONNECTIONS", "20"))?;
    system.start(Service::QueryApi, |c| c)?;
    start_projector(system, "all", &topic, &names.group("e2e"), DEFAULT_PUBLISH_BATCH_SIZE)?;
    let token = system.admin_token().await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;

    step("waiting for the first command to become visible (consumer group join)");
    let visible_id = first_visible_command(&client, &token).await?;
    // Warm the connection pools and the services before anything is recorded.
    lag_at_rate(&client, &token, 50, Duration::from_secs(2)).await?;

    let mut lags = Vec::new();
    for rate in LAG_RATES {
        step(format!("{rate} commands/s for {LAG_DURATION:?}"));
        let before = Snapshot::take(&client, system).await?;
        let mut lag = lag_at_rate(&client, &token, rate, LAG_DURATION).await?;
        lag.inside = Snapshot::take(&client, system).await?.since(&before);
        lags.push(lag);
        system.ensure_running()?;
    }
    let round_trip = read_round_trip(&client, &visible_id).await?;
    system.stop_all();
    Ok((lags, round_trip))
}

/// Phase 3 baseline: the broker hop alone. A producer configured like the publisher's sends
/// one message at a time at the lowest lag rate, and a consumer with the projector's settings
/// but `fetch_wait_ms` (None: librdkafka's default) receives it; latency from the send to the
/// receipt.
pub(super) async fn broker_hop(
    brokers: &str,
    topic: &str,
    group: &str,
    fetch_wait_ms: Option<u32>,
    linger_ms: u32,
) -> Result<BrokerHop> {
    let setting = fetch_wait_ms.map_or("librdkafka's default".to_owned(), |ms| format!("{ms} ms"));
    step(format!(
        "phase 3 baseline: broker hop, fetch.wait.max.ms {setting}, linger.ms {linger_ms}, {BROKER_HOP_MESSAGES} messages"
    ));
    create_topic(brokers, topic).await?;
    let producer: FutureProducer = publisher_like_producer(brokers).set("linger.ms", linger_ms.to_string()).create()?;
    let mut config = projector_like_consumer(brokers, group);
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
            let message =
                tokio::time::timeout(timeout, consumer.recv()).await.context("broker hop: nothing received")??;
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
    Ok(BrokerHop {
        fetch_wait_ms,
        linger_ms,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    })
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
        inside: Inside::default(),
    })
}

/// The projector's counters, its CPU time and the machine's at one moment.
struct Snapshot {
    at: Instant,
    metrics: std::collections::HashMap<String, f64>,
    /// CPU seconds of each of [`CPU_GROUPS`].
    cpu_seconds: [f64; CPU_GROUPS.len()],
    /// (busy, steal, total) jiffies of all CPUs, from `/proc/stat`.
    machine: (f64, f64, f64),
}

impl Snapshot {
    async fn take(client: &reqwest::Client, system: &System) -> Result<Self> {
        let text = client.get(format!("http://{PROJECTOR_ADDR}/metrics")).send().await?.text().await?;
        let mut metrics = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let name = series.split('{').next().unwrap_or(series);
            *metrics.entry(name.to_owned()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
        let cpu: Vec<f64> = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: f64 = cpu.iter().sum();
        let idle = cpu.get(3).copied().unwrap_or(0.0) + cpu.get(4).copied().unwrap_or(0.0);
        let steal = cpu.get(7).copied().unwrap_or(0.0);
        let groups = system.cpu_seconds_by_group();
        let cpu_seconds = CPU_GROUPS.map(|group| match group {
            "load generator" => crate::proc::cpu_seconds(std::process::id()),
            _ => groups.get(group).copied().unwrap_or(0.0),
        });
        Ok(Self { at: Instant::now(), metrics, cpu_seconds, machine: (total - idle, steal, total) })
    }

    fn since(&self, before: &Self) -> Inside {
        let delta = |name: &str| {
            self.metrics.get(name).copied().unwrap_or(0.0) - before.metrics.get(name).copied().unwrap_or(0.0)
        };
        let seconds = (self.at - before.at).as_secs_f64();
        let cores: [f64; CPU_GROUPS.len()] =
            std::array::from_fn(|i| (self.cpu_seconds[i] - before.cpu_seconds[i]) / seconds);
        let mean_ms = |name: &str| 1000.0 * delta(&format!("{name}_sum")) / delta(&format!("{name}_count")).max(1.0);
        Inside {
            publish_rounds: delta("publisher_batch_duration_seconds_count"),
            published: delta("publisher_events_published_total"),
            publish_round_ms: mean_ms("publisher_batch_duration_seconds"),
            project_rounds: delta("projector_batch_duration_seconds_count"),
            projected: delta("projector_events_applied_total") + delta("projector_events_skipped_total"),
            project_round_ms: mean_ms("projector_batch_duration_seconds"),
            projector_cores: cores[2],
            machine_busy: (self.machine.0 - before.machine.0) / (self.machine.2 - before.machine.2).max(1.0),
            machine_steal: (self.machine.1 - before.machine.1) / (self.machine.2 - before.machine.2).max(1.0),
            cores,
        }
    }
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
        let detail =
            response.json::<serde_json::Value>().await.ok().and_then(|b| b["detail"].as_str().map(str::to_owned));
        anyhow::bail!("create returned {status}: {}", detail.unwrap_or_default());
    }
    let body: serde_json::Value = response.json().await?;
    let id = body["id"].as_str().context("the 201 has no id")?.to_owned();
    Ok((id, at_201))
}

/// GETs a product from query-api (`min_version=1` when `wait`); when its 200 arrived, or None
/// on 503 (not visible within the server's wait).
pub(super) async fn get_product(client: &reqwest::Client, id: &str, wait: bool) -> Result<Option<Instant>> {
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
