//! `catalogctl user create`: bootstrap accounts (the first admin) without the HTTP API.

use std::io::Read;

use clap::Subcommand;
use command_api::accounts::{self, RegistrationError};
use command_api::auth::PasswordHasher;
use domain::Role;
use event_store::{CommandBus, EventMetadata};
use sqlx::PgPool;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user, e.g. the first admin. The password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        /// Role to grant besides `customer`.
        #[arg(long, value_parser = crate::parse_role)]
        role: Option<Role>,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

pub async fn run(pool: &PgPool, command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create { username, email, role, password_stdin: _ } = command;
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    let roles: Vec<Role> = role.into_iter().filter(|r| *r != Role::Customer).collect();
    let id = accounts::register(
        &CommandBus::new(pool.clone()),
        &PasswordHasher::owasp_minimum(),
        &username,
        &email,
        password,
        &roles,
        EventMetadata::new("catalogctl"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}", describe(&e)))?;
    println!("{id}");
    Ok(())
}

/// Field-level details for validation errors, so the operator sees what to fix.
fn describe(error: &RegistrationError) -> String {
    match error {
        RegistrationError::Invalid(v) => {
            v.0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
        }
        _ => String::new(),
    }
}
