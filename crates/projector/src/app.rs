//! The projector's settings, and `run`, which starts the loops its role asks for.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::{Consumer, StreamConsumer};
use service_runtime::kafka::{self, KafkaSettings};
use service_runtime::operations::{self, ReadinessCheck};
use service_runtime::retry::outage_backoff;
use service_runtime::settings::{DatabaseSettings, LogSettings};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::consumer::{ConsumerTuning, Projector, RebalanceLog};
use crate::publisher::Publisher;
use crate::reservations::ProcessManager;
use event_store::CommandBus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Event store → Kafka.
    Publish,
    /// Kafka → read models.
    Project,
    /// The reservations process manager: Kafka → stock commands (see `reservations`).
    Reservations,
    /// Every loop in one process.
    All,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "projector", about = "Catalog's event publisher and read-model projector", version)]
pub struct Settings {
    /// Address for /health, /ready and /metrics.
    #[arg(long, env = "PROJECTOR_ADDR", default_value = "127.0.0.1:8082")]
    pub addr: SocketAddr,

    /// Which loops this process runs.
    #[arg(long, env = "PROJECTOR_ROLE", value_enum, default_value = "all")]
    pub role: Role,

    /// Consumer group of the project loop.
    #[arg(long, env = "PROJECTOR_GROUP", default_value = "catalog-projector")]
    pub group: String,

    /// Consumer group of the reservations process manager; `<PROJECTOR_GROUP>-reservations`
    /// when absent.
    #[arg(long, env = "RESERVATIONS_GROUP")]
    pub reservations_group: Option<String>,

    /// Reservations the process manager reconciles at once.
    #[arg(long, env = "RESERVATIONS_CONCURRENCY", default_value_t = 16)]
    pub reservations_concurrency: usize,

    /// Kafka consumer session timeout: how soon a dead projector's partitions move to another.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,

    /// Longest a consumer fetch waits at the broker for data. Kafka answers as soon as data
    /// arrives, so this mostly sets how often an idle consumer asks; brokers that poll their
    /// storage instead (tansu) answer only after it, so it bounds end-to-end lag there.
    #[arg(long, env = "KAFKA_FETCH_WAIT_MAX_MS", default_value_t = 20)]
    pub fetch_wait_max_ms: u32,

    /// Events the publisher reads and produces per round.
    #[arg(long, env = "PUBLISH_BATCH_SIZE", default_value_t = 5000)]
    pub publish_batch_size: i64,

    /// Messages the project loop applies per round at most.
    #[arg(long, env = "PROJECT_BATCH_SIZE", default_value_t = 500)]
    pub project_batch_size: usize,

    /// Read-store transactions a round runs in parallel (partitions are spread over them).
    #[arg(long, env = "PROJECT_LANES", default_value_t = 4)]
    pub project_lanes: usize,

    /// Attempts at an event that fails before it goes to the dead-letter topic.
    #[arg(long, env = "PROJECT_MAX_ATTEMPTS", default_value_t = 3)]
    pub project_max_attempts: u32,

    #[command(flatten)]
    pub kafka: KafkaSettings,

    #[command(flatten)]
    pub database: DatabaseSettings,

    #[command(flatten)]
    pub currency: event_store::CurrencySettings,

    #[command(flatten)]
    pub log: LogSettings,
}

/// Runs the loops of `settings.role` and the operational endpoints until `shutdown` resolves;
/// then the loops finish their round, commit, and stop.
pub async fn run(
    settings: Settings,
    pool: PgPool,
    metrics: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    settings.currency.apply().map_err(anyhow::Error::msg)?;
    let producer = kafka::RenewableProducer::new(&settings.kafka, "catalog-projector")?;
    let mut checks = vec![ReadinessCheck::postgres(pool.clone())];
    // `/ready` asks the broker through the producer in use (not a second client of its own).
    let probe = producer.clone();
    checks.push(ReadinessCheck::new("kafka", move || {
        let current = probe.get();
        async move { kafka::ping(&current, Duration::from_secs(2)).await }
    }));

    let (stop, stopped) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    let topics_ready = ensure_topics(settings.kafka.clone(), stopped.clone());
    let publish = matches!(settings.role, Role::Publish | Role::All);
    let project = matches!(settings.role, Role::Project | Role::All);
    // At start-up, not once the broker answers: alert rules need the counters from the first scrape.
    if publish {
        crate::publisher::register_metrics();
    }
    if project {
        crate::consumer::register_metrics();
    }
    let reservations = matches!(settings.role, Role::Reservations | Role::All);
    {
        let settings = settings.clone();
        let pool = pool.clone();
        let stopped = stopped.clone();
        loops.spawn(async move {
            if !topics_ready.await {
                return Ok(());
            }
            let mut inner = tokio::task::JoinSet::new();
            if publish {
                let publisher = Publisher::new(
                    pool.clone(),
                    producer.clone(),
                    settings.kafka.kafka_topic.clone(),
                    settings.publish_batch_size,
                );
                inner.spawn(publisher.run(stopped.clone()));
            }
            if reservations {
                let manager = ProcessManager::new(
                    pool.clone(),
                    CommandBus::new(pool.clone()),
                    reservations_consumer(&settings)?,
                    settings.reservations_concurrency,
                );
                inner.spawn(manager.run(stopped.clone()));
            }
            if project {
                let projector = Projector::new(
                    pool,
                    consumer(&settings)?,
                    producer,
                    settings.kafka.kafka_dlq_topic.clone(),
                    ConsumerTuning {
                        max_batch: settings.project_batch_size,
                        lanes: settings.project_lanes,
                        max_attempts: settings.project_max_attempts,
                    },
                );
                inner.spawn(projector.run(stopped));
            }
            while inner.join_next().await.is_some() {}
            anyhow::Ok(())
        });
    }

    // The operational endpoints stay up until shutdown; then the loops are told to stop and
    // given the time to finish their round.
    let served = operations::serve(settings.addr, operations::router(checks, metrics), shutdown).await;
    let _ = stop.send(true);
    while let Some(result) = loops.join_next().await {
        result??;
    }
    served
}

fn consumer(settings: &Settings) -> anyhow::Result<StreamConsumer<RebalanceLog>> {
    let consumer: StreamConsumer<RebalanceLog> = settings
        .kafka
        .client_config("catalog-projector")
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (settings.session_timeout_ms / 3).max(100).to_string())
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        // Feeds the per-partition consumer lag gauge (`RebalanceLog::stats`).
        .set("statistics.interval.ms", "5000")
        .create_with_context(RebalanceLog::default())?;
    consumer.subscribe(&[&settings.kafka.kafka_topic])?;
    Ok(consumer)
}

/// The process manager's consumer: a group of its own, so it reads every event independently
/// of the projector; offsets committed by hand after the batch's sagas were reconciled.
fn reservations_consumer(settings: &Settings) -> anyhow::Result<StreamConsumer> {
    let group = settings.reservations_group.clone().unwrap_or_else(|| format!("{}-reservations", settings.group));
    let consumer: StreamConsumer = settings
        .kafka
        .client_config("catalog-reservations")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (settings.session_timeout_ms / 3).max(100).to_string())
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        .create()?;
    consumer.subscribe(&[&settings.kafka.kafka_topic])?;
    Ok(consumer)
}

/// Creates the topics, retrying while the broker is unreachable. False if asked to stop first.
async fn ensure_topics(kafka: KafkaSettings, mut stopped: watch::Receiver<bool>) -> bool {
    let mut failures = 0;
    loop {
        match kafka.ensure_topics().await {
            Ok(()) => return true,
            Err(error) => {
                failures += 1;
                tracing::warn!(error = format!("{error:#}"), "cannot create topics yet; retrying");
                tokio::select! {
                    _ = stopped.changed() => return false,
                    () = tokio::time::sleep(outage_backoff(failures)) => {}
                }
            }
        }
    }
}
