//! Catalog's projector: moves events from the event store through Kafka into the read models.
//!
//! # Layout
//! - [`app`]: settings (`--role publish|project|reservations|all`) and `run`, which starts the loops and
//!   the operational endpoints (`/health`, `/ready` checking Postgres and Kafka, `/metrics`).
//! - [`publisher`]: event store → `catalog.events`, commit-safe order, checkpoint after ack.
//! - [`message`]: the Kafka wire format of an event (CloudEvents binary mode), client-agnostic.
//! - [`reservations`]: the reservations process manager (`--role reservations`, also in `all`):
//!   its own consumer group, drives each reservation's saga through the event store's CommandBus.
//! - [`consumer`]: `catalog.events` → read models in group `catalog-projector`, offsets
//!   committed after the read-model transaction, poison events to `catalog.events.dlq`.
//!
//! - `fail_point` (feature `fault-injection` only): where the fault suite stops a loop to kill it.
//!
//! How events fold into rows is not here: that is `read_model`, shared with catalogctl; reading
//! the event store is `event_store`'s.

pub mod app;
pub mod consumer;
#[cfg(feature = "fault-injection")]
mod fail_point;
pub mod message;
pub mod parking;
pub mod publisher;
pub mod reservations;

pub use app::{run, Role, Settings};
