//! Refresh-token sessions: rotation, reuse, logout, revocation by credential changes, caps and
//! purging; and the token keys command-api publishes.

use std::time::Duration;

use command_api::sessions::Sessions;
use domain::{Role, User, UserCommand};
use event_store::{CommandBus, EventMetadata};
use reqwest::Response;
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

use crate::helpers::{
    assert_problem, spawn_app, spawn_app_with, token_signed_by, TestApp, OTHER_PUBLIC_KEY, OTHER_SIGNING_KEY,
    TEST_PUBLIC_KEY,
};

const PASSWORD: &str = "sam-password-1";

/// Logs `sam` in: the login's body (`access_token`, `refresh_token`, ...).
async fn login(app: &TestApp) -> Value {
    let response = app.login("sam", PASSWORD).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Response {
    app.post("/api/v1/auth/refresh").json(&json!({"refresh_token": refresh_token})).send().await.unwrap()
}

async fn refreshed(app: &TestApp, refresh_token: &str) -> Value {
    let response = refresh(app, refresh_token).await;
    assert_eq!(response.status(), 200, "refresh refused");
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

fn refresh_token(body: &Value) -> &str {
    body["refresh_token"].as_str().unwrap()
}

fn claims(access_token: &str) -> Value {
    jsonwebtoken::decode::<Value>(
        access_token,
        &jsonwebtoken::DecodingKey::from_ed_pem(TEST_PUBLIC_KEY.as_bytes()).unwrap(),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA),
    )
    .unwrap()
    .claims
}

#[tokio::test]
async fn a_refresh_rotates_the_token_and_reusing_a_rotated_one_ends_the_session() {
    let app = spawn_app().await;
    let id = app.create_user("sam", PASSWORD, &[]).await;
    let first = login(&app).await;
    assert_eq!(first["expires_in"], 300, "access tokens last 5 minutes by default");
    let r1 = refresh_token(&first);

    let second = refreshed(&app, r1).await;
    let r2 = refresh_token(&second);
    assert_ne!(r1, r2);
    assert_eq!(claims(second["access_token"].as_str().unwrap())["sub"], id.to_string());
    let third = refreshed(&app, r2).await;
    let r3 = refresh_token(&third).to_owned();

    // r1 again: someone else holds a copy. The whole session ends, r3 included.
    assert_problem(refresh(&app, r1).await, 401).await;
    assert_problem(refresh(&app, &r3).await, 401).await;
    // Another session of the same user is untouched.
    let other = login(&app).await;
    refreshed(&app, refresh_token(&other)).await;
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    app.create_user("sam", PASSWORD, &[]).await;
    let body = login(&app).await;
    let token = refresh_token(&body);
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT token_hash FROM refresh_tokens").fetch_all(&app.pool).await.unwrap();
    assert_eq!(stored, vec![sha2::Sha256::digest(token.as_bytes()).to_vec()]);
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM refresh_tokens t").fetch_one(&app.pool).await.unwrap();
    assert!(!dump.contains(token));
}

#[tokio::test]
async fn logout_ends_the_session_and_is_always_204() {
    let app = spawn_app().await;
    app.create_user("sam", PASSWORD, &[]).await;
    let body = login(&app).await;
    let r1 = refresh_token(&body).to_owned();
    let r2 = refresh_token(&refreshed(&app, &r1).await).to_owned();

    // Logging out with the rotated token ends the session too (it names the same session).
    let response = app.post("/api/v1/auth/logout").json(&json!({"refresh_token": r1})).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_problem(refresh(&app, &r2).await, 401).await;
    for unknown in [r2.as_str(), "x", &"A".repeat(43)] {
        let response = app.post("/api/v1/auth/logout").json(&json!({"refresh_token": unknown})).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_sessions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sessions, 0);
}

#[tokio::test]
async fn bad_refresh_requests_are_problems() {
    let app = spawn_app().await;
    for token in ["", "garbage", &"A".repeat(43), &"A".repeat(5000)] {
        assert_problem(refresh(&app, token).await, 401).await;
    }
    let missing = app.post("/api/v1/auth/refresh").json(&json!({})).send().await.unwrap();
    assert_problem(missing, 422).await;
    let wrong_type = app.post("/api/v1/auth/refresh").json(&json!({"refresh_token": 7})).send().await.unwrap();
    assert_problem(wrong_type, 422).await;
}

/// The User commands the account endpoints issue, sent straight to the event store: each one
/// that changes credentials ends the sessions started before it; an email change does not.
#[tokio::test]
async fn password_role_and_activation_changes_end_the_sessions_started_before() {
    let app = spawn_app().await;
    let id = app.create_user("sam", PASSWORD, &[]).await;
    let bus = CommandBus::new(app.pool.clone());
    let change = |command: UserCommand| {
        let bus = bus.clone();
        async move {
            bus.execute::<User>(&id.to_string(), move || command.clone(), EventMetadata::new("test"), true)
                .await
                .unwrap();
        }
    };

    let session = login(&app).await;
    change(UserCommand::ChangeEmail { email: "sam@elsewhere.example".into() }).await;
    let session = refreshed(&app, refresh_token(&session)).await;

    let changes = [
        UserCommand::ChangePassword { password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into() },
        UserCommand::GrantRole { role: Role::Admin },
        UserCommand::RevokeRole { role: Role::Admin },
    ];
    let mut current = refresh_token(&session).to_owned();
    for command in changes {
        // A session started now survives until the change below.
        change(command.clone()).await;
        assert_problem(refresh(&app, &current).await, 401).await;
        current = start_session_directly(&app, id).await;
    }
    change(UserCommand::Deactivate).await;
    assert_problem(refresh(&app, &current).await, 401).await;
}

/// A session for user `id` as of now, started as a login would (the password changed above, so
/// logging in over HTTP would need the new one).
async fn start_session_directly(app: &TestApp, id: Uuid) -> String {
    let user = CommandBus::new(app.pool.clone()).load::<User>(&id.to_string()).await.unwrap();
    let sessions = Sessions::new(app.pool.clone(), Duration::from_secs(3600), 10);
    let token = sessions.start(&user).await.unwrap();
    let body = refreshed(app, &token).await;
    refresh_token(&body).to_owned()
}

#[tokio::test]
async fn a_user_holds_at_most_the_configured_sessions_and_the_oldest_ends_first() {
    let app = spawn_app_with(&["--refresh-sessions-per-user", "2"]).await;
    app.create_user("sam", PASSWORD, &[]).await;
    let oldest = login(&app).await;
    let middle = login(&app).await;
    let newest = login(&app).await;
    assert_problem(refresh(&app, refresh_token(&oldest)).await, 401).await;
    refreshed(&app, refresh_token(&middle)).await;
    refreshed(&app, refresh_token(&newest)).await;
}

#[tokio::test]
async fn expired_sessions_are_refused_and_purged() {
    let app = spawn_app().await;
    app.create_user("sam", PASSWORD, &[]).await;
    let expired = login(&app).await;
    let live = login(&app).await;
    sqlx::query(
        "UPDATE refresh_sessions SET expires_at = now() - interval '1 second' WHERE id = \
         (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(sha2::Sha256::digest(refresh_token(&expired).as_bytes()).to_vec())
    .execute(&app.pool)
    .await
    .unwrap();
    assert_problem(refresh(&app, refresh_token(&expired)).await, 401).await;

    let other = login(&app).await;
    sqlx::query(
        "UPDATE refresh_sessions SET expires_at = now() - interval '1 second' WHERE id = \
                 (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(sha2::Sha256::digest(refresh_token(&other).as_bytes()).to_vec())
    .execute(&app.pool)
    .await
    .unwrap();
    let sessions = Sessions::new(app.pool.clone(), Duration::from_secs(3600), 10);
    assert_eq!(sessions.purge_expired().await.unwrap(), 1);
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens").fetch_one(&app.pool).await.unwrap();
    assert_eq!(tokens, 1, "only the live session's token is left");
    refreshed(&app, refresh_token(&live)).await;
}

#[tokio::test]
async fn the_published_keys_are_public_and_a_rotation_accepts_both() {
    let app = spawn_app().await;
    let jwks: Value = app.get("/.well-known/jwks.json").send().await.unwrap().json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert!(keys[0].get("d").is_none(), "no private part");
    let admin = app.admin_token().await;
    assert_eq!(jsonwebtoken::decode_header(&admin).unwrap().kid.unwrap(), keys[0]["kid"].as_str().unwrap());
    // Signed by a key command-api does not know: refused.
    let foreign = token_signed_by(OTHER_SIGNING_KEY, Uuid::new_v4(), Role::Admin);
    let response = app.create_product(&foreign, json!({"name": "Lamp", "price": "1.00"})).await;
    assert_problem(response, 401).await;

    // During a rotation command-api signs with the new key and still accepts the old one.
    let rotating = spawn_app_with(&[&format!("--token-verify-keys={OTHER_PUBLIC_KEY}")]).await;
    let jwks: Value = rotating.get("/.well-known/jwks.json").send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let response = rotating.create_product(&foreign, json!({"name": "Lamp", "price": "1.00"})).await;
    assert_eq!(response.status(), 201);
}
