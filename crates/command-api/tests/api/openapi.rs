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
        ("POST", "/api/v1/auth/refresh"),
        ("POST", "/api/v1/auth/logout"),
        ("GET", "/.well-known/jwks.json"),
        ("POST", "/api/v1/products"),
        ("POST", "/api/v1/products/import"),
        ("POST", "/api/v1/categories"),
        ("POST", "/api/v1/users"),
        ("PATCH", "/api/v1/users/me"),
        ("POST", "/api/v1/users/me/password"),
        ("PUT", "/api/v1/users/{id}/roles/{role}"),
        ("DELETE", "/api/v1/users/{id}/roles/{role}"),
        ("POST", "/api/v1/users/{id}/deactivate"),
        ("POST", "/api/v1/reservations"),
        ("POST", "/api/v1/reservations/{id}/confirm"),
        ("POST", "/api/v1/reservations/{id}/cancel"),
    ],
    unlisted: &[
        "/api/v1/reservations/{id}",
        "/",
        "/api",
        "/api/v1",
        "/api/v1/users/{id}",
        "/api/v1/auth",
        "/.well-known",
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
    let protected = [
        ("post", "/api/v1/products"),
        ("patch", "/api/v1/products/{id}"),
        ("delete", "/api/v1/products/{id}"),
        ("post", "/api/v1/products/{id}/stock-adjustments"),
        ("post", "/api/v1/products/import"),
        ("post", "/api/v1/categories"),
        ("patch", "/api/v1/categories/{id}"),
        ("delete", "/api/v1/categories/{id}"),
    ];
    for (method, path) in protected {
        let operation = &spec["paths"][path][method];
        assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{method} {path}");
        for status in ["401", "403", "503"] {
            assert!(operation["responses"][status].is_object(), "{method} {path} documents {status}");
        }
        if path.ends_with("{id}") || path.ends_with("stock-adjustments") {
            assert!(operation["responses"]["404"].is_object(), "{method} {path} documents 404");
            assert!(operation["responses"]["412"].is_object(), "{method} {path} documents 412");
        }
        if !path.ends_with("import") {
            assert!(operation["responses"]["409"].is_object(), "{method} {path} documents 409");
        }
    }
    for (method, path) in [
        ("put", "/api/v1/users/{id}/roles/{role}"),
        ("delete", "/api/v1/users/{id}/roles/{role}"),
        ("post", "/api/v1/users/{id}/deactivate"),
    ] {
        let operation = &spec["paths"][path][method];
        assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{method} {path}");
        for status in ["401", "403", "404", "409", "503"] {
            assert!(operation["responses"][status].is_object(), "{method} {path} documents {status}");
        }
    }
    for (method, path) in [("patch", "/api/v1/users/me"), ("post", "/api/v1/users/me/password")] {
        let operation = &spec["paths"][path][method];
        assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{method} {path}");
        assert!(operation["responses"]["401"].is_object(), "{method} {path} documents 401");
    }
    for path in ["/api/v1/users", "/api/v1/auth/token"] {
        assert!(spec["paths"][path]["post"]["security"].is_null(), "{path} needs no token");
    }
    for schema in ["UpdateProduct", "UpdateCategory"] {
        let update = &spec["components"]["schemas"][schema];
        assert_eq!(update["minProperties"], 1, "{schema}: an update changes something");
        assert!(update["maxProperties"].is_null());
    }
    let problem = &spec["components"]["responses"]["Unauthorized"]["content"]["application/problem+json"];
    assert_eq!(problem["schema"]["$ref"], "#/components/schemas/Problem");
}

/// The request schemas name every field the API takes, refuse others, and say which are nullable:
/// what schemathesis generates requests from.
#[test]
fn the_catalog_request_schemas_are_exact() {
    let spec = serde_json::to_value(command_api::app::openapi()).unwrap();
    let schemas = &spec["components"]["schemas"];
    // Sorted: the document's maps are.
    let fields = |schema: &str| -> Vec<String> {
        let properties = schemas[schema]["properties"].as_object().unwrap_or_else(|| panic!("{schema}"));
        assert_eq!(schemas[schema]["additionalProperties"], false, "{schema} refuses unknown fields");
        let mut names: Vec<String> = properties.keys().cloned().collect();
        names.sort();
        names
    };
    let product = [
        "attributes",
        "category_ids",
        "currency",
        "description",
        "images",
        "name",
        "on_hand",
        "price",
        "sku",
        "status",
    ];
    assert_eq!(fields("CreateProduct"), product);
    let update: Vec<&str> = product.into_iter().filter(|field| *field != "on_hand").collect();
    assert_eq!(fields("UpdateProduct"), update, "stock changes only by adjustments");
    assert_eq!(fields("StockAdjustment"), ["delta", "reason"]);
    assert_eq!(fields("CreateCategory"), ["description", "name", "parent_id", "slug"]);
    assert_eq!(fields("UpdateCategory"), ["description", "name", "parent_id", "slug"]);
    assert_eq!(fields("Image"), ["alt", "url"]);
    assert_eq!(schemas["CreateProduct"]["required"], serde_json::json!(["name", "price"]));
    assert_eq!(schemas["CreateCategory"]["required"], serde_json::json!(["name", "slug"]));
    assert_eq!(schemas["StockAdjustment"]["required"], serde_json::json!(["delta", "reason"]));

    let nullable = |schema: &str, field: &str| schemas[schema]["properties"][field]["type"][1] == "null";
    assert!(nullable("UpdateProduct", "sku"), "null clears the sku");
    assert!(!nullable("UpdateProduct", "name"));
    assert!(nullable("UpdateCategory", "parent_id"), "null moves to the root");
    assert_eq!(schemas["ProductStatus"]["enum"], serde_json::json!(["draft", "published", "archived"]));
}
