//! The publish loop: event store → Kafka, in commit-safe order, at least once.
//!
//! One publisher per topic and database is active at a time (a session advisory lock held on
//! the connection it reads with); others wait as hot standbys. Each round reads a batch after
//! the checkpoint (see `event_store::reads` for why that order never skips a late commit),
//! produces it, waits for the broker to acknowledge every message, and only then moves the
//! checkpoint. A crash between the two re-publishes the batch; the projector's version rule
//! makes that harmless. While a backlog drains, the next batch is read from the store during
//! the wait for the current one's acknowledgements (reading and producing overlap; producing
//! still waits for the checkpoint, so the topic's order is the store's commit order).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use event_store::reads::{self, CommitPosition};
use event_store::CatalogEvent;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use service_runtime::kafka::RenewableProducer;
use service_runtime::retry::outage_backoff;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use crate::message;

/// Waited at most between rounds when no notification arrives (e.g. a transaction held the
/// horizon back, or a notification was lost with a connection).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a produce may sit in the client's queue before the round fails.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
const EVENTS_APPENDED_CHANNEL: &str = "catalog_events_appended";
/// How often a busy publisher measures its lag (an idle one does after every round).
const LAG_INTERVAL: Duration = Duration::from_millis(500);

/// The publisher's counters (registered at 0 at start-up).
pub const COUNTERS: &[&str] = &["publisher_failures_total", "publisher_events_published_total"];

/// Exports [`COUNTERS`] at 0, so alerts on their increase see the first one (idempotent).
pub fn register_metrics() {
    for name in COUNTERS {
        metrics::counter!(*name).increment(0);
    }
}

pub struct Publisher {
    pool: PgPool,
    producer: RenewableProducer,
    topic: String,
    batch_size: i64,
}

/// The lock-holding connection and what it knows of the checkpoint.
struct Leadership {
    connection: PgConnection,
    checkpoint: CommitPosition,
    /// The highest position published so far (commit order is not position order).
    published_high: i64,
    /// The batch after the checkpoint, read while the previous one's acknowledgements were
    /// awaited (only when that one was full: a backlog). Dropped with the leadership on a failure.
    prefetched: Option<Vec<(CommitPosition, CatalogEvent)>>,
    /// When the lag gauges were last measured.
    lag_measured: Option<Instant>,
}

impl Publisher {
    pub fn new(pool: PgPool, producer: RenewableProducer, topic: String, batch_size: i64) -> Self {
        register_metrics();
        Self { pool, producer, topic, batch_size }
    }

    /// Publishes until `shutdown` turns true. Failures (database or broker down) are logged
    /// and retried with backoff; the loop itself never gives up.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut leadership: Option<Leadership> = None;
        let mut listener: Option<PgListener> = None;
        let mut failures = 0u32;
        while !*shutdown.borrow() {
            if listener.is_none() {
                listener = self.listen().await.map_err(|e| tracing::warn!(error = %e, "cannot LISTEN; polling")).ok();
            }
            let round = async {
                if leadership.is_none() {
                    leadership = self.lead().await?;
                }
                match leadership.as_mut() {
                    Some(lead) => self.publish_batch(lead).await,
                    None => Ok(0), // another publisher is active; stand by
                }
            };
            match round.await {
                Ok(published) => {
                    failures = 0;
                    if published as i64 == self.batch_size {
                        continue; // more is waiting
                    }
                    let wait = if leadership.is_some() { POLL_INTERVAL } else { POLL_INTERVAL * 5 };
                    wait_for_events(&mut listener, wait, &mut shutdown).await;
                }
                Err(error) => {
                    failures += 1;
                    metrics::counter!("publisher_failures_total").increment(1);
                    tracing::warn!(error = format!("{error:#}"), failures, "publish round failed; retrying");
                    self.producer.recover(&error);
                    // The connection may be broken; a new one re-takes the lock.
                    leadership = None;
                    let _ = tokio::time::timeout(outage_backoff(failures), shutdown.changed()).await;
                }
            }
        }
        tracing::info!("publisher stopped");
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_APPENDED_CHANNEL).await?;
        Ok(listener)
    }

    /// Takes the publisher lock for this topic on a dedicated connection, if it is free.
    async fn lead(&self) -> anyhow::Result<Option<Leadership>> {
        let mut connection = self.pool.acquire().await?.detach();
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('catalog-publisher ' || $1))")
            .bind(&self.topic)
            .fetch_one(&mut connection)
            .await?;
        if !acquired {
            return Ok(None);
        }
        let checkpoint = sqlx::query_as::<_, (i64, i64)>(
            "SELECT transaction_id::text::bigint, global_position FROM publisher_checkpoints WHERE topic = $1",
        )
        .bind(&self.topic)
        .fetch_optional(&mut connection)
        .await?
        .map(|(transaction_id, global_position)| CommitPosition { transaction_id, global_position })
        .unwrap_or_default();
        tracing::info!(topic = %self.topic, ?checkpoint, "publishing");
        let published_high = checkpoint.global_position;
        Ok(Some(Leadership { connection, checkpoint, published_high, prefetched: None, lag_measured: None }))
    }

    /// One round: read, produce, await every acknowledgement, move the checkpoint.
    /// Returns how many events were published.
    async fn publish_batch(&self, lead: &mut Leadership) -> anyhow::Result<usize> {
        let started = Instant::now();
        let batch = match lead.prefetched.take() {
            Some(batch) => batch,
            None => reads::committed_after(&mut lead.connection, lead.checkpoint, self.batch_size).await?,
        };
        let Some((last, _)) = batch.last() else {
            record_lag(lead).await?;
            return Ok(0);
        };
        let last = *last;
        let producer = self.producer.get();
        let delivered = produce_all(&producer, &self.topic, batch.iter().map(|(_, event)| event));
        if batch.len() as i64 == self.batch_size {
            // A backlog: the next batch (what follows `last` in commit order, whatever becomes
            // of this one) is read while the broker acknowledges this one. It is produced only
            // after this batch's checkpoint is written, so the order on the topic is unchanged.
            let (delivered, next) =
                tokio::join!(delivered, reads::committed_after(&mut lead.connection, last, self.batch_size));
            lead.prefetched = Some(next?);
            delivered?;
        } else {
            delivered.await?;
        }
        #[cfg(feature = "fault-injection")]
        crate::fail_point::hit("publish-after-ack").await;
        sqlx::query(
            "INSERT INTO publisher_checkpoints (topic, transaction_id, global_position, published_total)
             VALUES ($1, $2::text::xid8, $3, $4)
             ON CONFLICT (topic) DO UPDATE
                SET transaction_id = EXCLUDED.transaction_id, global_position = EXCLUDED.global_position,
                    published_total = publisher_checkpoints.published_total + EXCLUDED.published_total,
                    updated_at = now()",
        )
        .bind(&self.topic)
        .bind(last.transaction_id.to_string())
        .bind(last.global_position)
        .bind(batch.len() as i64)
        .execute(&mut lead.connection)
        .await?;
        lead.checkpoint = last;
        lead.published_high = batch.iter().map(|(_, e)| e.global_position).fold(lead.published_high, i64::max);
        // Also while busy: the gauges must fall as a backlog drains, not only once it is gone;
        // but at most every `LAG_INTERVAL` then (it costs a round trip, and rounds are short).
        if lead.lag_measured.is_none_or(|at| at.elapsed() >= LAG_INTERVAL) {
            record_lag(lead).await?;
        }
        metrics::counter!("publisher_events_published_total").increment(batch.len() as u64);
        metrics::histogram!("publisher_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(events = batch.len(), checkpoint = ?last, "published");
        Ok(batch.len())
    }
}

/// Produces `event` to `topic` (key, CloudEvents headers, JSON value) and waits for the
/// broker's acknowledgement. Also used by `catalogctl replay`.
pub async fn produce(producer: &FutureProducer, topic: &str, event: &CatalogEvent) -> anyhow::Result<()> {
    produce_all(producer, topic, std::iter::once(event)).await
}

/// Produces `events` to `topic` in their order and waits until the broker has acknowledged
/// every one (the first failure is returned). Each message is handed to the client as it is
/// built and only its delivery future is kept (one `Vec`, nothing boxed per message); when
/// the client's queue is full, the oldest delivery is awaited before trying again, at most for
/// `QUEUE_TIMEOUT`, so messages still enter the queue in order.
pub async fn produce_all<'e>(
    producer: &FutureProducer,
    topic: &str,
    events: impl ExactSizeIterator<Item = &'e CatalogEvent>,
) -> anyhow::Result<()> {
    let mut in_flight: VecDeque<(i64, DeliveryFuture)> = VecDeque::with_capacity(events.len());
    let mut value = Vec::new();
    for event in events {
        message::write_value(event, &mut value);
        let headers = message::headers(event).iter().fold(OwnedHeaders::new_with_capacity(14), |h, (key, value)| {
            h.insert(Header { key, value: Some(&**value) })
        });
        let mut record = FutureRecord::to(topic)
            .key(event.aggregate_id.as_str())
            .payload(value.as_slice())
            .headers(headers)
            .timestamp(event.recorded_at.timestamp_millis());
        let queued_at = Instant::now();
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back((event.global_position, delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if queued_at.elapsed() < QUEUE_TIMEOUT =>
                {
                    record = returned;
                    match in_flight.pop_front() {
                        Some((position, delivery)) => acknowledged(position, delivery).await?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((error, _)) => {
                    return Err(
                        anyhow::Error::new(error).context(format!("broker refused event {}", event.global_position))
                    )
                }
            }
        }
    }
    for (position, delivery) in in_flight {
        acknowledged(position, delivery).await?;
    }
    Ok(())
}

/// Waits for the delivery report of the event at `position`.
async fn acknowledged(position: i64, delivery: DeliveryFuture) -> anyhow::Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(anyhow::Error::new(error).context(format!("broker refused event {position}"))),
        // The client dropped the report: it is shutting down.
        Err(_) => anyhow::bail!("delivery of event {position} was cancelled"),
    }
}

/// The publisher's lag: how many events wait (an estimate from positions) and how old the
/// oldest waiting one is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    pub events: i64,
    pub oldest_seconds: f64,
}

/// Measures the lag in O(1) (two index probes), however large the backlog: the head position
/// minus the highest position published, and the commit time of the first event after the
/// checkpoint in commit order. (Counting the backlog made each round cost O(backlog), and
/// catching up quadratic.) Positions have gaps (rolled-back appends) and a late commit can
/// sit below `published_high`, so `events` estimates; it is 0 exactly when nothing waits.
/// Measured after every round, including one that found nothing it may take: a long-open
/// transaction holding the horizon back shows here as a growing lag while the publisher idles.
pub async fn measure_lag(
    connection: &mut PgConnection,
    checkpoint: CommitPosition,
    published_high: i64,
) -> Result<Lag, sqlx::Error> {
    let (head, oldest_seconds): (i64, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT coalesce(max(global_position), 0) FROM events),
                (SELECT extract(epoch FROM now() - recorded_at)::float8 FROM events
                  WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
                  ORDER BY transaction_id, global_position LIMIT 1)",
    )
    .bind(checkpoint.transaction_id.to_string())
    .bind(checkpoint.global_position)
    .fetch_one(connection)
    .await?;
    Ok(match oldest_seconds {
        None => Lag { events: 0, oldest_seconds: 0.0 },
        Some(seconds) => Lag { events: (head - published_high).max(1), oldest_seconds: seconds.max(0.0) },
    })
}

async fn record_lag(lead: &mut Leadership) -> Result<(), sqlx::Error> {
    let lag = measure_lag(&mut lead.connection, lead.checkpoint, lead.published_high).await?;
    lead.lag_measured = Some(Instant::now());
    metrics::gauge!("publisher_lag_events").set(lag.events as f64);
    metrics::gauge!("publisher_lag_seconds").set(lag.oldest_seconds);
    Ok(())
}

/// Sleeps until an append is notified, `wait` passes, or shutdown is asked for.
async fn wait_for_events(listener: &mut Option<PgListener>, wait: Duration, shutdown: &mut watch::Receiver<bool>) {
    let notified = async {
        match listener.as_mut() {
            Some(l) => {
                if l.recv().await.is_err() {
                    *listener = None; // reconnect next round; the poll covers the gap
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = notified => {}
        () = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}
