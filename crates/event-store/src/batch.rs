//! Many aggregates at once, for a bulk import: who holds many SKUs, the fold of many short
//! streams in one query, and the next events of many aggregates in one statement.
//!
//! [`crate::CommandBus`] reads and writes one aggregate per transaction; these do the same for
//! a batch. The rows are exactly what postgres-es writes, so the `events` triggers (the catalog
//! rules among them) check every row, and the primary key `(aggregate_type, aggregate_id,
//! sequence)` is the optimistic lock: an aggregate that gained an event since it was loaded
//! makes the whole statement fail, and the caller retries its aggregates one by one.
//!
//! Snapshots are neither read nor written: [`load_many`] folds whole streams (and leaves longer
//! ones to the caller's one-by-one path, which uses snapshots), and [`append_events`] writes
//! no snapshot (a later command writes the next one when it crosses the next multiple).

use std::collections::HashMap;

use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use sqlx::PgPool;

use crate::EventMetadata;

/// `(sku lower-cased, product id)` of those of `skus` that a live product holds.
pub async fn sku_holders(pool: &PgPool, skus: &[String]) -> Result<Vec<(String, String)>, sqlx::Error> {
    // SKUs are ASCII, so lower-casing them here is Postgres's `lower`; a plain array keeps the
    // lookup on the claims' primary key. Not a prepared statement: a plan cached while the table
    // was small filters every claim through the whole array (50 ms a batch at 50,000 products).
    let lowered: Vec<String> = skus.iter().map(|sku| sku.to_ascii_lowercase()).collect();
    sqlx::query_as("SELECT value, aggregate_id FROM catalog_claims WHERE kind = 'sku' AND value = ANY ($1)")
        .bind(&lowered)
        .persistent(false)
        .fetch_all(pool)
        .await
}

/// The aggregates `ids` (of type `A`) as their events (upcast) fold them, with their versions,
/// read in one query. An aggregate without events, or with more than `max_events`, is left
/// out; so is one whose events do not deserialise (the caller's one-by-one path reports it).
pub async fn load_many<A>(pool: &PgPool, ids: &[String], max_events: usize) -> Result<HashMap<String, A>, sqlx::Error>
where
    A: Aggregate,
{
    type Row = (String, i64, String, String, serde_json::Value);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT aggregate_id, sequence, event_type, event_version, payload
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = ANY ($2)
          ORDER BY aggregate_id, sequence",
    )
    .bind(A::TYPE)
    .bind(ids)
    .persistent(false)
    .fetch_all(pool)
    .await?;
    let mut folded: HashMap<String, (A, usize, bool)> = HashMap::new();
    for (aggregate_id, sequence, event_type, event_version, payload) in rows {
        let (aggregate, count, broken) = folded.entry(aggregate_id.clone()).or_insert_with(|| (A::default(), 0, false));
        *count += 1;
        if *broken || *count > max_events || sequence != *count as i64 {
            *broken = true;
            continue;
        }
        let stored = SerializedEvent::new(
            aggregate_id,
            sequence as usize,
            A::TYPE.to_owned(),
            event_type,
            event_version,
            payload,
            serde_json::Value::Null,
        );
        match serde_json::from_value::<A::Event>(crate::upcasting::upcast(stored).payload) {
            Ok(event) => aggregate.apply(event),
            Err(_) => *broken = true,
        }
    }
    Ok(folded
        .into_iter()
        .filter(|(_, (_, _, broken))| !broken)
        .map(|(id, (aggregate, _, _))| (id, aggregate))
        .collect())
}

/// One event to append: the aggregate, the sequence it takes (the aggregate's version before
/// it plus one), and the event its command decided.
pub struct NewEvent<A: Aggregate> {
    pub aggregate_id: String,
    pub sequence: usize,
    pub event: A::Event,
}

/// Appends `events` in one statement (one transaction). The whole statement fails if any row
/// breaks a catalog rule or takes a sequence its aggregate already has.
pub async fn append_events<A: Aggregate>(
    pool: &PgPool,
    events: &[NewEvent<A>],
    metadata: &EventMetadata,
) -> Result<(), sqlx::Error> {
    let mut map = HashMap::from([("actor".to_owned(), metadata.actor.clone())]);
    if let Some(id) = &metadata.request_id {
        map.insert("request_id".into(), id.clone());
    }
    if let Some(traceparent) = &metadata.traceparent {
        map.insert("traceparent".into(), traceparent.clone());
    }
    let metadata = serde_json::to_string(&map).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let mut ids = Vec::with_capacity(events.len());
    let mut sequences = Vec::with_capacity(events.len());
    let mut event_types = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for new in events {
        let envelope = EventEnvelope::<A> {
            aggregate_id: new.aggregate_id.clone(),
            sequence: new.sequence,
            payload: new.event.clone(),
            metadata: HashMap::new(),
        };
        let row = SerializedEvent::try_from(&envelope).map_err(|e| sqlx::Error::Encode(e.into()))?;
        ids.push(row.aggregate_id);
        sequences.push(new.sequence as i64);
        event_types.push(row.event_type);
        versions.push(row.event_version);
        payloads.push(row.payload.to_string());
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $1, id, s, e, v, p::json, $7::json
           FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS r (id, s, e, v, p)",
    )
    .bind(A::TYPE)
    .bind(ids)
    .bind(sequences)
    .bind(event_types)
    .bind(versions)
    .bind(payloads)
    .bind(metadata)
    .execute(pool)
    .await?;
    for new in events {
        metrics::counter!("events_appended_total", "aggregate_type" => A::TYPE, "event_type" => new.event.event_type())
            .increment(1);
    }
    Ok(())
}
