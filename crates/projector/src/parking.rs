//! Parked dead letters: per-aggregate queues of events that wait behind one that could not be
//! applied (table `parked_events`).
//!
//! Once an event of aggregate A is dead-lettered, A is parked: its later events are recorded
//! behind it instead of being applied, so A's read model stops before the bad event rather
//! than skipping it, and other aggregates move on. The queue survives restarts (it is in
//! Postgres, written in the same transaction as the rest of the lane). An operator empties it
//! with [`retry`] (applies the queue in order, after a fix) or [`discard`] (drops it, logged).
//!
//! Concurrency: the projector reads the parked aggregates of a lane `FOR KEY SHARE`, and
//! retry/discard lock a queue's rows `FOR UPDATE` before deleting them. So a lane that sees a
//! queue being emptied waits for that to commit, then finds it gone and applies normally; an
//! event parked while a retry runs stays queued for the next retry (which [`retry`] loops for).

use std::collections::{BTreeMap, HashMap, HashSet};

use event_store::CatalogEvent;
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::message;

/// The aggregates among `keys` that have parked events. Locks their queues against a
/// concurrent retry or discard until the caller's transaction ends.
pub async fn parked_among(connection: &mut PgConnection, keys: &[String]) -> Result<HashSet<String>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM parked_events WHERE aggregate_id = ANY($1) FOR KEY SHARE")
            .bind(keys)
            .fetch_all(connection)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The queue key of a message: its Kafka key (the aggregate id), or "" if it has none.
pub fn key_of(message: &OwnedMessage) -> String {
    message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default()
}

/// Parks `message` behind its aggregate's queue (or at its head, with `reason`). A message
/// parked before (a redelivery) is not parked twice.
pub async fn park(
    connection: &mut PgConnection,
    message: &OwnedMessage,
    event: Option<&CatalogEvent>,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    let headers: serde_json::Map<String, Value> = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_owned(), Value::String(String::from_utf8_lossy(x.value.unwrap_or_default()).into())))
                .collect()
        })
        .unwrap_or_default();
    let source = format!("{}/{}/{}", message.topic(), message.partition(), message.offset());
    let dedup_key = event.map_or_else(|| source.clone(), |e| e.event_id.to_string());
    sqlx::query(
        "INSERT INTO parked_events (aggregate_id, aggregate_type, sequence, global_position, event_id, event_type,
                                    headers, payload, reason, source, dedup_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(key_of(message))
    .bind(event.map(|e| e.aggregate_type.clone()))
    .bind(event.map(|e| e.sequence))
    .bind(event.map(|e| e.global_position))
    .bind(event.map(|e| e.event_id))
    .bind(event.map(|e| e.event_type.clone()))
    .bind(Value::Object(headers))
    .bind(message.payload())
    .bind(reason)
    .bind(source)
    .bind(dedup_key)
    .execute(connection)
    .await?;
    Ok(())
}

/// One parked aggregate, as `catalogctl dlq list` prints it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ParkedAggregate {
    pub aggregate_id: String,
    pub aggregate_type: Option<String>,
    /// Events in the queue, the dead letter at its head included.
    pub queued: i64,
    /// The head: the event that could not be applied.
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub sequence: Option<i64>,
    pub position: Option<i64>,
    pub reason: Option<String>,
    pub source: String,
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// Every parked aggregate, oldest queue first.
pub async fn list(pool: &PgPool) -> Result<Vec<ParkedAggregate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (p.aggregate_id)
                p.aggregate_id, p.aggregate_type, q.queued, p.event_id, p.event_type, p.sequence,
                p.global_position AS position, p.reason, p.source, p.parked_at
           FROM parked_events p
           JOIN (SELECT aggregate_id, count(*) AS queued FROM parked_events GROUP BY aggregate_id) q USING (aggregate_id)
          ORDER BY p.aggregate_id, p.id",
    )
    .fetch_all(pool)
    .await
    .map(|mut rows: Vec<ParkedAggregate>| {
        rows.sort_by_key(|r| r.parked_at);
        rows
    })
}

/// The aggregates whose queue holds one of `event_ids`.
pub async fn aggregates_of_events(pool: &PgPool, event_ids: &[Uuid]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT aggregate_id FROM parked_events WHERE event_id = ANY($1)")
        .bind(event_ids)
        .fetch_all(pool)
        .await
}

#[derive(sqlx::FromRow)]
struct ParkedRow {
    id: i64,
    aggregate_id: String,
    event_id: Option<Uuid>,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
    payload: Option<Vec<u8>>,
}

/// What [`retry`] did to one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RetryOutcome {
    /// Every event of the queue was applied (or was already reflected); the queue is gone.
    Applied { events: u64 },
    /// An event still cannot be applied; the queue is unchanged and its head's reason updated.
    StillFailing { sequence: Option<i64>, reason: String },
}

/// Applies `aggregate_id`'s queue in order, in one transaction, and removes it. If an event
/// still fails, nothing is applied and the queue stays. Events parked while this runs are
/// taken in a further round.
pub async fn retry(pool: &PgPool, aggregate_id: &str) -> Result<RetryOutcome, sqlx::Error> {
    let mut applied = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<ParkedRow> = sqlx::query_as(
            "SELECT id, aggregate_id, event_id, headers, payload FROM parked_events WHERE aggregate_id = $1 ORDER BY id FOR UPDATE",
        )
        .bind(aggregate_id)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(RetryOutcome::Applied { events: applied });
        }
        // An event the store holds is read from it (with today's upcasters, so a fix shipped as
        // an upcaster, or a repaired row, takes effect); the parked message is the fallback.
        let event_ids: Vec<Uuid> = rows.iter().filter_map(|r| r.event_id).collect();
        let mut stored: HashMap<Uuid, CatalogEvent> = event_store::reads::by_event_ids(&mut *tx, &event_ids)
            .await?
            .into_iter()
            .map(|e| (e.event_id, e))
            .collect();
        let mut events = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            if let Some(event) = row.event_id.and_then(|id| stored.remove(&id)) {
                events.push(event);
                continue;
            }
            let decoded = message::decode(
                Some(row.aggregate_id.as_bytes()),
                |name| row.headers.0.get(name).map(String::as_bytes),
                row.payload.as_deref(),
            );
            match decoded {
                Ok(event) => events.push(event),
                Err(reason) => {
                    failure = Some((None, reason));
                    break;
                }
            }
        }
        if failure.is_none() {
            match read_model::apply_events(&mut tx, &events).await {
                Ok(_) => {}
                Err(read_model::ApplyError::Database(error)) => return Err(error),
                Err(error) => failure = Some((failing_sequence(&events, &error), error.to_string())),
            }
        }
        if let Some((sequence, reason)) = failure {
            tx.rollback().await?;
            sqlx::query("UPDATE parked_events SET reason = $2 WHERE id = $1")
                .bind(rows[0].id)
                .bind(&reason)
                .execute(pool)
                .await?;
            return Ok(RetryOutcome::StillFailing { sequence, reason });
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        sqlx::query("DELETE FROM parked_events WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        tx.commit().await?;
        applied += rows.len() as u64;
        tracing::info!(aggregate_id, events = rows.len(), "parked events applied");
    }
}

/// The sequence an apply error names, if it is one of `events`' (for the report only).
fn failing_sequence(events: &[CatalogEvent], error: &read_model::ApplyError) -> Option<i64> {
    let text = error.to_string();
    events
        .iter()
        .find(|e| text.contains(&e.event_id.to_string()))
        .map(|e| e.sequence)
        .or(events.first().map(|e| e.sequence))
}

/// Drops `aggregate_id`'s queue, recording how many events and `reason` in
/// `dead_letter_discards`. Returns the number of events dropped.
pub async fn discard(pool: &PgPool, aggregate_id: &str, reason: &str) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let sequences: Vec<Option<i64>> =
        sqlx::query_scalar("DELETE FROM parked_events WHERE aggregate_id = $1 RETURNING sequence")
            .bind(aggregate_id)
            .fetch_all(&mut *tx)
            .await?;
    if sequences.is_empty() {
        return Ok(0);
    }
    sqlx::query(
        "INSERT INTO dead_letter_discards (aggregate_id, events, first_sequence, last_sequence, reason)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(aggregate_id)
    .bind(sequences.len() as i32)
    .bind(sequences.iter().flatten().min())
    .bind(sequences.iter().flatten().max())
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::warn!(aggregate_id, events = sequences.len(), reason, "parked events discarded");
    Ok(sequences.len() as u64)
}
