//! Catalog's domain: the `Product` and `User` aggregates, their commands, events and rules.
//!
//! # Layout
//! - [`product`]: the product aggregate (create, partial update, delete) and its value rules.
//! - [`user`]: the user aggregate (register, change email or password, roles, deactivate), the
//!   password policy and the username-derived aggregate id that keeps usernames unique.
//! - [`validation`]: field-level violations shared by both aggregates.
//!
//! This crate never does IO: no HTTP, no SQL, no clock reads inside rules. Services supply
//! ids and password hashes in the commands; the aggregates decide what happens.

pub mod product;
pub mod user;
pub mod validation;

pub use product::{Price, Product, ProductCommand, ProductError, ProductEvent};
pub use user::{Role, User, UserCommand, UserError, UserEvent};
pub use validation::{FieldViolation, Violations};
