use clap::Parser;
use projector::Settings;
use service_runtime::{database, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let tracing = telemetry::init_tracing("projector", settings.log.log_format);
    let metrics = telemetry::init_metrics();
    let pool = database::pool(&settings.database)?;
    let result = projector::run(settings, pool, metrics, shutdown::signal()).await;
    tracing.shutdown();
    result
}
