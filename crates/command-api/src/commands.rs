//! Runs commands against aggregates in the Postgres event store.
//!
//! Each call builds a `CqrsFramework` over `postgres-es` (cheap: a pool handle and the
//! upcasters) with one extra query that observes the committed envelopes, because the API must
//! answer with the aggregate's new version (`ETag`) and the framework itself returns nothing.
//! Optimistic-lock conflicts are retried a bounded number of times when the client did not pin
//! a version; with `If-Match` a conflict means the precondition no longer holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventEnvelope, Query};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

use crate::extract::RequestContext;

/// Attempts for a command that keeps losing the optimistic-lock race, before answering 409.
const MAX_ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct CommandBus {
    pool: PgPool,
}

/// Why a command did not commit.
#[derive(Debug)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused it.
    Rejected(E),
    /// Another writer committed first (after all retries, or at once when a version was pinned).
    Conflict,
    /// The event store could not be reached or failed.
    Store(AggregateError<E>),
}

/// Event metadata: who asked, under which request, inside which trace. The `traceparent` names
/// the current span (the request's, itself a child of the caller's traceparent if one came), so
/// the publisher and projector continue the same trace.
pub fn metadata(actor: &str, context: &RequestContext) -> HashMap<String, String> {
    let mut metadata = HashMap::from([("actor".to_owned(), actor.to_owned())]);
    if let Some(id) = &context.request_id {
        metadata.insert("request_id".into(), id.clone());
    }
    if let Some(traceparent) = service_runtime::telemetry::current_traceparent() {
        metadata.insert("traceparent".into(), traceparent);
    }
    metadata
}

impl CommandBus {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Handles `make_command()` on aggregate `id` and returns the aggregate's version after the
    /// commit (`None` if the command produced no event). `retry_conflicts` is false when the
    /// command itself pins the version it expects.
    pub async fn execute<A>(
        &self,
        id: &str,
        make_command: impl Fn() -> A::Command,
        metadata: HashMap<String, String>,
        retry_conflicts: bool,
    ) -> Result<Option<u64>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + 'static,
    {
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

    /// Aggregate `id` as its stored events (upcast) fold it; `Default` if it has none.
    pub async fn load<A>(&self, id: &str) -> Result<A, AggregateError<A::Error>>
    where
        A: Aggregate<Services = ()> + 'static,
    {
        use cqrs_es::{AggregateContext, EventStore};
        let mut context = self.store::<A>().load_aggregate(id).await?;
        Ok(std::mem::take(context.aggregate()))
    }

    fn store<A: Aggregate>(&self) -> PersistedEventStore<PostgresEventRepository, A> {
        PersistedEventStore::new_event_store(PostgresEventRepository::new(self.pool.clone()))
            .with_upcasters(domain::upcasting::upcasters())
    }

    async fn execute_once<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Option<u64>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + 'static,
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
        use cqrs_es::DomainEvent;
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
