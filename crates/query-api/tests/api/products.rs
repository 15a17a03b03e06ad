use chrono::{Duration as Span, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_problem, product_deleted, product_updated, spawn_app};

#[tokio::test]
async fn a_product_has_its_fields_an_exact_price_and_an_etag() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    app.apply(&[product_updated(id, 2, json!({"price": "24.50"}))]).await;

    let response = app.get(&format!("/api/v1/products/{id}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["name"], "Lamp");
    assert_eq!(body["description"], "About Lamp");
    assert_eq!(body["price"], "24.50");
    assert_eq!(body["version"], 2);
    assert!(body["created_at"].is_string() && body["updated_at"].is_string());
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["created_at", "description", "id", "name", "price", "updated_at", "version"]);
}

#[tokio::test]
async fn if_none_match_naming_the_current_version_is_304_without_a_body() {
    let app = spawn_app().await;
    let id = app.a_product("Lamp", "19.99").await;
    app.apply(&[product_updated(id, 2, json!({"name": "Desk lamp"}))]).await;
    let path = format!("/api/v1/products/{id}");

    for tag in ["\"2\"", "W/\"2\"", "*", "\"1\", \"2\""] {
        let response = app.get(&path).header("if-none-match", tag).send().await.unwrap();
        assert_eq!(response.status(), 304, "If-None-Match: {tag}");
        assert_eq!(response.headers()["etag"], "\"2\"");
        assert!(response.bytes().await.unwrap().is_empty());
    }
    let stale = app.get(&path).header("if-none-match", "\"1\"").send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.json::<Value>().await.unwrap()["name"], "Desk lamp");
}

#[tokio::test]
async fn unknown_deleted_and_malformed_ids_are_404() {
    let app = spawn_app().await;
    let deleted = app.a_product("Gone", "1.00").await;
    app.apply(&[product_deleted(deleted, 2)]).await;

    for path in [format!("/api/v1/products/{}", Uuid::new_v4()), format!("/api/v1/products/{deleted}"), "/api/v1/products/not-a-uuid".into()] {
        let body = assert_problem(app.get(&path).send().await.unwrap(), 404).await;
        assert_eq!(body["type"], "/problems/not-found", "{path}");
    }
    // Even a client that knows the tombstone's version cannot revalidate it.
    let response = app.get(&format!("/api/v1/products/{deleted}")).header("if-none-match", "*").send().await.unwrap();
    assert_problem(response, 404).await;
}

#[tokio::test]
async fn the_listing_pages_live_products_oldest_first_with_a_total() {
    let app = spawn_app().await;
    let start = Utc::now() - Span::hours(1);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.a_product_at(&format!("p{i}"), "1.00", start + Span::minutes(i)).await);
    }
    // Three created at the same instant: their ids decide the order.
    let tied_at = start + Span::minutes(10);
    let mut tied = Vec::new();
    for i in 0..3 {
        tied.push(app.a_product_at(&format!("tied{i}"), "2.00", tied_at).await);
    }
    tied.sort();
    ids.extend(tied);
    let deleted = app.a_product_at("deleted", "3.00", start + Span::minutes(5)).await;
    app.apply(&[product_deleted(deleted, 2)]).await;

    let page = |query: &'static str| {
        let request = app.get(&format!("/api/v1/products{query}"));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{query}");
            response.json::<Value>().await.unwrap()
        }
    };
    let ids_of = |page: &Value| -> Vec<Uuid> {
        page["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().parse().unwrap()).collect()
    };

    let all = page("").await;
    assert_eq!((all["limit"].clone(), all["offset"].clone(), all["total"].clone()), (json!(20), json!(0), json!(6)));
    assert_eq!(ids_of(&all), ids, "oldest first, id breaks ties, no deleted product");
    assert_eq!(all["items"][0]["price"], "1.00");

    let first = page("?limit=4").await;
    let second = page("?limit=4&offset=4").await;
    assert_eq!((first["limit"].clone(), first["total"].clone()), (json!(4), json!(6)));
    assert_eq!((second["offset"].clone(), second["total"].clone()), (json!(4), json!(6)));
    assert_eq!([ids_of(&first), ids_of(&second)].concat(), ids, "pages do not overlap or skip");
    assert!(ids_of(&page("?offset=6").await).is_empty());
    assert_eq!(ids_of(&page("?limit=100&offset=5").await), ids[5..]);
    assert_eq!(ids_of(&page("?limit=1").await), ids[..1]);
}

#[tokio::test]
async fn bad_paging_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("limit=", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("limit=10&offset=99999999999999999999", "offset"),
    ] {
        let response = app.get(&format!("/api/v1/products?{query}")).send().await.unwrap();
        let body = assert_problem(response, 400).await;
        assert!(body["detail"].as_str().unwrap().contains(&format!("`{name}`")), "{query}: {body}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    assert_problem(app.get("/api/v1/nothing").send().await.unwrap(), 404).await;
    let post = app.client.post(format!("{}/api/v1/products", app.base)).send().await.unwrap();
    assert_problem(post, 405).await;
}
