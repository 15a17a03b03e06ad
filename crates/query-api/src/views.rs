//! What the read API serves, built from the read models' rows: a product with its price in its
//! currency's digits, its categories by name and its stock; the category tree; history entries.
//!
//! These are the types the handlers serialise and the OpenAPI schemas are derived from, so the
//! document describes exactly what is sent.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::{Currency, ProductStatus};
use read_model::categories::{self, CategorySummary, CategoryView};
use read_model::history::HistoryEntry;
use read_model::products::ProductView;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

/// A product as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18",
    "name": "Desk lamp",
    "description": "Warm light, dimmable",
    "price": "19.99",
    "currency": "EUR",
    "sku": "LAMP-1",
    "status": "published",
    "categories": [{"id": "5e0b1f6c-2a3d-4c8e-9f10-7a6b5c4d3e21", "name": "Lighting", "slug": "lighting"}],
    "attributes": {"colour": "brass"},
    "images": [{"url": "https://images.example.com/lamp.jpg", "alt": "The lamp, lit"}],
    "stock": {"on_hand": 12, "reserved": 2, "available": 10},
    "created_at": "2026-01-01T12:00:00Z",
    "updated_at": "2026-01-02T08:30:00Z",
    "version": 2
}))]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    /// Empty when none was given.
    pub description: String,
    /// Exact, as a string, with exactly the currency's fraction digits: `"19.99"` EUR, `"1999"`
    /// JPY, `"1.500"` BHD.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "19.99")]
    pub price: String,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
    /// The product's stock-keeping unit, `null` when it has none.
    #[schema(required = true, example = "LAMP-1")]
    pub sku: Option<String>,
    /// Shoppers only ever see `published`; admins see every status.
    #[schema(value_type = Status)]
    pub status: ProductStatus,
    /// The (live) categories the product is listed in, with their current names.
    pub categories: Vec<CategoryRef>,
    /// Free-form string attributes (brand, colour, material, ...).
    pub attributes: BTreeMap<String, String>,
    /// In display order.
    pub images: Vec<Image>,
    pub stock: Stock,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    /// The version these fields are at (the same number as the `ETag`).
    #[schema(minimum = 1)]
    pub version: i64,
    /// A tombstone: never served, only cached so that the 404 is cached too.
    #[serde(skip)]
    pub deleted: bool,
}

/// A product's status.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only described, never built: `domain::ProductStatus` is what is sent
pub enum Status {
    Draft,
    Published,
    Archived,
}

/// A category a product is listed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CategoryRef {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
}

/// A product image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Image {
    /// Absolute URL.
    #[schema(example = "https://images.example.com/lamp.jpg")]
    pub url: String,
    /// The text alternative, `null` when none was given.
    #[schema(required = true, example = "The lamp, lit")]
    pub alt: Option<String>,
}

/// Stock levels: units on hand, units held by open reservations, and what can still be
/// reserved (`on_hand - reserved`, never below 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Stock {
    #[schema(minimum = 0)]
    pub on_hand: i64,
    #[schema(minimum = 0)]
    pub reserved: i64,
    #[schema(minimum = 0)]
    pub available: i64,
}

impl Stock {
    pub fn new(on_hand: i64, reserved: i64) -> Self {
        Self { on_hand, reserved, available: (on_hand - reserved).max(0) }
    }
}

/// `amount` with exactly `currency`'s fraction digits. A code today's rules no longer accept
/// (a withdrawn currency, recorded when it was still current) keeps the amount as stored: the
/// events record it with that currency's digits already.
pub fn render_price(amount: rust_decimal::Decimal, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(currency) => currency.render(amount),
        Err(_) => amount.to_string(),
    }
}

impl Product {
    /// The product `view` describes, listed in those of `categories` it names (in its own
    /// order; categories not in `categories`, i.e. deleted or not projected yet, are left out).
    pub fn new(view: ProductView, categories: &HashMap<Uuid, CategorySummary>) -> Self {
        let categories = view
            .category_ids
            .iter()
            .filter_map(|id| categories.get(id))
            .map(|summary| CategoryRef { id: summary.id, name: summary.name.clone(), slug: summary.slug.clone() })
            .collect();
        Self {
            id: view.id,
            price: render_price(view.price, &view.currency),
            name: view.name,
            description: view.description,
            currency: view.currency,
            sku: view.sku,
            status: view.status,
            categories,
            attributes: view.attributes,
            images: view.images.into_iter().map(|image| Image { url: image.url, alt: image.alt }).collect(),
            stock: Stock::new(view.on_hand, view.reserved),
            created_at: view.created_at,
            updated_at: view.updated_at,
            version: view.version,
            deleted: view.deleted,
        }
    }

    /// Whether a reader who is not an admin may see it.
    pub fn is_public(&self) -> bool {
        !self.deleted && self.status == ProductStatus::Published
    }
}

/// Every category id `views` name, once each.
pub fn category_ids<'v>(views: impl IntoIterator<Item = &'v ProductView>) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    views.into_iter().flat_map(|view| view.category_ids.iter().copied()).filter(|id| seen.insert(*id)).collect()
}

/// The products `views` describe, with their categories' current names (one query for all).
pub async fn products(pool: &PgPool, views: Vec<ProductView>) -> Result<Vec<Product>, sqlx::Error> {
    let ids = category_ids(&views);
    let summaries = match ids.is_empty() {
        true => HashMap::new(),
        false => by_id(categories::summaries(pool, &ids).await?),
    };
    Ok(views.into_iter().map(|view| Product::new(view, &summaries)).collect())
}

/// Summaries by id.
pub fn by_id(summaries: Vec<CategorySummary>) -> HashMap<Uuid, CategorySummary> {
    summaries.into_iter().map(|summary| (summary.id, summary)).collect()
}

/// A category and, nested, its children.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "5e0b1f6c-2a3d-4c8e-9f10-7a6b5c4d3e21", "name": "Lighting", "slug": "lighting", "parent_id": null,
    "children": [{"id": "8c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "name": "Desk lamps", "slug": "desk-lamps",
                  "parent_id": "5e0b1f6c-2a3d-4c8e-9f10-7a6b5c4d3e21", "children": [], "product_count": 3}],
    "product_count": 1
}))]
pub struct CategoryNode {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    /// `null` for a top-level category.
    #[schema(required = true)]
    pub parent_id: Option<Uuid>,
    /// Its child categories, each with theirs, by name.
    #[schema(no_recursion)]
    pub children: Vec<CategoryNode>,
    /// Published, live products listed directly in this category (not in its descendants).
    #[schema(minimum = 0)]
    pub product_count: i64,
}

/// The tree of `categories` (live ones), children and roots by name (then id).
///
/// A category whose parent is not among them (the read model may hold a child before its
/// parent: the two are projected independently) is shown at the top level, with its
/// `parent_id`, rather than hidden; so is anything a transient cycle would cut off.
pub fn tree(mut categories: Vec<CategoryView>, counts: &HashMap<Uuid, i64>) -> Vec<CategoryNode> {
    categories.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
    let known: HashSet<Uuid> = categories.iter().map(|category| category.id).collect();
    let mut children: HashMap<Uuid, Vec<&CategoryView>> = HashMap::new();
    let mut roots = Vec::new();
    for category in &categories {
        match category.parent_id {
            Some(parent) if known.contains(&parent) && parent != category.id => {
                children.entry(parent).or_default().push(category)
            }
            _ => roots.push(category),
        }
    }
    let mut placed = HashSet::new();
    let mut nodes: Vec<CategoryNode> =
        roots.into_iter().map(|root| node(root, &children, counts, &mut placed)).collect();
    // Only a cycle leaves a category unplaced: show it where it can be seen.
    for category in &categories {
        if !placed.contains(&category.id) {
            nodes.push(node(category, &children, counts, &mut placed));
        }
    }
    nodes
}

fn node(
    category: &CategoryView,
    children: &HashMap<Uuid, Vec<&CategoryView>>,
    counts: &HashMap<Uuid, i64>,
    placed: &mut HashSet<Uuid>,
) -> CategoryNode {
    placed.insert(category.id);
    let mut kids = Vec::new();
    for child in children.get(&category.id).map(Vec::as_slice).unwrap_or_default() {
        // Checked as it goes: in a cycle, an earlier sibling's subtree may have placed it.
        if !placed.contains(&child.id) {
            kids.push(node(child, children, counts, placed));
        }
    }
    CategoryNode {
        id: category.id,
        name: category.name.clone(),
        slug: category.slug.clone(),
        parent_id: category.parent_id,
        children: kids,
        product_count: counts.get(&category.id).copied().unwrap_or(0),
    }
}

/// The node for `id` (with its subtree) anywhere in `nodes`.
pub fn find(nodes: Vec<CategoryNode>, id: Uuid) -> Option<CategoryNode> {
    let mut stack = nodes;
    while let Some(node) = stack.pop() {
        if node.id == id {
            return Some(node);
        }
        stack.extend(node.children);
    }
    None
}

/// One event of a product's history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({
    "version": 3, "type": "ProductUpdated", "at": "2026-01-02T08:30:00Z",
    "actor": "3f0c6c5e-8a48-5d7e-9d6c-2f1e0c1b7a42",
    "changes": [{"field": "price", "from": "19.99", "to": "17.50"},
                {"field": "status", "from": "draft", "to": "published"}]
}))]
pub struct HistoryItem {
    /// The product's version after this event.
    #[schema(minimum = 1)]
    pub version: i64,
    /// The event: `ProductCreated`, `ProductUpdated`, `ProductStockAdjusted`, `ProductDeleted`.
    #[serde(rename = "type")]
    #[schema(example = "ProductUpdated")]
    pub kind: String,
    /// When it was recorded.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// Who did it (a user id, or the tool that acted); `null` when not recorded.
    #[schema(required = true)]
    pub actor: Option<String>,
    /// Every field the event changed.
    pub changes: Vec<Change>,
}

/// One field an event changed, with its value before and after (`null`: none).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Change {
    /// The field as the product read model names it: `name`, `description`, `price` (a string
    /// in the currency's digits), `currency`, `sku`, `status`, `category_ids` (ids, not names),
    /// `attributes`, `images`, `on_hand`, `deleted`; a creation also lists `id` and `created_at`.
    #[schema(example = "price")]
    pub field: String,
    /// The value before (any JSON value; `null` when the field had none, e.g. on creation).
    #[schema(value_type = serde_json::Value)]
    pub from: serde_json::Value,
    /// The value after (any JSON value).
    #[schema(value_type = serde_json::Value)]
    pub to: serde_json::Value,
}

impl From<HistoryEntry> for HistoryItem {
    fn from(entry: HistoryEntry) -> Self {
        Self {
            version: entry.version,
            kind: entry.r#type,
            at: entry.at,
            actor: entry.actor,
            changes: entry
                .changes
                .into_iter()
                .map(|change| Change { field: change.field, from: change.from, to: change.to })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(name: &str, parent_id: Option<Uuid>) -> CategoryView {
        let now = Utc::now();
        CategoryView {
            id: Uuid::new_v4(),
            name: name.into(),
            slug: name.to_lowercase(),
            parent_id,
            description: String::new(),
            created_at: now,
            updated_at: now,
            version: 1,
            deleted: false,
        }
    }

    #[test]
    fn the_tree_nests_children_by_name_and_keeps_orphans_and_cycles_visible() {
        let lighting = category("Lighting", None);
        let desk = category("Desk", Some(lighting.id));
        let ceiling = category("Ceiling", Some(lighting.id));
        let bulbs = category("Bulbs", Some(desk.id));
        let orphan = category("Orphan", Some(Uuid::new_v4()));
        let mut a = category("A", None);
        let b = category("B", Some(a.id));
        a.parent_id = Some(b.id);
        let counts = HashMap::from([(desk.id, 2), (lighting.id, 1)]);
        let all =
            vec![bulbs.clone(), a.clone(), b.clone(), orphan.clone(), desk.clone(), ceiling.clone(), lighting.clone()];
        let nodes = tree(all, &counts);
        let names = |nodes: &[CategoryNode]| nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&nodes[..2]), ["Lighting", "Orphan"]);
        assert_eq!(names(&nodes[0].children), ["Ceiling", "Desk"]);
        assert_eq!(names(&nodes[0].children[1].children), ["Bulbs"]);
        assert_eq!((nodes[0].product_count, nodes[0].children[1].product_count), (1, 2));
        assert_eq!(nodes[1].parent_id, orphan.parent_id);
        // The cycle: both shown, each once.
        let rest: Vec<_> =
            nodes[2..].iter().flat_map(|n| [n.name.clone()].into_iter().chain(names(&n.children))).collect();
        assert_eq!(rest, ["A", "B"]);
        let subtree = find(tree(vec![bulbs.clone(), desk.clone(), lighting.clone()], &counts), desk.id).unwrap();
        assert_eq!((subtree.name.as_str(), names(&subtree.children)), ("Desk", vec!["Bulbs".to_owned()]));
    }

    #[test]
    fn prices_have_their_currency_digits() {
        let amount = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!(render_price(amount("19.9"), "EUR"), "19.90");
        assert_eq!(render_price(amount("1999"), "JPY"), "1999");
        assert_eq!(render_price(amount("1.5"), "BHD"), "1.500");
        assert_eq!(render_price(amount("7.50"), "HRK"), "7.50", "a withdrawn currency keeps the stored digits");
    }
}
