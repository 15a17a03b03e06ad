//! The products read model: one row per product, deleted ones kept as tombstones.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::ProductEvent;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::projection::{ApplyError, ReadModel};
use event_store::CatalogEvent;

/// A product as query-api serves it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ProductView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Exact, two fraction digits, as a JSON string (`"19.99"`).
    pub price: Decimal,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sequence of the last event folded in.
    pub version: i64,
    #[serde(skip)]
    pub deleted: bool,
}

/// Folds one event into the view. Pure: the projector, rebuild and verify all call this.
pub fn apply(current: Option<ProductView>, event: &CatalogEvent) -> Result<ProductView, ApplyError> {
    let decoded: ProductEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Malformed(format!("not a product event: {e}")))?;
    let at = event.recorded_at;
    let version = event.sequence;
    match (current, decoded) {
        (None, ProductEvent::ProductCreated { id, name, description, price, .. }) => Ok(ProductView {
            id,
            name,
            description,
            price,
            created_at: at,
            updated_at: at,
            version,
            deleted: false,
        }),
        (Some(mut view), ProductEvent::ProductUpdated { name, description, price, .. }) => {
            if let Some(name) = name {
                view.name = name;
            }
            if let Some(description) = description {
                view.description = description;
            }
            if let Some(price) = price {
                view.price = price;
            }
            view.updated_at = at;
            view.version = version;
            Ok(view)
        }
        (Some(mut view), ProductEvent::ProductDeleted {}) => {
            view.deleted = true;
            view.updated_at = at;
            view.version = version;
            Ok(view)
        }
        (current, event) => Err(ApplyError::Malformed(format!(
            "{} cannot follow {}",
            cqrs_es::DomainEvent::event_type(&event),
            if current.is_some() { "an existing product" } else { "nothing" },
        ))),
    }
}

/// A live (not deleted) product.
pub async fn get<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> Result<Option<ProductView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, description, price, created_at, updated_at, version, deleted
           FROM products WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// One page of live products, oldest first (id breaks ties), and the number of live products.
pub async fn page(
    connection: &mut PgConnection,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ProductView>, i64), sqlx::Error> {
    let items = sqlx::query_as(
        "SELECT id, name, description, price, created_at, updated_at, version, deleted
           FROM products WHERE NOT deleted
          ORDER BY created_at, id
          LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *connection)
    .await?;
    let total = sqlx::query_scalar("SELECT count(*) FROM products WHERE NOT deleted")
        .fetch_one(&mut *connection)
        .await?;
    Ok((items, total))
}

pub struct Products;

impl ReadModel for Products {
    type View = ProductView;
    const AGGREGATE_TYPE: &'static str = "Product";
    const TABLE: &'static str = "products";

    fn version(view: &ProductView) -> i64 {
        view.version
    }

    fn apply(current: Option<ProductView>, event: &CatalogEvent) -> Result<ProductView, ApplyError> {
        apply(current, event)
    }

    fn fields(view: &ProductView) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = match serde_json::to_value(view) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        fields.insert("deleted".into(), view.deleted.into());
        fields
    }

    async fn load(pool: &sqlx::PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductView>, sqlx::Error> {
        let rows: Vec<ProductView> = sqlx::query_as("SELECT id, name, description, price, created_at, updated_at, version, deleted FROM products WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn load_for_update(
        connection: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, ProductView>, sqlx::Error> {
        let rows: Vec<ProductView> = sqlx::query_as(
            "SELECT id, name, description, price, created_at, updated_at, version, deleted
               FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(connection)
        .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn save(connection: &mut PgConnection, table: &str, views: &[&ProductView]) -> Result<(), sqlx::Error> {
        // One statement for the whole batch. The `WHERE` keeps versions monotonic even if two
        // projectors raced on a product that had no row yet.
        sqlx::query(&format!(
            "INSERT INTO {table} (id, name, description, price, created_at, updated_at, version, deleted)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::numeric[],
                                  $5::timestamptz[], $6::timestamptz[], $7::bigint[], $8::bool[])
             ON CONFLICT (id) DO UPDATE
                SET name = EXCLUDED.name, description = EXCLUDED.description, price = EXCLUDED.price,
                    updated_at = EXCLUDED.updated_at, version = EXCLUDED.version, deleted = EXCLUDED.deleted
              WHERE {table}.version < EXCLUDED.version",
        ))
        .bind(views.iter().map(|v| v.id).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.description.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.price).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.created_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.updated_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.version).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.deleted).collect::<Vec<_>>())
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
            Uuid::new_v4(),
            "Product".into(),
            Uuid::nil().to_string(),
            sequence,
            payload.as_object().unwrap().keys().next().unwrap().clone(),
            "1.0.0".into(),
            payload,
            json!({}),
            sequence,
            Utc::now(),
        )
    }

    fn created() -> CatalogEvent {
        event(1, json!({"ProductCreated": {"id": Uuid::nil(), "name": "Lamp", "description": "", "price": "19.99"}}))
    }

    #[test]
    fn a_created_product_has_its_fields_and_version_one() {
        let view = apply(None, &created()).unwrap();
        assert_eq!((view.name.as_str(), view.price.to_string().as_str(), view.version), ("Lamp", "19.99", 1));
        assert!(!view.deleted);
    }

    #[test]
    fn an_update_changes_only_the_given_fields() {
        let view = apply(None, &created()).unwrap();
        let view = apply(Some(view), &event(2, json!({"ProductUpdated": {"price": "5.00"}}))).unwrap();
        assert_eq!((view.name.as_str(), view.price.to_string().as_str(), view.version), ("Lamp", "5.00", 2));
    }

    #[test]
    fn a_delete_leaves_a_tombstone() {
        let view = apply(None, &created()).unwrap();
        let view = apply(Some(view), &event(2, json!({"ProductDeleted": {}}))).unwrap();
        assert!(view.deleted);
        assert_eq!(view.version, 2);
    }

    #[test]
    fn malformed_or_out_of_place_events_are_refused() {
        assert!(matches!(apply(None, &event(1, json!({"Nonsense": {}}))), Err(ApplyError::Malformed(_))));
        assert!(matches!(apply(None, &event(1, json!({"ProductDeleted": {}}))), Err(ApplyError::Malformed(_))));
        let view = apply(None, &created()).unwrap();
        assert!(apply(Some(view), &created()).is_err());
    }

    #[test]
    fn the_price_is_served_as_a_string() {
        let view = apply(None, &created()).unwrap();
        assert_eq!(serde_json::to_value(&view).unwrap()["price"], json!("19.99"));
    }
}
