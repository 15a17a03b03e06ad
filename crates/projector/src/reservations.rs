//! The reservations process manager (`--role reservations`): drives each reservation's saga.
//!
//! It consumes `catalog.events` in a consumer group of its own and, for every reservation an
//! event names, *reconciles* it: loads the Reservation aggregate from the event store, asks it
//! for its next step ([`Reservation::next_step`]) and takes it through the [`CommandBus`]
//! (hold a product's units, record the outcome, release or commit every hold), until the saga
//! waits or is over. Offsets are committed after the reconciles of a batch finished.
//!
//! Why this converges whatever happens:
//! - The saga's progress is the reservation's own events; the step is recomputed from them each
//!   time, never remembered in memory. A kill -9 between two commands leaves a step that the
//!   next reconcile (the redelivered message, or the sweep) takes again.
//! - Every product step is idempotent per reservation id: a repeated reserve is a no-op, a
//!   release of what was never held is recorded (so a late reserve from a second instance is
//!   refused), a repeated release or commit is a no-op. Two instances at once collide only on
//!   the event store's optimistic lock, which one of them retries.
//! - `reservation_sagas` holds when each unsettled saga is due next (its hold's deadline, or
//!   a retry while a step is running). A sweep every second reconciles what is due, so an
//!   expiry fires within a couple of seconds of the deadline, also after a restart that
//!   spanned it, and a saga whose step failed is picked up again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::reservation::SagaStep;
use domain::{Product, ProductCommand, ProductError, Reservation, ReservationCommand, ReservationStatus};
use event_store::{CommandBus, CommandError, EventMetadata};
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use service_runtime::retry::outage_backoff;
use service_runtime::telemetry;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use crate::message;

/// Who the process manager's commands are recorded as.
const ACTOR: &str = "reservations";
/// Messages taken per round at most.
const MAX_BATCH: usize = 500;
/// Steps one reconcile takes at most before it leaves the rest to the sweep (a reservation of
/// 50 items takes about 100).
const MAX_STEPS: usize = 200;
/// When a saga whose step is running is looked at again if nothing else moves it on.
const RETRY_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// How often the sweep looks for due sagas.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct ProcessManager {
    pool: PgPool,
    commands: CommandBus,
    consumer: StreamConsumer,
    /// Reservations reconciled at once.
    concurrency: usize,
}

/// A step the event store could not take now (unreachable, or still losing the race after the
/// bus's own retries): the saga stays due and is retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StepFailed(String);

impl ProcessManager {
    pub fn new(pool: PgPool, commands: CommandBus, consumer: StreamConsumer, concurrency: usize) -> Self {
        Self { pool, commands, consumer, concurrency: concurrency.max(1) }
    }

    /// Consumes and sweeps until `shutdown` turns true. The sweep runs beside the consumer, so
    /// a long batch never holds an expiry back.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        tokio::join!(self.consume(shutdown.clone()), self.sweep_every_second(shutdown));
        self.consumer.unsubscribe();
        tracing::info!("reservations process manager stopped");
    }

    async fn sweep_every_second(&self, mut shutdown: watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    async fn consume(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => return,
                received = self.consumer.recv() => received.map(|m| m.detach()),
            };
            let first = match first {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "reservations consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message.detach()),
                    Some(Err(error)) => tracing::warn!(%error, "reservations consumer error"),
                    None => break,
                }
            }
            self.process(batch, &shutdown).await;
        }
    }

    /// Reconciles every reservation the batch names, then commits the batch's offsets. A
    /// reconcile that fails after its saga is recorded in `reservation_sagas` is the sweep's to
    /// finish; one that failed before (Postgres unreachable) is retried here, with backoff,
    /// before the offsets move on: otherwise the saga would be known nowhere.
    async fn process(&self, batch: Vec<OwnedMessage>, shutdown: &watch::Receiver<bool>) {
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut due: HashMap<Uuid, Option<String>> = HashMap::new();
        for message in &batch {
            next_offsets.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
            // The headers and the key (the aggregate id) say all that is needed: the saga reads
            // the reservation itself from the event store. A message that is not readable is the
            // projector's to dead-letter, not ours.
            if header(message, message::AGGREGATE_TYPE).as_deref() != Some("Reservation") {
                continue;
            }
            if let Some(id) = message.key().and_then(|key| std::str::from_utf8(key).ok()?.parse().ok()) {
                due.insert(id, header(message, message::TRACEPARENT));
            }
        }
        let mut unrecorded = self.reconcile_all(due.into_iter().collect()).await;
        let mut failures = 0;
        while !unrecorded.is_empty() {
            if *shutdown.borrow() {
                return; // uncommitted: redelivered to whoever consumes next
            }
            failures += 1;
            tokio::time::sleep(outage_backoff(failures)).await;
            unrecorded = self.reconcile_all(unrecorded).await;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &next_offsets {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            // Not fatal: a redelivered message reconciles a saga that has nothing left to do.
            tracing::warn!(%error, "reservations offset commit failed");
        }
    }

    /// Reconciles the sagas that are due (deadline passed, or a step to retry).
    async fn sweep(&self) {
        let due: Result<Vec<Uuid>, sqlx::Error> =
            sqlx::query_scalar("SELECT id FROM reservation_sagas WHERE due_at <= now() ORDER BY due_at LIMIT $1")
                .bind((self.concurrency * 8) as i64)
                .fetch_all(&self.pool)
                .await;
        match due {
            Ok(ids) if !ids.is_empty() => {
                // Their rows stay due: whatever fails now is swept again.
                let _ = self.reconcile_all(ids.into_iter().map(|id| (id, None)).collect()).await;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read due reservation sagas"),
        }
    }

    /// Reconciles `sagas` concurrently; returns those that failed before their saga row was
    /// written (the only ones nothing would retry).
    async fn reconcile_all(&self, sagas: Vec<(Uuid, Option<String>)>) -> Vec<(Uuid, Option<String>)> {
        futures::stream::iter(sagas)
            .map(|(id, traceparent)| async move {
                let span = tracing::info_span!(
                    parent: None,
                    "reservation_saga",
                    reservation_id = %id,
                    trace_id = tracing::field::Empty,
                );
                telemetry::continue_trace(&span, traceparent.as_deref());
                let mut recorded = false;
                match self.reconcile(id, &mut recorded).instrument(span).await {
                    Ok(()) => None,
                    Err(error) => {
                        tracing::warn!(reservation_id = %id, %error, recorded, "reservation saga step failed; retrying");
                        (!recorded).then_some((id, traceparent))
                    }
                }
            })
            .buffer_unordered(self.concurrency)
            .filter_map(|failed| async move { failed })
            .collect()
            .await
    }

    /// Takes `id`'s saga as far as it can go now. Every step is safe to repeat. `recorded`
    /// turns true once the saga's row holds its progress.
    async fn reconcile(&self, id: Uuid, recorded: &mut bool) -> Result<(), StepFailed> {
        let key = id.to_string();
        let mut conflicts = 0;
        for _ in 0..MAX_STEPS {
            let reservation = self.commands.load::<Reservation>(&key).await.map_err(failed)?;
            if reservation.id.is_none() {
                return Ok(()); // not committed as far as this read sees; its message comes again
            }
            let now = Utc::now();
            let step = reservation.next_step(now);
            self.record_progress(id, &reservation, &step).await?;
            *recorded = true;
            let started = Instant::now();
            let name = match &step {
                SagaStep::Done | SagaStep::WaitUntil(_) => return Ok(()),
                SagaStep::Expire => {
                    if self.reservation(id, ReservationCommand::Expire { now }).await?.is_some() {
                        metrics::counter!("reservation_holds_expired_total").increment(1);
                        metrics::counter!("reservations_total", "outcome" => "expired").increment(1);
                    }
                    "expire"
                }
                SagaStep::Reserve { product_id, quantity } => {
                    let command = || ProductCommand::ReserveStock { reservation_id: id, quantity: *quantity };
                    match self.product(*product_id, command).await {
                        Ok(()) => {
                            let recorded =
                                self.reservation(id, ReservationCommand::RecordHold { product_id: *product_id });
                            if recorded.await?.is_some() && is_last_hold(&reservation, *product_id) {
                                metrics::counter!("reservations_total", "outcome" => "held").increment(1);
                            }
                        }
                        Err(Refusal::Refused(reason)) => {
                            let reason = format!("product {product_id}: {reason}");
                            let command = ReservationCommand::RecordRefusal { product_id: *product_id, reason };
                            if self.reservation(id, command).await?.is_some() {
                                metrics::counter!("reservations_total", "outcome" => "rejected").increment(1);
                            }
                        }
                        // Released meanwhile (cancelled, expired): the next load shows it.
                        Err(Refusal::Settled) => {}
                        Err(Refusal::Conflict) => {
                            conflicts += 1;
                            tokio::time::sleep(outage_backoff(conflicts.min(6))).await;
                        }
                        Err(Refusal::Failed(error)) => return Err(error),
                    }
                    "reserve"
                }
                SagaStep::Release(products) => {
                    for product_id in products {
                        self.settle(*product_id, || ProductCommand::ReleaseStock { reservation_id: id }).await?;
                    }
                    self.reservation(id, ReservationCommand::RecordReleased).await?;
                    "release"
                }
                SagaStep::Commit(products) => {
                    for product_id in products {
                        self.settle(*product_id, || ProductCommand::CommitStock { reservation_id: id }).await?;
                    }
                    self.reservation(id, ReservationCommand::RecordCommitted).await?;
                    "commit"
                }
            };
            metrics::histogram!("reservation_saga_step_duration_seconds", "step" => name)
                .record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Upserts when the saga is next due: never while it waits for its deadline, soon while a
    /// step is running (so a crash mid-step is retried by the sweep), never again once done.
    async fn record_progress(&self, id: Uuid, reservation: &Reservation, step: &SagaStep) -> Result<(), StepFailed> {
        let due = match step {
            SagaStep::Done => None,
            SagaStep::WaitUntil(deadline) => Some(*deadline),
            _ => Some(Utc::now() + RETRY_AFTER),
        };
        sqlx::query(
            "INSERT INTO reservation_sagas (id, due_at, started_at, updated_at, version)
             VALUES ($1, $2, now(), now(), $3)
             ON CONFLICT (id) DO UPDATE SET due_at = EXCLUDED.due_at, updated_at = now(), version = EXCLUDED.version
              WHERE reservation_sagas.version <= EXCLUDED.version",
        )
        .bind(id)
        .bind(due)
        .bind(reservation.version as i64)
        .execute(&self.pool)
        .await
        .map_err(|e| StepFailed(format!("saving saga progress: {e}")))?;
        Ok(())
    }

    /// Runs a reservation command; `Some(version)` if it recorded events. A command the
    /// reservation refuses (it moved on meanwhile) is not a failure: the next load shows why.
    async fn reservation(&self, id: Uuid, command: ReservationCommand) -> Result<Option<u64>, StepFailed> {
        let key = id.to_string();
        match self.commands.execute::<Reservation>(&key, || command.clone(), metadata(), true).await {
            Ok(version) => Ok(version),
            Err(CommandError::Rejected(error)) => {
                tracing::debug!(%error, "reservation step refused; reloading");
                Ok(None)
            }
            Err(CommandError::Conflict) => Ok(None),
            Err(CommandError::Store(error)) => Err(StepFailed(error.to_string())),
        }
    }

    async fn product(&self, id: Uuid, command: impl Fn() -> ProductCommand) -> Result<(), Refusal> {
        match self.commands.execute::<Product>(&id.to_string(), command, metadata(), true).await {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(ProductError::ReservationSettled(_))) => Err(Refusal::Settled),
            // A product a shopper may not see is "not found" to them, as on the read API.
            Err(CommandError::Rejected(ProductError::NotForSale(_) | ProductError::Deleted)) => {
                Err(Refusal::Refused(ProductError::NotFound.to_string()))
            }
            Err(CommandError::Rejected(error)) => Err(Refusal::Refused(error.to_string())),
            Err(CommandError::Conflict) => Err(Refusal::Conflict),
            Err(CommandError::Store(error)) => Err(Refusal::Failed(StepFailed(error.to_string()))),
        }
    }

    /// A release or commit on one product, retried while it loses the race. A product that
    /// never existed holds nothing to settle.
    async fn settle(&self, id: Uuid, command: impl Fn() -> ProductCommand + Copy) -> Result<(), StepFailed> {
        let mut conflicts = 0;
        loop {
            match self.product(id, command).await {
                Ok(()) | Err(Refusal::Settled) => return Ok(()),
                Err(Refusal::Refused(reason)) => {
                    tracing::debug!(product_id = %id, %reason, "nothing to settle on this product");
                    return Ok(());
                }
                Err(Refusal::Conflict) if conflicts < 20 => {
                    conflicts += 1;
                    tokio::time::sleep(outage_backoff(conflicts.min(6))).await;
                }
                Err(Refusal::Conflict) => return Err(StepFailed(format!("product {id} kept changing"))),
                Err(Refusal::Failed(error)) => return Err(error),
            }
        }
    }
}

/// How a product step did not happen.
enum Refusal {
    /// The product refuses for good (not enough available, unknown or deleted product).
    Refused(String),
    /// The reservation is already settled on the product.
    Settled,
    Conflict,
    Failed(StepFailed),
}

/// Whether holding `product_id` completes `reservation` (as loaded before the hold).
fn is_last_hold(reservation: &Reservation, product_id: Uuid) -> bool {
    reservation.status == ReservationStatus::Pending
        && reservation
            .items
            .iter()
            .filter(|item| item.state == domain::reservation::ItemState::Pending)
            .all(|item| item.product_id == product_id)
}

fn metadata() -> EventMetadata {
    EventMetadata { traceparent: telemetry::current_traceparent(), ..EventMetadata::new(ACTOR) }
}

fn failed(error: impl std::fmt::Display) -> StepFailed {
    StepFailed(error.to_string())
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}
