//! The reservations read model: one row per reservation, its items with their states.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::reservation::{ReservationItem, ReservationStatus};
use domain::{Reservation, ReservationEvent};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::projection::{ApplyError, ReadModel};
use event_store::CatalogEvent;

/// A reservation as query-api serves it (to its owner or an admin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationView {
    pub id: Uuid,
    /// The user id of who placed it.
    pub owner: String,
    pub status: ReservationStatus,
    pub items: Vec<ReservationItem>,
    pub expires_at: DateTime<Utc>,
    pub reason: Option<String>,
    /// Every hold is released or committed.
    pub settled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// Folds one event into the view with the aggregate's own fold, so the read side can never
/// disagree with the write side about item states.
pub fn apply(current: Option<ReservationView>, event: &CatalogEvent) -> Result<ReservationView, ApplyError> {
    let decoded: ReservationEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Malformed(format!("not a reservation event: {e}")))?;
    let placed = matches!(decoded, ReservationEvent::ReservationPlaced { .. });
    if placed != current.is_none() {
        return Err(ApplyError::Malformed(format!(
            "{} cannot follow {}",
            cqrs_es::DomainEvent::event_type(&decoded),
            if current.is_some() { "an existing reservation" } else { "nothing" },
        )));
    }
    let created_at = current.as_ref().map_or(event.recorded_at, |view| view.created_at);
    let mut aggregate = current.map(into_aggregate).unwrap_or_default();
    cqrs_es::Aggregate::apply(&mut aggregate, decoded);
    Ok(ReservationView {
        id: aggregate.id.unwrap_or_default(),
        owner: aggregate.owner,
        status: aggregate.status,
        items: aggregate.items,
        expires_at: aggregate.expires_at,
        reason: aggregate.reason,
        settled: aggregate.settled,
        created_at,
        updated_at: event.recorded_at,
        version: event.sequence,
    })
}

/// The aggregate as far as the view holds it: all the fold needs (the release cause only
/// matters to commands).
fn into_aggregate(view: ReservationView) -> Reservation {
    Reservation {
        id: Some(view.id),
        owner: view.owner,
        items: view.items,
        expires_at: view.expires_at,
        status: view.status,
        reason: view.reason,
        cause: None,
        settled: view.settled,
        version: view.version as u64,
    }
}

const COLUMNS: &str = "id, owner, status, items, expires_at, reason, settled, created_at, updated_at, version";

impl<'r> sqlx::FromRow<'r, PgRow> for ReservationView {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let sqlx::types::Json(items) = row.try_get("items")?;
        Ok(ReservationView {
            id: row.try_get("id")?,
            owner: row.try_get("owner")?,
            status: serde_json::from_value(serde_json::Value::String(status.clone())).map_err(|_| {
                sqlx::Error::ColumnDecode {
                    index: "status".into(),
                    source: format!("unknown status {status:?}").into(),
                }
            })?,
            items,
            expires_at: row.try_get("expires_at")?,
            reason: row.try_get("reason")?,
            settled: row.try_get("settled")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }
}

/// A reservation by id.
pub async fn get<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> Result<Option<ReservationView>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM reservations WHERE id = $1")).bind(id).fetch_optional(executor).await
}

pub struct Reservations;

impl ReadModel for Reservations {
    type View = ReservationView;
    const AGGREGATE_TYPE: &'static str = "Reservation";
    const TABLE: &'static str = "reservations";

    fn version(view: &ReservationView) -> i64 {
        view.version
    }

    fn apply(current: Option<ReservationView>, event: &CatalogEvent) -> Result<ReservationView, ApplyError> {
        apply(current, event)
    }

    fn fields(view: &ReservationView) -> serde_json::Map<String, serde_json::Value> {
        crate::projection::serialized_fields(view)
    }

    async fn load(pool: &sqlx::PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, ReservationView>, sqlx::Error> {
        let rows: Vec<ReservationView> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM reservations WHERE id = ANY($1)"))
                .bind(ids)
                .fetch_all(pool)
                .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn load_for_update(
        connection: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, ReservationView>, sqlx::Error> {
        let rows: Vec<ReservationView> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM reservations WHERE id = ANY($1) ORDER BY id FOR UPDATE"))
                .bind(ids)
                .fetch_all(connection)
                .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn save(connection: &mut PgConnection, table: &str, views: &[&ReservationView]) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "INSERT INTO {table} ({COLUMNS})
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::text[],
                                  $7::bool[], $8::timestamptz[], $9::timestamptz[], $10::bigint[])
             ON CONFLICT (id) DO UPDATE
                SET status = EXCLUDED.status, items = EXCLUDED.items, reason = EXCLUDED.reason,
                    settled = EXCLUDED.settled, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
              WHERE {table}.version < EXCLUDED.version",
        ))
        .bind(views.iter().map(|v| v.id).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.owner.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.status.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| serde_json::to_value(&v.items).unwrap_or_default()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.expires_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.reason.as_deref()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.settled).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.created_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.updated_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.version).collect::<Vec<_>>())
        .execute(connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(sequence: i64, payload: serde_json::Value) -> CatalogEvent {
        CatalogEvent::from_stored(
            Uuid::nil(),
            "Reservation".into(),
            Uuid::from_u128(7).to_string(),
            sequence,
            payload.as_object().unwrap().keys().next().unwrap().clone(),
            "1.0.0".into(),
            payload,
            json!({}),
            sequence,
            Utc::now(),
        )
    }

    #[test]
    fn the_view_follows_the_saga_item_by_item() {
        let product = Uuid::from_u128(1);
        let placed = json!({"ReservationPlaced": {"id": Uuid::from_u128(7), "owner": "u1",
            "items": [{"product_id": product, "quantity": 2, "state": "pending"}], "expires_at": "2026-11-30T12:00:00Z"}});
        let view = apply(None, &event(1, placed)).unwrap();
        assert_eq!(
            (view.status, view.items[0].state, view.version),
            (ReservationStatus::Pending, Default::default(), 1)
        );
        let view = apply(Some(view), &event(2, json!({"ReservationItemHeld": {"product_id": product}}))).unwrap();
        let view = apply(Some(view), &event(3, json!({"ReservationHeld": {}}))).unwrap();
        assert_eq!(view.status, ReservationStatus::Held);
        let view = apply(Some(view), &event(4, json!({"ReservationReleased": {"cause": "expired"}}))).unwrap();
        let view = apply(Some(view), &event(5, json!({"ReservationStockReleased": {}}))).unwrap();
        assert_eq!(
            (view.status, view.items[0].state, view.settled, view.version),
            (ReservationStatus::Released, domain::reservation::ItemState::Released, true, 5)
        );
        assert!(apply(None, &event(1, json!({"ReservationHeld": {}}))).is_err());
    }
}
