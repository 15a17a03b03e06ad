//! The event pipeline against the real Postgres and the real broker: the projector runs as a
//! child process, events are written through the domain into the event store.

mod catalog;
mod crashes;
mod end_to_end;
mod projecting;
mod publishing;
mod reservations;
mod support;
mod telemetry;
