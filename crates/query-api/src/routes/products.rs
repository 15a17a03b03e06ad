//! `GET /api/v1/products` (a page of live products) and `GET /api/v1/products/{id}` (one
//! product, cached, with `ETag` / `If-None-Match` and `min_version` read-your-writes).

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use http_api::openapi::{BadRequest, NotFound, ServiceUnavailable};
use http_api::problem::ApiError;
use read_model::products::{self, ProductView};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::schemas::{DetailParams, PageParams};

use crate::app::AppState;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// One page of live products, oldest first (id breaks ties).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "items": [{"id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "name": "Desk lamp", "description": "",
               "price": "19.99", "created_at": "2026-01-01T12:00:00Z", "updated_at": "2026-01-01T12:00:00Z", "version": 1}],
    "limit": 20, "offset": 0, "total": 1
}))]
pub struct Page {
    #[schema(value_type = Vec<super::schemas::Product>)]
    items: Vec<ProductView>,
    #[schema(minimum = 1, maximum = 100)]
    limit: i64,
    #[schema(minimum = 0)]
    offset: i64,
    /// Live products in all.
    #[schema(minimum = 0)]
    total: i64,
}

/// List products.
///
/// Live products, oldest first (id breaks ties): `?limit=` (1–100, default 20) and `?offset=`
/// (≥ 0, default 0). `total` counts every live product, in the same snapshot as `items`.
#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "products",
    operation_id = "listProducts",
    params(PageParams),
    responses(
        (status = 200, description = "A page of products", body = Page),
        (status = 400, response = BadRequest),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let limit = integer_param(&params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = integer_param(&params, "offset", 0, 0, i64::MAX)?;
    // One snapshot for the page and the count, so `total` agrees with `items`.
    let mut transaction = state.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *transaction).await?;
    let (items, total) = products::page(&mut transaction, limit, offset).await?;
    transaction.commit().await?;
    Ok(Json(Page { items, limit, offset, total }))
}

/// Get a product.
///
/// An id that is not a UUID names no product: 404, like an unknown one. A deleted product is
/// 404 too. `If-None-Match` (weak comparison, lists and `*`) answers 304.
#[utoipa::path(
    get,
    path = "/api/v1/products/{id}",
    tag = "products",
    operation_id = "getProduct",
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404)"),
        DetailParams,
        ("If-None-Match" = Option<String>, Header, nullable = false,
         description = "Entity tags the client holds (`\"3\"`, `W/\"3\"`, a list, or `*`): 304 if one is current", example = "\"1\""),
    ),
    responses(
        (status = 200, description = "The product", body = super::schemas::Product,
         headers(("ETag" = String, description = "The version, quoted: `\"2\"` (the same tag the write API returned)"))),
        (status = 304, description = "`If-None-Match` names the current version; no body",
         headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn detail(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let min_version = match params.contains_key("min_version") {
        true => Some(integer_param(&params, "min_version", 1, 1, i64::MAX)?),
        false => None,
    };
    let id: Uuid = path.ok().and_then(|Path(raw)| raw.parse().ok()).ok_or(ApiError::NotFound("product"))?;
    let product = match min_version {
        Some(version) => state.products.wait_for(id, version, state.min_version_wait).await?,
        None => state.products.get(id, 0).await?,
    };
    match product {
        Some(product) if !product.deleted => Ok(super::versioned(&headers, product.version, &*product)),
        _ => Err(ApiError::NotFound("product")),
    }
}

/// An integer query parameter within `min..=max`; anything else is a 400 naming it.
fn integer_param(params: &HashMap<String, String>, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(default);
    };
    raw.trim().parse::<i64>().ok().filter(|value| (min..=max).contains(value)).ok_or_else(|| {
        let range = if max == i64::MAX { format!("at least {min}") } else { format!("from {min} to {max}") };
        ApiError::BadRequest(format!("query parameter `{name}` must be an integer {range}, not {raw:?}"))
    })
}
