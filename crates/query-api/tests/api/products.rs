use std::time::Duration;

use chrono::{Duration as Span, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    admin_token, assert_problem, category_deleted, customer_token, domain_event, eventually, product_deleted,
    product_updated, spawn_app,
};

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
    // A product created before the catalog fields (a `ProductCreated` 1.0 event) reads with
    // their defaults.
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["sku"], Value::Null);
    assert_eq!(body["status"], "published");
    assert_eq!((body["categories"].clone(), body["attributes"].clone()), (json!([]), json!({})));
    assert_eq!(
        (body["images"].clone(), body["stock"].clone()),
        (json!([]), json!({"on_hand": 0, "reserved": 0, "available": 0}))
    );
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "attributes",
            "categories",
            "created_at",
            "currency",
            "description",
            "id",
            "images",
            "name",
            "price",
            "sku",
            "status",
            "stock",
            "updated_at",
            "version"
        ]
    );
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

    for path in [
        format!("/api/v1/products/{}", Uuid::new_v4()),
        format!("/api/v1/products/{deleted}"),
        "/api/v1/products/not-a-uuid".into(),
    ] {
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

#[tokio::test]
async fn a_product_carries_its_catalog_fields_and_the_list_shows_the_same() {
    let app = spawn_app().await;
    let lighting = app.a_category("Lighting", None).await;
    let desk = app.a_category("Desk lamps", Some(lighting)).await;
    let gone = app.a_category("Gone", None).await;
    app.apply(&[category_deleted(gone, 2)]).await;
    let unknown = Uuid::new_v4();
    let id = app
        .a_product_with(json!({
            "sku": "LAMP-1",
            "category_ids": [desk, gone, unknown, lighting],
            "attributes": {"colour": "brass", "material": "steel"},
            "images": [{"url": "https://img.example.com/1.jpg", "alt": "Lit"},
                       {"url": "https://img.example.com/2.jpg"}],
            "on_hand": 7,
        }))
        .await;
    app.apply(&[domain_event(
        "Product",
        id,
        2,
        &domain::ProductEvent::ProductStockAdjusted { delta: -2, reason: "sold".into(), on_hand: 5 },
        Utc::now(),
    )])
    .await;

    let (status, body) = app.read(&format!("/api/v1/products/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["sku"], "LAMP-1");
    assert_eq!((body["price"].as_str(), body["currency"].as_str()), (Some("19.99"), Some("EUR")));
    assert_eq!(body["status"], "published");
    // In the product's order; deleted and unknown categories are left out.
    assert_eq!(
        body["categories"],
        json!([{"id": desk, "name": "Desk lamps", "slug": "desk-lamps"},
               {"id": lighting, "name": "Lighting", "slug": "lighting"}])
    );
    assert_eq!(body["attributes"], json!({"colour": "brass", "material": "steel"}));
    assert_eq!(
        body["images"],
        json!([{"url": "https://img.example.com/1.jpg", "alt": "Lit"},
               {"url": "https://img.example.com/2.jpg", "alt": null}])
    );
    assert_eq!(body["stock"], json!({"on_hand": 5, "reserved": 0, "available": 5}));
    assert_eq!(body["version"], 2);

    let (_, page) = app.read("/api/v1/products", None).await;
    assert_eq!(page["items"], json!([body]), "a list item is the product as the detail shows it");
}

#[tokio::test]
async fn prices_have_exactly_their_currency_digits() {
    let app = spawn_app().await;
    let mut expected = Vec::new();
    for (price, currency, served) in [
        ("1999", "JPY", "1999"),
        ("1.5", "BHD", "1.500"),
        ("1.500", "BHD", "1.500"),
        ("20", "EUR", "20.00"),
        ("0.1", "KWD", "0.100"),
    ] {
        let id = app.a_product_with(json!({"price": price, "currency": currency})).await;
        let (status, body) = app.read(&format!("/api/v1/products/{id}"), None).await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["price"].as_str(), body["currency"].as_str()),
            (Some(served), Some(currency)),
            "{price} {currency}"
        );
        expected.push((id.to_string(), served));
    }
    // A currency change records the price rescaled to the new digits.
    let id = app.a_product_with(json!({"price": "1999", "currency": "JPY"})).await;
    app.apply(&[product_updated(id, 2, json!({"currency": "BHD", "price": "1999.000"}))]).await;
    let (_, body) = app.read(&format!("/api/v1/products/{id}"), None).await;
    assert_eq!((body["price"].as_str(), body["currency"].as_str()), (Some("1999.000"), Some("BHD")));

    let (_, page) = app.read("/api/v1/products?limit=100", None).await;
    for (id, served) in expected {
        let item = page["items"].as_array().unwrap().iter().find(|item| item["id"] == id.as_str()).unwrap();
        assert_eq!(item["price"], served);
    }
}

#[tokio::test]
async fn shoppers_see_only_published_products_and_admins_see_and_filter_every_status() {
    let app = spawn_app().await;
    let published = app.a_product_with(json!({"name": "Published"})).await;
    let draft = app.a_product_with(json!({"name": "Draft", "status": "draft"})).await;
    let archived = app.a_product_with(json!({"name": "Archived", "status": "archived"})).await;
    let deleted = app.a_product_with(json!({"name": "Deleted", "status": "draft"})).await;
    app.apply(&[product_deleted(deleted, 2)]).await;
    let (admin, customer) = (admin_token(), customer_token());

    for (id, public) in [(published, true), (draft, false), (archived, false)] {
        let path = format!("/api/v1/products/{id}");
        // The admin reads first, so a hidden product is in the cache when shoppers ask.
        let (status, body) = app.read(&path, Some(&admin)).await;
        assert_eq!(status, 200, "admins see every status");
        for token in [None, Some(customer.as_str())] {
            for _ in 0..2 {
                let (status, body) = app.read(&path, token).await;
                assert_eq!(status, if public { 200 } else { 404 }, "{body}");
            }
            let mut revalidate = app.get(&path).header("if-none-match", "*");
            if let Some(token) = token {
                revalidate = revalidate.bearer_auth(token);
            }
            let revalidated = revalidate.send().await.unwrap().status();
            assert_eq!(revalidated, if public { 304 } else { 404 }, "not even a 304 for a hidden product");
        }
        assert_eq!(body["id"], id.to_string());
    }
    assert_eq!(app.read(&format!("/api/v1/products/{deleted}"), Some(&admin)).await.0, 404, "deleted is 404 to all");

    let listed = |query: &'static str, token: Option<String>| {
        let app = &app;
        async move {
            let (status, page) = app.read(&format!("/api/v1/products{query}"), token.as_deref()).await;
            assert_eq!(status, 200, "{query}: {page}");
            let names: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["name"].as_str().unwrap().to_owned())
                .collect();
            (names, page["total"].as_i64().unwrap())
        }
    };
    let shoppers = (vec!["Published".to_owned()], 1);
    assert_eq!(listed("", None).await, shoppers);
    assert_eq!(listed("", Some(customer.clone())).await, shoppers);
    assert_eq!(listed("?status=published", None).await, shoppers, "asking for what they see anyway is fine");
    assert_eq!(listed("", Some(admin.clone())).await.1, 3);
    assert_eq!(listed("?status=draft", Some(admin.clone())).await, (vec!["Draft".to_owned()], 1));
    assert_eq!(listed("?status=archived", Some(admin.clone())).await, (vec!["Archived".to_owned()], 1));
    assert_eq!(listed("?status=published", Some(admin.clone())).await, shoppers);

    for token in [None, Some(customer.as_str())] {
        for status in ["draft", "archived"] {
            let (code, body) = app.read(&format!("/api/v1/products?status={status}"), token).await;
            assert_eq!((code, body["type"].as_str()), (403, Some("/problems/forbidden")), "{status}");
        }
    }
    let response = app.get("/api/v1/products?status=hidden").bearer_auth(&admin).send().await.unwrap();
    let body = assert_problem(response, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("`status`"), "{body}");
    // A token that does not verify is never read as anonymous.
    for path in ["/api/v1/products".to_owned(), format!("/api/v1/products/{published}")] {
        let response = app.get(&path).bearer_auth("not-a-token").send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_problem(response, 401).await;
    }
}

#[tokio::test]
async fn a_cached_product_that_stops_being_published_disappears_for_shoppers() {
    let app = spawn_app().await;
    let id = app.a_product_with(json!({"status": "draft"})).await;
    let path = format!("/api/v1/products/{id}");
    let admin = admin_token();
    assert_eq!(app.read(&path, Some(&admin)).await.0, 200);
    assert_eq!(app.read(&path, None).await.0, 404);

    app.apply(&[product_updated(id, 2, json!({"status": "published"}))]).await;
    eventually("published for shoppers", Duration::from_secs(2), || async { app.read(&path, None).await.0 == 200 })
        .await;
    assert_eq!(app.read(&path, None).await.1["version"], 2, "cached now");

    app.apply(&[product_updated(id, 3, json!({"status": "archived"}))]).await;
    eventually("archived: gone for shoppers", Duration::from_secs(2), || async {
        app.read(&path, None).await.0 == 404
    })
    .await;
    let (status, body) = app.read(&path, Some(&admin)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("archived")));
}
