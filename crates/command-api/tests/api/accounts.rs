//! Users changing their own account, and admins changing roles and deactivating accounts.

use domain::{Role, User};
use event_store::CommandBus;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, error_fields, spawn_app, TestApp, ADMIN_PASSWORD};

async fn load_user(app: &TestApp, id: uuid::Uuid) -> User {
    CommandBus::new(app.pool.clone()).load::<User>(&id.to_string()).await.unwrap()
}

#[tokio::test]
async fn a_user_changes_their_own_email() {
    let app = spawn_app().await;
    let id = app.create_user("amy", "amy-password", &[]).await;
    let token = app.token_for("amy", "amy-password").await;
    let response = app
        .patch("/api/v1/users/me")
        .bearer_auth(&token)
        .json(&json!({"email": "Amy@Example.ORG"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"id": id, "version": 2}));
    assert_eq!(load_user(&app, id).await.email, "amy@example.org");

    let invalid =
        app.patch("/api/v1/users/me").bearer_auth(&token).json(&json!({"email": "not-an-email"})).send().await.unwrap();
    assert_eq!(error_fields(&assert_problem(invalid, 422).await), ["email"]);
    let anonymous = app.patch("/api/v1/users/me").json(&json!({"email": "x@example.com"})).send().await.unwrap();
    assert_problem(anonymous, 401).await;
    let extra = app
        .patch("/api/v1/users/me")
        .bearer_auth(&token)
        .json(&json!({"email": "x@example.com", "roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_problem(extra, 422).await;
    assert_eq!(load_user(&app, id).await.version, 2, "nothing written by the refused requests");
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_then_only_the_new_one_logs_in() {
    let app = spawn_app().await;
    let id = app.create_user("ben", "ben-password-1", &[]).await;
    let token = app.token_for("ben", "ben-password-1").await;
    let change = |current: &str, new: &str| {
        app.post("/api/v1/users/me/password")
            .bearer_auth(&token)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let wrong = change("not-my-password", "ben-password-2").await.unwrap();
    assert_eq!(error_fields(&assert_problem(wrong, 422).await), ["current_password"]);
    let short = change("ben-password-1", "short").await.unwrap();
    assert_eq!(error_fields(&assert_problem(short, 422).await), ["new_password"]);
    assert_eq!(load_user(&app, id).await.version, 1);

    assert_eq!(change("ben-password-1", "ben-password-2").await.unwrap().status(), 204);
    assert_problem(app.login("ben", "ben-password-1").await, 401).await;
    assert_eq!(app.login("ben", "ben-password-2").await.status(), 200);
    let stored = load_user(&app, id).await.password_hash;
    assert!(stored.starts_with("$argon2id$") && !stored.contains("ben-password-2"));

    let anonymous = app
        .post("/api/v1/users/me/password")
        .json(&json!({"current_password": "ben-password-2", "new_password": "ben-password-3"}))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401).await;
}

/// A stolen token is not a fast way to guess the account's password: wrong current passwords
/// count against the login limits.
#[tokio::test]
async fn guessing_the_current_password_is_throttled() {
    let app = crate::helpers::spawn_app_with(&["--login-attempts-per-username", "3"]).await;
    app.create_user("cat", "cat-password-1", &[]).await;
    let token = app.token_for("cat", "cat-password-1").await;
    let guess = || {
        app.post("/api/v1/users/me/password")
            .bearer_auth(&token)
            .json(&json!({"current_password": "a-guess-123", "new_password": "cat-password-2"}))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(guess().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn admins_grant_and_revoke_roles() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let dan = app.create_user("dan", "dan-password", &[]).await;
    let role_path = |role: &str| format!("/api/v1/users/{dan}/roles/{role}");

    let granted = app.request(Method::PUT, &role_path("admin")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(granted.status(), 204);
    assert!(load_user(&app, dan).await.roles.contains(&Role::Admin));
    // Granting again changes nothing.
    let again = app.request(Method::PUT, &role_path("admin")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(again.status(), 204);
    assert_eq!(load_user(&app, dan).await.version, 2);
    // Dan's next token is an admin's.
    let dan_token = app.token_for("dan", "dan-password").await;
    let product = app.create_product(&dan_token, json!({"name": "Lamp", "price": "1"})).await;
    assert_eq!(product.status(), 201);

    let revoked = app.delete(&role_path("admin")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    assert!(!load_user(&app, dan).await.roles.contains(&Role::Admin));
}

#[tokio::test]
async fn who_may_change_roles_and_deactivate() {
    let app = spawn_app().await;
    let admin_id = app.create_user("admin", ADMIN_PASSWORD, &[Role::Admin]).await;
    let admin = app.token_for("admin", ADMIN_PASSWORD).await;
    let eve = app.create_user("eve", "eve-password", &[]).await;
    let eve_token = app.token_for("eve", "eve-password").await;
    let grant = format!("/api/v1/users/{eve}/roles/admin");
    let deactivate = format!("/api/v1/users/{eve}/deactivate");

    assert_problem(app.request(Method::PUT, &grant).send().await.unwrap(), 401).await;
    // A customer cannot make themselves an admin, nor deactivate anyone.
    assert_problem(app.request(Method::PUT, &grant).bearer_auth(&eve_token).send().await.unwrap(), 403).await;
    assert_problem(app.post(&deactivate).bearer_auth(&eve_token).send().await.unwrap(), 403).await;
    assert_eq!(load_user(&app, eve).await.version, 1);

    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/api/v1/users/{unknown}/roles/admin"),
        "/api/v1/users/not-a-uuid/roles/admin".to_owned(),
        format!("/api/v1/users/{eve}/roles/superuser"),
    ] {
        assert_problem(app.request(Method::PUT, &path).bearer_auth(&admin).send().await.unwrap(), 404).await;
    }
    assert_problem(
        app.post(&format!("/api/v1/users/{unknown}/deactivate")).bearer_auth(&admin).send().await.unwrap(),
        404,
    )
    .await;

    // An admin cannot demote or deactivate themselves (so the last admin cannot lock everyone out).
    let own_role = format!("/api/v1/users/{admin_id}/roles/admin");
    assert_problem(app.delete(&own_role).bearer_auth(&admin).send().await.unwrap(), 409).await;
    let own_deactivation = format!("/api/v1/users/{admin_id}/deactivate");
    assert_problem(app.post(&own_deactivation).bearer_auth(&admin).send().await.unwrap(), 409).await;
}

#[tokio::test]
async fn a_deactivated_user_cannot_log_in_or_change_their_account() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let fay = app.create_user("fay", "fay-password", &[]).await;
    let fay_token = app.token_for("fay", "fay-password").await;

    let deactivate = format!("/api/v1/users/{fay}/deactivate");
    assert_eq!(app.post(&deactivate).bearer_auth(&admin).send().await.unwrap().status(), 204);
    assert_eq!(app.post(&deactivate).bearer_auth(&admin).send().await.unwrap().status(), 204, "again: no change");
    assert!(!load_user(&app, fay).await.active);

    assert_problem(app.login("fay", "fay-password").await, 401).await;
    let change = app
        .patch("/api/v1/users/me")
        .bearer_auth(&fay_token)
        .json(&json!({"email": "f@example.com"}))
        .send()
        .await
        .unwrap();
    assert_problem(change, 401).await;
    let grant = app.request(Method::PUT, &format!("/api/v1/users/{fay}/roles/admin")).bearer_auth(&admin).send().await;
    assert_problem(grant.unwrap(), 409).await;
}
