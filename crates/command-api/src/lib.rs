//! Catalog's write API: takes product and user commands over HTTP, checks them against the
//! domain's aggregates and appends the resulting events to the Postgres event store.
//! It never touches read models or Kafka.
//!
//! # Layout
//! - [`app`]: settings, shared state, router and middleware; `Application::build` / `run`.
//! - [`routes`]: one module per resource (`users`, `tokens`, `products`).
//! - [`accounts`]: registration and login, also used by `catalogctl user create`.
//! - [`auth`]: argon2id passwords, HS256 tokens, login rate limits, the `Principal` extractor.
//! - [`commands`]: runs commands through `cqrs_es` over `postgres_es` and reports the new version.
//! - [`idempotency`]: `Idempotency-Key` claims and stored responses.
//! - [`extract`]: extractors that turn bad input into problem responses (`If-Match`, JSON, keys).
//! - `problem`: re-exported from `http-api`: the one error type and its problem+json rendering.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod commands;
pub mod extract;
pub mod idempotency;
pub mod routes;

pub use http_api::problem;

pub use app::{AppState, Application, Settings};
