//! What every Catalog binary shares at run time.
//!
//! # Layout
//! - [`settings`]: the flags and environment variables all binaries read (database, logging).
//! - [`database`]: the Postgres pool and the embedded schema migrations (one source of truth).
//! - [`telemetry`]: `tracing` subscriber setup (`pretty` or `json`) and the Prometheus recorder.
//! - `kafka` (feature `kafka`): broker settings, the idempotent producer, topic creation.
//! - [`operations`]: `/health`, `/ready` and `/metrics`, and the HTTP metrics middleware.
//! - [`retry`]: jittered exponential retry delays (backon).
//! - [`shutdown`]: the SIGTERM/SIGINT future every server and loop stops on.
//!
//! Nothing here knows about products, users or events: that belongs to `domain` and the services.

pub mod database;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod operations;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
