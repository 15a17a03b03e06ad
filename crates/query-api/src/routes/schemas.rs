//! How the read models look on the wire, for the OpenAPI document, and the query parameters.
//!
//! `read_model::users::UserView` is what the user handler serialises; it belongs to the
//! read-model crate, which knows nothing about OpenAPI, so it is described here. The tests
//! compare this description with real serialised views, so a field added to the view without
//! being described here fails a test. (Products, categories and history are served as
//! `crate::views` types, whose schemas are derived from the types themselves.)

#![allow(dead_code)] // these types are only ever described, never built

use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A user's profile (`read_model::users::UserView`); no credential material.
#[derive(ToSchema)]
#[schema(example = json!({
    "id": "3f0c6c5e-8a48-5d7e-9d6c-2f1e0c1b7a42",
    "username": "alice",
    "email": "alice@example.com",
    "roles": ["customer"],
    "active": true,
    "created_at": "2026-01-01T12:00:00Z",
    "updated_at": "2026-01-01T12:00:00Z",
    "version": 1
}))]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    /// `admin`, `customer`.
    pub roles: Vec<Role>,
    pub active: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(minimum = 1)]
    pub version: i64,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Customer,
}

/// The parameters of `GET /api/v1/products`. Anything else is a 400 naming the parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Products per page: 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20, example = 10)]
    pub limit: Option<i64>,
    /// Products to skip: 0 or more.
    #[param(minimum = 0, default = 0, example = 0)]
    pub offset: Option<i64>,
    /// Only products with this status. Admins only, except `published` (all that others see
    /// anyway): anything else without an admin token is 403.
    #[param(value_type = Option<crate::views::Status>, example = "published")]
    pub status: Option<String>,
}

/// Read-your-writes and time travel for `GET /api/v1/products/{id}`: at most one of them.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetailParams {
    /// Answer only once the read model holds this version (or later): the `version` a write
    /// returned. Waits at most `MIN_VERSION_WAIT_MS`, then 503 with `Retry-After`.
    #[param(minimum = 1, example = 1)]
    pub min_version: Option<i64>,
    /// The product as it was at this instant (RFC 3339, e.g. `2026-01-02T08:30:00Z`): 404 if it
    /// did not exist yet or was deleted by then.
    #[param(value_type = Option<String>, format = DateTime, example = "2026-01-02T08:30:00Z")]
    pub as_of: Option<String>,
    /// The product as it was at this version: 404 if it has not reached it, or was deleted at it.
    #[param(minimum = 1, example = 1)]
    pub version: Option<i64>,
}

/// Paging of `GET /api/v1/products/{id}/history`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Entries per page: 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20, example = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (opaque); absent for the newest entries.
    #[param(example = "21")]
    pub cursor: Option<String>,
}
