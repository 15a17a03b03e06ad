//! Catalog's domain: the `Product`, `Category` and `User` aggregates, their commands, events and rules.
//!
//! # Layout
//! - [`product`]: the product aggregate (create, partial update, stock adjustment, delete) and its
//!   value rules: name, description, sku, status and its transitions, categories, attributes, images.
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
pub mod tri_state;
pub mod user;
pub mod validation;

pub use category::{Category, CategoryCommand, CategoryError, CategoryEvent};
pub use money::{Currency, Money};
pub use product::{Product, ProductCommand, ProductError, ProductEvent, ProductImage, ProductStatus};
pub use user::{Role, User, UserCommand, UserError, UserEvent};
pub use validation::{FieldViolation, Violations};
