//! `GET /api/v1/products/{id}/history`: admins only, newest first, with each change's from and
//! to, paged with an opaque cursor.

use std::collections::BTreeMap;

use domain::{ProductCommand, ProductStatus};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{admin_token, assert_problem, customer_token, spawn_app, TestApp};
use crate::store::Store;

fn create(id: Uuid) -> ProductCommand {
    ProductCommand::Create {
        id,
        name: "Lamp".into(),
        description: None,
        price: Decimal::new(1999, 2),
        currency: "EUR".into(),
        sku: Some(format!("H-{}", id.simple())),
        status: Some(ProductStatus::Draft),
        category_ids: vec![],
        attributes: BTreeMap::new(),
        images: vec![],
        on_hand: 0,
        allow_http_images: false,
    }
}

fn update(name: Option<&str>, price: Option<Decimal>, status: Option<ProductStatus>) -> ProductCommand {
    ProductCommand::Update {
        expected_version: None,
        name: name.map(str::to_owned),
        description: None,
        price,
        currency: None,
        sku: None,
        status,
        category_ids: None,
        attributes: None,
        images: None,
        allow_http_images: false,
    }
}

/// A product with five events by two actors: created (draft), priced and published, stocked,
/// renamed, deleted.
async fn a_product_with_history(app: &TestApp) -> Uuid {
    let store = Store::new(app);
    let id = Uuid::new_v4();
    let commands = [
        ("alice", create(id)),
        ("alice", update(None, Some(Decimal::new(1750, 2)), Some(ProductStatus::Published))),
        ("bob", ProductCommand::AdjustStock { delta: 5, reason: "delivery".into(), expected_version: None }),
        ("bob", update(Some("Desk lamp"), None, None)),
        ("alice", ProductCommand::Delete { expected_version: None }),
    ];
    for (actor, command) in commands {
        assert!(store.product(id, actor, command).await);
    }
    store.project("Product", id).await;
    id
}

async fn history(app: &TestApp, id: Uuid, query: &str) -> Value {
    let (status, body) = app.read(&format!("/api/v1/products/{id}/history{query}"), Some(&admin_token())).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn change<'v>(item: &'v Value, field: &str) -> Option<(&'v Value, &'v Value)> {
    item["changes"].as_array().unwrap().iter().find(|c| c["field"] == field).map(|c| (&c["from"], &c["to"]))
}

#[tokio::test]
async fn the_history_lists_every_event_newest_first_with_what_it_changed() {
    let app = spawn_app().await;
    let id = a_product_with_history(&app).await;
    let body = history(&app, id, "").await;
    assert_eq!(body["next_cursor"], Value::Null);
    let items = body["items"].as_array().unwrap();
    let summary: Vec<(i64, &str, &str)> = items
        .iter()
        .map(|item| {
            (item["version"].as_i64().unwrap(), item["type"].as_str().unwrap(), item["actor"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (5, "ProductDeleted", "alice"),
            (4, "ProductUpdated", "bob"),
            (3, "ProductStockAdjusted", "bob"),
            (2, "ProductUpdated", "alice"),
            (1, "ProductCreated", "alice"),
        ]
    );
    let at: Vec<chrono::DateTime<chrono::Utc>> =
        items.iter().map(|item| item["at"].as_str().unwrap().parse().unwrap()).collect();
    assert!(at.windows(2).all(|pair| pair[0] >= pair[1]), "{at:?}");

    let [deleted, renamed, stocked, published, created] = &items[..] else { unreachable!() };
    assert_eq!(change(deleted, "deleted"), Some((&json!(false), &json!(true))));
    assert_eq!(change(renamed, "name"), Some((&json!("Lamp"), &json!("Desk lamp"))));
    assert_eq!(renamed["changes"].as_array().unwrap().len(), 1, "only what changed: {renamed}");
    assert_eq!(change(stocked, "on_hand"), Some((&json!(0), &json!(5))));
    assert_eq!(change(published, "price"), Some((&json!("19.99"), &json!("17.50"))));
    assert_eq!(change(published, "status"), Some((&json!("draft"), &json!("published"))));
    assert_eq!(published["changes"].as_array().unwrap().len(), 2, "{published}");
    // A creation lists every field, from nothing.
    assert_eq!(change(created, "name"), Some((&Value::Null, &json!("Lamp"))));
    assert_eq!(change(created, "status"), Some((&Value::Null, &json!("draft"))));
    assert_eq!(change(created, "currency"), Some((&Value::Null, &json!("EUR"))));
}

#[tokio::test]
async fn the_cursor_pages_through_the_history_without_gaps_or_overlaps() {
    let app = spawn_app().await;
    let id = a_product_with_history(&app).await;
    let versions = |page: &Value| -> Vec<i64> {
        page["items"].as_array().unwrap().iter().map(|item| item["version"].as_i64().unwrap()).collect()
    };
    let mut pages = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = history(&app, id, &query).await;
        pages.push(versions(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, [vec![5, 4], vec![3, 2], vec![1]]);
    assert_eq!(versions(&history(&app, id, "?limit=5").await), [5, 4, 3, 2, 1]);
    assert_eq!(history(&app, id, "?limit=5").await["next_cursor"], Value::Null, "exactly one full page");
    assert_eq!(versions(&history(&app, id, "?limit=100").await).len(), 5);
}

#[tokio::test]
async fn the_history_is_for_admins_only_and_404_for_products_that_never_existed() {
    let app = spawn_app().await;
    let id = a_product_with_history(&app).await;
    let path = format!("/api/v1/products/{id}/history");
    let response = app.get(&path).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, 401).await;
    assert_problem(app.get(&path).bearer_auth("not-a-token").send().await.unwrap(), 401).await;
    // Authorisation before existence: a customer learns nothing about any id.
    for path in
        [path.clone(), format!("/api/v1/products/{}/history", Uuid::new_v4()), "/api/v1/products/x/history".into()]
    {
        let body = assert_problem(app.get(&path).bearer_auth(customer_token()).send().await.unwrap(), 403).await;
        assert_eq!(body["type"], "/problems/forbidden");
    }
    for path in [format!("/api/v1/products/{}/history", Uuid::new_v4()), "/api/v1/products/x/history".into()] {
        assert_problem(app.get(&path).bearer_auth(admin_token()).send().await.unwrap(), 404).await;
    }
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("cursor=x", "cursor"),
        ("cursor=0", "cursor"),
        ("cursor=", "cursor"),
    ] {
        let response = app.get(&format!("{path}?{query}")).bearer_auth(admin_token()).send().await.unwrap();
        let body = assert_problem(response, 400).await;
        assert!(body["detail"].as_str().unwrap().contains(&format!("`{name}`")), "{query}: {body}");
    }
}
