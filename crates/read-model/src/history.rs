//! The product history read model: one row per product event, with what it changed and the
//! product as it was after it. History pages and time travel (`as_of`, `at_version`) read it,
//! never the event store.
//!
//! As a [`ReadModel`] its view is a product's latest row (version and state) plus the rows to
//! insert: the fold is [`products::apply`], and each event adds a [`HistoryRecord`] whose
//! `changes` are the fields whose serialised value differs before and after the event. Rows
//! are only inserted (`ON CONFLICT DO NOTHING`), so a redelivered event changes nothing.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::products::{self, ProductView};
use crate::projection::{ApplyError, ReadModel};
use event_store::CatalogEvent;

/// Fields that change with every event, so listing them would say nothing.
const UNLISTED: &[&str] = &["version", "updated_at"];

/// One field an event changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    /// As the product view serialises it; `null` for a field the product did not have yet.
    pub from: Value,
    pub to: Value,
}

/// One event in a product's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The product's version after the event.
    pub version: i64,
    /// The event type: `ProductCreated`, `ProductUpdated`, `ProductStockAdjusted`, `ProductDeleted`,
    /// and the reservation steps `ProductStockReserved`, `ProductStockReleased`, `ProductStockCommitted`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// When the event was recorded.
    pub at: DateTime<Utc>,
    /// Who caused it (the event's `metadata.actor`), when known.
    pub actor: Option<String>,
    /// Each changed field (by name); every field of the new product for a creation.
    pub changes: Vec<FieldChange>,
}

/// An entry and the product as it was after it: one row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRecord {
    pub entry: HistoryEntry,
    pub state: ProductView,
    /// `state` as the row stores it (its fields and `deleted`): computed once, when the entry's
    /// changes are, and written as is.
    state_fields: Map<String, Value>,
}

/// A product's history as the model folds it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryView {
    pub product_id: Uuid,
    /// The latest version recorded.
    pub version: i64,
    /// The product after that version (a deleted one with `deleted`).
    pub state: ProductView,
    /// Rows: the ones to insert after a fold; every row when loaded for `verify`.
    pub records: Vec<HistoryRecord>,
}

/// Folds one product event into the history. Pure, like every read model's `apply`.
pub fn apply(current: Option<HistoryView>, event: &CatalogEvent) -> Result<HistoryView, ApplyError> {
    let (before, mut records) = match current {
        Some(view) => (Some(view.state), view.records),
        None => (None, Vec::new()),
    };
    // The fields before are those the previous record of this fold stored, when there is one:
    // each state is serialised once.
    let loaded_fields = if records.is_empty() { before.as_ref().map(products::fields) } else { None };
    let state = products::apply(before, event)?;
    let state_fields = products::fields(&state);
    let before_fields = records.last().map(|previous| &previous.state_fields).or(loaded_fields.as_ref());
    let entry = HistoryEntry {
        version: event.sequence,
        r#type: event.event_type.clone(),
        at: event.recorded_at,
        actor: event.metadata.get("actor").and_then(Value::as_str).map(str::to_owned),
        changes: changes_between(before_fields, &state_fields),
    };
    records.push(HistoryRecord { entry, state: state.clone(), state_fields });
    Ok(HistoryView { product_id: state.id, version: event.sequence, state, records })
}

/// The fields that differ between `before` and `after`, by name; for a creation (no `before`)
/// every field, from `null`.
pub fn changes(before: Option<&ProductView>, after: &ProductView) -> Vec<FieldChange> {
    changes_between(before.map(products::fields).as_ref(), &products::fields(after))
}

/// [`changes`] between the views' fields.
fn changes_between(before: Option<&Map<String, Value>>, after: &Map<String, Value>) -> Vec<FieldChange> {
    let names: BTreeSet<&String> = after.keys().chain(before.into_iter().flat_map(|before| before.keys())).collect();
    names
        .into_iter()
        .filter(|name| !UNLISTED.contains(&name.as_str()))
        .filter_map(|name| {
            let to = after.get(name).cloned().unwrap_or(Value::Null);
            let from = match &before {
                None => return Some(FieldChange { field: name.clone(), from: Value::Null, to }),
                Some(before) => before.get(name).cloned().unwrap_or(Value::Null),
            };
            (from != to).then(|| FieldChange { field: name.clone(), from, to })
        })
        .collect()
}

/// How a state is stored: the view's fields and `deleted`.
fn state_json(view: &ProductView) -> Value {
    Value::Object(products::fields(view))
}

fn changes_json(changes: &[FieldChange]) -> Value {
    serde_json::to_value(changes).unwrap_or_default()
}

fn state_from_json(state: Value) -> Result<ProductView, sqlx::Error> {
    let deleted = state.get("deleted").and_then(Value::as_bool).unwrap_or(false);
    let mut view: ProductView = serde_json::from_value(state)
        .map_err(|e| sqlx::Error::ColumnDecode { index: "state".into(), source: Box::new(e) })?;
    view.deleted = deleted;
    Ok(view)
}

/// A product's history, newest first: at most `limit` entries, those older than
/// `before_version` when given (the cursor of the next page).
pub async fn page<'e>(
    executor: impl PgExecutor<'e>,
    product_id: Uuid,
    limit: i64,
    before_version: Option<i64>,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT version, type, at, actor, changes FROM product_history
          WHERE product_id = $1 AND ($2::bigint IS NULL OR version < $2)
          ORDER BY version DESC
          LIMIT $3",
    )
    .bind(product_id)
    .bind(before_version)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(EntryRow::into_entry).collect())
}

/// The product as it was at `at`: after the last of its events recorded at or before `at`
/// (with `deleted` if that was its deletion). `None` if it did not exist yet.
pub async fn as_of<'e>(
    executor: impl PgExecutor<'e>,
    product_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<ProductView>, sqlx::Error> {
    let state: Option<Value> = sqlx::query_scalar(
        "SELECT state FROM product_history WHERE product_id = $1 AND at <= $2
          ORDER BY at DESC, version DESC LIMIT 1",
    )
    .bind(product_id)
    .bind(at)
    .fetch_optional(executor)
    .await?;
    state.map(state_from_json).transpose()
}

/// The product as it was at `version` (with `deleted` if that was its deletion). `None` if it
/// has no such version (yet).
pub async fn at_version<'e>(
    executor: impl PgExecutor<'e>,
    product_id: Uuid,
    version: i64,
) -> Result<Option<ProductView>, sqlx::Error> {
    let state: Option<Value> =
        sqlx::query_scalar("SELECT state FROM product_history WHERE product_id = $1 AND version = $2")
            .bind(product_id)
            .bind(version)
            .fetch_optional(executor)
            .await?;
    state.map(state_from_json).transpose()
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    version: i64,
    r#type: String,
    at: DateTime<Utc>,
    actor: Option<String>,
    changes: Json<Vec<FieldChange>>,
}

impl EntryRow {
    fn into_entry(self) -> HistoryEntry {
        let Json(changes) = self.changes;
        HistoryEntry { version: self.version, r#type: self.r#type, at: self.at, actor: self.actor, changes }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    product_id: Uuid,
    #[sqlx(flatten)]
    entry: EntryRow,
    state: Value,
}

/// Groups rows (ordered by product, then version) into views; `keep_records` keeps them all.
fn views(rows: Vec<Row>, keep_records: bool) -> Result<HashMap<Uuid, HistoryView>, sqlx::Error> {
    let mut views: HashMap<Uuid, HistoryView> = HashMap::new();
    for row in rows {
        // Only kept records are ever written again.
        let state_fields = match &row.state {
            Value::Object(map) if keep_records => map.clone(),
            _ => Map::new(),
        };
        let state = state_from_json(row.state)?;
        let record = HistoryRecord { entry: row.entry.into_entry(), state, state_fields };
        let view = views.entry(row.product_id).or_insert_with(|| HistoryView {
            product_id: row.product_id,
            version: record.entry.version,
            state: record.state.clone(),
            records: Vec::new(),
        });
        view.version = record.entry.version;
        view.state = record.state.clone();
        if keep_records {
            view.records.push(record);
        }
    }
    Ok(views)
}

pub struct History;

impl ReadModel for History {
    type View = HistoryView;
    const AGGREGATE_TYPE: &'static str = "Product";
    const TABLE: &'static str = "product_history";
    const ID_COLUMN: &'static str = "product_id";

    fn version(view: &HistoryView) -> i64 {
        view.version
    }

    fn rows(view: &HistoryView) -> u64 {
        view.records.len() as u64
    }

    fn apply(current: Option<HistoryView>, event: &CatalogEvent) -> Result<HistoryView, ApplyError> {
        apply(current, event)
    }

    /// The latest version and state, and each recorded event as `v<version>`.
    fn fields(view: &HistoryView) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("version".into(), view.version.into());
        fields.insert("state".into(), state_json(&view.state));
        for record in &view.records {
            let mut entry = match serde_json::to_value(&record.entry) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            };
            entry.insert("state".into(), state_json(&record.state));
            fields.insert(format!("v{}", record.entry.version), Value::Object(entry));
        }
        fields
    }

    /// Every row of each product, for `verify`.
    async fn load(pool: &sqlx::PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, HistoryView>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT product_id, version, type, at, actor, changes, state FROM product_history
              WHERE product_id = ANY($1) ORDER BY product_id, version",
        )
        .bind(ids)
        .fetch_all(pool)
        .await?;
        views(rows, true)
    }

    /// The latest row of each product, locked; no records (those are what a fold adds).
    async fn load_for_update(
        connection: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, HistoryView>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT h.product_id, h.version, h.type, h.at, h.actor, h.changes, h.state
               FROM unnest($1::uuid[]) AS ids(id)
               CROSS JOIN LATERAL (SELECT * FROM product_history WHERE product_id = ids.id
                                    ORDER BY version DESC LIMIT 1 FOR UPDATE) AS h
              ORDER BY h.product_id",
        )
        .bind(ids)
        .fetch_all(connection)
        .await?;
        views(rows, false)
    }

    /// Inserts the views' records; rows already there are left as they are.
    async fn save(connection: &mut PgConnection, table: &str, views: &[&HistoryView]) -> Result<(), sqlx::Error> {
        let records: Vec<(Uuid, &HistoryRecord)> =
            views.iter().flat_map(|view| view.records.iter().map(|record| (view.product_id, record))).collect();
        if records.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {table} (product_id, version, type, at, actor, changes, state)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[],
                                  $6::jsonb[], $7::jsonb[])
             ON CONFLICT (product_id, version) DO NOTHING",
        ))
        .bind(records.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(records.iter().map(|(_, r)| r.entry.version).collect::<Vec<_>>())
        .bind(records.iter().map(|(_, r)| r.entry.r#type.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|(_, r)| r.entry.at).collect::<Vec<_>>())
        .bind(records.iter().map(|(_, r)| r.entry.actor.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|(_, r)| changes_json(&r.entry.changes)).collect::<Vec<_>>())
        .bind(records.iter().map(|(_, r)| Json(&r.state_fields)).collect::<Vec<_>>())
        .execute(connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::tests::{created, event};
    use serde_json::json;

    fn change(field: &str, from: Value, to: Value) -> FieldChange {
        FieldChange { field: field.into(), from, to }
    }

    fn history(events: &[CatalogEvent]) -> HistoryView {
        let mut view = None;
        for event in events {
            view = Some(apply(view, event).unwrap());
        }
        view.unwrap()
    }

    #[test]
    fn each_record_stores_the_fields_of_its_state_and_the_changes_from_the_state_before() {
        let events = [
            created(),
            event(2, json!({"ProductUpdated": {"price": "5.00", "attributes": {"colour": "blue"}}})),
            event(3, json!({"ProductStockAdjusted": {"delta": 2, "reason": "count", "on_hand": 5}})),
            event(4, json!({"ProductDeleted": {}})),
        ];
        // Folded in one go (each record's state serialised once, reused for the next changes)...
        let view = history(&events);
        let mut before: Option<ProductView> = None;
        for record in &view.records {
            assert_eq!(Value::Object(record.state_fields.clone()), state_json(&record.state));
            assert_eq!(record.entry.changes, changes(before.as_ref(), &record.state), "v{}", record.entry.version);
            before = Some(record.state.clone());
        }
        // ...or continuing from a loaded row (no records, as `load_for_update` gives it).
        let loaded = HistoryView { records: Vec::new(), ..history(&events[..2]) };
        let continued = events[2..].iter().try_fold(loaded, |view, e| apply(Some(view), e)).unwrap();
        assert_eq!(continued.records, view.records[2..]);
    }

    #[test]
    fn a_creation_lists_every_field_from_null() {
        let view = history(&[created()]);
        assert_eq!((view.version, view.records.len()), (1, 1));
        let entry = &view.records[0].entry;
        assert_eq!((entry.version, entry.r#type.as_str()), (1, "ProductCreated"));
        assert_eq!(entry.actor.as_deref(), Some("admin"));
        let fields: Vec<&str> = entry.changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "attributes",
                "category_ids",
                "created_at",
                "currency",
                "deleted",
                "description",
                "id",
                "images",
                "name",
                "on_hand",
                "price",
                "reserved",
                "sku",
                "status"
            ]
        );
        assert!(entry.changes.iter().all(|c| c.from.is_null()));
        assert!(entry.changes.contains(&change("price", Value::Null, json!("19.99"))));
        assert!(entry.changes.contains(&change("status", Value::Null, json!("draft"))));
        assert_eq!(view.records[0].state, view.state);
    }

    #[test]
    fn an_update_lists_only_what_changed_with_from_and_to() {
        let view = history(&[
            created(),
            event(
                2,
                json!({"ProductUpdated": {"name": "Lamp", "currency": "BHD", "price": "19.990",
                                                "attributes": {"colour": "blue"}}}),
            ),
        ]);
        let entry = &view.records[1].entry;
        assert_eq!((entry.version, entry.r#type.as_str()), (2, "ProductUpdated"));
        assert_eq!(
            entry.changes,
            [
                change("attributes", json!({"colour": "red"}), json!({"colour": "blue"})),
                change("currency", json!("EUR"), json!("BHD")),
                change("price", json!("19.99"), json!("19.990")),
            ]
        );
    }

    #[test]
    fn a_status_change_a_stock_adjustment_and_a_delete_each_show_their_field() {
        let view = history(&[
            created(),
            event(2, json!({"ProductUpdated": {"status": "published"}})),
            event(3, json!({"ProductStockAdjusted": {"delta": -2, "reason": "sold", "on_hand": 1}})),
            event(4, json!({"ProductDeleted": {}})),
        ]);
        let changes: Vec<(&str, &[FieldChange])> =
            view.records.iter().map(|r| (r.entry.r#type.as_str(), r.entry.changes.as_slice())).collect();
        assert_eq!(changes[1], ("ProductUpdated", &[change("status", json!("draft"), json!("published"))][..]));
        assert_eq!(changes[2], ("ProductStockAdjusted", &[change("on_hand", json!(3), json!(1))][..]));
        assert_eq!(changes[3], ("ProductDeleted", &[change("deleted", json!(false), json!(true))][..]));
        assert_eq!(view.version, 4);
        assert!(view.state.deleted && view.records[3].state.deleted && !view.records[2].state.deleted);
        assert_eq!(view.records[2].state.on_hand, 1);
    }

    #[test]
    fn an_update_that_changes_nothing_lists_nothing() {
        let view = history(&[created(), event(2, json!({"ProductUpdated": {"name": "Lamp"}}))]);
        assert!(view.records[1].entry.changes.is_empty());
    }

    #[test]
    fn entries_serialise_with_type_and_states_keep_deleted() {
        let view = history(&[created(), event(2, json!({"ProductDeleted": {}}))]);
        let entry = serde_json::to_value(&view.records[1].entry).unwrap();
        assert_eq!(entry["type"], json!("ProductDeleted"));
        assert_eq!(entry["actor"], json!("admin"));
        let state = state_from_json(state_json(&view.state)).unwrap();
        assert_eq!(state, view.state);
        assert!(state.deleted);
    }

    #[test]
    fn verify_compares_the_latest_state_and_every_entry() {
        let view = history(&[created(), event(2, json!({"ProductUpdated": {"name": "Desk"}}))]);
        let fields = History::fields(&view);
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(names, ["state", "v1", "v2", "version"]);
        assert_eq!(fields["v2"]["changes"], json!([{"field": "name", "from": "Lamp", "to": "Desk"}]));
        assert_eq!(fields["v2"]["state"]["name"], json!("Desk"));
    }

    #[test]
    fn events_out_of_place_are_refused_as_by_the_products_fold() {
        assert!(matches!(apply(None, &event(1, json!({"ProductDeleted": {}}))), Err(ApplyError::Malformed(_))));
    }
}
