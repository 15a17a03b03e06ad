//! The category aggregate: a named, slugged node in the tree products are filed under.
//!
//! A category knows only its own parent. Rules that span categories (no cycles, slugs unique,
//! no deleting a category that still has children) need other aggregates, so the service and the
//! event store enforce them; this aggregate enforces what one category's history can decide.

mod aggregate;
mod commands;
mod events;
mod values;

pub use aggregate::{Category, CategoryError};
pub use commands::CategoryCommand;
pub use events::CategoryEvent;
pub use values::{CategoryName, Slug};
