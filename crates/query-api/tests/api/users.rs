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

#[tokio::test]
async fn me_is_the_callers_own_profile() {
    let app = spawn_app().await;
    let (ann, ann_token) = app.a_user("ann", &[], Role::Customer).await;
    app.a_user("bob", &[], Role::Customer).await;
    let response = app.get("/api/v1/users/me").bearer_auth(&ann_token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], ann.to_string());
    assert_eq!(body["username"], "ann");
    let revalidated =
        app.get("/api/v1/users/me").bearer_auth(&ann_token).header("if-none-match", "\"1\"").send().await.unwrap();
    assert_eq!(revalidated.status(), 304);

    assert_problem(app.get("/api/v1/users/me").send().await.unwrap(), 401).await;
    let newcomer = token(Uuid::new_v4(), Role::Customer);
    assert_problem(app.get("/api/v1/users/me").bearer_auth(newcomer).send().await.unwrap(), 404).await;
}

#[tokio::test]
async fn admins_list_users_by_prefix_in_pages() {
    let app = spawn_app().await;
    let (_, admin) = app.a_user("root", &[Role::Admin], Role::Admin).await;
    for name in ["alice", "alfred", "albert", "bob", "al_x"] {
        app.a_user(name, &[], Role::Customer).await;
    }
    let list = |query: String| {
        let admin = admin.clone();
        let app = &app;
        async move {
            let response = app.get(&format!("/api/v1/users{query}")).bearer_auth(&admin).send().await.unwrap();
            assert_eq!(response.status(), 200, "{query}");
            response.json::<Value>().await.unwrap()
        }
    };
    let names = |page: &Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()).collect()
    };

    let everyone = list(String::new()).await;
    assert_eq!(names(&everyone), ["al_x", "albert", "alfred", "alice", "bob", "root"]);
    assert!(everyone["next_cursor"].is_null());
    assert!(!everyone.to_string().contains("argon2"), "no credential material");

    // `_` is matched as itself, not as a wildcard; the prefix is case-insensitive and also
    // matches emails.
    assert_eq!(names(&list("?q=al_".into()).await), ["al_x"]);
    assert_eq!(names(&list("?q=ALF".into()).await), ["alfred"]);
    assert_eq!(names(&list("?q=bob%40example".into()).await), ["bob"]);

    let first = list("?q=al&limit=2".into()).await;
    assert_eq!(names(&first), ["al_x", "albert"]);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = list(format!("?q=al&limit=2&cursor={cursor}")).await;
    assert_eq!(names(&second), ["alfred", "alice"]);
    assert!(second["next_cursor"].is_null(), "nothing after the last match");
    let third = list("?limit=5".into()).await;
    let cursor = third["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(names(&list(format!("?limit=5&cursor={cursor}")).await), ["root"]);
}

#[tokio::test]
async fn only_admins_list_users_and_bad_parameters_are_400() {
    let app = spawn_app().await;
    let (_, customer) = app.a_user("ann", &[], Role::Customer).await;
    let admin = token(Uuid::new_v4(), Role::Admin);
    assert_problem(app.get("/api/v1/users").send().await.unwrap(), 401).await;
    assert_problem(app.get("/api/v1/users").bearer_auth(&customer).send().await.unwrap(), 403).await;
    // Authorisation comes first: a customer learns nothing from a bad parameter either.
    assert_problem(app.get("/api/v1/users?limit=0").bearer_auth(&customer).send().await.unwrap(), 403).await;
    let long = "a".repeat(255);
    // A cursor this API never returned: `["a\u0000", <uuid>]`, base64url.
    let nul_cursor = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&("a\0", Uuid::new_v4())).unwrap(),
    );
    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?cursor=not-a-cursor",
        &format!("?cursor={nul_cursor}"),
        "?q=a%00",
        &format!("?q={long}"),
    ] {
        let response = app.get(&format!("/api/v1/users{query}")).bearer_auth(&admin).send().await.unwrap();
        assert_problem(response, 400).await;
    }
}
