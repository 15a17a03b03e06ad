//! Appending: runs commands against aggregates and stores their events.
//!
//! Each call builds a `CqrsFramework` over `postgres-es` (cheap: a pool handle and the
//! upcasters) with one extra query that observes the committed envelopes, because the API must
//! answer with the aggregate's new version (`ETag`) and the framework itself returns nothing.
//! Optimistic-lock conflicts are retried a bounded number of times when the client did not pin
//! a version; with `If-Match` a conflict means the precondition no longer holds.
//!
//! Aggregates are loaded from a snapshot plus the events after it (postgres-es snapshots,
//! written in the same transaction as the events that complete them), so a long-lived product
//! costs the same to change as a new one. Snapshots are a cache of the fold: one that no
//! longer deserialises (the aggregate's fields changed) is ignored and replaced, and the
//! events stay the only source of truth (see the snapshots migration and [`SnapshotSafeStore`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore, SerializedEvent};
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, CqrsFramework, DomainEvent, EventEnvelope, EventStore, Query,
};
use postgres_es::PostgresEventRepository;
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

impl CommandBus {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, snapshot_every: DEFAULT_SNAPSHOT_EVERY }
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
        let metadata = metadata.into_map();
        let mut attempt = 1;
        loop {
            match self.execute_once::<A>(id, make_command(), metadata.clone()).await {
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
        let mut context = self.store::<A>().load_aggregate(id).await?;
        Ok(std::mem::take(context.aggregate()))
    }

    fn store<A: Aggregate + Clone>(&self) -> SnapshotSafeStore<A> {
        let repository = PostgresEventRepository::new(self.pool.clone());
        let store = match self.snapshot_every {
            0 => PersistedEventStore::new_event_store(repository),
            every => PersistedEventStore::new_snapshot_store(repository, every),
        };
        SnapshotSafeStore(store.with_upcasters(crate::upcasting::upcasters()))
    }

    async fn execute_once<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Option<u64>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
    {
        let observed = CommittedVersion::default();
        let framework = CqrsFramework::new(self.store::<A>(), vec![Box::new(observed.clone())], ());
        match framework.execute_with_metadata(id, command, metadata).await {
            Ok(()) => Ok(*observed.0.lock().expect("version lock")),
            Err(AggregateError::UserError(e)) => Err(CommandError::Rejected(e)),
            Err(AggregateError::AggregateConflict) => Err(CommandError::Conflict),
            Err(other) => Err(CommandError::Store(other)),
        }
    }
}

/// Appends the first event (version 1) of each of many new aggregates in one statement: what
/// a bulk import needs, where one transaction per aggregate would cap it at the commit rate.
/// Each `(id, event)` must be what the aggregate decided for its create command. The rows are
/// exactly what postgres-es writes, and the `events` triggers (the catalog rules among them)
/// check every row, so the whole batch is refused if any one row breaks a rule or its
/// aggregate exists already; the caller then retries its aggregates one by one.
pub async fn append_first_events<A: Aggregate>(
    pool: &PgPool,
    new: &[(String, A::Event)],
    metadata: EventMetadata,
) -> Result<(), sqlx::Error> {
    let metadata = metadata.into_map();
    let mut columns: [Vec<String>; 6] = Default::default();
    for (id, event) in new {
        let envelope = EventEnvelope::<A> {
            aggregate_id: id.clone(),
            sequence: 1,
            payload: event.clone(),
            metadata: metadata.clone(),
        };
        let row = SerializedEvent::try_from(&envelope).map_err(|e| sqlx::Error::Encode(e.into()))?;
        columns[0].push(row.aggregate_type);
        columns[1].push(row.aggregate_id);
        columns[2].push(row.event_type);
        columns[3].push(row.event_version);
        columns[4].push(row.payload.to_string());
        columns[5].push(row.metadata.to_string());
    }
    let [types, ids, event_types, versions, payloads, metadatas] = columns;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT t, id, 1, e, v, p::json, m::json
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS r (t, id, e, v, p, m)",
    )
    .bind(types)
    .bind(ids)
    .bind(event_types)
    .bind(versions)
    .bind(payloads)
    .bind(metadatas)
    .execute(pool)
    .await?;
    for (_, event) in new {
        metrics::counter!("events_appended_total", "aggregate_type" => A::TYPE, "event_type" => event.event_type())
            .increment(1);
    }
    Ok(())
}

/// The postgres-es store, except that a command's events reach a snapshot once, not twice.
///
/// In cqrs-es 0.5 an aggregate applies each event it emits (`EventSink::write`) to the
/// instance the store loaded, and the snapshot store then applies the command's events to that
/// same instance again to compute the snapshot, so every snapshot would count them twice (a
/// product's version would jump). Here the framework handles the command on a copy, and the
/// store commits with the aggregate exactly as it was loaded.
struct SnapshotSafeStore<A: Aggregate>(PersistedEventStore<PostgresEventRepository, A>);

struct LoadedContext<A: Aggregate> {
    /// As loaded; what the store snapshots from.
    loaded: EventStoreAggregateContext<A>,
    /// What the command runs on (and its events are applied to).
    working: A,
}

impl<A: Aggregate> AggregateContext<A> for LoadedContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.working
    }
}

impl<A: Aggregate + Clone> EventStore<A> for SnapshotSafeStore<A> {
    type AC = LoadedContext<A>;

    async fn load_events(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.0.load_events(aggregate_id).await
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> Result<LoadedContext<A>, AggregateError<A::Error>> {
        let mut loaded = self.0.load_aggregate(aggregate_id).await?;
        let working = loaded.aggregate().clone();
        Ok(LoadedContext { loaded, working })
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: LoadedContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.0.commit(events, context.loaded, metadata).await
    }
}

/// Jittered exponential backoff from 5 ms, so writers that collided once do not collide again
/// in lockstep.
fn conflict_backoff(attempt: u32) -> Duration {
    service_runtime::retry::delay(attempt, Duration::from_millis(5), Duration::from_millis(320))
}

/// A query that records the sequence of the last committed event: the aggregate's new version.
/// It also counts the committed events by type (`events_appended_total`): cqrs-es dispatches
/// queries only after the append transaction committed.
#[derive(Clone, Default)]
struct CommittedVersion(Arc<Mutex<Option<u64>>>);

#[async_trait]
impl<A: Aggregate> Query<A> for CommittedVersion {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<A>]) {
        for envelope in events {
            metrics::counter!(
                "events_appended_total",
                "aggregate_type" => A::TYPE,
                "event_type" => envelope.payload.event_type()
            )
            .increment(1);
        }
        if let Some(last) = events.last() {
            *self.0.lock().expect("version lock") = Some(last.sequence as u64);
        }
    }
}
