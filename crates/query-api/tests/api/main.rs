//! HTTP tests of the read API against a real Postgres: every test gets its own fresh,
//! migrated database and its own server on a free port. Read-model rows are written with
//! `read_model::apply_events`, as the projector does, so the real triggers announce them.

mod categories;
mod freshness;
mod helpers;
mod history;
mod listing;
mod listing_cache;
mod openapi;
mod operations;
mod products;
mod security;
mod store;
mod time_travel;
mod users;
