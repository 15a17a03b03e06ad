//! HTTP tests of the write API against a real Postgres: every test gets its own fresh,
//! migrated database and its own server on a free port.

mod accounts;
mod appends;
mod catalog_rules;
mod categories;
mod concurrency;
mod failures;
mod helpers;
mod idempotency;
mod import;
mod openapi;
mod operations;
mod product_fields;
mod products;
mod registration_memory;
mod rejections;
mod reservations;
mod sessions;
mod settings;
mod snapshots;
mod stock;
mod tokens;
mod users;
