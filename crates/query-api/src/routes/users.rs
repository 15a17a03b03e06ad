//! `GET /api/v1/users/{id}`: a user's profile, for that user or an admin. Profiles hold no
//! credential material (the read model is folded from redacted events).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::Role;
use http_api::openapi::{Forbidden, NotFound, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use read_model::users;
use uuid::Uuid;

use crate::app::AppState;

/// Get a user's profile.
///
/// For that user or an admin: anyone else is 403, checked before the id is even looked up.
/// Profiles hold no credential material. `If-None-Match` answers 304.
#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "getUser",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The user's id (anything else is 404, for admins)"),
        ("If-None-Match" = Option<String>, Header, nullable = false,
         description = "Entity tags the client holds (`\"3\"`, `W/\"3\"`, a list, or `*`): 304 if one is current",
         example = "\"1\""),
    ),
    responses(
        (status = 200, description = "The profile", body = super::schemas::User,
         headers(("ETag" = String, description = "The profile's version, quoted"))),
        (status = 304, description = "`If-None-Match` names the current version; no body",
         headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: Option<Uuid> = path.ok().and_then(|Path(raw)| raw.parse().ok());
    // Authorisation before existence: a non-admin learns nothing about other ids, not even
    // whether they exist or are well-formed.
    if principal.role != Role::Admin && id != Some(principal.user_id) {
        return Err(ApiError::Forbidden(Role::Admin.as_str()));
    }
    let id = id.ok_or(ApiError::NotFound("user"))?;
    let user = users::get(&state.pool, id).await?.ok_or(ApiError::NotFound("user"))?;
    Ok(super::versioned(&headers, user.version, &user))
}
