//! Applies events to the read models under the version rule, inside the caller's transaction.
//!
//! For each event, with `v` the version of the aggregate's row (0 if it has none):
//! - `sequence <= v`: already applied (a redelivery or a replay): skipped;
//! - `sequence == v + 1`: applied;
//! - `sequence > v + 1`: a gap. The missing events are read from the event store, applied,
//!   and then this one. A gap is never skipped over.
//!
//! Rows are locked (`FOR UPDATE`) while a batch folds them and written back once per batch.

use std::borrow::Borrow;
use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::categories::Categories;
use crate::history::History;
use crate::products::Products;
use crate::reservations::Reservations;
use crate::users::Users;
use event_store::{reads, CatalogEvent};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event cannot be applied however often it is retried (bad payload, impossible
    /// order in the event store itself). Such an event is a dead letter.
    #[error("{0}")]
    Malformed(String),
    /// The read store failed; retrying may succeed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ApplyError {
    /// True for failures of the infrastructure (connection lost, pool exhausted, server
    /// shutting down), which say nothing about the event and must never dead-letter it.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Malformed(_) => false,
            ApplyError::Database(error) => match error {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
                _ => false,
            },
        }
    }
}

/// SQLSTATEs that say the server could not do the work now, not that the work is wrong:
/// connection exceptions (class 08), serialization failures and deadlocks (40001, 40P01),
/// insufficient resources (class 53: too many connections, out of memory, disk full), program
/// limits hit under load (54000), a statement or lock timeout (57014, 55P03), and the server
/// shutting down or restarting (57P01-57P03). Retried for as long as it takes, never dead-lettered.
pub fn is_transient_sqlstate(code: &str) -> bool {
    ["40001", "40P01", "54000", "55P03", "57014", "57P01", "57P02", "57P03"].contains(&code)
        || code.starts_with("08")
        || code.starts_with("53")
}

/// What a batch did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub applied: u64,
    /// Already reflected in the read model.
    pub skipped: u64,
    /// Applied from the event store to fill a gap.
    pub healed: u64,
    /// Of an aggregate type no read model follows.
    pub ignored: u64,
}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, other: Self) {
        self.applied += other.applied;
        self.skipped += other.skipped;
        self.healed += other.healed;
        self.ignored += other.ignored;
    }
}

/// A view's fields by name, as `verify` compares them: its serde form (an object).
pub fn serialized_fields(view: &impl serde::Serialize) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(view) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// One read model: a view type, its pure fold and its storage.
pub trait ReadModel {
    type View: Clone;
    /// The aggregate type whose events this model follows.
    const AGGREGATE_TYPE: &'static str;
    /// The live table.
    const TABLE: &'static str;
    /// The column of `TABLE` holding the aggregate's id (`verify` looks for rows without events).
    const ID_COLUMN: &'static str = "id";

    fn version(view: &Self::View) -> i64;
    /// Rows `save` writes for `view` (for rebuild reports): one, unless a view spans several.
    fn rows(_view: &Self::View) -> u64 {
        1
    }
    fn apply(current: Option<Self::View>, event: &CatalogEvent) -> Result<Self::View, ApplyError>;
    /// The fields `catalogctl verify` compares, by name.
    fn fields(view: &Self::View) -> serde_json::Map<String, serde_json::Value>;
    /// Rows of `ids`, without locking.
    fn load(
        pool: &sqlx::PgPool,
        ids: &[Uuid],
    ) -> impl std::future::Future<Output = Result<HashMap<Uuid, Self::View>, sqlx::Error>> + Send;
    fn load_for_update(
        connection: &mut PgConnection,
        ids: &[Uuid],
    ) -> impl std::future::Future<Output = Result<HashMap<Uuid, Self::View>, sqlx::Error>> + Send;
    /// Upserts `views` into `table` (the live table, or a rebuild's shadow), never lowering a
    /// row's version.
    fn save(
        connection: &mut PgConnection,
        table: &str,
        views: &[&Self::View],
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Held (shared) by every transaction that applies events; `catalogctl rebuild` takes it
/// exclusively for the moment it swaps tables, so no apply straddles the swap.
pub const APPLY_LOCK: i64 = 0x0063_6174_616c_6f67; // "catalog" in ASCII

/// Applies `events` (in the order given; per aggregate that must be sequence order) to every
/// read model. `connection` must be in a transaction, which the caller commits. Owned events or
/// references to them (the projector's batch, which it keeps for a retry, is never cloned).
pub async fn apply_events<E>(connection: &mut PgConnection, events: &[E]) -> Result<Outcome, ApplyError>
where
    E: std::borrow::Borrow<CatalogEvent> + Sync,
{
    let events: Vec<&CatalogEvent> = events.iter().map(Borrow::borrow).collect();
    let events = events.as_slice();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(APPLY_LOCK).execute(&mut *connection).await?;
    let mut outcome = Outcome::default();
    // Products and their history follow the same events: `applied`, `skipped` and `healed` count
    // the products model's view of them, so an event counts once whatever the number of models.
    outcome += apply_to::<Products>(connection, events).await?;
    apply_to::<History>(connection, events).await?;
    outcome += apply_to::<Categories>(connection, events).await?;
    outcome += apply_to::<Users>(connection, events).await?;
    outcome += apply_to::<Reservations>(connection, events).await?;
    let followed =
        [Products::AGGREGATE_TYPE, Categories::AGGREGATE_TYPE, Users::AGGREGATE_TYPE, Reservations::AGGREGATE_TYPE];
    outcome.ignored = events.iter().filter(|e| !followed.contains(&e.aggregate_type.as_str())).count() as u64;
    Ok(outcome)
}

async fn apply_to<M: ReadModel>(
    connection: &mut PgConnection,
    events: &[&CatalogEvent],
) -> Result<Outcome, ApplyError> {
    let mine: Vec<&CatalogEvent> = events.iter().copied().filter(|e| e.aggregate_type == M::AGGREGATE_TYPE).collect();
    let mut outcome = Outcome::default();
    if mine.is_empty() {
        return Ok(outcome);
    }
    let mut ids: Vec<Uuid> = mine.iter().map(|e| aggregate_uuid(e)).collect::<Result<_, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    let mut views = M::load_for_update(connection, &ids).await?;
    let mut changed: Vec<Uuid> = Vec::new();

    for event in mine {
        let id = aggregate_uuid(event)?;
        let version = views.get(&id).map_or(0, M::version);
        if event.sequence <= version {
            outcome.skipped += 1;
            continue;
        }
        let mut current = views.remove(&id);
        if event.sequence > version + 1 {
            let missing = reads::aggregate_history(
                &mut *connection,
                M::AGGREGATE_TYPE,
                &event.aggregate_id,
                version,
                event.sequence - 1,
            )
            .await?;
            if missing.len() as i64 != event.sequence - 1 - version {
                return Err(ApplyError::Malformed(format!(
                    "event {} of {} {} follows version {version}, and the event store does not hold the events between",
                    event.sequence,
                    M::AGGREGATE_TYPE,
                    event.aggregate_id
                )));
            }
            for earlier in &missing {
                current = Some(M::apply(current, earlier)?);
                outcome.healed += 1;
            }
        }
        views.insert(id, M::apply(current, event)?);
        outcome.applied += 1;
        changed.push(id);
    }

    changed.sort_unstable();
    changed.dedup();
    let rows: Vec<&M::View> = changed.iter().filter_map(|id| views.get(id)).collect();
    if !rows.is_empty() {
        M::save(connection, M::TABLE, &rows).await?;
    }
    Ok(outcome)
}

fn aggregate_uuid(event: &CatalogEvent) -> Result<Uuid, ApplyError> {
    event
        .aggregate_id
        .parse()
        .map_err(|_| ApplyError::Malformed(format!("aggregate id {:?} is not a UUID", event.aggregate_id)))
}
