//! Every rejected request gets a problem response and appends nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, TestApp, OTHER_SIGNING_KEY, TEST_PUBLIC_KEY};

fn claims_for(app_admin: &str, exp: u64) -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"sub": app_admin, "role": "admin", "iss": "catalog", "iat": now, "exp": exp})
}

/// Decodes the admin id from a real token, to forge tokens for a real admin.
fn subject_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

async fn assert_rejected_without_write(app: &TestApp, request: reqwest::RequestBuilder, status: u16) {
    let before = app.event_count().await;
    assert_problem(request.send().await.unwrap(), status).await;
    assert_eq!(app.event_count().await, before, "a rejected request appended events");
}

#[tokio::test]
async fn malformed_wrongly_typed_and_oversized_bodies_are_rejected_without_a_write() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let products = || app.post("/api/v1/products").bearer_auth(&token);

    let json_ct = |b: reqwest::RequestBuilder| b.header("content-type", "application/json");
    assert_rejected_without_write(&app, json_ct(products()).body("{\"name\": \"x\", "), 400).await;
    assert_rejected_without_write(&app, json_ct(products()).body("[1, 2]"), 422).await;
    // serde reads a struct from an array of its fields too; a body must be an object.
    assert_rejected_without_write(&app, json_ct(products()).body(r#"["Lamp", null, "19.99"]"#), 422).await;
    assert_rejected_without_write(&app, json_ct(products()).body("\"Lamp\""), 422).await;
    let register = app.post("/api/v1/users").header("content-type", "application/json");
    assert_rejected_without_write(&app, register.body(r#"["arrays", "a@example.com", "long-password"]"#), 422).await;
    assert_rejected_without_write(&app, products().json(&json!({"name": "x", "price": "abc"})), 422).await;
    assert_rejected_without_write(&app, products().json(&json!({"name": "x", "price": 1.234})), 422).await;
    assert_rejected_without_write(&app, products().json(&json!({"name": 7, "price": 1})), 422).await;
    assert_rejected_without_write(&app, products().json(&json!({"price": 1})), 422).await;
    assert_rejected_without_write(&app, products().header("content-type", "text/plain").body("{}"), 415).await;
    assert_rejected_without_write(&app, products().body("{\"name\":\"x\",\"price\":1}"), 415).await;
    let huge = json!({"name": "x", "price": 1, "description": "d".repeat(70 * 1024)});
    assert_rejected_without_write(&app, products().json(&huge), 413).await;

    let id = app.a_product(&token).await;
    let patch = || app.patch(&format!("/api/v1/products/{id}")).bearer_auth(&token);
    assert_rejected_without_write(&app, patch().json(&json!({})), 422).await;
    assert_rejected_without_write(&app, patch().json(&json!({"colour": "red"})), 422).await;
    assert_rejected_without_write(&app, patch().json(&json!({"price": 0})), 422).await;
    assert_rejected_without_write(&app, json_ct(patch()).body("nope"), 400).await;
    assert_rejected_without_write(&app, json_ct(patch()).body(r#"["New name"]"#), 422).await;
}

#[tokio::test]
async fn forged_tokens_are_401_and_write_nothing() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let admin_id = subject_of(&token);
    let now = jsonwebtoken::get_current_timestamp();
    let body = json!({"name": "forged", "price": 1});

    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let none_payload = URL_SAFE_NO_PAD.encode(claims_for(&admin_id, now + 600).to_string());
    let alg_none = format!("{none_header}.{none_payload}.");

    // The server's key id, from a real token: forgeries name it to look genuine.
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let header = |alg| Header { kid: Some(kid.clone()), ..Header::new(alg) };
    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let alg_none_with_kid = format!("{none_header}.{none_payload}.");

    // Signed by a key the server does not know, under the server's kid and under its own.
    let other_key = EncodingKey::from_ed_pem(OTHER_SIGNING_KEY.as_bytes()).unwrap();
    let wrong_key =
        jsonwebtoken::encode(&header(Algorithm::EdDSA), &claims_for(&admin_id, now + 600), &other_key).unwrap();
    let unknown_key =
        test_support::http::token_signed_by(OTHER_SIGNING_KEY, admin_id.parse().unwrap(), domain::Role::Admin);
    let test_key = EncodingKey::from_ed_pem(test_support::http::TEST_SIGNING_KEY.as_bytes()).unwrap();
    let expired =
        jsonwebtoken::encode(&header(Algorithm::EdDSA), &claims_for(&admin_id, now - 120), &test_key).unwrap();
    // HS256 keyed with the public key (algorithm confusion), and with the PEM text of it.
    let spki = base64::engine::general_purpose::STANDARD.decode(TEST_PUBLIC_KEY.lines().nth(1).unwrap()).unwrap();
    let hs256_public_raw = jsonwebtoken::encode(
        &header(Algorithm::HS256),
        &claims_for(&admin_id, now + 600),
        &EncodingKey::from_secret(&spki[12..]),
    )
    .unwrap();
    let hs256_public_pem = jsonwebtoken::encode(
        &header(Algorithm::HS256),
        &claims_for(&admin_id, now + 600),
        &EncodingKey::from_secret(TEST_PUBLIC_KEY.as_bytes()),
    )
    .unwrap();
    let mut tampered = token.clone();
    tampered.push('x');

    for forged in [
        alg_none,
        alg_none_with_kid,
        wrong_key,
        unknown_key,
        expired,
        hs256_public_raw,
        hs256_public_pem,
        tampered,
        "garbage".into(),
    ] {
        let request = app.post("/api/v1/products").bearer_auth(&forged).json(&body);
        assert_rejected_without_write(&app, request, 401).await;
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = spawn_app().await;
    assert_problem(app.get("/api/v1/nothing-here").send().await.unwrap(), 404).await;
    assert_problem(app.get("/api/v1/products").send().await.unwrap(), 405).await;
}
