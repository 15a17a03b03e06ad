//! Catalog's read models and the one definition of how events fold into them.
//!
//! The projector (from Kafka), `catalogctl rebuild` and `verify` (from the event store) and
//! query-api (reading rows) all go through this crate, so a product looks the same whichever
//! path built it.
//!
//! # Layout
//! - [`products`], [`categories`], [`users`]: the view types, their pure `apply` folds, and their SQL.
//! - [`reservations`]: stock reservations with their items' states, folded by the domain's own fold.
//! - [`history`]: every product event as a row (what changed, the product after it), for history
//!   pages and time travel.
//! - [`search`]: finding products: text search with typo tolerance, filters, sorts, keyset pages
//!   frozen at the first page, totals and facets (query-api's listing; the schema is
//!   `migrations/*_product_search.sql`).
//! - [`projection`]: applies a batch of events inside a transaction under the version rule
//!   (apply at `version + 1`, skip what is applied, heal a gap from the event store).
//!
//! Nothing here talks to Kafka or HTTP; callers own transactions and retries.

pub mod categories;
pub mod history;
pub mod products;
pub mod projection;
pub mod rebuild;
pub mod reservations;
pub mod search;
pub mod users;
pub mod verify;

pub use projection::{apply_events, ApplyError, Outcome};
