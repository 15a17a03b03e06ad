//! Checking the read models against a fold of the event store.
//!
//! Every aggregate's events are folded with the same `apply` the projector uses and compared,
//! field by field, with its row; rows whose aggregate has no events are differences too. On a
//! live system a row may lag its events (the pipeline is asynchronous) or be ahead of the
//! snapshot; such aggregates are re-checked afresh until `settle` has passed, and only what
//! still differs then is reported.
//!
//! An event that cannot be applied does not abort the check: the fold of its aggregate stops at
//! the event before (where the projector parks it), and the event is reported as a difference
//! of field `event` with its sequence, position and reason.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::projection::{ApplyError, ReadModel};
use crate::rebuild::Unappliable;
use event_store::{reads, CatalogEvent};

/// Aggregates compared per round trip for their rows.
const CHUNK: usize = 1000;

/// One field of one aggregate that differs from the fold of its events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub table: &'static str,
    pub aggregate_id: String,
    /// `row` when the whole row is missing or has no events.
    pub field: String,
    /// From the events (`null` if there are none).
    pub expected: Value,
    /// In the read model (`null` if there is no row).
    pub actual: Value,
}

/// The differences between `M`'s table and its events that persist for `settle`.
pub async fn verify<M: ReadModel>(pool: &PgPool, settle: Duration) -> Result<Vec<Difference>, ApplyError> {
    let mut suspects: Vec<String> = Vec::new();
    let mut reader = pool.acquire().await?;
    let mut snapshot = reader.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *snapshot).await?;
    {
        let mut events = reads::aggregate_type_stream(&mut snapshot, M::AGGREGATE_TYPE);
        // The aggregate being folded (its view, if any event applied), and whether one of its
        // events could not be applied: such an aggregate is always re-checked (and reported).
        let mut current: Option<(String, Option<M::View>)> = None;
        let mut stuck = false;
        let mut folded: Vec<(String, M::View)> = Vec::with_capacity(CHUNK);
        while let Some(event) = events.try_next().await? {
            let state = match current.take() {
                Some((id, view)) if id == event.aggregate_id => view,
                Some((id, finished)) => {
                    folded.extend(finished.map(|view| (id, view)));
                    stuck = false;
                    None
                }
                None => None,
            };
            let state = if stuck {
                None
            } else {
                match M::apply(state, &event) {
                    Ok(view) => Some(view),
                    Err(_) => {
                        // Re-checked (and reported) by `compare_now`, not compared here.
                        stuck = true;
                        suspects.push(event.aggregate_id.clone());
                        None
                    }
                }
            };
            current = Some((event.aggregate_id.clone(), state));
            if folded.len() >= CHUNK {
                suspects.extend(differing::<M>(pool, &folded).await?);
                folded.clear();
            }
        }
        folded.extend(current.and_then(|(id, view)| view.map(|view| (id, view))));
        suspects.extend(differing::<M>(pool, &folded).await?);
    }
    snapshot.commit().await?;

    let orphans: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT {id} FROM {table} t WHERE NOT EXISTS
           (SELECT 1 FROM events e WHERE e.aggregate_type = $1 AND e.aggregate_id = t.{id}::text)",
        table = M::TABLE,
        id = M::ID_COLUMN,
    ))
    .bind(M::AGGREGATE_TYPE)
    .fetch_all(pool)
    .await?;
    suspects.extend(orphans.iter().map(Uuid::to_string));
    suspects.sort_unstable();
    suspects.dedup();

    // Re-check each suspect from scratch until it agrees or `settle` runs out.
    let deadline = Instant::now() + settle;
    loop {
        let mut differences = Vec::new();
        let mut still = Vec::new();
        for id in &suspects {
            let (found, unappliable) = compare_now::<M>(pool, id).await?;
            if !found.is_empty() {
                differences.extend(found);
                still.push(id.clone());
            }
            // Settling does not fix an event; it is reported as it is, without waiting for it.
            differences.extend(unappliable.map(|u| unappliable_difference(M::TABLE, u)));
        }
        if still.is_empty() || Instant::now() >= deadline {
            return Ok(differences);
        }
        suspects = still;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The ids among `folded` whose row differs from their fold.
async fn differing<M: ReadModel>(pool: &PgPool, folded: &[(String, M::View)]) -> Result<Vec<String>, ApplyError> {
    if folded.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = folded.iter().filter_map(|(id, _)| id.parse().ok()).collect();
    let rows: HashMap<Uuid, M::View> = M::load(pool, &ids).await?;
    Ok(folded
        .iter()
        .filter(|(id, expected)| {
            let actual = id.parse().ok().and_then(|id: Uuid| rows.get(&id));
            !field_differences(M::TABLE, id, Some(expected), actual, M::fields).is_empty()
        })
        .map(|(id, _)| id.clone())
        .collect())
}

/// An event that cannot be applied, as a difference: field `event`, the event's sequence,
/// position, type and the reason as `expected`.
fn unappliable_difference(table: &'static str, event: Unappliable) -> Difference {
    Difference {
        table,
        aggregate_id: event.aggregate_id,
        field: "event".into(),
        expected: serde_json::json!({
            "sequence": event.sequence,
            "position": event.position,
            "event_type": event.event_type,
            "reason": event.reason,
        }),
        actual: Value::Null,
    }
}

/// Folds `id`'s events as they are now (up to one that cannot be applied, returned too) and
/// compares them with its row as it is now.
async fn compare_now<M: ReadModel>(
    pool: &PgPool,
    id: &str,
) -> Result<(Vec<Difference>, Option<Unappliable>), ApplyError> {
    let events: Vec<CatalogEvent> = reads::aggregate_history(pool, M::AGGREGATE_TYPE, id, 0, i64::MAX).await?;
    let (expected, unappliable) = crate::rebuild::fold::<M>(&events);
    let actual = match id.parse::<Uuid>() {
        Ok(uuid) => M::load(pool, &[uuid]).await?.remove(&uuid),
        Err(_) => None,
    };
    Ok((field_differences(M::TABLE, id, expected.as_ref(), actual.as_ref(), M::fields), unappliable))
}

fn field_differences<V>(
    table: &'static str,
    id: &str,
    expected: Option<&V>,
    actual: Option<&V>,
    fields: fn(&V) -> Map<String, Value>,
) -> Vec<Difference> {
    let difference = |field: &str, expected: Value, actual: Value| Difference {
        table,
        aggregate_id: id.to_owned(),
        field: field.to_owned(),
        expected,
        actual,
    };
    match (expected.map(fields), actual.map(fields)) {
        (None, None) => Vec::new(),
        (Some(expected), None) => vec![difference("row", Value::Object(expected), Value::Null)],
        (None, Some(actual)) => vec![difference("row", Value::Null, Value::Object(actual))],
        (Some(expected), Some(actual)) => expected
            .iter()
            .filter(|(field, value)| actual.get(*field) != Some(*value))
            .map(|(field, value)| difference(field, value.clone(), actual.get(field).cloned().unwrap_or(Value::Null)))
            .collect(),
    }
}

/// Stock across aggregates: every product's `reserved` must be the sum of the quantities that
/// reservations hold of it (items in state `held`). In flight, a hold is on the product a moment
/// before the reservation records it, so a difference counts only if it lasts `settle`.
pub async fn stock_holds(pool: &PgPool, settle: Duration) -> Result<Vec<Difference>, ApplyError> {
    let deadline = Instant::now() + settle;
    loop {
        let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "WITH holds AS (
                 SELECT (item ->> 'product_id')::uuid AS product_id, sum((item ->> 'quantity')::bigint) AS held
                   FROM reservations r CROSS JOIN LATERAL jsonb_array_elements(r.items) item
                  WHERE item ->> 'state' = 'held'
                  GROUP BY 1)
             SELECT p.id, p.reserved, coalesce(h.held, 0)::bigint
               FROM products p LEFT JOIN holds h ON h.product_id = p.id
              WHERE NOT p.deleted AND p.reserved <> coalesce(h.held, 0)
              ORDER BY p.id",
        )
        .fetch_all(pool)
        .await?;
        if rows.is_empty() || Instant::now() >= deadline {
            return Ok(rows
                .into_iter()
                .map(|(id, reserved, held)| Difference {
                    table: "products",
                    aggregate_id: id.to_string(),
                    field: "reserved (sum of held reservation items)".into(),
                    expected: held.into(),
                    actual: reserved.into(),
                })
                .collect());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
