//! Fixtures for integration tests that run against the real Postgres and the real broker
//! (`cargo xtask test` provides both and sets `DATABASE_URL` and `KAFKA_BROKERS`).
//!
//! Each test gets a database of its own (created, migrated, and dropped when the fixture is
//! dropped) and topic and group names no other test uses, so tests run in parallel.
//!
//! # Modules
//! - [`http`]: an API server in the test's process ([`http::TestServer`], [`serve!`],
//!   [`test_app!`]) and [`http::assert_problem`].
//! - [`openapi`]: an API's OpenAPI document checked against the routes its server answers.
//! - [`eventually`](mod@eventually): waiting until a condition holds.

pub mod eventually;
pub mod http;
pub mod openapi;

pub use eventually::eventually;

/// What the macros of [`http`] use, for crates that do not depend on it themselves.
#[doc(hidden)]
pub mod __private {
    pub use clap::Parser;
    pub use service_runtime::{database, telemetry};
}

use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The Kafka bootstrap servers tests use.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn server_url(database: &str) -> String {
    let base = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (server, _) = base.rsplit_once('/').expect("DATABASE_URL has a database path");
    format!("{server}/{database}")
}

/// A migrated database of the test's own, dropped when this is dropped.
pub struct TestDatabase {
    pub pool: PgPool,
    pub url: String,
    /// Unique per test: a suffix for topic and group names.
    pub id: String,
    name: String,
    /// Login users made by [`Self::login_as`], dropped with the database.
    logins: Vec<String>,
}

impl TestDatabase {
    pub async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let name = format!("catalog_test_{id}");
        let mut admin = PgConnection::connect(&server_url("postgres")).await.expect("connect to Postgres");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
        let url = server_url(&name);
        let pool = PgPool::connect(&url).await.expect("connect to the test database");
        service_runtime::database::migrate(&pool).await.expect("migrate the test database");
        Self { pool, url, id, name, logins: Vec::new() }
    }

    /// A login user of this test's own that is a member of `role` (one of the roles the
    /// migrations create, such as `catalog_query`) and nothing else, and the URL of this
    /// database as that user (the local Postgres trusts loopback connections).
    pub async fn login_as(&mut self, role: &str) -> String {
        self.login_as_member_of(&[role]).await
    }

    /// [`Self::login_as`] for a login that is a member of each of `roles` (a process doing the
    /// work of several services, such as `projector --role all`).
    pub async fn login_as_member_of(&mut self, roles: &[&str]) -> String {
        let login = format!("{}_{}", roles.join("_"), self.id);
        sqlx::query(&format!("CREATE ROLE {login} LOGIN IN ROLE {}", roles.join(", ")))
            .execute(&self.pool)
            .await
            .expect("create a login user");
        self.logins.push(login.clone());
        let (scheme, rest) = self.url.split_once("://").expect("a URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{login}@{host}")
    }

    /// The events topic of this test.
    pub fn topic(&self) -> String {
        format!("test.{}.events", self.id)
    }

    pub fn dlq_topic(&self) -> String {
        format!("test.{}.events.dlq", self.id)
    }

    pub fn group(&self) -> String {
        format!("test-{}", self.id)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let logins = std::mem::take(&mut self.logins);
        // Drop is synchronous and may run inside the test's runtime: a thread with a runtime of
        // its own drops the database. The pool is not closed first (closing waits for
        // connections that only the blocked runtime could return); FORCE ends them instead.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&server_url("postgres")).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                    for login in logins {
                        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {login}")).execute(&mut admin).await;
                    }
                }
            });
        })
        .join();
    }
}
