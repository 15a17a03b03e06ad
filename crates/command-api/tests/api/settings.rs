//! Start-up settings that change what the API accepts.

use clap::Parser;
use command_api::{Application, Settings};
use test_support::http::{server_args, unreachable_database_url};

/// An invalid `CATALOG_DEFAULT_CURRENCY` stops the service at start-up, saying why, instead of
/// pricing products in it. (Refused before it becomes the process's default currency, so this
/// test leaves nothing behind for others in the same process.)
#[tokio::test]
async fn an_invalid_default_currency_fails_start_up_with_a_clear_message() {
    for (code, reason) in [
        ("EURO", "three upper-case letters"),
        ("ABC", "not an ISO 4217"),
        ("XAU", "not a currency products can be priced in"),
    ] {
        let args = server_args("command-api", &unreachable_database_url(), &["--default-currency", code]);
        let settings = Settings::try_parse_from(args).unwrap();
        let pool = service_runtime::database::pool(&settings.database).unwrap();
        let metrics = service_runtime::telemetry::init_metrics();
        let error = Application::build(settings, pool, metrics).await.err().expect("start-up fails");
        let message = error.to_string();
        assert!(message.starts_with(&format!("CATALOG_DEFAULT_CURRENCY={code:?}")), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}

/// command-api's start-up with `extra` settings on top of the test ones (test key,
/// `CATALOG_ENV=development`): the error's text if it is refused.
async fn build(extra: &[&str]) -> Result<(), String> {
    let args = server_args("command-api", &unreachable_database_url(), extra);
    let settings = Settings::try_parse_from(args).map_err(|e| e.to_string())?;
    let pool = service_runtime::database::pool(&settings.database).unwrap();
    let metrics = service_runtime::telemetry::init_metrics();
    Application::build(settings, pool, metrics).await.map(|_| ()).map_err(|e| format!("{e:#}"))
}

/// Fail closed: the public development key signs tokens only with `CATALOG_ENV=development`
/// set explicitly; any other value needs a real key, and the example key of the deployment
/// files is refused everywhere.
#[tokio::test]
async fn the_public_development_key_is_used_only_with_catalog_env_development() {
    let no_key = "--token-signing-key=";
    for environment in ["--environment=production", "--environment=staging", "--environment=dev"] {
        let error = build(&[no_key, environment]).await.unwrap_err();
        assert!(error.contains("TOKEN_SIGNING_KEY"), "{environment}: {error}");
        let dev_key = format!("--token-signing-key={}", http_api::tokens::DEV_SIGNING_KEY);
        let error = build(&[&dev_key, environment]).await.unwrap_err();
        assert!(error.contains("development"), "{environment}: {error}");
    }
    assert!(build(&[no_key, "--environment=development"]).await.is_ok());
    let real_idempotency_secret = "--idempotency-key-secret=a-test-secret-of-more-than-32-bytes";
    assert!(build(&["--environment=production", real_idempotency_secret]).await.is_ok(), "a real key runs anywhere");

    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/k8s/secret.example.yaml")).unwrap();
    let pem: String = example
        .lines()
        .skip_while(|line| !line.contains("-----BEGIN PRIVATE KEY-----"))
        .take_while(|line| !line.contains("-----END PRIVATE KEY-----"))
        .chain(["-----END PRIVATE KEY-----"])
        .map(|line| format!("{}\n", line.trim()))
        .collect();
    for environment in ["--environment=production", "--environment=development"] {
        let error = build(&[&format!("--token-signing-key={pem}"), environment]).await.unwrap_err();
        assert!(error.contains("example"), "{error}");
    }
}

/// Outside development the idempotency fingerprint key must be a real one: missing, short or
/// the deployment example's placeholder, command-api does not start.
#[tokio::test]
async fn without_a_real_idempotency_secret_production_does_not_start() {
    let production = ["--environment", "production"];
    assert!(build(&production).await.unwrap_err().contains("IDEMPOTENCY_KEY_SECRET is required"));
    let short = [&production[..], &["--idempotency-key-secret", "short"]].concat();
    assert!(build(&short).await.unwrap_err().contains("at least 32 bytes"));
    let example = [&production[..], &["--idempotency-key-secret", "REPLACE-ME-with-at-least-32-random-bytes"]].concat();
    assert!(build(&example).await.unwrap_err().contains("example value"));
}

#[tokio::test]
async fn an_unreadable_trusted_proxy_does_not_start() {
    let message = build(&["--trusted-proxies", "10.0.0.0/8,ingress.internal"]).await.unwrap_err();
    assert!(message.contains("TRUSTED_PROXIES") && message.contains("ingress.internal"), "{message}");
}
