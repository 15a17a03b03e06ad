use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{Product, ProductCommand, Role};
use http_api::etag;
use http_api::principal::Principal;
use http_api::problem::ApiError;
use rust_decimal::Decimal;
use http_api::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, ServiceUnavailable, Unauthorized,
    UnprocessableEntity, UnsupportedMediaType,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::extract::{ApiJson, IdempotencyKey, IfMatch, RequestContext};
use crate::failures::product_failure;
use crate::idempotency;

/// Namespace for product ids derived from an idempotency key (see [`create`]).
const IDEMPOTENT_PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x0b6c_51d4_8e2f_4b7a_a1c3_95de_2f60_7a18);

/// How a price is documented: a JSON string such as `"19.99"` or a JSON number, read exactly
/// (never through a float); greater than 0, at most 2 fraction digits (trailing zeros do not
/// count), at most 2147483647.
pub struct Price;

impl utoipa::PartialSchema for Price {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,10}(\.[0-9]{1,2})?$"))
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
                "A decimal as a string (\"19.99\") or a number, read exactly: greater than 0, at most 2 \
                 fraction digits (trailing zeros do not count), at most 2147483647",
            ))
            .into()
    }
}

impl ToSchema for Price {}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Desk lamp", "description": "Warm light, dimmable", "price": "19.99"}))]
pub struct CreateProduct {
    /// 1 to 100 characters after trimming.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    description: Option<String>,
    /// A JSON number or a string, read exactly (never through a float).
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    #[schema(value_type = Price)]
    price: Decimal,
}

/// Any non-empty subset of the fields; the others keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// `minProperties: 1` is set in `routes::router` (utoipa-gen 5.5 renders `min_properties` as
// `maxProperties`).
#[schema(example = json!({"price": "24.50"}))]
pub struct UpdateProduct {
    /// 1 to 100 characters after trimming.
    #[serde(default)]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    name: Option<String>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(nullable = false, max_length = 500)]
    description: Option<String>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    #[schema(value_type = Price, required = false)]
    price: Option<Decimal>,
}

/// The product written and its version after the write (also its `ETag`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18", "version": 2}))]
pub struct Written {
    id: Uuid,
    #[schema(minimum = 1)]
    version: u64,
}

/// Create a product (admin).
///
/// With an `Idempotency-Key` the product id is derived from the key, so even a retry that
/// outlives its stored response cannot create a second product.
#[utoipa::path(
    post,
    path = "/api/v1/products",
    tag = "products",
    operation_id = "createProduct",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
         description = "Makes a retry safe: 1 to 255 visible ASCII characters, unique per request", example = "create-desk-lamp-1"),
    ),
    request_body(content = CreateProduct, content_type = "application/json"),
    responses(
        (status = 201, description = "Created at version 1", body = Written,
         headers(
            ("Location" = String, description = "The product on the read API: `/api/v1/products/{id}`"),
            ("ETag" = String, description = "The version, quoted: `\"1\"`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same key"),
         )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 503, response = ServiceUnavailable),
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
    let hash = idempotency::fingerprint(&request);
    let id = match &key {
        Some(key) => Uuid::new_v5(&IDEMPOTENT_PRODUCT_NAMESPACE, format!("{scope}\n{key}").as_bytes()),
        None => Uuid::new_v4(),
    };
    idempotency::run_once(&state.pool, key.as_deref(), &scope, &hash, || async {
        let command = || ProductCommand::Create {
            id,
            name: request.name.clone(),
            description: request.description.clone(),
            price: request.price,
            currency: "EUR".into(),
            sku: None,
            status: None,
            category_ids: Vec::new(),
            attributes: Default::default(),
            images: Vec::new(),
            on_hand: 0,
            allow_http_images: false,
        };
        let version = state
            .commands
            .execute::<Product>(&id.to_string(), command, context.metadata(principal.user_id.to_string()), false)
            .await
            .map_err(|e| product_failure(e, false))?
            .unwrap_or(1);
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/products/{id}")), (header::ETAG, etag(version))],
            Json(Written { id, version }),
        )
            .into_response())
    })
    .await
}

/// Change a product (admin).
///
/// Any non-empty subset of name, description, price. With `If-Match` the write happens only at
/// that version (412 otherwise); without it, concurrent writes are retried, then 409.
#[utoipa::path(
    patch,
    path = "/api/v1/products/{id}",
    tag = "products",
    operation_id = "updateProduct",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404)"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The version the change is for, quoted (`\"3\"`, strong comparison), or `*`", example = "\"1\""),
    ),
    request_body(content = UpdateProduct, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = Written,
         headers(("ETag" = String, description = "The new version, quoted: `\"2\"`"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 503, response = ServiceUnavailable),
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
    let id = parse_id(&id)?;
    let expected_version = if_match.expected_version()?;
    let command = || ProductCommand::Update {
        expected_version,
        name: request.name.clone(),
        description: request.description.clone(),
        price: request.price,
        currency: None,
        sku: None,
        status: None,
        category_ids: None,
        attributes: None,
        images: None,
        allow_http_images: false,
    };
    let version = change_existing(&state, &principal, &context, id, expected_version, command)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an accepted update recorded no event")))?;
    Ok(([(header::ETAG, etag(version))], Json(Written { id, version })).into_response())
}

/// Delete a product (admin).
///
/// `If-Match` is honoured when given. A deleted product is 404 from then on.
#[utoipa::path(
    delete,
    path = "/api/v1/products/{id}",
    tag = "products",
    operation_id = "deleteProduct",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id (anything else is 404)"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The version the deletion is for, quoted (`\"3\"`, strong comparison), or `*`", example = "\"2\""),
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
    let id = parse_id(&id)?;
    let expected_version = if_match.expected_version()?;
    change_existing(&state, &principal, &context, id, expected_version, || ProductCommand::Delete {
        expected_version,
    })
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

/// A path segment that is not a UUID cannot name a product: 404, like any unknown id.
fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("product"))
}
