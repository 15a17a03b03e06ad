//! The categories read model: one row per category, deleted ones kept as tombstones. The tree
//! is built by readers from `parent_id`; product membership lives on the products
//! (`ProductView::category_ids`), and names are joined in when a product is read
//! ([`summaries`]), so a rename shows on every product at once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::CategoryEvent;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::projection::{ApplyError, ReadModel};
use event_store::CatalogEvent;

/// A category as query-api serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct CategoryView {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    /// `None` for a root category.
    pub parent_id: Option<Uuid>,
    /// Empty when none was given.
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The sequence of the last event folded in.
    pub version: i64,
    #[serde(skip)]
    pub deleted: bool,
}

/// What a product view shows of each of its categories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct CategorySummary {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
}

/// Folds one event into the view. Pure: the projector, rebuild and verify all call this.
pub fn apply(current: Option<CategoryView>, event: &CatalogEvent) -> Result<CategoryView, ApplyError> {
    let decoded = CategoryEvent::deserialize(&event.payload)
        .map_err(|e| ApplyError::Malformed(format!("not a category event: {e}")))?;
    let at = event.recorded_at;
    let mut view = match (current, decoded) {
        (None, CategoryEvent::CategoryCreated { id, name, slug, parent_id, description }) => {
            return Ok(CategoryView {
                id,
                name,
                slug,
                parent_id,
                description,
                created_at: at,
                updated_at: at,
                version: event.sequence,
                deleted: false,
            })
        }
        (Some(mut view), CategoryEvent::CategoryUpdated { name, slug, description, parent_id }) => {
            if let Some(name) = name {
                view.name = name;
            }
            if let Some(slug) = slug {
                view.slug = slug;
            }
            if let Some(description) = description {
                view.description = description;
            }
            if let Some(parent_id) = parent_id {
                view.parent_id = parent_id;
            }
            view
        }
        (Some(mut view), CategoryEvent::CategoryDeleted {}) => {
            view.deleted = true;
            view
        }
        (current, event) => {
            return Err(ApplyError::Malformed(format!(
                "{} cannot follow {}",
                cqrs_es::DomainEvent::event_type(&event),
                if current.is_some() { "an existing category" } else { "nothing" },
            )))
        }
    };
    view.updated_at = at;
    view.version = event.sequence;
    Ok(view)
}

const COLUMNS: &str = "id, name, slug, parent_id, description, created_at, updated_at, version, deleted";

/// A category by id, deleted ones included (callers check `deleted`).
pub async fn get<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> Result<Option<CategoryView>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM categories WHERE id = $1")).bind(id).fetch_optional(executor).await
}

/// Every live category, by name (id breaks ties).
pub async fn all_live<'e>(executor: impl PgExecutor<'e>) -> Result<Vec<CategoryView>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM categories WHERE NOT deleted ORDER BY name, id"))
        .fetch_all(executor)
        .await
}

/// The number of live, published products directly in each category (not counting
/// subcategories). Categories without such products are absent.
pub async fn product_counts<'e>(executor: impl PgExecutor<'e>) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT c.id, count(*)
           FROM products p CROSS JOIN LATERAL unnest(p.category_ids) AS c(id)
          WHERE NOT p.deleted AND p.status = 'published'
          GROUP BY c.id",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The live categories among `ids`, in the order of `ids`; unknown and deleted ones are left out.
pub async fn summaries<'e>(executor: impl PgExecutor<'e>, ids: &[Uuid]) -> Result<Vec<CategorySummary>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<CategorySummary> =
        sqlx::query_as("SELECT id, name, slug FROM categories WHERE id = ANY($1) AND NOT deleted")
            .bind(ids)
            .fetch_all(executor)
            .await?;
    let mut by_id: HashMap<Uuid, CategorySummary> = rows.into_iter().map(|row| (row.id, row)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

pub struct Categories;

impl ReadModel for Categories {
    type View = CategoryView;
    const AGGREGATE_TYPE: &'static str = "Category";
    const TABLE: &'static str = "categories";

    fn version(view: &CategoryView) -> i64 {
        view.version
    }

    fn apply(current: Option<CategoryView>, event: &CatalogEvent) -> Result<CategoryView, ApplyError> {
        apply(current, event)
    }

    fn fields(view: &CategoryView) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = crate::projection::serialized_fields(view);
        fields.insert("deleted".into(), view.deleted.into());
        fields
    }

    async fn load(pool: &sqlx::PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, CategoryView>, sqlx::Error> {
        let rows: Vec<CategoryView> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM categories WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(pool)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn load_for_update(
        connection: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, CategoryView>, sqlx::Error> {
        let rows: Vec<CategoryView> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM categories WHERE id = ANY($1) ORDER BY id FOR UPDATE"))
                .bind(ids)
                .fetch_all(connection)
                .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn save(connection: &mut PgConnection, table: &str, views: &[&CategoryView]) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "INSERT INTO {table} ({COLUMNS})
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[],
                                  $6::timestamptz[], $7::timestamptz[], $8::bigint[], $9::bool[])
             ON CONFLICT (id) DO UPDATE
                SET name = EXCLUDED.name, slug = EXCLUDED.slug, parent_id = EXCLUDED.parent_id,
                    description = EXCLUDED.description, updated_at = EXCLUDED.updated_at,
                    version = EXCLUDED.version, deleted = EXCLUDED.deleted
              WHERE {table}.version < EXCLUDED.version",
        ))
        .bind(views.iter().map(|v| v.id).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.slug.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.parent_id).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.description.as_str()).collect::<Vec<_>>())
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
            "Category".into(),
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

    fn created() -> CategoryView {
        let payload = json!({"CategoryCreated": {"id": Uuid::nil(), "name": "Lamps", "slug": "lamps",
                                                 "parent_id": Uuid::from_u128(1), "description": ""}});
        apply(None, &event(1, payload)).unwrap()
    }

    #[test]
    fn a_created_category_has_its_fields_and_version_one() {
        let view = created();
        assert_eq!((view.name.as_str(), view.slug.as_str()), ("Lamps", "lamps"));
        assert_eq!(view.parent_id, Some(Uuid::from_u128(1)));
        assert_eq!((view.version, view.deleted), (1, false));
    }

    #[test]
    fn a_rename_changes_only_the_given_fields() {
        let view = apply(Some(created()), &event(2, json!({"CategoryUpdated": {"name": "Lights"}}))).unwrap();
        assert_eq!((view.name.as_str(), view.slug.as_str(), view.version), ("Lights", "lamps", 2));
        assert_eq!(view.parent_id, Some(Uuid::from_u128(1)));
        let view =
            apply(Some(view), &event(3, json!({"CategoryUpdated": {"slug": "lights", "description": "All"}}))).unwrap();
        assert_eq!((view.slug.as_str(), view.description.as_str()), ("lights", "All"));
    }

    #[test]
    fn a_move_sets_or_clears_the_parent() {
        let view =
            apply(Some(created()), &event(2, json!({"CategoryUpdated": {"parent_id": Uuid::from_u128(2)}}))).unwrap();
        assert_eq!(view.parent_id, Some(Uuid::from_u128(2)));
        let view = apply(Some(view), &event(3, json!({"CategoryUpdated": {"parent_id": null}}))).unwrap();
        assert_eq!((view.parent_id, view.version), (None, 3));
    }

    #[test]
    fn a_delete_leaves_a_tombstone() {
        let view = apply(Some(created()), &event(2, json!({"CategoryDeleted": {}}))).unwrap();
        assert_eq!((view.deleted, view.version, view.name.as_str()), (true, 2, "Lamps"));
        assert_eq!(Categories::fields(&view)["deleted"], json!(true));
        assert!(serde_json::to_value(&view).unwrap().get("deleted").is_none());
    }

    #[test]
    fn malformed_or_out_of_place_events_are_refused() {
        assert!(matches!(apply(None, &event(1, json!({"Nonsense": {}}))), Err(ApplyError::Malformed(_))));
        assert!(matches!(apply(None, &event(1, json!({"CategoryDeleted": {}}))), Err(ApplyError::Malformed(_))));
        let created_again = json!({"CategoryCreated": {"id": Uuid::nil(), "name": "x", "slug": "x",
                                                       "parent_id": null, "description": ""}});
        assert!(apply(Some(created()), &event(2, created_again)).is_err());
    }
}
