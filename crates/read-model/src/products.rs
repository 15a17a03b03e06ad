//! The products read model: one row per product, deleted ones kept as tombstones.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use domain::{Currency, ProductEvent, ProductImage, ProductStatus};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::projection::{ApplyError, ReadModel};
use event_store::CatalogEvent;

/// A product as query-api serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Exact, with exactly the currency's fraction digits, as a JSON string (`"19.99"` EUR,
    /// `"1999"` JPY, `"1.500"` BHD); see [`normalize_price`].
    pub price: Decimal,
    /// ISO 4217 code, as the events carry it.
    pub currency: String,
    pub sku: Option<String>,
    pub status: ProductStatus,
    /// In the order given; the read side joins names (see `categories::summaries`).
    pub category_ids: Vec<Uuid>,
    pub attributes: BTreeMap<String, String>,
    pub images: Vec<ProductImage>,
    /// Units in stock.
    pub on_hand: i64,
    /// Units held by open reservations (at most `on_hand`). Absent in history rows recorded
    /// before reservations existed.
    #[serde(default)]
    pub reserved: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sequence of the last event folded in.
    pub version: i64,
    #[serde(skip)]
    pub deleted: bool,
}

/// `price` written the one way the read side writes it, whether it comes from an event or from
/// a `numeric(18,4)` column (which gives every amount 4 fraction digits): trailing zeros beyond
/// the currency's digits dropped, padded to at least its digits (`19.9900` EUR is `19.99`, `20`
/// EUR is `20.00`). Never rounds: a digit that matters is kept even where the currency has none.
/// A code the domain does not accept (a currency withdrawn since) keeps the digits it needs.
pub fn normalize_price(price: Decimal, currency: &str) -> Decimal {
    let mut normalized = price.normalize();
    if let Ok(currency) = Currency::parse(currency) {
        if normalized.scale() < currency.fraction_digits() {
            normalized.rescale(currency.fraction_digits());
        }
    }
    normalized
}

fn on_hand(units: u64) -> Result<i64, ApplyError> {
    i64::try_from(units).map_err(|_| ApplyError::Malformed(format!("on_hand {units} is out of range")))
}

/// Folds one event into the view. Pure: the projector, rebuild and verify all call this.
pub fn apply(current: Option<ProductView>, event: &CatalogEvent) -> Result<ProductView, ApplyError> {
    // Deserialized from the borrowed payload: no copy of the JSON tree per event.
    let decoded = ProductEvent::deserialize(&event.payload)
        .map_err(|e| ApplyError::Malformed(format!("not a product event: {e}")))?;
    let at = event.recorded_at;
    let version = event.sequence;
    let mut view = match (current, decoded) {
        (
            None,
            ProductEvent::ProductCreated {
                id,
                name,
                description,
                price,
                currency,
                sku,
                status,
                category_ids,
                attributes,
                images,
                on_hand: units,
            },
        ) => {
            return Ok(ProductView {
                id,
                name,
                description,
                price: normalize_price(price, &currency),
                currency,
                sku,
                status,
                category_ids,
                attributes,
                images,
                on_hand: on_hand(units)?,
                reserved: 0,
                created_at: at,
                updated_at: at,
                version,
                deleted: false,
            })
        }
        (
            Some(mut view),
            ProductEvent::ProductUpdated {
                name,
                description,
                price,
                currency,
                sku,
                status,
                category_ids,
                attributes,
                images,
            },
        ) => {
            if let Some(name) = name {
                view.name = name;
            }
            if let Some(description) = description {
                view.description = description;
            }
            if let Some(currency) = currency {
                view.currency = currency;
            }
            if let Some(price) = price {
                view.price = price;
            }
            view.price = normalize_price(view.price, &view.currency);
            if let Some(sku) = sku {
                view.sku = sku;
            }
            if let Some(status) = status {
                view.status = status;
            }
            if let Some(category_ids) = category_ids {
                view.category_ids = category_ids;
            }
            if let Some(attributes) = attributes {
                view.attributes = attributes;
            }
            if let Some(images) = images {
                view.images = images;
            }
            view
        }
        (Some(mut view), ProductEvent::ProductStockAdjusted { on_hand: units, .. }) => {
            view.on_hand = on_hand(units)?;
            view
        }
        (Some(mut view), ProductEvent::ProductStockReserved { reserved, .. })
        | (Some(mut view), ProductEvent::ProductStockReleased { reserved, .. }) => {
            view.reserved = on_hand(reserved)?;
            view
        }
        (Some(mut view), ProductEvent::ProductStockCommitted { on_hand: units, reserved, .. }) => {
            view.on_hand = on_hand(units)?;
            view.reserved = on_hand(reserved)?;
            view
        }
        (Some(mut view), ProductEvent::ProductDeleted {}) => {
            view.deleted = true;
            view
        }
        (current, event) => {
            return Err(ApplyError::Malformed(format!(
                "{} cannot follow {}",
                cqrs_es::DomainEvent::event_type(&event),
                if current.is_some() { "an existing product" } else { "nothing" },
            )))
        }
    };
    view.updated_at = at;
    view.version = version;
    Ok(view)
}

const COLUMNS: &str = "id, name, description, price, currency, sku, status, category_ids, attributes, images, \
                       on_hand, reserved, created_at, updated_at, version, deleted";

impl<'r> sqlx::FromRow<'r, PgRow> for ProductView {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let decode =
            |column: &str, error: String| sqlx::Error::ColumnDecode { index: column.into(), source: error.into() };
        let currency: String = row.try_get("currency")?;
        let status: String = row.try_get("status")?;
        let sqlx::types::Json(attributes) = row.try_get("attributes")?;
        let sqlx::types::Json(images) = row.try_get("images")?;
        Ok(ProductView {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            price: normalize_price(row.try_get("price")?, &currency),
            currency,
            sku: row.try_get("sku")?,
            status: status.parse().map_err(|_| decode("status", format!("unknown status {status:?}")))?,
            category_ids: row.try_get("category_ids")?,
            attributes,
            images,
            on_hand: row.try_get("on_hand")?,
            // History states recorded before reservations have none (`jsonb_populate_record` NULL).
            reserved: row.try_get::<Option<i64>, _>("reserved")?.unwrap_or(0),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
            deleted: row.try_get("deleted")?,
        })
    }
}

/// A product by id, deleted ones included (callers check `deleted`).
pub async fn get<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> Result<Option<ProductView>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE id = $1")).bind(id).fetch_optional(executor).await
}

/// The view as `verify` compares it and the history model records it: every serialised field
/// and `deleted`.
pub fn fields(view: &ProductView) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = crate::projection::serialized_fields(view);
    fields.insert("deleted".into(), view.deleted.into());
    fields
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
        fields(view)
    }

    async fn load(pool: &sqlx::PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductView>, sqlx::Error> {
        let rows: Vec<ProductView> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(pool)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn load_for_update(
        connection: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, ProductView>, sqlx::Error> {
        let rows: Vec<ProductView> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE"))
                .bind(ids)
                .fetch_all(connection)
                .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn save(connection: &mut PgConnection, table: &str, views: &[&ProductView]) -> Result<(), sqlx::Error> {
        // One statement for the whole batch. The `WHERE` keeps versions monotonic even if two
        // projectors raced on a product that had no row yet. Category lists travel as one
        // comma-joined string per row (Postgres arrays cannot be ragged), maps and lists as jsonb.
        sqlx::query(&format!(
            "INSERT INTO {table} ({COLUMNS})
             SELECT id, name, description, price, currency, sku, status,
                    string_to_array(category_ids, ',')::uuid[], attributes, images,
                    on_hand, reserved, created_at, updated_at, version, deleted
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::numeric[], $5::text[], $6::text[], $7::text[],
                           $8::text[], $9::jsonb[], $10::jsonb[], $11::bigint[], $16::bigint[],
                           $12::timestamptz[], $13::timestamptz[], $14::bigint[], $15::bool[])
                    AS t(id, name, description, price, currency, sku, status, category_ids, attributes, images,
                         on_hand, reserved, created_at, updated_at, version, deleted)
             ON CONFLICT (id) DO UPDATE
                SET name = EXCLUDED.name, description = EXCLUDED.description, price = EXCLUDED.price,
                    currency = EXCLUDED.currency, sku = EXCLUDED.sku, status = EXCLUDED.status,
                    category_ids = EXCLUDED.category_ids, attributes = EXCLUDED.attributes,
                    images = EXCLUDED.images, on_hand = EXCLUDED.on_hand, reserved = EXCLUDED.reserved,
                    updated_at = EXCLUDED.updated_at, version = EXCLUDED.version, deleted = EXCLUDED.deleted
              WHERE {table}.version < EXCLUDED.version",
        ))
        .bind(views.iter().map(|v| v.id).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.description.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.price).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.currency.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.sku.as_deref()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.status.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| join_ids(&v.category_ids)).collect::<Vec<_>>())
        .bind(views.iter().map(|v| serde_json::to_value(&v.attributes).unwrap_or_default()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| serde_json::to_value(&v.images).unwrap_or_default()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.on_hand).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.created_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.updated_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.version).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.deleted).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.reserved).collect::<Vec<_>>())
        .execute(connection)
        .await?;
        Ok(())
    }
}

fn join_ids(ids: &[Uuid]) -> String {
    ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn event(sequence: i64, payload: serde_json::Value) -> CatalogEvent {
        let event_type = payload.as_object().unwrap().keys().next().unwrap().clone();
        let version = if event_type == "ProductCreated" { "2.0.0" } else { "1.0.0" };
        CatalogEvent::from_stored(
            Uuid::new_v4(),
            "Product".into(),
            Uuid::nil().to_string(),
            sequence,
            event_type,
            version.into(),
            payload,
            json!({"actor": "admin"}),
            sequence,
            Utc::now(),
        )
    }

    pub(crate) fn created() -> CatalogEvent {
        event(
            1,
            json!({"ProductCreated": {
                "id": Uuid::nil(), "name": "Lamp", "description": "", "price": "19.99", "currency": "EUR",
                "sku": "LAMP-1", "status": "draft", "category_ids": [Uuid::from_u128(7)],
                "attributes": {"colour": "red"}, "images": [{"url": "https://img.example/lamp.png", "alt": "A lamp"}],
                "on_hand": 3
            }}),
        )
    }

    #[test]
    fn a_created_product_has_every_field_and_version_one() {
        let view = apply(None, &created()).unwrap();
        assert_eq!((view.name.as_str(), view.price.to_string().as_str(), view.version), ("Lamp", "19.99", 1));
        assert_eq!((view.currency.as_str(), view.sku.as_deref()), ("EUR", Some("LAMP-1")));
        assert_eq!(view.status, ProductStatus::Draft);
        assert_eq!(view.category_ids, vec![Uuid::from_u128(7)]);
        assert_eq!(view.attributes, BTreeMap::from([("colour".to_owned(), "red".to_owned())]));
        let image = ProductImage { url: "https://img.example/lamp.png".into(), alt: Some("A lamp".into()) };
        assert_eq!(view.images, vec![image]);
        assert_eq!(view.on_hand, 3);
        assert!(!view.deleted);
    }

    #[test]
    fn a_version_one_creation_is_a_published_product_in_the_default_currency() {
        let old = CatalogEvent::from_stored(
            Uuid::new_v4(),
            "Product".into(),
            Uuid::nil().to_string(),
            1,
            "ProductCreated".into(),
            "1.0.0".into(),
            json!({"ProductCreated": {"id": Uuid::nil(), "name": "Lamp", "description": "", "price": "19.99"}}),
            json!({}),
            1,
            Utc::now(),
        );
        let view = apply(None, &old).unwrap();
        assert_eq!(view.status, ProductStatus::Published);
        assert_eq!(view.currency, event_store::upcasting::default_currency().code());
        assert_eq!((view.sku, view.on_hand, view.category_ids.len()), (None, 0, 0));
    }

    #[test]
    fn an_update_changes_only_the_given_fields() {
        let view = apply(None, &created()).unwrap();
        let view = apply(Some(view), &event(2, json!({"ProductUpdated": {"price": "5.00"}}))).unwrap();
        assert_eq!((view.name.as_str(), view.price.to_string().as_str(), view.version), ("Lamp", "5.00", 2));
        assert_eq!((view.sku.as_deref(), view.status, view.on_hand), (Some("LAMP-1"), ProductStatus::Draft, 3));
    }

    #[test]
    fn an_update_replaces_lists_and_maps_and_sets_or_clears_the_sku() {
        let view = apply(None, &created()).unwrap();
        let view = apply(
            Some(view),
            &event(
                2,
                json!({"ProductUpdated": {"name": "Lamp 2", "description": "Bright", "sku": null, "status": "published",
                       "category_ids": [], "attributes": {"material": "brass"}, "images": []}}),
            ),
        )
        .unwrap();
        assert_eq!((view.name.as_str(), view.description.as_str(), view.sku.clone()), ("Lamp 2", "Bright", None));
        assert_eq!(view.status, ProductStatus::Published);
        assert!(view.category_ids.is_empty() && view.images.is_empty());
        assert_eq!(view.attributes, BTreeMap::from([("material".to_owned(), "brass".to_owned())]));
        let update = json!({"ProductUpdated": {"sku": "LAMP-2", "status": "archived"}});
        let view = apply(Some(view), &event(3, update)).unwrap();
        assert_eq!((view.sku.as_deref(), view.status, view.version), (Some("LAMP-2"), ProductStatus::Archived, 3));
    }

    #[test]
    fn a_currency_change_carries_the_rescaled_price() {
        let view = apply(None, &created()).unwrap();
        let view =
            apply(Some(view), &event(2, json!({"ProductUpdated": {"currency": "BHD", "price": "19.990"}}))).unwrap();
        assert_eq!((view.currency.as_str(), view.price.to_string().as_str()), ("BHD", "19.990"));
        let view = apply(Some(view), &event(3, json!({"ProductUpdated": {"currency": "JPY", "price": "20"}}))).unwrap();
        assert_eq!((view.currency.as_str(), view.price.to_string().as_str()), ("JPY", "20"));
        assert_eq!(serde_json::to_value(&view).unwrap()["price"], json!("20"));
    }

    #[test]
    fn a_stock_adjustment_sets_the_level_it_carries() {
        let view = apply(None, &created()).unwrap();
        let adjusted = json!({"ProductStockAdjusted": {"delta": 5, "reason": "goods received", "on_hand": 8}});
        let view = apply(Some(view), &event(2, adjusted)).unwrap();
        assert_eq!((view.on_hand, view.version), (8, 2));
        let sold = json!({"ProductStockAdjusted": {"delta": -8, "reason": "sold", "on_hand": 0}});
        let view = apply(Some(view), &event(3, sold)).unwrap();
        assert_eq!((view.on_hand, view.version, view.name.as_str()), (0, 3, "Lamp"));
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
        let stock = json!({"ProductStockAdjusted": {"delta": 1, "reason": "x", "on_hand": 1}});
        assert!(matches!(apply(None, &event(1, stock)), Err(ApplyError::Malformed(_))));
        let view = apply(None, &created()).unwrap();
        assert!(apply(Some(view), &created()).is_err());
    }

    #[test]
    fn the_price_is_served_as_a_string_with_the_currencys_digits() {
        let view = apply(None, &created()).unwrap();
        assert_eq!(serde_json::to_value(&view).unwrap()["price"], json!("19.99"));
    }

    #[test]
    fn prices_from_the_four_digit_column_compare_equal_to_the_fold() {
        use std::str::FromStr;
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(normalize_price(d("19.9900"), "EUR").to_string(), "19.99");
        assert_eq!(normalize_price(d("20.0000"), "EUR").to_string(), "20.00");
        assert_eq!(normalize_price(d("1999.0000"), "JPY").to_string(), "1999");
        assert_eq!(normalize_price(d("1.5000"), "BHD").to_string(), "1.500");
        assert_eq!(normalize_price(d("1.2345"), "CLF").to_string(), "1.2345");
        // Never rounds away a digit, whatever the currency.
        assert_eq!(normalize_price(d("19.9900"), "JPY").to_string(), "19.99");
        assert_eq!(normalize_price(d("19.9900"), "HRK").to_string(), "19.99");
        assert_eq!(normalize_price(d("19.99"), "EUR"), normalize_price(d("19.9900"), "EUR"));
    }

    #[test]
    fn a_view_survives_a_json_round_trip_except_deleted_which_fields_carry() {
        let view = apply(None, &created()).unwrap();
        let back: ProductView = serde_json::from_value(serde_json::to_value(&view).unwrap()).unwrap();
        assert_eq!(back, view);
        let deleted = apply(Some(view), &event(2, json!({"ProductDeleted": {}}))).unwrap();
        assert_eq!(fields(&deleted)["deleted"], json!(true));
        assert_eq!(fields(&deleted)["status"], json!("draft"));
    }
}
