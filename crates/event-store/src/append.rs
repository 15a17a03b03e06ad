//! Appending: runs commands against aggregates and stores their events.
//!
//! A command is two round trips to Postgres: one statement loads the aggregate (its snapshot
//! and the events after it, read in one snapshot of the database), and one statement appends
//! the command's events together with the snapshot they complete, if any (a single statement
//! is its own transaction, so events and snapshot commit together or not at all). The rows are
//! exactly what postgres-es writes, so everything that reads the store (and postgres-es
//! itself) reads them as before; the aggregate's rules come from cqrs-es (`Aggregate::handle`
//! and `apply`). The API answers with the aggregate's new version (`ETag`).
//!
//! Optimistic-lock conflicts (the `events` primary key, SQLSTATE 23505) are retried a bounded
//! number of times when the client did not pin a version; with `If-Match` a conflict means the
//! precondition no longer holds.
//!
//! Aggregates are loaded from a snapshot plus the events after it (written in the same
//! statement as the events that complete them), so a long-lived product costs the same to
//! change as a new one. Snapshots are a cache of the fold: one that no longer deserialises (the
//! aggregate's fields changed) is ignored and replaced, and the events stay the only source of
//! truth (see the snapshots migration). A snapshot always covers every event of the command that
//! completes it, and its `last_sequence` is the last of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, AggregateError, DomainEvent};
use sqlx::PgPool;

/// Attempts for a command that keeps losing the optimistic-lock race, before answering 409.
const MAX_ATTEMPTS: u32 = 5;

/// Events between two snapshots of an aggregate: a load replays at most this many.
pub const DEFAULT_SNAPSHOT_EVERY: usize = 20;

#[derive(Clone)]
pub struct CommandBus {
    pool: PgPool,
    /// 0: no snapshots, every load replays the whole stream.
    snapshot_every: usize,
    wakeup: Arc<Wakeup>,
}

/// Wakes the publisher (`NOTIFY catalog_events_appended`) after appends, from outside the
/// append transactions: a notifying transaction holds a cluster-wide lock until its commit is
/// flushed, which would keep concurrent appends from sharing a flush (see migration
/// `..._deferred_append_wakeup`). The appends of concurrent commands are announced by one
/// notification, sent after all of them committed and without waiting for a flush of its own.
/// The publisher also polls, so a lost wake-up only delays it.
#[derive(Default)]
struct Wakeup {
    pending: tokio::sync::Notify,
    started: AtomicBool,
}

/// One notification in its own transaction, committed without waiting for the WAL flush: it
/// changes no data, and a wake-up lost with a crash is covered by the publisher's polling.
const WAKE_PUBLISHER: &str =
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify('catalog_events_appended', '')";

impl Wakeup {
    /// Asks for a notification after the append that just committed. Requests that arrive
    /// while one is being sent are answered by a single next one.
    fn after_commit(self: &Arc<Self>, pool: &PgPool) {
        self.pending.notify_one();
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(wake_publisher(Arc::downgrade(self), pool.clone()));
        }
    }
}

/// Sends the notifications `wakeup` asks for, until its command bus is gone.
async fn wake_publisher(wakeup: Weak<Wakeup>, pool: PgPool) {
    loop {
        let Some(wakeup) = wakeup.upgrade() else { return };
        let asked = tokio::time::timeout(Duration::from_secs(1), wakeup.pending.notified()).await.is_ok();
        drop(wakeup);
        if asked {
            if let Err(error) = sqlx::query(WAKE_PUBLISHER).execute(&pool).await {
                tracing::debug!(%error, "could not wake the publisher; it will poll");
            }
        }
    }
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused it.
    #[error("{0}")]
    Rejected(E),
    /// Another writer committed first (after all retries, or at once when a version was pinned).
    #[error("another writer changed the aggregate concurrently")]
    Conflict,
    /// The event store could not be reached or failed.
    #[error("event store: {0}")]
    Store(AggregateError<E>),
}

/// Event metadata: who asked, under which request, inside which trace. Stored with every event
/// of the command; the `traceparent` lets the publisher and projector continue the same trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMetadata {
    /// The user id, or the name of the tool that acted (`catalogctl`).
    pub actor: String,
    pub request_id: Option<String>,
    /// W3C trace context of the span the command ran in.
    pub traceparent: Option<String>,
}

impl EventMetadata {
    pub fn new(actor: impl Into<String>) -> Self {
        Self { actor: actor.into(), ..Self::default() }
    }

    fn into_map(self) -> HashMap<String, String> {
        let mut map = HashMap::from([("actor".to_owned(), self.actor)]);
        if let Some(id) = self.request_id {
            map.insert("request_id".into(), id);
        }
        if let Some(traceparent) = self.traceparent {
            map.insert("traceparent".into(), traceparent);
        }
        map
    }
}

/// An aggregate as loaded: its state, the sequence of its last event, and the number of the
/// readable snapshot it was loaded from (`None`: no snapshot, or one that no longer reads).
struct Loaded<A> {
    aggregate: A,
    sequence: u64,
    snapshot: Option<i64>,
}

/// The aggregate's snapshot (a row with no event type) and then its events after it, in order.
/// `$3` false ignores snapshots (replays the whole stream).
const LOAD: &str = "
WITH snapshot AS (
    SELECT last_sequence, current_snapshot, payload FROM snapshots
     WHERE $3 AND aggregate_type = $1 AND aggregate_id = $2
)
SELECT * FROM (
    SELECT NULL::text AS event_type, NULL::text AS event_version, last_sequence AS sequence,
           current_snapshot, payload::text AS payload
      FROM snapshot
    UNION ALL
    SELECT event_type, event_version, sequence, NULL, payload::text
      FROM events
     WHERE aggregate_type = $1 AND aggregate_id = $2
       AND sequence > coalesce((SELECT last_sequence FROM snapshot), 0)
) stream
ORDER BY event_type IS NOT NULL, sequence";

/// Inserts a command's events, in order: `unnest` keeps the arrays' order, so `global_position`
/// follows the sequences. Every event of a command carries the same metadata. The statement
/// tells the `events` trigger that the publisher is woken after the commit ([`Wakeup`]).
macro_rules! insert_events {
    () => {
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload::json, $7::json
  FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[]) AS e (sequence, event_type, event_version, payload),
       (SELECT set_config('catalog.append_wakeup', 'deferred', true)) AS wakeup"
    };
}

/// The command's events alone (`insert_events!`).
const APPEND: &str = insert_events!();

/// The events and the aggregate's first (readable) snapshot; the snapshots trigger replaces an
/// unreadable one.
const APPEND_AND_INSERT_SNAPSHOT: &str = concat!(
    "WITH appended AS (",
    insert_events!(),
    ")
INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
VALUES ($1, $2, $8, $9, $10::json)"
);

/// The events and the snapshot moved on from the one loaded (`$9 - 1`). If that one is gone,
/// the snapshots trigger fails the statement with 23505 (a conflict), so nothing is stored.
const APPEND_AND_UPDATE_SNAPSHOT: &str = concat!(
    "WITH appended AS (",
    insert_events!(),
    ")
UPDATE snapshots SET last_sequence = $8, current_snapshot = $9, payload = $10::json
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND current_snapshot = $9 - 1"
);

impl CommandBus {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, snapshot_every: DEFAULT_SNAPSHOT_EVERY, wakeup: Arc::default() }
    }

    /// Snapshot every `events` events (0: never).
    pub fn with_snapshot_every(self, events: usize) -> Self {
        Self { snapshot_every: events, ..self }
    }

    /// Handles `make_command()` on aggregate `id` and returns the aggregate's version after the
    /// commit (`None` if the command produced no event). `retry_conflicts` is false when the
    /// command itself pins the version it expects.
    pub async fn execute<A>(
        &self,
        id: &str,
        make_command: impl Fn() -> A::Command,
        metadata: EventMetadata,
        retry_conflicts: bool,
    ) -> Result<Option<u64>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
    {
        let metadata = serde_json::to_string(&metadata.into_map()).expect("a map of strings serialises");
        let mut attempt = 1;
        loop {
            match self.execute_once::<A>(id, make_command(), &metadata).await {
                Err(CommandError::Conflict) if retry_conflicts && attempt < MAX_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Aggregate `id` as its stored events (upcast) fold it, read from its snapshot and the
    /// events after it; `Default` if it has none.
    pub async fn load<A>(&self, id: &str) -> Result<A, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
    {
        Ok(self.load_stream::<A>(id).await?.aggregate)
    }

    async fn load_stream<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, AggregateError<A::Error>> {
        let snapshots = self.snapshot_every > 0;
        match self.load_from::<A>(id, snapshots).await? {
            Some(loaded) => Ok(loaded),
            // The snapshot no longer reads: replay the whole stream; the next snapshot replaces it.
            None => Ok(self.load_from::<A>(id, false).await?.expect("no snapshot was read")),
        }
    }

    /// `None` when the snapshot does not deserialise.
    async fn load_from<A: Aggregate>(
        &self,
        id: &str,
        snapshots: bool,
    ) -> Result<Option<Loaded<A>>, AggregateError<A::Error>> {
        type Row = (Option<String>, Option<String>, i64, Option<i64>, String);
        let rows: Vec<Row> = sqlx::query_as(LOAD)
            .bind(A::TYPE)
            .bind(id)
            .bind(snapshots)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let mut loaded = Loaded { aggregate: A::default(), sequence: 0, snapshot: None };
        for (event_type, event_version, sequence, current_snapshot, payload) in rows {
            let (Some(event_type), Some(event_version)) = (event_type, event_version) else {
                match serde_json::from_str::<A>(&payload) {
                    Ok(aggregate) => loaded.aggregate = aggregate,
                    Err(_) => return Ok(None),
                }
                loaded.snapshot = current_snapshot;
                loaded.sequence = sequence as u64;
                continue;
            };
            let event = decode_event::<A>(id, sequence, event_type, event_version, &payload)
                .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
            loaded.aggregate.apply(event);
            loaded.sequence = sequence as u64;
        }
        Ok(Some(loaded))
    }

    async fn execute_once<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &str,
    ) -> Result<Option<u64>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
    {
        let Loaded { mut aggregate, sequence, snapshot } =
            self.load_stream::<A>(id).await.map_err(CommandError::Store)?;
        // The aggregate applies the events it decides (cqrs-es' sink), so afterwards it is
        // the state the snapshot, if one is due, records.
        let sink = EventSink::default();
        aggregate.handle(command, &(), &sink).await.map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(None);
        }
        let last = sequence + events.len() as u64;
        let mut columns: (Vec<i64>, Vec<String>, Vec<String>, Vec<String>) = Default::default();
        for (event, sequence) in events.iter().zip(sequence + 1..) {
            columns.0.push(sequence as i64);
            columns.1.push(event.event_type());
            columns.2.push(event.event_version());
            columns.3.push(
                serde_json::to_string(event)
                    .map_err(|e| CommandError::Store(AggregateError::UnexpectedError(e.into())))?,
            );
        }
        let every = self.snapshot_every as u64;
        let snapshot_due = every > 0 && last / every > sequence / every;
        let statement = match (snapshot_due, snapshot) {
            (false, _) => APPEND,
            (true, None) => APPEND_AND_INSERT_SNAPSHOT,
            (true, Some(_)) => APPEND_AND_UPDATE_SNAPSHOT,
        };
        let mut query = sqlx::query(statement)
            .bind(A::TYPE)
            .bind(id)
            .bind(&columns.0)
            .bind(&columns.1)
            .bind(&columns.2)
            .bind(&columns.3)
            .bind(metadata);
        if snapshot_due {
            let payload = serde_json::to_string(&aggregate)
                .map_err(|e| CommandError::Store(AggregateError::UnexpectedError(e.into())))?;
            query = query.bind(last as i64).bind(snapshot.map_or(1, |current| current + 1)).bind(payload);
        }
        // A snapshot update that matches no row (the one loaded is gone) cannot commit: the
        // snapshots trigger fails the statement as a conflict, so the events are not stored.
        query.execute(&self.pool).await.map_err(|e| match store_error(e) {
            AggregateError::AggregateConflict => CommandError::Conflict,
            other => CommandError::Store(other),
        })?;
        self.wakeup.after_commit(&self.pool);
        for event in &events {
            metrics::counter!("events_appended_total", "aggregate_type" => A::TYPE, "event_type" => event.event_type())
                .increment(1);
        }
        Ok(Some(last))
    }
}

/// A stored event in today's shape: read straight from its JSON unless an upcaster applies.
fn decode_event<A: Aggregate>(
    id: &str,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: &str,
) -> Result<A::Event, serde_json::Error> {
    if !crate::upcasting::needs_upcast(&event_type, &event_version) {
        return serde_json::from_str(payload);
    }
    let stored = SerializedEvent::new(
        id.to_owned(),
        sequence as usize,
        A::TYPE.to_owned(),
        event_type,
        event_version,
        serde_json::from_str(payload)?,
        serde_json::Value::Null,
    );
    serde_json::from_value(crate::upcasting::upcast(stored).payload)
}

/// What a failed statement means to cqrs-es callers: a unique violation (SQLSTATE 23505, the
/// events' primary key or the snapshots trigger) is a conflict, a broken connection a
/// connection error, anything else (a catalog rule among them) the `sqlx::Error` itself.
fn store_error<E: std::error::Error>(error: sqlx::Error) -> AggregateError<E> {
    match &error {
        sqlx::Error::Database(database) if database.code().as_deref() == Some("23505") => {
            AggregateError::AggregateConflict
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => AggregateError::DatabaseConnectionError(Box::new(error)),
        _ => AggregateError::UnexpectedError(Box::new(error)),
    }
}

/// Jittered exponential backoff from 5 ms, so writers that collided once do not collide again
/// in lockstep.
fn conflict_backoff(attempt: u32) -> Duration {
    service_runtime::retry::delay(attempt, Duration::from_millis(5), Duration::from_millis(320))
}
