//! Catalog's read models and the one definition of how events fold into them.
//!
//! The projector (from Kafka), `catalogctl rebuild` and `verify` (from the event store) and
//! query-api (reading rows) all go through this crate, so a product looks the same whichever
//! path built it.
//!
//! # Layout
//! - [`event`]: [`CatalogEvent`], an event as it leaves the event store: upcast to today's
//!   shape and stripped of credential material, ready for Kafka and for folding.
//! - [`event_store`]: the reads the pipeline makes on the `events` table: the commit-safe tail
//!   and one aggregate's history (to heal gaps).
//! - [`message`]: the Kafka wire format (CloudEvents binary mode headers), client-agnostic.
//! - [`products`], [`users`]: the view types, their pure `apply` folds, and their SQL.
//! - [`projection`]: applies a batch of events inside a transaction under the version rule
//!   (apply at `version + 1`, skip what is applied, heal a gap from the event store).
//!
//! Nothing here talks to Kafka or HTTP; callers own transactions and retries.

pub mod event;
pub mod event_store;
pub mod message;
pub mod products;
pub mod projection;
pub mod rebuild;
pub mod verify;
pub mod users;

pub use event::CatalogEvent;
pub use projection::{apply_events, ApplyError, Outcome};
