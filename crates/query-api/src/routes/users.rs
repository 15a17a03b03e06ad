//! `GET /api/v1/users/{id}`: a user's profile, for that user or an admin. Profiles hold no
//! credential material (the read model is folded from redacted events).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::Role;
use http_api::principal::Principal;
use http_api::problem::ApiError;
use read_model::users;
use uuid::Uuid;

use crate::app::AppState;

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
