//! Finding products: full-text search with typo tolerance, filters, sorts, keyset pages, counts
//! and facets, over the products read model (`migrations/*_product_search.sql`).
//!
//! # Text
//! `search_document` (a generated column) holds every word of a product's name and SKU (weight
//! A), attribute values (B) and description (C), each both stemmed (`english`) and as written
//! (`simple`). A query's words are parsed by Postgres the same way ([`prepare_text`]); every word
//! must match (as written, or by its stem), and the last one also as a prefix, since it may be
//! half typed. When no product matches the words (with the filters), the search is *fuzzy*
//! instead: trigram word similarity (`pg_trgm`, `%>`) between the query and `search_text`
//! (name, SKU and brand), so `espreso` finds "Espresso machine". The mode is decided on the
//! first page and kept by its cursor.
//!
//! # Pages
//! Every sort is total (the id breaks ties, in the sort's direction), so a page continues after
//! the last row of the previous one ([`Position`]). Pages after the first are *frozen* at the
//! instant of the first page: a product that changed since then is placed (and filtered) as it
//! was at that instant (from `product_history`), so a change that moves it cannot make it
//! appear twice or be skipped, and products created since are left for a new listing. What a
//! page returns is always the product as it is now; one that was deleted since, or that the
//! reader may no longer see, is left out.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::ProductStatus;
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::products::ProductView;

/// The attribute that the `brand` facet counts.
pub const BRAND: &str = "brand";

/// Lower bounds of the price facet's ranges (after the first, which starts at 0); the last range
/// is open.
const PRICE_BOUNDS: &[i64] = &[
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000,
];

/// Entries a value facet (`category`, `brand`) lists at most, most frequent first.
pub const FACET_ENTRIES: i64 = 100;

/// By default ([`Limits::sample`]), a relevance listing ranks at most this many matches: the
/// first ones the index finds, not the best of all. Ranking needs each match's row (its words and their weights), and a common
/// word matches tens of thousands of products at a million: ranking all of "lamp" (44,000
/// matches) read 39,000 table pages per page of results. Beyond this many matches, a relevance
/// listing is the best of a sample and ends after this many items; other sorts list every
/// match.
/// Facets count at most as many matching products each; when more match, the counts are the
/// sample's scaled to the number of matches and marked as estimates ([`Facets::estimated`]).
/// Counting reads every match's row, like ranking.
pub const DEFAULT_SAMPLE: i64 = 1_000;

/// How far a listing counts and ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The total is exact up to this many matches.
    pub exact_total: i64,
    /// A relevance listing ranks at most this many matches, and each facet counts at most this
    /// many (see [`DEFAULT_SAMPLE`]).
    pub sample: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { exact_total: 10_000, sample: DEFAULT_SAMPLE }
    }
}

/// With a search text, a planner estimate this many times the exact-total limit is trusted to be
/// above it (and is the total) without counting: counting reads every match's row up to the limit.
/// Never below [`TRUSTED_TEXT_ESTIMATE_FLOOR`].
pub const TRUSTED_TEXT_ESTIMATE_FACTOR: i64 = 2;
pub const TRUSTED_TEXT_ESTIMATE_FLOOR: i64 = 10_000;

/// Which products a listing matches. Every field narrows it; `None` or empty narrows nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// `None`: every status. Readers who are not admins pass `Some(vec![Published])`.
    pub statuses: Option<Vec<ProductStatus>>,
    pub text: Option<Text>,
    /// Products listed in any of these categories (the filter's category and its descendants).
    pub categories: Option<Vec<Uuid>>,
    pub currency: Option<String>,
    /// Inclusive.
    pub price_min: Option<Decimal>,
    /// Inclusive.
    pub price_max: Option<Decimal>,
    /// `true`: on hand > 0; `false`: none on hand.
    pub in_stock: Option<bool>,
    /// Attribute key and the values it may have: values of one key are alternatives, keys must
    /// all match.
    pub attributes: Vec<(String, Vec<String>)>,
}

/// A search text, ready for SQL (see [`prepare_text`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// The query as typed (trimmed), for trigram similarity.
    pub raw: String,
    /// The words as a `tsquery` (text form); `None` when the text has no searchable word.
    pub tsquery: Option<String>,
    /// Match by trigram similarity instead of by words.
    pub fuzzy: bool,
}

/// An order of the listing. Each is total: ties are broken by id, in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sort {
    /// Best match first (needs a text).
    Relevance,
    Price,
    PriceDesc,
    Name,
    NameDesc,
    Created,
    CreatedDesc,
    Updated,
    UpdatedDesc,
}

impl Sort {
    pub const ALL: [Sort; 9] = [
        Sort::Relevance,
        Sort::Price,
        Sort::PriceDesc,
        Sort::Name,
        Sort::NameDesc,
        Sort::Created,
        Sort::CreatedDesc,
        Sort::Updated,
        Sort::UpdatedDesc,
    ];

    /// As the API names it: `price`, `-price`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Relevance => "relevance",
            Sort::Price => "price",
            Sort::PriceDesc => "-price",
            Sort::Name => "name",
            Sort::NameDesc => "-name",
            Sort::Created => "created",
            Sort::CreatedDesc => "-created",
            Sort::Updated => "updated",
            Sort::UpdatedDesc => "-updated",
        }
    }

    pub fn parse(raw: &str) -> Option<Sort> {
        Sort::ALL.into_iter().find(|sort| sort.as_str() == raw)
    }

    fn descending(self) -> bool {
        matches!(self, Sort::Relevance | Sort::PriceDesc | Sort::NameDesc | Sort::CreatedDesc | Sort::UpdatedDesc)
    }
}

/// The value a row is sorted by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    /// A relevance score (`ts_rank` or trigram similarity), compared exactly.
    Rank(f32),
    Price(Decimal),
    Name(String),
    At(DateTime<Utc>),
}

/// Where a row stands in a sort: a page continues after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub key: SortKey,
    pub id: Uuid,
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Skip this many rows (the first page is `Offset(0)`).
    Offset(i64),
    /// After `position`, placing products as they were at `frozen_at` (the first page's
    /// instant; `None`: as they are now).
    After { position: Position, frozen_at: Option<DateTime<Utc>> },
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The products as they are now, in the listing's order.
    pub items: Vec<ProductView>,
    /// The position of the page's last row, when more rows follow (the next page starts after
    /// it). A row left out of `items` (deleted since) still counts.
    pub next: Option<Position>,
    /// The instant the listing is frozen at: the cursor's, or now (the transaction's start) when
    /// the page was not frozen.
    pub frozen_at: DateTime<Utc>,
}

/// Facet counts: every entry counts the products that match the filter, except the facet's
/// own part of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facets {
    pub category: Option<Vec<CategoryCount>>,
    pub brand: Option<Vec<ValueCount>>,
    pub price: Option<Vec<PriceRangeCount>>,
    /// More than [`Limits::sample`] products matched: the counts are estimates (a sample's counts,
    /// scaled).
    pub estimated: bool,
}

/// Products in a category or any of its descendants.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CategoryCount {
    pub id: Uuid,
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ValueCount {
    pub value: String,
    pub count: i64,
}

/// Products priced from `min` (inclusive) to `max` (exclusive; `None`: no upper bound).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceRangeCount {
    pub min: Decimal,
    pub max: Option<Decimal>,
    pub count: i64,
}

/// Which facets to count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FacetRequest {
    pub category: bool,
    pub brand: bool,
    pub price: bool,
}

/// Parts of the filter a facet leaves out.
#[derive(Debug, Clone, Copy, Default)]
struct Except {
    category: bool,
    brand: bool,
    price: bool,
}

const COLUMNS: &str = "p.id, p.name, p.description, p.price, p.currency, p.sku, p.status, p.category_ids, \
                       p.attributes, p.images, p.on_hand, p.reserved, p.created_at, p.updated_at, p.version, p.deleted";

/// The columns of a product's row as it was (see [`Source::AsItWas`]), besides the search columns.
const SOURCE_COLUMNS: &str = "id, name, description, price, currency, sku, status, category_ids, attributes, \
                              images, on_hand, reserved, created_at, updated_at, version, deleted";

/// `q` as a search: its words as Postgres parses a product's text (so `LAMP-1` or `e-mail`
/// split the same way), each matching as written or by its English stem, the last as a prefix
/// too (unless the text ends with a space: the word is finished). Stop words (`the`, `and`)
/// are left out unless nothing else is left or it is the word being typed.
pub async fn prepare_text(connection: &mut PgConnection, q: &str) -> Result<Text, sqlx::Error> {
    let raw = q.trim().to_owned();
    let typing = !q.ends_with(char::is_whitespace);
    let tsquery: Option<String> = sqlx::query_scalar(
        r"WITH words AS (
              SELECT w.lexeme, max(p) AS position, coalesce(ts_lexize('english_stem', w.lexeme), '{}') AS stems
                FROM unnest(to_tsvector('simple', $1)) w, unnest(w.positions) p
               GROUP BY w.lexeme
          ),
          marked AS (
              SELECT lexeme, stems, position = max(position) OVER () AND $2 AS last FROM words
          ),
          terms AS (
              SELECT lexeme, stems, last AND length(lexeme) >= 2 AS prefix FROM marked
               WHERE stems <> '{}' OR last OR NOT EXISTS (SELECT 1 FROM marked WHERE stems <> '{}')
          )
          SELECT string_agg(
                     '(' || (SELECT string_agg(DISTINCT '''' || replace(replace(form, '\', '\\'), '''', '''''')
                                                        || '''' || CASE WHEN prefix THEN ':*' ELSE '' END, ' | ')
                               FROM unnest(lexeme || stems) form WHERE form <> '') || ')',
                     ' & ')
            FROM terms",
    )
    .bind(&raw)
    .bind(typing)
    .fetch_one(&mut *connection)
    .await?;
    Ok(Text { raw: raw.to_lowercase(), tsquery, fuzzy: false })
}

/// The ids of live category `category` and of its live descendants (none if it is unknown or
/// deleted). `slug` finds it by slug instead of by id.
pub async fn category_and_descendants(
    connection: &mut PgConnection,
    id: Option<Uuid>,
    slug: Option<&str>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids: Vec<Uuid> = sqlx::query_scalar(
        "WITH RECURSIVE tree(id, depth) AS (
             SELECT id, 0 FROM categories WHERE NOT deleted AND (id = $1 OR slug = $2)
             UNION ALL
             SELECT c.id, t.depth + 1 FROM categories c JOIN tree t ON c.parent_id = t.id
              WHERE NOT c.deleted AND t.depth < 32
         )
         SELECT id FROM tree",
    )
    .bind(id)
    .bind(slug)
    .fetch_all(connection)
    .await?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// With no search text, a planner estimate this many times the exact-total limit is trusted to
/// be above it (and is the total) without counting; never below [`TRUSTED_ESTIMATE_FLOOR`].
pub const TRUSTED_ESTIMATE_FACTOR: i64 = 10;
pub const TRUSTED_ESTIMATE_FLOOR: i64 = 100_000;

/// A listing's page with its total and facets, from one snapshot (see [`list`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub page: Page,
    /// How many products pass the filter: exact up to the exact-total limit (or whenever facets
    /// counted them all), otherwise the planner's estimate.
    pub total: i64,
    pub total_is_estimate: bool,
    pub facets: Option<Facets>,
    /// The text search went fuzzy (its words matched nothing): the cursor must say so.
    pub fuzzy: bool,
}

/// Everything `GET /api/v1/products` reads, in the order it reads it: the page; a text search
/// whose words match nothing on a first or offset page goes fuzzy and is read again; the
/// facets when asked for; and the total, counted up to `exact_total_limit` (no count when the
/// page holds every match, when the facets counted them, or when, without a text, the planner
/// expects far more), else estimated. Run it in a REPEATABLE READ transaction so that all of it
/// agrees.
pub async fn list(
    connection: &mut PgConnection,
    mut filter: Filter,
    sort: Sort,
    limit: i64,
    start: &Start,
    facet_request: FacetRequest,
    limits: Limits,
) -> Result<Listing, sqlx::Error> {
    let exact_total_limit = limits.exact_total;
    // A search sorted by a column, when the planner expects few enough matches to count: the
    // page and the count in one statement, so the words are looked up in the index once.
    let mut precounted = None;
    let mut page = match (&filter.text, start) {
        (Some(text), Start::Offset(offset))
            if !text.fuzzy && sort != Sort::Relevance && facet_request == FacetRequest::default() =>
        {
            let planned = estimate(connection, &filter).await?;
            if planned >= trusted_text_estimate(exact_total_limit) {
                precounted = Some((planned, true));
                self::page(connection, &filter, sort, limit, start, limits.sample).await?
            } else {
                let (page, matched) =
                    page_counted(connection, &filter, sort, limit, *offset, exact_total_limit + 1).await?;
                precounted = matched.map(|matched| match matched <= exact_total_limit {
                    true => (matched, false),
                    false => (planned.max(exact_total_limit + 1), true),
                });
                page
            }
        }
        _ => self::page(connection, &filter, sort, limit, start, limits.sample).await?,
    };
    if let (Some(text), Start::Offset(offset)) = (&filter.text, start) {
        if !text.fuzzy && page.items.is_empty() && (*offset == 0 || !exists(connection, &filter).await?) {
            if let Some(text) = &mut filter.text {
                text.fuzzy = true;
            }
            precounted = None;
            page = self::page(connection, &filter, sort, limit, start, limits.sample).await?;
        }
    }
    let (mut facets, counted, sampled) = match facet_request == FacetRequest::default() {
        true => (None, None, None),
        false => {
            let (facets, counted) = self::facets(connection, &filter, facet_request, limits.sample).await?;
            match counted {
                Counted::All(n) => (Some(facets), Some(n), None),
                Counted::Sample(n) => (Some(facets), None, Some(n)),
                Counted::Separately => (Some(facets), None, None),
            }
        }
    };
    // A capped relevance listing can end before the matches do.
    let ranked_to_the_end = |listed: i64| !ranks_sample(&filter, sort) || listed < limits.sample;
    let (total, total_is_estimate) = match (start, &page.next, counted, precounted) {
        (_, _, Some(counted), _) => (counted, false),
        // Nothing follows this first or offset page: the count is in hand.
        (Start::Offset(offset), None, None, _)
            if (!page.items.is_empty() || *offset == 0) && ranked_to_the_end(offset + page.items.len() as i64) =>
        {
            (offset + page.items.len() as i64, false)
        }
        (_, _, None, Some(precounted)) => precounted,
        _ => total(connection, &filter, exact_total_limit).await?,
    };
    if let (Some(facets), Some(sampled)) = (&mut facets, sampled) {
        scale(facets, total.max(sampled), sampled);
        facets.estimated = true;
    }
    let fuzzy = filter.text.as_ref().is_some_and(|text| text.fuzzy);
    Ok(Listing { page, total, total_is_estimate, facets, fuzzy })
}

/// The total and whether it is an estimate: products are counted up to `limit`; beyond, the
/// planner's estimate answers (at least `limit + 1`). An estimate far above the limit
/// ([`TRUSTED_ESTIMATE_FACTOR`] times without a search text, [`TRUSTED_TEXT_ESTIMATE_FACTOR`]
/// with one, whose estimates are less sure) is trusted without counting.
async fn total(connection: &mut PgConnection, filter: &Filter, limit: i64) -> Result<(i64, bool), sqlx::Error> {
    let planned = estimate(connection, filter).await?;
    let trusted = match filter.text {
        None => (limit.saturating_mul(TRUSTED_ESTIMATE_FACTOR)).max(TRUSTED_ESTIMATE_FLOOR),
        Some(_) => trusted_text_estimate(limit),
    };
    if planned >= trusted {
        return Ok((planned, true));
    }
    let counted = count(connection, filter, limit + 1).await?;
    if counted <= limit {
        return Ok((counted, false));
    }
    Ok((planned.max(limit + 1), true))
}

/// With a search text, the estimate above which it is the total without counting.
fn trusted_text_estimate(exact_total_limit: i64) -> i64 {
    (exact_total_limit.saturating_mul(TRUSTED_TEXT_ESTIMATE_FACTOR)).max(TRUSTED_TEXT_ESTIMATE_FLOOR)
}

/// A first or offset page sorted by a column (not relevance), with how many products pass
/// `filter`, counted up to `cap` in the same statement (`None` when the page is empty: nothing
/// was counted).
async fn page_counted(
    connection: &mut PgConnection,
    filter: &Filter,
    sort: Sort,
    limit: i64,
    offset: i64,
    cap: i64,
) -> Result<(Page, Option<i64>), sqlx::Error> {
    let direction = if sort.descending() { " DESC" } else { "" };
    let mut query = QueryBuilder::new(format!(
        "SELECT {COLUMNS}, top.sort_key, top.matched, now() AS listed_at FROM (SELECT p.id, "
    ));
    push_sort_key(&mut query, filter, sort);
    query.push(
        " AS sort_key, count(*) OVER () AS matched \
           FROM (SELECT p.id, p.price, p.name, p.created_at, p.updated_at FROM products p",
    );
    push_filter(&mut query, filter, Except::default());
    query.push(" LIMIT ").push_bind(cap).push(") p ORDER BY ");
    push_sort_key(&mut query, filter, sort);
    query.push(format_args!("{direction}, p.id{direction} LIMIT "));
    query.push_bind(limit + 1).push(" OFFSET ").push_bind(offset);
    query.push(format_args!(
        ") top JOIN products p ON p.id = top.id ORDER BY top.sort_key{direction}, top.id{direction}"
    ));
    let rows = query.build().persistent(false).fetch_all(&mut *connection).await?;
    let more = rows.len() as i64 > limit;
    let matched = match rows.first() {
        Some(row) => Some(row.try_get::<i64, _>("matched")?),
        None => None,
    };
    let rows = &rows[..rows.len().min(limit as usize)];
    let (listed_at, next) = page_end(connection, rows, more, sort).await?;
    let items = rows.iter().map(sqlx::FromRow::from_row).collect::<Result<_, sqlx::Error>>()?;
    Ok((Page { items, next, frozen_at: listed_at }, matched))
}

/// Products that pass `filter`, in `sort` order: `limit` rows from `start`. Sorting by
/// relevance without a text sorts by creation; with one, it ranks the first `sample` matches.
pub async fn page(
    connection: &mut PgConnection,
    filter: &Filter,
    sort: Sort,
    limit: i64,
    start: &Start,
    sample: i64,
) -> Result<Page, sqlx::Error> {
    let sort = match (sort, &filter.text) {
        (Sort::Relevance, None) => Sort::Created,
        (sort, _) => sort,
    };
    let frozen = match start {
        Start::After { frozen_at, .. } => *frozen_at,
        Start::Offset(_) => None,
    };
    let after = match start {
        Start::After { position, .. } => Some(position),
        Start::Offset(_) => None,
    };
    let direction = if sort.descending() { " DESC" } else { "" };
    // The order is decided on ids and sort keys alone; only the page's rows are read whole
    // (sorting thousands of matches with every column was half the cost of a search).
    let mut query = match frozen {
        None => QueryBuilder::new(format!("SELECT {COLUMNS}, top.sort_key, now() AS listed_at FROM (")),
        Some(_) => QueryBuilder::new("SELECT top.id, top.sort_key, now() AS listed_at FROM ("),
    };
    match frozen {
        None => {
            push_branch(&mut query, filter, sort, limit, sample, after, Source::Now)?;
            if let Start::Offset(offset) = start {
                query.push(" OFFSET ").push_bind(*offset);
            }
            query.push(") top JOIN products p ON p.id = top.id");
        }
        Some(at) => {
            // Each part ordered and limited on its own (so the first can walk an index), then
            // merged: a `UNION ALL` of filtered subqueries is not flattened by the planner.
            query.push("SELECT * FROM (");
            push_branch(&mut query, filter, sort, limit, sample, after, Source::UnchangedSince(at))?;
            query.push(") unchanged UNION ALL SELECT * FROM (");
            push_branch(&mut query, filter, sort, limit, sample, after, Source::AsItWas(at))?;
            query.push(format_args!(") changed ORDER BY sort_key{direction}, id{direction} LIMIT "));
            query.push_bind(limit + 1);
            query.push(") top");
        }
    }
    query.push(format_args!(" ORDER BY top.sort_key{direction}, top.id{direction}"));
    let rows = query.build().persistent(false).fetch_all(&mut *connection).await?;

    let more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];
    let (listed_at, next) = page_end(connection, rows, more, sort).await?;
    let items = match frozen {
        None => rows.iter().map(sqlx::FromRow::from_row).collect::<Result<_, sqlx::Error>>()?,
        // The rows were placed as they were then; serve them as they are now.
        Some(_) => {
            let ids: Vec<Uuid> = rows.iter().map(|row| row.try_get("id")).collect::<Result<_, sqlx::Error>>()?;
            current(connection, &ids, filter).await?
        }
    };
    Ok(Page { items, next, frozen_at: frozen.unwrap_or(listed_at) })
}

/// The products `ids` (placed as they were) as they are now, in the same order, without those
/// deleted since or now outside the filter's statuses.
async fn current(
    connection: &mut PgConnection,
    ids: &[Uuid],
    filter: &Filter,
) -> Result<Vec<ProductView>, sqlx::Error> {
    let rows: Vec<ProductView> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM products p WHERE p.id = ANY($1)"))
        .bind(ids)
        .fetch_all(&mut *connection)
        .await?;
    let mut now: HashMap<Uuid, ProductView> = rows.into_iter().map(|row| (row.id, row)).collect();
    Ok(ids
        .iter()
        .filter_map(|id| now.remove(id))
        .filter(|view| !view.deleted)
        .filter(|view| filter.statuses.as_ref().is_none_or(|statuses| statuses.contains(&view.status)))
        .collect())
}

/// Whether any product passes `filter` (used to decide whether a text search goes fuzzy).
pub async fn exists(connection: &mut PgConnection, filter: &Filter) -> Result<bool, sqlx::Error> {
    let mut query = QueryBuilder::new("SELECT EXISTS (SELECT 1 FROM products p");
    push_filter(&mut query, filter, Except::default());
    query.push(")");
    query.build_query_scalar().persistent(false).fetch_one(connection).await
}

/// How many products pass `filter`, counting no further than `cap`.
pub async fn count(connection: &mut PgConnection, filter: &Filter, cap: i64) -> Result<i64, sqlx::Error> {
    // No column is selected: where the index decides every condition, the table's pages that
    // are all-visible are not even read.
    let mut query = QueryBuilder::new("SELECT count(*) FROM (SELECT FROM products p");
    push_filter(&mut query, filter, Except::default());
    query.push(" LIMIT ").push_bind(cap).push(") matching");
    query.build_query_scalar().persistent(false).fetch_one(connection).await
}

/// The planner's estimate of how many products pass `filter` (from table statistics: cheap,
/// and only an estimate).
pub async fn estimate(connection: &mut PgConnection, filter: &Filter) -> Result<i64, sqlx::Error> {
    estimate_except(connection, filter, Except::default()).await
}

async fn estimate_except(connection: &mut PgConnection, filter: &Filter, except: Except) -> Result<i64, sqlx::Error> {
    let mut query = QueryBuilder::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM products p");
    push_filter(&mut query, filter, except);
    let plan: serde_json::Value = query.build_query_scalar().persistent(false).fetch_one(connection).await?;
    Ok(plan[0]["Plan"]["Plan Rows"].as_f64().map_or(0, |rows| rows.round() as i64))
}

/// What counting the facets told about the number of products that pass the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Every one of them was counted: this many.
    All(i64),
    /// More than the sample: this many were counted, and the counts still need scaling to
    /// the total ([`scale`]).
    Sample(i64),
    /// Each facet counted products of its own (each without its own filter): nothing is known
    /// of the filter's total.
    Separately,
}

/// Scales sampled facet counts (`sampled` products counted) to `total` products.
pub fn scale(facets: &mut Facets, total: i64, sampled: i64) {
    if sampled <= 0 || total <= sampled {
        return;
    }
    let scaled = |count: i64| ((count as f64) * (total as f64) / (sampled as f64)).round() as i64;
    for entry in facets.category.iter_mut().flatten() {
        entry.count = scaled(entry.count);
    }
    for entry in facets.brand.iter_mut().flatten() {
        entry.count = scaled(entry.count);
    }
    for entry in facets.price.iter_mut().flatten() {
        entry.count = scaled(entry.count);
    }
    facets.estimated = true;
}

/// The facets `request` asks for, each over the products that pass `filter` without the
/// facet's own part of it (`category` without the category filter, `brand` without
/// `attr.brand`, `price` without the price bounds), and what that told of the filter's total.
///
/// When the filter has none of those parts, every facet counts the same products: one scan
/// groups them every way at once (and counts them all, exactly, up to `sample_size`; beyond,
/// the caller scales the sample to the total, see [`Counted::Sample`]). Otherwise each facet is
/// a query of its own, sampled and scaled (to the planner's estimate of its matches) the same
/// way.
pub async fn facets(
    connection: &mut PgConnection,
    filter: &Filter,
    request: FacetRequest,
    sample_size: i64,
) -> Result<(Facets, Counted), sqlx::Error> {
    let bounds: Vec<Decimal> = PRICE_BOUNDS.iter().map(|bound| Decimal::from(*bound)).collect();
    let own_parts = filter.categories.is_some()
        || filter.price_min.is_some()
        || filter.price_max.is_some()
        || filter.attributes.iter().any(|(key, _)| key == BRAND);
    let mut sets: Vec<(Vec<Uuid>, i64)> = Vec::new();
    let mut brands: Vec<ValueCount> = Vec::new();
    let mut buckets: Vec<(i32, i64)> = Vec::new();
    let mut counted = Counted::Separately;
    // Per facet counted separately: its sampled products and its scaled total, when sampled.
    let mut separate_scales: [Option<(i64, i64)>; 3] = [None; 3];
    // The matching products a facet counts, at most one more than the sample: `m`.
    let sample = |query: &mut QueryBuilder<'_, Postgres>, except: Except| {
        query.push(format_args!(
            " FROM (SELECT p.category_ids, p.attributes ->> '{BRAND}' AS brand, width_bucket(p.price, "
        ));
        query.push_bind(bounds.clone()).push("::numeric[]) AS bucket FROM products p");
        push_filter(query, filter, except);
        query.push(" LIMIT ").push_bind(sample_size + 1).push(") m");
    };
    if !own_parts {
        // A facet not asked for is neither grouped nor selected (a column outside every
        // grouping set cannot be).
        let column = |asked: bool, column: &str, null: &str| match asked {
            true => format!("m.{column}, GROUPING(m.{column}) = 0 AS by_{column}"),
            false => format!("{null} AS {column}, false AS by_{column}"),
        };
        let mut query = QueryBuilder::new(format!(
            "SELECT {}, {}, {}, count(*) AS n",
            column(request.category, "category_ids", "NULL::uuid[]"),
            column(request.brand, "brand", "NULL::text"),
            column(request.price, "bucket", "NULL::int"),
        ));
        sample(&mut query, Except::default());
        query.push(" GROUP BY GROUPING SETS (");
        for (asked, set) in
            [(request.category, "(m.category_ids), "), (request.brand, "(m.brand), "), (request.price, "(m.bucket), ")]
        {
            if asked {
                query.push(set);
            }
        }
        query.push("())");
        let rows = query.build().persistent(false).fetch_all(&mut *connection).await?;
        let mut total = 0;
        for row in rows {
            let n: i64 = row.try_get("n")?;
            if row.try_get("by_category_ids")? {
                sets.push((row.try_get("category_ids")?, n));
            } else if row.try_get("by_brand")? {
                if let Some(value) = row.try_get::<Option<String>, _>("brand")? {
                    brands.push(ValueCount { value, count: n });
                }
            } else if row.try_get("by_bucket")? {
                buckets.push((row.try_get("bucket")?, n));
            } else {
                total = n;
            }
        }
        counted = if total > sample_size { Counted::Sample(total) } else { Counted::All(total) };
    } else {
        if request.category {
            let except = Except { category: true, ..Except::default() };
            let mut query = QueryBuilder::new("SELECT m.category_ids, count(*)");
            sample(&mut query, except);
            query.push(" GROUP BY m.category_ids");
            sets = query.build_query_as().persistent(false).fetch_all(&mut *connection).await?;
            let n: i64 = sets.iter().map(|(_, n)| n).sum();
            if n > sample_size {
                separate_scales[0] = Some((n, estimate_except(connection, filter, except).await?));
            }
        }
        if request.brand {
            let except = Except { brand: true, ..Except::default() };
            // Products without a brand are counted too (and left out below): they are in the sample.
            let mut query = QueryBuilder::new("SELECT m.brand COLLATE \"C\" AS value, count(*) AS count");
            sample(&mut query, except);
            query.push(" GROUP BY 1");
            let rows: Vec<(Option<String>, i64)> =
                query.build_query_as().persistent(false).fetch_all(&mut *connection).await?;
            let n: i64 = rows.iter().map(|(_, n)| n).sum();
            brands = rows.into_iter().filter_map(|(value, count)| Some(ValueCount { value: value?, count })).collect();
            if n > sample_size {
                separate_scales[1] = Some((n, estimate_except(connection, filter, except).await?));
            }
        }
        if request.price {
            let except = Except { price: true, ..Except::default() };
            let mut query = QueryBuilder::new("SELECT m.bucket, count(*) AS count");
            sample(&mut query, except);
            query.push(" GROUP BY m.bucket");
            buckets = query.build_query_as().persistent(false).fetch_all(&mut *connection).await?;
            let n: i64 = buckets.iter().map(|(_, n)| n).sum();
            if n > sample_size {
                separate_scales[2] = Some((n, estimate_except(connection, filter, except).await?));
            }
        }
    }

    let mut facets = Facets::default();
    if request.category {
        let live: Vec<(Uuid, String, Option<Uuid>)> =
            sqlx::query_as("SELECT id, name, parent_id FROM categories WHERE NOT deleted")
                .fetch_all(&mut *connection)
                .await?;
        facets.category = Some(roll_up(&sets, &live));
    }
    if request.brand {
        brands.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        brands.truncate(FACET_ENTRIES as usize);
        facets.brand = Some(brands);
    }
    if request.price {
        buckets.sort_unstable();
        facets.price = Some(
            buckets
                .into_iter()
                .map(|(bucket, count)| {
                    let bucket = bucket.max(0) as usize;
                    PriceRangeCount {
                        min: if bucket == 0 { Decimal::ZERO } else { bounds[bucket - 1] },
                        max: bounds.get(bucket).copied(),
                        count,
                    }
                })
                .collect(),
        );
    }
    // Each facet counted on its own scales on its own.
    for (i, scales) in separate_scales.into_iter().enumerate() {
        let Some((sampled, planned)) = scales else { continue };
        let mut one = Facets {
            category: if i == 0 { facets.category.take() } else { None },
            brand: if i == 1 { facets.brand.take() } else { None },
            price: if i == 2 { facets.price.take() } else { None },
            estimated: false,
        };
        scale(&mut one, planned.max(sampled), sampled);
        facets.category = facets.category.or(one.category);
        facets.brand = facets.brand.or(one.brand);
        facets.price = facets.price.or(one.price);
        facets.estimated = true;
    }
    Ok((facets, counted))
}

/// Products per category, each counted once in every live category it is listed in or below:
/// `sets` are the products' category lists with how many products have each; `live` the live
/// categories (id, name, parent). Most first, then by name and id; at most [`FACET_ENTRIES`].
fn roll_up(sets: &[(Vec<Uuid>, i64)], live: &[(Uuid, String, Option<Uuid>)]) -> Vec<CategoryCount> {
    let by_id: HashMap<Uuid, (&str, Option<Uuid>)> =
        live.iter().map(|(id, name, parent)| (*id, (name.as_str(), *parent))).collect();
    let mut counts: HashMap<Uuid, i64> = HashMap::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for (categories, n) in sets {
        seen.clear();
        for category in categories {
            let mut at = Some(*category);
            // Bounded: a transient cycle between two projections must not loop.
            for _ in 0..32 {
                let Some(id) = at.filter(|id| by_id.contains_key(id) && seen.insert(*id)) else {
                    break;
                };
                *counts.entry(id).or_default() += n;
                at = by_id[&id].1;
            }
        }
    }
    let mut entries: Vec<CategoryCount> =
        counts.into_iter().map(|(id, count)| CategoryCount { id, name: by_id[&id].0.to_owned(), count }).collect();
    entries.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)).then_with(|| a.id.cmp(&b.id)));
    entries.truncate(FACET_ENTRIES as usize);
    entries
}

/// Which rows a page's query reads.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The table as it is.
    Now,
    /// The rows unchanged since the instant (as they are, which is as they were then).
    UnchangedSince(DateTime<Utc>),
    /// The products changed since the instant (but created before it), as their history had
    /// them then.
    AsItWas(DateTime<Utc>),
}

/// `SELECT` the id and sort key of the rows of `source` that pass `filter` (after `after`), in
/// `sort` order, one more than `limit` (an `OFFSET` may follow).
fn push_branch(
    query: &mut QueryBuilder<'_, Postgres>,
    filter: &Filter,
    sort: Sort,
    limit: i64,
    sample: i64,
    after: Option<&Position>,
    source: Source,
) -> Result<(), sqlx::Error> {
    query.push("SELECT p.id, ");
    push_sort_key(query, filter, sort);
    query.push(" AS sort_key FROM ");
    let sampled = ranks_sample(filter, sort);
    if sampled {
        // The first matches the index finds, then ranked (see `DEFAULT_SAMPLE`).
        query.push("(SELECT p.id, p.search_document, p.search_text FROM ");
    }
    match source {
        Source::Now | Source::UnchangedSince(_) => {
            query.push("products p");
        }
        Source::AsItWas(at) => {
            let past = SOURCE_COLUMNS.split(", ").map(|column| format!("past.{column}")).collect::<Vec<_>>().join(", ");
            query.push(format_args!(
                "(SELECT {past}, product_search_document(past.name, past.sku, past.attributes, past.description) \
                           AS search_document, \
                         product_search_text(past.name, past.sku, past.attributes) AS search_text \
                    FROM products changed \
                   CROSS JOIN LATERAL (SELECT h.state FROM product_history h \
                                        WHERE h.product_id = changed.id AND h.at <= "
            ));
            query.push_bind(at);
            query.push(
                " ORDER BY h.at DESC, h.version DESC LIMIT 1) history \
                   CROSS JOIN LATERAL jsonb_populate_record(NULL::products, history.state) past \
                   WHERE NOT changed.deleted AND changed.updated_at > changed.created_at AND changed.updated_at > ",
            );
            query.push_bind(at);
            query.push(" AND changed.created_at <= ").push_bind(at).push(") p");
        }
    }
    push_filter(query, filter, Except::default());
    if let Source::UnchangedSince(at) = source {
        query.push(" AND p.updated_at <= ").push_bind(at);
    }
    if sampled {
        query.push(" LIMIT ").push_bind(sample).push(") p WHERE true");
    }
    if let Some(position) = after {
        push_after(query, filter, sort, position)?;
    }
    let direction = if sort.descending() { " DESC" } else { "" };
    query.push(" ORDER BY ");
    push_sort_key(query, filter, sort);
    query.push(format_args!("{direction}, p.id{direction} LIMIT "));
    query.push_bind(limit + 1);
    Ok(())
}

/// Whether `sort` ranks a sample of the matches rather than all of them (relevance).
fn ranks_sample(filter: &Filter, sort: Sort) -> bool {
    sort == Sort::Relevance && filter.text.is_some()
}

fn push_filter(query: &mut QueryBuilder<'_, Postgres>, filter: &Filter, except: Except) {
    query.push(" WHERE NOT p.deleted");
    match filter.statuses.as_deref() {
        // One status as an equality: planned with its value, `published` matches the predicate
        // of the published products' search index (an `= ANY` array would not).
        Some([status]) => {
            query.push(" AND p.status = ").push_bind(status.as_str());
        }
        // The words of published products and of the others are in two partial indexes
        // (migration 18): a search of several statuses, or of all, says which status goes to
        // which, so that the planner ORs the two index scans instead of reading the table.
        Some(statuses) => {
            query.push(" AND (");
            for (i, status) in statuses.iter().enumerate() {
                query.push(if i == 0 { "p.status = " } else { " OR p.status = " }).push_bind(status.as_str());
            }
            query.push(if statuses.is_empty() { "false)" } else { ")" });
        }
        None if filter.text.is_some() => {
            query.push(" AND (p.status = 'published' OR p.status <> 'published')");
        }
        None => {}
    }
    if let Some(text) = &filter.text {
        match (&text.tsquery, text.fuzzy) {
            (_, true) => {
                query.push(" AND p.search_text %> ").push_bind(text.raw.clone());
            }
            (Some(tsquery), false) => {
                query.push(" AND p.search_document @@ ").push_bind(tsquery.clone()).push("::tsquery");
            }
            (None, false) => {
                query.push(" AND false");
            }
        }
    }
    if let (Some(categories), false) = (&filter.categories, except.category) {
        query.push(" AND p.category_ids && ").push_bind(categories.clone()).push("::uuid[]");
    }
    if let Some(currency) = &filter.currency {
        query.push(" AND p.currency = ").push_bind(currency.clone());
    }
    if !except.price {
        if let Some(min) = filter.price_min {
            query.push(" AND p.price >= ").push_bind(min);
        }
        if let Some(max) = filter.price_max {
            query.push(" AND p.price <= ").push_bind(max);
        }
    }
    match filter.in_stock {
        Some(true) => {
            query.push(" AND p.on_hand > 0");
        }
        Some(false) => {
            query.push(" AND p.on_hand = 0");
        }
        None => {}
    }
    for (key, values) in &filter.attributes {
        if except.brand && key == BRAND {
            continue;
        }
        // One containment test per value: each can use the attributes index.
        query.push(" AND (");
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                query.push(" OR ");
            }
            query.push("p.attributes @> ").push_bind(serde_json::json!({ key: value }));
        }
        query.push(")");
    }
}

/// The expression `sort` orders by.
fn push_sort_key(query: &mut QueryBuilder<'_, Postgres>, filter: &Filter, sort: Sort) {
    match (sort, &filter.text) {
        (Sort::Relevance, Some(text)) if text.fuzzy => {
            query.push("word_similarity(").push_bind(text.raw.clone()).push(", p.search_text)");
        }
        (Sort::Relevance, Some(text)) => {
            query.push("ts_rank(p.search_document, ").push_bind(text.tsquery.clone()).push("::tsquery)");
        }
        (Sort::Price | Sort::PriceDesc, _) => {
            query.push("p.price");
        }
        (Sort::Name | Sort::NameDesc, _) => {
            query.push("p.name");
        }
        (Sort::Updated | Sort::UpdatedDesc, _) => {
            query.push("p.updated_at");
        }
        (Sort::Created | Sort::CreatedDesc | Sort::Relevance, _) => {
            query.push("p.created_at");
        }
    }
}

/// Rows after `position` in `sort` order.
fn push_after(
    query: &mut QueryBuilder<'_, Postgres>,
    filter: &Filter,
    sort: Sort,
    position: &Position,
) -> Result<(), sqlx::Error> {
    query.push(" AND (");
    push_sort_key(query, filter, sort);
    query.push(", p.id) ").push(if sort.descending() { "<" } else { ">" }).push(" (");
    match (&position.key, sort) {
        (SortKey::Rank(rank), Sort::Relevance) => {
            query.push_bind(*rank).push("::real");
        }
        (SortKey::Price(price), Sort::Price | Sort::PriceDesc) => {
            query.push_bind(*price).push("::numeric");
        }
        (SortKey::Name(name), Sort::Name | Sort::NameDesc) => {
            query.push_bind(name.clone()).push("::text");
        }
        (SortKey::At(at), Sort::Created | Sort::CreatedDesc | Sort::Updated | Sort::UpdatedDesc) => {
            query.push_bind(*at).push("::timestamptz");
        }
        (key, sort) => {
            return Err(sqlx::Error::Protocol(format!(
                "a {key:?} position cannot continue a {} listing",
                sort.as_str()
            )))
        }
    }
    query.push(", ").push_bind(position.id).push("::uuid)");
    Ok(())
}

/// When a page was listed (its rows' `listed_at`, or now for an empty page) and, if `more`
/// rows follow it, the position after its last row.
async fn page_end(
    connection: &mut PgConnection,
    rows: &[PgRow],
    more: bool,
    sort: Sort,
) -> Result<(DateTime<Utc>, Option<Position>), sqlx::Error> {
    let listed_at: DateTime<Utc> = match rows.first() {
        Some(row) => row.try_get("listed_at")?,
        None => sqlx::query_scalar("SELECT now()").fetch_one(&mut *connection).await?,
    };
    let next = match (more, rows.last()) {
        (true, Some(row)) => Some(Position { key: sort_key(row, sort)?, id: row.try_get("id")? }),
        _ => None,
    };
    Ok((listed_at, next))
}

fn sort_key(row: &PgRow, sort: Sort) -> Result<SortKey, sqlx::Error> {
    Ok(match sort {
        Sort::Relevance => SortKey::Rank(row.try_get("sort_key")?),
        Sort::Price | Sort::PriceDesc => SortKey::Price(row.try_get("sort_key")?),
        Sort::Name | Sort::NameDesc => SortKey::Name(row.try_get("sort_key")?),
        Sort::Created | Sort::CreatedDesc | Sort::Updated | Sort::UpdatedDesc => SortKey::At(row.try_get("sort_key")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_have_one_name_each() {
        for sort in Sort::ALL {
            assert_eq!(Sort::parse(sort.as_str()), Some(sort));
        }
        assert_eq!(Sort::parse("PRICE"), None);
        assert_eq!(Sort::parse(""), None);
    }

    #[test]
    fn a_product_counts_once_in_each_category_it_is_in_or_below() {
        let [home, lighting, desk, kitchen, gone] = [1, 2, 3, 4, 5].map(Uuid::from_u128);
        let live = vec![
            (home, "Home".to_owned(), None),
            (lighting, "Lighting".to_owned(), Some(home)),
            (desk, "Desk".to_owned(), Some(lighting)),
            (kitchen, "Kitchen".to_owned(), None),
        ];
        let sets = vec![(vec![desk, lighting], 2), (vec![kitchen, gone], 1), (vec![], 7), (vec![desk], 1)];
        let counted: Vec<(String, i64)> =
            roll_up(&sets, &live).into_iter().map(|entry| (entry.name, entry.count)).collect();
        assert_eq!(
            counted,
            [("Desk".into(), 3), ("Home".into(), 3), ("Lighting".into(), 3), ("Kitchen".into(), 1)],
            "most first, then by name; deleted categories left out"
        );
        // A cycle (two categories projected at different times) ends.
        let cycle = vec![(home, "Home".to_owned(), Some(lighting)), (lighting, "Lighting".to_owned(), Some(home))];
        assert_eq!(roll_up(&[(vec![home], 1)], &cycle).len(), 2);
    }

    #[test]
    fn one_status_is_an_equality_so_the_published_index_applies() {
        let sql = |statuses: Option<Vec<ProductStatus>>| {
            let mut query = QueryBuilder::new("SELECT 1 FROM products p");
            push_filter(&mut query, &Filter { statuses, ..Filter::default() }, Except::default());
            query.sql().to_owned()
        };
        assert!(sql(Some(vec![ProductStatus::Published])).contains("p.status = $1"));
        assert!(sql(Some(vec![ProductStatus::Published, ProductStatus::Draft]))
            .contains("(p.status = $1 OR p.status = $2)"));
        assert!(sql(Some(vec![])).contains("(false)"));
        assert!(!sql(None).contains("status"), "without a text, no status condition at all");
        let mut query = QueryBuilder::new("SELECT 1 FROM products p");
        let text = Text { raw: "lamp".into(), tsquery: Some("'lamp'".into()), fuzzy: false };
        push_filter(&mut query, &Filter { text: Some(text), ..Filter::default() }, Except::default());
        assert!(
            query.sql().contains("(p.status = 'published' OR p.status <> 'published')"),
            "a search of every status names both partial indexes' statuses: {}",
            query.sql()
        );
    }

    #[test]
    fn a_sample_scales_to_the_total_and_is_marked_an_estimate() {
        let mut facets = Facets {
            brand: Some(vec![
                ValueCount { value: "Acme".into(), count: 3 },
                ValueCount { value: "Lumen".into(), count: 1 },
            ]),
            ..Facets::default()
        };
        scale(&mut facets, 400, 4);
        assert_eq!(facets.brand.as_ref().unwrap().iter().map(|b| b.count).collect::<Vec<_>>(), [300, 100]);
        assert!(facets.estimated);
        let mut exact =
            Facets { brand: Some(vec![ValueCount { value: "Acme".into(), count: 3 }]), ..Facets::default() };
        scale(&mut exact, 3, 3);
        assert!(!exact.estimated, "nothing to scale");
    }

    #[test]
    fn price_ranges_are_increasing() {
        assert!(PRICE_BOUNDS.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
