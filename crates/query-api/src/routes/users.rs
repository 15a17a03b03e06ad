//! User profiles: `GET /api/v1/users/{id}` (that user or an admin), `GET /api/v1/users/me`, and
//! the admins' listing `GET /api/v1/users`. Profiles hold no credential material (the read model
//! is folded from redacted events).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use domain::Role;
use http_api::openapi::{BadRequest, Forbidden, NotFound, ServiceUnavailable, Unauthorized};
use http_api::principal::Principal;
use http_api::problem::ApiError;
use read_model::users::{self, UserView};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{integer_param, query_params, IfNoneMatch, Params};
use crate::app::AppState;
use crate::listing::{DEFAULT_LIMIT, MAX_LIMIT};

/// The longest `q` (an email's length).
const MAX_QUERY_CHARS: usize = 254;

/// The caller's own profile.
///
/// Any valid token: the profile of the account it was issued to. 404 until the projector has
/// written the account (right after registration).
#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    tag = "users",
    operation_id = "getMyProfile",
    security(("bearer" = [])),
    params(
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
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    let user = users::get(&state.pool, principal.user_id).await?.ok_or(ApiError::NotFound("user"))?;
    Ok(super::versioned(&if_none_match, user.version, &user))
}

/// A page of profiles, in username order.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    #[schema(value_type = Vec<super::schemas::User>)]
    items: Vec<UserView>,
    /// Pass as `?cursor=` (with the same `q`) for the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// List users.
///
/// Admins only (no token is 401, a customer's 403, checked before anything else): profiles in
/// username order, `?q=` keeps those whose username or email starts with it, `?limit=` (1–100,
/// default 20) per page, `?cursor=` (the previous page's `next_cursor`) for the next.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    operation_id = "listUsers",
    security(("bearer" = [])),
    params(super::schemas::UserListParams),
    responses(
        (status = 200, description = "A page of profiles", body = UserPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Json<UserPage>, ApiError> {
    principal.require(Role::Admin)?;
    let params = query_params(query)?;
    let limit = integer_param(&params, "limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
    let q = params.get("q").map(|q| q.trim()).filter(|q| !q.is_empty());
    // Postgres text cannot hold NUL: refused here rather than failing in the database.
    if q.is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS || q.contains('\0')) {
        return Err(ApiError::BadRequest(format!(
            "query parameter `q` must be at most {MAX_QUERY_CHARS} characters, without NUL"
        )));
    }
    let after = match params.get("cursor") {
        None => None,
        Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
            ApiError::BadRequest(format!("query parameter `cursor` is not a cursor this API returned: {raw:?}"))
        })?),
    };
    // One more than asked for tells whether there is a next page.
    let mut items =
        users::search(&state.pool, q, after.as_ref().map(|(name, id)| (name.as_str(), *id)), limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|last| encode_cursor(&last.username, last.id))
    } else {
        None
    };
    Ok(Json(UserPage { items, next_cursor }))
}

/// A cursor is base64url JSON `[username, id]` of the last profile served.
fn encode_cursor(username: &str, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(username, id)).unwrap_or_default())
}

fn decode_cursor(raw: &str) -> Option<(String, Uuid)> {
    let (username, id): (String, Uuid) = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw.trim()).ok()?).ok()?;
    (!username.contains('\0')).then_some((username, id))
}

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
    if_none_match: IfNoneMatch,
) -> Result<Response, ApiError> {
    let id: Option<Uuid> = path.ok().and_then(|Path(raw)| raw.parse().ok());
    // Authorisation before existence: a non-admin learns nothing about other ids, not even
    // whether they exist or are well-formed.
    if principal.role != Role::Admin && id != Some(principal.user_id) {
        return Err(ApiError::Forbidden(Role::Admin.as_str()));
    }
    let id = id.ok_or(ApiError::NotFound("user"))?;
    let user = users::get(&state.pool, id).await?.ok_or(ApiError::NotFound("user"))?;
    Ok(super::versioned(&if_none_match, user.version, &user))
}
