use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn twelve_concurrent_patches_with_one_if_match_give_one_200_and_eleven_412() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let path = format!("/api/v1/products/{id}");
    let requests = (0..12).map(|i| {
        app.patch(&path)
            .bearer_auth(&token)
            .header("if-match", "\"1\"")
            .json(&json!({"name": format!("Name {i}")}))
            .send()
    });
    let statuses: Vec<u16> =
        futures::future::join_all(requests).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 11, "{statuses:?}");
    assert_eq!(app.events_of(&id).await.len(), 2);
}

#[tokio::test]
async fn concurrent_patches_without_if_match_all_land_or_get_409_never_500() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let id = app.a_product(&token).await;
    let path = format!("/api/v1/products/{id}");
    let requests =
        (0..12).map(|i| app.patch(&path).bearer_auth(&token).json(&json!({"price": format!("{}.00", i + 1)})).send());
    let statuses: Vec<u16> =
        futures::future::join_all(requests).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok >= 1);
    assert_eq!(app.events_of(&id).await.len(), 1 + ok, "every 200 is exactly one event");
}

#[tokio::test]
async fn twelve_concurrent_registrations_of_one_username_give_exactly_one_201() {
    // All twelve come from one address: lift the per-client registration limit.
    let app = spawn_app_with(&["--registrations-per-client", "100"]).await;
    let requests = (0..12).map(|i| {
        app.post("/api/v1/users")
            .json(&json!({"username": "zoe", "email": format!("zoe{i}@example.com"), "password": "zoe-password"}))
            .send()
    });
    let statuses: Vec<u16> =
        futures::future::join_all(requests).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 11, "{statuses:?}");
    assert_eq!(app.event_count().await, 1);
}
