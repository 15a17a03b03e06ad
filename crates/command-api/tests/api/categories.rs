//! Category writes: create, rename, move and delete, and who may do them.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, created_id, error_fields, sorted_error_fields, spawn_app};

#[tokio::test]
async fn an_admin_creates_a_category_and_gets_id_version_location_and_etag() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let parent = app.a_category(&token, "lighting", None).await;
    let response = app
        .create_category(
            &token,
            json!({"name": " Desk lamps ", "slug": "desk-lamps", "parent_id": parent, "description": "For desks"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(body, json!({"id": id, "version": 1}));
    assert_eq!(location, format!("/api/v1/categories/{id}"));

    let events = app.events_of(id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "CategoryCreated");
    assert_eq!(
        events[0].1,
        json!({"CategoryCreated": {
            "id": id, "name": "Desk lamps", "slug": "desk-lamps", "parent_id": parent, "description": "For desks"
        }})
    );
    assert!(events[0].2["actor"].is_string() && events[0].2["request_id"].is_string());
    let root = &app.events_of(&parent).await[0].1["CategoryCreated"];
    assert_eq!((&root["parent_id"], &root["description"]), (&Value::Null, &json!("")));
}

#[tokio::test]
async fn a_category_is_renamed_moved_and_moved_back_to_the_root_with_if_match() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lighting = app.a_category(&token, "lighting", None).await;
    let lamps = app.a_category(&token, "lamps", None).await;
    let patch = |etag: &'static str, body: Value| {
        let request = app.patch(&format!("/api/v1/categories/{lamps}")).bearer_auth(&token);
        request.header("if-match", etag).json(&body).send()
    };

    let change = json!({"name": "Lamps", "slug": "all-lamps", "description": "Every lamp", "parent_id": lighting});
    let response = patch("\"1\"", change.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"id": lamps, "version": 2}));
    assert_problem(patch("\"1\"", json!({"name": "Stale"})).await.unwrap(), 412).await;
    assert_eq!(patch("\"2\"", json!({"parent_id": null})).await.unwrap().status(), 200);

    let events = app.events_of(&lamps).await;
    assert_eq!(events[1].1, json!({"CategoryUpdated": change}));
    assert_eq!(events[2].1, json!({"CategoryUpdated": {"parent_id": null}}), "null moves it to the root");
    let category = app.load_category(&lamps).await;
    assert_eq!((category.name.as_str(), category.slug.as_str(), category.parent_id), ("Lamps", "all-lamps", None));
    assert_eq!(category.version, 3);
}

#[tokio::test]
async fn a_category_is_deleted_once_and_is_404_from_then_on() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_category(&token, "lamps", None).await;
    let stale = app.delete(&format!("/api/v1/categories/{id}")).bearer_auth(&token).header("if-match", "\"7\"");
    assert_problem(stale.send().await.unwrap(), 412).await;
    assert_eq!(app.delete_category(&token, &id).await.status(), 204);
    assert_problem(app.delete_category(&token, &id).await, 404).await;
    assert_problem(app.patch_category(&token, &id, json!({"name": "Back"})).await, 404).await;
    assert_eq!(app.events_of(&id).await.len(), 2);

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_problem(app.patch_category(&token, &unknown, json!({"name": "x"})).await, 404).await;
    assert_problem(app.delete_category(&token, &unknown).await, 404).await;
    assert_problem(app.delete_category(&token, "not-a-uuid").await, 404).await;
    assert_problem(app.patch_category(&token, "not-a-uuid", json!({"name": "x"})).await, 404).await;
}

#[tokio::test]
async fn invalid_categories_are_422_listing_each_field_and_append_nothing() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_category(&token, "lamps", None).await;
    let before = app.event_count().await;

    let create =
        app.create_category(&token, json!({"name": "", "slug": "Desk Lamps", "description": "d".repeat(501)})).await;
    assert_eq!(sorted_error_fields(&assert_problem(create, 422).await), ["description", "name", "slug"]);
    let update = app.patch_category(&token, &id, json!({"name": " ", "slug": "-lamps-", "parent_id": id})).await;
    assert_eq!(sorted_error_fields(&assert_problem(update, 422).await), ["name", "parent_id", "slug"]);
    let empty = assert_problem(app.patch_category(&token, &id, json!({})).await, 422).await;
    assert_eq!(error_fields(&empty), ["body"]);
    for body in [
        json!({"name": "x", "slug": "x", "colour": "red"}),
        json!({"name": "x"}),
        json!({"name": "x", "slug": "x", "parent_id": "nope"}),
    ] {
        assert_problem(app.create_category(&token, body).await, 422).await;
    }
    assert_problem(app.patch_category(&token, &id, json!({"products": []})).await, 422).await;
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn category_creates_honour_idempotency_keys() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let send = |slug: &'static str| {
        app.post("/api/v1/categories")
            .bearer_auth(&token)
            .header("idempotency-key", "lamps-1")
            .json(&json!({"name": "Lamps", "slug": slug}))
            .send()
    };
    let before = app.event_count().await;
    let first = send("lamps").await.unwrap();
    let first_location = first.headers()["location"].clone();
    let id = created_id(first).await;
    let retry = send("lamps").await.unwrap();
    assert_eq!(retry.status(), 201, "a retry gets the first answer, not a 409 for the slug");
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["location"], first_location);
    assert_eq!(retry.json::<Value>().await.unwrap()["id"], id);
    assert_problem(send("other").await.unwrap(), 422).await;
    assert_eq!(app.event_count().await, before + 1);
}

/// Every route added with the catalog: 401 without a token, 403 for a customer, nothing appended.
#[tokio::test]
async fn the_catalog_routes_need_a_token_and_the_admin_role() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.a_product(&admin).await;
    let category = app.a_category(&admin, "lamps", None).await;
    app.create_user("customer", "customer-password", &[]).await;
    let customer = app.token_for("customer", "customer-password").await;
    let before = app.event_count().await;

    let stock = format!("/api/v1/products/{product}/stock-adjustments");
    let one_category = format!("/api/v1/categories/{category}");
    let requests = [
        ("POST", stock.as_str(), Some(json!({"delta": 1, "reason": "count"}))),
        ("POST", "/api/v1/categories", Some(json!({"name": "Desks", "slug": "desks"}))),
        ("PATCH", one_category.as_str(), Some(json!({"name": "Renamed"}))),
        ("DELETE", one_category.as_str(), None),
        ("POST", "/api/v1/products", Some(json!({"name": "x", "price": 1, "sku": "S-1", "status": "draft"}))),
    ];
    for (method, path, body) in requests {
        for (token, status) in [(None, 401), (Some(customer.as_str()), 403)] {
            let mut request = app.request(method.parse().unwrap(), path);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), status, "{method} {path} as {token:?}");
            assert_problem(response, status).await;
        }
    }
    assert_eq!(app.event_count().await, before);
}
