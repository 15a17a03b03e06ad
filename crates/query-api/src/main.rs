use clap::Parser;
use query_api::{Application, Settings};
use service_runtime::{database, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let tracing = telemetry::init_tracing("query-api", settings.log.log_format);
    let metrics = telemetry::init_metrics();
    let pool = database::pool(&settings.database)?;
    let result = Application::build(settings, pool, metrics).await?.run(shutdown::signal()).await;
    tracing.shutdown();
    result
}
