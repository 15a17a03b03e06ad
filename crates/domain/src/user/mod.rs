//! The user aggregate: an account with a unique username, an email, a password hash and roles.

mod aggregate;
mod commands;
mod events;
mod values;

pub use aggregate::{User, UserError};
pub use commands::UserCommand;
pub use events::UserEvent;
pub use values::{check_password_policy, user_id_for, Email, Role, Username};
