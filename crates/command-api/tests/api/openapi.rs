//! The OpenAPI document against the routes the server really answers.
//!
//! What these tests prove, and what they do not:
//! - Every API route is registered with `utoipa_axum`'s `routes!`, which takes the path and
//!   method from the handler's `#[utoipa::path]`, and the operational routes come from
//!   `http_api::openapi`, built the same way; the router and the spec are two outputs of the
//!   same `OpenApiRouter`. So the route list is held in one place by construction; `/docs`
//!   (Swagger UI's static files) is the only route added outside it.
//! - `the_spec_lists_exactly_the_write_api` pins that route list: an operation added or removed
//!   without updating it fails here, and so does a served document that is not the one built
//!   from the router (`command_api::app::openapi`).
//! - `every_operation_in_the_spec_is_routed` sends every documented (method, path) to the real
//!   server and checks it reaches a handler (not the "resource not found" fallback, not 405),
//!   and that every other method on a documented path is 405. That catches a spec path the
//!   router spells differently, or a method documented but not routed (or routed but not
//!   documented) on a documented path.
//! - It cannot list routes on paths the spec does not mention (axum cannot enumerate a
//!   router); for those it probes a few likely ones (the read API's paths and prefixes) and
//!   relies on the construction above.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

/// The write API's contract: every (method, path) it serves besides `/docs`.
const EXPECTED: [(&str, &str); 9] = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/ready"),
    ("PATCH", "/api/v1/products/{id}"),
    ("DELETE", "/api/v1/products/{id}"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/products"),
    ("POST", "/api/v1/users"),
];

/// OPTIONS is left out: the CORS layer answers it on every path, before routing.
const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"];

fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// A concrete URL path for a templated one: every `{param}` becomes a fresh UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.starts_with('{') { uuid::Uuid::new_v4().to_string() } else { segment.to_owned() })
        .collect::<Vec<_>>()
        .join("/")
}

async fn fetch_spec(app: &crate::helpers::TestApp) -> Value {
    let response = app.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    serde_json::from_str(&response.text().await.unwrap()).expect("/openapi.json is JSON")
}

#[tokio::test]
async fn openapi_json_is_an_openapi_3_1_document() {
    let app = spawn_app().await;
    let spec = fetch_spec(&app).await;
    let version = spec["openapi"].as_str().expect("an `openapi` field");
    assert!(version.starts_with("3.1."), "openapi is {version}");
    assert_eq!(spec["info"]["title"], "Catalog write API");
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["bearerFormat"], "JWT");
}

#[tokio::test]
async fn the_spec_lists_exactly_the_write_api() {
    let app = spawn_app().await;
    let served = fetch_spec(&app).await;
    let built = serde_json::to_value(command_api::app::openapi()).unwrap();
    assert_eq!(served, built, "/openapi.json is the document built from the router");
    let expected: BTreeSet<_> = EXPECTED.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(operations(&served), expected);
}

#[tokio::test]
async fn every_operation_in_the_spec_is_routed() {
    let app = spawn_app().await;
    let spec = fetch_spec(&app).await;
    let documented = operations(&spec);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for path in paths {
        let url = format!("{}{}", app.base, concrete(path));
        for method in METHODS {
            let response = app.client.request(method.parse().unwrap(), &url).send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            let is_documented = documented.contains(&(method.to_owned(), path.clone()))
                // axum answers HEAD with the GET route.
                || (method == "HEAD" && documented.contains(&("GET".to_owned(), path.clone())));
            if is_documented {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                assert!(
                    !(status == 404 && body.contains("resource not found")),
                    "{method} {path} is documented but falls through to the 404 fallback"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented: {body}");
            }
        }
    }
}

#[tokio::test]
async fn paths_outside_the_spec_are_not_served() {
    let app = spawn_app().await;
    for path in ["/", "/api", "/api/v1", "/api/v1/users/{id}", "/api/v1/auth", "/openapi.yaml", "/api/v1/openapi.json"] {
        let url = format!("{}{}", app.base, concrete(path));
        for method in ["GET", "POST"] {
            let response = app.client.request(method.parse().unwrap(), &url).send().await.unwrap();
            assert_eq!(response.status(), 404, "{method} {path}");
            assert!(response.text().await.unwrap().contains("resource not found"), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn protected_operations_name_the_bearer_scheme_and_document_401_and_403() {
    let app = spawn_app().await;
    let spec = fetch_spec(&app).await;
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

#[tokio::test]
async fn docs_serve_swagger_ui_from_the_binary() {
    let app = spawn_app().await;
    let page = app.get("/docs/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui-bundle.js"));
    let bundle = app.get("/docs/swagger-ui-bundle.js").send().await.unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000, "the bundle is served, not fetched from a CDN");
    let initializer = app.get("/docs/swagger-initializer.js").send().await.unwrap().text().await.unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
}
