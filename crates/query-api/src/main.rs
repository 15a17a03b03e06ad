use clap::Parser;
use query_api::{Application, Settings};
use service_runtime::{database, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    telemetry::init_logging(settings.log.log_format);
    let metrics = telemetry::init_metrics();
    let pool = database::pool(&settings.database)?;
    Application::build(settings, pool, metrics).await?.run(shutdown::signal()).await
}
