//! The category tree, its product counts, and category names on products kept current.

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    admin_token, assert_problem, category_deleted, category_updated, eventually, product_deleted, spawn_app,
};

fn names(nodes: &Value) -> Vec<&str> {
    nodes.as_array().unwrap().iter().map(|node| node["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn the_tree_nests_children_and_counts_published_products() {
    let app = spawn_app().await;
    let lighting = app.a_category("Lighting", None).await;
    let desk = app.a_category("Desk lamps", Some(lighting)).await;
    let bulbs = app.a_category("Bulbs", Some(desk)).await;
    let ceiling = app.a_category("Ceiling lamps", Some(lighting)).await;
    let garden = app.a_category("Garden", None).await;
    let removed = app.a_category("Removed", Some(garden)).await;
    app.apply(&[category_deleted(removed, 2)]).await;

    app.a_product_with(json!({"category_ids": [desk, lighting]})).await;
    app.a_product_with(json!({"category_ids": [desk]})).await;
    app.a_product_with(json!({"category_ids": [desk], "status": "draft"})).await;
    app.a_product_with(json!({"category_ids": [desk], "status": "archived"})).await;
    let deleted = app.a_product_with(json!({"category_ids": [desk]})).await;
    app.apply(&[product_deleted(deleted, 2)]).await;

    let (status, tree) = app.read("/api/v1/categories", None).await;
    assert_eq!(status, 200);
    assert_eq!(names(&tree), ["Garden", "Lighting"], "top level, by name");
    let garden_node = &tree[0];
    assert_eq!(
        *garden_node,
        json!({"id": garden, "name": "Garden", "slug": "garden", "parent_id": null, "children": [],
               "product_count": 0}),
        "a deleted child is gone"
    );
    let lighting_node = &tree[1];
    assert_eq!(names(&lighting_node["children"]), ["Ceiling lamps", "Desk lamps"]);
    assert_eq!(lighting_node["product_count"], 1, "direct members only");
    let desk_node = &lighting_node["children"][1];
    assert_eq!(
        (desk_node["id"].as_str(), desk_node["parent_id"].as_str()),
        (Some(&*desk.to_string()), Some(&*lighting.to_string()))
    );
    assert_eq!(desk_node["product_count"], 2, "live published products only");
    assert_eq!(desk_node["slug"], "desk-lamps");
    assert_eq!(desk_node["children"][0]["id"], bulbs.to_string());
    assert_eq!(lighting_node["children"][0]["id"], ceiling.to_string());

    // One node: itself and its subtree; the same to admins.
    for token in [None, Some(admin_token())] {
        let (status, node) = app.read(&format!("/api/v1/categories/{desk}"), token.as_deref()).await;
        assert_eq!((status, &node), (200, desk_node));
    }
    for path in [
        format!("/api/v1/categories/{removed}"),
        format!("/api/v1/categories/{}", Uuid::new_v4()),
        "/api/v1/categories/x".into(),
    ] {
        let body = assert_problem(app.get(&path).send().await.unwrap(), 404).await;
        assert_eq!(body["detail"], "category not found", "{path}");
    }
}

#[tokio::test]
async fn a_category_whose_parent_is_not_projected_yet_is_shown_at_the_top() {
    let app = spawn_app().await;
    let parent = Uuid::new_v4();
    let child = app.a_category("Early", Some(parent)).await;
    let (_, tree) = app.read("/api/v1/categories", None).await;
    assert_eq!(tree[0]["id"], child.to_string());
    assert_eq!(tree[0]["parent_id"], parent.to_string());
    app.apply(&[crate::helpers::category_created(parent, "Late", None)]).await;
    let (_, tree) = app.read("/api/v1/categories", None).await;
    assert_eq!(names(&tree), ["Late"]);
    assert_eq!(names(&tree[0]["children"]), ["Early"]);
}

#[tokio::test]
async fn a_renamed_category_shows_on_cached_products_and_in_lists() {
    let app = spawn_app().await;
    let category = app.a_category("Lamps", None).await;
    let other = app.a_category("Other", None).await;
    let id = app.a_product_with(json!({"category_ids": [category, other]})).await;
    let path = format!("/api/v1/products/{id}");
    let category_names = |body: &Value| -> Vec<String> {
        body["categories"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    };
    // Read until the product's own announcement has passed and the entry stays cached.
    eventually("the product is cached", Duration::from_secs(2), || async {
        let before = app.get("/metrics").send().await.unwrap().text().await.unwrap();
        let (_, body) = app.read(&path, None).await;
        let after = app.get("/metrics").send().await.unwrap().text().await.unwrap();
        category_names(&body) == ["Lamps", "Other"] && hits(&after) > hits(&before)
    })
    .await;

    app.apply(&[category_updated(category, 2, json!({"name": "Lighting", "slug": "lighting"}))]).await;
    let body = eventually("the rename is served", Duration::from_secs(2), || async {
        let (_, body) = app.read(&path, None).await;
        (category_names(&body) == ["Lighting", "Other"]).then_some(body)
    })
    .await;
    assert_eq!(body["categories"][0], json!({"id": category, "name": "Lighting", "slug": "lighting"}));
    assert_eq!(body["version"], 1, "the product itself did not change");
    let (_, page) = app.read("/api/v1/products", None).await;
    assert_eq!(page["items"][0]["categories"][0]["name"], "Lighting");

    // A deleted category is no longer shown on its products.
    app.apply(&[category_deleted(other, 2)]).await;
    eventually("the deletion is served", Duration::from_secs(2), || async {
        category_names(&app.read(&path, None).await.1) == ["Lighting"]
    })
    .await;
}

/// `query_cache_hits_total` from a `/metrics` page (0 before the first hit).
fn hits(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with("query_cache_hits_total"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}
