use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::{Product, ProductCommand, ProductError, Role};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::commands::{metadata, CommandError};
use crate::extract::{etag, ApiJson, IdempotencyKey, IfMatch, RequestContext};
use crate::idempotency;
use crate::problem::ApiError;
use crate::routes::store_failure;

/// Namespace for product ids derived from an idempotency key (see [`create`]).
const IDEMPOTENT_PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x0b6c_51d4_8e2f_4b7a_a1c3_95de_2f60_7a18);

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// A JSON number or a string, read exactly (never through a float).
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    price: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision_option")]
    price: Option<Decimal>,
}

#[derive(Serialize)]
pub struct Written {
    id: Uuid,
    version: u64,
}

/// `POST /api/v1/products` (admin).
///
/// With an `Idempotency-Key` the product id is derived from the key, so even a retry that
/// outlives its stored response cannot create a second product.
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
        };
        let version = state
            .commands
            .execute::<Product>(&id.to_string(), command, metadata(&principal.user_id.to_string(), &context), false)
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

/// `PATCH /api/v1/products/{id}` (admin): any subset of name, description, price.
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
    };
    let version = change_existing(&state, &principal, &context, id, expected_version, command)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an accepted update recorded no event")))?;
    Ok(([(header::ETAG, etag(version))], Json(Written { id, version })).into_response())
}

/// `DELETE /api/v1/products/{id}` (admin). `If-Match` is honoured when given.
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
        .execute::<Product>(&id.to_string(), command, metadata(&principal.user_id.to_string(), context), !pinned)
        .await
        .map_err(|e| product_failure(e, pinned))
}

/// A path segment that is not a UUID cannot name a product: 404, like any unknown id.
fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("product"))
}

fn product_failure(error: CommandError<ProductError>, version_pinned: bool) -> ApiError {
    match error {
        CommandError::Rejected(ProductError::Invalid(violations)) => ApiError::Invalid(violations),
        CommandError::Rejected(ProductError::AlreadyExists(_)) => ApiError::Conflict("product already exists".into()),
        CommandError::Rejected(ProductError::NotFound | ProductError::Deleted) => ApiError::NotFound("product"),
        CommandError::Rejected(ProductError::VersionMismatch { .. }) => ApiError::PreconditionFailed,
        // With If-Match, losing the race means the version the client saw is gone.
        CommandError::Conflict if version_pinned => ApiError::PreconditionFailed,
        CommandError::Conflict => {
            ApiError::Conflict("the product kept changing concurrently; retry the request".into())
        }
        CommandError::Store(e) => store_failure(e),
    }
}
