//! HTTP tests of the write API against a real Postgres: every test gets its own fresh,
//! migrated database and its own server on a free port.

mod concurrency;
mod helpers;
mod idempotency;
mod openapi;
mod operations;
mod products;
mod rejections;
mod snapshots;
mod tokens;
mod users;
