//! `catalogctl`: the operator's tool for a running Catalog.
//!
//! Every subcommand is safe to run while the services serve traffic. Exit codes: 0 success,
//! 1 failure (or, for `verify`, differences found), 2 bad arguments.
//!
//! # Layout
//! - [`users`]: `user create` (bootstrap an admin).
//! - [`import`]: `import FILE` (products from NDJSON or CSV, upserted by SKU).
//! - [`events`]: `events` (JSON lines) and `replay` (republish to Kafka).
//! - [`read_models`]: `rebuild` (shadow tables, atomic swap, progress bar) and `verify`.
//! - [`status`]: where the pipeline stands.
//! - [`dead_letters`]: `dlq list`, `dlq retry` and `dlq discard` (parked per aggregate).

mod dead_letters;
mod events;
mod import;
mod read_models;
mod status;
mod users;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use domain::Role;
use service_runtime::kafka::KafkaSettings;
use service_runtime::settings::{DatabaseSettings, LogSettings};
use service_runtime::{database, telemetry};
use sqlx::PgPool;

#[derive(Parser)]
#[command(name = "catalogctl", about = "Operate a Catalog deployment", version)]
struct Cli {
    #[command(flatten)]
    database: DatabaseSettings,

    #[command(flatten)]
    kafka: KafkaSettings,

    #[command(flatten)]
    currency: event_store::CurrencySettings,

    /// The projector's consumer group (for `status`).
    #[arg(long, env = "PROJECTOR_GROUP", default_value = "catalog-projector")]
    group: String,

    #[command(flatten)]
    log: LogSettings,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending schema migrations (safe to run repeatedly and concurrently).
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Print events as JSON lines: one aggregate's stream, or a position range.
    Events(events::EventsArgs),
    /// Republish events to Kafka with their original headers. Replaying into the live topic
    /// changes no read model (the projector skips what it has applied).
    Replay(events::ReplayArgs),
    /// Rebuild read models from the event store into shadow tables and swap them in
    /// atomically; the live tables keep serving throughout.
    Rebuild {
        #[arg(value_enum)]
        target: Target,
    },
    /// Compare the read models with a fold of the event store; print each difference as a
    /// JSON line and exit 1 if there is any.
    Verify {
        /// How long a difference may take to resolve itself (pipeline lag) before it counts.
        #[arg(long, default_value_t = 10)]
        settle_seconds: u64,
    },
    /// Event store head, publisher position and lag, consumer lag per partition, dead letters,
    /// read-model row counts.
    Status {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Import products from an NDJSON or CSV file, upserted by SKU (as `POST
    /// /api/v1/products/import`, without its line limit); failed lines go to a report file and
    /// make the exit code 1.
    Import(import::ImportArgs),
    /// Dead letters: events the projector could not apply, parked per aggregate with the
    /// events of that aggregate that came after them.
    #[command(subcommand)]
    Dlq(dead_letters::DlqCommand),
}

/// Which read models a rebuild covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Products,
    /// Every product event as a row (history pages and time travel).
    History,
    Categories,
    Users,
    Reservations,
    All,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let tracing = telemetry::init_tracing("catalogctl", cli.log.log_format);
    let code = match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    tracing.shutdown();
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let default_currency = cli.currency.apply().map_err(anyhow::Error::msg)?;
    let pool = database::pool(&cli.database)?;
    database::ping(&pool).await.map_err(|e| anyhow::anyhow!("cannot reach Postgres: {e}"))?;
    match cli.command {
        Command::Migrate => {
            database::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::User(command) => users::run(&pool, command).await?,
        Command::Events(args) => events::print(&pool, args).await?,
        Command::Replay(args) => events::replay(&pool, &cli.kafka, args).await?,
        Command::Rebuild { target } => read_models::rebuild(&pool, target).await?,
        Command::Verify { settle_seconds } => {
            return read_models::verify(&pool, Duration::from_secs(settle_seconds)).await;
        }
        Command::Status { json } => status::print(&pool, &cli.kafka, &cli.group, json).await?,
        Command::Dlq(command) => {
            if !dead_letters::run(&pool, command).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Import(args) => return import::run(&pool, default_currency, args).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails with a clear message unless the brokers answer within a few seconds.
async fn check_broker(kafka: &KafkaSettings) -> anyhow::Result<rdkafka::producer::FutureProducer> {
    let producer = kafka.producer("catalogctl")?;
    service_runtime::kafka::ping(&producer, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach Kafka at {}: {e}", kafka.kafka_brokers))?;
    Ok(producer)
}

fn parse_role(raw: &str) -> Result<Role, String> {
    raw.parse().map_err(|e: domain::FieldViolation| e.message)
}

/// Row counts by table, for `status` and the rebuild summary.
async fn row_count(pool: &PgPool, table: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .with_context(|| format!("counting {table}"))
}
