//! `POST /api/v1/products/import`: upserts by SKU from NDJSON and CSV, streamed results, what a
//! bad line does (nothing to the others), the limits, and who may import.

use std::collections::BTreeMap;

use domain::ProductStatus;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, spawn_app_without_database, test_token, TestApp};

const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

impl TestApp {
    async fn import(&self, token: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let request = self.post("/api/v1/products/import").bearer_auth(token).header("content-type", content_type);
        request.body(body).send().await.unwrap()
    }

    /// Imports `body` and answers its results, after checking the response is a stream of them.
    async fn import_results(&self, token: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Vec<Value> {
        results(self.import(token, content_type, body).await).await
    }

    async fn product_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ProductCreated'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

async fn results(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], NDJSON);
    let text = response.text().await.unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

/// `(line, result)` of each result.
fn outcomes(results: &[Value]) -> Vec<(u64, &str)> {
    results.iter().map(|r| (r["line"].as_u64().unwrap(), r["result"].as_str().unwrap())).collect()
}

/// The `field/code` of each error of a result.
fn errors(result: &Value) -> Vec<String> {
    let errors = result["errors"].as_array().unwrap_or_else(|| panic!("no errors in {result}"));
    errors.iter().map(|e| format!("{}/{}", e["field"].as_str().unwrap(), e["code"].as_str().unwrap())).collect()
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

#[tokio::test]
async fn ndjson_creates_new_skus_updates_what_differs_and_leaves_identical_lines_alone() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lighting = app.a_category(&token, "lighting", None).await;
    let desks = app.a_category(&token, "desks", None).await;
    let file = ndjson(&[
        json!({"sku": "LAMP-1", "name": "Desk lamp", "price": "19.90", "category_slugs": ["lighting"], "stock": 5,
               "attributes": {"colour": "brass"}, "images": [{"url": "https://img.example.com/l.jpg", "alt": "Lamp"}],
               "description": "Warm light", "status": "draft"}),
        json!({"sku": "CHAIR-1", "name": "Chair", "price": 45, "currency": "USD", "category_ids": [desks]}),
    ]);

    let first = app.import_results(&token, NDJSON, file.clone()).await;
    assert_eq!(outcomes(&first), [(1, "created"), (2, "created")]);
    assert_eq!(first[0]["sku"], "LAMP-1");
    assert!(first[0].get("errors").is_none(), "no errors on a created line");
    let lamp_id = first[0]["id"].as_str().unwrap().to_owned();
    let lamp = app.load_product(&lamp_id).await;
    assert_eq!(
        (lamp.name.as_str(), lamp.price.to_string().as_str(), lamp.currency.as_str()),
        ("Desk lamp", "19.90", "EUR")
    );
    assert_eq!(lamp.on_hand, 5, "stock is a new product's initial stock");
    assert_eq!(lamp.status, ProductStatus::Draft);
    assert_eq!(lamp.category_ids, [lighting.parse::<uuid::Uuid>().unwrap()]);
    assert_eq!(lamp.attributes, BTreeMap::from([("colour".to_owned(), "brass".to_owned())]));
    let chair = app.load_product(first[1]["id"].as_str().unwrap()).await;
    assert_eq!(
        (chair.currency.as_str(), chair.category_ids.clone()),
        ("USD", vec![desks.parse::<uuid::Uuid>().unwrap()])
    );
    let (_, _, metadata) = &app.events_of(&lamp_id).await[0];
    assert!(metadata["actor"].as_str().is_some_and(|actor| actor != "catalogctl"), "the admin is the actor");

    // The same file again: nothing to do, nothing appended.
    let events = app.event_count().await;
    let again = app.import_results(&token, NDJSON, file).await;
    assert_eq!(outcomes(&again), [(1, "unchanged"), (2, "unchanged")]);
    assert_eq!(again[0]["id"], lamp_id.as_str());
    assert_eq!(app.event_count().await, events, "an unchanged line appends no event");

    // A known SKU (in another case) with a new price, status and stock: only what differs is
    // changed, and stock is left to adjustments.
    let change =
        ndjson(&[json!({"sku": "lamp-1", "price": 21, "status": "published", "stock": 99, "name": "Desk lamp"})]);
    let changed = app.import_results(&token, NDJSON, change).await;
    assert_eq!(outcomes(&changed), [(1, "updated")]);
    assert_eq!(changed[0]["id"], lamp_id.as_str());
    let history = app.events_of(&lamp_id).await;
    assert_eq!(history.len(), 2);
    let update = &history[1].1["ProductUpdated"];
    let mut fields: Vec<&str> =
        update.as_object().unwrap().iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["price", "sku", "status"], "{update}");
    let lamp = app.load_product(&lamp_id).await;
    assert_eq!((lamp.price.to_string().as_str(), lamp.on_hand, lamp.sku.as_deref()), ("21.00", 5, Some("lamp-1")));
}

#[tokio::test]
async fn csv_imports_columns_attributes_and_slug_lists_and_a_second_run_changes_nothing() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lighting = app.a_category(&token, "lighting", None).await;
    let desks = app.a_category(&token, "desks", None).await;
    let file = "\u{feff}sku,name,description,price,currency,status,category_slugs,images,attributes.colour,attributes.size,stock\r\n\
                LAMP-1,Desk lamp,\"Warm, dimmable\nlight\",19.90,EUR,published,lighting|desks,https://img.example.com/l.jpg,brass,,5\r\n\
                CHAIR-1,Chair,,45,,,desks,,,L,\r\n";

    let first = app.import_results(&token, CSV, file).await;
    assert_eq!(outcomes(&first), [(2, "created"), (4, "created")]);
    let lamp = app.load_product(first[0]["id"].as_str().unwrap()).await;
    assert_eq!(lamp.description, "Warm, dimmable\nlight");
    assert_eq!(lamp.category_ids, [lighting.parse::<uuid::Uuid>().unwrap(), desks.parse().unwrap()]);
    assert_eq!(lamp.attributes, BTreeMap::from([("colour".to_owned(), "brass".to_owned())]));
    assert_eq!(lamp.images[0].url, "https://img.example.com/l.jpg");
    assert_eq!(lamp.on_hand, 5);
    let chair = app.load_product(first[1]["id"].as_str().unwrap()).await;
    assert_eq!((chair.currency.as_str(), chair.on_hand, chair.description.as_str()), ("EUR", 0, ""));
    assert_eq!(chair.attributes, BTreeMap::from([("size".to_owned(), "L".to_owned())]));

    let events = app.event_count().await;
    let again = app.import_results(&token, CSV, file).await;
    assert_eq!(outcomes(&again), [(2, "unchanged"), (4, "unchanged")]);
    assert_eq!(app.event_count().await, events);

    // Empty cells: a missing price keeps the price; an empty attribute cell removes it.
    let change = "sku,price,attributes.colour\nlamp-1,,\n";
    let changed = app.import_results(&token, CSV, change).await;
    assert_eq!(outcomes(&changed), [(2, "updated")]);
    let lamp = app.load_product(first[0]["id"].as_str().unwrap()).await;
    assert_eq!((lamp.price.to_string(), lamp.attributes.len()), ("19.90".to_owned(), 0));
}

#[tokio::test]
async fn a_bad_line_is_reported_and_the_lines_around_it_are_imported() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    app.a_category(&token, "lighting", None).await;
    let body = [
        json!({"sku": "A-1", "name": "One", "price": "1.00"}).to_string(),
        "{\"sku\": \"A-2\", \"name\": ".to_owned(),
        json!({"sku": "A-3", "name": "Three", "price": 3, "colour": "red"}).to_string(),
        json!({"sku": "A-4", "name": "Four", "price": 4, "category_slugs": ["lighting", "nowhere"]}).to_string(),
        json!({"sku": "A-5", "price": 0, "currency": "XXX"}).to_string(),
        json!({"sku": "bad sku", "name": "Six", "price": 6}).to_string(),
        json!({"sku": "A-7", "description": "no name, no price"}).to_string(),
        String::new(),
        json!({"sku": "A-9", "name": "Nine", "price": "9.999"}).to_string(),
        json!({"sku": "A-10", "name": "Ten", "price": 10, "stock": -1}).to_string(),
        json!({"sku": "A-11", "name": "Eleven", "price": 11}).to_string(),
    ]
    .join("\n");

    let results = app.import_results(&token, NDJSON, body).await;
    assert_eq!(
        outcomes(&results),
        [
            (1, "created"),
            (2, "error"),
            (3, "error"),
            (4, "error"),
            (5, "error"),
            (6, "error"),
            (7, "error"),
            (9, "error"),
            (10, "error"),
            (11, "created")
        ]
    );
    assert_eq!(errors(&results[1]), ["line/malformed"]);
    assert_eq!(results[1]["sku"], Value::Null, "an unreadable line names no SKU");
    assert_eq!(errors(&results[2]), ["line/schema"]);
    assert_eq!(results[2]["sku"], "A-3", "a line of the wrong shape still names its SKU");
    assert_eq!(errors(&results[3]), ["category_slugs/unknown_category"]);
    assert!(results[3]["errors"][0]["message"].as_str().unwrap().contains("nowhere"));
    assert_eq!(errors(&results[4]), ["name/required", "currency/unsupported", "price/not_positive"]);
    assert_eq!(errors(&results[5]), ["sku/invalid"]);
    assert_eq!(errors(&results[6]), ["name/required", "price/required"]);
    assert_eq!(errors(&results[7]), ["price/too_precise"]);
    assert_eq!(errors(&results[8]), ["stock/negative"]);
    assert_eq!(app.product_count().await, 2, "only the good lines were written");

    // A category id the event store refuses (checked in the append): the batch of new products
    // it was in is refused whole, and its lines are imported one by one, so only that line fails.
    let ghost = uuid::Uuid::new_v4();
    let batch = ndjson(&[
        json!({"sku": "B-1", "name": "One", "price": 1}),
        json!({"sku": "B-2", "name": "Two", "price": 2, "category_ids": [ghost]}),
        json!({"sku": "B-3", "name": "Three", "price": 3}),
    ]);
    let results = app.import_results(&token, NDJSON, batch).await;
    assert_eq!(outcomes(&results), [(1, "created"), (2, "error"), (3, "created")]);
    assert_eq!(errors(&results[1]), ["category_ids/unknown_category"]);
    assert_eq!(app.product_count().await, 4);

    // A status change the rules refuse is an error of that line alone.
    let archive = ndjson(&[json!({"sku": "A-1", "status": "archived"}), json!({"sku": "A-11", "status": "draft"})]);
    let results = app.import_results(&token, NDJSON, archive).await;
    assert_eq!(outcomes(&results), [(1, "updated"), (2, "error")]);
    assert_eq!(errors(&results[1]), ["status/invalid_transition"]);
    assert!(results[1]["id"].is_string(), "the product the failed line is for");
}

#[tokio::test]
async fn lines_with_one_sku_apply_in_order_and_concurrent_imports_of_new_skus_create_each_once() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lines: Vec<Value> = (0..40)
        .map(|i| json!({"sku": format!("SKU-{}", i % 20), "name": format!("Name {i}"), "price": i + 1}))
        .collect();
    let results = app.import_results(&token, NDJSON, ndjson(&lines)).await;
    let expected: Vec<(u64, &str)> =
        (1..=40).map(|line| (line, if line <= 20 { "created" } else { "updated" })).collect();
    assert_eq!(outcomes(&results), expected, "results come in line order");
    let last = app.load_product(results[39]["id"].as_str().unwrap()).await;
    assert_eq!((last.name.as_str(), last.version), ("Name 39", 2), "the later line of a SKU wins");

    // Two imports of the same new SKUs at once: each SKU is created once; the import that loses
    // a SKU to the other (the event store refuses it, CT409) updates that product instead.
    let fresh: Vec<Value> =
        (0..30).map(|i| json!({"sku": format!("NEW-{i}"), "name": "Same", "price": 5, "stock": 1})).collect();
    let body = ndjson(&fresh);
    let (one, two) = tokio::join!(
        app.import_results(&token, NDJSON, body.clone()),
        app.import_results(&token, NDJSON, body.clone())
    );
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(a["id"], b["id"], "both imports name the one product of {}", a["sku"]);
        let mut pair = [a["result"].as_str().unwrap(), b["result"].as_str().unwrap()];
        pair.sort_unstable();
        assert_eq!(pair, ["created", "unchanged"], "{a} {b}");
    }
    assert_eq!(app.product_count().await, 20 + 30);
}

#[tokio::test]
async fn limits_content_types_and_empty_bodies() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let one = ndjson(&[json!({"sku": "A", "name": "A", "price": 1})]);

    for content_type in
        ["application/json", "text/plain", "text/csv; charset=latin1", "application/x-ndjson; charset=utf-16"]
    {
        assert_problem(app.import(&token, content_type, one.clone()).await, 415).await;
    }
    let no_type = app.post("/api/v1/products/import").bearer_auth(&token).body(one.clone()).send().await.unwrap();
    assert_problem(no_type, 415).await;
    let problem = assert_problem(app.import(&token, NDJSON, "").await, 422).await;
    assert_eq!(problem["errors"][0]["code"], "empty");
    assert_problem(app.import(&token, NDJSON, "\n  \n").await, 422).await;
    assert_problem(app.import(&token, CSV, "").await, 422).await;
    let problem = assert_problem(app.import(&token, CSV, "name,colour,sku,name\nx,y,z,w\n").await, 422).await;
    let codes: Vec<&str> = problem["errors"].as_array().unwrap().iter().map(|e| e["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["unknown_column", "duplicate_column"]);
    assert_problem(app.import(&token, CSV, "name,price\nLamp,1\n").await, 422).await;
    // A header and no records: nothing to do.
    assert!(app.import_results(&token, CSV, "sku,name\n").await.is_empty());
    assert_eq!(app.import_results(&token, "application/x-ndjson; charset=UTF-8", one).await.len(), 1);

    // A line longer than 256 KiB is refused and skipped; the next one is read.
    let long = format!("{}\n{}\n", json!({"sku": "L", "description": "x".repeat(300 * 1024)}), json!({"sku": "L"}));
    let results = app.import_results(&token, NDJSON, long).await;
    assert_eq!(outcomes(&results), [(1, "error"), (2, "error")]);
    assert_eq!(errors(&results[0]), ["line/too_long"]);
    assert_eq!(errors(&results[1]), ["name/required", "price/required"]);

    // 100,000 products at most: the 100,001st line ends the results with the error, unread.
    let events = app.event_count().await;
    let many = "{}\n".repeat(100_001);
    let results = app.import_results(&token, NDJSON, many).await;
    assert_eq!(results.len(), 100_001);
    assert_eq!(errors(&results[99_999]), ["line/schema"]);
    assert_eq!(outcomes(&results[100_000..]), [(100_001, "error")]);
    assert_eq!(errors(&results[100_000]), ["body/too_many_lines"]);
    let csv = format!("sku,name\n{}", "x\n".repeat(100_002));
    let results = app.import_results(&token, CSV, csv).await;
    assert_eq!(results.len(), 100_001);
    assert_eq!(errors(&results[0]), ["line/field_count"]);
    assert_eq!(outcomes(&results[100_000..]), [(100_002, "error")]);
    assert_eq!(errors(&results[100_000]), ["body/too_many_lines"]);
    assert_eq!(app.event_count().await, events);
}

#[tokio::test]
async fn a_body_past_64_mib_is_413_when_declared_and_ends_the_results_when_it_is_not() {
    let app = spawn_app().await;
    let token = app.admin_token().await;

    // Declared: refused before a byte of the body is read.
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/v1/products/import HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        64 * 1024 * 1024 + 1
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let read = connection.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // Chunked, without a length: lines are imported until the limit, then the results end.
    let line = format!("{}\n", "x".repeat(1023));
    let chunk = axum::body::Bytes::from(line.repeat(1024));
    let chunks = (0..65).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let results = app.import_results(&token, NDJSON, body).await;
    let last = results.last().unwrap();
    assert_eq!(errors(last), ["body/too_large"]);
    assert_eq!(results.len(), 64 * 1024 + 1, "every line within the limit has its result");
}

#[tokio::test]
async fn only_admins_import() {
    let app = spawn_app().await;
    let body = ndjson(&[json!({"sku": "A", "name": "A", "price": 1})]);
    let anonymous = app.post("/api/v1/products/import").header("content-type", NDJSON).body(body.clone());
    assert_problem(anonymous.send().await.unwrap(), 401).await;
    assert_problem(app.import("not-a-token", NDJSON, body.clone()).await, 401).await;
    app.create_user("customer", "customer-password", &[]).await;
    let customer = app.token_for("customer", "customer-password").await;
    assert_problem(app.import(&customer, NDJSON, body.clone()).await, 403).await;
    // Refused before the content type is looked at.
    assert_problem(app.import(&customer, "text/plain", body).await, 403).await;
    assert_eq!(app.product_count().await, 0);
}

/// With Postgres unreachable, an import ends at the first line that met the outage (every line
/// would wait for a connection and fail alike): 200 and one error result, then the end.
#[tokio::test]
async fn an_unreachable_database_ends_the_import_at_its_first_line() {
    let server = spawn_app_without_database().await;
    let token = test_token(uuid::Uuid::new_v4(), domain::Role::Admin);
    let lines: Vec<Value> = (0..50).map(|i| json!({"sku": format!("S-{i}"), "name": "x", "price": 1})).collect();
    let request = server.post("/api/v1/products/import").bearer_auth(token).header("content-type", NDJSON);
    let results = results(request.body(ndjson(&lines)).send().await.unwrap()).await;
    assert_eq!(outcomes(&results), [(1, "error")]);
    assert_eq!(errors(&results[0]), ["body/service-unavailable"]);
}

/// Imports beyond `IMPORT_MAX_RUNNING` are 503 with `Retry-After` (0 turns imports off).
#[tokio::test]
async fn imports_beyond_the_running_limit_are_503() {
    let app = spawn_app_with(&["--import-max-running", "0"]).await;
    let token = app.admin_token().await;
    let response = app.import(&token, NDJSON, ndjson(&[json!({"sku": "A", "name": "A", "price": 1})])).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503).await;
    assert_eq!(app.product_count().await, 0);
}

#[tokio::test]
async fn known_products_are_updated_together_and_a_bad_line_among_them_fails_alone() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    app.a_category(&token, "lighting", None).await;
    let create: Vec<Value> = (0..30)
        .map(|i| {
            json!({"sku": format!("LAMP-{i}"), "name": format!("Lamp {i}"), "price": "10.00",
                         "category_slugs": ["lighting"]})
        })
        .collect();
    let created = app.import_results(&token, NDJSON, ndjson(&create)).await;
    assert!(created.iter().all(|r| r["result"] == "created"), "{created:?}");

    // 27 price changes, one identical line, one refused value, one unknown slug.
    let mut change: Vec<Value> = (0..27).map(|i| json!({"sku": format!("lamp-{i}"), "price": "12.50"})).collect();
    change.push(json!({"sku": "LAMP-27", "name": "Lamp 27", "price": "10"}));
    change.push(json!({"sku": "LAMP-28", "price": "-1"}));
    change.push(json!({"sku": "LAMP-29", "category_slugs": ["nowhere"]}));
    let changed = app.import_results(&token, NDJSON, ndjson(&change)).await;
    let mut expected: Vec<(u64, &str)> = (1..=27).map(|line| (line, "updated")).collect();
    expected.extend([(28, "unchanged"), (29, "error"), (30, "error")]);
    assert_eq!(outcomes(&changed), expected);
    assert_eq!(errors(&changed[28]), ["price/not_positive"]);
    assert_eq!(errors(&changed[29]), ["category_slugs/unknown_category"]);
    for (result, before) in changed.iter().zip(&created) {
        assert_eq!(result["id"], before["id"], "every line names its product: {result}");
    }
    // The lower-case SKU in the file is a change of the SKU too, claimed as the rules say.
    let lamp = app.load_product(created[3]["id"].as_str().unwrap()).await;
    assert_eq!((lamp.price.to_string(), lamp.sku.as_deref(), lamp.version), ("12.50".into(), Some("lamp-3"), 2));
    let holder: String =
        sqlx::query_scalar("SELECT aggregate_id FROM catalog_claims WHERE kind = 'sku' AND value = 'lamp-3'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(holder, created[3]["id"].as_str().unwrap());
    let updates: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ProductUpdated'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(updates, 27, "one event per changed product, none for the others");

    // Again: nothing left to change.
    let again = app.import_results(&token, NDJSON, ndjson(&change)).await;
    let mut expected: Vec<(u64, &str)> = (1..=28).map(|line| (line, "unchanged")).collect();
    expected.extend([(29, "error"), (30, "error")]);
    assert_eq!(outcomes(&again), expected);
}

#[tokio::test]
async fn lines_of_one_sku_far_apart_apply_in_file_order_whatever_the_batches() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    // Three lines for one SKU, a batch's worth of other lines apart, so they land in different
    // batches that are worked on at the same time.
    let mut lines = Vec::new();
    for (n, price) in ["1.00", "2.00", "3.00"].iter().enumerate() {
        lines.push(json!({"sku": "SAME", "name": "Same", "price": price}));
        lines.extend((0..1_100).map(|i| json!({"sku": format!("OTHER-{n}-{i}"), "name": "Other", "price": "5"})));
    }
    let results = app.import_results(&token, NDJSON, ndjson(&lines)).await;
    assert_eq!(results.len(), lines.len());
    assert!(results.iter().all(|r| r["result"] != "error"), "no line fails");
    let same: Vec<&str> =
        results.iter().filter(|r| r["sku"] == "SAME").map(|r| r["result"].as_str().unwrap()).collect();
    assert_eq!(same, ["created", "updated", "updated"]);
    let product = app.load_product(results[0]["id"].as_str().unwrap()).await;
    assert_eq!((product.price.to_string(), product.version), ("3.00".into(), 3), "the last line wins");
}

#[tokio::test]
async fn lines_of_one_sku_two_batches_apart_apply_in_file_order() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let existing = json!({"sku": "SAME", "name": "Same", "price": "9.00"});
    let created = app.import_results(&token, NDJSON, ndjson(&[existing])).await;
    // Two batches' worth of other lines between two changes of one known product: their
    // batches are not neighbours, yet may be in flight together (three batches are).
    let mut lines = vec![json!({"sku": "SAME", "name": "Same", "price": "1.00"})];
    lines.extend((0..2_100).map(|i| json!({"sku": format!("OTHER-{i}"), "name": "Other", "price": "5"})));
    lines.push(json!({"sku": "SAME", "name": "Same", "price": "2.00"}));
    let results = app.import_results(&token, NDJSON, ndjson(&lines)).await;
    assert!(results.iter().all(|r| r["result"] != "error"), "no line fails");
    let same: Vec<&str> =
        results.iter().filter(|r| r["sku"] == "SAME").map(|r| r["result"].as_str().unwrap()).collect();
    assert_eq!(same, ["updated", "updated"]);
    let product = app.load_product(created[0]["id"].as_str().unwrap()).await;
    assert_eq!((product.price.to_string(), product.version), ("2.00".into(), 3), "the last line wins");
}

#[tokio::test]
async fn a_statement_of_new_products_is_refused_whole_for_a_taken_sku_a_sku_given_twice_or_an_unknown_category() {
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::Aggregate;
    use domain::{Product, ProductCommand};
    use event_store::batch::{append_events, NewEvent};

    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lighting = app.a_category(&token, "lighting", None).await;
    let taken = app.import_results(&token, NDJSON, ndjson(&[json!({"sku": "TAKEN", "name": "T", "price": 1})])).await;
    assert_eq!(taken[0]["result"], "created");

    async fn created(sku: &str, category: &str) -> NewEvent<Product> {
        let id = uuid::Uuid::new_v4();
        let command = ProductCommand::Create {
            id,
            name: "Lamp".into(),
            description: None,
            price: "9.90".parse().unwrap(),
            currency: "EUR".into(),
            sku: Some(sku.into()),
            status: None,
            category_ids: vec![category.parse().unwrap()],
            attributes: BTreeMap::new(),
            images: Vec::new(),
            on_hand: 0,
            allow_http_images: false,
        };
        let sink = EventSink::default();
        Product::default().handle(command, &(), &sink).await.unwrap();
        NewEvent { aggregate_id: id.to_string(), sequence: 1, event: sink.collect().await.pop().unwrap() }
    }
    let metadata = event_store::EventMetadata::new("test");
    let refused = |error: sqlx::Error| {
        let error = error.into_database_error().expect("a database error");
        (error.code().unwrap().into_owned(), error.message().to_owned())
    };
    let before = app.product_count().await;

    let batch =
        vec![created("A-1", &lighting).await, created("taken", &lighting).await, created("A-2", &lighting).await];
    let error = append_events(&app.pool, &batch, &metadata).await.unwrap_err();
    assert_eq!(refused(error), ("CT409".into(), "sku \"taken\" is already used by another product".into()));

    let batch = vec![created("B-1", &lighting).await, created("B-2", &lighting).await, created("b-1", &lighting).await];
    let error = append_events(&app.pool, &batch, &metadata).await.unwrap_err();
    assert_eq!(refused(error), ("CT409".into(), "sku \"b-1\" is already used by another product".into()));

    let nowhere = uuid::Uuid::new_v4().to_string();
    let batch = vec![created("C-1", &lighting).await, created("C-2", &nowhere).await];
    let error = append_events(&app.pool, &batch, &metadata).await.unwrap_err();
    assert_eq!(refused(error), ("CT422".into(), format!("no such category: {nowhere}")));
    assert_eq!(app.product_count().await, before, "a refused statement stores nothing");

    let batch = vec![created("D-1", &lighting).await, created("D-2", &lighting).await];
    append_events(&app.pool, &batch, &metadata).await.unwrap();
    let claimed: Vec<(String, String)> = sqlx::query_as(
        "SELECT value, aggregate_id FROM catalog_claims WHERE kind = 'sku' AND value LIKE 'd-%' ORDER BY value",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        claimed,
        [("d-1".to_owned(), batch[0].aggregate_id.clone()), ("d-2".to_owned(), batch[1].aggregate_id.clone())]
    );
}
