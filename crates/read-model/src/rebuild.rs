//! Rebuilding a read model from the event store while the system keeps serving.
//!
//! 1. A shadow table `<table>_rebuild` is created `LIKE` the live one (columns, constraints,
//!    indexes), so the schema has one source of truth: the migrations.
//! 2. In one REPEATABLE READ snapshot, the aggregate's events are streamed in
//!    `(aggregate_id, sequence)` order, folded with the same `apply` the projector uses, and
//!    written to the shadow in batches. Memory holds one aggregate and one batch, whatever the
//!    size of the store.
//! 3. Catch-up, without any lock: the events committed since the last snapshot are found in a
//!    fresh snapshot, and the aggregates they touch are re-folded from the store into the
//!    shadow, a page of aggregates at a time (memory stays flat however many events arrived).
//!    Repeated until the remaining delta is small.
//! 4. The swap, in one short transaction: the apply lock is taken exclusively (the projector
//!    waits; readers do not), the small delta is re-folded into the shadow, then the live table
//!    is locked with a short `lock_timeout` (readers queue behind that request at most that
//!    long), dropped, and the shadow renamed into its place (with its indexes, constraints,
//!    triggers and grants). On a lock timeout (a long read holds the table) the transaction is rolled
//!    back, and catch-up and swap are tried again. Readers see the old table or the new one.
//!
//! An event that cannot be applied does not abort the rebuild: its aggregate is left at the
//! event before (as the projector parks it), and the event is reported with its position.
//!
//! Interrupted before step 4 commits, nothing live has changed; the next rebuild drops the
//! abandoned shadow first.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};

use crate::projection::{ApplyError, ReadModel, APPLY_LOCK};
use event_store::{reads, CatalogEvent};

/// Rows written to the shadow table per statement.
const WRITE_BATCH: usize = 2000;
/// Aggregates re-folded per catch-up page (their whole histories are in memory at once).
const CATCH_UP_PAGE: i64 = 500;
/// Catch-up stops once fewer events than this wait; they are applied under the lock.
const SWAP_DELTA: i64 = 1000;
/// Catch-up rounds before the swap is tried anyway (under a write rate the catch-up cannot outrun).
const MAX_ROUNDS: u32 = 20;
/// How long readers may queue behind the swap's table lock request.
const TABLE_LOCK_TIMEOUT: &str = "50ms";
/// How long the swap waits for in-flight projector transactions (readers do not wait on this).
const APPLY_LOCK_TIMEOUT: &str = "5s";
/// The swap gives up after this long without getting its locks.
const SWAP_PATIENCE: Duration = Duration::from_secs(600);

/// An event a rebuild or verify could not apply; its aggregate stops at the event before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unappliable {
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    pub event_type: String,
    pub reason: String,
}

impl Unappliable {
    pub fn new(event: &CatalogEvent, error: &ApplyError) -> Self {
        Self {
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            position: event.global_position,
            event_type: event.event_type.clone(),
            reason: error.to_string(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RebuildReport {
    /// Events folded from the snapshot.
    pub events: u64,
    /// Rows written to the shadow table.
    pub rows: u64,
    /// Events committed during the rebuild and folded in before the swap, without a lock.
    pub caught_up: u64,
    /// Catch-up rounds.
    pub rounds: u32,
    /// Aggregates re-folded under the lock at the swap (the small remaining delta).
    pub delta: u64,
    /// Attempts at the swap (more than one: a lock timed out and it was retried).
    pub swap_attempts: u32,
    /// How long the successful swap held the live table locked.
    pub table_lock_held: Duration,
    /// Events that could not be applied (the rebuild went on without them).
    pub unappliable: Vec<Unappliable>,
}

/// How many events a rebuild of `M` will fold (for a progress bar's length).
pub async fn event_count<M: ReadModel>(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(M::AGGREGATE_TYPE)
        .fetch_one(pool)
        .await?;
    Ok(count as u64)
}

/// Folds one aggregate's events, in order. Stops at an event that cannot be applied: the view
/// is the state before it (folded again: the error consumed it), and the event is returned.
pub(crate) fn fold<M: ReadModel>(events: &[CatalogEvent]) -> (Option<M::View>, Option<Unappliable>) {
    let mut state = None;
    for (index, event) in events.iter().enumerate() {
        match M::apply(state.take(), event) {
            Ok(view) => state = Some(view),
            Err(error) => {
                let before = events[..index].iter().try_fold(None, |s, e| M::apply(s, e).map(Some)).ok().flatten();
                return (before, Some(Unappliable::new(event, &error)));
            }
        }
    }
    (state, None)
}

/// Rebuilds `M`'s table; `progress` is called with the number of events folded so far.
pub async fn rebuild<M: ReadModel>(pool: &PgPool, progress: impl Fn(u64)) -> Result<RebuildReport, ApplyError> {
    let shadow = format!("{}_rebuild", M::TABLE);
    let mut writer = pool.acquire().await?;
    sqlx::query(&format!("DROP TABLE IF EXISTS {shadow}")).execute(&mut *writer).await?;
    sqlx::query(&format!("CREATE TABLE {shadow} (LIKE {} INCLUDING ALL)", M::TABLE)).execute(&mut *writer).await?;

    let mut report = RebuildReport::default();
    let mut reader = pool.acquire().await?;
    let mut snapshot_tx = reader.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *snapshot_tx).await?;
    let mut snapshot: String =
        sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&mut *snapshot_tx).await?;
    {
        let mut events = reads::aggregate_type_stream(&mut snapshot_tx, M::AGGREGATE_TYPE);
        // The aggregate being folded; `stuck` once one of its events could not be applied.
        let mut current: Option<(String, Option<M::View>)> = None;
        let mut stuck = false;
        let mut batch: Vec<M::View> = Vec::with_capacity(WRITE_BATCH);
        while let Some(event) = events.try_next().await? {
            let state = match current.take() {
                Some((id, view)) if id == event.aggregate_id => view,
                Some((_, finished)) => {
                    batch.extend(finished);
                    stuck = false;
                    None
                }
                None => None,
            };
            report.events += 1;
            if stuck {
                current = Some((event.aggregate_id.clone(), state));
                continue;
            }
            let state = match M::apply(state, &event) {
                Ok(view) => Some(view),
                Err(error) => {
                    // Rare: the state before it is folded again (the failed apply consumed it).
                    report.unappliable.push(Unappliable::new(&event, &error));
                    stuck = true;
                    let before = reads::aggregate_history(
                        &mut *writer,
                        M::AGGREGATE_TYPE,
                        &event.aggregate_id,
                        0,
                        event.sequence - 1,
                    )
                    .await?;
                    fold::<M>(&before).0
                }
            };
            current = Some((event.aggregate_id.clone(), state));
            if batch.len() >= WRITE_BATCH {
                report.rows += flush::<M>(&mut writer, &shadow, &mut batch).await?;
                progress(report.events);
            }
        }
        batch.extend(current.and_then(|(_, view)| view));
        report.rows += flush::<M>(&mut writer, &shadow, &mut batch).await?;
        progress(report.events);
    }
    snapshot_tx.commit().await?;

    let started = Instant::now();
    loop {
        snapshot = catch_up::<M>(&mut reader, &mut writer, &shadow, snapshot, &mut report).await?;
        report.swap_attempts += 1;
        match swap::<M>(&mut writer, &shadow, &snapshot, &mut report).await {
            Ok(()) => break,
            Err(ApplyError::Database(error)) if is_lock_timeout(&error) && started.elapsed() < SWAP_PATIENCE => {
                let backoff = Duration::from_millis(50 * u64::from(report.swap_attempts.min(20)));
                tokio::time::sleep(backoff).await;
            }
            Err(error) => return Err(error),
        }
    }
    report.unappliable.sort_by_key(|u| u.position);
    report.unappliable.dedup();
    Ok(report)
}

fn is_lock_timeout(error: &sqlx::Error) -> bool {
    // 55P03 lock_not_available: what lock_timeout raises.
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// Folds into the shadow, without any lock, the events committed since `snapshot`, round after
/// round until few remain. Returns the snapshot the shadow is now complete for.
async fn catch_up<M: ReadModel>(
    reader: &mut PgConnection,
    writer: &mut PgConnection,
    shadow: &str,
    mut snapshot: String,
    report: &mut RebuildReport,
) -> Result<String, ApplyError> {
    for _ in 0..MAX_ROUNDS {
        let mut tx = reader.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let now: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&mut *tx).await?;
        let pending = reads::count_invisible_in_snapshot(&mut *tx, M::AGGREGATE_TYPE, &snapshot).await?;
        if pending < SWAP_DELTA {
            tx.commit().await?;
            break;
        }
        report.rounds += 1;
        refold_since::<M>(&mut tx, Some(&mut *writer), shadow, &snapshot, report).await?;
        tx.commit().await?;
        report.caught_up += pending as u64;
        snapshot = now;
    }
    Ok(snapshot)
}

/// Re-folds, from what `reader` sees, every aggregate with events `snapshot` could not see, and
/// saves them to `shadow` through `writer` (or `reader` itself), a page of aggregates at a
/// time. Returns how many aggregates.
async fn refold_since<M: ReadModel>(
    reader: &mut PgConnection,
    mut writer: Option<&mut PgConnection>,
    shadow: &str,
    snapshot: &str,
    report: &mut RebuildReport,
) -> Result<u64, ApplyError> {
    let mut after = String::new();
    let mut aggregates = 0;
    loop {
        let ids =
            reads::aggregates_invisible_in_snapshot(&mut *reader, M::AGGREGATE_TYPE, snapshot, &after, CATCH_UP_PAGE)
                .await?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        aggregates += ids.len() as u64;
        let events = reads::histories(&mut *reader, M::AGGREGATE_TYPE, &ids).await?;
        let mut batch = Vec::with_capacity(ids.len());
        for chunk in events.chunk_by(|a, b| a.aggregate_id == b.aggregate_id) {
            let (view, failed) = fold::<M>(chunk);
            batch.extend(view);
            report.unappliable.extend(failed);
        }
        match writer.as_deref_mut() {
            Some(writer) => flush::<M>(writer, shadow, &mut batch).await?,
            None => flush::<M>(reader, shadow, &mut batch).await?,
        };
    }
    Ok(aggregates)
}

async fn flush<M: ReadModel>(
    writer: &mut PgConnection,
    shadow: &str,
    batch: &mut Vec<M::View>,
) -> Result<u64, sqlx::Error> {
    if batch.is_empty() {
        return Ok(0);
    }
    let rows: Vec<&M::View> = batch.iter().collect();
    M::save(writer, shadow, &rows).await?;
    let written = batch.iter().map(M::rows).sum();
    batch.clear();
    Ok(written)
}

/// Takes the locks, folds the last delta in, and swaps the shadow in, in one transaction.
async fn swap<M: ReadModel>(
    connection: &mut PgConnection,
    shadow: &str,
    snapshot: &str,
    report: &mut RebuildReport,
) -> Result<(), ApplyError> {
    let table = M::TABLE;
    let mut tx = connection.begin().await?;
    // Waits for in-flight applies to commit, and holds new ones off until the swap commits.
    sqlx::query(&format!("SET LOCAL lock_timeout = '{APPLY_LOCK_TIMEOUT}'")).execute(&mut *tx).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(APPLY_LOCK).execute(&mut *tx).await?;
    let mut delta = RebuildReport::default();
    report.delta = refold_since::<M>(&mut tx, None, shadow, snapshot, &mut delta).await?;

    // Readers queue behind this request: keep the wait short, and retry rather than block them.
    sqlx::query(&format!("SET LOCAL lock_timeout = '{TABLE_LOCK_TIMEOUT}'")).execute(&mut *tx).await?;
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
    let locked = Instant::now();
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await?;
    // `LIKE` copies no privileges: the roles that may use the live table (catalog_query,
    // catalog_projector) are granted the same on its successor.
    let grants: Vec<String> = sqlx::query_scalar(
        "SELECT format('GRANT %s ON %I TO %I', a.privilege_type, c.relname, r.rolname) \
         FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee \
         WHERE c.oid = $1::regclass AND a.grantee <> c.relowner",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(&format!("DROP TABLE {table}")).execute(&mut *tx).await?;
    sqlx::query(&format!("ALTER TABLE {shadow} RENAME TO {table}")).execute(&mut *tx).await?;
    // `LIKE` named the shadow's objects `<shadow>_...`; give them back the live names.
    let constraints: Vec<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint WHERE conrelid = $1::regclass AND conname LIKE $2 || '%'",
    )
    .bind(table)
    .bind(shadow)
    .fetch_all(&mut *tx)
    .await?;
    for name in constraints {
        let renamed = name.replacen(shadow, table, 1);
        sqlx::query(&format!("ALTER TABLE {table} RENAME CONSTRAINT {name} TO {renamed}")).execute(&mut *tx).await?;
    }
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = $1 AND indexname LIKE $2 || '%'")
            .bind(table)
            .bind(shadow)
            .fetch_all(&mut *tx)
            .await?;
    for name in indexes {
        let renamed = name.replacen(shadow, table, 1);
        sqlx::query(&format!("ALTER INDEX {name} RENAME TO {renamed}")).execute(&mut *tx).await?;
    }
    for statement in triggers.iter().chain(&grants) {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    // Rows changed wholesale: caches keyed on this table must start over.
    sqlx::query("SELECT pg_notify('catalog_read_model_changed', $1 || ' * 0')").bind(table).execute(&mut *tx).await?;
    tx.commit().await?;
    report.table_lock_held = locked.elapsed();
    report.unappliable.extend(delta.unappliable);
    Ok(())
}
