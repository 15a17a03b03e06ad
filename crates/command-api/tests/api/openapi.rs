//! The OpenAPI document against the routes the server really answers: the write API's
//! [`Contract`] (see `test_support::openapi` for what its check proves and what it does not),
//! and what the document says about tokens and updates.

use test_support::openapi::{self, Contract};

use crate::helpers::spawn_app;

/// The write API's contract; it probes the read API's paths and prefixes as unlisted.
const WRITE_API: Contract = Contract {
    title: "Catalog write API",
    operations: &[
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/ready"),
        ("PATCH", "/api/v1/products/{id}"),
        ("DELETE", "/api/v1/products/{id}"),
        ("POST", "/api/v1/products/{id}/stock-adjustments"),
        ("PATCH", "/api/v1/categories/{id}"),
        ("DELETE", "/api/v1/categories/{id}"),
        ("POST", "/api/v1/auth/token"),
        ("POST", "/api/v1/products"),
        ("POST", "/api/v1/categories"),
        ("POST", "/api/v1/users"),
    ],
    unlisted: &[
        "/",
        "/api",
        "/api/v1",
        "/api/v1/users/{id}",
        "/api/v1/auth",
        "/api/v1/products/{id}/history",
        "/api/v1/products/{id}/stock",
        "/api/v1/products/{id}/stock-adjustments/{id}",
        "/api/v1/categories/{id}/children",
        "/openapi.yaml",
        "/api/v1/openapi.json",
    ],
    built: command_api::app::openapi,
};

#[tokio::test]
async fn the_document_and_the_routes_are_exactly_the_write_api() {
    let app = spawn_app().await;
    WRITE_API.check(&app).await;
}

#[tokio::test]
async fn protected_operations_name_the_bearer_scheme_and_document_401_and_403() {
    let app = spawn_app().await;
    let spec = openapi::fetch(&app).await;
    for (method, path) in [("post", "/api/v1/products"), ("patch", "/api/v1/products/{id}"), ("delete", "/api/v1/products/{id}")] {
        let operation = &spec["paths"][path][method];
        assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{method} {path}");
        for status in ["401", "403", "503"] {
            assert!(operation["responses"][status].is_object(), "{method} {path} documents {status}");
        }
    }
    for path in ["/api/v1/users", "/api/v1/auth/token"] {
        assert!(spec["paths"][path]["post"]["security"].is_null(), "{path} needs no token");
    }
    let update = &spec["components"]["schemas"]["UpdateProduct"];
    assert_eq!(update["minProperties"], 1, "an update changes something");
    assert!(update["maxProperties"].is_null());
    let problem = &spec["components"]["responses"]["Unauthorized"]["content"]["application/problem+json"];
    assert_eq!(problem["schema"]["$ref"], "#/components/schemas/Problem");
}
