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

/// The parameters of `GET /api/v1/products` (and `attr.<key>`, documented with the operation).
/// A bad value is a 400 naming the parameter; unknown parameters are ignored.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Search text: at most 200 characters and 10 words. Every word must match the name, SKU, an
    /// attribute value or the description (as written or by its stem); the last also as a
    /// prefix (unless the text ends with a space). When no product matches the words, products
    /// whose name, SKU or brand is similar enough to the text are found instead (typos). Text
    /// without a letter or digit searches nothing.
    #[param(example = "espresso machine")]
    pub q: Option<String>,
    /// Only products in this category or any of its subcategories: its id or its slug (an
    /// unknown or deleted one matches nothing).
    #[param(example = "lighting")]
    pub category: Option<String>,
    /// Only products priced in this currency (ISO 4217). Required with `price_min` and `price_max`.
    #[param(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: Option<String>,
    /// Only products priced at least this much (in `currency`): a decimal number ≥ 0 with at most
    /// 4 fraction digits.
    #[param(pattern = r"^[0-9]+(\.[0-9]{1,4})?$", example = "10")]
    pub price_min: Option<String>,
    /// Only products priced at most this much (in `currency`); not below `price_min`.
    #[param(pattern = r"^[0-9]+(\.[0-9]{1,4})?$", example = "99.99")]
    pub price_max: Option<String>,
    /// `true`: only products with stock on hand; `false`: only those without.
    #[param(example = true)]
    pub in_stock: Option<bool>,
    /// Only products with this status. Admins only, except `published` (all that others see
    /// anyway): anything else without an admin token is 403.
    #[param(value_type = Option<crate::views::Status>, example = "published")]
    pub status: Option<String>,
    /// The order: `relevance` (best match first; needs `q`, and is the default with it),
    /// `price`, `-price`, `name`, `-name`, `created` (the default without `q`), `-created`,
    /// `updated`, `-updated` (`-`: descending). Ties are broken by id, in the same direction.
    #[param(value_type = Option<SortOrder>, example = "price")]
    pub sort: Option<String>,
    /// Facets to count, comma-separated: `category`, `brand`, `price`.
    #[param(pattern = "^(category|brand|price)(,(category|brand|price))*$", example = "category,brand")]
    pub facets: Option<String>,
    /// Products per page: 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20, example = 10)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (opaque), with every other parameter but `limit`
    /// unchanged; a cursor of another listing is 400.
    #[param(example = "eyJzIjoiY3JlYXRlZCJ9")]
    pub cursor: Option<String>,
    /// Deprecated: products to skip, 0 to 10,000 (follow `next_cursor` instead). Not with `cursor`.
    #[param(minimum = 0, maximum = 10000, default = 0, example = 0)]
    #[deprecated]
    pub offset: Option<i64>,
}

/// The orders of `GET /api/v1/products`.
#[derive(ToSchema)]
pub enum SortOrder {
    #[schema(rename = "relevance")]
    Relevance,
    #[schema(rename = "price")]
    Price,
    #[schema(rename = "-price")]
    PriceDescending,
    #[schema(rename = "name")]
    Name,
    #[schema(rename = "-name")]
    NameDescending,
    #[schema(rename = "created")]
    Created,
    #[schema(rename = "-created")]
    CreatedDescending,
    #[schema(rename = "updated")]
    Updated,
    #[schema(rename = "-updated")]
    UpdatedDescending,
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

/// Paging and search of `GET /api/v1/users`. A bad value is a 400 naming the parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListParams {
    /// Only users whose username or email starts with this (case-insensitive), at most 254
    /// characters.
    #[param(max_length = 254, example = "ali")]
    pub q: Option<String>,
    /// Users per page: 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20, example = 20)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (opaque), with the same `q`.
    #[param(example = "WyJhbGljZSIsIjNmMGM2YzVlLThhNDgtNWQ3ZS05ZDZjLTJmMWUwYzFiN2E0MiJd")]
    pub cursor: Option<String>,
}
