//! The whole system: command-api and query-api in this process, the projector as a child
//! process, all on the test's own database and topics.

use std::time::{Duration, Instant};

use command_api::accounts;
use command_api::auth::PasswordHasher;
use event_store::EventMetadata;
use reqwest::Client;
use serde_json::{json, Value};
use test_support::http::{server_args, TestServer};
use test_support::serve;

use crate::support::{eventually, Pipeline};

pub struct Apis {
    /// Base URLs.
    pub command: String,
    pub query: String,
    /// Told to stop when dropped.
    _servers: [TestServer; 2],
}

/// command-api and query-api in this process, on the pipeline's database.
pub async fn start_apis(pipeline: &Pipeline) -> Apis {
    // Each service under its own least-privilege role, as deployed.
    let command = serve!(command_api, server_args("command-api", &pipeline.command_url, &[])).await;
    let query = serve!(query_api, server_args("query-api", &pipeline.query_url, &[])).await;
    Apis { command: command.base.clone(), query: query.base.clone(), _servers: [command, query] }
}

/// Registers an admin through the domain and logs in through command-api: (user id, token).
pub async fn admin_token(pipeline: &Pipeline, apis: &Apis) -> (uuid::Uuid, String) {
    let client = Client::new();
    let admin = accounts::register(
        &pipeline.commands(),
        &PasswordHasher::owasp_minimum(),
        "admin",
        "admin@example.com",
        "admin-password-123".into(),
        &[domain::Role::Admin],
        EventMetadata::new("test"),
    )
    .await
    .unwrap();
    let login: Value = client
        .post(format!("{}/api/v1/auth/token", apis.command))
        .json(&json!({"username": "admin", "password": "admin-password-123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    (admin, token)
}

#[tokio::test]
async fn create_update_and_delete_through_command_api_become_visible_in_query_api() {
    let pipeline = Pipeline::new().await;
    let _projector = pipeline.projector("all", &[]);
    let apis = start_apis(&pipeline).await;
    let client = Client::new();
    let (admin, token) = admin_token(&pipeline, &apis).await;

    // Create, then read your write.
    let created = client
        .post(format!("{}/api/v1/products", apis.command))
        .bearer_auth(&token)
        .json(&json!({"name": "Lamp", "description": "Brass", "price": 19.99}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let product = format!("{}/api/v1/products/{id}", apis.query);
    let read = client.get(format!("{product}?min_version=1")).send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"1\"");
    let body: Value = read.json().await.unwrap();
    assert_eq!(
        (&body["name"], &body["description"], &body["price"], &body["version"]),
        (&json!("Lamp"), &json!("Brass"), &json!("19.99"), &json!(1))
    );

    // The product is cached now. Update it; once the update is projected, a plain read (no
    // min_version) shows it within a second.
    assert_eq!(client.get(&product).send().await.unwrap().status(), 200);
    let updated = client
        .patch(format!("{}/api/v1/products/{id}", apis.command))
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .json(&json!({"price": "24.50"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    eventually("the update is projected", Duration::from_secs(30), || async {
        pipeline.product_version(id.parse().unwrap()).await == 2
    })
    .await;
    let projected_at = Instant::now();
    eventually("the cached product shows the update", Duration::from_secs(1), || async {
        let body: Value = client.get(&product).send().await.unwrap().json().await.unwrap();
        body["price"] == "24.50" && body["version"] == 2
    })
    .await;
    assert!(projected_at.elapsed() < Duration::from_secs(1));

    let listed: Value =
        client.get(format!("{}/api/v1/products", apis.query)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["name"], "Lamp");

    // Delete: the product is gone from the read side too.
    let deleted =
        client.delete(format!("{}/api/v1/products/{id}", apis.command)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = client.get(format!("{product}?min_version=3")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let listed: Value =
        client.get(format!("{}/api/v1/products", apis.query)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["total"], 0);

    // The admin's profile reached the users read model, without credentials.
    let profile_url = format!("{}/api/v1/users/{admin}", apis.query);
    eventually("the admin's profile is projected with both roles", Duration::from_secs(30), || async {
        let response = client.get(&profile_url).bearer_auth(&token).send().await.unwrap();
        response.status() == 200 && response.json::<Value>().await.unwrap()["roles"] == json!(["admin", "customer"])
    })
    .await;
    let profile: Value = client.get(&profile_url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(profile["username"], "admin");
    assert!(!profile.to_string().contains("password"), "{profile}");
}
