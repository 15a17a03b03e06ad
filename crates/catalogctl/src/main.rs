//! `catalogctl`: the operator's tool for a running Catalog.
//!
//! Every subcommand is safe to run while the services serve traffic.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use command_api::accounts;
use command_api::auth::PasswordHasher;
use command_api::commands::{self, CommandBus};
use command_api::extract::RequestContext;
use domain::Role;
use service_runtime::settings::{DatabaseSettings, LogSettings};
use service_runtime::{database, telemetry};

#[derive(Parser)]
#[command(name = "catalogctl", about = "Operate a Catalog deployment", version)]
struct Cli {
    #[command(flatten)]
    database: DatabaseSettings,

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
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, e.g. the first admin. The password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        /// Role to grant besides `customer`.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    raw.parse().map_err(|e: domain::FieldViolation| e.message)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let pool = database::pool(&cli.database)?;
    match cli.command {
        Command::Migrate => {
            database::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::User(UserCommand::Create { username, email, role, password_stdin: _ }) => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            let roles: Vec<Role> = role.into_iter().filter(|r| *r != Role::Customer).collect();
            let context = RequestContext::default();
            let id = accounts::register(
                &CommandBus::new(pool),
                &PasswordHasher::owasp_minimum(),
                &username,
                &email,
                password,
                &roles,
                commands::metadata("catalogctl", &context),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}: {}", describe(&e)))?;
            println!("{id}");
        }
    }
    Ok(())
}

/// Field-level details for validation errors, so the operator sees what to fix.
fn describe(error: &command_api::problem::ApiError) -> String {
    match error {
        command_api::problem::ApiError::Invalid(v) => {
            v.0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
        }
        _ => String::new(),
    }
}
