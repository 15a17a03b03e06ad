//! Rebuilding a read model from the event store while the system keeps serving.
//!
//! 1. A shadow table `<table>_rebuild` is created `LIKE` the live one (columns, constraints,
//!    indexes), so the schema has one source of truth: the migrations.
//! 2. In one REPEATABLE READ snapshot, the aggregate's events are streamed in
//!    `(aggregate_id, sequence)` order, folded with the same `apply` the projector uses, and
//!    written to the shadow in batches. Memory holds one aggregate and one batch, whatever the
//!    size of the store.
//! 3. One short transaction takes the apply lock exclusively (the projector waits), applies
//!    the events the snapshot could not see, drops the live table, renames the shadow into its
//!    place (with its indexes, constraints, triggers and grants) and commits. Readers see the old table
//!    or the new one, never neither.
//!
//! Interrupted before step 3 commits, nothing live has changed; the next rebuild drops the
//! abandoned shadow first.

use futures::TryStreamExt;
use sqlx::{Connection, PgConnection, PgPool};

use crate::projection::{apply_events, ApplyError, ReadModel, APPLY_LOCK};
use event_store::reads;

/// Rows written to the shadow table per statement.
const WRITE_BATCH: usize = 2000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events folded from the snapshot.
    pub events: u64,
    /// Rows written to the shadow table.
    pub rows: u64,
    /// Events committed during the rebuild, applied at the swap.
    pub caught_up: u64,
}

/// How many events a rebuild of `M` will fold (for a progress bar's length).
pub async fn event_count<M: ReadModel>(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(M::AGGREGATE_TYPE)
        .fetch_one(pool)
        .await?;
    Ok(count as u64)
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
    let snapshot: String =
        sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&mut *snapshot_tx).await?;
    {
        let mut events = reads::aggregate_type_stream(&mut snapshot_tx, M::AGGREGATE_TYPE);
        let mut current: Option<(String, M::View)> = None;
        let mut batch: Vec<M::View> = Vec::with_capacity(WRITE_BATCH);
        while let Some(event) = events.try_next().await? {
            let state = match current.take() {
                Some((id, view)) if id == event.aggregate_id => Some(view),
                Some((_, finished)) => {
                    batch.push(finished);
                    None
                }
                None => None,
            };
            current = Some((event.aggregate_id.clone(), M::apply(state, &event)?));
            report.events += 1;
            if batch.len() >= WRITE_BATCH {
                report.rows += flush::<M>(&mut writer, &shadow, &mut batch).await?;
                progress(report.events);
            }
        }
        batch.extend(current.map(|(_, view)| view));
        report.rows += flush::<M>(&mut writer, &shadow, &mut batch).await?;
        progress(report.events);
    }
    snapshot_tx.commit().await?;

    report.caught_up = swap::<M>(&mut writer, &shadow, &snapshot).await?;
    Ok(report)
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

/// Catches the shadow up and swaps it in, in one transaction. Returns the events caught up.
async fn swap<M: ReadModel>(connection: &mut PgConnection, shadow: &str, snapshot: &str) -> Result<u64, ApplyError> {
    let table = M::TABLE;
    let mut tx = connection.begin().await?;
    // Waits for in-flight applies to commit, and holds new ones off until the swap commits.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(APPLY_LOCK).execute(&mut *tx).await?;
    let missed = reads::invisible_in_snapshot(&mut *tx, M::AGGREGATE_TYPE, snapshot).await?;

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

    let caught_up = missed.len() as u64;
    apply_events(&mut tx, &missed).await?;
    // Rows changed wholesale: caches keyed on this table must start over.
    sqlx::query("SELECT pg_notify('catalog_read_model_changed', $1 || ' * 0')").bind(table).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(caught_up)
}
