//! Catalog's read API: serves products and user profiles from the read models the projector
//! writes. It never writes, and never reads the event store.
//!
//! # Layout
//! - [`app`]: settings, shared state, router and middleware; `Application::build` / `run`.
//! - [`routes`]: one module per resource (`products`, `users`) and the conditional-GET rule.
//! - [`cache`]: the product detail cache, the `LISTEN` task that invalidates it when a row
//!   changes, and the notification-driven waits behind `?min_version=`.
//!
//! Errors are `http_api::problem::ApiError` (problem+json), as in command-api.

pub mod app;
pub mod cache;
pub mod routes;
pub mod views;

pub use app::{AppState, Application, Settings};
