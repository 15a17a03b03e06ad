use command_api::accounts;
use command_api::auth::PasswordHasher;
use domain::{Category, Product, Role};
use event_store::{CommandBus, EventMetadata};
use reqwest::Response;
use serde_json::{json, Value};
pub use test_support::http::{
    assert_problem, test_token, token_signed_by, OTHER_PUBLIC_KEY, OTHER_SIGNING_KEY, TEST_PUBLIC_KEY,
};

pub const ADMIN_PASSWORD: &str = "admin-password-123";

test_support::test_app! {
    /// A server on a database of its own, connected as a member of `catalog_command` only (its
    /// production role), with the write API's fixtures; its requests, pool (the owner's)
    /// and `stop` are [`TestServer`](test_support::http::TestServer)'s.
    TestApp: command_api as "command-api", role "catalog_command"
}

impl TestApp {
    /// Creates a user directly (as `catalogctl user create` does) with the given extra roles.
    pub async fn create_user(&self, username: &str, password: &str, roles: &[Role]) -> uuid::Uuid {
        accounts::register(
            &CommandBus::new(self.pool.clone()),
            &PasswordHasher::owasp_minimum(),
            username,
            &format!("{username}@example.com"),
            password.into(),
            roles,
            EventMetadata::new("test"),
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

    pub async fn patch_product(&self, token: &str, id: &str, body: Value) -> Response {
        self.patch(&format!("/api/v1/products/{id}")).bearer_auth(token).json(&body).send().await.unwrap()
    }

    pub async fn adjust_stock(&self, token: &str, id: &str, body: Value) -> Response {
        let path = format!("/api/v1/products/{id}/stock-adjustments");
        self.post(&path).bearer_auth(token).json(&body).send().await.unwrap()
    }

    pub async fn create_category(&self, token: &str, body: Value) -> Response {
        self.post("/api/v1/categories").bearer_auth(token).json(&body).send().await.unwrap()
    }

    /// Creates a category with `slug` (named after it) under `parent`, and returns its id.
    pub async fn a_category(&self, token: &str, slug: &str, parent: Option<&str>) -> String {
        let response = self.create_category(token, json!({"name": slug, "slug": slug, "parent_id": parent})).await;
        assert_eq!(response.status(), 201, "creating category {slug}");
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn patch_category(&self, token: &str, id: &str, body: Value) -> Response {
        self.patch(&format!("/api/v1/categories/{id}")).bearer_auth(token).json(&body).send().await.unwrap()
    }

    pub async fn delete_category(&self, token: &str, id: &str) -> Response {
        self.delete(&format!("/api/v1/categories/{id}")).bearer_auth(token).send().await.unwrap()
    }

    /// Product `id` as the event store folds it (what the next command will be decided on).
    pub async fn load_product(&self, id: &str) -> Product {
        CommandBus::new(self.pool.clone()).load::<Product>(id).await.unwrap()
    }

    pub async fn load_category(&self, id: &str) -> Category {
        CommandBus::new(self.pool.clone()).load::<Category>(id).await.unwrap()
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
}

/// The id in a create's answer.
pub async fn created_id(response: Response) -> String {
    assert_eq!(response.status(), 201, "expected a create");
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// How many of `statuses` are `status`.
pub fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// The `field` of each validation error in a problem body.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

/// The `field` of each validation error, sorted: for checks that do not depend on the order.
pub fn sorted_error_fields(problem: &Value) -> Vec<String> {
    let mut fields = error_fields(problem);
    fields.sort();
    fields
}
