//! `POST /api/v1/products/{id}/stock-adjustments`: the only way stock changes after creation.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, count, created_id, sorted_error_fields, spawn_app, TestApp};

async fn product_with_stock(app: &TestApp, token: &str, on_hand: i64) -> String {
    created_id(app.create_product(token, json!({"name": "Lamp", "price": "19.99", "on_hand": on_hand})).await).await
}

#[tokio::test]
async fn an_adjustment_answers_the_new_stock_and_version_and_records_delta_reason_and_level() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = product_with_stock(&app, &token, 5).await;

    let response = app.adjust_stock(&token, &id, json!({"delta": 3, "reason": "delivery 17"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"on_hand": 8, "version": 2}));
    let response = app.adjust_stock(&token, &id, json!({"delta": -8, "reason": "  sold out  "})).await;
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"on_hand": 0, "version": 3}));

    let events = app.events_of(&id).await;
    assert_eq!(events[1].0, "ProductStockAdjusted");
    assert_eq!(events[1].1, json!({"ProductStockAdjusted": {"delta": 3, "reason": "delivery 17", "on_hand": 8}}));
    assert_eq!(events[2].1, json!({"ProductStockAdjusted": {"delta": -8, "reason": "sold out", "on_hand": 0}}));
    assert!(events[2].2["actor"].is_string());
    assert_eq!(app.load_product(&id).await.on_hand, 0);
}

#[tokio::test]
async fn an_adjustment_below_zero_is_409_with_the_stock_in_the_detail_and_appends_nothing() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = product_with_stock(&app, &token, 2).await;
    let below_zero = app.adjust_stock(&token, &id, json!({"delta": -3, "reason": "order 9"})).await;
    let problem = assert_problem(below_zero, 409).await;
    assert_eq!(problem["detail"], "stock cannot go below 0: 2 on hand, adjustment of -3");
    assert_eq!(app.events_of(&id).await.len(), 1);
    let exact = app.adjust_stock(&token, &id, json!({"delta": -2, "reason": "order 9, part"})).await;
    assert_eq!(exact.json::<Value>().await.unwrap()["on_hand"], 0, "down to exactly 0 is fine");
}

#[tokio::test]
async fn a_zero_delta_a_missing_reason_or_an_unknown_field_is_422_and_appends_nothing() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = product_with_stock(&app, &token, 1).await;
    let before = app.event_count().await;
    for (body, fields) in [
        (json!({"delta": 0, "reason": "nothing"}), vec!["delta"]),
        (json!({"delta": 1}), vec!["reason"]),
        (json!({"delta": 1, "reason": "   "}), vec!["reason"]),
        (json!({"delta": 1, "reason": "r".repeat(201)}), vec!["reason"]),
        (json!({}), vec!["delta", "reason"]),
        (json!({"delta": i64::MAX, "reason": "overflow"}), vec!["delta"]),
    ] {
        let problem = assert_problem(app.adjust_stock(&token, &id, body.clone()).await, 422).await;
        assert_eq!(sorted_error_fields(&problem), fields, "{body}");
    }
    for body in [
        json!({"delta": 1, "reason": "x", "note": "y"}),
        json!({"delta": 1.5, "reason": "x"}),
        json!({"delta": "1", "reason": "x"}),
    ] {
        assert_problem(app.adjust_stock(&token, &id, body).await, 422).await;
    }
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn if_match_is_honoured_and_unknown_or_deleted_products_are_404() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = product_with_stock(&app, &token, 0).await;
    let adjust = |etag: &'static str| {
        app.post(&format!("/api/v1/products/{id}/stock-adjustments"))
            .bearer_auth(&token)
            .header("if-match", etag)
            .json(&json!({"delta": 1, "reason": "count"}))
            .send()
    };
    assert_eq!(adjust("\"1\"").await.unwrap().status(), 200);
    assert_problem(adjust("\"1\"").await.unwrap(), 412).await;
    assert_problem(adjust("W/\"2\"").await.unwrap(), 412).await;
    assert_eq!(adjust("*").await.unwrap().status(), 200);
    assert_eq!(app.load_product(&id).await.on_hand, 2);

    let body = json!({"delta": 1, "reason": "count"});
    assert_problem(app.adjust_stock(&token, &uuid::Uuid::new_v4().to_string(), body.clone()).await, 404).await;
    assert_problem(app.adjust_stock(&token, "not-a-uuid", body.clone()).await, 404).await;
    assert_eq!(app.delete(&format!("/api/v1/products/{id}")).bearer_auth(&token).send().await.unwrap().status(), 204);
    assert_problem(app.adjust_stock(&token, &id, body).await, 404).await;
}

#[tokio::test]
async fn a_retried_adjustment_with_an_idempotency_key_adjusts_once() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = product_with_stock(&app, &token, 10).await;
    let send = |delta: i64| {
        app.post(&format!("/api/v1/products/{id}/stock-adjustments"))
            .bearer_auth(&token)
            .header("idempotency-key", "order-1042")
            .json(&json!({"delta": delta, "reason": "order 1042"}))
            .send()
    };
    let first = send(-4).await.unwrap();
    assert_eq!(first.status(), 200);
    let first_body: Value = first.json().await.unwrap();
    let retry = send(-4).await.unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["etag"], "\"2\"");
    assert_eq!(retry.json::<Value>().await.unwrap(), first_body);
    assert_problem(send(-5).await.unwrap(), 422).await;
    assert_eq!(app.load_product(&id).await.on_hand, 6);
    assert_eq!(app.events_of(&id).await.len(), 2);
}

#[tokio::test]
async fn concurrent_adjustments_each_answer_the_level_they_left() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = product_with_stock(&app, &token, 0).await;
    let requests = (0..10).map(|i| app.adjust_stock(&token, &id, json!({"delta": 1, "reason": format!("unit {i}")})));
    let mut levels = BTreeSet::new();
    let mut statuses = Vec::new();
    for response in futures::future::join_all(requests).await {
        statuses.push(response.status().as_u16());
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["on_hand"].as_u64().unwrap() + 1, body["version"].as_u64().unwrap(), "{body}");
            levels.insert(body["on_hand"].as_u64().unwrap());
        }
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    let adjusted = count(&statuses, 200) as u64;
    assert_eq!(levels, (1..=adjusted).collect(), "every adjustment saw its own level");
    assert_eq!(app.load_product(&id).await.on_hand, adjusted);
}
