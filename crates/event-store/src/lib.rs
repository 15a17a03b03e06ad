//! Catalog's event store: the `events` table in Postgres and everything that writes or reads it.
//!
//! Every other stage goes through this crate: command-api appends, the projector's publisher
//! tails, the projections heal gaps from a stream, and `catalogctl` reads position ranges and
//! rebuilds from whole aggregate types. Whatever leaves the store leaves it as a
//! [`CatalogEvent`]: upcast to today's shape and stripped of credential material.
//!
//! # Layout
//! - [`append`]: runs commands against cqrs-es aggregates and stores their events in the
//!   postgres-es row format ([`CommandBus`]): one statement loads (snapshot and later events),
//!   one appends (events and the snapshot they complete); it reports the new version and wakes
//!   the publisher after the commit.
//!   Event metadata ([`EventMetadata`]) is plain values: who, under which request, in which trace.
//! - [`reads`]: the commit-safe tail, one aggregate's stream, position ranges, and the
//!   snapshot-relative reads a rebuild needs.
//! - [`claims`]: who holds a SKU or a category slug (the write side's lookups by value).
//! - [`event`]: [`CatalogEvent`], the event as every downstream stage sees it.
//! - [`upcasting`]: readers of older event versions; the one list both the write path and the
//!   reads apply.
//!
//! The schema itself lives in the workspace's `migrations/` (applied by `service-runtime`).

pub mod append;
pub mod batch;
pub mod claims;
pub mod event;
pub mod reads;
pub mod upcasting;

pub use append::{CommandBus, CommandError, EventMetadata, DEFAULT_SNAPSHOT_EVERY};
pub use event::CatalogEvent;
pub use reads::{CommitPosition, EventFilter};
pub use upcasting::CurrencySettings;
