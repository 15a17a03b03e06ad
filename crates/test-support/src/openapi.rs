//! An API's OpenAPI document against the routes its server really answers: [`Contract::check`].
//!
//! What the check proves, and what it does not:
//! - Every API route is registered with `utoipa_axum`'s `routes!`, which takes the path and
//!   method from the handler's `#[utoipa::path]`, and the operational routes come from
//!   `http_api::openapi`, built the same way; the router and the spec are two outputs of the
//!   same `OpenApiRouter`. So the route list is held in one place by construction; `/docs`
//!   (Swagger UI's static files) is the only route added outside it.
//! - The [`Contract`] pins that route list: an operation added or removed without updating it
//!   fails, and so does a served document that is not the one built from the router.
//! - Every documented (method, path) is sent to the real server and must reach a handler (not
//!   the "resource not found" fallback, not 405), and every other method on a documented path
//!   must be 405. That catches a spec path the router spells differently, or a method
//!   documented but not routed (or routed but not documented) on a documented path.
//! - It cannot list routes on paths the spec does not mention (axum cannot enumerate a
//!   router); for those it probes a few likely ones ([`Contract::unlisted`], such as the other
//!   API's paths and prefixes) and relies on the construction above.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::http::TestServer;

/// OPTIONS is left out: the CORS layer answers it on every path, before routing.
const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"];

/// What an API's document and routes must be.
pub struct Contract {
    /// The document's `info.title`.
    pub title: &'static str,
    /// Every (method, path) the API serves besides `/docs`.
    pub operations: &'static [(&'static str, &'static str)],
    /// Likely paths the document does not mention, which nothing may serve (404 to GET and POST).
    pub unlisted: &'static [&'static str],
    /// The document built from the API's router (its `app::openapi`).
    pub built: fn() -> utoipa::openapi::OpenApi,
}

impl Contract {
    /// Checks `server`'s `/openapi.json`, its routes and `/docs` against this contract.
    pub async fn check(&self, server: &TestServer) {
        let served = fetch(server).await;
        let version = served["openapi"].as_str().expect("an `openapi` field");
        assert!(version.starts_with("3.1."), "openapi is {version}");
        assert_eq!(served["info"]["title"], self.title);
        assert_eq!(served["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(served["components"]["securitySchemes"]["bearer"]["bearerFormat"], "JWT");

        let built = serde_json::to_value((self.built)()).unwrap();
        assert_eq!(served, built, "/openapi.json is the document built from the router");
        let expected: BTreeSet<_> = self.operations.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        assert_eq!(operations(&served), expected);

        every_operation_is_routed(server, &served).await;
        self.unlisted_paths_are_not_served(server).await;
        docs_serve_swagger_ui_from_the_binary(server).await;
    }

    async fn unlisted_paths_are_not_served(&self, server: &TestServer) {
        for path in self.unlisted {
            for method in ["GET", "POST"] {
                let response = server.request(method.parse().unwrap(), &concrete(path)).send().await.unwrap();
                assert_eq!(response.status(), 404, "{method} {path}");
                assert!(response.text().await.unwrap().contains("resource not found"), "{method} {path}");
            }
        }
    }
}

/// The server's `/openapi.json`.
pub async fn fetch(server: &TestServer) -> Value {
    let response = server.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    serde_json::from_str(&response.text().await.unwrap()).expect("/openapi.json is JSON")
}

/// Every (method, path) a document lists.
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

async fn every_operation_is_routed(server: &TestServer, spec: &Value) {
    let documented = operations(spec);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    for path in paths {
        let url = concrete(path);
        for method in METHODS {
            let response = server.request(method.parse().unwrap(), &url).send().await.unwrap();
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

async fn docs_serve_swagger_ui_from_the_binary(server: &TestServer) {
    let page = server.get("/docs/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui-bundle.js"));
    let bundle = server.get("/docs/swagger-ui-bundle.js").send().await.unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000, "the bundle is served, not fetched from a CDN");
    let initializer = server.get("/docs/swagger-initializer.js").send().await.unwrap().text().await.unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
}
