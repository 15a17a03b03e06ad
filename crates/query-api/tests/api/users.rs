use domain::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app, token, token_signed_by, OTHER_SIGNING_KEY};

#[tokio::test]
async fn a_profile_needs_a_valid_bearer_token() {
    let app = spawn_app().await;
    let (id, _) = app.a_user("ann", &[], Role::Customer).await;
    let path = format!("/api/v1/users/{id}");
    let response = app.get(&path).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, 401).await;
    assert_problem(app.get(&path).bearer_auth("not-a-token").send().await.unwrap(), 401).await;
    let forged = token_signed_by(OTHER_SIGNING_KEY, id, Role::Admin);
    assert_problem(app.get(&path).bearer_auth(forged).send().await.unwrap(), 401).await;
}

#[tokio::test]
async fn users_read_their_own_profile_and_admins_read_any() {
    let app = spawn_app().await;
    let (ann, ann_token) = app.a_user("ann", &[], Role::Customer).await;
    let (_, admin_token) = app.a_user("root", &[Role::Admin], Role::Admin).await;

    for bearer in [&ann_token, &admin_token] {
        let response = app.get(&format!("/api/v1/users/{ann}")).bearer_auth(bearer).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["etag"], "\"1\"");
        let text = response.text().await.unwrap();
        assert!(!text.to_lowercase().contains("password") && !text.contains("argon2"), "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["id"], ann.to_string());
        assert_eq!(body["username"], "ann");
        assert_eq!(body["email"], "ann@example.com");
        assert_eq!(body["roles"], serde_json::json!(["customer"]));
        assert_eq!(body["active"], true);
        assert_eq!(body["version"], 1);
        let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["active", "created_at", "email", "id", "roles", "updated_at", "username", "version"]);
    }
    let revalidated = app
        .get(&format!("/api/v1/users/{ann}"))
        .bearer_auth(&ann_token)
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
}

#[tokio::test]
async fn other_users_learn_nothing_not_even_existence() {
    let app = spawn_app().await;
    let (_, ann_token) = app.a_user("ann", &[], Role::Customer).await;
    let (bob, _) = app.a_user("bob", &[], Role::Customer).await;
    for path in
        [format!("/api/v1/users/{bob}"), format!("/api/v1/users/{}", Uuid::new_v4()), "/api/v1/users/not-a-uuid".into()]
    {
        let body = assert_problem(app.get(&path).bearer_auth(&ann_token).send().await.unwrap(), 403).await;
        assert_eq!(body["type"], "/problems/forbidden", "{path}");
    }
}

#[tokio::test]
async fn admins_get_404_for_unknown_or_malformed_ids() {
    let app = spawn_app().await;
    let admin = token(Uuid::new_v4(), Role::Admin);
    for path in [format!("/api/v1/users/{}", Uuid::new_v4()), "/api/v1/users/not-a-uuid".into()] {
        assert_problem(app.get(&path).bearer_auth(&admin).send().await.unwrap(), 404).await;
    }
    // A valid token for a user the read model does not hold (yet): their own profile is 404.
    let newcomer = Uuid::new_v4();
    let response = app
        .get(&format!("/api/v1/users/{newcomer}"))
        .bearer_auth(token(newcomer, Role::Customer))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404).await;
}
