//! `GET /api/v1/products` (a page of products), `GET /api/v1/products/{id}` (one product,
//! cached, with `ETag` / `If-None-Match`, `min_version` read-your-writes, and `as_of` / `version`
//! time travel) and `GET /api/v1/products/{id}/history` (admin).
//!
//! Visibility: a reader without a token or with a customer's sees only published products;
//! anything else (draft, archived, deleted) is 404 to them, in the list (and its `total`) as in
//! the detail, cached or not. Admins see every status and may filter the list by it. A shopper
//! asking the list for another status than `published` is 403 (asking for `published` is what
//! they get anyway and is allowed). A shopper may time-travel too, but only to states that were
//! published at that point; any other past state is 404 to them.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::Role;
use http_api::openapi::{BadRequest, Forbidden, NotFound, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use read_model::history;
use read_model::products;
use read_model::search::{self, Filter, Start};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::schemas::{DetailParams, HistoryParams, ListParams};
use super::{integer_param, query_params, IfNoneMatch, Params, Reader};
use crate::app::AppState;
use crate::cache::Served;
use crate::listing::{CategoryRef, Cursor, ListRequest, DEFAULT_LIMIT, MAX_LIMIT};
use crate::listing_cache::EncodedPage;
use crate::views::{self, HistoryItem, Product};

/// How long a listing's cursor keeps the listing frozen at its first page (see
/// `read_model::search`); an older cursor continues from its position over the products as
/// they are now.
const FREEZE_FOR: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// One page of products.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "items": [{"id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "name": "Desk lamp", "description": "",
               "price": "19.99", "currency": "EUR", "sku": null, "status": "published", "categories": [],
               "attributes": {"brand": "Lumen"}, "images": [], "stock": {"on_hand": 0, "reserved": 0, "available": 0},
               "created_at": "2026-01-01T12:00:00Z", "updated_at": "2026-01-01T12:00:00Z", "version": 1}],
    "next_cursor": "eyJzIjoiY3JlYXRlZCJ9",
    "limit": 1, "offset": 0, "total": 2, "total_is_estimate": false,
    "facets": {"category": null, "brand": [{"value": "Lumen", "count": 2}], "price": null, "estimated": false}
}))]
pub struct Page {
    /// The products, in the listing's order, each exactly as `GET /api/v1/products/{id}` shows it.
    items: Vec<Product>,
    /// Pass as `?cursor=` (with the same other parameters) for the next page; `null` on the last
    /// page. Opaque. The `Link` header carries the whole next URL.
    #[schema(required = true)]
    next_cursor: Option<String>,
    #[schema(minimum = 1, maximum = 100)]
    limit: i64,
    /// The `offset` asked for (deprecated), 0 otherwise.
    #[schema(minimum = 0, maximum = 10000)]
    offset: i64,
    /// How many products match in all (not only this page): exact when at most 10,000 do;
    /// beyond, the query planner's estimate (`total_is_estimate`). With `q`, a planner estimate
    /// above 20,000 is taken without counting (counting reads every match).
    #[schema(minimum = 0)]
    total: i64,
    /// `total` is the query planner's estimate (more than 10,000 products match).
    total_is_estimate: bool,
    /// The facets asked for with `?facets=`; `null` when none were.
    #[schema(required = true)]
    facets: Option<Facets>,
}

/// Counts over the products that match the query and every filter except the facet's own:
/// `category` ignores `category`, `brand` ignores `attr.brand`, `price` ignores `price_min` and
/// `price_max`. A facet not asked for is `null`.
#[derive(Serialize, ToSchema)]
pub struct Facets {
    /// Categories with matching products in them or in their subcategories, most first (then
    /// by name); at most 100.
    #[schema(required = true)]
    category: Option<Vec<CategoryFacet>>,
    /// Values of the `brand` attribute, most first (then by value); at most 100.
    #[schema(required = true)]
    brand: Option<Vec<ValueFacet>>,
    /// Price ranges (1-2-5 steps) that hold matching products, cheapest first.
    #[schema(required = true)]
    price: Option<Vec<PriceFacet>>,
    /// The counts are estimates: more than 1,000 products matched (a facet's own filter left
    /// out), and each facet counted the first 1,000 of them, scaled to the number of matches.
    estimated: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CategoryFacet {
    id: Uuid,
    name: String,
    /// Matching products in the category or any of its descendants (each once).
    #[schema(minimum = 1)]
    count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ValueFacet {
    value: String,
    #[schema(minimum = 1)]
    count: i64,
}

/// Products priced from `min` (inclusive) up to `max` (exclusive).
#[derive(Serialize, ToSchema)]
pub struct PriceFacet {
    #[schema(pattern = r"^[0-9]+$", example = "10")]
    min: String,
    /// `null`: no upper bound.
    #[schema(required = true, pattern = r"^[0-9]+$", example = "20")]
    max: Option<String>,
    #[schema(minimum = 1)]
    count: i64,
}

impl From<search::Facets> for Facets {
    fn from(facets: search::Facets) -> Self {
        Facets {
            category: facets.category.map(|entries| {
                entries
                    .into_iter()
                    .map(|entry| CategoryFacet { id: entry.id, name: entry.name, count: entry.count })
                    .collect()
            }),
            brand: facets.brand.map(|entries| {
                entries.into_iter().map(|entry| ValueFacet { value: entry.value, count: entry.count }).collect()
            }),
            price: facets.price.map(|ranges| {
                ranges
                    .into_iter()
                    .map(|range| PriceFacet {
                        min: range.min.normalize().to_string(),
                        max: range.max.map(|max| max.normalize().to_string()),
                        count: range.count,
                    })
                    .collect()
            }),
            estimated: facets.estimated,
        }
    }
}

/// List and search products.
///
/// Live products that match the search text and filters, in the requested order, a page at a
/// time. Without a token, or with a customer's, only published products are listed, counted
/// and faceted; `?status=` other than `published` is then 403. Admins see every status and may
/// filter by one. A token that does not verify is 401.
///
/// **Search** (`q`): every word must match the name, SKU, an attribute value or the
/// description, as written or by its stem (`lamps` finds "lamp"); the last word also as a
/// prefix, as it is typed (`espr` finds "espresso"). If no product matches the words, the
/// search tolerates typos instead (`espreso` finds "Espresso machine"), by similarity to the
/// name, SKU and brand. Sorted by relevance unless `sort` says otherwise.
///
/// **Filters** combine (all must hold): `category` (id or slug; its subcategories included),
/// `currency`, `price_min` / `price_max` (inclusive, with `currency`), `in_stock`, `status`, and
/// any number of `attr.<key>=<value>` (for example `attr.brand=Acme&attr.brand=Lumen&attr.colour=red`:
/// values of one key are alternatives, every key must match; at most 50 such parameters).
///
/// **Order** (`sort`): `relevance` (with `q`; the default then), `price`, `-price`, `name`,
/// `-name`, `created` (the default otherwise), `-created`, `updated`, `-updated`; ties are
/// broken by id, in the same direction, so the order is total. `relevance` ranks at most the
/// first 1,000 matches the search index finds (not necessarily the 1,000 best), and its listing
/// ends after them; narrow the query (more words, filters) or sort by another key to list more.
///
/// **Pages**: `limit` (1–100, default 20) per page; follow `next_cursor` (or the `Link: <...>;
/// rel="next"` header) for the next. Pages after the first place products as they were when
/// the first page was read, for 15 minutes: a product whose price, name or other sort key
/// changes meanwhile is neither listed twice nor skipped, and is shown as it is now (one
/// deleted since, or no longer visible to the reader, is left out; products created since
/// appear in a new listing). `offset` (at most 10,000) still works but is deprecated.
///
/// **Totals and facets**: `total` is exact up to 10,000 matches, an estimate beyond
/// (`total_is_estimate`). `facets=category,brand,price` adds counts for the query and filters,
/// each facet ignoring its own filter: exact up to 1,000 matches, beyond that the counts of the
/// first 1,000 scaled to the number of matches (`facets.estimated`).
///
/// **Caching**: a shopper's first page (no `cursor`) is answered from memory until any product
/// or category change is announced, so it is as fresh as a product read by id. Admins' and
/// cursor pages are read every time.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "products",
    operation_id = "listProducts",
    security((), ("bearer" = [])),
    params(
        ListParams,
        ("attr.brand" = Option<Vec<String>>, Query, explode = true,
         description = "Only products whose `brand` attribute is one of these values (repeat the parameter for \
                        several). Every attribute filters the same way: `attr.<key>=<value>`, keys of `a-z`, `0-9` \
                        and `_` (1–40), values of 1–200 characters; values of one key are alternatives, all keys \
                        must match; at most 50 `attr.` parameters",
         example = json!(["Acme"])),
    ),
    responses(
        (status = 200, description = "A page of products", body = Page,
         headers(("Link" = String, description = "`<...>; rel=\"next\"`: the URL of the next page, when there is one"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    reader: Reader,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let request = ListRequest::parse(&pairs, reader.admin)?;
    // Shoppers' first pages are cached until the catalog changes (see `listing_cache`); admins
    // and cursor pages always read the read model.
    let page = match request.cache_key().filter(|_| !reader.admin) {
        Some(key) => {
            // Read before the listing is, so that a change announced meanwhile makes it stale.
            let seen = state.products.changes_seen();
            state.listings.get_or_load(key, seen, || read_page(&state, &request)).await?
        }
        None => Arc::new(read_page(&state, &request).await?),
    };
    let json = HeaderValue::from_static("application/json");
    let link = page.next_cursor.as_deref().and_then(|cursor| HeaderValue::from_str(&next_link(&pairs, cursor)).ok());
    Ok(match link {
        Some(link) => ([(header::CONTENT_TYPE, json), (header::LINK, link)], page.body.clone()).into_response(),
        None => ([(header::CONTENT_TYPE, json)], page.body.clone()).into_response(),
    })
}

/// The listing `request` asks for, read from the read model and encoded.
async fn read_page(state: &AppState, request: &ListRequest) -> Result<EncodedPage, ApiError> {
    let offset = request.offset.unwrap_or(0);
    let mut filter = Filter {
        statuses: request.statuses.clone(),
        text: None,
        categories: None,
        currency: request.currency.clone(),
        price_min: request.price_min,
        price_max: request.price_max,
        in_stock: request.in_stock,
        attributes: request.attributes.clone(),
    };
    // One snapshot for the page, the count and the facets, so they agree.
    let mut transaction = state
        .pool
        .begin_with(format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {}",
            state.list_statement_timeout.as_millis().max(1)
        ))
        .await?;
    if let Some(category) = &request.category {
        let (id, slug) = match category {
            CategoryRef::Id(id) => (Some(*id), None),
            CategoryRef::Slug(slug) => (None, Some(slug.as_str())),
        };
        filter.categories = Some(search::category_and_descendants(&mut transaction, id, slug).await?);
    }
    if let Some(q) = &request.q {
        let mut text = search::prepare_text(&mut transaction, q).await?;
        text.fuzzy = request.cursor.as_ref().is_some_and(|cursor| cursor.fuzzy);
        filter.text = Some(text);
    }
    let start = match &request.cursor {
        Some(cursor) => Start::After {
            position: cursor.position.clone(),
            frozen_at: (Utc::now() - cursor.frozen_at < FREEZE_FOR).then_some(cursor.frozen_at),
        },
        None => Start::Offset(offset),
    };
    let listing =
        search::list(&mut transaction, filter, request.sort, request.limit, &start, request.facets, state.list_limits)
            .await
            .map_err(too_long)?;
    transaction.commit().await?;

    let page = listing.page;
    let next_cursor = page.next.map(|position| {
        Cursor { position, frozen_at: page.frozen_at, fuzzy: listing.fuzzy, fingerprint: request.fingerprint() }
            .encode(request.sort)
    });
    // Category names as they are now: a rename committed since is no reason to fail the page.
    let items = views::products(&state.pool, page.items).await?;
    let body = serde_json::to_vec(&Page {
        items,
        next_cursor: next_cursor.clone(),
        limit: request.limit,
        offset,
        total: listing.total,
        total_is_estimate: listing.total_is_estimate,
        facets: listing.facets.map(Facets::from),
    })
    .map_err(|error| ApiError::Internal(error.into()))?;
    Ok(EncodedPage { body: body.into(), next_cursor })
}

/// A listing Postgres cancelled at the statement timeout is a 503, like a request that runs
/// out of time; any other failure is what it is.
fn too_long(error: sqlx::Error) -> ApiError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => ApiError::Unavailable {
            reason: "the listing took too long: narrow it down (more words in `q`, a filter)".into(),
            retry_after_secs: 1,
        },
        _ => ApiError::from_database(error),
    }
}

/// The URL of the next page: this request's parameters, without `offset` and `cursor`, with
/// `cursor`.
fn next_link(pairs: &[(String, String)], cursor: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(name, _)| name != "cursor" && name != "offset") {
        query.append_pair(name, value);
    }
    query.append_pair("cursor", cursor);
    format!("</api/v1/products?{}>; rel=\"next\"", query.finish())
}

/// Get a product, now or as it was.
///
/// An id that is not a UUID names no product: 404, like an unknown one. A deleted product is
/// 404 too, and so is any product that is not published, unless the reader is an admin.
/// `If-None-Match` (weak comparison, lists and `*`) answers 304.
///
/// `?as_of=<RFC 3339 instant>` answers with the product as it was at that instant and
/// `?version=N` as it was at version N (404 if it did not exist yet, was deleted then, or has no
/// version N yet; for a shopper also if it was not published then). Those answers are not
/// cached; their `ETag` is the version they show; their `categories` carry today's names (and
/// leave out categories deleted since). At most one of `min_version`, `as_of` and `version`.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}",
    tag = "products",
    operation_id = "getProduct",
    security((), ("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404)"),
        DetailParams,
        ("If-None-Match" = Option<String>, Header, nullable = false,
         description = "Entity tags the client holds (`\"3\"`, `W/\"3\"`, a list, or `*`): 304 if one is current",
         example = "\"1\""),
    ),
    responses(
        (status = 200, description = "The product", body = Product,
         headers(("ETag" = String, description = "The version shown, quoted: `\"2\"` (the same tag the write API \
                   returned)"))),
        (status = 304, description = "`If-None-Match` names the version that would be shown; no body",
         headers(("ETag" = String, description = "That version, quoted"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn detail(
    State(state): State<AppState>,
    reader: Reader,
    // Parsed as it is extracted (no `String` per request); anything not a UUID is a rejection.
    path: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    let params = query_params(query)?;
    let min_version = integer_param(&params, "min_version", 1, i64::MAX)?;
    let version = integer_param(&params, "version", 1, i64::MAX)?;
    let as_of = instant_param(&params, "as_of")?;
    let given: Vec<&str> =
        [("min_version", min_version.is_some()), ("as_of", as_of.is_some()), ("version", version.is_some())]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect();
    if given.len() > 1 {
        return Err(ApiError::BadRequest(format!(
            "query parameters {} cannot be combined: give at most one",
            given.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(" and ")
        )));
    }
    let Ok(Path(id)) = path else {
        return Err(ApiError::NotFound("product"));
    };
    let product = match (min_version, as_of, version) {
        (Some(version), _, _) => state.products.wait_for(id, version, state.min_version_wait).await?,
        (_, Some(at), _) => past(&state, history::as_of(&state.pool, id, at).await?).await?,
        (_, _, Some(version)) => past(&state, history::at_version(&state.pool, id, version).await?).await?,
        _ => state.products.get(id, 0).await?,
    };
    match product {
        Some(product) if product.public || (reader.admin && !product.deleted) => Ok(send(&if_none_match, &product)),
        _ => Err(ApiError::NotFound("product")),
    }
}

/// The encoded product with its `ETag`, or 304 (tag, no body) when `If-None-Match` names it: a
/// cache hit copies no bytes and encodes nothing.
fn send(request: &IfNoneMatch, product: &Served) -> Response {
    let tag = product.etag.to_str().expect("an ETag is ASCII");
    if request.names(tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, product.etag.clone())]).into_response();
    }
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json), (header::ETAG, product.etag.clone())], product.body.clone()).into_response()
}

/// A past state as served (never cached).
async fn past(state: &AppState, view: Option<products::ProductView>) -> Result<Option<Arc<Served>>, ApiError> {
    let Some(view) = view else {
        return Ok(None);
    };
    Ok(views::products(&state.pool, vec![view]).await?.pop().map(|product| Arc::new(Served::encode(&product))))
}

/// An RFC 3339 instant query parameter (`None` when absent); anything else is a 400 naming it.
fn instant_param(params: &Params, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(None);
    };
    let raw = raw.trim();
    // An unencoded `+01:00` offset arrives as ` 01:00` (`+` is a space in a query string).
    let repaired = match raw.rsplit_once(' ') {
        Some((instant, offset)) if offset.contains(':') && instant.contains('T') => format!("{instant}+{offset}"),
        _ => raw.to_owned(),
    };
    DateTime::parse_from_rfc3339(&repaired).map(|at| Some(at.with_timezone(&Utc))).map_err(|_| {
        ApiError::BadRequest(format!(
            "query parameter `{name}` must be an RFC 3339 date and time such as 2026-01-02T08:30:00Z, not {raw:?}"
        ))
    })
}

/// A page of a product's history, newest first.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "items": [{"version": 2, "type": "ProductUpdated", "at": "2026-01-02T08:30:00Z",
               "actor": "3f0c6c5e-8a48-5d7e-9d6c-2f1e0c1b7a42",
               "changes": [{"field": "price", "from": "19.99", "to": "17.50"}]}],
    "next_cursor": "2"
}))]
pub struct HistoryPage {
    items: Vec<HistoryItem>,
    /// Pass as `?cursor=` for the next (older) page; `null` on the last page.
    #[schema(required = true, example = "2")]
    next_cursor: Option<String>,
}

/// A product's history.
///
/// Every event of the product, newest first, with what it changed: `?limit=` (1–100, default
/// 20) entries per page, and `?cursor=` (the previous page's `next_cursor`, opaque) for the
/// next, older page. Admins only: no token (or one that does not verify) is 401, a customer's
/// is 403, checked before the id is looked up. A product that never existed is 404; a deleted
/// one keeps its history.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}/history",
    tag = "products",
    operation_id = "getProductHistory",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404, for admins)"),
        HistoryParams,
    ),
    responses(
        (status = 200, description = "A page of the product's history, newest first", body = HistoryPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    principal.require(Role::Admin)?;
    let params = query_params(query)?;
    let limit = integer_param(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let before = match params.get("cursor") {
        None => None,
        Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
            ApiError::BadRequest(format!("query parameter `cursor` is not a cursor this API returned: {raw:?}"))
        })?),
    };
    let id: Uuid = path.ok().and_then(|Path(raw)| raw.parse().ok()).ok_or(ApiError::NotFound("product"))?;
    // One more than asked for tells whether there is a next page.
    let mut entries = history::page(&state.pool, id, limit + 1, before).await?;
    if entries.is_empty() && products::get(&state.pool, id).await?.is_none() {
        return Err(ApiError::NotFound("product"));
    }
    let next_cursor = match entries.len() as i64 > limit {
        true => {
            entries.truncate(limit as usize);
            entries.last().map(|entry| encode_cursor(entry.version))
        }
        false => None,
    };
    Ok(Json(HistoryPage { items: entries.into_iter().map(HistoryItem::from).collect(), next_cursor }))
}

/// The cursor that continues before `version`. Opaque to clients; today simply the version.
fn encode_cursor(version: i64) -> String {
    version.to_string()
}

fn decode_cursor(raw: &str) -> Option<i64> {
    raw.trim().parse::<i64>().ok().filter(|version| *version >= 1)
}
