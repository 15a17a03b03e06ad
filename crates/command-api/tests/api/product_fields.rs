//! The catalog fields of a product (SKU, currency, status, categories, attributes, images,
//! stock) through the write API into the event store, and the rules on them.

use std::collections::BTreeMap;

use domain::{ProductImage, ProductStatus};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, created_id, error_fields, sorted_error_fields, spawn_app, spawn_app_with};

#[tokio::test]
async fn every_catalog_field_round_trips_through_the_event_store() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lamps = app.a_category(&token, "lamps", None).await;
    let brass = app.a_category(&token, "brass", None).await;
    let response = app
        .create_product(
            &token,
            json!({
                "name": "Desk lamp",
                "price": "1.5",
                "currency": "BHD",
                "sku": "LAMP-01",
                "status": "draft",
                "category_ids": [lamps, lamps],
                "attributes": {"colour": "brass", "material": "steel"},
                "images": [
                    {"url": "HTTPS://Images.example.com/lamp one.jpg", "alt": " The lamp "},
                    {"url": "https://images.example.com/2.jpg"}
                ],
                "on_hand": 12
            }),
        )
        .await;
    let id = created_id(response).await;

    let events = app.events_of(&id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].1["ProductCreated"],
        json!({
            "id": id,
            "name": "Desk lamp",
            "description": "",
            "price": "1.500",
            "currency": "BHD",
            "sku": "LAMP-01",
            "status": "draft",
            "category_ids": [lamps],
            "attributes": {"colour": "brass", "material": "steel"},
            "images": [
                {"url": "https://images.example.com/lamp%20one.jpg", "alt": "The lamp"},
                {"url": "https://images.example.com/2.jpg"}
            ],
            "on_hand": 12
        }),
        "stored normalised: the price in the currency's digits, ids once, URLs and alt text cleaned"
    );
    let product = app.load_product(&id).await;
    assert_eq!((product.price.to_string().as_str(), product.currency.as_str()), ("1.500", "BHD"));
    assert_eq!(product.sku.as_deref(), Some("LAMP-01"));
    assert_eq!(product.status, ProductStatus::Draft);
    assert_eq!(product.category_ids, [lamps.parse::<uuid::Uuid>().unwrap()]);
    assert_eq!(product.on_hand, 12);

    let response = app
        .patch_product(
            &token,
            &id,
            json!({
                "price": "2.50",
                "currency": "EUR",
                "sku": null,
                "status": "published",
                "category_ids": [brass, lamps],
                "attributes": {"size": "large"},
                "images": []
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"id": id, "version": 2}));
    let events = app.events_of(&id).await;
    assert_eq!(
        events[1].1,
        json!({"ProductUpdated": {
            "price": "2.50",
            "currency": "EUR",
            "sku": null,
            "status": "published",
            "category_ids": [brass, lamps],
            "attributes": {"size": "large"},
            "images": []
        }})
    );
    let product = app.load_product(&id).await;
    assert_eq!((product.price.to_string().as_str(), product.currency.as_str()), ("2.50", "EUR"));
    assert_eq!(product.sku, None, "null clears the sku");
    assert_eq!(product.status, ProductStatus::Published);
    assert_eq!(product.category_ids, [brass.parse::<uuid::Uuid>().unwrap(), lamps.parse::<uuid::Uuid>().unwrap()]);
    assert_eq!(product.attributes, BTreeMap::from([("size".to_owned(), "large".to_owned())]));
    assert_eq!(product.images, Vec::<ProductImage>::new());
    assert_eq!((product.on_hand, product.version), (12, 2), "stock is not a field of updates");
}

#[tokio::test]
async fn a_product_that_names_none_of_the_new_fields_gets_their_defaults() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let created = &app.events_of(&id).await[0].1["ProductCreated"];
    assert_eq!(created["currency"], "EUR", "the default currency");
    assert_eq!(created["status"], "published");
    assert_eq!(created["sku"], Value::Null);
    assert_eq!(created["on_hand"], 0);
    assert_eq!(created["category_ids"], json!([]));
    assert_eq!(created["attributes"], json!({}));
    assert_eq!(created["images"], json!([]));
}

#[tokio::test]
async fn a_currency_alone_keeps_the_amount_when_it_fits_and_is_422_when_it_does_not() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let whole = created_id(app.create_product(&token, json!({"name": "Whole", "price": "20.00"})).await).await;
    assert_eq!(app.patch_product(&token, &whole, json!({"currency": "JPY"})).await.status(), 200);
    assert_eq!(app.events_of(&whole).await[1].1, json!({"ProductUpdated": {"price": "20", "currency": "JPY"}}));

    let cents = app.a_product(&token).await;
    let problem = assert_problem(app.patch_product(&token, &cents, json!({"currency": "JPY"})).await, 422).await;
    assert_eq!(error_fields(&problem), ["price"]);
    assert_eq!(problem["errors"][0]["code"], "too_precise");
    let too_precise = app.create_product(&token, json!({"name": "x", "price": "1.999", "currency": "EUR"})).await;
    let problem = assert_problem(too_precise, 422).await;
    assert_eq!(error_fields(&problem), ["price"]);
    assert_eq!(app.events_of(&cents).await.len(), 1);
}

#[tokio::test]
async fn every_broken_rule_is_a_422_listing_each_field_and_appends_nothing() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let before = app.event_count().await;
    let many_categories: Vec<String> = (0..51).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let many_images: Vec<Value> = (0..21).map(|i| json!({"url": format!("https://example.com/{i}.jpg")})).collect();
    let many_attributes: serde_json::Map<String, Value> = (0..51).map(|i| (format!("a{i}"), json!("v"))).collect();

    let create = app
        .create_product(
            &token,
            json!({
                "name": " ",
                "description": "d".repeat(501),
                "price": "-1",
                "currency": "eur",
                "sku": "LAMP 1",
                "category_ids": many_categories,
                "attributes": {"Colour": "red", "size": "x".repeat(201), "note": "a\u{7}"},
                "images": [{"url": "/relative.png"}, {"url": "ftp://example.com/x.png", "alt": "a".repeat(201)}],
                "on_hand": -1
            }),
        )
        .await;
    let problem = assert_problem(create, 422).await;
    assert_eq!(
        sorted_error_fields(&problem),
        [
            "attributes.Colour",
            "attributes.note",
            "attributes.size",
            "category_ids",
            "currency",
            "description",
            "images[0].url",
            "images[1].alt",
            "images[1].url",
            "name",
            "on_hand",
            "price",
            "sku",
        ]
    );

    let too_many = app
        .create_product(&token, json!({"name": "x", "price": 1, "images": many_images, "attributes": many_attributes}))
        .await;
    assert_eq!(sorted_error_fields(&assert_problem(too_many, 422).await), ["attributes", "images"]);
    for (currency, code) in [("ABC", "unknown"), ("XAU", "unsupported"), ("HRK", "unsupported")] {
        let response = app.create_product(&token, json!({"name": "x", "price": 1, "currency": currency})).await;
        let problem = assert_problem(response, 422).await;
        assert_eq!(error_fields(&problem), ["currency"]);
        assert_eq!(problem["errors"][0]["code"], code, "{currency}");
    }

    let update = app
        .patch_product(
            &token,
            &id,
            json!({
                "name": "",
                "sku": "",
                "currency": "XXX",
                "attributes": {"": "v"},
                "images": [{"url": "https://u:p@example.com/"}]
            }),
        )
        .await;
    let problem = assert_problem(update, 422).await;
    assert_eq!(sorted_error_fields(&problem), ["attributes.", "currency", "images[0].url", "name", "sku"]);

    // Fields the API does not know, also inside images, and stock (changed only by adjustments).
    for body in [
        json!({"name": "x", "price": 1, "colour": "red"}),
        json!({"name": "x", "price": 1, "images": [{"url": "https://example.com/a.jpg", "title": "A"}]}),
        json!({"name": "x", "price": 1, "status": "deleted"}),
        json!({"name": "x", "price": 1, "category_ids": ["not-a-uuid"]}),
        json!({"name": "x", "price": 1, "attributes": {"weight": 3}}),
    ] {
        assert_problem(app.create_product(&token, body).await, 422).await;
    }
    for body in [json!({"on_hand": 3}), json!({"stock": 3}), json!({"images": [{"alt": "no url"}]})] {
        assert_problem(app.patch_product(&token, &id, body).await, 422).await;
    }
    assert_eq!(app.event_count().await, before, "a rejected request appended events");
}

#[tokio::test]
async fn a_nul_character_in_a_description_is_422_naming_it_not_a_500() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let before = app.event_count().await;
    let create = app.create_product(&token, json!({"name": "x", "price": 1, "description": "a\u{0}b"})).await;
    assert_eq!(error_fields(&assert_problem(create, 422).await), ["description"]);
    let update = app.patch_product(&token, &id, json!({"description": "\u{0}"})).await;
    assert_eq!(error_fields(&assert_problem(update, 422).await), ["description"]);
    let category = app.create_category(&token, json!({"name": "x", "slug": "x", "description": "\u{0}"})).await;
    assert_eq!(error_fields(&assert_problem(category, 422).await), ["description"]);
    assert_eq!(app.event_count().await, before);
    let multi_line =
        app.create_product(&token, json!({"name": "x", "price": 1, "description": "one\ntwo\tthree"})).await;
    assert_eq!(multi_line.status(), 201, "other control characters are fine in descriptions");
}

#[tokio::test]
async fn image_urls_must_be_https_outside_development() {
    let image = json!({"name": "Lamp", "price": 1, "images": [{"url": "http://images.example.com/lamp.jpg"}]});
    let development = spawn_app().await;
    let token = development.admin_token().await;
    assert_eq!(development.create_product(&token, image.clone()).await.status(), 201);

    let production = spawn_app_with(&[
        "--environment",
        "production",
        "--idempotency-key-secret",
        "a-production-idempotency-secret-of-32+-bytes",
    ])
    .await;
    let token = production.admin_token().await;
    let problem = assert_problem(production.create_product(&token, image).await, 422).await;
    assert_eq!(error_fields(&problem), ["images[0].url"]);
    assert_eq!(problem["errors"][0]["code"], "insecure");
    let id = production.a_product(&token).await;
    let update = production.patch_product(&token, &id, json!({"images": [{"url": "http://example.com/x.jpg"}]})).await;
    assert_problem(update, 422).await;
    let https = json!({"name": "Lamp", "price": 1, "images": [{"url": "https://images.example.com/lamp.jpg"}]});
    assert_eq!(production.create_product(&token, https).await.status(), 201);
}

#[tokio::test]
async fn allowed_status_transitions_are_200_and_others_409_with_the_rule() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let draft = created_id(app.create_product(&token, json!({"name": "x", "price": 1, "status": "draft"})).await).await;
    let archived_draft =
        created_id(app.create_product(&token, json!({"name": "y", "price": 1, "status": "draft"})).await).await;

    for (id, status, expected) in [
        (&draft, "published", 200),         // draft→published
        (&draft, "draft", 409),             // published→draft
        (&draft, "published", 200),         // unchanged: allowed, records no status
        (&draft, "archived", 200),          // published→archived
        (&draft, "draft", 409),             // archived→draft
        (&draft, "published", 200),         // archived→published
        (&archived_draft, "archived", 200), // draft→archived
    ] {
        let before = app.events_of(id).await.len();
        let response = app.patch_product(&token, id, json!({"status": status})).await;
        if expected == 200 {
            assert_eq!(response.status(), 200, "→{status}");
            assert_eq!(app.events_of(id).await.len(), before + 1);
        } else {
            let problem = assert_problem(response, 409).await;
            let detail = problem["detail"].as_str().unwrap();
            let rule = "draft→published, draft→archived, published→archived, archived→published";
            assert!(detail.contains(rule), "{detail}");
            assert_eq!(app.events_of(id).await.len(), before, "a refused transition appends nothing");
        }
    }
    let back_to_draft = app.patch_product(&token, &archived_draft, json!({"status": "draft"})).await;
    let problem = assert_problem(back_to_draft, 409).await;
    assert!(problem["detail"].as_str().unwrap().starts_with("an archived product can only be published"), "{problem}");
    assert_eq!(app.load_product(&draft).await.status, ProductStatus::Published);
    assert_eq!(app.events_of(&draft).await[2].1, json!({"ProductUpdated": {}}), "the current status again: no change");
}
