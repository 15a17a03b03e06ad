//! Catalog's read API: serves products (now, and as they were), categories and user profiles
//! from the read models the projector writes. It never writes, and never reads the event store:
//! product history and time travel come from the product history read model.
//!
//! # Layout
//! - [`app`]: settings, shared state, router and middleware; `Application::build` / `run`.
//! - [`routes`]: one module per resource (`products`, `categories`, `users`), who is reading
//!   (anyone, or an admin: only admins see products that are not published) and the
//!   conditional-GET rule.
//! - [`listing`]: the product listing's parameters (search text, filters, sort, paging,
//!   facets) checked into a request, and its opaque cursor; the SQL is `read_model::search`.
//! - [`views`]: what is served, built from read-model rows (a product's price in its
//!   currency's digits and its categories by name; the category tree; history entries).
//! - [`listing_cache`]: shoppers' first pages of the listing, encoded once, served until
//!   anything in the catalog changes.
//! - [`cache`]: the product detail cache, the `LISTEN` task that invalidates it when a product
//!   or a category changes, and the notification-driven waits behind `?min_version=`.
//!
//! Errors are `http_api::problem::ApiError` (problem+json), as in command-api.

pub mod app;
pub mod cache;
pub mod listing;
pub mod listing_cache;
pub mod routes;
pub mod views;

pub use app::{AppState, Application, Resources, Settings};
