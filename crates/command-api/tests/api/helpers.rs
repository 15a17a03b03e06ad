use std::time::Duration;

use command_api::accounts;
use command_api::auth::PasswordHasher;
use command_api::commands::{metadata, CommandBus};
use command_api::extract::RequestContext;
use command_api::{Application, Settings};
use clap::Parser;
use domain::Role;
use reqwest::{Client, RequestBuilder, Response};
use serde_json::{json, Value};
use service_runtime::{database, telemetry};
use sqlx::PgPool;
use test_support::TestDatabase;
use tokio::sync::oneshot;

pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret!";
pub const ADMIN_PASSWORD: &str = "admin-password-123";

pub struct TestApp {
    pub base: String,
    pub pool: PgPool,
    pub client: Client,
    /// Dropped (with the database) after the server has been told to stop.
    _database: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Extra settings for one test, as command-line flags.
pub async fn spawn_app_with(extra_args: &[&str]) -> TestApp {
    let database = TestDatabase::new().await;
    let database_url = database.url.clone();

    let mut args = vec![
        "command-api",
        "--addr",
        "127.0.0.1:0",
        "--database-url",
        &database_url,
        "--jwt-secret",
        TEST_JWT_SECRET,
    ];
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

impl TestApp {
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.client.patch(format!("{}{path}", self.base))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(format!("{}{path}", self.base))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    /// Creates a user directly (as `catalogctl user create` does) with the given extra roles.
    pub async fn create_user(&self, username: &str, password: &str, roles: &[Role]) -> uuid::Uuid {
        accounts::register(
            &CommandBus::new(self.pool.clone()),
            &PasswordHasher::owasp_minimum(),
            username,
            &format!("{username}@example.com"),
            password.into(),
            roles,
            metadata("test", &RequestContext::default()),
        )
        .await
        .expect("create user")
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post("/api/v1/auth/token").json(&json!({"username": username, "password": password})).send().await.unwrap()
    }

    pub async fn token_for(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "login of {username} failed");
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A fresh admin account and its token.
    pub async fn admin_token(&self) -> String {
        self.create_user("admin", ADMIN_PASSWORD, &[Role::Admin]).await;
        self.token_for("admin", ADMIN_PASSWORD).await
    }

    pub async fn create_product(&self, token: &str, body: Value) -> Response {
        self.post("/api/v1/products").bearer_auth(token).json(&body).send().await.unwrap()
    }

    /// Creates a valid product and returns its id.
    pub async fn a_product(&self, token: &str) -> String {
        let response = self.create_product(token, json!({"name": "Lamp", "price": "19.99"})).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.pool).await.unwrap()
    }

    pub async fn events_of(&self, aggregate_id: &str) -> Vec<(String, Value, Value)> {
        sqlx::query_as::<_, (String, sqlx::types::Json<Value>, sqlx::types::Json<Value>)>(
            "SELECT event_type, payload::jsonb, metadata::jsonb FROM events WHERE aggregate_id = $1 ORDER BY sequence",
        )
        .bind(aggregate_id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(t, p, m)| (t, p.0, m.0))
        .collect()
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

/// The `field` of each validation error in a problem body.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}
