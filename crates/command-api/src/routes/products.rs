use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cqrs_es::Aggregate as _;
use domain::{Product, ProductCommand, ProductImage, ProductStatus, Role};
use http_api::etag;
use http_api::openapi::{Conflict, Forbidden, NotFound, PreconditionFailed, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{changed, created, parse_id, ChangeProblems, CreateProblems, Written};
use crate::app::AppState;
use crate::extract::{ApiJson, IdempotencyKey, IfMatch, RequestContext};
use crate::failures::product_failure;

/// Namespace for product ids derived from an idempotency key (see [`create`]).
const IDEMPOTENT_PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x0b6c_51d4_8e2f_4b7a_a1c3_95de_2f60_7a18);

/// How a price is documented: a JSON string such as `"19.99"` or a JSON number, read exactly
/// (never through a float); greater than 0, at most 2147483647, with at most the currency's
/// fraction digits (trailing zeros do not count). Most currencies have 2, some 0 or 3, a few 4,
/// so the pattern admits up to 4 and the currency decides.
pub struct Price;

impl utoipa::PartialSchema for Price {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,10}(\.[0-9]{1,4}0*)?$"))
                    .examples([serde_json::json!("19.99")]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .exclusive_minimum(Some(0))
                    .maximum(Some(2_147_483_647))
                    .examples([serde_json::json!(19.99)]),
            )
            .description(Some(
                "A decimal as a string (\"19.99\") or a number, read exactly: greater than 0, at most \
                 2147483647, with at most the currency's fraction digits (trailing zeros do not count): \
                 2 for most currencies (EUR 19.99), 0 for some (JPY 1999), 3 for others (BHD 1.500), 4 for \
                 a few (CLF 1.2345)",
            ))
            .into()
    }
}

impl ToSchema for Price {}

/// How attributes are documented: at most 50 names of `a-z 0-9 _` (1 to 40), each with a value
/// of at most 200 characters without control characters.
pub struct Attributes;

impl utoipa::PartialSchema for Attributes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[a-z0-9_]{1,40}$"))))
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(200))))
            .max_properties(Some(50))
            .description(Some(
                "Named facts about the product (brand, colour, material...): at most 50, names of 1 to 40 \
                 characters of a-z, 0-9 and _, values of at most 200 characters without control characters. \
                 Replaced as a whole.",
            ))
            .examples([serde_json::json!({"brand": "Lumen", "colour": "brass"})])
            .into()
    }
}

impl ToSchema for Attributes {}

/// A publication status. A new product is `published` unless it says otherwise; the allowed
/// changes are draft→published, draft→archived, published→archived and archived→published.
#[derive(ToSchema)]
#[schema(as = ProductStatus, rename_all = "lowercase")]
#[allow(dead_code)] // Documents `domain::ProductStatus`, which requests deserialise into.
pub(crate) enum StatusSchema {
    Draft,
    Published,
    Archived,
}

/// An image of the product.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://images.example.com/lamp.jpg", "alt": "The lamp, lit"}))]
pub struct Image {
    /// An absolute `https` URL (plain `http` only in development) without user name or password,
    /// at most 2000 characters; stored normalised (lower-case scheme and host, escaped).
    #[schema(format = "uri", max_length = 2000)]
    url: String,
    /// A text alternative, at most 200 characters; blank is the same as none.
    #[serde(default)]
    #[schema(nullable = false, max_length = 200)]
    alt: Option<String>,
}

pub(crate) fn images(images: &[Image]) -> Vec<ProductImage> {
    images.iter().map(|image| ProductImage { url: image.url.clone(), alt: image.alt.clone() }).collect()
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Desk lamp", "description": "Warm light, dimmable", "price": "19.99", "currency": "EUR",
    "sku": "LAMP-01", "status": "draft", "category_ids": ["5b0c6a4e-3f4d-4c7a-9d2e-1f0a8b7c6d5e"],
    "attributes": {"colour": "brass"}, "images": [{"url": "https://images.example.com/lamp.jpg", "alt": "The lamp"}],
    "on_hand": 12
}))]
pub struct CreateProduct {
    /// 1 to 100 characters after trimming.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    description: Option<String>,
    /// A JSON number or a string, read exactly (never through a float), with at most the
    /// currency's fraction digits.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    #[schema(value_type = Price)]
    price: Decimal,
    /// ISO 4217 code the price is in; the catalog's default currency (`CATALOG_DEFAULT_CURRENCY`)
    /// when absent. Codes being withdrawn (superseded) and non-currencies (gold, test codes) are refused.
    #[serde(default)]
    #[schema(nullable = false, pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: Option<String>,
    /// Stock-keeping unit: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, unique across the catalog
    /// regardless of case (409 when another product has it).
    #[serde(default)]
    #[schema(nullable = false, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$", example = "LAMP-01")]
    sku: Option<String>,
    /// `published` when absent.
    #[serde(default)]
    #[schema(value_type = Option<StatusSchema>, nullable = false)]
    status: Option<ProductStatus>,
    /// The categories the product is filed under, at most 50 distinct; each must exist (422
    /// naming `category_ids` otherwise). Repeated ids count once.
    #[serde(default)]
    category_ids: Vec<Uuid>,
    #[serde(default)]
    #[schema(value_type = Attributes)]
    attributes: BTreeMap<String, String>,
    /// At most 20.
    #[serde(default)]
    #[schema(max_items = 20)]
    images: Vec<Image>,
    /// Units in stock to start with; 0 when absent. Changed afterwards only by stock adjustments.
    #[serde(default)]
    #[schema(minimum = 0, default = 0)]
    on_hand: i64,
}

/// Any non-empty subset of the fields; the others keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// `minProperties: 1` is set in `routes::router` (utoipa-gen 5.5 renders `min_properties` as
// `maxProperties`).
#[schema(example = json!({"price": "24.50", "status": "archived", "sku": null}))]
pub struct UpdateProduct {
    /// 1 to 100 characters after trimming.
    #[serde(default)]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    name: Option<String>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(nullable = false, max_length = 500)]
    description: Option<String>,
    /// In the product's currency, or in `currency` when that is given too.
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    #[schema(value_type = Price, required = false)]
    price: Option<Decimal>,
    /// A new ISO 4217 code. Alone, it keeps the amount, which must then fit the new currency's
    /// fraction digits (19.99 cannot become JPY without a new price).
    #[serde(default)]
    #[schema(nullable = false, pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
    /// A new SKU (unique regardless of case), or `null` to remove it, freeing it for other products.
    #[serde(default, with = "domain::tri_state")]
    #[schema(
        value_type = Option<String>, required = false, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$"
    )]
    sku: Option<Option<String>>,
    /// Allowed changes: draft→published, draft→archived, published→archived, archived→published
    /// (409 otherwise); the current status again changes nothing.
    #[serde(default)]
    #[schema(value_type = Option<StatusSchema>, nullable = false)]
    status: Option<ProductStatus>,
    /// Replaces the list: at most 50 distinct ids of existing categories.
    #[serde(default)]
    #[schema(nullable = false)]
    category_ids: Option<Vec<Uuid>>,
    /// Replaces the whole map.
    #[serde(default)]
    #[schema(value_type = Option<Attributes>, nullable = false)]
    attributes: Option<BTreeMap<String, String>>,
    /// Replaces the list: at most 20.
    #[serde(default)]
    #[schema(nullable = false, max_items = 20)]
    images: Option<Vec<Image>>,
}

/// A change of the stock on hand, recorded with its reason.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"delta": -2, "reason": "order 1042 shipped"}))]
pub struct StockAdjustment {
    /// Units added (positive) or removed (negative); not 0. Stock cannot go below 0 (409).
    #[serde(default)]
    #[schema(required = true)]
    delta: i64,
    /// Why: 1 to 200 characters after trimming, kept in the product's history.
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 200)]
    reason: String,
}

/// The stock after an adjustment and the product's version after it (also its `ETag`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"on_hand": 10, "version": 3}))]
pub struct StockLevel {
    #[schema(minimum = 0)]
    on_hand: u64,
    #[schema(minimum = 1)]
    version: u64,
}

/// Create a product (admin).
///
/// With an `Idempotency-Key` the product id is derived from the key, so even a retry that
/// outlives its stored response cannot create a second product. A SKU another product has is
/// 409; a category that does not exist is 422 (field `category_ids`).
#[utoipa::path(
    post,
    path = "/api/v1/products",
    tag = "products",
    operation_id = "createProduct",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
         pattern = "^[!-~]+$",
         description = "Makes a retry safe: 1 to 255 visible ASCII characters, unique per request",
         example = "create-desk-lamp-1"),
    ),
    request_body(content = CreateProduct, content_type = "application/json"),
    responses(
        (status = 201, description = "Created at version 1", body = Written,
         headers(
            ("Location" = String, description = "The product on the read API: `/api/v1/products/{id}`"),
            ("ETag" = String, description = "The version, quoted: `\"1\"`"),
            ("Idempotent-Replayed" = String,
             description = "`true` when this is the stored response of an earlier request with the same key"),
         )),
        CreateProblems,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    IdempotencyKey(key): IdempotencyKey,
    context: RequestContext,
    ApiJson(request): ApiJson<CreateProduct>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let scope = format!("POST /api/v1/products {}", principal.user_id);
    // Only a keyed request is compared with an earlier one.
    let hash = if key.is_some() { state.idempotency.fingerprint(&request) } else { Vec::new() };
    let id = match &key {
        Some(key) => Uuid::new_v5(&IDEMPOTENT_PRODUCT_NAMESPACE, format!("{scope}\n{key}").as_bytes()),
        None => Uuid::new_v4(),
    };
    state
        .idempotency
        .run_once(&state.pool, key.as_deref(), &scope, &hash, || async {
            let command = || ProductCommand::Create {
                id,
                name: request.name.clone(),
                description: request.description.clone(),
                price: request.price,
                currency: request.currency.clone().unwrap_or_else(|| state.default_currency.code().to_owned()),
                sku: request.sku.clone(),
                status: request.status,
                category_ids: request.category_ids.clone(),
                attributes: request.attributes.clone(),
                images: images(&request.images),
                on_hand: request.on_hand,
                allow_http_images: state.allow_http_images,
            };
            let version = state
                .commands
                .execute::<Product>(&id.to_string(), command, context.metadata(principal.user_id.to_string()), false)
                .await
                .map_err(|e| product_failure(e, false))?
                .unwrap_or(1);
            Ok(created("/api/v1/products", id, version))
        })
        .await
}

/// Change a product (admin).
///
/// Any non-empty subset of the fields. With `If-Match` the write happens only at that version
/// (412 otherwise); without it, concurrent writes are retried, then 409. A status change outside
/// the allowed transitions is 409 with the rule in the detail; a SKU another product has is 409;
/// a category that does not exist is 422.
#[utoipa::path(
    patch,
    path = "/api/v1/products/{id}",
    tag = "products",
    operation_id = "updateProduct",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404)"),
        ("If-Match" = Option<String>, Header, nullable = false,
         description = "The version the change is for, quoted (`\"3\"`, strong comparison), or `*`", example = "\"1\""),
    ),
    request_body(content = UpdateProduct, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = Written,
         headers(("ETag" = String, description = "The new version, quoted: `\"2\"`"))),
        ChangeProblems,
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    if_match: IfMatch,
    context: RequestContext,
    ApiJson(request): ApiJson<UpdateProduct>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let id = parse_id(&id, "product")?;
    let expected_version = if_match.expected_version()?;
    let command = || ProductCommand::Update {
        expected_version,
        name: request.name.clone(),
        description: request.description.clone(),
        price: request.price,
        currency: request.currency.clone(),
        sku: request.sku.clone(),
        status: request.status,
        category_ids: request.category_ids.clone(),
        attributes: request.attributes.clone(),
        images: request.images.as_deref().map(images),
        allow_http_images: state.allow_http_images,
    };
    let version = change_existing(&state, &principal, &context, id, expected_version, command)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an accepted update recorded no event")))?;
    Ok(changed(id, version))
}

/// Adjust a product's stock (admin).
///
/// The only way stock changes after creation: by `delta` units, for a `reason` kept in the
/// product's history. An adjustment that would take the stock below 0 is 409 with the stock in
/// the detail. `If-Match` is honoured as for changes; with an `Idempotency-Key` a retry gets the
/// first answer back instead of adjusting twice.
#[utoipa::path(
    post,
    path = "/api/v1/products/{id}/stock-adjustments",
    tag = "products",
    operation_id = "adjustStock",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404)"),
        ("If-Match" = Option<String>, Header, nullable = false,
         description = "The version the adjustment is for, quoted (`\"3\"`, strong comparison), or `*`",
         example = "\"2\""),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
         pattern = "^[!-~]+$",
         description = "Makes a retry safe: 1 to 255 visible ASCII characters, unique per request",
         example = "order-1042-shipped"),
    ),
    request_body(content = StockAdjustment, content_type = "application/json"),
    responses(
        (status = 200, description = "Adjusted", body = StockLevel,
         headers(
            ("ETag" = String, description = "The product's new version, quoted: `\"3\"`"),
            ("Idempotent-Replayed" = String,
             description = "`true` when this is the stored response of an earlier request with the same key"),
         )),
        ChangeProblems,
    )
)]
#[allow(clippy::too_many_arguments)] // One extractor each, as axum hands them over.
pub async fn adjust_stock(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    if_match: IfMatch,
    IdempotencyKey(key): IdempotencyKey,
    context: RequestContext,
    ApiJson(request): ApiJson<StockAdjustment>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let id = parse_id(&id, "product")?;
    let expected_version = if_match.expected_version()?;
    let scope = format!("POST /api/v1/products/{id}/stock-adjustments {}", principal.user_id);
    // Only a keyed request is compared with an earlier one.
    let hash = if key.is_some() { state.idempotency.fingerprint(&request) } else { Vec::new() };
    state
        .idempotency
        .run_once(&state.pool, key.as_deref(), &scope, &hash, || async {
            let command = || ProductCommand::AdjustStock {
                delta: request.delta,
                reason: request.reason.clone(),
                expected_version,
            };
            let version = change_existing(&state, &principal, &context, id, expected_version, command)
                .await?
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an accepted stock adjustment recorded no event")))?;
            let on_hand = stock_after(&state, id, version).await?;
            Ok(([(header::ETAG, etag(version))], Json(StockLevel { on_hand, version })).into_response())
        })
        .await
}

/// The stock on hand that the adjustment at `version` left, read from that event: exact even
/// when other adjustments have landed since.
async fn stock_after(state: &AppState, id: Uuid, version: u64) -> Result<u64, ApiError> {
    let sequence = i64::try_from(version).map_err(|e| ApiError::Internal(e.into()))?;
    let events =
        event_store::reads::aggregate_history(&state.pool, Product::TYPE, &id.to_string(), sequence - 1, sequence)
            .await?;
    events
        .first()
        .and_then(|event| event.payload["ProductStockAdjusted"]["on_hand"].as_u64())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("product {id} has no stock adjustment at version {version}")))
}

/// Delete a product (admin).
///
/// `If-Match` is honoured when given. A deleted product is 404 from then on, and its SKU is free
/// for other products.
#[utoipa::path(
    delete,
    path = "/api/v1/products/{id}",
    tag = "products",
    operation_id = "deleteProduct",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404)"),
        ("If-Match" = Option<String>, Header, nullable = false,
         description = "The version the deletion is for, quoted (`\"3\"`, strong comparison), or `*`",
         example = "\"2\""),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    if_match: IfMatch,
    context: RequestContext,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    let id = parse_id(&id, "product")?;
    let expected_version = if_match.expected_version()?;
    change_existing(&state, &principal, &context, id, expected_version, || ProductCommand::Delete { expected_version })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a command on an existing product. Conflicts are retried only when the client did not
/// pin a version; with `If-Match`, losing the race is a failed precondition.
async fn change_existing(
    state: &AppState,
    principal: &Principal,
    context: &RequestContext,
    id: Uuid,
    expected_version: Option<u64>,
    command: impl Fn() -> ProductCommand,
) -> Result<Option<u64>, ApiError> {
    let pinned = expected_version.is_some();
    state
        .commands
        .execute::<Product>(&id.to_string(), command, context.metadata(principal.user_id.to_string()), !pinned)
        .await
        .map_err(|e| product_failure(e, pinned))
}
