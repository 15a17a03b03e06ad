//! Catalog's domain: the `Product`, `Category` and `User` aggregates, their commands, events and rules.
//!
//! # Layout
//! - [`product`]: the product aggregate (create, partial update, stock adjustment, delete) and its
//!   value rules: name, description, sku, status and its transitions, categories, attributes, images.
//! - [`reservation`]: a hold on several products' stock at once, all or nothing, and the saga
//!   steps the process manager takes for it (reserve, release, commit, expire).
//! - [`category`]: the category aggregate (create, partial update including moving it, delete).
//! - [`money`]: ISO 4217 currencies and prices with exactly their currency's fraction digits.
//! - [`user`]: the user aggregate (register, change email or password, roles, deactivate), the
//!   password policy and the username-derived aggregate id that keeps usernames unique.
//! - [`validation`]: field-level violations and text rules shared by the aggregates.
//! - [`tri_state`]: serde for "absent / null / value" fields of partial updates.
//!
//! This crate never does IO: no HTTP, no SQL, no clock reads inside rules. Services supply
//! ids, password hashes and settings (default currency, whether http images are allowed) in the
//! commands; the event store enforces what spans aggregates (sku and slug uniqueness, that
//! categories exist, category cycles) and reads older event versions into today's shape; the
//! aggregates decide what happens.

pub mod category;
pub mod money;
pub mod product;
pub mod reservation;
pub mod tri_state;
pub mod user;
pub mod validation;

pub use category::{Category, CategoryCommand, CategoryError, CategoryEvent};
pub use money::{Currency, Money};
pub use product::{Product, ProductCommand, ProductError, ProductEvent, ProductImage, ProductStatus};
pub use reservation::{Reservation, ReservationCommand, ReservationError, ReservationEvent, ReservationStatus};
pub use user::{Role, User, UserCommand, UserError, UserEvent};
pub use validation::{FieldViolation, Violations};

/// Folds a history into the aggregate it describes: the same fold the event store performs,
/// for readers that hold the events.
pub fn replay<A: cqrs_es::Aggregate + Default>(events: impl IntoIterator<Item = A::Event>) -> A {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event);
    }
    aggregate
}

/// Why a command on an existing aggregate cannot run: it was never created, it was deleted, or
/// the client pinned a version that is no longer current. Each aggregate maps it to its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotLive {
    NotFound,
    Deleted,
    VersionMismatch { expected: u64, actual: u64 },
}

/// The liveness check every aggregate with a create and a delete makes before a change.
pub(crate) fn ensure_live(
    created: bool,
    deleted: bool,
    version: u64,
    expected_version: Option<u64>,
) -> Result<(), NotLive> {
    match expected_version {
        _ if !created => Err(NotLive::NotFound),
        _ if deleted => Err(NotLive::Deleted),
        Some(expected) if expected != version => Err(NotLive::VersionMismatch { expected, actual: version }),
        _ => Ok(()),
    }
}
