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
