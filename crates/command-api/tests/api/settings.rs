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

async fn start_up_error(extra: &[&str]) -> String {
    let args = server_args("command-api", &unreachable_database_url(), extra);
    let settings = Settings::try_parse_from(args).unwrap();
    let pool = service_runtime::database::pool(&settings.database).unwrap();
    let metrics = service_runtime::telemetry::init_metrics();
    Application::build(settings, pool, metrics).await.err().expect("start-up fails").to_string()
}

/// Outside development the idempotency fingerprint key must be a real one: missing, short or
/// the deployment example's placeholder, command-api does not start.
#[tokio::test]
async fn without_a_real_idempotency_secret_production_does_not_start() {
    let production = ["--environment", "production"];
    assert!(start_up_error(&production).await.contains("IDEMPOTENCY_KEY_SECRET is required"));
    let short = [&production[..], &["--idempotency-key-secret", "short"]].concat();
    assert!(start_up_error(&short).await.contains("at least 32 bytes"));
    let example = [&production[..], &["--idempotency-key-secret", "REPLACE-ME-with-at-least-32-random-bytes"]].concat();
    assert!(start_up_error(&example).await.contains("example value"));
}

#[tokio::test]
async fn an_unreadable_trusted_proxy_does_not_start() {
    let message = start_up_error(&["--trusted-proxies", "10.0.0.0/8,ingress.internal"]).await;
    assert!(message.contains("TRUSTED_PROXIES") && message.contains("ingress.internal"), "{message}");
}
