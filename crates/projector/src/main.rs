//! `projector`: publishes events from the event store to Kafka and projects them into read models.
//!
//! So far it serves only its operational endpoints on `PROJECTOR_ADDR`; the publish and project
//! loops arrive with the event pipeline work. `--role` is accepted now so deployments need not change.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use service_runtime::operations::{self, ReadinessCheck};
use service_runtime::settings::{DatabaseSettings, LogSettings};
use service_runtime::{database, shutdown, telemetry};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    Publish,
    Project,
    All,
}

#[derive(Parser)]
#[command(name = "projector", about = "Catalog's event publisher and read-model projector", version)]
struct Settings {
    /// Address for /health, /ready and /metrics.
    #[arg(long, env = "PROJECTOR_ADDR", default_value = "127.0.0.1:8082")]
    addr: SocketAddr,
    /// Which loops to run in this process.
    #[arg(long, env = "PROJECTOR_ROLE", value_enum, default_value = "all")]
    role: Role,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    log: LogSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    telemetry::init_logging(settings.log.log_format);
    let metrics = telemetry::init_metrics();
    tracing::warn!(role = ?settings.role, brokers = %settings.kafka_brokers, "publish/project loops are not implemented yet");
    let pool = database::pool(&settings.database)?;
    let router = operations::router(vec![ReadinessCheck::postgres(pool)], metrics);
    operations::serve(settings.addr, router, shutdown::signal()).await
}
