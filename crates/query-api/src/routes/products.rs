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
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use domain::{ProductStatus, Role};
use http_api::openapi::{BadRequest, Forbidden, NotFound, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use read_model::history;
use read_model::products::{self, ProductFilter};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::schemas::{DetailParams, HistoryParams, ListParams};
use super::{integer_param, query_params, Params, Reader};
use crate::app::AppState;
use crate::views::{self, HistoryItem, Product};

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// One page of products, oldest first (id breaks ties).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "items": [{"id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "name": "Desk lamp", "description": "",
               "price": "19.99", "currency": "EUR", "sku": null, "status": "published", "categories": [],
               "attributes": {}, "images": [], "stock": {"on_hand": 0},
               "created_at": "2026-01-01T12:00:00Z", "updated_at": "2026-01-01T12:00:00Z", "version": 1}],
    "limit": 20, "offset": 0, "total": 1
}))]
pub struct Page {
    items: Vec<Product>,
    #[schema(minimum = 1, maximum = 100)]
    limit: i64,
    #[schema(minimum = 0)]
    offset: i64,
    /// The products this reader may see (with this `status` filter) in all.
    #[schema(minimum = 0)]
    total: i64,
}

/// List products.
///
/// Live products, oldest first (id breaks ties): `?limit=` (1–100, default 20) and `?offset=`
/// (≥ 0, default 0). `total` counts every product the reader may see, in the same snapshot as
/// `items`. Without a token, or with a customer's, only published products are listed (and
/// counted); `?status=` other than `published` is then 403. Admins see every status and may
/// filter by one with `?status=`. A token that does not verify is 401.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "products",
    operation_id = "listProducts",
    security((), ("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of products", body = Page),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    reader: Reader,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let params = query_params(query)?;
    let limit = integer_param(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let offset = integer_param(&params, "offset", 0, i64::MAX)?.unwrap_or(0);
    let status = match params.get("status") {
        None => None,
        Some(raw) => Some(raw.trim().parse::<ProductStatus>().map_err(|_| {
            ApiError::BadRequest(format!("query parameter `status` must be draft, published or archived, not {raw:?}"))
        })?),
    };
    let statuses = match (reader.admin, status) {
        (true, status) => status.map(|status| vec![status]),
        (false, None | Some(ProductStatus::Published)) => Some(vec![ProductStatus::Published]),
        (false, Some(_)) => return Err(ApiError::Forbidden(Role::Admin.as_str())),
    };
    // One snapshot for the page and the count, so `total` agrees with `items`.
    let mut transaction = state.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *transaction).await?;
    let (items, total) = products::page(&mut transaction, limit, offset, &ProductFilter { statuses }).await?;
    transaction.commit().await?;
    // Category names as they are now: a rename committed since is no reason to fail the page.
    let items = views::products(&state.pool, items).await?;
    Ok(Json(Page { items, limit, offset, total }))
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
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
    headers: HeaderMap,
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
    let id: Uuid = path.ok().and_then(|Path(raw)| raw.parse().ok()).ok_or(ApiError::NotFound("product"))?;
    let product = match (min_version, as_of, version) {
        (Some(version), _, _) => state.products.wait_for(id, version, state.min_version_wait).await?,
        (_, Some(at), _) => past(&state, history::as_of(&state.pool, id, at).await?).await?,
        (_, _, Some(version)) => past(&state, history::at_version(&state.pool, id, version).await?).await?,
        _ => state.products.get(id, 0).await?,
    };
    match product {
        Some(product) if product.is_public() || (reader.admin && !product.deleted) => {
            Ok(super::versioned(&headers, product.version, &*product))
        }
        _ => Err(ApiError::NotFound("product")),
    }
}

/// A past state as served (never cached).
async fn past(state: &AppState, view: Option<products::ProductView>) -> Result<Option<Arc<Product>>, ApiError> {
    let Some(view) = view else {
        return Ok(None);
    };
    Ok(views::products(&state.pool, vec![view]).await?.pop().map(Arc::new))
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
