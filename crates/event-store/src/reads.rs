//! Reading the `events` table: the commit-safe tail, one aggregate's stream, position ranges.
//!
//! Commit-safe order: a row's `global_position` comes from a sequence at insert time, so a
//! transaction that took a lower position can commit after one that took a higher. Readers
//! therefore only see rows whose writing transaction is older than every transaction still in
//! flight (`pg_snapshot_xmin(pg_current_snapshot())`) and order them by
//! `(transaction_id, global_position)`. Every row that appears later sorts after the cursor.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::CatalogEvent;

/// The columns of [`StoredRow`], `transaction_id` as a plain number.
const COLUMNS: &str = "event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
                       metadata, global_position, transaction_id::text::bigint AS transaction_id, recorded_at";

/// Where a reader stands in commit order: the last event it has handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitPosition {
    pub transaction_id: i64,
    pub global_position: i64,
}

/// One row of `events` as the pipeline reads it.
#[derive(sqlx::FromRow)]
struct StoredRow {
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Json<Value>,
    metadata: Json<Value>,
    global_position: i64,
    transaction_id: i64,
    recorded_at: DateTime<Utc>,
}

impl StoredRow {
    fn into_event(self) -> (CommitPosition, CatalogEvent) {
        let position = CommitPosition { transaction_id: self.transaction_id, global_position: self.global_position };
        let event = CatalogEvent::from_stored(
            self.event_id,
            self.aggregate_type,
            self.aggregate_id,
            self.sequence,
            self.event_type,
            self.event_version,
            self.payload.0,
            self.metadata.0,
            self.global_position,
            self.recorded_at,
        );
        (position, event)
    }
}

/// Up to `limit` events after `after` in commit order, only from transactions no reader can
/// still see appear "in the past". Also the source of `catalogctl replay` and `rebuild`.
///
/// `ORDER BY` names the table's columns: a bare `transaction_id` there means the output
/// column of that name (the bigint cast), which `events_commit_order` cannot return in order,
/// so Postgres sorted everything after `after` on each call (O(backlog) per batch) instead of
/// reading `limit` rows off the index.
pub async fn committed_after<'e>(
    executor: impl PgExecutor<'e>,
    after: CommitPosition,
    limit: i64,
) -> Result<Vec<(CommitPosition, CatalogEvent)>, sqlx::Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}
           FROM events
          WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
            AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.transaction_id, events.global_position
          LIMIT $3"
    ))
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(StoredRow::into_event).collect())
}

/// Events `after_sequence + 1 ..= up_to_sequence` of one aggregate, in order: what a
/// projection needs to heal a gap.
pub async fn aggregate_history<'e>(
    executor: impl PgExecutor<'e>,
    aggregate_type: &str,
    aggregate_id: &str,
    after_sequence: i64,
    up_to_sequence: i64,
) -> Result<Vec<CatalogEvent>, sqlx::Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence <= $4
          ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(after_sequence)
    .bind(up_to_sequence)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|row| row.into_event().1).collect())
}

/// The highest global position in the store (0 when empty).
pub async fn head_position<'e>(executor: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events").fetch_one(executor).await
}

/// Every event of one aggregate type, streamed in `(aggregate_id, sequence)` order (the
/// primary key's), so a fold needs one aggregate in memory at a time.
pub fn aggregate_type_stream<'c>(
    connection: &'c mut PgConnection,
    aggregate_type: &'static str,
) -> BoxStream<'c, Result<CatalogEvent, sqlx::Error>> {
    static QUERY: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence")
    });
    sqlx::query_as(QUERY.as_str())
        .bind(aggregate_type)
        .fetch(connection)
        .map(|row: Result<StoredRow, sqlx::Error>| row.map(|row| row.into_event().1))
        .boxed()
}

/// The committed events of `aggregate_type` that `snapshot` (a `pg_snapshot` as text) could not
/// see, in per-aggregate order. Transactions older than the snapshot's xmin were all visible
/// to it, so only the index range above it is scanned.
pub async fn invisible_in_snapshot<'e>(
    executor: impl PgExecutor<'e>,
    aggregate_type: &str,
    snapshot: &str,
) -> Result<Vec<CatalogEvent>, sqlx::Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}
           FROM events
          WHERE aggregate_type = $1
            AND transaction_id >= pg_snapshot_xmin($2::text::pg_snapshot)
            AND NOT pg_visible_in_snapshot(transaction_id, $2::text::pg_snapshot)
          ORDER BY aggregate_id, sequence"
    ))
    .bind(aggregate_type)
    .bind(snapshot)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|row| row.into_event().1).collect())
}

/// Every event of the aggregates `aggregate_ids` (of one type), in `(aggregate_id, sequence)`
/// order: what a rebuild's catch-up re-folds.
pub async fn histories<'e>(
    executor: impl PgExecutor<'e>,
    aggregate_type: &str,
    aggregate_ids: &[String],
) -> Result<Vec<CatalogEvent>, sqlx::Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = ANY($2)
          ORDER BY aggregate_id, sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_ids)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|row| row.into_event().1).collect())
}

/// The stored events among `event_ids` (read with today's upcasters), in no particular order.
pub async fn by_event_ids<'e>(
    executor: impl PgExecutor<'e>,
    event_ids: &[Uuid],
) -> Result<Vec<CatalogEvent>, sqlx::Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM events WHERE event_id = ANY($1)"))
        .bind(event_ids)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(|row| row.into_event().1).collect())
}

/// How many events of `aggregate_type` `snapshot` could not see (committed since, as far as the
/// caller's own snapshot shows).
pub async fn count_invisible_in_snapshot<'e>(
    executor: impl PgExecutor<'e>,
    aggregate_type: &str,
    snapshot: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type = $1
            AND transaction_id >= pg_snapshot_xmin($2::text::pg_snapshot)
            AND NOT pg_visible_in_snapshot(transaction_id, $2::text::pg_snapshot)",
    )
    .bind(aggregate_type)
    .bind(snapshot)
    .fetch_one(executor)
    .await
}

/// Up to `limit` ids, above `after_id`, of the aggregates of `aggregate_type` with events that
/// `snapshot` could not see, in id order (a keyset page, so a large delta is walked in
/// bounded pieces).
pub async fn aggregates_invisible_in_snapshot<'e>(
    executor: impl PgExecutor<'e>,
    aggregate_type: &str,
    snapshot: &str,
    after_id: &str,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT aggregate_id FROM events
          WHERE aggregate_type = $1
            AND transaction_id >= pg_snapshot_xmin($2::text::pg_snapshot)
            AND NOT pg_visible_in_snapshot(transaction_id, $2::text::pg_snapshot)
            AND aggregate_id > $3
          ORDER BY aggregate_id LIMIT $4",
    )
    .bind(aggregate_type)
    .bind(snapshot)
    .bind(after_id)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Which events `catalogctl events` and `replay` select. Every part is optional.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from_position: i64,
    pub to_position: Option<i64>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
}

/// Up to `limit` committed events matching `filter` with a position above `after`, in
/// position order (per aggregate, that is sequence order).
pub async fn by_position<'e>(
    executor: impl PgExecutor<'e>,
    filter: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<CatalogEvent>, sqlx::Error> {
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}
           FROM events
          WHERE global_position >= $1 AND global_position > $2
            AND ($3::bigint IS NULL OR global_position <= $3)
            AND ($4::text IS NULL OR aggregate_type = $4)
            AND ($5::text IS NULL OR aggregate_id = $5)
          ORDER BY global_position
          LIMIT $6"
    ))
    .bind(filter.from_position)
    .bind(after)
    .bind(filter.to_position)
    .bind(filter.aggregate_type.as_deref())
    .bind(filter.aggregate_id.as_deref())
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|row| row.into_event().1).collect())
}
