//! Settings shared by every binary. Each flag also reads an environment variable.

use clap::{Args, ValueEnum};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/catalog";

#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Postgres connection URL (event store and read store).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Largest number of pooled Postgres connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log output format: `pretty` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}
