//! Settings shared by every binary. Each flag also reads an environment variable.

use clap::{Args, ValueEnum};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/catalog";

#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Postgres connection URL (event store and read store). Its value is never shown by
    /// `--help`: it usually carries a password.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::DatabaseSettings;

    #[derive(Parser)]
    struct Binary {
        #[command(flatten)]
        database: DatabaseSettings,
    }

    #[test]
    fn help_never_shows_the_database_password() {
        // nextest runs each test in a process of its own, so setting the variable is contained.
        std::env::set_var("DATABASE_URL", "postgres://catalog:hunter2-secret@db.internal/catalog");
        let help = Binary::command().render_long_help().to_string();
        assert!(help.contains("DATABASE_URL"), "{help}");
        assert!(!help.contains("hunter2-secret"), "{help}");
        let parsed = Binary::parse_from(["binary"]);
        assert!(parsed.database.database_url.contains("hunter2-secret"), "the value is still read");
    }
}
