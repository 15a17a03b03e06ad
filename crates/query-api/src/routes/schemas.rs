//! How the read models look on the wire, for the OpenAPI document.
//!
//! `read_model::products::ProductView` and `read_model::users::UserView` are what the handlers
//! serialise; they belong to the read-model crate, which knows nothing about OpenAPI, so they
//! are described here. The tests compare these descriptions with real serialised views, so a
//! field added to a view without being described here fails a test.

#![allow(dead_code)] // these types are only ever described, never built

use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A live product (`read_model::products::ProductView`).
#[derive(ToSchema)]
#[schema(example = json!({
    "id": "0b6c51d4-8e2f-4b7a-a1c3-95de2f607a18",
    "name": "Desk lamp",
    "description": "Warm light, dimmable",
    "price": "19.99",
    "created_at": "2026-01-01T12:00:00Z",
    "updated_at": "2026-01-02T08:30:00Z",
    "version": 2
}))]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    /// Empty when none was given.
    pub description: String,
    /// Exact, always two fraction digits, as a string.
    #[schema(pattern = r"^[0-9]+\.[0-9]{2}$", example = "19.99")]
    pub price: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// The version the read model holds (the same number as the `ETag`).
    #[schema(minimum = 1)]
    pub version: i64,
}

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

/// The paging parameters of `GET /api/v1/products`. Anything else is a 400 naming the parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Products per page: 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20, example = 10)]
    pub limit: Option<i64>,
    /// Products to skip: 0 or more.
    #[param(minimum = 0, default = 0, example = 0)]
    pub offset: Option<i64>,
}

/// Read-your-writes for `GET /api/v1/products/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetailParams {
    /// Answer only once the read model holds this version (or later): the `version` a write
    /// returned. Waits at most `MIN_VERSION_WAIT_MS`, then 503 with `Retry-After`.
    #[param(minimum = 1, example = 1)]
    pub min_version: Option<i64>,
}
