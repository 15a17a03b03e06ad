use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use domain::Role;
use http_api::tokens::TokenKeys;
use query_api::{Application, Settings};
use read_model::CatalogEvent;
use reqwest::{Client, RequestBuilder, Response};
use serde_json::{json, Value};
use service_runtime::{database, telemetry};
use sqlx::PgPool;
use test_support::TestDatabase;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

pub struct TestApp {
    pub base: String,
    pub pool: PgPool,
    pub client: Client,
    /// Dropped (with the database) after the server has been told to stop.
    _database: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A server on its own database, with extra settings as command-line flags.
pub async fn spawn_app_with(extra_args: &[&str]) -> TestApp {
    let database = TestDatabase::new().await;
    let database_url = database.url.clone();

    let mut args = vec!["query-api", "--addr", "127.0.0.1:0", "--database-url", &database_url, "--jwt-secret", TEST_JWT_SECRET];
    args.extend_from_slice(extra_args);
    let settings = Settings::try_parse_from(args).expect("valid test settings");
    let pool = database::pool(&settings.database).unwrap();
    let app = Application::build(settings, pool.clone(), telemetry::init_metrics()).await.expect("build app");
    let base = format!("http://{}", app.local_addr());
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp { base, pool, client: Client::new(), _database: database, shutdown: Some(tx), server: Some(server) }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A server whose Postgres is unreachable (a closed port): its base URL.
pub async fn spawn_app_without_database() -> String {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://postgres@127.0.0.1:{closed_port}/nowhere");
    let settings = Settings::try_parse_from([
        "query-api", "--addr", "127.0.0.1:0", "--database-url", &url, "--jwt-secret", TEST_JWT_SECRET,
    ])
    .unwrap();
    let pool = database::pool(&settings.database).unwrap();
    let app = Application::build(settings, pool, telemetry::init_metrics()).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run(std::future::pending()));
    base
}

impl TestApp {
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    /// Writes events to the read model in one committed transaction, as the projector does.
    pub async fn apply(&self, events: &[CatalogEvent]) {
        let mut transaction = self.pool.begin().await.unwrap();
        read_model::apply_events(&mut transaction, events).await.expect("apply events");
        transaction.commit().await.unwrap();
    }

    /// A live product named `name` at version 1, created at `at`.
    pub async fn a_product_at(&self, name: &str, price: &str, at: DateTime<Utc>) -> Uuid {
        let id = Uuid::new_v4();
        self.apply(&[product_created(id, name, price, at)]).await;
        id
    }

    pub async fn a_product(&self, name: &str, price: &str) -> Uuid {
        self.a_product_at(name, price, Utc::now()).await
    }

    /// A registered user (customer, plus `extra_roles`) and a bearer token naming `token_role`.
    pub async fn a_user(&self, username: &str, extra_roles: &[Role], token_role: Role) -> (Uuid, String) {
        let id = Uuid::new_v4();
        let mut events = vec![event(
            "User",
            id,
            1,
            "UserRegistered",
            json!({"UserRegistered": {"id": id, "username": username, "email": format!("{username}@example.com"),
                                      "password_hash": "$argon2id$v=19$secret-hash"}}),
            Utc::now(),
        )];
        for (i, role) in extra_roles.iter().enumerate() {
            events.push(event("User", id, 2 + i as i64, "UserRoleGranted", json!({"UserRoleGranted": {"role": role}}), Utc::now()));
        }
        self.apply(&events).await;
        (id, token(id, token_role))
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(server) => tokio::time::timeout(Duration::from_secs(10), server).await??,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A stored event as the projector would receive it.
pub fn event(aggregate_type: &str, id: Uuid, sequence: i64, event_type: &str, payload: Value, at: DateTime<Utc>) -> CatalogEvent {
    let version = if event_type == "UserRegistered" { domain::UserEvent::REGISTERED_VERSION } else { "1.0.0" };
    CatalogEvent::from_stored(
        Uuid::new_v4(),
        aggregate_type.into(),
        id.to_string(),
        sequence,
        event_type.into(),
        version.into(),
        payload,
        json!({}),
        sequence,
        at,
    )
}

pub fn product_created(id: Uuid, name: &str, price: &str, at: DateTime<Utc>) -> CatalogEvent {
    let payload = json!({"ProductCreated": {"id": id, "name": name, "description": format!("About {name}"), "price": price}});
    event("Product", id, 1, "ProductCreated", payload, at)
}

pub fn product_updated(id: Uuid, sequence: i64, changes: Value) -> CatalogEvent {
    event("Product", id, sequence, "ProductUpdated", json!({ "ProductUpdated": changes }), Utc::now())
}

pub fn product_deleted(id: Uuid, sequence: i64) -> CatalogEvent {
    event("Product", id, sequence, "ProductDeleted", json!({"ProductDeleted": {}}), Utc::now())
}

pub fn token(user_id: Uuid, role: Role) -> String {
    TokenKeys::new(TEST_JWT_SECRET.as_bytes(), Duration::from_secs(600)).issue(user_id, role).unwrap()
}

/// Awaits `check` until it yields a value or `within` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts an RFC 9457 problem response with `status`, and returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("/problems/"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}
