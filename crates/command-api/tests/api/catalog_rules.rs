//! The rules that span aggregates, which the event store enforces in the appending transaction:
//! unique SKUs and slugs (also under concurrency), categories that exist, a tree without cycles
//! that loses no category with children.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, count, created_id, error_fields, spawn_app, TestApp};

/// Sends all `requests` at once and returns their statuses with their bodies.
async fn all_at_once(requests: impl IntoIterator<Item = reqwest::RequestBuilder>) -> Vec<(u16, Value)> {
    let responses = futures::future::join_all(requests.into_iter().map(reqwest::RequestBuilder::send)).await;
    let mut answers = Vec::new();
    for response in responses {
        let response = response.unwrap();
        let status = response.status().as_u16();
        answers.push((status, response.json().await.unwrap()));
    }
    answers
}

async fn count_events(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sixteen_concurrent_creates_with_one_sku_give_one_201_and_fifteen_409() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let requests = (0..16).map(|i| {
        let body = json!({"name": format!("Lamp {i}"), "price": 1, "sku": "RACE-1"});
        app.post("/api/v1/products").bearer_auth(&token).json(&body)
    });
    let answers = all_at_once(requests).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    println!("16 concurrent creates with sku RACE-1: {} × 201, {} × 409", count(&statuses, 201), count(&statuses, 409));
    assert_eq!(count(&statuses, 201), 1, "{statuses:?}");
    assert_eq!(count(&statuses, 409), 15, "{statuses:?}");
    for (_, problem) in answers.iter().filter(|(status, _)| *status == 409) {
        assert_eq!(problem["detail"], "sku \"RACE-1\" is already used by another product", "{problem}");
    }
    assert_eq!(count_events(&app, "ProductCreated").await, 1, "the refused creates stored nothing");
}

#[tokio::test]
async fn sixteen_concurrent_creates_with_one_slug_give_one_201_and_fifteen_409() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let requests = (0..16).map(|i| {
        app.post("/api/v1/categories").bearer_auth(&token).json(&json!({"name": format!("Lamps {i}"), "slug": "lamps"}))
    });
    let statuses: Vec<u16> = all_at_once(requests).await.into_iter().map(|(status, _)| status).collect();
    println!("16 concurrent creates with slug lamps: {} × 201, {} × 409", count(&statuses, 201), count(&statuses, 409));
    assert_eq!(count(&statuses, 201), 1, "{statuses:?}");
    assert_eq!(count(&statuses, 409), 15, "{statuses:?}");
    assert_eq!(count_events(&app, "CategoryCreated").await, 1);
}

#[tokio::test]
async fn concurrent_renames_to_one_sku_leave_it_with_one_product() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(app.a_product(&token).await);
    }
    let requests = ids.iter().map(|id| app.patch(&format!("/api/v1/products/{id}")).bearer_auth(&token));
    let requests = requests.map(|request| request.json(&json!({"sku": "ONE"})));
    let statuses: Vec<u16> = all_at_once(requests).await.into_iter().map(|(status, _)| status).collect();
    assert_eq!((count(&statuses, 200), count(&statuses, 409)), (1, 7), "{statuses:?}");
    let mut holders = 0;
    for id in &ids {
        holders += usize::from(app.load_product(id).await.sku.as_deref() == Some("ONE"));
    }
    assert_eq!(holders, 1);
}

#[tokio::test]
async fn skus_are_unique_regardless_of_case() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let first = created_id(app.create_product(&token, json!({"name": "x", "price": 1, "sku": "AB-1"})).await).await;
    let before = app.event_count().await;
    let other_case = app.create_product(&token, json!({"name": "y", "price": 1, "sku": "ab-1"})).await;
    let problem = assert_problem(other_case, 409).await;
    assert_eq!(problem["detail"], "sku \"ab-1\" is already used by another product");
    let other = app.a_product(&token).await;
    assert_problem(app.patch_product(&token, &other, json!({"sku": "Ab-1"})).await, 409).await;
    assert_eq!(app.event_count().await, before + 1, "only the other product's create");
    // The holder may keep its SKU, or change its case.
    assert_eq!(app.patch_product(&token, &first, json!({"sku": "AB-1", "name": "z"})).await.status(), 200);
    assert_eq!(app.patch_product(&token, &first, json!({"sku": "ab-1"})).await.status(), 200);
    assert_eq!(app.load_product(&first).await.sku.as_deref(), Some("ab-1"));
}

#[tokio::test]
async fn a_sku_freed_by_a_change_or_a_deletion_can_be_taken_again() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let with_sku = |name: &str, sku: &str| json!({"name": name, "price": 1, "sku": sku});
    let first = created_id(app.create_product(&token, with_sku("first", "LAMP-1")).await).await;
    assert_problem(app.create_product(&token, with_sku("second", "LAMP-1")).await, 409).await;

    // Changed away: LAMP-1 is free, LAMP-2 is now taken.
    assert_eq!(app.patch_product(&token, &first, json!({"sku": "LAMP-2"})).await.status(), 200);
    let second = created_id(app.create_product(&token, with_sku("second", "LAMP-1")).await).await;
    assert_problem(app.create_product(&token, with_sku("third", "LAMP-2")).await, 409).await;

    // Deleted: its SKU is free.
    let delete = app.delete(&format!("/api/v1/products/{second}")).bearer_auth(&token);
    assert_eq!(delete.send().await.unwrap().status(), 204);
    assert_eq!(app.create_product(&token, with_sku("third", "lamp-1")).await.status(), 201);

    // Cleared with null: free too.
    assert_eq!(app.patch_product(&token, &first, json!({"sku": null})).await.status(), 200);
    assert_eq!(app.create_product(&token, with_sku("fourth", "LAMP-2")).await.status(), 201);
}

#[tokio::test]
async fn a_taken_slug_is_409_on_create_and_change_and_free_again_after_a_change_or_deletion() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lamps = app.a_category(&token, "lamps", None).await;
    let desks = app.a_category(&token, "desks", None).await;
    let before = app.event_count().await;
    let taken = app.create_category(&token, json!({"name": "Lamps", "slug": "lamps"})).await;
    let problem = assert_problem(taken, 409).await;
    assert_eq!(problem["detail"], "slug \"lamps\" is already used by another category");
    assert_problem(app.patch_category(&token, &desks, json!({"slug": "lamps"})).await, 409).await;
    assert_eq!(app.event_count().await, before);

    assert_eq!(app.patch_category(&token, &lamps, json!({"slug": "lights"})).await.status(), 200);
    assert_eq!(app.patch_category(&token, &desks, json!({"slug": "lamps"})).await.status(), 200);
    assert_eq!(app.delete_category(&token, &lamps).await.status(), 204);
    app.a_category(&token, "lights", None).await;
}

#[tokio::test]
async fn a_move_under_the_category_itself_or_a_descendant_is_409() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let a = app.a_category(&token, "a", None).await;
    let b = app.a_category(&token, "b", Some(&a)).await;
    let c = app.a_category(&token, "c", Some(&b)).await;
    let before = app.event_count().await;

    for (moved, under) in [(&a, &c), (&a, &b), (&b, &c)] {
        let problem = assert_problem(app.patch_category(&token, moved, json!({"parent_id": under})).await, 409).await;
        assert_eq!(problem["detail"], "a category cannot move under itself or one of its descendants");
    }
    let itself = assert_problem(app.patch_category(&token, &a, json!({"parent_id": a})).await, 422).await;
    assert_eq!(error_fields(&itself), ["parent_id"]);
    assert_eq!(app.event_count().await, before);

    // Once c is a root, a may move under it: no cycle any more.
    assert_eq!(app.patch_category(&token, &c, json!({"parent_id": null})).await.status(), 200);
    assert_eq!(app.patch_category(&token, &a, json!({"parent_id": c})).await.status(), 200);
    assert_eq!(app.load_category(&a).await.parent_id, Some(c.parse().unwrap()));
}

#[tokio::test]
async fn a_category_with_children_is_409_to_delete_until_they_are_gone() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let parent = app.a_category(&token, "lighting", None).await;
    let child = app.a_category(&token, "lamps", Some(&parent)).await;
    let problem = assert_problem(app.delete_category(&token, &parent).await, 409).await;
    assert_eq!(problem["detail"], "the category still has child categories; move or delete them first");
    assert_eq!(app.events_of(&parent).await.len(), 1);

    assert_eq!(app.delete_category(&token, &child).await.status(), 204);
    assert_eq!(app.delete_category(&token, &parent).await.status(), 204);
}

#[tokio::test]
async fn an_unknown_category_is_422_naming_the_field() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lamps = app.a_category(&token, "lamps", None).await;
    let id = app.a_product(&token).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let before = app.event_count().await;

    let create = app.create_product(&token, json!({"name": "x", "price": 1, "category_ids": [lamps, unknown]})).await;
    let problem = assert_problem(create, 422).await;
    assert_eq!(
        problem["errors"],
        json!([{
            "field": "category_ids",
            "code": "unknown_category",
            "message": format!("no such category: {unknown}")
        }])
    );
    let update = app.patch_product(&token, &id, json!({"category_ids": [unknown]})).await;
    assert_eq!(error_fields(&assert_problem(update, 422).await), ["category_ids"]);
    let orphan = app.create_category(&token, json!({"name": "x", "slug": "x", "parent_id": unknown})).await;
    let problem = assert_problem(orphan, 422).await;
    assert_eq!(error_fields(&problem), ["parent_id"]);
    assert_eq!(problem["errors"][0]["code"], "unknown_category");
    let moved = app.patch_category(&token, &lamps, json!({"parent_id": unknown})).await;
    assert_eq!(error_fields(&assert_problem(moved, 422).await), ["parent_id"]);
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn a_deleted_category_takes_no_products_and_no_children() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let lamps = app.a_category(&token, "lamps", None).await;
    let filed =
        created_id(app.create_product(&token, json!({"name": "x", "price": 1, "category_ids": [lamps]})).await).await;
    let other = app.a_category(&token, "other", None).await;
    assert_eq!(app.delete_category(&token, &lamps).await.status(), 204, "products do not keep a category alive");
    let before = app.event_count().await;

    let create = app.create_product(&token, json!({"name": "y", "price": 1, "category_ids": [lamps]})).await;
    assert_eq!(error_fields(&assert_problem(create, 422).await), ["category_ids"]);
    let update = app.patch_product(&token, &filed, json!({"category_ids": [other, lamps]})).await;
    assert_eq!(error_fields(&assert_problem(update, 422).await), ["category_ids"]);
    let child = app.create_category(&token, json!({"name": "z", "slug": "z", "parent_id": lamps})).await;
    assert_eq!(error_fields(&assert_problem(child, 422).await), ["parent_id"]);
    assert_eq!(app.event_count().await, before);

    // Changes that leave the categories alone still work for the product filed under it.
    assert_eq!(app.patch_product(&token, &filed, json!({"name": "renamed"})).await.status(), 200);
    assert_eq!(app.patch_product(&token, &filed, json!({"category_ids": [other]})).await.status(), 200);
}

/// Two products swapping SKUs at once are both refused: neither can take the SKU the other still
/// holds. Postgres may see a taken SKU or a deadlock (each gave up its SKU, then waits for the
/// other's), which it resolves by rolling one back: 409 either way, never 500.
#[tokio::test]
async fn products_swapping_skus_at_once_are_refused_never_500() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let first = created_id(app.create_product(&token, json!({"name": "x", "price": 1, "sku": "A"})).await).await;
    let second = created_id(app.create_product(&token, json!({"name": "y", "price": 1, "sku": "B"})).await).await;
    let mut details = Vec::new();
    for _ in 0..10 {
        let requests = [(&first, "B"), (&second, "A")].map(|(id, sku)| {
            app.patch(&format!("/api/v1/products/{id}")).bearer_auth(&token).json(&json!({"sku": sku}))
        });
        for (status, problem) in all_at_once(requests).await {
            assert_eq!(status, 409, "{problem}");
            details.push(problem["detail"].as_str().unwrap().to_owned());
        }
    }
    let deadlocks = details.iter().filter(|d| d.contains("concurrent change")).count();
    println!("swaps: {} refused for a taken sku, {deadlocks} rolled back as deadlocks", details.len() - deadlocks);
    assert_eq!(app.load_product(&first).await.sku.as_deref(), Some("A"));
    assert_eq!(app.load_product(&second).await.sku.as_deref(), Some("B"));
}
