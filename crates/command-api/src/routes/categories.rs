use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::{Category, CategoryCommand, Role};
use http_api::openapi::{Conflict, Forbidden, NotFound, PreconditionFailed, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{changed, created, parse_id, ChangeProblems, CreateProblems, Written};
use crate::app::AppState;
use crate::extract::{ApiJson, IdempotencyKey, IfMatch, RequestContext};
use crate::failures::category_failure;

/// Namespace for category ids derived from an idempotency key (see [`create`]).
const IDEMPOTENT_CATEGORY_NAMESPACE: Uuid = Uuid::from_u128(0x5c1e_7a90_3b2d_4e8f_9a61_0d4c_b8e2_f357);

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Desk lamps", "slug": "desk-lamps", "parent_id": "5b0c6a4e-3f4d-4c7a-9d2e-1f0a8b7c6d5e",
    "description": "Lamps for desks and work tables"
}))]
pub struct CreateCategory {
    /// 1 to 100 characters after trimming.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// The category's name in URLs: lower-case words of `a-z 0-9` joined by single dashes, at
    /// most 100 characters, unique across the catalog (409 when another category has it).
    #[schema(min_length = 1, max_length = 100, pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", example = "desk-lamps")]
    slug: String,
    /// The category this one is filed under, which must exist (422 otherwise); absent or `null`
    /// for a top-level category.
    #[serde(default)]
    parent_id: Option<Uuid>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// Any non-empty subset of the fields; the others keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
// `minProperties: 1` is set in `routes::router` (utoipa-gen 5.5 renders `min_properties` as
// `maxProperties`).
#[schema(example = json!({"name": "Table lamps", "parent_id": null}))]
pub struct UpdateCategory {
    /// 1 to 100 characters after trimming.
    #[serde(default)]
    #[schema(nullable = false, min_length = 1, max_length = 100)]
    name: Option<String>,
    /// Unique across the catalog; the old slug is free for other categories afterwards.
    #[serde(default)]
    #[schema(nullable = false, min_length = 1, max_length = 100, pattern = "^[a-z0-9]+(-[a-z0-9]+)*$")]
    slug: Option<String>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(nullable = false, max_length = 500)]
    description: Option<String>,
    /// Moves the category under another, existing one (422 otherwise), or with `null` to the top
    /// level. A move under the category itself or one of its descendants is 409.
    #[serde(default, with = "domain::tri_state")]
    #[schema(value_type = Option<Uuid>, required = false)]
    parent_id: Option<Option<Uuid>>,
}

/// Create a category (admin).
///
/// With an `Idempotency-Key` the category id is derived from the key, so even a retry that
/// outlives its stored response cannot create a second category. A slug another category has
/// is 409; a parent that does not exist is 422 (field `parent_id`).
#[utoipa::path(
    post,
    path = "/api/v1/categories",
    tag = "categories",
    operation_id = "createCategory",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
         pattern = "^[!-~]+$",
         description = "Makes a retry safe: 1 to 255 visible ASCII characters, unique per request",
         example = "create-desk-lamps"),
    ),
    request_body(content = CreateCategory, content_type = "application/json"),
    responses(
        (status = 201, description = "Created at version 1", body = Written,
         headers(
            ("Location" = String, description = "The category on the read API: `/api/v1/categories/{id}`"),
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
    ApiJson(request): ApiJson<CreateCategory>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let scope = format!("POST /api/v1/categories {}", principal.user_id);
    // Only a keyed request is compared with an earlier one.
    let hash = if key.is_some() { state.idempotency.fingerprint(&request) } else { Vec::new() };
    let id = match &key {
        Some(key) => Uuid::new_v5(&IDEMPOTENT_CATEGORY_NAMESPACE, format!("{scope}\n{key}").as_bytes()),
        None => Uuid::new_v4(),
    };
    state
        .idempotency
        .run_once(&state.pool, key.as_deref(), &scope, &hash, || async {
            let command = || CategoryCommand::Create {
                id,
                name: request.name.clone(),
                slug: request.slug.clone(),
                parent_id: request.parent_id,
                description: request.description.clone(),
            };
            let version = state
                .commands
                .execute::<Category>(&id.to_string(), command, context.metadata(principal.user_id.to_string()), false)
                .await
                .map_err(|e| category_failure(e, false))?
                .unwrap_or(1);
            Ok(created("/api/v1/categories", id, version))
        })
        .await
}

/// Change a category (admin): rename it, change its slug or description, or move it.
///
/// With `If-Match` the write happens only at that version (412 otherwise); without it,
/// concurrent writes are retried, then 409. A slug another category has is 409, and so is a move
/// under the category itself or one of its descendants; a parent that does not exist is 422.
#[utoipa::path(
    patch,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    operation_id = "updateCategory",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The category's id (anything else is 404)"),
        ("If-Match" = Option<String>, Header, nullable = false,
         description = "The version the change is for, quoted (`\"3\"`, strong comparison), or `*`", example = "\"1\""),
    ),
    request_body(content = UpdateCategory, content_type = "application/json"),
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
    ApiJson(request): ApiJson<UpdateCategory>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let id = parse_id(&id, "category")?;
    let expected_version = if_match.expected_version()?;
    let command = || CategoryCommand::Update {
        expected_version,
        name: request.name.clone(),
        slug: request.slug.clone(),
        description: request.description.clone(),
        parent: request.parent_id,
    };
    let version = change_existing(&state, &principal, &context, id, expected_version, command)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an accepted category update recorded no event")))?;
    Ok(changed(id, version))
}

/// Delete a category (admin).
///
/// 409 while it has child categories: move or delete them first. Products filed under it keep
/// the id until they are changed. `If-Match` is honoured when given. A deleted category is 404
/// from then on, and its slug is free for other categories.
#[utoipa::path(
    delete,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    operation_id = "deleteCategory",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The category's id (anything else is 404)"),
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
    let id = parse_id(&id, "category")?;
    let expected_version = if_match.expected_version()?;
    change_existing(&state, &principal, &context, id, expected_version, || CategoryCommand::Delete {
        expected_version,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a command on an existing category. Conflicts are retried only when the client did not
/// pin a version; with `If-Match`, losing the race is a failed precondition.
async fn change_existing(
    state: &AppState,
    principal: &Principal,
    context: &RequestContext,
    id: Uuid,
    expected_version: Option<u64>,
    command: impl Fn() -> CategoryCommand,
) -> Result<Option<u64>, ApiError> {
    let pinned = expected_version.is_some();
    state
        .commands
        .execute::<Category>(&id.to_string(), command, context.metadata(principal.user_id.to_string()), !pinned)
        .await
        .map_err(|e| category_failure(e, pinned))
}
