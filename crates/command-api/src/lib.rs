//! Catalog's write API: takes product, category and user commands over HTTP, checks them against
//! the domain's aggregates and appends the resulting events to the Postgres event store, whose
//! transaction also enforces the rules that span aggregates (unique SKUs and slugs, existing
//! categories, no cycles).
//! It never touches read models or Kafka.
//!
//! # Layout
//! - [`app`]: settings, shared state, router and middleware; `Application::build` / `run`.
//! - [`routes`]: one module per resource (`users`, `accounts`, `tokens`, `products` with stock
//!   adjustments, `categories`).
//! - [`accounts`]: registration and login (also used by `catalogctl user create`), a user's
//!   own email and password, admins' role changes and deactivation.
//! - [`import`]: bulk import of products from NDJSON or CSV, upserted by SKU; used by
//!   `POST /api/v1/products/import` and `catalogctl import`.
//! - [`auth`]: argon2id passwords in memory-budgeted slots, login and registration rate limits
//!   (tokens, `Principal` and the client address are `http_api`'s).
//! - [`failures`]: the one mapping from a command that did not commit to a problem response,
//!   including the catalog rules the event store raises (SQLSTATEs `CT409`, `CT422`).
//! - [`sessions`]: refresh-token sessions (rotation, reuse detection, revocation when the
//!   user's credentials change).
//! - [`idempotency`]: `Idempotency-Key` claims and stored responses, keyed fingerprints, expiry.
//! - [`extract`]: extractors that turn bad input into problem responses (`If-Match`, JSON, keys)
//!   and the request's event metadata.
//!
//! Appending itself (cqrs-es over postgres-es, snapshots, conflicts) is the `event_store`
//! crate's; the problem+json error type is `http_api`'s.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod extract;
pub mod failures;
pub mod idempotency;
pub mod import;
pub mod routes;
pub mod sessions;

pub use app::{AppState, Application, Settings};
