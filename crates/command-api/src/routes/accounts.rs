//! What a user changes on their own account (`/api/v1/users/me`) and what an admin changes on
//! anyone's (roles, deactivation). Reading accounts is query-api's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::Role;
use http_api::client::ClientAddr;
use http_api::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized,
    UnprocessableEntity, UnsupportedMediaType,
};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::parse_id;
use crate::accounts;
use crate::app::AppState;
use crate::extract::{ApiJson, RequestContext};

/// The caller's new email.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "alice@example.org"}))]
pub struct ChangeEmail {
    /// Checked for shape only; stored lower-cased.
    #[schema(max_length = 254, format = "email")]
    email: String,
}

/// Change your email.
///
/// For the caller's own account; answers its new version.
#[utoipa::path(
    patch,
    path = "/api/v1/users/me",
    tag = "users",
    operation_id = "changeMyEmail",
    security(("bearer" = [])),
    request_body(content = ChangeEmail, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = super::Written,
         headers(("ETag" = String, description = "The account's new version, quoted"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn change_email(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    ApiJson(request): ApiJson<ChangeEmail>,
) -> Result<Response, ApiError> {
    let metadata = context.metadata(principal.user_id.to_string());
    let version = accounts::change_email(&state.commands, principal.user_id, &request.email, metadata).await?;
    Ok(super::changed(principal.user_id, version))
}

/// The caller's current password and the one to replace it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"current_password": "correct horse battery", "new_password": "another long passphrase"}))]
pub struct ChangePassword {
    #[schema(format = "password")]
    current_password: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128, format = "password")]
    new_password: String,
}

/// Change your password.
///
/// For the caller's own account, with its current password (a wrong one is 422 on
/// `current_password`). Attempts count against the login limits (429 with `Retry-After`).
#[utoipa::path(
    post,
    path = "/api/v1/users/me/password",
    tag = "users",
    operation_id = "changeMyPassword",
    security(("bearer" = [])),
    request_body(content = ChangePassword, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableEntity),
        (status = 429, response = TooManyRequests),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    ClientAddr(client): ClientAddr,
    context: RequestContext,
    ApiJson(request): ApiJson<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    accounts::change_password(
        &state.commands,
        &state.hasher,
        &state.login_limiter,
        principal.user_id,
        request.current_password,
        request.new_password,
        client,
        context.metadata(principal.user_id.to_string()),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user id and a role from the path; anything unreadable is 404, like an unknown user.
fn user_and_role(id: &str, role: &str) -> Result<(Uuid, Role), ApiError> {
    let id = parse_id(id, "user")?;
    let role = role.parse().map_err(|_| ApiError::NotFound("role"))?;
    Ok((id, role))
}

/// Grant a role.
///
/// Admin only. Granting a role the user holds changes nothing. It takes effect at the user's
/// next token: tokens already issued keep their role until they expire.
#[utoipa::path(
    put,
    path = "/api/v1/users/{id}/roles/{role}",
    tag = "users",
    operation_id = "grantRole",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The user's id (anything else is 404)"),
        ("role" = String, Path, description = "`admin` or `customer` (anything else is 404)", example = "admin"),
    ),
    responses(
        (status = 204, description = "The user holds the role"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn grant_role(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, role)): Path<(String, String)>,
    context: RequestContext,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    let (id, role) = user_and_role(&id, &role)?;
    let metadata = context.metadata(principal.user_id.to_string());
    accounts::set_role(&state.commands, principal.user_id, id, role, true, metadata).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke a role.
///
/// Admin only. Revoking a role the user does not hold changes nothing; admins cannot revoke
/// their own admin role (409). Tokens already issued keep their role until they expire.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}/roles/{role}",
    tag = "users",
    operation_id = "revokeRole",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The user's id (anything else is 404)"),
        ("role" = String, Path, description = "`admin` or `customer` (anything else is 404)", example = "admin"),
    ),
    responses(
        (status = 204, description = "The user does not hold the role"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn revoke_role(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, role)): Path<(String, String)>,
    context: RequestContext,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    let (id, role) = user_and_role(&id, &role)?;
    let metadata = context.metadata(principal.user_id.to_string());
    accounts::set_role(&state.commands, principal.user_id, id, role, false, metadata).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deactivate an account.
///
/// Admin only, for good: the account can no longer log in, and its tokens stop working for
/// its own account's endpoints. Deactivating a deactivated account changes nothing; admins
/// cannot deactivate themselves (409).
#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/deactivate",
    tag = "users",
    operation_id = "deactivateUser",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id (anything else is 404)")),
    responses(
        (status = 204, description = "The account is deactivated"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn deactivate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    context: RequestContext,
) -> Result<StatusCode, ApiError> {
    principal.require(Role::Admin)?;
    let id = parse_id(&id, "user")?;
    accounts::deactivate(&state.commands, principal.user_id, id, context.metadata(principal.user_id.to_string()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
