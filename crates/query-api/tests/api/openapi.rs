//! The OpenAPI document against the routes the server really answers: the read API's
//! [`Contract`] (see `test_support::openapi` for what its check proves and what it does not),
//! and what the document says about tokens, parameters and the read model's views.

use std::collections::BTreeSet;

use serde_json::{json, Value};
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
        ("GET", "/api/v1/products/{id}/history"),
        ("GET", "/api/v1/categories"),
        ("GET", "/api/v1/categories/{id}"),
        ("GET", "/api/v1/users/{id}"),
    ],
    unlisted: &[
        "/",
        "/api",
        "/api/v1",
        "/api/v1/users",
        "/api/v1/auth/token",
        "/openapi.yaml",
        "/api/v1/openapi.json",
        "/api/v1/products/{id}/stock-adjustments",
        "/api/v1/products/{id}/history/{version}",
        "/api/v1/categories/{id}/products",
    ],
    built: query_api::app::openapi,
};

#[tokio::test]
async fn the_document_and_the_routes_are_exactly_the_read_api() {
    let app = spawn_app().await;
    READ_API.check(&app).await;
}

#[tokio::test]
async fn profiles_and_history_need_the_bearer_scheme_and_products_take_it_optionally() {
    let app = spawn_app().await;
    let spec = openapi::fetch(&app).await;
    for path in ["/api/v1/users/{id}", "/api/v1/products/{id}/history"] {
        let operation = &spec["paths"][path]["get"];
        assert_eq!(operation["security"], json!([{"bearer": []}]), "{path}");
        for status in ["200", "401", "403", "404", "503"] {
            assert!(operation["responses"][status].is_object(), "GET {path} documents {status}");
        }
    }
    for (path, statuses) in [
        ("/api/v1/products", &["200", "400", "401", "403", "503"][..]),
        ("/api/v1/products/{id}", &["200", "304", "400", "401", "404", "503"]),
    ] {
        let operation = &spec["paths"][path]["get"];
        assert_eq!(operation["security"], json!([{}, {"bearer": []}]), "{path}: anonymous, or with a token");
        let documented: BTreeSet<&str> = operation["responses"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(documented, statuses.iter().copied().collect(), "{path}");
    }
    for path in ["/api/v1/categories", "/api/v1/categories/{id}"] {
        assert!(spec["paths"][path]["get"]["security"].is_null(), "{path} needs no token");
    }
    let detail = &spec["paths"]["/api/v1/products/{id}"]["get"]["parameters"];
    let names: BTreeSet<&str> = detail.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["id", "min_version", "as_of", "version", "If-None-Match"]));
    let status = spec["paths"]["/api/v1/products"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .expect("status is documented");
    assert_eq!(spec["components"]["schemas"]["Status"]["enum"], json!(["draft", "published", "archived"]), "{status}");
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
