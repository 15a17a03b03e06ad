//! The OpenAPI document against the routes the server really answers: the read API's
//! [`Contract`] (see `test_support::openapi` for what its check proves and what it does not),
//! and what the document says about tokens, parameters and the read model's views.

use std::collections::BTreeSet;

use serde_json::Value;
use test_support::openapi::{self, Contract};

use crate::helpers::spawn_app;

/// The read API's contract; it probes the write API's paths and prefixes as unlisted.
const READ_API: Contract = Contract {
    title: "Catalog read API",
    operations: &[
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/ready"),
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/{id}"),
        ("GET", "/api/v1/users/{id}"),
    ],
    unlisted: &["/", "/api", "/api/v1", "/api/v1/users", "/api/v1/auth/token", "/openapi.yaml", "/api/v1/openapi.json"],
    built: query_api::app::openapi,
};

#[tokio::test]
async fn the_document_and_the_routes_are_exactly_the_read_api() {
    let app = spawn_app().await;
    READ_API.check(&app).await;
}

#[tokio::test]
async fn profiles_need_the_bearer_scheme_and_products_do_not() {
    let app = spawn_app().await;
    let spec = openapi::fetch(&app).await;
    let users = &spec["paths"]["/api/v1/users/{id}"]["get"];
    assert_eq!(users["security"], serde_json::json!([{"bearer": []}]));
    for status in ["200", "304", "401", "403", "404", "503"] {
        assert!(users["responses"][status].is_object(), "GET /api/v1/users/{{id}} documents {status}");
    }
    for path in ["/api/v1/products", "/api/v1/products/{id}"] {
        assert!(spec["paths"][path]["get"]["security"].is_null(), "{path} needs no token");
    }
    let limit = spec["paths"]["/api/v1/products"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit is documented");
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
}

/// `read_model`'s views are described by local schema types (the read-model crate has no
/// OpenAPI): the fields real responses carry must be the ones the schemas list.
#[tokio::test]
async fn product_and_user_schemas_match_what_is_served() {
    let app = spawn_app().await;
    let spec = openapi::fetch(&app).await;
    let id = app.a_product("Lamp", "19.99").await;
    let (user, token) = app.a_user("ann", &[], domain::Role::Customer).await;
    let product: Value = app.get(&format!("/api/v1/products/{id}")).send().await.unwrap().json().await.unwrap();
    let profile: Value = app.get(&format!("/api/v1/users/{user}")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    let page: Value = app.get("/api/v1/products").send().await.unwrap().json().await.unwrap();
    for (name, body) in [("Product", &product), ("User", &profile), ("Page", &page)] {
        let schema = &spec["components"]["schemas"][name];
        let described: BTreeSet<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let required: BTreeSet<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let served: BTreeSet<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(served, described, "{name}: served fields vs. schema properties");
        assert_eq!(required, described, "{name}: every field is always present");
    }
}
