//! What query-api may do: verify tokens with public keys (never sign one), and read the read
//! models through its database role (never the event store). Every other test of this crate
//! also runs as a member of `catalog_query`.

use crate::helpers::{spawn_app, spawn_app_with, token_signed_by, OTHER_SIGNING_KEY};
use domain::Role;
use test_support::http::{server_args, unreachable_database_url, OTHER_PUBLIC_KEY, TEST_PUBLIC_KEY, TEST_SIGNING_KEY};

/// Whether query-api builds with `args` (on an unreachable database, which building tolerates);
/// the error otherwise.
async fn build(args: &[&str]) -> Result<(), String> {
    use clap::Parser as _;
    let args = server_args("query-api", &unreachable_database_url(), args);
    let settings = query_api::Settings::try_parse_from(args).map_err(|e| e.to_string())?;
    let pool = service_runtime::database::pool(&settings.database).unwrap();
    let metrics = service_runtime::telemetry::init_metrics();
    query_api::Application::build(settings, pool, metrics).await.map(|_| ()).map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn query_api_takes_public_keys_only_and_refuses_a_private_key() {
    assert!(build(&[]).await.is_ok());
    let error = build(&[&format!("--token-verify-keys={TEST_SIGNING_KEY}")]).await.unwrap_err();
    assert!(error.contains("only public keys"), "{error}");
    let both = format!("--token-verify-keys={TEST_PUBLIC_KEY}{TEST_SIGNING_KEY}");
    assert!(build(&[&both]).await.is_err());
    assert!(build(&["--token-verify-keys=not a key"]).await.is_err());
}

#[tokio::test]
async fn without_keys_only_an_explicit_development_environment_falls_back_to_the_public_dev_key() {
    // server_args gives the test key and CATALOG_ENV=development; an empty value replaces them.
    let no_keys = "--token-verify-keys=";
    for environment in ["--environment=production", "--environment=staging", "--environment=Development"] {
        let error = build(&[no_keys, environment]).await.unwrap_err();
        assert!(error.contains("TOKEN_VERIFY_KEYS"), "{environment}: {error}");
    }
    assert!(build(&["--environment=development", no_keys]).await.is_ok());
    // The public development key itself is refused outside development.
    let dev = format!("--token-verify-keys={}", http_api::tokens::DEV_PUBLIC_KEY);
    assert!(build(&[&dev, "--environment=production"]).await.is_err());
}

#[tokio::test]
async fn two_keys_are_accepted_at_once_for_a_rotation() {
    let rotating = spawn_app_with(&[&format!("--token-verify-keys={TEST_PUBLIC_KEY}{OTHER_PUBLIC_KEY}")]).await;
    let (id, _) = rotating.a_user("ann", &[], Role::Customer).await;
    let path = format!("/api/v1/users/{id}");
    for key in [TEST_SIGNING_KEY, OTHER_SIGNING_KEY] {
        let (status, _) = rotating.read(&path, Some(&token_signed_by(key, id, Role::Customer))).await;
        assert_eq!(status, 200);
    }
    // After the rotation only the new key is left: the old key's tokens stop working.
    let rotated = spawn_app_with(&[&format!("--token-verify-keys={OTHER_PUBLIC_KEY}")]).await;
    let (id, _) = rotated.a_user("ann", &[], Role::Customer).await;
    let path = format!("/api/v1/users/{id}");
    assert_eq!(rotated.read(&path, Some(&token_signed_by(OTHER_SIGNING_KEY, id, Role::Customer))).await.0, 200);
    assert_eq!(rotated.read(&path, Some(&token_signed_by(TEST_SIGNING_KEY, id, Role::Customer))).await.0, 401);
}

/// The server's own connections are `catalog_query`'s: the event store, snapshots, sessions
/// and idempotency records are out of its reach, and it cannot write the read models.
#[tokio::test]
async fn the_query_role_reads_the_read_models_and_nothing_else() {
    let app = spawn_app().await;
    let product = app.a_product("Lamp", "19.99").await;
    let (status, body) = app.read(&format!("/api/v1/products/{product}"), None).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Lamp")));

    // A database of its own, as the app's is dropped with it: the grants are the migration's.
    let mut database = test_support::TestDatabase::new().await;
    let url = database.login_as("catalog_query").await;
    let as_query = sqlx::PgPool::connect(&url).await.unwrap();
    for table in ["products", "users", "categories", "product_history"] {
        sqlx::query(&format!("SELECT count(*) FROM {table}")).execute(&as_query).await.expect(table);
    }
    for statement in [
        "SELECT count(*) FROM events",
        "SELECT count(*) FROM snapshots",
        "SELECT count(*) FROM idempotency_keys",
        "SELECT count(*) FROM refresh_sessions",
        "SELECT count(*) FROM refresh_tokens",
        "SELECT count(*) FROM catalog_claims",
        "SELECT count(*) FROM publisher_checkpoints",
        "DELETE FROM products",
        "UPDATE users SET active = false",
        "INSERT INTO categories (id) VALUES (gen_random_uuid())",
        "CREATE TABLE sneaky (id int)",
    ] {
        let error = sqlx::query(statement).execute(&as_query).await.unwrap_err();
        let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }
}

/// A rebuild swaps in a new table: the roles keep their privileges on it.
#[tokio::test]
async fn a_rebuilt_read_model_keeps_its_grants() {
    let app = spawn_app().await;
    // In the event store (a rebuild folds events), not only in the read model.
    let product = uuid::Uuid::new_v4();
    event_store::CommandBus::new(app.pool.clone())
        .execute::<domain::Product>(
            &product.to_string(),
            || domain::ProductCommand::create_basic(product, "Lamp", None, "19.99".parse().unwrap(), "EUR"),
            event_store::EventMetadata::new("test"),
            true,
        )
        .await
        .unwrap();
    read_model::rebuild::rebuild::<read_model::products::Products>(&app.pool, |_| {}).await.unwrap();
    // The server reads as catalog_query, from the rebuilt table.
    let (status, body) = app.read(&format!("/api/v1/products/{product}"), None).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Lamp")));
    let grants: Vec<(String, String)> = sqlx::query_as(
        "SELECT grantee::text, privilege_type::text FROM information_schema.role_table_grants \
         WHERE table_name = 'products' AND grantee LIKE 'catalog\\_%' ORDER BY 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let expected = [
        ("catalog_projector", "DELETE"),
        ("catalog_projector", "INSERT"),
        ("catalog_projector", "SELECT"),
        ("catalog_projector", "UPDATE"),
        ("catalog_query", "SELECT"),
    ];
    assert_eq!(grants, expected.map(|(r, p)| (r.to_owned(), p.to_owned())));
}
