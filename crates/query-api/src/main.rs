//! `query-api`: Catalog's read REST API.
//!
//! So far it serves only its operational endpoints (`/health`, `/ready`, `/metrics`); the
//! product and user read endpoints arrive with the read models (event pipeline work).

use std::net::SocketAddr;

use clap::Parser;
use service_runtime::operations::{self, ReadinessCheck};
use service_runtime::settings::{DatabaseSettings, LogSettings};
use service_runtime::{database, shutdown, telemetry};

#[derive(Parser)]
#[command(name = "query-api", about = "Catalog's read REST API", version)]
struct Settings {
    /// Address to listen on.
    #[arg(long, env = "QUERY_API_ADDR", default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
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
    let pool = database::pool(&settings.database)?;
    let router = operations::router(vec![ReadinessCheck::postgres(pool)], metrics);
    operations::serve(settings.addr, router, shutdown::signal()).await
}
