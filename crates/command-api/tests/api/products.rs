use domain::Role;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, error_fields, spawn_app};

#[tokio::test]
async fn an_admin_creates_a_product_and_gets_id_version_location_and_etag() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let response =
        app.create_product(&token, json!({"name": "Desk lamp", "description": "Warm light", "price": 19.99})).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 1);
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/products/{id}"));

    let events = app.events_of(id).await;
    assert_eq!(events.len(), 1);
    let (event_type, payload, metadata) = &events[0];
    assert_eq!(event_type, "ProductCreated");
    assert_eq!(payload["ProductCreated"]["price"], "19.99", "price is stored exactly, as a string");
    assert_eq!(payload["ProductCreated"]["name"], "Desk lamp");
    assert!(metadata["actor"].is_string() && metadata["request_id"].is_string());
}

#[tokio::test]
async fn prices_are_read_exactly_from_numbers_and_strings() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    for (given, stored) in [(json!(0.1), "0.10"), (json!("12345678.90"), "12345678.90"), (json!(5), "5.00")] {
        let response = app.create_product(&token, json!({"name": "Thing", "price": given})).await;
        assert_eq!(response.status(), 201, "price {given}");
        let body: Value = response.json().await.unwrap();
        let events = app.events_of(body["id"].as_str().unwrap()).await;
        assert_eq!(events[0].1["ProductCreated"]["price"], stored);
    }
}

#[tokio::test]
async fn the_callers_trace_continues_into_the_event_metadata() {
    // As in main: the OpenTelemetry layer gives the request span its trace context.
    let _tracing =
        service_runtime::telemetry::init_tracing("command-api", service_runtime::settings::LogFormat::Pretty);
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .post("/api/v1/products")
        .bearer_auth(&token)
        .header("traceparent", traceparent)
        .json(&json!({"name": "Traced", "price": "1.00"}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let events = app.events_of(body["id"].as_str().unwrap()).await;
    let recorded = events[0].2["traceparent"].as_str().expect("a traceparent in the metadata");
    let parts: Vec<&str> = recorded.split('-').collect();
    assert_eq!(parts.len(), 4, "{recorded}");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "the caller's trace id");
    assert_ne!(parts[2], "00f067aa0ba902b7", "a span of command-api's own, child of the caller's");
    assert_eq!(parts[3], "01");
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_trace_of_its_own() {
    let _tracing =
        service_runtime::telemetry::init_tracing("command-api", service_runtime::settings::LogFormat::Pretty);
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut trace_ids = Vec::new();
    for name in ["First", "Second"] {
        let response = app
            .post("/api/v1/products")
            .bearer_auth(&token)
            .json(&json!({"name": name, "price": "1.00"}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        let events = app.events_of(body["id"].as_str().unwrap()).await;
        let recorded = events[0].2["traceparent"].as_str().expect("a traceparent in the metadata").to_owned();
        trace_ids.push(recorded.split('-').nth(1).unwrap().to_owned());
    }
    assert_ne!(trace_ids[0], trace_ids[1], "each request is a trace of its own");
    assert_ne!(trace_ids[0], "0".repeat(32));
}

#[tokio::test]
async fn a_partial_update_changes_only_given_fields_and_bumps_the_version() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let response = app
        .patch(&format!("/api/v1/products/{id}"))
        .bearer_auth(&token)
        .json(&json!({"price": "24.50"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"id": id, "version": 2}));
    let events = app.events_of(&id).await;
    assert_eq!(events[1].1, json!({"ProductUpdated": {"price": "24.50"}}));
}

#[tokio::test]
async fn if_match_with_the_current_version_succeeds_and_a_stale_one_is_412() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let patch = |etag: &'static str| {
        app.patch(&format!("/api/v1/products/{id}"))
            .bearer_auth(&token)
            .header("if-match", etag)
            .json(&json!({"name": "New"}))
    };
    assert_eq!(patch("\"1\"").send().await.unwrap().status(), 200);
    let before = app.event_count().await;
    assert_problem(patch("\"1\"").send().await.unwrap(), 412).await;
    assert_problem(patch("W/\"2\"").send().await.unwrap(), 412).await;
    assert_problem(patch("\"banana\"").send().await.unwrap(), 412).await;
    assert_eq!(app.event_count().await, before);
    assert_eq!(patch("\"2\"").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn updating_or_deleting_an_unknown_product_is_404() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let unknown = uuid::Uuid::new_v4();
    let response = app
        .patch(&format!("/api/v1/products/{unknown}"))
        .bearer_auth(&token)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404).await;
    assert_problem(app.delete(&format!("/api/v1/products/{unknown}")).bearer_auth(&token).send().await.unwrap(), 404)
        .await;
    assert_problem(app.delete("/api/v1/products/not-a-uuid").bearer_auth(&token).send().await.unwrap(), 404).await;
}

#[tokio::test]
async fn a_deleted_product_is_204_then_404_for_every_command() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let path = format!("/api/v1/products/{id}");
    let response = app.delete(&path).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_problem(app.delete(&path).bearer_auth(&token).send().await.unwrap(), 404).await;
    assert_problem(app.patch(&path).bearer_auth(&token).json(&json!({"name": "x"})).send().await.unwrap(), 404).await;
    assert_eq!(app.events_of(&id).await.len(), 2);
}

#[tokio::test]
async fn product_writes_need_a_token_and_the_admin_role() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let id = app.a_product(&admin).await;
    app.create_user("customer", "customer-password", &[]).await;
    let customer = app.token_for("customer", "customer-password").await;
    let before = app.event_count().await;

    let anonymous = app.post("/api/v1/products").json(&json!({"name": "x", "price": 1})).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_problem(anonymous, 401).await;
    assert_problem(app.create_product(&customer, json!({"name": "x", "price": 1})).await, 403).await;
    let path = format!("/api/v1/products/{id}");
    assert_problem(app.patch(&path).bearer_auth(&customer).json(&json!({"name": "x"})).send().await.unwrap(), 403)
        .await;
    assert_problem(app.delete(&path).bearer_auth(&customer).send().await.unwrap(), 403).await;
    assert_problem(app.delete(&path).send().await.unwrap(), 401).await;
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn a_granted_admin_role_takes_effect_at_the_next_login() {
    let app = spawn_app().await;
    app.create_user("grace", "grace-password", &[Role::Admin]).await;
    let token = app.token_for("grace", "grace-password").await;
    assert_eq!(app.create_product(&token, json!({"name": "ok", "price": 1})).await.status(), 201);
}

#[tokio::test]
async fn validation_errors_name_each_field() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let response = app.create_product(&token, json!({"name": "", "description": "d".repeat(501), "price": "-1"})).await;
    let problem = assert_problem(response, 422).await;
    assert_eq!(error_fields(&problem), ["name", "description", "price"]);
    assert_eq!(problem["errors"][2]["code"], "not_positive");
}
