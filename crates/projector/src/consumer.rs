//! The project loop: Kafka → read models, exactly once in effect.
//!
//! A consumer in group `catalog-projector` (auto-commit off) takes what has arrived, up to a
//! batch, and splits it into lanes by partition: lanes run in parallel, each in its own read
//! store transaction, and a partition always stays in one lane, so its order is kept. Offsets
//! are committed only after every lane's transaction has committed. The version rule in
//! `read_model::projection` makes redelivery (after a crash, a rebalance or a replay) harmless.
//!
//! Failures:
//! - the read store fails in a way that passes with time (unreachable, too many connections,
//!   statement timeout, serialization failure, shutting down: `ApplyError::is_transient`): the
//!   lane retries with backoff for as long as it takes, never dead-lettering a valid event.
//!   Meanwhile the consumer pauses its partitions (and keeps polling, so it stays in the
//!   group); the lag grows, and alerts;
//! - an event cannot be applied: the lane's events are retried one by one, the failing one up
//!   to `max_attempts` times with backoff, then it is dead-lettered: parked in Postgres with the
//!   reason (and copied to the dead-letter topic). Its aggregate is parked from then on: its
//!   later events queue behind it unapplied (`crate::parking`), other aggregates move on.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use event_store::CatalogEvent;
use futures::future::join_all;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use read_model::{apply_events, ApplyError, Outcome};
use service_runtime::kafka::RenewableProducer;
use service_runtime::retry::outage_backoff;
use service_runtime::telemetry;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{message, parking};

/// Limits of one consume round.
#[derive(Debug, Clone)]
pub struct ConsumerTuning {
    pub max_batch: usize,
    pub lanes: usize,
    pub max_attempts: u32,
}

pub struct Projector {
    pool: PgPool,
    consumer: StreamConsumer<RebalanceLog>,
    dead_letters: RenewableProducer,
    dlq_topic: String,
    tuning: ConsumerTuning,
    /// True while a lane waits out a transient failure: the partitions are paused.
    paused: watch::Sender<bool>,
}

/// Why a round stopped before it finished.
struct Interrupted;

/// Every counter the projector's loops report, registered at 0 at start-up: an alert on
/// `increase(...)` sees the first increment only if the series existed before it.
pub const COUNTERS: &[&str] = &[
    "projector_events_applied_total",
    "projector_events_skipped_total",
    "projector_events_healed_total",
    "projector_events_parked_total",
    "projector_dead_letters_total",
    "projector_transient_failures_total",
];

/// Exports [`COUNTERS`] at 0 and the pause gauge (idempotent: a counter keeps its value).
pub fn register_metrics() {
    for name in COUNTERS {
        metrics::counter!(*name).increment(0);
    }
    metrics::gauge!("projector_paused").increment(0.0);
}

impl Projector {
    pub fn new(
        pool: PgPool,
        consumer: StreamConsumer<RebalanceLog>,
        dead_letters: RenewableProducer,
        dlq_topic: String,
        tuning: ConsumerTuning,
    ) -> Self {
        register_metrics();
        Self { pool, consumer, dead_letters, dlq_topic, tuning, paused: watch::channel(false).0 }
    }

    /// Consumes until `shutdown` turns true, then commits what was applied and leaves the group.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Messages received while paused (already on their way when the pause came): they
        // open the next round, in order.
        let mut held: Vec<OwnedMessage> = Vec::new();
        loop {
            let mut batch = std::mem::take(&mut held);
            if batch.is_empty() {
                let first = tokio::select! {
                    _ = shutdown.changed() => break,
                    received = self.consumer.recv() => received.map(|m| m.detach()),
                };
                match first {
                    Ok(message) => batch.push(message),
                    Err(error) => {
                        // E.g. the brokers are unreachable: librdkafka reconnects by itself; don't spin.
                        tracing::warn!(%error, "consumer error");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            while batch.len() < self.tuning.max_batch {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message.detach()),
                    Some(Err(error)) => tracing::warn!(%error, "consumer error"),
                    None => break,
                }
            }
            let work = self.process(batch, &shutdown);
            tokio::pin!(work);
            let mut paused = self.paused.subscribe();
            let result = loop {
                // While paused, keep polling: a consumer that stops polling for
                // `max.poll.interval.ms` is thrown out of its group.
                let poll = async {
                    let _ = paused.wait_for(|p| *p).await;
                    self.consumer.recv().await.map(|m| m.detach())
                };
                tokio::select! {
                    result = &mut work => break result,
                    received = poll => match received {
                        Ok(message) => {
                            held.push(message);
                            if held.len() >= self.tuning.max_batch {
                                self.pause(); // partitions assigned since the pause
                            }
                        }
                        Err(error) => tracing::warn!(%error, "consumer error"),
                    },
                }
            };
            self.resume();
            if result.is_err() {
                break; // shutting down mid-round: uncommitted messages are redelivered later
            }
        }
        self.consumer.context().commit_applied(&self.consumer);
        self.consumer.unsubscribe();
        tracing::info!("projector stopped");
    }

    /// Stops fetching from every assigned partition. librdkafka drops what it had fetched and,
    /// on resume, fetches again from the last message handed to us, so nothing is skipped.
    fn pause(&self) {
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(error) = self.consumer.pause(&assignment) {
                    tracing::warn!(%error, "cannot pause partitions");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the assignment"),
        }
        if !self.paused.send_replace(true) {
            metrics::gauge!("projector_paused").set(1.0);
            tracing::warn!("read store failing; partitions paused until it recovers");
        }
    }

    fn resume(&self) {
        if !self.paused.send_replace(false) {
            return;
        }
        if let Ok(assignment) = self.consumer.assignment() {
            if let Err(error) = self.consumer.resume(&assignment) {
                tracing::warn!(%error, "cannot resume partitions");
            }
        }
        metrics::gauge!("projector_paused").set(0.0);
        tracing::info!("read store back; partitions resumed");
    }

    async fn process(&self, batch: Vec<OwnedMessage>, shutdown: &watch::Receiver<bool>) -> Result<(), Interrupted> {
        let started = Instant::now();
        let count = batch.len();
        let mut lanes: BTreeMap<usize, Vec<OwnedMessage>> = BTreeMap::new();
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in batch {
            next_offsets.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
            let lane = message.partition().unsigned_abs() as usize % self.tuning.lanes.max(1);
            lanes.entry(lane).or_default().push(message);
        }
        let results = join_all(lanes.into_values().map(|lane| self.process_lane(lane, shutdown))).await;
        let mut outcome = Outcome::default();
        for result in results {
            outcome += result?;
        }
        #[cfg(feature = "fault-injection")]
        crate::fail_point::hit("project-after-commit").await;
        let offsets = self.consumer.context().record(&next_offsets);
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            // Not fatal: the events are applied; a redelivery is skipped by the version rule.
            tracing::warn!(%error, "offset commit failed");
        }
        metrics::counter!("projector_events_applied_total").increment(outcome.applied);
        metrics::counter!("projector_events_skipped_total").increment(outcome.skipped);
        metrics::counter!("projector_events_healed_total").increment(outcome.healed);
        metrics::histogram!("projector_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(messages = count, ?outcome, "batch projected");
        Ok(())
    }

    /// One lane: the whole lane in one transaction; if an event in it cannot be applied,
    /// event by event so only that one is dead-lettered.
    async fn process_lane(
        &self,
        lane: Vec<OwnedMessage>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Outcome, Interrupted> {
        let decoded: Result<Vec<CatalogEvent>, String> = lane.iter().map(decode).collect();
        if let Ok(events) = decoded {
            // Open until the lane is applied (or dead-lettered), so each span's duration is
            // its event's time in this projector.
            let _spans: Vec<tracing::Span> = events.iter().map(event_span).collect();
            let pairs: Vec<(&OwnedMessage, CatalogEvent)> = lane.iter().zip(events).collect();
            match self.apply_with_retry(&pairs, shutdown).await? {
                Ok(outcome) => return Ok(outcome),
                Err(error) => tracing::info!(%error, "a batch failed; applying its events one by one"),
            }
        }
        let mut outcome = Outcome::default();
        for message in &lane {
            outcome += self.process_one(message, shutdown).await?;
        }
        Ok(outcome)
    }

    async fn process_one(
        &self,
        message: &OwnedMessage,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Outcome, Interrupted> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (event, reason) = match decode(message) {
                Err(reason) => {
                    // Not even an event: still, if its aggregate is parked it queues behind.
                    if self.park_if_parked(message, shutdown).await? {
                        return Ok(Outcome::default());
                    }
                    (None, reason)
                }
                Ok(event) => match self.apply_with_retry(&[(message, event.clone())], shutdown).await? {
                    Ok(outcome) => return Ok(outcome),
                    Err(error) => (Some(event), error.to_string()),
                },
            };
            if attempt >= self.tuning.max_attempts {
                self.dead_letter(message, event.as_ref(), &reason, shutdown).await?;
                return Ok(Outcome::default());
            }
            tracing::warn!(%reason, attempt, offset = message.offset(), partition = message.partition(), "event failed; retrying");
            tokio::time::sleep(outage_backoff(attempt)).await;
        }
    }

    /// Applies `events` in one transaction, retrying for as long as the failure is the
    /// database's (not the events'). The inner error is a failure of the events themselves.
    async fn apply_with_retry(
        &self,
        events: &[(&OwnedMessage, CatalogEvent)],
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Result<Outcome, ApplyError>, Interrupted> {
        let mut failures = 0;
        loop {
            match self.apply(events).await {
                Err(error) if error.is_transient() => {
                    failures += 1;
                    metrics::counter!("projector_transient_failures_total").increment(1);
                    tracing::warn!(%error, failures, "read store failing; retrying");
                    self.pause();
                    if *shutdown.borrow() {
                        return Err(Interrupted);
                    }
                    tokio::time::sleep(outage_backoff(failures)).await;
                }
                other => return Ok(other),
            }
        }
    }

    /// Applies `events` in one transaction, except those of parked aggregates: those are
    /// parked behind their queue in the same transaction.
    async fn apply(&self, events: &[(&OwnedMessage, CatalogEvent)]) -> Result<Outcome, ApplyError> {
        let started = Instant::now();
        let mut transaction = self.pool.begin().await?;
        let mut keys: Vec<String> = events.iter().map(|(m, _)| parking::key_of(m)).collect();
        keys.sort_unstable();
        keys.dedup();
        let parked: HashSet<String> = parking::parked_among(&mut transaction, &keys).await?;
        let mut to_apply = Vec::with_capacity(events.len());
        let mut newly_parked = 0;
        for (message, event) in events {
            if parked.contains(&parking::key_of(message)) {
                parking::park(&mut transaction, message, Some(event), None).await?;
                newly_parked += 1;
            } else {
                to_apply.push(event);
            }
        }
        let outcome = apply_events(&mut transaction, &to_apply).await?;
        transaction.commit().await?;
        if newly_parked > 0 {
            metrics::counter!("projector_events_parked_total").increment(newly_parked);
            tracing::warn!(events = newly_parked, "events parked behind a dead letter of their aggregate");
        }
        metrics::histogram!("projector_apply_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// Parks `message` (which could not be decoded) if its aggregate is parked. True if it was.
    async fn park_if_parked(
        &self,
        message: &OwnedMessage,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, Interrupted> {
        let key = parking::key_of(message);
        self.retry_database(shutdown, || async {
            let mut transaction = self.pool.begin().await?;
            if parking::parked_among(&mut transaction, std::slice::from_ref(&key)).await?.is_empty() {
                return Ok(false);
            }
            parking::park(&mut transaction, message, None, None).await?;
            transaction.commit().await?;
            metrics::counter!("projector_events_parked_total").increment(1);
            Ok(true)
        })
        .await
    }

    /// Runs `work` until it succeeds: only the database can fail it, and it is retried.
    async fn retry_database<T, F, Fut>(&self, shutdown: &watch::Receiver<bool>, work: F) -> Result<T, Interrupted>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut failures = 0;
        loop {
            match work().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, failures, "read store failing; retrying");
                    if *shutdown.borrow() {
                        return Err(Interrupted);
                    }
                    tokio::time::sleep(outage_backoff(failures)).await;
                }
            }
        }
    }

    /// Dead-letters `message`: parks it at the head of its aggregate's queue with the reason
    /// (retrying until Postgres takes it), then copies it to the dead-letter topic with the
    /// reason, waiting for the broker's acknowledgement (retrying until it comes).
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        event: Option<&CatalogEvent>,
        reason: &str,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), Interrupted> {
        self.retry_database(shutdown, || async {
            let mut connection = self.pool.acquire().await?;
            parking::park(&mut connection, message, event, Some(reason)).await
        })
        .await?;
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        let source = format!("{}/{}/{}", message.topic(), message.partition(), message.offset());
        headers = headers
            .insert(Header { key: message::DLQ_REASON, value: Some(reason) })
            .insert(Header { key: "catalog_dlq_source", value: Some(source.as_str()) });
        let mut failures = 0;
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.dlq_topic).headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            match self.dead_letters.get().send(record, Duration::from_secs(10)).await {
                Ok(_) => break,
                Err((error, _)) => {
                    failures += 1;
                    self.dead_letters.recover(&anyhow::Error::new(error.clone()));
                    tracing::warn!(%error, "cannot write dead letter; retrying");
                    if *shutdown.borrow() {
                        return Err(Interrupted);
                    }
                    tokio::time::sleep(outage_backoff(failures)).await;
                }
            }
        }
        metrics::counter!("projector_dead_letters_total").increment(1);
        tracing::error!(%reason, %source, aggregate_id = %parking::key_of(message), "event dead-lettered; its aggregate is parked");
        Ok(())
    }
}

/// `project_event`: the projector's span for one event, a child of the span that wrote it
/// (the `traceparent` in its metadata and Kafka headers), so one trace runs from the HTTP
/// request to the read model.
fn event_span(event: &CatalogEvent) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "project_event",
        aggregate_type = %event.aggregate_type,
        aggregate_id = %event.aggregate_id,
        version = event.sequence,
        event_type = %event.event_type,
        trace_id = tracing::field::Empty,
    );
    telemetry::continue_trace(&span, event.traceparent());
    span
}

fn decode(message: &OwnedMessage) -> Result<CatalogEvent, String> {
    let headers = message.headers();
    message::decode(
        message.key(),
        |name| headers.and_then(|h| h.iter().find(|header| header.key == name).and_then(|header| header.value)),
        message.payload(),
    )
}

/// Remembers the offsets whose events are applied, and commits exactly those when partitions
/// are revoked or the loop stops. (The consumer's own position may be ahead: it includes
/// messages taken for the current batch but not yet applied.)
#[derive(Default)]
pub struct RebalanceLog {
    applied: Mutex<BTreeMap<(String, i32), i64>>,
}

impl RebalanceLog {
    fn record(&self, next_offsets: &BTreeMap<(String, i32), i64>) -> TopicPartitionList {
        let mut applied = self.applied.lock().expect("offsets lock");
        applied.extend(next_offsets.iter().map(|(k, v)| (k.clone(), *v)));
        to_list(next_offsets)
    }

    fn commit_applied(&self, consumer: &impl Consumer<Self>) {
        let list = to_list(&self.applied.lock().expect("offsets lock"));
        if list.count() > 0 {
            if let Err(error) = consumer.commit(&list, CommitMode::Sync) {
                tracing::debug!(%error, "offset commit");
            }
        }
    }
}

fn to_list(offsets: &BTreeMap<(String, i32), i64>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset)).expect("valid offset");
    }
    list
}

impl ClientContext for RebalanceLog {
    /// librdkafka's statistics (every `statistics.interval.ms`): the consumer lag of each
    /// partition this process fetches, as `projector_consumer_lag{topic, partition}`. The lag is
    /// the partition's end offset minus this consumer's position; before it has a position (a
    /// partition never consumed), everything in the partition is lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                if *partition < 0 || stats.fetch_state == "none" {
                    continue;
                }
                let lag = match stats.consumer_lag {
                    lag if lag >= 0 => lag,
                    _ if stats.hi_offset >= 0 => (stats.hi_offset - stats.lo_offset.max(0)).max(0),
                    _ => continue,
                };
                metrics::gauge!(
                    "projector_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for RebalanceLog {
    fn pre_rebalance(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions revoked");
            self.commit_applied(consumer);
            // A partition that comes back may come back at an older offset; never commit
            // what was remembered for it before.
            let revoked: Vec<(String, i32)> =
                partitions.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
            let mut applied = self.applied.lock().expect("offsets lock");
            for key in revoked {
                // Another member reports this partition's lag from now on.
                metrics::gauge!("projector_consumer_lag", "topic" => key.0.clone(), "partition" => key.1.to_string())
                    .set(0.0);
                applied.remove(&key);
            }
        }
    }

    fn post_rebalance(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions assigned");
        }
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        metrics::gauge!("projector_assigned_partitions").set(assigned as f64);
    }
}
